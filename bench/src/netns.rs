//! Named network namespaces for the containers (`ip netns add`, under /run/netns), deleted on
//! drop. Names carry the driver's pid, so a later run can remove what a killed one left.

use std::path::PathBuf;

use crate::exec::helper;

/// Prefix of every namespace the driver makes.
const PREFIX: &str = "cbench-";

/// A network namespace deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `cbench-<pid>-<tag>`.
    pub fn create(tag: &str) -> Result<Netns, String> {
        let name = format!("{PREFIX}{}-{tag}", std::process::id());
        helper("ip", &["netns", "add", &name])?;
        Ok(Netns { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path a runtime passes as `CNI_NETNS`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Not `helper`: cleanup must run after an interrupt too.
        match std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "cannot delete netns {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("cannot run ip netns del {}: {e}", self.name),
        }
    }
}

/// Deletes the namespaces of earlier runs whose driver is gone (killed with SIGKILL, say).
pub fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !PathBuf::from("/proc").join(pid).exists() {
            eprintln!("removing netns {name} left by an earlier run");
            drop(Netns { name });
        }
    }
}
