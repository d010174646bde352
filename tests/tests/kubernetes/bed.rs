//! What the Kubernetes tests share: a [`TestBed`] plus a stand-in API server, pods in it, the
//! plugin runs with the pod in `CNI_ARGS`, and the checks that read the result back.

#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tests::apiserver::{ApiServer, Auth};
use tests::kernel::{eventually, host_link, netns_ipv4_addrs};
use tests::{NetConf, Netns, PluginOutput, TestBed, names, run_plugin};

/// The service account token the stand-in API server accepts by default.
pub const TOKEN: &str = "k8s-cni-test-token";

/// How long the kernel may take to remove a veth after its peer or netns went away.
const TEARDOWN: Duration = Duration::from_secs(5);

/// A pod known to the API server (or deliberately not).
#[derive(Debug, Clone)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl PodRef {
    /// A pod with a unique namespace and name.
    pub fn unique() -> PodRef {
        PodRef {
            namespace: names::unique("ns"),
            name: names::unique("pod"),
        }
    }

    /// `<namespace>.<name>`: the workload id.
    pub fn workload(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }

    /// `CNI_ARGS` as the kubelet sends them for a sandbox.
    pub fn cni_args(&self, container_id: &str) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};\
             K8S_POD_INFRA_CONTAINER_ID={container_id}",
            self.namespace, self.name
        )
    }

    /// `cali` + the first 11 hex digits of SHA-1(`<namespace>.<name>`), computed with `sha1sum`.
    pub fn host_veth(&self) -> String {
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
        assert!(out.status.success(), "sha1sum failed");
        let digest = String::from_utf8_lossy(&out.stdout);
        format!("cali{}", &digest[..11])
    }
}

/// One sandbox of a pod: its container id and netns.
pub struct Sandbox {
    pub container_id: String,
    pub netns: Netns,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            container_id: names::container_id(),
            netns: Netns::new(),
        }
    }
}

/// A [`TestBed`] with a stand-in API server.
pub struct PodBed {
    // Before the bed: it listens on the loopback of the bed's host namespace.
    pub api: ApiServer,
    pub bed: TestBed,
}

impl PodBed {
    /// An API server that accepts [`TOKEN`].
    pub fn new() -> PodBed {
        PodBed::with_auth(Auth::Token(TOKEN.to_string()))
    }

    pub fn with_auth(auth: Auth) -> PodBed {
        let bed = TestBed::new();
        PodBed {
            api: ApiServer::start(auth),
            bed,
        }
    }

    /// A fixture with this bed's etcd, node, network, subnet, data dir and API server.
    pub fn conf(&self, file: &str) -> NetConf {
        let ca = self.api.ca_file().display().to_string();
        NetConf::fixture(
            file,
            &[
                ("NETWORK", &self.bed.network),
                ("ETCD_ENDPOINTS", self.bed.etcd.endpoint()),
                ("NODENAME", &self.bed.node),
                ("SUBNET", &self.bed.subnet.cidr()),
                ("DATA_DIR", &self.bed.data_dir.path_str()),
                ("K8S_API_ROOT", &self.api.url()),
                ("K8S_AUTH_TOKEN", TOKEN),
                ("K8S_CA", &ca),
            ],
        )
    }

    /// A pod with a unique name, added to the API server.
    pub fn add_pod(&self, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> PodRef {
        let pod = PodRef::unique();
        self.api
            .add_pod(&pod.namespace, &pod.name, labels, annotations);
        pod
    }

    /// Runs `calico` for `pod` in `sandbox` with interface `eth0`.
    pub fn run(
        &self,
        command: &str,
        conf: &NetConf,
        pod: &PodRef,
        sandbox: &Sandbox,
    ) -> PluginOutput {
        self.run_with_args(command, conf, &pod.cni_args(&sandbox.container_id), sandbox)
    }

    /// Runs `calico` with the given `CNI_ARGS`.
    pub fn run_with_args(
        &self,
        command: &str,
        conf: &NetConf,
        args: &str,
        sandbox: &Sandbox,
    ) -> PluginOutput {
        let env = self
            .bed
            .env(
                command,
                &sandbox.container_id,
                &sandbox.netns.path(),
                "eth0",
            )
            .set("CNI_ARGS", args);
        run_plugin("calico", &env, &conf.to_bytes())
    }

    pub fn add(&self, conf: &NetConf, pod: &PodRef, sandbox: &Sandbox) -> PluginOutput {
        self.run("ADD", conf, pod, sandbox)
    }

    pub fn del(&self, conf: &NetConf, pod: &PodRef, sandbox: &Sandbox) -> PluginOutput {
        self.run("DEL", conf, pod, sandbox)
    }

    /// `/calico/v1/host/<node>/workload/k8s/<ns>.<pod>/endpoint/eth0`.
    pub fn endpoint_key(&self, pod: &PodRef) -> String {
        format!(
            "/calico/v1/host/{}/workload/k8s/{}/endpoint/eth0",
            self.bed.node,
            pod.workload()
        )
    }

    /// The pod's endpoint, if stored.
    pub fn endpoint(&self, pod: &PodRef) -> Option<Value> {
        self.bed.etcd.get_json(&self.endpoint_key(pod))
    }

    /// The addresses host-local has reserved on this bed's network, each with its owner.
    pub fn reserved(&self) -> Vec<(String, String)> {
        self.bed.reservations(&self.bed.network)
    }

    /// Nothing of any container is left (see [`TestBed::assert_nothing_left`]), and none of
    /// the pods' host veths.
    pub fn assert_nothing_left(&self, pods: &[&PodRef]) {
        for pod in pods {
            let veth = pod.host_veth();
            assert!(
                eventually(TEARDOWN, || host_link(&veth).is_none()),
                "host veth {veth} of pod {} is left",
                pod.workload()
            );
        }
        self.bed.assert_nothing_left(&[]);
    }
}

/// The only IPv4 address on the sandbox's `eth0` (without prefix).
pub fn container_ip(sandbox: &Sandbox) -> String {
    let addrs = netns_ipv4_addrs(sandbox.netns.name(), "eth0");
    assert_eq!(
        addrs.len(),
        1,
        "expected one IPv4 address on eth0 of {}: {addrs:?}",
        sandbox.netns.name()
    );
    addrs[0].local.clone()
}

/// The first address of an ADD result, without prefix.
pub fn result_ip(out: &PluginOutput) -> String {
    let result = out.result();
    let address = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {result}"));
    address.split('/').next().unwrap_or_default().to_string()
}
