//! CHECK, STATUS and GC of `calico` (cniVersion 1.1.0), through the binary, against a real
//! etcd and real network namespaces.

use serde_json::{Value, json};
use tests::kernel::{eventually, host_link};
use tests::{
    Container, Env, NetConf, Netns, PluginOutput, TestBed, host_veth_name, names, run_plugin,
};

const CHECK_FAILED: u64 = 106;
const NOT_AVAILABLE: u64 = 50;
const TEARDOWN: std::time::Duration = std::time::Duration::from_secs(5);

/// A 1.1.0 config with a calico-ipam pool of this bed's subnet.
fn calico_ipam_conf(bed: &TestBed) -> NetConf {
    let pool = bed.subnet.cidr();
    let pool_json = json!({"cidr": pool, "ipip": "", "ipip_mode": "", "masquerade": false, "ipam": true, "disabled": false});
    bed.etcd.put(
        &format!("/calico/v1/ipam/v4/pool/{}", pool.replace('/', "-")),
        &pool_json.to_string(),
    );
    bed.fixture("calico-ipam.conf", &bed.network)
        .set("cniVersion", "1.1.0")
}

fn check(container: &Container, conf: &NetConf) -> PluginOutput {
    run_plugin("calico", &container.env("CHECK"), &conf.to_bytes())
}

fn with_prev_result(conf: &NetConf, result: &Value) -> NetConf {
    conf.clone().set("prevResult", result.clone())
}

fn gc(bed: &TestBed, conf: &NetConf, keep: &[(&str, &str)]) -> PluginOutput {
    let valid: Vec<Value> = keep
        .iter()
        .map(|(cid, ifname)| json!({"containerID": cid, "ifname": ifname}))
        .collect();
    let env = Env::new()
        .set("CNI_COMMAND", "GC")
        .set("CNI_PATH", &bed.cni_path.path());
    run_plugin(
        "calico",
        &env,
        &conf
            .clone()
            .set("cni.dev/valid-attachments", valid)
            .to_bytes(),
    )
}

fn status(bed: &TestBed, conf: &NetConf) -> PluginOutput {
    let env = Env::new()
        .set("CNI_COMMAND", "STATUS")
        .set("CNI_PATH", &bed.cni_path.path());
    run_plugin("calico", &env, &conf.to_bytes())
}

#[test]
#[ignore = "root: real etcd and netns"]
fn check_after_add_succeeds_and_each_tampering_is_reported() {
    type Tamper = fn(&TestBed, &Netns, &str, &str);
    let cases: [(&str, Tamper, &str); 6] = [
        (
            "address removed",
            |_, ns, _, ip| {
                ip_cmd(&[
                    "-n",
                    ns.name(),
                    "addr",
                    "del",
                    &format!("{ip}/32"),
                    "dev",
                    "eth0",
                ])
            },
            "does not have address",
        ),
        (
            "default route removed",
            |_, ns, _, _| ip_cmd(&["-n", ns.name(), "route", "del", "default"]),
            "no default route",
        ),
        (
            "host route removed",
            |_, _, cid, ip| ip_cmd(&["route", "del", ip, "dev", &host_veth_name(cid)]),
            "host has no route",
        ),
        (
            "host veth removed",
            |_, _, cid, _| ip_cmd(&["link", "del", &host_veth_name(cid)]),
            "does not exist",
        ),
        (
            "endpoint deleted",
            |bed, _, cid, _| bed.etcd.delete(&bed.endpoint_key(cid, "eth0")),
            "endpoint",
        ),
        (
            "addresses released",
            |bed, _, cid, _| {
                bed.etcd
                    .delete(&format!("/calico/ipam/v2/handle/{}.{cid}", bed.network))
            },
            "handle",
        ),
    ];
    for (what, tamper, expected) in cases {
        let bed = TestBed::new();
        let container = bed.container(calico_ipam_conf(&bed));
        let result = container.add().result().clone();
        let ip = result["ips"][0]["address"]
            .as_str()
            .unwrap()
            .trim_end_matches("/32")
            .to_string();
        let check_conf = with_prev_result(&container.conf, &result);
        check(&container, &check_conf).assert_success();

        tamper(&bed, &container.netns, &container.id, &ip);
        let out = check(&container, &check_conf);
        let err = out.error();
        let text = format!("{} {}", err.msg, err.details.clone().unwrap_or_default());
        assert!(
            text.contains(expected),
            "{what}: expected {expected:?}\n{out}"
        );
    }
}

#[test]
#[ignore = "root: real etcd and netns"]
fn check_needs_prev_result_and_version_0_4_0() {
    let bed = TestBed::new();
    let container = bed.container(calico_ipam_conf(&bed));
    let result = container.add().result().clone();
    let err = check(&container, &container.conf).error();
    assert!(err.msg.contains("prevResult"), "{err:?}");
    let old = with_prev_result(&container.conf, &result).set("cniVersion", "0.3.1");
    assert_eq!(check(&container, &old).error().code, 1);
    assert_ne!(CHECK_FAILED, 1);
}

#[test]
#[ignore = "root: real etcd and netns"]
fn status_reports_ready_then_etcd_down() {
    let mut bed = TestBed::new();
    let conf = calico_ipam_conf(&bed);
    status(&bed, &conf).assert_success();
    bed.etcd.put("/calico/v1/Ready", "false");
    assert_eq!(status(&bed, &conf).error().code, NOT_AVAILABLE);
    bed.etcd.put("/calico/v1/Ready", "true");
    status(&bed, &conf).assert_success();
    bed.etcd.stop();
    let err = status(&bed, &conf).error();
    assert_eq!(err.code, NOT_AVAILABLE, "{err:?}");
}

#[test]
#[ignore = "root: real etcd and netns"]
fn status_reports_full_pools_from_the_ipam_plugin() {
    let bed = TestBed::new();
    let conf = bed
        .fixture("calico-ipam.conf", &bed.network)
        .set("cniVersion", "1.1.0");
    let err = status(&bed, &conf).error();
    assert_eq!(err.code, 51, "no pools at all: {err:?}");
}

#[test]
#[ignore = "root: real etcd and netns"]
fn gc_keeps_listed_attachments_and_removes_the_others() {
    let bed = TestBed::new();
    let conf = calico_ipam_conf(&bed);
    let (kept, gone) = (bed.container(conf.clone()), bed.container(conf.clone()));
    kept.add().result();
    gone.add().result();

    // Another network and another node on the same etcd: GC of this network must not touch them.
    let other_network = names::unique("net");
    let other = bed.container(
        bed.fixture("calico-ipam.conf", &other_network)
            .set("cniVersion", "1.1.0"),
    );
    other.add().result();
    let on_other_node = bed.container(conf.clone().set("nodename", names::unique("node")));
    on_other_node.add().result();

    gc(&bed, &conf, &[(&kept.id, "eth0")]).assert_success();

    assert!(
        bed.endpoint(&gone.id, "eth0").is_none(),
        "unlisted endpoint left"
    );
    assert!(
        eventually(TEARDOWN, || host_link(&host_veth_name(&gone.id)).is_none()),
        "unlisted veth left"
    );
    assert!(
        bed.etcd
            .get(&format!(
                "/calico/ipam/v2/handle/{}.{}",
                bed.network, gone.id
            ))
            .is_none(),
        "unlisted handle left"
    );
    assert!(
        bed.endpoint(&kept.id, "eth0").is_some(),
        "listed endpoint removed"
    );
    assert!(
        host_link(&host_veth_name(&kept.id)).is_some(),
        "listed veth removed"
    );
    assert!(
        bed.endpoint(&other.id, "eth0").is_some(),
        "other network's endpoint removed"
    );
    assert!(
        host_link(&host_veth_name(&other.id)).is_some(),
        "other network's veth removed"
    );
    assert!(
        host_link(&host_veth_name(&on_other_node.id)).is_some(),
        "other node's veth removed"
    );
    let other_node_key = format!(
        "/calico/v1/host/{}/workload/cni/{}/endpoint/eth0",
        on_other_node.conf.value()["nodename"].as_str().unwrap(),
        on_other_node.id
    );
    assert!(
        bed.etcd.get(&other_node_key).is_some(),
        "other node's endpoint removed"
    );

    // Each container's drop checks that nothing at all is left: delete them all first.
    for container in [&kept, &other, &on_other_node] {
        container.del().assert_success();
    }
}

fn ip_cmd(args: &[&str]) {
    let status = std::process::Command::new("ip")
        .args(args)
        .status()
        .expect("run ip");
    assert!(status.success(), "ip {args:?} failed");
}
