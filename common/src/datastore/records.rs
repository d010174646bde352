//! The plugin's own records, kept beside Calico's data model ([`super::model`]): what an
//! attachment consists of, and who owns a host veth name. Both plugins read them: `calico` to
//! tear attachments down, `calico-ipam` to collect and audit them.

use serde::{Deserialize, Serialize};

/// What the plugin records about one attachment before it allocates anything, so that DEL and
/// GC can find every piece of it even after a crash halfway through ADD. Not part of Calico's
/// data model; kept under [`super::keys::ATTACHMENTS_PREFIX`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS` at ADD.
    pub netns: String,
    /// The host-side veth the attachment uses.
    pub host_veth: String,
    /// The key of the workload endpoint it writes.
    pub endpoint: String,
    /// The addresses were given without IPAM (a pod's `ipAddrsNoIpam`): CHECK does not ask
    /// the IPAM plugin about them.
    #[serde(default)]
    pub without_ipam: bool,
    /// The `inet` nftables table in which the network's local policy (`policy.type: local`)
    /// enforces the endpoint's profiles; absent without local policy (and in records written
    /// before it existed). DEL and GC remove the host veth's chains, verdicts and addresses
    /// from that table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nft_table: Option<String>,
}

/// Who owns a host veth name (the value of [`super::keys::host_veth_claim`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostVethClaim {
    /// The endpoint key of the workload using the name; a pod's sandboxes share it.
    pub endpoint: String,
    /// The sandbox that set the link up last.
    pub container_id: String,
}
