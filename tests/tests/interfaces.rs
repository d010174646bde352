//! One interface per network: a container attached to a second network under another
//! `CNI_IFNAME` gets a veth, addresses, endpoint and attachment record of its own, and DEL,
//! CHECK and GC of either interface touch only that one.

use serde_json::{Value, json};
use tests::kernel::{
    eventually, host_ipv4_routes, host_link, host_routes_to, netns_ipv4_addrs, netns_ipv4_routes,
    netns_link, ping,
};
use tests::{Env, NetConf, Netns, Subnet, TestBed, host_veth_name_for, names, run_plugin};

const TEARDOWN: std::time::Duration = std::time::Duration::from_secs(5);

/// A container netns and two networks, each allocating with calico-ipam from a pool of its own:
/// `net1` under `eth0`, `net2` under `eth1`.
struct TwoNetworks {
    bed: TestBed,
    subnet2: Subnet,
    net2: String,
    netns: Netns,
    cid: String,
}

impl TwoNetworks {
    fn new() -> TwoNetworks {
        let two = TwoNetworks {
            bed: TestBed::new(),
            subnet2: Subnet::nth(2),
            net2: names::unique("net2"),
            netns: Netns::new(),
            cid: names::container_id(),
        };
        two.bed.add_pool(&two.bed.subnet.cidr());
        two.bed.add_pool(&two.subnet2.cidr());
        two
    }

    /// The config of the network attached under `ifname`.
    fn conf(&self, ifname: &str) -> NetConf {
        self.bed
            .fixture("calico-ipam.conf", self.network(ifname))
            .set_ipam("ipv4_pools", json!([self.subnet(ifname).cidr()]))
            .set("cniVersion", "1.0.0")
    }

    fn network(&self, ifname: &str) -> &str {
        match ifname {
            "eth0" => &self.bed.network,
            _ => &self.net2,
        }
    }

    fn subnet(&self, ifname: &str) -> &Subnet {
        match ifname {
            "eth0" => &self.bed.subnet,
            _ => &self.subnet2,
        }
    }

    fn add(&self, ifname: &str) -> Value {
        let out = self
            .bed
            .add(&self.conf(ifname), &self.cid, &self.netns.path(), ifname);
        out.result().clone()
    }

    fn del(&self, ifname: &str) {
        self.bed
            .del(&self.conf(ifname), &self.cid, &self.netns.path(), ifname)
            .assert_success();
    }

    /// CHECK of the attachment under `ifname` with the result its ADD printed.
    fn check(&self, ifname: &str, prev_result: &Value) -> tests::PluginOutput {
        let conf = self.conf(ifname).set("prevResult", prev_result.clone());
        let env = self.bed.env("CHECK", &self.cid, &self.netns.path(), ifname);
        run_plugin("calico", &env, &conf.to_bytes())
    }

    /// The container's single address on `ifname`.
    fn address(&self, ifname: &str) -> String {
        let addrs = netns_ipv4_addrs(self.netns.name(), ifname);
        assert_eq!(addrs.len(), 1, "{ifname}: {addrs:?}");
        addrs[0].local.clone()
    }

    /// Everything of the attachment under `ifname` is in place and works: its own host veth
    /// with the host route to its address, the address from its network's subnet, its endpoint
    /// with its network's profile, its attachment record, and the address answers ping.
    fn assert_attached(&self, ifname: &str) {
        let veth = host_veth_name_for(&self.cid, ifname);
        let host = host_link(&veth).unwrap_or_else(|| panic!("{ifname}: host veth {veth} missing"));
        let ip = self.address(ifname);
        assert!(
            self.subnet(ifname).contains(&ip),
            "{ifname}: {ip} not from {}",
            self.subnet(ifname).cidr()
        );
        let routes = host_routes_to(&ip);
        assert!(
            routes
                .iter()
                .any(|r| r.dev.as_deref() == Some(veth.as_str())),
            "{ifname}: no host route {ip} dev {veth}: {routes:?}"
        );
        let endpoint = self
            .bed
            .endpoint(&self.cid, ifname)
            .unwrap_or_else(|| panic!("{ifname}: endpoint missing"));
        assert_eq!(endpoint["name"], json!(veth), "{ifname}: {endpoint}");
        assert_eq!(endpoint["ipv4_nets"], json!([format!("{ip}/32")]));
        assert_eq!(endpoint["profile_ids"], json!([self.network(ifname)]));
        let container = netns_link(self.netns.name(), ifname).expect("container link");
        assert_eq!(endpoint["mac"], json!(container.mac));
        let records = self.bed.etcd.keys("/calico/cni/v1/attachment/");
        let record = format!("/{}/{}/{}", self.network(ifname), self.cid, ifname);
        assert!(
            records.iter().any(|k| k.ends_with(&record)),
            "{ifname}: no record ending in {record}: {records:?}"
        );
        assert!(
            self.bed.etcd.get(&self.handle(ifname)).is_some(),
            "{ifname}: no IPAM handle {}",
            self.handle(ifname)
        );
        assert!(host.index > 0);
        assert!(ping(&ip), "{ifname}: {ip} does not answer ping");
    }

    /// Nothing of the attachment under `ifname` is left, in the kernel or in etcd.
    fn assert_gone(&self, ifname: &str) {
        let veth = host_veth_name_for(&self.cid, ifname);
        assert!(
            eventually(TEARDOWN, || host_link(&veth).is_none()),
            "{ifname}: host veth {veth} left"
        );
        assert!(
            netns_link(self.netns.name(), ifname).is_none(),
            "{ifname}: container interface left"
        );
        let subnet = self.subnet(ifname);
        let routes: Vec<_> = host_ipv4_routes()
            .into_iter()
            .filter(|r| subnet.contains(&r.dst))
            .collect();
        assert!(routes.is_empty(), "{ifname}: host routes left: {routes:?}");
        assert_eq!(self.bed.endpoint(&self.cid, ifname), None, "{ifname}");
        let record = format!("/{}/{}/{}", self.network(ifname), self.cid, ifname);
        let records = self.bed.etcd.keys("/calico/cni/v1/attachment/");
        assert!(
            !records.iter().any(|k| k.ends_with(&record)),
            "{ifname}: record left: {records:?}"
        );
        let claim = format!("/{veth}");
        let claims: Vec<_> = self
            .bed
            .container_state_keys()
            .into_iter()
            .filter(|k| k.ends_with(&claim))
            .collect();
        assert!(claims.is_empty(), "{ifname}: claim left: {claims:?}");
        assert_eq!(self.bed.etcd.get(&self.handle(ifname)), None, "{ifname}");
    }

    /// calico-ipam's handle of the attachment under `ifname`.
    fn handle(&self, ifname: &str) -> String {
        let suffix = if ifname == "eth0" {
            String::new()
        } else {
            format!(":{ifname}")
        };
        format!(
            "/calico/ipam/v2/handle/{}.{}{suffix}",
            self.network(ifname),
            self.cid
        )
    }

    fn assert_nothing_left(&self) {
        self.assert_gone("eth1");
        self.bed.assert_nothing_left(&[&self.cid]);
        let handles = self.bed.etcd.keys("/calico/ipam/v2/handle/");
        assert!(handles.is_empty(), "IPAM handles left: {handles:?}");
    }
}

fn other(ifname: &str) -> &'static str {
    if ifname == "eth0" { "eth1" } else { "eth0" }
}

#[test]
#[ignore = "root: real etcd and netns"]
fn two_networks_under_eth0_and_eth1_get_two_veths_addresses_and_endpoints() {
    let two = TwoNetworks::new();
    let first = two.add("eth0");
    let second = two.add("eth1");

    for (ifname, result) in [("eth0", &first), ("eth1", &second)] {
        two.assert_attached(ifname);
        let veth = host_veth_name_for(&two.cid, ifname);
        assert_eq!(result["interfaces"][0]["name"], json!(veth), "{result}");
        assert_eq!(result["interfaces"][1]["name"], json!(ifname), "{result}");
        assert_eq!(
            result["ips"][0]["address"],
            json!(format!("{}/32", two.address(ifname)))
        );
        two.check(ifname, result).assert_success();
    }
    assert_ne!(
        host_veth_name_for(&two.cid, "eth0"),
        host_veth_name_for(&two.cid, "eth1")
    );
    // eth0's default route stays the one in use: eth1's sits behind it with a higher metric.
    let routes = netns_ipv4_routes(two.netns.name());
    let defaults: Vec<_> = routes.iter().filter(|r| r.dst == "default").collect();
    assert_eq!(defaults.len(), 2, "{routes:?}");
    let in_use = defaults.iter().min_by_key(|r| r.metric).expect("a default");
    assert_eq!(in_use.dev.as_deref(), Some("eth0"), "{routes:?}");

    two.del("eth1");
    two.del("eth0");
    two.assert_nothing_left();
}

#[test]
#[ignore = "root: real etcd and netns"]
fn del_of_either_interface_leaves_the_other_fully_attached() {
    for gone in ["eth1", "eth0"] {
        let two = TwoNetworks::new();
        let kept = other(gone);
        let eth0 = two.add("eth0");
        let eth1 = two.add("eth1");
        let kept_result = if kept == "eth0" { eth0 } else { eth1 };

        two.del(gone);

        two.assert_gone(gone);
        two.assert_attached(kept);
        two.check(kept, &kept_result).assert_success();
        // A repeated DEL of the removed one still leaves the other alone.
        two.del(gone);
        two.assert_attached(kept);

        two.del(kept);
        two.assert_nothing_left();
    }
}

#[test]
#[ignore = "root: real etcd and netns"]
fn gc_listing_only_eth0_removes_eth1_only() {
    let two = TwoNetworks::new();
    two.add("eth0");
    two.add("eth1");
    let valid = json!([{"containerID": two.cid, "ifname": "eth0"}]);
    let env = Env::new()
        .set("CNI_COMMAND", "GC")
        .set("CNI_PATH", &two.bed.cni_path.path());
    for ifname in ["eth0", "eth1"] {
        let conf = two
            .conf(ifname)
            .set("cniVersion", "1.1.0")
            .set("cni.dev/valid-attachments", valid.clone());
        run_plugin("calico", &env, &conf.to_bytes()).assert_success();
    }

    two.assert_gone("eth1");
    two.assert_attached("eth0");

    two.del("eth0");
    two.assert_nothing_left();
}

/// Calico v1's rule for the same interface name on a second network still holds: the network
/// joins the existing endpoint (its profile is appended) instead of making an interface.
#[test]
#[ignore = "root: real etcd and netns"]
fn the_same_ifname_on_a_second_network_joins_instead_of_adding_an_interface() {
    let two = TwoNetworks::new();
    let first = two.add("eth0");
    let conf2 = two.conf("eth1");
    let joined = two
        .bed
        .add(&conf2, &two.cid, &two.netns.path(), "eth0")
        .result()
        .clone();
    assert_eq!(joined["ips"], first["ips"], "{joined}");
    assert_eq!(joined["interfaces"][1]["name"], json!("eth0"));
    let endpoint = two.bed.endpoint(&two.cid, "eth0").expect("endpoint");
    assert_eq!(
        endpoint["profile_ids"],
        json!([two.bed.network, two.net2]),
        "{endpoint}"
    );
    assert!(netns_link(two.netns.name(), "eth1").is_none());
    assert_eq!(
        two.bed.etcd.keys("/calico/ipam/v2/handle/"),
        [two.handle("eth0")]
    );
    let check_conf = conf2.clone().set("prevResult", joined);
    let env = two.bed.env("CHECK", &two.cid, &two.netns.path(), "eth0");
    run_plugin("calico", &env, &check_conf.to_bytes()).assert_success();

    two.bed
        .del(&conf2, &two.cid, &two.netns.path(), "eth0")
        .assert_success();
    let endpoint = two.bed.endpoint(&two.cid, "eth0").expect("endpoint");
    assert_eq!(endpoint["profile_ids"], json!([two.bed.network]));
    two.assert_attached("eth0");
    two.del("eth0");
    two.assert_nothing_left();
}
