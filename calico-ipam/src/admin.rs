//! The admin mode: `calico-ipam pool add|list|rm`, `show`, `check`, `release` and `gc`, so
//! operators can manage IP pools and find and repair what a crashed or never-run DEL left
//! without other Calico tools. etcd is found as the plugin finds it: flags, else the `etcd_*`
//! keys of a network config file (`--config`), else the `ETCD_*` variables.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use common::config::{EtcdConfigKeys, etcd_settings};
use common::datastore::Datastore;
use common::datastore::keys::{self, IpFamily};
use common::file::{MAX_CONFIG_FILE_LEN, read_config_file};
use common::ipam::{self, AllocationBlock, PoolSpec};
use common::{Code, Context, Error, Result};
use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::{collect, operate};

const USAGE: &str = "\
calico-ipam: Calico IP address management

CNI plugin mode (CNI_COMMAND set, network config on stdin):
  ADD      assigns one IPv4 address (ipam.assign_ipv4, default \"true\") and/or one IPv6
           address (ipam.assign_ipv6, default \"false\") from the node's blocks of the enabled
           pools, or the address in CNI_ARGS IP=<addr>; optional ipam.ipv4_pools /
           ipam.ipv6_pools limit the pools. Addresses are recorded under the handle
           <network name>.<CNI_CONTAINERID> (for an interface other than eth0,
           <network name>.<CNI_CONTAINERID>:<CNI_IFNAME>).
  DEL      releases every address of that handle (and of the pre-v1.11.2 workload handle).
  CHECK    compares the handle's addresses with prevResult.
  STATUS   reports an unreachable etcd or pools without room (cniVersion 1.1.0).
  GC       releases the handles of the network on the node that no attachment in
           cni.dev/valid-attachments holds (cniVersion 1.1.0).
  VERSION  prints the supported CNI versions.

Admin mode (no CNI_COMMAND, arguments given):
  calico-ipam [etcd options] pool add <cidr> [--disabled] [--ipip] [--nat-outgoing]
  calico-ipam [etcd options] pool list
  calico-ipam [etcd options] pool rm <cidr>     (refused while addresses are allocated)
  calico-ipam [etcd options] show [--json]
        per pool: size, allocated, free, blocks, disabled; per node: its affine blocks
  calico-ipam [etcd options] show --ip <addr> [--json]
        the address's block, handle and the workload endpoints listing it
  calico-ipam [etcd options] check [--json]
        reports allocations no endpoint lists (leaks), endpoint addresses not allocated,
        handle counts that disagree with the blocks, allocations outside every pool,
        affinities of nodes without endpoints and attachment records without endpoint;
        exits 1 when it finds anything
  calico-ipam [etcd options] release --ip <addr> | --handle <id> [--json]
        frees that address (from its handle) or every address of that handle
  calico-ipam [etcd options] gc --node <node> --network <name> [--dry-run] [--json]
        on that node, tears down the attachments of that network whose netns is gone:
        releases the handle, deletes the host veth (when its claim is the container's),
        the endpoint, the attachment record and the claim; for runtimes that never send GC
  calico-ipam --help | --version

  Exit status: 0 done, 1 failed (or check found something), 2 usage error.
  Pools must be at least one block (/26 for IPv4, /122 for IPv6), must not overlap each other
  and must not overlap loopback, link-local, multicast, 0.0.0.0/8, 240.0.0.0/4, ::, ::1 or
  IPv4-mapped addresses.

etcd options (each wins over the next source):
  --etcd-endpoints <urls>      comma-separated http:// or https:// URLs
  --etcd-key-file <path>       client key for TLS
  --etcd-cert-file <path>      client certificate for TLS
  --etcd-ca-cert-file <path>   CA bundle for TLS
  --config <path>              a network config file whose etcd_* keys are used
  then ETCD_ENDPOINTS, ETCD_AUTHORITY, ETCD_SCHEME, ETCD_KEY_FILE, ETCD_CERT_FILE,
  ETCD_CA_CERT_FILE, ETCD_USERNAME/ETCD_PASSWORD; default http://127.0.0.1:2379.
";

/// A parsed command line.
#[derive(Debug, Default, PartialEq, Eq)]
struct CommandLine {
    words: Vec<String>,
    etcd: EtcdConfigKeys,
    config_file: Option<String>,
    disabled: bool,
    ipip: bool,
    nat_outgoing: bool,
    json: bool,
    ip: Option<String>,
    handle: Option<String>,
    node: Option<String>,
    network: Option<String>,
    dry_run: bool,
    help: bool,
    version: bool,
}

/// What to do.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Help,
    Version,
    PoolAdd(PoolSpec),
    PoolList,
    PoolRemove(IpNetwork),
    Show,
    ShowAddress(IpAddr),
    Check,
    ReleaseAddress(IpAddr),
    ReleaseHandle(String),
    Gc(GcTarget),
}

/// The attachments `gc` looks at.
#[derive(Debug, PartialEq, Eq)]
pub struct GcTarget {
    /// The node whose attachments are examined.
    pub node: String,
    /// The network's config `name`.
    pub network: String,
    /// Only report what would be torn down.
    pub dry_run: bool,
}

/// Runs the admin command; returns the exit status (0 ok, 1 failed, 2 usage error).
pub fn run(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let action = match parse_command_line(args).and_then(|line| Ok((action(&line)?, line))) {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = writeln!(err, "calico-ipam: {e}\nrun calico-ipam --help for usage");
            return 2;
        }
    };
    match execute(action, env, out) {
        Ok(status) => status,
        Err(e) => {
            let _ = writeln!(err, "calico-ipam: {e}");
            1
        }
    }
}

/// Runs an action; the exit status is 0, or 1 when `check` found something.
fn execute(
    (action, line): (Action, CommandLine),
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
) -> Result<i32> {
    let json = line.json;
    match action {
        Action::Show => operate::show(&connect(&line, env)?, json, out).map(|()| 0),
        Action::ShowAddress(addr) => {
            operate::show_address(&connect(&line, env)?, addr, json, out).map(|()| 0)
        }
        Action::Check => operate::check(&connect(&line, env)?, json, out),
        Action::ReleaseAddress(addr) => {
            operate::release_address(&connect(&line, env)?, addr, json, out).map(|()| 0)
        }
        Action::ReleaseHandle(id) => {
            operate::release_handle(&connect(&line, env)?, &id, json, out).map(|()| 0)
        }
        Action::Gc(target) => {
            let lock_dir = env(common::cni::lock::LOCK_DIR_ENV)
                .unwrap_or_else(|| common::cni::lock::LOCK_DIR.to_string());
            let store = connect(&line, env)?;
            collect::gc(&store, &target, Path::new(&lock_dir), json, out).map(|()| 0)
        }
        other => execute_pool((other, line), env, out).map(|()| 0),
    }
}

fn execute_pool(
    (action, line): (Action, CommandLine),
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
) -> Result<()> {
    match action {
        Action::Help => write!(out, "{USAGE}").context("write usage"),
        Action::Version => {
            writeln!(out, "{}", common::version_line("calico-ipam")).context("write version")
        }
        Action::PoolAdd(spec) => {
            let store = connect(&line, env)?;
            let pool = ipam::add_pool(&store, &spec)?;
            writeln!(
                out,
                "added pool {}{}",
                pool.cidr,
                if pool.disabled { " (disabled)" } else { "" }
            )
            .context("write output")
        }
        Action::PoolList => {
            let store = connect(&line, env)?;
            list_pools(&store, out)
        }
        Action::PoolRemove(cidr) => {
            let store = connect(&line, env)?;
            ipam::remove_pool(&store, cidr)?;
            writeln!(out, "removed pool {cidr}").context("write output")
        }
        _ => Ok(()),
    }
}

fn parse_command_line(args: &[String]) -> Result<CommandLine> {
    let mut line = CommandLine::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |option: &str| -> Result<String> {
            inline
                .clone()
                .or_else(|| iter.next().cloned())
                .ok_or_else(|| usage_error(format!("option {option} needs a value")))
        };
        match name {
            "-h" | "--help" | "help" => line.help = true,
            "-v" | "--version" | "version" => line.version = true,
            "--disabled" => line.disabled = true,
            "--ipip" => line.ipip = true,
            "--nat-outgoing" => line.nat_outgoing = true,
            "--etcd-endpoints" => line.etcd.etcd_endpoints = Some(value(name)?),
            "--etcd-key-file" => line.etcd.etcd_key_file = Some(value(name)?),
            "--etcd-cert-file" => line.etcd.etcd_cert_file = Some(value(name)?),
            "--etcd-ca-cert-file" => line.etcd.etcd_ca_cert_file = Some(value(name)?),
            "--config" => line.config_file = Some(value(name)?),
            "--json" => line.json = true,
            "--dry-run" => line.dry_run = true,
            "--ip" => line.ip = Some(value(name)?),
            "--handle" => line.handle = Some(value(name)?),
            "--node" => line.node = Some(value(name)?),
            "--network" => line.network = Some(value(name)?),
            other if other.starts_with('-') => {
                return Err(usage_error(format!("unknown option {other}")));
            }
            word => line.words.push(word.to_string()),
        }
    }
    Ok(line)
}

fn action(line: &CommandLine) -> Result<Action> {
    if line.help {
        return Ok(Action::Help);
    }
    if line.version {
        return Ok(Action::Version);
    }
    let words: Vec<&str> = line.words.iter().map(String::as_str).collect();
    let pool_flags = line.disabled || line.ipip || line.nat_outgoing;
    if let Some(action) = operator_action(line, &words)? {
        if pool_flags {
            return Err(usage_error(
                "--disabled, --ipip and --nat-outgoing apply to pool add only".into(),
            ));
        }
        return Ok(action);
    }
    let operator_flags = line.ip.is_some()
        || line.handle.is_some()
        || line.node.is_some()
        || line.network.is_some()
        || line.dry_run;
    if operator_flags {
        return Err(usage_error(
            "--ip, --handle, --node, --network and --dry-run apply to show, release and gc only"
                .into(),
        ));
    }
    match words.as_slice() {
        ["pool", "add", cidr] => {
            let cidr = parse_cidr(cidr)?;
            // Refused before etcd is contacted: such a CIDR can never be a pool.
            ipam::pool::validate_pool_cidr(cidr)?;
            if line.ipip && cidr.is_ipv6() {
                return Err(usage_error(format!(
                    "--ipip applies to ipv4 pools only, not {cidr}"
                )));
            }
            Ok(Action::PoolAdd(PoolSpec {
                cidr,
                disabled: line.disabled,
                ipip: line.ipip,
                nat_outgoing: line.nat_outgoing,
            }))
        }
        ["pool", "list"] if !pool_flags => Ok(Action::PoolList),
        ["pool", "rm", cidr] if !pool_flags => Ok(Action::PoolRemove(parse_cidr(cidr)?)),
        ["pool", "list" | "rm", ..] => Err(usage_error(
            "--disabled, --ipip and --nat-outgoing apply to pool add only".into(),
        )),
        [] => Err(usage_error("no command given".into())),
        _ => Err(usage_error(format!(
            "unknown command {:?}",
            words.join(" ")
        ))),
    }
}

/// The `show`, `check`, `release` and `gc` commands; `None` for another command.
fn operator_action(line: &CommandLine, words: &[&str]) -> Result<Option<Action>> {
    let refuse = |flags: &[(&str, bool)]| -> Result<()> {
        match flags.iter().find(|(_, given)| *given) {
            Some((flag, _)) => Err(usage_error(format!(
                "{flag} does not apply to {}",
                words.join(" ")
            ))),
            None => Ok(()),
        }
    };
    let (ip, handle) = (line.ip.as_deref(), line.handle.as_deref());
    let gc_flags = [
        ("--node", line.node.is_some()),
        ("--network", line.network.is_some()),
        ("--dry-run", line.dry_run),
    ];
    let action = match words {
        ["show"] => {
            refuse(&gc_flags)?;
            refuse(&[("--handle", handle.is_some())])?;
            match ip {
                Some(ip) => Action::ShowAddress(parse_addr(ip)?),
                None => Action::Show,
            }
        }
        ["check"] => {
            refuse(&gc_flags)?;
            refuse(&[("--ip", ip.is_some()), ("--handle", handle.is_some())])?;
            Action::Check
        }
        ["release"] => {
            refuse(&gc_flags)?;
            match (ip, handle) {
                (Some(ip), None) => Action::ReleaseAddress(parse_addr(ip)?),
                (None, Some(id)) if !id.is_empty() => Action::ReleaseHandle(id.to_string()),
                _ => {
                    return Err(usage_error(
                        "release needs exactly one of --ip <addr> and --handle <id>".into(),
                    ));
                }
            }
        }
        ["gc"] => {
            refuse(&[("--ip", ip.is_some()), ("--handle", handle.is_some())])?;
            let (Some(node), Some(network)) = (&line.node, &line.network) else {
                return Err(usage_error(
                    "gc needs --node <node> and --network <name>".into(),
                ));
            };
            if node.is_empty() || network.is_empty() {
                return Err(usage_error(
                    "gc: --node and --network must not be empty".into(),
                ));
            }
            Action::Gc(GcTarget {
                node: node.clone(),
                network: network.clone(),
                dry_run: line.dry_run,
            })
        }
        _ => return Ok(None),
    };
    Ok(Some(action))
}

fn parse_addr(text: &str) -> Result<IpAddr> {
    text.parse()
        .map_err(|e| usage_error(format!("invalid address {text:?}: {e}")))
}

fn parse_cidr(text: &str) -> Result<IpNetwork> {
    text.parse()
        .map_err(|e| usage_error(format!("invalid cidr {text:?}: {e}")))
}

fn usage_error(msg: String) -> Error {
    Error::new(Code::InvalidEnvironment, msg)
}

/// Connects with flags > config file > `ETCD_*` variables.
fn connect(line: &CommandLine, env: &dyn Fn(&str) -> Option<String>) -> Result<Datastore> {
    let mut keys = match &line.config_file {
        Some(path) => etcd_keys_from_file(path)?,
        None => EtcdConfigKeys::default(),
    };
    let flags = &line.etcd;
    if flags.etcd_endpoints.is_some() {
        // Endpoints from a flag replace any endpoint setting of the file.
        keys.etcd_authority = None;
        keys.etcd_scheme = None;
        keys.etcd_endpoints.clone_from(&flags.etcd_endpoints);
    }
    for (flag, key) in [
        (&flags.etcd_key_file, &mut keys.etcd_key_file),
        (&flags.etcd_cert_file, &mut keys.etcd_cert_file),
        (&flags.etcd_ca_cert_file, &mut keys.etcd_ca_cert_file),
    ] {
        if flag.is_some() {
            key.clone_from(flag);
        }
    }
    Datastore::connect(&etcd_settings(&keys, env)?)
}

/// The `etcd_*` keys of a network config file; of a config list, those of the first plugin that
/// has any.
fn etcd_keys_from_file(path: &str) -> Result<EtcdConfigKeys> {
    let bytes = read_config_file(Path::new(path), "--config", MAX_CONFIG_FILE_LEN)?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::new(Code::Decoding, format!("parse config file {path}: {e}")))?;
    let has_etcd_keys = |v: &Value| {
        v.as_object()
            .is_some_and(|o| o.keys().any(|k| k.starts_with("etcd_")))
    };
    let chosen = if has_etcd_keys(&value) {
        &value
    } else {
        value
            .get("plugins")
            .and_then(Value::as_array)
            .and_then(|list| list.iter().find(|p| has_etcd_keys(p)))
            .unwrap_or(&value)
    };
    serde_json::from_value(chosen.clone()).map_err(|e| {
        Error::new(
            Code::InvalidConfig,
            format!("etcd keys in config file {path}: {e}"),
        )
    })
}

/// Prints every pool with its settings and how many addresses are allocated in it.
fn list_pools(store: &Datastore, out: &mut dyn Write) -> Result<()> {
    let pools = ipam::list_all_pools(store)?;
    let mut blocks = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        for entry in store.list(&keys::blocks_prefix(family))? {
            blocks.push(AllocationBlock::from_json(&entry.key, &entry.value)?);
        }
    }
    let mut table =
        vec![["CIDR", "DISABLED", "IPIP", "NAT-OUTGOING", "ALLOCATED"].map(String::from)];
    for stored in &pools {
        let pool = &stored.pool;
        let allocated: usize = blocks
            .iter()
            .map(|b| {
                (0..ipam::BLOCK_SIZE)
                    .filter(|&o| b.allocations[o].is_some() && pool.cidr.contains(b.address(o)))
                    .count()
            })
            .sum();
        let ipip = if pool.ipip.is_empty() {
            "-".to_string()
        } else {
            format!("{} {}", pool.ipip, pool.ipip_mode)
                .trim()
                .to_string()
        };
        table.push([
            pool.cidr.to_string(),
            pool.disabled.to_string(),
            ipip,
            pool.masquerade.to_string(),
            allocated.to_string(),
        ]);
    }
    print_table(out, &table)
}

/// Prints rows as columns two spaces apart, each as wide as its widest cell.
pub fn print_table<R: AsRef<[String]>>(out: &mut dyn Write, rows: &[R]) -> Result<()> {
    let columns = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|row| row.as_ref().get(c).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .as_ref()
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end()).context("write output")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Action> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        action(&parse_command_line(&args)?)
    }

    #[test]
    fn commands_parse() {
        let net = |s: &str| s.parse::<IpNetwork>().unwrap();
        assert_eq!(
            parse(&["pool", "add", "10.0.0.0/16", "--ipip", "--nat-outgoing"]).unwrap(),
            Action::PoolAdd(PoolSpec {
                cidr: net("10.0.0.0/16"),
                disabled: false,
                ipip: true,
                nat_outgoing: true
            })
        );
        assert_eq!(
            parse(&[
                "--etcd-endpoints=http://x:1",
                "pool",
                "add",
                "--disabled",
                "fd00::/64"
            ])
            .unwrap(),
            Action::PoolAdd(PoolSpec {
                cidr: net("fd00::/64"),
                disabled: true,
                ipip: false,
                nat_outgoing: false
            })
        );
        assert_eq!(
            parse(&["pool", "list", "--config", "/x.conf"]).unwrap(),
            Action::PoolList
        );
        assert_eq!(
            parse(&["pool", "rm", "10.0.0.0/16"]).unwrap(),
            Action::PoolRemove(net("10.0.0.0/16"))
        );
        assert_eq!(parse(&["show", "--json"]).unwrap(), Action::Show);
        assert_eq!(
            parse(&["show", "--ip", "10.0.0.1"]).unwrap(),
            Action::ShowAddress("10.0.0.1".parse().unwrap())
        );
        assert_eq!(parse(&["check"]).unwrap(), Action::Check);
        assert_eq!(
            parse(&["release", "--ip=fd00::1"]).unwrap(),
            Action::ReleaseAddress("fd00::1".parse().unwrap())
        );
        assert_eq!(
            parse(&["release", "--handle", "net.c1:eth1"]).unwrap(),
            Action::ReleaseHandle("net.c1:eth1".into())
        );
        assert_eq!(
            parse(&["gc", "--node", "n1", "--network", "net", "--dry-run"]).unwrap(),
            Action::Gc(GcTarget {
                node: "n1".into(),
                network: "net".into(),
                dry_run: true
            })
        );
        assert_eq!(parse(&["--help"]).unwrap(), Action::Help);
        assert_eq!(parse(&["pool", "list", "-h"]).unwrap(), Action::Help);
        assert_eq!(parse(&["-v"]).unwrap(), Action::Version);
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        let cases: [&[&str]; 18] = [
            &["show", "--ip", "10.0.0.0/24"],
            &["show", "--handle", "h"],
            &["check", "--ip", "10.0.0.1"],
            &["check", "--dry-run"],
            &["release"],
            &["release", "--ip", "10.0.0.1", "--handle", "h"],
            &["release", "--handle", ""],
            &["gc", "--node", "n1"],
            &["gc", "--network", "net", "--node", ""],
            &["pool", "list", "--ip", "10.0.0.1"],
            &["pool"],
            &["pool", "add"],
            &["pool", "add", "not-a-cidr"],
            &["pool", "rm", "10.0.0.0/16", "--ipip"],
            &["pool", "add", "fd00::/64", "--ipip"],
            &["--etcd-endpoints"],
            &["pool", "list", "--bogus"],
            &["pool", "add", "169.254.0.0/16"],
        ];
        for args in cases {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn flags_come_before_the_config_file_and_env() {
        let args: Vec<String> = ["--etcd-key-file", "/k", "pool", "list"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let line = parse_command_line(&args).unwrap();
        assert_eq!(line.etcd.etcd_key_file.as_deref(), Some("/k"));
        let dir = std::env::temp_dir().join(format!("calico-ipam-admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("net.conflist");
        std::fs::write(
            &file,
            r#"{"name":"n","plugins":[{"type":"calico","etcd_endpoints":"http://10.1.1.1:2379"}]}"#,
        )
        .unwrap();
        let keys = etcd_keys_from_file(file.to_str().unwrap()).unwrap();
        assert_eq!(keys.etcd_endpoints.as_deref(), Some("http://10.1.1.1:2379"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn help_mentions_both_modes() {
        let mut out = Vec::new();
        let mut err = Vec::new();
        assert_eq!(
            run(&["--help".to_string()], &|_| None, &mut out, &mut err),
            0
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("CNI_COMMAND") && text.contains("pool add"));
        assert_eq!(
            run(&["bogus".to_string()], &|_| None, &mut Vec::new(), &mut err),
            2
        );
    }
}
