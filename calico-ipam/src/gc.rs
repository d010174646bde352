//! GC: release the handles of this network on this node whose container is not listed.

use common::cni::lock::AttachmentLock;
use common::cni::{self, Request};
use common::datastore::Datastore;
use common::ipam::{GcScope, release_unlisted_idle_handles};
use common::{Error, Result};

/// Handles GC. A handle stays while a valid attachment holds it, or while a verb of its
/// attachment runs (see [`release_unlisted_idle_handles`]). An absent list means no attachment
/// is valid: libcni sends no key when it has none. Every handle is tried; all failures are
/// returned together.
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
    // An attachment that calico (or this plugin) is adding or deleting right now keeps its
    // handle: the runtime made its list before that ADD, and must not run GC alongside it, but
    // one that does must not free an address a container is being given.
    let hold = |container_id: &str, ifname: &str| {
        let own = AttachmentLock::try_acquire(&req.lock_dir, "calico-ipam", container_id, ifname)?;
        let calico = AttachmentLock::try_acquire(&req.lock_dir, "calico", container_id, ifname)?;
        Ok(own.zip(calico))
    };
    let outcome = release_unlisted_idle_handles(&store, &scope, &valid, hold)?;
    for (handle, count) in &outcome.released {
        cni::log::info(&format!("gc released {count} addresses of handle {handle}"));
    }
    Error::combine(outcome.failures)
}
