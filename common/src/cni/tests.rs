//! `run` end to end on a plugin that does nothing: the protocol errors, versions and codes.

use super::*;
use std::collections::HashMap;

struct Nothing;
impl Plugin for Nothing {
    fn name(&self) -> &'static str {
        "nothing"
    }
    fn add(&self, _req: &Request, reply: &mut Reply<'_>) -> Result<()> {
        reply.send(&CniResult::default())
    }
    fn del(&self, _req: &Request) -> Result<()> {
        Ok(())
    }
}

fn check_request(prev: &str) -> Request {
    let raw =
        format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"type":"x"}},"prevResult":{prev}}}"#);
    Request {
        command: Command::Check,
        container_id: "c1".into(),
        netns: Some("/run/netns/x".into()),
        ifname: "eth0".into(),
        cni_path: Vec::new(),
        args: CniArgs::default(),
        config: NetConf::parse(raw.as_bytes(), &|_| None).unwrap(),
        version: CniVersion::V1_0_0,
        raw_config: raw.into_bytes(),
        lock_dir: PathBuf::from(lock::LOCK_DIR),
    }
}

#[test]
fn prev_result_interface_index_out_of_range_is_invalid_config_naming_it() {
    let ifaces = r#""interfaces":[{"name":"cali1"},{"name":"eth0","sandbox":"/run/netns/x"}]"#;
    let ok = format!(r#"{{{ifaces},"ips":[{{"address":"10.0.0.1/32","interface":1}}]}}"#);
    assert_eq!(check_request(&ok).prev_result().unwrap().ips.len(), 1);
    let cases = [
        (
            format!(r#"{{{ifaces},"ips":[{{"address":"10.0.0.1/32","interface":2}}]}}"#),
            "ips[0].interface 2",
        ),
        (
            r#"{"ips":[{"address":"10.0.0.1/32","interface":0}]}"#.to_string(),
            "ips[0].interface 0",
        ),
        (r#""text""#.to_string(), "prevResult"),
        (r#"{"ips":"10.0.0.1/32"}"#.to_string(), "prevResult"),
        (r#"{"interfaces":"eth0"}"#.to_string(), "prevResult"),
    ];
    for (prev, named) in cases {
        let err = check_request(&prev).prev_result().unwrap_err();
        assert_eq!(err.code(), Code::InvalidConfig, "{prev}");
        assert!(err.msg().contains(named), "{prev}: {}", err.msg());
    }
}

fn invoke(pairs: &[(&str, &str)], stdin: &str) -> (i32, Value) {
    invoke_plugin(&Nothing, pairs, stdin)
}

fn invoke_plugin(plugin: &dyn Plugin, pairs: &[(&str, &str)], stdin: &str) -> (i32, Value) {
    // Lock files in a directory of the test's own, so that the tests need no root.
    // A directory of this run's own: a shared one could be removed by another test between
    // its creation and the lock's.
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run_number = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let lock_dir = std::env::temp_dir().join(format!(
        "calico-cni-locks-{}-{run_number}",
        std::process::id()
    ));
    let mut map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.insert(lock::LOCK_DIR_ENV.into(), lock_dir.display().to_string());
    let env = move |k: &str| map.get(k).cloned();
    let mut out = Vec::new();
    let status = run(plugin, &env, &mut stdin.as_bytes(), &mut out);
    let _ = std::fs::remove_dir_all(&lock_dir);
    (status, serde_json::from_slice(&out).unwrap_or(Value::Null))
}

const FULL_ENV: [(&str, &str); 5] = [
    ("CNI_COMMAND", "DEL"),
    ("CNI_CONTAINERID", "c1"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/nonexistent"),
    ("CNI_NETNS", "/run/netns/none"),
];

#[test]
fn version_ignores_garbage_stdin() {
    let (status, out) = invoke(&[("CNI_COMMAND", "VERSION")], "not json");
    assert_eq!(status, 0);
    assert_eq!(out["cniVersion"], "0.1.0");
    assert_eq!(
        out["supportedVersions"],
        serde_json::json!(["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"])
    );
    let (_, out) = invoke(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.3.1"}"#);
    assert_eq!(out["cniVersion"], "0.3.1");
}

#[test]
fn unknown_command_is_code_4() {
    let (status, out) = invoke(&[("CNI_COMMAND", "FROB")], "{}");
    assert_eq!((status, out["code"].as_u64()), (1, Some(4)));
    assert_eq!(out["msg"], "unknown CNI_COMMAND: FROB");
}

#[test]
fn config_errors_have_their_codes() {
    let ipam = r#""ipam":{"type":"host-local"}"#;
    let cases = [
        ("", 6),
        ("{", 6),
        (r#"{"cniVersion":"0.4.0","type":"calico"}"#, 7),
        (
            r#"{"cniVersion":"0.4.0","name":"bad name","type":"calico"}"#,
            7,
        ),
    ];
    for (stdin, code) in cases {
        let (status, out) = invoke(&FULL_ENV, stdin);
        assert_eq!(
            (status, out["code"].as_u64()),
            (1, Some(code)),
            "{stdin}: {out}"
        );
    }
    let stdin = format!(r#"{{"cniVersion":"9.9.9","name":"n","type":"calico",{ipam}}}"#);
    let (_, out) = invoke(
        &FULL_ENV,
        r#"{"cniVersion":"0.3.1","name":"bad name","ipam":{"type":"x"}}"#,
    );
    assert_eq!(
        (out["code"].as_u64(), out["cniVersion"].as_str()),
        (Some(7), Some("0.3.1"))
    );
    let (_, out) = invoke(&FULL_ENV, &stdin);
    assert_eq!(out["code"], 1);
    assert_eq!(out["cniVersion"], "9.9.9");
    assert!(
        out["details"].as_str().unwrap().contains("0.1.0, 0.2.0"),
        "{out}"
    );
}

#[test]
fn check_needs_0_4_0_and_status_needs_1_1_0() {
    let check_env = [
        ("CNI_COMMAND", "CHECK"),
        ("CNI_CONTAINERID", "c"),
        ("CNI_IFNAME", "e"),
        ("CNI_PATH", "/x"),
        ("CNI_NETNS", "/n"),
    ];
    let (_, out) = invoke(
        &check_env,
        r#"{"cniVersion":"0.3.1","name":"n","type":"calico","ipam":{"type":"x"}}"#,
    );
    assert_eq!(out["code"], 1);
    let (_, out) = invoke(
        &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/x")],
        r#"{"cniVersion":"1.0.0","name":"n","type":"calico","ipam":{"type":"x"}}"#,
    );
    assert_eq!(out["code"], 1);
}

#[test]
fn missing_cni_version_means_0_1_0() {
    let add_env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c"),
        ("CNI_IFNAME", "e"),
        ("CNI_PATH", "/x"),
        ("CNI_NETNS", "/n"),
    ];
    let (status, out) = invoke(
        &add_env,
        r#"{"name":"n","type":"calico","ipam":{"type":"x"}}"#,
    );
    assert_eq!(status, 0);
    assert_eq!(out["cniVersion"], "0.1.0");
}

/// A plugin whose verbs fail after the request was validated, as a datastore or kernel step
/// would.
struct FailsLater;
impl Plugin for FailsLater {
    fn name(&self) -> &'static str {
        "fails-later"
    }
    fn add(&self, _req: &Request, _reply: &mut Reply<'_>) -> Result<()> {
        Err(Error::new(Code::TryAgainLater, "a later step failed"))
    }
    fn del(&self, _req: &Request) -> Result<()> {
        Err(Error::new(Code::TryAgainLater, "a later step failed"))
    }
}

const VALID_CONF: &str = r#"{"cniVersion":"0.4.0","name":"n","type":"calico","ipam":{"type":"x"}}"#;

/// The environment of `command` with every variable set, minus `missing`.
fn env_without<'a>(command: &'a str, missing: &[&str]) -> Vec<(&'a str, &'a str)> {
    [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/none"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/nonexistent"),
    ]
    .into_iter()
    .filter(|(k, _)| !missing.contains(k))
    .collect()
}

fn text_of(out: &Value) -> String {
    format!(
        "{} {}",
        out["msg"].as_str().unwrap_or_default(),
        out["details"].as_str().unwrap_or_default()
    )
}

#[test]
fn every_missing_required_variable_is_code_4_and_named() {
    let cases: &[(&str, &[&str])] = &[
        ("ADD", &["CNI_CONTAINERID"]),
        ("ADD", &["CNI_NETNS"]),
        ("ADD", &["CNI_IFNAME"]),
        ("ADD", &["CNI_PATH"]),
        ("ADD", &["CNI_NETNS", "CNI_PATH"]),
        (
            "ADD",
            &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
        ),
        ("DEL", &["CNI_CONTAINERID"]),
        ("DEL", &["CNI_IFNAME"]),
        ("DEL", &["CNI_PATH"]),
        ("DEL", &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"]),
    ];
    for (command, missing) in cases {
        let (status, out) = invoke(&env_without(command, missing), VALID_CONF);
        assert_eq!(
            (status, out["code"].as_u64()),
            (1, Some(4)),
            "{command} {missing:?}: {out}"
        );
        for var in *missing {
            assert!(
                text_of(&out).contains(var),
                "{command} {missing:?} does not name {var}: {out}"
            );
        }
    }
}

#[test]
fn an_empty_container_id_is_missing() {
    for command in ["ADD", "DEL"] {
        let mut env = env_without(command, &["CNI_CONTAINERID"]);
        env.push(("CNI_CONTAINERID", ""));
        let (status, out) = invoke(&env, VALID_CONF);
        assert_eq!(
            (status, out["code"].as_u64()),
            (1, Some(4)),
            "{command}: {out}"
        );
        assert!(
            text_of(&out).contains("CNI_CONTAINERID"),
            "{command}: {out}"
        );
    }
}

#[test]
fn an_unsupported_cni_version_is_code_1_listing_the_supported_ones() {
    let cases = [
        ("ADD", "9.9.9"),
        ("ADD", "1.2.0"),
        ("ADD", "0.5.0"),
        ("ADD", "2.0.0"),
        ("ADD", "1.0"),
        ("DEL", "9.9.9"),
    ];
    for (command, version) in cases {
        let conf = format!(
            r#"{{"cniVersion":"{version}","name":"n","type":"calico","ipam":{{"type":"x"}}}}"#
        );
        let (status, out) = invoke(&env_without(command, &[]), &conf);
        assert_eq!(
            (status, out["code"].as_u64()),
            (1, Some(1)),
            "{command} {version}: {out}"
        );
        let details = out["details"].as_str().unwrap_or_default();
        for supported in CniVersion::supported_strings(false) {
            assert!(
                details.contains(supported),
                "{command} {version}: {supported} not listed: {out}"
            );
        }
    }
}

/// The spec: an error's `cniVersion` is "the same value as provided by the configuration",
/// whether the config itself is at fault or a later step fails.
#[test]
fn errors_carry_the_config_cni_version() {
    for version in CniVersion::supported_strings(false) {
        for command in ["ADD", "DEL"] {
            let bad_name = format!(
                r#"{{"cniVersion":"{version}","name":"bad name","type":"calico","ipam":{{"type":"x"}}}}"#
            );
            let (_, out) = invoke(&env_without(command, &[]), &bad_name);
            assert_eq!(out["code"], 7, "{command} {version}: {out}");
            assert_eq!(
                out["cniVersion"], version,
                "{command} {version}: invalid name: {out}"
            );

            let good = format!(
                r#"{{"cniVersion":"{version}","name":"n","type":"calico","ipam":{{"type":"x"}}}}"#
            );
            let (_, out) = invoke_plugin(&FailsLater, &env_without(command, &[]), &good);
            assert_eq!(out["code"], 11, "{command} {version}: {out}");
            assert_eq!(
                out["cniVersion"], version,
                "{command} {version}: later step: {out}"
            );
        }
    }
}
