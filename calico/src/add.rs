//! ADD: addresses from IPAM, the veth pair, the endpoint and profile in etcd (with Calico IPAM
//! in this process, record, addresses, endpoint and profile in one transaction first).

use std::collections::BTreeMap;

use common::Result;
use common::cni::{CniResult, Interface, IpConfig, Reply, Request};
use common::dataplane::format_mac;
use common::dataplane::netns::ContainerNetns;
use common::dataplane::veth::{self, HOST_MAC, VethGuard};
use common::datastore::model::{Profile, WorkloadEndpoint};
use common::datastore::{Datastore, Entry};
use common::fault;
use common::rollback::RollbackLog;
use ipnetwork::IpNetwork;

use crate::attachment::{self, AttachmentGuard, HostVeth};
use crate::check;
use crate::combined::{self, Published};
use crate::endpoint::{self, EndpointGuard, EndpointWrite, StoredEndpoint};
use crate::first_read;
use crate::ipam_delegation::{self, IpamLease};
use crate::join;
use crate::labels;
use crate::network::{self, Sessions};
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
                let record = record.as_ref().map(attachment::decode_record).transpose()?;
                let endpoint = &found.endpoint;
                if check::is_complete(&store, req, &sessions, endpoint, record.as_ref())? {
                    return reply.send(&endpoint_result(req, endpoint));
                }
                remove_unfinished_attachment(req, "its interfaces are not all set up")?;
            } else {
                // Set up afresh: a failure after IPAM must not release addresses that an
                // endpoint left in place still names.
                remove_attachment_left_elsewhere(req, container, &found)?;
            }
            None
        }
        Some(found) if join::joins(req, &ids, &found) => {
            let joined = join::join(&store, req, found)?;
            return reply.send(&endpoint_result(req, &joined));
        }
        other => {
            let usual = ids.host_veth_name(&req.container_id);
            let unrecorded = match record {
                Some(_) => {
                    remove_unfinished_attachment(req, "it has a record but no endpoint")?;
                    None
                }
                None => Some(usual.as_str()),
            };
            network::refuse_existing_interface(req, &sessions.container, unrecorded)?;
            other
        }
    };
    // A pod's new sandbox gets new addresses and takes over the pod's endpoint.
    let replaced = existing.filter(|_| ids.is_kubernetes());
    let setup = pod::prepare(req, &ids)?;
    let req = &setup.request;
    let rollback = RollbackLog::default();
    let plan = EndpointPlan {
        setup: &setup,
        ids: &ids,
        key: endpoint::endpoint_key(&ids),
        profile: profile::network_profile(req, &ids),
        replaced: replaced.as_ref(),
        container_mac: attachment::container_mac(req),
    };
    let read = (wanted.as_slice(), first.also.as_slice());
    let Written {
        mut recorded,
        mut lease,
        endpoint: published,
        pair: created,
    } = record_and_allocate(&store, &setup, &sessions, read, &plan, &rollback)?;
    let addresses = ipam_delegation::workload_addresses(&lease.result);
    fault::point("after-ipam")?;
    let host_veth = recorded.host_veth();
    let mut pair = match created {
        Some(pair) => pair,
        None => network::create_pair(req, &sessions, host_veth, plan.container_mac, &rollback)?,
    };
    network::configure_workload_interfaces(&sessions, &pair, &addresses)?;
    fault::point("after-routes")?;
    let new_endpoint = policy::NewEndpoint {
        host_veth: pair.host_ifname(),
        addresses: &addresses,
        creating: plan.profile.as_ref(),
        reuses_host_veth: replaced.is_some() || host_veth.replaces_stale_link,
    };
    let mut policed = policy::enforce_new_endpoint(req, &profiles, &new_endpoint, &rollback)?;
    fault::point("after-policy")?;
    let mut written = match published {
        Some(written) => written,
        None => {
            let endpoint = plan.endpoint(pair.host_ifname(), &addresses);
            endpoint::write_endpoint(&store, &plan.write(&endpoint), &rollback)?
        }
    };
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

/// What ADD has written before it programs the interfaces. The bindings ADD destructures it
/// into drop in reverse: the pair first, the record last.
struct Written<'a> {
    recorded: AttachmentGuard<'a>,
    lease: IpamLease<'a>,
    /// The endpoint, when it committed with the record (else it is written at the end).
    endpoint: Option<EndpointGuard<'a>>,
    /// The veth pair, when it was created while the record committed.
    pair: Option<VethGuard<'a>>,
}

/// The record, the claim on its host veth name, the addresses and the endpoint: in one
/// transaction where [`combined`] can (the veth pair created meanwhile), else the record and
/// claim first, then the addresses (the endpoint is then written once the interfaces exist).
/// `read` is what ADD's first read found for [`combined::first_read_keys`]; where the ADD
/// removed an old attachment since, it is stale, and the commit's conditions catch that.
fn record_and_allocate<'a>(
    store: &'a Datastore,
    setup: &'a PodSetup,
    sessions: &'a Sessions,
    read: (&[String], &[Option<Entry>]),
    plan: &EndpointPlan<'_>,
    rollback: &RollbackLog,
) -> Result<Written<'a>> {
    let req = &setup.request;
    let publish = |host_veth: &str, addresses: &[IpNetwork]| {
        endpoint::pending_endpoint(&plan.write(&plan.endpoint(host_veth, addresses)))
    };
    let mac = plan.container_mac;
    let create_pair = |host: &HostVeth| network::create_pair(req, sessions, host, mac, rollback);
    if let Some(published) =
        combined::record_allocate_and_publish(store, setup, read, publish, create_pair, rollback)?
    {
        let Published {
            pair,
            endpoint,
            lease,
            recorded,
        } = published;
        return Ok(Written {
            recorded,
            lease,
            endpoint: Some(endpoint),
            pair,
        });
    }
    let ids = WorkloadIds::for_request(req);
    let recorded = attachment::record_attachment(store, req, &ids, &setup.addresses, rollback)?;
    fault::point("after-record")?;
    release_replaced_addresses(store, req, &setup.addresses, plan.replaced)?;
    let lease = ipam_delegation::allocate(store, req, &setup.addresses, rollback)?;
    Ok(Written {
        recorded,
        lease,
        endpoint: None,
        pair: None,
    })
}

/// What the attachment's endpoint will be, once its host veth name and addresses are known.
struct EndpointPlan<'a> {
    setup: &'a PodSetup,
    ids: &'a WorkloadIds,
    key: String,
    /// The network's profile, created with the endpoint unless it exists.
    profile: Option<Profile>,
    /// A pod's earlier sandbox's endpoint, which this one replaces.
    replaced: Option<&'a StoredEndpoint>,
    /// Chosen before the pair exists, so that the endpoint can be written first.
    container_mac: [u8; 6],
}

impl EndpointPlan<'_> {
    fn endpoint(&self, host_veth: &str, addresses: &[IpNetwork]) -> WorkloadEndpoint {
        workload_endpoint(
            self.setup,
            self.ids,
            (host_veth, &format_mac(&self.container_mac)),
            addresses,
            self.replaced,
        )
    }

    fn write<'e>(&'e self, endpoint: &'e WorkloadEndpoint) -> EndpointWrite<'e> {
        EndpointWrite {
            key: &self.key,
            endpoint,
            previous: self.replaced,
            profile: self.profile.as_ref(),
        }
    }
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
    network::refuse_existing_interface(req, container, None)?;
    common::log::info(&format!(
        "endpoint {} has no interface {} in netns {}: removing what it left before setting it up again",
        found.key,
        req.ifname,
        container.path().display()
    ));
    crate::del::del(req)
}

/// An earlier ADD of this attachment was killed before it finished (or its undo failed): it
/// has a record but no endpoint, or an endpoint whose interfaces are not all set up (`why`).
/// What it left (addresses, veth, endpoint, record, claim) is removed as DEL would, so that the
/// retried ADD neither fails on its interface nor holds a second address.
fn remove_unfinished_attachment(req: &Request, why: &str) -> Result<()> {
    common::log::info(&format!(
        "attachment {}/{}: {why}: removing what an unfinished ADD left",
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
        (AddressSource::IpamRequested(_), Some(previous)) => ipam_delegation::release(
            store,
            &Request {
                container_id: previous.to_string(),
                ..req.clone()
            },
        ),
        _ => Ok(()),
    }
}

/// The endpoint to store, for the host veth and container MAC `(host_veth, mac)`. A pod's
/// endpoint records the sandbox that owns it, so that a late DEL of an older sandbox leaves it
/// alone; fields other tools added to a replaced endpoint are kept.
fn workload_endpoint(
    setup: &PodSetup,
    ids: &WorkloadIds,
    (host_veth, mac): (&str, &str),
    addresses: &[IpNetwork],
    replaced: Option<&StoredEndpoint>,
) -> WorkloadEndpoint {
    let req = &setup.request;
    WorkloadEndpoint {
        state: "active".to_string(),
        name: host_veth.to_string(),
        active_instance_id: if ids.is_kubernetes() {
            req.container_id.clone()
        } else {
            String::new()
        },
        mac: mac.to_string(),
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
