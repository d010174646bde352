//! The CNI verbs: ADD assigns addresses under the attachment's handle (`<network>.<container
//! id>`, with `:<ifname>` for an interface other than eth0; it records this node and network),
//! guided by the node's block hint in `ipam.block_hint_dir`; DEL releases everything that handle
//! (and, for eth0, the pre-v1.11.2 handle) holds; CHECK, STATUS and GC live in their own modules.

use std::net::IpAddr;

use common::cni::{self, CniResult, IpConfig, Plugin, Reply, Request};
use common::datastore::Datastore;
use common::ipam::{Allocator, AutoAssign, PRIMARY_IFNAME, handle_id};
use common::{Context, Result};
use ipnetwork::IpNetwork;

use crate::{check, gc, status};

/// The `calico-ipam` plugin.
pub struct CalicoIpam;

impl Plugin for CalicoIpam {
    fn name(&self) -> &'static str {
        "calico-ipam"
    }

    fn add(&self, req: &Request, reply: &mut Reply<'_>) -> Result<()> {
        let store = Datastore::connect(&req.config.etcd)?;
        let ipam = Allocator::new(&store, &req.config.nodename)
            .with_network(&req.config.name)
            .with_block_hints(req.config.ipam.block_hint_dir.as_deref());
        let handle = handle_id(&req.config.name, &req.container_id, &req.ifname);
        let mut lease = assign(&ipam, &handle, req)?;
        reply.send(&ipam_result(&lease.addresses))?;
        lease.commit();
        Ok(())
    }

    fn del(&self, req: &Request) -> Result<()> {
        let store = Datastore::connect(&req.config.etcd)?;
        let ipam = Allocator::new(&store, &req.config.nodename);
        let handle = handle_id(&req.config.name, &req.container_id, &req.ifname);
        let mut handles = vec![handle.clone()];
        handles.extend(legacy_handle_id(req));
        let ids: Vec<&str> = handles.iter().map(String::as_str).collect();
        let released = ipam
            .release_handles(&ids)
            .with_context(|| format!("release addresses of handle {handle}"))?;
        if released == 0 {
            cni::log::info(&format!(
                "no addresses held by handle {}; nothing to release",
                handles.join(" or ")
            ));
        }
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<()> {
        check::check(req)
    }

    fn status(&self, req: &Request) -> Result<()> {
        status::status(req)
    }

    fn gc(&self, req: &Request) -> Result<()> {
        gc::gc(req)
    }

    fn supports_1_1_0(&self) -> bool {
        true
    }
}

/// Addresses assigned for one ADD; released again when dropped before [`Lease::commit`].
struct Lease<'a> {
    ipam: &'a Allocator<'a>,
    handle: String,
    addresses: Vec<IpAddr>,
    committed: bool,
}

impl Lease<'_> {
    fn commit(&mut self) {
        self.committed = true;
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for addr in &self.addresses {
            if let Err(err) = self.ipam.release_address(&self.handle, *addr) {
                cni::log::error(&format!(
                    "rollback: failed to release {addr} of handle {}: {err}",
                    self.handle
                ));
            }
        }
    }
}

/// The requested address (`CNI_ARGS` `IP=`), or one per family enabled in the config.
fn assign<'a>(ipam: &'a Allocator<'a>, handle: &str, req: &Request) -> Result<Lease<'a>> {
    let addresses = match req.args.ip {
        Some(addr) => {
            ipam.assign_ip(handle, addr)
                .with_context(|| format!("assign requested address {addr}"))?;
            vec![addr]
        }
        None => {
            let conf = &req.config.ipam;
            cni::log::info(&format!(
                "ipam request for handle {handle}: ipv4={} ipv6={}",
                conf.assign_ipv4, conf.assign_ipv6
            ));
            ipam.auto_assign(&AutoAssign {
                handle,
                ipv4: conf.assign_ipv4,
                ipv6: conf.assign_ipv6,
                ipv4_pools: &conf.ipv4_pools,
                ipv6_pools: &conf.ipv6_pools,
            })?
        }
    };
    Ok(Lease {
        ipam,
        handle: handle.to_string(),
        addresses,
        committed: false,
    })
}

/// The handle calico-ipam used before v1.11.2: the workload id, `<namespace>.<pod>` under
/// Kubernetes, else the container id. Those versions knew one interface per container, so only
/// DEL of eth0 releases it: a further interface's DEL must not free the first one's addresses.
fn legacy_handle_id(req: &Request) -> Option<String> {
    if req.ifname != PRIMARY_IFNAME {
        return None;
    }
    Some(match req.args.k8s_pod() {
        Some((namespace, pod)) => format!("{namespace}.{pod}"),
        None => req.container_id.clone(),
    })
}

/// The IPAM result: each address as a /32 or /128, IPv4 first, no gateway, no interfaces.
fn ipam_result(addresses: &[IpAddr]) -> CniResult {
    let mut ips: Vec<IpConfig> = addresses
        .iter()
        .map(|addr| IpConfig {
            address: IpNetwork::from(*addr),
            gateway: None,
            interface: None,
        })
        .collect();
    ips.sort_by_key(|ip| ip.address.is_ipv6());
    CniResult {
        ips,
        ..CniResult::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_has_host_prefixes_ipv4_first() {
        let result = ipam_result(&["fd00::5".parse().unwrap(), "10.0.0.5".parse().unwrap()]);
        let got: Vec<String> = result.ips.iter().map(|ip| ip.address.to_string()).collect();
        assert_eq!(got, ["10.0.0.5/32", "fd00::5/128"]);
        assert!(result.interfaces.is_empty() && result.ips.iter().all(|ip| ip.gateway.is_none()));
    }
}
