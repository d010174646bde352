//! The rule for every name that becomes an etcd key segment or a file name: container ids,
//! network names, node names, Kubernetes namespaces and pods.

/// The spec's rule for container ids and network names, which this project applies to every
/// name that becomes an etcd key segment or a file name (node, Kubernetes namespace and pod).
pub const NAME_RULE: &str = "[a-zA-Z0-9][a-zA-Z0-9_.-]*";

/// True when `name` follows [`NAME_RULE`]: it is never empty, `.` or `..`, and holds no `/`,
/// whitespace or control character, so it stays one key segment or one file name. Host names
/// with dots, DNS-1123 names and the ids of Docker, containerd, podman and cnitool all pass.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}
