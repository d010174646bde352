//! The CNI protocol: `CNI_*` environment and stdin in, a result or an error JSON on stdout.
//!
//! This layer is our own rather than the `cni-plugin` crate's: that crate rejects cniVersion
//! 0.1.0–0.3.1, has no STATUS or GC, fails delegated DEL/CHECK against plugins that correctly
//! print nothing, and prints `supportedVersions` in random order.

pub mod admission;
pub mod args;
pub mod delegate;
pub mod env;
pub mod lock;
pub mod result;
pub mod version;

use std::io::{Read, Write};
use std::path::PathBuf;

use serde_json::Value;

pub use args::CniArgs;
pub use env::{Command, Invocation};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use version::CniVersion;

use crate::config::NetConf;
use crate::error::{Code, Error, Result};
use crate::log;

/// One invocation of a plugin verb: validated environment plus parsed config.
#[derive(Debug, Clone)]
pub struct Request {
    /// The operation.
    pub command: Command,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`, if set.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_PATH` directories.
    pub cni_path: Vec<PathBuf>,
    /// `CNI_ARGS`.
    pub args: CniArgs,
    /// The network config, parsed and validated.
    pub config: NetConf,
    /// The config's version.
    pub version: CniVersion,
    /// The stdin bytes as received, forwarded unchanged to the IPAM plugin.
    pub raw_config: Vec<u8>,
    /// Where the attachments' lock files live: [`lock::LOCK_DIR`], or `CALICO_CNI_LOCK_DIR`.
    pub lock_dir: PathBuf,
}

impl Request {
    /// The `prevResult` of the config, which CHECK cannot do without. It is part of the network
    /// config, so a malformed one is an invalid config (code 7), as is an `ips[].interface`
    /// that points past the end of `interfaces`.
    pub fn prev_result(&self) -> Result<CniResult> {
        let prev = self
            .config
            .prev_result
            .as_ref()
            .ok_or_else(|| Error::new(Code::InvalidConfig, "required prevResult missing"))?;
        let result = CniResult::from_json(prev).map_err(|e| {
            e.with_code(Code::InvalidConfig)
                .context("decode prevResult")
        })?;
        let count = result.interfaces.len();
        for (i, ip) in result.ips.iter().enumerate() {
            match ip.interface {
                Some(index) if index >= count => {
                    return Err(Error::new(
                        Code::InvalidConfig,
                        format!(
                            "prevResult ips[{i}].interface {index} is out of range: \
                             prevResult has {count} interfaces"
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(result)
    }
}

/// Where an ADD prints its result. Handlers send the result, then commit their rollback
/// guards: a result that could not be printed must not leave state behind.
pub struct Reply<'a> {
    out: &'a mut dyn Write,
    version: CniVersion,
    sent: bool,
}

impl Reply<'_> {
    /// Prints `result` in the request's version shape.
    pub fn send(&mut self, result: &CniResult) -> Result<()> {
        write_json(self.out, &result.to_json(self.version))?;
        self.sent = true;
        Ok(())
    }
}

/// The verbs of a plugin. Verbs a plugin does not implement answer a CNI error.
pub trait Plugin {
    /// The binary's name, used in messages.
    fn name(&self) -> &'static str;

    /// ADD: set up the attachment and send the result through `reply`.
    fn add(&self, req: &Request, reply: &mut Reply<'_>) -> Result<()>;

    /// DEL: undo everything ADD did; success when there is nothing to undo.
    fn del(&self, req: &Request) -> Result<()>;

    /// CHECK: verify the attachment described by `prevResult`.
    fn check(&self, _req: &Request) -> Result<()> {
        Err(not_implemented(self.name(), Command::Check))
    }

    /// STATUS: ready to serve ADD?
    fn status(&self, _req: &Request) -> Result<()> {
        Err(not_implemented(self.name(), Command::Status))
    }

    /// GC: remove state of attachments not in `cni.dev/valid-attachments`.
    fn gc(&self, _req: &Request) -> Result<()> {
        Err(not_implemented(self.name(), Command::Gc))
    }

    /// Whether STATUS and GC work, which is what advertising version 1.1.0 requires.
    fn supports_1_1_0(&self) -> bool {
        false
    }

    /// Whether its ADDs take turns through the node's ADD slots ([`admission`]): the interface
    /// plugin's do; an IPAM plugin's never wait for one, so that nothing that holds a slot
    /// waits on a process that waits for a slot.
    fn takes_add_slots(&self) -> bool {
        false
    }
}

fn not_implemented(plugin: &str, command: Command) -> Error {
    Error::new(
        Code::InvalidEnvironment,
        format!(
            "{plugin} does not implement CNI_COMMAND {}",
            command.as_str()
        ),
    )
}

/// Runs one invocation: reads `CNI_COMMAND`, validates env and config, calls the verb, prints the
/// result or the error JSON on `stdout`. Returns the process exit status (0 or 1).
pub fn run(
    plugin: &dyn Plugin,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> i32 {
    log::set_context(log_context(plugin.name(), env));
    let with_1_1 = plugin.supports_1_1_0();
    let newest = *CniVersion::supported(with_1_1)
        .last()
        .unwrap_or(&CniVersion::V1_0_0);
    let command = match env("CNI_COMMAND").filter(|c| !c.is_empty()) {
        None => Err(Error::new(
            Code::InvalidEnvironment,
            "required env variables [CNI_COMMAND] missing",
        )),
        Some(text) => Command::parse(&text).ok_or_else(|| {
            Error::new(
                Code::InvalidEnvironment,
                format!("unknown CNI_COMMAND: {text}"),
            )
        }),
    };
    let outcome = match command {
        Ok(Command::Version) => print_version(with_1_1, stdin, stdout),
        Ok(command) => dispatch(plugin, command, env, stdin, stdout),
        Err(err) => Err((err, newest.as_str().to_string())),
    };
    match outcome {
        Ok(()) => 0,
        Err((err, version)) => {
            log::error(&format!("request failed: {err}"));
            let _ = write_json(stdout, &err.to_json(&version));
            1
        }
    }
}

/// Who every log entry of this request names: read leniently from the raw variables, so that
/// entries about a malformed environment still carry the container.
fn log_context(plugin: &str, env: &dyn Fn(&str) -> Option<String>) -> log::LogContext {
    let pod = env("CNI_ARGS")
        .and_then(|raw| CniArgs::parse(&raw).ok())
        .and_then(|args| {
            args.k8s_pod()
                .map(|(namespace, name)| format!("{namespace}/{name}"))
        });
    log::LogContext {
        plugin: plugin.to_string(),
        container_id: env("CNI_CONTAINERID").filter(|id| !id.is_empty()),
        pod,
    }
}

/// An error together with the `cniVersion` to print it under.
type Failure = (Error, String);

fn dispatch(
    plugin: &dyn Plugin,
    command: Command,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> std::result::Result<(), Failure> {
    let fallback = CniVersion::supported(plugin.supports_1_1_0())
        .last()
        .map_or("1.0.0", |v| v.as_str());
    let fail = |err: Error| (err, fallback.to_string());
    let invocation = Invocation::from_env(command, env).map_err(fail)?;
    let mut raw_config = Vec::new();
    stdin.read_to_end(&mut raw_config).map_err(|e| {
        fail(Error::new(
            Code::Io,
            format!("read network config from stdin: {e}"),
        ))
    })?;
    let config = NetConf::parse(&raw_config, env).map_err(|err| {
        let version = version::requested_in(&raw_config).unwrap_or_else(|| fallback.to_string());
        (err, version)
    })?;
    let config_version = version::requested(config.cni_version.as_deref());
    let fail = |err: Error| (err, config_version.clone());
    log::set_level(config.log_level);
    log::set_file(config.log_file.as_deref());
    let version = check_version(&config_version, command, plugin.supports_1_1_0()).map_err(fail)?;
    let req = Request {
        command,
        container_id: invocation.container_id,
        netns: invocation.netns,
        ifname: invocation.ifname,
        cni_path: invocation.cni_path,
        args: invocation.args,
        config,
        version,
        raw_config,
        lock_dir: env(lock::LOCK_DIR_ENV)
            .filter(|dir| !dir.is_empty())
            .map_or_else(|| PathBuf::from(lock::LOCK_DIR), PathBuf::from),
    };
    log::debug(&format!(
        "{} {} container {} ifname {}",
        plugin.name(),
        command.as_str(),
        req.container_id,
        req.ifname
    ));
    let add_slots = (plugin.takes_add_slots() && admission::takes_a_slot(command, env))
        .then(|| admission::add_slots(env))
        .transpose()
        .map_err(fail)?;
    let _attachment_lock = match command {
        Command::Add | Command::Del | Command::Check => Some(
            lock::AttachmentLock::acquire(
                &req.lock_dir,
                plugin.name(),
                &req.container_id,
                &req.ifname,
            )
            .map_err(fail)?,
        ),
        Command::Status | Command::Gc | Command::Version => None,
    };
    // After the attachment's lock: a slot is never held while waiting for that one.
    let _add_slot = add_slots.map(|slots| admission::AddSlot::take(&req.lock_dir, slots));
    run_verb(plugin, &req, stdout).map_err(fail)
}

/// Runs the verb's handler; an ADD must have printed its result.
fn run_verb(plugin: &dyn Plugin, req: &Request, stdout: &mut dyn Write) -> Result<()> {
    let version = req.version;
    match req.command {
        Command::Add => {
            let mut reply = Reply {
                out: stdout,
                version,
                sent: false,
            };
            plugin.add(req, &mut reply)?;
            if !reply.sent {
                return Err(Error::internal(format!(
                    "{} ADD printed no result",
                    plugin.name()
                )));
            }
            Ok(())
        }
        Command::Del => plugin.del(req),
        Command::Check => plugin.check(req),
        Command::Status => plugin.status(req),
        Command::Gc => plugin.gc(req),
        Command::Version => Ok(()),
    }
}

/// The config's version must be one we advertise, and new enough for the command.
fn check_version(text: &str, command: Command, with_1_1: bool) -> Result<CniVersion> {
    let supported = CniVersion::supported(with_1_1);
    let version = CniVersion::parse(text)
        .filter(|v| supported.contains(v))
        .ok_or_else(|| {
            Error::new(Code::IncompatibleVersion, "incompatible CNI versions").with_details(
                format!(
                    "config is {text:?}, plugin supports [{}]",
                    CniVersion::supported_strings(with_1_1).join(", ")
                ),
            )
        })?;
    let minimum = match command {
        Command::Check => CniVersion::V0_4_0,
        Command::Status | Command::Gc => CniVersion::V1_1_0,
        _ => CniVersion::V0_1_0,
    };
    if version < minimum {
        return Err(Error::new(
            Code::IncompatibleVersion,
            format!(
                "config version {version} does not allow {}",
                command.as_str()
            ),
        )
        .with_details(format!(
            "{} needs cniVersion {minimum} or later",
            command.as_str()
        )));
    }
    Ok(version)
}

/// VERSION needs only `CNI_COMMAND`. Its `cniVersion` echoes the input's when we support it.
/// Stdin that is absent or cannot be parsed is ignored, as the reference skeleton does, and
/// then counts as a config without `cniVersion`: the default version.
fn print_version(
    with_1_1: bool,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> std::result::Result<(), Failure> {
    let mut input = Vec::new();
    let _ = stdin.read_to_end(&mut input);
    let requested = serde_json::from_slice::<Value>(&input).ok().and_then(|v| {
        let text = v
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or(version::DEFAULT_VERSION.as_str())
            .to_string();
        CniVersion::parse(&text)
    });
    let shown = requested
        .filter(|v| CniVersion::supported(with_1_1).contains(v))
        .unwrap_or(version::DEFAULT_VERSION);
    let reply = serde_json::json!({
        "cniVersion": shown.as_str(),
        "supportedVersions": CniVersion::supported_strings(with_1_1),
    });
    write_json(stdout, &reply).map_err(|e| (e, shown.as_str().to_string()))
}

fn write_json(out: &mut dyn Write, value: &Value) -> Result<()> {
    let mut text = serde_json::to_vec(value)?;
    text.push(b'\n');
    out.write_all(&text)
        .map_err(|e| Error::new(Code::Io, format!("write to stdout: {e}")))?;
    out.flush()
        .map_err(|e| Error::new(Code::Io, format!("flush stdout: {e}")))
}

#[cfg(test)]
mod tests;
