//! GC: tear down the attachments of the network on this node that the runtime no longer lists,
//! as DEL would, then run the IPAM plugin's GC.

use std::collections::HashMap;
use std::path::PathBuf;

use common::cni::lock::AttachmentLock;
use common::cni::{CniArgs, Request};
use common::config::Attachment;
use common::dataplane::{Netlink, veth};
use common::datastore::endpoint::read_claim;
use common::datastore::records::AttachmentRecord;
use common::datastore::{Datastore, keys};
use common::{Error, Result};

use crate::attachment;
use crate::del::{self, HostVethState};
use crate::endpoint;
use crate::ipam_delegation;
use crate::ready;

/// Handles GC: every attachment of this network on this node that the runtime no longer lists
/// is torn down as DEL would, even when its ADD never finished; then the IPAM plugin's GC.
/// Absent lists mean no attachment is valid, as libcni sends none when it has none.
pub fn gc(req: &Request) -> Result<()> {
    let store = Datastore::connect(&req.config.etcd)?;
    ready::ensure_ready(&store)?;
    sweep_lock_files(req);
    let valid = req.config.valid_attachments.clone().unwrap_or_default();
    let (records, mut failures) = attachment::list_attachments(&store, req)?;
    let mut busy = Vec::new();
    for record in records.iter().filter(|r| !is_listed(&valid, r)) {
        // An ADD or DEL of the attachment is running right now: it is not garbage yet, and
        // tearing it down under that verb would leave half of it. The next GC looks again.
        let Some(_lock) = AttachmentLock::try_acquire(
            &req.lock_dir,
            "calico",
            &record.container_id,
            &record.ifname,
        )?
        else {
            common::log::info(&format!(
                "gc: attachment {}/{} is busy: skipping it",
                record.container_id, record.ifname
            ));
            busy.push(Attachment {
                container_id: record.container_id.clone(),
                ifname: record.ifname.clone(),
            });
            continue;
        };
        let context = format!(
            "collect attachment {}/{}",
            record.container_id, record.ifname
        );
        failures.extend(
            tear_down(&store, req, record)
                .err()
                .map(|e| e.context(context)),
        );
    }
    failures.extend(remove_unrecorded_pairs(&store, req, &valid, &records).err());
    failures.extend(ipam_delegation::gc(&store, req, &busy).err());
    Error::combine(failures)
}

/// Pairs whose ADD was killed while its first transaction committed: host veths whose alias
/// names an attachment of this network on this node ([`attachment::veth_alias`]) that is not
/// listed and has no record (in `records`, and again under the attachment's lock, so that an
/// ADD that is running or has just finished keeps its pair).
fn remove_unrecorded_pairs(
    store: &Datastore,
    req: &Request,
    valid: &[Attachment],
    records: &[AttachmentRecord],
) -> Result<()> {
    let (node, network) = (&req.config.nodename, &req.config.name);
    let prefix = attachment::alias_prefix(network, node);
    let mut failures = Vec::new();
    for link in veth::host_veths_aliased(Netlink::host()?, &prefix)? {
        let Some((container_id, ifname)) = link
            .alias
            .as_deref()
            .and_then(|alias| attachment::aliased_attachment(alias, &prefix))
        else {
            continue;
        };
        let named = |id: &str, name: &str| id == container_id && name == ifname;
        if valid.iter().any(|a| named(&a.container_id, &a.ifname))
            || records.iter().any(|r| named(&r.container_id, &r.ifname))
        {
            continue;
        }
        let Some(_lock) =
            AttachmentLock::try_acquire(&req.lock_dir, "calico", container_id, ifname)?
        else {
            continue;
        };
        let record_key = keys::attachment(node, network, container_id, ifname);
        let removed = attachment::read_record(store, &record_key).and_then(|record| {
            if record.is_some() {
                return Ok(false);
            }
            common::log::info(&format!(
                "gc: removing host veth {}: an unfinished ADD of {container_id}/{ifname} made it",
                link.name
            ));
            veth::delete_link_at(Netlink::host()?, link.index, &link.name)
        });
        failures.extend(
            removed
                .err()
                .map(|e| e.context(format!("gc: host veth {}", link.name))),
        );
    }
    Error::combine(failures)
}

fn is_listed(valid: &[Attachment], record: &AttachmentRecord) -> bool {
    valid
        .iter()
        .any(|a| a.container_id == record.container_id && a.ifname == record.ifname)
}

/// Tears a recorded attachment down as its DEL would.
fn tear_down(store: &Datastore, req: &Request, record: &AttachmentRecord) -> Result<()> {
    let stored = endpoint::read_endpoint_at(store, &record.endpoint)?;
    let host_veth = HostVethState {
        name: Some(record.host_veth.clone()),
        claim: read_claim(store, &req.config.nodename, &record.host_veth)?,
        nft_table: record.nft_table.clone(),
    };
    let attachment_req = request_for(req, record);
    del::teardown(
        store,
        &attachment_req,
        stored,
        host_veth,
        HashMap::new(),
        None,
    )
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

/// Lock files that verbs killed before their end left behind go with GC.
fn sweep_lock_files(req: &Request) {
    match common::cni::lock::sweep_abandoned(&req.lock_dir) {
        Ok(0) => {}
        Ok(n) => common::log::info(&format!(
            "gc: removed {n} abandoned lock files from {}",
            req.lock_dir.display()
        )),
        Err(err) => common::log::warn(&format!("gc: {err}")),
    }
}
