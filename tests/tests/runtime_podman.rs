//! A real container runtime runs `calico`: podman with its CNI backend (libcni) reads a
//! `.conflist` naming `calico`, calls ADD when a container starts and DEL when it is removed.
//! A container on two networks gets one ADD per network, under `eth0` and `eth1`.
//!
//! Podman is kept apart from the machine's own setup: its storage, run and temp dirs,
//! `containers.conf` (given by `CONTAINERS_CONF`), network config dir and rootfs all live in
//! one temp dir, and the plugin dir is the bed's `CNI_PATH`. Nothing is written to
//! `/etc/containers`, `/etc/cni/net.d`, `/opt/cni/bin` or podman's default storage; only
//! libcni's result cache (`/var/lib/cni/results`) holds an entry while a container runs. The
//! container runtime is `runc` with explicit ulimits (`scripts/install-deps.sh` installs the
//! packages).

mod ipam_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ipam_support::assert_no_allocations;
use serde_json::Value;
use tests::kernel::{eventually, host_link, host_routes_to, ping};
use tests::plugin::HOST_LOCAL;
use tests::{GATEWAY, TempDir, TestBed, host_veth_name, host_veth_name_for, names};

const PODMAN: &str = "/usr/bin/podman";
const BUSYBOX: &str = "/bin/busybox";

/// `PATH` for podman (it finds `runc` and `conmon` there); nothing else leaks from the
/// test's environment.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long one podman command may take (`timeout` kills it after that).
const PODMAN_TIMEOUT_SECS: &str = "120";

/// Where podman finds the plugins the bed's `CNI_PATH` lacks (Debian `containernetworking-plugins`).
fn reference_plugin_dir() -> String {
    Path::new(HOST_LOCAL)
        .parent()
        .expect("host-local has a parent dir")
        .display()
        .to_string()
}

/// A podman confined to one temp dir. Dropping it removes every container of its storage
/// (which runs CNI DEL for each), unmounts whatever is still mounted under the dir, and
/// removes the dir.
struct Podman {
    dir: TempDir,
}

impl Podman {
    /// A podman whose CNI networks are read from `net.d/` in its dir and whose plugins are
    /// looked up in `plugin_dir`, then in the reference plugins' dir.
    fn new(plugin_dir: &str) -> Podman {
        assert!(
            Path::new(PODMAN).is_file(),
            "{PODMAN} not found (scripts/install-deps.sh installs podman and runc)"
        );
        let podman = Podman {
            dir: TempDir::new("podman"),
        };
        for sub in ["net.d", "root", "runroot", "tmp"] {
            std::fs::create_dir_all(podman.dir.join(sub)).expect("podman dir");
        }
        let quoted = |p: &Path| serde_json::to_string(&p.display().to_string()).expect("path");
        let conf = format!(
            "[containers]\n\
             default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [network]\n\
             network_backend = \"cni\"\n\
             cni_plugin_dirs = [{}, {}]\n\
             network_config_dir = {}\n\
             [engine]\n\
             runtime = \"runc\"\n\
             tmp_dir = {}\n\
             env = [{}]\n",
            quoted(Path::new(plugin_dir)),
            quoted(Path::new(&reference_plugin_dir())),
            quoted(&podman.dir.join("net.d")),
            quoted(&podman.dir.join("tmp")),
            // Also for the podman that conmon runs to clean a container up, whose environment
            // is not the test's: its DEL must lock where the test's ADD did.
            quoted(Path::new(&format!(
                "CALICO_CNI_LOCK_DIR={}",
                tests::plugin::lock_dir().display()
            ))),
        );
        std::fs::write(podman.conf_path(), conf).expect("write containers.conf");
        podman
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.join("containers.conf")
    }

    /// Writes `<name>.conflist` into the network config dir.
    fn add_network(&self, conflist: &Value) {
        let name = conflist["name"].as_str().expect("conflist name");
        std::fs::write(
            self.dir.join("net.d").join(format!("{name}.conflist")),
            serde_json::to_vec_pretty(conflist).expect("conflist JSON"),
        )
        .expect("write conflist");
    }

    /// A busybox rootfs (`/bin/busybox` and its applet links) in the podman dir; returns its path.
    fn busybox_rootfs(&self) -> String {
        assert!(
            Path::new(BUSYBOX).is_file(),
            "{BUSYBOX} not found (scripts/install-deps.sh installs busybox-static)"
        );
        let rootfs = self.dir.join("rootfs");
        for sub in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
            std::fs::create_dir_all(rootfs.join(sub)).expect("rootfs dir");
        }
        std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).expect("copy busybox");
        let out = Command::new("chroot")
            .arg(&rootfs)
            .args(["/bin/busybox", "--install", "-s", "/bin"])
            .output()
            .expect("run chroot");
        assert!(
            out.status.success(),
            "busybox --install failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        rootfs.display().to_string()
    }

    /// `podman --root … --runroot … <args>` with only `PATH`, `CONTAINERS_CONF` and the test
    /// run's `CALICO_CNI_LOCK_DIR` (which podman hands on to the plugins) set, killed after
    /// [`PODMAN_TIMEOUT_SECS`].
    fn run(&self, args: &[&str]) -> std::io::Result<Output> {
        Command::new("timeout")
            .args(["--kill-after=5", PODMAN_TIMEOUT_SECS, PODMAN])
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .args(args)
            .env_clear()
            .env("PATH", PATH)
            .env("CONTAINERS_CONF", self.conf_path())
            .env("CALICO_CNI_LOCK_DIR", tests::plugin::lock_dir())
            .output()
    }

    /// Like [`Podman::run`], asserting success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).expect("run podman");
        assert!(
            out.status.success(),
            "podman {args:?} failed ({})\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        match self.run(&["rm", "--force", "--all", "--time", "0"]) {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "podman rm --all failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cannot run podman rm --all: {e}"),
        }
        // Deepest first, so that nested mounts go before their parents.
        let mut mounts = mounts_under(self.dir.path());
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in mounts {
            let _ = Command::new("umount").args(["-l", &mount]).output();
        }
    }
}

/// Mount points at or below `dir`, from `/proc/self/mountinfo`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .map(str::to_string)
        .collect()
}

/// The bed's `calico` + host-local config as the single plugin of a 1.0.0 conflist.
fn conflist(bed: &TestBed) -> Value {
    let plugin = bed.conf().set("cniVersion", "1.0.0").set("type", "calico");
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": bed.network,
        "plugins": [plugin.value()],
    })
}

/// The `inet <ip>/<prefix>` entries of `ip -4 addr show` output.
fn inet_addrs(output: &str) -> Vec<(String, u32)> {
    output
        .lines()
        .filter_map(|line| line.trim().strip_prefix("inet "))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|cidr| {
            let (ip, prefix) = cidr.split_once('/')?;
            Some((ip.to_string(), prefix.parse().ok()?))
        })
        .collect()
}

/// Reads the container id podman wrote to `cidfile`.
fn read_cid(cidfile: &Path) -> String {
    let cid = std::fs::read_to_string(cidfile)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", cidfile.display()));
    let cid = cid.trim().to_string();
    assert_eq!(cid.len(), 64, "unexpected container id {cid:?}");
    cid
}

#[test]
#[ignore = "root: podman, real etcd"]
fn podman_runs_calico_for_add_and_del() {
    let bed = TestBed::new();
    // Declared after the bed, so it is dropped first: its DELs still reach etcd.
    let podman = Podman::new(&bed.cni_path.path());
    podman.add_network(&conflist(&bed));
    let rootfs = podman.busybox_rootfs();
    let network = bed.network.as_str();

    // A container that prints its own network view and is removed when it exits.
    let cidfile = podman.dir.join("first.cid");
    let cidfile_arg = cidfile.display().to_string();
    let out = podman.ok(&[
        "run",
        "--rm",
        "--cidfile",
        &cidfile_arg,
        "--network",
        network,
        "--rootfs",
        &rootfs,
        "/bin/sh",
        "-c",
        "ip -4 addr show eth0; ip route",
    ]);
    let addrs = inet_addrs(&out);
    assert_eq!(addrs.len(), 1, "one IPv4 address on eth0 expected:\n{out}");
    let (ip, prefix) = &addrs[0];
    assert!(
        bed.subnet.contains(ip) && *prefix == 32,
        "{ip}/{prefix} is not a /32 of {}:\n{out}",
        bed.subnet.cidr()
    );
    assert!(
        out.lines()
            .any(|l| l.trim().starts_with(&format!("default via {GATEWAY} "))),
        "no default route via {GATEWAY}:\n{out}"
    );
    bed.assert_nothing_left(&[&read_cid(&cidfile)]);

    // A running container: its endpoint, host route and reachability, then removal.
    let name = names::unique("ctr");
    let cid = podman
        .ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            network,
            "--rootfs",
            &rootfs,
            "/bin/sleep",
            "60",
        ])
        .trim()
        .to_string();
    let inspect: Value =
        serde_json::from_str(&podman.ok(&["inspect", &cid])).expect("podman inspect prints JSON");
    assert_eq!(inspect[0]["Id"].as_str(), Some(cid.as_str()), "{inspect}");
    let ip = inspect[0]["NetworkSettings"]["Networks"][network]["IPAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("no address on network {network}: {inspect}"))
        .to_string();
    assert!(
        bed.subnet.contains(&ip),
        "{ip} not in {}",
        bed.subnet.cidr()
    );

    let key = bed.endpoint_key(&cid, "eth0");
    assert!(
        key.contains(&format!("/workload/cni/{cid}/")),
        "orchestrator is not cni: {key}"
    );
    assert_eq!(bed.node_keys(), vec![key.clone()], "node {}", bed.node);
    let endpoint = bed.endpoint(&cid, "eth0").expect("endpoint written");
    assert_eq!(
        endpoint["ipv4_nets"],
        serde_json::json!([format!("{ip}/32")]),
        "{key}: {endpoint}"
    );
    assert_eq!(
        endpoint["name"].as_str(),
        Some(host_veth_name(&cid).as_str()),
        "{key}: {endpoint}"
    );
    let routes = host_routes_to(&ip);
    assert_eq!(routes.len(), 1, "one host route to {ip}: {routes:?}");
    assert_eq!(
        routes[0].dev.as_deref(),
        Some(host_veth_name(&cid).as_str())
    );
    assert!(ping(&ip), "{ip} does not answer ping from the host");

    podman.ok(&["rm", "--force", "--time", "0", &cid]);
    bed.assert_nothing_left(&[&cid]);
    assert_eq!(podman.ok(&["ps", "--all", "--quiet"]).trim(), "");
}

/// `calico` + `calico-ipam` with IPv4 and IPv6 for `network`, as the single plugin of a 1.0.0
/// conflist.
fn dual_stack_conflist(bed: &TestBed, network: &str) -> Value {
    let plugin = bed
        .fixture("calico-ipam.conf", network)
        .set("cniVersion", "1.0.0")
        .set_ipam("assign_ipv6", "true");
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [plugin.value()],
    })
}

/// The global addresses (`ip`, prefix) of `ifname` in the netns named `netns`, both families.
fn global_addrs(netns: &str, ifname: &str) -> Vec<(String, u64)> {
    let out = Command::new("ip")
        .args([
            "-j", "-n", netns, "addr", "show", "dev", ifname, "scope", "global",
        ])
        .output()
        .expect("run ip addr");
    assert!(
        out.status.success(),
        "ip -n {netns} addr show {ifname}: {out:?}"
    );
    let links: Value = serde_json::from_slice(&out.stdout).expect("ip -j prints JSON");
    let mut addrs: Vec<(String, u64)> = links
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|link| link["addr_info"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| Some((a["local"].as_str()?.to_string(), a["prefixlen"].as_u64()?)))
        .collect();
    addrs.sort();
    addrs
}

/// The host's IPv6 routes into `pool` (`fd00:213:<n>::/120`).
fn host_ipv6_routes_into(pool: &str) -> Vec<String> {
    let prefix = pool.trim_end_matches(":/120");
    let out = Command::new("ip")
        .args(["-6", "route", "show"])
        .output()
        .expect("run ip -6 route");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
#[ignore = "root: podman, real etcd"]
fn podman_container_on_two_dual_stack_networks_gets_an_interface_per_network() {
    let bed = TestBed::new();
    let pool6 = bed.subnet.ipv6_cidr(213, 120);
    bed.add_pool(&bed.subnet.cidr());
    bed.add_pool(&pool6);
    let networks = [bed.network.clone(), names::unique("net")];
    // Declared after the bed, so it is dropped first: its DELs still reach etcd.
    let podman = Podman::new(&bed.cni_path.path());
    for network in &networks {
        podman.add_network(&dual_stack_conflist(&bed, network));
    }
    let rootfs = podman.busybox_rootfs();

    let name = names::unique("ctr");
    let cid = podman
        .ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &networks[0],
            "--network",
            &networks[1],
            "--rootfs",
            &rootfs,
            "/bin/sleep",
            "60",
        ])
        .trim()
        .to_string();
    let inspect: Value =
        serde_json::from_str(&podman.ok(&["inspect", &cid])).expect("podman inspect prints JSON");
    let sandbox = inspect[0]["NetworkSettings"]["SandboxKey"]
        .as_str()
        .unwrap_or_else(|| panic!("no SandboxKey: {inspect}"));
    let netns = Path::new(sandbox)
        .file_name()
        .expect("netns name")
        .to_string_lossy()
        .into_owned();

    // Each network: its own endpoint, interface, host veth and addresses of both families.
    let mut seen = Vec::new();
    for ifname in ["eth0", "eth1"] {
        let key = bed.endpoint_key(&cid, ifname);
        let endpoint = bed
            .endpoint(&cid, ifname)
            .unwrap_or_else(|| panic!("no endpoint at {key}"));
        let network = endpoint["profile_ids"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: {endpoint}"))
            .to_string();
        assert!(networks.contains(&network), "{key}: {endpoint}");
        assert_eq!(
            endpoint["profile_ids"],
            serde_json::json!([network]),
            "{key}: {endpoint}"
        );
        let settings = &inspect[0]["NetworkSettings"]["Networks"][&network];
        let ip4 = settings["IPAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ip6 = settings["GlobalIPv6Address"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(bed.subnet.contains(&ip4), "{ip4} of {network}: {settings}");
        assert!(
            ip6.starts_with(pool6.trim_end_matches(":/120")),
            "{ip6} of {network} not in {pool6}: {settings}"
        );
        assert_eq!(
            endpoint["ipv4_nets"],
            serde_json::json!([format!("{ip4}/32")]),
            "{key}: {endpoint}"
        );
        assert_eq!(
            endpoint["ipv6_nets"],
            serde_json::json!([format!("{ip6}/128")]),
            "{key}: {endpoint}"
        );
        let mut expected = vec![(ip4.clone(), 32), (ip6.clone(), 128)];
        expected.sort();
        assert_eq!(
            global_addrs(&netns, ifname),
            expected,
            "{ifname} in {netns}"
        );
        let veth = host_veth_name_for(&cid, ifname);
        assert_eq!(endpoint["name"].as_str(), Some(veth.as_str()), "{key}");
        let routes = host_routes_to(&ip4);
        assert_eq!(routes.len(), 1, "one host route to {ip4}: {routes:?}");
        assert_eq!(routes[0].dev.as_deref(), Some(veth.as_str()));
        assert!(
            ping(&ip4),
            "{ip4} ({ifname}) does not answer ping from the host"
        );
        assert!(
            ping(&ip6),
            "{ip6} ({ifname}) does not answer ping from the host"
        );
        seen.push(network);
    }
    seen.sort();
    let mut expected = networks.to_vec();
    expected.sort();
    assert_eq!(seen, expected, "one interface per network");
    assert_eq!(bed.node_keys().len(), 2, "{:?}", bed.node_keys());

    podman.ok(&["rm", "--force", "--time", "0", &cid]);
    bed.assert_nothing_left(&[&cid]);
    let eth1_veth = host_veth_name_for(&cid, "eth1");
    assert!(
        eventually(Duration::from_secs(5), || host_link(&eth1_veth).is_none()),
        "host veth {eth1_veth} of eth1 is left"
    );
    assert_eq!(host_ipv6_routes_into(&pool6), Vec::<String>::new());
    assert_no_allocations(&bed.etcd, "after podman rm");
    assert_eq!(podman.ok(&["ps", "--all", "--quiet"]).trim(), "");
}
