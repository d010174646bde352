//! `calico`: the Calico CNI interface plugin.

mod add;
mod attachment;
mod check;
mod crash;
mod del;
mod endpoint;
mod ipam;
mod labels;
mod network;
mod pod;
mod status;
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
        del::gc(req)
    }

    fn supports_1_1_0(&self) -> bool {
        true
    }
}

fn main() {
    if std::env::args()
        .nth(1)
        .is_some_and(|a| a == "-v" || a == "--version")
    {
        println!("{}", env!("CARGO_PKG_VERSION"));
        return;
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
