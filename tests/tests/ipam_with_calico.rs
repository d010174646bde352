//! The `calico` plugin with `ipam.type: calico-ipam`, in its own process or executing
//! `calico-ipam`: a container gets an address of the pool, DEL gives it back, with the etcd
//! writes each path makes, and a burst of ADDs on one node without a lost compare-and-swap.

mod ipam_support;

use ipam_support::assert_no_allocations;
use tests::kernel::netns_ipv4_addrs;
use tests::plugin::ipam_exec_forced;
use tests::{CniPath, Container, Netns, TempDir, TestBed, names, run_plugin};

#[test]
#[ignore = "needs root and etcd"]
fn calico_with_calico_ipam_adds_and_deletes() {
    let bed = TestBed::new();
    let pool = bed.subnet.cidr();
    let container = bed.container(bed.calico_ipam_conf());
    let cid = &container.id;

    let result = container.add();
    let json = result.result();
    let address = json["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{json}"));
    let ip = address.trim_end_matches("/32");
    assert!(
        address.ends_with("/32") && bed.subnet.contains(ip),
        "{address} in {pool}"
    );
    let in_container: Vec<String> = netns_ipv4_addrs(container.netns.name(), "eth0")
        .into_iter()
        .map(|a| a.local)
        .collect();
    assert_eq!(in_container, [ip]);
    let handle = format!("/calico/ipam/v2/handle/{}.{cid}", bed.network);
    assert!(bed.etcd.get(&handle).is_some());
    let endpoint = bed.endpoint(cid, "eth0").expect("workload endpoint");
    assert_eq!(endpoint["ipv4_nets"], serde_json::json!([address]));

    drop(container);
    assert_eq!(bed.etcd.get(&handle), None);
    assert_no_allocations(&bed.etcd, "after the last DEL");
}

/// The write transactions (`txn` lines) in the etcd request log at `log`, which is removed.
fn write_transactions(log: &std::path::Path) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let _ = std::fs::remove_file(log);
    text.lines().filter(|l| l.starts_with("txn ")).count()
}

/// (ADD, DEL) write transactions with Calico IPAM in `calico`'s own process, and when it
/// executes `calico-ipam` (the record and claim, the assignment, the endpoint; the release,
/// then the deletes).
fn writes_per_add_and_del(in_process: bool) -> (usize, usize) {
    if in_process { (1, 1) } else { (3, 2) }
}

/// With `ipam.type: calico-ipam`, an ADD commits record, claim, addresses and endpoint in one
/// transaction; DEL releases and deletes in one. Forcing the
/// exec path (`CALICO_IPAM_EXEC=1`, or `ipam_in_process: false`) executes calico-ipam, with
/// its own transactions.
#[test]
#[ignore = "needs root and etcd"]
fn an_add_writes_etcd_once_and_a_del_once_with_calico_ipam_in_process() {
    let bed = TestBed::new();
    let log_dir = TempDir::new("request-log");
    let log = log_dir.join("requests");
    let base = bed.calico_ipam_conf();
    for (conf, in_process) in [
        (base.clone(), !ipam_exec_forced()),
        (base.clone().set("ipam_in_process", false), false),
    ] {
        let container = bed.container(conf);
        let run = |command: &str| {
            let env = container
                .env(command)
                .set("CALICO_ETCD_REQUEST_LOG", log.to_str().unwrap());
            run_plugin("calico", &env, &container.conf.to_bytes())
        };
        run("ADD").assert_success();
        let add_writes = write_transactions(&log);
        run("DEL").assert_success();
        let del_writes = write_transactions(&log);
        assert_eq!(
            (add_writes, del_writes),
            writes_per_add_and_del(in_process),
            "write transactions of ADD and DEL, in process: {in_process}"
        );
    }
    assert_no_allocations(&bed.etcd, "after the last DEL");
}

/// In its own process, `calico` needs no `calico-ipam` binary on `CNI_PATH`; forced to execute
/// it, it fails naming the missing plugin.
#[test]
#[ignore = "needs root and etcd"]
fn calico_ipam_in_process_works_without_the_calico_ipam_binary() {
    let bed = TestBed::with_cni_path(CniPath::without(&["calico-ipam"]));
    let conf = bed.calico_ipam_conf().set("cniVersion", "1.0.0");
    let netns = Netns::new();
    let cid = names::container_id();
    let added = bed.add(&conf, &cid, &netns.path(), "eth0");
    if ipam_exec_forced() {
        // The failed ADD took back what it wrote; a DEL could only fail the same way.
        let err = added.error();
        assert!(err.msg.contains("calico-ipam"), "{err:?}");
    } else {
        added.assert_success();
        let prev = added.result().clone();
        let check = run_plugin(
            "calico",
            &bed.env("CHECK", &cid, &netns.path(), "eth0"),
            &conf.clone().set("prevResult", prev).to_bytes(),
        );
        check.assert_success();
        bed.del(&conf, &cid, &netns.path(), "eth0").assert_success();
    }
    bed.assert_nothing_left(&[&cid]);
    assert_no_allocations(&bed.etcd, "after DEL");
}

/// 30 ADDs at once on one node take turns on the node's IPAM lock: 30 distinct addresses, and
/// not one transaction lost a compare-and-swap (every ADD made exactly its own writes). The
/// block copy beside the block hints serves the reads made before waiting for the lock.
#[test]
#[ignore = "needs root and etcd"]
fn thirty_concurrent_adds_on_one_node_get_distinct_addresses_without_a_conflict() {
    const ADDS: usize = 30;
    let bed = TestBed::new();
    let hints = TempDir::new("block-hints");
    let conf = bed
        .calico_ipam_conf()
        .set_ipam("block_hint_dir", hints.path_str());
    let log_dir = TempDir::new("request-log");
    let log = log_dir.join("requests");
    let containers: Vec<Container> = (0..ADDS).map(|_| bed.container(conf.clone())).collect();
    let verb = |command: &str| {
        std::thread::scope(|scope| {
            let runs: Vec<_> = containers
                .iter()
                .map(|container| {
                    let log = &log;
                    scope.spawn(move || {
                        let env = container
                            .env(command)
                            .set("CALICO_ETCD_REQUEST_LOG", log.to_str().unwrap());
                        run_plugin("calico", &env, &container.conf.to_bytes())
                    })
                })
                .collect();
            runs.into_iter()
                .map(|run| run.join().unwrap())
                .collect::<Vec<_>>()
        })
    };
    let added = verb("ADD");
    let mut addresses: Vec<String> = added
        .iter()
        .map(|out| {
            out.assert_success();
            out.result()["ips"][0]["address"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), ADDS, "distinct addresses: {addresses:?}");
    let (add_writes, _) = writes_per_add_and_del(!ipam_exec_forced());
    assert_eq!(
        write_transactions(&log),
        ADDS * add_writes,
        "write transactions of {ADDS} ADDs: any more is a lost compare-and-swap"
    );
    for out in verb("DEL") {
        out.assert_success();
    }
    drop(containers);
    assert_no_allocations(&bed.etcd, "after the DELs");
}
