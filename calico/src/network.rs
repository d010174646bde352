//! The workload's interfaces: the veth pair, container addresses and routes, host routes and
//! sysctls.
//!
//! A verb opens one netlink session per namespace ([`Sessions`]): the host's, and the
//! container's, whose namespace is entered once for it. Every kernel step of ADD and CHECK goes
//! over these two; DEL needs only the host's.

use common::cni::Request;
use common::dataplane::netns::{self, ContainerNetns};
use common::dataplane::veth::HostVethDeletion;
use common::dataplane::{
    Netlink, addr, configure_container_interface, format_mac, route, sysctl, veth,
};
use common::error::codes;
use common::fault;
use common::rollback::RollbackLog;
use common::{Error, Result};
use ipnetwork::IpNetwork;

use crate::attachment;

/// The netlink sessions of one verb: the host's and the container's.
pub struct Sessions {
    /// The plugin's own namespace.
    pub host: &'static Netlink,
    /// `CNI_NETNS`, entered once.
    pub container: ContainerNetns,
}

/// Before anything is changed: `CNI_NETNS` must exist, be a network namespace and not the
/// plugin's own. It is entered once, here, to open the session every container step uses.
pub fn open_sessions(req: &Request) -> Result<Sessions> {
    let path = req
        .netns
        .as_deref()
        .ok_or_else(|| Error::new(common::Code::InvalidEnvironment, "CNI_NETNS is empty"))?;
    netns::check_netns(path)?;
    Ok(Sessions {
        host: Netlink::host()?,
        container: ContainerNetns::open(path)?,
    })
}

/// Before a new attachment changes anything: no interface called `CNI_IFNAME` may exist in
/// the container yet (the spec requires ADD to fail then). When `unrecorded_host_veth` names the
/// attachment's usual host veth name (it has no record), an interface that is the container end
/// of a pair its own unfinished ADD left ([`remove_unrecorded_pair`]) is removed instead.
pub fn refuse_existing_interface(
    req: &Request,
    container: &ContainerNetns,
    unrecorded_host_veth: Option<&str>,
) -> Result<()> {
    let Some(link) = veth::read_link(container.netlink(), &req.ifname)? else {
        return Ok(());
    };
    if let Some(usual) = unrecorded_host_veth
        && delete_if_unrecorded_pair(req, &link, usual)?
    {
        return Ok(());
    }
    Err(Error::new(
        codes::DATAPLANE,
        format!(
            "interface {} already exists in {}",
            req.ifname,
            container.path().display()
        ),
    ))
}

/// Creates the veth pair for `host` (deleting a stale link of that name first), the container
/// end with `container_mac`, the host end with the alias naming the attachment
/// ([`attachment::veth_alias`]) that GC finds a pair by when nothing in etcd names it. The
/// returned guard deletes the pair unless committed.
pub fn create_pair<'a>(
    req: &Request,
    sessions: &'a Sessions,
    host: &attachment::HostVeth,
    container_mac: [u8; 6],
    rollback: &RollbackLog,
) -> Result<veth::VethGuard<'a>> {
    let host_ifname = host.name.as_str();
    if host.replaces_stale_link {
        common::log::info(&format!("deleting stale host link {host_ifname}"));
        veth::delete_host_veth(sessions.host, host_ifname)?;
    }
    let mut request = veth::VethRequest::new(host_ifname, &req.ifname);
    request.mtu = req.config.mtu;
    request.container_mac = Some(container_mac);
    let pair = veth::create_veth(sessions.host, &sessions.container, &request, rollback)?;
    if let Some(alias) = attachment::veth_alias(req) {
        veth::set_alias(sessions.host, pair.host_index(), host_ifname, &alias)?;
    }
    fault::point("after-veth")?;
    Ok(pair)
}

/// Programs both sides of `pair`: the host end's sysctls and routes, the container end's
/// addresses and routes.
pub fn configure_workload_interfaces(
    sessions: &Sessions,
    pair: &veth::VethPair<'_>,
    addresses: &[IpNetwork],
) -> Result<()> {
    let host_ifname = pair.host_ifname();
    let has_ipv4 = addresses.iter().any(IpNetwork::is_ipv4);
    let has_ipv6 = addresses.iter().any(IpNetwork::is_ipv6);
    sysctl::configure_host_veth(host_ifname, has_ipv4, has_ipv6)?;
    if has_ipv6 {
        sysctl::enable_ipv6_forwarding()?;
    }
    let ipv6_gateway = if has_ipv6 {
        Some(addr::host_link_local_address(sessions.host, host_ifname)?)
    } else {
        None
    };
    configure_container_interface(
        &sessions.container,
        pair.container_index(),
        addresses,
        ipv6_gateway,
    )?;
    route::add_host_routes(sessions.host, pair.host_index(), host_ifname, addresses)
}

/// A pair this attachment's ADD created before it was killed, with nothing in etcd naming it
/// yet (the pair is created while the first transaction commits): the host veth under the
/// usual name whose other end is `CNI_IFNAME` in `CNI_NETNS` with this attachment's own MAC
/// ([`attachment::container_mac`]). It is removed, so that a DEL leaves nothing; any other
/// link is left. A pair whose netns is gone went with it.
pub fn remove_unrecorded_pair(
    req: &Request,
    container: &ContainerNetns,
    usual_host_veth: &str,
) -> Result<bool> {
    match veth::read_link(container.netlink(), &req.ifname)? {
        Some(link) => delete_if_unrecorded_pair(req, &link, usual_host_veth),
        None => Ok(false),
    }
}

/// Deletes the pair whose container end is `container_end` if it is this attachment's
/// unrecorded pair ([`remove_unrecorded_pair`]): the end has the attachment's own MAC, and it
/// and the host veth `usual_host_veth` name each other as peers.
fn delete_if_unrecorded_pair(
    req: &Request,
    container_end: &veth::LinkState,
    usual_host_veth: &str,
) -> Result<bool> {
    let own_mac = format_mac(&attachment::container_mac(req));
    if !container_end.mac.eq_ignore_ascii_case(&own_mac) {
        return Ok(false);
    }
    let host = Netlink::host()?;
    let Some(host_end) = veth::read_link(host, usual_host_veth)? else {
        return Ok(false);
    };
    if !veth::are_peers(&host_end, container_end) {
        return Ok(false);
    }
    common::log::info(&format!(
        "removing host veth {usual_host_veth}: an unfinished ADD of this attachment made it"
    ));
    veth::delete_link_at(host, host_end.index, usual_host_veth)
}

/// Removes the veth pair through its host end `owned_host_veth`, the one this attachment's
/// record or endpoint names and holds the claim on; its container end goes with it, wherever it
/// is. Then `finish` runs with `failures` (and the deletion's failure, if any): as soon as the
/// kernel has unregistered the link, while it still frees the pair, so DEL's last etcd
/// transaction overlaps the slowest part of the kernel's work.
///
/// `prepared` is a deletion made ready while etcd was read ([`prepare_host_veth_deletion`]);
/// it serves when it is of that host veth, and is dropped unused otherwise.
///
/// Nothing in the container netns is deleted by name: an interface called `CNI_IFNAME` there
/// that is not that host veth's peer (the netns of another container, a link the plugin never
/// made) is left, and the log says so, after `finish`: the record does not depend on a log line.
pub fn remove_workload_interfaces_then(
    req: &Request,
    owned_host_veth: Option<&str>,
    prepared: Option<HostVethDeletion>,
    failures: Vec<Error>,
    finish: impl FnOnce(Vec<Error>) -> Result<()>,
) -> Result<()> {
    // The failures travel into the closure and, when it does not run, stay here.
    let mut pending = Some((failures, finish));
    let mut finished = None;
    let mut removed = false;
    let mut late = None;
    if let Some(name) = owned_host_veth {
        let deletion = match prepared.filter(|p| p.name() == name) {
            Some(prepared) => Ok(prepared),
            None => prepare_deletion(name),
        };
        let outcome = deletion.map(|deletion| {
            deletion.delete_then(|| pending.take().map(|(failures, finish)| finish(failures)))
        });
        let deleted = match outcome {
            Ok(outcome) => {
                finished = outcome.then.flatten();
                outcome.deleted
            }
            Err(err) => Err(err),
        };
        match (deleted, pending.as_mut()) {
            (Ok(deleted), _) => removed = deleted,
            (Err(err), Some((failures, _))) => failures.push(err),
            (Err(err), None) => late = Some(err),
        }
    }
    if let Some((failures, finish)) = pending.take() {
        finished = Some(finish(failures));
    }
    let left = if removed {
        Ok(())
    } else {
        report_interface_left(req)
    };
    let finished = finished.unwrap_or(Ok(()));
    Error::combine(
        [finished.err(), late, left.err()]
            .into_iter()
            .flatten()
            .collect(),
    )
}

/// The deletion of the host veth `name` made ready before the caller reads etcd: the link
/// looked up in the host's session, the thread that will delete it started. `None` when it
/// cannot be, in which case [`remove_workload_interfaces_then`] prepares it again and reports
/// why.
pub fn prepare_host_veth_deletion(name: &str) -> Option<HostVethDeletion> {
    prepare_deletion(name).ok()
}

fn prepare_deletion(name: &str) -> Result<HostVethDeletion> {
    Netlink::host().and_then(|host| HostVethDeletion::prepare(host, name))
}

/// Nothing was deleted: an interface called `CNI_IFNAME` in `CNI_NETNS` is not this
/// attachment's, and the log says it stays. Only a netns that cannot be looked into is an error.
fn report_interface_left(req: &Request) -> Result<()> {
    if let Some(netns) = req.netns.as_deref()
        && veth::container_link_exists(netns, &req.ifname)?
    {
        common::log::warn(&format!(
            "leaving interface {} in netns {}: this attachment did not create it",
            req.ifname,
            netns.display()
        ));
    }
    Ok(())
}
