//! etcd key formats of Calico v1 (`/calico/v1/...`) and of its IPAM (`/calico/ipam/v2/...`), and
//! the parsers that take a key apart again.
//!
//! Identifiers that may contain `/` (orchestrator, workload, endpoint id, profile name) are
//! escaped the way libcalico-go does: `%` becomes `%25` first, then `/` becomes `%2f`. Node names
//! and IPAM handle ids are written as they are, as upstream does.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

/// The flag `calico/node` sets to `true`; `false` means an upgrade is in progress.
pub const READY: &str = "/calico/v1/Ready";

/// The IPAM configuration (`strict_affinity`, `auto_allocate_blocks`).
pub const IPAM_CONFIG: &str = "/calico/ipam/v2/config";

/// Prefix of every IPAM handle key.
pub const HANDLES_PREFIX: &str = "/calico/ipam/v2/handle/";

/// Prefix of every profile.
pub const PROFILES_PREFIX: &str = "/calico/v1/policy/profile/";

/// Prefix of this plugin's own attachment records (outside `/calico/v1`, which Felix reads).
pub const ATTACHMENTS_PREFIX: &str = "/calico/cni/v1/attachment/";

/// Prefix of this plugin's claims on host veth names.
pub const HOST_VETH_CLAIMS_PREFIX: &str = "/calico/cni/v1/hostveth/";

/// Prefix of every node's Calico v1 data, workload endpoints among it.
pub const HOSTS_PREFIX: &str = "/calico/v1/host/";

/// Prefix of every node's IPAM data (its block affinities).
pub const IPAM_HOSTS_PREFIX: &str = "/calico/ipam/v2/host/";

const BLOCKS_ROOT: &str = "/calico/ipam/v2/assignment/";

/// The IP family a pool, block or affinity key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpFamily {
    /// IPv4 (`v4`, `ipv4` in keys).
    V4,
    /// IPv6 (`v6`, `ipv6` in keys).
    V6,
}

impl IpFamily {
    /// The family of a network.
    pub fn of(net: &IpNetwork) -> IpFamily {
        match net {
            IpNetwork::V4(_) => IpFamily::V4,
            IpNetwork::V6(_) => IpFamily::V6,
        }
    }

    /// The family of an address.
    pub fn of_addr(addr: &IpAddr) -> IpFamily {
        match addr {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// `v4` or `v6`, as used in pool keys.
    fn short(self) -> &'static str {
        match self {
            IpFamily::V4 => "v4",
            IpFamily::V6 => "v6",
        }
    }

    /// `ipv4` or `ipv6`, as used in block and affinity keys.
    fn long(self) -> &'static str {
        match self {
            IpFamily::V4 => "ipv4",
            IpFamily::V6 => "ipv6",
        }
    }
}

/// Why `key` must not be sent to etcd, or `None` when it may. A key is absolute, and none of
/// its segments is empty, `.` or `..` or holds a control character, so that no name can add,
/// remove or climb a level of the key hierarchy (`/calico/v1/host/a/workload/cni/victim` from a
/// node called `a/workload/cni/victim`, `/calico/v1/policy/profile/../rules`). A prefix may end
/// with `/`. Names are validated where they enter; this is the last line behind that, applied
/// by the datastore to every key it sends.
pub fn key_problem(key: &str) -> Option<String> {
    let Some(path) = key.strip_prefix('/') else {
        return Some(format!("etcd key {key:?} is not absolute"));
    };
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        return None;
    }
    path.split('/').find_map(|segment| {
        let bad = segment.is_empty()
            || segment == "."
            || segment == ".."
            || segment.chars().any(char::is_control);
        bad.then(|| {
            format!(
                "etcd key {key:?} has the segment {segment:?}: key segments must not be empty, \
                 . or .. nor hold control characters"
            )
        })
    })
}

/// Escapes an identifier for use as one key segment: `%` → `%25`, then `/` → `%2f`.
pub fn escape_id(id: &str) -> String {
    id.replace('%', "%25").replace('/', "%2f")
}

/// Reverses [`escape_id`]: `%2f` → `/`, then `%25` → `%`.
pub fn unescape_id(segment: &str) -> String {
    segment.replace("%2f", "/").replace("%25", "%")
}

/// `/calico/v1/host/<node>/workload/`: every workload of a node.
pub fn workloads_prefix(node: &str) -> String {
    format!("{HOSTS_PREFIX}{node}/workload/")
}

/// `/calico/v1/host/<node>/workload/<orchestrator>/<workload>/endpoint/`: the endpoints of one
/// workload.
pub fn workload_endpoints_prefix(node: &str, orchestrator: &str, workload: &str) -> String {
    format!(
        "{}{}/{}/endpoint/",
        workloads_prefix(node),
        escape_id(orchestrator),
        escape_id(workload)
    )
}

/// `/calico/v1/host/<node>/workload/<orchestrator>/<workload>/endpoint/<endpoint_id>`.
pub fn workload_endpoint(
    node: &str,
    orchestrator: &str,
    workload: &str,
    endpoint_id: &str,
) -> String {
    format!(
        "{}{}",
        workload_endpoints_prefix(node, orchestrator, workload),
        escape_id(endpoint_id)
    )
}

/// The identifiers a workload endpoint key is made of, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadEndpointKey {
    /// Node (host) name.
    pub node: String,
    /// Orchestrator id (`cni`, `k8s`, ...).
    pub orchestrator: String,
    /// Workload id (container id, `<ns>.<pod>`).
    pub workload: String,
    /// Endpoint id (the container interface name in the Go plugin).
    pub endpoint_id: String,
}

/// Takes a workload endpoint key apart; `None` when the key has another shape.
pub fn parse_workload_endpoint(key: &str) -> Option<WorkloadEndpointKey> {
    let rest = key.strip_prefix(HOSTS_PREFIX)?;
    let (node, rest) = rest.split_once("/workload/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [orchestrator, workload, "endpoint", endpoint_id]
            if !node.is_empty()
                && ![orchestrator, workload, endpoint_id]
                    .iter()
                    .any(|s| s.is_empty()) =>
        {
            Some(WorkloadEndpointKey {
                node: node.to_owned(),
                orchestrator: unescape_id(orchestrator),
                workload: unescape_id(workload),
                endpoint_id: unescape_id(endpoint_id),
            })
        }
        _ => None,
    }
}

/// `/calico/v1/policy/profile/<name>/`: the tags, labels and rules keys of one profile.
pub fn profile_prefix(name: &str) -> String {
    format!("{PROFILES_PREFIX}{}/", escape_id(name))
}

/// `/calico/v1/policy/profile/<name>/tags`.
pub fn profile_tags(name: &str) -> String {
    format!("{}tags", profile_prefix(name))
}

/// `/calico/v1/policy/profile/<name>/labels`.
pub fn profile_labels(name: &str) -> String {
    format!("{}labels", profile_prefix(name))
}

/// `/calico/v1/policy/profile/<name>/rules`.
pub fn profile_rules(name: &str) -> String {
    format!("{}rules", profile_prefix(name))
}

/// A CIDR as one key segment: the network address, `-`, the prefix length (`10.0.0.0-26`).
pub fn cidr_segment(cidr: &IpNetwork) -> String {
    format!("{}-{}", cidr.network(), cidr.prefix())
}

/// Parses a key segment written by [`cidr_segment`]; `None` when it is not one.
pub fn parse_cidr_segment(segment: &str) -> Option<IpNetwork> {
    let (addr, prefix) = segment.rsplit_once('-')?;
    let addr: IpAddr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    IpNetwork::new(addr, prefix).ok()
}

/// `/calico/v1/ipam/<v4|v6>/pool/`: every pool of a family.
pub fn pools_prefix(family: IpFamily) -> String {
    format!("/calico/v1/ipam/{}/pool/", family.short())
}

/// `/calico/v1/ipam/v4/pool/10.0.0.0-16` (or `v6`).
pub fn pool(cidr: &IpNetwork) -> String {
    format!("{}{}", pools_prefix(IpFamily::of(cidr)), cidr_segment(cidr))
}

/// The CIDR of a pool key; `None` when the key is not one.
pub fn parse_pool(key: &str) -> Option<IpNetwork> {
    [IpFamily::V4, IpFamily::V6].into_iter().find_map(|family| {
        let cidr = parse_cidr_segment(key.strip_prefix(&pools_prefix(family))?)?;
        (IpFamily::of(&cidr) == family).then_some(cidr)
    })
}

/// `/calico/ipam/v2/assignment/<ipv4|ipv6>/block/`: every allocation block of a family.
pub fn blocks_prefix(family: IpFamily) -> String {
    format!("{BLOCKS_ROOT}{}/block/", family.long())
}

/// `/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26` (or `ipv6`).
pub fn block(cidr: &IpNetwork) -> String {
    format!(
        "{}{}",
        blocks_prefix(IpFamily::of(cidr)),
        cidr_segment(cidr)
    )
}

/// The CIDR of an allocation block key; `None` when the key is not one.
pub fn parse_block(key: &str) -> Option<IpNetwork> {
    [IpFamily::V4, IpFamily::V6].into_iter().find_map(|family| {
        let cidr = parse_cidr_segment(key.strip_prefix(&blocks_prefix(family))?)?;
        (IpFamily::of(&cidr) == family).then_some(cidr)
    })
}

/// `/calico/ipam/v2/host/<node>/`: everything IPAM keeps for one node.
pub fn ipam_host_prefix(node: &str) -> String {
    format!("{IPAM_HOSTS_PREFIX}{node}/")
}

/// `/calico/ipam/v2/host/<node>/<ipv4|ipv6>/block/`: the blocks a node has affinity to.
pub fn host_affinities_prefix(node: &str, family: IpFamily) -> String {
    format!("{}{}/block/", ipam_host_prefix(node), family.long())
}

/// `/calico/ipam/v2/host/<node>/ipv4/block/10.0.0.0-26` (or `ipv6`): the node claims the block.
pub fn host_affinity(node: &str, cidr: &IpNetwork) -> String {
    format!(
        "{}{}",
        host_affinities_prefix(node, IpFamily::of(cidr)),
        cidr_segment(cidr)
    )
}

/// The node and block CIDR of a host affinity key; `None` when the key is not one.
pub fn parse_host_affinity(key: &str) -> Option<(String, IpNetwork)> {
    let rest = key.strip_prefix(IPAM_HOSTS_PREFIX)?;
    [IpFamily::V4, IpFamily::V6].into_iter().find_map(|family| {
        let marker = format!("/{}/block/", family.long());
        let (node, segment) = rest.rsplit_once(&marker)?;
        let cidr = parse_cidr_segment(segment)?;
        (!node.is_empty() && IpFamily::of(&cidr) == family).then(|| (node.to_owned(), cidr))
    })
}

/// `/calico/ipam/v2/handle/<handle_id>`.
pub fn handle(handle_id: &str) -> String {
    format!("{HANDLES_PREFIX}{handle_id}")
}

/// The handle id of a handle key; `None` when the key is not one.
pub fn parse_handle(key: &str) -> Option<&str> {
    key.strip_prefix(HANDLES_PREFIX).filter(|id| !id.is_empty())
}

/// `/calico/cni/v1/attachment/<node>/<network>/`: the attachments of one network on one node.
pub fn attachments_prefix(node: &str, network: &str) -> String {
    format!("{ATTACHMENTS_PREFIX}{node}/{}/", escape_id(network))
}

/// `/calico/cni/v1/attachment/<node>/<network>/<container id>/<ifname>`: one attachment, keyed
/// the way the CNI spec identifies it.
pub fn attachment(node: &str, network: &str, container_id: &str, ifname: &str) -> String {
    format!(
        "{}{}/{}",
        attachments_prefix(node, network),
        escape_id(container_id),
        escape_id(ifname)
    )
}

/// `/calico/cni/v1/hostveth/<node>/<name>`: which attachment owns a host veth name, claimed
/// before the link exists so that two containers can never pick the same name.
pub fn host_veth_claim(node: &str, name: &str) -> String {
    format!("{HOST_VETH_CLAIMS_PREFIX}{node}/{}", escape_id(name))
}

/// The `(container id, ifname)` of an attachment key.
pub fn parse_attachment(key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix(ATTACHMENTS_PREFIX)?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [_node, _network, container_id, ifname]
            if !container_id.is_empty() && !ifname.is_empty() =>
        {
            Some((unescape_id(container_id), unescape_id(ifname)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn keys_with_segments_that_change_level_are_refused() {
        for key in [
            "/calico/v1/host/n/workload/cni/c1/endpoint/eth0",
            "/calico/ipam/v2/handle/net.c1",
            "/calico/v1/ipam/v6/pool/fd80::-64",
            "/calico/cni/v1/attachment/n/net/",
            "/",
        ] {
            assert_eq!(key_problem(key), None, "{key}");
        }
        for (key, named) in [
            ("/calico/v1/policy/profile/../rules", "\"..\""),
            ("/calico/v1/policy/profile/./rules", "\".\""),
            ("/calico/v1/host//workload/", "\"\""),
            ("/calico/ipam/v2/handle/a\u{7f}b", "a\\u{7f}b"),
            ("/calico/ipam/v2/handle/a\nb", "a\\nb"),
            ("calico/v1/Ready", "not absolute"),
        ] {
            let problem = key_problem(key).unwrap_or_default();
            assert!(problem.contains(named), "{key:?}: {problem}");
        }
        assert!(key_problem(&workload_endpoint("..", "cni", "c1", "eth0")).is_some());
        assert!(key_problem(&handle("..")).is_some());
    }

    #[test]
    fn escaping_round_trips() {
        let cases = [
            ("abc", "abc"),
            ("ns.pod", "ns.pod"),
            ("a/b", "a%2fb"),
            ("50%", "50%25"),
            ("%2f", "%252f"),
            ("a/%/b", "a%2f%25%2fb"),
        ];
        for (id, escaped) in cases {
            assert_eq!(escape_id(id), escaped, "escape {id:?}");
            assert_eq!(unescape_id(escaped), id, "unescape {escaped:?}");
        }
    }

    #[test]
    fn workload_endpoint_keys_escape_ids_but_not_the_node() {
        let cases = [
            (
                ("node1", "cni", "abc123", "eth0"),
                "/calico/v1/host/node1/workload/cni/abc123/endpoint/eth0",
            ),
            (
                ("node1", "k8s", "default.nginx", "eth0"),
                "/calico/v1/host/node1/workload/k8s/default.nginx/endpoint/eth0",
            ),
            (
                ("node1", "o/r", "w%1", "e/0"),
                "/calico/v1/host/node1/workload/o%2fr/w%251/endpoint/e%2f0",
            ),
            (
                ("node.example.com", "cni", "id", "eth1"),
                "/calico/v1/host/node.example.com/workload/cni/id/endpoint/eth1",
            ),
        ];
        for ((node, orch, workload, ep), key) in cases {
            assert_eq!(workload_endpoint(node, orch, workload, ep), key);
            assert!(key.starts_with(&workload_endpoints_prefix(node, orch, workload)));
            assert!(key.starts_with(&workloads_prefix(node)));
            let parts = parse_workload_endpoint(key).unwrap();
            assert_eq!(
                parts,
                WorkloadEndpointKey {
                    node: node.into(),
                    orchestrator: orch.into(),
                    workload: workload.into(),
                    endpoint_id: ep.into(),
                }
            );
        }
    }

    #[test]
    fn prefixes_have_upstream_shape() {
        assert_eq!(workloads_prefix("n"), "/calico/v1/host/n/workload/");
        assert_eq!(
            workload_endpoints_prefix("n", "cni", "c1"),
            "/calico/v1/host/n/workload/cni/c1/endpoint/"
        );
        assert_eq!(READY, "/calico/v1/Ready");
        assert_eq!(IPAM_CONFIG, "/calico/ipam/v2/config");
    }

    #[test]
    fn foreign_keys_are_not_workload_endpoints() {
        for key in [
            "/calico/v1/host/n/workload/cni/c1/endpoint/",
            "/calico/v1/host/n/workload/cni/c1/endpoint",
            "/calico/v1/host/n/workload/cni/c1/other/eth0",
            "/calico/v1/host/n/workload/cni/c1/endpoint/eth0/x",
            "/calico/v1/host//workload/cni/c1/endpoint/eth0",
            "/calico/v1/host/n/endpoint/eth0",
            "/calico/v1/policy/profile/p/tags",
        ] {
            assert_eq!(parse_workload_endpoint(key), None, "{key}");
        }
    }

    #[test]
    fn profile_keys() {
        let cases = [
            ("net1", "/calico/v1/policy/profile/net1/"),
            (
                "k8s_ns.default",
                "/calico/v1/policy/profile/k8s_ns.default/",
            ),
            ("a/b", "/calico/v1/policy/profile/a%2fb/"),
        ];
        for (name, prefix) in cases {
            assert_eq!(profile_prefix(name), prefix);
            assert_eq!(profile_tags(name), format!("{prefix}tags"));
            assert_eq!(profile_labels(name), format!("{prefix}labels"));
            assert_eq!(profile_rules(name), format!("{prefix}rules"));
            assert!(prefix.starts_with(PROFILES_PREFIX));
        }
    }

    #[test]
    fn pool_keys_round_trip() {
        let cases = [
            ("10.0.0.0/16", "/calico/v1/ipam/v4/pool/10.0.0.0-16"),
            ("192.168.0.0/16", "/calico/v1/ipam/v4/pool/192.168.0.0-16"),
            (
                "fd80:24e2:f998:72d6::/64",
                "/calico/v1/ipam/v6/pool/fd80:24e2:f998:72d6::-64",
            ),
            ("2001:db8::/48", "/calico/v1/ipam/v6/pool/2001:db8::-48"),
        ];
        for (cidr, key) in cases {
            assert_eq!(pool(&net(cidr)), key);
            assert_eq!(parse_pool(key), Some(net(cidr)));
        }
        assert_eq!(
            pool(&net("10.0.3.7/16")),
            "/calico/v1/ipam/v4/pool/10.0.0.0-16"
        );
        assert_eq!(pools_prefix(IpFamily::V4), "/calico/v1/ipam/v4/pool/");
        assert_eq!(pools_prefix(IpFamily::V6), "/calico/v1/ipam/v6/pool/");
    }

    #[test]
    fn block_keys_round_trip() {
        let cases = [
            (
                "10.0.0.0/26",
                "/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26",
            ),
            (
                "192.168.10.64/26",
                "/calico/ipam/v2/assignment/ipv4/block/192.168.10.64-26",
            ),
            (
                "fd80::40/122",
                "/calico/ipam/v2/assignment/ipv6/block/fd80::40-122",
            ),
        ];
        for (cidr, key) in cases {
            assert_eq!(block(&net(cidr)), key);
            assert_eq!(parse_block(key), Some(net(cidr)));
        }
        assert_eq!(
            blocks_prefix(IpFamily::V4),
            "/calico/ipam/v2/assignment/ipv4/block/"
        );
        assert_eq!(
            blocks_prefix(IpFamily::V6),
            "/calico/ipam/v2/assignment/ipv6/block/"
        );
    }

    #[test]
    fn host_affinity_keys_round_trip() {
        let cases = [
            (
                "node1",
                "10.0.0.0/26",
                "/calico/ipam/v2/host/node1/ipv4/block/10.0.0.0-26",
            ),
            (
                "a.b.c",
                "fd80::/122",
                "/calico/ipam/v2/host/a.b.c/ipv6/block/fd80::-122",
            ),
        ];
        for (node, cidr, key) in cases {
            assert_eq!(host_affinity(node, &net(cidr)), key);
            assert_eq!(parse_host_affinity(key), Some((node.to_owned(), net(cidr))));
            assert!(key.starts_with(&ipam_host_prefix(node)));
        }
        assert_eq!(
            host_affinities_prefix("n", IpFamily::V4),
            "/calico/ipam/v2/host/n/ipv4/block/"
        );
        assert_eq!(ipam_host_prefix("n"), "/calico/ipam/v2/host/n/");
    }

    #[test]
    fn handle_keys_round_trip() {
        let cases = [
            ("net1.abc123", "/calico/ipam/v2/handle/net1.abc123"),
            ("default.nginx", "/calico/ipam/v2/handle/default.nginx"),
        ];
        for (id, key) in cases {
            assert_eq!(handle(id), key);
            assert_eq!(parse_handle(key), Some(id));
        }
        assert_eq!(parse_handle(HANDLES_PREFIX), None);
    }

    #[test]
    fn malformed_ipam_keys_do_not_parse() {
        for key in [
            "/calico/ipam/v2/assignment/ipv4/block/10.0.0.0",
            "/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-33",
            "/calico/ipam/v2/assignment/ipv4/block/fd80::-122",
            "/calico/ipam/v2/assignment/ipv6/block/10.0.0.0-26",
            "/calico/ipam/v2/assignment/ipv4/block/x-26",
            "/calico/v1/ipam/v4/pool/10.0.0.0/16",
        ] {
            assert_eq!(parse_block(key), None, "{key}");
            assert_eq!(parse_pool(key), None, "{key}");
        }
        for key in [
            "/calico/ipam/v2/host//ipv4/block/10.0.0.0-26",
            "/calico/ipam/v2/host/n/ipv6/block/10.0.0.0-26",
            "/calico/ipam/v2/host/n/ipv4/block/",
        ] {
            assert_eq!(parse_host_affinity(key), None, "{key}");
        }
    }

    #[test]
    fn attachment_keys_round_trip() {
        let key = attachment("node-1", "net1", "cnitool-0123", "eth0");
        assert_eq!(
            key,
            "/calico/cni/v1/attachment/node-1/net1/cnitool-0123/eth0"
        );
        assert!(key.starts_with(&attachments_prefix("node-1", "net1")));
        assert_eq!(
            parse_attachment(&key),
            Some(("cnitool-0123".to_string(), "eth0".to_string()))
        );
        assert_eq!(parse_attachment("/calico/cni/v1/attachment/n/net/c"), None);
        assert_eq!(parse_attachment("/calico/v1/host/n/net/c/e"), None);
    }
}
