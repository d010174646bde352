//! The Kubernetes path with a real runtime: containerd's CRI plugin (what the kubelet talks to)
//! runs `calico` for every pod sandbox, with the pod's namespace, name, uid and sandbox id in
//! `CNI_ARGS`, and DELs each sandbox twice (StopPodSandbox with the netns, RemovePodSandbox
//! after the netns is gone).
//!
//! The test drives containerd over its CRI gRPC socket, as the kubelet would, with a small
//! client (`k8s-cri`). Its containerd is its own: root, state, socket, CNI config dir and plugin
//! dir all live in one temp dir; nothing is read from or written to `/etc/containerd`,
//! `/etc/cni/net.d`, `/opt/cni/bin` or containerd's default root. The sandbox ("pause") image
//! is a busybox rootfs imported without a registry. `restrict_oom_score_adj` is on, because
//! this host refuses the -998 OOM score the sandbox asks for.
//!
//! No Kubernetes API is involved: `policy` is unset, so Kubernetes mode comes from `CNI_ARGS`
//! alone.

mod ipam_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use ipam_support::assert_no_allocations;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StatusRequest, StopPodSandboxRequest,
};
use serde_json::{Value, json};
use tests::kernel::{eventually, host_ipv4_routes, host_link, host_routes_to, ping};
use tests::{TempDir, TestBed, names};
use tonic::transport::{Channel, Endpoint, Uri};

const CONTAINERD: &str = "/usr/bin/containerd";
const CTR: &str = "/usr/bin/ctr";
const BUSYBOX: &str = "/bin/busybox";
/// Containerd needs `loopback` for the sandbox's `lo` (Debian `containernetworking-plugins`).
const LOOPBACK: &str = "/usr/lib/cni/loopback";

/// `PATH` for containerd (it finds `containerd-shim-runc-v2` and `runc` there) and `ctr`.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The sandbox image, imported locally; containerd never pulls it.
const PAUSE_IMAGE: &str = "localhost/calico-cni-test/pause:1";

/// How long containerd may take to come up with a ready network, and one CRI call may take.
const STARTUP: Duration = Duration::from_secs(30);
const CRI_CALL: Duration = Duration::from_secs(60);
/// Where containerd 1.6 puts its shims' sockets whatever its config says.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// How long the kernel may take to remove a veth after its netns went away.
const TEARDOWN: Duration = Duration::from_secs(5);

/// A containerd confined to one temp dir, with a CRI client on its socket. Dropping it stops
/// and removes every sandbox left (CNI DEL for each), stops containerd, unmounts whatever is
/// still mounted under the dir and removes the dir.
struct Containerd {
    process: Option<Child>,
    runtime: tokio::runtime::Runtime,
    client: Option<RuntimeServiceClient<Channel>>,
    /// `CALICO_CNI_LOCK_DIR` of every plugin run containerd makes.
    lock_dir: PathBuf,
    /// The directories of [`SHIM_SOCKET_DIR`] this containerd created (removed when empty).
    shim_dirs_created: Vec<&'static str>,
    dir: TempDir,
}

impl Containerd {
    /// Starts containerd with `conflist` as its only CNI network and the plugins of
    /// `plugin_dir` (which gets a `loopback` link), imports the sandbox image and waits until
    /// CRI reports the runtime and the network ready.
    fn start(plugin_dir: &Path, conflist: &Value) -> Containerd {
        for binary in [CONTAINERD, CTR] {
            assert!(
                Path::new(binary).is_file(),
                "{binary} not found (scripts/install-deps.sh installs containerd)"
            );
        }
        assert!(
            Path::new(LOOPBACK).is_file(),
            "{LOOPBACK} not found (apt-get install containernetworking-plugins)"
        );
        std::os::unix::fs::symlink(LOOPBACK, plugin_dir.join("loopback")).expect("link loopback");
        let dir = TempDir::new("containerd");
        for sub in ["root", "state", "opt", "net.d", "locks", "runc"] {
            std::fs::create_dir_all(dir.join(sub)).expect("containerd dir");
        }
        // The network config must exist before containerd starts, or CRI reports the
        // network not ready until its next config reload.
        std::fs::write(
            dir.join("net.d").join("10-calico.conflist"),
            serde_json::to_vec_pretty(conflist).expect("conflist JSON"),
        )
        .expect("write conflist");
        let quoted = |p: &Path| serde_json::to_string(&p.display().to_string()).expect("path");
        let config = format!(
            "version = 2\n\
             root = {root}\n\
             state = {state}\n\
             disabled_plugins = [\"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.btrfs\", \
             \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.snapshotter.v1.zfs\"]\n\
             [grpc]\n\
             address = {socket}\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n\
             path = {opt}\n\
             [plugins.\"io.containerd.grpc.v1.cri\"]\n\
             restrict_oom_score_adj = true\n\
             sandbox_image = \"{PAUSE_IMAGE}\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\".cni]\n\
             bin_dir = {bin_dir}\n\
             conf_dir = {conf_dir}\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
             runtime_type = \"io.containerd.runc.v2\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n\
             Root = {runc_root}\n",
            root = quoted(&dir.join("root")),
            state = quoted(&dir.join("state")),
            socket = quoted(&dir.join("containerd.sock")),
            opt = quoted(&dir.join("opt")),
            bin_dir = quoted(plugin_dir),
            conf_dir = quoted(&dir.join("net.d")),
            runc_root = quoted(&dir.join("runc")),
        );
        std::fs::write(dir.join("config.toml"), config).expect("write containerd config");
        let shim_dirs_created = [SHIM_SOCKET_DIR, "/run/containerd"]
            .into_iter()
            .filter(|d| !Path::new(d).exists())
            .collect();
        let log = std::fs::File::create(dir.join("containerd.log")).expect("containerd log");
        let lock_dir = dir.join("locks");
        let process = Command::new(CONTAINERD)
            .arg("--config")
            .arg(dir.join("config.toml"))
            .env_clear()
            .env("PATH", PATH)
            // libcni hands containerd's environment to every plugin run.
            .env("CALICO_CNI_LOCK_DIR", &lock_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("containerd log"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut containerd = Containerd {
            process: Some(process),
            runtime,
            client: None,
            lock_dir,
            shim_dirs_created,
            dir,
        };
        containerd.connect();
        containerd.import_pause_image();
        containerd.wait_until_ready();
        containerd
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// Connects the CRI client once the socket accepts connections.
    fn connect(&mut self) {
        let socket = self.socket();
        let started = Instant::now();
        while !socket.exists() {
            assert!(
                started.elapsed() < STARTUP,
                "containerd did not create {} within {STARTUP:?}:\n{}",
                socket.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let connector = tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        });
        // The URI is required by tonic but unused: every connection goes to the socket.
        let endpoint = Endpoint::from_static("http://[::]:50051");
        let channel = self
            .runtime
            .block_on(endpoint.connect_with_connector(connector))
            .unwrap_or_else(|e| panic!("cannot connect to containerd: {e}\n{}", self.log()));
        self.client = Some(RuntimeServiceClient::new(channel));
    }

    /// Runs one CRI call with a timeout.
    fn call<T, F>(&self, what: &str, f: impl FnOnce(RuntimeServiceClient<Channel>) -> F) -> T
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.client.clone().expect("CRI client connected");
        let result = self
            .runtime
            .block_on(async { tokio::time::timeout(CRI_CALL, f(client)).await });
        match result {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => panic!("CRI {what} failed: {status}\n{}", self.log()),
            Err(_) => panic!("CRI {what} took longer than {CRI_CALL:?}\n{}", self.log()),
        }
    }

    /// Imports the sandbox image: a busybox rootfs as the single layer of a Docker image
    /// archive written here (`manifest.json`, config, layer tar), loaded with
    /// `ctr images import` into CRI's `k8s.io` namespace. No registry, no other image tool.
    fn import_pause_image(&self) {
        assert!(
            Path::new(BUSYBOX).is_file(),
            "{BUSYBOX} not found (scripts/install-deps.sh installs busybox-static)"
        );
        let work = self.dir.join("image");
        let rootfs = work.join("rootfs");
        for sub in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
            std::fs::create_dir_all(rootfs.join(sub)).expect("rootfs dir");
        }
        std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).expect("copy busybox");
        run_ok(Command::new("chroot").arg(&rootfs).args([
            "/bin/busybox",
            "--install",
            "-s",
            "/bin",
        ]));
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&rootfs)
                .arg("-cf")
                .arg(work.join("layer.tar"))
                .arg("."),
        );
        // The image config names its layer by the digest of the uncompressed tar; containerd
        // checks it when it unpacks the image.
        let sha = run_ok(Command::new("sha256sum").arg(work.join("layer.tar")));
        let digest = String::from_utf8_lossy(&sha.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/bin/sleep", "2147483647"]},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{digest}")]},
        });
        let manifest = json!([{
            "Config": "config.json",
            "RepoTags": [PAUSE_IMAGE],
            "Layers": ["layer.tar"],
        }]);
        std::fs::write(work.join("config.json"), config.to_string()).expect("image config");
        std::fs::write(work.join("manifest.json"), manifest.to_string()).expect("manifest");
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&work)
                .arg("-cf")
                .arg(work.join("pause.tar"))
                .args(["manifest.json", "config.json", "layer.tar"]),
        );
        run_ok(
            Command::new(CTR)
                .arg("--address")
                .arg(self.socket())
                .args(["-n", "k8s.io", "images", "import"])
                .arg(work.join("pause.tar"))
                .env_clear()
                .env("PATH", PATH),
        );
    }

    /// Waits until CRI's Status reports `RuntimeReady` and `NetworkReady`.
    fn wait_until_ready(&self) {
        let started = Instant::now();
        loop {
            let status = self.call("Status", |mut c| async move {
                c.status(StatusRequest { verbose: false }).await
            });
            let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
            let ready = |kind: &str| conditions.iter().any(|c| c.r#type == kind && c.status);
            if ready("RuntimeReady") && ready("NetworkReady") {
                return;
            }
            assert!(
                started.elapsed() < STARTUP,
                "containerd not ready within {STARTUP:?}: {conditions:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// RunPodSandbox for `pod` (attempt `attempt`); returns the sandbox id.
    fn run_sandbox(&self, pod: &Pod, attempt: u32) -> String {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                namespace: pod.namespace.clone(),
                attempt,
            }),
            hostname: pod.name.clone(),
            log_directory: self.dir.join("pod-logs").display().to_string(),
            ..Default::default()
        };
        let response = self.call("RunPodSandbox", |mut c| async move {
            c.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
        });
        response.pod_sandbox_id
    }

    /// The sandbox's IP (from CRI) and its network namespace path (from the verbose info).
    fn sandbox_network(&self, id: &str) -> (String, String) {
        let id = id.to_string();
        let response = self.call("PodSandboxStatus", |mut c| async move {
            c.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id,
                verbose: true,
            })
            .await
        });
        let ip = response
            .status
            .as_ref()
            .and_then(|s| s.network.as_ref())
            .map(|n| n.ip.clone())
            .unwrap_or_default();
        let info: Value = response
            .info
            .get("info")
            .and_then(|raw| serde_json::from_str(raw).ok())
            .unwrap_or_else(|| panic!("no verbose info: {:?}", response.info));
        let netns = info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|ns| ns["type"] == "network")
            .and_then(|ns| ns["path"].as_str())
            .unwrap_or_else(|| panic!("no network namespace in the sandbox spec: {info}"))
            .to_string();
        (ip, netns)
    }

    /// StopPodSandbox (CNI DEL with the netns, which containerd then removes).
    fn stop_sandbox(&self, id: &str) {
        let id = id.to_string();
        self.call("StopPodSandbox", |mut c| async move {
            c.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id })
                .await
        });
    }

    /// RemovePodSandbox (CNI DEL again, the netns gone).
    fn remove_sandbox(&self, id: &str) {
        let id = id.to_string();
        self.call("RemovePodSandbox", |mut c| async move {
            c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
        });
    }

    /// The ids of every sandbox containerd knows.
    fn sandbox_ids(&self) -> Vec<String> {
        let response = self.call("ListPodSandbox", |mut c| async move {
            c.list_pod_sandbox(ListPodSandboxRequest { filter: None })
                .await
        });
        response.items.into_iter().map(|s| s.id).collect()
    }

    /// The files left in the plugins' lock dir, but for the kept ones, which stay by design: the
    /// node's IPAM lock (`ipam:<node>.flock`) and the ADD slots (`add-slot:<n>.flock`).
    fn lock_files(&self) -> Vec<String> {
        std::fs::read_dir(&self.lock_dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.ends_with(".flock"))
            .collect()
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("containerd log (tail):\n{}", tail.join("\n"))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.client.is_some() {
            let ids = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.sandbox_ids()));
            for id in ids.unwrap_or_default() {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.stop_sandbox(&id);
                    self.remove_sandbox(&id);
                }));
            }
        }
        self.client = None;
        if let Some(mut process) = self.process.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &process.id().to_string()])
                .output();
            let started = Instant::now();
            while matches!(process.try_wait(), Ok(None)) && started.elapsed() < STARTUP {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = process.kill();
            let _ = process.wait();
        }
        // Deepest first, so that nested mounts go before their parents.
        let mut mounts = mounts_under(self.dir.path());
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in mounts {
            let _ = Command::new("umount").args(["-l", &mount]).output();
        }
        // Only empty ones: another containerd may have started using them meanwhile.
        for dir in &self.shim_dirs_created {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Runs a command, asserting success.
fn run_ok(command: &mut Command) -> Output {
    let out = command.output().expect("run command");
    assert!(
        out.status.success(),
        "{command:?} failed ({})\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
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

/// A pod as the kubelet describes it to CRI.
struct Pod {
    namespace: String,
    name: String,
    uid: String,
}

impl Pod {
    fn unique() -> Pod {
        Pod {
            namespace: names::unique("ns"),
            name: names::unique("pod"),
            uid: names::unique("uid"),
        }
    }

    /// `<namespace>.<name>`: the workload id.
    fn workload(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }

    /// `cali` + the first 11 hex digits of SHA-1(`<namespace>.<name>`), computed with `sha1sum`.
    fn host_veth(&self) -> String {
        let mut child = Command::new("sha1sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run sha1sum");
        child
            .stdin
            .take()
            .expect("sha1sum stdin")
            .write_all(self.workload().as_bytes())
            .expect("write to sha1sum");
        let out = child.wait_with_output().expect("sha1sum output");
        format!("cali{}", &String::from_utf8_lossy(&out.stdout)[..11])
    }

    fn endpoint_key(&self, bed: &TestBed) -> String {
        format!(
            "/calico/v1/host/{}/workload/k8s/{}/endpoint/eth0",
            bed.node,
            self.workload()
        )
    }
}

/// The bed's `calico` + `calico-ipam` config (its subnet as the pool) as the single plugin of
/// a 1.0.0 conflist.
fn conflist(bed: &TestBed) -> Value {
    let plugin = bed
        .calico_ipam_conf()
        .set("cniVersion", "1.0.0")
        .set("type", "calico");
    json!({
        "cniVersion": "1.0.0",
        "name": bed.network,
        "plugins": [plugin.value()],
    })
}

/// True when `ip` answers a ping sent from inside `netns` (a path) within a few attempts.
fn ping_from(netns: &str, ip: &str) -> bool {
    (0..3).any(|_| {
        Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .args(["ping", "-c", "1", "-W", "2", ip])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

/// Asserts the pod's endpoint names `sandbox` and `ip`, and its veth and host route exist.
fn assert_pod_served_by(bed: &TestBed, pod: &Pod, sandbox: &str, ip: &str) {
    let key = pod.endpoint_key(bed);
    let endpoint = bed
        .etcd
        .get_json(&key)
        .unwrap_or_else(|| panic!("no endpoint at {key}"));
    assert_eq!(
        endpoint["active_instance_id"],
        json!(sandbox),
        "{key}: {endpoint}"
    );
    assert_eq!(
        endpoint["ipv4_nets"],
        json!([format!("{ip}/32")]),
        "{key}: {endpoint}"
    );
    assert_eq!(
        endpoint["name"],
        json!(pod.host_veth()),
        "{key}: {endpoint}"
    );
    assert_eq!(
        endpoint["profile_ids"],
        json!([bed.network]),
        "{key}: {endpoint}"
    );
    assert!(host_link(&pod.host_veth()).is_some(), "host veth of {key}");
    let routes = host_routes_to(ip);
    assert_eq!(routes.len(), 1, "one host route to {ip}: {routes:?}");
    assert_eq!(routes[0].dev.as_deref(), Some(pod.host_veth().as_str()));
}

/// Asserts that nothing of the pods is left: no endpoint or other container key, no address
/// held in a block, no host veth, no host route into the pool, no lock file.
fn assert_nothing_left(bed: &TestBed, containerd: &Containerd, pods: &[&Pod]) {
    for pod in pods {
        let veth = pod.host_veth();
        assert!(
            eventually(TEARDOWN, || host_link(&veth).is_none()),
            "host veth {veth} of pod {} is left",
            pod.workload()
        );
    }
    let routes_left = || {
        host_ipv4_routes()
            .into_iter()
            .filter(|r| bed.subnet.contains(&r.dst))
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(TEARDOWN, || routes_left().is_empty()),
        "host routes left: {:?}",
        routes_left()
    );
    assert_eq!(
        bed.container_state_keys(),
        Vec::<String>::new(),
        "etcd keys left"
    );
    assert_no_allocations(&bed.etcd, "after the sandboxes were removed");
    assert_eq!(
        containerd.lock_files(),
        Vec::<String>::new(),
        "lock files left"
    );
}

#[test]
#[ignore = "root: containerd, real etcd"]
fn containerd_cri_pods_get_k8s_endpoints_and_removal_leaves_nothing() {
    let bed = TestBed::new();
    let conflist = conflist(&bed);
    // Declared after the bed, so it is dropped first: its DELs still reach etcd.
    let containerd = Containerd::start(Path::new(&bed.cni_path.path()), &conflist);

    // Two pods: Kubernetes-mode endpoints, addresses from the pool, reachable from each other.
    let (web, db) = (Pod::unique(), Pod::unique());
    let web_sandbox = containerd.run_sandbox(&web, 0);
    let db_sandbox = containerd.run_sandbox(&db, 0);
    let (web_ip, web_netns) = containerd.sandbox_network(&web_sandbox);
    let (db_ip, db_netns) = containerd.sandbox_network(&db_sandbox);
    for (pod, sandbox, ip) in [(&web, &web_sandbox, &web_ip), (&db, &db_sandbox, &db_ip)] {
        assert!(
            bed.subnet.contains(ip),
            "{ip} of {} not in the pool {}",
            pod.workload(),
            bed.subnet.cidr()
        );
        assert_pod_served_by(&bed, pod, sandbox, ip);
    }
    let mut keys = bed.node_keys();
    keys.sort();
    let mut expected = vec![web.endpoint_key(&bed), db.endpoint_key(&bed)];
    expected.sort();
    assert_eq!(keys, expected, "keys under node {}", bed.node);
    assert!(
        ping_from(&web_netns, &db_ip),
        "{db_ip} unreachable from {web_netns}"
    );
    assert!(
        ping_from(&db_netns, &web_ip),
        "{web_ip} unreachable from {db_netns}"
    );
    assert!(ping(&web_ip), "{web_ip} unreachable from the host");

    // The web pod's sandbox is replaced (attempt 1): the new sandbox takes the endpoint over,
    // and the late DELs of the first (stop, then remove) leave it serving.
    let web_second = containerd.run_sandbox(&web, 1);
    let (web_second_ip, web_second_netns) = containerd.sandbox_network(&web_second);
    assert_pod_served_by(&bed, &web, &web_second, &web_second_ip);
    containerd.stop_sandbox(&web_sandbox);
    containerd.remove_sandbox(&web_sandbox);
    assert_pod_served_by(&bed, &web, &web_second, &web_second_ip);
    assert!(
        ping_from(&db_netns, &web_second_ip),
        "{web_second_ip} unreachable from {db_netns} after the first sandbox's late DEL"
    );
    assert!(
        ping_from(&web_second_netns, &db_ip),
        "{db_ip} unreachable from {web_second_netns}"
    );
    if web_second_ip != web_ip {
        assert!(
            host_routes_to(&web_ip).is_empty(),
            "route to the first sandbox's {web_ip} left"
        );
    }

    // Stop and remove the rest: nothing of either pod is left.
    for sandbox in [&web_second, &db_sandbox] {
        containerd.stop_sandbox(sandbox);
        containerd.remove_sandbox(sandbox);
    }
    assert_eq!(containerd.sandbox_ids(), Vec::<String>::new());
    assert_nothing_left(&bed, &containerd, &[&web, &db]);
    for netns in [&web_netns, &web_second_netns, &db_netns] {
        assert!(!Path::new(netns).exists(), "netns {netns} left");
    }
}
