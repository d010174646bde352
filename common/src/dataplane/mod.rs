//! The kernel dataplane of a Calico workload: entering the container's network namespace, the
//! veth pair, the container's addresses and routes, the host routes, the per-interface
//! sysctls and the nftables ruleset of local policy. Everything goes through netlink
//! (rtnetlink, nfnetlink) and `/proc/sys`.
//!
//! Every public function is synchronous. A function that talks netlink opens its own socket on
//! the calling thread, so it acts on the network namespace that thread is in: call it directly
//! for the host namespace, or inside [`netns::with_netns`] for a container. A netlink socket is
//! bound to the namespace it was opened in, which is why no handle ever leaves a function.

pub mod addr;
pub mod netns;
pub mod nft;
pub mod route;
pub mod sysctl;
pub mod veth;

use std::future::Future;
use std::net::Ipv6Addr;

use futures::StreamExt;
use ipnetwork::IpNetwork;
use rtnetlink::Handle;
use rtnetlink::packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;

use crate::error::codes::DATAPLANE;
use crate::{Context, Error, Kind, Result};

/// How often an interrupted netlink dump is repeated before giving up.
const DUMP_ATTEMPTS: usize = 5;

/// Configures the container end of a veth pair the way Calico v1.11 does: for IPv6 the
/// namespace-wide `disable_ipv6` switches are cleared, then the routes are added (IPv4: a link
/// route to 169.254.1.1 and a default route via it; IPv6: a default route via
/// `ipv6_gateway`), then every address as a /32 or /128.
///
/// Call it inside [`netns::with_netns`] for the container's namespace; `ifindex` is the container
/// end's index there and `ipv6_gateway` is the host end's link-local address
/// ([`addr::host_link_local_address`]), required when `addrs` holds an IPv6 address.
pub fn configure_container_interface(
    ifindex: u32,
    addrs: &[IpNetwork],
    ipv6_gateway: Option<Ipv6Addr>,
) -> Result<()> {
    if addrs.iter().any(IpNetwork::is_ipv6) {
        sysctl::enable_ipv6_in_namespace()?;
    }
    route::add_container_routes(ifindex, addrs, ipv6_gateway)?;
    addr::add_addresses(ifindex, addrs)
}

/// Runs `f` with a fresh netlink connection opened on the calling thread, inside a private
/// current-thread tokio runtime, and returns its output. The calling thread must not be running
/// an async runtime itself.
///
/// The connection forwards "done" messages, which carry the dump-interrupted flag; plain
/// rtnetlink dump requests would choke on them, so every dump goes through [`dump`].
pub(crate) fn with_netlink<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    // Blocking on a runtime from inside another one panics; refuse instead.
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::new(
            DATAPLANE,
            "netlink request made from inside an async runtime",
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("create the netlink runtime")
        .code(DATAPLANE)?;
    runtime.block_on(async {
        let (mut connection, handle, _) = rtnetlink::new_connection()
            .context("open a netlink socket")
            .code(DATAPLANE)?;
        connection.set_forward_done(true);
        let task = tokio::spawn(connection);
        let out = f(handle).await;
        task.abort();
        out
    })
}

/// Dumps the objects `request` asks for (links, addresses, routes) and returns their messages.
///
/// The kernel flags a dump that raced with a change (`NLM_F_DUMP_INTR`) or fails it with
/// `EINTR`; such a dump is repeated a fixed number of times. `what` names the objects in errors.
pub(crate) async fn dump(
    handle: &Handle,
    request: RouteNetlinkMessage,
    what: &str,
) -> Result<Vec<RouteNetlinkMessage>> {
    for _ in 0..DUMP_ATTEMPTS {
        let mut msg = NetlinkMessage::from(request.clone());
        msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut responses = handle
            .clone()
            .request(msg)
            .map_err(|e| netlink_error(e, format!("dump {what}")))?;
        let mut out = Vec::new();
        let mut interrupted = false;
        while let Some(response) = responses.next().await {
            if response.header.flags & NLM_F_DUMP_INTR != 0 {
                interrupted = true;
            }
            match response.payload {
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                NetlinkPayload::Error(err) if err.raw_code() == -libc_eintr() => interrupted = true,
                NetlinkPayload::Error(err) if err.code.is_some() => {
                    return Err(netlink_error(
                        rtnetlink::Error::NetlinkError(err),
                        format!("dump {what}"),
                    ));
                }
                NetlinkPayload::Overrun(_) => interrupted = true,
                _ => {}
            }
        }
        if !interrupted {
            return Ok(out);
        }
    }
    Err(Error::new(
        DATAPLANE,
        format!("dump {what}: interrupted {DUMP_ATTEMPTS} times in a row"),
    )
    .with_kind(Kind::TryAgainLater))
}

fn libc_eintr() -> i32 {
    nix::errno::Errno::EINTR as i32
}

/// The positive errno of a netlink error answer, if `err` is one.
pub(crate) fn errno(err: &rtnetlink::Error) -> Option<nix::errno::Errno> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg
            .code
            .map(|code| nix::errno::Errno::from_raw(-code.get())),
        _ => None,
    }
}

/// A dataplane error for a failed netlink request: `context` names the object, the text is the
/// kernel's errno description in lower case, and `EEXIST` / `ENODEV` / `ENOENT` / `ESRCH` set the
/// kind a caller can branch on.
pub(crate) fn netlink_error(err: rtnetlink::Error, context: impl std::fmt::Display) -> Error {
    use nix::errno::Errno;
    let (text, kind) = match errno(&err) {
        Some(errno) => {
            let kind = match errno {
                Errno::EEXIST => Kind::AlreadyExists,
                Errno::ENODEV | Errno::ENOENT | Errno::ESRCH => Kind::NotFound,
                _ => Kind::Other,
            };
            (errno_text(errno), kind)
        }
        None => (err.to_string(), Kind::Other),
    };
    Error::new(DATAPLANE, text).with_kind(kind).context(context)
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

/// Fixtures of the root tests: a uniquely named netns and host links, both removed on drop.
#[cfg(test)]
pub(crate) mod testutil {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

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

    /// A host interface name a test may create; whatever has that name is deleted on drop.
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

    #[test]
    fn netlink_from_inside_a_runtime_is_an_error_not_a_panic() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = runtime
            .block_on(async { veth::read_link("lo") })
            .unwrap_err();
        assert!(err.msg().contains("inside an async runtime"), "{err:?}");
        assert!(veth::read_link("lo").unwrap().is_some());
    }

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
            (-17, Kind::AlreadyExists, "create link x: file exists"),
            (-19, Kind::NotFound, "create link x: no such device"),
            (-1, Kind::Other, "create link x: operation not permitted"),
        ];
        for (code, kind, msg) in cases {
            let mut em = rtnetlink::packet_core::ErrorMessage::default();
            em.code = std::num::NonZeroI32::new(code);
            let err = netlink_error(rtnetlink::Error::NetlinkError(em), "create link x");
            assert_eq!(err.kind(), kind);
            assert_eq!(err.msg(), msg);
            assert_eq!(err.code(), DATAPLANE);
        }
    }
}
