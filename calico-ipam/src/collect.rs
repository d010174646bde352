//! `gc --node <node> --network <name>`: what CNI GC does, for runtimes that never send one.
//! An attachment whose recorded netns no longer exists is torn down as calico's DEL would:
//! its IPAM handle released, its host veth deleted (only when the claim on the name is the
//! container's and the endpoint is the container's), then its endpoint, record and claim
//! deleted in one transaction. Run it on that node: the netns paths and host veths it looks at
//! are this host's.

use std::io::Write;
use std::path::Path;

use common::cni::lock::AttachmentLock;
use common::dataplane::{Netlink, veth};
use common::datastore::endpoint::{Teardown, read_claim, read_endpoint_at};
use common::datastore::records::AttachmentRecord;
use common::datastore::{Datastore, keys};
use common::ipam::{Allocator, handle_id};
use common::{Context, Error, Result};
use serde::Serialize;

use crate::admin::{GcTarget, print_table};

/// One attachment GC looked at and did not leave alone.
#[derive(Debug, Serialize)]
struct Collected {
    container_id: String,
    ifname: String,
    netns: String,
    handle: String,
    /// Addresses released; `None` in a dry run.
    released: Option<usize>,
}

/// One attachment left alone, and why.
#[derive(Debug, Serialize)]
struct Skipped {
    record: String,
    reason: String,
}

/// Tears down every attachment of the target whose netns is gone; reports what it did (or, in
/// a dry run, would do). Every attachment is tried; all failures are returned together.
pub fn gc(
    store: &Datastore,
    target: &GcTarget,
    lock_dir: &Path,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let prefix = keys::attachments_prefix(&target.node, &target.network);
    let entries = store
        .list(&prefix)
        .with_context(|| format!("list attachment records under {prefix}"))?;
    let (mut collected, mut skipped, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    for entry in entries {
        let record: AttachmentRecord = match serde_json::from_slice(&entry.value) {
            Ok(record) => record,
            Err(e) => {
                failures.push(
                    Error::from(e).context(format!("decode attachment record {}", entry.key)),
                );
                continue;
            }
        };
        if let Some(reason) = still_in_use(&record) {
            skipped.push(Skipped {
                record: entry.key,
                reason,
            });
            continue;
        }
        let mut done = Collected {
            handle: handle_id(&target.network, &record.container_id, &record.ifname),
            container_id: record.container_id.clone(),
            ifname: record.ifname.clone(),
            netns: record.netns.clone(),
            released: None,
        };
        if target.dry_run {
            collected.push(done);
            continue;
        }
        // An ADD or DEL of the attachment is running right now: it is not garbage yet.
        let Some(_lock) =
            AttachmentLock::try_acquire(lock_dir, "calico", &record.container_id, &record.ifname)?
        else {
            skipped.push(Skipped {
                record: entry.key,
                reason: "an ADD or DEL of it is running".into(),
            });
            continue;
        };
        match teardown(store, target, &entry.key, &record, &done.handle) {
            Ok(released) => {
                done.released = Some(released);
                collected.push(done);
            }
            Err(e) => failures.push(e.context(format!("collect attachment record {}", entry.key))),
        }
    }
    report(out, target, &collected, &skipped, json)?;
    Error::combine(failures)
}

/// Why an attachment is not garbage, or `None` when its netns is gone. A record without a
/// netns cannot be judged by it and is left.
fn still_in_use(record: &AttachmentRecord) -> Option<String> {
    if record.netns.is_empty() {
        return Some("the record names no netns".into());
    }
    Path::new(&record.netns)
        .exists()
        .then(|| format!("netns {} exists", record.netns))
}

/// Releases the handle and removes the host veth, then deletes endpoint, record and claim as
/// calico's DEL does, with the same ownership rule ([`Teardown`]).
fn teardown(
    store: &Datastore,
    target: &GcTarget,
    record_key: &str,
    record: &AttachmentRecord,
    handle: &str,
) -> Result<usize> {
    let stored = read_endpoint_at(store, &record.endpoint)?;
    let claim = read_claim(store, &target.node, &record.host_veth)?;
    let plan = Teardown::plan(
        &record.container_id,
        stored,
        Some(record.host_veth.clone()),
        claim.as_ref(),
    );
    let mut failures = Vec::new();
    let released = if record.without_ipam {
        0
    } else {
        Allocator::new(store, &target.node)
            .release_handles(&[handle])
            .with_context(|| format!("release handle {handle}"))
            .unwrap_or_else(|e| {
                failures.push(e);
                0
            })
    };
    if let Some(name) = &plan.host_veth {
        let deleted = Netlink::host().and_then(|host| veth::delete_host_veth(host, name));
        failures.extend(deleted.err());
    }
    plan.finish(store, &target.node, record_key, failures)
        .map(|()| released)
}

fn report(
    out: &mut dyn Write,
    target: &GcTarget,
    collected: &[Collected],
    skipped: &[Skipped],
    json: bool,
) -> Result<()> {
    if json {
        let value = serde_json::json!({
            "node": target.node,
            "network": target.network,
            "dry_run": target.dry_run,
            "collected": collected,
            "skipped": skipped,
        });
        return writeln!(out, "{value}").context("write output");
    }
    let verb = if target.dry_run {
        "would collect"
    } else {
        "collected"
    };
    let mut rows = vec![["CONTAINER", "IFNAME", "NETNS", "HANDLE", "RELEASED"].map(String::from)];
    rows.extend(collected.iter().map(|c| {
        [
            c.container_id.clone(),
            c.ifname.clone(),
            c.netns.clone(),
            c.handle.clone(),
            c.released.map_or_else(|| "-".into(), |n| n.to_string()),
        ]
    }));
    print_table(out, &rows)?;
    for s in skipped {
        writeln!(out, "left {}: {}", s.record, s.reason).context("write output")?;
    }
    writeln!(
        out,
        "{verb} {} attachments of network {} on node {}",
        collected.len(),
        target.network,
        target.node
    )
    .context("write output")
}
