//! The network configuration both plugins read from stdin (Calico v1.11 keys), parsed once into
//! typed, validated structs.

use std::path::PathBuf;
use std::time::Duration;

use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::Value;

use crate::dataplane::veth::ifname_problem;
use crate::error::{Code, Error, Result};
use crate::log::{self, LogLevel};
use crate::names::{NAME_RULE, is_valid_name};

/// Where and how to reach etcd, resolved from the config keys and the `ETCD_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Client URLs (`http://host:port` or `https://host:port`), tried in order.
    pub endpoints: Vec<String>,
    /// Client key for TLS (`etcd_key_file`, `ETCD_KEY_FILE`).
    pub key_file: Option<PathBuf>,
    /// Client certificate for TLS (`etcd_cert_file`, `ETCD_CERT_FILE`).
    pub cert_file: Option<PathBuf>,
    /// CA bundle for TLS (`etcd_ca_cert_file`, `ETCD_CA_CERT_FILE`).
    pub ca_cert_file: Option<PathBuf>,
    /// User name and password, used only when both are set (`ETCD_USERNAME`, `ETCD_PASSWORD`).
    pub credentials: Option<(String, String)>,
    /// The time all etcd work of one plugin run may take (`etcd_timeout`); each request gets
    /// what is left of it.
    pub timeout: Duration,
}

/// The default of `etcd_timeout`: all etcd work of one plugin run. A hung member costs far less
/// (see `datastore`); this bounds a cluster that is slow or has lost its leader.
pub const DEFAULT_ETCD_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The start of the `args.cni.labels` keys that `label_endpoints` copies onto the endpoint (the
/// libnetwork plugin's prefix for container labels).
pub const ENDPOINT_LABEL_PREFIX: &str = "org.projectcalico.label.";

/// The default of `interface_prefix`, Calico's and Felix's.
pub const DEFAULT_INTERFACE_PREFIX: &str = "cali";

/// The `ipam` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConf {
    /// `ipam.type`: the IPAM plugin's binary name.
    pub plugin_type: String,
    /// `ipam.assign_ipv4`: true unless `"false"` (or JSON `false`).
    pub assign_ipv4: bool,
    /// `ipam.assign_ipv6`: false unless `"true"` (or JSON `true`).
    pub assign_ipv6: bool,
    /// `ipam.ipv4_pools`: pools to allocate IPv4 addresses from.
    pub ipv4_pools: Vec<IpNetwork>,
    /// `ipam.ipv6_pools`: pools to allocate IPv6 addresses from.
    pub ipv6_pools: Vec<IpNetwork>,
    /// `ipam.subnet` (host-local; `usePodCidr` in Kubernetes).
    pub subnet: Option<String>,
    /// `ipam.block_hint_dir`: where calico-ipam keeps its node-local hint of the node's affine
    /// blocks (default [`DEFAULT_BLOCK_HINT_DIR`]); `None` when set to `""` (no hints).
    pub block_hint_dir: Option<PathBuf>,
}

/// The default of `ipam.block_hint_dir`.
pub const DEFAULT_BLOCK_HINT_DIR: &str = "/var/lib/cni/calico-ipam";

/// The `policy` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyConf {
    /// `policy.type`: `""` (the plugin creates a profile per network) or `"k8s"`.
    pub policy_type: String,
    /// `policy.k8s_api_root`, with anything from `/api/` on removed.
    pub k8s_api_root: Option<String>,
    /// `policy.k8s_auth_token`.
    pub k8s_auth_token: Option<String>,
    /// `policy.k8s_client_certificate`.
    pub k8s_client_certificate: Option<PathBuf>,
    /// `policy.k8s_client_key`.
    pub k8s_client_key: Option<PathBuf>,
    /// `policy.k8s_certificate_authority`.
    pub k8s_certificate_authority: Option<PathBuf>,
}

/// The `kubernetes` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubernetesConf {
    /// `kubernetes.kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `kubernetes.k8s_api_root`; overrides `policy.k8s_api_root`.
    pub k8s_api_root: Option<String>,
    /// `kubernetes.node_name`: the Node read for `usePodCidr`; defaults to `nodename`.
    pub node_name: Option<String>,
}

/// One entry of GC's list of valid attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Container id.
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

#[derive(Deserialize)]
struct RawNetConf {
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    ipam: Option<RawIpam>,
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
    policy: RawPolicy,
    #[serde(default)]
    kubernetes: RawKubernetes,
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

#[derive(Deserialize)]
struct RawIpam {
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    assign_ipv4: Option<Value>,
    assign_ipv6: Option<Value>,
    #[serde(default)]
    ipv4_pools: Vec<String>,
    #[serde(default)]
    ipv6_pools: Vec<String>,
    subnet: Option<String>,
    block_hint_dir: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawPolicy {
    #[serde(rename = "type", default)]
    policy_type: String,
    k8s_api_root: Option<String>,
    k8s_auth_token: Option<String>,
    k8s_client_certificate: Option<PathBuf>,
    k8s_client_key: Option<PathBuf>,
    k8s_certificate_authority: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
struct RawKubernetes {
    kubeconfig: Option<PathBuf>,
    k8s_api_root: Option<String>,
    node_name: Option<String>,
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
        validate_network_name(&name)?;
        let ipam = parse_ipam(raw.ipam)?;
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
            nodename: resolve_nodename(raw.nodename, raw.hostname)?,
            etcd: etcd_settings(&raw.etcd, env)?,
            log_level: raw
                .log_level
                .as_deref()
                .map(LogLevel::parse)
                .unwrap_or_default(),
            log_file: log_file(raw.log_file, raw.log_file_path)?,
            datastore_type: datastore_type(raw.datastore_type)?,
            policy: PolicyConf {
                policy_type: raw.policy.policy_type,
                k8s_api_root: raw.policy.k8s_api_root.map(|root| strip_api_path(&root)),
                k8s_auth_token: raw.policy.k8s_auth_token,
                k8s_client_certificate: raw.policy.k8s_client_certificate,
                k8s_client_key: raw.policy.k8s_client_key,
                k8s_certificate_authority: raw.policy.k8s_certificate_authority,
            },
            kubernetes: KubernetesConf {
                kubeconfig: raw.kubernetes.kubeconfig,
                k8s_api_root: raw.kubernetes.k8s_api_root,
                node_name: kubernetes_node_name(raw.kubernetes.node_name)?,
            },
            mesos_labels: mesos_labels(raw.args.as_ref()),
            prev_result: raw.prev_result,
            valid_attachments: gc_attachments(raw.valid_attachments, raw.attachments)?,
            interface_prefix: interface_prefix(raw.interface_prefix)?,
            create_profiles: flag(raw.create_profiles.as_ref(), "create_profiles", true)?,
            ipam_in_process: flag(raw.ipam_in_process.as_ref(), "ipam_in_process", true)?,
            endpoint_labels: if flag(raw.label_endpoints.as_ref(), "label_endpoints", false)? {
                endpoint_labels(raw.args.as_ref())?
            } else {
                Vec::new()
            },
        })
    }
}

/// GC's attachments to keep, from `cni.dev/valid-attachments` or else the older
/// `cni.dev/attachments` (`null` counts as absent). Each entry is `{"containerID","ifname"}`
/// with a valid container id and interface name; anything else is refused naming the entry, so
/// a malformed list can never be read as "nothing is valid".
fn gc_attachments(valid: Option<Value>, older: Option<Value>) -> Result<Option<Vec<Attachment>>> {
    let (key, list) = match (valid, older) {
        (Some(list), _) if !list.is_null() => ("cni.dev/valid-attachments", list),
        (_, Some(list)) if !list.is_null() => ("cni.dev/attachments", list),
        _ => return Ok(None),
    };
    let Value::Array(entries) = list else {
        return Err(invalid(format!("{key} must be a list, not {list}")));
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let field = |name: &str| -> Result<String> {
                entry
                    .get(name)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        invalid(format!(
                            "{key}[{i}] must be an object with string {name}, not {entry}"
                        ))
                    })
            };
            let attachment = Attachment {
                container_id: field("containerID")?,
                ifname: field("ifname")?,
            };
            validate_name(&format!("{key}[{i}].containerID"), &attachment.container_id)?;
            if let Some(problem) = ifname_problem(&attachment.ifname) {
                return Err(invalid(format!(
                    "{key}[{i}].ifname {:?} {problem}",
                    attachment.ifname
                )));
            }
            Ok(attachment)
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// The host veth is the prefix and at least one character of the container's id (or hash), so
/// the prefix may take 14 of the kernel's 15 bytes, and must itself be a valid interface name.
fn interface_prefix(raw: Option<String>) -> Result<String> {
    let Some(prefix) = raw else {
        return Ok(DEFAULT_INTERFACE_PREFIX.to_string());
    };
    let problem = match ifname_problem(&prefix) {
        Some(problem) => Some(problem),
        None if prefix.len() > 14 => Some("is longer than 14 bytes"),
        None => None,
    };
    match problem {
        Some(problem) => Err(invalid(format!(
            "interface_prefix {prefix:?} {problem}: it must be 1-14 bytes of a valid interface name"
        ))),
        None => Ok(prefix),
    }
}

/// `kubernetes.node_name` is a segment of the API path of the Node that is read.
fn kubernetes_node_name(raw: Option<String>) -> Result<Option<String>> {
    match raw {
        Some(name) if !name.is_empty() => {
            validate_name("kubernetes.node_name", &name)?;
            Ok(Some(name))
        }
        _ => Ok(None),
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

/// Network names become etcd key segments, profile names and handle prefixes. Calico allowed
/// `^[a-zA-Z0-9_.-]+$`, which lets `.` and `..` through; the CNI spec's rule (first character
/// alphanumeric), which libcni enforces before it runs a plugin, does not.
fn validate_network_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(invalid("missing network name".to_string()));
    }
    validate_name("name", name)
}

/// A name from the config that becomes an etcd key segment or a file name must follow
/// [`NAME_RULE`]; the error names the key and the value.
fn validate_name(key: &str, value: &str) -> Result<()> {
    if is_valid_name(value) {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid {key} {value:?}: must match {NAME_RULE} (letters, digits and _.-, starting with a letter or digit)"
        )))
    }
}

fn parse_ipam(raw: Option<RawIpam>) -> Result<IpamConf> {
    let raw = raw.ok_or_else(|| invalid("missing ipam section".to_string()))?;
    let plugin_type = raw
        .plugin_type
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid("missing ipam.type".to_string()))?;
    // A binary name looked up in CNI_PATH: a path would run any executable on the host.
    if plugin_type.contains('/')
        || plugin_type == "."
        || plugin_type == ".."
        || plugin_type.chars().any(char::is_control)
    {
        return Err(invalid(format!(
            "invalid ipam.type {plugin_type:?}: must be the name of a plugin in CNI_PATH"
        )));
    }
    Ok(IpamConf {
        plugin_type,
        assign_ipv4: flag(raw.assign_ipv4.as_ref(), "ipam.assign_ipv4", true)?,
        assign_ipv6: flag(raw.assign_ipv6.as_ref(), "ipam.assign_ipv6", false)?,
        ipv4_pools: pools(&raw.ipv4_pools, "ipam.ipv4_pools", true)?,
        ipv6_pools: pools(&raw.ipv6_pools, "ipam.ipv6_pools", false)?,
        subnet: raw.subnet,
        block_hint_dir: block_hint_dir(raw.block_hint_dir)?,
    })
}

/// A missing key means the default directory; an empty one turns hints off. A relative
/// directory is refused: it would be resolved against whatever directory the runtime started
/// the plugin in, scattering hints (and missing them) from one run to the next.
fn block_hint_dir(raw: Option<String>) -> Result<Option<PathBuf>> {
    match raw {
        None => Ok(Some(PathBuf::from(DEFAULT_BLOCK_HINT_DIR))),
        Some(dir) if dir.is_empty() => Ok(None),
        Some(dir) if PathBuf::from(&dir).is_absolute() => Ok(Some(PathBuf::from(dir))),
        Some(dir) => Err(invalid(format!(
            "ipam.block_hint_dir {dir:?} is not an absolute path"
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

fn pools(raw: &[String], key: &str, ipv4: bool) -> Result<Vec<IpNetwork>> {
    raw.iter()
        .map(|text| {
            let pool: IpNetwork = text
                .parse()
                .map_err(|_| invalid(format!("{key}: {text:?} is not a CIDR")))?;
            if pool.is_ipv4() != ipv4 {
                let family = if ipv4 { "IPv4" } else { "IPv6" };
                return Err(invalid(format!("{key}: {text:?} is not an {family} pool")));
            }
            if let Some(problem) = crate::special_ranges::pool_problem(pool) {
                return Err(invalid(format!("{key}: {problem}")));
            }
            Ok(pool)
        })
        .collect()
}

/// The node name is a segment of endpoint, affinity and attachment keys and names the block
/// hint file, so it must follow [`NAME_RULE`] wherever it comes from.
fn resolve_nodename(nodename: Option<String>, hostname: Option<String>) -> Result<String> {
    if let Some(name) = nodename.filter(|n| !n.is_empty()) {
        validate_name("nodename", &name)?;
        return Ok(name);
    }
    if let Some(name) = hostname.filter(|n| !n.is_empty()) {
        log::warn("configuration option 'hostname' is deprecated, use 'nodename' instead");
        validate_name("hostname", &name)?;
        return Ok(name);
    }
    let name = nix::unistd::gethostname()
        .map_err(|e| Error::internal(format!("read the host name: {e}")))?;
    let name = name.to_string_lossy().into_owned();
    validate_name("OS host name (set nodename instead)", &name)?;
    Ok(name)
}

/// Old configs wrote the API root as `https://host:port/api/v1/`; only the part before `/api/`
/// names the server.
fn strip_api_path(root: &str) -> String {
    root.split("/api/").next().unwrap_or(root).to_string()
}

fn mesos_labels(args: Option<&Value>) -> Vec<(String, String)> {
    let labels = args
        .and_then(|a| a.pointer("/org.apache.mesos/network_info/labels/labels"))
        .and_then(Value::as_array);
    labels
        .into_iter()
        .flatten()
        .filter_map(|label| {
            let key = label.get("key")?.as_str()?;
            let value = label
                .get("value")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Some((key.to_string(), value.to_string()))
        })
        .collect()
}

/// The CNI conventions' `args.cni.labels`, `[{"key","value"}]`: the entries whose key starts
/// with [`ENDPOINT_LABEL_PREFIX`], without it; other keys belong to other consumers. Only read
/// when `label_endpoints` asks for them, so a runtime's labels never fail a config that does
/// not use them; then a list of another shape is refused rather than half read.
fn endpoint_labels(args: Option<&Value>) -> Result<Vec<(String, String)>> {
    const KEY: &str = "args.cni.labels";
    let Some(list) = args.and_then(|a| a.pointer("/cni/labels")) else {
        return Ok(Vec::new());
    };
    let Value::Array(entries) = list else {
        return Err(invalid(format!("{KEY} must be a list, not {list}")));
    };
    let mut labels = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let field = |name: &str| entry.get(name).and_then(Value::as_str);
        let (Some(key), Some(value)) = (field("key"), field("value")) else {
            return Err(invalid(format!(
                "{KEY}[{i}] must be an object with string key and value, not {entry}"
            )));
        };
        let Some(label) = key.strip_prefix(ENDPOINT_LABEL_PREFIX) else {
            continue;
        };
        if label.is_empty() {
            return Err(invalid(format!(
                "{KEY}[{i}]: key {key:?} names no label after {ENDPOINT_LABEL_PREFIX:?}"
            )));
        }
        labels.push((label.to_string(), value.to_string()));
    }
    Ok(labels)
}

fn invalid(msg: String) -> Error {
    Error::new(Code::InvalidConfig, msg)
}

#[cfg(test)]
mod netconf_tests {
    use super::*;

    fn parse(json: &str) -> Result<NetConf> {
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
        assert_eq!(conf.ipam.plugin_type, "calico-ipam");
    }

    #[test]
    fn block_hint_dir_defaults_and_can_be_turned_off() {
        let cases = [
            ("", Some(DEFAULT_BLOCK_HINT_DIR)),
            (r#","block_hint_dir":"""#, None),
            (r#","block_hint_dir":"/tmp/hints""#, Some("/tmp/hints")),
        ];
        for (key, want) in cases {
            let json = format!(r#"{{"name":"n","ipam":{{"type":"calico-ipam"{key}}}}}"#);
            let conf = parse(&json).unwrap();
            assert_eq!(conf.ipam.block_hint_dir, want.map(PathBuf::from), "{key}");
        }
        let err = parse(r#"{"name":"n","ipam":{"type":"x","block_hint_dir":5}}"#).unwrap_err();
        assert_eq!(err.code(), Code::InvalidConfig, "{}", err.msg());
    }

    #[test]
    fn assign_flags_accept_strings_and_booleans() {
        let cases = [
            (r#""assign_ipv4":"false","assign_ipv6":"true""#, false, true),
            (r#""assign_ipv4":false,"assign_ipv6":true"#, false, true),
            (r#""assign_ipv4":"yes","assign_ipv6":"yes""#, true, false),
            (r#""assign_ipv4":true"#, true, false),
        ];
        for (keys, v4, v6) in cases {
            let json = format!(r#"{{"name":"n","ipam":{{"type":"calico-ipam",{keys}}}}}"#);
            let conf = parse(&json).unwrap();
            assert_eq!(
                (conf.ipam.assign_ipv4, conf.ipam.assign_ipv6),
                (v4, v6),
                "{keys}"
            );
        }
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
    fn pools_overlapping_special_ranges_are_refused_naming_key_and_range() {
        let cases = [
            ("ipv4_pools", "169.254.0.0/16", "169.254.0.0/16"),
            ("ipv4_pools", "127.0.0.0/8", "127.0.0.0/8"),
            ("ipv4_pools", "224.0.0.0/8", "224.0.0.0/4"),
            ("ipv4_pools", "0.0.0.0/0", "0.0.0.0/8"),
            ("ipv6_pools", "fe80::/64", "fe80::/10"),
            ("ipv6_pools", "::1/128", "::1/128"),
        ];
        for (key, pool, special) in cases {
            let json =
                format!(r#"{{"name":"n","ipam":{{"type":"calico-ipam","{key}":["{pool}"]}}}}"#);
            let err = parse(&json).unwrap_err();
            assert_eq!(err.code(), Code::InvalidConfig, "{pool}");
            for named in [key, pool, special] {
                assert!(err.msg().contains(named), "{pool}: {}", err.msg());
            }
        }
    }

    #[test]
    fn names_that_would_escape_their_key_segment_are_refused_naming_key_and_value() {
        let cases = [
            (r#""name":".""#, "name"),
            (r#""name":"..""#, "name"),
            (r#""name":"-net""#, "name"),
            (
                r#""name":"n","nodename":"a/workload/cni/victim""#,
                "nodename",
            ),
            (r#""name":"n","nodename":"..""#, "nodename"),
            (r#""name":"n","nodename":"node\n1""#, "nodename"),
            (r#""name":"n","hostname":"a/b""#, "hostname"),
            (r#""name":"n","hostname":".""#, "hostname"),
            (
                r#""name":"n","kubernetes":{"node_name":"../../namespaces/x"}"#,
                "kubernetes.node_name",
            ),
        ];
        for (keys, named) in cases {
            let json = format!(r#"{{{keys},"ipam":{{"type":"x"}}}}"#);
            let err = parse(&json).unwrap_err();
            assert_eq!(err.code(), Code::InvalidConfig, "{json}");
            assert!(err.msg().contains(named), "{json}: {}", err.msg());
        }
        for (name, nodename) in [
            ("k8s-pod-network", "node-1.example.com"),
            ("net_1.a", "Node_A"),
            ("0net", "ip-10-0-0-1.ec2.internal"),
        ] {
            let json =
                format!(r#"{{"name":"{name}","nodename":"{nodename}","ipam":{{"type":"x"}}}}"#);
            let conf = parse(&json).unwrap();
            assert_eq!(
                (conf.name.as_str(), conf.nodename.as_str()),
                (name, nodename)
            );
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
    fn ipam_type_must_be_a_plugin_name() {
        for plugin in ["../bin/sh", "/usr/bin/calico-ipam", ".", ".."] {
            let json = format!(r#"{{"name":"n","ipam":{{"type":"{plugin}"}}}}"#);
            let err = parse(&json).unwrap_err();
            assert_eq!(err.code(), Code::InvalidConfig, "{plugin}");
            assert!(err.msg().contains("ipam.type"), "{}", err.msg());
        }
    }

    #[test]
    fn relative_block_hint_dir_is_refused_naming_the_key() {
        for dir in ["hints", "./hints", "../var/lib/hints"] {
            let json = format!(
                r#"{{"name":"n","ipam":{{"type":"calico-ipam","block_hint_dir":"{dir}"}}}}"#
            );
            let err = parse(&json).unwrap_err();
            assert_eq!(err.code(), Code::InvalidConfig, "{dir}");
            assert!(
                err.msg().contains("ipam.block_hint_dir") && err.msg().contains(dir),
                "{}",
                err.msg()
            );
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
    fn gc_attachments_of_the_wrong_shape_are_refused_naming_the_entry() {
        let cases = [
            (
                r#""cni.dev/valid-attachments":"c1""#,
                "cni.dev/valid-attachments",
            ),
            (
                r#""cni.dev/valid-attachments":{"containerID":"c1"}"#,
                "cni.dev/valid-attachments",
            ),
            (
                r#""cni.dev/valid-attachments":["c1"]"#,
                "cni.dev/valid-attachments[0]",
            ),
            (
                r#""cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"},{"ifname":"eth0"}]"#,
                "cni.dev/valid-attachments[1]",
            ),
            (
                r#""cni.dev/valid-attachments":[{"containerID":5,"ifname":"eth0"}]"#,
                "containerID",
            ),
            (
                r#""cni.dev/valid-attachments":[{"containerID":"../c1","ifname":"eth0"}]"#,
                "cni.dev/valid-attachments[0].containerID",
            ),
            (
                r#""cni.dev/attachments":[{"containerID":"c1","ifname":"a/b"}]"#,
                "cni.dev/attachments[0].ifname",
            ),
        ];
        for (key, named) in cases {
            let json = format!(r#"{{"name":"n","ipam":{{"type":"x"}},{key}}}"#);
            let err = parse(&json).unwrap_err();
            assert_eq!(err.code(), Code::InvalidConfig, "{json}");
            assert!(err.msg().contains(named), "{json}: {}", err.msg());
        }
        let conf =
            parse(r#"{"name":"n","ipam":{"type":"x"},"cni.dev/valid-attachments":null}"#).unwrap();
        assert_eq!(conf.valid_attachments, None);
    }

    #[test]
    fn interface_prefix_defaults_to_cali_and_must_fit_an_interface_name() {
        let with_prefix = |prefix: &str| {
            let json =
                serde_json::json!({"name": "n", "ipam": {"type": "x"}, "interface_prefix": prefix});
            parse(&json.to_string())
        };
        let conf = parse(r#"{"name":"n","ipam":{"type":"x"}}"#).unwrap();
        assert_eq!(conf.interface_prefix, "cali");
        for good in ["tap", "c", "abcdefghijklmn", "veth-x.1"] {
            assert_eq!(with_prefix(good).unwrap().interface_prefix, good);
        }
        let too_long_in_bytes = "\u{e9}".repeat(7) + "x";
        for bad in [
            "",
            "abcdefghijklmno",
            "a/b",
            "a:b",
            "a b",
            "tab\t",
            "..",
            &too_long_in_bytes,
        ] {
            let err = with_prefix(bad).unwrap_err();
            assert_eq!(err.code(), Code::InvalidConfig, "{bad:?}");
            assert!(
                err.msg().contains("interface_prefix"),
                "{bad:?}: {}",
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

    #[test]
    fn endpoint_labels_are_the_prefixed_cni_labels_when_asked_for() {
        let args = r#""args":{"cni":{"labels":[
            {"key":"org.projectcalico.label.role","value":"db"},
            {"key":"com.example.team","value":"x"},
            {"key":"org.projectcalico.label.tier","value":""}]}}"#;
        let cases = [
            ("", vec![]),
            (r#""label_endpoints":false,"#, vec![]),
            (
                r#""label_endpoints":true,"#,
                vec![("role", "db"), ("tier", "")],
            ),
        ];
        for (flag, want) in cases {
            let json = format!(r#"{{"name":"n","ipam":{{"type":"x"}},{flag}{args}}}"#);
            let got = parse(&json).unwrap().endpoint_labels;
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, want, "{flag}");
        }
        let without_args = r#"{"name":"n","ipam":{"type":"x"},"label_endpoints":true}"#;
        assert!(parse(without_args).unwrap().endpoint_labels.is_empty());
    }

    #[test]
    fn malformed_cni_labels_are_refused_naming_them_only_when_used() {
        let cases = [
            r#"{"labels":{"key":"a","value":"b"}}"#,
            r#"{"labels":"role=db"}"#,
            r#"{"labels":[{"key":"org.projectcalico.label.a"}]}"#,
            r#"{"labels":[{"key":"org.projectcalico.label.a","value":1}]}"#,
            r#"{"labels":[["org.projectcalico.label.a","b"]]}"#,
            r#"{"labels":[{"key":"org.projectcalico.label.","value":"b"}]}"#,
        ];
        for cni in cases {
            let json = format!(
                r#"{{"name":"n","ipam":{{"type":"x"}},"label_endpoints":true,"args":{{"cni":{cni}}}}}"#
            );
            let err = parse(&json).unwrap_err();
            assert_eq!(err.code(), Code::InvalidConfig, "{cni}");
            assert!(
                err.msg().contains("args.cni.labels"),
                "{cni}: {}",
                err.msg()
            );
            let unused = json.replace(r#""label_endpoints":true"#, r#""label_endpoints":false"#);
            assert!(parse(&unused).is_ok(), "{cni}");
        }
    }

    #[test]
    fn nodename_wins_over_hostname() {
        let conf =
            parse(r#"{"name":"n","ipam":{"type":"x"},"hostname":"h","nodename":"nn"}"#).unwrap();
        assert_eq!(conf.nodename, "nn");
        let conf = parse(r#"{"name":"n","ipam":{"type":"x"},"hostname":"h"}"#).unwrap();
        assert_eq!(conf.nodename, "h");
    }

    #[test]
    fn api_root_path_is_stripped() {
        let conf = parse(r#"{"name":"n","ipam":{"type":"x"},"policy":{"type":"k8s","k8s_api_root":"https://10.0.0.1:443/api/v1/"}}"#).unwrap();
        assert_eq!(
            conf.policy.k8s_api_root.as_deref(),
            Some("https://10.0.0.1:443")
        );
    }

    #[test]
    fn gc_attachments_come_from_either_key() {
        let conf = parse(r#"{"name":"n","ipam":{"type":"x"},"cni.dev/attachments":[{"containerID":"c","ifname":"eth0"}]}"#).unwrap();
        assert_eq!(conf.valid_attachments.unwrap()[0].container_id, "c");
    }

    #[test]
    fn mesos_labels_are_read() {
        let conf = parse(r#"{"name":"n","ipam":{"type":"x"},"args":{"org.apache.mesos":{"network_info":{"labels":{"labels":[{"key":"app","value":"web"}]}}}}}"#).unwrap();
        assert_eq!(conf.mesos_labels, [("app".to_string(), "web".to_string())]);
    }
}

/// The etcd keys of the network config, as written; [`etcd_settings`] resolves them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct EtcdConfigKeys {
    /// `etcd_endpoints`: comma-separated client URLs; wins over authority and scheme.
    pub etcd_endpoints: Option<String>,
    /// `etcd_authority`: `host:port` (deprecated upstream).
    pub etcd_authority: Option<String>,
    /// `etcd_scheme`: `http` or `https` (deprecated upstream).
    pub etcd_scheme: Option<String>,
    /// `etcd_key_file`: client key for TLS.
    pub etcd_key_file: Option<String>,
    /// `etcd_cert_file`: client certificate for TLS.
    pub etcd_cert_file: Option<String>,
    /// `etcd_ca_cert_file`: CA bundle for TLS.
    pub etcd_ca_cert_file: Option<String>,
    /// `etcd_timeout`: seconds all etcd work of one plugin run may take, as written (a
    /// positive number is valid).
    pub etcd_timeout: Option<Value>,
}

/// Resolves where and how to reach etcd.
///
/// Upstream copies each config key into its `ETCD_*` variable before building the client, so a
/// config key wins over the variable; empty values count as unset. Endpoints come from
/// `etcd_endpoints`/`ETCD_ENDPOINTS`, otherwise from `<scheme>://<authority>` (defaults `http`
/// and `127.0.0.1:2379`). Credentials need both `ETCD_USERNAME` and `ETCD_PASSWORD`. An endpoint
/// that is not an `http://` or `https://` URL of a host and port, an empty entry in the list, or
/// an `etcd_timeout` that is not a positive number is an invalid config (code 7) naming the key.
pub fn etcd_settings(
    raw: &EtcdConfigKeys,
    env: &dyn Fn(&str) -> Option<String>,
) -> crate::error::Result<EtcdSettings> {
    let pick = |key: &Option<String>, var: &str| -> Option<String> {
        let set = |v: &String| !v.trim().is_empty();
        key.clone().filter(set).or_else(|| env(var).filter(set))
    };
    let listed = match (&raw.etcd_endpoints, env("ETCD_ENDPOINTS")) {
        (Some(list), _) if !list.trim().is_empty() => Some(("etcd_endpoints", list.clone())),
        (_, Some(list)) if !list.trim().is_empty() => Some(("ETCD_ENDPOINTS", list)),
        _ => None,
    };
    let endpoints = match listed {
        Some((source, list)) => endpoint_list(source, &list)?,
        None => {
            let scheme = pick(&raw.etcd_scheme, "ETCD_SCHEME").unwrap_or_else(|| "http".to_owned());
            let authority = pick(&raw.etcd_authority, "ETCD_AUTHORITY")
                .unwrap_or_else(|| "127.0.0.1:2379".to_owned());
            let endpoint = format!("{}://{}", scheme.trim(), authority.trim());
            validate_etcd_endpoint(&endpoint).map_err(|why| {
                invalid(format!(
                    "etcd_scheme and etcd_authority give etcd endpoint {endpoint:?}, which {why}"
                ))
            })?;
            vec![endpoint]
        }
    };
    let path = |key: &Option<String>, var: &str| pick(key, var).map(std::path::PathBuf::from);
    let credentials = match (env("ETCD_USERNAME"), env("ETCD_PASSWORD")) {
        (Some(user), Some(password)) if !user.is_empty() && !password.is_empty() => {
            Some((user, password))
        }
        _ => None,
    };
    Ok(EtcdSettings {
        endpoints,
        key_file: path(&raw.etcd_key_file, "ETCD_KEY_FILE"),
        cert_file: path(&raw.etcd_cert_file, "ETCD_CERT_FILE"),
        ca_cert_file: path(&raw.etcd_ca_cert_file, "ETCD_CA_CERT_FILE"),
        credentials,
        timeout: etcd_timeout(raw.etcd_timeout.as_ref())?,
    })
}

/// `etcd_timeout`: a positive number of seconds; absent or `null` means the default.
fn etcd_timeout(value: Option<&Value>) -> crate::error::Result<Duration> {
    let seconds = match value {
        None | Some(Value::Null) => return Ok(DEFAULT_ETCD_TIMEOUT),
        Some(Value::Number(n)) => n.as_f64(),
        Some(_) => None,
    };
    // The upper bound only keeps the conversion to a Duration in range; a day is plenty.
    match seconds {
        Some(s) if s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(invalid(format!(
            "etcd_timeout {} must be a number of seconds above 0 (at most 86400)",
            value.map(Value::to_string).unwrap_or_default()
        ))),
    }
}

/// The comma-separated endpoints of `source` (`etcd_endpoints` or `ETCD_ENDPOINTS`): every
/// entry must be an endpoint; an empty one is a typo, not something to skip.
fn endpoint_list(source: &str, list: &str) -> crate::error::Result<Vec<String>> {
    list.split(',')
        .map(str::trim)
        .map(|endpoint| {
            let why = if endpoint.is_empty() {
                Err("has an empty entry".to_owned())
            } else {
                validate_etcd_endpoint(endpoint)
                    .map_err(|why| format!("has entry {endpoint:?}, which {why}"))
            };
            why.map(|()| endpoint.to_owned())
                .map_err(|why| invalid(format!("{source} {list:?} {why}")))
        })
        .collect()
}

/// An etcd endpoint is `http://` or `https://`, a host (name, IPv4 address or bracketed IPv6
/// address), an optional port and nothing else but an optional `/`. Says what is wrong.
fn validate_etcd_endpoint(endpoint: &str) -> std::result::Result<(), String> {
    let Some(rest) = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
    else {
        return Err("is not an http:// or https:// URL".to_owned());
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err("has no host".to_owned());
    }
    if let Some(bad) = authority
        .chars()
        .find(|c| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "has {bad:?} after the scheme: only a host and a port are allowed"
        ));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (address, after) = bracketed
                .split_once(']')
                .ok_or_else(|| "has an unclosed [ around its IPv6 address".to_owned())?;
            if address.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("has {address:?} in brackets, not an IPv6 address"));
            }
            match after {
                "" => (address, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (address, Some(port)),
                    None => return Err(format!("has {after:?} after its IPv6 address")),
                },
            }
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err("has no host".to_owned());
    }
    if let Some(port) = port
        && !port.parse::<u16>().is_ok_and(|p| p != 0)
    {
        return Err(format!("has port {port:?}, not a number from 1 to 65535"));
    }
    Ok(())
}

#[cfg(test)]
mod etcd_settings_tests {
    use super::*;

    /// Config keys or environment variables of one case.
    type Pairs = &'static [(&'static str, &'static str)];

    fn keys(pairs: &[(&str, &str)]) -> EtcdConfigKeys {
        let json: serde_json::Map<String, serde_json::Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        serde_json::from_value(serde_json::Value::Object(json)).unwrap()
    }

    fn resolve(
        config: &[(&str, &str)],
        vars: &[(&str, &str)],
    ) -> crate::error::Result<EtcdSettings> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        etcd_settings(&keys(config), &env)
    }

    #[test]
    fn endpoints_follow_upstream_precedence() {
        let cases: &[(Pairs, Pairs, &[&str])] = &[
            (&[], &[], &["http://127.0.0.1:2379"]),
            (
                &[("etcd_authority", "10.0.0.1:4001")],
                &[],
                &["http://10.0.0.1:4001"],
            ),
            (
                &[("etcd_scheme", "https")],
                &[],
                &["https://127.0.0.1:2379"],
            ),
            (
                &[],
                &[("ETCD_AUTHORITY", "h:1"), ("ETCD_SCHEME", "https")],
                &["https://h:1"],
            ),
            (
                &[("etcd_authority", "c:1")],
                &[("ETCD_AUTHORITY", "e:1")],
                &["http://c:1"],
            ),
            (
                &[("etcd_authority", "")],
                &[("ETCD_AUTHORITY", "e:1")],
                &["http://e:1"],
            ),
            (
                &[("etcd_endpoints", " http://a:1 , https://b:2/")],
                &[],
                &["http://a:1", "https://b:2/"],
            ),
            (
                &[(
                    "etcd_endpoints",
                    "https://[fd00::1]:2379,http://etcd-0.example",
                )],
                &[],
                &["https://[fd00::1]:2379", "http://etcd-0.example"],
            ),
            (
                &[("etcd_endpoints", "http://a:1"), ("etcd_authority", "b:2")],
                &[],
                &["http://a:1"],
            ),
            (
                &[],
                &[("ETCD_ENDPOINTS", "http://e:1,http://f:2")],
                &["http://e:1", "http://f:2"],
            ),
            (
                &[("etcd_endpoints", "http://c:1")],
                &[("ETCD_ENDPOINTS", "http://e:1")],
                &["http://c:1"],
            ),
            (
                &[("etcd_authority", "c:1")],
                &[("ETCD_ENDPOINTS", "http://e:1")],
                &["http://e:1"],
            ),
            (
                &[("etcd_endpoints", " ")],
                &[("ETCD_AUTHORITY", "e:1")],
                &["http://e:1"],
            ),
        ];
        for (config, vars, want) in cases {
            let settings = resolve(config, vars).unwrap();
            assert_eq!(settings.endpoints, *want, "config {config:?} env {vars:?}");
            assert_eq!(settings.timeout, DEFAULT_ETCD_TIMEOUT);
        }
    }

    #[test]
    fn tls_files_come_from_config_then_env() {
        let cases: &[(Pairs, Pairs, [Option<&str>; 3])] = &[
            (&[], &[], [None, None, None]),
            (
                &[
                    ("etcd_key_file", "/c/key"),
                    ("etcd_cert_file", "/c/cert"),
                    ("etcd_ca_cert_file", "/c/ca"),
                ],
                &[
                    ("ETCD_KEY_FILE", "/e/key"),
                    ("ETCD_CERT_FILE", "/e/cert"),
                    ("ETCD_CA_CERT_FILE", "/e/ca"),
                ],
                [Some("/c/key"), Some("/c/cert"), Some("/c/ca")],
            ),
            (
                &[("etcd_ca_cert_file", "/c/ca")],
                &[("ETCD_KEY_FILE", "/e/key"), ("ETCD_CERT_FILE", "/e/cert")],
                [Some("/e/key"), Some("/e/cert"), Some("/c/ca")],
            ),
        ];
        for (config, vars, [key, cert, ca]) in cases {
            let settings = resolve(config, vars).unwrap();
            let got = [
                &settings.key_file,
                &settings.cert_file,
                &settings.ca_cert_file,
            ]
            .map(|p| p.as_ref().map(|p| p.to_string_lossy().into_owned()));
            let want = [key, cert, ca].map(|p| p.map(str::to_owned));
            assert_eq!(got, want, "config {config:?} env {vars:?}");
        }
    }

    #[test]
    fn credentials_need_both_variables() {
        let cases: &[(Pairs, Option<(&str, &str)>)] = &[
            (&[], None),
            (&[("ETCD_USERNAME", "u")], None),
            (&[("ETCD_PASSWORD", "p")], None),
            (&[("ETCD_USERNAME", "u"), ("ETCD_PASSWORD", "")], None),
            (
                &[("ETCD_USERNAME", "u"), ("ETCD_PASSWORD", "p")],
                Some(("u", "p")),
            ),
        ];
        for (vars, want) in cases {
            let settings = resolve(&[], vars).unwrap();
            let want = want.map(|(u, p)| (u.to_owned(), p.to_owned()));
            assert_eq!(settings.credentials, want, "env {vars:?}");
        }
    }

    #[test]
    fn malformed_endpoints_are_invalid_config_naming_key_and_value() {
        // (config, environment, what the message must name)
        let cases: &[(Pairs, Pairs, &[&str])] = &[
            (
                &[("etcd_endpoints", "127.0.0.1:2379")],
                &[],
                &["etcd_endpoints", "127.0.0.1:2379", "http://"],
            ),
            (
                &[("etcd_endpoints", "http://a:1,unix:///run/etcd")],
                &[],
                &["etcd_endpoints", "unix:///run/etcd"],
            ),
            (
                &[],
                &[("ETCD_ENDPOINTS", "ftp://a:1")],
                &["ETCD_ENDPOINTS", "ftp://a:1"],
            ),
            (
                &[("etcd_scheme", "grpc")],
                &[],
                &["etcd_scheme", "grpc://127.0.0.1:2379"],
            ),
            (
                &[("etcd_endpoints", "http://")],
                &[],
                &["etcd_endpoints", "no host"],
            ),
            (
                &[("etcd_endpoints", ",,,")],
                &[],
                &["etcd_endpoints", "\",,,\"", "empty entry"],
            ),
            (
                &[("etcd_endpoints", "http://a:1,,http://b:2")],
                &[],
                &["etcd_endpoints", "empty entry"],
            ),
            (
                &[("etcd_endpoints", "http://a:1,")],
                &[],
                &["etcd_endpoints", "empty entry"],
            ),
            (
                &[],
                &[("ETCD_ENDPOINTS", ", ,")],
                &["ETCD_ENDPOINTS", "empty entry"],
            ),
            (
                &[("etcd_endpoints", "http://a:2379/v3")],
                &[],
                &["etcd_endpoints", "http://a:2379/v3", "'/'"],
            ),
            (
                &[("etcd_endpoints", "http://user:pw@a:1")],
                &[],
                &["etcd_endpoints", "'@'"],
            ),
            (
                &[("etcd_endpoints", "http://a b:1")],
                &[],
                &["etcd_endpoints", "' '"],
            ),
            (
                &[("etcd_endpoints", "http://a:99999")],
                &[],
                &["etcd_endpoints", "port \"99999\""],
            ),
            (
                &[("etcd_endpoints", "http://a:")],
                &[],
                &["etcd_endpoints", "port \"\""],
            ),
            (
                &[("etcd_endpoints", "http://:2379")],
                &[],
                &["etcd_endpoints", "no host"],
            ),
            (
                &[("etcd_endpoints", "https://[fd00::1:2379")],
                &[],
                &["etcd_endpoints", "unclosed ["],
            ),
            (
                &[("etcd_endpoints", "https://[fd00::zz]:2379")],
                &[],
                &["etcd_endpoints", "not an IPv6 address"],
            ),
            (
                &[("etcd_authority", "a:b:c")],
                &[],
                &["etcd_authority", "http://a:b:c"],
            ),
        ];
        for (config, vars, named) in cases {
            let err = resolve(config, vars).unwrap_err();
            assert_eq!(
                err.code(),
                crate::error::Code::InvalidConfig,
                "{config:?} {vars:?}"
            );
            for part in *named {
                assert!(err.msg().contains(part), "{err:?} should name {part}");
            }
        }
    }

    #[test]
    fn etcd_timeout_is_a_positive_number_of_seconds() {
        let timeout = |json: &str| {
            let raw: EtcdConfigKeys = serde_json::from_str(json).unwrap();
            etcd_settings(&raw, &|_| None).map(|s| s.timeout)
        };
        let valid = [
            ("{}", DEFAULT_ETCD_TIMEOUT),
            (r#"{"etcd_timeout":null}"#, DEFAULT_ETCD_TIMEOUT),
            (r#"{"etcd_timeout":3}"#, Duration::from_secs(3)),
            (r#"{"etcd_timeout":0.5}"#, Duration::from_millis(500)),
        ];
        for (json, want) in valid {
            assert_eq!(timeout(json).unwrap(), want, "{json}");
        }
        for json in [
            r#"{"etcd_timeout":0}"#,
            r#"{"etcd_timeout":-1}"#,
            r#"{"etcd_timeout":"5"}"#,
            r#"{"etcd_timeout":true}"#,
            r#"{"etcd_timeout":[]}"#,
            r#"{"etcd_timeout":1e300}"#,
        ] {
            let err = timeout(json).unwrap_err();
            assert_eq!(err.code(), crate::error::Code::InvalidConfig, "{json}");
            assert!(err.msg().contains("etcd_timeout"), "{err:?}");
        }
        assert!(DEFAULT_ETCD_TIMEOUT <= Duration::from_secs(10));
    }

    #[test]
    fn config_keys_deserialize_from_a_network_config() {
        let raw: EtcdConfigKeys = serde_json::from_str(
            r#"{"name":"n","etcd_endpoints":"http://a:1","etcd_ca_cert_file":"/ca"}"#,
        )
        .unwrap();
        assert_eq!(raw.etcd_endpoints.as_deref(), Some("http://a:1"));
        assert_eq!(raw.etcd_ca_cert_file.as_deref(), Some("/ca"));
        assert_eq!(raw.etcd_authority, None);
    }
}
