//! The `policy` section: the policy type and how to reach the Kubernetes API for it.

use std::path::PathBuf;

use serde::Deserialize;

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
        policy_type: raw.policy_type,
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
    use crate::config::tests::parse;

    #[test]
    fn api_root_path_is_stripped() {
        let conf = parse(r#"{"name":"n","ipam":{"type":"x"},"policy":{"type":"k8s","k8s_api_root":"https://10.0.0.1:443/api/v1/"}}"#).unwrap();
        assert_eq!(
            conf.policy.k8s_api_root.as_deref(),
            Some("https://10.0.0.1:443")
        );
    }
}
