//! STATUS: can an ADD succeed now?

use common::cni::Request;
use common::datastore::Datastore;
use common::{Code, Result};

use crate::ready;

/// Handles STATUS: etcd answers and the Ready flag is not `false` (else code 50), then the
/// IPAM plugin's own STATUS, whose error is passed on.
pub fn status(req: &Request) -> Result<()> {
    let store = Datastore::connect(&req.config.etcd)?;
    ready::ensure_ready(&store).map_err(|e| e.with_code(Code::NotAvailable))?;
    crate::ipam_delegation::status(&store, req)
}
