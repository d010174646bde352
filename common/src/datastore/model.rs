//! The Calico v1 JSON values the `calico` plugin writes: the workload endpoint and the three keys
//! of a profile. Serialisation reproduces the Go plugin (v1.11) byte for byte; reading also
//! accepts what the Python plugin wrote.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Deserializer, Serialize};

use super::keys;
use crate::error::Result;

/// One address translation of an endpoint (`{"int_ip":…,"ext_ip":…}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpNat {
    /// The workload's own address.
    pub int_ip: IpAddr,
    /// The address it is reachable at from outside.
    pub ext_ip: IpAddr,
}

/// The value of a workload endpoint key (`/calico/v1/host/…/endpoint/<id>`).
///
/// Field order is the Go plugin's. Maps serialise with sorted keys, as Go's encoder does.
/// `Default` leaves every field empty; the plugin sets `state` to `active`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadEndpoint {
    /// Always `active`.
    #[serde(deserialize_with = "null_as_default")]
    pub state: String,
    /// Name of the host-side veth (`cali…`).
    #[serde(deserialize_with = "null_as_default")]
    pub name: String,
    /// The container id that owns the endpoint (Kubernetes), `""` otherwise. Always written.
    #[serde(default, deserialize_with = "null_as_default")]
    pub active_instance_id: String,
    /// MAC address of the container-side veth.
    #[serde(default, deserialize_with = "null_as_default")]
    pub mac: String,
    /// Profiles applied to the endpoint.
    #[serde(default, deserialize_with = "null_as_default")]
    pub profile_ids: Vec<String>,
    /// IPv4 addresses, as `/32` networks. Always written, `[]` when empty.
    #[serde(default, with = "net_list")]
    pub ipv4_nets: Vec<IpNetwork>,
    /// IPv6 addresses, as `/128` networks. Always written, `[]` when empty.
    #[serde(default, with = "net_list")]
    pub ipv6_nets: Vec<IpNetwork>,
    /// IPv4 NAT mappings; omitted when empty.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub ipv4_nat: Vec<IpNat>,
    /// IPv6 NAT mappings; omitted when empty.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub ipv6_nat: Vec<IpNat>,
    /// Endpoint labels; omitted when empty.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub labels: BTreeMap<String, String>,
    /// IPv4 gateway; omitted when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_gateway: Option<IpAddr>,
    /// IPv6 gateway; omitted when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_gateway: Option<IpAddr>,
    /// Fields this model does not know (e.g. `ports` written by other tools), kept so that
    /// rewriting an endpoint does not drop them. Written after the known fields.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl WorkloadEndpoint {
    /// The JSON bytes to store.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        Ok(serde_json::to_vec(self)?)
    }

    /// Parses a stored endpoint; the error names nothing, callers add the key as context.
    pub fn from_json(bytes: &[u8]) -> Result<WorkloadEndpoint> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// One policy rule of a profile. Only the fields the plugins write are modelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// `allow`, `deny`, `log` or `next-tier`.
    pub action: String,
    /// Only traffic from endpoints with this tag matches; omitted when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_tag: Option<String>,
    /// Every other rule field, kept as read.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl Rule {
    /// A rule that allows everything.
    pub fn allow() -> Rule {
        Rule {
            action: "allow".into(),
            src_tag: None,
            other: serde_json::Map::new(),
        }
    }

    /// A rule that allows traffic from endpoints carrying `tag`.
    pub fn allow_from_tag(tag: &str) -> Rule {
        Rule {
            src_tag: Some(tag.into()),
            ..Rule::allow()
        }
    }
}

/// The value of `/calico/v1/policy/profile/<name>/rules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRules {
    /// Rules for traffic to the endpoint.
    #[serde(default, deserialize_with = "null_as_default")]
    pub inbound_rules: Vec<Rule>,
    /// Rules for traffic from the endpoint.
    #[serde(default, deserialize_with = "null_as_default")]
    pub outbound_rules: Vec<Rule>,
    /// Every other field (the Python plugin writes `id`), kept as read.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// A profile: its name and the values of its `tags`, `labels` and `rules` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Profile name (the network name, or `k8s_ns.<ns>`).
    pub name: String,
    /// Tags given to every endpoint using the profile.
    pub tags: Vec<String>,
    /// Labels given to every endpoint using the profile.
    pub labels: BTreeMap<String, String>,
    /// Inbound and outbound rules.
    pub rules: ProfileRules,
}

impl Profile {
    /// The profile the Go plugin creates for a network without a policy type: tagged with the
    /// network name, inbound allowed only from endpoints with that tag, outbound allowed.
    pub fn for_network(name: &str) -> Profile {
        Profile::with_rules(name, vec![Rule::allow_from_tag(name)])
    }

    /// The profile created under Kubernetes without a policy type: everything allowed.
    pub fn allow_all(name: &str) -> Profile {
        Profile::with_rules(name, vec![Rule::allow()])
    }

    fn with_rules(name: &str, inbound_rules: Vec<Rule>) -> Profile {
        Profile {
            name: name.into(),
            tags: vec![name.into()],
            labels: BTreeMap::new(),
            rules: ProfileRules {
                inbound_rules,
                outbound_rules: vec![Rule::allow()],
                other: serde_json::Map::new(),
            },
        }
    }

    /// The three keys and JSON values to write, in the Go plugin's order: tags, labels, rules.
    pub fn key_values(&self) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(vec![
            (
                keys::profile_tags(&self.name),
                serde_json::to_vec(&self.tags)?,
            ),
            (
                keys::profile_labels(&self.name),
                serde_json::to_vec(&self.labels)?,
            ),
            (
                keys::profile_rules(&self.name),
                serde_json::to_vec(&self.rules)?,
            ),
        ])
    }
}

/// Reads `null` (which Go writes for nil slices and maps) as the type's default.
fn null_as_default<'de, D, T>(de: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// A list of networks as CIDR strings; `null` reads as empty.
mod net_list {
    use ipnetwork::IpNetwork;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(nets: &[IpNetwork], ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_seq(nets.iter().map(|n| n.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<IpNetwork>, D::Error> {
        let strings = Option::<Vec<String>>::deserialize(de)?.unwrap_or_default();
        strings
            .iter()
            .map(|s| {
                s.parse()
                    .map_err(|e| serde::de::Error::custom(format!("network {s:?}: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> WorkloadEndpoint {
        WorkloadEndpoint {
            state: "active".into(),
            name: "cali1234567890a".into(),
            active_instance_id: String::new(),
            mac: "aa:bb:cc:dd:ee:ff".into(),
            profile_ids: vec!["net1".into()],
            ipv4_nets: vec!["10.0.0.5/32".parse().unwrap()],
            ipv6_nets: vec![],
            ipv4_nat: vec![],
            ipv6_nat: vec![],
            labels: BTreeMap::new(),
            ipv4_gateway: None,
            ipv6_gateway: None,
            other: serde_json::Map::new(),
        }
    }

    fn text(ep: &WorkloadEndpoint) -> String {
        String::from_utf8(ep.to_json().unwrap()).unwrap()
    }

    #[test]
    fn endpoint_json_matches_go_plugin() {
        let plain = endpoint();
        let k8s = WorkloadEndpoint {
            active_instance_id: "abc123".into(),
            profile_ids: vec!["k8s_ns.test".into()],
            ipv6_nets: vec!["fd80::5/128".parse().unwrap()],
            labels: [("calico/k8s_ns", "test"), ("app", "x")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..endpoint()
        };
        let full = WorkloadEndpoint {
            ipv4_nat: vec![IpNat {
                int_ip: "10.0.0.5".parse().unwrap(),
                ext_ip: "172.16.0.5".parse().unwrap(),
            }],
            ipv4_gateway: Some("10.0.0.1".parse().unwrap()),
            labels: [("a".to_owned(), "b".to_owned())].into(),
            ..endpoint()
        };
        let cases = [
            (
                plain,
                r#"{"state":"active","name":"cali1234567890a","active_instance_id":"","mac":"aa:bb:cc:dd:ee:ff","profile_ids":["net1"],"ipv4_nets":["10.0.0.5/32"],"ipv6_nets":[]}"#,
            ),
            (
                k8s,
                r#"{"state":"active","name":"cali1234567890a","active_instance_id":"abc123","mac":"aa:bb:cc:dd:ee:ff","profile_ids":["k8s_ns.test"],"ipv4_nets":["10.0.0.5/32"],"ipv6_nets":["fd80::5/128"],"labels":{"app":"x","calico/k8s_ns":"test"}}"#,
            ),
            (
                full,
                r#"{"state":"active","name":"cali1234567890a","active_instance_id":"","mac":"aa:bb:cc:dd:ee:ff","profile_ids":["net1"],"ipv4_nets":["10.0.0.5/32"],"ipv6_nets":[],"ipv4_nat":[{"int_ip":"10.0.0.5","ext_ip":"172.16.0.5"}],"labels":{"a":"b"},"ipv4_gateway":"10.0.0.1"}"#,
            ),
        ];
        for (ep, json) in cases {
            assert_eq!(text(&ep), json);
            assert_eq!(WorkloadEndpoint::from_json(json.as_bytes()).unwrap(), ep);
        }
    }

    #[test]
    fn endpoints_written_by_other_versions_are_read() {
        let cases = [
            // Python plugin: no active_instance_id, labels before the nets.
            r#"{"state":"active","name":"cali1234567890a","mac":"aa:bb:cc:dd:ee:ff","profile_ids":["net1"],"labels":{},"ipv4_nets":["10.0.0.5/32"],"ipv6_nets":[]}"#,
            // Go v1.4.0: labels always written.
            r#"{"state":"active","name":"cali1234567890a","mac":"aa:bb:cc:dd:ee:ff","profile_ids":["net1"],"ipv4_nets":["10.0.0.5/32"],"ipv6_nets":[],"labels":{}}"#,
            // Go before v1.4.2: null labels; nil slices as null.
            r#"{"state":"active","name":"cali1234567890a","mac":"aa:bb:cc:dd:ee:ff","profile_ids":["net1"],"ipv4_nets":["10.0.0.5/32"],"ipv6_nets":null,"labels":null}"#,
        ];
        for json in cases {
            let ep = WorkloadEndpoint::from_json(json.as_bytes()).unwrap();
            assert_eq!(ep, endpoint(), "{json}");
        }
    }

    #[test]
    fn unknown_endpoint_fields_survive_a_rewrite() {
        let json = r#"{"state":"active","name":"cali1234567890a","active_instance_id":"","mac":"aa:bb:cc:dd:ee:ff","profile_ids":["net1"],"ipv4_nets":["10.0.0.5/32"],"ipv6_nets":[],"ports":[{"name":"http","port":80,"protocol":"tcp"}]}"#;
        let ep = WorkloadEndpoint::from_json(json.as_bytes()).unwrap();
        assert_eq!(ep.other.len(), 1);
        assert_eq!(text(&ep), json);
    }

    #[test]
    fn bad_networks_are_rejected() {
        let json = r#"{"state":"active","name":"x","mac":"","profile_ids":[],"ipv4_nets":["10.0.0.300/32"],"ipv6_nets":[]}"#;
        let err = WorkloadEndpoint::from_json(json.as_bytes()).unwrap_err();
        assert!(err.msg().contains("10.0.0.300/32"), "{err:?}");
    }

    #[test]
    fn profiles_match_go_plugin() {
        let cases = [
            (
                Profile::for_network("net1"),
                r#"{"inbound_rules":[{"action":"allow","src_tag":"net1"}],"outbound_rules":[{"action":"allow"}]}"#,
            ),
            (
                Profile::allow_all("net1"),
                r#"{"inbound_rules":[{"action":"allow"}],"outbound_rules":[{"action":"allow"}]}"#,
            ),
        ];
        for (profile, rules) in cases {
            let kvs: Vec<(String, String)> = profile
                .key_values()
                .unwrap()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
                .collect();
            assert_eq!(
                kvs,
                vec![
                    (
                        "/calico/v1/policy/profile/net1/tags".to_owned(),
                        r#"["net1"]"#.to_owned()
                    ),
                    (
                        "/calico/v1/policy/profile/net1/labels".to_owned(),
                        "{}".to_owned()
                    ),
                    (
                        "/calico/v1/policy/profile/net1/rules".to_owned(),
                        rules.to_owned()
                    ),
                ]
            );
            let read: ProfileRules = serde_json::from_str(rules).unwrap();
            assert_eq!(read, profile.rules);
        }
    }

    #[test]
    fn python_profile_rules_are_read() {
        let json = r#"{"id":"net1","inbound_rules":[{"action":"allow","src_tag":"net1"}],"outbound_rules":[{"action":"allow"}]}"#;
        let rules: ProfileRules = serde_json::from_str(json).unwrap();
        assert_eq!(rules.inbound_rules, vec![Rule::allow_from_tag("net1")]);
        assert_eq!(
            rules.other.get("id"),
            Some(&serde_json::Value::from("net1"))
        );
    }
}
