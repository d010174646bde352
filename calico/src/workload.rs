//! Who the attachment is in Calico's data model, and the name of its host-side veth.

use common::cni::Request;
use common::config::{NetConf, PolicyType};

/// The interface name runtimes give a workload's first (usually only) interface.
const FIRST_IFNAME: &str = "eth0";

/// Calico's identifiers of one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadIds {
    /// The node the workload runs on.
    pub node: String,
    /// Who started the workload.
    pub orchestrator: Orchestrator,
    /// The workload: `<namespace>.<pod>` in Kubernetes, the container id otherwise.
    pub workload: String,
    /// The endpoint id: `CNI_IFNAME`.
    pub endpoint: String,
    /// The pod as `(namespace, name)` in Kubernetes mode.
    pub pod: Option<(String, String)>,
    /// The config's `interface_prefix`, which starts every host veth name.
    pub veth_prefix: String,
}

/// The orchestrator segment of an endpoint key: who started the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orchestrator {
    /// `k8s`: a Kubernetes pod.
    Kubernetes,
    /// `cni`: any other container.
    Cni,
}

impl Orchestrator {
    /// The key segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Orchestrator::Kubernetes => "k8s",
            Orchestrator::Cni => "cni",
        }
    }
}

impl WorkloadIds {
    /// Kubernetes mode when `CNI_ARGS` names both the pod's namespace and name (a pod name
    /// alone, as podman sends, is not Kubernetes).
    pub fn for_request(req: &Request) -> WorkloadIds {
        let node = req.config.nodename.clone();
        let endpoint = req.ifname.clone();
        let veth_prefix = req.config.interface_prefix.clone();
        match req.args.k8s_pod() {
            Some((namespace, pod)) => WorkloadIds {
                node,
                orchestrator: Orchestrator::Kubernetes,
                workload: format!("{namespace}.{pod}"),
                endpoint,
                pod: Some((namespace.to_string(), pod.to_string())),
                veth_prefix,
            },
            None => WorkloadIds {
                node,
                orchestrator: Orchestrator::Cni,
                workload: req.container_id.clone(),
                endpoint,
                pod: None,
                veth_prefix,
            },
        }
    }

    /// True for a Kubernetes pod.
    pub fn is_kubernetes(&self) -> bool {
        self.pod.is_some()
    }

    /// The profile the endpoint carries: the namespace's `k8s_ns.<ns>` (maintained by the
    /// policy controller) under Kubernetes policy, else the network's.
    pub fn profile(&self, config: &NetConf) -> String {
        match (&self.pod, &config.policy.policy_type) {
            (Some((namespace, _)), PolicyType::Kubernetes) => format!("k8s_ns.{namespace}"),
            _ => config.name.clone(),
        }
    }

    /// The host veth name: per pod in Kubernetes (so a new sandbox of the pod takes over the
    /// name), per container otherwise. `eth0` keeps the name Calico v1 gives the workload's
    /// only interface, so attachments made before a workload could have several keep theirs;
    /// every other `CNI_IFNAME` gets its own name hashed from `<workload>:<ifname>`.
    pub fn host_veth_name(&self, container_id: &str) -> String {
        match (self.is_kubernetes(), self.endpoint.as_str()) {
            (true, FIRST_IFNAME) => hashed_host_veth_name(&self.veth_prefix, &self.workload),
            (false, FIRST_IFNAME) => host_veth_name(&self.veth_prefix, container_id),
            (_, ifname) => {
                hashed_host_veth_name(&self.veth_prefix, &format!("{}:{ifname}", self.workload))
            }
        }
    }
}

/// The kernel's limit on an interface name, in bytes.
const MAX_IFNAME_LEN: usize = 15;

/// `prefix` (`cali` by default) + the first 11 characters of the container id, cut to the
/// kernel's 15 bytes: with `cali` exactly Calico's name.
pub fn host_veth_name(prefix: &str, container_id: &str) -> String {
    veth_name(prefix, container_id)
}

/// `prefix` + the first 11 hex digits of the SHA-1 of `id`, cut to 15 bytes: Calico's name for
/// a pod's veth (`id` = `<namespace>.<pod>`), and the fallback when [`host_veth_name`] belongs
/// to another live container whose id shares the first 11 characters.
pub fn hashed_host_veth_name(prefix: &str, id: &str) -> String {
    let digest = sha1_smol::Sha1::from(id).digest().to_string();
    veth_name(prefix, &digest)
}

/// `prefix` + up to 11 characters of `id`, as many as fit the 15 bytes; the config's
/// validation leaves at least one byte for `id`.
fn veth_name(prefix: &str, id: &str) -> String {
    let mut name = prefix.to_string();
    for c in id.chars().take(11) {
        if name.len() + c.len_utf8() > MAX_IFNAME_LEN {
            break;
        }
        name.push(c);
    }
    name
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
            assert_eq!(host_veth_name("cali", id), want);
        }
        let hashed = hashed_host_veth_name("cali", "cnitool-9e2a0df27c8e4475aa90");
        assert_eq!(hashed.len(), 15);
        assert_ne!(
            hashed,
            hashed_host_veth_name("cali", "cnitool-9e2a0df27c8e4475aa91")
        );
    }

    #[test]
    fn every_ifname_but_eth0_gets_its_own_hashed_host_veth() {
        let ids = |k8s: bool, ifname: &str| WorkloadIds {
            node: "node".to_string(),
            orchestrator: if k8s {
                Orchestrator::Kubernetes
            } else {
                Orchestrator::Cni
            },
            workload: if k8s {
                "default.nginx"
            } else {
                "0123456789abcdef"
            }
            .to_string(),
            endpoint: ifname.to_string(),
            pod: k8s.then(|| ("default".to_string(), "nginx".to_string())),
            veth_prefix: "cali".to_string(),
        };
        let cid = "0123456789abcdef";
        let cases = [
            (false, "eth0", "cali0123456789a".to_string()),
            (
                false,
                "eth1",
                hashed_host_veth_name("cali", "0123456789abcdef:eth1"),
            ),
            (
                false,
                "net1",
                hashed_host_veth_name("cali", "0123456789abcdef:net1"),
            ),
            (true, "eth0", "calic440f455693".to_string()),
            (
                true,
                "net1",
                hashed_host_veth_name("cali", "default.nginx:net1"),
            ),
        ];
        for (k8s, ifname, want) in cases {
            let name = ids(k8s, ifname).host_veth_name(cid);
            assert_eq!(name, want, "{ifname}");
            assert_eq!(name.len(), 15, "{name}");
        }
        assert_ne!(
            ids(false, "eth1").host_veth_name(cid),
            ids(false, "eth2").host_veth_name(cid)
        );
    }

    #[test]
    fn pod_veth_name_is_sha1_of_namespace_dot_pod() {
        // `printf default.nginx | sha1sum` = c440f455693b69cdd…
        assert_eq!(
            hashed_host_veth_name("cali", "default.nginx"),
            "calic440f455693"
        );
    }

    #[test]
    fn other_prefixes_keep_what_fits_of_the_eleven_characters() {
        let cases = [
            ("tap", "0123456789abcdef", "tap0123456789a"),
            ("veth", "abc", "vethabc"),
            ("calico", "0123456789abcdef", "calico012345678"),
            ("abcdefghijklmn", "0123", "abcdefghijklmn0"),
        ];
        for (prefix, id, want) in cases {
            assert_eq!(host_veth_name(prefix, id), want, "{prefix}");
        }
        assert_eq!(
            hashed_host_veth_name("calico", "default.nginx"),
            "calicoc440f4556"
        );
        assert_eq!(
            hashed_host_veth_name("tap", "default.nginx"),
            "tapc440f455693"
        );
    }
}
