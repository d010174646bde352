//! ADD's first write when Calico IPAM runs in this process: the attachment record, the claim
//! on the host veth name and the addresses (block and handle, and the affinity when a block is
//! claimed) in one transaction, from what ADD's first read already found.
//!
//! Crash safety is that of the separate steps: the record exists as soon as anything does, so
//! DEL and GC find the addresses with it; here they simply land at the same instant.

use std::collections::HashMap;

use common::Result;
use common::cni::Request;
use common::datastore::{Datastore, Entry, keys};
use common::error::Error;
use common::fault;
use common::ipam::preread::CompanionOutcome;
use common::ipam::verbs::{self, AssignInputs};
use common::rollback::RollbackLog;

use crate::attachment::{self, AttachmentGuard};
use crate::ipam::{self, IpamLease};
use crate::pod::{AddressSource, PodSetup};
use crate::workload::WorkloadIds;

/// The keys this step wants in ADD's first read: the claim on the usual host veth name, then
/// (in this process) what IPAM reads first.
pub fn first_read_keys(req: &Request, ids: &WorkloadIds) -> Vec<String> {
    let mut wanted = vec![keys::host_veth_claim(
        &ids.node,
        &ids.host_veth_name(&req.container_id),
    )];
    if ipam::in_process(req) {
        wanted.extend(verbs::first_read_keys(req));
    }
    wanted
}

/// The record, claim and addresses committed in one transaction, or `None` when this ADD takes
/// the separate steps (another IPAM plugin, requested or given addresses, a usual host veth
/// name that needs a closer look, or a claim taken meanwhile; nothing was written then).
/// `wanted` and `found` are [`first_read_keys`] and what the first read found for them.
pub fn record_and_allocate<'a>(
    store: &'a Datastore,
    setup: &'a PodSetup,
    (wanted, found): (&[String], &[Option<Entry>]),
    rollback: &RollbackLog,
) -> Result<Option<(AttachmentGuard<'a>, IpamLease<'a>)>> {
    let (req, source) = (&setup.request, &setup.addresses);
    if !ipam::in_process(req) || *source != AddressSource::Ipam {
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
    let inputs = AssignInputs {
        prefetched,
        companion: Some(pending.txn.clone()),
    };
    let assigned = verbs::assign_under_node_lock(store, &ipam::ipam_request(req), inputs);
    match assigned.companion {
        CompanionOutcome::Broken => Ok(None),
        CompanionOutcome::NotSent => Err(assigned
            .addresses
            .err()
            .unwrap_or_else(|| Error::internal("addresses assigned without a transaction"))),
        CompanionOutcome::Committed(revision) => {
            // From here on, dropping the guard undoes record and claim.
            let recorded = pending.committed(store, revision, rollback);
            fault::point("after-record")?;
            let addresses = assigned.addresses?;
            let lease = ipam::assigned_lease(store, req, addresses, rollback);
            Ok(Some((recorded, lease)))
        }
    }
}
