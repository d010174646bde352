//! What Kubernetes adds to an ADD: the pod's labels, the IPAM choices its annotations make, and
//! the node's pod CIDR for host-local's `usePodCidr`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use common::cni::Request;
use common::config::{IpamPlugin, PolicyType};
use common::kubernetes::{self, Pod, Query};
use common::special_ranges;
use common::{Code, Error, Result};
use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::workload::WorkloadIds;

const IPV4_POOLS: &str = "cni.projectcalico.org/ipv4pools";
const IPV6_POOLS: &str = "cni.projectcalico.org/ipv6pools";
const IP_ADDRS: &str = "cni.projectcalico.org/ipAddrs";
const IP_ADDRS_NO_IPAM: &str = "cni.projectcalico.org/ipAddrsNoIpam";

/// Where the pod's addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressSource {
    /// The IPAM plugin chooses.
    Ipam,
    /// The IPAM plugin is asked for exactly these (`ipAddrs`).
    IpamRequested(Vec<IpAddr>),
    /// Used as given, without IPAM (`ipAddrsNoIpam`).
    NoIpam(Vec<IpAddr>),
}

/// The Kubernetes part of an ADD.
#[derive(Debug, Clone)]
pub struct PodSetup {
    /// The request to run, its config rewritten for the pod's pools or the node's pod CIDR.
    pub request: Request,
    /// The endpoint's labels.
    pub labels: BTreeMap<String, String>,
    /// Where the addresses come from.
    pub addresses: AddressSource,
}

/// Reads what the API says about the pod and its node, through one run of the `calico-k8s`
/// helper. The API is contacted only with `policy.type: "k8s"` (pod) or host-local's
/// `usePodCidr` (node), so the plugin runs under Kubernetes without API access otherwise, and
/// without the helper installed.
pub fn prepare(req: &Request, ids: &WorkloadIds) -> Result<PodSetup> {
    let mut setup = PodSetup {
        request: req.clone(),
        labels: BTreeMap::new(),
        addresses: AddressSource::Ipam,
    };
    let Some((namespace, name)) = &ids.pod else {
        return Ok(setup);
    };
    let wants_pod = req.config.policy.policy_type == PolicyType::Kubernetes;
    let wants_pod_cidr = uses_pod_cidr(req);
    if !wants_pod && !wants_pod_cidr {
        return Ok(setup);
    }
    let node = req
        .config
        .kubernetes
        .node_name
        .clone()
        .unwrap_or_else(|| req.config.nodename.clone());
    let query = Query {
        node_pod_cidr: wants_pod_cidr.then(|| node.clone()),
        pod: wants_pod.then(|| (namespace.clone(), name.clone())),
    };
    let answer = kubernetes::read(&query, &req.raw_config, &req.cni_path)?;
    let mut config: Value = serde_json::from_slice(&req.raw_config)?;
    if wants_pod_cidr {
        let cidr = answer.node_pod_cidr.ok_or_else(|| {
            Error::new(Code::InvalidConfig, format!("no podCIDR for node {node}"))
        })?;
        common::log::info(&format!(
            "passing podCIDR {cidr} of node {node} to host-local"
        ));
        set_ipam_field(&mut config, "subnet", Value::from(cidr));
    }
    if let Some(pod) = &answer.pod {
        setup.labels = pod_labels(pod, namespace);
        if req.config.ipam.plugin == IpamPlugin::CalicoIpam {
            for (annotation, field) in [(IPV4_POOLS, "ipv4_pools"), (IPV6_POOLS, "ipv6_pools")] {
                if let Some(pools) = pool_annotation(pod, annotation)? {
                    set_ipam_field(&mut config, field, pools);
                }
            }
        }
        setup.addresses = address_source(pod)?;
    }
    setup.request.raw_config = serde_json::to_vec(&config)?;
    Ok(setup)
}

/// host-local with `subnet: usePodCidr` (any case, as Calico compares it).
pub fn uses_pod_cidr(req: &Request) -> bool {
    req.config.ipam.plugin == IpamPlugin::HostLocal
        && req
            .config
            .ipam
            .subnet
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("usePodCidr"))
}

/// The config for an IPAM DEL: host-local must not see the literal `usePodCidr` (it would fail
/// and leak the address), and releasing needs no subnet, so a placeholder stands in.
pub fn config_for_release(req: &Request) -> Result<Vec<u8>> {
    if !uses_pod_cidr(req) {
        return Ok(req.raw_config.clone());
    }
    let mut config: Value = serde_json::from_slice(&req.raw_config)?;
    set_ipam_field(&mut config, "subnet", Value::from("0.0.0.0/0"));
    Ok(serde_json::to_vec(&config)?)
}

fn set_ipam_field(config: &mut Value, field: &str, value: Value) {
    if let Some(ipam) = config.get_mut("ipam").and_then(Value::as_object_mut) {
        ipam.insert(field.to_string(), value);
    }
}

/// The pod's labels plus `calico/k8s_ns`, which Calico's namespace policies select on.
fn pod_labels(pod: &Pod, namespace: &str) -> BTreeMap<String, String> {
    let mut labels = pod.labels.clone();
    labels.insert("calico/k8s_ns".to_string(), namespace.to_string());
    labels
}

/// A pools annotation: a JSON list of CIDR strings, none overlapping a special-purpose range.
fn pool_annotation(pod: &Pod, annotation: &str) -> Result<Option<Value>> {
    let Some(text) = pod.annotations.get(annotation) else {
        return Ok(None);
    };
    let invalid = |msg: String| Error::new(Code::InvalidConfig, msg);
    let pools: Vec<String> = serde_json::from_str(text).map_err(|e| {
        invalid(format!(
            "failed to parse annotation {annotation} {text:?}: {e}"
        ))
    })?;
    for pool in &pools {
        let cidr: IpNetwork = pool
            .parse()
            .map_err(|_| invalid(format!("invalid CIDR {pool:?} in annotation {annotation}")))?;
        if let Some(problem) = special_ranges::pool_problem(cidr) {
            return Err(invalid(format!("annotation {annotation}: {problem}")));
        }
    }
    Ok(Some(Value::from(pools)))
}

fn address_source(pod: &Pod) -> Result<AddressSource> {
    match (
        pod.annotations.get(IP_ADDRS),
        pod.annotations.get(IP_ADDRS_NO_IPAM),
    ) {
        (Some(_), Some(_)) => Err(Error::new(
            Code::InvalidConfig,
            format!(
                "can't have both annotations {IP_ADDRS} and {IP_ADDRS_NO_IPAM} in use at the same time"
            ),
        )),
        (Some(text), None) => Ok(AddressSource::IpamRequested(address_annotation(
            IP_ADDRS, text,
        )?)),
        (None, Some(text)) => Ok(AddressSource::NoIpam(address_annotation(
            IP_ADDRS_NO_IPAM,
            text,
        )?)),
        (None, None) => Ok(AddressSource::Ipam),
    }
}

/// An address annotation: a JSON list of addresses, at most one of each family.
fn address_annotation(annotation: &str, text: &str) -> Result<Vec<IpAddr>> {
    let invalid = |msg: String| Error::new(Code::InvalidConfig, msg);
    let entries: Vec<String> = serde_json::from_str(text).map_err(|e| {
        invalid(format!(
            "failed to parse annotation {annotation} {text:?}: {e}"
        ))
    })?;
    if entries.is_empty() {
        return Err(invalid(format!(
            "annotation {annotation} specified but empty"
        )));
    }
    let addresses = entries
        .iter()
        .map(|entry| {
            entry.parse::<IpAddr>().map_err(|_| {
                invalid(format!(
                    "invalid IP format {entry:?} in annotation {annotation}"
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(problem) = addresses
        .iter()
        .find_map(|a| special_ranges::address_problem(*a))
    {
        return Err(invalid(format!("annotation {annotation}: {problem}")));
    }
    for (family, is_v4) in [("IPv4", true), ("IPv6", false)] {
        if addresses.iter().filter(|a| a.is_ipv4() == is_v4).count() > 1 {
            return Err(invalid(format!(
                "cannot have more than one {family} address for annotation {annotation}"
            )));
        }
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotations: &[(&str, &str)]) -> Pod {
        Pod {
            labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Calico v1 failure history, row 19: `ipAddrs` / `ipAddrsNoIpam` accepted more than one
    /// IPv4 or IPv6 address. The table also holds the other invalid and valid forms.
    #[test]
    fn address_annotations_with_two_addresses_of_one_family_are_refused() {
        let ok = [
            (vec![], AddressSource::Ipam),
            (
                vec![(IP_ADDRS, r#"["10.0.0.5"]"#)],
                AddressSource::IpamRequested(vec!["10.0.0.5".parse().unwrap()]),
            ),
            (
                vec![(IP_ADDRS_NO_IPAM, r#"["10.0.0.5","fd00::5"]"#)],
                AddressSource::NoIpam(vec![
                    "10.0.0.5".parse().unwrap(),
                    "fd00::5".parse().unwrap(),
                ]),
            ),
        ];
        for (annotations, want) in ok {
            assert_eq!(address_source(&pod(&annotations)).unwrap(), want);
        }
        let bad = [
            (
                vec![
                    (IP_ADDRS, r#"["10.0.0.5"]"#),
                    (IP_ADDRS_NO_IPAM, r#"["10.0.0.6"]"#),
                ],
                "both annotations",
            ),
            (vec![(IP_ADDRS, "[]")], "specified but empty"),
            (vec![(IP_ADDRS, r#"["10.0.0.300"]"#)], "invalid IP format"),
            (
                vec![(IP_ADDRS, r#"["10.0.0.5","10.0.0.6"]"#)],
                "more than one IPv4",
            ),
            (
                vec![(IP_ADDRS_NO_IPAM, r#"["fd00::5","fd00::6"]"#)],
                "more than one IPv6",
            ),
            (vec![(IP_ADDRS, "10.0.0.5")], "failed to parse"),
            (vec![(IP_ADDRS, r#"["169.254.1.1"]"#)], "169.254.0.0/16"),
            (vec![(IP_ADDRS_NO_IPAM, r#"["fe80::5"]"#)], "fe80::/10"),
        ];
        for (annotations, want) in bad {
            let err = address_source(&pod(&annotations)).unwrap_err();
            assert!(err.msg().contains(want), "{annotations:?}: {}", err.msg());
            assert_eq!(err.code(), Code::InvalidConfig);
        }
    }

    #[test]
    fn pod_labels_gain_the_namespace() {
        let labels = pod_labels(&pod(&[]), "prod");
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            labels.get("calico/k8s_ns").map(String::as_str),
            Some("prod")
        );
    }

    #[test]
    fn pool_annotations_are_lists_of_cidrs() {
        let p = pod(&[(IPV4_POOLS, r#"["172.16.0.0/16"]"#), (IPV6_POOLS, "nope")]);
        assert_eq!(
            pool_annotation(&p, IPV4_POOLS).unwrap(),
            Some(serde_json::json!(["172.16.0.0/16"]))
        );
        assert!(pool_annotation(&p, IPV6_POOLS).is_err());
        assert_eq!(pool_annotation(&p, "other").unwrap(), None);
        for (pools, named) in [
            (r#"["169.254.0.0/16"]"#, "169.254.0.0/16"),
            (r#"["10.0.0.0/16","127.0.0.0/8"]"#, "127.0.0.0/8"),
            (r#"["not-a-cidr"]"#, "not-a-cidr"),
        ] {
            let err = pool_annotation(&pod(&[(IPV4_POOLS, pools)]), IPV4_POOLS).unwrap_err();
            assert_eq!(err.code(), Code::InvalidConfig);
            assert!(err.msg().contains(named), "{pools}: {}", err.msg());
        }
    }
}
