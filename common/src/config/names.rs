//! The names the config gives that become etcd key segments, file names or interface names:
//! the network, the node and the host veth prefix.

use super::invalid;
use crate::dataplane::veth::ifname_problem;
use crate::error::{Error, Result};
use crate::log;
use crate::name_rule::{NAME_RULE, is_valid_name};

/// The default of `interface_prefix`, Calico's and Felix's.
pub const DEFAULT_INTERFACE_PREFIX: &str = "cali";

/// Network names become etcd key segments, profile names and handle prefixes. Calico allowed
/// `^[a-zA-Z0-9_.-]+$`, which lets `.` and `..` through; the CNI spec's rule (first character
/// alphanumeric), which libcni enforces before it runs a plugin, does not.
pub(super) fn validate_network_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(invalid("missing network name".to_string()));
    }
    validate_name("name", name)
}

/// A name from the config that becomes an etcd key segment or a file name must follow
/// [`NAME_RULE`]; the error names the key and the value.
pub(super) fn validate_name(key: &str, value: &str) -> Result<()> {
    if is_valid_name(value) {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid {key} {value:?}: must match {NAME_RULE} (letters, digits and _.-, starting with a letter or digit)"
        )))
    }
}

/// The node name is a segment of endpoint, affinity and attachment keys and names the block
/// hint file, so it must follow [`NAME_RULE`] wherever it comes from.
pub(super) fn resolve_nodename(
    nodename: Option<String>,
    hostname: Option<String>,
) -> Result<String> {
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

/// The host veth is the prefix and at least one character of the container's id (or hash), so
/// the prefix may take 14 of the kernel's 15 bytes, and must itself be a valid interface name.
pub(super) fn interface_prefix(raw: Option<String>) -> Result<String> {
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

#[cfg(test)]
mod tests {
    use crate::config::tests::parse;
    use crate::error::Code;

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
    fn nodename_wins_over_hostname() {
        let conf =
            parse(r#"{"name":"n","ipam":{"type":"x"},"hostname":"h","nodename":"nn"}"#).unwrap();
        assert_eq!(conf.nodename, "nn");
        let conf = parse(r#"{"name":"n","ipam":{"type":"x"},"hostname":"h"}"#).unwrap();
        assert_eq!(conf.nodename, "h");
    }
}
