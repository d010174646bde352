//! The first etcd request of ADD and DEL: the Ready flag, this attachment's endpoint and
//! whatever else the verb needs to know before it changes anything, in one read, so that a verb
//! that cannot learn what exists touches nothing.

use common::datastore::{Datastore, Entry, Read, keys};
use common::{Context, Result};

use crate::endpoint::{StoredEndpoint, endpoint_key};
use crate::ready::check_ready;
use crate::workload::WorkloadIds;

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
