//! The CNI verbs: ADD assigns addresses under the attachment's handle (`<network>.<container
//! id>`, with `:<ifname>` for an interface other than eth0; it records this node and network),
//! guided by the node's block hint in `ipam.block_hint_dir`; DEL releases everything that handle
//! (and, for eth0, the pre-v1.11.2 handle) holds. The verbs themselves live in
//! `common::ipam::verbs`, which `calico` runs in its own process as well.

use std::net::IpAddr;

use common::cni::{Plugin, Reply, Request};
use common::datastore::Datastore;
use common::ipam::verbs::{self, AssignInputs};
use common::rollback::{Guard, RollbackLog, Undo};
use common::{Code, Result};

/// The `calico-ipam` plugin.
pub struct CalicoIpam;

impl Plugin for CalicoIpam {
    fn name(&self) -> &'static str {
        "calico-ipam"
    }

    fn add(&self, req: &Request, reply: &mut Reply<'_>) -> Result<()> {
        let store = Datastore::connect(&req.config.etcd)?;
        let assigned = verbs::assign_under_node_lock(&store, req, AssignInputs::default());
        let assigned = Assigned {
            store: &store,
            req,
            addresses: assigned.addresses?,
        };
        let mut lease = Guard::new(assigned, &RollbackLog::default());
        reply.send(&verbs::ipam_result(&lease.addresses))?;
        lease.commit();
        Ok(())
    }

    fn del(&self, req: &Request) -> Result<()> {
        let store = Datastore::connect(&req.config.etcd)?;
        verbs::release(&store, req)
    }

    fn check(&self, req: &Request) -> Result<()> {
        let store = Datastore::connect(&req.config.etcd)?;
        verbs::check(&store, req)
    }

    fn status(&self, req: &Request) -> Result<()> {
        let store =
            Datastore::connect(&req.config.etcd).map_err(|e| e.with_code(Code::NotAvailable))?;
        verbs::status(&store, req)
    }

    fn gc(&self, req: &Request) -> Result<()> {
        let store = Datastore::connect(&req.config.etcd)?;
        verbs::gc(&store, req)
    }

    fn supports_1_1_0(&self) -> bool {
        true
    }
}

/// Addresses assigned for one ADD, released again when their guard is dropped uncommitted
/// (the result could not be printed).
struct Assigned<'a> {
    store: &'a Datastore,
    req: &'a Request,
    addresses: Vec<IpAddr>,
}

impl Undo for Assigned<'_> {
    fn action(&self) -> String {
        format!("release addresses of {}", self.req.container_id)
    }

    fn undo(&mut self, _log: &RollbackLog) -> Result<Vec<String>> {
        verbs::release_assigned(self.store, self.req, &self.addresses)?;
        Ok(Vec::new())
    }
}
