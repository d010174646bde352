//! GC: release the handles of this network on this node whose container is not listed.

use common::cni::{self, Request};
use common::datastore::Datastore;
use common::ipam::{GcScope, release_unlisted_handles};
use common::{Error, Result};

/// Handles GC. A handle stays while a valid attachment holds it (see
/// [`release_unlisted_handles`]). An absent list means no attachment is valid: libcni sends no
/// key when it has none. Every handle is tried; all failures are returned together.
pub fn gc(req: &Request) -> Result<()> {
    let store = Datastore::connect(&req.config.etcd)?;
    let valid: Vec<(&str, &str)> = req
        .config
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let scope = GcScope {
        node: &req.config.nodename,
        network: &req.config.name,
    };
    let outcome = release_unlisted_handles(&store, &scope, &valid)?;
    for (handle, count) in &outcome.released {
        cni::log::info(&format!("gc released {count} addresses of handle {handle}"));
    }
    Error::combine(outcome.failures)
}
