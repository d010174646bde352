//! A container on a [`TestBed`]: its id, netns, interface name and network config, the ADD and
//! DEL calls for it, and on drop the DEL and the "nothing is left" check every test ends with.

use crate::plugin::{Env, PluginOutput};
use crate::{NetConf, Netns, TestBed, names};

/// One container's interface on one network. Dropping it runs DEL (which must succeed) and
/// [`TestBed::assert_nothing_left`]; while the test is already failing, only the DEL runs, and
/// its outcome is ignored.
pub struct Container<'bed> {
    /// The bed the container runs on.
    pub bed: &'bed TestBed,
    /// `CNI_CONTAINERID`: a fresh id from [`names::container_id`] unless set.
    pub id: String,
    /// The container's network namespace.
    pub netns: Netns,
    /// `CNI_IFNAME`: `eth0` unless set.
    pub ifname: String,
    /// The network config of ADD and DEL.
    pub conf: NetConf,
}

impl TestBed {
    /// A container with a fresh id and netns, attached with `conf` under `eth0`. Nothing runs
    /// until [`Container::add`].
    pub fn container(&self, conf: NetConf) -> Container<'_> {
        Container {
            bed: self,
            id: names::container_id(),
            netns: Netns::new(),
            ifname: "eth0".to_string(),
            conf,
        }
    }
}

impl Container<'_> {
    /// The same container under interface `ifname`.
    pub fn ifname(mut self, ifname: &str) -> Self {
        self.ifname = ifname.to_string();
        self
    }

    /// The same container with id `id`.
    pub fn id(mut self, id: &str) -> Self {
        self.id = id.to_string();
        self
    }

    /// The `CNI_*` environment of `command` for this container.
    pub fn env(&self, command: &str) -> Env {
        self.bed
            .env(command, &self.id, &self.netns.path(), &self.ifname)
    }

    /// Runs `calico` ADD.
    pub fn add(&self) -> PluginOutput {
        self.bed
            .add(&self.conf, &self.id, &self.netns.path(), &self.ifname)
    }

    /// Runs `calico` DEL.
    pub fn del(&self) -> PluginOutput {
        self.bed
            .del(&self.conf, &self.id, &self.netns.path(), &self.ifname)
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let deleted = self.del();
        if std::thread::panicking() {
            return;
        }
        deleted.assert_success();
        self.bed.assert_nothing_left(&[&self.id]);
    }
}
