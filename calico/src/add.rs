//! ADD: addresses from IPAM, the veth pair, the endpoint and profile in etcd.

use std::collections::BTreeMap;

use common::Result;
use common::cni::{CniResult, Interface, IpConfig, Reply, Request};
use common::dataplane::format_mac;
use common::dataplane::netns::ContainerNetns;
use common::dataplane::veth::{self, HOST_MAC, VethGuard};
use common::datastore::model::WorkloadEndpoint;
use common::datastore::{Datastore, Entry};
use common::fault;
use common::rollback::RollbackLog;
use ipnetwork::IpNetwork;

use crate::attachment::{self, AttachmentGuard};
use crate::combined;
use crate::endpoint::{self, EndpointWrite, StoredEndpoint};
use crate::first_read;
use crate::ipam::{self, IpamLease};
use crate::join;
use crate::labels;
use crate::network;
use crate::pod::{self, AddressSource, PodSetup};
use crate::policy;
use crate::profile;
use crate::workload::WorkloadIds;

/// Handles ADD.
pub fn add(req: &Request, reply: &mut Reply<'_>) -> Result<()> {
    let ids = WorkloadIds::for_request(req);
    let sessions = network::open_sessions(req)?;
    let store = Datastore::connect(&req.config.etcd)?;
    let wanted = combined::first_read_keys(req, &ids);
    let profile_reads = policy::profile_reads(req);
    let record_key = attachment::attachment_key(req);
    let first = first_read::read_for_add(&store, &ids, &record_key, &wanted, &profile_reads)?;
    let (found, record, profiles) = (first.endpoint, first.record, first.policy);
    let existing = match found {
        Some(found) if is_this_attachment(req, &ids, &found) => {
            let (host, container) = (sessions.host, &sessions.container);
            if veth::container_end_of(host, container, &req.ifname, &found.endpoint.name)?.is_some()
            {
                return reply.send(&endpoint_result(req, &found.endpoint));
            }
            // Set up afresh: a failure after IPAM must not release addresses that an endpoint
            // left in place still names.
            remove_attachment_left_elsewhere(req, container, &found)?;
            None
        }
        Some(found) if join::joins(req, &ids, &found) => {
            let joined = join::join(&store, req, found)?;
            return reply.send(&endpoint_result(req, &joined));
        }
        other => {
            if record.is_some() {
                remove_unfinished_attachment(req)?;
            }
            network::refuse_existing_interface(req, &sessions.container)?;
            other
        }
    };
    // A pod's new sandbox gets new addresses and takes over the pod's endpoint.
    let replaced = existing.filter(|_| ids.is_kubernetes());
    let setup = pod::prepare(req, &ids)?;
    let req = &setup.request;
    let rollback = RollbackLog::default();
    let read = (wanted.as_slice(), first.also.as_slice());
    let (mut recorded, mut lease) =
        record_and_allocate(&store, &setup, read, replaced.as_ref(), &rollback)?;
    let addresses = ipam::workload_addresses(&lease.result);
    fault::point("after-ipam")?;
    let host_veth = recorded.host_veth();
    let mut pair =
        network::create_workload_interfaces(req, &sessions, host_veth, &addresses, &rollback)?;
    fault::point("after-routes")?;
    let (key, profile) = (
        endpoint::endpoint_key(&ids),
        profile::network_profile(req, &ids),
    );
    let new_endpoint = policy::NewEndpoint {
        host_veth: pair.host_ifname(),
        addresses: &addresses,
        creating: profile.as_ref(),
        reuses_host_veth: replaced.is_some() || host_veth.replaces_stale_link,
    };
    let mut policed = policy::enforce_new_endpoint(req, &profiles, &new_endpoint, &rollback)?;
    fault::point("after-policy")?;
    let endpoint = workload_endpoint(&setup, &ids, &pair, &addresses, replaced.as_ref());
    let write = EndpointWrite {
        key: &key,
        endpoint: &endpoint,
        previous: replaced.as_ref(),
        profile: profile.as_ref(),
    };
    let mut written = endpoint::write_endpoint(&store, &write, &rollback)?;
    fault::point("after-endpoint")?;
    reply.send(&attachment_result(req, &pair, &addresses, &lease.result))?;
    fault::point("after-result")?;
    written.commit();
    policed.commit();
    pair.commit();
    lease.commit();
    recorded.commit();
    Ok(())
}

/// The attachment record, the claim on its host veth name and the addresses: in one
/// transaction where [`combined`] can, else the record and claim first, then the addresses.
/// `read` is what ADD's first read found for [`combined::first_read_keys`]; where the ADD
/// removed an old attachment since, it is stale, and the commit's conditions catch that.
fn record_and_allocate<'a>(
    store: &'a Datastore,
    setup: &'a PodSetup,
    read: (&[String], &[Option<Entry>]),
    replaced: Option<&StoredEndpoint>,
    rollback: &RollbackLog,
) -> Result<(AttachmentGuard<'a>, IpamLease<'a>)> {
    if let Some(both) = combined::record_and_allocate(store, setup, read, rollback)? {
        return Ok(both);
    }
    let req = &setup.request;
    let ids = WorkloadIds::for_request(req);
    let recorded = attachment::record_attachment(store, req, &ids, &setup.addresses, rollback)?;
    fault::point("after-record")?;
    release_replaced_addresses(store, req, &setup.addresses, replaced)?;
    let lease = ipam::allocate(store, req, &setup.addresses, rollback)?;
    Ok((recorded, lease))
}

/// Whether `found`, this `CNI_IFNAME`'s endpoint, is the one this very attachment made: for a
/// plain container, this network's (rather than another network's that this one joins under
/// the same interface name); for a pod, this sandbox's (rather than an earlier sandbox's that
/// this one replaces).
fn is_this_attachment(req: &Request, ids: &WorkloadIds, found: &StoredEndpoint) -> bool {
    if ids.is_kubernetes() {
        found.endpoint.active_instance_id == req.container_id
    } else {
        found.endpoint.profile_ids.first() == Some(&req.config.name)
    }
}

/// The attachment exists, but its interface is not in `CNI_NETNS`: the runtime set the
/// container up again in a new netns after a DEL that failed. What the old attachment left (its
/// veth pair, addresses, endpoint and record) is torn down as DEL would, so that the ADD can
/// start afresh; an interface of that name in the new netns that is not ours stops it first.
fn remove_attachment_left_elsewhere(
    req: &Request,
    container: &ContainerNetns,
    found: &StoredEndpoint,
) -> Result<()> {
    network::refuse_existing_interface(req, container)?;
    common::cni::log::info(&format!(
        "endpoint {} has no interface {} in netns {}: removing what it left before setting it up again",
        found.key,
        req.ifname,
        container.path().display()
    ));
    crate::del::del(req)
}

/// This attachment has a record but no endpoint: an earlier ADD of it was killed before it
/// finished (or its undo failed). What it left (addresses, veth, record, claim) is removed as DEL
/// would, so that the retried ADD neither fails on its interface nor holds a second address.
fn remove_unfinished_attachment(req: &Request) -> Result<()> {
    common::cni::log::info(&format!(
        "attachment {}/{} has a record but no endpoint: removing what an unfinished ADD left",
        req.container_id, req.ifname
    ));
    crate::del::del(req)
}

/// A pod annotated with `ipAddrs` asks for the same addresses in every sandbox: the replaced
/// sandbox's addresses are released first, as Calico does, or the new request would find them
/// taken.
fn release_replaced_addresses(
    store: &Datastore,
    req: &Request,
    source: &AddressSource,
    replaced: Option<&StoredEndpoint>,
) -> Result<()> {
    let previous = replaced
        .map(|r| r.endpoint.active_instance_id.as_str())
        .filter(|id| !id.is_empty() && *id != req.container_id);
    match (source, previous) {
        (AddressSource::IpamRequested(_), Some(previous)) => ipam::release(
            store,
            &Request {
                container_id: previous.to_string(),
                ..req.clone()
            },
        ),
        _ => Ok(()),
    }
}

/// The endpoint to store. A pod's endpoint records the sandbox that owns it, so that a late
/// DEL of an older sandbox leaves it alone; fields other tools added to a replaced endpoint
/// are kept.
fn workload_endpoint(
    setup: &PodSetup,
    ids: &WorkloadIds,
    pair: &VethGuard,
    addresses: &[IpNetwork],
    replaced: Option<&StoredEndpoint>,
) -> WorkloadEndpoint {
    let req = &setup.request;
    WorkloadEndpoint {
        state: "active".to_string(),
        name: pair.host_ifname().to_string(),
        active_instance_id: if ids.is_kubernetes() {
            req.container_id.clone()
        } else {
            String::new()
        },
        mac: pair.container_mac().to_string(),
        profile_ids: vec![ids.profile(&req.config)],
        ipv4_nets: addresses.iter().filter(|a| a.is_ipv4()).copied().collect(),
        ipv6_nets: addresses.iter().filter(|a| a.is_ipv6()).copied().collect(),
        ipv4_nat: Vec::new(),
        ipv6_nat: Vec::new(),
        labels: endpoint_labels(setup, ids),
        ipv4_gateway: None,
        ipv6_gateway: None,
        other: replaced
            .map(|r| r.endpoint.other.clone())
            .unwrap_or_default(),
    }
}

/// A pod's labels from the API, or a plain container's Mesos labels; then the config's
/// `label_endpoints` labels, where the orchestrator has not set the same key (its labels are
/// what Kubernetes policy selects on).
fn endpoint_labels(setup: &PodSetup, ids: &WorkloadIds) -> BTreeMap<String, String> {
    let config = &setup.request.config;
    let mut labels = if ids.is_kubernetes() {
        setup.labels.clone()
    } else {
        labels::mesos_labels(&config.mesos_labels)
    };
    for (key, value) in &config.endpoint_labels {
        labels.entry(key.clone()).or_insert_with(|| value.clone());
    }
    labels
}

/// Host end first, then the container end every address belongs to. No gateway: the
/// container routes via 169.254.1.1 (IPv6: the host end's link-local), not IPAM's gateway.
fn attachment_result(
    req: &Request,
    pair: &VethGuard,
    addresses: &[IpNetwork],
    ipam: &CniResult,
) -> CniResult {
    CniResult {
        interfaces: vec![
            Interface {
                name: pair.host_ifname().to_string(),
                mac: Some(format_mac(&HOST_MAC)),
                sandbox: None,
            },
            Interface {
                name: pair.container_ifname().to_string(),
                mac: Some(pair.container_mac().to_string()),
                sandbox: req.netns.as_ref().map(|p| p.display().to_string()),
            },
        ],
        ips: addresses
            .iter()
            .map(|&address| IpConfig {
                address,
                gateway: None,
                interface: Some(1),
            })
            .collect(),
        routes: Vec::new(),
        dns: ipam.dns.clone(),
    }
}

fn endpoint_result(req: &Request, endpoint: &WorkloadEndpoint) -> CniResult {
    CniResult {
        interfaces: vec![
            Interface {
                name: endpoint.name.clone(),
                mac: Some(format_mac(&HOST_MAC)),
                sandbox: None,
            },
            Interface {
                name: req.ifname.clone(),
                mac: Some(endpoint.mac.clone()),
                sandbox: req.netns.as_ref().map(|p| p.display().to_string()),
            },
        ],
        ips: endpoint
            .ipv4_nets
            .iter()
            .chain(&endpoint.ipv6_nets)
            .map(|&address| IpConfig {
                address,
                gateway: None,
                interface: Some(1),
            })
            .collect(),
        ..CniResult::default()
    }
}
