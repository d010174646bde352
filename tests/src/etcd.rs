//! A real single-member etcd on a free loopback port, with its data dir in a temp dir.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::TempDir;

const ETCD: &str = "/usr/bin/etcd";
const ETCDCTL: &str = "/usr/bin/etcdctl";

/// A running etcd, killed and removed on drop.
pub struct Etcd {
    child: Child,
    endpoint: String,
    // What a restart needs: the same ports and data.
    ports: (u16, u16),
    attempt: u32,
    // Removed after `drop` has killed the process.
    dir: TempDir,
}

impl Etcd {
    /// Starts etcd with fast election timings and waits until `/health` reports healthy.
    /// Retries with new ports when another process grabbed one in between.
    pub fn start() -> Etcd {
        let dir = TempDir::new("etcd");
        for attempt in 0..5 {
            let client = free_port();
            let peer = free_port();
            let mut child = spawn_etcd(&dir, attempt, client, peer);
            if wait_healthy(&mut child, client, Duration::from_secs(20)) {
                return Etcd {
                    child,
                    endpoint: format!("http://127.0.0.1:{client}"),
                    ports: (client, peer),
                    attempt,
                    dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default();
        panic!("etcd did not become healthy after 5 attempts; last log:\n{log}");
    }

    /// Stops etcd now with SIGKILL: an outage until [`Etcd::restart`], or for the rest of the
    /// test.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a stopped etcd again on the same ports with the same data and waits until it
    /// serves.
    pub fn restart(&mut self) {
        let (client, peer) = self.ports;
        self.child = spawn_etcd(&self.dir, self.attempt, client, peer);
        assert!(
            wait_healthy(&mut self.child, client, Duration::from_secs(20)),
            "restarted etcd on port {client} did not become healthy"
        );
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
        Command::new(ETCDCTL)
            .env_clear()
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .arg("--command-timeout=10s")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {ETCDCTL}: {e}"))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Err(e) = self.child.kill() {
            eprintln!("cannot kill etcd (pid {}): {e}", self.child.id());
        }
        let _ = self.child.wait();
    }
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn spawn_etcd(dir: &TempDir, attempt: u32, client: u16, peer: u16) -> Child {
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(dir.join("etcd.log")).expect("etcd log file");
    Command::new(ETCD)
        .env_clear()
        .arg("--name=test")
        .arg(format!(
            "--data-dir={}",
            dir.join(&format!("data-{attempt}")).display()
        ))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=test={peer_url}"))
        .args(["--heartbeat-interval=10", "--election-timeout=100"])
        .args(["--logger=zap", "--log-level=error"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("etcd log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {ETCD} (apt-get install etcd-server): {e}"))
}

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
