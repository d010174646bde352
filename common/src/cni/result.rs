//! The one internal result model (the newest spec's) and one conversion per older wire shape.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::version::CniVersion;
use crate::error::{Code, Context, Error, Result};

/// An interface the plugin created or configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address, lower case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Netns path for a container-side interface; absent for host-side ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address assigned to an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with prefix length.
    pub address: IpNetwork,
    /// Gateway, if any (Calico sets none).
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces` (absent in IPAM results).
    pub interface: Option<usize>,
}

/// A route to program in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination.
    pub dst: IpNetwork,
    /// Next hop; absent means the family's default gateway.
    pub gw: Option<IpAddr>,
}

/// DNS settings, passed through from IPAM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A result in the newest spec's terms; converted to the caller's version only when printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    /// Interfaces, host side first.
    pub interfaces: Vec<Interface>,
    /// Addresses, IPv4 first.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
    /// DNS.
    pub dns: Dns,
}

impl CniResult {
    /// The wire JSON of this result for `version`.
    pub fn to_json(&self, version: CniVersion) -> Value {
        match version {
            CniVersion::V0_1_0 | CniVersion::V0_2_0 => self.to_v020(version),
            CniVersion::V0_3_0 | CniVersion::V0_3_1 | CniVersion::V0_4_0 => self.to_v040(version),
            CniVersion::V1_0_0 | CniVersion::V1_1_0 => self.to_v100(version),
        }
    }

    /// 0.1.0 / 0.2.0: one `ip4` and one `ip6` object, each with its family's routes.
    fn to_v020(&self, version: CniVersion) -> Value {
        let mut obj = Map::new();
        obj.insert("cniVersion".into(), version.as_str().into());
        for (key, is_v4) in [("ip4", true), ("ip6", false)] {
            let Some(ip) = self.ips.iter().find(|ip| ip.address.is_ipv4() == is_v4) else {
                continue;
            };
            let mut entry = Map::new();
            entry.insert("ip".into(), ip.address.to_string().into());
            if let Some(gw) = ip.gateway {
                entry.insert("gateway".into(), gw.to_string().into());
            }
            let routes: Vec<Value> = self
                .routes
                .iter()
                .filter(|r| r.dst.is_ipv4() == is_v4)
                .map(route_json)
                .collect();
            if !routes.is_empty() {
                entry.insert("routes".into(), routes.into());
            }
            obj.insert(key.into(), entry.into());
        }
        obj.insert("dns".into(), json!(self.dns));
        obj.into()
    }

    /// 0.3.0 – 0.4.0: `interfaces`, and `ips` entries carrying `version`.
    fn to_v040(&self, version: CniVersion) -> Value {
        self.to_rich(version, true)
    }

    /// 1.0.0 and later: as 0.4.0 without `ips[].version`.
    fn to_v100(&self, version: CniVersion) -> Value {
        self.to_rich(version, false)
    }

    fn to_rich(&self, version: CniVersion, with_ip_version: bool) -> Value {
        let mut obj = Map::new();
        obj.insert("cniVersion".into(), version.as_str().into());
        if !self.interfaces.is_empty() {
            obj.insert("interfaces".into(), json!(self.interfaces));
        }
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut entry = Map::new();
                if with_ip_version {
                    entry.insert(
                        "version".into(),
                        if ip.address.is_ipv4() { "4" } else { "6" }.into(),
                    );
                }
                if let Some(index) = ip.interface {
                    entry.insert("interface".into(), index.into());
                }
                entry.insert("address".into(), ip.address.to_string().into());
                if let Some(gw) = ip.gateway {
                    entry.insert("gateway".into(), gw.to_string().into());
                }
                entry.into()
            })
            .collect();
        if !ips.is_empty() {
            obj.insert("ips".into(), ips.into());
        }
        if !self.routes.is_empty() {
            obj.insert(
                "routes".into(),
                self.routes
                    .iter()
                    .map(route_json)
                    .collect::<Vec<_>>()
                    .into(),
            );
        }
        obj.insert("dns".into(), json!(self.dns));
        obj.into()
    }

    /// Reads a result printed by another plugin (or a `prevResult`) in any version's shape.
    pub fn from_json(value: &Value) -> Result<CniResult> {
        let obj = value
            .as_object()
            .ok_or_else(|| decoding("result is not a JSON object"))?;
        let dns = match obj.get("dns") {
            Some(Value::Null) | None => Dns::default(),
            Some(dns) => serde_json::from_value(dns.clone()).context("decode result dns")?,
        };
        if obj.contains_key("ip4") || obj.contains_key("ip6") {
            return from_v020(obj, dns);
        }
        let interfaces = match obj.get("interfaces") {
            Some(Value::Null) | None => Vec::new(),
            Some(list) => {
                serde_json::from_value(list.clone()).context("decode result interfaces")?
            }
        };
        // 0.3.0's text spells the list "ip"; accept it as well as "ips".
        let ips = obj
            .get("ips")
            .or_else(|| obj.get("ip"))
            .map(parse_ips)
            .transpose()?
            .unwrap_or_default();
        let routes = obj
            .get("routes")
            .map(parse_routes)
            .transpose()?
            .unwrap_or_default();
        Ok(CniResult {
            interfaces,
            ips,
            routes,
            dns,
        })
    }
}

fn route_json(route: &Route) -> Value {
    let mut obj = Map::new();
    obj.insert("dst".into(), route.dst.to_string().into());
    if let Some(gw) = route.gw {
        obj.insert("gw".into(), gw.to_string().into());
    }
    obj.into()
}

fn from_v020(obj: &Map<String, Value>, dns: Dns) -> Result<CniResult> {
    let mut result = CniResult {
        dns,
        ..CniResult::default()
    };
    for key in ["ip4", "ip6"] {
        let Some(entry) = obj.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        let address = parse_network(entry.get("ip"), &format!("{key}.ip"))?;
        let gateway = parse_optional_ip(entry.get("gateway"), &format!("{key}.gateway"))?;
        result.ips.push(IpConfig {
            address,
            gateway,
            interface: None,
        });
        if let Some(routes) = entry.get("routes") {
            result.routes.extend(parse_routes(routes)?);
        }
    }
    Ok(result)
}

fn parse_ips(list: &Value) -> Result<Vec<IpConfig>> {
    let entries = list
        .as_array()
        .ok_or_else(|| decoding("result ips is not a list"))?;
    entries
        .iter()
        .map(|entry| {
            let address = parse_network(entry.get("address"), "ips[].address")?;
            let gateway = parse_optional_ip(entry.get("gateway"), "ips[].gateway")?;
            let interface = match entry.get("interface") {
                Some(Value::Number(n)) => n.as_u64().map(|n| n as usize),
                _ => None,
            };
            Ok(IpConfig {
                address,
                gateway,
                interface,
            })
        })
        .collect()
}

fn parse_routes(list: &Value) -> Result<Vec<Route>> {
    let entries = list
        .as_array()
        .ok_or_else(|| decoding("result routes is not a list"))?;
    entries
        .iter()
        .map(|entry| {
            let dst = parse_network(entry.get("dst"), "routes[].dst")?;
            let gw = parse_optional_ip(entry.get("gw"), "routes[].gw")?;
            Ok(Route { dst, gw })
        })
        .collect()
}

fn parse_network(value: Option<&Value>, field: &str) -> Result<IpNetwork> {
    let text = value
        .and_then(Value::as_str)
        .ok_or_else(|| decoding(&format!("result {field} is missing")))?;
    text.parse().map_err(|_| {
        decoding(&format!(
            "result {field} {text:?} is not an address with prefix"
        ))
    })
}

fn parse_optional_ip(value: Option<&Value>, field: &str) -> Result<Option<IpAddr>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| decoding(&format!("result {field} {s:?} is not an address"))),
        Some(other) => Err(decoding(&format!("result {field} {other} is not a string"))),
    }
}

fn decoding(msg: &str) -> Error {
    Error::new(Code::Decoding, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calico_result() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "cali12345678901".into(),
                    mac: Some("ee:ee:ee:ee:ee:ee".into()),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("0a:58:0a:00:00:05".into()),
                    sandbox: Some("/run/netns/x".into()),
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.0.0.5/32".parse().unwrap(),
                    gateway: None,
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd80::5/128".parse().unwrap(),
                    gateway: None,
                    interface: Some(1),
                },
            ],
            routes: vec![],
            dns: Dns::default(),
        }
    }

    #[test]
    fn each_version_has_its_shape() {
        let r = calico_result();
        let old = json!({"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.5/32"},"ip6":{"ip":"fd80::5/128"},"dns":{}});
        assert_eq!(r.to_json(CniVersion::V0_2_0), old);
        let v040 = r.to_json(CniVersion::V0_4_0);
        assert_eq!(
            v040["ips"][0],
            json!({"version":"4","interface":1,"address":"10.0.0.5/32"})
        );
        assert_eq!(v040["ips"][1]["version"], "6");
        assert_eq!(v040["interfaces"][1]["sandbox"], "/run/netns/x");
        assert!(v040["interfaces"][0].get("sandbox").is_none());
        let v100 = r.to_json(CniVersion::V1_0_0);
        assert_eq!(
            v100["ips"][0],
            json!({"interface":1,"address":"10.0.0.5/32"})
        );
        assert_eq!(v100["cniVersion"], "1.0.0");
        assert_eq!(v100["dns"], json!({}));
    }

    #[test]
    fn every_shape_reads_back() {
        let r = calico_result();
        for version in super::super::version::ALL_VERSIONS {
            let back = CniResult::from_json(&r.to_json(version)).unwrap();
            let addresses: Vec<_> = back.ips.iter().map(|ip| ip.address).collect();
            assert_eq!(
                addresses,
                r.ips.iter().map(|ip| ip.address).collect::<Vec<_>>(),
                "{version}"
            );
        }
    }

    #[test]
    fn host_local_result_reads() {
        let raw = json!({"cniVersion":"1.0.0","ips":[{"address":"10.98.0.2/24","gateway":"10.98.0.1"}],
                         "routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.0.0.10"]}});
        let r = CniResult::from_json(&raw).unwrap();
        assert_eq!(r.ips[0].gateway, Some("10.98.0.1".parse().unwrap()));
        assert_eq!(r.routes.len(), 1);
        assert_eq!(r.dns.nameservers, ["10.0.0.10"]);
    }

    #[test]
    fn old_result_with_routes_reads() {
        let raw =
            json!({"ip4":{"ip":"10.1.2.2/24","gateway":"10.1.2.1","routes":[{"dst":"0.0.0.0/0"}]}});
        let r = CniResult::from_json(&raw).unwrap();
        assert_eq!(r.ips.len(), 1);
        assert_eq!(r.routes[0].dst, "0.0.0.0/0".parse::<IpNetwork>().unwrap());
    }

    #[test]
    fn bad_address_is_a_decoding_error() {
        let err = CniResult::from_json(&json!({"ips":[{"address":"10.0.0.300/32"}]})).unwrap_err();
        assert_eq!(err.code(), Code::Decoding);
    }
}
