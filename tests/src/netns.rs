//! The one network namespace fixture: a named namespace (`ip netns add`), deleted on drop. It
//! serves as a container's namespace ([`Netns::new`]) and as a test's throwaway "host"
//! namespace ([`Netns::host`]).

use std::fs::File;
use std::process::Command;
use std::thread::ThreadId;

use nix::sched::{CloneFlags, setns};

/// The address of a throwaway host namespace's uplink (TEST-NET-1, outside every test subnet).
pub const HOST_ADDRESS: &str = "192.0.2.1/24";

/// A network namespace at `/run/netns/<name>`.
pub struct Netns {
    name: String,
    deleted: bool,
    // Set while the creating thread runs inside this namespace: where to send it back on drop.
    entered: Option<Entered>,
}

/// The namespace a thread left for a throwaway host namespace.
struct Entered {
    thread: ThreadId,
    previous: File,
}

impl Netns {
    /// Creates a fresh namespace named `ct-<pid>-<n>`.
    pub fn new() -> Netns {
        Netns::named(crate::names::unique("ct"))
    }

    /// Creates a fresh namespace named `host-<pid>-<n>` with `lo` up and an `uplink`
    /// holding [`HOST_ADDRESS`] and the default route, and moves the calling
    /// thread into it until drop. The thread's children (plugins, etcd, `ip`, `nft`, `ping`,
    /// runtimes) and the threads it spawns start there, and the sockets it opens and the
    /// `/proc/sys/net` files it reads are that namespace's: the test runs on a host of its
    /// own. Namespaces are per thread, so the tests of one binary each get their own.
    pub fn host() -> Netns {
        let mut netns = Netns::named(crate::names::unique("host"));
        netns.ip(&["link", "set", "lo", "up"]);
        // Like a real host: an uplink with an address (the source of the host's pings) and the
        // default route (without a route to the containers' gateway address, the host veths'
        // proxy ARP would not answer for it). A veth pair, because not every kernel has the
        // dummy link type.
        netns.ip(&[
            "link",
            "add",
            "uplink",
            "type",
            "veth",
            "peer",
            "name",
            "uplink-peer",
        ]);
        netns.ip(&["link", "set", "uplink-peer", "up"]);
        netns.ip(&["link", "set", "uplink", "up"]);
        netns.ip(&["addr", "add", HOST_ADDRESS, "dev", "uplink"]);
        netns.ip(&["route", "add", "default", "dev", "uplink"]);
        let previous = File::open("/proc/thread-self/ns/net").expect("open this thread's netns");
        let target =
            File::open(netns.path()).unwrap_or_else(|e| panic!("open {}: {e}", netns.path()));
        setns(&target, CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("enter netns {}: {e}", netns.name));
        netns.entered = Some(Entered {
            thread: std::thread::current().id(),
            previous,
        });
        netns
    }

    fn named(name: String) -> Netns {
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
            entered: None,
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

    /// Runs `ip -n <name> <args>` and asserts success.
    pub fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Deletes the namespace now (the path then no longer exists).
    pub fn delete(&mut self) {
        if let Err(e) = self.try_delete() {
            panic!("{e}");
        }
    }

    fn try_delete(&mut self) -> Result<(), String> {
        if self.deleted {
            return Ok(());
        }
        self.deleted = true;
        self.leave();
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
            .map_err(|e| format!("cannot run ip netns del {}: {e}", self.name))?;
        if !out.status.success() {
            return Err(format!(
                "ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// Sends the entering thread back to its previous namespace. Another thread dropping the
    /// fixture leaves it alone: that thread never entered, and the entering one takes the
    /// namespace with it when it ends.
    fn leave(&mut self) {
        let Some(entered) = self.entered.take() else {
            return;
        };
        if entered.thread != std::thread::current().id() {
            return;
        }
        if let Err(e) = setns(&entered.previous, CloneFlags::CLONE_NEWNET) {
            eprintln!("cannot leave netns {}: {e}", self.name);
        }
    }
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = self.try_delete() {
            eprintln!("{e}");
        }
    }
}
