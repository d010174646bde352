//! DEL: release the addresses, delete the endpoint, remove the interfaces, then the
//! attachment record. Idempotent.

use std::collections::HashMap;

use common::Result;
use common::cni::Request;
use common::dataplane::netns::ContainerNetns;
use common::dataplane::veth::HostVethDeletion;
use common::datastore::endpoint::{Teardown, decode_claim, read_claim};
use common::datastore::records::HostVethClaim;
use common::datastore::{Datastore, Entry, keys};

use crate::attachment;
use crate::endpoint::StoredEndpoint;
use crate::first_read;
use crate::ipam_delegation;
use crate::join;
use crate::network;
use crate::policy;
use crate::teardown_commit::{self, TeardownRead};
use crate::workload::WorkloadIds;

/// Handles DEL. The endpoint is read first, with the Ready flag, the record and the claim on the
/// usual host veth name, in one request: when etcd cannot say what exists, nothing is touched.
/// The usual host veth is looked up just before that read, so the link found existed before
/// the claim was read (see [`HostVethDeletion`]), and the thread that will delete it starts
/// while etcd answers. A container that joined this network on top of another one under the
/// same `CNI_IFNAME` only leaves it.
pub fn del(req: &Request) -> Result<()> {
    let ids = WorkloadIds::for_request(req);
    let store = Datastore::connect(&req.config.etcd)?;
    let usual = ids.host_veth_name(&req.container_id);
    let mut also = vec![
        attachment::attachment_key(req),
        keys::host_veth_claim(&req.config.nodename, &usual),
    ];
    also.extend(teardown_commit::first_read_keys(req));
    let prepared = network::prepare_host_veth_deletion(&usual);
    let (stored, found) = first_read::read_for_del(&store, &ids, &also)?;
    let ipam_read = also.iter().cloned().zip(found.iter().cloned()).skip(2);
    let ipam_read = ipam_read.collect();
    if let Some(joined) = join::joined_endpoint(req, &ids, stored.as_ref()) {
        return join::leave(&store, req, joined);
    }
    let record = found[0]
        .as_ref()
        .map(attachment::decode_record)
        .transpose()?;
    let nft_table = record.as_ref().and_then(|r| r.nft_table.clone());
    // Without this network's record, a plain container's endpoint is this network's only when
    // the network made it (its first profile): a DEL of a network the container never joined,
    // or a repeated DEL of one it left, must not tear down another network's attachment.
    let stored = stored.filter(|s| {
        record.is_some()
            || ids.is_kubernetes()
            || s.endpoint.profile_ids.first() == Some(&req.config.name)
    });
    if record.is_none() {
        // No record names this attachment's pair, but an ADD killed while its first
        // transaction committed may have left one that is provably this attachment's (a pod's
        // earlier sandbox's endpoint may still name the same host veth name).
        remove_unrecorded_pair(req, &usual)?;
    }
    let host_veth = stored
        .as_ref()
        .map(|s| s.endpoint.name.clone())
        .or(record.map(|r| r.host_veth));
    let claim = match host_veth.as_deref() {
        Some(name) if name == usual => found[1].as_ref().map(decode_claim).transpose()?,
        Some(name) => read_claim(&store, &req.config.nodename, name)?,
        None => None,
    };
    teardown(
        &store,
        req,
        stored,
        HostVethState {
            name: host_veth,
            claim,
            nft_table,
        },
        ipam_read,
        prepared,
    )
}

/// The host veth an attachment used, who holds the claim on its name now, and the nftables
/// table its record says enforces local policy on it.
pub struct HostVethState {
    /// The name the endpoint or the record gives; `None` when neither exists.
    pub name: Option<String>,
    /// The claim on that name as read now.
    pub claim: Option<HostVethClaim>,
    /// The table of the record's local policy.
    pub nft_table: Option<String>,
}

/// Releases the addresses, removes the interfaces, then deletes the endpoint (and, when all
/// went well, the record and the claim) in one transaction, sent as soon as the kernel has
/// unregistered the host veth rather than after it has freed it; with Calico IPAM in this
/// process that one transaction releases the addresses too (`ipam_read`: what the first read
/// found of the IPAM keys, see [`teardown_commit`]). A pod's endpoint owned by another
/// sandbox (a late DEL of an older one) is left alone, and so is a host veth whose name another
/// sandbox or container holds now; this sandbox's addresses and container interface go all the
/// same. The record stays when something failed, so a retry finds it. `prepared` is the
/// deletion DEL made ready while it read etcd (GC has none).
pub fn teardown(
    store: &Datastore,
    req: &Request,
    stored: Option<StoredEndpoint>,
    host_veth: HostVethState,
    ipam_read: HashMap<String, Option<Entry>>,
    prepared: Option<HostVethDeletion>,
) -> Result<()> {
    let plan = Teardown::plan(
        &req.container_id,
        stored,
        host_veth.name,
        host_veth.claim.as_ref(),
    );
    let (host_veth, nft_table) = (plan.host_veth.clone(), host_veth.nft_table);
    // The addresses leave local policy's sets before IPAM may hand them out again.
    let unenforced = policy::remove_enforcement(nft_table.as_deref(), host_veth.as_deref());
    if ipam_delegation::in_process(req) {
        let read = TeardownRead {
            plan,
            ipam: ipam_read,
        };
        return network::remove_workload_interfaces_then(
            req,
            host_veth.as_deref(),
            prepared,
            unenforced.err().into_iter().collect(),
            |failures| teardown_commit::commit(store, req, read, failures),
        );
    }
    let released = ipam_delegation::release(store, req);
    let record_key = attachment::attachment_key(req);
    network::remove_workload_interfaces_then(
        req,
        host_veth.as_deref(),
        prepared,
        [unenforced.err(), released.err()]
            .into_iter()
            .flatten()
            .collect(),
        |failures| plan.finish(store, &req.config.nodename, &record_key, failures),
    )
}

/// [`network::remove_unrecorded_pair`] in `CNI_NETNS`, when there is one to look into.
fn remove_unrecorded_pair(req: &Request, usual: &str) -> Result<()> {
    let Some(netns) = req.netns.as_deref() else {
        return Ok(());
    };
    // A netns that is gone took any pair with it.
    match ContainerNetns::open(netns) {
        Ok(container) => network::remove_unrecorded_pair(req, &container, usual).map(|_| ()),
        Err(err) if err.is_not_found() => Ok(()),
        Err(err) => {
            common::log::info(&format!("not looking for an unrecorded pair: {err}"));
            Ok(())
        }
    }
}
