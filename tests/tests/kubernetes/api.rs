//! What the plugin reads from the Kubernetes API: the pod under `policy.type: "k8s"` (labels,
//! profile, IPAM annotations), the node's pod CIDR for host-local's `usePodCidr`, and every way
//! of configuring the connection.

use serde_json::json;
use tests::apiserver::{Auth, KubeCa, KubeUser};
use tests::etcd::free_port;
use tests::kernel::{host_link, netns_link, ping};
use tests::plugin::binary;
use tests::{NetConf, PluginOutput};

use crate::bed::{PodBed, PodRef, Sandbox, TOKEN, container_ip, result_ip};
use crate::ipam_support::check_datastore;

const K8S_CONF: &str = "calico-k8s.conf";
const K8S_IPAM_CONF: &str = "calico-k8s-ipam.conf";
const POD_CIDR_CONF: &str = "calico-k8s-pod-cidr.conf";

const IPV4_POOLS: &str = "cni.projectcalico.org/ipv4pools";
const IP_ADDRS: &str = "cni.projectcalico.org/ipAddrs";
const IP_ADDRS_NO_IPAM: &str = "cni.projectcalico.org/ipAddrsNoIpam";

/// `10.213.<n>.<host>` in the bed's /24.
fn address_in_subnet(pb: &PodBed, host: u8) -> String {
    let cidr = pb.bed.subnet.cidr();
    let network = cidr.trim_end_matches(".0/24");
    format!("{network}.{host}")
}

/// The bed's /24 split into two calico-ipam pools (/25 each), both created.
fn two_pools(pb: &PodBed) -> [String; 2] {
    let pools = [
        format!("{}/25", address_in_subnet(pb, 0)),
        format!("{}/25", address_in_subnet(pb, 128)),
    ];
    for pool in &pools {
        let out = tests::plugin::by_hand("calico-ipam")
            .env("ETCD_ENDPOINTS", pb.bed.etcd.endpoint())
            .args(["pool", "add", pool])
            .output()
            .expect("run calico-ipam pool add");
        assert!(
            out.status.success(),
            "pool add {pool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    pools
}

/// Every IPAM handle key.
fn handles(pb: &PodBed) -> Vec<String> {
    pb.bed.etcd.keys("/calico/ipam/v2/handle/")
}

/// The allocations in all blocks: (ordinal, handle).
fn allocations(pb: &PodBed) -> Vec<String> {
    check_datastore(&pb.bed.etcd)
        .into_iter()
        .flat_map(|b| b.allocated.into_values())
        .collect()
}

/// Nothing of `pod` is left, and IPAM holds nothing.
fn assert_pod_gone_and_ipam_empty(pb: &PodBed, pod: &PodRef) {
    pb.assert_nothing_left(&[pod]);
    assert_eq!(handles(pb), Vec::<String>::new(), "IPAM handles left");
    assert_eq!(
        allocations(pb),
        Vec::<String>::new(),
        "IPAM allocations left"
    );
}

#[test]
#[ignore = "root: real etcd, netns and API server"]
fn k8s_policy_copies_pod_labels_and_uses_namespace_profile() {
    let pb = PodBed::new();
    let pod = pb.add_pod(&[("app", "db"), ("role", "primary")], &[]);
    let conf = pb.conf(K8S_CONF);
    let sandbox = Sandbox::new();

    pb.add(&conf, &pod, &sandbox).result();
    let endpoint = pb.endpoint(&pod).expect("endpoint");
    assert_eq!(
        endpoint["labels"],
        json!({"app": "db", "role": "primary", "calico/k8s_ns": pod.namespace}),
        "{endpoint}"
    );
    assert_eq!(
        endpoint["profile_ids"],
        json!([format!("k8s_ns.{}", pod.namespace)]),
        "{endpoint}"
    );
    assert_eq!(
        pb.bed.etcd.keys("/calico/v1/policy/profile/"),
        Vec::<String>::new(),
        "profile keys written"
    );
    let requests = pb.api.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [format!(
            "/api/v1/namespaces/{}/pods/{}",
            pod.namespace, pod.name
        )],
        "{requests:?}"
    );
    assert_eq!(requests[0].token.as_deref(), Some(TOKEN), "{requests:?}");

    pb.del(&conf, &pod, &sandbox).assert_success();
    pb.assert_nothing_left(&[&pod]);
}

#[test]
#[ignore = "root: real etcd, netns and API server"]
fn k8s_policy_pod_not_found_fails_and_leaves_nothing() {
    let pb = PodBed::new();
    let pod = PodRef::unique();
    let conf = pb.conf(K8S_CONF);
    let sandbox = Sandbox::new();

    let out = pb.add(&conf, &pod, &sandbox);
    let err = out.error_with_code(107);
    let named = format!("{}/{}", pod.namespace, pod.name);
    assert!(
        err.msg.contains(&named) || out.stdout.contains(&named),
        "error does not name pod {named}\n{out}"
    );
    assert!(
        netns_link(sandbox.netns.name(), "eth0").is_none(),
        "eth0 created\n{out}"
    );
    pb.assert_nothing_left(&[&pod]);
}

#[test]
#[ignore = "root: real etcd, netns and API server"]
fn without_policy_type_the_api_is_not_contacted_and_the_profile_allows_all() {
    let pb = PodBed::new();
    let pod = pb.add_pod(&[("app", "web")], &[(IP_ADDRS, "[\"10.0.0.1\"]")]);
    let ca = pb.api.ca_file();
    let conf = pb.conf(K8S_CONF).set(
        "policy",
        json!({
            "k8s_api_root": pb.api.url(),
            "k8s_auth_token": TOKEN,
            "k8s_certificate_authority": ca,
        }),
    );
    let sandbox = Sandbox::new();

    let ip = result_ip(&pb.add(&conf, &pod, &sandbox));
    assert!(pb.bed.subnet.contains(&ip), "annotation or API used: {ip}");
    let endpoint = pb.endpoint(&pod).expect("endpoint");
    assert_eq!(
        endpoint["profile_ids"],
        json!([pb.bed.network]),
        "{endpoint}"
    );
    assert!(
        endpoint.get("labels").is_none_or(|l| *l == json!({})),
        "{endpoint}"
    );
    let profile = format!("/calico/v1/policy/profile/{}", pb.bed.network);
    assert_eq!(
        pb.bed.etcd.get_json(&format!("{profile}/rules")),
        Some(
            json!({"inbound_rules": [{"action": "allow"}], "outbound_rules": [{"action": "allow"}]})
        )
    );
    assert!(
        pb.bed.etcd.get(&format!("{profile}/tags")).is_some(),
        "profile tags missing"
    );
    assert_eq!(pb.api.requests(), [], "the API server was contacted");

    pb.del(&conf, &pod, &sandbox).assert_success();
    pb.assert_nothing_left(&[&pod]);
    assert_eq!(pb.api.requests(), [], "the API server was contacted by DEL");
}

#[test]
#[ignore = "root: real etcd, netns and API server"]
fn ipv4pools_annotation_picks_the_annotated_pool() {
    let pb = PodBed::new();
    let [first, second] = two_pools(&pb);
    let conf = pb.conf(K8S_IPAM_CONF);
    for (pool, upper_half) in [(&second, true), (&first, false)] {
        let annotation = format!("[\"{pool}\"]");
        let pod = pb.add_pod(&[], &[(IPV4_POOLS, &annotation)]);
        let sandbox = Sandbox::new();
        let ip = result_ip(&pb.add(&conf, &pod, &sandbox));
        let last: u8 = ip
            .rsplit('.')
            .next()
            .and_then(|o| o.parse().ok())
            .expect("IPv4 address");
        assert_eq!(last >= 128, upper_half, "{ip} not in {pool}");
        assert_eq!(container_ip(&sandbox), ip);
        pb.del(&conf, &pod, &sandbox).assert_success();
        assert_pod_gone_and_ipam_empty(&pb, &pod);
    }
}

#[test]
#[ignore = "root: real etcd, netns and API server"]
fn ipv4pools_annotation_naming_a_missing_pool_fails_and_leaves_nothing() {
    let pb = PodBed::new();
    two_pools(&pb);
    let pod = pb.add_pod(&[], &[(IPV4_POOLS, "[\"192.168.250.0/24\"]")]);
    let sandbox = Sandbox::new();

    let out = pb.add(&pb.conf(K8S_IPAM_CONF), &pod, &sandbox);
    let err = out.error();
    let text = format!("{} {}", err.msg, err.details.unwrap_or_default());
    assert!(
        text.contains("192.168.250.0/24"),
        "error does not name the pool\n{out}"
    );
    assert_pod_gone_and_ipam_empty(&pb, &pod);
}

#[test]
#[ignore = "root: real etcd, netns and API server"]
fn ip_addrs_annotation_gets_exactly_that_address() {
    let pb = PodBed::new();
    two_pools(&pb);
    let wanted = address_in_subnet(&pb, 10);
    let pod = pb.add_pod(&[], &[(IP_ADDRS, &format!("[\"{wanted}\"]"))]);
    let conf = pb.conf(K8S_IPAM_CONF);
    let sandbox = Sandbox::new();

    assert_eq!(result_ip(&pb.add(&conf, &pod, &sandbox)), wanted);
    assert_eq!(container_ip(&sandbox), wanted);
    assert_eq!(
        pb.endpoint(&pod).expect("endpoint")["ipv4_nets"],
        json!([format!("{wanted}/32")])
    );
    let handle = format!(
        "/calico/ipam/v2/handle/{}.{}",
        pb.bed.network, sandbox.container_id
    );
    assert_eq!(handles(&pb), [handle]);
    assert_eq!(allocations(&pb).len(), 1);

    pb.del(&conf, &pod, &sandbox).assert_success();
    assert_pod_gone_and_ipam_empty(&pb, &pod);
}

#[test]
#[ignore = "root: real etcd, netns and API server"]
fn ip_addrs_annotation_for_a_taken_address_fails_and_leaves_nothing() {
    let pb = PodBed::new();
    two_pools(&pb);
    let wanted = format!("[\"{}\"]", address_in_subnet(&pb, 10));
    let conf = pb.conf(K8S_IPAM_CONF);
    let (holder, late) = (
        pb.add_pod(&[], &[(IP_ADDRS, &wanted)]),
        pb.add_pod(&[], &[(IP_ADDRS, &wanted)]),
    );
    let (holder_sandbox, late_sandbox) = (Sandbox::new(), Sandbox::new());
    let ip = result_ip(&pb.add(&conf, &holder, &holder_sandbox));
    let allocated = allocations(&pb);

    let out = pb.add(&conf, &late, &late_sandbox);
    out.error();
    assert_eq!(
        pb.endpoint(&late),
        None,
        "endpoint of the refused pod\n{out}"
    );
    assert!(
        host_link(&late.host_veth()).is_none(),
        "host veth of the refused pod\n{out}"
    );
    assert!(
        netns_link(late_sandbox.netns.name(), "eth0").is_none(),
        "eth0 of the refused pod\n{out}"
    );
    assert_eq!(allocations(&pb), allocated, "allocations changed\n{out}");
    assert!(ping(&ip), "the holder lost {ip}");

    pb.del(&conf, &holder, &holder_sandbox).assert_success();
    assert_pod_gone_and_ipam_empty(&pb, &holder);
    pb.assert_nothing_left(&[&late]);
}

/// The second address of `ipAddrs` cannot be had (no IPv6 pool): the first one, already
/// assigned, is given back.
#[test]
#[ignore = "root: real etcd, netns and API server"]
fn ip_addrs_annotation_failing_on_the_second_address_releases_the_first() {
    let pb = PodBed::new();
    two_pools(&pb);
    let wanted = format!("[\"{}\",\"fd00:213::10\"]", address_in_subnet(&pb, 10));
    let pod = pb.add_pod(&[], &[(IP_ADDRS, &wanted)]);
    let sandbox = Sandbox::new();

    let out = pb.add(
        &pb.conf(K8S_IPAM_CONF).set_ipam("assign_ipv6", "true"),
        &pod,
        &sandbox,
    );
    out.error();
    assert!(
        netns_link(sandbox.netns.name(), "eth0").is_none(),
        "eth0 created\n{out}"
    );
    assert_pod_gone_and_ipam_empty(&pb, &pod);
}

/// A pod pinned to an address by `ipAddrs` gets it again in a new sandbox although the old
/// sandbox was never deleted: as in Calico v1.11.8 (§3.3 step 5), the addresses of the pod's
/// existing endpoint are released first. The late DEL of the old sandbox then leaves the
/// address with the new one.
#[test]
#[ignore = "root: real etcd, netns and API server"]
fn ip_addrs_pod_gets_its_address_again_in_a_new_sandbox() {
    let pb = PodBed::new();
    two_pools(&pb);
    let wanted = address_in_subnet(&pb, 10);
    let pod = pb.add_pod(&[], &[(IP_ADDRS, &format!("[\"{wanted}\"]"))]);
    let conf = pb.conf(K8S_IPAM_CONF);
    let (x, y) = (Sandbox::new(), Sandbox::new());

    assert_eq!(result_ip(&pb.add(&conf, &pod, &x)), wanted);
    assert_eq!(result_ip(&pb.add(&conf, &pod, &y)), wanted);
    pb.del(&conf, &pod, &x).assert_success();
    assert_eq!(container_ip(&y), wanted);
    assert_eq!(
        pb.endpoint(&pod).expect("endpoint")["active_instance_id"],
        json!(y.container_id)
    );
    let handle = format!(
        "/calico/ipam/v2/handle/{}.{}",
        pb.bed.network, y.container_id
    );
    assert_eq!(
        handles(&pb),
        [handle],
        "the address is not held for the new sandbox"
    );
    assert!(ping(&wanted), "{wanted} does not answer ping");

    pb.del(&conf, &pod, &y).assert_success();
    assert_pod_gone_and_ipam_empty(&pb, &pod);
}

#[test]
#[ignore = "root: real etcd, netns and API server"]
fn ip_addrs_no_ipam_annotation_bypasses_ipam() {
    let pb = PodBed::new();
    two_pools(&pb);
    let wanted = address_in_subnet(&pb, 200);
    let pod = pb.add_pod(&[], &[(IP_ADDRS_NO_IPAM, &format!("[\"{wanted}\"]"))]);
    let conf = pb.conf(K8S_IPAM_CONF);
    let sandbox = Sandbox::new();

    assert_eq!(result_ip(&pb.add(&conf, &pod, &sandbox)), wanted);
    assert_eq!(container_ip(&sandbox), wanted);
    assert_eq!(
        pb.endpoint(&pod).expect("endpoint")["ipv4_nets"],
        json!([format!("{wanted}/32")])
    );
    assert!(ping(&wanted), "{wanted} does not answer ping");
    assert_eq!(handles(&pb), Vec::<String>::new(), "IPAM handle written");
    assert_eq!(
        allocations(&pb),
        Vec::<String>::new(),
        "IPAM allocation made"
    );

    pb.del(&conf, &pod, &sandbox).assert_success();
    assert_pod_gone_and_ipam_empty(&pb, &pod);
}

#[test]
#[ignore = "root: real etcd, netns and API server"]
fn bad_ipam_annotations_fail_with_code_7_and_leave_nothing() {
    let cases: [(&[(&str, &str)], &str); 8] = [
        (&[(IP_ADDRS, "[]")], "specified but empty"),
        (&[(IP_ADDRS_NO_IPAM, "[]")], "specified but empty"),
        (
            &[(IP_ADDRS, "[\"10.213.0.10\",\"10.213.0.11\"]")],
            "more than one IPv4",
        ),
        (
            &[(IP_ADDRS_NO_IPAM, "[\"fd00::1\",\"fd00::2\"]")],
            "more than one IPv6",
        ),
        (&[(IP_ADDRS_NO_IPAM, "10.213.0.10")], "failed to parse"),
        (&[(IP_ADDRS, "[\"10.213.0.300\"]")], "invalid IP format"),
        (
            &[
                (IP_ADDRS, "[\"10.213.0.10\"]"),
                (IP_ADDRS_NO_IPAM, "[\"10.213.0.11\"]"),
            ],
            "both annotations",
        ),
        (&[(IPV4_POOLS, "10.213.0.0/25")], "failed to parse"),
    ];
    let pb = PodBed::new();
    two_pools(&pb);
    let conf = pb.conf(K8S_IPAM_CONF);
    for (annotations, message) in cases {
        let pod = pb.add_pod(&[], annotations);
        let sandbox = Sandbox::new();
        let out = pb.add(&conf, &pod, &sandbox);
        let err = out.error_with_code(7);
        assert!(
            err.msg.contains(message),
            "{annotations:?}: expected {message:?}\n{out}"
        );
        let annotation = annotations[annotations.len() - 1].0;
        assert!(
            err.msg.contains(annotation),
            "{annotations:?}: message does not name {annotation}\n{out}"
        );
        assert!(
            netns_link(sandbox.netns.name(), "eth0").is_none(),
            "{annotations:?}: eth0 created"
        );
        assert_pod_gone_and_ipam_empty(&pb, &pod);
    }
}

/// Calico v1 failure history, row 11: with `subnet: usePodCidr`, DEL passed the literal
/// `usePodCidr` to host-local, which failed, and the address leaked.
///
/// `usePodCidr`: the node is read under `nodename`, or under `kubernetes.node_name` when set.
#[test]
#[ignore = "root: real etcd, netns and API server"]
fn use_pod_cidr_del_releases_the_address_without_the_api() {
    for node_name in [None, Some("k8s-node-a")] {
        let pb = PodBed::new();
        let api_node = node_name.map_or(pb.bed.node.clone(), str::to_string);
        pb.api.add_node(&api_node, Some(&pb.bed.subnet.cidr()));
        let mut conf = pb.conf(POD_CIDR_CONF);
        if let Some(name) = node_name {
            conf = conf.set("kubernetes", json!({"node_name": name}));
        }
        let pod = PodRef::unique();
        let sandbox = Sandbox::new();

        let ip = result_ip(&pb.add(&conf, &pod, &sandbox));
        assert!(
            pb.bed.subnet.contains(&ip),
            "{ip} not in the pod CIDR {}",
            pb.bed.subnet.cidr()
        );
        assert_eq!(container_ip(&sandbox), ip);
        let paths: Vec<String> = pb.api.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, [format!("/api/v1/nodes/{api_node}")]);

        let unreachable = format!("https://127.0.0.1:{}", free_port());
        let del_conf = conf
            .clone()
            .set("policy", json!({"k8s_api_root": unreachable}));
        pb.del(&del_conf, &pod, &sandbox).assert_success();
        assert_eq!(pb.api.requests().len(), 1, "DEL contacted the API server");
        pb.assert_nothing_left(&[&pod]);
    }
}

#[test]
#[ignore = "root: real etcd, netns and API server"]
fn use_pod_cidr_gives_the_requested_ip_again_after_del() {
    let pb = PodBed::new();
    pb.api.add_node(&pb.bed.node, Some(&pb.bed.subnet.cidr()));
    let conf = pb.conf(POD_CIDR_CONF);
    let pod = PodRef::unique();
    let sandbox = Sandbox::new();
    let wanted = address_in_subnet(&pb, 77);
    let args = format!("{};IP={wanted}", pod.cni_args(&sandbox.container_id));

    for round in 0..2 {
        let out = pb.run_with_args("ADD", &conf, &args, &sandbox);
        assert_eq!(result_ip(&out), wanted, "round {round}\n{out}");
        assert_eq!(container_ip(&sandbox), wanted, "round {round}");
        pb.run_with_args("DEL", &conf, &args, &sandbox)
            .assert_success();
        assert_eq!(
            pb.reserved(),
            vec![],
            "round {round}: DEL did not release {wanted}"
        );
    }
    pb.assert_nothing_left(&[&pod]);
}

#[test]
#[ignore = "root: real etcd, netns and API server"]
fn use_pod_cidr_fails_when_the_node_has_no_pod_cidr() {
    let pb = PodBed::new();
    pb.api.add_node(&pb.bed.node, None);
    let pod = PodRef::unique();
    let sandbox = Sandbox::new();

    let out = pb.add(&pb.conf(POD_CIDR_CONF), &pod, &sandbox);
    let err = out.error();
    assert!(
        err.msg.contains("podCIDR") && err.msg.contains(&pb.bed.node),
        "{out}"
    );
    assert!(
        netns_link(sandbox.netns.name(), "eth0").is_none(),
        "eth0 created\n{out}"
    );
    pb.assert_nothing_left(&[&pod]);
}

/// One way of telling the plugin how to reach the API server.
struct Connection {
    name: &'static str,
    auth: Auth,
    /// The config for the server: `policy` (and `kubernetes`) sections set.
    conf: fn(&PodBed) -> NetConf,
    /// The credential the request must have carried: a token, else a client certificate.
    token: Option<&'static str>,
}

#[test]
#[ignore = "root: real etcd, netns and API server"]
fn connection_settings_reach_the_api_server() {
    let cases = [
        Connection {
            name: "token and CA in policy",
            auth: Auth::Token(TOKEN.to_string()),
            conf: |pb| pb.conf(K8S_CONF),
            token: Some(TOKEN),
        },
        Connection {
            name: "client certificate in policy",
            auth: Auth::ClientCert,
            conf: |pb| {
                pb.conf(K8S_CONF).set(
                    "policy",
                    json!({"type": "k8s", "k8s_api_root": pb.api.url(),
                           "k8s_client_certificate": pb.api.client_cert_file(),
                           "k8s_client_key": pb.api.client_key_file(),
                           "k8s_certificate_authority": pb.api.ca_file()}),
                )
            },
            token: None,
        },
        Connection {
            name: "kubeconfig file",
            auth: Auth::Token("kubeconfig-token".to_string()),
            conf: |pb| {
                let kubeconfig = pb.api.write_kubeconfig(
                    KubeUser::Token("kubeconfig-token".to_string()),
                    KubeCa::File,
                );
                pb.conf(K8S_CONF)
                    .set("policy", json!({"type": "k8s"}))
                    .set("kubernetes", json!({"kubeconfig": kubeconfig}))
            },
            token: Some("kubeconfig-token"),
        },
        Connection {
            name: "api root with /api/v1/ suffix",
            auth: Auth::Token(TOKEN.to_string()),
            conf: |pb| {
                pb.conf(K8S_CONF).set(
                    "policy",
                    json!({"type": "k8s", "k8s_api_root": format!("{}/api/v1/", pb.api.url()),
                           "k8s_auth_token": TOKEN, "k8s_certificate_authority": pb.api.ca_file()}),
                )
            },
            token: Some(TOKEN),
        },
    ];
    for case in cases {
        let pb = PodBed::with_auth(case.auth.clone());
        let pod = pb.add_pod(&[("app", "web")], &[]);
        let conf = (case.conf)(&pb);
        let sandbox = Sandbox::new();

        let out: PluginOutput = pb.add(&conf, &pod, &sandbox);
        assert!(out.status.success(), "{}: ADD failed\n{out}", case.name);
        let endpoint = pb.endpoint(&pod).expect("endpoint");
        assert_eq!(
            endpoint["labels"]["app"],
            json!("web"),
            "{}: {endpoint}",
            case.name
        );
        let requests = pb.api.requests();
        assert_eq!(requests.len(), 1, "{}: {requests:?}", case.name);
        let want_path = format!("/api/v1/namespaces/{}/pods/{}", pod.namespace, pod.name);
        assert_eq!(requests[0].path, want_path, "{}", case.name);
        assert_eq!(requests[0].token.as_deref(), case.token, "{}", case.name);
        assert_eq!(
            requests[0].client_cert,
            case.token.is_none(),
            "{}",
            case.name
        );

        pb.del(&conf, &pod, &sandbox).assert_success();
        pb.assert_nothing_left(&[&pod]);
    }
}

/// The API client runs in the `calico-k8s` helper: an API server that cannot be reached still
/// fails the ADD with code 11 ("try again later") naming the pod and the server, before any
/// change.
#[test]
#[ignore = "root: real etcd, netns and API server"]
fn unreachable_api_server_fails_add_with_try_again_later_and_leaves_nothing() {
    let pb = PodBed::new();
    let pod = pb.add_pod(&[("app", "web")], &[]);
    let unreachable = format!("https://127.0.0.1:{}", free_port());
    let conf = pb.conf(K8S_CONF).set(
        "policy",
        json!({"type": "k8s", "k8s_api_root": unreachable, "k8s_auth_token": TOKEN}),
    );
    let sandbox = Sandbox::new();

    let out = pb.add(&conf, &pod, &sandbox);
    let err = out.error_with_code(11);
    let named = format!("get pod {}/{} from {unreachable}", pod.namespace, pod.name);
    assert!(
        err.msg.contains(&named),
        "error does not say {named:?}\n{out}"
    );
    assert!(
        netns_link(sandbox.netns.name(), "eth0").is_none(),
        "eth0 created\n{out}"
    );
    pb.assert_nothing_left(&[&pod]);
}

/// `calico` runs the `calico-k8s` beside its own executable, else the one on `CNI_PATH`; with
/// neither, a Kubernetes-mode ADD fails with code 107 naming the helper and every place looked
/// in, before any change.
#[test]
#[ignore = "root: real etcd, netns and API server"]
fn kubernetes_helper_is_found_on_cni_path_when_not_beside_the_plugin() {
    let pb = PodBed::new();
    let conf = pb.conf(K8S_CONF);
    // A calico whose own directory has no helper (the bed's CNI_PATH has none either).
    let alone = tests::TempDir::new("calico-alone");
    let calico = alone.join("calico");
    if std::fs::hard_link(binary("calico"), &calico).is_err() {
        std::fs::copy(binary("calico"), &calico).expect("copy calico");
    }
    let run = |pod: &PodRef, sandbox: &Sandbox, command: &str| {
        let env = pb
            .bed
            .env(
                command,
                &sandbox.container_id,
                &sandbox.netns.path(),
                "eth0",
            )
            .set("CNI_ARGS", &pod.cni_args(&sandbox.container_id));
        tests::plugin::run_binary(&calico, &env, &conf.to_bytes())
    };

    let pod = pb.add_pod(&[("app", "web")], &[]);
    let sandbox = Sandbox::new();
    let out = run(&pod, &sandbox, "ADD");
    let err = out.error_with_code(107);
    for named in [
        "calico-k8s not found".to_string(),
        alone.path_str(),
        pb.bed.cni_path.path(),
    ] {
        assert!(
            err.msg.contains(&named),
            "error does not name {named}\n{out}"
        );
    }
    assert!(pb.api.requests().is_empty(), "the API was contacted");
    pb.assert_nothing_left(&[&pod]);

    std::os::unix::fs::symlink(
        binary("calico-k8s"),
        std::path::Path::new(&pb.bed.cni_path.path()).join("calico-k8s"),
    )
    .expect("link calico-k8s into CNI_PATH");
    run(&pod, &sandbox, "ADD").assert_success();
    assert_eq!(pb.endpoint(&pod).expect("endpoint")["labels"]["app"], "web");
    run(&pod, &sandbox, "DEL").assert_success();
    pb.assert_nothing_left(&[&pod]);
}
