//! ADD's one write when Calico IPAM runs in this process: the attachment record, the claim on
//! the host veth name, the addresses (block and handle, and the affinity when a block is
//! claimed) and the endpoint with its network's profile, in one transaction, from what ADD's
//! first read already found.
//!
//! The veth pair is created while that transaction commits.
//!
//! Crash safety is that of the separate steps: the record exists as soon as anything does, so
//! DEL and GC find the addresses and the endpoint with it; here they simply land at the same
//! instant. The endpoint names the host veth and the container MAC before the pair exists
//! (the MAC is chosen here and given to the kernel when the pair is created): a DEL or a
//! repeated ADD after a crash finds the endpoint without its interface, as after a crash
//! between the separate steps, and tears it down.

use std::collections::HashMap;
use std::net::IpAddr;

use common::Result;
use common::cni::Request;
use common::dataplane::veth::VethGuard;
use common::datastore::{Datastore, Entry, Txn, keys};
use common::error::Error;
use common::fault;
use common::ipam::verbs::{self, AssignedWith};
use common::rollback::RollbackLog;
use ipnetwork::IpNetwork;

use crate::attachment::{self, AttachmentGuard, HostVeth};
use crate::endpoint::{EndpointGuard, PendingEndpoint};
use crate::ipam_delegation::{self, IpamLease};
use crate::pod::{AddressSource, PodSetup};
use crate::workload::WorkloadIds;

/// The keys this step wants in ADD's first read: the claim on the usual host veth name, then
/// (in this process) what IPAM reads first.
pub fn first_read_keys(req: &Request, ids: &WorkloadIds) -> Vec<String> {
    let mut wanted = vec![keys::host_veth_claim(
        &ids.node,
        &ids.host_veth_name(&req.container_id),
    )];
    if ipam_delegation::in_process(req) {
        wanted.extend(verbs::first_read_keys(req));
    }
    wanted
}

/// What [`record_allocate_and_publish`] committed, and the pair it created meanwhile. Fields
/// drop in order, so an unfinished ADD undoes the pair first and the record last.
pub struct Published<'a> {
    /// The veth pair, when it was created while the transaction committed.
    pub pair: Option<VethGuard<'a>>,
    /// The endpoint and profile.
    pub endpoint: EndpointGuard<'a>,
    /// The addresses.
    pub lease: IpamLease<'a>,
    /// The attachment record and the claim on the host veth name.
    pub recorded: AttachmentGuard<'a>,
}

/// The record, claim, addresses and endpoint committed in one transaction, or `None` when this
/// ADD takes the separate steps (another IPAM plugin, requested or given addresses, a usual
/// host veth name that needs a closer look, or a key changed since the first read: nothing was
/// written then, and no pair is left). `wanted` and `found` are [`first_read_keys`] and what
/// the first read found for them; `endpoint` makes the endpoint's write for the host veth name
/// and the addresses.
///
/// Unless a stale link must give its name up first, `create_pair` creates the veth pair on a
/// thread of its own while the transaction commits: the kernel's work and etcd's round trip
/// and fsync overlap. The pair's container end carries this attachment's own MAC from its
/// creation ([`attachment::container_mac`]), so a crash before the commit leaves a pair its
/// DEL, GC or retried ADD recognises ([`crate::network::remove_unrecorded_pair`]); a commit that
/// fails deletes it again.
pub fn record_allocate_and_publish<'a>(
    store: &'a Datastore,
    setup: &'a PodSetup,
    (wanted, found): (&[String], &[Option<Entry>]),
    endpoint: impl FnOnce(&str, &[IpNetwork]) -> Result<PendingEndpoint>,
    create_pair: impl FnOnce(&HostVeth) -> Result<VethGuard<'a>> + Send,
    rollback: &RollbackLog,
) -> Result<Option<Published<'a>>> {
    let (req, source) = (&setup.request, &setup.addresses);
    if !ipam_delegation::in_process(req) || *source != AddressSource::Ipam {
        return Ok(None);
    }
    let ids = WorkloadIds::for_request(req);
    let claim = found.first().cloned().flatten();
    let Some(pending) = attachment::pending_claim(req, &ids, source, claim.as_ref())? else {
        return Ok(None);
    };
    let prefetched: HashMap<String, Option<Entry>> = wanted
        .iter()
        .cloned()
        .zip(found.iter().cloned())
        .skip(1)
        .collect();
    let mut published = None;
    let own = |addresses: &[IpAddr]| -> Result<Txn> {
        let nets = ipam_delegation::workload_addresses(&verbs::ipam_result(addresses));
        let write = endpoint(pending.host_veth_name(), &nets)?;
        let mut txn = pending.txn.clone();
        txn.join(write.txn.clone());
        published = Some(write);
        fault::point("before-commit")?;
        Ok(txn)
    };
    let ipam_req = ipam_delegation::ipam_request(req);
    let host_veth = pending.host_veth();
    let overlap = !host_veth.replaces_stale_link;
    let (pair, assigned) = std::thread::scope(|scope| {
        let creating = overlap.then(|| scope.spawn(|| create_pair(host_veth)));
        let assigned = verbs::assign_with(store, &ipam_req, &prefetched, own);
        let pair = creating.map(|thread| {
            thread
                .join()
                .unwrap_or_else(|_| Err(Error::internal("creating the veth pair panicked")))
        });
        (pair, assigned)
    });
    // A pair whose transaction did not commit is deleted as its guard drops here.
    let (AssignedWith::Committed(addresses, revision), Some(written)) = (assigned?, published)
    else {
        return Ok(None);
    };
    // From here on, dropping the guards undoes what was written.
    let published = Published {
        recorded: pending.committed(store, revision, rollback),
        lease: ipam_delegation::assigned_lease(store, req, addresses, rollback),
        endpoint: written.committed(store, revision, rollback),
        pair: pair.transpose()?,
    };
    fault::point("after-record")?;
    Ok(Some(published))
}
