//! The fixtures themselves: they work and they clean up.

use tests::kernel::{HostLink, host_link, netns_link};
use tests::{CniPath, Etcd, Netns, host_veth_name, names};

#[test]
fn host_veth_name_is_cali_and_first_11_characters() {
    assert_eq!(host_veth_name("0123456789abcdef"), "cali0123456789a");
    assert_eq!(host_veth_name("short"), "calishort");
}

#[test]
fn generated_container_ids_have_unique_11_character_prefixes() {
    let ids: Vec<String> = (0..50).map(|_| names::container_id()).collect();
    let mut prefixes: Vec<&str> = ids.iter().map(|id| &id[..11]).collect();
    prefixes.sort();
    prefixes.dedup();
    assert_eq!(prefixes.len(), ids.len());
    let (a, b) = names::container_ids_sharing_prefix();
    assert_eq!(a[..11], b[..11]);
    assert_ne!(a, b);
}

#[test]
#[ignore = "needs /usr/bin/etcd"]
fn etcd_fixture_stores_keys_and_is_removed_on_drop() {
    let etcd = Etcd::start();
    etcd.put("/calico/v1/a", "1");
    etcd.put("/calico/v1/b", r#"{"x":true}"#);
    etcd.put("/other", "2");
    assert_eq!(etcd.get("/calico/v1/a").as_deref(), Some("1"));
    assert_eq!(
        etcd.get_json("/calico/v1/b"),
        Some(serde_json::json!({"x": true}))
    );
    assert_eq!(etcd.get("/calico/v1/missing"), None);
    assert_eq!(
        etcd.keys("/calico/"),
        vec!["/calico/v1/a".to_string(), "/calico/v1/b".to_string()]
    );
    let dir = etcd.dir().to_path_buf();
    let port = etcd
        .endpoint()
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    drop(etcd);
    assert!(!dir.exists(), "etcd dir {} left", dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "etcd still listening"
    );
}

#[test]
#[ignore = "root: creates network namespaces"]
fn netns_fixture_is_deleted_on_drop() {
    let netns = Netns::new();
    let path = netns.path();
    assert!(std::path::Path::new(&path).exists());
    drop(netns);
    assert!(!std::path::Path::new(&path).exists(), "{path} left");
}

#[test]
#[ignore = "root: creates network namespaces"]
fn host_netns_fixture_holds_this_threads_links_until_drop() {
    let name = host_veth_name(&names::container_id());
    let host = Netns::host();
    let path = host.path();
    let link = HostLink::veth(&name, &format!("tmp{}", &name[4..]));
    assert!(netns_link(host.name(), link.name()).is_some());
    let other_thread = std::thread::spawn({
        let name = name.clone();
        move || host_link(&name)
    });
    assert!(
        other_thread.join().unwrap().is_some(),
        "spawned thread not on the host"
    );
    drop(host);
    assert!(host_link(&name).is_none(), "{name} on the machine's host");
    assert!(!std::path::Path::new(&path).exists(), "{path} left");
}

#[test]
#[ignore = "root: creates network namespaces"]
fn host_link_fixture_is_deleted_on_drop() {
    let _host = Netns::host();
    let name = host_veth_name(&names::container_id());
    let link = HostLink::veth(&name, &format!("tmp{}", &name[4..]));
    assert!(host_link(link.name()).is_some());
    drop(link);
    assert!(host_link(&name).is_none());
}

#[test]
#[ignore = "needs the built plugin binaries"]
fn cni_path_links_plugins_and_can_omit_one() {
    let full = CniPath::new();
    let partial = CniPath::without(&["host-local"]);
    for plugin in ["calico", "calico-ipam", "host-local"] {
        assert!(
            std::path::Path::new(&full.path()).join(plugin).is_file(),
            "{plugin} missing"
        );
    }
    assert!(
        !std::path::Path::new(&partial.path())
            .join("host-local")
            .exists()
    );
    assert!(
        std::path::Path::new(&partial.path())
            .join("calico")
            .is_file()
    );
}
