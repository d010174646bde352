//! The profile the plugin maintains for a network: which one, and its creation.

use common::cni::Request;
use common::datastore::model::Profile;
use common::datastore::{Condition, Datastore, Txn, Write, keys};
use common::{Context, Result};

use crate::workload::WorkloadIds;
use common::config::PolicyType;

/// The profile the plugin maintains for the network (also under local policy, which enforces
/// it), unless another policy type or the operator (`create_profiles: false`) manages
/// profiles: inbound only from the network's own endpoints, or (Kubernetes without policy)
/// everything.
pub fn network_profile(req: &Request, ids: &WorkloadIds) -> Option<Profile> {
    let name = &req.config.name;
    match (
        matches!(
            req.config.policy.policy_type,
            PolicyType::NetworkProfile | PolicyType::Local
        ) && req.config.create_profiles,
        ids.is_kubernetes(),
    ) {
        (false, _) => None,
        (true, false) => Some(Profile::for_network(name)),
        (true, true) => Some(Profile::allow_all(name)),
    }
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
