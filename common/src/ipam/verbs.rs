//! The IPAM side of the CNI verbs, for `calico-ipam` and for `calico` running Calico IPAM in
//! its own process: assigning under the node's IPAM lock, releasing an attachment's handles,
//! CHECK, STATUS and GC. The binaries add only how they get their datastore and what they print.

use std::collections::HashMap;
use std::net::IpAddr;

use super::allocator::hinted_read;
use super::node_lock::{NodeIpamLock, newest_of};
use super::preread::{HeldOutcome, Preread};
use super::{
    Allocator, AutoAssign, BlockHints, GcScope, PRIMARY_IFNAME, RoomRequest, address_shortages,
    handle_id, handle_mismatches, release_unlisted_idle_handles,
};
use crate::cni::lock::AttachmentLock;
use crate::cni::{CniResult, IpConfig, Request};
use crate::datastore::keys::{self, IpFamily};
use crate::datastore::{Datastore, Entry, Txn};
use crate::error::{Code, Context, Error, Kind, Result, codes};
use crate::log;
use ipnetwork::IpNetwork;

/// The handle of the request's attachment.
pub fn request_handle(req: &Request) -> String {
    handle_id(&req.config.name, &req.container_id, &req.ifname)
}

/// What [`assign_under_node_lock`] starts from beyond the request.
#[derive(Default)]
pub struct AssignInputs {
    /// Entries read before the lock was taken (handle, hinted blocks and their affinity keys;
    /// `None` for a key found absent): they, or the node's block copy where it is newer, serve
    /// the allocator's first read.
    pub prefetched: HashMap<String, Option<Entry>>,
}

/// The outcome of [`assign_under_node_lock`].
pub struct Assigned {
    /// The addresses, or why none were assigned.
    pub addresses: Result<Vec<IpAddr>>,
}

/// Assigns the request's addresses (the `IP=` address, or one per family enabled in the
/// config) under the request's handle, holding the node's IPAM lock from the first read to the
/// last commit; then leaves the node's blocks as committed in the block copy.
pub fn assign_under_node_lock(store: &Datastore, req: &Request, inputs: AssignInputs) -> Assigned {
    let addresses = node_lock(req).and_then(|lock| {
        let copy = lock.read_copy();
        let preread = Preread::new(store, newest_of(&inputs.prefetched, &copy));
        let addresses = assign(&allocator(&preread, req), &request_handle(req), req);
        if addresses.is_ok() {
            lock.write_copy(copy, &preread.seen());
        }
        addresses
    });
    Assigned { addresses }
}

/// What [`assign_with`] did.
pub enum AssignedWith {
    /// The addresses and the caller's writes committed in one transaction, at this revision.
    Committed(Vec<IpAddr>, i64),
    /// Nothing was written: another writer changed a key the assignment or the caller's writes
    /// depend on, or the assignment took steps that cannot join one transaction. The caller
    /// takes the separate steps.
    NotWritten,
}

/// Assigns the request's addresses like [`assign_under_node_lock`], but commits them in one
/// transaction together with the writes `own` makes for those addresses (the caller's record,
/// claim and endpoint): the allocator's steps are held back and joined (see
/// [`Preread::holding`]). An assignment that fails (no room, no pool) is an error and writes
/// nothing.
pub fn assign_with(
    store: &Datastore,
    req: &Request,
    prefetched: &HashMap<String, Option<Entry>>,
    own: impl FnOnce(&[IpAddr]) -> Result<Txn>,
) -> Result<AssignedWith> {
    let lock = node_lock(req)?;
    let copy = lock.read_copy();
    let preread = Preread::new(store, newest_of(prefetched, &copy)).holding();
    let addresses = assign(&allocator(&preread, req), &request_handle(req), req)?;
    match preread.commit_held(&own(&addresses)?)? {
        HeldOutcome::Committed(revision) => {
            lock.write_copy(copy, &preread.seen());
            Ok(AssignedWith::Committed(addresses, revision))
        }
        HeldOutcome::NotWritten => Ok(AssignedWith::NotWritten),
    }
}

/// The allocator of `req`'s node and network over `store`, with the node's block hints.
fn allocator<'s>(store: &'s Preread<'_>, req: &'s Request) -> Allocator<'s> {
    Allocator::new(store, &req.config.nodename)
        .with_network(&req.config.name)
        .with_block_hints(req.config.ipam.block_hint_dir.as_deref())
}

/// The keys an ADD's assignment reads first when the node's block hint names blocks: what
/// `calico` folds into its own first read. Empty without hints, or for an `IP=` request.
pub fn first_read_keys(req: &Request) -> Vec<String> {
    let conf = &req.config.ipam;
    let (Some(dir), None) = (conf.block_hint_dir.as_deref(), req.args.ip) else {
        return Vec::new();
    };
    let (family, pools) = if conf.assign_ipv4 {
        (IpFamily::V4, &conf.ipv4_pools)
    } else {
        (IpFamily::V6, &conf.ipv6_pools)
    };
    let node = &req.config.nodename;
    let hints = BlockHints::new(dir, node);
    let handle_key = keys::handle(&request_handle(req));
    let (cidrs, wanted) = hinted_read(&hints, node, &handle_key, family, pools);
    if cidrs.is_empty() { Vec::new() } else { wanted }
}

/// Takes the node's IPAM lock, with the block copy beside the node's block hints.
pub fn node_lock(req: &Request) -> Result<NodeIpamLock> {
    let node = &req.config.nodename;
    let copy = (req.config.ipam.block_hint_dir.as_deref())
        .map(|dir| BlockHints::new(dir, node).block_copy_path());
    NodeIpamLock::acquire(&req.lock_dir, node, copy)
}

/// The requested address (`CNI_ARGS` `IP=`), or one per family enabled in the config.
pub fn assign(ipam: &Allocator<'_>, handle: &str, req: &Request) -> Result<Vec<IpAddr>> {
    match req.args.ip {
        Some(addr) => {
            ipam.assign_ip(handle, addr)
                .with_context(|| format!("assign requested address {addr}"))?;
            Ok(vec![addr])
        }
        None => {
            let conf = &req.config.ipam;
            log::info(&format!(
                "ipam request for handle {handle}: ipv4={} ipv6={}",
                conf.assign_ipv4, conf.assign_ipv6
            ));
            ipam.auto_assign(&AutoAssign {
                handle,
                ipv4: conf.assign_ipv4,
                ipv6: conf.assign_ipv6,
                ipv4_pools: &conf.ipv4_pools,
                ipv6_pools: &conf.ipv6_pools,
            })
        }
    }
}

/// Releases what this run assigned, address by address, each only while the request's handle
/// still holds it: the undo of an ADD that failed after its addresses were committed.
pub fn release_assigned(store: &Datastore, req: &Request, addresses: &[IpAddr]) -> Result<()> {
    let handle = request_handle(req);
    let ipam = Allocator::new(store, &req.config.nodename);
    let failures = addresses
        .iter()
        .filter_map(|&addr| {
            ipam.release_address(&handle, addr)
                .with_context(|| format!("release {addr} of handle {handle}"))
                .err()
        })
        .collect();
    Error::combine(failures)
}

/// The handles a DEL of the request releases: the attachment's, and for eth0 the one
/// calico-ipam used before v1.11.2.
pub fn released_handles(req: &Request) -> Vec<String> {
    let mut handles = vec![request_handle(req)];
    handles.extend(legacy_handle_id(req));
    handles
}

/// IPAM DEL: releases everything the request's handles hold, under the node's IPAM lock.
/// Nothing held is success.
pub fn release(store: &Datastore, req: &Request) -> Result<()> {
    let handles = released_handles(req);
    let ids: Vec<&str> = handles.iter().map(String::as_str).collect();
    let _lock = node_lock(req)?;
    let released = Allocator::new(store, &req.config.nodename)
        .release_handles(&ids)
        .with_context(|| format!("release addresses of handle {}", handles[0]))?;
    if released == 0 {
        log::info(&format!(
            "no addresses held by handle {}; nothing to release",
            handles.join(" or ")
        ));
    }
    Ok(())
}

/// The handle calico-ipam used before v1.11.2: the workload id, `<namespace>.<pod>` under
/// Kubernetes, else the container id. Those versions knew one interface per container, so only
/// DEL of eth0 releases it: a further interface's DEL must not free the first one's addresses.
fn legacy_handle_id(req: &Request) -> Option<String> {
    if req.ifname != PRIMARY_IFNAME {
        return None;
    }
    Some(match req.args.k8s_pod() {
        Some((namespace, pod)) => format!("{namespace}.{pod}"),
        None => req.container_id.clone(),
    })
}

/// The IPAM result: each address as a /32 or /128, IPv4 first, no gateway, no interfaces.
pub fn ipam_result(addresses: &[IpAddr]) -> CniResult {
    let mut ips: Vec<IpConfig> = addresses
        .iter()
        .map(|addr| IpConfig {
            address: IpNetwork::from(*addr),
            gateway: None,
            interface: None,
        })
        .collect();
    ips.sort_by_key(|ip| ip.address.is_ipv6());
    CniResult {
        ips,
        ..CniResult::default()
    }
}

/// IPAM CHECK: the handle holds exactly the addresses of `prevResult`.
pub fn check(store: &Datastore, req: &Request) -> Result<()> {
    let prev = req.prev_result()?;
    let expected: Vec<IpAddr> = prev.ips.iter().map(|ip| ip.address.ip()).collect();
    let mismatches = handle_mismatches(store, &request_handle(req), &expected)?;
    crate::error::from_findings(codes::CHECK_FAILED, &mismatches)
}

/// IPAM STATUS: fails (code 51) when a pool the config allocates from has no free address for
/// the node; an unreachable etcd is code 50.
pub fn status(store: &Datastore, req: &Request) -> Result<()> {
    let conf = &req.config.ipam;
    let room = RoomRequest {
        node: &req.config.nodename,
        ipv4: conf.assign_ipv4,
        ipv6: conf.assign_ipv6,
        ipv4_pools: &conf.ipv4_pools,
        ipv6_pools: &conf.ipv6_pools,
    };
    let shortages = address_shortages(store, &room).map_err(|e| not_available(e, req))?;
    if shortages.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        Code::NotAvailableLimitedConnectivity,
        shortages.join("; "),
    ))
}

/// A failed STATUS read: etcd out of reach is said so, naming the endpoints.
pub fn not_available(err: Error, req: &Request) -> Error {
    if err.kind() != Kind::TryAgainLater {
        return err.with_code(Code::NotAvailable);
    }
    Error::new(
        Code::NotAvailable,
        format!(
            "etcd could not be reached at {}",
            req.config.etcd.endpoints.join(", ")
        ),
    )
    .with_details(err.to_string())
}

/// IPAM GC: releases the handles of this network on this node that belong to no attachment in
/// `cni.dev/valid-attachments`, skipping those whose attachment a verb is working on.
pub fn gc(store: &Datastore, req: &Request) -> Result<()> {
    let valid: Vec<(&str, &str)> = req
        .config
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let scope = GcScope {
        node: &req.config.nodename,
        network: &req.config.name,
    };
    // calico-ipam's own verbs and calico's (which runs IPAM in its own process) both count.
    let hold = |container_id: &str, ifname: &str| {
        let own = AttachmentLock::try_acquire(&req.lock_dir, "calico-ipam", container_id, ifname)?;
        let calico = AttachmentLock::try_acquire(&req.lock_dir, "calico", container_id, ifname)?;
        Ok(own.zip(calico))
    };
    let outcome = release_unlisted_idle_handles(store, &scope, &valid, hold)?;
    for (handle, count) in &outcome.released {
        log::info(&format!("gc released {count} addresses of handle {handle}"));
    }
    Error::combine(outcome.failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_has_host_prefixes_ipv4_first() {
        let result = ipam_result(&["fd00::5".parse().unwrap(), "10.0.0.5".parse().unwrap()]);
        let got: Vec<String> = result.ips.iter().map(|ip| ip.address.to_string()).collect();
        assert_eq!(got, ["10.0.0.5/32", "fd00::5/128"]);
        assert!(result.interfaces.is_empty() && result.ips.iter().all(|ip| ip.gateway.is_none()));
    }
}
