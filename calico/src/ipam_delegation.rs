//! The addresses: from Calico IPAM run in this process (`ipam.type: calico-ipam`), from the
//! IPAM plugin named in `ipam.type`, or, for a pod annotated with `ipAddrsNoIpam`, as given.

use std::net::IpAddr;

use common::Result;
use common::cni::{CniResult, Command, IpConfig, Request, delegate};
use common::config::{Attachment, IpamPlugin};
use common::datastore::Datastore;
use common::ipam::verbs;
use common::rollback::{Guard, RollbackLog, Undo};
use ipnetwork::IpNetwork;

use crate::pod::{self, AddressSource};

/// Set to `1` (or `true`), `calico` executes the `calico-ipam` binary for Calico IPAM, as an
/// interface plugin does for any other IPAM plugin, instead of running it in its own process.
pub const IPAM_EXEC_ENV: &str = "CALICO_IPAM_EXEC";

/// Whether Calico IPAM runs in this process: `ipam.type` is `calico-ipam`, and neither the
/// config (`ipam_in_process: false`) nor [`IPAM_EXEC_ENV`] asks for the binary.
pub fn in_process(req: &Request) -> bool {
    req.config.ipam.plugin == IpamPlugin::CalicoIpam
        && req.config.ipam_in_process
        && !std::env::var(IPAM_EXEC_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Addresses held for the attachment, under a guard that releases them unless committed.
pub type IpamLease<'a> = Guard<HeldAddresses<'a>>;

/// Addresses held for the attachment. They are released with IPAM DEL when the IPAM plugin
/// assigned them, address by address (only while the attachment's handle still holds each)
/// when this process did; addresses given without IPAM are not released.
pub struct HeldAddresses<'a> {
    req: &'a Request,
    /// The addresses and DNS settings.
    pub result: CniResult,
    release: Release<'a>,
}

/// How held addresses are given back.
enum Release<'a> {
    Nothing,
    IpamDel,
    Assigned(&'a Datastore, Vec<IpAddr>),
}

impl Undo for HeldAddresses<'_> {
    fn action(&self) -> String {
        format!("release addresses of {}", self.req.container_id)
    }

    fn undo(&mut self, _log: &RollbackLog) -> Result<Vec<String>> {
        match &self.release {
            Release::Nothing => {}
            Release::IpamDel => release_with_ipam_plugin(self.req)?,
            Release::Assigned(store, addresses) => {
                verbs::release_assigned(store, &ipam_request(self.req), addresses)?
            }
        }
        Ok(Vec::new())
    }
}

/// The lease of addresses this process assigned (and committed) for `req`.
pub fn assigned_lease<'a>(
    store: &'a Datastore,
    req: &'a Request,
    addresses: Vec<IpAddr>,
    rollback: &RollbackLog,
) -> IpamLease<'a> {
    let held = HeldAddresses {
        req,
        result: verbs::ipam_result(&addresses),
        release: Release::Assigned(store, addresses),
    };
    Guard::new(held, rollback)
}

/// Gets the addresses: IPAM ADD, one IPAM ADD per requested address, or none at all.
pub fn allocate<'a>(
    store: &'a Datastore,
    req: &'a Request,
    source: &AddressSource,
    rollback: &RollbackLog,
) -> Result<IpamLease<'a>> {
    // Nothing to release until IPAM has answered an ADD: one that failed cleaned up after
    // itself.
    let nothing_yet = HeldAddresses {
        req,
        result: CniResult::default(),
        release: Release::Nothing,
    };
    let mut lease = Guard::new(nothing_yet, rollback);
    let requested: Vec<Option<IpAddr>> = match source {
        AddressSource::Ipam => vec![None],
        AddressSource::IpamRequested(addresses) => addresses.iter().copied().map(Some).collect(),
        AddressSource::NoIpam(addresses) => {
            lease.result.ips = addresses
                .iter()
                .map(|&ip| IpConfig {
                    address: IpNetwork::from(ip),
                    gateway: None,
                    interface: None,
                })
                .collect();
            return Ok(lease);
        }
    };
    // The lease exists before the second request, so a failure there releases the first.
    for address in requested {
        let asking = match address {
            Some(address) => Request {
                args: req.args.with_ip(address),
                ..req.clone()
            },
            None => req.clone(),
        };
        if in_process(req) {
            let ipam_req = ipam_request(&asking);
            let assigned = verbs::assign_under_node_lock(store, &ipam_req, Default::default());
            let addresses = assigned.addresses?;
            lease.result.ips.extend(verbs::ipam_result(&addresses).ips);
            match &mut lease.release {
                Release::Assigned(_, held) => held.extend(addresses),
                release => *release = Release::Assigned(store, addresses),
            }
        } else {
            let printed = delegate::ipam_add(&asking)?;
            // The plugin holds addresses now, even when its result turns out unusable.
            lease.release = Release::IpamDel;
            let answer = delegate::ipam_result(&asking, &printed)?;
            let take = if address.is_some() {
                1
            } else {
                answer.ips.len()
            };
            lease.result.ips.extend(answer.ips.into_iter().take(take));
            lease.result.dns = answer.dns;
        }
    }
    Ok(lease)
}

/// Releases what IPAM holds for this attachment (the same container id and interface as the
/// ADD, so only this attachment's addresses go): in this process, or with IPAM DEL.
pub fn release(store: &Datastore, req: &Request) -> Result<()> {
    if in_process(req) {
        verbs::release(store, &ipam_request(req))
    } else {
        release_with_ipam_plugin(req)
    }
}

/// IPAM CHECK of the attachment's addresses.
pub fn check(store: &Datastore, req: &Request) -> Result<()> {
    if in_process(req) {
        verbs::check(store, req)
    } else {
        delegate::ipam_exec(req, Command::Check, &req.raw_config)
    }
}

/// IPAM STATUS.
pub fn status(store: &Datastore, req: &Request) -> Result<()> {
    if in_process(req) {
        verbs::status(store, req)
    } else {
        delegate::ipam_exec(req, Command::Status, &req.raw_config)
    }
}

/// IPAM GC, keeping the addresses of the `busy` attachments too (a verb is working on them).
pub fn gc(store: &Datastore, req: &Request, busy: &[Attachment]) -> Result<()> {
    if in_process(req) {
        let mut keeping = req.clone();
        if !busy.is_empty() {
            keeping
                .config
                .valid_attachments
                .get_or_insert_with(Vec::new)
                .extend(busy.iter().cloned());
        }
        verbs::gc(store, &keeping)
    } else {
        delegate::ipam_exec(req, Command::Gc, &config_keeping(&req.raw_config, busy)?)
    }
}

/// The config for the IPAM plugin's GC, with `busy` added to its valid list.
fn config_keeping(raw_config: &[u8], busy: &[Attachment]) -> Result<Vec<u8>> {
    if busy.is_empty() {
        return Ok(raw_config.to_vec());
    }
    let mut config: serde_json::Value = serde_json::from_slice(raw_config)?;
    let Some(object) = config.as_object_mut() else {
        return Ok(raw_config.to_vec());
    };
    for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
        let listed = object
            .entry(key)
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let Some(listed) = listed.as_array_mut() {
            listed.extend(
                busy.iter().map(
                    |a| serde_json::json!({"containerID": a.container_id, "ifname": a.ifname}),
                ),
            );
        }
    }
    Ok(serde_json::to_vec(&config)?)
}

fn release_with_ipam_plugin(req: &Request) -> Result<()> {
    delegate::ipam_exec(req, Command::Del, &pod::config_for_release(req)?)
}

/// The request as Calico IPAM sees it: a pod's pool annotations rewrite the `ipam` section of
/// the config the IPAM plugin is given (see `pod::prepare`), so the pools come from there.
pub fn ipam_request(req: &Request) -> Request {
    let mut ipam_req = req.clone();
    let raw: serde_json::Value = serde_json::from_slice(&req.raw_config).unwrap_or_default();
    let pools = |field: &str| -> Option<Vec<IpNetwork>> {
        raw.get("ipam")?
            .get(field)?
            .as_array()?
            .iter()
            .map(|v| v.as_str()?.parse().ok())
            .collect()
    };
    if let Some(v4) = pools("ipv4_pools") {
        ipam_req.config.ipam.ipv4_pools = v4;
    }
    if let Some(v6) = pools("ipv6_pools") {
        ipam_req.config.ipam.ipv6_pools = v6;
    }
    ipam_req
}

/// The workload's addresses: every IPAM address as a /32 or /128, because Calico routes each
/// workload address individually rather than a subnet.
pub fn workload_addresses(result: &CniResult) -> Vec<IpNetwork> {
    result
        .ips
        .iter()
        .map(|ip| IpNetwork::from(ip.address.ip()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(raw: &serde_json::Value) -> Request {
        let raw_config = raw.to_string().into_bytes();
        Request {
            command: Command::Add,
            container_id: "c1".into(),
            netns: None,
            ifname: "eth0".into(),
            cni_path: Vec::new(),
            args: Default::default(),
            config: common::config::NetConf::parse(&raw_config, &|_| None).unwrap(),
            version: common::cni::CniVersion::V1_0_0,
            raw_config,
            lock_dir: std::path::PathBuf::from("/nonexistent"),
        }
    }

    #[test]
    fn calico_ipam_in_process_takes_a_pods_pools_from_the_rewritten_config() {
        let conf = |pools: &[&str]| serde_json::json!({"name": "n", "ipam": {"type": "calico-ipam", "ipv4_pools": pools}});
        let mut req = request(&conf(&["10.0.0.0/16"]));
        // pod::prepare rewrites only the raw config for a pod's pools annotation.
        req.raw_config = conf(&["10.1.0.0/16"]).to_string().into_bytes();
        let pools = ipam_request(&req).config.ipam.ipv4_pools;
        assert_eq!(pools, ["10.1.0.0/16".parse::<IpNetwork>().unwrap()]);
        assert!(ipam_request(&req).config.ipam.ipv6_pools.is_empty());
    }

    #[test]
    fn addresses_become_host_routes() {
        let result = CniResult {
            ips: vec![
                IpConfig {
                    address: "10.98.0.2/24".parse().unwrap(),
                    gateway: Some("10.98.0.1".parse().unwrap()),
                    interface: None,
                },
                IpConfig {
                    address: "fd00::2/64".parse().unwrap(),
                    gateway: None,
                    interface: None,
                },
            ],
            ..CniResult::default()
        };
        let got: Vec<String> = workload_addresses(&result)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(got, ["10.98.0.2/32", "fd00::2/128"]);
    }
}
