//! The workload endpoint and the per-network profile in etcd.

use common::cni::Request;
use common::datastore::model::{Profile, WorkloadEndpoint};
use common::datastore::undo::{WrittenKey, WrittenKeys};
use common::datastore::{self, Condition, Datastore, Entry, Read, Txn, Write, keys};
use common::error::codes;
use common::rollback::{Guard, RollbackLog};
use common::{Context, Error, Result};

use crate::workload::WorkloadIds;

pub use common::datastore::endpoint::{StoredEndpoint, read_endpoint_at};

/// How often a compare-and-swap on an endpoint is retried after losing to another writer.
const CAS_ATTEMPTS: usize = 10;

/// Refuses to work while Calico's Ready flag is explicitly `false` (an upgrade is in progress).
/// An absent flag means ready, so the plugin works without calico/node.
pub fn ensure_ready(store: &Datastore) -> Result<()> {
    let flag = store.get(keys::READY).context("read the Ready flag")?;
    check_ready(flag.as_ref())
}

fn check_ready(flag: Option<&Entry>) -> Result<()> {
    match flag.map(|entry| String::from_utf8_lossy(&entry.value).trim().to_string()) {
        Some(value) if value == "false" => Err(Error::new(
            codes::NOT_READY,
            format!(
                "calico is currently not ready to process requests: {} is false",
                keys::READY
            ),
        )),
        _ => Ok(()),
    }
}

/// The answers to a list of reads, in order.
pub type Answers = Vec<Vec<Entry>>;

/// ADD's first read, one request: the Ready flag (refusing when it is `false`), this
/// `CNI_IFNAME`'s endpoint of the workload, the entry at `record_key` (this attachment's
/// record), the entries at `also` (in that order; `None` when absent), and the answers to
/// `policy` (local policy's profiles). Endpoints of the workload's other interfaces do not
/// matter: each interface name is an attachment of its own, with its own veth.
pub fn read_for_add(
    store: &Datastore,
    ids: &WorkloadIds,
    record_key: &str,
    also: &[String],
    policy: &[Read],
) -> Result<FirstRead> {
    let mut keys = vec![record_key.to_string()];
    keys.extend_from_slice(also);
    let what = format!("the Ready flag, {} and {record_key}", endpoint_key(ids));
    let (endpoint, mut found, policy) = read_first(store, ids, keys, policy, &what)?;
    let also = found.split_off(1.min(found.len()));
    Ok(FirstRead {
        endpoint,
        record: found.pop().flatten(),
        also,
        policy,
    })
}

/// What [`read_for_add`] found.
pub struct FirstRead {
    /// This `CNI_IFNAME`'s endpoint of the workload.
    pub endpoint: Option<StoredEndpoint>,
    /// This attachment's record.
    pub record: Option<Entry>,
    /// The further keys asked for, in order.
    pub also: Vec<Option<Entry>>,
    /// The answers to local policy's reads, in order.
    pub policy: Answers,
}

/// DEL's first read, one request: the Ready flag (refusing when it is `false`), this
/// attachment's endpoint, and the entries at `also` (in that order; `None` when absent).
pub fn read_for_del(
    store: &Datastore,
    ids: &WorkloadIds,
    also: &[String],
) -> Result<(Option<StoredEndpoint>, Vec<Option<Entry>>)> {
    let what = format!("the Ready flag and {}", endpoint_key(ids));
    let (endpoint, found, _) = read_first(store, ids, also.to_vec(), &[], &what)?;
    Ok((endpoint, found))
}

/// A verb's first read, one request: the Ready flag (refusing when it is `false`), this
/// attachment's endpoint, the entries at `entry_keys` (`None` when absent) and the answers to
/// `extra`, each in order. `what` names them for the error.
fn read_first(
    store: &Datastore,
    ids: &WorkloadIds,
    entry_keys: Vec<String>,
    extra: &[Read],
    what: &str,
) -> Result<(Option<StoredEndpoint>, Vec<Option<Entry>>, Answers)> {
    let wanted = 2 + entry_keys.len();
    let mut reads = vec![
        Read::Key(keys::READY.to_string()),
        Read::Key(endpoint_key(ids)),
    ];
    reads.extend(entry_keys.into_iter().map(Read::Key));
    reads.extend_from_slice(extra);
    let mut answers = store.read(&reads).with_context(|| format!("read {what}"))?;
    let extra = answers.split_off(wanted.min(answers.len()));
    let mut firsts = answers
        .into_iter()
        .map(|entries| entries.into_iter().next());
    check_ready(firsts.next().flatten().as_ref())?;
    let endpoint = firsts
        .next()
        .flatten()
        .map(StoredEndpoint::from_entry)
        .transpose()?;
    Ok((endpoint, firsts.collect(), extra))
}

/// The endpoint of this exact attachment, if stored.
pub fn read_endpoint(store: &Datastore, ids: &WorkloadIds) -> Result<Option<StoredEndpoint>> {
    read_endpoint_at(store, &endpoint_key(ids))
}

/// Removes `profile` from an endpoint's profiles; an endpoint deleted meanwhile is fine.
pub fn remove_profile(store: &Datastore, stored: StoredEndpoint, profile: &str) -> Result<()> {
    let what = format!("remove profile {profile} from");
    update_endpoint(store, stored, &what, |ep| {
        let before = ep.profile_ids.len();
        ep.profile_ids.retain(|p| p != profile);
        ep.profile_ids.len() != before
    })?;
    Ok(())
}

/// The endpoint this network only joined, if that is the situation: plain CNI (a pod's
/// endpoint belongs to its pod), this `CNI_IFNAME`'s endpoint `own` made by another network's
/// ADD, carrying this network's profile. Only the same interface name joins: another name has
/// an endpoint of its own.
pub fn joined_endpoint(
    req: &Request,
    ids: &WorkloadIds,
    own: Option<&StoredEndpoint>,
) -> Option<StoredEndpoint> {
    if ids.is_kubernetes() {
        return None;
    }
    let network = &req.config.name;
    own.filter(|s| {
        let profiles = &s.endpoint.profile_ids;
        profiles.len() > 1 && profiles.first() != Some(network) && profiles.contains(network)
    })
    .cloned()
}

/// The key of this attachment's endpoint.
pub fn endpoint_key(ids: &WorkloadIds) -> String {
    keys::workload_endpoint(&ids.node, &ids.orchestrator, &ids.workload, &ids.endpoint)
}

/// Adds `profile` to an existing endpoint's profiles unless it is there already.
pub fn append_profile(
    store: &Datastore,
    stored: StoredEndpoint,
    profile: &str,
) -> Result<WorkloadEndpoint> {
    let key = stored.key.clone();
    let what = format!("add profile {profile} to");
    let updated = update_endpoint(store, stored, &what, |ep| {
        let absent = !ep.profile_ids.iter().any(|p| p == profile);
        if absent {
            ep.profile_ids.push(profile.to_string());
        }
        absent
    })?;
    updated.ok_or_else(|| {
        Error::new(
            codes::CONFLICT,
            format!("endpoint {key} was deleted while trying to {what} it"),
        )
    })
}

/// Applies `change` (which says whether it changed anything) with compare-and-swap, re-reading
/// and re-applying after losing to another writer, so a concurrent change is never overwritten.
/// `None` when the endpoint was deleted meanwhile.
fn update_endpoint(
    store: &Datastore,
    mut stored: StoredEndpoint,
    what: &str,
    change: impl Fn(&mut WorkloadEndpoint) -> bool,
) -> Result<Option<WorkloadEndpoint>> {
    for _ in 0..CAS_ATTEMPTS {
        let mut updated = stored.endpoint.clone();
        if !change(&mut updated) {
            return Ok(Some(updated));
        }
        let txn = Txn {
            conditions: vec![Condition::Revision(stored.key.clone(), stored.revision)],
            writes: vec![Write::Put(stored.key.clone(), updated.to_json()?)],
            reads_on_failure: vec![stored.key.clone()],
        };
        let outcome = store
            .txn(&txn)
            .with_context(|| format!("{what} endpoint {}", stored.key))?;
        if outcome.committed {
            return Ok(Some(updated));
        }
        datastore::log_conflict(&txn, &outcome.current);
        let Some(current) = outcome.current.into_iter().next() else {
            return Ok(None);
        };
        stored.endpoint = WorkloadEndpoint::from_json(&current.value)?;
        stored.revision = current.mod_revision;
    }
    Err(Error::new(
        codes::CONFLICT,
        format!(
            "endpoint {} kept changing while trying to {what} it",
            stored.key
        ),
    ))
}

/// Which endpoint records the host link `link_name` on this node, if any.
pub fn endpoint_using_link(
    store: &Datastore,
    node: &str,
    link_name: &str,
) -> Result<Option<String>> {
    let prefix = keys::workloads_prefix(node);
    let entries = store
        .list(&prefix)
        .with_context(|| format!("list endpoints under {prefix}"))?;
    Ok(entries.into_iter().find_map(|entry| {
        let endpoint = WorkloadEndpoint::from_json(&entry.value).ok()?;
        (endpoint.name == link_name).then_some(entry.key)
    }))
}

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
    let key = write.key;
    let condition = match write.previous {
        Some(stored) => Condition::Revision(key.to_string(), stored.revision),
        None => Condition::Absent(key.to_string()),
    };
    let value = write.endpoint.to_json()?;
    let mut writes = vec![Write::Put(key.to_string(), value.clone())];
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
    let txn = Txn {
        conditions: vec![condition],
        writes,
        reads_on_failure: vec![key.to_string()],
    };
    let outcome = store
        .txn(&txn)
        .with_context(|| format!("write endpoint {key}"))?;
    // The datastore repeats a transaction whose answer was lost (a timeout, then failover);
    // finding exactly this value means the first attempt was applied.
    let applied_before =
        outcome.resent && outcome.current.first().is_some_and(|e| e.value == value);
    if !outcome.committed && !applied_before {
        datastore::log_conflict(&txn, &outcome.current);
        return Err(Error::new(
            codes::CONFLICT,
            format!("endpoint {key} was changed by another writer"),
        )
        .with_kind(common::Kind::CasConflict));
    }
    let written = WrittenKey {
        key: key.to_string(),
        revision: match outcome.committed {
            true => outcome.revision,
            false => outcome.current.first().map_or(0, |e| e.mod_revision),
        },
        previous: write.previous.map(|p| p.endpoint.to_json()).transpose()?,
    };
    Ok(Guard::new(WrittenKeys::new(store, vec![written]), rollback))
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

/// Creates the profile unless it exists; profiles are never updated by the plugin.
pub fn ensure_profile(store: &Datastore, profile: &Profile) -> Result<()> {
    let tags_key = keys::profile_tags(&profile.name);
    store
        .txn(&Txn {
            conditions: vec![Condition::Absent(tags_key)],
            writes: profile
                .key_values()?
                .into_iter()
                .map(|(k, v)| Write::Put(k, v))
                .collect(),
            reads_on_failure: Vec::new(),
        })
        .with_context(|| format!("create profile {}", profile.name))?;
    Ok(())
}
