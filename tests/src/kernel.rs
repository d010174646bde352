//! Reading kernel state back independently of the plugins: `ip -j` and `/proc/sys`.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A network interface as `ip -j -d link` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// `ifindex`.
    pub index: u64,
    /// `ifname`.
    pub name: String,
    /// `address`, lower case.
    pub mac: String,
    /// `mtu`.
    pub mtu: u64,
    /// Administratively up (`UP` in `flags`).
    pub up: bool,
    /// `linkinfo.info_kind`, e.g. `veth`.
    pub kind: Option<String>,
    /// `link_netnsid`: set when the peer lives in another namespace.
    pub peer_netnsid: Option<i64>,
}

/// An IPv4 address of an interface.
#[derive(Debug, Clone, PartialEq)]
pub struct Addr {
    /// `local`, e.g. `10.213.4.2`.
    pub local: String,
    /// `prefixlen`.
    pub prefixlen: u64,
}

/// An IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `dst`: `default` or an address / prefix.
    pub dst: String,
    /// `gateway`.
    pub gateway: Option<String>,
    /// `dev`.
    pub dev: Option<String>,
    /// `scope` (absent means global).
    pub scope: Option<String>,
    /// `metric` (absent means 0).
    pub metric: u64,
}

/// A host link, if it exists.
pub fn host_link(name: &str) -> Option<Link> {
    ip_json(None, &["-d", "link", "show", "dev", name]).and_then(|v| first_link(&v))
}

/// A link inside a named netns, if it exists.
pub fn netns_link(netns: &str, name: &str) -> Option<Link> {
    ip_json(Some(netns), &["-d", "link", "show", "dev", name]).and_then(|v| first_link(&v))
}

/// Every link of the host namespace.
pub fn host_links() -> Vec<Link> {
    links(ip_json(None, &["-d", "link", "show"]))
}

/// Every link of a named netns.
pub fn netns_links(netns: &str) -> Vec<Link> {
    links(ip_json(Some(netns), &["-d", "link", "show"]))
}

/// The IPv4 addresses of an interface inside a named netns.
pub fn netns_ipv4_addrs(netns: &str, ifname: &str) -> Vec<Addr> {
    let Some(v) = ip_json(Some(netns), &["-4", "addr", "show", "dev", ifname]) else {
        return vec![];
    };
    let mut out = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            out.push(Addr {
                local: a["local"].as_str().unwrap_or_default().to_string(),
                prefixlen: a["prefixlen"].as_u64().unwrap_or_default(),
            });
        }
    }
    out
}

/// The IPv4 routes of the main table inside a named netns.
pub fn netns_ipv4_routes(netns: &str) -> Vec<Route> {
    routes(ip_json(Some(netns), &["-4", "route", "show"]))
}

/// The IPv4 routes of the host's main table.
pub fn host_ipv4_routes() -> Vec<Route> {
    routes(ip_json(None, &["-4", "route", "show"]))
}

/// The host routes whose destination is `ip` (as a host address).
pub fn host_routes_to(ip: &str) -> Vec<Route> {
    host_ipv4_routes()
        .into_iter()
        .filter(|r| r.dst == ip || r.dst == format!("{ip}/32"))
        .collect()
}

/// The trimmed content of `/proc/sys/<path>`, if readable.
pub fn sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{path}"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// True when `ip` answers one ping from the host within a few attempts.
pub fn ping(ip: &str) -> bool {
    (0..3).any(|_| {
        Command::new("ping")
            .args(["-c", "1", "-W", "2", ip])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

/// Waits up to `timeout` for `condition` (namespace teardown in the kernel is asynchronous).
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A link created by a test on the host (e.g. a stale `cali…` veth), deleted on drop if still there.
pub struct HostLink {
    name: String,
}

impl HostLink {
    /// `ip link add <name> type veth peer name <peer>`.
    pub fn veth(name: &str, peer: &str) -> HostLink {
        let out = Command::new("ip")
            .args(["link", "add", name, "type", "veth", "peer", "name", peer])
            .output()
            .expect("run ip link add");
        assert!(
            out.status.success(),
            "ip link add {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        HostLink {
            name: name.to_string(),
        }
    }

    /// The link name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        if host_link(&self.name).is_some() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.name])
                .output();
        }
    }
}

fn ip_json(netns: Option<&str>, args: &[&str]) -> Option<Value> {
    let mut cmd = Command::new("ip");
    cmd.arg("-j");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let out = cmd.args(args).output().expect("run ip");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Some(Value::Array(vec![]));
    }
    Some(
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("ip -j {args:?} printed bad JSON ({e}): {text}")),
    )
}

fn links(v: Option<Value>) -> Vec<Link> {
    v.and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(parse_link)
        .collect()
}

fn first_link(v: &Value) -> Option<Link> {
    v.as_array().and_then(|a| a.first()).map(parse_link)
}

fn parse_link(v: &Value) -> Link {
    let flags: Vec<&str> = v["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    Link {
        index: v["ifindex"].as_u64().unwrap_or_default(),
        name: v["ifname"].as_str().unwrap_or_default().to_string(),
        mac: v["address"].as_str().unwrap_or_default().to_lowercase(),
        mtu: v["mtu"].as_u64().unwrap_or_default(),
        up: flags.contains(&"UP"),
        kind: v["linkinfo"]["info_kind"].as_str().map(str::to_string),
        peer_netnsid: v["link_netnsid"].as_i64(),
    }
}

fn routes(v: Option<Value>) -> Vec<Route> {
    let text = |r: &Value, k: &str| r[k].as_str().map(str::to_string);
    v.and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|r| Route {
            dst: text(r, "dst").unwrap_or_default(),
            gateway: text(r, "gateway"),
            dev: text(r, "dev"),
            scope: text(r, "scope"),
            metric: r["metric"].as_u64().unwrap_or(0),
        })
        .collect()
}

const HOST_IPV6_FORWARDING: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Writes `value` to the host's `net.ipv6.conf.all.forwarding`: the test's own host
/// namespace's, which goes with the test.
pub fn set_host_ipv6_forwarding(value: &str) {
    std::fs::write(HOST_IPV6_FORWARDING, value).expect("write all.forwarding");
}

/// The host's `net.ipv6.conf.all.forwarding`.
pub fn host_ipv6_forwarding() -> String {
    std::fs::read_to_string(HOST_IPV6_FORWARDING)
        .expect("read all.forwarding")
        .trim()
        .to_string()
}
