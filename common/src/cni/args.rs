//! `CNI_ARGS`: `;`-separated `KEY=VALUE` pairs from the runtime.

use std::net::IpAddr;

use crate::error::{Code, Error, Result};
use crate::name_rule::{NAME_RULE, is_valid_name};

/// The `CNI_ARGS` keys Calico reads. Unknown keys are ignored, as they are after the
/// `IgnoreUnknown=1` that runtimes (and Calico itself) put in front.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// `IgnoreUnknown`: true for `1`, `true` or `True`.
    pub ignore_unknown: bool,
    /// `K8S_POD_NAMESPACE`.
    pub k8s_pod_namespace: Option<String>,
    /// `K8S_POD_NAME`.
    pub k8s_pod_name: Option<String>,
    /// `K8S_POD_INFRA_CONTAINER_ID`.
    pub k8s_pod_infra_container_id: Option<String>,
    /// `K8S_POD_UID` (sent by containerd).
    pub k8s_pod_uid: Option<String>,
    /// `IP`: the address requested for this attachment (a `/prefix` suffix is accepted and dropped).
    pub ip: Option<IpAddr>,
    /// The original text, forwarded to the IPAM plugin.
    pub raw: String,
}

impl CniArgs {
    /// Parses the value of `CNI_ARGS`; an empty or absent value gives the defaults.
    pub fn parse(raw: &str) -> Result<CniArgs> {
        let mut args = CniArgs {
            raw: raw.to_string(),
            ..CniArgs::default()
        };
        for pair in raw.split(';').filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(invalid(format!(
                    "invalid CNI_ARGS pair {pair:?}: expected KEY=VALUE"
                )));
            };
            let value = value.to_string();
            match key {
                "IgnoreUnknown" => {
                    args.ignore_unknown = matches!(value.as_str(), "1" | "true" | "True")
                }
                "K8S_POD_NAMESPACE" => args.k8s_pod_namespace = pod_name(key, value)?,
                "K8S_POD_NAME" => args.k8s_pod_name = pod_name(key, value)?,
                "K8S_POD_INFRA_CONTAINER_ID" => args.k8s_pod_infra_container_id = non_empty(value),
                "K8S_POD_UID" => args.k8s_pod_uid = non_empty(value),
                "IP" => args.ip = parse_ip(&value)?,
                _ => {}
            }
        }
        Ok(args)
    }

    /// The pod as `(namespace, name)` when both are set: that is what selects Kubernetes mode.
    /// A pod name alone (podman sends one) is not Kubernetes.
    pub fn k8s_pod(&self) -> Option<(&str, &str)> {
        Some((
            self.k8s_pod_namespace.as_deref()?,
            self.k8s_pod_name.as_deref()?,
        ))
    }

    /// The same arguments asking for exactly `ip` (`IP=<ip>` replaces any earlier `IP`).
    pub fn with_ip(&self, ip: IpAddr) -> CniArgs {
        let mut pairs: Vec<&str> = self
            .raw
            .split(';')
            .filter(|p| !p.is_empty() && !p.starts_with("IP="))
            .collect();
        let requested = format!("IP={ip}");
        pairs.push(&requested);
        CniArgs {
            ip: Some(ip),
            raw: pairs.join(";"),
            ..self.clone()
        }
    }

    /// `CNI_ARGS` for a delegated plugin: `IgnoreUnknown=1` in front, so that plugins which
    /// reject unknown keys (the reference host-local does, even on DEL) accept Kubernetes keys.
    pub fn for_delegate(&self) -> String {
        if self.raw.is_empty() {
            "IgnoreUnknown=1".to_string()
        } else if self.raw.split(';').any(|p| p.starts_with("IgnoreUnknown=")) {
            self.raw.clone()
        } else {
            format!("IgnoreUnknown=1;{}", self.raw)
        }
    }
}

/// The pod's namespace and name become the workload id `<namespace>.<pod>` in endpoint keys,
/// the legacy IPAM handle id, the profile `k8s_ns.<namespace>` and the path of the pod in the
/// Kubernetes API, so they must stay one segment. Kubernetes names (DNS-1123) and podman's
/// container names (sent as `K8S_POD_NAME`) follow the rule.
fn pod_name(key: &str, value: String) -> Result<Option<String>> {
    if value.is_empty() || is_valid_name(&value) {
        Ok(non_empty(value))
    } else {
        Err(invalid(format!(
            "invalid {key} {value:?} in CNI_ARGS: must match {}",
            NAME_RULE
        )))
    }
}

fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

fn parse_ip(value: &str) -> Result<Option<IpAddr>> {
    if value.is_empty() {
        return Ok(None);
    }
    let address = value.split_once('/').map_or(value, |(ip, _)| ip);
    let addr: IpAddr = address
        .parse()
        .map_err(|_| invalid(format!("invalid IP {value:?} in CNI_ARGS")))?;
    match crate::special_ranges::address_problem(addr) {
        Some(problem) => Err(invalid(format!("IP {value:?} in CNI_ARGS: {problem}"))),
        None => Ok(Some(addr)),
    }
}

fn invalid(msg: String) -> Error {
    Error::new(Code::InvalidEnvironment, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_args_are_read() {
        let args = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u1",
        )
        .unwrap();
        assert!(args.ignore_unknown);
        assert_eq!(args.k8s_pod(), Some(("ns", "pod")));
        assert_eq!(args.k8s_pod_infra_container_id.as_deref(), Some("abc"));
        assert_eq!(args.k8s_pod_uid.as_deref(), Some("u1"));
    }

    #[test]
    fn pod_name_without_namespace_is_not_kubernetes() {
        let args = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAME=web").unwrap();
        assert_eq!(args.k8s_pod(), None);
    }

    #[test]
    fn ip_is_parsed_with_or_without_prefix() {
        let cases = [
            ("IP=10.0.0.5", Some("10.0.0.5")),
            ("IP=10.0.0.5/24", Some("10.0.0.5")),
            ("IP=fd00::5", Some("fd00::5")),
            ("IP=", None),
            ("", None),
        ];
        for (raw, want) in cases {
            let got = CniArgs::parse(raw).unwrap().ip;
            assert_eq!(got, want.map(|s| s.parse().unwrap()), "{raw}");
        }
    }

    #[test]
    fn malformed_args_are_code_4() {
        for raw in [
            "IP=10.0.0.300",
            "justakey",
            "IP=nonsense",
            "K8S_POD_NAMESPACE=..",
            "K8S_POD_NAMESPACE=a/b",
            "K8S_POD_NAME=.",
            "K8S_POD_NAME=x/../y",
            "K8S_POD_NAME=tab\tname",
        ] {
            let err = CniArgs::parse(raw).unwrap_err();
            assert_eq!(err.code(), Code::InvalidEnvironment, "{raw}");
        }
    }

    #[test]
    fn requested_ip_in_a_special_range_is_refused_naming_it() {
        for (raw, special) in [
            ("IP=169.254.1.1", "169.254.0.0/16"),
            ("IP=127.0.0.1/8", "127.0.0.0/8"),
            ("IP=255.255.255.255", "240.0.0.0/4"),
            ("IP=fe80::1", "fe80::/10"),
            ("IP=::ffff:10.0.0.1", "::ffff:0:0/96"),
        ] {
            let err = CniArgs::parse(raw).unwrap_err();
            assert_eq!(err.code(), Code::InvalidEnvironment, "{raw}");
            assert!(err.msg().contains(special), "{raw}: {}", err.msg());
        }
    }

    #[test]
    fn requested_ip_replaces_an_earlier_one() {
        let args = CniArgs::parse("IgnoreUnknown=1;IP=10.0.0.1;K8S_POD_NAME=p").unwrap();
        let asked = args.with_ip("10.0.0.9".parse().unwrap());
        assert_eq!(asked.raw, "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.0.0.9");
        assert_eq!(asked.ip, Some("10.0.0.9".parse().unwrap()));
        assert_eq!(asked.k8s_pod_name.as_deref(), Some("p"));
    }

    /// Calico v1 failure history, row 31: IPAM plugins rejected the kubelet's `K8S_POD_*` keys in
    /// `CNI_ARGS`; the plugin adds `IgnoreUnknown=1` for them.
    #[test]
    fn ipam_plugins_get_ignore_unknown_so_they_accept_k8s_args() {
        let cases = [
            ("", "IgnoreUnknown=1"),
            ("K8S_POD_NAME=p", "IgnoreUnknown=1;K8S_POD_NAME=p"),
            (
                "IgnoreUnknown=1;K8S_POD_NAME=p",
                "IgnoreUnknown=1;K8S_POD_NAME=p",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(CniArgs::parse(raw).unwrap().for_delegate(), want);
        }
    }
}
