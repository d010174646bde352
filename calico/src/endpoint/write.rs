//! Writing the endpoint (with the network's profile when it is the first), under a guard
//! that undoes the write unless committed.

use common::datastore::model::{Profile, WorkloadEndpoint};
use common::datastore::undo::{WrittenKey, WrittenKeys};
use common::datastore::{self, Condition, Datastore, Txn, Write, keys};
use common::error::codes;
use common::rollback::{Guard, RollbackLog};
use common::{Context, Error, Result};

use super::StoredEndpoint;

/// A written endpoint, under a guard that undoes the write unless committed: a new endpoint
/// is deleted, a replaced one gets its previous value back.
pub type EndpointGuard<'a> = Guard<WrittenKeys<'a>>;

/// Writes the endpoint: a new one only if the key is still absent, a replacement only if the
/// key still holds the revision that was read. When `profile` is given, it is created in the
/// same transaction unless it exists, so two first ADDs on one network cannot both create it
/// and no endpoint exists without its profile. One request.
pub fn write_endpoint<'a>(
    store: &'a Datastore,
    write: &EndpointWrite<'_>,
    rollback: &RollbackLog,
) -> Result<EndpointGuard<'a>> {
    let pending = pending_endpoint(write)?;
    let (key, txn) = (write.key, &pending.txn);
    let outcome = store
        .txn(txn)
        .with_context(|| format!("write endpoint {key}"))?;
    // The datastore repeats a transaction whose answer was lost (a timeout, then failover);
    // finding exactly this value means the first attempt was applied.
    let Some(revision) = txn.landed_at(&outcome) else {
        datastore::log_conflict(txn, &outcome.current);
        return Err(Error::new(
            codes::CONFLICT,
            format!("endpoint {key} was changed by another writer"),
        ));
    };
    Ok(pending.committed(store, revision, rollback))
}

/// An endpoint write not sent yet, for [`write_endpoint`] or to join another transaction.
pub struct PendingEndpoint {
    /// Its conditions (the key absent, or at the revision read) and writes (the endpoint, the
    /// profile unless it exists).
    pub txn: Txn,
    key: String,
    previous: Option<Vec<u8>>,
}

impl PendingEndpoint {
    /// The guard of the write once it has committed at `revision`.
    pub fn committed<'a>(
        self,
        store: &'a Datastore,
        revision: i64,
        rollback: &RollbackLog,
    ) -> EndpointGuard<'a> {
        let written = WrittenKey {
            key: self.key,
            revision,
            previous: self.previous,
        };
        Guard::new(WrittenKeys::new(store, vec![written]), rollback)
    }
}

/// The transaction [`write_endpoint`] sends for `write`.
pub fn pending_endpoint(write: &EndpointWrite<'_>) -> Result<PendingEndpoint> {
    let key = write.key;
    let condition = match write.previous {
        Some(stored) => Condition::Revision(key.to_string(), stored.revision),
        None => Condition::Absent(key.to_string()),
    };
    let value = write.endpoint.to_json()?;
    let mut writes = vec![Write::Put(key.to_string(), value)];
    if let Some(profile) = write.profile {
        let puts = profile
            .key_values()?
            .into_iter()
            .map(|(k, v)| Write::Put(k, v))
            .collect();
        writes.push(Write::IfAbsent {
            key: keys::profile_tags(&profile.name),
            writes: puts,
        });
    }
    Ok(PendingEndpoint {
        txn: Txn {
            conditions: vec![condition],
            writes,
            reads_on_failure: vec![key.to_string()],
        },
        key: key.to_string(),
        previous: write.previous.map(|p| p.endpoint.to_json()).transpose()?,
    })
}

/// What [`write_endpoint`] writes.
pub struct EndpointWrite<'a> {
    /// The endpoint's key.
    pub key: &'a str,
    /// The value.
    pub endpoint: &'a WorkloadEndpoint,
    /// The endpoint it replaces (a pod's earlier sandbox), as read.
    pub previous: Option<&'a StoredEndpoint>,
    /// The network's profile, created unless it exists.
    pub profile: Option<&'a Profile>,
}
