//! The workload's interfaces: the veth pair, container addresses and routes, host routes and
//! sysctls.

use std::path::Path;

use common::cni::Request;
use common::dataplane::{addr, configure_container_interface, netns, route, sysctl, veth};
use common::datastore::Datastore;
use common::error::codes;
use common::{Error, Result};
use ipnetwork::IpNetwork;

use crate::crash;
use crate::endpoint;
use crate::workload::{WorkloadIds, hashed_host_veth_name};

/// The host veth name an ADD will use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVeth {
    /// The name.
    pub name: String,
    /// A link of that name exists and is stale: it is deleted right before the new pair is
    /// created, once the addresses are allocated, so a failing ADD does not take it down early
    /// (a pod's earlier sandbox may still be using it).
    pub replaces_stale_link: bool,
}

/// Picks the host veth name. A link of that name that no endpoint on this node records, or
/// that this attachment's own endpoint records (a pod's earlier sandbox), is stale. One that
/// another live endpoint records belongs to another container whose id shares the first 11
/// characters: it is never touched, and the name derived from a hash of the full container id
/// is used instead.
pub fn choose_host_veth_name(
    store: &Datastore,
    ids: &WorkloadIds,
    container_id: &str,
) -> Result<HostVeth> {
    let usual = ids.host_veth_name(container_id);
    if let Some(choice) = usable_name(store, ids, &usual)? {
        return Ok(choice);
    }
    let hashed = hashed_host_veth_name(container_id);
    if !ids.is_kubernetes() {
        if let Some(choice) = usable_name(store, ids, &hashed)? {
            return Ok(choice);
        }
    }
    Err(Error::new(
        codes::DATAPLANE,
        format!("host link {usual} belongs to another workload"),
    ))
}

/// `name` as a choice, or `None` when another live endpoint uses it.
fn usable_name(store: &Datastore, ids: &WorkloadIds, name: &str) -> Result<Option<HostVeth>> {
    if !veth::host_link_exists(name)? {
        return Ok(Some(HostVeth {
            name: name.to_string(),
            replaces_stale_link: false,
        }));
    }
    let own_key = endpoint::endpoint_key(ids);
    if let Some(owner) =
        endpoint::endpoint_using_link(store, &ids.node, name)?.filter(|owner| *owner != own_key)
    {
        common::cni::log::warn(&format!("host link {name} belongs to endpoint {owner}"));
        return Ok(None);
    }
    Ok(Some(HostVeth {
        name: name.to_string(),
        replaces_stale_link: true,
    }))
}

/// Before a new attachment changes anything: no interface called `CNI_IFNAME` may exist in
/// the netns yet (the spec requires ADD to fail then). Returns the netns path.
pub fn validate_container_side(req: &Request) -> Result<&Path> {
    let path = validate_netns(req)?;
    if netns::with_netns(path, || veth::read_link(&req.ifname))?.is_some() {
        return Err(Error::new(
            codes::DATAPLANE,
            format!(
                "interface {} already exists in {}",
                req.ifname,
                path.display()
            ),
        )
        .with_kind(common::Kind::AlreadyExists));
    }
    Ok(path)
}

/// The netns must exist and be a network namespace before anything is changed.
pub fn validate_netns(req: &Request) -> Result<&Path> {
    let path = req
        .netns
        .as_deref()
        .ok_or_else(|| Error::new(common::Code::InvalidEnvironment, "CNI_NETNS is empty"))?;
    netns::check_netns(path)?;
    Ok(path)
}

/// Creates the veth pair and programs both sides. The returned guard deletes the pair (and with
/// it the addresses and routes) unless committed.
pub fn create_workload_interfaces(
    req: &Request,
    netns_path: &Path,
    host: &HostVeth,
    addresses: &[IpNetwork],
) -> Result<veth::VethGuard> {
    let host_ifname = host.name.as_str();
    if host.replaces_stale_link {
        common::cni::log::info(&format!("deleting stale host link {host_ifname}"));
        veth::delete_host_link(host_ifname)?;
    }
    let mut request = veth::VethRequest::new(host_ifname, &req.ifname, netns_path);
    request.mtu = req.config.mtu;
    let pair = veth::create_veth(&request)?;
    crash::point("after-veth");
    let has_ipv4 = addresses.iter().any(IpNetwork::is_ipv4);
    let has_ipv6 = addresses.iter().any(IpNetwork::is_ipv6);
    sysctl::configure_host_veth(host_ifname, has_ipv4, has_ipv6)?;
    let ipv6_gateway = if has_ipv6 {
        Some(addr::host_link_local_address(host_ifname)?)
    } else {
        None
    };
    let container_index = pair.container_index();
    netns::with_netns(netns_path, || {
        configure_container_interface(container_index, addresses, ipv6_gateway)
    })?;
    route::add_host_routes(pair.host_index(), host_ifname, addresses)?;
    Ok(pair)
}

/// Removes the container interface (which removes the host end with it). When the netns is
/// unknown or gone but the host end recorded by the endpoint remains, that is removed instead.
pub fn remove_workload_interfaces(req: &Request, recorded_host_ifname: Option<&str>) -> Result<()> {
    let removed = match req.netns.as_deref() {
        Some(path) => veth::delete_container_link(path, &req.ifname)?,
        None => false,
    };
    if let (false, Some(host_ifname)) = (removed, recorded_host_ifname) {
        veth::delete_host_link(host_ifname)?;
    }
    Ok(())
}
