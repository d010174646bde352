//! DEL: release the addresses, delete the endpoint, remove the interfaces. Idempotent.

use common::cni::Request;
use common::datastore::Datastore;
use common::{Error, Result};

use crate::endpoint;
use crate::ipam;
use crate::network;
use crate::workload::WorkloadIds;

/// Handles DEL. The endpoint is read first: when etcd cannot say what exists, nothing is
/// touched. After that every cleanup step runs, and their failures are returned together.
pub fn del(req: &Request) -> Result<()> {
    let ids = WorkloadIds::for_request(req);
    let store = Datastore::connect(&req.config.etcd)?;
    endpoint::ensure_ready(&store)?;
    let stored = endpoint::read_endpoint(&store, &ids)?;
    let recorded_host_ifname = stored.as_ref().map(|s| s.endpoint.name.clone());
    let failures: Vec<Error> = [
        ipam::release(req),
        stored.as_ref().map_or(Ok(()), |s| endpoint::delete_endpoint(&store, s).map(|_| ())),
        network::remove_workload_interfaces(req, recorded_host_ifname.as_deref()),
    ]
    .into_iter()
    .filter_map(Result::err)
    .collect();
    combine(failures)
}

/// One error carrying every failure's message, with the first failure's code.
fn combine(mut failures: Vec<Error>) -> Result<()> {
    if failures.len() <= 1 {
        return failures.pop().map_or(Ok(()), Err);
    }
    let msgs: Vec<String> = failures.iter().map(|e| e.to_string()).collect();
    Err(failures.swap_remove(0).with_details(msgs.join("; ")))
}
