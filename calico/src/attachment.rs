//! The attachment record: written before anything is allocated, deleted after everything else,
//! so that DEL and GC find every piece of an attachment even after a crash halfway through ADD.

use common::cni::Request;
use common::datastore::model::AttachmentRecord;
use common::datastore::{Datastore, keys};
use common::{Context, Result};

use crate::endpoint;
use crate::pod::AddressSource;
use crate::workload::WorkloadIds;

/// The key of this request's attachment record.
pub fn attachment_key(req: &Request) -> String {
    keys::attachment(
        &req.config.nodename,
        &req.config.name,
        &req.container_id,
        &req.ifname,
    )
}

/// A written record; dropping it deletes the record again unless committed.
pub struct AttachmentGuard<'a> {
    store: &'a Datastore,
    key: String,
    committed: bool,
}

impl AttachmentGuard<'_> {
    /// Keeps the record.
    pub fn commit(&mut self) {
        self.committed = true;
    }
}

impl Drop for AttachmentGuard<'_> {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(err) = self.store.delete(&self.key) {
                eprintln!(
                    "calico: rollback: failed to delete attachment record {}: {err}",
                    self.key
                );
            }
        }
    }
}

/// Records what this ADD is about to create.
pub fn record_attachment<'a>(
    store: &'a Datastore,
    req: &Request,
    ids: &WorkloadIds,
    host_veth: &str,
    addresses: &AddressSource,
) -> Result<AttachmentGuard<'a>> {
    let record = AttachmentRecord {
        container_id: req.container_id.clone(),
        ifname: req.ifname.clone(),
        netns: req
            .netns
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        host_veth: host_veth.to_string(),
        endpoint: endpoint::endpoint_key(ids),
        without_ipam: matches!(addresses, AddressSource::NoIpam(_)),
    };
    let key = attachment_key(req);
    store
        .put(&key, &serde_json::to_vec(&record)?)
        .with_context(|| format!("write attachment record {key}"))?;
    Ok(AttachmentGuard {
        store,
        key,
        committed: false,
    })
}

/// This request's record, if any.
pub fn read_attachment(store: &Datastore, req: &Request) -> Result<Option<AttachmentRecord>> {
    let key = attachment_key(req);
    let Some(entry) = store
        .get(&key)
        .with_context(|| format!("read attachment record {key}"))?
    else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_slice(&entry.value).with_context(
        || format!("decode attachment record {key}"),
    )?))
}

/// Every record of this network on this node.
pub fn list_attachments(store: &Datastore, req: &Request) -> Result<Vec<AttachmentRecord>> {
    let prefix = keys::attachments_prefix(&req.config.nodename, &req.config.name);
    let entries = store
        .list(&prefix)
        .with_context(|| format!("list attachment records under {prefix}"))?;
    entries
        .iter()
        .map(|entry| {
            serde_json::from_slice(&entry.value)
                .with_context(|| format!("decode attachment record {}", entry.key))
        })
        .collect()
}

/// Deletes this request's record; absent is fine.
pub fn delete_attachment(store: &Datastore, req: &Request) -> Result<()> {
    let key = attachment_key(req);
    store
        .delete(&key)
        .with_context(|| format!("delete attachment record {key}"))?;
    Ok(())
}
