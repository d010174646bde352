//! Adding and removing a profile on a stored endpoint, by compare-and-swap so that a
//! concurrent change of the endpoint is never overwritten.

use common::datastore::model::WorkloadEndpoint;
use common::datastore::{self, Condition, Datastore, Txn, Write};
use common::error::codes;
use common::{Context, Error, Result};

use super::StoredEndpoint;

/// How often a compare-and-swap on an endpoint is retried after losing to another writer.
const CAS_ATTEMPTS: usize = 10;

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
