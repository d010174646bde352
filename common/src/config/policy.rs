//! The `policy` section: the policy type and how to reach the Kubernetes API for it.

use std::path::PathBuf;

use serde::Deserialize;

/// The `policy` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyConf {
    /// `policy.type`.
    pub policy_type: PolicyType,
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

/// `policy.type`: which profiles the endpoint carries, and who makes and enforces them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PolicyType {
    /// No type (or `""`): the plugin creates a profile per network, which Felix enforces.
    #[default]
    NetworkProfile,
    /// `k8s`: a pod's endpoint carries its namespace's profile, which the policy controller
    /// maintains, and the pod's labels, read from the Kubernetes API.
    Kubernetes,
    /// `local`: the plugin creates the network's profile and enforces the endpoint's profiles
    /// on this host with nftables, without Felix.
    Local,
    /// Any other type: something else manages the profiles; the plugin creates none.
    Other(String),
}

impl PolicyType {
    fn named(name: String) -> PolicyType {
        match name.as_str() {
            "" => PolicyType::NetworkProfile,
            "k8s" => PolicyType::Kubernetes,
            "local" => PolicyType::Local,
            _ => PolicyType::Other(name),
        }
    }
}

#[derive(Deserialize, Default)]
pub(super) struct RawPolicy {
    #[serde(rename = "type", default)]
    policy_type: String,
    k8s_api_root: Option<String>,
    k8s_auth_token: Option<String>,
    k8s_client_certificate: Option<PathBuf>,
    k8s_client_key: Option<PathBuf>,
    k8s_certificate_authority: Option<PathBuf>,
}

/// The `policy` section, validated.
pub(super) fn parse_policy(raw: RawPolicy) -> PolicyConf {
    PolicyConf {
        policy_type: PolicyType::named(raw.policy_type),
        k8s_api_root: raw.k8s_api_root.map(|root| strip_api_path(&root)),
        k8s_auth_token: raw.k8s_auth_token,
        k8s_client_certificate: raw.k8s_client_certificate,
        k8s_client_key: raw.k8s_client_key,
        k8s_certificate_authority: raw.k8s_certificate_authority,
    }
}

/// Old configs wrote the API root as `https://host:port/api/v1/`; only the part before `/api/`
/// names the server.
fn strip_api_path(root: &str) -> String {
    root.split("/api/").next().unwrap_or(root).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse;

    #[test]
    fn policy_type_is_read_once() {
        let cases = [
            ("", PolicyType::NetworkProfile),
            (r#","policy":{}"#, PolicyType::NetworkProfile),
            (r#","policy":{"type":""}"#, PolicyType::NetworkProfile),
            (r#","policy":{"type":"k8s"}"#, PolicyType::Kubernetes),
            (r#","policy":{"type":"local"}"#, PolicyType::Local),
            (
                r#","policy":{"type":"K8S"}"#,
                PolicyType::Other("K8S".to_string()),
            ),
        ];
        for (key, want) in cases {
            let json = format!(r#"{{"name":"n","ipam":{{"type":"x"}}{key}}}"#);
            assert_eq!(parse(&json).unwrap().policy.policy_type, want, "{key}");
        }
    }

    #[test]
    fn api_root_path_is_stripped() {
        let conf = parse(r#"{"name":"n","ipam":{"type":"x"},"policy":{"type":"k8s","k8s_api_root":"https://10.0.0.1:443/api/v1/"}}"#).unwrap();
        assert_eq!(
            conf.policy.k8s_api_root.as_deref(),
            Some("https://10.0.0.1:443")
        );
    }
}
