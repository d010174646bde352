//! `calico`: the Calico CNI interface plugin.

mod add;
mod attachment;
mod check;
mod combined;
mod del;
mod endpoint;
mod first_read;
mod gc;
mod ipam_delegation;
mod join;
mod labels;
mod network;
mod pod;
mod policy;
mod profile;
mod ready;
mod status;
mod teardown_commit;
mod workload;

use common::cni::{self, Plugin, Reply, Request};

struct Calico;

impl Plugin for Calico {
    fn name(&self) -> &'static str {
        "calico"
    }

    fn add(&self, req: &Request, reply: &mut Reply<'_>) -> common::Result<()> {
        add::add(req, reply)
    }

    fn del(&self, req: &Request) -> common::Result<()> {
        del::del(req)
    }

    fn check(&self, req: &Request) -> common::Result<()> {
        check::check(req)
    }

    fn status(&self, req: &Request) -> common::Result<()> {
        status::status(req)
    }

    fn gc(&self, req: &Request) -> common::Result<()> {
        gc::gc(req)
    }

    fn supports_1_1_0(&self) -> bool {
        true
    }

    fn takes_add_slots(&self) -> bool {
        true
    }
}

const USAGE: &str = "\
calico: the Calico CNI plugin (veth, routes and workload endpoint in etcd)

Run by a container runtime with CNI_COMMAND set and the network config on stdin:
  ADD      creates the veth pair, gets addresses from IPAM (calico-ipam runs in process
           unless CALICO_IPAM_EXEC=1 or ipam_in_process is false), writes the endpoint
  DEL      releases the addresses and removes the veth, endpoint and attachment record
  CHECK    compares the veth, addresses, routes and endpoint with prevResult
  STATUS   fails while etcd is unreachable or not Ready, then asks the IPAM plugin
           (cniVersion 1.1.0)
  GC       tears down the attachments of the network on the node that are not in
           cni.dev/valid-attachments, then runs the IPAM plugin's GC (cniVersion 1.1.0)
  VERSION  prints the supported CNI versions

By hand:
  calico --help | --version

Operator commands live in calico-ipam (see calico-ipam --help):
  calico-ipam pool add <cidr> | pool list | pool rm <cidr>
                                      manage IP pools
  calico-ipam show [--ip <addr>]      pools, nodes' blocks, or who holds one address
  calico-ipam check                   report allocations, handles, affinities and records
                                      that disagree with each other
  calico-ipam release --ip <addr> | --handle <id>
  calico-ipam gc --node <node> --network <name> [--dry-run]
";

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("-v" | "--version") => {
            println!("{}", common::version_line("calico"));
            return;
        }
        Some("-h" | "--help") if std::env::var_os("CNI_COMMAND").is_none() => {
            print!("{USAGE}");
            return;
        }
        _ => {}
    }
    let env = |name: &str| std::env::var(name).ok();
    let status = cni::run(
        &Calico,
        &env,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
    );
    std::process::exit(status);
}
