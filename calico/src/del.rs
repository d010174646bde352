//! DEL and GC: release the addresses, delete the endpoint, remove the interfaces, then the
//! attachment record. Idempotent.

use std::path::PathBuf;

use common::cni::{CniArgs, Command, Request, delegate};
use common::datastore::Datastore;
use common::datastore::model::AttachmentRecord;
use common::{Error, Result};

use crate::attachment;
use crate::endpoint::{self, StoredEndpoint};
use crate::ipam;
use crate::network;
use crate::workload::WorkloadIds;

/// Handles DEL. The endpoint is read first: when etcd cannot say what exists, nothing is
/// touched. A container that joined this network on top of another one only leaves it.
pub fn del(req: &Request) -> Result<()> {
    let ids = WorkloadIds::for_request(req);
    let store = Datastore::connect(&req.config.etcd)?;
    let (stored, record) = endpoint::read_for_del(&store, &ids, &attachment::attachment_key(req))?;
    if let Some(joined) = endpoint::joined_endpoint(&store, req, &ids, stored.as_ref())? {
        return leave_network(&store, req, joined);
    }
    let host_veth = record
        .as_ref()
        .map(attachment::decode_record)
        .transpose()?
        .map(|r| r.host_veth);
    teardown(&store, req, stored, host_veth)
}

/// Handles GC: every attachment of this network on this node that the runtime no longer lists
/// is torn down as DEL would, even when its ADD never finished; then the IPAM plugin's GC.
/// Absent lists mean no attachment is valid, as libcni sends none when it has none.
pub fn gc(req: &Request) -> Result<()> {
    let store = Datastore::connect(&req.config.etcd)?;
    endpoint::ensure_ready(&store)?;
    let valid = req.config.valid_attachments.clone().unwrap_or_default();
    let is_valid = |r: &AttachmentRecord| {
        valid
            .iter()
            .any(|a| a.container_id == r.container_id && a.ifname == r.ifname)
    };
    let (records, mut failures) = attachment::list_attachments(&store, req)?;
    for record in records.into_iter().filter(|r| !is_valid(r)) {
        let attachment_req = request_for(req, &record);
        let outcome = endpoint::read_endpoint_at(&store, &record.endpoint).and_then(|stored| {
            teardown(
                &store,
                &attachment_req,
                stored,
                Some(record.host_veth.clone()),
            )
        });
        let context = format!(
            "collect attachment {}/{}",
            record.container_id, record.ifname
        );
        failures.extend(outcome.err().map(|e| e.context(context)));
    }
    failures.extend(delegate::ipam_exec(req, Command::Gc, &req.raw_config).err());
    Error::combine(failures)
}

/// Releases, deletes and removes everything of one attachment, then its record. A pod's
/// endpoint owned by another sandbox (a late DEL of an older one) is left alone, and so is a
/// host veth whose name another sandbox or container holds now; this sandbox's addresses and
/// container interface go all the same. The record stays when something failed, so a retry
/// finds it.
fn teardown(
    store: &Datastore,
    req: &Request,
    stored: Option<StoredEndpoint>,
    recorded_host_veth: Option<String>,
) -> Result<()> {
    let owned = stored
        .as_ref()
        .is_none_or(|s| owned_by(s, &req.container_id));
    let stored = stored.filter(|_| owned);
    let host_veth = stored
        .as_ref()
        .map(|s| s.endpoint.name.clone())
        .or(recorded_host_veth);
    let claim = match &host_veth {
        Some(name) => attachment::read_claim(store, &req.config.nodename, name)?,
        None => None,
    };
    let claim_is_ours = claim
        .as_ref()
        .is_none_or(|c| c.container_id == req.container_id);
    let removable_host_veth = host_veth.as_deref().filter(|_| owned && claim_is_ours);
    let failures: Vec<Error> = [
        ipam::release(req),
        stored
            .as_ref()
            .map_or(Ok(()), |s| endpoint::delete_endpoint(store, s).map(|_| ())),
        network::remove_workload_interfaces(req, removable_host_veth),
    ]
    .into_iter()
    .filter_map(Result::err)
    .collect();
    if failures.is_empty() {
        let held_claim = host_veth
            .as_deref()
            .filter(|_| claim.is_some() && claim_is_ours);
        attachment::delete_attachment(store, req, held_claim)?;
    }
    Error::combine(failures)
}

/// Leaving a network the container joined later: drop its profile, release whatever the IPAM
/// plugin may hold for it; the interface stays with the network that made it.
fn leave_network(store: &Datastore, req: &Request, stored: StoredEndpoint) -> Result<()> {
    let released = ipam::release(req);
    endpoint::remove_profile(store, stored, &req.config.name)?;
    released
}

/// An endpoint without an active instance (plain CNI, or written by an older plugin) belongs to
/// whoever deletes it; a pod's belongs to the sandbox that last set it up.
fn owned_by(stored: &StoredEndpoint, container_id: &str) -> bool {
    let active = &stored.endpoint.active_instance_id;
    if active.is_empty() || active == container_id {
        return true;
    }
    common::cni::log::warn(&format!(
        "CNI_CONTAINERID {container_id} does not match the active instance {active} of endpoint {}: leaving it",
        stored.key
    ));
    false
}

/// The request DEL would have had for a recorded attachment.
fn request_for(req: &Request, record: &AttachmentRecord) -> Request {
    Request {
        container_id: record.container_id.clone(),
        ifname: record.ifname.clone(),
        netns: Some(PathBuf::from(&record.netns)).filter(|p| !p.as_os_str().is_empty()),
        args: CniArgs::default(),
        ..req.clone()
    }
}
