//! GC: tear down the attachments of the network on this node that the runtime no longer lists,
//! as DEL would, then run the IPAM plugin's GC.

use std::collections::HashMap;
use std::path::PathBuf;

use common::cni::lock::AttachmentLock;
use common::cni::{CniArgs, Request};
use common::config::Attachment;
use common::dataplane::{Netlink, veth};
use common::datastore::Datastore;
use common::datastore::endpoint::read_claim;
use common::datastore::records::AttachmentRecord;
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
    let recorded: Vec<Attachment> = records
        .iter()
        .map(|r| Attachment {
            container_id: r.container_id.clone(),
            ifname: r.ifname.clone(),
        })
        .collect();
    let mut busy = Vec::new();
    for record in records.into_iter().filter(|r| !is_listed(&valid, r)) {
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
                container_id: record.container_id,
                ifname: record.ifname,
            });
            continue;
        };
        let context = format!(
            "collect attachment {}/{}",
            record.container_id, record.ifname
        );
        failures.extend(
            tear_down(&store, req, &record)
                .err()
                .map(|e| e.context(context)),
        );
    }
    failures.extend(remove_unrecorded_pairs(&store, req, &valid, &recorded).err());
    failures.extend(ipam_delegation::gc(&store, req, &busy).err());
    Error::combine(failures)
}

/// Pairs whose ADD was killed while its first transaction committed: host veths whose alias
/// names an attachment of this network on this node ([`attachment::veth_alias`]) that has no
/// record and is not listed. Each goes under its attachment's lock, once its record is found still absent,
/// so an ADD that is running (or has just finished) keeps its pair.
fn remove_unrecorded_pairs(
    store: &Datastore,
    req: &Request,
    valid: &[Attachment],
    recorded: &[Attachment],
) -> Result<()> {
    let network = &req.config.name;
    let prefix = attachment::alias_prefix(network, &req.config.nodename);
    let mut failures = Vec::new();
    for link in veth::host_veths_aliased(Netlink::host()?, &prefix)? {
        let Some((container_id, ifname)) = link
            .alias
            .as_deref()
            .and_then(|alias| attachment::aliased_attachment(alias, &prefix))
        else {
            continue;
        };
        let named = |a: &Attachment| a.container_id == container_id && a.ifname == ifname;
        if valid.iter().any(named) || recorded.iter().any(named) {
            continue;
        }
        let Some(_lock) =
            AttachmentLock::try_acquire(&req.lock_dir, "calico", container_id, ifname)?
        else {
            continue;
        };
        let attachment_req = Request {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            netns: None,
            args: CniArgs::default(),
            ..req.clone()
        };
        let removed = match attachment::read_attachment(store, &attachment_req) {
            Ok(Some(_)) => Ok(false),
            Ok(None) => {
                common::log::info(&format!(
                    "gc: removing host veth {}: an unfinished ADD of {container_id}/{ifname} made it",
                    link.name
                ));
                veth::delete_host_link_at(Netlink::host()?, link.index, &link.name)
            }
            Err(err) => Err(err),
        };
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
    del::teardown(store, &attachment_req, stored, host_veth, HashMap::new())
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
