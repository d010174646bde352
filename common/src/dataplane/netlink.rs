//! One synchronous rtnetlink session per network namespace.
//!
//! A netlink socket stays bound to the network namespace it was opened in, whatever thread uses
//! it later. So a verb opens one socket per namespace, the container's on the short-lived thread
//! that enters it ([`super::netns::ContainerNetns::open`]), the host's on first use
//! ([`Netlink::host`]), and then sends every request of the run over it from its own thread:
//! one namespace entry per container, no thread per request. The socket is driven
//! synchronously (send, then read until the kernel's acknowledgement or the end of the dump)
//! over netlink-sys with the message types of netlink-packet-route, both as rtnetlink
//! re-exports them, so no async runtime is needed for the kernel at all.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use nix::errno::Errno;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer, NetlinkMessage,
    NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{Socket, protocols::NETLINK_ROUTE};

use crate::error::codes::DATAPLANE;
use crate::{Context, Error, Kind, Result};

/// How often an interrupted netlink dump is repeated before giving up.
const DUMP_ATTEMPTS: usize = 5;

/// Receive buffer. The kernel sizes dump datagrams after the reader's buffer, at most 32 KiB;
/// a single answer (a link with its statistics) is far smaller.
const RECV_BUFFER: usize = 64 * 1024;

/// Why a netlink request failed.
#[derive(Debug)]
pub(crate) enum NetlinkError {
    /// The kernel answered with this errno.
    Kernel(Errno),
    /// The socket itself failed.
    Io(io::Error),
    /// The answer could not be parsed.
    Decode(String),
}

impl NetlinkError {
    /// The kernel's errno, if the kernel refused the request.
    pub(crate) fn errno(&self) -> Option<Errno> {
        match self {
            NetlinkError::Kernel(errno) => Some(*errno),
            _ => None,
        }
    }
}

/// A rtnetlink socket bound to one network namespace: the one it was opened in.
///
/// Requests are serialised on the socket, so a session may be shared between threads; each
/// request reads its own answers to the end before the next one is sent.
#[derive(Debug)]
pub struct Netlink {
    socket: Mutex<Socket>,
    sequence: AtomicU32,
    /// Where the socket lives, for messages: "the host" or "netns <path>".
    place: String,
}

/// The session of the plugin's own namespace, opened on first use.
static HOST: OnceLock<Netlink> = OnceLock::new();

impl Netlink {
    /// Opens a session in the network namespace of the calling thread; `place` names that
    /// namespace in error messages.
    pub(crate) fn open_here(place: String) -> Result<Netlink> {
        let socket = open_socket()
            .with_context(|| format!("open a netlink socket in {place}"))
            .code(DATAPLANE)?;
        Ok(Netlink {
            socket: Mutex::new(socket),
            sequence: AtomicU32::new(0),
            place,
        })
    }

    /// The session of the plugin's own network namespace (the host's), opened once per process
    /// on first use and shared by every step of the run.
    ///
    /// Only a thread in the process's own namespace may open it: a call made first from a
    /// thread that entered a container's namespace would bind it there, so that is refused.
    pub fn host() -> Result<&'static Netlink> {
        if let Some(host) = HOST.get() {
            return Ok(host);
        }
        check_in_process_netns()?;
        let session = Netlink::open_here("the host".into())?;
        // Two threads may race here; either socket serves, the loser's is closed.
        Ok(HOST.get_or_init(|| session))
    }

    /// Where this session's namespace is, as error messages name it.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// Sends `message` as a request with `flags` (plus `NLM_F_REQUEST | NLM_F_ACK`) and returns
    /// the messages the kernel answered with before its acknowledgement.
    pub(crate) fn request(
        &self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> std::result::Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.exchange(message, NLM_F_REQUEST | NLM_F_ACK | flags)
            .map(|(answers, _)| answers)
    }

    /// Dumps the objects `request` asks for (links, addresses, routes) and returns their
    /// messages. The kernel flags a dump that raced with a change (`NLM_F_DUMP_INTR`) or fails
    /// it with `EINTR`; such a dump is repeated a fixed number of times. `what` names the
    /// objects in errors.
    pub(crate) fn dump(
        &self,
        request: RouteNetlinkMessage,
        what: &str,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        for _ in 0..DUMP_ATTEMPTS {
            match self.exchange(request.clone(), NLM_F_REQUEST | NLM_F_DUMP) {
                Ok((answers, false)) => return Ok(answers),
                Ok((_, true)) | Err(NetlinkError::Kernel(Errno::EINTR)) => {}
                Err(err) => return Err(netlink_error(err, format_args!("dump {what}"))),
            }
        }
        Err(Error::new(
            DATAPLANE,
            format!("dump {what}: interrupted {DUMP_ATTEMPTS} times in a row"),
        )
        .with_kind(Kind::TryAgainLater))
    }

    /// One request and its answers: the inner messages, and whether the kernel flagged the
    /// dump as interrupted.
    fn exchange(
        &self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> std::result::Result<(Vec<RouteNetlinkMessage>, bool), NetlinkError> {
        let socket = self
            .socket
            .lock()
            .map_err(|_| NetlinkError::Decode("netlink session poisoned".into()))?;
        let sequence = self
            .sequence
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        let mut request = NetlinkMessage::from(message);
        request.header.flags = flags;
        request.header.sequence_number = sequence;
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        socket.send(&bytes, 0).map_err(NetlinkError::Io)?;

        let mut answers = Vec::new();
        let mut interrupted = false;
        let mut buffer = Vec::with_capacity(RECV_BUFFER);
        loop {
            buffer.clear();
            let len = socket
                .recv(&mut buffer, nix::libc::MSG_TRUNC)
                .map_err(NetlinkError::Io)?;
            if len > buffer.len() {
                return Err(NetlinkError::Decode(format!(
                    "netlink answer of {len} bytes exceeds the {RECV_BUFFER}-byte buffer"
                )));
            }
            for answer in split_messages(&buffer)? {
                if answer.header.sequence_number != sequence {
                    // An answer to an earlier request that gave up reading: not this one's.
                    continue;
                }
                if answer.header.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match answer.payload {
                    // A request's answers end with the acknowledgement, a dump's with done.
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    NetlinkPayload::Error(err) => {
                        return match err.code {
                            None => Ok((answers, interrupted)),
                            Some(code) => Err(NetlinkError::Kernel(Errno::from_raw(-code.get()))),
                        };
                    }
                    NetlinkPayload::Done(done) if done.code < 0 => {
                        return Err(NetlinkError::Kernel(Errno::from_raw(-done.code)));
                    }
                    NetlinkPayload::Done(_) => return Ok((answers, interrupted)),
                    NetlinkPayload::Overrun(_) => interrupted = true,
                    _ => {}
                }
            }
        }
    }
}

/// A bound rtnetlink socket in the calling thread's namespace.
fn open_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    Ok(socket)
}

/// A socket in the calling thread's namespace that receives the kernel's link notifications
/// (`RTNLGRP_LINK`), for waiting on a link to go.
pub(crate) fn link_listener() -> Result<Socket> {
    const RTNLGRP_LINK: u32 = 1;
    let socket = open_socket().and_then(|socket| {
        socket.add_membership(RTNLGRP_LINK)?;
        Ok(socket)
    });
    socket
        .context("open a netlink socket for link notifications")
        .code(DATAPLANE)
}

/// The messages of one datagram.
pub(crate) fn split_messages(
    mut bytes: &[u8],
) -> std::result::Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, NetlinkError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = NetlinkBuffer::new_checked(bytes)
            .map_err(|e| NetlinkError::Decode(e.to_string()))?
            .length() as usize;
        // Messages are 4-byte aligned within a datagram.
        let aligned = (len + 3) & !3;
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len])
            .map_err(|e| NetlinkError::Decode(e.to_string()))?;
        out.push(message);
        bytes = bytes.get(aligned..).unwrap_or_default();
    }
    Ok(out)
}

/// Refuses when the calling thread is not in the process's own network namespace.
fn check_in_process_netns() -> Result<()> {
    let ino = |path: &str| {
        std::fs::metadata(path)
            .map(|m| (m.dev(), m.ino()))
            .with_context(|| format!("stat {path}"))
            .code(DATAPLANE)
    };
    if ino("/proc/thread-self/ns/net")? != ino("/proc/self/ns/net")? {
        return Err(Error::new(
            DATAPLANE,
            "host netlink session requested from a thread inside another network namespace",
        ));
    }
    Ok(())
}

/// A dataplane error for a failed netlink request: `context` names the object, the text is the
/// kernel's errno description in lower case, and `ENODEV` / `ENOENT` / `ESRCH` set the kind a
/// caller can branch on.
pub(crate) fn netlink_error(err: NetlinkError, context: impl std::fmt::Display) -> Error {
    let (text, kind) = match err {
        NetlinkError::Kernel(errno) => {
            let kind = match errno {
                Errno::ENODEV | Errno::ENOENT | Errno::ESRCH => Kind::NotFound,
                _ => Kind::Other,
            };
            (super::errno_text(errno), kind)
        }
        NetlinkError::Io(err) => (err.to_string().to_lowercase(), Kind::Other),
        NetlinkError::Decode(text) => (format!("undecodable netlink answer: {text}"), Kind::Other),
    };
    Error::new(DATAPLANE, text).with_kind(kind).context(context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::netns::{ContainerNetns, with_netns};
    use crate::dataplane::testutil::TestNetns;
    use crate::dataplane::veth::read_link;

    #[test]
    #[ignore = "needs root"]
    fn a_session_opened_in_a_netns_sees_its_links_from_any_thread() {
        let ns = TestNetns::new("session");
        ns.ip(&[
            "link", "add", "probe0", "type", "veth", "peer", "name", "probe1",
        ]);
        let own = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let container = ContainerNetns::open(ns.path()).unwrap();
        // This thread never entered the namespace, yet the session acts inside it.
        assert_eq!(std::fs::read_link("/proc/thread-self/ns/net").unwrap(), own);
        let probe = read_link(container.netlink(), "probe0").unwrap().unwrap();
        assert!(probe.is_veth());
        assert!(
            read_link(Netlink::host().unwrap(), "probe0")
                .unwrap()
                .is_none()
        );
        let from_another_thread = std::thread::scope(|scope| {
            scope
                .spawn(|| read_link(container.netlink(), "probe1"))
                .join()
                .unwrap()
        });
        assert_eq!(
            from_another_thread.unwrap().unwrap().peer_index,
            Some(probe.index)
        );
    }

    #[test]
    #[ignore = "needs root"]
    fn the_host_session_is_not_opened_from_inside_another_netns() {
        let ns = TestNetns::new("hostref");
        let err = with_netns(ns.path(), check_in_process_netns).unwrap_err();
        assert!(err.msg().contains("another network namespace"), "{err:?}");
        assert!(check_in_process_netns().is_ok());
    }

    #[test]
    fn kernel_refusals_keep_their_errno() {
        let host = Netlink::open_here("the host".into()).unwrap();
        let mut request = rtnetlink::packet_route::link::LinkMessage::default();
        request.header.index = 0x7fff_fff0;
        let err = host
            .request(RouteNetlinkMessage::GetLink(request), 0)
            .unwrap_err();
        assert_eq!(err.errno(), Some(Errno::ENODEV));
    }

    #[test]
    fn a_dump_returns_every_link() {
        let host = Netlink::open_here("the host".into()).unwrap();
        let request = RouteNetlinkMessage::GetLink(Default::default());
        let links = host.dump(request, "links").unwrap();
        assert!(
            links
                .iter()
                .any(|l| matches!(l, RouteNetlinkMessage::NewLink(m) if m.header.index == 1)),
            "lo is link 1: {links:?}"
        );
    }
}
