//! The attachment record and the claim on its host veth name: written together before anything
//! is allocated, deleted after everything else, so that DEL and GC find every piece of an
//! attachment even after a crash halfway through ADD, and no two containers ever use one name.

use common::cni::Request;
use common::dataplane::{Netlink, veth};
use common::datastore::records::{AttachmentRecord, HostVethClaim};
use common::datastore::retry::{Backoff, CasRetry};
use common::datastore::undo::{WrittenKey, WrittenKeys};
use common::datastore::{self, Condition, Datastore, Entry, Txn, Write, keys};
use common::error::codes;
use common::rollback::{Guard, RollbackLog, Undo};
use common::{Context, Error, Result};

use crate::endpoint;
use crate::pod::AddressSource;
use crate::policy;
use crate::workload::{WorkloadIds, hashed_host_veth_name};

/// How often a claim is retried after losing a race for it (five attempts in all). Only the
/// sandboxes of one pod share a claim: no backoff.
const CLAIM_RETRIES: u32 = 4;

/// The host veth name an ADD will use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVeth {
    /// The name.
    pub name: String,
    /// A link of that name exists and is stale: it is deleted right before the new pair is
    /// created, once the addresses are allocated, so a failing ADD does not take it down early
    /// (a pod's earlier sandbox may still be using it).
    pub replaces_stale_link: bool,
}

/// The MAC address of the container end of this request's attachment: derived from the
/// network, the container id and the interface name (SHA-1, made unicast and locally
/// administered). Known before the pair exists, so the endpoint naming it commits with the
/// record while the kernel creates the pair, and it marks the pair as this attachment's from
/// its creation: a pair whose ADD was killed before anything in etcd named it is recognised by
/// its DEL or retried ADD (the host veth under the attachment's usual name, whose other end is
/// `CNI_IFNAME` in `CNI_NETNS` with exactly this MAC) and removed.
pub fn container_mac(req: &Request) -> [u8; 6] {
    let identity = format!("{}:{}:{}", req.config.name, req.container_id, req.ifname);
    let digest = sha1_smol::Sha1::from(identity).digest().bytes();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&digest[..6]);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// The longest alias the kernel keeps (`IFALIASZ` less its terminating NUL).
const MAX_ALIAS_LEN: usize = 255;

/// The alias that names the attachment owning a host veth, for GC:
/// `calico:<network>:<node>:<container id>:<ifname>` (`:` appears in none of them). `None` when
/// it would not fit an alias.
pub fn veth_alias(req: &Request) -> Option<String> {
    let alias = format!(
        "{}{}:{}",
        alias_prefix(&req.config.name, &req.config.nodename),
        req.container_id,
        req.ifname
    );
    (alias.len() <= MAX_ALIAS_LEN).then_some(alias)
}

/// The beginning of the aliases of the host veths of `network` on `node`.
pub fn alias_prefix(network: &str, node: &str) -> String {
    format!("calico:{network}:{node}:")
}

/// The container id and interface name an alias starting with `prefix` ([`alias_prefix`])
/// names.
pub fn aliased_attachment<'a>(alias: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    alias.strip_prefix(prefix)?.split_once(':')
}

/// The key of this request's attachment record.
pub fn attachment_key(req: &Request) -> String {
    keys::attachment(
        &req.config.nodename,
        &req.config.name,
        &req.container_id,
        &req.ifname,
    )
}

/// A written record and claim, under a guard that deletes both again unless committed.
pub type AttachmentGuard<'a> = Guard<RecordedAttachment<'a>>;

/// A written record and claim. Undoing another step failed, the record stays, so that a later
/// DEL or GC finds what is left.
pub struct RecordedAttachment<'a> {
    written: WrittenKeys<'a>,
    host_veth: HostVeth,
}

impl RecordedAttachment<'_> {
    /// The host veth name claimed.
    pub fn host_veth(&self) -> &HostVeth {
        &self.host_veth
    }
}

impl Undo for RecordedAttachment<'_> {
    fn action(&self) -> String {
        self.written.action()
    }

    fn undo(&mut self, log: &RollbackLog) -> Result<Vec<String>> {
        if log.failed() {
            common::log::warn(&format!(
                "rollback incomplete: keeping attachment record {} for DEL or GC",
                self.written.first_key()
            ));
            return Ok(Vec::new());
        }
        // A pod's next sandbox may have taken the claim over meanwhile: it keeps it.
        self.written.undo(log)
    }
}

/// Claims a host veth name and records the attachment under it, in one transaction each try.
/// The usual name (`interface_prefix` + 11 characters of the container id, or of the pod's hash) is taken
/// unless another workload holds it; then, outside Kubernetes, the name hashed from the full
/// container id.
pub fn record_attachment<'a>(
    store: &'a Datastore,
    req: &Request,
    ids: &WorkloadIds,
    addresses: &AddressSource,
    rollback: &RollbackLog,
) -> Result<AttachmentGuard<'a>> {
    let usual = ids.host_veth_name(&req.container_id);
    let mut candidates = vec![usual.clone()];
    if !ids.is_kubernetes() {
        candidates.push(hashed_host_veth_name(&ids.veth_prefix, &req.container_id));
    }
    for name in candidates {
        let record = attachment_record(req, ids, addresses, &name)?;
        if let Some((host_veth, written)) = claim_host_veth(store, req, ids, &record)? {
            let recorded = RecordedAttachment {
                written: WrittenKeys::new(store, written),
                host_veth,
            };
            return Ok(Guard::new(recorded, rollback));
        }
    }
    Err(Error::new(
        codes::DATAPLANE,
        format!("host link {usual} belongs to another workload"),
    ))
}

/// The claim on the usual host veth name and the record, as writes still to commit: added to
/// the first IPAM transaction, so that record, claim and addresses land together.
pub struct PendingClaim {
    /// The claim's condition, the two puts, and the claim read back on failure.
    pub txn: Txn,
    written: Vec<WrittenKey>,
    host_veth: HostVeth,
}

impl PendingClaim {
    /// The host veth it claims, and whether a stale link of that name is in the way.
    pub fn host_veth(&self) -> &HostVeth {
        &self.host_veth
    }

    /// The host veth name it claims.
    pub fn host_veth_name(&self) -> &str {
        &self.host_veth.name
    }

    /// The guard of the record and claim, once the transaction carrying them committed at
    /// `revision`.
    pub fn committed<'a>(
        self,
        store: &'a Datastore,
        revision: i64,
        rollback: &RollbackLog,
    ) -> AttachmentGuard<'a> {
        let mut written = self.written;
        for key in &mut written {
            key.revision = revision;
        }
        let recorded = RecordedAttachment {
            written: WrittenKeys::new(store, written),
            host_veth: self.host_veth,
        };
        Guard::new(recorded, rollback)
    }
}

/// The record and the claim on the usual host veth name as writes to commit with the
/// addresses, given the claim as the first read found it (`claim`). `None` when the usual name
/// needs [`record_attachment`]'s own steps: another workload holds it, or a link of that name
/// exists that nobody claimed (it may belong to a container set up before claims existed).
pub fn pending_claim(
    req: &Request,
    ids: &WorkloadIds,
    addresses: &AddressSource,
    claim: Option<&Entry>,
) -> Result<Option<PendingClaim>> {
    let name = ids.host_veth_name(&req.container_id);
    let record = attachment_record(req, ids, addresses, &name)?;
    let claim_key = keys::host_veth_claim(&ids.node, &name);
    let condition = match claim {
        None => Condition::Absent(claim_key.clone()),
        Some(entry) => {
            let holder: HostVethClaim = serde_json::from_slice(&entry.value)
                .with_context(|| format!("decode claim {claim_key}"))?;
            if holder.endpoint != record.endpoint {
                return Ok(None);
            }
            Condition::Revision(claim_key.clone(), entry.mod_revision)
        }
    };
    let exists = veth::host_link_exists(Netlink::host()?, &name)?;
    if exists && claim.is_none() {
        return Ok(None);
    }
    let claim_value = serde_json::to_vec(&HostVethClaim {
        endpoint: record.endpoint.clone(),
        container_id: req.container_id.clone(),
    })?;
    let record_value = serde_json::to_vec(&record)?;
    Ok(Some(PendingClaim {
        txn: Txn {
            conditions: vec![condition],
            writes: vec![
                Write::Put(claim_key.clone(), claim_value.clone()),
                Write::Put(attachment_key(req), record_value.clone()),
            ],
            reads_on_failure: vec![claim_key.clone()],
        },
        // The revision is the transaction's, known once it committed.
        written: written_keys(req, claim_key, claim.map(|e| e.value.clone()), 0),
        host_veth: HostVeth {
            name,
            replaces_stale_link: exists,
        },
    }))
}

/// The record and the claim (which held `claim_before`) as this run wrote them at `revision`,
/// for the undo. Under the attachment's lock nobody else writes its record: it was absent.
fn written_keys(
    req: &Request,
    claim_key: String,
    claim_before: Option<Vec<u8>>,
    revision: i64,
) -> Vec<WrittenKey> {
    vec![
        WrittenKey {
            key: attachment_key(req),
            revision,
            previous: None,
        },
        WrittenKey {
            key: claim_key,
            revision,
            previous: claim_before,
        },
    ]
}

fn attachment_record(
    req: &Request,
    ids: &WorkloadIds,
    addresses: &AddressSource,
    host_veth: &str,
) -> Result<AttachmentRecord> {
    Ok(AttachmentRecord {
        container_id: req.container_id.clone(),
        ifname: req.ifname.clone(),
        netns: req
            .netns
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        host_veth: host_veth.to_string(),
        endpoint: endpoint::endpoint_key(ids),
        without_ipam: matches!(addresses, AddressSource::NoIpam(_)),
        nft_table: policy::table(req)?,
    })
}

/// Claims `record.host_veth` and writes the record, or `None` when another workload owns the
/// name. A pod's sandboxes share their name, so a new sandbox takes over its pod's claim.
/// Returns the name and what was written, for the undo.
fn claim_host_veth(
    store: &Datastore,
    req: &Request,
    ids: &WorkloadIds,
    record: &AttachmentRecord,
) -> Result<Option<(HostVeth, Vec<WrittenKey>)>> {
    let name = &record.host_veth;
    let claim_key = keys::host_veth_claim(&ids.node, name);
    let claim = HostVethClaim {
        endpoint: record.endpoint.clone(),
        container_id: req.container_id.clone(),
    };
    let (claim_value, record_value) = (serde_json::to_vec(&claim)?, serde_json::to_vec(record)?);
    let writes = vec![
        Write::Put(claim_key.clone(), claim_value.clone()),
        Write::Put(attachment_key(req), record_value.clone()),
    ];
    let mut condition = Condition::Absent(claim_key.clone());
    let mut claim_before = None;
    let retry = CasRetry::new(CLAIM_RETRIES, Backoff::Immediate);
    loop {
        let txn = Txn {
            conditions: vec![condition.clone()],
            writes: writes.clone(),
            reads_on_failure: vec![claim_key.clone()],
        };
        let outcome = store
            .txn(&txn)
            .with_context(|| format!("claim host veth name {name}"))?;
        if outcome.committed {
            let written = written_keys(req, claim_key.clone(), claim_before, outcome.revision);
            let host_veth = host_veth_after_claim(
                store,
                ids,
                &claim_key,
                name,
                matches!(condition, Condition::Absent(_)),
            )?;
            return Ok(host_veth.map(|h| (h, written)));
        }
        claim_before = outcome.current.first().map(|e| e.value.clone());
        condition = match outcome.current.first() {
            None => Condition::Absent(claim_key.clone()),
            Some(entry) => {
                let holder: HostVethClaim = serde_json::from_slice(&entry.value)
                    .with_context(|| format!("decode claim {claim_key}"))?;
                if holder.endpoint != record.endpoint {
                    common::log::info(&format!(
                        "host veth name {name} belongs to {}",
                        holder.endpoint
                    ));
                    return Ok(None);
                }
                Condition::Revision(claim_key.clone(), entry.mod_revision)
            }
        };
        datastore::log_conflict(&txn, &outcome.current);
        retry.conflicted(true, || format!("claim {claim_key} kept changing"))?;
    }
}

/// The claimed name, and whether a link of that name is stale. A link under a name nobody had
/// claimed may belong to a container set up before claims existed: it is stale only when no
/// other endpoint records it; otherwise the claim is given back.
fn host_veth_after_claim(
    store: &Datastore,
    ids: &WorkloadIds,
    claim_key: &str,
    name: &str,
    was_unclaimed: bool,
) -> Result<Option<HostVeth>> {
    let exists = veth::host_link_exists(Netlink::host()?, name)?;
    if exists && was_unclaimed {
        let own = endpoint::endpoint_key(ids);
        if let Some(owner) =
            endpoint::endpoint_using_link(store, &ids.node, name)?.filter(|o| *o != own)
        {
            common::log::info(&format!("host link {name} belongs to endpoint {owner}"));
            store
                .delete(claim_key)
                .with_context(|| format!("give back claim {claim_key}"))?;
            return Ok(None);
        }
    }
    Ok(Some(HostVeth {
        name: name.to_string(),
        replaces_stale_link: exists,
    }))
}

/// This request's record, if any.
pub fn read_attachment(store: &Datastore, req: &Request) -> Result<Option<AttachmentRecord>> {
    read_record(store, &attachment_key(req))
}

/// The attachment record at `key`, if any.
pub fn read_record(store: &Datastore, key: &str) -> Result<Option<AttachmentRecord>> {
    let entry = store
        .get(key)
        .with_context(|| format!("read attachment record {key}"))?;
    entry.as_ref().map(decode_record).transpose()
}

/// The record stored in `entry`.
pub fn decode_record(entry: &Entry) -> Result<AttachmentRecord> {
    serde_json::from_slice(&entry.value)
        .with_context(|| format!("decode attachment record {}", entry.key))
}

/// Every record of this network on this node. A record that cannot be read is reported and
/// skipped, so that one broken record does not stop a GC.
pub fn list_attachments(
    store: &Datastore,
    req: &Request,
) -> Result<(Vec<AttachmentRecord>, Vec<Error>)> {
    let prefix = keys::attachments_prefix(&req.config.nodename, &req.config.name);
    let entries = store
        .list(&prefix)
        .with_context(|| format!("list attachment records under {prefix}"))?;
    let mut records = Vec::new();
    let mut broken = Vec::new();
    for entry in entries {
        match decode_record(&entry) {
            Ok(record) => records.push(record),
            Err(e) => broken.push(e),
        }
    }
    Ok((records, broken))
}
