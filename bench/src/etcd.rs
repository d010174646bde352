//! etcd for the benchmark: one member, or three on loopback, each on free ports with its data
//! in the work directory and etcd's default durability (every commit fsynced). Every member is
//! killed on drop. Members run in their own process group, so a Ctrl-C reaches the driver and
//! the plugins but leaves etcd to the driver's cleanup.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cpu;
use crate::signals;

const ETCD: &str = "/usr/bin/etcd";
/// Default election timings start a member in about a second; a busy machine can double that.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// etcd's count of raft entries committed (the leader's; one member here).
const PROPOSALS_METRIC: &str = "etcd_server_proposals_committed_total ";

/// Two of etcd's counters at one moment; see [`Etcd::counters`].
#[derive(Clone, Copy)]
pub struct Counters {
    pub revision: u64,
    pub proposals: u64,
}

impl Counters {
    /// Writes committed (that changed something) and transactions through consensus since
    /// `before`.
    pub fn since(self, before: Counters) -> (u64, u64) {
        (
            self.revision.saturating_sub(before.revision),
            self.proposals.saturating_sub(before.proposals),
        )
    }
}

/// Running etcd members and their client URLs.
pub struct Etcd {
    members: Vec<Child>,
    clients: Vec<u16>,
}

impl Etcd {
    /// Starts `size` members in `dir` (one cluster) and waits until each reports healthy.
    pub fn start(dir: &Path, size: usize) -> Result<Etcd, String> {
        let ports = free_ports(2 * size)?;
        let mut etcd = Etcd {
            members: Vec::new(),
            clients: (0..size).map(|i| ports[2 * i]).collect(),
        };
        let peer_url = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i + 1]);
        let cluster: Vec<String> = (0..size).map(|i| format!("m{i}={}", peer_url(i))).collect();
        for i in 0..size {
            let client = format!("http://127.0.0.1:{}", etcd.clients[i]);
            let log = std::fs::File::create(dir.join(format!("etcd-{i}.log")))
                .map_err(|e| format!("cannot create the etcd log in {}: {e}", dir.display()))?;
            let child = Command::new(ETCD)
                .arg(format!("--name=m{i}"))
                .arg(format!(
                    "--data-dir={}",
                    dir.join(format!("etcd-{i}")).display()
                ))
                .arg(format!("--listen-client-urls={client}"))
                .arg(format!("--advertise-client-urls={client}"))
                .arg(format!("--listen-peer-urls={}", peer_url(i)))
                .arg(format!("--initial-advertise-peer-urls={}", peer_url(i)))
                .arg(format!("--initial-cluster={}", cluster.join(",")))
                .arg("--initial-cluster-state=new")
                .arg("--logger=zap")
                .arg("--log-level=error")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .process_group(0)
                .spawn()
                .map_err(|e| format!("cannot run {ETCD}: {e}"))?;
            etcd.members.push(child);
        }
        etcd.wait_healthy(dir)?;
        Ok(etcd)
    }

    /// The client URLs, comma-separated, as `etcd_endpoints` takes them.
    pub fn endpoints(&self) -> String {
        let urls: Vec<String> = self
            .clients
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        urls.join(",")
    }

    /// The counters that tell writes apart: the store's revision grows by one with every write
    /// that changed something; the raft commit index with every transaction that has a write in
    /// either branch, whether its conditions held or not (read-only ones skip consensus).
    pub fn counters(&self) -> Result<Counters, String> {
        // The key "/" base64-encoded; the answer's header carries the revision either way.
        let body = http(self.clients[0], "POST", "/v3/kv/range", r#"{"key":"Lw=="}"#)?;
        let json: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| format!("etcd range answer is not JSON ({e}): {body}"))?;
        let revision = json["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| format!("etcd range answer has no header.revision: {body}"))?;
        let metrics = http(self.clients[0], "GET", "/metrics", "")?;
        let proposals = metrics
            .lines()
            .find_map(|line| line.strip_prefix(PROPOSALS_METRIC))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| format!("etcd /metrics has no {PROPOSALS_METRIC}"))?;
        Ok(Counters {
            revision,
            proposals: proposals as u64,
        })
    }

    /// CPU time the members have used so far, all of them together.
    pub fn cpu(&self) -> Result<Duration, String> {
        self.members.iter().map(|m| cpu::of_process(m.id())).sum()
    }

    fn wait_healthy(&mut self, dir: &Path) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        for i in 0..self.clients.len() {
            loop {
                signals::check()?;
                if let Ok(body) = http(self.clients[i], "GET", "/health", "")
                    && body.contains("\"health\":\"true\"")
                {
                    break;
                }
                if let Ok(Some(status)) = self.members[i].try_wait() {
                    return Err(format!(
                        "etcd member {i} exited with {status}: see {}",
                        dir.join(format!("etcd-{i}.log")).display()
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "etcd member {i} not healthy within {START_TIMEOUT:?}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for child in &mut self.members {
            if let Err(e) = child.kill() {
                eprintln!("cannot kill etcd pid {}: {e}", child.id());
            }
            let _ = child.wait();
        }
    }
}

/// Ports nobody listens on, all distinct: every listener is held until all are picked.
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot bind a loopback port: {e}"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read a bound port: {e}"))
}

/// One HTTP/1.0 request to etcd's client port; the body of the answer.
fn http(port: u16, method: &str, path: &str, body: &str) -> Result<String, String> {
    let fail = |e: std::io::Error| format!("etcd {method} {path} on port {port}: {e}");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(fail)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(fail)?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(fail)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(fail)?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("etcd {method} {path}: no HTTP answer: {answer}"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("etcd {method} {path}: {head}"));
    }
    Ok(body.to_string())
}
