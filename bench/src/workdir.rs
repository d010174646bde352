//! The run's scratch directory: configs, plugin stdin/stdout files, etcd data, host-local and
//! lock directories. Removed with everything in it on drop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory under /tmp removed on drop.
pub struct WorkDir {
    path: PathBuf,
    files: AtomicU64,
}

impl WorkDir {
    /// Creates `/tmp/calico-bench.<pid>`.
    pub fn create() -> Result<WorkDir, String> {
        let path = std::env::temp_dir().join(format!("calico-bench.{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(WorkDir {
            path,
            files: AtomicU64::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A subdirectory, created if missing.
    pub fn subdir(&self, name: &str) -> Result<PathBuf, String> {
        let dir = self.path.join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(dir)
    }

    /// A path no other caller of this function gets, for `<stem>-<n>.<ext>`.
    pub fn unique_file(&self, stem: &str, ext: &str) -> PathBuf {
        let n = self.files.fetch_add(1, Ordering::Relaxed);
        self.path.join(format!("{stem}-{n}.{ext}"))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("cannot remove {}: {e}", self.path.display());
        }
    }
}
