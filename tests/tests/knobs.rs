//! The config keys that change what ADD makes: `interface_prefix`, `create_profiles`,
//! `label_endpoints`, and the host's IPv6 forwarding, through the binary against a real etcd
//! and real network namespaces.

use serde_json::{Value, json};
use tests::kernel::{eventually, host_ipv6_forwarding, host_link, set_host_ipv6_forwarding};
use tests::{Env, NetConf, PluginOutput, TestBed, names, run_plugin};

const TEARDOWN: std::time::Duration = std::time::Duration::from_secs(5);

/// A prefix no other test uses, so a leftover link would be this file's.
const PREFIX: &str = "knob";

/// `PREFIX` + the first 11 characters of the container id, cut to 15 bytes.
fn prefixed_veth(cid: &str) -> String {
    let mut name = PREFIX.to_string();
    name.extend(cid.chars().take(15 - PREFIX.len()));
    name
}

fn gc_keeping_nothing(bed: &TestBed, conf: &NetConf) -> PluginOutput {
    let env = Env::new()
        .set("CNI_COMMAND", "GC")
        .set("CNI_PATH", &bed.cni_path.path());
    let conf = conf
        .clone()
        .set("cni.dev/valid-attachments", Value::Array(Vec::new()));
    run_plugin("calico", &env, &conf.to_bytes())
}

#[test]
#[ignore = "root: real etcd and netns"]
fn add_check_del_and_gc_all_follow_the_interface_prefix() {
    let bed = TestBed::new();
    let conf = bed
        .calico_ipam_conf()
        .set("cniVersion", "1.1.0")
        .set("interface_prefix", PREFIX);
    let container = bed.container(conf.clone());
    let veth = prefixed_veth(&container.id);

    let out = container.add();
    let result = out.result().clone();
    assert_eq!(result["interfaces"][0]["name"], json!(veth), "{out}");
    assert!(host_link(&veth).is_some(), "no host veth {veth}\n{out}");
    let endpoint = bed.endpoint(&container.id, "eth0").expect("endpoint");
    assert_eq!(endpoint["name"], json!(veth), "{endpoint}");
    let check = conf.clone().set("prevResult", result);
    run_plugin("calico", &container.env("CHECK"), &check.to_bytes()).assert_success();
    container.del().assert_success();
    assert!(
        eventually(TEARDOWN, || host_link(&veth).is_none()),
        "DEL left host veth {veth}"
    );

    // GC finds the veth of an attachment through its record, whatever the prefix.
    let gone = bed.container(conf.clone());
    let gone_veth = prefixed_veth(&gone.id);
    gone.add().result();
    assert!(host_link(&gone_veth).is_some(), "no host veth {gone_veth}");
    gc_keeping_nothing(&bed, &conf).assert_success();
    assert!(
        eventually(TEARDOWN, || host_link(&gone_veth).is_none()),
        "GC left host veth {gone_veth}"
    );
    bed.assert_nothing_left(&[&container.id, &gone.id]);
}

/// With `create_profiles: false` the operator owns profiles: a first ADD creates none, an ADD
/// that joins a second network creates none either, and a profile the operator wrote is left
/// exactly as it was; the endpoint still names the network's profile.
#[test]
#[ignore = "root: real etcd and netns"]
fn create_profiles_false_names_the_profile_but_never_writes_one() {
    let bed = TestBed::new();
    let conf = bed
        .calico_ipam_conf()
        .set("cniVersion", "1.1.0")
        .set("create_profiles", false);
    let operators = format!("/calico/v1/policy/profile/{}/rules", bed.network);
    let rules = r#"{"inbound_rules":[{"action":"deny"}],"outbound_rules":[]}"#;
    bed.etcd.put(&operators, rules);
    let other_network = names::unique("net");
    let other_conf = conf.clone().set("name", other_network.as_str());
    let container = bed.container(conf);
    let (cid, netns) = (&container.id, container.netns.path());

    container.add().result();
    bed.add(&other_conf, cid, &netns, "eth0").result();

    let endpoint = bed.endpoint(cid, "eth0").expect("endpoint");
    assert_eq!(
        endpoint["profile_ids"],
        json!([bed.network, other_network]),
        "{endpoint}"
    );
    assert_eq!(
        bed.etcd.keys("/calico/v1/policy/profile/"),
        std::slice::from_ref(&operators),
        "a profile key was written"
    );
    assert_eq!(bed.etcd.get(&operators).as_deref(), Some(rules));
    bed.del(&other_conf, cid, &netns, "eth0").assert_success();
}

/// `label_endpoints` copies the `args.cni.labels` under `org.projectcalico.label.` onto the
/// endpoint without that prefix; other labels, and all of them without the key, stay off it.
#[test]
#[ignore = "root: real etcd and netns"]
fn label_endpoints_copies_only_the_calico_prefixed_cni_labels() {
    let bed = TestBed::new();
    let labels = json!({"cni": {"labels": [
        {"key": "org.projectcalico.label.role", "value": "db"},
        {"key": "org.projectcalico.label.team", "value": "storage"},
        {"key": "com.docker.compose.project", "value": "shop"},
    ]}});
    let base = bed.calico_ipam_conf().set("args", labels);
    let cases = [
        (
            base.clone().set("label_endpoints", true),
            json!({"role": "db", "team": "storage"}),
        ),
        (base.clone(), Value::Null),
    ];
    for (conf, want) in cases {
        let container = bed.container(conf);
        container.add().result();
        let endpoint = bed.endpoint(&container.id, "eth0").expect("endpoint");
        let got = endpoint.get("labels").cloned().unwrap_or(Value::Null);
        let got = if got == json!({}) { Value::Null } else { got };
        assert_eq!(got, want, "{endpoint}");
    }
}

/// The kernel forwards a container's IPv6 only with `all.forwarding` on: ADD of a container
/// with an IPv6 address turns it on in the host namespace, an IPv4-only one leaves it alone.
#[test]
#[ignore = "root: real etcd and netns"]
fn ipv6_container_turns_on_host_ipv6_forwarding_and_ipv4_only_does_not() {
    let bed = TestBed::new();
    let ipv6_subnet = bed.subnet.ipv6_cidr(213, 120);
    let ipam = |subnets: &[&str]| {
        let ranges: Vec<Value> = subnets.iter().map(|s| json!([{ "subnet": s }])).collect();
        json!({"type": "host-local", "ranges": ranges, "dataDir": bed.data_dir.path_str()})
    };
    let cases = [
        (bed.conf().set("ipam", ipam(&[&bed.subnet.cidr()])), "0"),
        (bed.conf().set("ipam", ipam(&[&ipv6_subnet])), "1"),
    ];
    set_host_ipv6_forwarding("0");
    for (conf, want) in cases {
        let container = bed.container(conf);
        container.add().result();
        assert_eq!(
            host_ipv6_forwarding(),
            want,
            "{}",
            container.conf.value()["ipam"]
        );
    }
}
