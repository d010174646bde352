//! The network configuration both plugins read from stdin (Calico v1.11 keys), parsed once into
//! typed, validated structs.

use std::path::PathBuf;
use std::time::Duration;

/// Where and how to reach etcd, resolved from the config keys and the `ETCD_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Client URLs (`http://host:port` or `https://host:port`), tried in order.
    pub endpoints: Vec<String>,
    /// Client key for TLS (`etcd_key_file`, `ETCD_KEY_FILE`).
    pub key_file: Option<PathBuf>,
    /// Client certificate for TLS (`etcd_cert_file`, `ETCD_CERT_FILE`).
    pub cert_file: Option<PathBuf>,
    /// CA bundle for TLS (`etcd_ca_cert_file`, `ETCD_CA_CERT_FILE`).
    pub ca_cert_file: Option<PathBuf>,
    /// User name and password, used only when both are set (`ETCD_USERNAME`, `ETCD_PASSWORD`).
    pub credentials: Option<(String, String)>,
    /// Deadline for one etcd request against one endpoint.
    pub request_timeout: Duration,
}
