//! A temporary directory removed, with its contents, on drop.

use std::path::{Path, PathBuf};

/// A fresh directory under the system temp dir.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/calico-cni-<label>-<pid>-<n>`.
    pub fn new(label: &str) -> TempDir {
        let path = std::env::temp_dir().join(crate::names::unique(&format!("calico-cni-{label}")));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory as a string (for JSON configs and env vars).
    pub fn path_str(&self) -> String {
        self.path.display().to_string()
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("cannot remove temp dir {}: {e}", self.path.display());
        }
    }
}
