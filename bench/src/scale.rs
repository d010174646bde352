//! IPAM at scale: a 3-member etcd cluster on loopback, 100 node names, many `calico-ipam` ADDs
//! running at once (IPAM only: no netns is entered). Every address must be unique.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::etcd::Etcd;
use crate::exec::{Invocation, helper, run};
use crate::setups::{NO_NETNS, result_addresses};
use crate::stats::Samples;
use crate::workdir::WorkDir;

pub const NODES: usize = 100;
const POOL: &str = "10.40.0.0/16";

/// What the scale run measured.
pub struct Scale {
    pub allocations: usize,
    pub workers: usize,
    pub wall: Duration,
    /// Each ADD, fork to reap.
    pub latency: Samples,
    pub duplicates: usize,
}

impl Scale {
    pub fn per_second(&self) -> f64 {
        self.allocations as f64 / self.wall.as_secs_f64()
    }
}

/// Runs `allocations` ADDs from `workers` threads, node names taken in turn.
pub fn run_scale(
    work: &WorkDir,
    bin: &Path,
    allocations: usize,
    workers: usize,
) -> Result<Scale, String> {
    let etcd = Etcd::start(&work.subdir("scale-etcd")?, 3)?;
    let endpoints = etcd.endpoints();
    let ipam = bin.join("calico-ipam");
    helper(
        &ipam.display().to_string(),
        &["--etcd-endpoints", &endpoints, "pool", "add", POOL],
    )?;
    let hints = work.subdir("scale-hints")?;
    // The node IPAM locks keep their files: 100 node names' worth stays out of the host's
    // /run/calico/cni this way.
    let locks = work.subdir("scale-locks")?;
    let next = AtomicUsize::new(0);
    let owners: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());
    let latency = Mutex::new(Samples::default());
    let duplicates = AtomicUsize::new(0);
    let start = Instant::now();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> Result<(), String> {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= allocations {
                            return Ok(());
                        }
                        let inv = invocation(&ipam, &endpoints, &hints, &locks, n);
                        let done = run(work, &format!("scale ADD {n}"), &inv)?;
                        let (_, addresses) = result_addresses(&done.stdout)?;
                        latency.lock().map_err(|_| "poisoned")?.push(done.wall);
                        let mut owners = owners.lock().map_err(|_| "poisoned")?;
                        for address in addresses {
                            if let Some(other) = owners.insert(address.clone(), n) {
                                eprintln!(
                                    "scale: address {address} given to ADD {other} and ADD {n}"
                                );
                                duplicates.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        threads
            .into_iter()
            .filter_map(|t| match t.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some("a scale thread panicked".into()),
            })
            .collect()
    });
    let wall = start.elapsed();
    if let Some(first) = failures.first() {
        return Err(format!(
            "{} scale workers failed; first: {first}",
            failures.len()
        ));
    }
    let scale = Scale {
        allocations,
        workers,
        wall,
        latency: latency.into_inner().map_err(|_| "poisoned")?,
        duplicates: duplicates.into_inner(),
    };
    if scale.duplicates > 0 {
        return Err(format!(
            "scale run: {} duplicate addresses",
            scale.duplicates
        ));
    }
    Ok(scale)
}

/// The `n`th ADD: its own container id, on node `n % NODES`.
fn invocation(ipam: &Path, endpoints: &str, hints: &Path, locks: &Path, n: usize) -> Invocation {
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "bench-scale",
        "type": "calico",
        "etcd_endpoints": endpoints,
        "nodename": format!("scale-node-{:03}", n % NODES),
        "ipam": {"type": "calico-ipam", "block_hint_dir": hints.display().to_string()},
    });
    Invocation {
        program: ipam.to_path_buf(),
        env: vec![
            ("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            ("CNI_COMMAND".into(), "ADD".into()),
            (
                "CNI_CONTAINERID".into(),
                format!("scale{n:06}p{}", std::process::id()),
            ),
            ("CNI_NETNS".into(), NO_NETNS.into()),
            ("CNI_IFNAME".into(), "eth0".into()),
            (
                "CNI_PATH".into(),
                ipam.parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            ("CALICO_CNI_LOCK_DIR".into(), locks.display().to_string()),
        ],
        stdin: conf.to_string().into_bytes(),
    }
}
