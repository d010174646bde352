//! VERSION, for both plugins: answered from the environment alone, whatever stdin holds.

use serde_json::{Value, json};
use tests::{DEFAULT_CNI_VERSION, Env, SUPPORTED_VERSIONS, run_plugin};

/// Both binaries answer VERSION the same way.
const PLUGINS: [&str; 2] = ["calico", "calico-ipam"];

fn version_answer(cni_version: &str) -> Value {
    json!({"cniVersion": cni_version, "supportedVersions": SUPPORTED_VERSIONS})
}

fn version_env() -> Env {
    Env::new().set("CNI_COMMAND", "VERSION")
}

/// Runs VERSION on every plugin and compares with the expected answer.
fn assert_version_answer(env: &Env, stdin: &[u8], expected_version: &str) {
    for plugin in PLUGINS {
        let out = run_plugin(plugin, env, stdin);
        assert_eq!(
            out.result(),
            &version_answer(expected_version),
            "{plugin}, stdin {:?}\n{out}",
            String::from_utf8_lossy(stdin)
        );
    }
}

#[test]
#[ignore = "runs the built plugin binaries"]
fn version_echoes_each_supported_input_version() {
    for version in SUPPORTED_VERSIONS {
        let stdin = json!({"cniVersion": version}).to_string();
        assert_version_answer(&version_env(), stdin.as_bytes(), version);
    }
}

#[test]
#[ignore = "runs the built plugin binaries"]
fn version_without_cni_version_in_stdin_answers_with_default() {
    assert_version_answer(&version_env(), br#"{"name":"x"}"#, DEFAULT_CNI_VERSION);
}

#[test]
#[ignore = "runs the built plugin binaries"]
fn version_with_garbage_stdin_answers_with_default() {
    for stdin in [&b"garbage"[..], b"{", b"\x00\xff\xfe", b"[1,2,3]"] {
        assert_version_answer(&version_env(), stdin, DEFAULT_CNI_VERSION);
    }
}

#[test]
#[ignore = "runs the built plugin binaries"]
fn version_with_only_cni_command_set_and_empty_stdin_answers_with_default() {
    assert_version_answer(&version_env(), b"", DEFAULT_CNI_VERSION);
}

#[test]
#[ignore = "runs the built plugin binaries"]
fn version_accepts_the_dummy_environment_podman_sends() {
    let env = version_env()
        .set("CNI_CONTAINERID", "")
        .set("CNI_NETNS", "dummy")
        .set("CNI_IFNAME", "dummy")
        .set("CNI_PATH", "dummy");
    assert_version_answer(&env, br#"{"cniVersion":"1.0.0"}"#, "1.0.0");
}

#[test]
#[ignore = "runs the built plugin binaries"]
fn version_advertises_1_1_0_last_since_status_and_gc_work() {
    for plugin in PLUGINS {
        let out = run_plugin(plugin, &version_env(), br#"{"cniVersion":"0.4.0"}"#);
        let supported = out.result()["supportedVersions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(supported.last(), Some(&json!("1.1.0")), "{plugin}\n{out}");
    }
}

/// The output of `binary args`, which must exit 0.
fn run_by_hand(binary: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(tests::plugin::binary(binary))
        .env_clear()
        .args(args)
        .output()
        .expect("run the plugin binary");
    assert!(out.status.success(), "{binary} {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
#[ignore = "runs the built plugin binaries"]
fn version_flag_names_the_crate_version_and_the_commit_built_from() {
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(tests::workspace_dir())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    for plugin in PLUGINS {
        let line = run_by_hand(plugin, &["--version"]);
        assert_eq!(
            line.trim(),
            format!("{plugin} {} (commit {head})", env!("CARGO_PKG_VERSION")),
            "the binary is stale when the commit differs: rebuild it"
        );
    }
}

#[test]
#[ignore = "runs the built plugin binaries"]
fn help_lists_every_cni_verb_and_every_admin_command() {
    for plugin in PLUGINS {
        let help = run_by_hand(plugin, &["--help"]);
        for word in [
            "ADD",
            "DEL",
            "CHECK",
            "STATUS",
            "GC",
            "VERSION",
            "pool add",
            "pool list",
            "pool rm",
            "show",
            "check",
            "release --ip",
            "--handle",
            "gc --node",
            "--dry-run",
        ] {
            assert!(
                help.contains(word),
                "{plugin} --help lacks {word:?}:\n{help}"
            );
        }
    }
}
