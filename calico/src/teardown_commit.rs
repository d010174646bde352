//! The last step of a DEL (or GC) when Calico IPAM runs in this process: once the interfaces
//! are gone, the attachment's addresses are released and its endpoint, record and claim
//! deleted in one transaction, from what the DEL's first read found. [`commit`] takes nothing
//! but that read and the failures so far, so it can run as soon as the kernel reports the
//! link gone.
//!
//! Crash safety: until the transaction commits, the record (and the addresses it leads to)
//! stays, so a retried DEL or a GC finds and finishes the attachment.

use std::collections::HashMap;

use common::cni::Request;
use common::datastore::endpoint::Teardown;
use common::datastore::keys::{self, IpFamily};
use common::datastore::{Datastore, Entry};
use common::ipam::node_lock::newest_of;
use common::ipam::preread::Preread;
use common::ipam::{Allocator, BlockHints, verbs};
use common::{Error, Result};

use crate::attachment;
use crate::ipam_delegation;

/// The keys DEL's first read adds for this step (in this process only): the handles DEL
/// releases and the node's hinted blocks, where the handles' addresses usually are.
pub fn first_read_keys(req: &Request) -> Vec<String> {
    if !ipam_delegation::in_process(req) {
        return Vec::new();
    }
    let mut wanted: Vec<String> = verbs::released_handles(req)
        .iter()
        .map(|h| keys::handle(h))
        .collect();
    if let Some(dir) = req.config.ipam.block_hint_dir.as_deref() {
        let hints = BlockHints::new(dir, &req.config.nodename);
        for family in [IpFamily::V4, IpFamily::V6] {
            wanted.extend(hints.read(family).iter().map(keys::block));
        }
    }
    wanted
}

/// What the teardown's first read decided and found.
pub struct TeardownRead {
    /// What the attachment owns and the teardown removes.
    pub plan: Teardown,
    /// [`first_read_keys`] and what the read found for each (`None`: absent).
    pub ipam: HashMap<String, Option<Entry>>,
}

/// Releases the addresses and deletes endpoint, record and claim (record and claim only when
/// `failures` is empty, so that a retry finds what is left) in one transaction. When that
/// transaction loses a race, the addresses are released with retries and the rest deleted
/// after, as separate steps. All failures are returned together.
pub fn commit(
    store: &Datastore,
    req: &Request,
    read: TeardownRead,
    mut failures: Vec<Error>,
) -> Result<()> {
    let record_key = attachment::attachment_key(req);
    let node = &req.config.nodename;
    match release_and_delete(store, req, &read, &record_key, !failures.is_empty()) {
        Ok(true) => return Error::combine(failures),
        Ok(false) => common::log::info(&format!(
            "teardown of {record_key} lost a race: releasing and deleting in separate steps"
        )),
        Err(err) => common::log::info(&format!(
            "teardown of {record_key} in one transaction failed ({err}): trying separate steps"
        )),
    }
    failures.extend(ipam_delegation::release(store, req).err());
    read.plan.finish(store, node, &record_key, failures)
}

/// One attempt, under the node's IPAM lock: true when it committed.
fn release_and_delete(
    store: &Datastore,
    req: &Request,
    read: &TeardownRead,
    record_key: &str,
    keep_record: bool,
) -> Result<bool> {
    let node = &req.config.nodename;
    let lock = verbs::node_lock(req)?;
    let copy = lock.read_copy();
    let preread = Preread::new(store, newest_of(&read.ipam, &copy));
    let handles = verbs::released_handles(req);
    let ids: Vec<&str> = handles.iter().map(String::as_str).collect();
    let allocator = Allocator::new(&preread, node);
    let held = allocator.read_handles(&ids)?;
    let (mut txn, _) = allocator.release_txn(&held)?;
    let deletes = read.plan.txn(node, record_key, keep_record);
    txn.join(deletes);
    if txn.writes.is_empty() {
        return Ok(true);
    }
    let outcome = common::ipam::Store::txn(&preread, &txn)?;
    if outcome.committed {
        lock.write_copy(copy, &preread.seen());
    }
    Ok(outcome.committed)
}
