//! Harness for the root-only integration tests of the `calico` and `calico-ipam` plugins.
//!
//! # A host of its own
//! Every test runs on a throwaway "host" network namespace ([`Netns::host`]): the test's
//! thread enters it, so everything the test starts or opens from then on lives there — the
//! plugins it runs, its etcd, the stand-in API server's socket, `ip`, `nft`, `ping`, the
//! container runtimes, `/proc/sys/net`. etcd listens on that namespace's loopback, which only
//! this test and its plugins can reach. Host veths, routes, sysctls and nftables tables are
//! the namespace's, and deleting it at the end takes whatever a failed test left with it; the
//! machine's own host namespace is never changed, and every test uses the same subnets
//! ([`Subnet::BED`]). The namespace has `lo`, and an `uplink` with an address and the default
//! route, as a real host would.
//!
//! # Fixtures
//! Every fixture is a `Drop` type, so a failing test still cleans up after itself:
//! - [`Netns`]: a uniquely named network namespace, a container's (`ct-<pid>-<n>`) or a test's
//!   throwaway host (`host-<pid>-<n>`);
//! - [`Etcd`]: a real `/usr/bin/etcd` (one member or a cluster) on free loopback ports with a
//!   temp data dir;
//! - [`TempDir`]: a directory removed with its contents;
//! - [`CniPath`]: a directory of symlinks to the plugins a test may delegate to;
//! - [`HostLink`]: a link created by a test on its host, deleted if still there;
//! - [`TestBed`]: a host namespace, an etcd in it, a `CNI_PATH`, host-local's data dir, the
//!   subnet, node and network names, plus the ADD/DEL calls and the "nothing is left"
//!   assertion;
//! - [`Container`]: a container on a bed, whose drop runs DEL and that assertion.
//!
//! Plugins are run with [`run_plugin`]: only the given environment plus `PATH`, so a test
//! controls every `CNI_*` variable. Kernel state is read back independently with `ip -j` and
//! `/proc/sys` (module [`kernel`]).

pub mod apiserver;
pub mod container;
pub mod etcd;
pub mod kernel;
pub mod names;
pub mod netconf;
pub mod netns;
pub mod pki;
pub mod plugin;
pub mod tempdir;
pub mod testbed;

pub use container::Container;
pub use etcd::Etcd;
pub use kernel::HostLink;
pub use netconf::NetConf;
pub use netns::Netns;
pub use plugin::{CniError, CniPath, Env, PluginOutput, run_plugin};
pub use tempdir::TempDir;
pub use testbed::{Subnet, TestBed};

/// The spec versions the plugins advertise in VERSION, in order.
pub const SUPPORTED_VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The version a config without `cniVersion` is treated as.
pub const DEFAULT_CNI_VERSION: &str = "0.1.0";

/// MAC address of every host-side veth.
pub const HOST_VETH_MAC: &str = "ee:ee:ee:ee:ee:ee";

/// The link-local next hop every container routes through (answered by proxy ARP on the host).
pub const GATEWAY: &str = "169.254.1.1";

/// The host veth name the plugin derives from a container id: `cali` + its first 11 characters.
pub fn host_veth_name(container_id: &str) -> String {
    let prefix: String = container_id.chars().take(11).collect();
    format!("cali{prefix}")
}

/// The host veth name of a container's interface `ifname`: [`host_veth_name`] for `eth0`, else
/// `cali` + the first 11 hex digits of the SHA-1 of `<container id>:<ifname>` (computed with
/// `sha1sum`, independently of the plugin).
pub fn host_veth_name_for(container_id: &str, ifname: &str) -> String {
    if ifname == "eth0" {
        return host_veth_name(container_id);
    }
    use std::io::Write;
    let mut child = std::process::Command::new("sha1sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run sha1sum");
    child
        .stdin
        .take()
        .expect("sha1sum stdin")
        .write_all(format!("{container_id}:{ifname}").as_bytes())
        .expect("write to sha1sum");
    let out = child.wait_with_output().expect("sha1sum output");
    let digest = String::from_utf8_lossy(&out.stdout);
    format!("cali{}", &digest[..11])
}

/// The workspace root (the parent of this crate).
pub fn workspace_dir() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| manifest.to_path_buf())
}
