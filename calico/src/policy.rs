//! `policy.type: "local"`: the endpoint's profiles enforced on this host with nftables, without
//! Felix.
//!
//! One `inet` table (`calico-local`, or `CALICO_NFT_TABLE`) holds:
//! - `forward`, a base chain on the forward hook: replies of allowed connections pass
//!   (`ct state established,related`); a packet to an endpoint jumps to that endpoint's inbound
//!   chain through the verdict map `to-endpoint` (keyed by the host veth it leaves by); a packet
//!   from an endpoint jumps to its outbound chain through `from-endpoint` (keyed by the host veth
//!   it arrives on). Inbound is evaluated first: allowed traffic returns rather than accepting,
//!   so the sender's outbound rules still apply.
//! - per endpoint, the chains `to-<veth>` (the inbound rules of its profiles, in profile order,
//!   then drop) and `from-<veth>` (a source address that is not the endpoint's is dropped, then
//!   the outbound rules, then drop), as Calico v1 evaluates profiles;
//! - per tag, the sets `tag4-<tag>` and `tag6-<tag>`: the addresses of this host's endpoints
//!   whose profiles carry the tag (the plugin's profile is tagged with the network's name);
//! - `owner4`/`owner6`: which host veth each member address belongs to, so that DEL and GC,
//!   which only know the veth (from the attachment record), find the addresses to remove.
//!
//! Each ADD, DEL, join and leave is one nftables transaction. An endpoint's change writes its
//! own chains and map entries and adds or removes its own addresses; other endpoints' rules are
//! never rewritten. Traffic from the host itself never reaches the forward hook, so health
//! checks pass, as Felix allows by default.

use std::collections::BTreeSet;
use std::net::IpAddr;

use common::cni::Request;
use common::config::{NetConf, PolicyType};
use common::dataplane::nft::{
    self, Batch, Element, ElementData, Expr, MapData, MetaKey, NFPROTO_IPV4, NFPROTO_IPV6, SetSpec,
    ValueType, Verdict,
};
use common::datastore::model::{Profile, ProfileRules, Rule, WorkloadEndpoint};
use common::datastore::records::AttachmentRecord;
use common::datastore::{Datastore, Entry, Read, keys};
use common::error::codes;
use common::rollback::{Guard, RollbackLog, Undo};
use common::{Code, Context, Error, Result};
use ipnetwork::IpNetwork;

use crate::attachment;
use crate::workload::WorkloadIds;

/// The table's name unless [`TABLE_ENV`] names another.
pub const DEFAULT_TABLE: &str = "calico-local";
/// Names the table instead of [`DEFAULT_TABLE`] (tests running side by side use their own).
pub const TABLE_ENV: &str = "CALICO_NFT_TABLE";

const FORWARD: &str = "forward";
const TO_ENDPOINT: &str = "to-endpoint";
const FROM_ENDPOINT: &str = "from-endpoint";
const OWNER4: &str = "owner4";
const OWNER6: &str = "owner6";
/// nftables names are at most 255 bytes; the longest prefix added to a tag is 5.
const MAX_TAG_LEN: usize = 200;
/// Rule fields enforced besides `action` and `src_tag`.
const SUPPORTED_FIELDS: [&str; 1] = ["dst_tag"];

/// Whether the network enforces its profiles on this host.
pub fn is_local(config: &NetConf) -> bool {
    config.policy.policy_type == PolicyType::Local
}

/// The table this attachment's ADD records and programs: `None` without local policy.
pub fn table(req: &Request) -> Result<Option<String>> {
    if !is_local(&req.config) {
        return Ok(None);
    }
    match std::env::var(TABLE_ENV) {
        Err(_) => Ok(Some(DEFAULT_TABLE.to_string())),
        Ok(name) if !name.is_empty() && name.len() <= 200 && !name.contains('\0') => Ok(Some(name)),
        Ok(name) => Err(Error::new(
            Code::InvalidEnvironment,
            format!("{TABLE_ENV} {name:?} is not an nftables table name"),
        )),
    }
}

/// What one endpoint looks like to the ruleset.
struct Target<'a> {
    table: &'a str,
    host_veth: &'a str,
    addresses: &'a [IpNetwork],
    profiles: &'a [Profile],
}

/// The enforcement a new endpoint got, under a guard that removes it again unless committed.
pub type PolicyGuard = Guard<Enforcement>;

/// The enforcement a new endpoint got: its nftables table and host veth, `None` without local
/// policy.
pub struct Enforcement(Option<(String, String)>);

impl Undo for Enforcement {
    fn action(&self) -> String {
        let host_veth = self
            .0
            .as_ref()
            .map_or("", |(_, host_veth)| host_veth.as_str());
        format!("remove local policy of {host_veth}")
    }

    fn undo(&mut self, _log: &RollbackLog) -> Result<Vec<String>> {
        if let Some((table, host_veth)) = &self.0 {
            remove_endpoint(table, host_veth)?;
        }
        Ok(Vec::new())
    }
}

/// What ADD's first etcd request reads for local policy: the tags and rules of the endpoint's
/// profile; nothing without local policy.
pub fn profile_reads(req: &Request) -> Vec<Read> {
    if !is_local(&req.config) {
        return Vec::new();
    }
    let name = WorkloadIds::for_request(req).profile(&req.config);
    profile_keys(&[name])
}

/// The endpoint an ADD sets up, as local policy needs it.
pub struct NewEndpoint<'a> {
    /// The host veth's name.
    pub host_veth: &'a str,
    /// The endpoint's addresses.
    pub addresses: &'a [IpNetwork],
    /// The profile this ADD is about to write, if it is the network's first.
    pub creating: Option<&'a Profile>,
    /// The host veth's name served another sandbox of the pod (or a stale link) before: what
    /// that one was given goes in the same transaction, so that its old addresses neither stay
    /// members nor keep a later owner of them from being added.
    pub reuses_host_veth: bool,
}

/// ADD, once the host veth exists and before the endpoint is written: enforces the network's
/// profile on the new endpoint, in one transaction. `read` holds the answers to
/// [`profile_reads`]; on the network's first ADD the profile is not stored yet and
/// `new.creating` stands in. Without local policy nothing is done.
pub fn enforce_new_endpoint(
    req: &Request,
    read: &[Vec<Entry>],
    new: &NewEndpoint<'_>,
    rollback: &RollbackLog,
) -> Result<PolicyGuard> {
    let Some(table) = table(req)? else {
        return Ok(Guard::new(Enforcement(None), rollback));
    };
    let started = std::time::Instant::now();
    let name = WorkloadIds::for_request(req).profile(&req.config);
    let profiles = parse_profiles(&[name], read, new.creating)?;
    let target = Target {
        table: &table,
        host_veth: new.host_veth,
        addresses: new.addresses,
        profiles: &profiles,
    };
    let mut batch = match new.reuses_host_veth {
        true => disown_batch(&table, new.host_veth)?.unwrap_or_default(),
        false => Batch::new(),
    };
    batch.append(endpoint_batch(&target, &[])?);
    let host_veth = new.host_veth;
    nft::apply(&batch).with_context(|| format!("enforce local policy on {host_veth}"))?;
    common::log::debug(&format!(
        "local policy on {host_veth}: {} nftables messages in table inet {table} in {} us",
        batch.len(),
        started.elapsed().as_micros()
    ));
    let applied = Enforcement(Some((table, host_veth.to_string())));
    Ok(Guard::new(applied, rollback))
}

/// A container joined this network on an interface another network made: its chains get this
/// network's rules too and its addresses join this network's tags. The interface's own
/// attachment record says whether and where it is enforced; a network with local policy does
/// not enforce on an interface that is not enforced, and says so.
pub fn enforce_joined(store: &Datastore, req: &Request, ep: &WorkloadEndpoint) -> Result<()> {
    if !is_local(&req.config) {
        return Ok(());
    }
    let Some(table) = owner_table(store, req, ep)? else {
        let owner = ep
            .profile_ids
            .first()
            .map(String::as_str)
            .unwrap_or_default();
        return Err(Error::new(
            codes::DATAPLANE,
            format!(
                "network {owner} made interface {} ({}) without local policy: network {}'s local policy cannot be enforced on it",
                req.ifname, ep.name, req.config.name
            ),
        ));
    };
    let profiles = read_profiles(store, &ep.profile_ids, None)?;
    let target = Target {
        table: &table,
        host_veth: &ep.name,
        addresses: &addresses_of(ep),
        profiles: &profiles,
    };
    nft::apply(&endpoint_batch(&target, &[])?)
        .with_context(|| format!("enforce local policy of {} on {}", req.config.name, ep.name))
}

/// The container left this network but keeps the interface another network made (`ep` is
/// its endpoint as it was): its chains lose this network's rules and its addresses leave
/// the tags no remaining profile carries.
pub fn enforce_left(store: &Datastore, req: &Request, ep: &WorkloadEndpoint) -> Result<()> {
    if !is_local(&req.config) {
        return Ok(());
    }
    // A join onto an interface without local policy was refused: nothing to take back.
    let Some(table) = owner_table(store, req, ep)? else {
        return Ok(());
    };
    let all = read_profiles(store, &ep.profile_ids, None)?;
    let (left, kept): (Vec<Profile>, Vec<Profile>) =
        all.into_iter().partition(|p| p.name == req.config.name);
    let kept_tags: BTreeSet<&String> = kept.iter().flat_map(|p| &p.tags).collect();
    let dropped: Vec<String> = left
        .iter()
        .flat_map(|p| &p.tags)
        .filter(|t| !kept_tags.contains(t))
        .cloned()
        .collect();
    let target = Target {
        table: &table,
        host_veth: &ep.name,
        addresses: &addresses_of(ep),
        profiles: &kept,
    };
    nft::apply(&endpoint_batch(&target, &dropped)?).with_context(|| {
        format!(
            "remove local policy of {} from {}",
            req.config.name, ep.name
        )
    })
}

/// DEL and GC: removes the chains, verdicts and member addresses of `host_veth` from the table
/// the attachment record names, in one transaction. No table means nothing to remove.
pub fn remove_endpoint(table: &str, host_veth: &str) -> Result<()> {
    let context = || format!("remove local policy of {host_veth} from table inet {table}");
    match removal_batch(table, host_veth).with_context(context)? {
        Some(batch) => nft::apply(&batch).with_context(context),
        None => Ok(()),
    }
}

/// What removes `host_veth`'s chains, verdicts and member addresses; `None` without the table.
fn removal_batch(table: &str, host_veth: &str) -> Result<Option<Batch>> {
    let Some(mut batch) = disown_batch(table, host_veth)? else {
        return Ok(None);
    };
    for (map, chain) in endpoint_chains(host_veth) {
        batch.add_chain(table, &chain);
        batch.remove_elements(table, map, &[jump_element(host_veth, &chain)]);
        batch.remove_chain(table, &chain);
    }
    Ok(Some(batch))
}

/// What takes every address `host_veth` owns out of the owner maps and the tag sets, after the
/// table's shared objects (so that the removals find them); `None` without the table. A new
/// sandbox that takes over the veth's name starts with this, then writes its own chains over
/// the old ones.
fn disown_batch(table: &str, host_veth: &str) -> Result<Option<Batch>> {
    let Some(sets) = nft::list_sets(table)? else {
        return Ok(None);
    };
    let owned4 = owned_addresses(table, OWNER4, host_veth)?;
    let owned6 = owned_addresses(table, OWNER6, host_veth)?;
    let mut batch = Batch::new();
    add_skeleton_objects(&mut batch, table);
    for (owner, owned, prefix) in [(OWNER4, &owned4, "tag4-"), (OWNER6, &owned6, "tag6-")] {
        let owner_elements: Vec<Element> = owned
            .iter()
            .map(|key| owner_element(key.clone(), host_veth))
            .collect();
        batch.remove_elements(table, owner, &owner_elements);
        let members: Vec<Element> = owned.iter().map(|key| member(key.clone())).collect();
        for set in sets.iter().filter(|s| s.starts_with(prefix)) {
            batch.remove_elements(table, set, &members);
        }
    }
    Ok(Some(batch))
}

/// DEL and GC's part: what the attachment record says is enforced (in `table`) goes, before
/// the addresses are released, so that a new endpoint given one of them cannot lose it.
/// `owned_host_veth` is `None` when the veth's name belongs to another sandbox now, whose
/// enforcement it is.
pub fn remove_enforcement(table: Option<&str>, owned_host_veth: Option<&str>) -> Result<()> {
    match (table, owned_host_veth) {
        (Some(table), Some(host_veth)) => remove_endpoint(table, host_veth),
        _ => Ok(()),
    }
}

/// CHECK: the rules, verdicts and memberships the endpoint should have in the table its record
/// names; one finding per mismatch.
pub fn check(
    store: &Datastore,
    record: Option<&AttachmentRecord>,
    endpoint: Option<&WorkloadEndpoint>,
) -> Result<Vec<String>> {
    let (Some(table), Some(ep)) = (record.and_then(|r| r.nft_table.as_deref()), endpoint) else {
        return Ok(Vec::new());
    };
    let profiles = read_profiles(store, &ep.profile_ids, None)?;
    let target = Target {
        table,
        host_veth: &ep.name,
        addresses: &addresses_of(ep),
        profiles: &profiles,
    };
    let mut found = check_chains(&target)?;
    found.extend(check_elements(&target)?);
    Ok(found)
}

fn check_chains(target: &Target<'_>) -> Result<Vec<String>> {
    let table = target.table;
    let (inbound, outbound) = endpoint_rules(target)?;
    let [(_, to), (_, from)] = endpoint_chains(target.host_veth);
    let mut found = Vec::new();
    for (chain, rules) in [
        (FORWARD.to_string(), skeleton_rules()),
        (to, inbound),
        (from, outbound),
    ] {
        let Some(have) = nft::list_rules(table, &chain)? else {
            found.push(format!(
                "nftables chain inet {table} {chain} does not exist"
            ));
            continue;
        };
        let want: Vec<&str> = rules
            .iter()
            .map(|(_, comment)| nft::stored_comment(comment))
            .collect();
        let listed: Vec<&str> = have.iter().map(|r| r.comment.as_str()).collect();
        if listed != want {
            found.push(format!(
                "nftables chain inet {table} {chain} has rules {listed:?} instead of {want:?}"
            ));
            continue;
        }
        for ((exprs, comment), rule) in rules.iter().zip(&have) {
            if !rule.matches(exprs) {
                found.push(format!(
                    "nftables chain inet {table} {chain}: rule \"{comment}\" was changed"
                ));
            }
        }
    }
    Ok(found)
}

fn check_elements(target: &Target<'_>) -> Result<Vec<String>> {
    let (table, veth) = (target.table, target.host_veth);
    let mut wanted: Vec<(String, Element, String)> = endpoint_chains(veth)
        .into_iter()
        .map(|(map, chain)| {
            let what = format!("{veth} -> jump {chain}");
            (map.to_string(), jump_element(veth, &chain), what)
        })
        .collect();
    for address in target.addresses {
        let (owner, prefix) = family_sets(address);
        let key = address_key(address);
        wanted.push((
            owner.into(),
            owner_element(key.clone(), veth),
            format!("{} -> {veth}", address.ip()),
        ));
        for tag in tags(target.profiles) {
            wanted.push((
                format!("{prefix}{tag}"),
                member(key.clone()),
                address.ip().to_string(),
            ));
        }
    }
    let mut found = Vec::new();
    let mut listed: Vec<(String, Option<Vec<Element>>)> = Vec::new();
    for (set, element, what) in wanted {
        if !listed.iter().any(|(name, _)| *name == set) {
            let elements = nft::list_elements(table, &set)?;
            listed.push((set.clone(), elements));
        }
        let elements = listed
            .iter()
            .find(|(name, _)| *name == set)
            .and_then(|(_, e)| e.as_ref());
        if !elements.is_some_and(|e| e.contains(&element)) {
            found.push(format!("nftables set inet {table} {set} lacks {what}"));
        }
    }
    Ok(found)
}

/// The reads of the tags and rules of each profile named.
fn profile_keys(names: &[String]) -> Vec<Read> {
    names
        .iter()
        .flat_map(|n| {
            [
                Read::Key(keys::profile_tags(n)),
                Read::Key(keys::profile_rules(n)),
            ]
        })
        .collect()
}

/// The profiles named, in order, from etcd; `creating` stands in for its own name when etcd
/// does not have it yet. A profile that exists nowhere cannot be enforced: refused.
fn read_profiles(
    store: &Datastore,
    names: &[String],
    creating: Option<&Profile>,
) -> Result<Vec<Profile>> {
    let answers = store
        .read(&profile_keys(names))
        .with_context(|| format!("read profiles {}", names.join(", ")))?;
    parse_profiles(names, &answers, creating)
}

/// The profiles named, from the answers to [`profile_keys`].
fn parse_profiles(
    names: &[String],
    answers: &[Vec<Entry>],
    creating: Option<&Profile>,
) -> Result<Vec<Profile>> {
    let mut profiles = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let tags = answers.get(2 * i).and_then(|a| a.first());
        let rules = answers.get(2 * i + 1).and_then(|a| a.first());
        let profile = match (tags, rules, creating.filter(|p| p.name == *name)) {
            (None, None, Some(creating)) => creating.clone(),
            (None, None, None) => {
                return Err(Error::new(
                    codes::DATAPLANE,
                    format!(
                        "profile {name} does not exist in etcd: local policy has no rules to enforce"
                    ),
                ));
            }
            (tags, rules, _) => stored_profile(
                name,
                tags.map(|e| &e.value[..]),
                rules.map(|e| &e.value[..]),
            )?,
        };
        profiles.push(profile);
    }
    Ok(profiles)
}

fn stored_profile(name: &str, tags: Option<&[u8]>, rules: Option<&[u8]>) -> Result<Profile> {
    let tags: Vec<String> = match tags {
        Some(bytes) => serde_json::from_slice::<Option<Vec<String>>>(bytes)
            .with_context(|| format!("decode {}", keys::profile_tags(name)))?
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let rules = match rules {
        Some(bytes) => serde_json::from_slice(bytes)
            .with_context(|| format!("decode {}", keys::profile_rules(name)))?,
        None => ProfileRules {
            inbound_rules: Vec::new(),
            outbound_rules: Vec::new(),
            other: serde_json::Map::new(),
        },
    };
    Ok(Profile {
        name: name.to_string(),
        tags,
        labels: Default::default(),
        rules,
    })
}

/// The table recorded by the attachment that made the joined interface (the network named
/// first on the endpoint); `None` when that network does not enforce local policy.
fn owner_table(store: &Datastore, req: &Request, ep: &WorkloadEndpoint) -> Result<Option<String>> {
    let owner = ep.profile_ids.first().cloned().unwrap_or_default();
    let key = keys::attachment(&req.config.nodename, &owner, &req.container_id, &req.ifname);
    let record = attachment::read_record(store, &key)?;
    Ok(record.and_then(|r| r.nft_table))
}

fn addresses_of(ep: &WorkloadEndpoint) -> Vec<IpNetwork> {
    ep.ipv4_nets.iter().chain(&ep.ipv6_nets).copied().collect()
}

/// The transaction that makes `target`'s enforcement what its profiles say: the shared objects
/// (created unless they exist), its chains (flushed and refilled), its verdicts and its
/// memberships; its addresses leave the `dropped` tags.
fn endpoint_batch(target: &Target<'_>, dropped: &[String]) -> Result<Batch> {
    let (table, veth) = (target.table, target.host_veth);
    let (inbound, outbound) = endpoint_rules(target)?;
    let mut batch = Batch::new();
    add_skeleton_objects(&mut batch, table);
    let all_tags: BTreeSet<String> = tags(target.profiles)
        .into_iter()
        .chain(referenced_tags(target.profiles))
        .chain(dropped.iter().cloned())
        .collect();
    for tag in &all_tags {
        for (prefix, key) in [
            ("tag4-", ValueType::Ipv4Addr),
            ("tag6-", ValueType::Ipv6Addr),
        ] {
            batch.add_set(
                table,
                &SetSpec {
                    name: format!("{prefix}{tag}"),
                    key,
                    data: None,
                },
            );
        }
    }
    if forward_rules_missing(table)? {
        // Made and flushed and written whole: first ADDs racing here leave the rules once. Only
        // then: a batch that deletes or updates anything (adding an existing chain updates it)
        // makes the kernel wait for an RCU grace period when the socket closes, which would
        // hold every ADD's exit back by milliseconds.
        batch.add_forward_chain(table, FORWARD);
        batch.flush_chain(table, FORWARD);
        for (exprs, comment) in skeleton_rules() {
            batch.add_rule(table, FORWARD, &exprs, &comment);
        }
    }
    let [(to_map, to), (from_map, from)] = endpoint_chains(veth);
    for (chain, rules) in [(&to, inbound), (&from, outbound)] {
        batch.add_chain(table, chain);
        batch.flush_chain(table, chain);
        for (exprs, comment) in rules {
            batch.add_rule(table, chain, &exprs, &comment);
        }
    }
    for address in target.addresses {
        let (owner, prefix) = family_sets(address);
        let key = address_key(address);
        batch.add_elements(table, owner, &[owner_element(key.clone(), veth)]);
        for tag in tags(target.profiles) {
            batch.add_elements(table, &format!("{prefix}{tag}"), &[member(key.clone())]);
        }
        for tag in dropped {
            batch.remove_elements(table, &format!("{prefix}{tag}"), &[member(key.clone())]);
        }
    }
    batch.add_elements(table, to_map, &[jump_element(veth, &to)]);
    batch.add_elements(table, from_map, &[jump_element(veth, &from)]);
    Ok(batch)
}

/// Whether the forward chain lacks its rules (the table's first endpoint, or someone changed
/// them): then the endpoint's batch writes them.
fn forward_rules_missing(table: &str) -> Result<bool> {
    let expected = skeleton_rules();
    Ok(match nft::list_rules(table, FORWARD)? {
        None => true,
        Some(rules) => {
            rules.len() != expected.len()
                || rules
                    .iter()
                    .zip(&expected)
                    .any(|(rule, (exprs, comment))| !rule.is(exprs, comment))
        }
    })
}

/// The table and the maps every endpoint uses (the forward chain: see [`endpoint_batch`]).
fn add_skeleton_objects(batch: &mut Batch, table: &str) {
    batch.add_table(table);
    for (name, key, data) in [
        (TO_ENDPOINT, ValueType::Ifname, MapData::Verdict),
        (FROM_ENDPOINT, ValueType::Ifname, MapData::Verdict),
        (
            OWNER4,
            ValueType::Ipv4Addr,
            MapData::Value(ValueType::Ifname),
        ),
        (
            OWNER6,
            ValueType::Ipv6Addr,
            MapData::Value(ValueType::Ifname),
        ),
    ] {
        let set = SetSpec {
            name: name.to_string(),
            key,
            data: Some(data),
        };
        batch.add_set(table, &set);
    }
}

type RuleSpec = (Vec<Expr>, String);

/// The forward chain's rules; a batch that finds them missing rewrites them whole, which keeps
/// concurrent first ADDs from adding them twice.
fn skeleton_rules() -> Vec<RuleSpec> {
    // NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED), in host order.
    let established_or_related = 0x6u32.to_ne_bytes().to_vec();
    vec![
        (
            vec![
                Expr::CtState,
                Expr::And(established_or_related),
                Expr::NotEqual(vec![0; 4]),
                Expr::Verdict(Verdict::Accept),
            ],
            "replies to allowed connections".to_string(),
        ),
        (
            vec![
                Expr::Meta(MetaKey::Oifname),
                Expr::VerdictMap(TO_ENDPOINT.into()),
            ],
            "to an endpoint: its inbound rules".to_string(),
        ),
        (
            vec![
                Expr::Meta(MetaKey::Iifname),
                Expr::VerdictMap(FROM_ENDPOINT.into()),
            ],
            "from an endpoint: its outbound rules".to_string(),
        ),
    ]
}

/// The inbound and outbound chains' rules of an endpoint.
fn endpoint_rules(target: &Target<'_>) -> Result<(Vec<RuleSpec>, Vec<RuleSpec>)> {
    let names: Vec<&str> = target.profiles.iter().map(|p| p.name.as_str()).collect();
    let mut inbound = Vec::new();
    let mut outbound = anti_spoofing_rules(target.addresses);
    for profile in target.profiles {
        for (direction, rules, out) in [
            ("inbound", &profile.rules.inbound_rules, &mut inbound),
            ("outbound", &profile.rules.outbound_rules, &mut outbound),
        ] {
            for (index, rule) in rules.iter().enumerate() {
                let at = format!("profile {} {direction} rule {index}", profile.name);
                out.extend(translate(rule, &at)?);
            }
        }
    }
    let end = format!("no rule of {} matched", names.join(","));
    inbound.push((vec![Expr::Verdict(Verdict::Drop)], end.clone()));
    outbound.push((vec![Expr::Verdict(Verdict::Drop)], end));
    Ok((inbound, outbound))
}

/// A packet from the endpoint must carry one of its addresses as source: tags match addresses,
/// so a forged source would otherwise borrow another endpoint's membership.
fn anti_spoofing_rules(addresses: &[IpNetwork]) -> Vec<RuleSpec> {
    [(NFPROTO_IPV4, "IPv4"), (NFPROTO_IPV6, "IPv6")]
        .into_iter()
        .map(|(family, name)| {
            let own: Vec<&IpNetwork> = addresses
                .iter()
                .filter(|a| a.is_ipv4() == (family == NFPROTO_IPV4))
                .collect();
            let mut exprs = vec![Expr::Meta(MetaKey::Nfproto), Expr::Equal(vec![family])];
            if !own.is_empty() {
                exprs.push(source_address(family));
                exprs.extend(own.iter().map(|a| Expr::NotEqual(address_key(a))));
            }
            exprs.push(Expr::Verdict(Verdict::Drop));
            (exprs, format!("{name} source is not the endpoint's"))
        })
        .collect()
}

/// One profile rule as nftables rules (two when it names a tag: one per address family).
/// Allowed traffic returns to the forward chain; denied traffic is dropped. A rule that needs
/// a field this enforcement does not implement is refused, never read as broader than it is.
fn translate(rule: &Rule, at: &str) -> Result<Vec<RuleSpec>> {
    let verdict = match rule.action.as_str() {
        "allow" => Verdict::Return,
        "deny" => Verdict::Drop,
        other => return Err(unsupported(at, &format!("action {other:?}"))),
    };
    let unsupported_fields: Vec<String> = rule
        .other
        .iter()
        .filter(|(field, value)| !value.is_null() && !SUPPORTED_FIELDS.contains(&field.as_str()))
        .map(|(field, _)| format!("{field:?}"))
        .collect();
    if !unsupported_fields.is_empty() {
        let what = format!("field {}", unsupported_fields.join(", field "));
        return Err(unsupported(at, &what));
    }
    let dst_tag = match rule.other.get("dst_tag") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(tag)) => Some(tag.as_str()),
        Some(other) => return Err(unsupported(at, &format!("dst_tag {other}"))),
    };
    let src_tag = rule.src_tag.as_deref();
    for tag in src_tag.iter().chain(dst_tag.iter()) {
        check_tag(tag).map_err(|e| e.context(at))?;
    }
    let action = if verdict == Verdict::Return {
        "allow"
    } else {
        "deny"
    };
    let mut description = format!("{at}: {action}");
    if let Some(tag) = src_tag {
        description.push_str(&format!(" from tag {tag}"));
    }
    if let Some(tag) = dst_tag {
        description.push_str(&format!(" to tag {tag}"));
    }
    if src_tag.is_none() && dst_tag.is_none() {
        return Ok(vec![(vec![Expr::Verdict(verdict)], description)]);
    }
    Ok([
        (NFPROTO_IPV4, "tag4-", "IPv4"),
        (NFPROTO_IPV6, "tag6-", "IPv6"),
    ]
    .into_iter()
    .map(|(family, prefix, name)| {
        let mut exprs = vec![Expr::Meta(MetaKey::Nfproto), Expr::Equal(vec![family])];
        if let Some(tag) = src_tag {
            exprs.push(source_address(family));
            exprs.push(Expr::InSet(format!("{prefix}{tag}")));
        }
        if let Some(tag) = dst_tag {
            exprs.push(destination_address(family));
            exprs.push(Expr::InSet(format!("{prefix}{tag}")));
        }
        exprs.push(Expr::Verdict(verdict.clone()));
        (exprs, format!("{description} ({name})"))
    })
    .collect())
}

fn unsupported(at: &str, what: &str) -> Error {
    Error::new(
        codes::DATAPLANE,
        format!(
            "{at}: {what} is not supported by local policy (policy.type \"local\" enforces allow and deny, from or to a tag); use Felix for this profile"
        ),
    )
}

fn check_tag(tag: &str) -> Result<()> {
    if tag.is_empty() || tag.len() > MAX_TAG_LEN || tag.contains('\0') {
        return Err(Error::new(
            codes::DATAPLANE,
            format!("tag {tag:?} cannot name an nftables set (1 to {MAX_TAG_LEN} bytes)"),
        ));
    }
    Ok(())
}

fn tags(profiles: &[Profile]) -> BTreeSet<String> {
    profiles
        .iter()
        .flat_map(|p| p.tags.iter().cloned())
        .collect()
}

/// Tags the rules match on: their sets must exist even while no endpoint carries them.
fn referenced_tags(profiles: &[Profile]) -> BTreeSet<String> {
    let rules = profiles
        .iter()
        .flat_map(|p| p.rules.inbound_rules.iter().chain(&p.rules.outbound_rules));
    rules
        .flat_map(|r| {
            let dst = r
                .other
                .get("dst_tag")
                .and_then(|v| v.as_str())
                .map(str::to_string);
            r.src_tag.clone().into_iter().chain(dst)
        })
        .collect()
}

fn source_address(family: u8) -> Expr {
    match family {
        NFPROTO_IPV4 => Expr::NetworkHeader { offset: 12, len: 4 },
        _ => Expr::NetworkHeader { offset: 8, len: 16 },
    }
}

fn destination_address(family: u8) -> Expr {
    match family {
        NFPROTO_IPV4 => Expr::NetworkHeader { offset: 16, len: 4 },
        _ => Expr::NetworkHeader {
            offset: 24,
            len: 16,
        },
    }
}

/// The endpoint's verdict maps and chains: inbound, then outbound.
fn endpoint_chains(host_veth: &str) -> [(&'static str, String); 2] {
    [
        (TO_ENDPOINT, format!("to-{host_veth}")),
        (FROM_ENDPOINT, format!("from-{host_veth}")),
    ]
}

fn jump_element(host_veth: &str, chain: &str) -> Element {
    Element {
        key: nft::ifname_key(host_veth),
        data: Some(ElementData::Verdict(Verdict::Jump(chain.to_string()))),
    }
}

fn owner_element(key: Vec<u8>, host_veth: &str) -> Element {
    Element {
        key,
        data: Some(ElementData::Value(nft::ifname_key(host_veth))),
    }
}

fn member(key: Vec<u8>) -> Element {
    Element { key, data: None }
}

fn family_sets(address: &IpNetwork) -> (&'static str, &'static str) {
    if address.is_ipv4() {
        (OWNER4, "tag4-")
    } else {
        (OWNER6, "tag6-")
    }
}

fn address_key(address: &IpNetwork) -> Vec<u8> {
    match address.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    }
}

/// The keys of `owner` that map to `host_veth`.
fn owned_addresses(table: &str, owner: &str, host_veth: &str) -> Result<Vec<Vec<u8>>> {
    let want = ElementData::Value(nft::ifname_key(host_veth));
    Ok(nft::list_elements(table, owner)?
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.data.as_ref() == Some(&want))
        .map(|e| e.key)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> Rule {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn allow_from_tag_matches_each_family_and_returns() {
        let rules = translate(&rule(r#"{"action":"allow","src_tag":"net1"}"#), "r").unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0].0,
            vec![
                Expr::Meta(MetaKey::Nfproto),
                Expr::Equal(vec![NFPROTO_IPV4]),
                Expr::NetworkHeader { offset: 12, len: 4 },
                Expr::InSet("tag4-net1".into()),
                Expr::Verdict(Verdict::Return),
            ]
        );
        assert_eq!(rules[1].0[3], Expr::InSet("tag6-net1".into()));
        assert_eq!(rules[1].0[2], Expr::NetworkHeader { offset: 8, len: 16 });
        assert_eq!(rules[0].1, "r: allow from tag net1 (IPv4)");
    }

    #[test]
    fn plain_allow_and_deny_are_one_rule() {
        for (json, verdict) in [
            (r#"{"action":"allow"}"#, Verdict::Return),
            (r#"{"action":"deny"}"#, Verdict::Drop),
        ] {
            let rules = translate(&rule(json), "r").unwrap();
            assert_eq!(
                rules,
                vec![(vec![Expr::Verdict(verdict)], rules[0].1.clone())]
            );
        }
    }

    #[test]
    fn dst_tag_matches_the_destination_address() {
        let rules = translate(&rule(r#"{"action":"deny","dst_tag":"db"}"#), "r").unwrap();
        assert_eq!(rules[0].0[2], Expr::NetworkHeader { offset: 16, len: 4 });
        assert_eq!(
            rules[1].0[2],
            Expr::NetworkHeader {
                offset: 24,
                len: 16
            }
        );
        assert_eq!(rules[0].0[4], Expr::Verdict(Verdict::Drop));
    }

    #[test]
    fn rules_needing_unimplemented_matches_are_refused() {
        for json in [
            r#"{"action":"allow","protocol":"tcp","dst_ports":[80]}"#,
            r#"{"action":"allow","src_net":"10.0.0.0/8"}"#,
            r#"{"action":"allow","src_selector":"a == 'b'"}"#,
            r#"{"action":"log"}"#,
            r#"{"action":"next-tier"}"#,
            r#"{"action":"allow","dst_tag":5}"#,
            r#"{"action":"allow","src_tag":""}"#,
        ] {
            let err = translate(&rule(json), "profile p inbound rule 0").unwrap_err();
            assert_eq!(err.code(), codes::DATAPLANE, "{json}");
            assert!(
                err.msg().contains("profile p inbound rule 0"),
                "{}",
                err.msg()
            );
        }
    }

    #[test]
    fn null_fields_are_absent_fields() {
        let rules = translate(&rule(r#"{"action":"allow","src_net":null}"#), "r").unwrap();
        assert_eq!(rules.len(), 1);
    }

    #[test]
    fn endpoint_chains_end_in_drop_and_check_the_source_address() {
        let profiles = [Profile::for_network("a")];
        let addresses: Vec<IpNetwork> = vec![
            "10.0.0.5/32".parse().unwrap(),
            "fd00::5/128".parse().unwrap(),
        ];
        let target = Target {
            table: "t",
            host_veth: "caliabc",
            addresses: &addresses,
            profiles: &profiles,
        };
        let (inbound, outbound) = endpoint_rules(&target).unwrap();
        // allow from tag a (two families), then drop.
        assert_eq!(inbound.len(), 3);
        assert_eq!(inbound[2].0, vec![Expr::Verdict(Verdict::Drop)]);
        // anti-spoofing (two families), allow, drop.
        assert_eq!(outbound.len(), 4);
        assert_eq!(
            outbound[0].0,
            vec![
                Expr::Meta(MetaKey::Nfproto),
                Expr::Equal(vec![NFPROTO_IPV4]),
                Expr::NetworkHeader { offset: 12, len: 4 },
                Expr::NotEqual(vec![10, 0, 0, 5]),
                Expr::Verdict(Verdict::Drop),
            ]
        );
        assert_eq!(outbound[2].0, vec![Expr::Verdict(Verdict::Return)]);
    }

    #[test]
    fn a_family_without_address_drops_all_its_traffic() {
        let rules = anti_spoofing_rules(&["10.0.0.5/32".parse().unwrap()]);
        assert_eq!(
            rules[1].0,
            vec![
                Expr::Meta(MetaKey::Nfproto),
                Expr::Equal(vec![NFPROTO_IPV6]),
                Expr::Verdict(Verdict::Drop),
            ]
        );
    }
}
