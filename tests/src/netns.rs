//! A named network namespace (`ip netns add`), deleted on drop.

use std::process::Command;

/// A network namespace at `/run/netns/ct-<pid>-<n>`.
pub struct Netns {
    name: String,
    deleted: bool,
}

impl Netns {
    /// Creates a fresh namespace with a unique name.
    pub fn new() -> Netns {
        let name = crate::names::unique("ct");
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {name} failed (tests must run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns {
            name,
            deleted: false,
        }
    }

    /// The name, for `ip -n`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path to hand to a plugin as `CNI_NETNS`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Deletes the namespace now (the path then no longer exists).
    pub fn delete(&mut self) {
        if self.deleted {
            return;
        }
        self.deleted = true;
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
            .expect("run ip netns del");
        assert!(
            out.status.success(),
            "ip netns del {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cannot run ip netns del {}: {e}", self.name),
        }
    }
}
