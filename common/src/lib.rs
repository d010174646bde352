//! Shared library of the `calico` and `calico-ipam` CNI plugins: the CNI protocol, the network
//! config, the etcd datastore, the kernel dataplane and Calico's IP address management.

#![warn(missing_docs)]

pub mod cni;
pub mod config;
pub mod dataplane;
pub mod datastore;
pub mod error;
pub mod fault;
pub mod file;
pub mod ipam;
pub mod kubernetes;
pub mod log;
pub mod name_rule;
pub mod rollback;
pub mod special_ranges;

pub use error::{Code, Context, Error, Kind, Result};

/// The git commit the binaries were built from (`git rev-parse --short HEAD` at build time), or
/// `unknown` when the source had no git history.
pub const GIT_COMMIT: &str = env!("CALICO_GIT_COMMIT");

/// What `--version` prints for `binary`: its name, the crate version and [`GIT_COMMIT`].
pub fn version_line(binary: &str) -> String {
    format!(
        "{binary} {} (commit {GIT_COMMIT})",
        env!("CARGO_PKG_VERSION")
    )
}
