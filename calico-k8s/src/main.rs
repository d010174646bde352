//! `calico-k8s`: the Kubernetes API reads of `calico` (see `common::kubernetes` for the
//! exchange). Prints the answer as JSON, or the CNI error JSON with exit status 1.

use std::io::{Read, Write};

use common::config::NetConf;
use common::kubernetes::Query;
use common::{Code, Error, Result};

const USAGE: &str = "\
calico-k8s: the Kubernetes API reads of the calico CNI plugin

calico runs it, with the network config on stdin, for policy.type k8s and usePodCidr:
  calico-k8s [--node-pod-cidr <node>] [--pod <namespace> <name>] < network-config
It prints {\"nodePodCIDR\": ..., \"pod\": {\"labels\": ..., \"annotations\": ...}}.

By hand:
  calico-k8s --help | --version
";

fn answer(args: &[String], stdin: &mut dyn Read) -> Result<serde_json::Value> {
    let query = Query::from_args(args)?;
    let mut config = Vec::new();
    stdin
        .read_to_end(&mut config)
        .map_err(|e| Error::new(Code::Io, format!("read the network config from stdin: {e}")))?;
    let env = |name: &str| std::env::var(name).ok();
    let conf = NetConf::parse(&config, &env)?;
    Ok(serde_json::to_value(calico_k8s::answer(&conf, &query)?)?)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("-v" | "--version") => {
            println!("{}", common::version_line("calico-k8s"));
            return;
        }
        Some("-h" | "--help") => {
            print!("{USAGE}");
            return;
        }
        _ => {}
    }
    let (json, status) = match answer(&args, &mut std::io::stdin().lock()) {
        Ok(json) => (json, 0),
        // The plugin reads only code, msg and details; the version is the one it defaults to.
        Err(err) => (
            err.to_json(common::cni::version::DEFAULT_VERSION.as_str()),
            1,
        ),
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{json}");
    let _ = stdout.flush();
    std::process::exit(status);
}
