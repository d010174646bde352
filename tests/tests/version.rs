//! VERSION: answered from the environment alone, whatever stdin holds.

use serde_json::{Value, json};
use tests::{DEFAULT_CNI_VERSION, Env, SUPPORTED_VERSIONS, run_plugin};

fn version_answer(cni_version: &str) -> Value {
    json!({"cniVersion": cni_version, "supportedVersions": SUPPORTED_VERSIONS})
}

fn version_env() -> Env {
    Env::new().set("CNI_COMMAND", "VERSION")
}

#[test]
#[ignore = "runs the built plugin binaries"]
fn version_echoes_each_supported_input_version() {
    for version in SUPPORTED_VERSIONS {
        let stdin = json!({"cniVersion": version}).to_string();
        let out = run_plugin("calico", &version_env(), stdin.as_bytes());
        assert_eq!(
            out.result(),
            &version_answer(version),
            "input version {version}\n{out}"
        );
    }
}

#[test]
#[ignore = "runs the built plugin binaries"]
fn version_without_cni_version_in_stdin_answers_with_default() {
    let out = run_plugin("calico", &version_env(), br#"{"name":"x"}"#);
    assert_eq!(out.result(), &version_answer(DEFAULT_CNI_VERSION), "{out}");
}

#[test]
#[ignore = "runs the built plugin binaries"]
fn version_with_garbage_stdin_answers_with_default() {
    for stdin in [&b"garbage"[..], b"{", b"\x00\xff\xfe", b"[1,2,3]"] {
        let out = run_plugin("calico", &version_env(), stdin);
        assert_eq!(
            out.result(),
            &version_answer(DEFAULT_CNI_VERSION),
            "stdin {stdin:?}\n{out}"
        );
    }
}

#[test]
#[ignore = "runs the built plugin binaries"]
fn version_with_only_cni_command_set_and_empty_stdin_answers_with_default() {
    let out = run_plugin("calico", &version_env(), b"");
    assert_eq!(out.result(), &version_answer(DEFAULT_CNI_VERSION), "{out}");
}

#[test]
#[ignore = "runs the built plugin binaries"]
fn version_accepts_the_dummy_environment_podman_sends() {
    let env = version_env()
        .set("CNI_CONTAINERID", "")
        .set("CNI_NETNS", "dummy")
        .set("CNI_IFNAME", "dummy")
        .set("CNI_PATH", "dummy");
    let out = run_plugin("calico", &env, br#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(out.result(), &version_answer("1.0.0"), "{out}");
}

#[test]
#[ignore = "runs the built plugin binaries"]
fn version_does_not_advertise_1_1_0() {
    let out = run_plugin("calico", &version_env(), br#"{"cniVersion":"0.4.0"}"#);
    let supported = out.result()["supportedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!supported.contains(&json!("1.1.0")), "{out}");
}
