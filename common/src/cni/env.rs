//! The `CNI_*` environment: which variables each command needs, and their validation.

use std::path::PathBuf;

use super::args::CniArgs;
use crate::dataplane::veth::ifname_problem;
use crate::error::{Code, Error, Result};
use crate::name_rule::{NAME_RULE, is_valid_name};

/// A CNI operation named by `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach the container to the network.
    Add,
    /// Detach; idempotent.
    Del,
    /// Verify an earlier ADD (0.4.0+).
    Check,
    /// Report readiness (1.1.0+).
    Status,
    /// Remove leftovers of attachments not listed as valid (1.1.0+).
    Gc,
    /// Report supported versions.
    Version,
}

impl Command {
    /// Parses the value of `CNI_COMMAND`.
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    /// The `CNI_COMMAND` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// The variables the command cannot run without, in the order errors list them.
    fn required_vars(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => {
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
            }
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
            Command::Status | Command::Gc => &["CNI_PATH"],
            Command::Version => &[],
        }
    }
}

/// What the environment says about one invocation, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The operation.
    pub command: Command,
    /// `CNI_CONTAINERID` (empty for STATUS and GC).
    pub container_id: String,
    /// `CNI_NETNS`; `None` when unset or empty (allowed for DEL).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (empty for STATUS and GC).
    pub ifname: String,
    /// `CNI_PATH`, split on `:`.
    pub cni_path: Vec<PathBuf>,
    /// `CNI_ARGS`, parsed.
    pub args: CniArgs,
}

impl Invocation {
    /// Reads and validates the variables `command` needs. Every missing variable is named in
    /// one error (code 4), as the reference skeleton does; libcni passes unset ones as "".
    pub fn from_env(command: Command, env: &dyn Fn(&str) -> Option<String>) -> Result<Invocation> {
        let get = |name: &str| env(name).filter(|v| !v.is_empty());
        let missing: Vec<&str> = command
            .required_vars()
            .iter()
            .copied()
            .filter(|name| get(name).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(Error::new(
                Code::InvalidEnvironment,
                format!("required env variables [{}] missing", missing.join(",")),
            ));
        }
        let container_id = get("CNI_CONTAINERID").unwrap_or_default();
        let ifname = get("CNI_IFNAME").unwrap_or_default();
        let needs = |var: &str| command.required_vars().contains(&var);
        if needs("CNI_CONTAINERID") {
            validate_container_id(&container_id)?;
        }
        if needs("CNI_IFNAME") {
            validate_ifname(&ifname)?;
        }
        let netns = get("CNI_NETNS").map(PathBuf::from);
        let enters_netns = matches!(command, Command::Add | Command::Check | Command::Del);
        if let (true, Some(path)) = (enters_netns, &netns) {
            validate_netns_path(path)?;
        }
        Ok(Invocation {
            command,
            container_id,
            netns,
            ifname,
            cni_path: get("CNI_PATH")
                .map(|p| {
                    p.split(':')
                        .filter(|d| !d.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default(),
            args: CniArgs::parse(&env("CNI_ARGS").unwrap_or_default())?,
        })
    }
}

/// Container ids follow [`NAME_RULE`] (the spec's rule; upper case is allowed).
pub fn validate_container_id(id: &str) -> Result<()> {
    if is_valid_name(id) {
        Ok(())
    } else {
        Err(Error::new(
            Code::InvalidEnvironment,
            format!("invalid CNI_CONTAINERID {id:?}: must match {NAME_RULE}"),
        ))
    }
}

/// `CNI_NETNS` must be absolute: a relative path would be resolved against whatever directory
/// the runtime happened to start the plugin in.
pub fn validate_netns_path(path: &std::path::Path) -> Result<()> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(Error::new(
            Code::InvalidEnvironment,
            format!("CNI_NETNS {:?} is not an absolute path", path.display()),
        ))
    }
}

/// Interface names follow the kernel's rules ([`ifname_problem`]); a bad one is code 4.
pub fn validate_ifname(name: &str) -> Result<()> {
    match ifname_problem(name) {
        None => Ok(()),
        Some(problem) => Err(Error::new(
            Code::InvalidEnvironment,
            format!("CNI_IFNAME {name:?} {problem}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn every_missing_variable_is_named() {
        let err =
            Invocation::from_env(Command::Add, &env_of(&[("CNI_IFNAME", "eth0")])).unwrap_err();
        assert_eq!(err.code(), Code::InvalidEnvironment);
        assert_eq!(
            err.msg(),
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_PATH] missing"
        );
    }

    #[test]
    fn del_does_not_need_netns() {
        let env = env_of(&[
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/a:/b"),
            ("CNI_NETNS", ""),
        ]);
        let inv = Invocation::from_env(Command::Del, &env).unwrap();
        assert_eq!(inv.netns, None);
        assert_eq!(inv.cni_path, [PathBuf::from("/a"), PathBuf::from("/b")]);
    }

    #[test]
    fn status_needs_only_path() {
        let inv = Invocation::from_env(Command::Status, &env_of(&[("CNI_PATH", "/x")])).unwrap();
        assert!(inv.container_id.is_empty());
    }

    #[test]
    fn container_ids() {
        for ok in ["a", "ABC123", "cnitool-0123abcd", "x_y.z-1"] {
            assert!(validate_container_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", ".", "..", "a/b", "a b", "a:b", "é", "a\nb"] {
            assert_eq!(
                validate_container_id(bad).unwrap_err().code(),
                Code::InvalidEnvironment,
                "{bad}"
            );
        }
    }

    #[test]
    fn relative_netns_is_refused_for_verbs_that_enter_it() {
        for command in [Command::Add, Command::Check, Command::Del] {
            let env = env_of(&[
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/bin"),
                ("CNI_NETNS", "run/netns/x"),
            ]);
            let err = Invocation::from_env(command, &env).unwrap_err();
            assert_eq!(err.code(), Code::InvalidEnvironment);
            assert!(err.msg().contains("run/netns/x"), "{}", err.msg());
        }
        // libcni's VERSION sends CNI_NETNS=dummy; STATUS and GC never look at it.
        for command in [Command::Version, Command::Status, Command::Gc] {
            let env = env_of(&[("CNI_PATH", "/bin"), ("CNI_NETNS", "dummy")]);
            assert!(Invocation::from_env(command, &env).is_ok(), "{command:?}");
        }
    }

    #[test]
    fn interface_names() {
        for ok in ["eth0", "a", "123456789012345", "net-1_a.b"] {
            assert!(validate_ifname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "1234567890123456",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
        ] {
            assert_eq!(
                validate_ifname(bad).unwrap_err().code(),
                Code::InvalidEnvironment,
                "{bad:?}"
            );
        }
    }
}
