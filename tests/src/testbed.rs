//! Everything one test needs: its own etcd, `CNI_PATH`, host-local data dir, subnet, node
//! name and network name, plus the calls and checks most tests share.

use std::time::Duration;

use serde_json::Value;

use crate::kernel::{eventually, host_ipv4_routes, host_link};
use crate::plugin::{Env, PluginOutput, run_plugin};
use crate::{CniPath, Etcd, NetConf, Netns, TempDir, host_veth_name, names};

/// How long kernel teardown (netns deletion destroys veths asynchronously) may take.
const TEARDOWN: Duration = Duration::from_secs(5);

/// A /24 out of 10.213.0.0/16. Every test runs on a host namespace of its own, so tests
/// running side by side use the same subnets without their host routes colliding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Subnet {
    third_octet: u8,
}

impl Subnet {
    /// The subnet a [`TestBed`] allocates from: `10.213.1.0/24`.
    pub const BED: Subnet = Subnet::nth(1);

    /// Another subnet, for a second network: `10.213.<n>.0/24`, `n` > 1.
    pub const fn nth(n: u8) -> Subnet {
        Subnet { third_octet: n }
    }

    /// `10.213.<n>.0/24`.
    pub fn cidr(&self) -> String {
        format!("10.213.{}.0/24", self.third_octet)
    }

    /// An IPv6 range as distinct from the other subnets as its IPv4 /24:
    /// `fd00:<group>:<n>::/<len>` (a ULA, outside every special range).
    pub fn ipv6_cidr(&self, group: u16, len: u8) -> String {
        format!("fd00:{group}:{}::/{len}", self.third_octet)
    }

    /// True when `ip` (without prefix) lies in this subnet.
    pub fn contains(&self, ip: &str) -> bool {
        let ip = ip.split('/').next().unwrap_or_default();
        ip.starts_with(&format!("10.213.{}.", self.third_octet))
    }
}

/// One test's world: its throwaway host namespace (entered by the creating thread) and its
/// etcd in there. Dropping it kills etcd, removes every temp dir and then the host namespace,
/// and with it every link and route the test left on that host; containers' namespaces are
/// separate [`crate::Netns`] fixtures.
pub struct TestBed {
    /// This test's etcd.
    pub etcd: Etcd,
    /// `CNI_PATH` for the plugin runs.
    pub cni_path: CniPath,
    /// host-local's `dataDir`.
    pub data_dir: TempDir,
    /// The subnet host-local allocates from.
    pub subnet: Subnet,
    /// The `nodename` in the config.
    pub node: String,
    /// The network `name` in the config.
    pub network: String,
    // Last, so that it is dropped last: etcd runs in it.
    host: Netns,
}

impl TestBed {
    /// A bed with every plugin on `CNI_PATH`.
    pub fn new() -> TestBed {
        TestBed::with_cni_path(CniPath::new())
    }

    /// A bed with the given `CNI_PATH`.
    pub fn with_cni_path(cni_path: CniPath) -> TestBed {
        let host = Netns::host();
        TestBed {
            etcd: Etcd::start(),
            cni_path,
            data_dir: TempDir::new("ipam-data"),
            subnet: Subnet::BED,
            node: names::unique("node"),
            network: names::unique("net"),
            host,
        }
    }

    /// The throwaway host namespace this bed's thread runs in.
    pub fn host(&self) -> &Netns {
        &self.host
    }

    /// `tests/fixtures/calico-host-local.conf` for this bed's network.
    pub fn conf(&self) -> NetConf {
        self.conf_for_network(&self.network)
    }

    /// `tests/fixtures/calico-host-local.conf` for another network on the same bed.
    pub fn conf_for_network(&self, network: &str) -> NetConf {
        self.fixture("calico-host-local.conf", network)
    }

    /// `calico-ipam pool add <cidr>` against this bed's etcd.
    pub fn add_pool(&self, cidr: &str) {
        let out = crate::plugin::by_hand("calico-ipam")
            .env("ETCD_ENDPOINTS", self.etcd.endpoint())
            .args(["pool", "add", cidr])
            .output()
            .expect("run calico-ipam pool add");
        assert!(out.status.success(), "pool add {cidr}: {out:?}");
    }

    /// Adds this bed's subnet as a calico-ipam pool and returns
    /// `tests/fixtures/calico-ipam.conf` for this bed's network.
    pub fn calico_ipam_conf(&self) -> NetConf {
        self.add_pool(&self.subnet.cidr());
        self.fixture("calico-ipam.conf", &self.network)
    }

    /// Any fixture file with this bed's placeholders filled in.
    pub fn fixture(&self, file: &str, network: &str) -> NetConf {
        NetConf::fixture(
            file,
            &[
                ("NETWORK", network),
                ("ETCD_ENDPOINTS", self.etcd.endpoint()),
                ("NODENAME", &self.node),
                ("SUBNET", &self.subnet.cidr()),
                ("DATA_DIR", &self.data_dir.path_str()),
            ],
        )
    }

    /// The `CNI_*` environment for one call.
    pub fn env(&self, command: &str, container_id: &str, netns: &str, ifname: &str) -> Env {
        Env::cni(command, container_id, netns, ifname, &self.cni_path.path())
    }

    /// Runs `calico` ADD.
    pub fn add(
        &self,
        conf: &NetConf,
        container_id: &str,
        netns: &str,
        ifname: &str,
    ) -> PluginOutput {
        run_plugin(
            "calico",
            &self.env("ADD", container_id, netns, ifname),
            &conf.to_bytes(),
        )
    }

    /// Runs `calico` DEL.
    pub fn del(
        &self,
        conf: &NetConf,
        container_id: &str,
        netns: &str,
        ifname: &str,
    ) -> PluginOutput {
        run_plugin(
            "calico",
            &self.env("DEL", container_id, netns, ifname),
            &conf.to_bytes(),
        )
    }

    /// `/calico/v1/host/<node>/workload/cni/<cid>/endpoint/<ifname>`.
    pub fn endpoint_key(&self, container_id: &str, ifname: &str) -> String {
        format!(
            "/calico/v1/host/{}/workload/cni/{container_id}/endpoint/{ifname}",
            self.node
        )
    }

    /// The workload endpoint JSON, if written.
    pub fn endpoint(&self, container_id: &str, ifname: &str) -> Option<Value> {
        self.etcd.get_json(&self.endpoint_key(container_id, ifname))
    }

    /// Every etcd key under this bed's node.
    pub fn node_keys(&self) -> Vec<String> {
        self.etcd.keys(&format!("/calico/v1/host/{}/", self.node))
    }

    /// Every key of this bed's etcd that describes a container: everything except what
    /// outlives containers by design (profiles, which DEL never removes, the Ready flag,
    /// global config, pools and IPAM blocks and affinities).
    pub fn container_state_keys(&self) -> Vec<String> {
        const KEPT: [&str; 6] = [
            "/calico/v1/policy/profile/",
            "/calico/v1/Ready",
            "/calico/v1/config/",
            "/calico/v1/ipam/",
            "/calico/ipam/v2/assignment/",
            "/calico/ipam/v2/host/",
        ];
        let all = self.etcd.keys("/");
        all.into_iter()
            .filter(|k| !KEPT.iter().any(|kept| k.starts_with(kept)))
            .collect()
    }

    /// host-local's reservations for a network: (IP file name, content).
    pub fn reservations(&self, network: &str) -> Vec<(String, String)> {
        let dir = self.data_dir.join(network);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return vec![];
        };
        let mut out: Vec<(String, String)> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name != "lock" && !name.starts_with("last_reserved_ip"))
            .map(|name| {
                let content = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
                (name, content)
            })
            .collect();
        out.sort();
        out
    }

    /// Asserts that nothing of the given containers is left: no host veth `cali<11>`, no host
    /// route into this bed's subnet, no etcd key about a container (see
    /// [`TestBed::container_state_keys`]), no host-local reservation in any network of this bed.
    pub fn assert_nothing_left(&self, container_ids: &[&str]) {
        for cid in container_ids {
            let veth = host_veth_name(cid);
            assert!(
                eventually(TEARDOWN, || host_link(&veth).is_none()),
                "host veth {veth} of container {cid} is left: {:?}",
                host_link(&veth)
            );
        }
        let routes_left = || {
            host_ipv4_routes()
                .into_iter()
                .filter(|r| self.subnet.contains(&r.dst))
                .collect::<Vec<_>>()
        };
        assert!(
            eventually(TEARDOWN, || routes_left().is_empty()),
            "host routes left: {:?}",
            routes_left()
        );
        assert_eq!(
            self.container_state_keys(),
            Vec::<String>::new(),
            "etcd keys left (node {})",
            self.node
        );
        for entry in std::fs::read_dir(self.data_dir.path())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
        {
            let network = entry.file_name().to_string_lossy().into_owned();
            assert_eq!(
                self.reservations(&network),
                vec![],
                "host-local reservations left for {network}"
            );
        }
    }
}

impl Default for TestBed {
    fn default() -> Self {
        TestBed::new()
    }
}
