//! The etcd (v3 API) datastore: a small synchronous client with compare-and-swap transactions
//! and failover between the configured endpoints, plus Calico's key formats and values.
//!
//! - `client`: [`Datastore`], the client of one plugin run: lazy connections, failover and
//!   hedged reads within one time budget. The async etcd client and its tokio runtime stay
//!   inside it. A member that accepts connections but never answers (stopped, partitioned)
//!   costs a read [`HEDGE_DELAY`], not a timeout.
//! - `txn`: the typed requests ([`Txn`], [`Read`], [`Entry`]) and their translation to and from
//!   etcd's transactions.
//! - `tls`: the CA, certificate and key files for `https` endpoints, checked before connecting.
//! - [`keys`], [`model`]: Calico's key formats and JSON values; [`records`]: the plugin's own
//!   records beside them (the attachment record, the claim on a host veth name).
//! - [`endpoint`]: a workload endpoint as read for a compare-and-swap, and its teardown.
//! - [`retry`]: the one rule of every compare-and-swap loop.
//! - [`undo`]: undoing this run's writes without touching anybody else's.

mod client;
pub mod endpoint;
pub mod keys;
pub mod model;
pub mod records;
pub mod retry;
mod tls;
mod txn;
pub mod undo;

pub use client::{Datastore, HEDGE_DELAY, REQUEST_LOG_ENV, ROUNDS};
pub use txn::{Condition, Entry, MAX_TXN_OPS, Read, Txn, TxnOutcome, Write, log_conflict};
