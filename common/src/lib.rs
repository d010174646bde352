//! Shared library of the `calico` and `calico-ipam` CNI plugins: the CNI protocol, the network
//! config, the etcd datastore, the kernel dataplane and Calico's IP address management.

pub mod cni;
pub mod config;
pub mod dataplane;
pub mod datastore;
pub mod error;
pub mod file;
pub mod ipam;
pub mod kubernetes;
pub mod special_ranges;

pub use error::{Code, Context, Error, Kind, Result};
