//! The bad-input table: every row is one bad input to the real `calico` or `calico-ipam` binary
//! (network config, `CNI_*` environment, `CNI_ARGS`, names that become etcd keys, special
//! address ranges, CHECK's `prevResult`, GC's attachment list, TLS files, the admin
//! `pool add`). Each row asserts the CNI error code (or the admin exit status), that the message
//! names the culprit, that the run took less than a second, and that nothing was left: the
//! etcd keyspace is unchanged, the container netns has only `lo` and no route, no host link has
//! its peer there or carries the container's host veth name, no host route points into the
//! pool, and no block hint file was written.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::kernel::{Route, host_ipv4_routes, host_links, netns_ipv4_routes, netns_links};
use tests::{Env, NetConf, Netns, TempDir, TestBed, host_veth_name, names, run_plugin};

/// Bad input is refused before any work: a row never needs more than this.
const ROW_BOUND: Duration = Duration::from_secs(1);

/// A relative `ipam.block_hint_dir`; the plugin would create it in its working directory.
const RELATIVE_HINT_DIR: &str = "bad-input-relative-hints";

/// What a row runs.
struct Input {
    binary: &'static str,
    env: Env,
    stdin: Vec<u8>,
    args: Vec<String>,
}

/// What a row expects.
enum Expect {
    /// A CNI error JSON with this code.
    Code(u64),
    /// The admin mode's exit status, with the message on stderr.
    Exit(i32),
}

/// One bad input.
struct Row {
    name: String,
    input: Box<dyn Fn(&World) -> Input>,
    expect: Expect,
    /// A substring the message must contain: the key, value, variable or path at fault.
    culprit: String,
}

/// What every row shares: one etcd with one pool (this bed's subnet), one container
/// netns, one container id, a regular file and a directory that are not namespaces, and the
/// block hint directory the config names.
struct World {
    bed: TestBed,
    netns: Netns,
    cid: String,
    hints: TempDir,
    scratch: TempDir,
}

impl World {
    fn new() -> World {
        let world = World {
            bed: TestBed::new(),
            netns: Netns::new(),
            cid: names::container_id(),
            hints: TempDir::new("bad-input-hints"),
            scratch: TempDir::new("bad-input-scratch"),
        };
        std::fs::write(world.regular_file(), b"not a namespace").expect("write scratch file");
        std::fs::create_dir_all(world.directory()).expect("create scratch dir");
        // An IPAM "plugin" that cannot be executed: a plain file without the exec bit.
        std::fs::write(world.scratch.join("notexec"), b"#!/bin/sh\n").expect("write notexec");
        let made = Command::new("mkfifo")
            .arg(world.fifo())
            .status()
            .expect("run mkfifo");
        assert!(made.success(), "mkfifo {}", world.fifo());
        let out = world.admin_output(&["pool", "add", &world.bed.subnet.cidr()]);
        assert!(
            out.status.success(),
            "pool add {}: {}",
            world.bed.subnet.cidr(),
            String::from_utf8_lossy(&out.stderr)
        );
        world
    }

    /// calico with calico-ipam, block hints in [`World::hints`].
    fn conf(&self) -> NetConf {
        self.bed
            .fixture("calico-ipam.conf", &self.bed.network)
            .set_ipam("block_hint_dir", self.hints.path_str())
    }

    /// The same config at the version CHECK needs.
    fn check_conf(&self) -> NetConf {
        self.conf().set("cniVersion", "1.0.0")
    }

    /// The same config at the version GC needs.
    fn gc_conf(&self) -> NetConf {
        self.conf().set("cniVersion", "1.1.0")
    }

    fn env(&self, command: &str) -> Env {
        self.bed.env(command, &self.cid, &self.netns.path(), "eth0")
    }

    fn regular_file(&self) -> String {
        self.scratch.join("regular-file").display().to_string()
    }

    /// A FIFO: opening it for reading would wait for a writer.
    fn fifo(&self) -> String {
        self.scratch.join("fifo").display().to_string()
    }

    fn directory(&self) -> String {
        self.scratch.join("directory").display().to_string()
    }

    /// `calico` ADD with `conf`.
    fn add(&self, conf: NetConf) -> Input {
        self.calico(self.env("ADD"), conf)
    }

    /// `calico` with this environment and `conf`.
    fn calico(&self, env: Env, conf: NetConf) -> Input {
        self.raw("calico", env, conf.to_bytes())
    }

    /// `calico-ipam` with this environment and `conf`.
    fn ipam(&self, env: Env, conf: NetConf) -> Input {
        self.raw("calico-ipam", env, conf.to_bytes())
    }

    /// `calico` ADD with this environment change and the good config.
    fn add_with_env(&self, key: &str, value: &str) -> Input {
        self.calico(self.env("ADD").set(key, value), self.conf())
    }

    fn raw(&self, binary: &'static str, env: Env, stdin: Vec<u8>) -> Input {
        Input {
            binary,
            env,
            stdin,
            args: Vec::new(),
        }
    }

    /// `calico-ipam <args>` in admin mode against this bed's etcd.
    fn admin(&self, args: &[&str]) -> Input {
        Input {
            binary: "calico-ipam",
            env: Env::new().set("ETCD_ENDPOINTS", self.bed.etcd.endpoint()),
            stdin: Vec::new(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn admin_output(&self, args: &[&str]) -> std::process::Output {
        tests::plugin::by_hand("calico-ipam")
            .env("ETCD_ENDPOINTS", self.bed.etcd.endpoint())
            .args(args)
            .output()
            .expect("run calico-ipam admin mode")
    }

    /// Everything a row could leave behind.
    fn snapshot(&self) -> Snapshot {
        let veth = host_veth_name(&self.cid);
        // Dumping the host links first makes the kernel assign an id to the container netns
        // if a host link has its peer there, so the id read next is the one they carry.
        let links = host_links();
        let netns_id = netns_id(self.netns.name());
        let host_links_into_netns = links
            .into_iter()
            .filter(|l| l.name == veth || (netns_id.is_some() && l.peer_netnsid == netns_id))
            .map(|l| l.name)
            .collect();
        let mut hint_files: Vec<String> = std::fs::read_dir(self.hints.path())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        hint_files.sort();
        Snapshot {
            etcd: self.bed.etcd.get_prefix("/"),
            netns_links: netns_links(self.netns.name())
                .into_iter()
                .map(|l| l.name)
                .collect(),
            netns_routes: netns_ipv4_routes(self.netns.name()),
            host_links_into_netns,
            host_routes_into_pool: host_ipv4_routes()
                .into_iter()
                .filter(|r| self.bed.subnet.contains(&r.dst))
                .collect(),
            hint_files,
            relative_hint_dir: Path::new(RELATIVE_HINT_DIR).exists(),
        }
    }
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    etcd: Vec<(String, String)>,
    netns_links: Vec<String>,
    netns_routes: Vec<Route>,
    host_links_into_netns: Vec<String>,
    host_routes_into_pool: Vec<Route>,
    hint_files: Vec<String>,
    relative_hint_dir: bool,
}

/// The id the host knows a named netns by, once one was assigned.
fn netns_id(name: &str) -> Option<i64> {
    let out = Command::new("ip")
        .args(["-j", "netns", "list"])
        .output()
        .expect("run ip netns list");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    list.as_array()?
        .iter()
        .find(|ns| ns["name"] == name)
        .and_then(|ns| ns["id"].as_i64())
}

/// A prevResult with a host and a container interface and one address on the latter.
fn prev_result(interface: Value) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "calihost"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
        "ips": [{"address": "10.213.0.5/32", "interface": interface}],
    })
}

fn row(
    name: impl Into<String>,
    input: impl Fn(&World) -> Input + 'static,
    expect: Expect,
    culprit: impl Into<String>,
) -> Row {
    Row {
        name: name.into(),
        input: Box::new(input),
        expect,
        culprit: culprit.into(),
    }
}

fn rows() -> Vec<Row> {
    let mut rows = single_rows();
    rows.extend(listed_rows());
    rows
}

/// Rows that differ only in one value.
fn listed_rows() -> Vec<Row> {
    use Expect::Code;
    let mut rows = Vec::new();
    for stdin in ["   \n", "{", "not json", r#"{"name":"x","#] {
        rows.push(row(
            format!("stdin {stdin:?}"),
            move |w| w.raw("calico", w.env("ADD"), stdin.as_bytes().to_vec()),
            Code(6),
            "network config",
        ));
    }
    for name in [
        "",
        "has space",
        "ünicode",
        "semi;colon",
        "star*",
        "tab\tname",
        "_net",
    ] {
        rows.push(row(
            format!("network name {name:?}"),
            move |w| w.add(w.conf().set("name", name)),
            Code(7),
            "name",
        ));
    }
    for prefix in ["", "fifteen-bytes-x", "a/b", "a:b", "a b"] {
        rows.push(row(
            format!("interface_prefix {prefix:?}"),
            move |w| w.add(w.conf().set("interface_prefix", prefix)),
            Code(7),
            "interface_prefix",
        ));
    }
    for labels in [
        json!("role=db"),
        json!([{"key": "org.projectcalico.label.role"}]),
        json!([["org.projectcalico.label.role", "db"]]),
    ] {
        rows.push(row(
            format!("args.cni.labels {labels}"),
            move |w| {
                let conf = w.conf().set("label_endpoints", true);
                w.add(conf.set("args", json!({"cni": {"labels": labels.clone()}})))
            },
            Code(7),
            "args.cni.labels",
        ));
    }
    for command in ["FOO", "ADDX", "del"] {
        rows.push(row(
            format!("CNI_COMMAND {command}"),
            move |w| w.calico(w.env(command), w.conf()),
            Code(4),
            command,
        ));
    }
    for cid in [
        "-leading-dash",
        ".leading-dot",
        "_leading-underscore",
        "has space",
        "has:colon",
        "bang!",
        "ünicode",
        "..",
    ] {
        rows.push(row(
            format!("CNI_CONTAINERID {cid:?}"),
            move |w| w.add_with_env("CNI_CONTAINERID", cid),
            Code(4),
            cid,
        ));
    }
    for ifname in [
        "",
        "eth:0",
        "eth 0",
        "eth\t0",
        "eth\n0",
        "et\u{1}h",
        "eth\u{7f}",
    ] {
        rows.push(row(
            format!("CNI_IFNAME {ifname:?}"),
            move |w| w.add_with_env("CNI_IFNAME", ifname),
            Code(4),
            "CNI_IFNAME",
        ));
    }
    rows
}

/// Rows with an input of their own.
fn single_rows() -> Vec<Row> {
    use Expect::{Code, Exit};
    vec![
        // stdin that is not a JSON object: 6.
        row(
            "empty stdin",
            |w| w.raw("calico", w.env("ADD"), Vec::new()),
            Code(6),
            "network config",
        ),
        row(
            "truncated JSON",
            |w| w.raw("calico", w.env("ADD"), b"{\"name\":".to_vec()),
            Code(6),
            "network config",
        ),
        row(
            "JSON list instead of object",
            |w| w.raw("calico", w.env("ADD"), b"[1,2]".to_vec()),
            Code(6),
            "not a JSON object",
        ),
        row(
            "stdin not UTF-8",
            |w| w.raw("calico-ipam", w.env("ADD"), b"\xff\xfe".to_vec()),
            Code(6),
            "network config",
        ),
        // The config: 7, or 1 for the version.
        row(
            "unknown cniVersion",
            |w| w.add(w.conf().set("cniVersion", "9.9.9")),
            Code(1),
            "9.9.9",
        ),
        row(
            "cniVersion a number",
            |w| w.add(w.conf().set("cniVersion", 1)),
            Code(7),
            "cniVersion",
        ),
        row(
            "missing name",
            |w| w.add(w.conf().without("name")),
            Code(7),
            "network name",
        ),
        row(
            "name a number",
            |w| w.add(w.conf().set("name", 5)),
            Code(7),
            "\"name\"",
        ),
        row(
            "name .",
            |w| w.add(w.conf().set("name", ".")),
            Code(7),
            "name \".\"",
        ),
        row(
            "name ..",
            |w| w.ipam(w.env("ADD"), w.conf().set("name", "..")),
            Code(7),
            "name \"..\"",
        ),
        row(
            "name with slash",
            |w| w.add(w.conf().set("name", "a/b")),
            Code(7),
            "\"a/b\"",
        ),
        row(
            "mtu a string",
            |w| w.add(w.conf().set("mtu", "1500")),
            Code(7),
            "\"mtu\"",
        ),
        row(
            "mtu too small",
            |w| w.add(w.conf().set("mtu", 20)),
            Code(7),
            "mtu 20",
        ),
        row(
            "mtu too large",
            |w| w.add(w.conf().set("mtu", 70000)),
            Code(7),
            "mtu 70000",
        ),
        row(
            "mtu negative",
            |w| w.add(w.conf().set("mtu", -1)),
            Code(7),
            "\"mtu\"",
        ),
        row(
            "missing ipam",
            |w| w.add(w.conf().without("ipam")),
            Code(7),
            "ipam",
        ),
        row(
            "missing ipam.type",
            |w| w.add(w.conf().set("ipam", json!({"block_hint_dir": ""}))),
            Code(7),
            "ipam.type",
        ),
        row(
            "ipam.type a path",
            |w| w.add(w.conf().set_ipam("type", "../calico-ipam")),
            Code(7),
            "ipam.type",
        ),
        row(
            "etcd endpoint without scheme",
            |w| w.add(w.conf().set("etcd_endpoints", "127.0.0.1:2379")),
            Code(7),
            "127.0.0.1:2379",
        ),
        row(
            "etcd endpoint of another scheme",
            |w| w.add(w.conf().set("etcd_endpoints", "unix:///run/etcd.sock")),
            Code(7),
            "unix:///run/etcd.sock",
        ),
        row(
            "etcd_scheme grpc",
            |w| {
                let conf = w.conf().without("etcd_endpoints");
                w.add(conf.set("etcd_scheme", "grpc"))
            },
            Code(7),
            "grpc://",
        ),
        row(
            "etcd_endpoints a list",
            |w| {
                w.add(
                    w.conf()
                        .set("etcd_endpoints", json!(["http://127.0.0.1:1"])),
                )
            },
            Code(7),
            "\"etcd_endpoints\"",
        ),
        row(
            "datastore_type kubernetes",
            |w| w.add(w.conf().set("datastore_type", "kubernetes")),
            Code(7),
            "kubernetes",
        ),
        row(
            "etcd CA file missing",
            |w| {
                let conf = w.conf().set("etcd_endpoints", "https://127.0.0.1:1");
                w.add(conf.set("etcd_ca_cert_file", "/nonexistent/bad-input/ca.pem"))
            },
            Code(7),
            "/nonexistent/bad-input/ca.pem",
        ),
        row(
            "etcd client certificate missing",
            |w| {
                let conf = w.conf().set("etcd_endpoints", "https://127.0.0.1:1");
                let conf = conf.set("etcd_key_file", "/nonexistent/bad-input/key.pem");
                w.add(conf.set("etcd_cert_file", "/nonexistent/bad-input/cert.pem"))
            },
            Code(7),
            "/nonexistent/bad-input/",
        ),
        row(
            "ipv4 pool not a CIDR",
            |w| w.add(w.conf().set_ipam("ipv4_pools", json!(["10.0.0.0/33"]))),
            Code(7),
            "10.0.0.0/33",
        ),
        row(
            "ipv4 pool of the other family",
            |w| w.add(w.conf().set_ipam("ipv4_pools", json!(["fd00::/64"]))),
            Code(7),
            "fd00::/64",
        ),
        row(
            "ipv4 pools a string",
            |w| w.add(w.conf().set_ipam("ipv4_pools", "10.0.0.0/8")),
            Code(7),
            "\"ipam\"",
        ),
        row(
            "ipv4 pool link-local",
            |w| {
                let conf = w.conf().set_ipam("ipv4_pools", json!(["169.254.0.0/16"]));
                w.ipam(w.env("ADD"), conf)
            },
            Code(7),
            "169.254.0.0/16",
        ),
        row(
            "ipv4 pool inside loopback",
            |w| w.add(w.conf().set_ipam("ipv4_pools", json!(["127.0.0.0/16"]))),
            Code(7),
            "127.0.0.0/8",
        ),
        row(
            "ipv4 pool multicast",
            |w| w.add(w.conf().set_ipam("ipv4_pools", json!(["224.0.0.0/24"]))),
            Code(7),
            "224.0.0.0/4",
        ),
        row(
            "ipv4 pool holding the broadcast address",
            |w| w.add(w.conf().set_ipam("ipv4_pools", json!(["255.255.255.0/24"]))),
            Code(7),
            "240.0.0.0/4",
        ),
        row(
            "ipv4 pool everything",
            |w| w.add(w.conf().set_ipam("ipv4_pools", json!(["0.0.0.0/0"]))),
            Code(7),
            "0.0.0.0/0",
        ),
        row(
            "ipv6 pool link-local",
            |w| w.add(w.conf().set_ipam("ipv6_pools", json!(["fe80::/64"]))),
            Code(7),
            "fe80::/10",
        ),
        row(
            "ipv6 pool IPv4-mapped",
            |w| {
                let conf = w.conf().set_ipam("ipv6_pools", json!(["::ffff:0:0/96"]));
                w.ipam(w.env("ADD"), conf)
            },
            Code(7),
            "::ffff:0:0/96",
        ),
        row(
            "assign_ipv4 a number",
            |w| w.add(w.conf().set_ipam("assign_ipv4", 1)),
            Code(7),
            "ipam.assign_ipv4",
        ),
        row(
            "relative block_hint_dir",
            |w| {
                let conf = w.conf().set_ipam("block_hint_dir", RELATIVE_HINT_DIR);
                w.ipam(w.env("ADD"), conf)
            },
            Code(7),
            "ipam.block_hint_dir",
        ),
        row(
            "nodename with slashes",
            |w| w.add(w.conf().set("nodename", "a/workload/cni/victim")),
            Code(7),
            "nodename \"a/workload/cni/victim\"",
        ),
        row(
            "nodename ..",
            |w| w.ipam(w.env("ADD"), w.conf().set("nodename", "..")),
            Code(7),
            "nodename \"..\"",
        ),
        row(
            "nodename with a newline",
            |w| w.add(w.conf().set("nodename", "node\n1")),
            Code(7),
            "nodename",
        ),
        row(
            "deprecated hostname with a slash",
            |w| w.add(w.conf().without("nodename").set("hostname", "h/x")),
            Code(7),
            "hostname \"h/x\"",
        ),
        row(
            "policy a string",
            |w| w.add(w.conf().set("policy", "k8s")),
            Code(7),
            "\"policy\"",
        ),
        row(
            "kubernetes section a string",
            |w| w.add(w.conf().set("kubernetes", "/etc/kubeconfig")),
            Code(7),
            "\"kubernetes\"",
        ),
        row(
            "kubernetes.node_name climbing the API path",
            |w| w.add(w.conf().set("kubernetes", json!({"node_name": "../x"}))),
            Code(7),
            "kubernetes.node_name",
        ),
        row(
            "kubeconfig missing for a pod",
            |w| {
                let conf = w.conf().set("policy", json!({"type": "k8s"}));
                let conf = conf.set(
                    "kubernetes",
                    json!({"kubeconfig": "/nonexistent/bad-input/kubeconfig"}),
                );
                let env = w
                    .env("ADD")
                    .set("CNI_ARGS", "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod");
                w.calico(env, conf)
            },
            Code(7),
            "/nonexistent/bad-input/kubeconfig",
        ),
        row(
            "API CA file missing for a pod",
            |w| {
                let policy = json!({
                    "type": "k8s",
                    "k8s_api_root": "https://127.0.0.1:1",
                    "k8s_certificate_authority": "/nonexistent/bad-input/k8s-ca.pem",
                });
                let env = w
                    .env("ADD")
                    .set("CNI_ARGS", "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod");
                w.calico(env, w.conf().set("policy", policy))
            },
            Code(7),
            "/nonexistent/bad-input/k8s-ca.pem",
        ),
        // The CNI_* environment: 4, or the dataplane's 103 for a path that is no netns.
        row(
            "CNI_COMMAND missing",
            |w| w.calico(w.env("ADD").remove("CNI_COMMAND"), w.conf()),
            Code(4),
            "CNI_COMMAND",
        ),
        row(
            "CNI_COMMAND lower case",
            |w| w.calico(w.env("add"), w.conf()),
            Code(4),
            "add",
        ),
        row(
            "CNI_COMMAND unknown",
            |w| w.ipam(w.env("FROB"), w.conf()),
            Code(4),
            "FROB",
        ),
        row(
            "CNI_CONTAINERID missing",
            |w| w.calico(w.env("ADD").remove("CNI_CONTAINERID"), w.conf()),
            Code(4),
            "CNI_CONTAINERID",
        ),
        row(
            "CALICO_CNI_ADD_SLOTS not a number",
            |w| w.add_with_env("CALICO_CNI_ADD_SLOTS", "many"),
            Code(4),
            "CALICO_CNI_ADD_SLOTS",
        ),
        row(
            "CNI_CONTAINERID climbing",
            |w| w.add_with_env("CNI_CONTAINERID", "../victim"),
            Code(4),
            "../victim",
        ),
        row(
            "CNI_CONTAINERID with a slash",
            |w| w.ipam(w.env("ADD").set("CNI_CONTAINERID", "a/b"), w.conf()),
            Code(4),
            "a/b",
        ),
        row(
            "CNI_CONTAINERID .",
            |w| w.add_with_env("CNI_CONTAINERID", "."),
            Code(4),
            "CNI_CONTAINERID",
        ),
        row(
            "CNI_IFNAME too long",
            |w| w.add_with_env("CNI_IFNAME", "abcdefghijklmnop"),
            Code(4),
            "abcdefghijklmnop",
        ),
        row(
            "CNI_IFNAME with a slash",
            |w| w.add_with_env("CNI_IFNAME", "eth/0"),
            Code(4),
            "eth/0",
        ),
        row(
            "CNI_IFNAME .",
            |w| w.add_with_env("CNI_IFNAME", "."),
            Code(4),
            "CNI_IFNAME",
        ),
        row(
            "CNI_IFNAME ..",
            |w| w.calico(w.env("DEL").set("CNI_IFNAME", ".."), w.conf()),
            Code(4),
            "CNI_IFNAME",
        ),
        row(
            "CNI_NETNS missing",
            |w| w.calico(w.env("ADD").remove("CNI_NETNS"), w.conf()),
            Code(4),
            "CNI_NETNS",
        ),
        row(
            "CNI_NETNS relative",
            |w| w.add_with_env("CNI_NETNS", "run/netns/x"),
            Code(4),
            "run/netns/x",
        ),
        row(
            "CNI_NETNS does not exist",
            |w| w.add_with_env("CNI_NETNS", "/run/netns/bad-input-absent"),
            Code(103),
            "/run/netns/bad-input-absent",
        ),
        row(
            "CNI_NETNS a regular file",
            |w| w.add_with_env("CNI_NETNS", &w.regular_file()),
            Code(103),
            "regular-file",
        ),
        row(
            "CNI_NETNS a directory",
            |w| w.add_with_env("CNI_NETNS", &w.directory()),
            Code(103),
            "directory",
        ),
        row(
            "CNI_NETNS a mount namespace",
            |w| w.add_with_env("CNI_NETNS", "/proc/self/ns/mnt"),
            Code(103),
            "/proc/self/ns/mnt",
        ),
        row(
            "CNI_NETNS a FIFO",
            |w| w.add_with_env("CNI_NETNS", &w.fifo()),
            Code(103),
            "fifo",
        ),
        row(
            "CNI_NETNS the host's own netns",
            |w| w.add_with_env("CNI_NETNS", "/proc/self/ns/net"),
            Code(103),
            "host's own network namespace",
        ),
        row(
            "CHECK with CNI_NETNS the host's own netns",
            |w| {
                let conf = w.check_conf().set("prevResult", prev_result(json!(1)));
                w.calico(w.env("CHECK").set("CNI_NETNS", "/proc/self/ns/net"), conf)
            },
            Code(103),
            "host's own network namespace",
        ),
        row(
            "ipam.type a file without the exec bit",
            |w| {
                let path = format!("{}:{}", w.scratch.path_str(), w.bed.cni_path.path());
                let conf = w.conf().set_ipam("type", "notexec");
                w.calico(w.env("ADD").set("CNI_PATH", &path), conf)
            },
            Code(101),
            "notexec",
        ),
        row(
            "ipam.type naming the plugin itself",
            |w| w.add(w.conf().set_ipam("type", "calico")),
            Code(7),
            "is this plugin itself",
        ),
        row(
            "CNI_PATH missing",
            |w| w.calico(w.env("ADD").remove("CNI_PATH"), w.conf()),
            Code(4),
            "CNI_PATH",
        ),
        // CNI_ARGS: 4, or the IPAM's 102 for an address no pool holds.
        row(
            "CNI_ARGS pair without =",
            |w| w.add_with_env("CNI_ARGS", "IgnoreUnknown=1;justakey"),
            Code(4),
            "justakey",
        ),
        row(
            "IP not an address",
            |w| w.add_with_env("CNI_ARGS", "IP=10.0.0.300"),
            Code(4),
            "10.0.0.300",
        ),
        row(
            "IP Calico's gateway",
            |w| w.add_with_env("CNI_ARGS", "IP=169.254.1.1"),
            Code(4),
            "169.254.0.0/16",
        ),
        row(
            "IP loopback",
            |w| w.ipam(w.env("ADD").set("CNI_ARGS", "IP=127.0.0.1"), w.conf()),
            Code(4),
            "127.0.0.0/8",
        ),
        row(
            "IP IPv6 link-local",
            |w| w.add_with_env("CNI_ARGS", "IP=fe80::1"),
            Code(4),
            "fe80::/10",
        ),
        row(
            "IP outside every pool",
            |w| w.ipam(w.env("ADD").set("CNI_ARGS", "IP=10.214.255.7"), w.conf()),
            Code(102),
            "10.214.255.7",
        ),
        row(
            "pod namespace ..",
            |w| w.add_with_env("CNI_ARGS", "K8S_POD_NAMESPACE=..;K8S_POD_NAME=pod"),
            Code(4),
            "K8S_POD_NAMESPACE",
        ),
        row(
            "pod name with a slash",
            |w| w.add_with_env("CNI_ARGS", "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=a/../b"),
            Code(4),
            "K8S_POD_NAME",
        ),
        // CHECK's prevResult: 7.
        row(
            "CHECK without prevResult",
            |w| w.calico(w.env("CHECK"), w.check_conf()),
            Code(7),
            "prevResult",
        ),
        row(
            "CHECK prevResult a string",
            |w| w.calico(w.env("CHECK"), w.check_conf().set("prevResult", "{")),
            Code(7),
            "prevResult",
        ),
        row(
            "CHECK prevResult interface index out of range",
            |w| {
                let conf = w.check_conf().set("prevResult", prev_result(json!(2)));
                w.calico(w.env("CHECK"), conf)
            },
            Code(7),
            "ips[0].interface 2",
        ),
        row(
            "CHECK prevResult interface index without interfaces",
            |w| {
                let prev = json!({"ips": [{"address": "10.213.0.5/32", "interface": 0}]});
                let conf = w.check_conf().set("prevResult", prev);
                w.ipam(w.env("CHECK"), conf)
            },
            Code(7),
            "ips[0].interface 0",
        ),
        row(
            "CHECK prevResult interfaces a string",
            |w| {
                let prev = json!({"interfaces": "eth0", "ips": []});
                w.calico(w.env("CHECK"), w.check_conf().set("prevResult", prev))
            },
            Code(7),
            "prevResult",
        ),
        row(
            "CHECK prevResult address with a prefix too long",
            |w| {
                let prev = json!({"ips": [{"address": "10.213.0.5/33"}]});
                w.ipam(w.env("CHECK"), w.check_conf().set("prevResult", prev))
            },
            Code(7),
            "10.213.0.5/33",
        ),
        // GC's attachment list: 7.
        row(
            "GC valid-attachments a string",
            |w| {
                let conf = w.gc_conf().set("cni.dev/valid-attachments", "c1");
                w.calico(w.env("GC"), conf)
            },
            Code(7),
            "cni.dev/valid-attachments",
        ),
        row(
            "GC valid-attachments of strings",
            |w| {
                let conf = w.gc_conf().set("cni.dev/valid-attachments", json!(["c1"]));
                w.ipam(w.env("GC"), conf)
            },
            Code(7),
            "cni.dev/valid-attachments[0]",
        ),
        row(
            "GC valid-attachments entry without containerID",
            |w| {
                let list = json!([{"containerID": "c1", "ifname": "eth0"}, {"ifname": "eth0"}]);
                let conf = w.gc_conf().set("cni.dev/valid-attachments", list);
                w.calico(w.env("GC"), conf)
            },
            Code(7),
            "cni.dev/valid-attachments[1]",
        ),
        row(
            "GC attachments with a climbing container id",
            |w| {
                let list = json!([{"containerID": "../c1", "ifname": "eth0"}]);
                let conf = w.gc_conf().set("cni.dev/attachments", list);
                w.calico(w.env("GC"), conf)
            },
            Code(7),
            "cni.dev/attachments[0].containerID",
        ),
        // The admin pool add: exit status 2 before etcd is contacted, the message on stderr.
        row(
            "pool add loopback",
            |w| w.admin(&["pool", "add", "127.0.0.0/8"]),
            Exit(2),
            "127.0.0.0/8",
        ),
        row(
            "pool add link-local",
            |w| w.admin(&["pool", "add", "169.254.0.0/16"]),
            Exit(2),
            "169.254.0.0/16",
        ),
        row(
            "pool add inside link-local",
            |w| w.admin(&["pool", "add", "169.254.1.0/24"]),
            Exit(2),
            "169.254.0.0/16",
        ),
        row(
            "pool add multicast",
            |w| w.admin(&["pool", "add", "224.0.0.0/4"]),
            Exit(2),
            "224.0.0.0/4",
        ),
        row(
            "pool add this network",
            |w| w.admin(&["pool", "add", "0.0.0.0/8"]),
            Exit(2),
            "0.0.0.0/8",
        ),
        row(
            "pool add reserved",
            |w| w.admin(&["pool", "add", "240.0.0.0/4"]),
            Exit(2),
            "240.0.0.0/4",
        ),
        row(
            "pool add holding the broadcast address",
            |w| w.admin(&["pool", "add", "255.255.255.192/26"]),
            Exit(2),
            "255.255.255.192/26",
        ),
        row(
            "pool add everything",
            |w| w.admin(&["pool", "add", "0.0.0.0/0"]),
            Exit(2),
            "0.0.0.0/0",
        ),
        row(
            "pool add IPv6 loopback",
            |w| w.admin(&["pool", "add", "::1/128"]),
            Exit(2),
            "::1/128",
        ),
        row(
            "pool add IPv6 unspecified",
            |w| w.admin(&["pool", "add", "::/128"]),
            Exit(2),
            "::/128",
        ),
        row(
            "pool add IPv6 multicast",
            |w| w.admin(&["pool", "add", "ff00::/8"]),
            Exit(2),
            "ff00::/8",
        ),
        row(
            "pool add IPv6 link-local",
            |w| w.admin(&["pool", "add", "fe80::/10"]),
            Exit(2),
            "fe80::/10",
        ),
        row(
            "pool add IPv4-mapped",
            |w| w.admin(&["pool", "add", "::ffff:0:0/96"]),
            Exit(2),
            "::ffff:0:0/96",
        ),
        row(
            "pool add with host bits",
            |w| w.admin(&["pool", "add", "10.214.0.1/24"]),
            Exit(2),
            "10.214.0.1/24",
        ),
        row(
            "pool add not a CIDR",
            |w| w.admin(&["pool", "add", "10.214.0.0/40"]),
            Exit(2),
            "10.214.0.0/40",
        ),
    ]
}

/// Runs one row; returns how long the binary ran and what went wrong, if anything.
fn run_row(world: &World, row: &Row) -> (Duration, Option<String>) {
    let input = (row.input)(world);
    let before = world.snapshot();
    let started = Instant::now();
    let (status, stdout, stderr) = if input.args.is_empty() {
        let out = run_plugin(input.binary, &input.env, &input.stdin);
        (out.code(), out.stdout, out.stderr)
    } else {
        let mut cmd = tests::plugin::by_hand(input.binary);
        cmd.args(&input.args);
        if let Some(endpoints) = input.env.get("ETCD_ENDPOINTS") {
            cmd.env("ETCD_ENDPOINTS", endpoints);
        }
        let out = cmd.output().expect("run calico-ipam admin mode");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let took = started.elapsed();
    let shown = format!("status {status:?}\nstdout: {stdout}\nstderr: {stderr}");
    let mut problems = Vec::new();
    match row.expect {
        Expect::Code(code) => {
            let error: Option<Value> = serde_json::from_str(stdout.trim()).ok();
            let got = error.as_ref().and_then(|e| e["code"].as_u64());
            let text = error
                .as_ref()
                .map(|e| {
                    let field = |name: &str| e[name].as_str().unwrap_or_default().to_string();
                    format!("{} {}", field("msg"), field("details"))
                })
                .unwrap_or_default();
            if status != Some(1) || got != Some(code) {
                problems.push(format!("expected error code {code}, exit status 1"));
            }
            if !text.contains(&row.culprit) {
                problems.push(format!("message does not name {:?}", row.culprit));
            }
        }
        Expect::Exit(exit) => {
            if status != Some(exit) {
                problems.push(format!("expected exit status {exit}"));
            }
            if !stderr.contains(&row.culprit) {
                problems.push(format!("stderr does not name {:?}", row.culprit));
            }
        }
    }
    if took >= ROW_BOUND {
        problems.push(format!("took {took:?}, more than {ROW_BOUND:?}"));
    }
    let after = world.snapshot();
    if after != before {
        problems.push(format!(
            "left state behind:\nbefore {before:?}\nafter  {after:?}"
        ));
    }
    let failure =
        (!problems.is_empty()).then(|| format!("{}: {}\n{shown}", row.name, problems.join("; ")));
    (took, failure)
}

#[test]
#[ignore = "root: real etcd and netns"]
fn bad_inputs_are_refused_with_their_code_naming_the_culprit_and_leave_nothing() {
    let world = World::new();
    let rows = rows();
    assert!(rows.len() >= 60, "the table has {} rows", rows.len());
    let start = world.snapshot();
    assert_eq!(start.netns_links, ["lo"], "fresh netns");
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, "");
    for row in &rows {
        let (took, failure) = run_row(&world, row);
        failures.extend(failure);
        if took > slowest.0 {
            slowest = (took, &row.name);
        }
    }
    println!(
        "{} rows; slowest run {:?} ({})",
        rows.len(),
        slowest.0,
        slowest.1
    );
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n\n")
    );
    assert_eq!(world.snapshot(), start);
}
