//! `show`, `check` and `release`: what an operator asks of IPAM by hand, printed as an aligned
//! table or, with `--json`, as one JSON object.

use std::io::Write;
use std::net::IpAddr;

use common::datastore::Datastore;
use common::datastore::keys;
use common::error::codes;
use common::ipam::Allocator;
use common::ipam::audit::{self, Finding};
use common::ipam::block::block_cidr_for;
use common::{Context, Error, Result};
use serde_json::json;

use crate::admin::print_table;

/// Writes one JSON object and a newline.
fn print_json(out: &mut dyn Write, value: &serde_json::Value) -> Result<()> {
    writeln!(out, "{value}").context("write output")
}

/// Per pool its usage, per node its affine blocks.
pub fn show(store: &Datastore, json: bool, out: &mut dyn Write) -> Result<()> {
    let inv = audit::read_inventory(store)?;
    let pools = audit::pool_usage(&inv);
    let nodes = audit::node_usage(&inv);
    if json {
        return print_json(out, &json!({"pools": pools, "nodes": nodes}));
    }
    let mut rows =
        vec![["POOL", "SIZE", "ALLOCATED", "FREE", "BLOCKS", "DISABLED"].map(String::from)];
    rows.extend(pools.iter().map(|p| {
        [
            p.cidr.to_string(),
            p.size.to_string(),
            p.allocated.to_string(),
            p.free.to_string(),
            p.blocks.to_string(),
            p.disabled.to_string(),
        ]
    }));
    print_table(out, &rows)?;
    writeln!(out).context("write output")?;
    let mut rows = vec![["NODE", "BLOCK", "ALLOCATED", "FREE"].map(String::from)];
    for node in &nodes {
        rows.extend(node.blocks.iter().map(|b| {
            [
                node.node.clone(),
                b.cidr.to_string(),
                b.allocated.to_string(),
                b.free.to_string(),
            ]
        }));
    }
    print_table(out, &rows)
}

/// The block, handle and endpoints of one address.
pub fn show_address(
    store: &Datastore,
    addr: IpAddr,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let owner = audit::address_owner(store, addr)?;
    if json {
        return print_json(out, &serde_json::to_value(&owner)?);
    }
    let endpoints = if owner.endpoints.is_empty() {
        "-".to_string()
    } else {
        owner.endpoints.join(", ")
    };
    let rows = [
        ["ADDRESS".to_string(), owner.address.to_string()],
        ["BLOCK".to_string(), owner.block.to_string()],
        ["ALLOCATED".to_string(), owner.allocated.to_string()],
        [
            "HANDLE".to_string(),
            owner.handle.unwrap_or_else(|| "-".into()),
        ],
        ["ENDPOINT".to_string(), endpoints],
    ];
    print_table(out, &rows)
}

/// Every inconsistency; exit status 1 when there is any.
pub fn check(store: &Datastore, json: bool, out: &mut dyn Write) -> Result<i32> {
    let inv = audit::read_inventory(store)?;
    let findings = audit::check(&inv);
    if json {
        print_json(out, &json!({"findings": findings, "count": findings.len()}))?;
    } else {
        print_findings(out, &findings)?;
    }
    Ok(i32::from(!findings.is_empty()))
}

fn print_findings(out: &mut dyn Write, findings: &[Finding]) -> Result<()> {
    if findings.is_empty() {
        return writeln!(out, "no inconsistencies found").context("write output");
    }
    let mut rows = vec![["KIND".to_string(), "FINDING".to_string()]];
    rows.extend(findings.iter().map(|f| {
        [
            serde_json::to_value(f.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            f.message.clone(),
        ]
    }));
    print_table(out, &rows)?;
    writeln!(out, "{} inconsistencies found", findings.len()).context("write output")
}

/// Frees one address from the handle holding it, with the allocator's compare-and-swap release
/// (block and handle count together).
pub fn release_address(
    store: &Datastore,
    addr: IpAddr,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let owner = audit::address_owner(store, addr)?;
    let block = block_cidr_for(addr);
    let handle = match (owner.allocated, owner.handle) {
        (false, _) => {
            return Err(not_found(format!(
                "address {addr} is not allocated (block {})",
                keys::block(&block)
            )));
        }
        (true, None) => {
            return Err(Error::new(
                codes::DATASTORE,
                format!(
                    "address {addr} in block {block} is allocated without a handle: release it with another tool"
                ),
            ));
        }
        (true, Some(handle)) => handle,
    };
    let released = Allocator::new(store, "")
        .release_address(&handle, addr)
        .with_context(|| format!("release address {addr} of handle {handle}"))?;
    if !released {
        return Err(not_found(format!(
            "address {addr} was released or reassigned meanwhile; nothing done"
        )));
    }
    if json {
        return print_json(out, &json!({"released": [addr], "handle": handle}));
    }
    writeln!(out, "released {addr} (handle {handle})").context("write output")
}

/// Frees every address of a handle and deletes it, in one compare-and-swap transaction.
pub fn release_handle(store: &Datastore, id: &str, json: bool, out: &mut dyn Write) -> Result<()> {
    let key = keys::handle(id);
    if let Some(problem) = keys::key_problem(&key) {
        return Err(Error::new(common::Code::InvalidEnvironment, problem));
    }
    if store.get(&key)?.is_none() {
        return Err(not_found(format!(
            "handle {id} does not exist (etcd key {key})"
        )));
    }
    let released = Allocator::new(store, "")
        .release_handles(&[id])
        .with_context(|| format!("release handle {id}"))?;
    if json {
        return print_json(out, &json!({"handle": id, "released": released}));
    }
    writeln!(out, "released {released} addresses of handle {id}").context("write output")
}

fn not_found(msg: String) -> Error {
    Error::new(codes::DATASTORE, msg).with_kind(common::Kind::NotFound)
}
