//! Every file of `conf-examples/` is a config the plugin accepts (a `.conflist`: its `calico`
//! entry, as libcni hands it over, and every other entry a plugin with a type).

use serde_json::Value;
use tests::etcd::free_port;
use tests::netconf::{calico_conf_of_example, conf_examples};
use tests::{NetConf, SUPPORTED_VERSIONS, TempDir, TestBed, names};

fn is_valid_network_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

#[test]
fn every_conf_example_is_a_complete_calico_config() {
    let files = conf_examples();
    assert!(files.len() >= 2, "expected conf examples, found {files:?}");
    let mut ipam_types = Vec::new();
    for file in &files {
        let conf = calico_conf_of_example(file);
        let v = conf.value();
        let shown = file.display();
        let name = v["name"].as_str().unwrap_or_default();
        assert!(
            is_valid_network_name(name),
            "{shown}: bad or missing name {name:?}"
        );
        assert_eq!(v["type"], "calico", "{shown}: type");
        if let Some(version) = v.get("cniVersion") {
            let version = version.as_str().unwrap_or_default();
            assert!(
                SUPPORTED_VERSIONS.contains(&version),
                "{shown}: unsupported cniVersion {version}"
            );
        }
        let etcd = v.get("etcd_endpoints").or_else(|| v.get("etcd_authority"));
        assert!(
            etcd.and_then(Value::as_str).is_some_and(|s| !s.is_empty()),
            "{shown}: no etcd location"
        );
        let ipam_type = v["ipam"]["type"].as_str().unwrap_or_default();
        assert!(!ipam_type.is_empty(), "{shown}: no ipam.type");
        if ipam_type == "host-local" {
            let ipam = &v["ipam"];
            assert!(
                ipam.get("ranges").is_some() || ipam.get("subnet").is_some(),
                "{shown}: no ranges/subnet"
            );
            assert!(ipam["dataDir"].as_str().is_some(), "{shown}: no dataDir");
        }
        ipam_types.push(ipam_type.to_string());
    }
    assert!(
        ipam_types.iter().any(|t| t == "host-local"),
        "no host-local example"
    );
    assert!(
        ipam_types.iter().any(|t| t == "calico-ipam"),
        "no calico-ipam example"
    );
}

/// A `.conflist` chains plugins after `calico`; each must name its type, and `portmap` must
/// ask for the port mappings a runtime passes (hostPort), or it is never given any.
#[test]
fn every_conflist_example_chains_typed_plugins_after_calico() {
    let lists: Vec<_> = conf_examples()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "conflist"))
        .collect();
    assert!(!lists.is_empty(), "expected a .conflist example");
    for file in lists {
        let list = NetConf::load(&file, &[]);
        let shown = file.display();
        for plugin in list.value()["plugins"].as_array().into_iter().flatten() {
            let plugin_type = plugin["type"].as_str().unwrap_or_default();
            assert!(!plugin_type.is_empty(), "{shown}: plugin without type");
            if plugin_type == "portmap" {
                assert_eq!(
                    plugin["capabilities"]["portMappings"], true,
                    "{shown}: portmap without the portMappings capability"
                );
            }
        }
    }
}

/// Each example, with only its etcd location and data dir pointed somewhere harmless, gets past
/// config validation: the ADD fails on the missing netns, never with code 1, 6 or 7.
#[test]
#[ignore = "root: runs the built plugin binaries"]
fn every_conf_example_passes_config_validation() {
    let bed = TestBed::new();
    let data_dir = TempDir::new("example-data");
    let closed = format!("http://127.0.0.1:{}", free_port());
    for file in conf_examples() {
        let mut conf = calico_conf_of_example(&file).set("etcd_endpoints", closed.as_str());
        conf = conf.set("nodename", names::unique("node").as_str());
        if conf.value()["ipam"]["type"] == "host-local" {
            conf = conf.set_ipam("dataDir", data_dir.path_str());
        }
        let cid = names::container_id();
        let netns = format!("/run/netns/{}", names::unique("ct-absent"));
        let out = tests::run_plugin(
            "calico",
            &bed.env("ADD", &cid, &netns, "eth0"),
            &conf.to_bytes(),
        );
        let err = out.error();
        assert!(
            ![1, 6, 7].contains(&err.code),
            "{} rejected as config error\n{out}",
            file.display()
        );
        assert!(
            tests::kernel::host_link(&tests::host_veth_name(&cid)).is_none(),
            "veth left"
        );
    }
    let left: Vec<_> = std::fs::read_dir(data_dir.path())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .flat_map(|net| {
            std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "host-local reservations left");
}
