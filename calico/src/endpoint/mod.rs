//! The workload endpoint in etcd: its key, the lookups, its write (under a guard) and the
//! changes of its profile list.

mod profiles;
mod write;

use common::datastore::model::WorkloadEndpoint;
use common::datastore::{Datastore, keys};
use common::{Context, Result};

use crate::workload::WorkloadIds;

pub use common::datastore::endpoint::{StoredEndpoint, read_endpoint_at};
pub use profiles::{append_profile, remove_profile};
pub use write::{EndpointGuard, EndpointWrite, PendingEndpoint, pending_endpoint, write_endpoint};

/// The key of this attachment's endpoint.
pub fn endpoint_key(ids: &WorkloadIds) -> String {
    keys::workload_endpoint(
        &ids.node,
        ids.orchestrator.as_str(),
        &ids.workload,
        &ids.endpoint,
    )
}

/// The endpoint of this exact attachment, if stored.
pub fn read_endpoint(store: &Datastore, ids: &WorkloadIds) -> Result<Option<StoredEndpoint>> {
    read_endpoint_at(store, &endpoint_key(ids))
}

/// Which endpoint records the host link `link_name` on this node, if any.
pub fn endpoint_using_link(
    store: &Datastore,
    node: &str,
    link_name: &str,
) -> Result<Option<String>> {
    let prefix = keys::workloads_prefix(node);
    let entries = store
        .list(&prefix)
        .with_context(|| format!("list endpoints under {prefix}"))?;
    Ok(entries.into_iter().find_map(|entry| {
        let endpoint = WorkloadEndpoint::from_json(&entry.value).ok()?;
        (endpoint.name == link_name).then_some(entry.key)
    }))
}
