//! The two setups compared, A and B, and how a runtime would call each: the config on stdin
//! (with `prevResult` for CHECK and DEL, as runtimes send it) and the `CNI_*` environment.
//!
//! A: `calico` with `calico-ipam` on a local etcd. Whether `calico` runs the IPAM code in its
//! own process or execs `calico-ipam` is its business: nothing here depends on it.
//! B: Debian's `ptp` with `host-local`, which keeps its allocations in files.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::exec::Invocation;

/// Where B's plugins come from (Debian's containernetworking-plugins).
pub const REFERENCE_DIR: &str = "/usr/lib/cni";
/// A's pool.
pub const POOL_A: &str = "10.30.0.0/16";
/// B's range.
const SUBNET_B: &str = "10.32.0.0/16";
/// The node A's containers live on.
pub const NODE: &str = "bench-node";
/// `CNI_NETNS` of IPAM-only runs: an IPAM plugin never enters it.
pub const NO_NETNS: &str = "/var/run/netns/unused";

/// One side of the comparison.
pub struct Setup {
    /// "A" or "B".
    pub label: &'static str,
    pub program: PathBuf,
    /// The IPAM plugin alone, for its footprint.
    pub ipam_program: PathBuf,
    pub conf: Value,
    cni_path: String,
    lock_dir: PathBuf,
}

/// A CNI verb.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verb {
    Add,
    Check,
    Del,
}

impl Verb {
    pub fn name(self) -> &'static str {
        match self {
            Verb::Add => "ADD",
            Verb::Check => "CHECK",
            Verb::Del => "DEL",
        }
    }
}

/// One container of a setup: its id, netns path and the ADD result once there is one.
pub struct Container {
    pub id: String,
    pub netns: PathBuf,
    pub result: Option<Value>,
}

impl Setup {
    /// A: calico + calico-ipam from `bin` against `endpoints`; scratch files under `work`.
    pub fn calico(bin: &Path, endpoints: &str, work: &Path) -> Setup {
        Setup {
            label: "A",
            program: bin.join("calico"),
            ipam_program: bin.join("calico-ipam"),
            conf: json!({
                "cniVersion": "1.0.0",
                "name": "bench-a",
                "type": "calico",
                "etcd_endpoints": endpoints,
                "nodename": NODE,
                "ipam": {
                    "type": "calico-ipam",
                    "block_hint_dir": work.join("hints").display().to_string(),
                },
            }),
            cni_path: format!("{}:{REFERENCE_DIR}", bin.display()),
            lock_dir: work.join("locks"),
        }
    }

    /// B: ptp + host-local with its allocations under `work`.
    pub fn reference(work: &Path) -> Setup {
        Setup {
            label: "B",
            program: Path::new(REFERENCE_DIR).join("ptp"),
            ipam_program: Path::new(REFERENCE_DIR).join("host-local"),
            conf: json!({
                "cniVersion": "1.0.0",
                "name": "bench-b",
                "type": "ptp",
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": SUBNET_B}]],
                    "dataDir": work.join("host-local").display().to_string(),
                },
            }),
            cni_path: REFERENCE_DIR.to_string(),
            lock_dir: work.join("locks"),
        }
    }

    /// The same setup as another network, `name`.
    pub fn clone_named(&self, name: &str) -> Setup {
        let mut conf = self.conf.clone();
        conf["name"] = name.into();
        Setup {
            label: self.label,
            program: self.program.clone(),
            ipam_program: self.ipam_program.clone(),
            conf,
            cni_path: self.cni_path.clone(),
            lock_dir: self.lock_dir.clone(),
        }
    }

    /// The plugin run of `verb` on `container`, as a runtime makes it.
    pub fn invocation(&self, verb: Verb, container: &Container) -> Invocation {
        self.call(&self.program, verb, container, &container.netns)
    }

    /// The IPAM plugin run directly, as the main plugin would run it (no netns entered).
    pub fn ipam_invocation(&self, verb: Verb, container: &Container) -> Invocation {
        self.call(&self.ipam_program, verb, container, Path::new(NO_NETNS))
    }

    fn call(&self, program: &Path, verb: Verb, container: &Container, netns: &Path) -> Invocation {
        let mut conf = self.conf.clone();
        if verb != Verb::Add
            && let Some(result) = &container.result
        {
            conf["prevResult"] = result.clone();
        }
        Invocation {
            program: program.to_path_buf(),
            env: vec![
                ("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into()),
                ("CNI_COMMAND".into(), verb.name().into()),
                ("CNI_CONTAINERID".into(), container.id.clone()),
                ("CNI_NETNS".into(), netns.display().to_string()),
                ("CNI_IFNAME".into(), "eth0".into()),
                ("CNI_PATH".into(), self.cni_path.clone()),
                (
                    "CALICO_CNI_LOCK_DIR".into(),
                    self.lock_dir.display().to_string(),
                ),
            ],
            stdin: conf.to_string().into_bytes(),
        }
    }
}

/// Adds `CALICO_ETCD_REQUEST_LOG=log` to a run's environment.
pub fn with_request_log(mut inv: Invocation, log: &Path) -> Invocation {
    inv.env
        .push(("CALICO_ETCD_REQUEST_LOG".into(), log.display().to_string()));
    inv
}

/// The addresses (`ips[].address`) of an ADD result, which must be JSON.
pub fn result_addresses(stdout: &[u8]) -> Result<(Value, Vec<String>), String> {
    let result: Value = serde_json::from_slice(stdout).map_err(|e| {
        format!(
            "ADD printed no JSON result ({e}): {}",
            String::from_utf8_lossy(stdout)
        )
    })?;
    let addresses: Vec<String> = result["ips"]
        .as_array()
        .map(|ips| {
            ips.iter()
                .filter_map(|ip| ip["address"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if addresses.is_empty() {
        return Err(format!("ADD result has no address: {result}"));
    }
    Ok((result, addresses))
}
