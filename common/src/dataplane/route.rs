//! Routes: the container's routes through the host (Calico's proxy-ARP scheme), the host's
//! route to each workload address, and reading routes back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use nix::errno::Errno;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteVia,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use super::addr::host_prefix;
use super::netlink::{Netlink, netlink_error};
use crate::error::codes::DATAPLANE;
use crate::{Error, Result};

/// The fake IPv4 gateway of every Calico workload. Nothing owns it: the host end answers ARP
/// for it through proxy ARP, so all the container's traffic is routed by the host.
pub const IPV4_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The metric the kernel gives an IPv6 route added without one.
const IPV6_DEFAULT_METRIC: u32 = 1024;

/// The scope of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Global (`scope global`, the kernel's "universe").
    Universe,
    /// `scope site`.
    Site,
    /// Directly attached (`scope link`).
    Link,
    /// Local to the host (`scope host`).
    Host,
    /// `scope nowhere`.
    Nowhere,
    /// Any other numeric scope.
    Other(u8),
}

impl From<RouteScope> for Scope {
    fn from(scope: RouteScope) -> Scope {
        match scope {
            RouteScope::Universe => Scope::Universe,
            RouteScope::Site => Scope::Site,
            RouteScope::Link => Scope::Link,
            RouteScope::Host => Scope::Host,
            RouteScope::NoWhere => Scope::Nowhere,
            other => Scope::Other(u8::from(other)),
        }
    }
}

/// A route of the main table as [`list_routes`] reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteState {
    /// Destination; `0.0.0.0/0` or `::/0` for a default route. Its family is the route's.
    pub destination: IpNetwork,
    /// Next hop, when the route has one.
    pub gateway: Option<IpAddr>,
    /// Scope (the kernel reports every IPv6 route as [`Scope::Universe`]).
    pub scope: Scope,
    /// Output interface index, when the route has one.
    pub ifindex: Option<u32>,
}

impl RouteState {
    /// Whether this is an IPv6 route.
    pub fn is_ipv6(&self) -> bool {
        self.destination.is_ipv6()
    }

    fn from_message(msg: &RouteMessage) -> Option<RouteState> {
        let family_default = match msg.header.address_family {
            AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => return None,
        };
        let mut destination = family_default;
        let mut gateway = None;
        let mut ifindex = None;
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(addr) => destination = route_ip(addr)?,
                RouteAttribute::Gateway(addr) => gateway = route_ip(addr),
                RouteAttribute::Via(RouteVia::Inet(ip)) => gateway = Some(IpAddr::V4(*ip)),
                RouteAttribute::Via(RouteVia::Inet6(ip)) => gateway = Some(IpAddr::V6(*ip)),
                RouteAttribute::Oif(index) => ifindex = Some(*index),
                _ => {}
            }
        }
        Some(RouteState {
            destination: IpNetwork::new(destination, msg.header.destination_prefix_length).ok()?,
            gateway,
            scope: msg.header.scope.into(),
            ifindex,
        })
    }
}

fn route_ip(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// The routing table a route message belongs to (`RTA_TABLE` overrides the 8-bit header field).
fn table_of(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

/// Adds the container's routes through the host on the interface `ifindex` in the current
/// namespace. When `addrs` holds IPv4: `169.254.1.1/32 scope link` and a default route via
/// 169.254.1.1. When it holds IPv6: `::/0 via ipv6_gateway` (the host end's link-local address),
/// which must then be given. The address families decide, not the number of addresses.
///
/// The container's first interface of a family routes by default. When the namespace has a
/// default route of that family already (an earlier interface's), this interface's routes of
/// the family get a metric above the kernel's default: they can sit next to the first
/// interface's routes (IPv4 refuses a second route to one destination at one metric) without
/// taking traffic from it, and take over only when it is removed.
pub fn add_container_routes(
    netlink: &Netlink,
    ifindex: u32,
    addrs: &[IpNetwork],
    ipv6_gateway: Option<Ipv6Addr>,
) -> Result<()> {
    let ipv4 = addrs.iter().any(IpNetwork::is_ipv4);
    let ipv6 = addrs.iter().any(IpNetwork::is_ipv6);
    if ipv6 && ipv6_gateway.is_none() {
        return Err(Error::new(
            DATAPLANE,
            format!("no IPv6 gateway for the IPv6 default route on link {ifindex}"),
        ));
    }
    let routes = main_table_routes(netlink)?;
    let routed_by_default = |v6: bool| {
        routes
            .iter()
            .any(|r| r.destination.prefix() == 0 && r.is_ipv6() == v6)
    };
    if ipv4 {
        let metric = routed_by_default(false).then_some(ifindex);
        let with_metric = |builder: RouteMessageBuilder<Ipv4Addr>| match metric {
            Some(metric) => builder.priority(metric),
            None => builder,
        };
        let gateway_route = with_metric(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(IPV4_GATEWAY, 32)
                .output_interface(ifindex)
                .scope(RouteScope::Link)
                .protocol(RouteProtocol::Boot),
        );
        add_route(
            netlink,
            gateway_route.build(),
            format_args!("add route {IPV4_GATEWAY}/32 dev {ifindex} in the container"),
        )?;
        let default_route = with_metric(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(IPV4_GATEWAY)
                .output_interface(ifindex)
                .protocol(RouteProtocol::Boot),
        );
        add_route(
            netlink,
            default_route.build(),
            format_args!("add default route via {IPV4_GATEWAY} dev {ifindex} in the container"),
        )?;
    }
    if let (true, Some(gateway)) = (ipv6, ipv6_gateway) {
        let mut default_route = RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(gateway)
            .output_interface(ifindex)
            .protocol(RouteProtocol::Boot);
        if routed_by_default(true) {
            default_route = default_route.priority(IPV6_DEFAULT_METRIC.saturating_add(ifindex));
        }
        add_route(
            netlink,
            default_route.build(),
            format_args!("add default route via {gateway} dev {ifindex} in the container"),
        )?;
    }
    Ok(())
}

fn add_route(
    netlink: &Netlink,
    route: RouteMessage,
    context: std::fmt::Arguments<'_>,
) -> Result<()> {
    netlink
        .request(
            RouteNetlinkMessage::NewRoute(route),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
        .map_err(|e| netlink_error(e, context))
}

/// Adds the host's route to each workload address, `ip/32` (or `/128`) `dev host_ifname scope
/// link` in the main table, on the host end with index `host_index`.
///
/// A route that already exists on the same link with the same destination (and, for IPv4, the
/// same scope) is accepted, since Felix may have added it first; one on another link is an
/// error (Calico v1.11.1 behaviour).
pub fn add_host_routes(
    host: &Netlink,
    host_index: u32,
    host_ifname: &str,
    addrs: &[IpNetwork],
) -> Result<()> {
    for addr in addrs {
        let dst = host_prefix(addr.ip());
        let route = match dst.ip() {
            IpAddr::V4(ip) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(ip, 32)
                .output_interface(host_index)
                .scope(RouteScope::Link)
                .protocol(RouteProtocol::Boot)
                .build(),
            IpAddr::V6(ip) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(ip, 128)
                .output_interface(host_index)
                .scope(RouteScope::Link)
                .protocol(RouteProtocol::Boot)
                .build(),
        };
        match host.request(
            RouteNetlinkMessage::NewRoute(route),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_) => {}
            Err(e) if e.errno() == Some(Errno::EEXIST) => {
                check_existing_host_route(host, host_index, host_ifname, dst)?;
            }
            Err(e) => {
                return Err(netlink_error(
                    e,
                    format_args!("add route {dst} dev {host_ifname} scope link"),
                ));
            }
        }
    }
    Ok(())
}

/// Accepts an existing route to `dst` when it goes out of `host_index` with link scope.
fn check_existing_host_route(
    host: &Netlink,
    host_index: u32,
    host_ifname: &str,
    dst: IpNetwork,
) -> Result<()> {
    let routes = main_table_routes(host)?;
    // The kernel keeps no scope for IPv6 routes and reports them all as universe.
    let ours = routes.iter().any(|r| {
        r.destination == dst
            && r.ifindex == Some(host_index)
            && (dst.is_ipv6() || r.scope == Scope::Link)
    });
    if ours {
        return Ok(());
    }
    Err(Error::new(
        DATAPLANE,
        format!(
            "route (ifindex: {host_index}, dst: {dst}, scope: link) already exists for an interface other than {host_ifname}"
        ),
    ))
}

fn main_table_routes(netlink: &Netlink) -> Result<Vec<RouteState>> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        let what = format!("{family:?} routes").to_lowercase();
        for msg in netlink.dump(RouteNetlinkMessage::GetRoute(request), &what)? {
            let RouteNetlinkMessage::NewRoute(msg) = msg else {
                continue;
            };
            if table_of(&msg) != u32::from(RouteHeader::RT_TABLE_MAIN) {
                continue;
            }
            out.extend(RouteState::from_message(&msg));
        }
    }
    Ok(out)
}

/// The main-table default routes of both families in the namespace of `netlink`, whatever
/// their interface.
pub fn list_default_routes(netlink: &Netlink) -> Result<Vec<RouteState>> {
    let routes = main_table_routes(netlink)?;
    Ok(routes
        .into_iter()
        .filter(|r| r.destination.prefix() == 0)
        .collect())
}

/// The main-table routes (both families) whose output interface is `ifindex`, in the namespace
/// of `netlink`.
pub fn list_routes(netlink: &Netlink, ifindex: u32) -> Result<Vec<RouteState>> {
    let routes = main_table_routes(netlink)?;
    Ok(routes
        .into_iter()
        .filter(|r| r.ifindex == Some(ifindex))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::netns::ContainerNetns;
    use crate::dataplane::testutil::{HostLink, TestHost, TestNetns, ip_json, unique_ifname};
    use crate::dataplane::veth::{VethRequest, create_veth};
    use crate::dataplane::{addr, configure_container_interface, sysctl};

    fn route(dst: &str, gateway: Option<&str>, scope: Scope, ifindex: u32) -> RouteState {
        RouteState {
            destination: dst.parse().unwrap(),
            gateway: gateway.map(|g| g.parse().unwrap()),
            scope,
            ifindex: Some(ifindex),
        }
    }

    #[test]
    fn route_messages_are_read_back() {
        let default_v4 = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(IPV4_GATEWAY)
            .output_interface(3)
            .build();
        assert_eq!(
            RouteState::from_message(&default_v4),
            Some(route("0.0.0.0/0", Some("169.254.1.1"), Scope::Universe, 3))
        );
        let host_v6 = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix("fd00::1".parse().unwrap(), 128)
            .output_interface(4)
            .scope(RouteScope::Link)
            .build();
        assert_eq!(
            RouteState::from_message(&host_v6),
            Some(route("fd00::1/128", None, Scope::Link, 4))
        );
        assert_eq!(table_of(&host_v6), 254);
    }

    #[test]
    fn ipv6_without_gateway_is_refused_before_any_change() {
        let addrs = ["fd00::1/128".parse().unwrap()];
        let err = add_container_routes(Netlink::host().unwrap(), 1, &addrs, None).unwrap_err();
        assert!(err.msg().contains("no IPv6 gateway"), "{err:?}");
    }

    /// A veth into a fresh netns, configured like an ADD would, returning the pieces to check.
    fn configured_pair(
        host_ns: &TestHost,
        tag: &str,
        addrs: &[IpNetwork],
    ) -> (TestNetns, HostLink, u32, u32) {
        let ns = TestNetns::new(tag);
        let host = HostLink::new(unique_ifname("cr"));
        let container = ContainerNetns::open(ns.path()).unwrap();
        let mut guard = create_veth(
            host_ns.netlink(),
            &container,
            &VethRequest::new(host.name(), "eth0"),
            &crate::rollback::RollbackLog::default(),
        )
        .unwrap();
        guard.commit();
        let ll = if addrs.iter().any(IpNetwork::is_ipv6) {
            Some(addr::host_link_local_address(host_ns.netlink(), host.name()).unwrap())
        } else {
            None
        };
        let index = guard.container_index();
        configure_container_interface(&container, index, addrs, ll).unwrap();
        sysctl::configure_host_veth(host.name(), true, true).unwrap();
        add_host_routes(host_ns.netlink(), guard.host_index(), host.name(), addrs).unwrap();
        (ns, host, guard.host_index(), index)
    }

    #[test]
    #[ignore = "needs root"]
    fn ipv4_container_and_host_routes_are_installed() {
        let host_ns = TestHost::enter();
        let addrs = ["10.66.0.9/32".parse().unwrap()];
        let (ns, host, host_index, index) = configured_pair(&host_ns, "r4", &addrs);

        let routes = ip_json(&["-n", ns.name(), "-4", "route", "show", "dev", "eth0"]);
        let routes = routes.as_array().unwrap();
        assert!(
            routes
                .iter()
                .any(|r| r["dst"] == "169.254.1.1" && r["scope"] == "link"),
            "{routes:?}"
        );
        assert!(
            routes
                .iter()
                .any(|r| r["dst"] == "default" && r["gateway"] == "169.254.1.1"),
            "{routes:?}"
        );
        let listed =
            list_routes(ContainerNetns::open(ns.path()).unwrap().netlink(), index).unwrap();
        assert!(
            listed.contains(&route("169.254.1.1/32", None, Scope::Link, index)),
            "{listed:?}"
        );
        assert!(
            listed.contains(&route(
                "0.0.0.0/0",
                Some("169.254.1.1"),
                Scope::Universe,
                index
            )),
            "{listed:?}"
        );

        let host_routes = ip_json(&["-4", "route", "show", "dev", host.name()]);
        assert!(
            host_routes
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["dst"] == "10.66.0.9" && r["scope"] == "link"),
            "{host_routes}"
        );
        assert!(
            list_routes(host_ns.netlink(), host_index)
                .unwrap()
                .contains(&route("10.66.0.9/32", None, Scope::Link, host_index))
        );
        assert_eq!(
            sysctl::read(&format!("net/ipv4/conf/{}/proxy_arp", host.name())).unwrap(),
            "1"
        );

        // The same route again (as if Felix had added it) is accepted.
        add_host_routes(host_ns.netlink(), host_index, host.name(), &addrs).unwrap();
    }

    #[test]
    #[ignore = "needs root"]
    fn a_second_interface_routes_behind_the_first_instead_of_replacing_it() {
        let host_ns = TestHost::enter();
        let addrs: [IpNetwork; 2] = [
            "10.66.1.9/32".parse().unwrap(),
            "fd00:66:1::9/128".parse().unwrap(),
        ];
        let (ns, _host, _, first) = configured_pair(&host_ns, "r2nd", &addrs);
        let host = HostLink::new(unique_ifname("cr"));
        let container = ContainerNetns::open(ns.path()).unwrap();
        let mut guard = create_veth(
            host_ns.netlink(),
            &container,
            &VethRequest::new(host.name(), "eth1"),
            &crate::rollback::RollbackLog::default(),
        )
        .unwrap();
        guard.commit();
        let ll = addr::host_link_local_address(host_ns.netlink(), host.name()).unwrap();
        let second = guard.container_index();
        let more: [IpNetwork; 2] = [
            "10.66.2.9/32".parse().unwrap(),
            "fd00:66:2::9/128".parse().unwrap(),
        ];
        configure_container_interface(&container, second, &more, Some(ll)).unwrap();

        let v4 = ip_json(&["-n", ns.name(), "-4", "route", "show"]);
        let v4 = v4.as_array().unwrap();
        let metric = |r: &serde_json::Value| r["metric"].as_u64().unwrap_or(0);
        let defaults: Vec<_> = v4.iter().filter(|r| r["dst"] == "default").collect();
        assert_eq!(defaults.len(), 2, "{v4:?}");
        let best = defaults.iter().min_by_key(|r| metric(r)).unwrap();
        assert_eq!(best["dev"], "eth0", "{v4:?}");
        assert!(
            v4.iter().any(|r| r["dst"] == "169.254.1.1"
                && r["dev"] == "eth1"
                && metric(r) == u64::from(second)),
            "{v4:?}"
        );
        let v6 = ip_json(&["-n", ns.name(), "-6", "route", "show", "default"]);
        let v6 = v6.as_array().unwrap();
        let best6 = v6.iter().min_by_key(|r| metric(r)).unwrap();
        assert_eq!(best6["dev"], "eth0", "{v6:?}");
        assert_eq!(v6.len(), 2, "{v6:?}");

        // Without the first interface, the second one's routes carry the traffic.
        ns.ip(&["link", "del", "eth0"]);
        let left = ip_json(&["-n", ns.name(), "-4", "route", "show", "default"]);
        assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
        assert_eq!(left[0]["dev"], "eth1", "{left}");
        assert_ne!(first, second);
    }

    #[test]
    #[ignore = "needs root"]
    fn ipv6_container_default_route_goes_via_host_link_local() {
        let host_ns = TestHost::enter();
        let addrs = ["fd00:66::9/128".parse().unwrap()];
        let (ns, host, host_index, index) = configured_pair(&host_ns, "r6", &addrs);
        let ll = addr::eui64_link_local(crate::dataplane::veth::HOST_MAC).to_string();

        let routes = ip_json(&["-n", ns.name(), "-6", "route", "show", "dev", "eth0"]);
        assert!(
            routes
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["dst"] == "default" && r["gateway"] == ll),
            "{routes}"
        );
        let inside = ip_json(&["-n", ns.name(), "-6", "addr", "show", "dev", "eth0"]);
        assert!(
            inside[0]["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["local"] == "fd00:66::9" && a["prefixlen"] == 128),
            "{inside}"
        );
        let listed =
            list_routes(ContainerNetns::open(ns.path()).unwrap().netlink(), index).unwrap();
        assert!(
            listed
                .iter()
                .any(|r| r.destination.prefix() == 0 && r.gateway == Some(ll.parse().unwrap())),
            "{listed:?}"
        );

        let host_routes = ip_json(&["-6", "route", "show", "dev", host.name()]);
        assert!(
            host_routes
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["dst"] == "fd00:66::9"),
            "{host_routes}"
        );
        assert_eq!(
            sysctl::read(&format!("net/ipv6/conf/{}/proxy_ndp", host.name())).unwrap(),
            "1"
        );
        add_host_routes(host_ns.netlink(), host_index, host.name(), &addrs).unwrap();
    }

    /// Calico v1 failure history, row 21: ADD failed with `failed to add route file exists`
    /// when the host route to the workload was already there (added by Felix, or left over).
    /// A route to the address through the host veth itself, as another writer would add it, is
    /// accepted.
    #[test]
    #[ignore = "needs root"]
    fn host_route_already_present_on_the_veth_is_accepted_not_file_exists() {
        let host_ns = TestHost::enter();
        let ns = TestNetns::new("rhave");
        let host = HostLink::new(unique_ifname("cr"));
        let mut guard = create_veth(
            host_ns.netlink(),
            &ContainerNetns::open(ns.path()).unwrap(),
            &VethRequest::new(host.name(), "eth0"),
            &crate::rollback::RollbackLog::default(),
        )
        .unwrap();
        guard.commit();
        host.ip(&["link", "set", host.name(), "up"]);
        host.ip(&[
            "route",
            "add",
            "10.68.0.4/32",
            "dev",
            host.name(),
            "scope",
            "link",
            "proto",
            "static",
        ]);
        host.ip(&["-6", "route", "add", "fd00:68::4/128", "dev", host.name()]);

        let addrs = [
            "10.68.0.4/32".parse().unwrap(),
            "fd00:68::4/128".parse().unwrap(),
        ];
        add_host_routes(host_ns.netlink(), guard.host_index(), host.name(), &addrs).unwrap();
        let routes = list_routes(host_ns.netlink(), guard.host_index()).unwrap();
        for addr in &addrs {
            let found = routes.iter().filter(|r| r.destination == *addr).count();
            assert_eq!(found, 1, "{addr}: {routes:?}");
        }
    }

    /// Calico v1 failure history, row 21 (the corrected comparison, 2864afa): a host route to the
    /// address through another interface is still refused.
    #[test]
    #[ignore = "needs root"]
    fn host_route_on_another_link_is_already_exists() {
        let host_ns = TestHost::enter();
        let other = HostLink::new(unique_ifname("cr"));
        other.create_spare_veth();
        other.ip(&["link", "set", other.name(), "up"]);
        other.ip(&[
            "route",
            "add",
            "10.67.0.3/32",
            "dev",
            other.name(),
            "scope",
            "link",
        ]);
        other.ip(&["-6", "route", "add", "fd00:67::3/128", "dev", other.name()]);

        let ns = TestNetns::new("rdup");
        let host = HostLink::new(unique_ifname("cr"));
        let mut guard = create_veth(
            host_ns.netlink(),
            &ContainerNetns::open(ns.path()).unwrap(),
            &VethRequest::new(host.name(), "eth0"),
            &crate::rollback::RollbackLog::default(),
        )
        .unwrap();
        guard.commit();
        for addr in ["10.67.0.3/32", "fd00:67::3/128"] {
            let err = add_host_routes(
                host_ns.netlink(),
                guard.host_index(),
                host.name(),
                &[addr.parse().unwrap()],
            )
            .unwrap_err();
            assert!(
                err.msg().contains(&format!(
                    "already exists for an interface other than {}",
                    host.name()
                )),
                "{err:?}"
            );
        }
    }
}
