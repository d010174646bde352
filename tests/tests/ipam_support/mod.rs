//! What the `ipam_*` tests share: a bed of one etcd and `calico-ipam` runs against it, the
//! admin command, and the datastore consistency checks run after every scenario.

#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::Value;
use tests::{Env, Etcd, NetConf, Netns, PluginOutput, TempDir, names, run_plugin};

/// `CNI_NETNS` for IPAM-only runs: calico-ipam never enters it.
pub const NO_NETNS: &str = "/var/run/netns/unused";

/// One etcd plus the names `tests/fixtures/calico-ipam.conf` is filled with, and a directory
/// for the nodes' block hints (the fixture itself keeps no hints), on a throwaway host
/// namespace like [`tests::TestBed`]'s.
pub struct IpamBed {
    pub etcd: Etcd,
    pub node: String,
    pub network: String,
    pub cni_path: TempDir,
    pub hint_dir: TempDir,
    // Last, so that it is dropped last: etcd runs in it.
    host: Netns,
}

impl IpamBed {
    /// A bed with a single etcd member.
    pub fn new() -> IpamBed {
        IpamBed::with_etcd(Etcd::start)
    }

    /// A bed on a three-member etcd cluster; configs list all its members.
    pub fn with_cluster() -> IpamBed {
        IpamBed::with_etcd(Etcd::start_cluster)
    }

    fn with_etcd(start: fn() -> Etcd) -> IpamBed {
        let host = Netns::host();
        IpamBed {
            etcd: start(),
            node: names::unique("node"),
            network: names::unique("net"),
            cni_path: TempDir::new("cni-path"),
            hint_dir: TempDir::new("block-hints"),
            host,
        }
    }

    /// The fixture for this bed's node.
    pub fn conf(&self) -> NetConf {
        self.conf_on(&self.node)
    }

    /// The fixture as seen from another node, with block hints in [`IpamBed::hint_dir`] (one
    /// file per node and family there).
    pub fn conf_on(&self, node: &str) -> NetConf {
        NetConf::fixture(
            "calico-ipam.conf",
            &[
                ("NETWORK", &self.network),
                ("ETCD_ENDPOINTS", &self.etcd.endpoints().join(",")),
                ("NODENAME", node),
            ],
        )
        .set_ipam("block_hint_dir", self.hint_dir.path_str())
    }

    /// The IPv4 block hint file of `node`.
    pub fn hint_file(&self, node: &str) -> std::path::PathBuf {
        self.hint_dir.join(&format!("{node}.ipv4"))
    }

    /// The blocks the IPv4 block hint of `node` lists, one CIDR a line.
    pub fn hinted_blocks(&self, node: &str) -> Vec<String> {
        std::fs::read_to_string(self.hint_file(node))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The environment of one `calico-ipam` run.
    pub fn env(&self, command: &str, container_id: &str) -> Env {
        Env::cni(
            command,
            container_id,
            NO_NETNS,
            "eth0",
            &self.cni_path.path_str(),
        )
    }

    /// Runs `calico-ipam` with `conf`.
    pub fn run(&self, conf: &NetConf, env: &Env) -> PluginOutput {
        run_plugin("calico-ipam", env, &conf.to_bytes())
    }

    pub fn add(&self, conf: &NetConf, container_id: &str) -> PluginOutput {
        self.run(conf, &self.env("ADD", container_id))
    }

    pub fn del(&self, conf: &NetConf, container_id: &str) -> PluginOutput {
        self.run(conf, &self.env("DEL", container_id))
    }

    /// The environment libcni gives a STATUS or GC: no container, netns or interface.
    pub fn env_without_attachment(&self, command: &str) -> Env {
        Env::new()
            .set("CNI_COMMAND", command)
            .set("CNI_CONTAINERID", "")
            .set("CNI_NETNS", "")
            .set("CNI_IFNAME", "")
            .set("CNI_PATH", &self.cni_path.path_str())
    }

    /// CHECK of a container with `prev_result` (none when `Value::Null`).
    pub fn check(&self, conf: &NetConf, container_id: &str, prev_result: &Value) -> PluginOutput {
        let conf = if prev_result.is_null() {
            conf.clone()
        } else {
            conf.clone().set("prevResult", prev_result.clone())
        };
        self.run(&conf, &self.env("CHECK", container_id))
    }

    /// STATUS with `conf`.
    pub fn status(&self, conf: &NetConf) -> PluginOutput {
        self.run(conf, &self.env_without_attachment("STATUS"))
    }

    /// GC with `conf` (which carries the list of valid attachments, if any).
    pub fn gc(&self, conf: &NetConf) -> PluginOutput {
        self.run(conf, &self.env_without_attachment("GC"))
    }

    /// Runs the admin mode with `args` against this bed's etcd (through `ETCD_ENDPOINTS`).
    pub fn admin(&self, args: &[&str]) -> std::process::Output {
        tests::plugin::by_hand("calico-ipam")
            .env("ETCD_ENDPOINTS", self.etcd.endpoints().join(","))
            .args(args)
            .output()
            .expect("run calico-ipam admin mode")
    }

    /// `calico-ipam pool add <cidr>`, which must succeed.
    pub fn add_pool(&self, cidr: &str) {
        let out = self.admin(&["pool", "add", cidr]);
        assert!(
            out.status.success(),
            "pool add {cidr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The handle key of a container on this bed's network.
    pub fn handle_key(&self, container_id: &str) -> String {
        format!("/calico/ipam/v2/handle/{}.{container_id}", self.network)
    }
}

/// The addresses of an ADD result in the 0.3.x shape, in order.
pub fn result_addresses(out: &PluginOutput) -> Vec<String> {
    let result = out.result();
    result["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("no ips in {result}"))
        .iter()
        .map(|ip| ip["address"].as_str().expect("address").to_string())
        .collect()
}

/// One block as read back: its affinity and which handle holds which ordinal.
#[derive(Debug, Clone)]
pub struct BlockState {
    pub cidr: String,
    pub affinity: Option<String>,
    /// ordinal → handle id
    pub allocated: BTreeMap<usize, String>,
}

/// Checks the datastore ([`check_datastore`]) and asserts that no block holds an address any
/// more; `context` says what should have released them.
pub fn assert_no_allocations(etcd: &Etcd, context: &str) {
    let blocks = check_datastore(etcd);
    let held: Vec<(&str, &str)> = blocks
        .iter()
        .flat_map(|b| b.allocated.values().map(|h| (b.cidr.as_str(), h.as_str())))
        .collect();
    assert!(
        held.is_empty(),
        "{context}: addresses still allocated (block, handle): {held:?}"
    );
}

/// Checks everything IPAM wrote and returns the blocks:
/// - every block decodes into the documented Go v1 shape, with a consistent free list and
///   compacted attributes;
/// - every affinity key points at a block affine to that node;
/// - handle counts equal the allocations in the blocks, and no handle is empty.
pub fn check_datastore(etcd: &Etcd) -> Vec<BlockState> {
    let mut blocks = Vec::new();
    let mut from_blocks: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (key, raw) in etcd.get_prefix("/calico/ipam/v2/assignment/") {
        let block = check_block_shape(&key, &raw);
        for handle in block.allocated.values() {
            *from_blocks
                .entry((handle.clone(), block.cidr.clone()))
                .or_default() += 1;
        }
        blocks.push(block);
    }
    for (key, raw) in etcd.get_prefix("/calico/ipam/v2/host/") {
        assert_eq!(raw, "{}", "affinity value at {key}");
        let (node, cidr) = parse_affinity_key(&key);
        let block = blocks
            .iter()
            .find(|b| b.cidr == cidr)
            .unwrap_or_else(|| panic!("affinity {key} without block"));
        assert_eq!(
            block.affinity.as_deref(),
            Some(format!("host:{node}").as_str()),
            "affinity {key}"
        );
    }
    let mut from_handles = BTreeMap::new();
    for (key, raw) in etcd.get_prefix("/calico/ipam/v2/handle/") {
        let id = key
            .trim_start_matches("/calico/ipam/v2/handle/")
            .to_string();
        let value: Value =
            serde_json::from_str(&raw).unwrap_or_else(|e| panic!("handle {key}: {e}"));
        let counts = value["block"]
            .as_object()
            .unwrap_or_else(|| panic!("handle {key} has no block map: {raw}"));
        assert!(!counts.is_empty(), "empty handle {key} left behind");
        for (cidr, n) in counts {
            from_handles.insert((id.clone(), cidr.clone()), n.as_u64().expect("count"));
        }
    }
    assert_eq!(
        from_handles, from_blocks,
        "handle counts vs block allocations"
    );
    blocks
}

fn parse_affinity_key(key: &str) -> (String, String) {
    let rest = key.trim_start_matches("/calico/ipam/v2/host/");
    let (node, tail) = rest.split_once('/').expect("node segment");
    let segment = tail.rsplit('/').next().expect("cidr segment");
    let (addr, prefix) = segment.rsplit_once('-').expect("cidr-prefix");
    (node.to_string(), format!("{addr}/{prefix}"))
}

fn check_block_shape(key: &str, raw: &str) -> BlockState {
    let value: Value = serde_json::from_str(raw).unwrap_or_else(|e| panic!("block {key}: {e}"));
    let obj = value
        .as_object()
        .unwrap_or_else(|| panic!("block {key} is not an object"));
    let mut fields: Vec<&str> = obj.keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "affinity",
            "allocations",
            "attributes",
            "cidr",
            "strictAffinity",
            "unallocated"
        ],
        "{key}"
    );
    let cidr = obj["cidr"].as_str().expect("cidr").to_string();
    let (addr, prefix) = cidr.split_once('/').expect("cidr with prefix");
    assert!(
        key.ends_with(&format!("/{addr}-{prefix}")),
        "block {key} holds cidr {cidr}"
    );
    assert!(
        prefix == "26" || prefix == "122",
        "{key}: block prefix {prefix}"
    );
    let affinity = match &obj["affinity"] {
        Value::Null => None,
        Value::String(a) => {
            assert!(a.starts_with("host:"), "{key}: affinity {a}");
            Some(a.clone())
        }
        other => panic!("{key}: affinity {other}"),
    };
    assert!(obj["strictAffinity"].is_boolean(), "{key}: strictAffinity");
    let attributes = obj["attributes"].as_array().expect("attributes array");
    for attr in attributes {
        let a = attr.as_object().expect("attribute object");
        assert_eq!(a.len(), 2, "{key}: attribute {attr}");
        assert!(
            a["handle_id"].is_string() && a["secondary"].is_null(),
            "{key}: attribute {attr}"
        );
    }
    let allocations = obj["allocations"].as_array().expect("allocations array");
    assert_eq!(allocations.len(), 64, "{key}");
    let unallocated: Vec<usize> = obj["unallocated"]
        .as_array()
        .expect("unallocated array")
        .iter()
        .map(|o| o.as_u64().expect("ordinal") as usize)
        .collect();
    let mut allocated = BTreeMap::new();
    let mut used = vec![false; attributes.len()];
    for (ordinal, slot) in allocations.iter().enumerate() {
        match slot {
            Value::Null => assert!(
                unallocated.contains(&ordinal),
                "{key}: free ordinal {ordinal} not in unallocated"
            ),
            Value::Number(n) => {
                let index = n.as_u64().expect("index") as usize;
                assert!(
                    index < attributes.len(),
                    "{key}: ordinal {ordinal} -> attribute {index}"
                );
                assert!(
                    !unallocated.contains(&ordinal),
                    "{key}: ordinal {ordinal} allocated and free"
                );
                used[index] = true;
                let handle = attributes[index]["handle_id"]
                    .as_str()
                    .expect("handle")
                    .to_string();
                allocated.insert(ordinal, handle);
            }
            other => panic!("{key}: allocation {other}"),
        }
    }
    assert_eq!(
        unallocated.len(),
        64 - allocated.len(),
        "{key}: duplicates in unallocated"
    );
    assert!(used.iter().all(|u| *u), "{key}: attributes not compacted");
    BlockState {
        cidr,
        affinity,
        allocated,
    }
}

/// The etcd requests one run made, from the datastore's request log.
pub fn requests_of(log: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let _ = std::fs::remove_file(log);
    text.lines().map(str::to_string).collect()
}
