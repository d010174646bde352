//! The addresses, from the IPAM plugin named in `ipam.type`.

use common::cni::{CniResult, Command, Request, delegate};
use common::Result;
use ipnetwork::IpNetwork;

/// Addresses held from the IPAM plugin; dropping the lease releases them (IPAM DEL) unless it
/// was committed.
pub struct IpamLease<'a> {
    req: &'a Request,
    /// What the IPAM plugin returned.
    pub result: CniResult,
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
        if !self.committed {
            if let Err(err) = release(self.req) {
                eprintln!("calico: rollback: failed to release addresses of {}: {err}", self.req.container_id);
            }
        }
    }
}

/// IPAM ADD.
pub fn allocate(req: &Request) -> Result<IpamLease<'_>> {
    let result = delegate::ipam_add(req)?;
    Ok(IpamLease { req, result, committed: false })
}

/// IPAM DEL with the same config and container id as the ADD, so only this attachment's
/// addresses are released.
pub fn release(req: &Request) -> Result<()> {
    delegate::ipam_exec(req, Command::Del, &req.raw_config)
}

/// The workload's addresses: every IPAM address as a /32 or /128, because Calico routes each
/// workload address individually rather than a subnet.
pub fn workload_addresses(result: &CniResult) -> Vec<IpNetwork> {
    result
        .ips
        .iter()
        .filter_map(|ip| IpNetwork::new(ip.address.ip(), if ip.address.is_ipv4() { 32 } else { 128 }).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::cni::IpConfig;

    #[test]
    fn addresses_become_host_routes() {
        let result = CniResult {
            ips: vec![
                IpConfig { address: "10.98.0.2/24".parse().unwrap(), gateway: Some("10.98.0.1".parse().unwrap()), interface: None },
                IpConfig { address: "fd00::2/64".parse().unwrap(), gateway: None, interface: None },
            ],
            ..CniResult::default()
        };
        let got: Vec<String> = workload_addresses(&result).iter().map(|n| n.to_string()).collect();
        assert_eq!(got, ["10.98.0.2/32", "fd00::2/128"]);
    }
}
