//! CHECK: the handle of the attachment holds exactly the addresses of `prevResult`.

use std::net::IpAddr;

use common::Result;
use common::cni::Request;
use common::datastore::Datastore;
use common::error::codes;
use common::ipam::{handle_id, handle_mismatches};

/// Handles CHECK: reads `prevResult`'s addresses, then compares them with what the handle
/// `<network>.<container id>` holds. Every difference is reported, each in its own sentence.
pub fn check(req: &Request) -> Result<()> {
    let expected = prev_result_addresses(req)?;
    let store = Datastore::connect(&req.config.etcd)?;
    let handle = handle_id(&req.config.name, &req.container_id, &req.ifname);
    let mismatches = handle_mismatches(&store, &handle, &expected)?;
    common::error::from_findings(codes::CHECK_FAILED, &mismatches)
}

/// The addresses of `prevResult`'s `ips`, without their prefix lengths: the result may come
/// from the end of a chain, where a plugin may have widened them.
fn prev_result_addresses(req: &Request) -> Result<Vec<IpAddr>> {
    let prev = req.prev_result()?;
    Ok(prev.ips.iter().map(|ip| ip.address.ip()).collect())
}
