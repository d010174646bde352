//! `calico-ipam` CHECK, STATUS and GC run as a process against a real etcd: CHECK compares the
//! handle with `prevResult`, STATUS reports an unreachable etcd (50) or no room (51), GC
//! releases exactly the unlisted handles of its network on its node.

mod ipam_support;

use ipam_support::{IpamBed, check_datastore, requests_of, result_addresses};
use serde_json::{Value, json};
use tests::{NetConf, TempDir, names, run_plugin};

const POOL4: &str = "10.241.0.0/16";
/// The smallest pool the admin command accepts: one block of 64 addresses.
const ONE_BLOCK_POOL: &str = "10.242.7.0/26";

const CHECK_FAILED: u64 = 106;
const NOT_AVAILABLE: u64 = 50;
const NO_ROOM: u64 = 51;

fn bed_with_pool(cidr: &str) -> IpamBed {
    let bed = IpamBed::new();
    bed.add_pool(cidr);
    bed
}

/// The bed's config at cniVersion 1.1.0, which STATUS and GC need.
fn conf_1_1(bed: &IpamBed) -> NetConf {
    bed.conf().set("cniVersion", "1.1.0")
}

fn attachments(container_ids: &[(&str, &str)]) -> Value {
    container_ids
        .iter()
        .map(|(cid, ifname)| json!({"containerID": cid, "ifname": ifname}))
        .collect()
}

/// The handle ids under the IPAM handle prefix.
fn handle_ids(bed: &IpamBed) -> Vec<String> {
    bed.etcd
        .keys("/calico/ipam/v2/handle/")
        .iter()
        .map(|k| k.trim_start_matches("/calico/ipam/v2/handle/").to_string())
        .collect()
}

fn allocated_count(bed: &IpamBed) -> usize {
    check_datastore(&bed.etcd)
        .iter()
        .map(|b| b.allocated.len())
        .sum()
}

#[test]
#[ignore = "needs etcd"]
fn check_after_add_succeeds_in_one_request() {
    let bed = bed_with_pool(POOL4);
    let log_dir = TempDir::new("request-log");
    let log = log_dir.join("requests");
    for version in ["0.4.0", "1.0.0", "1.1.0"] {
        let conf = bed.conf().set("cniVersion", version);
        let cid = names::container_id();
        let added = bed.add(&conf, &cid);
        let prev = added.result().clone();
        let env = bed
            .env("CHECK", &cid)
            .set("CALICO_ETCD_REQUEST_LOG", log.to_str().unwrap());
        bed.run(&conf.clone().set("prevResult", prev), &env)
            .assert_success();
        assert_eq!(requests_of(&log).len(), 1, "cniVersion {version}");
    }
}

#[test]
#[ignore = "needs etcd"]
fn check_after_del_fails_naming_the_handle() {
    let bed = bed_with_pool(POOL4);
    let conf = bed.conf().set("cniVersion", "1.0.0");
    let cid = names::container_id();
    let prev = bed.add(&conf, &cid).result().clone();
    bed.del(&conf, &cid).assert_success();
    let err = bed.check(&conf, &cid, &prev).error_with_code(CHECK_FAILED);
    let handle = format!("{}.{cid}", bed.network);
    assert!(
        err.msg.contains(&format!("handle {handle} does not exist")),
        "{err:?}"
    );
}

#[test]
#[ignore = "needs etcd"]
fn check_with_another_address_names_both_addresses() {
    let bed = bed_with_pool(POOL4);
    let conf = bed.conf().set("cniVersion", "1.0.0");
    let cid = names::container_id();
    let added = bed.add(&conf, &cid);
    let held = result_addresses(&added)[0]
        .trim_end_matches("/32")
        .to_string();
    let mut prev = added.result().clone();
    prev["ips"][0]["address"] = json!("10.241.255.254/32");
    let err = bed.check(&conf, &cid, &prev).error_with_code(CHECK_FAILED);
    let all = err.details.clone().unwrap_or_default();
    assert!(err.msg.contains("10.241.255.254 is not held"), "{err:?}");
    assert!(all.contains("10.241.255.254 is not held"), "{err:?}");
    assert!(
        all.contains(&format!(
            "holds address {held}, which prevResult does not list"
        )),
        "{err:?}"
    );
}

#[test]
#[ignore = "needs etcd"]
fn check_needs_prev_result_and_cni_version_0_4_0() {
    let bed = bed_with_pool(POOL4);
    let cid = names::container_id();
    let conf = bed.conf().set("cniVersion", "1.0.0");
    let prev = bed.add(&conf, &cid).result().clone();
    let err = bed.check(&conf, &cid, &Value::Null).error_with_code(7);
    assert!(err.msg.contains("prevResult"), "{err:?}");
    let old = bed.conf().set("cniVersion", "0.3.1");
    bed.check(&old, &cid, &prev).error_with_code(1);
}

#[test]
#[ignore = "needs etcd"]
fn status_with_room_succeeds_in_three_requests() {
    let bed = bed_with_pool(POOL4);
    bed.add(&bed.conf(), &names::container_id()).result();
    let log_dir = TempDir::new("request-log");
    let log = log_dir.join("requests");
    let env = bed
        .env_without_attachment("STATUS")
        .set("CALICO_ETCD_REQUEST_LOG", log.to_str().unwrap());
    bed.run(&conf_1_1(&bed), &env).assert_success();
    let requests = requests_of(&log);
    assert_eq!(requests.len(), 3, "{requests:?}");
}

#[test]
#[ignore = "needs etcd"]
fn status_with_etcd_stopped_is_code_50_naming_the_endpoint() {
    let bed = bed_with_pool(POOL4);
    let conf = conf_1_1(&bed);
    let endpoint = bed.etcd.endpoint().to_string();
    let env = bed.env_without_attachment("STATUS");
    let IpamBed {
        etcd,
        cni_path: _cni_path,
        ..
    } = bed;
    drop(etcd);
    let out = run_plugin("calico-ipam", &env, &conf.to_bytes());
    let err = out.error_with_code(NOT_AVAILABLE);
    assert!(err.msg.contains("etcd could not be reached"), "{err:?}");
    assert!(err.msg.contains(&endpoint), "{err:?}");
}

#[test]
#[ignore = "needs etcd"]
fn status_with_the_only_pool_full_is_code_51_until_an_address_is_freed() {
    let bed = bed_with_pool(ONE_BLOCK_POOL);
    let conf = bed.conf();
    let containers: Vec<String> = (0..64).map(|_| names::container_id()).collect();
    for cid in &containers {
        bed.add(&conf, cid).result();
    }
    bed.add(&conf, &names::container_id()).error();
    let err = bed.status(&conf_1_1(&bed)).error_with_code(NO_ROOM);
    assert!(
        err.msg.contains(ONE_BLOCK_POOL) && err.msg.contains("full"),
        "{err:?}"
    );
    bed.del(&conf, &containers[17]).assert_success();
    bed.status(&conf_1_1(&bed)).assert_success();
}

#[test]
#[ignore = "needs etcd"]
fn status_without_usable_pools_is_code_51() {
    let cases: [(&str, Option<&str>, Value, &str); 4] = [
        ("no pools", None, Value::Null, "no enabled ipv4 pools"),
        (
            "only pool disabled",
            Some(POOL4),
            Value::Null,
            "no enabled ipv4 pools",
        ),
        (
            "requested pool missing",
            Some("10.243.0.0/16"),
            json!([POOL4]),
            "does not exist",
        ),
        (
            "no ipv6 pool",
            Some("10.243.0.0/16"),
            Value::Null,
            "no enabled ipv6 pools",
        ),
    ];
    for (name, pool, requested, want) in cases {
        let bed = IpamBed::new();
        if let Some(pool) = pool {
            bed.add_pool(pool);
        }
        if name == "only pool disabled" {
            let key = "/calico/v1/ipam/v4/pool/10.241.0.0-16";
            let mut value = bed.etcd.get_json(key).expect("pool");
            value["disabled"] = json!(true);
            value["ipam"] = json!(false);
            bed.etcd.put(key, &value.to_string());
        }
        let mut conf = conf_1_1(&bed);
        if !requested.is_null() {
            conf = conf.set_ipam("ipv4_pools", requested);
        }
        if name == "no ipv6 pool" {
            conf = conf.set_ipam("assign_ipv6", "true");
        }
        let err = bed.status(&conf).error_with_code(NO_ROOM);
        assert!(err.msg.contains(want), "{name}: {err:?}");
    }
}

#[test]
#[ignore = "needs etcd"]
fn add_records_node_and_network_in_the_handle() {
    let bed = bed_with_pool(POOL4);
    let cid = names::container_id();
    bed.add(&bed.conf(), &cid).result();
    let handle = bed.etcd.get_json(&bed.handle_key(&cid)).expect("handle");
    assert_eq!(handle["id"], format!("{}.{cid}", bed.network));
    assert_eq!(handle["node"], bed.node.as_str());
    assert_eq!(handle["network"], bed.network.as_str());
}

#[test]
#[ignore = "needs etcd"]
fn gc_releases_only_unlisted_handles_of_its_network_on_its_node() {
    let bed = bed_with_pool(POOL4);
    let conf = bed.conf();
    let network = bed.network.clone();
    let dotted = format!("{network}.1");
    let [keep, keep_other_ifname, stale, remote, old] =
        std::array::from_fn(|_| names::container_id());
    for cid in [&keep, &keep_other_ifname, &stale, &old] {
        bed.add(&conf, cid).result();
    }
    bed.add(&conf, &stale).result();
    bed.add(&bed.conf_on("other-node"), &remote).result();
    // Network `<network>.1`'s container `abc` has the handle id `<network>.1.abc`, which
    // looks like a handle of `<network>`'s container `1.abc`.
    bed.add(&conf.clone().set("name", dotted.as_str()), "abc")
        .result();
    // A handle as libcalico-go writes it: no node, no network.
    let old_key = bed.handle_key(&old);
    let mut go_handle = bed.etcd.get_json(&old_key).expect("handle");
    go_handle = json!({"block": go_handle["block"]});
    bed.etcd.put(&old_key, &go_handle.to_string());
    let before = allocated_count(&bed);

    let log_dir = TempDir::new("request-log");
    let log = log_dir.join("requests");
    let valid = attachments(&[(&keep, "eth0"), (&keep_other_ifname, "net1")]);
    let gc_conf = conf_1_1(&bed).set("cni.dev/valid-attachments", valid);
    let env = bed
        .env_without_attachment("GC")
        .set("CALICO_ETCD_REQUEST_LOG", log.to_str().unwrap());
    bed.run(&gc_conf, &env).assert_success();

    let mut want = vec![
        format!("{dotted}.abc"),
        format!("{network}.{keep}"),
        format!("{network}.{keep_other_ifname}"),
        format!("{network}.{old}"),
        format!("{network}.{remote}"),
    ];
    want.sort();
    assert_eq!(handle_ids(&bed), want);
    assert_eq!(
        allocated_count(&bed),
        before - 2,
        "both addresses of the stale handle"
    );
    assert_eq!(
        requests_of(&log).len(),
        3,
        "one listing, one block read, one transaction"
    );
}

#[test]
#[ignore = "needs etcd"]
fn gc_honours_the_older_attachments_key() {
    let bed = bed_with_pool(POOL4);
    let [keep, stale] = std::array::from_fn(|_| names::container_id());
    for cid in [&keep, &stale] {
        bed.add(&bed.conf(), cid).result();
    }
    let gc_conf = conf_1_1(&bed).set("cni.dev/attachments", attachments(&[(&keep, "eth0")]));
    bed.gc(&gc_conf).assert_success();
    assert_eq!(handle_ids(&bed), [format!("{}.{keep}", bed.network)]);
    assert_eq!(allocated_count(&bed), 1);
}

#[test]
#[ignore = "needs etcd"]
fn gc_without_a_list_releases_every_handle_of_its_network_on_its_node() {
    let bed = bed_with_pool(POOL4);
    let [a, b, remote] = std::array::from_fn(|_| names::container_id());
    for cid in [&a, &b] {
        bed.add(&bed.conf(), cid).result();
    }
    bed.add(&bed.conf_on("other-node"), &remote).result();
    bed.gc(&conf_1_1(&bed)).assert_success();
    assert_eq!(handle_ids(&bed), [format!("{}.{remote}", bed.network)]);
    assert_eq!(allocated_count(&bed), 1);
    bed.gc(&conf_1_1(&bed)).assert_success();
}
