//! nftables over netlink (`NETLINK_NETFILTER`, subsystem `NFNL_SUBSYS_NFTABLES`): the few
//! messages the local policy needs, encoded here rather than through libnftnl or a GPL crate.
//!
//! Changes are collected in a [`Batch`] and applied with [`apply`] as one nftables transaction:
//! the kernel applies every message or none. Every object lives in one `inet` table. "Add"
//! messages carry `NLM_F_CREATE` without `NLM_F_EXCL`, so adding what exists already succeeds
//! and concurrent batches creating the same table, chains and sets all succeed. A delete of
//! something absent would fail the whole batch, so deletes are written as "add, then delete"
//! ([`Batch::remove_elements`], [`Batch::remove_chain`]), as nft users do.
//!
//! Every expression works on register 1 (16 bytes, enough for an IPv6 address or an interface
//! name) or on the verdict register.

use std::io::ErrorKind;
use std::sync::Mutex;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use crate::error::codes::DATAPLANE;
use crate::{Context, Error, Kind, Result};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFPROTO_INET: u8 = 1;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

const NFT_SET_MAP: u32 = 0x8;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NF_INET_FORWARD: u32 = 2;
const NF_ACCEPT: u32 = 1;

/// Type ids nft uses to print keys and data (its `datatypes.h`); the kernel only stores them.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_IFNAME: u32 = 41;

/// `IFNAMSIZ`: `meta iifname` loads the name zero-padded to this length.
pub const IFNAME_LEN: usize = 16;

/// What a set's keys or a map's values are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// An IPv4 address (4 bytes, network order).
    Ipv4Addr,
    /// An IPv6 address (16 bytes).
    Ipv6Addr,
    /// An interface name, zero-padded to [`IFNAME_LEN`].
    Ifname,
}

impl ValueType {
    fn type_id(self) -> u32 {
        match self {
            ValueType::Ipv4Addr => TYPE_IPADDR,
            ValueType::Ipv6Addr => TYPE_IP6ADDR,
            ValueType::Ifname => TYPE_IFNAME,
        }
    }

    /// How nft reads the bytes back when printing: names in host order (as strings), addresses
    /// in network order (its `BYTEORDER_HOST_ENDIAN` 1, `BYTEORDER_BIG_ENDIAN` 2).
    fn byteorder(self) -> u32 {
        match self {
            ValueType::Ifname => 1,
            ValueType::Ipv4Addr | ValueType::Ipv6Addr => 2,
        }
    }

    fn len(self) -> u32 {
        match self {
            ValueType::Ipv4Addr => 4,
            ValueType::Ipv6Addr => 16,
            ValueType::Ifname => IFNAME_LEN as u32,
        }
    }
}

/// A named set, or a map when `data` is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    /// The set's name in the table.
    pub name: String,
    /// The keys' type.
    pub key: ValueType,
    /// The values' type, for a map.
    pub data: Option<MapData>,
}

/// What a map's elements map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapData {
    /// A verdict (a verdict map, `vmap`).
    Verdict,
    /// A value of that type.
    Value(ValueType),
}

/// A verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accept the packet (in this chain's hook).
    Accept,
    /// Drop the packet.
    Drop,
    /// Go back to the calling chain.
    Return,
    /// Evaluate the named chain, then come back.
    Jump(String),
}

impl Verdict {
    fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Jump(_) => -3,
            Verdict::Return => -5,
        }
    }
}

/// One element of a set (`data: None`) or a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// The key's bytes.
    pub key: Vec<u8>,
    /// The value, for a map.
    pub data: Option<ElementData>,
}

/// The value of a map element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElementData {
    /// A verdict map's verdict.
    Verdict(Verdict),
    /// A value's bytes.
    Value(Vec<u8>),
}

/// Packet metadata [`Expr::Meta`] loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// The layer 3 protocol family (`meta nfproto`, 1 byte: 2 IPv4, 10 IPv6).
    Nfproto,
    /// The input interface's name (`iifname`).
    Iifname,
    /// The output interface's name (`oifname`).
    Oifname,
}

impl MetaKey {
    fn key(self) -> u32 {
        match self {
            MetaKey::Iifname => 6,
            MetaKey::Oifname => 7,
            MetaKey::Nfproto => 15,
        }
    }
}

/// `meta nfproto` of IPv4.
pub const NFPROTO_IPV4: u8 = 2;
/// `meta nfproto` of IPv6.
pub const NFPROTO_IPV6: u8 = 10;

/// One expression of a rule. Loads go to register 1; comparisons and lookups read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Loads packet metadata.
    Meta(MetaKey),
    /// Loads `len` bytes at `offset` of the network header.
    NetworkHeader {
        /// Offset in bytes.
        offset: u32,
        /// Length in bytes.
        len: u32,
    },
    /// Loads the conntrack state bits (4 bytes, host order).
    CtState,
    /// Register 1 = (register 1 & `mask`) ^ 0, over `mask.len()` bytes.
    And(Vec<u8>),
    /// Continues only when register 1 equals the bytes.
    Equal(Vec<u8>),
    /// Continues only when register 1 differs from the bytes.
    NotEqual(Vec<u8>),
    /// Continues only when register 1 is a key of the named set.
    InSet(String),
    /// Looks register 1 up in the named verdict map and applies the verdict found (none:
    /// continue).
    VerdictMap(String),
    /// Applies a verdict.
    Verdict(Verdict),
}

/// Builds nftables messages for one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    messages: Vec<Vec<u8>>,
    what: Vec<String>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// How many messages the batch holds.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether the batch holds no message.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Adds the `inet` table `table` unless it exists.
    pub fn add_table(&mut self, table: &str) {
        let mut m = Message::new(NFT_MSG_NEWTABLE, NLM_F_CREATE);
        m.put_str(NFTA_TABLE_NAME, table);
        self.push(m, format!("add table inet {table}"));
    }

    /// Adds a filter chain on the forward hook at priority 0 with policy accept, unless it
    /// exists.
    pub fn add_forward_chain(&mut self, table: &str, chain: &str) {
        let mut m = Message::new(NFT_MSG_NEWCHAIN, NLM_F_CREATE);
        m.put_str(NFTA_CHAIN_TABLE, table);
        m.put_str(NFTA_CHAIN_NAME, chain);
        let hook = m.begin_nested(NFTA_CHAIN_HOOK);
        m.put_u32(NFTA_HOOK_HOOKNUM, NF_INET_FORWARD);
        m.put_u32(NFTA_HOOK_PRIORITY, 0);
        m.end_nested(hook);
        m.put_u32(NFTA_CHAIN_POLICY, NF_ACCEPT);
        m.put_str(NFTA_CHAIN_TYPE, "filter");
        self.push(m, format!("add chain inet {table} {chain}"));
    }

    /// Adds a regular chain unless it exists.
    pub fn add_chain(&mut self, table: &str, chain: &str) {
        let mut m = Message::new(NFT_MSG_NEWCHAIN, NLM_F_CREATE);
        m.put_str(NFTA_CHAIN_TABLE, table);
        m.put_str(NFTA_CHAIN_NAME, chain);
        self.push(m, format!("add chain inet {table} {chain}"));
    }

    /// Deletes every rule of a chain, which must exist.
    pub fn flush_chain(&mut self, table: &str, chain: &str) {
        let mut m = Message::new(NFT_MSG_DELRULE, 0);
        m.put_str(NFTA_RULE_TABLE, table);
        m.put_str(NFTA_RULE_CHAIN, chain);
        self.push(m, format!("flush chain inet {table} {chain}"));
    }

    /// Removes a regular chain whether or not it exists: adds it, flushes it, deletes it. No
    /// rule or map element may jump to it any more.
    pub fn remove_chain(&mut self, table: &str, chain: &str) {
        self.add_chain(table, chain);
        self.flush_chain(table, chain);
        let mut m = Message::new(NFT_MSG_DELCHAIN, 0);
        m.put_str(NFTA_CHAIN_TABLE, table);
        m.put_str(NFTA_CHAIN_NAME, chain);
        self.push(m, format!("delete chain inet {table} {chain}"));
    }

    /// Appends a rule with `comment` (shown by `nft list ruleset`; at most 127 bytes).
    pub fn add_rule(&mut self, table: &str, chain: &str, exprs: &[Expr], comment: &str) {
        let mut m = Message::new(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
        m.put_str(NFTA_RULE_TABLE, table);
        m.put_str(NFTA_RULE_CHAIN, chain);
        let list = m.begin_nested(NFTA_RULE_EXPRESSIONS);
        for expr in exprs {
            put_expr(&mut m, expr);
        }
        m.end_nested(list);
        m.put_bytes(NFTA_RULE_USERDATA, &comment_userdata(comment));
        self.push(m, format!("add rule inet {table} {chain} ({comment})"));
    }

    /// Adds a set or map unless it exists.
    pub fn add_set(&mut self, table: &str, set: &SetSpec) {
        let mut m = Message::new(NFT_MSG_NEWSET, NLM_F_CREATE);
        m.put_str(NFTA_SET_TABLE, table);
        m.put_str(NFTA_SET_NAME, &set.name);
        m.put_u32(
            NFTA_SET_FLAGS,
            if set.data.is_some() { NFT_SET_MAP } else { 0 },
        );
        m.put_u32(NFTA_SET_KEY_TYPE, set.key.type_id());
        m.put_u32(NFTA_SET_KEY_LEN, set.key.len());
        match set.data {
            None => {}
            Some(MapData::Verdict) => m.put_u32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT),
            Some(MapData::Value(value)) => {
                m.put_u32(NFTA_SET_DATA_TYPE, value.type_id());
                m.put_u32(NFTA_SET_DATA_LEN, value.len());
            }
        }
        // The kernel requires an id naming the set within the transaction.
        m.put_u32(NFTA_SET_ID, self.messages.len() as u32 + 1);
        // nft's user data (type 0: key byte order, 1: data byte order); without it nft prints
        // an interface name backwards, that is as "".
        let mut userdata = vec![0, 4];
        userdata.extend(set.key.byteorder().to_ne_bytes());
        if let Some(MapData::Value(value)) = set.data {
            userdata.extend([1, 4]);
            userdata.extend(value.byteorder().to_ne_bytes());
        }
        m.put_bytes(NFTA_SET_USERDATA, &userdata);
        self.push(m, format!("add set inet {table} {}", set.name));
    }

    /// Adds elements to a set or map; an element present with the same value is fine.
    pub fn add_elements(&mut self, table: &str, set: &str, elements: &[Element]) {
        if elements.is_empty() {
            return;
        }
        let m = element_message(NFT_MSG_NEWSETELEM, NLM_F_CREATE, table, set, elements);
        self.push(m, format!("add element inet {table} {set}"));
    }

    /// Removes elements whether or not they are present: adds them, then deletes them. A map
    /// element must be given with the value it has, if present.
    pub fn remove_elements(&mut self, table: &str, set: &str, elements: &[Element]) {
        if elements.is_empty() {
            return;
        }
        self.add_elements(table, set, elements);
        let m = element_message(NFT_MSG_DELSETELEM, 0, table, set, elements);
        self.push(m, format!("delete element inet {table} {set}"));
    }

    /// Appends `other`'s messages, to be applied in the same transaction.
    pub fn append(&mut self, other: Batch) {
        self.messages.extend(other.messages);
        self.what.extend(other.what);
    }

    fn push(&mut self, message: Message, what: String) {
        self.messages.push(message.buf);
        self.what.push(what);
    }

    /// The bytes sent: batch begin, the messages (sequence numbers 1…n, each asking for an
    /// acknowledgement), batch end.
    fn encode(&self) -> Vec<u8> {
        let mut out = batch_delimiter(NFNL_MSG_BATCH_BEGIN, 0);
        for (i, message) in self.messages.iter().enumerate() {
            let mut message = message.clone();
            message[8..12].copy_from_slice(&(i as u32 + 1).to_ne_bytes());
            out.extend_from_slice(&message);
        }
        out.extend(batch_delimiter(
            NFNL_MSG_BATCH_END,
            self.messages.len() as u32 + 1,
        ));
        out
    }
}

/// Applies `batch` as one transaction in the process's network namespace: all of it or, on the
/// first error, none of it. The error names the failing message.
pub fn apply(batch: &Batch) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    with_socket(|socket| {
        socket
            .send(&batch.encode(), 0)
            .context("send nftables batch")
            .code(DATAPLANE)?;
        // The kernel handles a batch inside sendmsg: every answer is queued once it returns.
        let mut acked = 0;
        let mut failures = Vec::new();
        for (seq, errno) in queued_answers(socket)? {
            if errno == 0 {
                acked += 1;
                continue;
            }
            let what = batch
                .what
                .get((seq as usize).wrapping_sub(1))
                .map(String::as_str)
                .unwrap_or("nftables batch");
            failures.push(format!("{what}: {}", errno_text(errno)));
        }
        if let Some(first) = failures.first() {
            let mut err = Error::new(DATAPLANE, first.clone());
            if failures.len() > 1 {
                err = err.with_details(failures.join("; "));
            }
            return Err(err);
        }
        if acked != batch.len() {
            return Err(Error::new(
                DATAPLANE,
                format!("nftables acknowledged {acked} of {} messages", batch.len()),
            ));
        }
        Ok(())
    })
}

/// The (sequence number, errno) of every `NLMSG_ERROR` answer queued on `socket`; errno 0 is
/// an acknowledgement.
fn queued_answers(socket: &Socket) -> Result<Vec<(u32, i32)>> {
    let mut answers = Vec::new();
    let mut buf = Vec::with_capacity(1 << 16);
    loop {
        buf.clear();
        match socket.recv(&mut buf, nix::libc::MSG_DONTWAIT) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(answers),
            Err(e) => {
                return Err(Error::from(e)
                    .context("read nftables answers")
                    .with_code(DATAPLANE));
            }
        }
        answers.extend(
            messages(&buf)
                .into_iter()
                .filter(|(header, _)| header.kind == NLMSG_ERROR)
                .map(|(header, payload)| (header.seq, error_code(payload))),
        );
    }
}

/// The names of the sets and maps of the `inet` table `table`; `None` when there is no such
/// table.
pub fn list_sets(table: &str) -> Result<Option<Vec<String>>> {
    let mut m = Message::new(NFT_MSG_GETSET, NLM_F_DUMP);
    m.put_str(NFTA_SET_TABLE, table);
    let Some(answers) = dump(m, &format!("sets of table inet {table}"))? else {
        return Ok(None);
    };
    Ok(Some(
        answers
            .iter()
            .filter_map(|a| attr(a, NFTA_SET_NAME).map(attr_str))
            .collect(),
    ))
}

/// The elements of a set or map; `None` when there is no such table or set.
pub fn list_elements(table: &str, set: &str) -> Result<Option<Vec<Element>>> {
    let mut m = Message::new(NFT_MSG_GETSETELEM, NLM_F_DUMP);
    m.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
    m.put_str(NFTA_SET_ELEM_LIST_SET, set);
    let Some(answers) = dump(m, &format!("elements of set inet {table} {set}"))? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for answer in &answers {
        let Some(list) = attr(answer, NFTA_SET_ELEM_LIST_ELEMENTS) else {
            continue;
        };
        for (_, element) in attrs(list) {
            let key = attr(element, NFTA_SET_ELEM_KEY).and_then(|k| attr(k, NFTA_DATA_VALUE));
            let Some(key) = key else { continue };
            let data = attr(element, NFTA_SET_ELEM_DATA).and_then(parse_data);
            out.push(Element {
                key: key.to_vec(),
                data,
            });
        }
    }
    Ok(Some(out))
}

/// A rule as the kernel lists it: its comment and its expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleState {
    /// The comment (`""` without one).
    pub comment: String,
    expressions: Vec<ExprAttrs>,
}

/// One expression's name and its attributes flattened to (path, value): data attributes are
/// opened, so that nesting flags, which the kernel does not always set, do not matter.
type ExprAttrs = (String, Vec<(String, Vec<u8>)>);

impl RuleState {
    /// Whether the rule does what `exprs` say: the same expressions, in order, each with every
    /// attribute this module sends for it (the kernel may list more, such as zero flags).
    pub fn matches(&self, exprs: &[Expr]) -> bool {
        let mut m = Message::new(NFT_MSG_NEWRULE, 0);
        let start = m.buf.len();
        for expr in exprs {
            put_expr(&mut m, expr);
        }
        let wanted = parse_expressions(&m.buf[start..]);
        wanted.len() == self.expressions.len()
            && wanted.iter().zip(&self.expressions).all(|(want, have)| {
                want.0 == have.0 && want.1.iter().all(|attr| have.1.contains(attr))
            })
    }

    /// Whether the rule is the one `exprs` and `comment` describe: [`Self::matches`], and the
    /// comment as the kernel stores it.
    pub fn is(&self, exprs: &[Expr], comment: &str) -> bool {
        self.comment == stored_comment(comment) && self.matches(exprs)
    }
}

/// A rule comment as the kernel keeps it: at most 127 bytes, cut here at a character boundary
/// (the kernel would cut inside a character). Rules are written and compared through it.
pub fn stored_comment(text: &str) -> &str {
    let mut end = text.len().min(127);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The rules of a chain, in order; `None` when there is no such table or chain.
pub fn list_rules(table: &str, chain: &str) -> Result<Option<Vec<RuleState>>> {
    let mut m = Message::new(NFT_MSG_GETRULE, NLM_F_DUMP);
    m.put_str(NFTA_RULE_TABLE, table);
    m.put_str(NFTA_RULE_CHAIN, chain);
    let Some(answers) = dump(m, &format!("rules of chain inet {table} {chain}"))? else {
        return Ok(None);
    };
    Ok(Some(
        answers
            .iter()
            .filter(|a| attr(a, NFTA_RULE_CHAIN).map(attr_str).as_deref() == Some(chain))
            .map(|a| RuleState {
                comment: attr(a, NFTA_RULE_USERDATA)
                    .and_then(comment_from_userdata)
                    .unwrap_or_default(),
                expressions: attr(a, NFTA_RULE_EXPRESSIONS)
                    .map(parse_expressions)
                    .unwrap_or_default(),
            })
            .collect(),
    ))
}

/// The expressions of an `NFTA_RULE_EXPRESSIONS` list.
fn parse_expressions(list: &[u8]) -> Vec<ExprAttrs> {
    attrs(list)
        .into_iter()
        .map(|(_, expr)| {
            let name = attr(expr, NFTA_EXPR_NAME).map(attr_str).unwrap_or_default();
            let data = attr(expr, NFTA_EXPR_DATA).unwrap_or_default();
            let mut flat = Vec::new();
            for (kind, value) in attrs(data) {
                flatten(&name, &kind.to_string(), value, &mut flat);
            }
            (name, flat)
        })
        .collect()
}

/// Opens the data attributes of `expr` (cmp's data, bitwise's mask and xor, immediate's data)
/// down to their values and verdicts.
fn flatten(expr: &str, path: &str, value: &[u8], out: &mut Vec<(String, Vec<u8>)>) {
    let is_data = matches!(
        (expr, path),
        ("cmp", "3") | ("bitwise", "4" | "5") | ("immediate", "2")
    );
    let is_verdict = path.ends_with(&format!("/{NFTA_DATA_VERDICT}"));
    if is_data || is_verdict {
        for (kind, inner) in attrs(value) {
            flatten(expr, &format!("{path}/{kind}"), inner, out);
        }
    } else {
        out.push((path.to_string(), value.to_vec()));
    }
}

/// An interface name as a key: its bytes, zero-padded to [`IFNAME_LEN`].
pub fn ifname_key(name: &str) -> Vec<u8> {
    let mut key = name.as_bytes().to_vec();
    key.resize(IFNAME_LEN, 0);
    key
}

/// Reads an interface name key back.
#[cfg(test)]
fn ifname_from_key(key: &[u8]) -> String {
    let end = key.iter().position(|&b| b == 0).unwrap_or(key.len());
    String::from_utf8_lossy(&key[..end]).into_owned()
}

/// The process's nftables socket, opened on first use in the namespace of the calling thread
/// (always the host's: nothing calls this module inside `netns::with_netns`).
///
/// It stays open until the process exits: releasing a netfilter socket after a transaction
/// makes the kernel finish that transaction's deferred cleanup first (an RCU grace period,
/// 7–15 ms measured on kernel 6.18), so one socket per process pays that wait once, at exit,
/// rather than once per request.
static SOCKET: Mutex<Option<Socket>> = Mutex::new(None);

fn with_socket<T>(f: impl FnOnce(&Socket) -> Result<T>) -> Result<T> {
    let mut guard = SOCKET.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        let mut socket = Socket::new(NETLINK_NETFILTER)
            .context("open a netfilter netlink socket")
            .code(DATAPLANE)?;
        socket
            .bind_auto()
            .context("bind a netfilter netlink socket")
            .code(DATAPLANE)?;
        *guard = Some(socket);
    }
    match guard.as_ref() {
        Some(socket) => {
            // Answers an earlier request left unread (one that failed midway) are dropped.
            queued_answers(socket)?;
            f(socket)
        }
        None => Err(Error::internal("nftables socket missing")),
    }
}

/// Sends a dump request and returns the attributes of every answer; `None` when the kernel
/// says the table or the object does not exist.
fn dump(request: Message, what: &str) -> Result<Option<Vec<Vec<u8>>>> {
    with_socket(|socket| dump_on(socket, request, what))
}

fn dump_on(socket: &Socket, request: Message, what: &str) -> Result<Option<Vec<Vec<u8>>>> {
    let mut bytes = request.buf;
    bytes[8..12].copy_from_slice(&1u32.to_ne_bytes());
    socket
        .send(&bytes, 0)
        .with_context(|| format!("dump {what}"))
        .code(DATAPLANE)?;
    let mut out = Vec::new();
    let mut buf = Vec::with_capacity(1 << 16);
    loop {
        buf.clear();
        socket
            .recv(&mut buf, 0)
            .with_context(|| format!("dump {what}"))
            .code(DATAPLANE)?;
        for (header, payload) in messages(&buf) {
            match header.kind {
                NLMSG_DONE => return Ok(Some(out)),
                NLMSG_ERROR => match error_code(payload) {
                    0 => return Ok(Some(out)),
                    errno if errno == nix::libc::ENOENT => return Ok(None),
                    errno => {
                        return Err(Error::new(
                            DATAPLANE,
                            format!("dump {what}: {}", errno_text(errno)),
                        )
                        .with_kind(if errno == nix::libc::EINTR {
                            Kind::TryAgainLater
                        } else {
                            Kind::Other
                        }));
                    }
                },
                _ => {
                    // Skip the nfgenmsg before the attributes.
                    out.push(payload.get(4..).unwrap_or_default().to_vec());
                    if header.flags & NLM_F_MULTI == 0 {
                        return Ok(Some(out));
                    }
                }
            }
        }
    }
}

fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

/// A netlink message under construction: header, nfgenmsg, attributes.
struct Message {
    buf: Vec<u8>,
}

impl Message {
    fn new(msg: u16, flags: u16) -> Message {
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | msg;
        let ack = if flags & NLM_F_DUMP == NLM_F_DUMP {
            0
        } else {
            NLM_F_ACK
        };
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | ack | flags).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&[NFPROTO_INET, 0, 0, 0]);
        let mut m = Message { buf };
        m.set_len();
        m
    }

    fn set_len(&mut self) {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
    }

    fn put_bytes(&mut self, kind: u16, value: &[u8]) {
        let len = (4 + value.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
    }

    fn put_str(&mut self, kind: u16, value: &str) {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.put_bytes(kind, &bytes);
    }

    /// nftables attributes hold numbers in network order.
    fn put_u32(&mut self, kind: u16, value: u32) {
        self.put_bytes(kind, &value.to_be_bytes());
    }

    fn begin_nested(&mut self, kind: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        start
    }

    fn end_nested(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.set_len();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self.set_len();
    }
}

fn batch_delimiter(kind: u16, seq: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(20);
    buf.extend_from_slice(&20u32.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: AF_UNSPEC, version 0, res_id = the subsystem, in network order.
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
    buf
}

fn element_message(msg: u16, flags: u16, table: &str, set: &str, elements: &[Element]) -> Message {
    let mut m = Message::new(msg, flags);
    m.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
    m.put_str(NFTA_SET_ELEM_LIST_SET, set);
    let list = m.begin_nested(NFTA_SET_ELEM_LIST_ELEMENTS);
    for element in elements {
        let item = m.begin_nested(NFTA_LIST_ELEM);
        let key = m.begin_nested(NFTA_SET_ELEM_KEY);
        m.put_bytes(NFTA_DATA_VALUE, &element.key);
        m.end_nested(key);
        if let Some(data) = &element.data {
            let nested = m.begin_nested(NFTA_SET_ELEM_DATA);
            match data {
                ElementData::Verdict(verdict) => put_verdict(&mut m, verdict),
                ElementData::Value(value) => m.put_bytes(NFTA_DATA_VALUE, value),
            }
            m.end_nested(nested);
        }
        m.end_nested(item);
    }
    m.end_nested(list);
    m
}

/// An `NFTA_DATA_VERDICT` attribute.
fn put_verdict(m: &mut Message, verdict: &Verdict) {
    let nested = m.begin_nested(NFTA_DATA_VERDICT);
    m.put_u32(NFTA_VERDICT_CODE, verdict.code() as u32);
    if let Verdict::Jump(chain) = verdict {
        m.put_str(NFTA_VERDICT_CHAIN, chain);
    }
    m.end_nested(nested);
}

fn put_expr(m: &mut Message, expr: &Expr) {
    let item = m.begin_nested(NFTA_LIST_ELEM);
    let name = match expr {
        Expr::Meta(_) => "meta",
        Expr::NetworkHeader { .. } => "payload",
        Expr::CtState => "ct",
        Expr::And(_) => "bitwise",
        Expr::Equal(_) | Expr::NotEqual(_) => "cmp",
        Expr::InSet(_) | Expr::VerdictMap(_) => "lookup",
        Expr::Verdict(_) => "immediate",
    };
    m.put_str(NFTA_EXPR_NAME, name);
    let data = m.begin_nested(NFTA_EXPR_DATA);
    match expr {
        Expr::Meta(key) => {
            // NFTA_META_DREG, NFTA_META_KEY
            m.put_u32(1, NFT_REG_1);
            m.put_u32(2, key.key());
        }
        Expr::NetworkHeader { offset, len } => {
            // NFTA_PAYLOAD_DREG, _BASE (network header), _OFFSET, _LEN
            m.put_u32(1, NFT_REG_1);
            m.put_u32(2, 1);
            m.put_u32(3, *offset);
            m.put_u32(4, *len);
        }
        Expr::CtState => {
            // NFTA_CT_DREG, NFTA_CT_KEY (NFT_CT_STATE)
            m.put_u32(1, NFT_REG_1);
            m.put_u32(2, 0);
        }
        Expr::And(mask) => {
            // NFTA_BITWISE_SREG, _DREG, _LEN, _MASK, _XOR
            m.put_u32(1, NFT_REG_1);
            m.put_u32(2, NFT_REG_1);
            m.put_u32(3, mask.len() as u32);
            let nested = m.begin_nested(4);
            m.put_bytes(NFTA_DATA_VALUE, mask);
            m.end_nested(nested);
            let nested = m.begin_nested(5);
            m.put_bytes(NFTA_DATA_VALUE, &vec![0; mask.len()]);
            m.end_nested(nested);
        }
        Expr::Equal(value) | Expr::NotEqual(value) => {
            // NFTA_CMP_SREG, _OP (EQ 0, NEQ 1), _DATA
            m.put_u32(1, NFT_REG_1);
            m.put_u32(2, u32::from(matches!(expr, Expr::NotEqual(_))));
            let nested = m.begin_nested(3);
            m.put_bytes(NFTA_DATA_VALUE, value);
            m.end_nested(nested);
        }
        Expr::InSet(set) => {
            // NFTA_LOOKUP_SET, _SREG
            m.put_str(1, set);
            m.put_u32(2, NFT_REG_1);
        }
        Expr::VerdictMap(map) => {
            // NFTA_LOOKUP_SET, _SREG, _DREG (the verdict register)
            m.put_str(1, map);
            m.put_u32(2, NFT_REG_1);
            m.put_u32(3, NFT_REG_VERDICT);
        }
        Expr::Verdict(verdict) => {
            // NFTA_IMMEDIATE_DREG, _DATA
            m.put_u32(1, NFT_REG_VERDICT);
            let nested = m.begin_nested(2);
            put_verdict(m, verdict);
            m.end_nested(nested);
        }
    }
    m.end_nested(data);
    m.end_nested(item);
}

/// A rule comment as nft stores it in the rule's user data: type 0 (comment), length, the text
/// with its terminating zero.
fn comment_userdata(comment: &str) -> Vec<u8> {
    let mut text = stored_comment(comment).as_bytes().to_vec();
    text.push(0);
    let mut out = vec![0, text.len() as u8];
    out.extend(text);
    out
}

fn comment_from_userdata(data: &[u8]) -> Option<String> {
    let mut rest = data;
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], rest[1] as usize);
        let value = rest.get(2..2 + len)?;
        if kind == 0 {
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            return Some(String::from_utf8_lossy(&value[..end]).into_owned());
        }
        rest = &rest[2 + len..];
    }
    None
}

fn parse_data(data: &[u8]) -> Option<ElementData> {
    if let Some(value) = attr(data, NFTA_DATA_VALUE) {
        return Some(ElementData::Value(value.to_vec()));
    }
    let verdict = attr(data, NFTA_DATA_VERDICT)?;
    let code = attr(verdict, NFTA_VERDICT_CODE)?;
    let code = i32::from_be_bytes(code.get(..4)?.try_into().ok()?);
    Some(ElementData::Verdict(match code {
        0 => Verdict::Drop,
        1 => Verdict::Accept,
        -5 => Verdict::Return,
        -3 => Verdict::Jump(attr(verdict, NFTA_VERDICT_CHAIN).map(attr_str)?),
        _ => return None,
    }))
}

struct Header {
    kind: u16,
    flags: u16,
    seq: u32,
}

/// The netlink messages in a datagram, each with its payload.
fn messages(buf: &[u8]) -> Vec<(Header, &[u8])> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < 16 || len > rest.len() {
            break;
        }
        let header = Header {
            kind: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            seq: u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]),
        };
        out.push((header, &rest[16..len]));
        rest = &rest[align(len).min(rest.len())..];
    }
    out
}

/// The positive errno of an `NLMSG_ERROR` payload; 0 for an acknowledgement.
fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map(|b| -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// The attributes in `buf`, as (type without flags, payload).
fn attrs(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        if len < 4 || len > rest.len() {
            break;
        }
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        out.push((kind, &rest[4..len]));
        rest = &rest[align(len).min(rest.len())..];
    }
    out
}

fn attr(buf: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(buf)
        .into_iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, v)| v)
}

fn attr_str(value: &[u8]) -> String {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_is_framed_by_begin_and_end_with_sequence_numbers() {
        let mut batch = Batch::new();
        batch.add_table("t");
        batch.add_chain("t", "c");
        let bytes = batch.encode();
        let framed = messages(&bytes);
        let kinds: Vec<u16> = framed.iter().map(|(h, _)| h.kind).collect();
        assert_eq!(kinds, vec![0x10, 0x0a00, 0x0a03, 0x11]);
        let seqs: Vec<u32> = framed.iter().map(|(h, _)| h.seq).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3]);
        // Begin and end name the nftables subsystem in network order.
        assert_eq!(&framed[0].1[2..4], &[0, 10]);
        // Adds create without NLM_F_EXCL (0x200) and ask for an acknowledgement.
        assert_eq!(framed[1].0.flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
    }

    #[test]
    fn table_message_carries_the_name_zero_terminated() {
        let mut batch = Batch::new();
        batch.add_table("calico-local");
        let msg = &batch.messages[0];
        assert_eq!(msg[16], NFPROTO_INET);
        assert_eq!(
            attr(&msg[20..], NFTA_TABLE_NAME),
            Some(&b"calico-local\0"[..])
        );
        assert_eq!(msg.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize,
            msg.len()
        );
    }

    #[test]
    fn removing_elements_adds_then_deletes_them() {
        let mut batch = Batch::new();
        let element = Element {
            key: vec![10, 0, 0, 1],
            data: Some(ElementData::Value(ifname_key("cali1"))),
        };
        batch.remove_elements("t", "s", &[element]);
        let kinds: Vec<u16> = batch
            .messages
            .iter()
            .map(|m| u16::from_ne_bytes([m[4], m[5]]))
            .collect();
        assert_eq!(kinds, vec![0x0a0c, 0x0a0e]);
        let list = attr(&batch.messages[1][20..], NFTA_SET_ELEM_LIST_ELEMENTS).unwrap();
        let (_, element) = attrs(list)[0];
        let key = attr(element, NFTA_SET_ELEM_KEY).unwrap();
        assert_eq!(attr(key, NFTA_DATA_VALUE), Some(&[10, 0, 0, 1][..]));
        assert_eq!(
            attr(element, NFTA_SET_ELEM_DATA).and_then(parse_data),
            Some(ElementData::Value(ifname_key("cali1")))
        );
    }

    #[test]
    fn verdicts_round_trip_through_element_data() {
        for verdict in [
            Verdict::Accept,
            Verdict::Drop,
            Verdict::Return,
            Verdict::Jump("to-cali1".into()),
        ] {
            let mut m = Message::new(NFT_MSG_NEWSETELEM, 0);
            let start = m.buf.len();
            put_verdict(&mut m, &verdict);
            assert_eq!(
                parse_data(&m.buf[start..]),
                Some(ElementData::Verdict(verdict.clone()))
            );
        }
    }

    #[test]
    fn rule_comments_round_trip_and_are_capped() {
        assert_eq!(
            comment_from_userdata(&comment_userdata("allow from tag a")).as_deref(),
            Some("allow from tag a")
        );
        let long = "x".repeat(300);
        let data = comment_userdata(&long);
        assert_eq!(data[1], 128);
        assert_eq!(comment_from_userdata(&data).unwrap().len(), 127);
    }

    fn listed(exprs: &[Expr]) -> RuleState {
        let mut m = Message::new(NFT_MSG_NEWRULE, 0);
        let start = m.buf.len();
        for expr in exprs {
            put_expr(&mut m, expr);
        }
        RuleState {
            comment: String::new(),
            expressions: parse_expressions(&m.buf[start..]),
        }
    }

    #[test]
    fn a_listed_rule_matches_only_the_expressions_it_was_made_of() {
        let rule = vec![
            Expr::Meta(MetaKey::Nfproto),
            Expr::Equal(vec![NFPROTO_IPV4]),
            Expr::NetworkHeader { offset: 12, len: 4 },
            Expr::InSet("tag4-a".into()),
            Expr::Verdict(Verdict::Return),
        ];
        assert!(listed(&rule).matches(&rule));
        let mut accept = rule.clone();
        accept[4] = Expr::Verdict(Verdict::Accept);
        assert!(!listed(&rule).matches(&accept));
        let mut other_set = rule.clone();
        other_set[3] = Expr::InSet("tag4-b".into());
        assert!(!listed(&rule).matches(&other_set));
        assert!(!listed(&rule).matches(&rule[..4]));
    }

    #[test]
    fn listed_rules_may_carry_attributes_this_module_does_not_send() {
        let rule = vec![Expr::Meta(MetaKey::Oifname), Expr::VerdictMap("m".into())];
        let mut state = listed(&rule);
        // Newer kernels list the lookup's flags (NFTA_LOOKUP_FLAGS, 0) too.
        state.expressions[1].1.push(("5".into(), vec![0; 4]));
        assert!(state.matches(&rule));
    }

    /// The kernel keeps 127 bytes of a comment: a rule written with a longer one (a drop rule
    /// naming many profiles) must still be recognised, or CHECK would report it forever.
    #[test]
    fn a_rule_with_a_comment_longer_than_the_kernel_keeps_is_recognised() {
        let rule = vec![Expr::Verdict(Verdict::Drop)];
        let long = format!(
            "no rule of {} matched",
            ["profile-with-a-long-name"; 8].join(",")
        );
        let mut state = listed(&rule);
        let userdata = comment_userdata(&long);
        state.comment = comment_from_userdata(&userdata).unwrap();
        assert!(long.len() > 127 && state.comment.len() == 127);
        assert!(state.is(&rule, &long));
        assert!(!state.is(&rule, "another comment"));
    }

    #[test]
    fn comments_are_cut_at_a_character_boundary() {
        let text = format!("{}é", "x".repeat(126));
        assert_eq!(stored_comment(&text), "x".repeat(126));
    }

    #[test]
    fn ifname_keys_are_padded_to_ifnamsiz() {
        let key = ifname_key("cali0123456789a");
        assert_eq!(key.len(), IFNAME_LEN);
        assert_eq!(ifname_from_key(&key), "cali0123456789a");
    }
}
