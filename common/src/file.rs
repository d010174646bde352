//! Reading the files a network config names (TLS certificates and keys, kubeconfigs, config
//! files): one function, so that none of them can block a plugin run or make it read without
//! bound. And replacing the plugins' own small state files (block hints, the block copy) so
//! that a reader never sees half of one.

use std::fs::OpenOptions;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Code, Error, Result};

/// The size limit for PEM files (certificates, keys, CA bundles). A CA bundle of every public
/// root is about 200 KiB.
pub const MAX_PEM_FILE_LEN: u64 = 1 << 20;

/// The size limit for kubeconfigs and network config files, which may embed certificates.
pub const MAX_CONFIG_FILE_LEN: u64 = 4 << 20;

/// Replaces the file at `path` with `bytes` at once (creating its directory): written to a
/// temporary file beside it, then renamed over it, so a concurrent reader sees the old content or
/// the new, never a mix. The temporary name holds the process id and a counter, so neither
/// other processes nor other writes of this one share it; it is removed when the write fails.
pub fn replace_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temporary = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let written =
        std::fs::write(&temporary, bytes).and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Reads the regular file at `path`, named by config key `key`, of at most `max_len` bytes.
///
/// The file is opened with `O_NONBLOCK` and checked with `fstat` before anything is read, so a
/// FIFO without a writer, a socket or a device (`/dev/zero`, a tty) is refused at once instead of
/// hanging or streaming forever. Every failure is an invalid config (code 7) naming the key and
/// the path.
pub fn read_config_file(path: &Path, key: &str, max_len: u64) -> Result<Vec<u8>> {
    let fail = |what: String| {
        Error::new(
            Code::InvalidConfig,
            format!("{key} {}: {what}", path.display()),
        )
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|err| fail(format!("cannot open: {err}")))?;
    let metadata = file
        .metadata()
        .map_err(|err| fail(format!("cannot stat: {err}")))?;
    let file_type = metadata.file_type();
    if !file_type.is_file() {
        return Err(fail(format!(
            "is {}, not a regular file",
            describe_file_type(&file_type)
        )));
    }
    if metadata.len() > max_len {
        return Err(fail(format!(
            "is {} bytes, more than the {max_len} allowed",
            metadata.len()
        )));
    }
    let mut bytes = Vec::new();
    // The file may grow between fstat and read: never take more than the limit.
    file.take(max_len + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| fail(format!("cannot read: {err}")))?;
    if bytes.len() as u64 > max_len {
        return Err(fail(format!("is more than the {max_len} bytes allowed")));
    }
    Ok(bytes)
}

fn describe_file_type(file_type: &std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// A directory for one unit test's files, removed when dropped.
#[cfg(test)]
pub(crate) struct Scratch(pub(crate) std::path::PathBuf);

#[cfg(test)]
impl Scratch {
    /// A new, empty directory, named after `label`, the process and a counter so that tests
    /// running in parallel never share one.
    pub(crate) fn new(label: &str) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("calico-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

#[cfg(test)]
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn regular_file_within_the_limit_is_read() {
        let scratch = Scratch::new("regular");
        let path = scratch.0.join("ca.pem");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_config_file(&path, "k", 10).unwrap(), b"0123456789");
        let err = read_config_file(&path, "etcd_ca_cert_file", 9).unwrap_err();
        assert_eq!(err.code(), Code::InvalidConfig);
        assert!(err.msg().contains("etcd_ca_cert_file"), "{err:?}");
        assert!(err.msg().contains("10 bytes"), "{err:?}");
    }

    #[test]
    fn special_files_are_refused_at_once_naming_key_and_path() {
        let scratch = Scratch::new("special");
        let fifo = scratch.0.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let socket = scratch.0.join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let cases: [(PathBuf, &str); 5] = [
            (fifo, "a FIFO"),
            (socket, "cannot open"),
            ("/dev/zero".into(), "a character device"),
            (scratch.0.clone(), "a directory"),
            (scratch.0.join("missing"), "cannot open"),
        ];
        for (path, why) in cases {
            let started = Instant::now();
            let err = read_config_file(&path, "etcd_ca_cert_file", MAX_PEM_FILE_LEN).unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(1), "{path:?}");
            assert_eq!(err.code(), Code::InvalidConfig, "{path:?}");
            let msg = err.msg();
            assert!(msg.contains("etcd_ca_cert_file"), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(why), "{msg} should say {why}");
        }
    }
}
