//! Calico's Ready flag: while it is explicitly `false` (an upgrade is in progress), the plugin
//! refuses to work.

use common::datastore::{Datastore, Entry, keys};
use common::error::codes;
use common::{Context, Error, Result};

/// Refuses to work while Calico's Ready flag is explicitly `false` (an upgrade is in progress).
/// An absent flag means ready, so the plugin works without calico/node.
pub fn ensure_ready(store: &Datastore) -> Result<()> {
    let flag = store.get(keys::READY).context("read the Ready flag")?;
    check_ready(flag.as_ref())
}

/// Refuses when `flag`, the Ready flag as read, is `false`.
pub fn check_ready(flag: Option<&Entry>) -> Result<()> {
    match flag.map(|entry| String::from_utf8_lossy(&entry.value).trim().to_string()) {
        Some(value) if value == "false" => Err(Error::new(
            codes::NOT_READY,
            format!(
                "calico is currently not ready to process requests: {} is false",
                keys::READY
            ),
        )),
        _ => Ok(()),
    }
}
