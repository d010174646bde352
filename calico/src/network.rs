//! The workload's interfaces: the veth pair, container addresses and routes, host routes and
//! sysctls.

use std::path::Path;

use common::cni::Request;
use common::dataplane::{addr, configure_container_interface, netns, route, sysctl, veth};
use common::error::RollbackLog;
use common::error::codes;
use common::{Error, Result};
use ipnetwork::IpNetwork;

use crate::attachment;
use crate::crash;

/// Before a new attachment changes anything: no interface called `CNI_IFNAME` may exist in
/// the netns at `path` ([`validate_netns`]'s) yet (the spec requires ADD to fail then).
pub fn refuse_existing_interface(req: &Request, path: &Path) -> Result<()> {
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
    Ok(())
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
    host: &attachment::HostVeth,
    addresses: &[IpNetwork],
    rollback: &RollbackLog,
) -> Result<veth::VethGuard> {
    let host_ifname = host.name.as_str();
    if host.replaces_stale_link {
        common::cni::log::info(&format!("deleting stale host link {host_ifname}"));
        veth::delete_host_veth(host_ifname)?;
    }
    let mut request = veth::VethRequest::new(host_ifname, &req.ifname, netns_path);
    request.mtu = req.config.mtu;
    let mut pair = veth::create_veth(&request)?;
    pair.report_rollback_to(rollback);
    crash::point("after-veth");
    let has_ipv4 = addresses.iter().any(IpNetwork::is_ipv4);
    let has_ipv6 = addresses.iter().any(IpNetwork::is_ipv6);
    sysctl::configure_host_veth(host_ifname, has_ipv4, has_ipv6)?;
    if has_ipv6 {
        sysctl::enable_ipv6_forwarding()?;
    }
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

/// Removes the veth pair through its host end `owned_host_veth`, the one this attachment's
/// record or endpoint names and holds the claim on; its container end goes with it, wherever it
/// is. Nothing in the container netns is deleted by name: an interface called `CNI_IFNAME` there
/// that is not that host veth's peer (the netns of another container, a link the plugin never
/// made) is left, and the log says so.
pub fn remove_workload_interfaces(req: &Request, owned_host_veth: Option<&str>) -> Result<()> {
    let removed = match owned_host_veth {
        Some(name) => veth::delete_host_veth(name)?,
        None => false,
    };
    if let (false, Some(netns)) = (removed, req.netns.as_deref())
        && veth::container_link_exists(netns, &req.ifname)?
    {
        common::cni::log::warn(&format!(
            "leaving interface {} in netns {}: this attachment did not create it",
            req.ifname,
            netns.display()
        ));
    }
    Ok(())
}
