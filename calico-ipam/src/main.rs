//! `calico-ipam`: Calico's IPAM plugin. Under `CNI_COMMAND` it serves the CNI verbs (ADD, DEL,
//! CHECK, STATUS, GC, VERSION); run by hand with arguments it is the operator's command for IP
//! pools, usage, consistency checks, releases and GC.

mod admin;
mod collect;
mod operate;
mod plugin;

use common::cni;

fn main() {
    let env = |name: &str| std::env::var(name).ok();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let status = if env("CNI_COMMAND").is_none() && !args.is_empty() {
        admin::run(
            &args,
            &env,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )
    } else {
        cni::run(
            &plugin::CalicoIpam,
            &env,
            &mut std::io::stdin().lock(),
            &mut std::io::stdout().lock(),
        )
    };
    std::process::exit(status);
}
