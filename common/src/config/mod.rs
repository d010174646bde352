//! The network configuration both plugins read from stdin (Calico v1.11 keys), parsed once into
//! typed, validated structs: the top-level keys here, each section and concern in its own
//! module.

mod attachments;
mod etcd;
mod ipam;
mod kubernetes;
mod labels;
mod names;
mod policy;

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Code, Error, Result};
use crate::log::LogLevel;

pub use attachments::Attachment;
pub use etcd::{DEFAULT_ETCD_TIMEOUT, EtcdConfigKeys, EtcdSettings, etcd_settings};
pub use ipam::{DEFAULT_BLOCK_HINT_DIR, IpamConf, IpamPlugin};
pub use kubernetes::KubernetesConf;
pub use labels::ENDPOINT_LABEL_PREFIX;
pub use names::DEFAULT_INTERFACE_PREFIX;
pub use policy::{PolicyConf, PolicyType};

/// The network config of both plugins, validated. Unknown keys are ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion` as written; `None` when absent or empty, which the protocol reads as its
    /// default version.
    pub cni_version: Option<String>,
    /// Network name: the Calico profile and the IPAM handle prefix.
    pub name: String,
    /// `type` (the plugin itself; not checked).
    pub plugin_type: String,
    /// The `ipam` section.
    pub ipam: IpamConf,
    /// MTU for both veth ends; `None` keeps the kernel default.
    pub mtu: Option<u32>,
    /// This node's name: `nodename`, else `hostname`, else the OS host name.
    pub nodename: String,
    /// How to reach etcd.
    pub etcd: EtcdSettings,
    /// `log_level`.
    pub log_level: LogLevel,
    /// `log_file` (or later Calico's `log_file_path`): an absolute path that entries are
    /// appended to as well as stderr; `None` for stderr only.
    pub log_file: Option<PathBuf>,
    /// `datastore_type` (only `etcdv2`, meaning Calico's v1 data model, is served).
    pub datastore_type: String,
    /// The `policy` section.
    pub policy: PolicyConf,
    /// The `kubernetes` section.
    pub kubernetes: KubernetesConf,
    /// Mesos labels from `args.org.apache.mesos.network_info.labels.labels`, as given.
    pub mesos_labels: Vec<(String, String)>,
    /// `prevResult` (CHECK, DEL).
    pub prev_result: Option<Value>,
    /// GC's list of attachments to keep: `cni.dev/valid-attachments`, or the older
    /// `cni.dev/attachments`; `None` when neither key is present.
    pub valid_attachments: Option<Vec<Attachment>>,
    /// `interface_prefix`: the start of every host veth name (default
    /// [`DEFAULT_INTERFACE_PREFIX`]); Felix's `InterfacePrefix` must be the same.
    pub interface_prefix: String,
    /// `create_profiles` (default true): whether ADD creates the network's profile. When false
    /// the endpoint still names it, but an operator creates and maintains it.
    pub create_profiles: bool,
    /// `ipam_in_process` (default true): with `ipam.type: calico-ipam`, `calico` runs Calico
    /// IPAM in its own process over its own etcd connection; false executes the `calico-ipam`
    /// binary as for any other IPAM plugin.
    pub ipam_in_process: bool,
    /// The labels `args.cni.labels` gives under [`ENDPOINT_LABEL_PREFIX`], prefix removed, when
    /// `label_endpoints` is true; empty otherwise.
    pub endpoint_labels: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct RawNetConf {
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    ipam: Option<ipam::RawIpam>,
    mtu: Option<u32>,
    nodename: Option<String>,
    hostname: Option<String>,
    #[serde(flatten)]
    etcd: EtcdConfigKeys,
    log_level: Option<String>,
    log_file: Option<String>,
    log_file_path: Option<String>,
    datastore_type: Option<String>,
    #[serde(default)]
    policy: policy::RawPolicy,
    #[serde(default)]
    kubernetes: kubernetes::RawKubernetes,
    args: Option<Value>,
    #[serde(rename = "prevResult")]
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Value>,
    #[serde(rename = "cni.dev/attachments")]
    attachments: Option<Value>,
    interface_prefix: Option<String>,
    create_profiles: Option<Value>,
    ipam_in_process: Option<Value>,
    label_endpoints: Option<Value>,
}

impl NetConf {
    /// Parses stdin. Malformed JSON is code 6; a missing or invalid field is code 7.
    /// `env` supplies the `ETCD_*` variables.
    pub fn parse(bytes: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<NetConf> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            Error::new(
                Code::Decoding,
                format!("failed to load network config: {e}"),
            )
        })?;
        if !value.is_object() {
            return Err(Error::new(
                Code::Decoding,
                "failed to load network config: not a JSON object",
            ));
        }
        // Read through a reference: the value is needed again only to name a mistyped key.
        let raw = RawNetConf::deserialize(&value).map_err(|e| {
            let key = mistyped_key(&value)
                .map(|key| format!("key {key:?}: "))
                .unwrap_or_default();
            Error::new(
                Code::InvalidConfig,
                format!("failed to load network config: {key}{e}"),
            )
        })?;
        let name = raw.name.unwrap_or_default();
        names::validate_network_name(&name)?;
        let ipam = ipam::parse_ipam(raw.ipam)?;
        let mtu = match raw.mtu {
            None | Some(0) => None,
            Some(mtu) if (68..=65535).contains(&mtu) => Some(mtu),
            Some(mtu) => return Err(invalid(format!("mtu {mtu} is outside 68-65535"))),
        };
        Ok(NetConf {
            cni_version: raw.cni_version.filter(|v| !v.is_empty()),
            name,
            plugin_type: raw.plugin_type.unwrap_or_default(),
            ipam,
            mtu,
            nodename: names::resolve_nodename(raw.nodename, raw.hostname)?,
            etcd: etcd::etcd_settings(&raw.etcd, env)?,
            log_level: raw
                .log_level
                .as_deref()
                .map(LogLevel::parse)
                .unwrap_or_default(),
            log_file: log_file(raw.log_file, raw.log_file_path)?,
            datastore_type: datastore_type(raw.datastore_type)?,
            policy: policy::parse_policy(raw.policy),
            kubernetes: kubernetes::parse_kubernetes(raw.kubernetes)?,
            mesos_labels: labels::mesos_labels(raw.args.as_ref()),
            prev_result: raw.prev_result,
            valid_attachments: attachments::gc_attachments(raw.valid_attachments, raw.attachments)?,
            interface_prefix: names::interface_prefix(raw.interface_prefix)?,
            create_profiles: flag(raw.create_profiles.as_ref(), "create_profiles", true)?,
            ipam_in_process: flag(raw.ipam_in_process.as_ref(), "ipam_in_process", true)?,
            endpoint_labels: if flag(raw.label_endpoints.as_ref(), "label_endpoints", false)? {
                labels::endpoint_labels(raw.args.as_ref())?
            } else {
                Vec::new()
            },
        })
    }
}

/// The top-level key whose value does not have the type the config needs: serde's message
/// says what was wrong but not where. Every field is optional, so an object holding only the
/// culprit is the one that fails alone.
fn mistyped_key(config: &Value) -> Option<String> {
    config.as_object()?.iter().find_map(|(key, value)| {
        let alone = Value::Object([(key.clone(), value.clone())].into_iter().collect());
        serde_json::from_value::<RawNetConf>(alone)
            .is_err()
            .then(|| key.clone())
    })
}

/// `log_file` wins over `log_file_path`, the key later Calico versions read; an empty value
/// means no file. The path must be absolute: a relative one would depend on the directory the
/// runtime happens to start the plugin in.
fn log_file(log_file: Option<String>, log_file_path: Option<String>) -> Result<Option<PathBuf>> {
    let keyed = [("log_file", log_file), ("log_file_path", log_file_path)];
    let Some((key, path)) = keyed
        .into_iter()
        .find_map(|(key, value)| value.filter(|v| !v.is_empty()).map(|v| (key, v)))
    else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        return Err(invalid(format!(
            "{key} {:?} is not an absolute path",
            path.display().to_string()
        )));
    }
    Ok(Some(path))
}

/// Calico v1's `etcdv2` data model (kept on etcd v3 here) is the only datastore; the
/// experimental `kubernetes` datastore of Calico v1.5+ is refused rather than silently replaced.
fn datastore_type(raw: Option<String>) -> Result<String> {
    match raw.as_deref() {
        None | Some("") | Some("etcdv2") => Ok("etcdv2".to_string()),
        Some(other) => Err(invalid(format!(
            "datastore_type {other:?} is not supported: only \"etcdv2\" (Calico's etcd data model)"
        ))),
    }
}

/// Calico documents these flags as the strings `"true"`/`"false"`; JSON booleans mean the same.
/// Only the non-default word flips the default, as in Calico.
fn flag(value: Option<&Value>, key: &str, default: bool) -> Result<bool> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => Ok(if default { s != "false" } else { s == "true" }),
        Some(other) => Err(invalid(format!(
            "{key} must be \"true\" or \"false\", not {other}"
        ))),
    }
}

fn invalid(msg: String) -> Error {
    Error::new(Code::InvalidConfig, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a config given as JSON text, without `ETCD_*` variables.
    pub(super) fn parse(json: &str) -> Result<NetConf> {
        NetConf::parse(json.as_bytes(), &|_| None)
    }

    #[test]
    fn defaults_match_calico() {
        let conf = parse(
            r#"{"name":"net1","type":"calico","ipam":{"type":"calico-ipam"},"nodename":"n1"}"#,
        )
        .unwrap();
        assert_eq!(conf.cni_version, None);
        assert!(conf.ipam.assign_ipv4 && !conf.ipam.assign_ipv6);
        assert_eq!(conf.mtu, None);
        assert_eq!(conf.nodename, "n1");
        assert_eq!(conf.log_level, LogLevel::Warning);
        assert_eq!(conf.log_file, None);
        assert_eq!(conf.etcd.endpoints, ["http://127.0.0.1:2379"]);
    }

    /// Calico v1 failure history, row 28: the Python plugin could not parse a config indented
    /// with tab characters ("no handlers found"). Tabs are JSON whitespace.

    #[test]
    fn config_indented_with_tabs_is_read() {
        let conf = parse(
            "{\n\t\"name\":\t\"net1\",\n\t\"type\": \"calico\",\n\t\"nodename\": \"n1\",\n\t\
             \"ipam\": {\n\t\t\"type\": \"calico-ipam\"\n\t}\n}\n",
        )
        .unwrap();
        assert_eq!(conf.name, "net1");
        assert_eq!(conf.nodename, "n1");
        assert_eq!(conf.ipam.plugin, IpamPlugin::CalicoIpam);
    }

    #[test]
    fn invalid_configs_are_code_7_and_malformed_ones_code_6() {
        let cases = [
            ("", Code::Decoding),
            ("{", Code::Decoding),
            ("[]", Code::Decoding),
            (r#"{"ipam":{"type":"x"}}"#, Code::InvalidConfig),
            (r#"{"name":"a/b","ipam":{"type":"x"}}"#, Code::InvalidConfig),
            (r#"{"name":"n"}"#, Code::InvalidConfig),
            (r#"{"name":"n","ipam":{}}"#, Code::InvalidConfig),
            (
                r#"{"name":"n","ipam":{"type":"x"},"mtu":"1500"}"#,
                Code::InvalidConfig,
            ),
            (
                r#"{"name":"n","ipam":{"type":"x"},"mtu":20}"#,
                Code::InvalidConfig,
            ),
            (
                r#"{"name":"n","ipam":{"type":"x","ipv4_pools":["fd00::/64"]}}"#,
                Code::InvalidConfig,
            ),
            (
                r#"{"name":"n","ipam":{"type":"x","ipv6_pools":["10.0.0.0/8"]}}"#,
                Code::InvalidConfig,
            ),
            (
                r#"{"name":"n","ipam":{"type":"x","assign_ipv4":1}}"#,
                Code::InvalidConfig,
            ),
            (
                r#"{"name":"n","ipam":{"type":"x"},"datastore_type":"kubernetes"}"#,
                Code::InvalidConfig,
            ),
        ];
        for (json, code) in cases {
            assert_eq!(parse(json).unwrap_err().code(), code, "{json}");
        }
    }

    #[test]
    fn log_file_is_read_from_either_key() {
        let cases = [
            ("", None),
            (r#","log_file":"""#, None),
            (
                r#","log_file":"/var/log/cni.log""#,
                Some("/var/log/cni.log"),
            ),
            (
                r#","log_file_path":"/var/log/a.log""#,
                Some("/var/log/a.log"),
            ),
            (
                r#","log_file":"/var/log/a.log","log_file_path":"/var/log/b.log""#,
                Some("/var/log/a.log"),
            ),
            (
                r#","log_file":"","log_file_path":"/var/log/b.log""#,
                Some("/var/log/b.log"),
            ),
        ];
        for (key, want) in cases {
            let json = format!(r#"{{"name":"n","ipam":{{"type":"x"}}{key}}}"#);
            let conf = parse(&json).unwrap();
            assert_eq!(conf.log_file, want.map(PathBuf::from), "{key}");
        }
    }

    #[test]
    fn mistyped_values_name_their_key() {
        for (keys, named) in [
            (r#""mtu":"1500""#, "\"mtu\""),
            (r#""name":5"#, "\"name\""),
            (r#""policy":"k8s""#, "\"policy\""),
            (r#""etcd_endpoints":["http://a:1"]"#, "\"etcd_endpoints\""),
            (r#""kubernetes":{"kubeconfig":5}"#, "\"kubernetes\""),
        ] {
            let json = format!(r#"{{"name":"n","ipam":{{"type":"x"}},{keys}}}"#);
            let err = parse(&json).unwrap_err();
            assert_eq!(err.code(), Code::InvalidConfig, "{json}");
            assert!(err.msg().contains(named), "{json}: {}", err.msg());
        }
    }

    #[test]
    fn relative_log_file_is_code_7_naming_the_key() {
        let cases = [
            (r#""log_file":"cni.log""#, "log_file \"cni.log\""),
            (r#""log_file_path":"./x.log""#, "log_file_path \"./x.log\""),
        ];
        for (key, named) in cases {
            let json = format!(r#"{{"name":"n","ipam":{{"type":"x"}},{key}}}"#);
            let err = parse(&json).unwrap_err();
            assert_eq!(err.code(), Code::InvalidConfig, "{key}");
            assert!(
                err.msg().contains(named),
                "{} should name {named}",
                err.msg()
            );
        }
    }

    #[test]
    fn create_profiles_defaults_to_true_and_takes_booleans_or_strings() {
        let cases = [
            ("", true),
            (r#","create_profiles":false"#, false),
            (r#","create_profiles":"false""#, false),
            (r#","create_profiles":true"#, true),
        ];
        for (key, want) in cases {
            let json = format!(r#"{{"name":"n","ipam":{{"type":"x"}}{key}}}"#);
            assert_eq!(parse(&json).unwrap().create_profiles, want, "{key}");
            let json = json.replace("create_profiles", "ipam_in_process");
            assert_eq!(parse(&json).unwrap().ipam_in_process, want, "{key}");
        }
        let err = parse(r#"{"name":"n","ipam":{"type":"x"},"create_profiles":0}"#).unwrap_err();
        assert_eq!(err.code(), Code::InvalidConfig);
        assert!(err.msg().contains("create_profiles"), "{}", err.msg());
    }
}
