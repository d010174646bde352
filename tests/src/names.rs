//! Names that are unique across the threads of one test binary and across the test binaries
//! cargo runs in parallel: every one embeds the process id and a per-process counter.

use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh number, never returned twice in this process.
pub fn next() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// `<prefix>-<pid>-<n>`, e.g. `node-4711-3`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), next())
}

/// A 64-hex-digit container id (the shape Docker and containerd use) whose first 11
/// characters are unique, so its host veth name (`cali` + 11) is unique as well.
pub fn container_id() -> String {
    container_id_with_prefix(&unique_prefix11())
}

/// Two distinct container ids that share their first 11 characters.
pub fn container_ids_sharing_prefix() -> (String, String) {
    let prefix = unique_prefix11();
    let a = format!("{prefix}{}", "a".repeat(53));
    let b = format!("{prefix}{}", "b".repeat(53));
    (a, b)
}

/// A container id starting with `prefix`, padded with hex digits to 64 characters.
pub fn container_id_with_prefix(prefix: &str) -> String {
    let filler = "0123456789abcdef".repeat(4);
    let len = 64usize.saturating_sub(prefix.len());
    format!("{prefix}{}", &filler[..len.min(filler.len())])
}

/// 11 hex digits: 6 from the pid, 5 from the counter.
fn unique_prefix11() -> String {
    format!(
        "{:06x}{:05x}",
        std::process::id() & 0xff_ffff,
        next() & 0xf_ffff
    )
}
