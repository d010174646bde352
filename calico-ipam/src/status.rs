//! STATUS: etcd answers and every address family the config asks for has room.

use common::cni::Request;
use common::datastore::Datastore;
use common::ipam::{RoomRequest, address_shortages};
use common::{Code, Error, Kind, Result};

/// Handles STATUS: code 50 when etcd cannot be read, code 51 when an ADD would find no free
/// address (naming the full pools, or saying there is no enabled pool).
pub fn status(req: &Request) -> Result<()> {
    let store =
        Datastore::connect(&req.config.etcd).map_err(|e| e.with_code(Code::NotAvailable))?;
    let conf = &req.config.ipam;
    let room = RoomRequest {
        node: &req.config.nodename,
        ipv4: conf.assign_ipv4,
        ipv6: conf.assign_ipv6,
        ipv4_pools: &conf.ipv4_pools,
        ipv6_pools: &conf.ipv6_pools,
    };
    let shortages = address_shortages(&store, &room).map_err(|e| not_available(e, req))?;
    if shortages.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        Code::NotAvailableLimitedConnectivity,
        shortages.join("; "),
    ))
}

/// A failed read as STATUS reports it: unreachable etcd names the endpoints, anything else
/// keeps its message; both with code 50.
fn not_available(err: Error, req: &Request) -> Error {
    if err.kind() != Kind::TryAgainLater {
        return err.with_code(Code::NotAvailable);
    }
    Error::new(
        Code::NotAvailable,
        format!(
            "etcd could not be reached at {}",
            req.config.etcd.endpoints.join(", ")
        ),
    )
    .with_details(err.to_string())
}
