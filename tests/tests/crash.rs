//! Crash safety: a `calico` ADD killed with SIGKILL at any step leaves state that a later DEL of
//! the same attachment, or a GC that does not list it, removes completely.
//!
//! Needs the binaries built with `--features calico/crash-points` (`make test` does that): the
//! feature lets `CALICO_CRASH_AT` name the step at which the plugin kills itself.

use std::os::unix::process::ExitStatusExt;

use serde_json::{Value, json};
use tests::{NetConf, Netns, PluginOutput, TestBed, names, run_plugin};

/// Every crash point of ADD, in the order ADD reaches them.
const CRASH_POINTS: [&str; 6] = [
    "after-record",
    "after-ipam",
    "after-veth",
    "after-routes",
    "after-endpoint",
    "after-result",
];

/// Which IPAM plugin the attachment uses.
#[derive(Clone, Copy, Debug)]
enum Ipam {
    HostLocal,
    CalicoIpam,
}

/// How the leftovers are collected.
#[derive(Clone, Copy, Debug)]
enum Cleanup {
    Del,
    Gc,
}

fn conf_for(bed: &TestBed, ipam: Ipam) -> NetConf {
    match ipam {
        Ipam::HostLocal => bed.conf(),
        Ipam::CalicoIpam => {
            let pool = bed.subnet.cidr();
            let pool_key = format!("/calico/v1/ipam/v4/pool/{}", pool.replace('/', "-"));
            let pool_json = json!({"cidr": pool, "ipip": "", "ipip_mode": "", "masquerade": false, "ipam": true, "disabled": false});
            bed.etcd.put(&pool_key, &pool_json.to_string());
            bed.fixture("calico-ipam.conf", &bed.network)
        }
    }
}

fn add_killed_at(
    bed: &TestBed,
    conf: &NetConf,
    cid: &str,
    netns: &Netns,
    step: &str,
) -> PluginOutput {
    let env = bed
        .env("ADD", cid, &netns.path(), "eth0")
        .set("CALICO_CRASH_AT", step);
    let out = run_plugin("calico", &env, &conf.to_bytes());
    assert_eq!(
        out.status.signal(),
        Some(9),
        "ADD was not killed at {step}: build the plugins with --features calico/crash-points\n{out}"
    );
    out
}

fn collect(bed: &TestBed, conf: &NetConf, cid: &str, netns: &Netns, cleanup: Cleanup) {
    match cleanup {
        Cleanup::Del => bed.del(conf, cid, &netns.path(), "eth0").assert_success(),
        Cleanup::Gc => {
            let keep = names::container_id();
            let gc_conf = conf.clone().set("cniVersion", "1.1.0").set(
                "cni.dev/valid-attachments",
                json!([{"containerID": keep, "ifname": "eth0"}]),
            );
            let env = tests::Env::new()
                .set("CNI_COMMAND", "GC")
                .set("CNI_PATH", &bed.cni_path.path());
            let out = run_plugin("calico", &env, &gc_conf.to_bytes());
            out.assert_success();
        }
    }
}

/// No block holds an allocation any more.
fn assert_no_allocations(bed: &TestBed) {
    for (key, value) in bed.etcd.get_prefix("/calico/ipam/v2/assignment/") {
        let block: Value = serde_json::from_str(&value).expect("block JSON");
        let held: Vec<&Value> = block["allocations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| !a.is_null())
            .collect();
        assert!(held.is_empty(), "block {key} still holds {held:?}");
    }
}

fn crash_then_collect(ipam: Ipam, cleanup: Cleanup) {
    for step in CRASH_POINTS {
        let bed = TestBed::new();
        let netns = Netns::new();
        let cid = names::container_id();
        let conf = conf_for(&bed, ipam);
        add_killed_at(&bed, &conf, &cid, &netns, step);
        collect(&bed, &conf, &cid, &netns, cleanup);
        bed.assert_nothing_left(&[&cid]);
        assert_no_allocations(&bed);
        assert!(
            tests::kernel::netns_link(netns.name(), "eth0").is_none(),
            "container interface left after a crash at {step}"
        );
    }
}

#[test]
#[ignore = "root: real etcd and netns"]
fn del_after_a_crash_anywhere_in_add_removes_everything_with_host_local() {
    crash_then_collect(Ipam::HostLocal, Cleanup::Del);
}

#[test]
#[ignore = "root: real etcd and netns"]
fn del_after_a_crash_anywhere_in_add_removes_everything_with_calico_ipam() {
    crash_then_collect(Ipam::CalicoIpam, Cleanup::Del);
}

#[test]
#[ignore = "root: real etcd and netns"]
fn gc_after_a_crash_anywhere_in_add_removes_everything_with_calico_ipam() {
    crash_then_collect(Ipam::CalicoIpam, Cleanup::Gc);
}
