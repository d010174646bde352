//! The Kubernetes API reads of the `calico` plugin: a pod's labels and annotations (`policy.type`
//! `k8s`) and a node's `spec.podCIDR` (`ipam.subnet` `usePodCidr`). The `calico-k8s` binary
//! answers one [`Query`] with them; `calico` runs it only when its config needs the API (see
//! `common::kubernetes`), so the client below is never part of a plain plugin run.
//!
//! The connection is built the way Calico's client-go setup builds it: the kubeconfig named by
//! `kubernetes.kubeconfig` (its current context's cluster and user), then the overrides from the
//! network config on top. The server is `policy.k8s_api_root`, replaced by
//! `kubernetes.k8s_api_root`; `policy.k8s_certificate_authority` replaces the kubeconfig's CA
//! (file or data, and its `insecure-skip-tls-verify`); `policy.k8s_client_certificate` and
//! `policy.k8s_client_key` replace the user's certificate and key; `policy.k8s_auth_token`
//! replaces its token. Without a kubeconfig the overrides alone describe the connection.
//!
//! The async client and its tokio runtime stay inside this crate; a run makes one or two
//! requests, each bounded by [`REQUEST_TIMEOUT`].

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod as ApiPod};
use kube::config::{
    AuthInfo, Cluster, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};

use common::config::NetConf;
use common::file::{MAX_CONFIG_FILE_LEN, MAX_PEM_FILE_LEN, read_config_file};
use common::kubernetes::{Answer, Pod, Query};
use common::{Code, Error, Kind, Result};

/// Deadline for one API request, connecting included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The code of an API answer that is an error (not found, unauthorized, forbidden, ...).
const API_ERROR: Code = common::error::codes::KUBERNETES;

/// Name of the context, cluster and user created when the kubeconfig has none to override.
const OVERRIDES_ENTRY: &str = "calico-cni";

/// Answers `query` for the network config `conf`: the node first, then the pod, over one
/// connection. The first failing read ends the run with its error.
pub fn answer(conf: &NetConf, query: &Query) -> Result<Answer> {
    let client = KubeClient::new(conf)?;
    let mut answer = Answer::default();
    if let Some(node) = &query.node_pod_cidr {
        answer.node_pod_cidr = client.get_node_pod_cidr(node)?;
    }
    if let Some((namespace, name)) = &query.pod {
        answer.pod = Some(client.get_pod(namespace, name)?);
    }
    Ok(answer)
}

/// A synchronous client for the Kubernetes API, for one plugin run.
pub struct KubeClient {
    // Declared before the runtime so that the client is dropped while the runtime still exists.
    client: kube::Client,
    runtime: tokio::runtime::Runtime,
    server: String,
}

impl KubeClient {
    /// Builds the connection from the kubeconfig and the overrides of `conf` (see the module
    /// docs). Reads the kubeconfig and the certificate files but does not contact the server.
    pub fn new(conf: &NetConf) -> Result<KubeClient> {
        install_crypto_provider();
        let config = connection_settings(conf)?;
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("start the kubernetes client runtime: {e}")))?;
        // The client's request buffer spawns its worker task when it is built.
        let client = {
            let _entered = runtime.enter();
            kube::Client::try_from(config).map_err(|e| {
                Error::new(
                    Code::InvalidConfig,
                    format!(
                        "set up the kubernetes client for {server}: {}",
                        error_chain(&e)
                    ),
                )
            })?
        };
        Ok(KubeClient {
            client,
            runtime,
            server,
        })
    }

    /// The API server's URL, as the requests use it.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Reads pod `namespace/name`: `GET /api/v1/namespaces/{namespace}/pods/{name}`.
    pub fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod> {
        let object = format!("pod {namespace}/{name}");
        let api = kube::Api::<ApiPod>::namespaced(self.client.clone(), namespace);
        let pod = self.request(&object, api.get(name))?;
        Ok(Pod {
            labels: pod.metadata.labels.unwrap_or_default(),
            annotations: pod.metadata.annotations.unwrap_or_default(),
        })
    }

    /// Reads node `name` and returns its `spec.podCIDR`, `None` when unset or empty:
    /// `GET /api/v1/nodes/{name}`.
    pub fn get_node_pod_cidr(&self, name: &str) -> Result<Option<String>> {
        let object = format!("node {name}");
        let api = kube::Api::<Node>::all(self.client.clone());
        let node = self.request(&object, api.get(name))?;
        Ok(node
            .spec
            .and_then(|spec| spec.pod_cidr)
            .filter(|cidr| !cidr.is_empty()))
    }

    /// Runs one request to completion within [`REQUEST_TIMEOUT`] and names `object` and the
    /// server in any error.
    fn request<T>(&self, object: &str, call: impl Future<Output = kube::Result<T>>) -> Result<T> {
        let context = format!("get {object} from {}", self.server);
        // The timer must be created inside the runtime.
        match self
            .runtime
            .block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, call).await })
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(request_error(err).context(context)),
            Err(_) => Err(Error::new(
                Code::TryAgainLater,
                format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()),
            )
            .with_kind(Kind::TryAgainLater)
            .context(context)),
        }
    }
}

impl fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeClient")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The client configuration: the kubeconfig (if any) with the network config's overrides
/// applied to its current context's cluster and user.
fn connection_settings(conf: &NetConf) -> Result<kube::Config> {
    let mut kubeconfig = match &conf.kubernetes.kubeconfig {
        // Checked first so that a FIFO, a device or a huge file fails at once; kube then reads
        // it again because it resolves the relative paths inside against its directory.
        Some(path) => read_config_file(path, "kubernetes.kubeconfig", MAX_CONFIG_FILE_LEN)
            .and_then(|_| {
                Kubeconfig::read_from(path).map_err(|e| {
                    let msg = format!("read kubeconfig {}: {}", path.display(), error_chain(&e));
                    Error::new(Code::InvalidConfig, msg)
                })
            })?,
        None => Kubeconfig::default(),
    };
    let source = match &conf.kubernetes.kubeconfig {
        Some(path) => format!("kubeconfig {}", path.display()),
        None => "the network config".to_string(),
    };
    let (cluster, user) = current_entries(&mut kubeconfig).map_err(|e| e.context(&source))?;
    apply_overrides(conf, cluster, user);
    check_named_files(cluster, user).map_err(|e| e.context(&source))?;
    if cluster.server.as_deref().is_none_or(str::is_empty) {
        return Err(Error::new(
            Code::InvalidConfig,
            format!(
                "no kubernetes API server configured in {source}: set kubernetes.k8s_api_root, \
                 policy.k8s_api_root or a server in the kubeconfig (kubernetes.kubeconfig)"
            ),
        ));
    }
    // Loading only resolves the current context and reads the CA; it never waits on I/O.
    let options = KubeConfigOptions::default();
    let loaded =
        futures::executor::block_on(kube::Config::from_custom_kubeconfig(kubeconfig, &options));
    let mut config = loaded.map_err(|e| {
        Error::new(
            Code::InvalidConfig,
            format!(
                "load kubernetes connection settings from {source}: {}",
                error_chain(&e)
            ),
        )
    })?;
    config.connect_timeout = Some(REQUEST_TIMEOUT);
    config.read_timeout = Some(REQUEST_TIMEOUT);
    config.write_timeout = Some(REQUEST_TIMEOUT);
    // One short request per run: a failure goes back to the runtime, which retries the ADD.
    config.default_retry = false;
    // Requests go straight to the API server; the client is built without proxy support, and
    // an HTTPS_PROXY meant for image pulls must not make it fail.
    config.proxy_url = None;
    Ok(config)
}

/// The cluster and user of the kubeconfig's current context. Entries the context names but the
/// file lacks are created empty, as client-go treats them; without a current context one is
/// created, so that the overrides alone describe the connection.
fn current_entries(kubeconfig: &mut Kubeconfig) -> Result<(&mut Cluster, &mut AuthInfo)> {
    let context_name = match kubeconfig
        .current_context
        .clone()
        .filter(|name| !name.is_empty())
    {
        Some(name) => name,
        None => {
            let name = OVERRIDES_ENTRY.to_string();
            kubeconfig.contexts.push(NamedContext {
                name: name.clone(),
                context: Some(kube::config::Context {
                    cluster: name.clone(),
                    user: Some(name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            });
            kubeconfig.current_context = Some(name.clone());
            name
        }
    };
    let context = kubeconfig
        .contexts
        .iter_mut()
        .find(|named| named.name == context_name)
        .and_then(|named| named.context.as_mut())
        .ok_or_else(|| {
            Error::new(
                Code::InvalidConfig,
                format!("current context {context_name:?} is not defined"),
            )
        })?;
    let cluster_name = if context.cluster.is_empty() {
        context.cluster = OVERRIDES_ENTRY.to_string();
        context.cluster.clone()
    } else {
        context.cluster.clone()
    };
    let user_name = context
        .user
        .get_or_insert_with(|| OVERRIDES_ENTRY.to_string())
        .clone();

    let cluster_index = match kubeconfig
        .clusters
        .iter()
        .position(|named| named.name == cluster_name)
    {
        Some(index) => index,
        None => {
            kubeconfig.clusters.push(NamedCluster {
                name: cluster_name,
                ..Default::default()
            });
            kubeconfig.clusters.len() - 1
        }
    };
    let user_index = match kubeconfig
        .auth_infos
        .iter()
        .position(|named| named.name == user_name)
    {
        Some(index) => index,
        None => {
            kubeconfig.auth_infos.push(NamedAuthInfo {
                name: user_name,
                ..Default::default()
            });
            kubeconfig.auth_infos.len() - 1
        }
    };
    let cluster = kubeconfig.clusters[cluster_index]
        .cluster
        .get_or_insert_with(Cluster::default);
    let user = kubeconfig.auth_infos[user_index]
        .auth_info
        .get_or_insert_with(AuthInfo::default);
    Ok((cluster, user))
}

/// Applies the network config's connection keys on top of the kubeconfig's entries.
fn apply_overrides(conf: &NetConf, cluster: &mut Cluster, user: &mut AuthInfo) {
    let policy = &conf.policy;
    let server = non_empty(conf.kubernetes.k8s_api_root.as_deref())
        .or_else(|| non_empty(policy.k8s_api_root.as_deref()));
    if let Some(server) = server {
        cluster.server = Some(server.to_string());
    }
    // A CA given in the network config replaces the kubeconfig's CA data and its
    // insecure-skip-tls-verify; otherwise the inline data would still win over the file.
    if let Some(ca) = non_empty_path(policy.k8s_certificate_authority.as_deref()) {
        cluster.certificate_authority = Some(ca.display().to_string());
        cluster.certificate_authority_data = None;
        cluster.insecure_skip_tls_verify = None;
    }
    if let Some(cert) = non_empty_path(policy.k8s_client_certificate.as_deref()) {
        user.client_certificate = Some(cert.display().to_string());
        user.client_certificate_data = None;
    }
    if let Some(key) = non_empty_path(policy.k8s_client_key.as_deref()) {
        user.client_key = Some(key.display().to_string());
        user.client_key_data = None;
    }
    if let Some(token) = non_empty(policy.k8s_auth_token.as_deref()) {
        user.token = Some(secrecy::SecretString::from(token.to_string()));
        user.token_file = None;
    }
}

/// Checks the CA, client certificate, key and token files the connection will read with
/// [`read_config_file`], so that none of them can block the run or be read without bound.
fn check_named_files(cluster: &Cluster, user: &AuthInfo) -> Result<()> {
    let files = [
        (
            cluster.certificate_authority.as_deref(),
            "certificate authority (policy.k8s_certificate_authority or the kubeconfig)",
        ),
        (
            user.client_certificate.as_deref(),
            "client certificate (policy.k8s_client_certificate or the kubeconfig)",
        ),
        (
            user.client_key.as_deref(),
            "client key (policy.k8s_client_key or the kubeconfig)",
        ),
        (user.token_file.as_deref(), "token file (the kubeconfig)"),
    ];
    for (path, what) in files {
        if let Some(path) = non_empty(path) {
            read_config_file(Path::new(path), what, MAX_PEM_FILE_LEN)?;
        }
    }
    Ok(())
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

fn non_empty_path(value: Option<&Path>) -> Option<&Path> {
    value.filter(|p| !p.as_os_str().is_empty())
}

/// Our error for a failed request: the API's answer, a TLS failure, or a transport failure.
fn request_error(err: kube::Error) -> Error {
    match err {
        kube::Error::Api(status) => {
            let (kind, code) = match status.code {
                404 => (Kind::NotFound, API_ERROR),
                429 | 500..=599 => (Kind::TryAgainLater, Code::TryAgainLater),
                _ => (Kind::Other, API_ERROR),
            };
            let message = if status.message.is_empty() {
                "no message"
            } else {
                status.message.as_str()
            };
            let mut msg = format!("{message} ({} {})", status.code, status.reason);
            if matches!(status.code, 401 | 403) {
                msg.push_str(
                    "; check policy.k8s_auth_token, policy.k8s_client_certificate or the kubeconfig user",
                );
            }
            Error::new(code, msg).with_kind(kind)
        }
        other => {
            let chain = error_chain(&other);
            if tls_failure(&other).is_some() {
                Error::new(API_ERROR, format!("TLS handshake failed: {chain}"))
            } else {
                Error::new(
                    Code::TryAgainLater,
                    format!("cannot reach the API server: {chain}"),
                )
                .with_kind(Kind::TryAgainLater)
            }
        }
    }
}

/// The TLS error somewhere in `err`'s sources.
fn tls_failure<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(current) = next {
        let current = unwrap_hidden(current);
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = current.source();
    }
    None
}

/// `err` and its sources, each level once: `outer: inner: innermost`.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(current) = next {
        let current = unwrap_hidden(current);
        let text = current.to_string();
        // Wrappers often repeat their source's text; keep the most specific wording once.
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        next = current.source();
    }
    parts.join(": ")
}

/// The error an `io::Error` wraps, through any number of `io::Error` layers. Its own `source()`
/// skips the wrapped error (returning that one's source instead), which hides the TLS error
/// the HTTPS connector wraps this way.
fn unwrap_hidden<'a>(
    mut err: &'a (dyn std::error::Error + 'static),
) -> &'a (dyn std::error::Error + 'static) {
    while let Some(inner) = err
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        err = inner;
    }
    err
}

/// rustls needs a process-wide crypto provider before a TLS config is built. Both this client
/// and etcd's use ring; installing it is a no-op when one is installed already.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::config::{KubernetesConf, PolicyConf, PolicyType};

    /// A directory for one test's files, removed when dropped.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(label: &str) -> Scratch {
            use std::sync::atomic::{AtomicU32, Ordering};
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "calico-k8s-test-{label}-{}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    // PEM blocks are only split into DER here, never verified, so any bytes do.
    const CA_FILE_PEM: &str = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";
    const CA_FILE_DER: &[u8] = &[1, 2, 3];
    // base64 of a PEM block whose DER is [4, 5, 6].
    const CA_DATA_B64: &str =
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCkJBVUcKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=";
    const CA_DATA_DER: &[u8] = &[4, 5, 6];

    const KUBECONFIG: &str = "\
apiVersion: v1
kind: Config
clusters:
- name: other
  cluster:
    server: https://other:6443
- name: main
  cluster:
    server: https://main:6443
    certificate-authority-data: CA_DATA
    insecure-skip-tls-verify: true
users:
- name: other
  user:
    token: other-token
- name: admin
  user:
    token: kubeconfig-token
    client-certificate-data: Y2VydA==
    client-key-data: a2V5
contexts:
- name: other
  context: {cluster: other, user: other}
- name: main
  context: {cluster: main, user: admin}
current-context: main
";

    #[derive(Default)]
    struct Case {
        name: &'static str,
        kubeconfig: Option<&'static str>,
        policy_root: Option<&'static str>,
        kubernetes_root: Option<&'static str>,
        token: Option<&'static str>,
        ca_file: bool,
        client_cert_files: bool,
        // Expected:
        server: &'static str,
        expect_token: Option<&'static str>,
        expect_ca: Option<&'static [u8]>,
        expect_insecure: bool,
        expect_cert: Option<&'static str>,
    }

    #[test]
    fn overrides_apply_on_top_of_the_kubeconfig() {
        let cases = [
            Case {
                name: "policy root and token alone",
                policy_root: Some("https://10.0.0.1:443"),
                token: Some("t0"),
                server: "https://10.0.0.1:443/",
                expect_token: Some("t0"),
                ..Case::default()
            },
            Case {
                name: "kubernetes root wins over policy root",
                policy_root: Some("https://policy:6443"),
                kubernetes_root: Some("https://kubernetes:6443"),
                ca_file: true,
                server: "https://kubernetes:6443/",
                expect_ca: Some(CA_FILE_DER),
                ..Case::default()
            },
            Case {
                name: "client certificate files without kubeconfig",
                policy_root: Some("http://127.0.0.1:8080"),
                client_cert_files: true,
                server: "http://127.0.0.1:8080/",
                expect_cert: Some("client.crt"),
                ..Case::default()
            },
            Case {
                name: "kubeconfig alone uses its current context",
                kubeconfig: Some(KUBECONFIG),
                server: "https://main:6443/",
                expect_token: Some("kubeconfig-token"),
                expect_ca: Some(CA_DATA_DER),
                expect_insecure: true,
                ..Case::default()
            },
            Case {
                name: "overrides replace kubeconfig server, token, CA and certificate",
                kubeconfig: Some(KUBECONFIG),
                policy_root: Some("https://policy:6443"),
                token: Some("override-token"),
                ca_file: true,
                client_cert_files: true,
                server: "https://policy:6443/",
                expect_token: Some("override-token"),
                expect_ca: Some(CA_FILE_DER),
                expect_cert: Some("client.crt"),
                ..Case::default()
            },
            Case {
                name: "kubeconfig without server takes the configured root",
                kubeconfig: Some(
                    "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n    token: kt\n\
                     contexts:\n- name: c\n  context: {cluster: gone, user: u}\ncurrent-context: c\n",
                ),
                kubernetes_root: Some("https://root:6443"),
                server: "https://root:6443/",
                expect_token: Some("kt"),
                ..Case::default()
            },
            Case {
                name: "empty kubeconfig with overrides",
                kubeconfig: Some(""),
                policy_root: Some("https://10.0.0.2:6443"),
                token: Some("t1"),
                server: "https://10.0.0.2:6443/",
                expect_token: Some("t1"),
                ..Case::default()
            },
        ];
        for case in cases {
            let scratch = Scratch::new("precedence");
            let ca = scratch.write("ca.crt", CA_FILE_PEM);
            let cert = scratch.write("client.crt", "cert");
            let key = scratch.write("client.key", "key");
            let kubeconfig = case
                .kubeconfig
                .map(|text| scratch.write("kubeconfig", &text.replace("CA_DATA", CA_DATA_B64)));
            let conf = net_conf(
                PolicyConf {
                    policy_type: PolicyType::Kubernetes,
                    k8s_api_root: case.policy_root.map(String::from),
                    k8s_auth_token: case.token.map(String::from),
                    k8s_client_certificate: case.client_cert_files.then(|| cert.clone()),
                    k8s_client_key: case.client_cert_files.then(|| key.clone()),
                    k8s_certificate_authority: case.ca_file.then(|| ca.clone()),
                },
                KubernetesConf {
                    kubeconfig,
                    k8s_api_root: case.kubernetes_root.map(String::from),
                    node_name: None,
                },
            );
            let config =
                connection_settings(&conf).unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
            assert_eq!(config.cluster_url.to_string(), case.server, "{}", case.name);
            let user = serde_json::to_value(&config.auth_info).unwrap();
            assert_eq!(user["token"].as_str(), case.expect_token, "{}", case.name);
            let roots = config.root_cert.clone().unwrap_or_default();
            let expected_roots: Vec<Vec<u8>> =
                case.expect_ca.iter().map(|der| der.to_vec()).collect();
            assert_eq!(roots, expected_roots, "{}", case.name);
            assert_eq!(
                config.accept_invalid_certs, case.expect_insecure,
                "{}",
                case.name
            );
            let expected_cert = case
                .expect_cert
                .map(|name| scratch.0.join(name).display().to_string());
            assert_eq!(
                config.auth_info.client_certificate, expected_cert,
                "{}",
                case.name
            );
            if case.expect_cert.is_some() {
                // The file replaces any inline data from the kubeconfig.
                assert!(
                    config.auth_info.client_certificate_data.is_none(),
                    "{}",
                    case.name
                );
                assert!(config.auth_info.client_key_data.is_none(), "{}", case.name);
            }
            assert_eq!(config.read_timeout, Some(REQUEST_TIMEOUT), "{}", case.name);
        }
    }

    #[test]
    fn missing_server_is_a_config_error_naming_the_keys() {
        let scratch = Scratch::new("noserver");
        let no_server = scratch.write("kubeconfig", "apiVersion: v1\nkind: Config\n");
        for kubeconfig in [None, Some(no_server)] {
            let conf = net_conf(
                PolicyConf {
                    k8s_auth_token: Some("t".into()),
                    ..PolicyConf::default()
                },
                KubernetesConf {
                    kubeconfig,
                    ..KubernetesConf::default()
                },
            );
            let err = connection_settings(&conf).unwrap_err();
            assert_eq!(err.code(), Code::InvalidConfig);
            assert!(err.msg().contains("kubernetes.k8s_api_root"), "{err:?}");
            assert!(err.msg().contains("policy.k8s_api_root"), "{err:?}");
            assert!(err.msg().contains("kubernetes.kubeconfig"), "{err:?}");
        }
    }

    #[test]
    fn unreadable_or_inconsistent_kubeconfig_is_a_config_error_naming_the_file() {
        let scratch = Scratch::new("badkubeconfig");
        let missing = scratch.0.join("missing");
        let dangling = scratch.write(
            "dangling",
            "apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n",
        );
        let garbage = scratch.write("garbage", "clusters: [[[\n");
        for path in [missing, dangling, garbage] {
            let conf = net_conf(
                PolicyConf {
                    k8s_api_root: Some("https://x:1".into()),
                    ..PolicyConf::default()
                },
                KubernetesConf {
                    kubeconfig: Some(path.clone()),
                    ..KubernetesConf::default()
                },
            );
            let err = connection_settings(&conf).unwrap_err();
            assert_eq!(err.code(), Code::InvalidConfig, "{err:?}");
            assert!(err.msg().contains(&path.display().to_string()), "{err:?}");
        }
    }

    #[test]
    fn unreachable_server_is_try_again_later() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = net_conf(
            PolicyConf {
                k8s_api_root: Some(format!("http://127.0.0.1:{port}")),
                ..PolicyConf::default()
            },
            KubernetesConf::default(),
        );
        let client = KubeClient::new(&conf).unwrap();
        let err = client.get_pod("default", "web").unwrap_err();
        assert_eq!(err.kind(), Kind::TryAgainLater, "{err:?}");
        assert_eq!(err.code(), Code::TryAgainLater);
        let prefix = format!("get pod default/web from http://127.0.0.1:{port}: ");
        assert!(err.msg().starts_with(&prefix), "{err:?}");
    }

    fn net_conf(policy: PolicyConf, kubernetes: KubernetesConf) -> NetConf {
        let json =
            br#"{"name":"net","type":"calico","ipam":{"type":"calico-ipam"},"nodename":"n1"}"#;
        let mut conf = NetConf::parse(json, &|_| None).unwrap();
        conf.policy = policy;
        conf.kubernetes = kubernetes;
        conf
    }
}
