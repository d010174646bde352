//! One verb at a time per attachment on a node. The spec forbids parallel operations on one
//! container, but runtimes send them anyway: a retried ADD after a timeout, a DEL tearing down an
//! ADD that is still running. Each verb of one (container id, interface name) holds an exclusive
//! `flock` on a file of its own for its whole run, so the second verb starts only once the first
//! has finished and sees its complete result. The kernel drops the lock when the process dies.
//!
//! The holder removes the file when it is done, so the directory holds files only for verbs
//! running now. A verb that was waiting on a removed file notices (the path no longer names the
//! file it locked) and starts over on a new one, so only the file at the path ever counts.
//!
//! A lock that every ADD and DEL on the node takes in turn ([`KeptLock`]: the node's IPAM lock,
//! and the ADD slots of [`super::admission`]) keeps its file instead: removing it cost each of
//! them a file created and removed (about 0.2 ms of CPU on ext4, measured with `perf stat`) and
//! sent its waiters back to open the new file at every hand-over.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;

use crate::error::Code;
use crate::{Context, Error, Result};

/// Where the lock files live: a runtime directory, emptied at boot like the locks themselves.
pub const LOCK_DIR: &str = "/run/calico/cni";

/// Names another directory for the lock files (tests, or a host whose `/run` is elsewhere).
/// Every plugin process on the node must see the same value, or verbs are not serialised.
pub const LOCK_DIR_ENV: &str = "CALICO_CNI_LOCK_DIR";

/// How long a verb waits for the one before it. Longer than the etcd deadline of a verb, so a
/// slow but healthy predecessor is waited for; a hung one is reported as "try again later".
const WAIT: Duration = Duration::from_secs(30);

/// The longest file name kept readable; longer ones (very long container ids) are hashed.
const MAX_READABLE_NAME: usize = 200;

/// The held lock of one attachment. Dropping it removes the file and releases the lock.
#[derive(Debug)]
pub struct AttachmentLock {
    /// Held open for the lock's lifetime: closing it releases the lock.
    _file: File,
    path: PathBuf,
}

impl AttachmentLock {
    /// Takes the lock of `plugin`'s verbs on (`container_id`, `ifname`) in `dir`, waiting for
    /// the verb that holds it.
    pub fn acquire(
        dir: &Path,
        plugin: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<AttachmentLock> {
        AttachmentLock::at(dir.join(lock_file_name(plugin, container_id, ifname)), WAIT)
    }

    /// Takes the lock only if nobody holds it; `None` when a verb holds it now.
    pub fn try_acquire(
        dir: &Path,
        plugin: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<AttachmentLock>> {
        let path = dir.join(lock_file_name(plugin, container_id, ifname));
        match AttachmentLock::at(path, Duration::ZERO) {
            Ok(lock) => Ok(Some(lock)),
            Err(err) if err.code() == Code::TryAgainLater => Ok(None),
            Err(err) => Err(err),
        }
    }
}

impl AttachmentLock {
    /// Takes the lock on the file at `path`, waiting up to `wait`; the file goes when the lock
    /// is dropped.
    fn at(path: PathBuf, wait: Duration) -> Result<AttachmentLock> {
        let file = acquire_at(&path, wait)?;
        Ok(AttachmentLock { _file: file, path })
    }
}

/// A held lock whose file stays when the lock is released. Dropping it releases the lock.
#[derive(Debug)]
pub struct KeptLock {
    /// Held open for the lock's lifetime: closing it releases the lock.
    _file: File,
}

impl KeptLock {
    /// Takes the lock on the file at `path` (created if missing), waiting for its holder. The
    /// name should not end in `.lock`, which [`sweep_abandoned`] would remove.
    pub fn acquire(path: &Path) -> Result<KeptLock> {
        KeptLock::acquire_within(path, WAIT)
    }

    /// [`KeptLock::acquire`], waiting at most `wait` (error 11 after it); with a zero `wait`,
    /// only when nobody holds the lock.
    pub fn acquire_within(path: &Path, wait: Duration) -> Result<KeptLock> {
        Ok(KeptLock {
            _file: acquire_at(path, wait)?,
        })
    }
}

/// Removes the lock files in `dir` that no verb holds: a verb killed before it finished leaves
/// its file behind. Taking such a file's lock and dropping it removes it; a verb that opened the
/// file meanwhile notices it was removed and starts over on a new one. Returns how many went.
pub fn sweep_abandoned(dir: &Path) -> Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => {
            return Err(Error::from(err).context(format!("list lock directory {}", dir.display())));
        }
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "lock") {
            continue;
        }
        match AttachmentLock::at(path, Duration::ZERO) {
            Ok(lock) => {
                drop(lock);
                removed += 1;
            }
            Err(err) if err.code() == Code::TryAgainLater => {}
            Err(err) => return Err(err),
        }
    }
    Ok(removed)
}

impl Drop for AttachmentLock {
    fn drop(&mut self) {
        // Removed while still locked: whoever opens the path next gets a new file.
        if let Err(err) = std::fs::remove_file(&self.path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            super::log::warn(&format!("remove lock file {}: {err}", self.path.display()));
        }
    }
}

/// `<plugin>:<container id>:<ifname>.lock`. Both parts are validated before a lock is taken:
/// neither holds `/`, and neither can hold `:` (the container id rule and the kernel refuse it),
/// so two attachments never share a file.
fn lock_file_name(plugin: &str, container_id: &str, ifname: &str) -> String {
    file_name(plugin, &format!("{container_id}:{ifname}"), "lock")
}

/// `<owner>:<what>.<extension>`, with `what` replaced by its SHA-1 when the name would be too
/// long to stay readable (or to be a file name at all).
pub fn file_name(owner: &str, what: &str, extension: &str) -> String {
    let name = format!("{owner}:{what}.{extension}");
    if name.len() <= MAX_READABLE_NAME {
        return name;
    }
    let digest = sha1_smol::Sha1::from(what).digest();
    format!("{owner}:{digest}.{extension}")
}

/// Opens (creating) the lock file at `path` and locks it, waiting up to `wait` for its holder.
/// A file removed by the holder while this waited is not a lock any more: it is opened again.
/// The open file holds the lock.
fn acquire_at(path: &Path, wait: Duration) -> Result<File> {
    loop {
        match lock_file(path, Blocking::No)? {
            Attempt::Taken(lock) => return Ok(lock),
            Attempt::Removed => continue,
            Attempt::Held => break,
        }
    }
    if wait.is_zero() {
        return Err(still_held(path, wait));
    }
    wait_in_the_kernel(path, wait)
}

/// Waits for the lock blocked in `flock` on a thread of its own, for up to `wait`: the kernel
/// hands a released lock to a waiter at once. (Waiting in growing pauses left the lock unused
/// for most of a burst of ADDs taking turns on their node's IPAM lock.) A waiter that gives up
/// says so; its thread then leaves a removed file alone instead of opening the next one, and a
/// lock it took meanwhile is released, as nobody receives it.
fn wait_in_the_kernel(path: &Path, wait: Duration) -> Result<File> {
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    let gave_up = Arc::new(AtomicBool::new(false));
    let waiting = (path.to_path_buf(), Arc::clone(&gave_up));
    std::thread::Builder::new()
        .name("lock wait".into())
        .spawn(move || {
            let (path, gave_up) = waiting;
            let taken = loop {
                match lock_file(&path, Blocking::Yes) {
                    Ok(Attempt::Taken(lock)) => break Ok(lock),
                    Ok(Attempt::Removed | Attempt::Held) if !gave_up.load(Ordering::Acquire) => {}
                    Ok(Attempt::Removed | Attempt::Held) => return,
                    Err(err) => break Err(err),
                }
            };
            // Fails when the waiter gave up: the lock comes back and is dropped here.
            let _ = sender.send(taken);
        })
        .context("start a thread to wait for a lock")?;
    match receiver.recv_timeout(wait) {
        Ok(taken) => taken,
        Err(_) => {
            gave_up.store(true, Ordering::Release);
            // Taken at the last moment: as good as in time.
            receiver
                .try_recv()
                .unwrap_or_else(|_| Err(still_held(path, wait)))
        }
    }
}

/// Whether an attempt at the lock waits for its holder.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Blocking {
    Yes,
    No,
}

/// What one attempt to lock the file at a path found.
enum Attempt {
    /// The locked file.
    Taken(File),
    /// Someone holds it (only when not blocking).
    Held,
    /// Its holder removed it once done: the path names another file now, or none.
    Removed,
}

/// Opens (creating) the file at `path` and locks it, waiting for its holder if `blocking`.
fn lock_file(path: &Path, blocking: Blocking) -> Result<Attempt> {
    let file = open_lock_file(path)?;
    let operation = match blocking {
        Blocking::Yes => nix::libc::LOCK_EX,
        Blocking::No => nix::libc::LOCK_EX | nix::libc::LOCK_NB,
    };
    loop {
        // SAFETY: flock only reads the descriptor, which `file` keeps open.
        if unsafe { nix::libc::flock(file.as_raw_fd(), operation) } == 0 {
            break;
        }
        match Errno::last() {
            Errno::EINTR => continue,
            Errno::EWOULDBLOCK => return Ok(Attempt::Held),
            errno => {
                return Err(Error::new(
                    Code::Io,
                    format!("lock {}: {}", path.display(), errno.desc()),
                ));
            }
        }
    }
    if !still_linked(&file, path)? {
        return Ok(Attempt::Removed);
    }
    Ok(Attempt::Taken(file))
}

/// Opens the lock file at `path`, creating it, and its directory when that is missing: on first
/// use, or after someone removed the directory (a waiter then finds its file gone and comes
/// back here). Creating the directory only then spares every lock a `mkdir`.
fn open_lock_file(path: &Path) -> Result<File> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(path)
    };
    let opened = match open() {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let dir = path.parent().unwrap_or(Path::new("/"));
            std::fs::create_dir_all(dir)
                .with_context(|| format!("create lock directory {}", dir.display()))
                .code(Code::Io)?;
            open()
        }
        opened => opened,
    };
    opened
        .with_context(|| format!("open lock file {}", path.display()))
        .code(Code::Io)
}

/// The error of a lock still held after `wait`. The file's name says whose it is: an
/// attachment's verbs or a node's IPAM.
fn still_held(path: &Path, wait: Duration) -> Error {
    Error::new(
        Code::TryAgainLater,
        format!(
            "another plugin run still holds lock file {} after {}s",
            path.display(),
            wait.as_secs()
        ),
    )
}

/// True when `path` still names the locked `file` (its holder did not remove it meanwhile).
fn still_linked(file: &File, path: &Path) -> Result<bool> {
    let held = file
        .metadata()
        .with_context(|| format!("stat lock file {}", path.display()))
        .code(Code::Io)?;
    match std::fs::symlink_metadata(path) {
        Ok(current) => Ok(current.dev() == held.dev() && current.ino() == held.ino()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(Error::from(err)
            .context(format!("stat lock file {}", path.display()))
            .with_code(Code::Io)),
    }
}

/// Whether the kernel lists a process blocked in `flock` on the file at `path`: a `->` line of
/// `/proc/locks` naming the file's device and inode. Lets a test act only once a waiter waits.
pub fn flock_waiter_listed(path: &Path) -> bool {
    let Ok(file) = std::fs::metadata(path) else {
        return false;
    };
    let dev = file.dev();
    let id = format!(
        " {:02x}:{:02x}:{} ",
        nix::libc::major(dev),
        nix::libc::minor(dev),
        file.ino()
    );
    std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .any(|line| line.contains("-> FLOCK") && line.contains(&id))
}

/// Waits until [`flock_waiter_listed`] for `path`; a minute without a waiter fails the test
/// instead of hanging it.
#[cfg(test)]
pub(crate) fn wait_for_flock_waiter(path: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !flock_waiter_listed(path) {
        assert!(
            std::time::Instant::now() < deadline,
            "nobody waited on {} within a minute",
            path.display()
        );
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_lock(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("calico-lock-{}-{name}", std::process::id()));
        dir.join(name)
    }

    #[test]
    fn a_second_verb_waits_for_the_first() {
        let path = temp_lock("wait.lock");
        let first = AttachmentLock::at(path.clone(), WAIT).unwrap();
        let err = AttachmentLock::at(path.clone(), Duration::from_millis(20)).unwrap_err();
        assert_eq!(err.code(), Code::TryAgainLater);
        assert!(err.msg().contains(&path.display().to_string()), "{err:?}");
        let waiter = std::thread::spawn({
            let path = path.clone();
            move || AttachmentLock::at(path.clone(), WAIT).map(drop)
        });
        std::thread::sleep(Duration::from_millis(30));
        drop(first);
        waiter.join().unwrap().unwrap();
        assert!(!path.exists());
        std::fs::remove_dir(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_waiter_whose_lock_directory_was_removed_takes_a_new_file_in_a_new_one() {
        let path = temp_lock("dir-removed.lock");
        let dir = path.parent().unwrap().to_path_buf();
        let first = AttachmentLock::at(path.clone(), WAIT).unwrap();
        let waiter = std::thread::spawn({
            let path = path.clone();
            move || AttachmentLock::at(path, WAIT)
        });
        // Remove the directory only once the waiter is blocked on the file in it.
        wait_for_flock_waiter(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        drop(first);
        let second = waiter.join().unwrap().unwrap();
        assert!(path.exists(), "the waiter did not make a new file");
        drop(second);
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_waiter_on_a_removed_file_takes_a_new_one() {
        let path = temp_lock("removed.lock");
        let first = AttachmentLock::at(path.clone(), WAIT).unwrap();
        let waiter = std::thread::spawn({
            let path = path.clone();
            move || AttachmentLock::at(path.clone(), WAIT)
        });
        std::thread::sleep(Duration::from_millis(30));
        drop(first);
        let second = waiter.join().unwrap().unwrap();
        assert!(path.exists());
        drop(second);
        assert!(!path.exists());
        std::fs::remove_dir(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_lock_its_dead_holder_left_in_place_is_taken_by_the_waiter() {
        let path = temp_lock("dead-holder.lock");
        // What a killed holder is to the kernel: a locked file closed without being removed.
        let dead = AttachmentLock::at(path.clone(), WAIT).unwrap();
        let waiter = std::thread::spawn({
            let path = path.clone();
            move || AttachmentLock::at(path.clone(), WAIT)
        });
        std::thread::sleep(Duration::from_millis(30));
        // SAFETY: unlocks the descriptor `dead` keeps open, as the kernel does at a holder's exit.
        let unlocked = unsafe { nix::libc::flock(dead._file.as_raw_fd(), nix::libc::LOCK_UN) };
        assert_eq!(unlocked, 0);
        let taken = waiter.join().unwrap().unwrap();
        drop(taken);
        drop(dead);
        assert!(!path.exists());
        std::fs::remove_dir(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_kept_lock_leaves_its_file_and_passes_to_its_waiter() {
        let path = temp_lock("node.flock");
        let first = KeptLock::acquire(&path).unwrap();
        let err = AttachmentLock::at(path.clone(), Duration::from_millis(20)).unwrap_err();
        assert_eq!(err.code(), Code::TryAgainLater);
        let waiter = std::thread::spawn({
            let path = path.clone();
            move || KeptLock::acquire(&path)
        });
        std::thread::sleep(Duration::from_millis(30));
        drop(first);
        let second = waiter.join().unwrap().unwrap();
        assert!(path.exists());
        drop(second);
        assert!(path.exists());
        assert_eq!(sweep_abandoned(path.parent().unwrap()).unwrap(), 0);
        assert!(path.exists());
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_dir(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_sweep_removes_abandoned_lock_files_and_keeps_held_ones() {
        let held = temp_lock("sweep.lock");
        let dir = held.parent().unwrap().to_path_buf();
        let holder = AttachmentLock::at(held.clone(), WAIT).unwrap();
        // What a verb killed before its end leaves: a file nobody holds.
        std::fs::write(dir.join("calico:dead:eth0.lock"), b"").unwrap();
        std::fs::write(dir.join("not-a-lock"), b"").unwrap();
        assert_eq!(sweep_abandoned(&dir).unwrap(), 1);
        assert!(held.exists() && !dir.join("calico:dead:eth0.lock").exists());
        assert!(dir.join("not-a-lock").exists());
        drop(holder);
        std::fs::remove_file(dir.join("not-a-lock")).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(sweep_abandoned(&dir).unwrap(), 0);
    }

    #[test]
    fn lock_names_stay_apart_and_short() {
        assert_eq!(
            lock_file_name("calico", "c1", "eth0"),
            "calico:c1:eth0.lock"
        );
        assert_ne!(
            lock_file_name("calico", "c1.eth1", "eth0"),
            lock_file_name("calico", "c1", "eth1.eth0")
        );
        let long = "a".repeat(300);
        assert!(lock_file_name("calico-ipam", &long, "eth0").len() < 80);
    }
}
