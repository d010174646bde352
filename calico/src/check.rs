//! CHECK: is the attachment described by `prevResult` still in place, in the kernel and in etcd?

use std::net::IpAddr;

use common::cni::Request;
use common::dataplane::netns::ContainerNetns;
use common::dataplane::route::{IPV4_GATEWAY, RouteState, Scope};
use common::dataplane::{Netlink, addr, route, sysctl, veth};
use common::datastore::Datastore;
use common::datastore::model::WorkloadEndpoint;
use common::datastore::records::AttachmentRecord;
use common::error::codes;
use common::{Code, Error, Result};
use ipnetwork::IpNetwork;

use crate::attachment;
use crate::endpoint;
use crate::ipam_delegation;

use crate::join;
use crate::network;
use crate::policy;
use crate::workload::WorkloadIds;

/// What ADD reported, and so what must still be there.
struct Expected {
    host_ifname: String,
    container_mac: Option<String>,
    addresses: Vec<IpNetwork>,
}

/// Handles CHECK: the IPAM plugin's CHECK first, then the container side, the host side and
/// the endpoint. Every mismatch found is reported, each in its own sentence.
pub fn check(req: &Request) -> Result<()> {
    let sessions = network::open_sessions(req)?;
    let store = Datastore::connect(&req.config.etcd)?;
    let ids = WorkloadIds::for_request(req);
    let own = endpoint::read_endpoint(&store, &ids)?;
    // A network the container only joined owns nothing but its profile on the endpoint of the
    // network that made the interface, and finding that profile is what makes it a join; the
    // other network's CHECK covers the rest.
    if join::joined_endpoint(req, &ids, own.as_ref()).is_some() {
        return Ok(());
    }
    let expected = expected_state(req)?;
    let record = attachment::read_attachment(&store, req)?;
    if !record.as_ref().is_some_and(|r| r.without_ipam) {
        ipam_delegation::check(&store, req)?;
    }
    let mut mismatches = check_container(&sessions.container, &req.ifname, &expected)?;
    mismatches.extend(check_host(sessions.host, &expected)?);
    mismatches.extend(check_endpoint(&store, req, &expected)?);
    mismatches.extend(policy::check(
        &store,
        record.as_ref(),
        own.map(|o| o.endpoint).as_ref(),
    )?);
    common::error::from_findings(codes::CHECK_FAILED, &mismatches)
}

/// Whether the attachment whose endpoint ADD found is complete in the kernel: the container
/// interface with its addresses and routes, the host veth with its routes and sysctls, and
/// the endpoint's local policy. An ADD killed after its endpoint was committed but before the
/// last of these steps leaves an attachment a repeated ADD must not answer as done.
pub fn is_complete(
    store: &Datastore,
    req: &Request,
    sessions: &network::Sessions,
    endpoint: &WorkloadEndpoint,
    record: Option<&AttachmentRecord>,
) -> Result<bool> {
    let expected = Expected {
        host_ifname: endpoint.name.clone(),
        container_mac: Some(endpoint.mac.clone()),
        addresses: endpoint
            .ipv4_nets
            .iter()
            .chain(&endpoint.ipv6_nets)
            .copied()
            .collect(),
    };
    let mut mismatches = check_container(&sessions.container, &req.ifname, &expected)?;
    mismatches.extend(check_host(sessions.host, &expected)?);
    mismatches.extend(policy::check(store, record, Some(endpoint))?);
    for mismatch in &mismatches {
        common::log::info(&format!(
            "repeated ADD finds the attachment unfinished: {mismatch}"
        ));
    }
    Ok(mismatches.is_empty())
}

/// Reads `prevResult`: the container interface named `CNI_IFNAME` in this netns, the host
/// interface (the one without a sandbox) and the addresses.
fn expected_state(req: &Request) -> Result<Expected> {
    let prev = req.prev_result()?;
    let netns_text = req.netns.as_ref().map(|p| p.display().to_string());
    let container = prev
        .interfaces
        .iter()
        .find(|i| i.name == req.ifname && (i.sandbox.is_none() || i.sandbox == netns_text))
        .ok_or_else(|| {
            Error::new(
                Code::InvalidConfig,
                format!(
                    "prevResult has no interface {} in {}",
                    req.ifname,
                    netns_text.clone().unwrap_or_default()
                ),
            )
        })?;
    let host = prev
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_none() && i.name != req.ifname)
        .ok_or_else(|| Error::new(Code::InvalidConfig, "prevResult has no host interface"))?;
    Ok(Expected {
        host_ifname: host.name.clone(),
        container_mac: container.mac.clone(),
        addresses: ipam_delegation::workload_addresses(&prev),
    })
}

fn check_container(
    container: &ContainerNetns,
    ifname: &str,
    expected: &Expected,
) -> Result<Vec<String>> {
    let where_ = format!(
        "container interface {ifname} in {}",
        container.path().display()
    );
    let netlink = container.netlink();
    let Some(link) = veth::read_link(netlink, ifname)? else {
        return Ok(vec![format!("{where_} does not exist")]);
    };
    let mut found = link_mismatches(&where_, &link, expected.container_mac.as_deref());
    let addresses = addr::list_addresses(netlink, link.index)?;
    for address in &expected.addresses {
        if !addresses.contains(address) {
            found.push(format!("{where_} does not have address {address}"));
        }
    }
    let routes = route::list_routes(netlink, link.index)?;
    if expected.addresses.iter().any(IpNetwork::is_ipv4) {
        let gateway = IpAddr::V4(IPV4_GATEWAY);
        let link_route =
            |r: &RouteState| r.destination == IpNetwork::from(gateway) && r.scope == Scope::Link;
        if !routes.iter().any(link_route) {
            found.push(format!("{where_} has no route {gateway}/32 scope link"));
        }
        if !routes
            .iter()
            .any(|r| is_default(r, false) && r.gateway == Some(gateway))
        {
            found.push(format!("{where_} has no default route via {gateway}"));
        }
    }
    if expected.addresses.iter().any(IpNetwork::is_ipv6)
        && !routes.iter().any(|r| is_default(r, true))
    {
        found.push(format!("{where_} has no IPv6 default route"));
    }
    Ok(found)
}

fn check_host(host: &Netlink, expected: &Expected) -> Result<Vec<String>> {
    let name = &expected.host_ifname;
    let where_ = format!("host interface {name}");
    let Some(link) = veth::read_link(host, name)? else {
        return Ok(vec![format!("{where_} does not exist")]);
    };
    let mut found = link_mismatches(&where_, &link, None);
    let routes = route::list_routes(host, link.index)?;
    for address in &expected.addresses {
        if !routes
            .iter()
            .any(|r| r.destination == *address && r.ifindex == Some(link.index))
        {
            found.push(format!("host has no route {address} dev {name}"));
        }
    }
    let mut sysctls = Vec::new();
    if expected.addresses.iter().any(IpNetwork::is_ipv4) {
        sysctls.extend([
            (format!("net/ipv4/conf/{name}/proxy_arp"), "1"),
            (format!("net/ipv4/neigh/{name}/proxy_delay"), "0"),
            (format!("net/ipv4/conf/{name}/forwarding"), "1"),
        ]);
    }
    if expected.addresses.iter().any(IpNetwork::is_ipv6) {
        sysctls.extend([
            (format!("net/ipv6/conf/{name}/disable_ipv6"), "0"),
            (format!("net/ipv6/conf/{name}/proxy_ndp"), "1"),
            (format!("net/ipv6/conf/{name}/forwarding"), "1"),
        ]);
    }
    for (path, want) in sysctls {
        let value = sysctl::read(&path)?;
        if value.trim() != want {
            found.push(format!(
                "sysctl {path} is {} instead of {want}",
                value.trim()
            ));
        }
    }
    Ok(found)
}

fn check_endpoint(store: &Datastore, req: &Request, expected: &Expected) -> Result<Vec<String>> {
    let ids = WorkloadIds::for_request(req);
    let key = endpoint::endpoint_key(&ids);
    let Some(stored) = endpoint::read_endpoint(store, &ids)? else {
        return Ok(vec![format!("endpoint {key} does not exist")]);
    };
    let ep = &stored.endpoint;
    let mut found = Vec::new();
    if ep.name != expected.host_ifname {
        found.push(format!(
            "endpoint {key} names host interface {} instead of {}",
            ep.name, expected.host_ifname
        ));
    }
    if let Some(mac) = expected
        .container_mac
        .as_deref()
        .filter(|mac| !ep.mac.eq_ignore_ascii_case(mac))
    {
        found.push(format!(
            "endpoint {key} has MAC {} instead of {mac}",
            ep.mac
        ));
    }
    let mut stored_nets: Vec<IpNetwork> =
        ep.ipv4_nets.iter().chain(&ep.ipv6_nets).copied().collect();
    let mut want_nets = expected.addresses.clone();
    stored_nets.sort();
    want_nets.sort();
    if stored_nets != want_nets {
        found.push(format!(
            "endpoint {key} has addresses {stored_nets:?} instead of {want_nets:?}"
        ));
    }
    let profile = ids.profile(&req.config);
    if !ep.profile_ids.contains(&profile) {
        found.push(format!("endpoint {key} does not have profile {profile}"));
    }
    if ids.is_kubernetes() && ep.active_instance_id != req.container_id {
        found.push(format!(
            "endpoint {key} belongs to sandbox {} instead of {}",
            ep.active_instance_id, req.container_id
        ));
    }
    Ok(found)
}

fn link_mismatches(where_: &str, link: &veth::LinkState, mac: Option<&str>) -> Vec<String> {
    let mut found = Vec::new();
    if !link.is_veth() {
        found.push(format!("{where_} is not a veth"));
    }
    if !link.up {
        found.push(format!("{where_} is down"));
    }
    if let Some(mac) = mac.filter(|mac| !link.mac.eq_ignore_ascii_case(mac)) {
        found.push(format!("{where_} has MAC {} instead of {mac}", link.mac));
    }
    found
}

fn is_default(route: &RouteState, ipv6: bool) -> bool {
    route.destination.prefix() == 0 && route.is_ipv6() == ipv6
}
