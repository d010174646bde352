//! The Kubernetes client of `common` against the stand-in API server: every way of configuring
//! the connection, and the errors a plugin run has to report. The server listens on the
//! loopback of the test's own host namespace, which takes root to create.

use calico_k8s::KubeClient;
use common::config::NetConf;
use common::kubernetes::Pod;
use common::{Code, Kind};
use serde_json::{Value, json};
use tests::apiserver::{ApiServer, Auth, KubeCa, KubeUser};
use tests::{Netns, TempDir};

const TOKEN: &str = "s3cr3t-service-account-token";

/// A network config with the given `policy` and `kubernetes` sections.
fn net_conf(policy: Value, kubernetes: Value) -> NetConf {
    let conf = json!({
        "cniVersion": "0.3.1",
        "name": "k8s-pod-network",
        "type": "calico",
        "nodename": "node1",
        "ipam": {"type": "calico-ipam"},
        "policy": policy,
        "kubernetes": kubernetes,
    });
    NetConf::parse(conf.to_string().as_bytes(), &|_| None).expect("valid network config")
}

fn client(policy: Value, kubernetes: Value) -> KubeClient {
    KubeClient::new(&net_conf(policy, kubernetes)).expect("client from valid settings")
}

fn server_with_web_pod(auth: Auth) -> ApiServer {
    let server = ApiServer::start(auth);
    server.add_pod(
        "prod",
        "web-1",
        &[("app", "web"), ("tier", "frontend")],
        &[("cni.projectcalico.org/ipv4pools", "[\"172.16.0.0/16\"]")],
    );
    server
}

fn web_pod() -> Pod {
    Pod {
        labels: [("app", "web"), ("tier", "frontend")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        annotations: [("cni.projectcalico.org/ipv4pools", "[\"172.16.0.0/16\"]")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
    }
}

#[test]
#[ignore = "root: API server in a throwaway host netns"]
fn pod_is_read_with_bearer_token_and_ca_file() {
    let _host = Netns::host();
    let server = server_with_web_pod(Auth::Token(TOKEN.into()));
    let client = client(
        json!({"type": "k8s", "k8s_api_root": server.url(), "k8s_auth_token": TOKEN,
               "k8s_certificate_authority": server.ca_file()}),
        json!({}),
    );
    assert_eq!(client.get_pod("prod", "web-1").unwrap(), web_pod());
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/api/v1/namespaces/prod/pods/web-1");
    assert_eq!(requests[0].token.as_deref(), Some(TOKEN));
    assert!(!requests[0].client_cert);
}

#[test]
#[ignore = "root: API server in a throwaway host netns"]
fn pod_is_read_with_client_certificate() {
    let _host = Netns::host();
    let server = server_with_web_pod(Auth::ClientCert);
    let client = client(
        json!({"type": "k8s", "k8s_api_root": server.url(),
               "k8s_client_certificate": server.client_cert_file(),
               "k8s_client_key": server.client_key_file(),
               "k8s_certificate_authority": server.ca_file()}),
        json!({}),
    );
    assert_eq!(client.get_pod("prod", "web-1").unwrap(), web_pod());
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].client_cert);
    assert_eq!(requests[0].token, None);
}

#[test]
#[ignore = "root: API server in a throwaway host netns"]
fn pod_is_read_via_kubeconfig_file() {
    let _host = Netns::host();
    let cases = [
        (
            Auth::Token(TOKEN.into()),
            KubeUser::Token(TOKEN.into()),
            KubeCa::File,
        ),
        (
            Auth::Token(TOKEN.into()),
            KubeUser::Token(TOKEN.into()),
            KubeCa::Data,
        ),
        (Auth::ClientCert, KubeUser::ClientCertFiles, KubeCa::File),
        (Auth::ClientCert, KubeUser::ClientCertData, KubeCa::Data),
        (
            Auth::Token(TOKEN.into()),
            KubeUser::Token(TOKEN.into()),
            KubeCa::Insecure,
        ),
    ];
    for (auth, user, ca) in cases {
        let label = format!("{user:?} {ca:?}");
        let server = server_with_web_pod(auth);
        let kubeconfig = server.write_kubeconfig(user, ca);
        let client = client(json!({"type": "k8s"}), json!({"kubeconfig": kubeconfig}));
        assert_eq!(client.server(), server.url(), "{label}");
        assert_eq!(
            client.get_pod("prod", "web-1").unwrap(),
            web_pod(),
            "{label}"
        );
        assert_eq!(server.requests().len(), 1, "{label}");
    }
}

#[test]
#[ignore = "root: API server in a throwaway host netns"]
fn config_keys_override_the_kubeconfig() {
    let _host = Netns::host();
    let server = server_with_web_pod(Auth::Token(TOKEN.into()));
    let kubeconfig = server.write_kubeconfig(KubeUser::Token("stale-token".into()), KubeCa::Data);
    // The kubeconfig's server is replaced as well: point it at the stand-in through the root.
    let client = client(
        json!({"type": "k8s", "k8s_auth_token": TOKEN, "k8s_api_root": "https://127.0.0.1:1"}),
        json!({"kubeconfig": kubeconfig, "k8s_api_root": server.url()}),
    );
    assert_eq!(client.get_pod("prod", "web-1").unwrap(), web_pod());
    assert_eq!(server.requests()[0].token.as_deref(), Some(TOKEN));
}

#[test]
#[ignore = "root: API server in a throwaway host netns"]
fn api_root_with_api_v1_suffix_is_accepted() {
    let _host = Netns::host();
    let server = server_with_web_pod(Auth::Token(TOKEN.into()));
    let client = client(
        json!({"type": "k8s", "k8s_api_root": format!("{}/api/v1/", server.url()), "k8s_auth_token": TOKEN,
               "k8s_certificate_authority": server.ca_file()}),
        json!({}),
    );
    assert_eq!(client.get_pod("prod", "web-1").unwrap(), web_pod());
    assert_eq!(
        server.requests()[0].path,
        "/api/v1/namespaces/prod/pods/web-1"
    );
}

#[test]
#[ignore = "root: API server in a throwaway host netns"]
fn pod_without_labels_or_annotations_reads_as_empty() {
    let _host = Netns::host();
    let server = ApiServer::start(Auth::Anonymous);
    server.add_pod("default", "bare", &[], &[]);
    let client = client(
        json!({"type": "k8s", "k8s_api_root": server.url(), "k8s_certificate_authority": server.ca_file()}),
        json!({}),
    );
    assert_eq!(client.get_pod("default", "bare").unwrap(), Pod::default());
}

#[test]
#[ignore = "root: API server in a throwaway host netns"]
fn missing_pod_is_not_found_with_the_api_message() {
    let _host = Netns::host();
    let server = server_with_web_pod(Auth::Token(TOKEN.into()));
    let client = client(
        json!({"type": "k8s", "k8s_api_root": server.url(), "k8s_auth_token": TOKEN,
               "k8s_certificate_authority": server.ca_file()}),
        json!({}),
    );
    let err = client.get_pod("prod", "gone").unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err:?}");
    assert!(err.msg().contains("pod prod/gone"), "{err:?}");
    assert!(err.msg().contains("pods \"gone\" not found"), "{err:?}");
    assert!(err.msg().contains("404"), "{err:?}");
}

#[test]
#[ignore = "root: API server in a throwaway host netns"]
fn wrong_token_is_unauthorized() {
    let _host = Netns::host();
    let server = server_with_web_pod(Auth::Token(TOKEN.into()));
    let client = client(
        json!({"type": "k8s", "k8s_api_root": server.url(), "k8s_auth_token": "wrong",
               "k8s_certificate_authority": server.ca_file()}),
        json!({}),
    );
    let err = client.get_pod("prod", "web-1").unwrap_err();
    assert_eq!(err.kind(), Kind::Other, "{err:?}");
    assert_ne!(err.code(), Code::TryAgainLater);
    assert!(err.msg().contains("pod prod/web-1"), "{err:?}");
    assert!(err.msg().contains("401 Unauthorized"), "{err:?}");
    assert_eq!(server.requests()[0].token.as_deref(), Some("wrong"));
}

#[test]
#[ignore = "root: API server in a throwaway host netns"]
fn missing_rbac_grant_is_forbidden() {
    let _host = Netns::host();
    let server = server_with_web_pod(Auth::Token(TOKEN.into()));
    server.set_forbidden(true);
    let client = client(
        json!({"type": "k8s", "k8s_api_root": server.url(), "k8s_auth_token": TOKEN,
               "k8s_certificate_authority": server.ca_file()}),
        json!({}),
    );
    let err = client.get_pod("prod", "web-1").unwrap_err();
    assert!(err.msg().contains("403 Forbidden"), "{err:?}");
    assert!(
        err.msg().contains("cannot get resource \"pods\""),
        "{err:?}"
    );
}

#[test]
#[ignore = "root: API server in a throwaway host netns"]
fn server_certificate_from_another_ca_is_a_tls_error() {
    let _host = Netns::host();
    let server = server_with_web_pod(Auth::Token(TOKEN.into()));
    let client = client(
        json!({"type": "k8s", "k8s_api_root": server.url(), "k8s_auth_token": TOKEN,
               "k8s_certificate_authority": server.untrusted_ca_file()}),
        json!({}),
    );
    let err = client.get_pod("prod", "web-1").unwrap_err();
    assert!(err.msg().contains("TLS handshake failed"), "{err:?}");
    assert!(err.msg().contains("pod prod/web-1"), "{err:?}");
    assert_eq!(err.kind(), Kind::Other, "{err:?}");
    assert!(
        server.requests().is_empty(),
        "the token must not be sent to an untrusted server"
    );
}

#[test]
#[ignore = "root: API server in a throwaway host netns"]
fn kubeconfig_without_ca_does_not_trust_the_server() {
    let _host = Netns::host();
    let server = server_with_web_pod(Auth::Token(TOKEN.into()));
    let kubeconfig = server.write_kubeconfig(KubeUser::Token(TOKEN.into()), KubeCa::None);
    let client = client(json!({"type": "k8s"}), json!({"kubeconfig": kubeconfig}));
    let err = client.get_pod("prod", "web-1").unwrap_err();
    assert!(err.msg().contains("TLS handshake failed"), "{err:?}");
    assert!(server.requests().is_empty());
}

#[test]
#[ignore = "root: API server in a throwaway host netns"]
fn client_certificate_is_required_when_the_server_wants_one() {
    let _host = Netns::host();
    let server = server_with_web_pod(Auth::ClientCert);
    let client = client(
        json!({"type": "k8s", "k8s_api_root": server.url(), "k8s_auth_token": TOKEN,
               "k8s_certificate_authority": server.ca_file()}),
        json!({}),
    );
    let err = client.get_pod("prod", "web-1").unwrap_err();
    assert!(err.msg().contains("401 Unauthorized"), "{err:?}");
}

#[test]
#[ignore = "root: API server in a throwaway host netns"]
fn node_pod_cidr_is_read() {
    let _host = Netns::host();
    let server = ApiServer::start(Auth::Token(TOKEN.into()));
    server.add_node("node1", Some("10.244.3.0/24"));
    server.add_node("node2", None);
    let client = client(
        json!({"k8s_api_root": server.url(), "k8s_auth_token": TOKEN,
               "k8s_certificate_authority": server.ca_file()}),
        json!({"node_name": "node1"}),
    );
    assert_eq!(
        client.get_node_pod_cidr("node1").unwrap().as_deref(),
        Some("10.244.3.0/24")
    );
    assert_eq!(client.get_node_pod_cidr("node2").unwrap(), None);
    let err = client.get_node_pod_cidr("node3").unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err:?}");
    assert!(err.msg().contains("node node3"), "{err:?}");
    assert!(err.msg().contains("nodes \"node3\" not found"), "{err:?}");
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/nodes/node1",
            "/api/v1/nodes/node2",
            "/api/v1/nodes/node3"
        ]
    );
}

#[test]
#[ignore = "root: API server in a throwaway host netns"]
fn stopped_server_is_try_again_later() {
    let _host = Netns::host();
    let server = server_with_web_pod(Auth::Token(TOKEN.into()));
    // The server's files go with it; keep a copy of its CA.
    let dir = TempDir::new("kube-ca");
    std::fs::copy(server.ca_file(), dir.join("ca.crt")).unwrap();
    let conf = net_conf(
        json!({"type": "k8s", "k8s_api_root": server.url(), "k8s_auth_token": TOKEN,
               "k8s_certificate_authority": dir.join("ca.crt")}),
        json!({}),
    );
    drop(server);
    let err = KubeClient::new(&conf)
        .unwrap()
        .get_pod("prod", "web-1")
        .unwrap_err();
    assert_eq!(err.kind(), Kind::TryAgainLater, "{err:?}");
    assert_eq!(err.code(), Code::TryAgainLater);
}

#[test]
fn no_server_configured_is_invalid_config() {
    let conf = net_conf(json!({"type": "k8s", "k8s_auth_token": TOKEN}), json!({}));
    let err = KubeClient::new(&conf).unwrap_err();
    assert_eq!(err.code(), Code::InvalidConfig, "{err:?}");
    assert!(err.msg().contains("policy.k8s_api_root"), "{err:?}");
}

#[test]
#[ignore = "root: API server in a throwaway host netns"]
fn unreadable_client_key_is_invalid_config_naming_the_file() {
    let _host = Netns::host();
    let server = ApiServer::start(Auth::ClientCert);
    let client = KubeClient::new(&net_conf(
        json!({"type": "k8s", "k8s_api_root": server.url(),
               "k8s_client_certificate": server.client_cert_file(),
               "k8s_client_key": "/nonexistent/client.key",
               "k8s_certificate_authority": server.ca_file()}),
        json!({}),
    ));
    let err = client.unwrap_err();
    assert_eq!(err.code(), Code::InvalidConfig, "{err:?}");
    assert!(err.msg().contains("/nonexistent/client.key"), "{err:?}");
    assert!(server.requests().is_empty());
}

#[test]
#[ignore = "root: API server in a throwaway host netns"]
fn special_files_as_kubeconfig_or_ca_fail_at_once_naming_key_and_file() {
    let _host = Netns::host();
    let server = ApiServer::start(Auth::Token(TOKEN.into()));
    let cases = [
        (
            json!({"type": "k8s", "k8s_api_root": server.url(), "k8s_auth_token": TOKEN,
                   "k8s_certificate_authority": "/dev/zero"}),
            json!({}),
            "policy.k8s_certificate_authority",
        ),
        (
            json!({"type": "k8s"}),
            json!({"kubeconfig": "/dev/zero"}),
            "kubernetes.kubeconfig",
        ),
    ];
    for (policy, kubernetes, key) in cases {
        let started = std::time::Instant::now();
        let err = KubeClient::new(&net_conf(policy, kubernetes)).unwrap_err();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{err:?}"
        );
        assert_eq!(err.code(), Code::InvalidConfig, "{err:?}");
        assert!(err.msg().contains(key), "{err:?} should name {key}");
        assert!(err.msg().contains("/dev/zero"), "{err:?}");
        assert!(err.msg().contains("character device"), "{err:?}");
    }
    assert!(server.requests().is_empty());
}
