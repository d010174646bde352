//! Interface addresses: the container's /32 and /128 addresses, reading addresses back, and the
//! host end's IPv6 link-local address that serves as the container's IPv6 gateway.

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use rtnetlink::AddressMessageBuilder;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};

use super::netlink::{Netlink, netlink_error};
use super::{sysctl, veth};
use crate::error::codes::DATAPLANE;
use crate::{Error, Kind, Result};

/// How long [`host_link_local_address`] waits for the kernel to add the link-local address.
const LINK_LOCAL_WAIT: Duration = Duration::from_secs(2);
/// Pause between two looks for the link-local address.
const LINK_LOCAL_POLL: Duration = Duration::from_millis(20);

/// Adds every address of `addrs` to the interface `ifindex` in the current namespace, IPv4 as
/// a /32 and IPv6 as a /128 whatever the given prefix (Calico routes every workload address on
/// its own). IPv6 addresses skip duplicate address detection: they are unique by allocation and
/// DAD would keep them tentative for a second. An address already present is an error.
pub fn add_addresses(netlink: &Netlink, ifindex: u32, addrs: &[IpNetwork]) -> Result<()> {
    for addr in addrs {
        let host = host_prefix(addr.ip());
        let message = match host.ip() {
            IpAddr::V4(ip) => AddressMessageBuilder::<std::net::Ipv4Addr>::new()
                .index(ifindex)
                .address(ip, host.prefix())
                .build(),
            IpAddr::V6(ip) => {
                let mut message = AddressMessageBuilder::<Ipv6Addr>::new()
                    .index(ifindex)
                    .address(ip, host.prefix())
                    .build();
                message
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
                message
            }
        };
        netlink
            .request(
                RouteNetlinkMessage::NewAddress(message),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map_err(|e| netlink_error(e, format_args!("add address {host} to link {ifindex}")))?;
    }
    Ok(())
}

/// `ip` as a /32 or /128 network.
pub(crate) fn host_prefix(ip: IpAddr) -> IpNetwork {
    IpNetwork::from(ip)
}

/// The addresses of the interface `ifindex` in the namespace of `netlink`, both families, with
/// their prefix lengths (including the kernel's IPv6 link-local address).
pub fn list_addresses(netlink: &Netlink, ifindex: u32) -> Result<Vec<IpNetwork>> {
    let request = RouteNetlinkMessage::GetAddress(AddressMessage::default());
    let mut out = Vec::new();
    for msg in netlink.dump(request, "addresses")? {
        let RouteNetlinkMessage::NewAddress(msg) = msg else {
            continue;
        };
        if msg.header.index != ifindex {
            continue;
        }
        if let Some(ip) = address_ip(&msg) {
            let net = IpNetwork::new(ip, msg.header.prefix_len).map_err(|e| {
                Error::new(
                    DATAPLANE,
                    format!(
                        "address {ip}/{} of link {ifindex}: {e}",
                        msg.header.prefix_len
                    ),
                )
            })?;
            out.push(net);
        }
    }
    Ok(out)
}

/// The interface's own address of an address message: `IFA_LOCAL` when present (for IPv4 on a
/// point-to-point link `IFA_ADDRESS` is the peer), otherwise `IFA_ADDRESS`.
fn address_ip(msg: &AddressMessage) -> Option<IpAddr> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

/// The IPv6 link-local address of the host end `host_ifname`, the gateway of the container's
/// IPv6 default route. IPv6 is switched on for the interface first; the kernel adds the
/// address when the link comes up, so this waits up to 2 s for it and then falls back to the
/// EUI-64 address derived from the link's MAC (what the kernel would generate by default).
pub fn host_link_local_address(host: &Netlink, host_ifname: &str) -> Result<Ipv6Addr> {
    sysctl::write(&format!("net/ipv6/conf/{host_ifname}/disable_ipv6"), "0")?;
    let Some(link) = veth::read_link(host, host_ifname)? else {
        return Err(
            Error::new(DATAPLANE, format!("host link {host_ifname} not found"))
                .with_kind(Kind::NotFound),
        );
    };
    let deadline = Instant::now() + LINK_LOCAL_WAIT;
    let found = loop {
        let link_local = list_addresses(host, link.index)?
            .into_iter()
            .find_map(|net| match net.ip() {
                IpAddr::V6(ip) if ip.is_unicast_link_local() => Some(ip),
                _ => None,
            });
        if link_local.is_some() || Instant::now() >= deadline {
            break link_local;
        }
        std::thread::sleep(LINK_LOCAL_POLL);
    };
    if let Some(ip) = found {
        return Ok(ip);
    }
    let mac = parse_mac(&link.mac).ok_or_else(|| {
        Error::new(
            DATAPLANE,
            format!("host link {host_ifname} has no IPv6 link-local address and no usable MAC address {:?}", link.mac),
        )
    })?;
    Ok(eui64_link_local(mac))
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The link-local address `fe80::/64` with the modified EUI-64 interface identifier of `mac`
/// (RFC 4291 appendix A): `ff:fe` inserted in the middle and the universal/local bit flipped.
pub fn eui64_link_local(mac: [u8; 6]) -> Ipv6Addr {
    let id = [
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ];
    let mut octets = [0u8; 16];
    octets[0] = 0xfe;
    octets[1] = 0x80;
    octets[8..].copy_from_slice(&id);
    Ipv6Addr::from(octets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::netns::ContainerNetns;
    use crate::dataplane::testutil::{HostLink, TestHost, TestNetns, ip_json, unique_ifname};
    use crate::dataplane::veth::{VethRequest, create_veth};

    #[test]
    fn eui64_flips_the_local_bit_and_inserts_fffe() {
        let cases = [
            ([0xee; 6], "fe80::ecee:eeff:feee:eeee"),
            (
                [0x00, 0x1b, 0x21, 0x3c, 0x4d, 0x5e],
                "fe80::21b:21ff:fe3c:4d5e",
            ),
            ([0x02, 0, 0, 0, 0, 1], "fe80::ff:fe00:1"),
        ];
        for (mac, expected) in cases {
            assert_eq!(eui64_link_local(mac).to_string(), expected);
        }
    }

    #[test]
    fn mac_text_parses_only_six_hex_bytes() {
        assert_eq!(parse_mac("ee:ee:ee:ee:ee:ee"), Some([0xee; 6]));
        assert_eq!(
            parse_mac("00:1B:21:3c:4d:5e"),
            Some([0, 0x1b, 0x21, 0x3c, 0x4d, 0x5e])
        );
        assert_eq!(parse_mac("ee:ee:ee:ee:ee"), None);
        assert_eq!(parse_mac("ee:ee:ee:ee:ee:ee:ee"), None);
        assert_eq!(parse_mac("zz:ee:ee:ee:ee:ee"), None);
        assert_eq!(parse_mac(""), None);
    }

    #[test]
    fn host_prefix_is_a_single_address() {
        assert_eq!(
            host_prefix("10.0.0.5".parse().unwrap()).to_string(),
            "10.0.0.5/32"
        );
        assert_eq!(
            host_prefix("fd00::5".parse().unwrap()).to_string(),
            "fd00::5/128"
        );
    }

    #[test]
    #[ignore = "needs root"]
    fn container_gets_single_addresses_and_host_link_local_is_found() {
        let host_ns = TestHost::enter();
        let ns = TestNetns::new("addr");
        let host = HostLink::new(unique_ifname("ca"));
        let (netlink, container) = (host_ns.netlink(), ContainerNetns::open(ns.path()).unwrap());
        let mut guard = create_veth(
            netlink,
            &container,
            &VethRequest::new(host.name(), "eth0"),
            &crate::rollback::RollbackLog::default(),
        )
        .unwrap();
        guard.commit();
        let addrs: Vec<IpNetwork> = vec![
            "10.65.0.7/26".parse().unwrap(),
            "fd00:65::7/122".parse().unwrap(),
        ];
        let index = guard.container_index();
        container.enable_ipv6().unwrap();
        add_addresses(container.netlink(), index, &addrs).unwrap();
        let listed = list_addresses(container.netlink(), index).unwrap();
        assert!(
            listed.contains(&"10.65.0.7/32".parse().unwrap()),
            "{listed:?}"
        );
        assert!(
            listed.contains(&"fd00:65::7/128".parse().unwrap()),
            "{listed:?}"
        );

        let json = ip_json(&["-n", ns.name(), "addr", "show", "dev", "eth0"]);
        let infos = json[0]["addr_info"].as_array().unwrap();
        assert!(
            infos
                .iter()
                .any(|a| a["local"] == "10.65.0.7" && a["prefixlen"] == 32),
            "{json}"
        );
        assert!(
            infos
                .iter()
                .any(|a| a["local"] == "fd00:65::7" && a["prefixlen"] == 128),
            "{json}"
        );

        let again = add_addresses(container.netlink(), index, &addrs[..1]).unwrap_err();
        assert!(again.msg().contains("file exists"), "{again:?}");

        let ll = host_link_local_address(netlink, host.name()).unwrap();
        assert_eq!(ll, eui64_link_local(veth::HOST_MAC));
        let host_json = ip_json(&["-6", "addr", "show", "dev", host.name()]);
        assert!(
            host_json[0]["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["local"] == ll.to_string()),
            "{host_json}"
        );
    }

    #[test]
    fn missing_host_link_has_no_link_local() {
        let err = host_link_local_address(Netlink::host().unwrap(), "calinotthere0").unwrap_err();
        assert!(err.msg().contains("calinotthere0"), "{err:?}");
    }
}
