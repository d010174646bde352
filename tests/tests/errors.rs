//! Invalid environment and config: the right CNI error code, the spec error JSON on stdout,
//! exit status 1, and nothing created. Single bad values (container ids, interface names,
//! network names, stdin, commands and many more) are rows of the table in `bad_input.rs`;
//! here are the cases about several variables at once and the version of the error.

use tests::kernel::{host_link, netns_links};
use tests::{
    Env, NetConf, Netns, PluginOutput, SUPPORTED_VERSIONS, TestBed, host_veth_name, names,
    run_plugin,
};

const ENV_CODE: u64 = 4;
const CONFIG_CODE: u64 = 7;
const VERSION_CODE: u64 = 1;

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

fn text_of(err: &tests::CniError) -> String {
    format!("{} {}", err.msg, err.details.clone().unwrap_or_default())
}

#[test]
#[ignore = "root: real etcd and netns"]
fn add_reports_every_missing_cni_variable_with_code_4() {
    let case = Case::new();
    let missing_sets: &[&[&str]] = &[
        &["CNI_CONTAINERID"],
        &["CNI_NETNS"],
        &["CNI_IFNAME"],
        &["CNI_PATH"],
        &["CNI_NETNS", "CNI_PATH"],
        &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
    ];
    for missing in missing_sets {
        let env = missing
            .iter()
            .fold(case.env("ADD"), |env, var| env.remove(var));
        let out = case.run(&env, &case.bed.conf());
        let err = out.error_with_code(ENV_CODE);
        for var in *missing {
            assert!(
                text_of(&err).contains(var),
                "error does not name {var} (missing {missing:?})\n{out}"
            );
        }
    }
    case.assert_untouched();
}

#[test]
#[ignore = "root: real etcd and netns"]
fn add_treats_empty_container_id_as_missing() {
    let case = Case::new();
    let out = case.run(
        &case.env("ADD").set("CNI_CONTAINERID", ""),
        &case.bed.conf(),
    );
    let err = out.error_with_code(ENV_CODE);
    assert!(text_of(&err).contains("CNI_CONTAINERID"), "{out}");
    case.assert_untouched();
}

#[test]
#[ignore = "root: real etcd and netns"]
fn del_reports_every_missing_required_variable_with_code_4() {
    let case = Case::new();
    let missing_sets: &[&[&str]] = &[
        &["CNI_CONTAINERID"],
        &["CNI_IFNAME"],
        &["CNI_PATH"],
        &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
    ];
    for missing in missing_sets {
        let env = missing
            .iter()
            .fold(case.env("DEL"), |env, var| env.remove(var));
        let out = case.run(&env, &case.bed.conf());
        let err = out.error_with_code(ENV_CODE);
        for var in *missing {
            assert!(
                text_of(&err).contains(var),
                "error does not name {var} (missing {missing:?})\n{out}"
            );
        }
    }
    case.assert_untouched();
}

#[test]
#[ignore = "root: real etcd and netns"]
fn add_rejects_unsupported_cni_version_with_code_1_listing_supported_versions() {
    let case = Case::new();
    for version in ["9.9.9", "1.2.0", "0.5.0", "2.0.0", "1.0"] {
        let out = case.run(
            &case.env("ADD"),
            &case.bed.conf().set("cniVersion", version),
        );
        let err = out.error();
        assert_eq!(err.code, VERSION_CODE, "cniVersion {version}\n{out}");
        let details = err.details.clone().unwrap_or_default();
        for supported in SUPPORTED_VERSIONS {
            assert!(
                details.contains(supported),
                "details do not list {supported}\n{out}"
            );
        }
    }
    case.assert_untouched();
}

#[test]
#[ignore = "root: real etcd and netns"]
fn del_rejects_unsupported_cni_version_with_code_1() {
    let case = Case::new();
    let out = case.run(
        &case.env("DEL"),
        &case.bed.conf().set("cniVersion", "9.9.9"),
    );
    out.error_with_code(VERSION_CODE);
    case.assert_untouched();
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
