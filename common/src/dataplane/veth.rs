//! The veth pair between the host and a container: creation with both ends born in their final
//! namespace under their final name, read-back, and deletion.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth};

use super::format_mac;
use super::netlink::{self, Netlink, netlink_error, split_messages};
use super::netns::{self, ContainerNetns, Probe};
use crate::error::codes::DATAPLANE;
use crate::rollback::{Guard, RollbackLog, Undo};
use crate::{Context, Error, Kind, Result};

/// The MAC address Calico gives every host end (v1.11.2+): the kernel-generated one
/// occasionally caused trouble, and a fixed one makes the IPv6 link-local gateway predictable.
pub const HOST_MAC: [u8; 6] = [0xee; 6];

/// The longest interface name the kernel accepts (`IFNAMSIZ` minus the terminating NUL).
const MAX_IFNAME_LEN: usize = 15;

/// What [`create_veth`] creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethRequest {
    /// Name of the end in the host namespace, e.g. `cali0123456789a`.
    pub host_ifname: String,
    /// Name of the end in the container namespace (`CNI_IFNAME`).
    pub container_ifname: String,
    /// MTU of both ends; the kernel default when `None`.
    pub mtu: Option<u32>,
    /// MAC address of the host end.
    pub host_mac: [u8; 6],
    /// MAC address of the container end; the kernel chooses one when `None`.
    pub container_mac: Option<[u8; 6]>,
}

impl VethRequest {
    /// A request with the kernel's default MTU and Calico's host MAC [`HOST_MAC`].
    pub fn new(host_ifname: &str, container_ifname: &str) -> VethRequest {
        VethRequest {
            host_ifname: host_ifname.into(),
            container_ifname: container_ifname.into(),
            mtu: None,
            host_mac: HOST_MAC,
            container_mac: None,
        }
    }
}

/// A created veth pair, under a guard that deletes it again (through its host end, over the
/// host session it was created with) unless committed.
pub type VethGuard<'a> = Guard<VethPair<'a>>;

/// A veth pair [`create_veth`] created.
#[derive(Debug)]
pub struct VethPair<'a> {
    host: &'a Netlink,
    host_ifname: String,
    host_index: u32,
    container_ifname: String,
    container_index: u32,
    container_mac: String,
}

impl VethPair<'_> {
    /// Name of the host end.
    pub fn host_ifname(&self) -> &str {
        &self.host_ifname
    }

    /// Interface index of the host end in the host namespace.
    pub fn host_index(&self) -> u32 {
        self.host_index
    }

    /// Name of the container end.
    pub fn container_ifname(&self) -> &str {
        &self.container_ifname
    }

    /// Interface index of the container end in the container namespace.
    pub fn container_index(&self) -> u32 {
        self.container_index
    }

    /// MAC address of the container end, `aa:bb:cc:dd:ee:ff` in lower case.
    pub fn container_mac(&self) -> &str {
        &self.container_mac
    }
}

impl Undo for VethPair<'_> {
    fn action(&self) -> String {
        format!("delete host veth {}", self.host_ifname)
    }

    fn undo(&mut self, _log: &RollbackLog) -> Result<Vec<String>> {
        // By index, and only while it still has the name this run gave it: a link another
        // writer created under the name meanwhile is not this run's to delete.
        crate::fault::point("veth-delete")?;
        delete_link_at(self.host, self.host_index, &self.host_ifname)?;
        Ok(Vec::new())
    }
}

/// What [`read_link`] reports about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// Interface index in the namespace it was read in.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// MAC address, `aa:bb:cc:dd:ee:ff` in lower case (empty when the link has none).
    pub mac: String,
    /// Whether the link is administratively up.
    pub up: bool,
    /// MTU.
    pub mtu: u32,
    /// The link kind (`veth`, `dummy`, …), when the kernel reports one.
    pub kind: Option<String>,
    /// For a veth: the interface index of its other end, in the other end's namespace.
    pub peer_index: Option<u32>,
    /// The alias (`IFLA_IFALIAS`), when set.
    pub alias: Option<String>,
}

impl LinkState {
    /// Whether the link is one end of a veth pair.
    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }

    fn from_message(msg: &LinkMessage) -> LinkState {
        let mut state = LinkState {
            index: msg.header.index,
            name: String::new(),
            mac: String::new(),
            up: msg.header.flags.contains(LinkFlags::Up),
            mtu: 0,
            kind: None,
            peer_index: None,
            alias: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => state.name = name.clone(),
                LinkAttribute::Address(mac) => state.mac = format_mac(mac),
                LinkAttribute::Mtu(mtu) => state.mtu = *mtu,
                LinkAttribute::Link(index) => state.peer_index = Some(*index),
                LinkAttribute::IfAlias(alias) => state.alias = Some(alias.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            state.kind = Some(kind.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        state
    }
}

/// What makes `name` unacceptable to the kernel as an interface name, if anything: it must be 1
/// to 15 bytes, not `.` or `..`, without `/`, `:` or white space.
pub fn ifname_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_IFNAME_LEN {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is not allowed")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains '/', ':' or white space")
    } else if name.chars().any(char::is_control) {
        // The kernel would take them, but a name that cannot be printed or become a key
        // segment is no interface name an operator could ever address.
        Some("contains a control character")
    } else {
        None
    }
}

/// Checks that `name` is a name the kernel accepts for an interface ([`ifname_problem`]).
pub fn check_ifname(name: &str) -> Result<()> {
    match ifname_problem(name) {
        Some(problem) => Err(Error::new(
            DATAPLANE,
            format!("interface name {name:?} {problem}"),
        )),
        None => Ok(()),
    }
}

/// Creates the veth pair of `req` from the host namespace (`host`), the container end placed
/// straight into `container`, so each end is born in its final namespace under its final name
/// (renaming or moving an end raced with udev and other tools, calico-cni#135). Both ends get
/// the MTU when one is given and are set up; the host end gets `req.host_mac`. On an error
/// after the pair exists, the pair is deleted again; a failure to delete it is noted in
/// `rollback`.
///
/// An existing interface named `req.container_ifname` in the container, or `req.host_ifname` in
/// the host namespace, is an error naming both: the kernel refuses the
/// creation itself, so nothing is looked up before.
pub fn create_veth<'a>(
    host: &'a Netlink,
    container: &ContainerNetns,
    req: &VethRequest,
    rollback: &RollbackLog,
) -> Result<VethGuard<'a>> {
    check_ifname(&req.host_ifname)?;
    check_ifname(&req.container_ifname)?;
    let message = veth_message(req, container.file().as_fd().as_raw_fd());
    host.request(
        RouteNetlinkMessage::NewLink(message),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .map_err(|e| {
        netlink_error(
            e,
            format_args!(
                "create veth {} with peer {} in netns {}",
                req.host_ifname,
                req.container_ifname,
                container.path().display()
            ),
        )
    })?;
    // From here on the pair exists: every early return deletes it through the guard.
    let mut guard = Guard::new(
        VethPair {
            host,
            host_ifname: req.host_ifname.clone(),
            host_index: 0,
            container_ifname: req.container_ifname.clone(),
            container_index: 0,
            container_mac: String::new(),
        },
        rollback,
    );
    // The host end was created up; this only reads its index back.
    guard.host_index = existing_link(host, &req.host_ifname)?.index;
    crate::fault::point("veth-up")?;
    let container_end = bring_up(container.netlink(), &req.container_ifname)?;
    guard.container_index = container_end.index;
    guard.container_mac = container_end.mac;
    Ok(guard)
}

/// The RTM_NEWLINK message for the pair: the host end's attributes, and a peer message holding
/// the container end's name, MTU, MAC (when chosen) and the netns fd to create it in.
///
/// The peer cannot carry the up flag: the kernel registers and configures the peer before the
/// host end exists, and opening a veth without its other end fails with `ENOTCONN`. The
/// container end is set up afterwards, over the container's session.
fn veth_message(req: &VethRequest, netns_fd: i32) -> LinkMessage {
    let mut peer = LinkUnspec::new_with_name(&req.container_ifname).setns_by_fd(netns_fd);
    if let Some(mac) = req.container_mac {
        peer = peer.address(mac.to_vec());
    }
    let mut host = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(req.host_ifname.clone())
        .address(req.host_mac.to_vec())
        .up();
    if let Some(mtu) = req.mtu {
        peer = peer.mtu(mtu);
        host = host.mtu(mtu);
    }
    host.set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
        .build()
}

/// The link called `name`, which must exist.
fn existing_link(netlink: &Netlink, name: &str) -> Result<LinkState> {
    get_link(netlink, name)?.ok_or_else(|| {
        Error::new(
            DATAPLANE,
            format!("link {name} not found in {}", netlink.place()),
        )
        .with_kind(Kind::NotFound)
    })
}

/// Sets the link called `name` up (when it is not already) and returns its state.
fn bring_up(netlink: &Netlink, name: &str) -> Result<LinkState> {
    let mut link = existing_link(netlink, name)?;
    if !link.up {
        let up = LinkUnspec::new_with_index(link.index).up().build();
        netlink
            .request(RouteNetlinkMessage::SetLink(up), 0)
            .map_err(|e| netlink_error(e, format_args!("set link {name} up")))?;
        link.up = true;
    }
    Ok(link)
}

/// The link called `name`, `None` when there is none.
fn get_link(netlink: &Netlink, name: &str) -> Result<Option<LinkState>> {
    let mut request = LinkMessage::default();
    request
        .attributes
        .push(LinkAttribute::IfName(name.to_string()));
    first_link(netlink, request, format_args!("get link {name}"))
}

/// The link at `index`, `None` when there is none.
fn get_link_at(netlink: &Netlink, index: u32, name: &str) -> Result<Option<LinkState>> {
    let mut request = LinkMessage::default();
    request.header.index = index;
    first_link(
        netlink,
        request,
        format_args!("get link {name} (index {index})"),
    )
}

fn first_link(
    netlink: &Netlink,
    request: LinkMessage,
    context: std::fmt::Arguments<'_>,
) -> Result<Option<LinkState>> {
    match netlink.request(RouteNetlinkMessage::GetLink(request), 0) {
        Ok(answers) => Ok(answers.iter().find_map(|answer| match answer {
            RouteNetlinkMessage::NewLink(msg) => Some(LinkState::from_message(msg)),
            _ => None,
        })),
        Err(e) => match netlink_error(e, context) {
            err if err.is_not_found() => Ok(None),
            err => Err(err),
        },
    }
}

/// The state of the interface called `name` in the namespace of `netlink`; `None` when there is
/// no such interface.
pub fn read_link(netlink: &Netlink, name: &str) -> Result<Option<LinkState>> {
    get_link(netlink, name)
}

/// Whether an interface called `name` exists in the host namespace.
pub fn host_link_exists(host: &Netlink, name: &str) -> Result<bool> {
    Ok(get_link(host, name)?.is_some())
}

/// The host veth called `name`, `None` when there is no such link. A link of that name that is
/// not a veth is not one the plugin made: that is an error naming it.
fn host_veth(host: &Netlink, name: &str) -> Result<Option<LinkState>> {
    match get_link(host, name)? {
        Some(link) if !link.is_veth() => Err(Error::new(
            DATAPLANE,
            format!(
                "host link {name} is a {} link, not a veth: leaving it",
                link.kind.as_deref().unwrap_or("kernel")
            ),
        )),
        found => Ok(found),
    }
}

/// Deletes the host veth called `name`, and with it its container end wherever that is.
/// Returns false when there is no such link. A link of that name that is not a veth is not one
/// the plugin made: it is left, and that is an error naming it.
pub fn delete_host_veth(host: &Netlink, name: &str) -> Result<bool> {
    match host_veth(host, name)? {
        None => Ok(false),
        Some(link) => delete_index(host, link.index, name),
    }
}

/// Sets the alias (`IFLA_IFALIAS`) of the link at `index`, called `name` in messages. The kernel
/// takes an alias only on a link that exists, not with its creation.
pub fn set_alias(netlink: &Netlink, index: u32, name: &str, alias: &str) -> Result<()> {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message
        .attributes
        .push(LinkAttribute::IfAlias(alias.to_string()));
    netlink
        .request(RouteNetlinkMessage::SetLink(message), 0)
        .map_err(|e| netlink_error(e, format_args!("set the alias of link {name}")))?;
    Ok(())
}

/// Every host veth whose alias starts with `prefix`, from one dump of the host's links.
pub fn host_veths_aliased(host: &Netlink, prefix: &str) -> Result<Vec<LinkState>> {
    let answers = host.dump(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        "host links",
    )?;
    Ok(answers
        .iter()
        .filter_map(|answer| match answer {
            RouteNetlinkMessage::NewLink(msg) => Some(LinkState::from_message(msg)),
            _ => None,
        })
        .filter(|l| l.is_veth() && l.alias.as_deref().is_some_and(|a| a.starts_with(prefix)))
        .collect())
}

/// What [`HostVethDeletion::delete_then`] did.
#[derive(Debug)]
pub struct VethDeleted<T> {
    /// Whether a link was deleted (false: there was none of that name), or why it was not.
    pub deleted: Result<bool>,
    /// What the closure returned; `None` when the deletion failed, which keeps it from running.
    pub then: Option<T>,
}

/// The deletion of one host veth, made ready before it is known to be wanted: the link looked
/// up, and a thread of its own started that waits to be told to delete it. DEL prepares it just
/// before it sends its etcd read, so that the thread's start overlaps etcd's answer instead of
/// following it; the read then decides whether it runs. Dropped unused, nothing is deleted.
///
/// The lookup comes before the read on purpose: a link found then under the name existed
/// before the read saw the name's claim, so a pod's next sandbox, which takes the claim over
/// before it makes its own link, cannot have made it. The thread deletes that link by its index,
/// and only if it still has the name and is a veth: a link renamed, or one that took the name
/// since, is never the one deleted.
pub struct HostVethDeletion {
    name: String,
    /// What the lookup found: the link to delete, or none of that name.
    found: Result<Option<LinkState>>,
    /// Tells the thread to delete; dropped unused, it tells it to end.
    go: Option<std::sync::mpsc::SyncSender<()>>,
    /// Closed by the thread when its deletion returned.
    finished: Option<std::io::PipeReader>,
    /// Returns what the deletion returned (false when it was never told to delete).
    thread: Option<std::thread::JoinHandle<Result<bool>>>,
}

impl HostVethDeletion {
    /// Looks up the host veth `name` in `host` (a link of that name that is not a veth is an
    /// error, and is left) and, when there is one, starts the thread that waits for
    /// [`Self::delete_then`].
    pub fn prepare(host: &'static Netlink, name: &str) -> Result<HostVethDeletion> {
        let mut deletion = HostVethDeletion {
            name: name.to_string(),
            found: host_veth(host, name),
            go: None,
            finished: None,
            thread: None,
        };
        let Ok(Some(link)) = &deletion.found else {
            return Ok(deletion);
        };
        let index = link.index;
        let (go, go_rx) = std::sync::mpsc::sync_channel::<()>(1);
        let (finished, finished_tx) = std::io::pipe().context("create a pipe").code(DATAPLANE)?;
        let owned_name = name.to_string();
        let thread = std::thread::Builder::new()
            .name("dellink".into())
            .spawn(move || {
                if go_rx.recv().is_err() {
                    return Ok(false);
                }
                let deleted = delete_veth_at(host, index, &owned_name);
                // Closing the pipe tells the waiting thread that the deletion returned.
                drop(finished_tx);
                deleted
            })
            .with_context(|| format!("spawn a thread to delete host link {name}"))
            .code(DATAPLANE)?;
        deletion.go = Some(go);
        deletion.finished = Some(finished);
        deletion.thread = Some(thread);
        Ok(deletion)
    }

    /// The host veth's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the lookup found: the link to delete, or none of that name.
    pub fn found(&self) -> &Result<Option<LinkState>> {
        &self.found
    }

    /// Deletes the link the lookup found, and runs `on_gone` on the calling thread as soon as
    /// it is gone, while the kernel still finishes the deletion.
    ///
    /// `RTM_DELLINK` of a veth returns only after the kernel has waited for RCU grace periods
    /// and freed the pair (tens of milliseconds), but it announces the link's end (an
    /// `RTM_DELLINK` notification on `RTNLGRP_LINK`) when the link is unregistered, early in
    /// that call: no lookup finds it any more and nothing can bring it back. So the deletion
    /// runs on the prepared thread and `on_gone` runs once that notification for the link's
    /// index and name arrives (or, should it be missed, once the deletion returned). When
    /// there is no such link `on_gone` runs at once; when the deletion fails (the link is not
    /// a veth, the kernel refuses) it does not run. Call it from a thread in the host
    /// namespace: the notifications are read there.
    pub fn delete_then<T>(mut self, on_gone: impl FnOnce() -> T) -> VethDeleted<T> {
        let name = self.name.clone();
        let found = std::mem::replace(&mut self.found, Ok(None));
        let link = match found {
            Ok(Some(link)) => link,
            Ok(None) => {
                return VethDeleted {
                    deleted: Ok(false),
                    then: Some(on_gone()),
                };
            }
            Err(err) => {
                return VethDeleted {
                    deleted: Err(err),
                    then: None,
                };
            }
        };
        // Subscribed before the deletion is sent, or the notification could pass unseen.
        let listener = netlink::link_listener();
        if let Err(err) = &listener {
            crate::log::info(&format!(
                "{err}: waiting for the deletion of {name} to return"
            ));
        }
        if let Some(go) = self.go.take() {
            let _ = go.send(());
        }
        let mut on_gone = Some(on_gone);
        let mut then = None;
        if let (Ok(listener), Some(finished)) = (&listener, &self.finished)
            && wait_for_link_gone(listener, finished, link.index, &name)
        {
            then = on_gone.take().map(|f| f());
        }
        let deleted = self.join();
        // Not seen going (the notification was lost, or another writer removed the link
        // first): the deletion has returned, so the link is gone unless it failed.
        if deleted.is_ok()
            && let Some(on_gone) = on_gone.take()
        {
            then = Some(on_gone());
        }
        VethDeleted { deleted, then }
    }

    /// Waits for the thread: what its deletion returned (false when it was never told to).
    fn join(&mut self) -> Result<bool> {
        self.go = None;
        match self.thread.take().map(std::thread::JoinHandle::join) {
            None => Ok(false),
            Some(Ok(deleted)) => deleted,
            Some(Err(_)) => Err(Error::new(
                DATAPLANE,
                format!("deleting host link {} panicked", self.name),
            )),
        }
    }
}

impl Drop for HostVethDeletion {
    fn drop(&mut self) {
        // Unused: the thread sees its channel closed and ends without deleting anything.
        let _ = self.join();
    }
}

/// Waits until the kernel announces that the link `index` called `name` is gone (true), or the
/// deletion's end closes `finished` first (false).
fn wait_for_link_gone(
    listener: &rtnetlink::sys::Socket,
    finished: &std::io::PipeReader,
    index: u32,
    name: &str,
) -> bool {
    let mut buffer = Vec::with_capacity(64 * 1024);
    loop {
        let mut fds = [
            nix::libc::pollfd {
                fd: listener.as_raw_fd(),
                events: nix::libc::POLLIN,
                revents: 0,
            },
            nix::libc::pollfd {
                fd: finished.as_raw_fd(),
                events: nix::libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
        let ready = unsafe { nix::libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ready < 0 {
            if nix::errno::Errno::last() == nix::errno::Errno::EINTR {
                continue;
            }
            return false;
        }
        if fds[1].revents != 0 {
            return false;
        }
        if fds[0].revents == 0 {
            continue;
        }
        buffer.clear();
        // Lost notifications (ENOBUFS) or a broken socket: the deletion's end decides.
        if listener.recv(&mut buffer, nix::libc::MSG_DONTWAIT).is_err() {
            continue;
        }
        let Ok(messages) = split_messages(&buffer) else {
            continue;
        };
        let gone = messages.iter().any(|msg| match &msg.payload {
            rtnetlink::packet_core::NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(
                link,
            )) => {
                // A bridge port leaving its bridge is announced as AF_BRIDGE; that is not this.
                link.header.interface_family == AddressFamily::Unspec
                    && link.header.index == index
                    && LinkState::from_message(link).name == name
            }
            _ => false,
        });
        if gone {
            return true;
        }
    }
}

/// The interface `ifname` in `container`, when it exists there and is the container end of the
/// host veth `host_ifname`: each end names the other's index. `None` when the interface is
/// gone or belongs to something else.
pub fn container_end_of(
    host: &Netlink,
    container: &ContainerNetns,
    ifname: &str,
    host_ifname: &str,
) -> Result<Option<LinkState>> {
    let Some(host_end) = get_link(host, host_ifname)?.filter(LinkState::is_veth) else {
        return Ok(None);
    };
    let container_end = get_link(container.netlink(), ifname)?;
    Ok(container_end.filter(|c| are_peers(&host_end, c)))
}

/// Whether the host link `host_end` and the container link `container_end` are the two ends of
/// one veth pair: each is a veth and names the other's index as its peer.
pub fn are_peers(host_end: &LinkState, container_end: &LinkState) -> bool {
    host_end.is_veth()
        && container_end.is_veth()
        && container_end.peer_index == Some(host_end.index)
        && host_end.peer_index == Some(container_end.index)
}

/// Whether an interface called `ifname` exists in the netns at `netns` (false when the netns is
/// gone or not a namespace). Enters the namespace to look.
pub fn container_link_exists(netns: &Path, ifname: &str) -> Result<bool> {
    match netns::probe(netns)? {
        Probe::Netns(_) => {
            let container = ContainerNetns::open(netns)?;
            Ok(get_link(container.netlink(), ifname)?.is_some())
        }
        Probe::Missing | Probe::NotNetns => Ok(false),
    }
}

/// Deletes the link at `index` in the namespace of `netlink` if it is still called `name`;
/// false when it is gone or has another name now.
pub fn delete_link_at(netlink: &Netlink, index: u32, name: &str) -> Result<bool> {
    match get_link_at(netlink, index, name)? {
        Some(current) if current.name == name => delete_index(netlink, index, name),
        _ => Ok(false),
    }
}

/// Deletes the veth at `index` if it is still called `name`; false when it is gone, has
/// another name now or is no veth.
fn delete_veth_at(netlink: &Netlink, index: u32, name: &str) -> Result<bool> {
    match get_link_at(netlink, index, name)? {
        Some(current) if current.name == name && current.is_veth() => {
            delete_index(netlink, index, name)
        }
        _ => Ok(false),
    }
}

/// Deletes the link at `index`, called `name` in messages; false when it is gone already.
fn delete_index(netlink: &Netlink, index: u32, name: &str) -> Result<bool> {
    let mut request = LinkMessage::default();
    request.header.index = index;
    match netlink.request(RouteNetlinkMessage::DelLink(request), 0) {
        Ok(_) => Ok(true),
        Err(e) => match netlink_error(e, format_args!("delete link {name}")) {
            err if err.is_not_found() => Ok(false),
            err => Err(err),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::testutil::{HostLink, TestHost, TestNetns, ip_json, unique_ifname};

    #[test]
    fn interface_names_follow_kernel_rules() {
        let cases = [
            ("eth0", true),
            ("cali0123456789a", true),
            ("cali0123456789ab", false),
            ("", false),
            (".", false),
            ("..", false),
            ("a/b", false),
            ("a:b", false),
            ("a b", false),
            ("eth0.100", true),
        ];
        for (name, ok) in cases {
            assert_eq!(check_ifname(name).is_ok(), ok, "{name:?}");
        }
    }

    #[test]
    fn link_state_reads_kind_mac_and_flags() {
        let mut msg = LinkMessage::default();
        msg.header.index = 7;
        msg.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        msg.attributes = vec![
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::Address(vec![0xee; 6]),
            LinkAttribute::Mtu(1400),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
            LinkAttribute::Link(12),
            LinkAttribute::IfAlias("calico:net:c1:eth0".into()),
        ];
        let state = LinkState::from_message(&msg);
        assert_eq!(
            state,
            LinkState {
                index: 7,
                name: "eth0".into(),
                mac: "ee:ee:ee:ee:ee:ee".into(),
                up: true,
                mtu: 1400,
                kind: Some("veth".into()),
                peer_index: Some(12),
                alias: Some("calico:net:c1:eth0".into()),
            }
        );
        assert!(state.is_veth());
    }

    fn link_json(netns: Option<&str>, name: &str) -> serde_json::Value {
        let mut args = vec![];
        if let Some(ns) = netns {
            args.extend(["-n", ns]);
        }
        args.extend(["-d", "link", "show", "dev", name]);
        ip_json(&args)[0].clone()
    }

    /// Calico v1 failure history, row 23: the kernel-generated host veth MAC "fails some
    /// times"; the host end has `ee:ee:ee:ee:ee:ee` from creation on.
    #[test]
    #[ignore = "needs root"]
    fn host_veth_is_born_with_the_fixed_mac_not_a_kernel_generated_one() {
        let host_ns = TestHost::enter();
        let ns = TestNetns::new("veth");
        let host = HostLink::new(unique_ifname("cv"));
        let mut req = VethRequest::new(host.name(), "eth0");
        req.mtu = Some(1400);
        let container = ContainerNetns::open(ns.path()).unwrap();
        let mut guard = create_veth(
            host_ns.netlink(),
            &container,
            &req,
            &crate::rollback::RollbackLog::default(),
        )
        .unwrap();

        let h = link_json(None, host.name());
        assert_eq!(h["address"], "ee:ee:ee:ee:ee:ee");
        assert_eq!(h["mtu"], 1400);
        assert_eq!(h["linkinfo"]["info_kind"], "veth");
        assert!(
            h["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
            "{h}"
        );
        assert_eq!(h["ifindex"], guard.host_index());

        let c = link_json(Some(ns.name()), "eth0");
        assert_eq!(c["mtu"], 1400);
        assert_eq!(c["address"], guard.container_mac());
        assert_eq!(c["ifindex"], guard.container_index());
        assert!(
            c["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
            "{c}"
        );
        assert_eq!(guard.container_ifname(), "eth0");
        assert_eq!(guard.host_ifname(), host.name());

        let state = read_link(host_ns.netlink(), host.name()).unwrap().unwrap();
        assert!(state.is_veth() && state.up && state.mtu == 1400);
        let inside = read_link(ContainerNetns::open(ns.path()).unwrap().netlink(), "eth0")
            .unwrap()
            .unwrap();
        assert_eq!(inside.mac, guard.container_mac());
        guard.commit();
        drop(guard);
        assert!(host_link_exists(host_ns.netlink(), host.name()).unwrap());
    }

    #[test]
    #[ignore = "needs root"]
    fn dropped_guard_removes_both_ends() {
        let host_ns = TestHost::enter();
        let ns = TestNetns::new("vdrop");
        let host = HostLink::new(unique_ifname("cv"));
        let guard = create_veth(
            host_ns.netlink(),
            &ContainerNetns::open(ns.path()).unwrap(),
            &VethRequest::new(host.name(), "eth0"),
            &crate::rollback::RollbackLog::default(),
        )
        .unwrap();
        drop(guard);
        assert!(!host_link_exists(host_ns.netlink(), host.name()).unwrap());
        assert!(
            read_link(ContainerNetns::open(ns.path()).unwrap().netlink(), "eth0")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    #[ignore = "needs root"]
    fn existing_container_ifname_is_already_exists() {
        let host_ns = TestHost::enter();
        let ns = TestNetns::new("vexist");
        ns.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "spare0",
        ]);
        let host = HostLink::new(unique_ifname("cv"));
        let err = create_veth(
            host_ns.netlink(),
            &ContainerNetns::open(ns.path()).unwrap(),
            &VethRequest::new(host.name(), "eth0"),
            &crate::rollback::RollbackLog::default(),
        )
        .unwrap_err();
        assert!(err.msg().contains("exists"), "{err:?}");
        assert!(err.msg().contains("eth0"), "{err:?}");
        assert!(!host_link_exists(host_ns.netlink(), host.name()).unwrap());
    }

    #[test]
    #[ignore = "needs root"]
    fn existing_host_link_is_already_exists() {
        let host_ns = TestHost::enter();
        let ns = TestNetns::new("vhost");
        let host = HostLink::new(unique_ifname("cv"));
        host.create_spare_veth();
        let err = create_veth(
            host_ns.netlink(),
            &ContainerNetns::open(ns.path()).unwrap(),
            &VethRequest::new(host.name(), "eth0"),
            &crate::rollback::RollbackLog::default(),
        )
        .unwrap_err();
        assert!(err.msg().contains("exists"), "{err:?}");
        assert!(err.msg().contains(host.name()), "{err:?}");
        assert!(
            read_link(ContainerNetns::open(ns.path()).unwrap().netlink(), "eth0")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    #[ignore = "needs root"]
    fn missing_netns_is_not_found() {
        let host_ns = TestHost::enter();
        let host = HostLink::new(unique_ifname("cv"));
        let err = ContainerNetns::open(Path::new("/run/netns/calico-test-gone"))
            .and_then(|c| {
                create_veth(
                    host_ns.netlink(),
                    &c,
                    &VethRequest::new(host.name(), "eth0"),
                    &crate::rollback::RollbackLog::default(),
                )
            })
            .unwrap_err();
        assert_eq!(err.kind(), Kind::NotFound);
        assert!(!host_link_exists(host_ns.netlink(), host.name()).unwrap());
    }

    #[test]
    #[ignore = "needs root"]
    fn deletes_report_whether_something_was_deleted() {
        let host_ns = TestHost::enter();
        let ns = TestNetns::new("vdel");
        let host = HostLink::new(unique_ifname("cv"));
        create_veth(
            host_ns.netlink(),
            &ContainerNetns::open(ns.path()).unwrap(),
            &VethRequest::new(host.name(), "eth0"),
            &crate::rollback::RollbackLog::default(),
        )
        .unwrap()
        .commit();

        assert!(delete_host_veth(host_ns.netlink(), host.name()).unwrap());
        assert!(
            !container_link_exists(ns.path(), "eth0").unwrap(),
            "deleting the host end removes the container end"
        );
        assert!(!delete_host_veth(host_ns.netlink(), host.name()).unwrap());
        assert!(!host_link_exists(host_ns.netlink(), host.name()).unwrap());
        for gone in [
            "/run/netns/calico-test-gone",
            "/proc/self/status",
            "/proc/self/ns/mnt",
        ] {
            assert!(!container_link_exists(Path::new(gone), "eth0").unwrap());
        }
    }

    #[test]
    #[ignore = "needs root"]
    fn only_the_peer_of_the_host_veth_is_its_container_end() {
        let host_ns = TestHost::enter();
        let (ns_a, ns_b) = (TestNetns::new("vpa"), TestNetns::new("vpb"));
        let (host_a, host_b) = (
            HostLink::new(unique_ifname("ca")),
            HostLink::new(unique_ifname("cb")),
        );
        for (host, ns) in [(&host_a, &ns_a), (&host_b, &ns_b)] {
            create_veth(
                host_ns.netlink(),
                &ContainerNetns::open(ns.path()).unwrap(),
                &VethRequest::new(host.name(), "eth0"),
                &crate::rollback::RollbackLog::default(),
            )
            .unwrap()
            .commit();
        }
        let own = container_end_of(
            host_ns.netlink(),
            &ContainerNetns::open(ns_a.path()).unwrap(),
            "eth0",
            host_a.name(),
        )
        .unwrap();
        assert_eq!(own.map(|l| l.name), Some("eth0".to_string()));
        // The other container's eth0, with the same name and maybe the same index, is not it.
        assert!(
            container_end_of(
                host_ns.netlink(),
                &ContainerNetns::open(ns_b.path()).unwrap(),
                "eth0",
                host_a.name()
            )
            .unwrap()
            .is_none()
        );
        assert!(
            container_end_of(
                host_ns.netlink(),
                &ContainerNetns::open(ns_a.path()).unwrap(),
                "eth1",
                host_a.name()
            )
            .unwrap()
            .is_none()
        );
        assert!(
            container_end_of(
                host_ns.netlink(),
                &ContainerNetns::open(ns_a.path()).unwrap(),
                "lo",
                host_a.name()
            )
            .unwrap()
            .is_none()
        );
        assert!(delete_host_veth(host_ns.netlink(), host_a.name()).unwrap());
        assert!(container_link_exists(ns_b.path(), "eth0").unwrap());
        assert!(
            container_end_of(
                host_ns.netlink(),
                &ContainerNetns::open(ns_a.path()).unwrap(),
                "eth0",
                host_a.name()
            )
            .unwrap()
            .is_none()
        );
    }

    #[test]
    #[ignore = "needs root"]
    fn a_host_link_that_is_not_a_veth_is_left() {
        let host_ns = TestHost::enter();
        let host = HostLink::new(unique_ifname("cd"));
        host.ip(&["link", "add", host.name(), "type", "bridge"]);
        let err = delete_host_veth(host_ns.netlink(), host.name()).unwrap_err();
        assert!(err.msg().contains("not a veth"), "{err:?}");
        assert!(host_link_exists(host_ns.netlink(), host.name()).unwrap());
    }

    /// A session in the calling thread's namespace that lives as long as the test process, as
    /// the plugin's host session does.
    fn static_session() -> &'static Netlink {
        Box::leak(Box::new(
            Netlink::open_here("the test's host".into()).unwrap(),
        ))
    }

    /// DEL commits its last etcd transaction from this closure: it must run exactly once, and
    /// only when the pair can no longer be found on either side.
    #[test]
    #[ignore = "needs root"]
    fn closure_runs_once_when_the_deleted_veth_is_gone_from_both_namespaces() {
        let host_ns = TestHost::enter();
        let ns = TestNetns::new("vthen");
        let host = HostLink::new(unique_ifname("ct"));
        let container = ContainerNetns::open(ns.path()).unwrap();
        create_veth(
            host_ns.netlink(),
            &container,
            &VethRequest::new(host.name(), "eth0"),
            &crate::rollback::RollbackLog::default(),
        )
        .unwrap()
        .commit();
        // A session of its own: the host session is busy with the deletion meanwhile.
        let observer = Netlink::open_here("the test's host view".into()).unwrap();
        let mut runs = 0;
        let outcome = HostVethDeletion::prepare(static_session(), host.name())
            .unwrap()
            .delete_then(|| {
                runs += 1;
                (
                    read_link(&observer, host.name()).unwrap(),
                    read_link(container.netlink(), "eth0").unwrap(),
                )
            });
        assert!(outcome.deleted.unwrap());
        assert_eq!(runs, 1);
        assert_eq!(outcome.then, Some((None, None)));
        assert!(!host_link_exists(host_ns.netlink(), host.name()).unwrap());
    }

    /// DEL prepares the deletion before it knows whether it may delete: unused, nothing goes;
    /// used, only the link the lookup found goes, and only while it keeps the name: not after
    /// it was renamed, nor a link that took the name meanwhile.
    #[test]
    #[ignore = "needs root"]
    fn a_prepared_deletion_deletes_only_the_link_it_found_and_only_when_told() {
        let host_ns = TestHost::enter();
        let ns = TestNetns::new("vprep");
        let host = HostLink::new(unique_ifname("cp"));
        let renamed = HostLink::new(unique_ifname("cr"));
        let container = ContainerNetns::open(ns.path()).unwrap();
        let pair = |ifname: &str| {
            create_veth(
                host_ns.netlink(),
                &container,
                &VethRequest::new(host.name(), ifname),
                &crate::rollback::RollbackLog::default(),
            )
            .unwrap()
            .commit();
        };
        let index_now = || {
            read_link(host_ns.netlink(), host.name())
                .unwrap()
                .map(|l| l.index)
        };
        pair("eth0");
        let unused = HostVethDeletion::prepare(static_session(), host.name()).unwrap();
        assert!(unused.found().as_ref().unwrap().is_some());
        drop(unused);
        assert!(index_now().is_some(), "an unused deletion deleted");

        // Renamed after the lookup: left under its new name.
        let stale = HostVethDeletion::prepare(static_session(), host.name()).unwrap();
        host.ip(&["link", "set", host.name(), "name", renamed.name()]);
        let outcome = stale.delete_then(|| ());
        assert!(!outcome.deleted.unwrap(), "deleted a link that was renamed");
        assert!(host_link_exists(host_ns.netlink(), renamed.name()).unwrap());
        renamed.ip(&["link", "del", renamed.name()]);

        // Deleted after the lookup and the name taken by a new pair: the new pair stays.
        pair("eth1");
        let stale = HostVethDeletion::prepare(static_session(), host.name()).unwrap();
        assert!(delete_host_veth(host_ns.netlink(), host.name()).unwrap());
        pair("eth2");
        let newcomer = index_now();
        let outcome = stale.delete_then(|| ());
        assert!(
            !outcome.deleted.unwrap(),
            "deleted the link that took the name"
        );
        assert_eq!(index_now(), newcomer);
    }

    #[test]
    #[ignore = "needs root"]
    fn closure_runs_at_once_when_there_is_no_link_to_delete() {
        let _host_ns = TestHost::enter();
        let host = HostLink::new(unique_ifname("ct"));
        let mut runs = 0;
        let outcome = HostVethDeletion::prepare(static_session(), host.name())
            .unwrap()
            .delete_then(|| runs += 1);
        assert!(!outcome.deleted.unwrap());
        assert_eq!(outcome.then, Some(()));
        assert_eq!(runs, 1);
    }

    #[test]
    #[ignore = "needs root"]
    fn closure_does_not_run_when_the_link_cannot_be_deleted() {
        let host_ns = TestHost::enter();
        let host = HostLink::new(unique_ifname("ct"));
        host.ip(&["link", "add", host.name(), "type", "bridge"]);
        let mut runs = 0;
        let outcome = HostVethDeletion::prepare(static_session(), host.name())
            .unwrap()
            .delete_then(|| runs += 1);
        let err = outcome.deleted.unwrap_err();
        assert!(err.msg().contains("not a veth"), "{err:?}");
        assert_eq!(outcome.then, None);
        assert_eq!(runs, 0);
        assert!(host_link_exists(host_ns.netlink(), host.name()).unwrap());
    }
}
