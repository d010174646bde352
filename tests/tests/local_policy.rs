//! `policy.type: "local"`: the profiles enforced on this host with nftables, checked with real
//! pings between containers of two networks and with `nft` reading the ruleset back.
//!
//! Every test programs its own table (`CALICO_NFT_TABLE`), so tests running side by side never
//! see each other's rules, and deletes it at the end.

use std::process::Command;

use serde_json::{Value, json};
use tests::kernel::ping;
use tests::{Env, NetConf, Netns, PluginOutput, TestBed, host_veth_name, names, run_plugin};

const CHECK_FAILED: u64 = 106;
const DATAPLANE: u64 = 103;

/// A table of this test's own; dropping it deletes it.
struct Table(String);

impl Table {
    fn new() -> Table {
        Table(names::unique("ct-nft"))
    }

    /// `nft list table inet <name>`, or `None` when there is no such table.
    fn listing(&self) -> Option<String> {
        let out = nft(&["list", "table", "inet", &self.0]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `nft -j list set|map inet <name> <set>`: the elements, as nft prints them.
    fn elements(&self, kind: &str, set: &str) -> Vec<Value> {
        let out = nft(&["-j", "list", kind, "inet", &self.0, set]);
        assert!(out.status.success(), "nft list {kind} {set}: {out:?}");
        let json: Value = serde_json::from_slice(&out.stdout).expect("nft -j output");
        json["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|o| o.get(kind).and_then(|s| s["elem"].as_array().cloned()))
            .unwrap_or_default()
    }

    /// The comments of a chain's rules, in order.
    fn rule_comments(&self, chain: &str) -> Vec<String> {
        let out = nft(&["-j", "list", "chain", "inet", &self.0, chain]);
        assert!(out.status.success(), "nft list chain {chain}: {out:?}");
        let json: Value = serde_json::from_slice(&out.stdout).expect("nft -j output");
        json["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("rule"))
            .map(|r| r["comment"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        let _ = nft(&["delete", "table", "inet", &self.0]);
    }
}

fn nft(args: &[&str]) -> std::process::Output {
    Command::new("nft").args(args).output().expect("run nft")
}

/// `nft list ruleset`, which the issue asks to be free of a deleted container's traces.
fn ruleset() -> String {
    String::from_utf8_lossy(&nft(&["list", "ruleset"]).stdout).into_owned()
}

/// One container: its id, netns and the addresses ADD gave it.
struct Container {
    cid: String,
    netns: Netns,
    addresses: Vec<String>,
}

impl Container {
    fn veth(&self) -> String {
        host_veth_name(&self.cid)
    }

    /// Whether a ping from this container to `ip` is answered (three tries: a first packet may
    /// wait for neighbour resolution).
    fn reaches(&self, ip: &str) -> bool {
        (0..3).any(|_| self.ping_once(ip, "2"))
    }

    /// Whether one ping with a one-second deadline is answered: for traffic that must be
    /// dropped, where every try would wait out its deadline.
    fn ping_once(&self, ip: &str, wait: &str) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                self.netns.name(),
                "ping",
                "-c",
                "1",
                "-W",
                wait,
                ip,
            ])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn refused(&self, ip: &str) -> bool {
        !self.ping_once(ip, "1")
    }
}

/// Two calico-ipam networks on one bed, with IPv4 and IPv6 pools shared between them (so
/// their addresses never collide), local policy in `table`.
struct World {
    // Before the bed, so that it is dropped while this thread is still on the bed's host.
    table: Table,
    bed: TestBed,
    a: NetConf,
    b: NetConf,
}

impl World {
    fn new(local: bool) -> World {
        let bed = TestBed::new();
        bed.add_pool(&bed.subnet.cidr());
        bed.add_pool(&bed.subnet.ipv6_cidr(214, 112));
        let conf = |network: &str| {
            let conf = bed
                .fixture("calico-ipam.conf", network)
                .set("cniVersion", "1.1.0")
                .set_ipam("assign_ipv6", "true");
            if local {
                conf.set("policy", json!({"type": "local"}))
            } else {
                conf
            }
        };
        let (a, b) = (conf(&bed.network), conf(&names::unique("netb")));
        World {
            table: Table::new(),
            a,
            b,
            bed,
        }
    }

    fn env(&self, command: &str, cid: &str, netns: &Netns) -> Env {
        self.bed
            .env(command, cid, &netns.path(), "eth0")
            .set("CALICO_NFT_TABLE", &self.table.0)
    }

    fn run(&self, command: &str, conf: &NetConf, cid: &str, netns: &Netns) -> PluginOutput {
        run_plugin("calico", &self.env(command, cid, netns), &conf.to_bytes())
    }

    fn start(&self, conf: &NetConf) -> Container {
        let (cid, netns) = (names::container_id(), Netns::new());
        let out = self.run("ADD", conf, &cid, &netns);
        let addresses = addresses(out.result());
        assert_eq!(addresses.len(), 2, "one IPv4 and one IPv6 address\n{out}");
        Container {
            cid,
            netns,
            addresses,
        }
    }

    fn stop(&self, conf: &NetConf, c: &Container) {
        self.run("DEL", conf, &c.cid, &c.netns).assert_success();
        assert_forgotten(c);
    }

    fn gc(&self, conf: &NetConf) -> PluginOutput {
        let env = Env::new()
            .set("CNI_COMMAND", "GC")
            .set("CNI_PATH", &self.bed.cni_path.path());
        let body = conf.clone().set("cni.dev/valid-attachments", json!([]));
        run_plugin("calico", &env, &body.to_bytes())
    }
}

fn addresses(result: &Value) -> Vec<String> {
    let ips = result["ips"].as_array().cloned().unwrap_or_default();
    ips.iter()
        .filter_map(|ip| ip["address"].as_str())
        .map(|a| a.split('/').next().unwrap_or_default().to_string())
        .collect()
}

/// Whether `text` names `word` as a whole: 10.0.0.1 is not named by 10.0.0.12.
fn mentions(text: &str, word: &str) -> bool {
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == ':';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_part) && !after.is_some_and(is_part)
    })
}

/// After its DEL, the host's whole ruleset names neither the container's addresses nor its veth.
fn assert_forgotten(c: &Container) {
    let rules = ruleset();
    for needle in c.addresses.iter().chain([&c.veth()]) {
        assert!(
            !mentions(&rules, needle),
            "ruleset still names {needle}:\n{rules}"
        );
    }
}

#[test]
#[ignore = "root: real etcd, netns and nftables"]
fn containers_reach_their_own_network_only_and_the_host_reaches_all() {
    let world = World::new(true);
    let a1 = world.start(&world.a);
    let a2 = world.start(&world.a);
    let b1 = world.start(&world.b);

    for i in 0..2 {
        let (to_a2, to_a1, to_b1) = (&a2.addresses[i], &a1.addresses[i], &b1.addresses[i]);
        assert!(a1.reaches(to_a2), "a1 cannot reach a2 at {to_a2}");
        assert!(a2.reaches(to_a1), "a2 cannot reach a1 at {to_a1}");
        assert!(a1.refused(to_b1), "a1 reaches b1 at {to_b1}");
        assert!(b1.refused(to_a1), "b1 reaches a1 at {to_a1}");
        assert!(b1.refused(to_a2), "b1 reaches a2 at {to_a2}");
        for ip in [to_a1, to_a2, to_b1] {
            assert!(ping(ip), "the host cannot reach {ip}");
        }
    }
    let listing = world.table.listing().expect("the table exists");
    eprintln!("DEBUG {listing}");
    for c in [&a1, &a2, &b1] {
        assert!(listing.contains(&format!("to-{}", c.veth())), "{listing}");
    }

    world.stop(&world.a, &a1);
    assert!(b1.refused(&a2.addresses[0]), "b1 reaches a2 after a1 left");
    world.stop(&world.b, &b1);
    world.stop(&world.a, &a2);
    for (kind, set) in [("map", "to-endpoint"), ("map", "owner4"), ("map", "owner6")] {
        assert_eq!(
            world.table.elements(kind, set),
            Vec::<Value>::new(),
            "{set}"
        );
    }
    world.bed.assert_nothing_left(&[&a1.cid, &a2.cid, &b1.cid]);
}

#[test]
#[ignore = "root: real etcd, netns and nftables"]
fn a_container_that_joins_a_network_is_reachable_from_it_until_it_leaves() {
    let world = World::new(true);
    let a1 = world.start(&world.a);
    let b1 = world.start(&world.b);
    assert!(
        b1.refused(&a1.addresses[0]),
        "b1 reaches a1 before the join"
    );

    let joined = world.run("ADD", &world.b, &a1.cid, &a1.netns);
    assert_eq!(addresses(joined.result()), a1.addresses, "{joined}");
    for ip in &a1.addresses {
        assert!(b1.reaches(ip), "b1 cannot reach a1 at {ip} after the join");
    }
    for ip in &b1.addresses {
        assert!(a1.reaches(ip), "a1 cannot reach b1 at {ip} after the join");
    }
    let b_tag = format!(
        "tag4-{}",
        world.b.value()["name"].as_str().unwrap_or_default()
    );
    assert_eq!(
        world.table.elements("set", &b_tag).len(),
        2,
        "a1 and b1 in {b_tag}"
    );

    world
        .run("DEL", &world.b, &a1.cid, &a1.netns)
        .assert_success();
    for ip in &a1.addresses {
        assert!(b1.refused(ip), "b1 reaches a1 at {ip} after it left");
    }
    let a2 = world.start(&world.a);
    assert!(
        a2.reaches(&a1.addresses[0]),
        "a1 lost its own network when leaving the other"
    );
    assert_eq!(
        world.table.elements("set", &b_tag).len(),
        1,
        "only b1 in {b_tag}"
    );

    world.stop(&world.a, &a1);
    world.stop(&world.a, &a2);
    world.stop(&world.b, &b1);
    world.bed.assert_nothing_left(&[&a1.cid, &a2.cid, &b1.cid]);
}

#[test]
#[ignore = "root: real etcd, netns and nftables"]
fn without_local_policy_nothing_is_written_and_networks_reach_each_other() {
    let world = World::new(false);
    let a1 = world.start(&world.a);
    let b1 = world.start(&world.b);

    assert_eq!(world.table.listing(), None, "a table without local policy");
    for ip in &b1.addresses {
        assert!(a1.reaches(ip), "a1 cannot reach b1 at {ip}");
    }
    for ip in &a1.addresses {
        assert!(b1.reaches(ip), "b1 cannot reach a1 at {ip}");
    }
    let record = world
        .bed
        .etcd
        .keys(&format!("/calico/v1/host/{}/", world.bed.node));
    for key in record.iter().filter(|k| k.contains("attachment")) {
        let value = world.bed.etcd.get_json(key).unwrap_or_default();
        assert_eq!(value.get("nft_table"), None, "{key}: {value}");
    }

    world.stop(&world.a, &a1);
    world.stop(&world.b, &b1);
    assert_eq!(
        world.table.listing(),
        None,
        "a table after DEL without local policy"
    );
    world.bed.assert_nothing_left(&[&a1.cid, &b1.cid]);
}

#[test]
#[ignore = "root: real etcd, netns and nftables"]
fn twenty_adds_at_once_leave_a_consistent_ruleset() {
    let world = World::new(true);
    let started: Vec<(String, Netns, PluginOutput)> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..20)
            .map(|_| {
                let world = &world;
                s.spawn(move || {
                    let (cid, netns) = (names::container_id(), Netns::new());
                    let out = world.run("ADD", &world.a, &cid, &netns);
                    (cid, netns, out)
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("ADD thread"))
            .collect()
    });
    let network = world.a.value()["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut v4 = Vec::new();
    for (cid, netns, out) in &started {
        let result = out.result();
        v4.push(addresses(result)[0].clone());
        let check = world.a.clone().set("prevResult", result.clone());
        world.run("CHECK", &check, cid, netns).assert_success();
    }
    assert_eq!(
        world.table.rule_comments("forward"),
        vec![
            "replies to allowed connections",
            "to an endpoint: its inbound rules",
            "from an endpoint: its outbound rules",
        ],
        "the forward chain's rules, once each"
    );
    assert_eq!(world.table.elements("map", "to-endpoint").len(), 20);
    assert_eq!(world.table.elements("map", "from-endpoint").len(), 20);
    let mut members: Vec<String> = world
        .table
        .elements("set", &format!("tag4-{network}"))
        .iter()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect();
    members.sort();
    v4.sort();
    assert_eq!(members, v4, "the network's members are the 20 containers");

    for (cid, netns, out) in &started {
        world.run("DEL", &world.a, cid, netns).assert_success();
        let addresses = addresses(out.result());
        assert_forgotten(&Container {
            cid: cid.clone(),
            netns: Netns::new(),
            addresses,
        });
    }
    let cids: Vec<&str> = started.iter().map(|(cid, _, _)| cid.as_str()).collect();
    world.bed.assert_nothing_left(&cids);
}

#[test]
#[ignore = "root: real etcd, netns and nftables"]
fn del_or_gc_after_a_kill_past_the_nftables_step_leaves_nothing() {
    let world = World::new(true);
    let a1 = world.start(&world.a);
    let killed: Vec<(String, Netns)> = (0..2)
        .map(|_| (names::container_id(), Netns::new()))
        .collect();
    for (cid, netns) in &killed {
        let env = world
            .env("ADD", cid, netns)
            .set("CALICO_CRASH_AT", "after-policy");
        let out = run_plugin("calico", &env, &world.a.to_bytes());
        assert!(!out.status.success(), "ADD was not killed\n{out}");
        let listing = world.table.listing().expect("the table exists");
        assert!(listing.contains(&host_veth_name(cid)), "{listing}");
    }
    let v4_members = || world.table.elements("map", "owner4").len();
    assert_eq!(v4_members(), 3, "a1 and both killed containers");

    // One killed ADD is cleaned up by its DEL, the other by GC, which keeps a1.
    let (cid, netns) = &killed[0];
    world.run("DEL", &world.a, cid, netns).assert_success();
    assert!(!mentions(&ruleset(), &host_veth_name(cid)), "{}", ruleset());
    let env = Env::new()
        .set("CNI_COMMAND", "GC")
        .set("CNI_PATH", &world.bed.cni_path.path());
    let body = world.a.clone().set(
        "cni.dev/valid-attachments",
        json!([{"containerID": a1.cid, "ifname": "eth0"}]),
    );
    run_plugin("calico", &env, &body.to_bytes()).assert_success();
    assert!(
        !mentions(&ruleset(), &host_veth_name(&killed[1].0)),
        "{}",
        ruleset()
    );
    assert_eq!(v4_members(), 1, "a1 only");
    let a2 = world.start(&world.a);
    assert!(
        a2.reaches(&a1.addresses[0]),
        "a1 lost its enforcement to the cleanup"
    );

    world.gc(&world.a).assert_success();
    assert_forgotten(&a1);
    assert_forgotten(&a2);
    world
        .bed
        .assert_nothing_left(&[&a1.cid, &a2.cid, &killed[0].0, &killed[1].0]);
}

/// What a test breaks in an endpoint's enforcement behind the plugin's back.
#[derive(Debug, Clone, Copy)]
enum Breakage {
    /// Its inbound chain loses its rules.
    InboundRules,
    /// The outbound verdict map loses its entry.
    OutboundVerdict,
    /// Its IPv4 address leaves the network's tag.
    Membership,
    /// Its inbound chain's last rule accepts instead of dropping, under the same comment.
    ChangedRule,
}

impl Breakage {
    /// The `nft` arguments that break it, and what CHECK must name then.
    fn apply(self, table: &str, tag: &str, veth: &str, ip: &str) -> (Vec<String>, String) {
        let args: Vec<String> = match self {
            Breakage::InboundRules => vec!["flush".into(), "chain".into(), format!("to-{veth}")],
            Breakage::OutboundVerdict => vec![
                "delete".into(),
                "element".into(),
                "from-endpoint".into(),
                format!("{{ \"{veth}\" }}"),
            ],
            Breakage::Membership => vec![
                "delete".into(),
                "element".into(),
                tag.into(),
                format!("{{ {ip} }}"),
            ],
            Breakage::ChangedRule => {
                let chain = format!("to-{veth}");
                let (handle, comment) = last_rule(table, &chain);
                vec![
                    "replace".into(),
                    "rule".into(),
                    chain,
                    "handle".into(),
                    handle.to_string(),
                    "accept".into(),
                    "comment".into(),
                    format!("\"{comment}\""),
                ]
            }
        };
        let named = match self {
            Breakage::InboundRules => format!("to-{veth}"),
            Breakage::OutboundVerdict => "from-endpoint".to_string(),
            Breakage::Membership => tag.to_string(),
            Breakage::ChangedRule => "was changed".to_string(),
        };
        // `nft <verb> <object> inet <table> <name> [<elements>]`
        let mut full = vec![
            args[0].clone(),
            args[1].clone(),
            "inet".into(),
            table.into(),
        ];
        full.extend(args[2..].iter().cloned());
        (full, named)
    }
}

/// The handle and comment of a chain's last rule.
fn last_rule(table: &str, chain: &str) -> (u64, String) {
    let out = nft(&["-j", "-a", "list", "chain", "inet", table, chain]);
    let json: Value = serde_json::from_slice(&out.stdout).expect("nft -j output");
    let rules: Vec<Value> = json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("rule").cloned())
        .collect();
    let last = rules.last().expect("a rule");
    let handle = last["handle"].as_u64().expect("handle");
    (
        handle,
        last["comment"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
#[ignore = "root: real etcd, netns and nftables"]
fn check_reports_a_missing_or_changed_rule_verdict_or_member() {
    let world = World::new(true);
    let tag = format!("tag4-{}", world.bed.network);
    for breakage in [
        Breakage::InboundRules,
        Breakage::OutboundVerdict,
        Breakage::Membership,
        Breakage::ChangedRule,
    ] {
        let (cid, netns) = (names::container_id(), Netns::new());
        let result = world.run("ADD", &world.a, &cid, &netns).result().clone();
        let check_conf = world.a.clone().set("prevResult", result.clone());
        world
            .run("CHECK", &check_conf, &cid, &netns)
            .assert_success();
        let veth = host_veth_name(&cid);
        let (args, named) = breakage.apply(&world.table.0, &tag, &veth, &addresses(&result)[0]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = nft(&args);
        assert!(out.status.success(), "nft {args:?}: {out:?}");

        let err = world
            .run("CHECK", &check_conf, &cid, &netns)
            .error_with_code(CHECK_FAILED);
        let text = format!("{} {}", err.msg, err.details.clone().unwrap_or_default());
        assert!(
            text.contains(&named),
            "{breakage:?}: CHECK does not name {named}: {err:?}"
        );
        world.run("DEL", &world.a, &cid, &netns).assert_success();
        assert!(!mentions(&ruleset(), &veth), "{}", ruleset());
        world.bed.assert_nothing_left(&[&cid]);
    }
}

#[test]
#[ignore = "root: real etcd, netns and nftables"]
fn a_profile_rule_local_policy_cannot_enforce_is_refused_and_nothing_is_left() {
    let world = World::new(true);
    let network = world.bed.network.clone();
    let prefix = format!("/calico/v1/policy/profile/{network}");
    world
        .bed
        .etcd
        .put(&format!("{prefix}/tags"), &json!([network]).to_string());
    world.bed.etcd.put(&format!("{prefix}/labels"), "{}");
    let rules = json!({
        "inbound_rules": [{"action": "allow", "protocol": "tcp", "dst_ports": [80]}],
        "outbound_rules": [{"action": "allow"}],
    });
    world
        .bed
        .etcd
        .put(&format!("{prefix}/rules"), &rules.to_string());
    let (cid, netns) = (names::container_id(), Netns::new());

    let out = world.run("ADD", &world.a, &cid, &netns);
    let err = out.error_with_code(DATAPLANE);
    assert!(
        err.msg
            .contains(&format!("profile {network} inbound rule 0")),
        "{err:?}"
    );
    assert!(err.msg.contains("\"protocol\""), "{err:?}");
    if let Some(listing) = world.table.listing() {
        assert!(!listing.contains(&host_veth_name(&cid)), "{listing}");
    }
    world.bed.assert_nothing_left(&[&cid]);
}

#[test]
#[ignore = "root: real etcd, netns and nftables"]
fn a_pods_new_sandbox_takes_over_the_veth_without_the_old_sandboxs_addresses() {
    let world = World::new(true);
    let pod = names::unique("pod");
    let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}");
    let run = |command: &str, cid: &str, netns: &Netns| {
        let env = world.env(command, cid, netns).set("CNI_ARGS", &args);
        run_plugin("calico", &env, &world.a.to_bytes())
    };
    let (old_cid, old_netns) = (names::container_id(), Netns::new());
    let old = run("ADD", &old_cid, &old_netns).result().clone();
    let veth = old["interfaces"][0]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (new_cid, new_netns) = (names::container_id(), Netns::new());
    let new = run("ADD", &new_cid, &new_netns).result().clone();
    assert_eq!(
        new["interfaces"][0]["name"],
        json!(veth),
        "one veth name per pod"
    );

    let rules = ruleset();
    for ip in addresses(&old) {
        assert!(
            !mentions(&rules, &ip),
            "the old sandbox's {ip} is left:\n{rules}"
        );
    }
    for ip in addresses(&new) {
        assert!(
            mentions(&rules, &ip),
            "the new sandbox's {ip} is missing:\n{rules}"
        );
    }
    // The old sandbox's late DEL leaves the new one's enforcement alone.
    run("DEL", &old_cid, &old_netns).assert_success();
    let rules = ruleset();
    for ip in addresses(&new) {
        assert!(mentions(&rules, &ip), "the late DEL removed {ip}:\n{rules}");
    }
    run("DEL", &new_cid, &new_netns).assert_success();
    let rules = ruleset();
    for word in addresses(&new).iter().chain([&veth]) {
        assert!(!mentions(&rules, word), "{word} is left:\n{rules}");
    }
    world.bed.assert_nothing_left(&[&old_cid, &new_cid]);
}

#[test]
#[ignore = "root: real etcd, netns and nftables"]
fn joining_a_local_network_onto_an_unenforced_interface_is_refused_and_its_del_succeeds() {
    let world = World::new(false);
    let b_local = world.b.clone().set("policy", json!({"type": "local"}));
    let a1 = world.start(&world.a);

    let err = world
        .run("ADD", &b_local, &a1.cid, &a1.netns)
        .error_with_code(DATAPLANE);
    assert!(err.msg.contains("without local policy"), "{err:?}");
    assert!(err.msg.contains(&world.bed.network), "{err:?}");
    // The runtime's DEL after the failed ADD.
    world
        .run("DEL", &b_local, &a1.cid, &a1.netns)
        .assert_success();
    let endpoint = world.bed.endpoint(&a1.cid, "eth0").expect("a1's endpoint");
    assert_eq!(endpoint["profile_ids"], json!([world.bed.network]));
    assert_eq!(
        world.table.listing(),
        None,
        "a table for an unenforced interface"
    );

    world.stop(&world.a, &a1);
    world.bed.assert_nothing_left(&[&a1.cid]);
}

#[test]
#[ignore = "root: real etcd, netns and nftables"]
fn del_after_a_kill_at_any_later_step_of_add_leaves_nothing_in_the_ruleset() {
    let world = World::new(true);
    for step in [
        "after-routes",
        "after-policy",
        "after-endpoint",
        "after-result",
    ] {
        let (cid, netns) = (names::container_id(), Netns::new());
        let env = world.env("ADD", &cid, &netns).set("CALICO_CRASH_AT", step);
        let out = run_plugin("calico", &env, &world.a.to_bytes());
        assert!(!out.status.success(), "ADD was not killed {step}\n{out}");
        world.run("DEL", &world.a, &cid, &netns).assert_success();
        let rules = ruleset();
        assert!(!mentions(&rules, &host_veth_name(&cid)), "{step}:\n{rules}");
        for (kind, set) in [("map", "owner4"), ("map", "owner6")] {
            if world.table.listing().is_some() {
                assert_eq!(
                    world.table.elements(kind, set),
                    Vec::<Value>::new(),
                    "{step}: {set}"
                );
            }
        }
        world.bed.assert_nothing_left(&[&cid]);
    }
}
