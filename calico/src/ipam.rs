//! The addresses, from the IPAM plugin named in `ipam.type` (or, for a pod annotated with
//! `ipAddrsNoIpam`, as given).

use common::Result;
use common::cni::{CniResult, Command, IpConfig, Request, delegate};
use common::error::RollbackLog;
use ipnetwork::IpNetwork;

use crate::pod::{self, AddressSource};

/// Addresses held for the attachment; dropping the lease releases them (IPAM DEL) unless it was
/// committed. Addresses given without IPAM are not released.
pub struct IpamLease<'a> {
    req: &'a Request,
    /// The addresses and DNS settings.
    pub result: CniResult,
    from_ipam: bool,
    rollback: RollbackLog,
    committed: bool,
}

impl IpamLease<'_> {
    /// Keeps the addresses.
    pub fn commit(&mut self) {
        self.committed = true;
    }
}

impl Drop for IpamLease<'_> {
    fn drop(&mut self) {
        if self.from_ipam
            && !self.committed
            && let Err(err) = release(self.req)
        {
            self.rollback.record_failure();
            common::cni::log::error(&format!(
                "rollback: failed to release addresses of {}: {err}",
                self.req.container_id
            ));
        }
    }
}

/// Gets the addresses: IPAM ADD, one IPAM ADD per requested address, or none at all.
pub fn allocate<'a>(
    req: &'a Request,
    source: &AddressSource,
    rollback: &RollbackLog,
) -> Result<IpamLease<'a>> {
    // Nothing to release until the IPAM plugin has answered an ADD: one that failed cleaned up
    // after itself.
    let mut lease = IpamLease {
        req,
        result: CniResult::default(),
        from_ipam: false,
        rollback: rollback.clone(),
        committed: false,
    };
    match source {
        AddressSource::Ipam => {
            lease.result = delegate::ipam_add(req)?;
            lease.from_ipam = true;
        }
        AddressSource::IpamRequested(addresses) => {
            // The lease exists before the second call, so a failure there releases the first.
            for &address in addresses {
                let asking = Request {
                    args: req.args.with_ip(address),
                    ..req.clone()
                };
                let answer = delegate::ipam_add(&asking)?;
                lease.from_ipam = true;
                lease.result.ips.extend(answer.ips.into_iter().take(1));
                lease.result.dns = answer.dns;
            }
        }
        AddressSource::NoIpam(addresses) => {
            lease.result.ips = addresses
                .iter()
                .map(|&ip| IpConfig {
                    address: IpNetwork::from(ip),
                    gateway: None,
                    interface: None,
                })
                .collect();
        }
    }
    Ok(lease)
}

/// IPAM DEL with the same container id as the ADD, so only this attachment's addresses are
/// released.
pub fn release(req: &Request) -> Result<()> {
    delegate::ipam_exec(req, Command::Del, &pod::config_for_release(req)?)
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
