//! Running the built plugin binaries with a fully controlled environment.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::TempDir;

/// How long one plugin run may take before the test fails.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// `PATH` handed to every plugin run (nothing else leaks from the test's environment).
const PLUGIN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the reference `host-local` IPAM plugin is installed (Debian `containernetworking-plugins`).
pub const HOST_LOCAL: &str = "/usr/lib/cni/host-local";

/// The cargo target profile dir holding the built binaries: `$CARGO_TARGET_DIR/debug` or
/// `<workspace>/target/debug`, with the target triple between them when `CARGO_BUILD_TARGET`
/// names one (`make test` builds the plugins for the named host target to link them
/// statically, as the release ones are).
pub fn target_dir() -> PathBuf {
    let base = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                crate::workspace_dir().join(dir)
            }
        }
        _ => crate::workspace_dir().join("target"),
    };
    match std::env::var_os("CARGO_BUILD_TARGET") {
        Some(triple) if !triple.is_empty() => base.join(triple).join("debug"),
        _ => base.join("debug"),
    }
}

/// The path of a built binary of this workspace (`calico`, `calico-ipam`).
/// Panics with a hint to build first when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build` before the integration tests",
        path.display()
    );
    path
}

/// Environment for one plugin run. `PATH` is always added by [`run_plugin`].
#[derive(Debug, Clone, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// An empty environment.
    pub fn new() -> Env {
        Env::default()
    }

    /// The four CNI variables of an ADD/DEL plus `CNI_COMMAND`.
    pub fn cni(
        command: &str,
        container_id: &str,
        netns: &str,
        ifname: &str,
        cni_path: &str,
    ) -> Env {
        Env::new()
            .set("CNI_COMMAND", command)
            .set("CNI_CONTAINERID", container_id)
            .set("CNI_NETNS", netns)
            .set("CNI_IFNAME", ifname)
            .set("CNI_PATH", cni_path)
    }

    /// The same environment with `key` set.
    pub fn set(mut self, key: &str, value: &str) -> Env {
        self.0.insert(key.to_string(), value.to_string());
        self
    }

    /// The same environment without `key`.
    pub fn remove(mut self, key: &str) -> Env {
        self.0.remove(key);
        self
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// What a plugin run produced.
#[derive(Debug)]
pub struct PluginOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr (logs).
    pub stderr: String,
    /// stdout parsed as one JSON value, if it is exactly that.
    pub json: Option<Value>,
}

/// An error object as the spec prints it: `{cniVersion, code, msg, details?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct CniError {
    /// `cniVersion`.
    pub cni_version: String,
    /// `code`.
    pub code: u64,
    /// `msg`.
    pub msg: String,
    /// `details`, if present.
    pub details: Option<String>,
}

impl PluginOutput {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Asserts exit status 0 and a JSON object on stdout, and returns it.
    pub fn result(&self) -> &Value {
        assert!(
            self.status.success(),
            "plugin failed, expected success\n{self}"
        );
        match &self.json {
            Some(v @ Value::Object(_)) => v,
            _ => panic!("plugin succeeded but stdout is not one JSON object\n{self}"),
        }
    }

    /// Asserts exit status 0 (DEL prints nothing worth checking).
    pub fn assert_success(&self) {
        assert!(
            self.status.success(),
            "plugin failed, expected success\n{self}"
        );
    }

    /// Asserts the spec error shape (one JSON object on stdout, exit status 1) and returns it.
    pub fn error(&self) -> CniError {
        assert_eq!(
            self.status.code(),
            Some(1),
            "expected an error with exit status 1\n{self}"
        );
        let Some(Value::Object(obj)) = &self.json else {
            panic!("error output is not exactly one JSON object\n{self}");
        };
        for key in obj.keys() {
            assert!(
                ["cniVersion", "code", "msg", "details"].contains(&key.as_str()),
                "unexpected key {key:?} in error JSON\n{self}"
            );
        }
        let cni_version = obj.get("cniVersion").and_then(Value::as_str);
        let code = obj.get("code").and_then(Value::as_u64);
        let msg = obj.get("msg").and_then(Value::as_str);
        let details = obj.get("details").map(|d| {
            d.as_str()
                .unwrap_or_else(|| panic!("`details` is not a string\n{self}"))
                .to_string()
        });
        let (Some(cni_version), Some(code), Some(msg)) = (cni_version, code, msg) else {
            panic!("error JSON lacks cniVersion, code or msg\n{self}");
        };
        assert!(!msg.is_empty(), "error msg is empty\n{self}");
        CniError {
            cni_version: cni_version.to_string(),
            code,
            msg: msg.to_string(),
            details,
        }
    }

    /// Asserts an error with the given code and returns it.
    pub fn error_with_code(&self, code: u64) -> CniError {
        let err = self.error();
        assert_eq!(err.code, code, "unexpected error code\n{self}");
        err
    }
}

impl std::fmt::Display for PluginOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status: {}\nstdout: {}\nstderr: {}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs a built binary of this workspace with ONLY `env` (plus `PATH`) and `stdin`.
pub fn run_plugin(binary_name: &str, env: &Env, stdin: &[u8]) -> PluginOutput {
    run_binary(&binary(binary_name), env, stdin)
}

/// Passed from the test process's environment to every plugin run (unless the test sets it):
/// `CALICO_IPAM_EXEC=1` runs the whole suite with `calico` executing `calico-ipam` instead of
/// running Calico IPAM in its own process.
pub const IPAM_EXEC_ENV: &str = "CALICO_IPAM_EXEC";

/// Whether this test run forces the exec path (see [`IPAM_EXEC_ENV`]).
pub fn ipam_exec_forced() -> bool {
    std::env::var(IPAM_EXEC_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The plugins' lock directory in this test run: `CALICO_CNI_LOCK_DIR` of the test process
/// (`make test` sets one of its own), else the plugins' default. Every plugin run gets it.
pub fn lock_dir() -> std::path::PathBuf {
    std::env::var_os(common::cni::lock::LOCK_DIR_ENV)
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| common::cni::lock::LOCK_DIR.into(), Into::into)
}

/// The built binary `name` (`calico-ipam` for its admin commands) as an operator runs it by
/// hand: an empty environment but for the test run's lock directory. The caller adds
/// `ETCD_ENDPOINTS` or `--config` and the arguments.
pub fn by_hand(name: &str) -> Command {
    let mut cmd = Command::new(binary(name));
    cmd.env_clear()
        .env(common::cni::lock::LOCK_DIR_ENV, lock_dir());
    cmd
}

/// Runs any executable the way [`run_plugin`] does.
pub fn run_binary(path: &Path, env: &Env, stdin: &[u8]) -> PluginOutput {
    let mut cmd = Command::new(path);
    cmd.env_clear()
        .env("PATH", PLUGIN_PATH)
        .env(common::cni::lock::LOCK_DIR_ENV, lock_dir());
    if let Ok(value) = std::env::var(IPAM_EXEC_ENV) {
        cmd.env(IPAM_EXEC_ENV, value);
    }
    for (k, v) in &env.0 {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));

    let mut pipe_in = child.stdin.take().expect("stdin pipe");
    let input = stdin.to_vec();
    // A plugin may exit without reading stdin (VERSION); a broken pipe is then expected.
    let writer = std::thread::spawn(move || {
        let _ = pipe_in.write_all(&input);
    });
    let mut pipe_out = child.stdout.take().expect("stdout pipe");
    let mut pipe_err = child.stderr.take().expect("stderr pipe");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe_out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe_err.read_to_end(&mut buf);
        buf
    });

    let deadline = Instant::now() + PLUGIN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for plugin") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} did not finish within {PLUGIN_TIMEOUT:?} (env {env:?})",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    let json = serde_json::from_str(stdout.trim()).ok();
    PluginOutput {
        status,
        stdout,
        stderr,
        json,
    }
}

/// A directory for `CNI_PATH` with symlinks to our plugins and the reference `host-local`.
pub struct CniPath {
    dir: TempDir,
}

impl CniPath {
    /// `calico`, `calico-ipam` and `host-local`.
    pub fn new() -> CniPath {
        CniPath::without(&[])
    }

    /// Like [`CniPath::new`] but without the named plugins.
    pub fn without(omit: &[&str]) -> CniPath {
        let dir = TempDir::new("cni-bin");
        let plugins = [
            ("calico", binary("calico")),
            ("calico-ipam", binary("calico-ipam")),
            ("host-local", PathBuf::from(HOST_LOCAL)),
        ];
        for (name, target) in plugins {
            if omit.contains(&name) {
                continue;
            }
            assert!(
                target.is_file(),
                "{} not found (apt-get install containernetworking-plugins)",
                target.display()
            );
            std::os::unix::fs::symlink(&target, dir.join(name))
                .unwrap_or_else(|e| panic!("cannot link {name} into CNI_PATH: {e}"));
        }
        CniPath { dir }
    }

    /// The value for `CNI_PATH`.
    pub fn path(&self) -> String {
        self.dir.path_str()
    }
}

impl Default for CniPath {
    fn default() -> Self {
        CniPath::new()
    }
}

/// A plugin run held at a fault point: started on a thread of its own with `CALICO_PAUSE_AT`
/// naming `step`, it waits there until [`Paused::resume`] (the plugins must be built with
/// `--features calico/crash-points`).
pub struct Paused {
    marker: PathBuf,
    run: std::thread::JoinHandle<PluginOutput>,
    _dir: TempDir,
}

impl Paused {
    /// Starts `binary_name` with `env` (plus the pause variables) and `stdin`.
    pub fn start(binary_name: &str, env: Env, stdin: Vec<u8>, step: &str) -> Paused {
        let dir = TempDir::new("pause");
        let env = env
            .set("CALICO_PAUSE_AT", step)
            .set("CALICO_PAUSE_DIR", &dir.path_str());
        let binary = binary(binary_name);
        Paused {
            marker: dir.join(step),
            run: std::thread::spawn(move || run_binary(&binary, &env, &stdin)),
            _dir: dir,
        }
    }

    /// Waits until the run holds at its step and `also` is true (20 s at most).
    pub fn wait_until(&self, also: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(self.marker.exists() && also()) {
            assert!(
                Instant::now() < deadline,
                "the plugin did not reach {}: build the plugins with --features calico/crash-points",
                self.marker.display()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Lets the run go on from its step, and waits for its end.
    pub fn resume(self) -> PluginOutput {
        std::fs::remove_file(&self.marker).expect("remove the pause marker");
        self.run.join().expect("the plugin run's thread")
    }
}
