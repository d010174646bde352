//! DEL: removes everything ADD made and succeeds whatever is already gone.

use tests::kernel::{eventually, host_link, host_routes_to, netns_ipv4_addrs, netns_link};
use tests::{Netns, TestBed, host_veth_name, names};

const TEARDOWN: std::time::Duration = std::time::Duration::from_secs(5);

fn added_ip(netns: &Netns) -> String {
    let addrs = netns_ipv4_addrs(netns.name(), "eth0");
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    addrs[0].local.clone()
}

#[test]
#[ignore = "root: real etcd and netns"]
fn del_removes_veth_route_endpoint_and_reservation() {
    let bed = TestBed::new();
    let container = bed.container(bed.conf());
    let cid = &container.id;
    container.add().result();
    let ip = added_ip(&container.netns);
    let veth = host_veth_name(cid);
    assert!(host_link(&veth).is_some(), "ADD made no host veth");
    assert_eq!(host_routes_to(&ip).len(), 1, "ADD made no host route");
    assert!(bed.endpoint(cid, "eth0").is_some(), "ADD wrote no endpoint");
    assert_eq!(
        bed.reservations(&bed.network).len(),
        1,
        "ADD reserved no address"
    );

    container.del().assert_success();

    assert!(
        netns_link(container.netns.name(), "eth0").is_none(),
        "container veth left"
    );
    assert!(
        eventually(TEARDOWN, || host_link(&veth).is_none()),
        "host veth {veth} left"
    );
    assert!(
        eventually(TEARDOWN, || host_routes_to(&ip).is_empty()),
        "host route to {ip} left"
    );
    assert!(bed.endpoint(cid, "eth0").is_none(), "endpoint left");
    assert_eq!(bed.reservations(&bed.network), vec![], "reservation left");
}

/// The container's drop runs the second DEL.
#[test]
#[ignore = "root: real etcd and netns"]
fn del_twice_succeeds() {
    let bed = TestBed::new();
    let container = bed.container(bed.conf());
    container.add().result();
    container.del().assert_success();
}

/// The container's drop runs the DEL.
#[test]
#[ignore = "root: real etcd and netns"]
fn del_of_never_added_container_succeeds() {
    let bed = TestBed::new();
    let _container = bed.container(bed.conf());
}

/// Calico v1 failure history, row 13: DEL failed when the endpoint, the IPAM allocation or the
/// netns no longer existed, and the kubelet retried it forever.
#[test]
#[ignore = "root: real etcd and netns"]
fn del_succeeds_when_endpoint_allocation_and_netns_are_gone() {
    let bed = TestBed::new();
    let cid = names::container_id();
    let path = format!("/run/netns/{}", names::unique("ct-absent"));

    bed.del(&bed.conf(), &cid, &path, "eth0").assert_success();
    assert!(!std::path::Path::new(&path).exists(), "DEL created {path}");
    bed.assert_nothing_left(&[&cid]);
}

/// The container's drop runs the DEL, with the path of the deleted netns.
#[test]
#[ignore = "root: real etcd and netns"]
fn del_succeeds_when_netns_is_gone() {
    let bed = TestBed::new();
    let mut container = bed.container(bed.conf());
    container.add().result();
    container.netns.delete();
}

#[test]
#[ignore = "root: real etcd and netns"]
fn del_succeeds_with_empty_cni_netns_and_removes_everything() {
    let bed = TestBed::new();
    let container = bed.container(bed.conf());
    let cid = &container.id;
    container.add().result();

    bed.del(&container.conf, cid, "", "eth0").assert_success();
    assert!(bed.endpoint(cid, "eth0").is_none(), "endpoint left");
    assert_eq!(bed.reservations(&bed.network), vec![], "reservation left");
    assert_eq!(bed.node_keys(), Vec::<String>::new());
    // The host end is reachable without the netns; removing it removes the pair.
    bed.assert_nothing_left(&[cid]);
}

#[test]
#[ignore = "root: real etcd and netns"]
fn del_succeeds_without_cni_netns_variable() {
    let bed = TestBed::new();
    let container = bed.container(bed.conf());
    let cid = &container.id;
    container.add().result();

    let env = container.env("DEL").remove("CNI_NETNS");
    tests::run_plugin("calico", &env, &container.conf.to_bytes()).assert_success();
    assert!(bed.endpoint(cid, "eth0").is_none(), "endpoint left");
    assert_eq!(bed.reservations(&bed.network), vec![], "reservation left");
    bed.assert_nothing_left(&[cid]);
}
