//! The kernel's own time for a DEL: a bare veth pair shaped like a container's (host end with
//! a /32 route, peer in a netns with an address, both up) deleted with one RTM_DELLINK from the
//! driver, timed around the request and its acknowledgement. RTM_DELLINK is synchronous: it
//! returns after the RCU grace periods of the teardown, which is most of any DEL.

use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::exec::helper;
use crate::netns::Netns;

/// One route-netlink socket of the driver, in the host netns.
pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
}

#[repr(C)]
struct IfInfoMsg {
    family: u8,
    pad: u8,
    link_type: u16,
    index: i32,
    flags: u32,
    change: u32,
}

#[repr(C)]
struct DelLink {
    header: libc::nlmsghdr,
    body: IfInfoMsg,
}

impl Rtnl {
    pub fn open() -> Result<Rtnl, String> {
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(format!(
                "cannot open a netlink socket: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Rtnl { fd, seq: 0 })
    }

    /// Deletes the link with `index` and waits for the kernel's answer: the time it took.
    pub fn delete_link(&mut self, name: &str, index: i32) -> Result<Duration, String> {
        self.seq += 1;
        let request = DelLink {
            header: libc::nlmsghdr {
                nlmsg_len: size_of::<DelLink>() as u32,
                nlmsg_type: libc::RTM_DELLINK,
                nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
                nlmsg_seq: self.seq,
                nlmsg_pid: 0,
            },
            body: IfInfoMsg {
                family: libc::AF_UNSPEC as u8,
                pad: 0,
                link_type: 0,
                index,
                flags: 0,
                change: 0,
            },
        };
        // SAFETY: zeroed sockaddr_nl addresses the kernel (pid 0).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as u16;
        let mut answer = [0u8; 1024];
        let start = Instant::now();
        // SAFETY: request and kernel live across the call; lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                (&request as *const DelLink).cast(),
                size_of::<DelLink>(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(format!(
                "RTM_DELLINK {name}: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: answer is a local buffer of the given length.
        let got = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                answer.as_mut_ptr().cast(),
                answer.len(),
                0,
            )
        };
        let took = start.elapsed();
        let header = size_of::<libc::nlmsghdr>();
        if got < (header + 4) as isize {
            return Err(format!(
                "RTM_DELLINK {name}: no acknowledgement: {}",
                std::io::Error::last_os_error()
            ));
        }
        let msg_type = u16::from_ne_bytes([answer[4], answer[5]]);
        let errno = i32::from_ne_bytes([
            answer[header],
            answer[header + 1],
            answer[header + 2],
            answer[header + 3],
        ]);
        if msg_type != libc::NLMSG_ERROR as u16 || errno != 0 {
            return Err(format!(
                "RTM_DELLINK {name}: {}",
                std::io::Error::from_raw_os_error(-errno)
            ));
        }
        Ok(took)
    }
}

/// A veth pair like a container's, its host end deleted on drop unless [`BareVeth::delete`]
/// already did.
pub struct BareVeth {
    host: String,
    index: i32,
}

impl BareVeth {
    /// The host end `host` (with a route to `address`) and `eth0` in `netns` holding `address`.
    pub fn create(host: &str, netns: &Netns, address: &str) -> Result<BareVeth, String> {
        helper(
            "ip",
            &[
                "link",
                "add",
                host,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                netns.name(),
            ],
        )?;
        let mut veth = BareVeth {
            host: host.to_string(),
            index: 0,
        };
        let ns = netns.name();
        helper(
            "ip",
            &[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{address}/32"),
                "dev",
                "eth0",
            ],
        )?;
        helper("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
        helper("ip", &["link", "set", host, "up"])?;
        helper(
            "ip",
            &["route", "add", &format!("{address}/32"), "dev", host],
        )?;
        let name = std::ffi::CString::new(host).map_err(|e| format!("link name {host}: {e}"))?;
        // SAFETY: a valid NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        if index == 0 {
            return Err(format!("link {host} has no index after creation"));
        }
        veth.index = index;
        Ok(veth)
    }

    /// Deletes the pair with one RTM_DELLINK: the kernel's time for it.
    pub fn delete(mut self, rtnl: &mut Rtnl) -> Result<Duration, String> {
        let took = rtnl.delete_link(&self.host, self.index)?;
        self.index = 0;
        Ok(took)
    }
}

impl Drop for BareVeth {
    fn drop(&mut self) {
        if link_exists(&self.host) {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &self.host])
                .output();
        }
    }
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}
