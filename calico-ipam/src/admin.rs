//! The admin mode: `calico-ipam pool add|list|rm`, so operators can manage IP pools without
//! other Calico tools. etcd is found as the plugin finds it: flags, else the `etcd_*` keys of a
//! network config file (`--config`), else the `ETCD_*` variables.

use std::io::Write;
use std::path::Path;

use common::config::{EtcdConfigKeys, etcd_settings};
use common::datastore::Datastore;
use common::datastore::keys::{self, IpFamily};
use common::file::{MAX_CONFIG_FILE_LEN, read_config_file};
use common::ipam::{self, AllocationBlock, PoolSpec};
use common::{Code, Context, Error, Result};
use ipnetwork::IpNetwork;
use serde_json::Value;

const USAGE: &str = "\
calico-ipam: Calico IP address management

CNI plugin mode (CNI_COMMAND set, network config on stdin):
  ADD  assigns one IPv4 address (ipam.assign_ipv4, default \"true\") and/or one IPv6 address
       (ipam.assign_ipv6, default \"false\") from the node's blocks of the enabled pools, or
       the address in CNI_ARGS IP=<addr>; optional ipam.ipv4_pools / ipam.ipv6_pools limit the
       pools. Addresses are recorded under the handle <network name>.<CNI_CONTAINERID>.
  DEL  releases every address of that handle (and of the pre-v1.11.2 workload handle).
  VERSION prints the supported CNI versions.

Admin mode (no CNI_COMMAND, arguments given):
  calico-ipam [etcd options] pool add <cidr> [--disabled] [--ipip] [--nat-outgoing]
  calico-ipam [etcd options] pool list
  calico-ipam [etcd options] pool rm <cidr>     (refused while addresses are allocated)
  calico-ipam --help | --version

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
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "calico-ipam: {e}");
            1
        }
    }
}

fn execute(
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
    let widths: Vec<usize> = (0..5)
        .map(|c| table.iter().map(|row| row[c].len()).max().unwrap_or(0))
        .collect();
    for row in &table {
        let cells: Vec<String> = row
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
        assert_eq!(parse(&["--help"]).unwrap(), Action::Help);
        assert_eq!(parse(&["pool", "list", "-h"]).unwrap(), Action::Help);
        assert_eq!(parse(&["-v"]).unwrap(), Action::Version);
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        let cases: [&[&str]; 8] = [
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
