//! Whatever order of verbs a runtime sends (retries, ADD racing DEL, DEL with another
//! container's netns, two interface names), an attachment ends fully attached or fully gone, no
//! address is held by two containers, and nothing the plugin did not make is removed.

mod ipam_support;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cni::lock::AttachmentLock;
use ipam_support::{assert_no_allocations, check_datastore};
use tests::kernel::{host_link, netns_ipv4_addrs, netns_link};
use tests::{NetConf, Netns, TempDir, TestBed, host_veth_name, names, run_plugin};

/// A bed whose network delegates to `calico-ipam`, with the bed's subnet as the pool.
fn ipam_bed() -> (TestBed, NetConf) {
    let bed = TestBed::new();
    let conf = bed.calico_ipam_conf();
    (bed, conf)
}

/// GC of `plugin` with an empty `cni.dev/valid-attachments`: no attachment of the network is
/// valid any more.
fn gc_keeping_nothing(plugin: &str, bed: &TestBed, conf: &NetConf) -> tests::PluginOutput {
    let env = tests::Env::new()
        .set("CNI_COMMAND", "GC")
        .set("CNI_PATH", &bed.cni_path.path());
    let body = conf
        .clone()
        .set("cni.dev/valid-attachments", serde_json::json!([]));
    run_plugin(plugin, &env, &body.to_bytes())
}

/// The container's IPv4 address on `ifname`, if it has exactly one.
fn address_in(netns: &Netns, ifname: &str) -> Option<String> {
    let addrs = netns_ipv4_addrs(netns.name(), ifname);
    (addrs.len() == 1).then(|| addrs[0].local.clone())
}

/// The handle id holding `ip` in the pool's blocks, if any.
fn holder_of(bed: &TestBed, ip: &str) -> Option<String> {
    let ip: Ipv4Addr = ip.parse().ok()?;
    check_datastore(&bed.etcd).into_iter().find_map(|block| {
        let base: Ipv4Addr = block.cidr.split_once('/')?.0.parse().ok()?;
        let ordinal = u32::from(ip).checked_sub(u32::from(base))?;
        block
            .allocated
            .get(&usize::try_from(ordinal).ok()?)
            .cloned()
    })
}

/// Asserts the container is completely attached on eth0: its interface is the peer of its host
/// veth, and endpoint, record and allocation agree on one address.
fn assert_fully_attached(bed: &TestBed, cid: &str, netns: &Netns) {
    let ip = address_in(netns, "eth0")
        .unwrap_or_else(|| panic!("{cid}: no single address on eth0 in {}", netns.name()));
    let veth = host_veth_name(cid);
    assert!(
        host_link(&veth).is_some(),
        "{cid}: host veth {veth} missing"
    );
    let endpoint = bed
        .endpoint(cid, "eth0")
        .unwrap_or_else(|| panic!("{cid}: endpoint missing"));
    assert_eq!(
        endpoint["ipv4_nets"],
        serde_json::json!([format!("{ip}/32")])
    );
    assert_eq!(endpoint["name"], veth);
    let records = bed.etcd.keys("/calico/cni/v1/attachment/");
    assert!(
        records.iter().any(|k| k.ends_with(&format!("/{cid}/eth0"))),
        "{cid}: no attachment record in {records:?}"
    );
    assert_eq!(
        holder_of(bed, &ip).as_deref(),
        Some(format!("{}.{cid}", bed.network).as_str()),
        "{cid}: {ip} not allocated to its handle"
    );
}

#[test]
#[ignore = "root: real etcd and netns"]
fn del_of_a_second_ifname_on_the_same_network_does_not_free_the_first_ones_address() {
    let (bed, conf) = ipam_bed();
    let container = bed.container(conf.clone());
    let (cid, netns) = (&container.id, &container.netns);
    container.add().result();
    let ip = address_in(netns, "eth0").expect("eth0 address");
    bed.add(&conf, cid, &netns.path(), "eth1").result();

    bed.del(&conf, cid, &netns.path(), "eth1").assert_success();

    assert_eq!(address_in(netns, "eth0").as_deref(), Some(ip.as_str()));
    assert!(
        bed.endpoint(cid, "eth0").is_some(),
        "eth0's endpoint deleted"
    );
    assert_eq!(
        holder_of(&bed, &ip),
        Some(format!("{}.{cid}", bed.network)),
        "eth0's address was released by DEL of eth1"
    );
    // Another node asking for the address explicitly is refused: it is still in use.
    let other = conf
        .clone()
        .set("nodename", names::unique("other-node"))
        .to_bytes();
    let env = bed
        .env("ADD", &names::container_id(), &netns.path(), "eth0")
        .set("CNI_ARGS", &format!("IP={ip}"));
    let taken = run_plugin("calico-ipam", &env, &other);
    assert!(!taken.status.success(), "{ip} handed out twice\n{taken}");

    drop(container);
    assert_eq!(holder_of(&bed, &ip), None);
}

#[test]
#[ignore = "root: real etcd"]
fn calico_ipam_gives_each_interface_of_a_container_its_own_handle() {
    let (bed, conf) = ipam_bed();
    let cid = names::container_id();
    let ipam = |command: &str, ifname: &str| {
        let env = bed.env(command, &cid, "/var/run/netns/unused", ifname);
        run_plugin("calico-ipam", &env, &conf.to_bytes())
    };
    let first = ipam("ADD", "eth0").result()["ips"][0]["address"].clone();
    let second = ipam("ADD", "net1").result()["ips"][0]["address"].clone();
    assert_ne!(first, second);
    let handles = bed.etcd.keys("/calico/ipam/v2/handle/");
    assert_eq!(
        handles,
        [
            format!("/calico/ipam/v2/handle/{}.{cid}", bed.network),
            format!("/calico/ipam/v2/handle/{}.{cid}:net1", bed.network),
        ]
    );

    ipam("DEL", "net1").assert_success();
    let ip = first.as_str().unwrap().trim_end_matches("/32");
    assert_eq!(holder_of(&bed, ip), Some(format!("{}.{cid}", bed.network)));
    ipam("DEL", "eth0").assert_success();
    assert!(bed.etcd.keys("/calico/ipam/v2/handle/").is_empty());
}

#[test]
#[ignore = "root: real etcd and netns"]
fn del_of_a_never_added_container_leaves_a_foreign_link_called_cni_ifname() {
    let bed = TestBed::new();
    let container = bed.container(bed.conf());
    let netns = &container.netns;
    ip_in(
        netns,
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ],
    );

    container.del().assert_success();

    assert!(
        netns_link(netns.name(), "eth0").is_some(),
        "foreign eth0 deleted"
    );
    assert!(
        netns_link(netns.name(), "peer0").is_some(),
        "foreign veth peer deleted"
    );
}

#[test]
#[ignore = "root: real etcd and netns"]
fn del_given_another_containers_netns_leaves_that_container_alone() {
    let bed = TestBed::new();
    let (a, b) = (bed.container(bed.conf()), bed.container(bed.conf()));
    a.add().result();
    b.add().result();
    let b_ip = address_in(&b.netns, "eth0").expect("b's address");

    bed.del(&a.conf, &a.id, &b.netns.path(), "eth0")
        .assert_success();

    assert_eq!(address_in(&b.netns, "eth0"), Some(b_ip), "b's eth0 removed");
    assert!(
        host_link(&host_veth_name(&b.id)).is_some(),
        "b's host veth removed"
    );
    assert!(
        bed.endpoint(&b.id, "eth0").is_some(),
        "b's endpoint removed"
    );
    assert!(
        netns_link(a.netns.name(), "eth0").is_none(),
        "a's eth0 left"
    );
    assert!(
        host_link(&host_veth_name(&a.id)).is_none(),
        "a's host veth left"
    );
    assert!(bed.endpoint(&a.id, "eth0").is_none(), "a's endpoint left");
}

#[test]
#[ignore = "root: real etcd and netns"]
fn the_same_container_added_twice_at_once_keeps_the_winners_attachment() {
    let (bed, conf) = ipam_bed();
    for _ in 0..6 {
        let container = bed.container(conf.clone());
        let (first, second) = std::thread::scope(|s| {
            let one = s.spawn(|| container.add());
            let two = s.spawn(|| container.add());
            (one.join().unwrap(), two.join().unwrap())
        });
        assert!(
            first.status.success() || second.status.success(),
            "neither ADD succeeded\n{first}\n{second}"
        );
        assert_fully_attached(&bed, &container.id, &container.netns);
        // The second ADD saw the first's complete attachment: it answered with it.
        if first.status.success() && second.status.success() {
            assert_eq!(first.result()["ips"], second.result()["ips"]);
        }
    }
    assert_no_allocations(&bed.etcd, "after the last DEL");
}

#[test]
#[ignore = "root: real etcd and netns"]
fn del_racing_add_ends_fully_attached_or_fully_gone() {
    let (bed, conf) = ipam_bed();
    for round in 0..6 {
        let container = bed.container(conf.clone());
        let (cid, netns) = (&container.id, &container.netns);
        let (add, del) = std::thread::scope(|s| {
            let add = s.spawn(|| container.add());
            // Alternate which verb the kernel is likely to start first.
            std::thread::sleep(Duration::from_millis(if round % 2 == 0 { 0 } else { 15 }));
            let del = s.spawn(|| container.del());
            (add.join().unwrap(), del.join().unwrap())
        });
        del.assert_success();
        if bed.endpoint(cid, "eth0").is_some() {
            assert!(add.status.success(), "endpoint of a failed ADD\n{add}");
            assert_fully_attached(&bed, cid, netns);
        } else {
            assert!(
                netns_link(netns.name(), "eth0").is_none(),
                "eth0 without endpoint"
            );
            bed.assert_nothing_left(&[cid]);
        }
        drop(container);
        assert_no_allocations(&bed.etcd, "an address outlived its container");
    }
}

#[test]
#[ignore = "root: real etcd"]
fn an_ipam_type_naming_the_plugin_itself_is_refused_instead_of_forking_without_bound() {
    let bed = TestBed::new();
    let netns = Netns::new();
    let cid = names::container_id();
    let conf = bed.conf().set_ipam("type", "calico");
    let started = Instant::now();

    let err = bed
        .add(&conf, &cid, &netns.path(), "eth0")
        .error_with_code(7);

    assert!(err.msg.contains("is this plugin itself"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(netns_link(netns.name(), "eth0").is_none());
    bed.assert_nothing_left(&[&cid]);
}

#[test]
#[ignore = "root: real etcd"]
fn delegation_deeper_than_two_levels_is_refused() {
    let bed = TestBed::new();
    let container = bed.container(bed.conf());
    let env = container.env("ADD").set("CALICO_CNI_DELEGATION_DEPTH", "2");

    let err = run_plugin("calico", &env, &container.conf.to_bytes()).error_with_code(7);

    assert!(err.msg.contains("CALICO_CNI_DELEGATION_DEPTH"), "{err:?}");
    bed.assert_nothing_left(&[&container.id]);
}

#[test]
#[ignore = "root: real etcd and netns"]
fn a_repeated_add_under_a_new_netns_sets_the_container_up_there() {
    let (bed, conf) = ipam_bed();
    let old = Netns::new();
    let container = bed.container(conf);
    let (cid, new) = (&container.id, &container.netns);
    bed.add(&container.conf, cid, &old.path(), "eth0").result();
    let old_ip = address_in(&old, "eth0").expect("first address");

    let result = container.add().result().clone();

    let ip = address_in(new, "eth0").expect("no eth0 in the new netns");
    assert_eq!(result["ips"][0]["address"], format!("{ip}/32"));
    assert!(netns_link(old.name(), "eth0").is_none(), "old eth0 left");
    assert_fully_attached(&bed, cid, new);
    if ip != old_ip {
        assert_eq!(holder_of(&bed, &old_ip), None, "old address leaked");
    }
    // Repeated once more in the same netns: the stored attachment answers, nothing changes.
    let again = container.add().result().clone();
    assert_eq!(again["ips"], result["ips"]);
    assert_eq!(address_in(new, "eth0"), Some(ip));

    drop(container);
    assert_no_allocations(&bed.etcd, "after the last DEL");
}

#[test]
#[ignore = "root: real etcd"]
fn the_hosts_own_netns_as_cni_netns_is_refused_before_any_change() {
    let bed = TestBed::new();
    let cid = names::container_id();
    let dir = TempDir::new("host-netns-link");
    let link = dir.join("netns");
    std::os::unix::fs::symlink("/proc/self/ns/net", &link).unwrap();

    let err = bed
        .add(&bed.conf(), &cid, link.to_str().unwrap(), "eth0")
        .error();

    assert!(err.msg.contains("host's own network namespace"), "{err:?}");
    assert!(host_link(&host_veth_name(&cid)).is_none());
    assert!(bed.etcd.keys("/calico/").iter().all(|k| !k.contains(&cid)));
    bed.assert_nothing_left(&[&cid]);
}

#[test]
#[ignore = "root: real etcd"]
fn a_fifo_as_cni_netns_is_refused_without_blocking() {
    let bed = TestBed::new();
    let cid = names::container_id();
    let dir = TempDir::new("fifo-netns");
    let fifo = dir.join("netns");
    nix_mkfifo(&fifo);
    let started = Instant::now();

    let err = bed
        .add(&bed.conf(), &cid, fifo.to_str().unwrap(), "eth0")
        .error();

    assert!(err.msg.contains("is not a network namespace"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    bed.assert_nothing_left(&[&cid]);
}

fn nix_mkfifo(path: &std::path::Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

fn ip_in(netns: &Netns, args: &[&str]) {
    let out = Command::new("ip")
        .args(["-n", netns.name()])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

#[test]
#[ignore = "root: real etcd and netns"]
fn gc_leaves_an_attachment_whose_verb_is_still_running() {
    let (bed, conf) = ipam_bed();
    let container = bed.container(conf.set("cniVersion", "1.1.0"));
    let cid = &container.id;
    container.add().result();
    let lock = tests::plugin::lock_dir().join(format!("calico:{cid}:eth0.lock"));
    // Another verb of the attachment, as far as the plugin can tell: it holds the lock.
    let holder =
        AttachmentLock::acquire(&tests::plugin::lock_dir(), "calico", cid, "eth0").unwrap();
    let gc = || gc_keeping_nothing("calico", &bed, &container.conf);

    gc().assert_success();
    assert_fully_attached(&bed, cid, &container.netns);

    drop(holder);
    gc().assert_success();
    assert!(
        bed.endpoint(cid, "eth0").is_none(),
        "unlisted endpoint left"
    );
    assert!(!lock.exists(), "lock file left");
    bed.assert_nothing_left(&[cid]);
}

#[test]
#[ignore = "root: real etcd and netns"]
fn del_of_a_network_the_container_is_not_on_leaves_the_other_networks_attachment() {
    let (bed, conf) = ipam_bed();
    let other = conf.clone().set("name", names::unique("net"));
    let container = bed.container(conf);
    let (cid, netns) = (&container.id, &container.netns);
    container.add().result();

    // Never added to `other`, then joined and left twice (a retried DEL).
    bed.del(&other, cid, &netns.path(), "eth0").assert_success();
    assert_fully_attached(&bed, cid, netns);
    bed.add(&other, cid, &netns.path(), "eth0").result();
    bed.del(&other, cid, &netns.path(), "eth0").assert_success();
    bed.del(&other, cid, &netns.path(), "eth0").assert_success();
    assert_fully_attached(&bed, cid, netns);
    assert_eq!(
        bed.endpoint(cid, "eth0").unwrap()["profile_ids"],
        serde_json::json!([bed.network])
    );
}

#[test]
#[ignore = "root: real etcd and netns, plugins built with crash-points"]
fn an_add_retried_after_a_kill_midway_ends_with_one_address_and_one_interface() {
    let (bed, conf) = ipam_bed();
    for step in ["after-record", "after-ipam", "after-veth", "after-routes"] {
        let container = bed.container(conf.clone());
        let cid = &container.id;
        let env = container.env("ADD").set("CALICO_CRASH_AT", step);
        let killed = run_plugin("calico", &env, &conf.to_bytes());
        assert!(
            !killed.status.success(),
            "{step}: ADD was not killed\n{killed}"
        );

        let retried = container.add();
        assert!(retried.status.success(), "{step}: retry failed\n{retried}");
        assert_fully_attached(&bed, cid, &container.netns);
        let handle = bed
            .etcd
            .get_json(&format!("/calico/ipam/v2/handle/{}.{cid}", bed.network))
            .unwrap_or_else(|| panic!("{step}: no handle"));
        let held: u64 = handle["block"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(serde_json::Value::as_u64)
            .sum();
        assert_eq!(held, 1, "{step}: the retry left a second address: {handle}");
    }
    assert_no_allocations(&bed.etcd, "after every retried ADD was deleted");
}

#[test]
#[ignore = "root: real etcd and netns"]
fn ipam_gc_keeps_the_handle_of_an_attachment_whose_add_is_still_running() {
    let (bed, conf) = ipam_bed();
    let container = bed.container(conf.set("cniVersion", "1.1.0"));
    let cid = &container.id;
    container.add().result();
    let handle = format!("/calico/ipam/v2/handle/{}.{cid}", bed.network);
    let ipam_gc = || gc_keeping_nothing("calico-ipam", &bed, &container.conf);
    // calico's ADD of the attachment is still running: it holds the attachment's lock.
    let adding =
        AttachmentLock::acquire(&tests::plugin::lock_dir(), "calico", cid, "eth0").unwrap();

    ipam_gc().assert_success();
    assert!(
        bed.etcd.get(&handle).is_some(),
        "GC freed the address of an ADD in flight"
    );

    drop(adding);
    ipam_gc().assert_success();
    assert!(
        bed.etcd.get(&handle).is_none(),
        "GC kept an unlisted handle"
    );
}

#[test]
#[ignore = "root: real etcd"]
fn gc_removes_the_lock_files_that_killed_verbs_left() {
    let (bed, conf) = ipam_bed();
    let conf = conf.set("cniVersion", "1.1.0");
    let cid = names::container_id();
    // A verb SIGKILLed before its end leaves its lock file, unlocked.
    let abandoned = tests::plugin::lock_dir().join(format!("calico:{cid}:eth0.lock"));
    std::fs::create_dir_all(tests::plugin::lock_dir()).unwrap();
    std::fs::write(&abandoned, b"").unwrap();

    gc_keeping_nothing("calico", &bed, &conf).assert_success();

    assert!(!abandoned.exists(), "{} left", abandoned.display());
}

/// An ADD that finds every ADD slot of the node held waits for one (the kernel lists it as
/// blocked on the slot's file), and when none comes free within its wait it runs all the same:
/// the slots set the order of a burst, they never fail an ADD. Nothing but the kept lock files
/// stays in the lock directory.
#[test]
#[ignore = "root: real etcd and netns"]
fn an_add_waits_for_a_held_slot_and_then_runs_without_it() {
    let (bed, conf) = ipam_bed();
    let locks = TempDir::new("add-slots");
    let netns = Netns::new();
    let cid = names::container_id();
    let env = |command: &str| {
        bed.env(command, &cid, &netns.path(), "eth0")
            .set("CALICO_CNI_LOCK_DIR", &locks.path_str())
            .set("CALICO_CNI_ADD_SLOTS", "1")
    };
    let slot = locks.join("add-slot:0.flock");
    let held = common::cni::lock::KeptLock::acquire(&slot).unwrap();
    let (waited, added) = std::thread::scope(|scope| {
        let add = scope.spawn(|| run_plugin("calico", &env("ADD"), &conf.to_bytes()));
        let mut waited = false;
        while !waited && !add.is_finished() {
            waited = common::cni::lock::flock_waiter_listed(&slot);
            std::thread::yield_now();
        }
        (waited, add.join().unwrap())
    });
    assert!(waited, "the ADD never waited for the held slot");
    added.assert_success();
    assert_fully_attached(&bed, &cid, &netns);
    drop(held);

    run_plugin("calico", &env("DEL"), &conf.to_bytes()).assert_success();
    bed.assert_nothing_left(&[&cid]);
    let mut left: Vec<String> = std::fs::read_dir(locks.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left.len(), 2, "lock files left: {left:?}");
    assert!(
        left[0] == "add-slot:0.flock" && left[1].starts_with("ipam:"),
        "{left:?}"
    );
}

/// A symlink planted where an attachment's lock file goes is not followed: the ADD fails at
/// once with error 5 (I/O) naming the lock file, creates nothing where the link points, and
/// leaves nothing behind.
#[test]
#[ignore = "root: real etcd and netns"]
fn a_symlink_in_place_of_a_lock_file_is_an_io_error_naming_it() {
    let (bed, conf) = ipam_bed();
    let locks = TempDir::new("planted-lock");
    let netns = Netns::new();
    let cid = names::container_id();
    let planted = locks.join(&format!("calico:{cid}:eth0.lock"));
    let target = locks.join("elsewhere");
    std::os::unix::fs::symlink(&target, &planted).unwrap();
    let env = bed
        .env("ADD", &cid, &netns.path(), "eth0")
        .set("CALICO_CNI_LOCK_DIR", &locks.path_str());

    let err = run_plugin("calico", &env, &conf.to_bytes()).error();
    assert_eq!(err.code, 5, "{err:?}");
    assert!(err.msg.contains(&planted.display().to_string()), "{err:?}");
    assert!(!target.exists(), "the lock was taken through the symlink");
    bed.assert_nothing_left(&[&cid]);
}
