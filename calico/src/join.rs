//! Joining a second network under the same interface name, as Calico v1 does: a plain
//! container whose `CNI_IFNAME` already has an endpoint made by another network's ADD gets no
//! interface or addresses of its own. The network's profile goes on that endpoint (ADD) and
//! comes off again (DEL); CHECK has nothing of its own to check. A pod's endpoint belongs to
//! its pod and is never joined.

use common::Result;
use common::cni::Request;
use common::datastore::Datastore;
use common::datastore::model::WorkloadEndpoint;

use crate::endpoint::{self, StoredEndpoint};
use crate::ipam_delegation;
use crate::policy;
use crate::profile;
use crate::workload::WorkloadIds;

/// Whether ADD joins `found`, this `CNI_IFNAME`'s endpoint: a plain container's endpoint that
/// another network made.
pub fn joins(req: &Request, ids: &WorkloadIds, found: &StoredEndpoint) -> bool {
    !ids.is_kubernetes() && found.endpoint.profile_ids.first() != Some(&req.config.name)
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

/// ADD of a network onto `existing`, this `CNI_IFNAME`'s endpoint made by another network (or a
/// repeated ADD of such a join): adds this network's profile, creating the profile where the
/// plugin maintains it, and enforces it. Returns the endpoint, whose addresses are the answer;
/// no IPAM or interface work.
pub fn join(
    store: &Datastore,
    req: &Request,
    existing: StoredEndpoint,
) -> Result<WorkloadEndpoint> {
    let updated = endpoint::append_profile(store, existing, &req.config.name)?;
    if let Some(profile) = profile::network_profile(req, &WorkloadIds::for_request(req)) {
        profile::ensure_profile(store, &profile)?;
    }
    policy::enforce_joined(store, req, &updated)?;
    Ok(updated)
}

/// DEL of a network the container joined: drops its profile and releases whatever the IPAM
/// plugin may hold for it; the interface stays with the network that made it.
pub fn leave(store: &Datastore, req: &Request, stored: StoredEndpoint) -> Result<()> {
    let released = ipam_delegation::release(store, req);
    endpoint::remove_profile(store, stored.clone(), &req.config.name)?;
    policy::enforce_left(store, req, &stored.endpoint)?;
    released
}
