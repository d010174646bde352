//! The kernel dataplane of a Calico workload: entering the container's network namespace, the
//! veth pair, the container's addresses and routes, the host routes, the per-interface
//! sysctls and the nftables ruleset of local policy. Everything goes through netlink
//! (rtnetlink, nfnetlink) and `/proc/sys`.
//!
//! Every public function is synchronous and acts through a [`Netlink`] session given to it: the
//! host's ([`Netlink::host`]) or a container's ([`netns::ContainerNetns`], which enters the
//! namespace once to open it). A netlink socket acts on the namespace it was opened in, so a
//! verb needs one session per namespace, whatever thread it runs on.

pub mod addr;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod route;
pub mod sysctl;
pub mod veth;

use std::net::Ipv6Addr;

use ipnetwork::IpNetwork;

pub use netlink::Netlink;
use netns::ContainerNetns;

use crate::Result;

/// Configures the container end of a veth pair the way Calico v1.11 does: for IPv6 the
/// namespace-wide `disable_ipv6` switches are cleared, then the routes are added (IPv4: a link
/// route to 169.254.1.1 and a default route via it; IPv6: a default route via
/// `ipv6_gateway`), then every address as a /32 or /128.
///
/// `container` is the container's namespace, `ifindex` the container end's index there and
/// `ipv6_gateway` the host end's link-local address ([`addr::host_link_local_address`]),
/// required when `addrs` holds an IPv6 address.
pub fn configure_container_interface(
    container: &ContainerNetns,
    ifindex: u32,
    addrs: &[IpNetwork],
    ipv6_gateway: Option<Ipv6Addr>,
) -> Result<()> {
    if addrs.iter().any(IpNetwork::is_ipv6) {
        container.enable_ipv6()?;
    }
    let netlink = container.netlink();
    route::add_container_routes(netlink, ifindex, addrs, ipv6_gateway)?;
    addr::add_addresses(netlink, ifindex, addrs)
}

/// The description of `errno` in lower case, like Go's error texts ("file exists").
pub(crate) fn errno_text(errno: nix::errno::Errno) -> String {
    let mut chars = errno.desc().chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `aa:bb:cc:dd:ee:ff` in lower case.
pub fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Fixtures of the root tests: a throwaway host namespace for the test's thread, a uniquely
/// named netns and host links, all removed on drop.
#[cfg(test)]
pub(crate) mod testutil {
    use std::fs::File;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::thread::ThreadId;

    use nix::sched::{CloneFlags, setns, unshare};

    use super::Netlink;

    static COUNTER: AtomicU32 = AtomicU32::new(0);

    fn unique_suffix() -> String {
        format!(
            "{:x}{}",
            std::process::id() & 0xffff,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// An interface name unique to this test run, `prefix` plus at most 9 characters.
    pub fn unique_ifname(prefix: &str) -> String {
        format!("{prefix}{}", unique_suffix())
    }

    fn run_ip(args: &[&str]) -> std::process::Output {
        Command::new("ip").args(args).output().expect("run ip")
    }

    /// Runs `ip -j <args>` and parses its output.
    pub fn ip_json(args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        let out = run_ip(&all);
        assert!(
            out.status.success(),
            "ip {all:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("ip -j prints JSON")
    }

    /// A fresh, unnamed network namespace that the calling thread enters (`unshare`) and
    /// leaves again on drop, standing in for the host: the links, routes and sysctls a test
    /// changes there go with it, so root tests never touch the machine's own host and two
    /// test runs side by side never meet. `ip` and the threads the test starts run in it too.
    ///
    /// Make it first in a test, so that it is dropped last. [`Netlink::host`] is the process's
    /// own namespace, not this one: a test in here uses [`TestHost::netlink`].
    pub struct TestHost {
        netlink: Netlink,
        previous: File,
        thread: ThreadId,
    }

    impl TestHost {
        /// Moves the calling thread into a new network namespace with `lo` up.
        pub fn enter() -> TestHost {
            let previous =
                File::open("/proc/thread-self/ns/net").expect("open this thread's netns");
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare the network namespace");
            let host = TestHost {
                netlink: Netlink::open_here("the test host".into()).expect("netlink session"),
                previous,
                thread: std::thread::current().id(),
            };
            let out = run_ip(&["link", "set", "lo", "up"]);
            assert!(
                out.status.success(),
                "ip link set lo up: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            host
        }

        /// A netlink session of this namespace, in place of [`Netlink::host`].
        pub fn netlink(&self) -> &Netlink {
            &self.netlink
        }
    }

    impl Drop for TestHost {
        fn drop(&mut self) {
            // Only the entering thread is in the namespace; any other has nothing to leave.
            if std::thread::current().id() != self.thread {
                return;
            }
            if let Err(e) = setns(&self.previous, CloneFlags::CLONE_NEWNET) {
                eprintln!("cannot leave the test host namespace: {e}");
            }
        }
    }

    /// A network namespace made with `ip netns add`, deleted on drop.
    pub struct TestNetns {
        name: String,
        path: PathBuf,
    }

    impl TestNetns {
        /// Creates `calico-test-<tag>-<unique>`.
        pub fn new(tag: &str) -> TestNetns {
            let name = format!("calico-test-{tag}-{}", unique_suffix());
            let out = run_ip(&["netns", "add", &name]);
            assert!(
                out.status.success(),
                "ip netns add {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let path = PathBuf::from(format!("/run/netns/{name}"));
            TestNetns { name, path }
        }

        /// The name `ip -n` takes.
        pub fn name(&self) -> &str {
            &self.name
        }

        /// The path a CNI runtime would pass.
        pub fn path(&self) -> &Path {
            &self.path
        }

        /// Runs `ip -n <name> <args>` and asserts success.
        pub fn ip(&self, args: &[&str]) {
            let mut all = vec!["-n", self.name.as_str()];
            all.extend_from_slice(args);
            let out = run_ip(&all);
            assert!(
                out.status.success(),
                "ip {all:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    impl Drop for TestNetns {
        fn drop(&mut self) {
            let out = run_ip(&["netns", "del", &self.name]);
            if !out.status.success() {
                eprintln!(
                    "ip netns del {}: {}",
                    self.name,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    /// An interface name a test may create on its host (a [`TestHost`]); whatever has that name
    /// is deleted on drop.
    pub struct HostLink {
        name: String,
    }

    impl HostLink {
        /// Reserves `name` for cleanup; creates nothing.
        pub fn new(name: String) -> HostLink {
            HostLink { name }
        }

        /// The interface name.
        pub fn name(&self) -> &str {
            &self.name
        }

        /// Creates a veth pair with this name and a peer called `<name>p`, left in the host
        /// namespace (the test kernel has no dummy driver). Deleting one end removes both.
        pub fn create_spare_veth(&self) {
            let peer = format!("{}p", self.name);
            self.ip(&[
                "link", "add", &self.name, "type", "veth", "peer", "name", &peer,
            ]);
        }

        /// Runs `ip <args>` in the host namespace and asserts success.
        pub fn ip(&self, args: &[&str]) {
            let out = run_ip(args);
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    impl Drop for HostLink {
        fn drop(&mut self) {
            // Absent is the normal case: the test deleted it or the netns took the pair along.
            let _ = run_ip(&["link", "del", &self.name]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;
    use crate::error::codes::DATAPLANE;

    #[test]
    fn mac_is_formatted_lower_case_with_colons() {
        assert_eq!(
            format_mac(&[0xee, 0x0a, 0, 1, 0xAB, 0xff]),
            "ee:0a:00:01:ab:ff"
        );
        assert_eq!(format_mac(&[]), "");
    }

    #[test]
    fn netlink_errors_keep_the_kind_a_caller_branches_on() {
        let cases = [
            (-17, Kind::Other, "create link x: file exists"),
            (-19, Kind::NotFound, "create link x: no such device"),
            (-1, Kind::Other, "create link x: operation not permitted"),
        ];
        for (code, kind, msg) in cases {
            let errno = nix::errno::Errno::from_raw(-code);
            let err = netlink::netlink_error(netlink::NetlinkError::Kernel(errno), "create link x");
            assert_eq!(err.kind(), kind);
            assert_eq!(err.msg(), msg);
            assert_eq!(err.code(), DATAPLANE);
        }
    }
}
