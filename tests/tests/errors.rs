//! The version of an error, end to end: the spec error JSON on stdout, exit status 1, and
//! nothing created. The protocol's own cases (missing variables, unsupported versions, the
//! version of an error) are table-driven unit tests of `cni::run` in the common crate; single
//! bad values (container ids, interface names, network names, stdin, commands and many more)
//! are rows of the table in `bad_input.rs`.

use tests::kernel::{host_link, netns_links};
use tests::{
    Env, NetConf, Netns, PluginOutput, SUPPORTED_VERSIONS, TestBed, host_veth_name, names,
    run_plugin,
};

const CONFIG_CODE: u64 = 7;

/// A bed, a netns and a container id whose only problem is what each test breaks.
struct Case {
    bed: TestBed,
    netns: Netns,
    cid: String,
}

impl Case {
    fn new() -> Case {
        Case {
            bed: TestBed::new(),
            netns: Netns::new(),
            cid: names::container_id(),
        }
    }

    fn env(&self, command: &str) -> Env {
        self.bed.env(command, &self.cid, &self.netns.path(), "eth0")
    }

    fn run(&self, env: &Env, conf: &NetConf) -> PluginOutput {
        run_plugin("calico", env, &conf.to_bytes())
    }

    /// Asserts nothing was created: no host veth, only `lo` in the netns, no etcd key, no IP.
    fn assert_untouched(&self) {
        assert!(
            host_link(&host_veth_name(&self.cid)).is_none(),
            "host veth created"
        );
        let links: Vec<String> = netns_links(self.netns.name())
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(
            links,
            vec!["lo".to_string()],
            "links created in the container netns"
        );
        self.bed.assert_nothing_left(&[&self.cid]);
    }
}

/// The spec: an error's `cniVersion` is "the same value as provided by the configuration",
/// whether the config itself is at fault or a later step fails.
#[test]
#[ignore = "root: real etcd and netns"]
fn errors_carry_the_config_cni_version() {
    let case = Case::new();
    let absent_netns = format!("/run/netns/{}", names::unique("ct-absent"));
    for version in SUPPORTED_VERSIONS {
        let bad_name = case
            .bed
            .conf()
            .set("cniVersion", version)
            .set("name", "bad name");
        let out = case.run(&case.env("ADD"), &bad_name);
        let err = out.error_with_code(CONFIG_CODE);
        assert_eq!(err.cni_version, version, "invalid name\n{out}");

        let good = case.bed.conf().set("cniVersion", version);
        let out = case.run(&case.env("ADD").set("CNI_NETNS", &absent_netns), &good);
        assert_eq!(out.error().cni_version, version, "absent netns\n{out}");
    }
    case.assert_untouched();
}
