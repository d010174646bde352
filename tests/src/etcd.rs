//! A real etcd on free loopback ports, with its data in a temp dir: one member, or a cluster of
//! three whose members a test can kill, stop (SIGSTOP) and restart; optionally serving clients
//! over TLS with client certificates required, or with authentication turned on.
//!
//! etcd, `etcdctl` and the health checks run in the network namespace of the thread that
//! starts the fixture: inside a test's throwaway host namespace ([`crate::Netns::host`]), its
//! loopback is reachable only from that test and the plugins it runs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::TempDir;
use crate::pki::{TlsFiles, write_loopback_identity};

const ETCD: &str = "/usr/bin/etcd";
const ETCDCTL: &str = "/usr/bin/etcdctl";

/// One member: its process (none while killed), ports and whether it is stopped.
struct Member {
    child: Option<Child>,
    client: u16,
    peer: u16,
    // `/health` is served here in plain HTTP, also when clients must use TLS.
    metrics: u16,
    paused: bool,
}

/// A running etcd, every member killed and its data removed on drop.
pub struct Etcd {
    members: Vec<Member>,
    // Every member's data dir and log is named after this, so that a retry starts clean.
    attempt: u32,
    endpoint: String,
    // Clients use `https` and must present a certificate the CA issued.
    tls: Option<TlsFiles>,
    // The password of user `root` once authentication is on.
    root_password: Option<String>,
    // Removed after `drop` has killed the processes.
    dir: TempDir,
}

impl Etcd {
    /// Starts a single member with fast election timings and waits until `/health` reports
    /// healthy. Retries with new ports when another process grabbed one in between.
    pub fn start() -> Etcd {
        Etcd::start_members(1, false)
    }

    /// Starts a cluster of three members, all healthy when this returns.
    pub fn start_cluster() -> Etcd {
        Etcd::start_members(3, false)
    }

    /// Starts a single member that serves clients over TLS only (`https` endpoint) and requires
    /// a client certificate issued by its CA; [`Etcd::tls_files`] has the CA and an identity
    /// that is good as the client's.
    pub fn start_tls() -> Etcd {
        Etcd::start_members(1, true)
    }

    fn start_members(size: usize, tls: bool) -> Etcd {
        let dir = TempDir::new("etcd");
        let mut etcd = Etcd {
            members: Vec::new(),
            attempt: 0,
            endpoint: String::new(),
            tls: tls.then(|| write_loopback_identity(dir.path())),
            root_password: None,
            dir,
        };
        for attempt in 0..5 {
            etcd.attempt = attempt;
            // Hold every listener until all ports are picked, so none is picked twice.
            let listeners: Vec<TcpListener> = (0..3 * size)
                .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
                .collect();
            let ports: Vec<u16> = listeners
                .iter()
                .map(|l| l.local_addr().expect("local addr").port())
                .collect();
            drop(listeners);
            etcd.members.clear();
            for i in 0..size {
                etcd.members.push(Member {
                    child: None,
                    client: ports[3 * i],
                    peer: ports[3 * i + 1],
                    metrics: ports[3 * i + 2],
                    paused: false,
                });
            }
            etcd.endpoint = etcd.member_endpoint(0);
            for i in 0..size {
                etcd.spawn(i);
            }
            if (0..size).all(|i| etcd.wait_healthy(i)) {
                return etcd;
            }
            etcd.stop();
        }
        let log = std::fs::read_to_string(etcd.dir.join("etcd-0.log")).unwrap_or_default();
        panic!("etcd did not become healthy after 5 attempts; last log:\n{log}");
    }

    /// Stops etcd now with SIGKILL: an outage until [`Etcd::restart`], or for the rest of the
    /// test.
    pub fn stop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }

    /// Starts a stopped etcd again on the same ports with the same data and waits until it
    /// serves.
    pub fn restart(&mut self) {
        for i in 0..self.members.len() {
            self.spawn(i);
        }
        for i in 0..self.members.len() {
            assert!(
                self.wait_healthy(i),
                "restarted etcd member {i} on port {} did not become healthy",
                self.members[i].client
            );
        }
    }

    /// Kills member `i` with SIGKILL (stopped or not).
    pub fn kill_member(&mut self, i: usize) {
        self.resume_member(i);
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed member again with its data and waits until it is healthy again.
    pub fn restart_member(&mut self, i: usize) {
        self.spawn(i);
        assert!(
            self.wait_healthy(i),
            "restarted etcd member {i} did not become healthy"
        );
    }

    /// Stops member `i` with SIGSTOP: the kernel still accepts connections on its ports, but
    /// nothing is answered until [`Etcd::resume_member`] (or drop).
    pub fn pause_member(&mut self, i: usize) {
        self.signal(i, "-STOP");
        self.members[i].paused = true;
    }

    /// Lets a stopped member run again.
    pub fn resume_member(&mut self, i: usize) {
        if self.members[i].paused {
            self.signal(i, "-CONT");
            self.members[i].paused = false;
        }
    }

    fn signal(&self, i: usize, signal: &str) {
        let Some(child) = &self.members[i].child else {
            return;
        };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} etcd member {i}");
    }

    /// The index of the member that is the leader now, asked of the live members.
    pub fn leader(&self) -> usize {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        for status in json.as_array().into_iter().flatten() {
            let header = &status["Status"]["header"];
            if header["member_id"] == status["Status"]["leader"] {
                let endpoint = status["Endpoint"].as_str().unwrap_or_default();
                if let Some(i) = (0..self.members.len())
                    .find(|&i| endpoint.ends_with(&format!(":{}", self.members[i].client)))
                {
                    return i;
                }
            }
        }
        panic!(
            "no leader among {:?}: {}",
            self.endpoints(),
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// Every member's client URL, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len())
            .map(|i| self.member_endpoint(i))
            .collect()
    }

    fn member_endpoint(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[i].client)
    }

    /// The CA, and the certificate and key clients present, of an etcd from
    /// [`Etcd::start_tls`]; `None` for a plain one.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Creates user `root` with `password`, turns authentication on, and from now on passes
    /// these credentials to the fixture's own reads and writes.
    pub fn enable_auth(&mut self, password: &str) {
        for args in [
            vec!["user", "add", &format!("root:{password}")],
            vec!["user", "grant-role", "root", "root"],
            vec!["auth", "enable"],
        ] {
            let out = self.etcdctl(&args);
            assert!(
                out.status.success(),
                "etcdctl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.root_password = Some(password.to_owned());
    }

    fn spawn(&mut self, i: usize) {
        let cluster: Vec<String> = (0..self.members.len())
            .map(|m| format!("m{m}=http://127.0.0.1:{}", self.members[m].peer))
            .collect();
        let client_url = self.member_endpoint(i);
        let peer_url = format!("http://127.0.0.1:{}", self.members[i].peer);
        let log_path = self.dir.join(&format!("etcd-{i}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .expect("etcd log file");
        let child = Command::new(ETCD)
            .env_clear()
            .arg(format!("--name=m{i}"))
            .arg(format!(
                "--data-dir={}",
                self.dir
                    .join(&format!("data-{}-{i}", self.attempt))
                    .display()
            ))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!(
                "--listen-metrics-urls=http://127.0.0.1:{}",
                self.members[i].metrics
            ))
            .arg(format!("--initial-cluster={}", cluster.join(",")))
            .args([
                "--initial-cluster-state=new",
                "--initial-cluster-token=calico-test",
            ])
            .args(["--heartbeat-interval=10", "--election-timeout=100"])
            .args(["--logger=zap", "--log-level=error"])
            .args(self.tls.iter().flat_map(|files| {
                [
                    format!("--cert-file={}", files.cert.display()),
                    format!("--key-file={}", files.key.display()),
                    format!("--trusted-ca-file={}", files.ca.display()),
                    "--client-cert-auth".to_owned(),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {ETCD} (apt-get install etcd-server): {e}"));
        self.members[i].child = Some(child);
        self.members[i].paused = false;
    }

    fn wait_healthy(&mut self, i: usize) -> bool {
        let port = self.members[i].metrics;
        let Some(child) = self.members[i].child.as_mut() else {
            return false;
        };
        wait_healthy(child, port, Duration::from_secs(20))
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The data dir (inside a temp dir removed on drop).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<String> {
        self.query(&["get", key]).into_iter().next().map(|(_, v)| v)
    }

    /// The value of `key` parsed as JSON, if present. Panics when it is not JSON.
    pub fn get_json(&self, key: &str) -> Option<Value> {
        self.get(key).map(|v| {
            serde_json::from_str(&v)
                .unwrap_or_else(|e| panic!("etcd key {key} is not JSON ({e}): {v}"))
        })
    }

    /// Every key under `prefix` with its value, sorted by key.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.query(&["get", "--prefix", prefix])
    }

    /// The keys under `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.get_prefix(prefix)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    /// Writes `key` = `value`.
    pub fn put(&self, key: &str, value: &str) {
        let out = self.etcdctl(&["put", key, value]);
        assert!(
            out.status.success(),
            "etcdctl put {key} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Deletes `key`.
    pub fn delete(&self, key: &str) {
        let out = self.etcdctl(&["del", key]);
        assert!(
            out.status.success(),
            "etcdctl del {key} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn query(&self, args: &[&str]) -> Vec<(String, String)> {
        let mut full = args.to_vec();
        full.extend(["-w", "json"]);
        let out = self.etcdctl(&full);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout).expect("etcdctl -w json output");
        let kvs = json
            .get("kvs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        kvs.iter()
            .map(|kv| (decode(&kv["key"]), decode(&kv["value"])))
            .collect()
    }

    fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        let live: Vec<String> = (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some() && !self.members[i].paused)
            .map(|i| self.member_endpoint(i))
            .collect();
        let tls = self.tls.iter().flat_map(|files| {
            [
                format!("--cacert={}", files.ca.display()),
                format!("--cert={}", files.cert.display()),
                format!("--key={}", files.key.display()),
            ]
        });
        let user = self
            .root_password
            .iter()
            .map(|password| format!("--user=root:{password}"));
        Command::new(ETCDCTL)
            .env_clear()
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", live.join(",")))
            .arg("--command-timeout=10s")
            .args(tls)
            .args(user)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {ETCDCTL}: {e}"))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Waits until the member answers `/health` on its metrics `port`, false when it exits first or
/// `timeout` passes.
fn wait_healthy(child: &mut Child, port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if health_ok(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn health_ok(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains("\"health\":\"true\"")
}

fn decode(field: &Value) -> String {
    let text = field.as_str().unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("etcdctl returned bad base64 {text:?}: {e}"));
    String::from_utf8_lossy(&bytes).into_owned()
}
