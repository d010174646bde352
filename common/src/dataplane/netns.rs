//! Entering a network namespace. [`with_netns`] is the only function in the project that calls
//! `setns`; it does so on a thread of its own that ends with the closure, so no other code ever
//! runs in a namespace it did not ask for.
//!
//! A verb enters a container's namespace once, through [`ContainerNetns::open`]: what has to be
//! opened inside (the netlink socket, the namespace-wide IPv6 switches under `/proc/sys/net`)
//! is opened on that thread, and keeps acting on the container's namespace when used from the
//! verb's own thread afterwards. Sockets and `/proc/sys` files are bound to the namespace they
//! were opened in, not to the thread that uses them, so leaving the entry thread with them is
//! safe; the thread itself still never runs anything else.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};

use super::{Netlink, sysctl};
use crate::error::codes::DATAPLANE;
use crate::{Context, Error, Kind, Result};

/// What a netns path turned out to be.
pub(crate) enum Probe {
    /// An open network namespace file.
    Netns(File),
    /// Nothing exists at the path.
    Missing,
    /// Something exists, but it is not a namespace file.
    NotNetns,
}

/// `NS_GET_NSTYPE`, `_IO(0xb7, 0x3)` from `linux/nsfs.h` (Linux 4.11+).
const NS_GET_NSTYPE: u64 = 0xb703;

/// Opens `path` and checks that it is a network namespace: the file must live on nsfs (the
/// reference plugins' `ns.GetNS` checks the same magic; it also accepts procfs for kernels
/// before 3.19, which would let any file under /proc through, so this does not), and the
/// namespace must be a network one when the kernel can tell.
pub(crate) fn probe(path: &Path) -> Result<Probe> {
    // Non-blocking: opening a FIFO for reading would otherwise wait for a writer forever.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Probe::Missing),
        Err(err) => {
            return Err(Error::from(err)
                .with_code(DATAPLANE)
                .context(format_args!("open netns {}", path.display())));
        }
    };
    let fs = fstatfs(&file)
        .with_context(|| format!("statfs netns {}", path.display()))
        .code(DATAPLANE)?
        .filesystem_type();
    if fs != NSFS_MAGIC {
        return Ok(Probe::NotNetns);
    }
    // SAFETY: the ioctl takes no argument and only reads the type of the open namespace file.
    let nstype = unsafe { nix::libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    // A kernel without the ioctl answers an error; setns in `with_netns` still checks the type.
    if nstype >= 0 && nstype != CloneFlags::CLONE_NEWNET.bits() {
        return Ok(Probe::NotNetns);
    }
    Ok(Probe::Netns(file))
}

/// Opens the network namespace at `path`: a missing path is a `Kind::NotFound` error, a file
/// that is not a namespace is an error saying so.
pub(crate) fn open(path: &Path) -> Result<File> {
    match probe(path)? {
        Probe::Netns(file) => Ok(file),
        Probe::Missing => Err(Error::new(
            DATAPLANE,
            format!("netns {} does not exist", path.display()),
        )
        .with_kind(Kind::NotFound)),
        Probe::NotNetns => Err(Error::new(
            DATAPLANE,
            format!("{} is not a network namespace", path.display()),
        )),
    }
}

/// Checks that `path` is a network namespace without entering it, and not the plugin's own (a
/// container set up there would be wired into the host itself), so that a request can be
/// refused before anything is changed. A missing path is a `Kind::NotFound` error.
pub fn check_netns(path: &Path) -> Result<()> {
    let file = open(path)?;
    let found = file
        .metadata()
        .with_context(|| format!("stat netns {}", path.display()))
        .code(DATAPLANE)?;
    let own = std::fs::metadata("/proc/self/ns/net")
        .context("stat the plugin's own netns /proc/self/ns/net")
        .code(DATAPLANE)?;
    if (found.dev(), found.ino()) == (own.dev(), own.ino()) {
        return Err(Error::new(
            DATAPLANE,
            format!(
                "netns {} is the host's own network namespace, not a container's",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Runs `f` inside the network namespace at `path` and returns its value.
///
/// `f` runs on a freshly spawned thread that first joins the namespace; the thread ends with
/// `f`, so it is never reused in the wrong namespace. A panic in `f` comes back as an error in
/// builds that unwind (tests); release builds abort on a panic (`panic = "abort"`), which ends
/// the run like SIGKILL, whose leftovers the attachment record lets a later DEL or GC remove.
/// A missing path is a `Kind::NotFound` error. Netlink handles used by `f` must be opened inside
/// it (every dataplane function does that).
pub fn with_netns<T: Send>(path: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let file = open(path)?;
    enter(&file, path, f)
}

/// Runs `f` on a fresh thread inside the namespace of `file`, opened from `path`.
fn enter<T: Send>(file: &File, path: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(scope, move || {
                setns(file, CloneFlags::CLONE_NEWNET).map_err(|errno| {
                    let err = Error::new(DATAPLANE, super::errno_text(errno));
                    if errno == nix::errno::Errno::EINVAL {
                        err.context(format_args!(
                            "{} is not a network namespace",
                            path.display()
                        ))
                    } else {
                        err.context(format_args!("enter netns {}", path.display()))
                    }
                })?;
                f()
            })
            .with_context(|| format!("spawn a thread for netns {}", path.display()))
            .code(DATAPLANE)?;
        thread.join().unwrap_or_else(|panic| {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::new(
                DATAPLANE,
                format!("work in netns {} panicked: {text}", path.display()),
            ))
        })
    })
}

/// A container's network namespace, entered once: its file (to create a veth end straight
/// inside it), a netlink session opened inside it, and its IPv6 switches.
#[derive(Debug)]
pub struct ContainerNetns {
    path: PathBuf,
    file: File,
    netlink: Netlink,
    ipv6_switches: sysctl::Ipv6Switches,
}

impl ContainerNetns {
    /// Enters the network namespace at `path` once, on a thread of its own, to open what acts
    /// on it later from any thread. A missing path is a `Kind::NotFound` error, a file that is
    /// not a network namespace an error saying so. Nothing in the namespace is changed.
    pub fn open(path: &Path) -> Result<ContainerNetns> {
        let file = open(path)?;
        let place = format!("netns {}", path.display());
        let (netlink, ipv6_switches) = enter(&file, path, || {
            Ok((Netlink::open_here(place)?, sysctl::Ipv6Switches::open()))
        })?;
        Ok(ContainerNetns {
            path: path.to_path_buf(),
            file,
            netlink,
            ipv6_switches,
        })
    }

    /// The namespace's path, as the runtime gave it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The netlink session inside the namespace.
    pub fn netlink(&self) -> &Netlink {
        &self.netlink
    }

    /// The open namespace file, for netlink attributes that name a namespace by fd.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Turns IPv6 on for the whole namespace: `disable_ipv6=0` for `all`, `default` and `lo`
    /// (Calico v1.11.0+ does this in the container before adding IPv6 addresses, since some
    /// runtimes create namespaces with IPv6 disabled).
    pub fn enable_ipv6(&self) -> Result<()> {
        self.ipv6_switches.enable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::testutil::{TestHost, TestNetns};

    #[test]
    fn regular_file_is_not_a_netns() {
        let err = check_netns(Path::new("/proc/self/status")).unwrap_err();
        assert_eq!(err.kind(), Kind::Other);
        assert!(err.msg().contains("is not a network namespace"), "{err:?}");
    }

    #[test]
    fn missing_path_is_not_found() {
        let path = Path::new("/run/netns/does-not-exist-calico-test");
        assert_eq!(check_netns(path).unwrap_err().kind(), Kind::NotFound);
        let err = with_netns(path, || Ok(())).unwrap_err();
        assert_eq!(err.kind(), Kind::NotFound);
        assert!(
            err.msg().contains("/run/netns/does-not-exist-calico-test"),
            "{err:?}"
        );
    }

    #[test]
    #[ignore = "needs root"]
    fn closure_runs_in_the_netns_and_returns_its_value() {
        let _host_ns = TestHost::enter();
        let ns = TestNetns::new("enter");
        let own = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let inside = with_netns(ns.path(), || {
            Ok(std::fs::read_link("/proc/thread-self/ns/net").unwrap())
        })
        .unwrap();
        assert_ne!(own, inside);
        let expected = std::fs::metadata(ns.path()).unwrap();
        assert!(
            inside
                .to_string_lossy()
                .contains(&std::os::unix::fs::MetadataExt::ino(&expected).to_string())
        );
        assert_eq!(std::fs::read_link("/proc/thread-self/ns/net").unwrap(), own);
    }

    #[test]
    #[ignore = "needs root"]
    fn panic_in_closure_comes_back_as_error() {
        let _host_ns = TestHost::enter();
        let ns = TestNetns::new("panic");
        let err = with_netns(ns.path(), || -> Result<()> { panic!("boom") }).unwrap_err();
        assert!(err.msg().contains("panicked: boom"), "{err:?}");
    }

    #[test]
    fn mount_namespace_file_is_not_a_netns() {
        let err = with_netns(Path::new("/proc/self/ns/mnt"), || Ok(())).unwrap_err();
        assert!(err.msg().contains("is not a network namespace"), "{err:?}");
    }

    #[test]
    fn own_netns_is_refused() {
        let err = check_netns(Path::new("/proc/self/ns/net")).unwrap_err();
        assert!(
            err.msg().contains("host's own network namespace"),
            "{err:?}"
        );
        assert!(with_netns(Path::new("/proc/self/ns/net"), || Ok(())).is_ok());
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("calico-netns-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = check_netns(&fifo).unwrap_err();
        assert!(err.msg().contains("is not a network namespace"), "{err:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
