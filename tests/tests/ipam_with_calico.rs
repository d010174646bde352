//! The `calico` plugin delegating to `calico-ipam`: a container gets an address of the pool,
//! and DEL gives it back.

mod ipam_support;

use ipam_support::assert_no_allocations;
use tests::kernel::netns_ipv4_addrs;
use tests::{Netns, TestBed, names};

#[test]
#[ignore = "needs root and etcd"]
fn calico_with_calico_ipam_adds_and_deletes() {
    let bed = TestBed::new();
    let pool = bed.subnet.cidr();
    let conf = bed.calico_ipam_conf();
    let netns = Netns::new();
    let cid = names::container_id();

    let result = bed.add(&conf, &cid, &netns.path(), "eth0");
    let json = result.result();
    let address = json["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{json}"));
    let ip = address.trim_end_matches("/32");
    assert!(
        address.ends_with("/32") && bed.subnet.contains(ip),
        "{address} in {pool}"
    );
    let in_container: Vec<String> = netns_ipv4_addrs(netns.name(), "eth0")
        .into_iter()
        .map(|a| a.local)
        .collect();
    assert_eq!(in_container, [ip]);
    let handle = format!("/calico/ipam/v2/handle/{}.{cid}", bed.network);
    assert!(bed.etcd.get(&handle).is_some());
    let endpoint = bed.endpoint(&cid, "eth0").expect("workload endpoint");
    assert_eq!(endpoint["ipv4_nets"], serde_json::json!([address]));

    bed.del(&conf, &cid, &netns.path(), "eth0").assert_success();
    bed.assert_nothing_left(&[&cid]);
    assert_eq!(bed.etcd.get(&handle), None);
    assert_no_allocations(&bed.etcd, "after the last DEL");
}
