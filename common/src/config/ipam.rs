//! The `ipam` section.

use std::fmt;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::Value;

use super::{flag, invalid};
use crate::error::Result;

/// The `ipam` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConf {
    /// `ipam.type`: the IPAM plugin.
    pub plugin: IpamPlugin,
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

/// `ipam.type`: the IPAM plugin, by the name of its binary in `CNI_PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpamPlugin {
    /// `calico-ipam`, which `calico` may run in its own process.
    CalicoIpam,
    /// `host-local`, whose `subnet` may be the node's pod CIDR (`usePodCidr`).
    HostLocal,
    /// Any other IPAM plugin, named by its binary.
    Other(String),
}

impl IpamPlugin {
    /// The plugin named `name`.
    fn named(name: String) -> IpamPlugin {
        match name.as_str() {
            "calico-ipam" => IpamPlugin::CalicoIpam,
            "host-local" => IpamPlugin::HostLocal,
            _ => IpamPlugin::Other(name),
        }
    }

    /// The name of the plugin's binary, as `ipam.type` gives it.
    pub fn binary_name(&self) -> &str {
        match self {
            IpamPlugin::CalicoIpam => "calico-ipam",
            IpamPlugin::HostLocal => "host-local",
            IpamPlugin::Other(name) => name,
        }
    }
}

impl fmt::Display for IpamPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.binary_name())
    }
}

/// The default of `ipam.block_hint_dir`.
pub const DEFAULT_BLOCK_HINT_DIR: &str = "/var/lib/cni/calico-ipam";

#[derive(Deserialize)]
pub(super) struct RawIpam {
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

pub(super) fn parse_ipam(raw: Option<RawIpam>) -> Result<IpamConf> {
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
        plugin: IpamPlugin::named(plugin_type),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse;
    use crate::error::Code;

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
    fn ipam_type_names_the_plugin() {
        let cases = [
            ("calico-ipam", IpamPlugin::CalicoIpam),
            ("host-local", IpamPlugin::HostLocal),
            ("dhcp", IpamPlugin::Other("dhcp".to_string())),
            ("Calico-IPAM", IpamPlugin::Other("Calico-IPAM".to_string())),
        ];
        for (name, want) in cases {
            let json = format!(r#"{{"name":"n","ipam":{{"type":"{name}"}}}}"#);
            let plugin = parse(&json).unwrap().ipam.plugin;
            assert_eq!(plugin.binary_name(), name);
            assert_eq!(plugin, want);
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
}
