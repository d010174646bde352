//! `calico-ipam show`, `check`, `release` and `gc` run by hand against a real etcd: each
//! inconsistency is made on purpose and `check` must name it; `release` frees exactly what it
//! is asked to; `gc` tears down exactly the attachments whose netns is gone; `check` reads ten
//! thousand allocations in seconds.

mod ipam_support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::datastore::{Datastore, Txn, Write};
use common::ipam::{AllocationBlock, AllocationHandle};
use ipam_support::{IpamBed, check_datastore, result_addresses};
use serde_json::{Value, json};
use tests::kernel::{eventually, host_link};
use tests::{Netns, TestBed, host_veth_name, names};

const POOL: &str = "10.243.0.0/16";
/// Inside [`POOL`], never handed out first by a fresh node.
const UNALLOCATED: &str = "10.243.200.9";
/// How long `check` of ten thousand allocations may take: generous for a loaded 2-core machine.
const CHECK_BOUND: Duration = Duration::from_secs(20);

fn bed_with_pool() -> IpamBed {
    let bed = IpamBed::new();
    bed.add_pool(POOL);
    bed
}

/// Exit status and stdout of an admin run.
fn admin(bed: &IpamBed, args: &[&str]) -> (i32, String) {
    let out = bed.admin(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = out.status.code().unwrap_or(-1);
    assert!(
        status != 2,
        "{args:?} is a usage error: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (status, stdout)
}

/// Exit status and the one JSON object printed.
fn admin_json(bed: &IpamBed, args: &[&str]) -> (i32, Value) {
    let (status, stdout) = admin(bed, args);
    let value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON object ({e}): {stdout}"));
    (status, value)
}

/// calico-ipam ADD of `container`; its address without prefix length.
fn allocate(bed: &IpamBed, container: &str) -> String {
    let out = bed.add(&bed.conf(), container);
    let address = result_addresses(&out)[0].clone();
    address.split('/').next().unwrap_or_default().to_string()
}

/// Writes the endpoint calico would write for `container` on `node`, listing `addresses`.
fn put_endpoint(bed: &IpamBed, node: &str, container: &str, addresses: &[&str]) -> String {
    let key = format!("/calico/v1/host/{node}/workload/cni/{container}/endpoint/eth0");
    let nets: Vec<String> = addresses.iter().map(|a| format!("{a}/32")).collect();
    let value = json!({"state": "active", "name": host_veth_name(container),
        "active_instance_id": "", "mac": "", "profile_ids": [bed.network],
        "ipv4_nets": nets, "ipv6_nets": []});
    bed.etcd.put(&key, &value.to_string());
    key
}

/// The messages of the findings of `kind`.
fn messages(report: &Value, kind: &str) -> Vec<String> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["kind"] == kind)
        .map(|f| format!("{} {}", f["message"], f["objects"]))
        .collect()
}

#[test]
#[ignore = "needs etcd"]
fn check_names_every_inconsistency_made_on_purpose() {
    let bed = bed_with_pool();
    let kept = names::container_id();
    let kept_addr = allocate(&bed, &kept);
    put_endpoint(&bed, &bed.node, &kept, &[&kept_addr]);
    let (status, report) = admin_json(&bed, &["check", "--json"]);
    assert_eq!((status, &report["count"]), (0, &json!(0)), "{report}");

    // A leak: an allocation no endpoint lists.
    let leaked = names::container_id();
    let leaked_addr = allocate(&bed, &leaked);
    // An endpoint listing an address of the pool nobody allocated.
    let ghost = names::container_id();
    let ghost_key = put_endpoint(&bed, &bed.node, &ghost, &[UNALLOCATED]);
    // A handle counting more than its block holds for it.
    let handle_key = bed.handle_key(&kept);
    let mut handle = bed.etcd.get_json(&handle_key).expect("handle");
    for count in handle["block"]
        .as_object_mut()
        .expect("block counts")
        .values_mut()
    {
        *count = json!(5);
    }
    bed.etcd.put(&handle_key, &handle.to_string());
    // An allocation outside every pool.
    let mut outside = AllocationBlock::new_affine(
        "10.250.3.0/26".parse().unwrap(),
        &bed.node,
        false,
        "10.250.0.0/16".parse().unwrap(),
    );
    outside
        .assign("10.250.3.5".parse().unwrap(), "elsewhere.c1")
        .unwrap();
    bed.etcd.put(
        "/calico/ipam/v2/assignment/ipv4/block/10.250.3.0-26",
        &String::from_utf8(outside.to_json()).unwrap(),
    );
    // An affinity of a node that has no endpoint.
    let gone_node = names::unique("gone-node");
    let affinity = format!("/calico/ipam/v2/host/{gone_node}/ipv4/block/10.243.77.0-26");
    bed.etcd.put(&affinity, "{}");
    // An attachment record whose endpoint is gone.
    let orphan = names::container_id();
    let record_key = format!(
        "/calico/cni/v1/attachment/{}/{}/{orphan}/eth0",
        bed.node, bed.network
    );
    let missing_endpoint = format!(
        "/calico/v1/host/{}/workload/cni/{orphan}/endpoint/eth0",
        bed.node
    );
    let record = json!({"container_id": orphan, "ifname": "eth0", "netns": "/var/run/netns/gone",
        "host_veth": host_veth_name(&orphan), "endpoint": missing_endpoint});
    bed.etcd.put(&record_key, &record.to_string());

    let (status, report) = admin_json(&bed, &["check", "--json"]);
    assert_eq!(status, 1, "{report}");
    let leaked_handle = format!("{}.{leaked}", bed.network);
    let kept_handle = format!("{}.{kept}", bed.network);
    let expectations: [(&str, &[&str]); 6] = [
        ("leak", &[&leaked_addr, &leaked_handle]),
        ("not-allocated", &[UNALLOCATED, &ghost_key]),
        ("handle-count", &[&kept_handle, "counts 5"]),
        ("outside-pools", &["10.250.3.5"]),
        ("idle-affinity", &[&affinity, &gone_node]),
        ("record-without-endpoint", &[&record_key, &missing_endpoint]),
    ];
    for (kind, named) in expectations {
        let found = messages(&report, kind);
        assert!(
            found
                .iter()
                .any(|m| named.iter().all(|name| m.contains(name))),
            "no {kind} finding naming {named:?}: {report:#}"
        );
    }
    // The kept allocation is listed by its endpoint: no leak names it.
    assert!(
        !messages(&report, "leak")
            .iter()
            .any(|m| m.contains(&format!("{kept_addr} "))),
        "{report:#}"
    );
    let (status, table) = admin(&bed, &["check"]);
    assert_eq!(status, 1);
    assert!(
        table.contains("leak") && table.contains(&leaked_addr),
        "{table}"
    );
}

#[test]
#[ignore = "needs etcd"]
fn show_reports_pool_usage_node_blocks_and_who_holds_an_address() {
    let bed = bed_with_pool();
    let containers: Vec<String> = (0..3).map(|_| names::container_id()).collect();
    let addresses: Vec<String> = containers.iter().map(|c| allocate(&bed, c)).collect();
    let endpoint = put_endpoint(&bed, &bed.node, &containers[0], &[&addresses[0]]);

    let (status, shown) = admin_json(&bed, &["show", "--json"]);
    assert_eq!(status, 0);
    let pool = &shown["pools"][0];
    assert_eq!(
        (
            &pool["cidr"],
            &pool["allocated"],
            &pool["size"],
            &pool["free"],
            &pool["blocks"]
        ),
        (
            &json!(POOL),
            &json!(3),
            &json!(65536),
            &json!(65533),
            &json!(1)
        ),
        "{shown:#}"
    );
    assert_eq!(pool["disabled"], json!(false));
    let node = &shown["nodes"][0];
    assert_eq!(node["node"], json!(bed.node));
    assert_eq!(node["blocks"][0]["allocated"], json!(3), "{shown:#}");

    let (status, table) = admin(&bed, &["show"]);
    assert_eq!(status, 0);
    assert!(
        table.contains("POOL") && table.contains(POOL) && table.contains(&bed.node),
        "{table}"
    );

    let (status, owner) = admin_json(&bed, &["show", "--ip", &addresses[0], "--json"]);
    assert_eq!(status, 0);
    assert_eq!(owner["allocated"], json!(true));
    assert_eq!(
        owner["handle"],
        json!(format!("{}.{}", bed.network, containers[0]))
    );
    assert_eq!(owner["endpoints"], json!([endpoint]));
    let block = owner["block"].as_str().unwrap().to_string();
    assert!(block.ends_with("/26"), "{owner}");
    let (_, table) = admin(&bed, &["show", "--ip", &addresses[1]]);
    assert!(
        table.contains(&block) && table.contains(&containers[1]),
        "{table}"
    );
    let (_, free) = admin_json(&bed, &["show", "--ip", UNALLOCATED, "--json"]);
    assert_eq!(
        (&free["allocated"], &free["handle"]),
        (&json!(false), &Value::Null)
    );
}

#[test]
#[ignore = "needs etcd"]
fn release_frees_exactly_the_address_or_handle_named() {
    let bed = bed_with_pool();
    let two = names::container_id();
    let first = allocate(&bed, &two);
    let second = allocate(&bed, &two);
    let other = names::container_id();
    let other_addr = allocate(&bed, &other);

    let (status, out) = admin_json(&bed, &["release", "--ip", &first, "--json"]);
    assert_eq!(status, 0, "{out}");
    assert_eq!(out["handle"], json!(format!("{}.{two}", bed.network)));
    let held: Vec<(String, String)> = allocations(&bed);
    let handle = format!("{}.{two}", bed.network);
    let other_handle = format!("{}.{other}", bed.network);
    assert_eq!(
        held,
        [
            (second.clone(), handle.clone()),
            (other_addr.clone(), other_handle.clone())
        ]
    );
    let counts = bed
        .etcd
        .get_json(&bed.handle_key(&two))
        .expect("handle kept");
    assert_eq!(
        counts["block"]
            .as_object()
            .unwrap()
            .values()
            .collect::<Vec<_>>(),
        [&json!(1)]
    );
    // Freeing it again names the address and fails.
    let out = bed.admin(&["release", "--ip", &first]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&first),
        "{out:?}"
    );

    let (status, out) = admin_json(&bed, &["release", "--handle", &handle, "--json"]);
    assert_eq!((status, &out["released"]), (0, &json!(1)), "{out}");
    assert!(bed.etcd.get(&bed.handle_key(&two)).is_none());
    assert_eq!(allocations(&bed), [(other_addr, other_handle)]);
    check_datastore(&bed.etcd);

    let out = bed.admin(&["release", "--handle", &handle]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&handle),
        "{out:?}"
    );
    let out = bed.admin(&["release"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Every allocated address with its handle, in block order.
fn allocations(bed: &IpamBed) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for block in check_datastore(&bed.etcd) {
        let (net, _) = block.cidr.split_once('/').unwrap();
        let base: std::net::Ipv4Addr = net.parse().unwrap();
        for (ordinal, handle) in block.allocated {
            let addr = std::net::Ipv4Addr::from(u32::from(base) + ordinal as u32);
            found.push((addr.to_string(), handle));
        }
    }
    found
}

/// The admin command run against a [`TestBed`]'s etcd.
fn admin_on(bed: &TestBed, args: &[&str]) -> std::process::Output {
    tests::plugin::by_hand("calico-ipam")
        .env("ETCD_ENDPOINTS", bed.etcd.endpoint())
        .args(args)
        .output()
        .expect("run calico-ipam")
}

#[test]
#[ignore = "needs root and etcd"]
fn gc_tears_down_only_the_attachments_whose_netns_is_gone() {
    let bed = TestBed::new();
    let conf = bed.calico_ipam_conf();
    let (live_ns, mut gone_ns) = (Netns::new(), Netns::new());
    let (live, gone) = (names::container_id(), names::container_id());
    bed.add(&conf, &live, &live_ns.path(), "eth0").result();
    bed.add(&conf, &gone, &gone_ns.path(), "eth0").result();
    gone_ns.delete();
    let gc_args = [
        "gc",
        "--node",
        &bed.node,
        "--network",
        &bed.network,
        "--json",
    ];

    let mut dry = gc_args.to_vec();
    dry.push("--dry-run");
    let before = bed.etcd.get_prefix("/");
    let out = admin_on(&bed, &dry);
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["collected"][0]["container_id"],
        json!(gone),
        "{report}"
    );
    assert_eq!(report["collected"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(bed.etcd.get_prefix("/"), before, "a dry run changed etcd");

    let out = admin_on(&bed, &gc_args);
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["collected"][0]["released"], json!(1), "{report}");
    assert!(
        report["skipped"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(&live_ns.path()),
        "{report}"
    );
    let gone_veth = host_veth_name(&gone);
    let left: Vec<String> = bed
        .container_state_keys()
        .into_iter()
        .filter(|k| k.contains(&gone) || k.contains(&gone_veth))
        .collect();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "keys of the collected attachment left"
    );
    assert!(host_link(&gone_veth).is_none());
    assert!(
        bed.endpoint(&live, "eth0").is_some(),
        "live endpoint removed"
    );
    assert!(
        eventually(Duration::from_secs(1), || host_link(&host_veth_name(&live))
            .is_some()),
        "live veth removed"
    );
    let handle = format!("/calico/ipam/v2/handle/{}.{live}", bed.network);
    assert!(bed.etcd.get(&handle).is_some(), "live handle released");

    bed.del(&conf, &live, &live_ns.path(), "eth0")
        .assert_success();
    bed.assert_nothing_left(&[&live, &gone]);
}

/// Writes `count` allocations, one handle and one endpoint each, over 8 nodes, in transactions
/// of 100 writes; `leaks` of them get no endpoint.
fn write_allocations(bed: &IpamBed, count: usize, leaks: usize) {
    let settings = common::config::etcd_settings(
        &common::config::EtcdConfigKeys {
            etcd_endpoints: Some(bed.etcd.endpoints().join(",")),
            ..Default::default()
        },
        &|_| None,
    )
    .unwrap();
    let store = Datastore::connect(&settings).unwrap();
    let mut writes = Vec::new();
    for b in 0..count.div_ceil(64) {
        let node = format!("{}-{}", bed.node, b % 8);
        let cidr = format!("{}/26", pool_address(b * 64));
        let mut block =
            AllocationBlock::new_affine(cidr.parse().unwrap(), &node, false, POOL.parse().unwrap());
        for ordinal in 0..64.min(count - b * 64) {
            let i = b * 64 + ordinal;
            let addr = IpAddr::V4(pool_address(i));
            let handle_id = format!("{}.c{i}", bed.network);
            block.assign(addr, &handle_id).unwrap();
            let mut handle = AllocationHandle::new(&handle_id);
            handle.increment(block.cidr, 1);
            writes.push(Write::Put(
                format!("/calico/ipam/v2/handle/{handle_id}"),
                handle.to_json(),
            ));
            if i >= leaks {
                let endpoint = json!({"state": "active", "name": format!("cali{i}"),
                    "ipv4_nets": [format!("{addr}/32")], "ipv6_nets": [],
                    "labels": {"app": "load", "index": i.to_string()}});
                writes.push(Write::Put(
                    format!("/calico/v1/host/{node}/workload/cni/c{i}/endpoint/eth0"),
                    endpoint.to_string().into_bytes(),
                ));
            }
        }
        writes.push(Write::Put(
            format!(
                "/calico/ipam/v2/assignment/ipv4/block/{}",
                cidr.replace('/', "-")
            ),
            block.to_json(),
        ));
        writes.push(Write::Put(
            format!(
                "/calico/ipam/v2/host/{node}/ipv4/block/{}",
                cidr.replace('/', "-")
            ),
            b"{}".to_vec(),
        ));
    }
    for chunk in writes.chunks(100) {
        let txn = Txn {
            writes: chunk.to_vec(),
            ..Txn::default()
        };
        assert!(store.txn(&txn).unwrap().committed);
    }
}

/// The address `offset` places into [`POOL`].
fn pool_address(offset: usize) -> std::net::Ipv4Addr {
    let base: std::net::Ipv4Addr = POOL.split('/').next().unwrap().parse().unwrap();
    std::net::Ipv4Addr::from(u32::from(base) + offset as u32)
}

#[test]
#[ignore = "needs etcd"]
fn check_of_ten_thousand_allocations_finishes_in_seconds() {
    let bed = bed_with_pool();
    write_allocations(&bed, 10_000, 3);
    let started = Instant::now();
    let (status, report) = admin_json(&bed, &["check", "--json"]);
    let took = started.elapsed();
    eprintln!("check of 10000 allocations took {took:?}");
    assert_eq!(status, 1);
    assert_eq!(report["count"], json!(3), "{report:#}");
    assert_eq!(messages(&report, "leak").len(), 3);
    assert!(took < CHECK_BOUND, "check took {took:?}");
    let (_, shown) = admin_json(&bed, &["show", "--json"]);
    assert_eq!(shown["pools"][0]["allocated"], json!(10_000));
    assert_eq!(shown["nodes"].as_array().unwrap().len(), 8);
}
