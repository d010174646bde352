//! Running the IPAM plugin named by `ipam.type`: found on `CNI_PATH`, same environment with
//! `CNI_COMMAND` changed, the full network config on stdin.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use serde_json::Value;

use super::Request;
use super::env::Command;
use super::result::CniResult;
use super::version::CniVersion;
use crate::error::{Code, Context, Error, Result, codes};
use crate::log;

/// Finds `plugin` in the `CNI_PATH` directories: the first directory holding a regular file of
/// that name wins. A name containing `/` is refused, as the reference `FindInPath` does, so a
/// config cannot point the plugin at an arbitrary executable.
pub fn find_plugin(plugin: &str, cni_path: &[PathBuf]) -> Result<PathBuf> {
    if plugin.is_empty() || plugin.contains('/') {
        return Err(Error::new(
            Code::InvalidConfig,
            format!("invalid plugin name {plugin:?}"),
        ));
    }
    cni_path
        .iter()
        .map(|dir| dir.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let dirs: Vec<String> = cni_path.iter().map(|d| d.display().to_string()).collect();
            Error::new(
                codes::IPAM,
                format!(
                    "failed to find plugin {plugin:?} in path [{}]",
                    dirs.join(",")
                ),
            )
            .with_kind(crate::error::Kind::NotFound)
        })
}

/// Runs the IPAM plugin for ADD and returns what it printed. Once the plugin succeeded it holds
/// addresses for the attachment, whatever it printed: should [`ipam_result`] find the result
/// unusable, the caller releases them with IPAM DEL.
pub fn ipam_add(req: &Request) -> Result<Vec<u8>> {
    exec_ipam(req, Command::Add, &req.raw_config)
}

/// The result the IPAM plugin printed for ADD (`stdout`), whatever version shape; an error
/// when it cannot be used (not JSON, no addresses).
pub fn ipam_result(req: &Request, stdout: &[u8]) -> Result<CniResult> {
    usable_result(stdout).map_err(|err| {
        err.with_code(codes::IPAM).context(format!(
            "ipam plugin {} ADD",
            req.config.ipam.plugin.binary_name()
        ))
    })
}

fn usable_result(stdout: &[u8]) -> Result<CniResult> {
    let value: Value = serde_json::from_slice(stdout)
        .map_err(|e| Error::new(codes::IPAM, format!("printed no valid JSON: {e}")))?;
    let result = CniResult::from_json(&value)?;
    if result.ips.is_empty() {
        return Err(Error::new(codes::IPAM, "returned missing IP config"));
    }
    Ok(result)
}

/// Runs the IPAM plugin for a command whose success prints nothing (DEL, CHECK, STATUS, GC).
/// `stdin` is the config to send: usually the raw config, rewritten where a verb needs it.
pub fn ipam_exec(req: &Request, command: Command, stdin: &[u8]) -> Result<()> {
    exec_ipam(req, command, stdin).map(|_| ())
}

/// Set on every delegated plugin: how many plugins above it delegated. A plugin that would
/// delegate past [`MAX_DELEGATION_DEPTH`] refuses, so no config (an IPAM type naming a copy of
/// the plugin, two plugins naming each other) can make plugins execute each other without end.
pub const DELEGATION_DEPTH_ENV: &str = "CALICO_CNI_DELEGATION_DEPTH";

/// How deep delegation may go: an interface plugin and its IPAM plugin need one level.
const MAX_DELEGATION_DEPTH: u32 = 2;

fn exec_ipam(req: &Request, command: Command, stdin: &[u8]) -> Result<Vec<u8>> {
    let plugin = req.config.ipam.plugin.binary_name();
    let path = find_plugin(plugin, &req.cni_path)?;
    refuse_self(plugin, &path)?;
    refuse_deep_delegation(plugin)?;
    match exec_plugin(&path, command, req, stdin) {
        Err(err) if needs_1_0_0(req, command, &err) => {
            log::info(&format!(
                "ipam plugin {plugin} does not speak 1.1.0: asking again with 1.0.0"
            ));
            exec_plugin(
                &path,
                command,
                req,
                &with_version(stdin, CniVersion::V1_0_0)?,
            )
        }
        outcome => outcome,
    }
}

/// An IPAM type that resolves to the running binary would have the plugin execute itself on
/// every run, each copy executing the next.
fn refuse_self(plugin: &str, path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let same_file = match (std::fs::metadata(path), std::fs::metadata("/proc/self/exe")) {
        (Ok(found), Ok(own)) => found.dev() == own.dev() && found.ino() == own.ino(),
        _ => false,
    };
    if same_file {
        return Err(Error::new(
            Code::InvalidConfig,
            format!(
                "ipam type {plugin:?} is this plugin itself ({}): name an IPAM plugin such as \
                 calico-ipam or host-local",
                path.display()
            ),
        ));
    }
    Ok(())
}

fn refuse_deep_delegation(plugin: &str) -> Result<()> {
    let depth = delegation_depth();
    if depth >= MAX_DELEGATION_DEPTH {
        return Err(Error::new(
            Code::InvalidConfig,
            format!(
                "ipam type {plugin:?}: plugins already delegated {depth} levels deep \
                 ({DELEGATION_DEPTH_ENV}); an IPAM plugin that delegates again is refused"
            ),
        ));
    }
    Ok(())
}

/// This process's depth of delegation: 0 when the runtime started it.
fn delegation_depth() -> u32 {
    std::env::var(DELEGATION_DEPTH_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// IPAM plugins built before 1.1.0 (such as the reference host-local of Debian 12) refuse a
/// 1.1.0 config. For ADD, DEL and CHECK nothing the IPAM plugin reads or prints differs between
/// 1.0.0 and 1.1.0, so the request is repeated as 1.0.0; STATUS and GC exist only in 1.1.0 and
/// keep the plugin's answer.
fn needs_1_0_0(req: &Request, command: Command, err: &Error) -> bool {
    req.version == CniVersion::V1_1_0
        && matches!(command, Command::Add | Command::Del | Command::Check)
        && err.code() == Code::IncompatibleVersion
}

fn with_version(stdin: &[u8], version: CniVersion) -> Result<Vec<u8>> {
    let mut config: Value = serde_json::from_slice(stdin)?;
    if let Some(object) = config.as_object_mut() {
        object.insert("cniVersion".to_string(), version.as_str().into());
    }
    Ok(serde_json::to_vec(&config)?)
}

/// Executes a plugin binary. Its stderr is copied to ours; a non-zero exit turns its error JSON
/// into our error with the plugin's own code and message, unchanged, so the runtime sees what
/// the plugin said.
fn exec_plugin(path: &Path, command: Command, req: &Request, stdin: &[u8]) -> Result<Vec<u8>> {
    let join = |dirs: &[PathBuf]| {
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    };
    let mut child = Process::new(path)
        .env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", &req.container_id)
        .env(
            "CNI_NETNS",
            req.netns
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        )
        .env("CNI_IFNAME", &req.ifname)
        .env("CNI_PATH", join(&req.cni_path))
        .env("CNI_ARGS", req.args.for_delegate())
        .env(DELEGATION_DEPTH_ENV, (delegation_depth() + 1).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("execute ipam plugin {}", path.display()))
        .code(codes::IPAM)?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin that exits without reading stdin closes the pipe; its exit status tells.
        let _ = input.write_all(stdin);
    }
    let output = child
        .wait_with_output()
        .with_context(|| format!("wait for {}", path.display()))?;
    let _ = std::io::stderr().write_all(&output.stderr);
    if output.status.success() {
        return Ok(output.stdout);
    }
    Err(plugin_error(&output.stdout, &output.stderr, output.status))
}

fn plugin_error(stdout: &[u8], stderr: &[u8], status: std::process::ExitStatus) -> Error {
    let parsed: Option<Value> = serde_json::from_slice(stdout).ok();
    let code = parsed
        .as_ref()
        .and_then(|v| v.get("code"))
        .and_then(Value::as_u64);
    let msg = parsed
        .as_ref()
        .and_then(|v| v.get("msg"))
        .and_then(Value::as_str);
    match (code, msg) {
        (Some(code), Some(msg)) => {
            let err = Error::new(Code::from_number(code as u32), msg);
            match parsed
                .as_ref()
                .and_then(|v| v.get("details"))
                .and_then(Value::as_str)
            {
                Some(details) if !details.is_empty() => err.with_details(details),
                _ => err,
            }
        }
        _ => {
            let text = String::from_utf8_lossy(if stdout.is_empty() { stderr } else { stdout });
            Error::new(
                codes::IPAM,
                format!("ipam plugin failed with {status}: {}", text.trim()),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_a_slash_are_refused() {
        let err = find_plugin("../bin/sh", &[PathBuf::from("/usr/bin")]).unwrap_err();
        assert_eq!(err.code(), Code::InvalidConfig);
    }

    #[test]
    fn first_directory_with_the_file_wins() {
        let found = find_plugin(
            "sh",
            &[
                PathBuf::from("/nonexistent"),
                PathBuf::from("/bin"),
                PathBuf::from("/usr/bin"),
            ],
        );
        assert_eq!(found.unwrap(), PathBuf::from("/bin/sh"));
    }

    #[test]
    fn missing_plugin_names_the_path() {
        let err = find_plugin("no-such-ipam", &[PathBuf::from("/nonexistent")]).unwrap_err();
        assert!(
            err.msg().contains("no-such-ipam") && err.msg().contains("/nonexistent"),
            "{}",
            err.msg()
        );
        assert!(err.is_not_found());
    }

    #[test]
    fn plugin_error_json_keeps_its_code() {
        let status = std::process::Command::new("false").status().unwrap();
        let err = plugin_error(
            br#"{"code":7,"msg":"bad range","details":"10.0.0.0/31"}"#,
            b"",
            status,
        );
        assert_eq!(err.code(), Code::InvalidConfig);
        assert_eq!(err.msg(), "bad range");
        assert_eq!(err.details(), Some("10.0.0.0/31"));
        let err = plugin_error(b"", b"panic: oops\n", status);
        assert_eq!(err.code(), codes::IPAM);
        assert!(err.msg().contains("panic: oops"));
    }
}
