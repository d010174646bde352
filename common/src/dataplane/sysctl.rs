//! Kernel parameters under `/proc/sys`. The `net/` entries belong to the network namespace of
//! the thread that opens them, so inside [`super::netns::with_netns`] they are the container's.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use crate::error::codes::DATAPLANE;
use crate::{Context, Error, Result};

const PROC_SYS: &str = "/proc/sys";

/// `/proc/sys/<path>`, refusing a `path` that is absolute or climbs out with `..`.
fn full_path(path: &str) -> Result<PathBuf> {
    let relative = Path::new(path);
    if path.is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(Error::new(
            DATAPLANE,
            format!("sysctl path {path:?} is not a plain path under {PROC_SYS}"),
        ));
    }
    Ok(Path::new(PROC_SYS).join(relative))
}

/// Writes `value` to `/proc/sys/<path>`, e.g. `write("net/ipv4/conf/cali1/proxy_arp", "1")`.
/// A missing file (unknown interface, IPv6 disabled at boot) is a `Kind::NotFound` error.
pub fn write(path: &str, value: &str) -> Result<()> {
    let file = full_path(path)?;
    std::fs::write(&file, value)
        .with_context(|| format!("write {value} to {}", file.display()))
        .code(DATAPLANE)
}

/// Reads `/proc/sys/<path>`, without the trailing newline.
pub fn read(path: &str) -> Result<String> {
    let file = full_path(path)?;
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("read {}", file.display()))
        .code(DATAPLANE)?;
    Ok(text.trim_end().to_string())
}

/// The sysctls Calico sets on a host veth (v1.8.0+, IPv6 from v1.11.0). With IPv4: proxy ARP
/// without delay, so the host answers the container's ARP for the fake gateway 169.254.1.1,
/// and forwarding (per-interface forwarding is what makes the host route the container's IPv4
/// when `ip_forward` is off). With IPv6: IPv6 on, proxy NDP and forwarding; IPv6 is only
/// forwarded at all when [`enable_ipv6_forwarding`] has run too.
pub fn configure_host_veth(host_ifname: &str, ipv4: bool, ipv6: bool) -> Result<()> {
    if ipv4 {
        write(&format!("net/ipv4/conf/{host_ifname}/proxy_arp"), "1")?;
        write(&format!("net/ipv4/neigh/{host_ifname}/proxy_delay"), "0")?;
        write(&format!("net/ipv4/conf/{host_ifname}/forwarding"), "1")?;
    }
    if ipv6 {
        write(&format!("net/ipv6/conf/{host_ifname}/disable_ipv6"), "0")?;
        write(&format!("net/ipv6/conf/{host_ifname}/proxy_ndp"), "1")?;
        write(&format!("net/ipv6/conf/{host_ifname}/forwarding"), "1")?;
    }
    Ok(())
}

/// Sets `net.ipv6.conf.all.forwarding=1` in the current namespace (the host's, for a
/// container with IPv6), as the reference `ptp` plugin does: the kernel forwards IPv6 only when
/// `all.forwarding` is on, whatever an interface's own `forwarding` says. Written only when it
/// is off, because every write also sets each interface's `forwarding`, and with it the
/// router behaviour of every interface (RAs are then ignored where `accept_ra` is 1).
pub fn enable_ipv6_forwarding() -> Result<()> {
    const ALL_FORWARDING: &str = "net/ipv6/conf/all/forwarding";
    if read(ALL_FORWARDING)? != "1" {
        write(ALL_FORWARDING, "1")?;
    }
    Ok(())
}

/// The namespace-wide IPv6 switches, `net/ipv6/conf/{all,default,lo}/disable_ipv6`, opened for
/// writing in the namespace they belong to. A `/proc/sys/net` file acts on the namespace of the
/// thread that opened it, so a container's switches are opened while entering it and written
/// later from the verb's own thread, only when the container gets IPv6. Opening changes nothing.
#[derive(Debug)]
pub(crate) struct Ipv6Switches {
    files: Vec<(PathBuf, std::io::Result<File>)>,
}

impl Ipv6Switches {
    /// Opens the switches of the calling thread's namespace. A switch that cannot be opened
    /// (IPv6 disabled at boot) is an error only when written.
    pub(crate) fn open() -> Ipv6Switches {
        let files = ["all", "default", "lo"]
            .into_iter()
            .map(|conf| {
                let path = Path::new(PROC_SYS).join(format!("net/ipv6/conf/{conf}/disable_ipv6"));
                let file = OpenOptions::new().write(true).open(&path);
                (path, file)
            })
            .collect();
        Ipv6Switches { files }
    }

    /// Writes `disable_ipv6=0` to every switch.
    pub(crate) fn enable(&self) -> Result<()> {
        for (path, file) in &self.files {
            let written = match file {
                // At offset 0: a sysctl file takes a value only at its start.
                Ok(file) => file.write_at(b"0", 0).map(drop),
                Err(err) => Err(std::io::Error::new(err.kind(), err.to_string())),
            };
            written
                .with_context(|| format!("write 0 to {}", path.display()))
                .code(DATAPLANE)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::netns::{ContainerNetns, with_netns};
    use crate::dataplane::testutil::{HostLink, TestHost, TestNetns, unique_ifname};

    #[test]
    fn only_plain_relative_paths_are_accepted() {
        let cases = [
            ("net/ipv4/ip_forward", true),
            ("net/ipv4/conf/eth0.100/forwarding", true),
            ("", false),
            ("/etc/passwd", false),
            ("net/../../etc/passwd", false),
            ("./net/ipv4/ip_forward", false),
        ];
        for (path, ok) in cases {
            assert_eq!(full_path(path).is_ok(), ok, "{path:?}");
        }
    }

    #[test]
    fn read_strips_the_newline_and_errors_name_the_file() {
        assert!(!read("kernel/ostype").unwrap().ends_with('\n'));
        let err = read("net/ipv4/conf/no-such-if-x/forwarding").unwrap_err();
        assert!(err.is_not_found());
        assert!(
            err.msg()
                .contains("/proc/sys/net/ipv4/conf/no-such-if-x/forwarding"),
            "{err:?}"
        );
        assert_eq!(err.code(), DATAPLANE);
    }

    #[test]
    #[ignore = "needs root"]
    fn host_veth_sysctls_are_set_per_family() {
        let _host_ns = TestHost::enter();
        let host = HostLink::new(unique_ifname("cs"));
        host.create_spare_veth();
        let name = host.name();
        write(&format!("net/ipv6/conf/{name}/disable_ipv6"), "1").unwrap();
        configure_host_veth(name, true, false).unwrap();
        assert_eq!(
            read(&format!("net/ipv4/conf/{name}/proxy_arp")).unwrap(),
            "1"
        );
        assert_eq!(
            read(&format!("net/ipv4/neigh/{name}/proxy_delay")).unwrap(),
            "0"
        );
        assert_eq!(
            read(&format!("net/ipv4/conf/{name}/forwarding")).unwrap(),
            "1"
        );
        assert_eq!(
            read(&format!("net/ipv6/conf/{name}/disable_ipv6")).unwrap(),
            "1"
        );
        configure_host_veth(name, false, true).unwrap();
        assert_eq!(
            read(&format!("net/ipv6/conf/{name}/disable_ipv6")).unwrap(),
            "0"
        );
        assert_eq!(
            read(&format!("net/ipv6/conf/{name}/proxy_ndp")).unwrap(),
            "1"
        );
        assert_eq!(
            read(&format!("net/ipv6/conf/{name}/forwarding")).unwrap(),
            "1"
        );
    }

    #[test]
    #[ignore = "needs root"]
    fn ipv6_forwarding_is_turned_on_for_the_namespace_and_kept_on() {
        let _host_ns = TestHost::enter();
        let ns = TestNetns::new("fwd6");
        let host_before = read("net/ipv6/conf/all/forwarding").unwrap();
        with_netns(ns.path(), || {
            write("net/ipv6/conf/all/forwarding", "0")?;
            enable_ipv6_forwarding()?;
            assert_eq!(read("net/ipv6/conf/all/forwarding")?, "1");
            assert_eq!(read("net/ipv6/conf/lo/forwarding")?, "1");
            enable_ipv6_forwarding()?;
            assert_eq!(read("net/ipv6/conf/all/forwarding")?, "1");
            Ok(())
        })
        .unwrap();
        assert_eq!(read("net/ipv6/conf/all/forwarding").unwrap(), host_before);
    }

    #[test]
    #[ignore = "needs root"]
    fn ipv6_is_enabled_in_the_namespace_only() {
        let _host_ns = TestHost::enter();
        let ns = TestNetns::new("sysctl");
        let host_before = read("net/ipv6/conf/default/disable_ipv6").unwrap();
        with_netns(ns.path(), || {
            write("net/ipv6/conf/all/disable_ipv6", "1")?;
            write("net/ipv6/conf/default/disable_ipv6", "1")
        })
        .unwrap();
        // Opened inside the namespace, written from this thread, which stays on the host.
        let container = ContainerNetns::open(ns.path()).unwrap();
        container.enable_ipv6().unwrap();
        container.enable_ipv6().unwrap();
        let inside = with_netns(ns.path(), || {
            ["all", "default", "lo"]
                .map(|conf| read(&format!("net/ipv6/conf/{conf}/disable_ipv6")))
                .into_iter()
                .collect::<Result<Vec<_>>>()
        })
        .unwrap();
        assert_eq!(inside, ["0", "0", "0"]);
        assert_eq!(
            read("net/ipv6/conf/default/disable_ipv6").unwrap(),
            host_before
        );
    }
}
