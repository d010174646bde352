//! The Kubernetes API reads of `calico`, done by the `calico-k8s` binary: this module runs it
//! and reads its answer. `calico` needs the API only in Kubernetes mode (`policy.type: k8s`) or
//! for host-local's `usePodCidr`; keeping the client (kube, k8s-openapi, their TLS stack) in a
//! binary of its own means every other run neither links nor loads it.
//!
//! The exchange: `calico-k8s [--node-pod-cidr <node>] [--pod <namespace> <name>]` with the
//! network config on stdin (the client settings are its `kubernetes` and `policy` keys) prints
//! an [`Answer`] as JSON and exits 0, or prints the CNI error JSON and exits 1. Both binaries
//! come from one build, so the exchange carries no version of its own.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{Code, Context, Error, Kind, Result, codes};

/// The file name of the helper binary.
pub const HELPER: &str = "calico-k8s";

/// What the plugin reads from a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// `metadata.labels` (empty when the pod has none).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations` (empty when the pod has none).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The reads one run asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// The node whose `spec.podCIDR` is wanted.
    pub node_pod_cidr: Option<String>,
    /// The pod (namespace, name) whose labels and annotations are wanted.
    pub pod: Option<(String, String)>,
}

impl Query {
    /// The helper's command-line arguments for this query.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(node) = &self.node_pod_cidr {
            args.extend(["--node-pod-cidr".to_string(), node.clone()]);
        }
        if let Some((namespace, name)) = &self.pod {
            args.extend(["--pod".to_string(), namespace.clone(), name.clone()]);
        }
        args
    }

    /// Parses the helper's command-line arguments (without the program name). A query that asks
    /// for nothing is refused: it would be a mistake of the caller.
    pub fn from_args(args: &[String]) -> Result<Query> {
        let usage = |msg: String| {
            Error::new(
                Code::InvalidEnvironment,
                format!(
                    "{msg}; usage: {HELPER} [--node-pod-cidr <node>] [--pod <namespace> <name>]"
                ),
            )
        };
        let mut query = Query::default();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let mut value = || {
                rest.next()
                    .cloned()
                    .ok_or_else(|| usage(format!("{arg} needs a value")))
            };
            match arg.as_str() {
                "--node-pod-cidr" => query.node_pod_cidr = Some(value()?),
                "--pod" => query.pod = Some((value()?, value()?)),
                other => return Err(usage(format!("unknown argument {other:?}"))),
            }
        }
        if query == Query::default() {
            return Err(usage("nothing to read".to_string()));
        }
        Ok(query)
    }
}

/// What the API said, for the reads the [`Query`] asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The node's `spec.podCIDR`; `None` when not asked for, unset or empty.
    #[serde(
        rename = "nodePodCIDR",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub node_pod_cidr: Option<String>,
    /// The pod, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
}

/// Runs the helper for `query` with `network_config` (the raw network config) on stdin and
/// returns its answer. An error the helper reports keeps its code and message, so the runtime
/// sees the same error as if the plugin had made the request itself (an unreachable API server
/// stays code 11, "try again later").
pub fn read(query: &Query, network_config: &[u8], cni_path: &[PathBuf]) -> Result<Answer> {
    let helper = find_helper(&own_dir(), cni_path)?;
    let mut child = Command::new(&helper)
        .args(query.to_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("execute {}", helper.display()))
        .code(codes::KUBERNETES)?;
    if let Some(mut input) = child.stdin.take() {
        // A helper that exits without reading stdin closes the pipe; its exit status tells.
        let _ = input.write_all(network_config);
    }
    let output = child
        .wait_with_output()
        .with_context(|| format!("wait for {}", helper.display()))
        .code(codes::KUBERNETES)?;
    if !output.status.success() {
        return Err(helper_error(&helper, &output.stdout, output.status));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| {
        Error::new(
            codes::KUBERNETES,
            format!("{} printed no valid answer: {e}", helper.display()),
        )
    })
}

/// The directory of the running executable (`/proc/self/exe`, symlinks resolved).
fn own_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
}

/// The helper next to the running executable, else the first in `cni_path`. The copy beside
/// the plugin comes from the same build, which the unversioned exchange relies on; `CNI_PATH`
/// serves installations that place the plugin apart from the rest of its binaries.
pub fn find_helper(own_dir: &Option<PathBuf>, cni_path: &[PathBuf]) -> Result<PathBuf> {
    own_dir
        .iter()
        .chain(cni_path)
        .map(|dir| dir.join(HELPER))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            let dirs: Vec<String> = own_dir
                .iter()
                .chain(cni_path)
                .map(|d| d.display().to_string())
                .collect();
            Error::new(
                codes::KUBERNETES,
                format!(
                    "{HELPER} not found in [{}]: it reads the Kubernetes API for policy.type k8s \
                     and usePodCidr and is installed next to calico",
                    dirs.join(",")
                ),
            )
            .with_kind(Kind::NotFound)
        })
}

/// The helper's error JSON as our error, code, message and details unchanged; anything else
/// (a crash, a signal) is a Kubernetes error naming the exit status.
fn helper_error(helper: &Path, stdout: &[u8], status: std::process::ExitStatus) -> Error {
    #[derive(Deserialize)]
    struct Reported {
        code: u32,
        msg: String,
        #[serde(default)]
        details: Option<String>,
    }
    match serde_json::from_slice::<Reported>(stdout) {
        Ok(reported) => {
            let code = Code::from_number(reported.code);
            let mut err = Error::new(code, reported.msg);
            if code == Code::TryAgainLater {
                err = err.with_kind(Kind::TryAgainLater);
            }
            match reported.details.filter(|d| !d.is_empty()) {
                Some(details) => err.with_details(details),
                None => err,
            }
        }
        Err(_) => Error::new(
            codes::KUBERNETES,
            format!(
                "{} failed with {status}: {}",
                helper.display(),
                String::from_utf8_lossy(stdout).trim()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn queries_survive_the_command_line() {
        let queries = [
            Query {
                node_pod_cidr: Some("node-1".into()),
                pod: None,
            },
            Query {
                node_pod_cidr: None,
                pod: Some(("prod".into(), "web-1".into())),
            },
            Query {
                node_pod_cidr: Some("node-1".into()),
                pod: Some(("prod".into(), "--pod".into())),
            },
        ];
        for query in queries {
            assert_eq!(Query::from_args(&query.to_args()).unwrap(), query);
        }
    }

    #[test]
    fn bad_helper_arguments_are_refused_with_the_usage() {
        for bad in [
            &[][..],
            &["--pod", "prod"][..],
            &["--node-pod-cidr"][..],
            &["--node", "n1"][..],
        ] {
            let err = Query::from_args(&args(bad)).unwrap_err();
            assert_eq!(err.code(), Code::InvalidEnvironment, "{bad:?}");
            assert!(err.msg().contains("usage:"), "{bad:?}: {err:?}");
        }
    }

    #[test]
    fn answer_json_uses_the_api_field_name() {
        let answer = Answer {
            node_pod_cidr: Some("10.1.0.0/24".into()),
            pod: Some(Pod::default()),
        };
        let json = serde_json::to_value(&answer).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"nodePodCIDR": "10.1.0.0/24",
                               "pod": {"labels": {}, "annotations": {}}})
        );
        assert_eq!(serde_json::from_value::<Answer>(json).unwrap(), answer);
        let empty: Answer = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, Answer::default());
    }

    #[test]
    fn helper_next_to_the_executable_wins_over_cni_path() {
        let own = std::env::temp_dir().join(format!("calico-k8s-own-{}", std::process::id()));
        let path = std::env::temp_dir().join(format!("calico-k8s-path-{}", std::process::id()));
        for dir in [&own, &path] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(HELPER), "").unwrap();
        }
        let cni_path = [PathBuf::from("/nonexistent"), path.clone()];
        let found = find_helper(&Some(own.clone()), &cni_path).unwrap();
        assert_eq!(found, own.join(HELPER));
        std::fs::remove_dir_all(&own).unwrap();
        let found = find_helper(&Some(own.clone()), &cni_path).unwrap();
        assert_eq!(found, path.join(HELPER));
        std::fs::remove_dir_all(&path).unwrap();
        let err = find_helper(&Some(own.clone()), &cni_path).unwrap_err();
        assert_eq!(err.code(), codes::KUBERNETES);
        assert!(err.is_not_found());
        for dir in [&own, &path] {
            assert!(err.msg().contains(&dir.display().to_string()), "{err:?}");
        }
    }

    #[test]
    fn helper_errors_keep_their_code_and_message() {
        let status = std::process::Command::new("false").status().unwrap();
        let helper = Path::new("/x/calico-k8s");
        let err = helper_error(
            helper,
            br#"{"cniVersion":"1.0.0","code":11,"msg":"get pod a/b from https://k: cannot reach the API server"}"#,
            status,
        );
        assert_eq!(err.code(), Code::TryAgainLater);
        assert_eq!(err.kind(), Kind::TryAgainLater);
        assert_eq!(
            err.msg(),
            "get pod a/b from https://k: cannot reach the API server"
        );
        let err = helper_error(
            helper,
            br#"{"code":107,"msg":"forbidden","details":"x"}"#,
            status,
        );
        assert_eq!((err.code(), err.details()), (codes::KUBERNETES, Some("x")));
        let err = helper_error(helper, b"", status);
        assert_eq!(err.code(), codes::KUBERNETES);
        assert!(err.msg().contains("/x/calico-k8s failed with"), "{err:?}");
    }
}
