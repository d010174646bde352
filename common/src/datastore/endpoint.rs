//! A workload endpoint as read for a compare-and-swap, and its deletion: shared by the calico
//! plugin's DEL and GC and by `calico-ipam gc`, so that every teardown removes an endpoint the
//! same way.

use super::model::WorkloadEndpoint;
use super::records::HostVethClaim;
use super::{Condition, Datastore, Entry, Txn, Write, keys, log_conflict};
use crate::error::{Context, Error, Result, codes};

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
        crate::log::warn(&format!(
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
        )),
    }
}

/// Who holds the claim on the host veth name `name` on `node`, if anyone.
pub fn read_claim(store: &Datastore, node: &str, name: &str) -> Result<Option<HostVethClaim>> {
    let key = keys::host_veth_claim(node, name);
    store
        .get(&key)
        .with_context(|| format!("read claim {key}"))?
        .as_ref()
        .map(decode_claim)
        .transpose()
}

/// The claim stored in `entry`.
pub fn decode_claim(entry: &Entry) -> Result<HostVethClaim> {
    serde_json::from_slice(&entry.value).with_context(|| format!("decode claim {}", entry.key))
}

/// What the teardown of one attachment may remove, decided from what it owns: the endpoint
/// when the container owns it (see [`StoredEndpoint::owned_by`]), the host veth only when the
/// container owns the endpoint and nobody else holds the claim on the name, and the claim only
/// when the container holds it. One rule for calico's DEL and GC and `calico-ipam gc`.
#[derive(Debug)]
pub struct Teardown {
    /// The endpoint to delete, at the revision read.
    pub endpoint: Option<StoredEndpoint>,
    /// The host veth to delete (with its container end).
    pub host_veth: Option<String>,
    /// The host veth name whose claim goes with the record.
    held_claim: Option<String>,
}

impl Teardown {
    /// Decides for `container_id`, given its endpoint as read, the host veth its endpoint or
    /// record names, and who holds the claim on that name.
    pub fn plan(
        container_id: &str,
        stored: Option<StoredEndpoint>,
        host_veth: Option<String>,
        claim: Option<&HostVethClaim>,
    ) -> Teardown {
        let owned = stored.as_ref().is_none_or(|s| s.owned_by(container_id));
        let claim_is_ours = claim.is_none_or(|c| c.container_id == container_id);
        Teardown {
            endpoint: stored.filter(|_| owned),
            held_claim: host_veth
                .clone()
                .filter(|_| claim.is_some() && claim_is_ours),
            host_veth: host_veth.filter(|_| owned && claim_is_ours),
        }
    }

    /// [`Teardown::finish`]'s transaction, for a caller that adds its own writes to it:
    /// conditional on the endpoint's revision, it deletes the endpoint and, unless
    /// `keep_record`, the record at `record_key` and the held claim.
    pub fn txn(&self, node: &str, record_key: &str, keep_record: bool) -> Txn {
        let mut txn = Txn::default();
        if !keep_record {
            txn.writes.push(Write::Delete(record_key.to_string()));
            txn.writes.extend(
                self.held_claim
                    .as_deref()
                    .map(|name| Write::Delete(keys::host_veth_claim(node, name))),
            );
        }
        if let Some(stored) = &self.endpoint {
            txn.conditions
                .push(Condition::Revision(stored.key.clone(), stored.revision));
            txn.writes.push(Write::Delete(stored.key.clone()));
            txn.reads_on_failure.push(stored.key.clone());
        }
        txn
    }

    /// The last step, after the addresses and interfaces: deletes the endpoint and, only when
    /// nothing failed before (`failures` is empty), the record at `record_key` and the held
    /// claim, in one transaction; the record stays otherwise, so that a retry finds it. All
    /// failures are returned together.
    pub fn finish(
        self,
        store: &Datastore,
        node: &str,
        record_key: &str,
        mut failures: Vec<Error>,
    ) -> Result<()> {
        let also = if failures.is_empty() {
            let mut also = vec![record_key.to_string()];
            also.extend(
                self.held_claim
                    .as_deref()
                    .map(|name| keys::host_veth_claim(node, name)),
            );
            also
        } else {
            Vec::new()
        };
        if self.endpoint.is_some() || !also.is_empty() {
            failures.extend(delete_endpoint(store, self.endpoint.as_ref(), &also).err());
        }
        Error::combine(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(active_instance_id: &str) -> StoredEndpoint {
        StoredEndpoint {
            key: "/calico/v1/host/n/workload/k8s/ns.pod/endpoint/eth0".into(),
            endpoint: WorkloadEndpoint {
                active_instance_id: active_instance_id.into(),
                ..WorkloadEndpoint::default()
            },
            revision: 7,
        }
    }

    fn claim(container_id: &str) -> HostVethClaim {
        HostVethClaim {
            endpoint: "/calico/v1/host/n/workload/k8s/ns.pod/endpoint/eth0".into(),
            container_id: container_id.into(),
        }
    }

    #[test]
    fn a_teardown_removes_only_what_the_container_owns() {
        let veth = || Some("cali0123456789a".to_string());
        // (endpoint's active instance, claim holder) → (endpoint, host veth, claim) removed
        let cases = [
            (Some("a"), Some("a"), (true, true, true)),
            (Some(""), None, (true, true, false)),
            (None, Some("a"), (false, true, true)),
            // A pod's newer sandbox owns endpoint and name: a late teardown of `a` keeps both.
            (Some("b"), Some("b"), (false, false, false)),
            // The name went to another container: the endpoint goes, the link and claim stay.
            (Some("a"), Some("b"), (true, false, false)),
        ];
        for (active, holder, want) in cases {
            let plan = Teardown::plan(
                "a",
                active.map(endpoint),
                veth(),
                holder.map(claim).as_ref(),
            );
            let got = (
                plan.endpoint.is_some(),
                plan.host_veth.is_some(),
                plan.held_claim.is_some(),
            );
            assert_eq!(got, want, "{active:?} {holder:?}");
        }
    }
}
