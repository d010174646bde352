//! A workload endpoint as read for a compare-and-swap, and its deletion: shared by the calico
//! plugin's DEL and GC and by `calico-ipam gc`, so that every teardown removes an endpoint the
//! same way.

use super::model::WorkloadEndpoint;
use super::{Condition, Datastore, Entry, Txn, Write, log_conflict};
use crate::error::{Context, Error, Kind, Result, codes};

/// An endpoint as stored, with the revision a compare-and-swap needs.
#[derive(Debug, Clone)]
pub struct StoredEndpoint {
    /// Its key.
    pub key: String,
    /// Its value.
    pub endpoint: WorkloadEndpoint,
    /// Its `mod_revision`.
    pub revision: i64,
}

impl StoredEndpoint {
    /// Decodes a listed or read entry; the error names the key.
    pub fn from_entry(entry: Entry) -> Result<StoredEndpoint> {
        let endpoint = WorkloadEndpoint::from_json(&entry.value)
            .with_context(|| format!("decode endpoint {}", entry.key))?;
        Ok(StoredEndpoint {
            key: entry.key,
            endpoint,
            revision: entry.mod_revision,
        })
    }

    /// Whether a teardown of `container_id` may remove the endpoint: one without an active
    /// instance (plain CNI, or written by an older plugin) belongs to whoever deletes it; a
    /// pod's belongs to the sandbox that last set it up. Logs a refusal.
    pub fn owned_by(&self, container_id: &str) -> bool {
        let active = &self.endpoint.active_instance_id;
        if active.is_empty() || active == container_id {
            return true;
        }
        crate::cni::log::warn(&format!(
            "CNI_CONTAINERID {container_id} does not match the active instance {active} of endpoint {}: leaving it",
            self.key
        ));
        false
    }
}

/// The endpoint stored at `key`, if any.
pub fn read_endpoint_at(store: &Datastore, key: &str) -> Result<Option<StoredEndpoint>> {
    store
        .get(key)
        .with_context(|| format!("read endpoint {key}"))?
        .map(StoredEndpoint::from_entry)
        .transpose()
}

/// Deletes an attachment's endpoint if it is still the revision that was read, so that an
/// endpoint rewritten meanwhile survives (and the teardown fails, to be retried), together
/// with the keys in `also`, in one transaction. An endpoint already gone is fine.
pub fn delete_endpoint(
    store: &Datastore,
    stored: Option<&StoredEndpoint>,
    also: &[String],
) -> Result<()> {
    let mut writes: Vec<Write> = also.iter().map(|k| Write::Delete(k.clone())).collect();
    let mut conditions = Vec::new();
    if let Some(stored) = stored {
        conditions.push(Condition::Revision(stored.key.clone(), stored.revision));
        writes.push(Write::Delete(stored.key.clone()));
    }
    let what = stored.map_or_else(|| also.join(", "), |s| s.key.clone());
    let reads_on_failure = stored.map(|s| s.key.clone()).into_iter().collect();
    let txn = Txn {
        conditions,
        writes,
        reads_on_failure,
    };
    let outcome = store.txn(&txn).with_context(|| format!("delete {what}"))?;
    if !outcome.committed {
        log_conflict(&txn, &outcome.current);
    }
    match (outcome.committed, stored) {
        (true, _) | (false, None) => Ok(()),
        (false, Some(_)) if outcome.current.is_empty() => delete_endpoint(store, None, also),
        (false, Some(stored)) => Err(Error::new(
            codes::CONFLICT,
            format!(
                "endpoint {} was modified before it could be deleted",
                stored.key
            ),
        )
        .with_kind(Kind::CasConflict)),
    }
}
