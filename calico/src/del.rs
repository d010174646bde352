//! DEL: release the addresses, delete the endpoint, remove the interfaces. Idempotent.

use common::cni::Request;
use common::datastore::Datastore;
use common::{Error, Result};

use crate::endpoint::{self, StoredEndpoint};
use crate::ipam;
use crate::network;
use crate::workload::WorkloadIds;

/// Handles DEL. The endpoint is read first: when etcd cannot say what exists, nothing is
/// touched. A pod's endpoint owned by another sandbox (a late DEL of an older one) is left
/// alone; this sandbox's addresses and interfaces are removed all the same. Every cleanup
/// step runs, and their failures are returned together.
pub fn del(req: &Request) -> Result<()> {
    let ids = WorkloadIds::for_request(req);
    let store = Datastore::connect(&req.config.etcd)?;
    endpoint::ensure_ready(&store)?;
    let owned = endpoint::read_endpoint(&store, &ids)?.filter(|stored| owned_by(stored, &req.container_id));
    let recorded_host_ifname = owned.as_ref().map(|s| s.endpoint.name.clone());
    let failures: Vec<Error> = [
        ipam::release(req),
        owned.as_ref().map_or(Ok(()), |s| endpoint::delete_endpoint(&store, s).map(|_| ())),
        network::remove_workload_interfaces(req, recorded_host_ifname.as_deref()),
    ]
    .into_iter()
    .filter_map(Result::err)
    .collect();
    combine(failures)
}

/// An endpoint without an active instance (plain CNI, or written by an older plugin) belongs to
/// whoever deletes it; a pod's belongs to the sandbox that last set it up.
fn owned_by(stored: &StoredEndpoint, container_id: &str) -> bool {
    let active = &stored.endpoint.active_instance_id;
    if active.is_empty() || active == container_id {
        return true;
    }
    common::cni::log::warn(&format!(
        "CNI_CONTAINERID {container_id} does not match the active instance {active} of endpoint {}: leaving it",
        stored.key
    ));
    false
}

/// One error carrying every failure's message, with the first failure's code.
fn combine(mut failures: Vec<Error>) -> Result<()> {
    if failures.len() <= 1 {
        return failures.pop().map_or(Ok(()), Err);
    }
    let msgs: Vec<String> = failures.iter().map(|e| e.to_string()).collect();
    Err(failures.swap_remove(0).with_details(msgs.join("; ")))
}
