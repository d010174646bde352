//! CHECK: the handle of the attachment holds exactly the addresses of `prevResult`.

use std::net::IpAddr;

use common::cni::{CniResult, Request};
use common::datastore::Datastore;
use common::error::codes;
use common::ipam::{handle_id, handle_mismatches};
use common::{Code, Error, Result};

/// Handles CHECK: reads `prevResult`'s addresses, then compares them with what the handle
/// `<network>.<container id>` holds. Every difference is reported, each in its own sentence.
pub fn check(req: &Request) -> Result<()> {
    let expected = prev_result_addresses(req)?;
    let store = Datastore::connect(&req.config.etcd)?;
    let handle = handle_id(&req.config.name, &req.container_id);
    let mismatches = handle_mismatches(&store, &handle, &expected)?;
    match mismatches.as_slice() {
        [] => Ok(()),
        [only] => Err(Error::new(codes::CHECK_FAILED, only.clone())),
        [first, ..] => {
            Err(Error::new(codes::CHECK_FAILED, first.clone()).with_details(mismatches.join("; ")))
        }
    }
}

/// The addresses of `prevResult`'s `ips`, without their prefix lengths: the result may come
/// from the end of a chain, where a plugin may have widened them.
fn prev_result_addresses(req: &Request) -> Result<Vec<IpAddr>> {
    let prev = req
        .config
        .prev_result
        .as_ref()
        .ok_or_else(|| Error::new(Code::InvalidConfig, "required prevResult missing"))?;
    let prev = CniResult::from_json(prev).map_err(|e| e.context("decode prevResult"))?;
    Ok(prev.ips.iter().map(|ip| ip.address.ip()).collect())
}
