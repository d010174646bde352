//! The `kubernetes` section.

use std::path::PathBuf;

use serde::Deserialize;

use super::names::validate_name;
use crate::error::Result;

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

#[derive(Deserialize, Default)]
pub(super) struct RawKubernetes {
    kubeconfig: Option<PathBuf>,
    k8s_api_root: Option<String>,
    node_name: Option<String>,
}

/// The `kubernetes` section, validated.
pub(super) fn parse_kubernetes(raw: RawKubernetes) -> Result<KubernetesConf> {
    Ok(KubernetesConf {
        kubeconfig: raw.kubeconfig,
        k8s_api_root: raw.k8s_api_root,
        node_name: kubernetes_node_name(raw.node_name)?,
    })
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
