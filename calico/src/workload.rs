//! Who the attachment is in Calico's data model, and the name of its host-side veth.

use common::cni::Request;

/// Calico's identifiers of one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadIds {
    /// The node the workload runs on.
    pub node: String,
    /// `cni` (Kubernetes mode, with `k8s`, comes from the pod).
    pub orchestrator: String,
    /// The workload: the container id.
    pub workload: String,
    /// The endpoint id: `CNI_IFNAME`.
    pub endpoint: String,
}

impl WorkloadIds {
    /// The identifiers of a plain CNI (non-Kubernetes) attachment.
    pub fn for_request(req: &Request) -> WorkloadIds {
        WorkloadIds {
            node: req.config.nodename.clone(),
            orchestrator: "cni".to_string(),
            workload: req.container_id.clone(),
            endpoint: req.ifname.clone(),
        }
    }
}

/// `cali` + the first 11 characters of the container id: 15 characters, the kernel's limit.
pub fn host_veth_name(container_id: &str) -> String {
    format!("cali{}", container_id.chars().take(11).collect::<String>())
}

/// The name used when [`host_veth_name`] belongs to another live container (ids that share
/// their first 11 characters): `cali` + 11 hex digits of the SHA-1 of the full container id.
pub fn hashed_host_veth_name(container_id: &str) -> String {
    let digest = sha1_smol::Sha1::from(container_id).digest().to_string();
    format!("cali{}", &digest[..11])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_fit_ifnamsiz() {
        let cases = [
            ("abc", "caliabc"),
            ("0123456789abcdef", "cali0123456789a"),
            ("cnitool-9e2a0df27c8e4475aa90", "calicnitool-9e2"),
        ];
        for (id, want) in cases {
            assert_eq!(host_veth_name(id), want);
        }
        let hashed = hashed_host_veth_name("cnitool-9e2a0df27c8e4475aa90");
        assert_eq!(hashed.len(), 15);
        assert_ne!(hashed, hashed_host_veth_name("cnitool-9e2a0df27c8e4475aa91"));
    }
}
