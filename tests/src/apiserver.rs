//! A stand-in Kubernetes API server: HTTPS on a free loopback port, inside the test process.
//!
//! It serves `GET /api/v1/namespaces/{ns}/pods/{name}` and `GET /api/v1/nodes/{name}` as API
//! JSON documents, answers everything else with the API's `Status` error bodies, and checks a
//! bearer token or a client certificate as configured by the test ([`Auth`]). At start it
//! generates a CA, a server certificate for `127.0.0.1`/`localhost` and a client certificate,
//! and writes them (PEM) into its own temp dir, together with kubeconfig files on request.
//! Every request it read is recorded ([`ApiServer::requests`]). Dropping it stops it.
//!
//! Each connection is served by one short-lived thread and closed after one response.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use serde_json::{Value, json};

use crate::TempDir;
use crate::pki::new_ca;

/// Which credentials the server accepts. A request without them gets `401 Unauthorized`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Every request is served (anonymous access enabled).
    Anonymous,
    /// `Authorization: Bearer <token>` with exactly this token.
    Token(String),
    /// A client certificate issued by the server's CA (mutual TLS).
    ClientCert,
}

/// One request the server read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, ...
    pub method: String,
    /// The request target, query included.
    pub path: String,
    /// The bearer token sent, if any.
    pub token: Option<String>,
    /// True when the TLS client presented a certificate (it was verified against the CA).
    pub client_cert: bool,
}

/// How a kubeconfig written by [`ApiServer::write_kubeconfig`] identifies the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeUser {
    /// No credentials.
    None,
    /// `token: <token>`.
    Token(String),
    /// `client-certificate` and `client-key` as file paths.
    ClientCertFiles,
    /// `client-certificate-data` and `client-key-data` (base64 PEM).
    ClientCertData,
}

/// How a kubeconfig written by [`ApiServer::write_kubeconfig`] trusts the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeCa {
    /// No CA at all (system roots: the server is not trusted).
    None,
    /// `certificate-authority: <path>`.
    File,
    /// `certificate-authority-data` (base64 PEM).
    Data,
    /// `insecure-skip-tls-verify: true`.
    Insecure,
}

#[derive(Default)]
struct State {
    auth: Option<Auth>,
    forbidden: bool,
    pods: BTreeMap<(String, String), Value>,
    nodes: BTreeMap<String, Value>,
    requests: Vec<Request>,
}

/// The running server. See the module docs.
pub struct ApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    dir: TempDir,
    kubeconfigs: Mutex<u32>,
}

impl ApiServer {
    /// Generates the certificates and starts serving on `127.0.0.1:<free port>`.
    pub fn start(auth: Auth) -> ApiServer {
        let dir = TempDir::new("apiserver");
        let tls = Arc::new(generate_pki(&dir));
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the stand-in API server");
        let addr = listener
            .local_addr()
            .expect("local address of the stand-in API server");
        let state = Arc::new(Mutex::new(State {
            auth: Some(auth),
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || accept_loop(listener, tls, state, stop))
        };
        ApiServer {
            addr,
            state,
            stop,
            thread: Some(thread),
            dir,
            kubeconfigs: Mutex::new(0),
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA that issued the server and client certificates (PEM file).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A client certificate the server accepts (PEM file).
    pub fn client_cert_file(&self) -> PathBuf {
        self.dir.join("client.crt")
    }

    /// The key of [`ApiServer::client_cert_file`] (PKCS#8 PEM file).
    pub fn client_key_file(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    /// A CA that did not issue the server certificate (PEM file).
    pub fn untrusted_ca_file(&self) -> PathBuf {
        self.dir.join("untrusted-ca.crt")
    }

    /// Changes which credentials are accepted.
    pub fn set_auth(&self, auth: Auth) {
        self.lock().auth = Some(auth);
    }

    /// When true, authenticated requests are refused with `403 Forbidden` (no RBAC grant).
    pub fn set_forbidden(&self, forbidden: bool) {
        self.lock().forbidden = forbidden;
    }

    /// Adds (or replaces) a pod. Empty maps are omitted from the document, as the API does.
    pub fn add_pod(
        &self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) {
        let mut metadata = json!({
            "name": name,
            "namespace": namespace,
            "uid": uid(&format!("pod/{namespace}/{name}")),
            "resourceVersion": "4711",
            "creationTimestamp": "2017-06-01T12:00:00Z",
        });
        if !labels.is_empty() {
            metadata["labels"] = string_map(labels);
        }
        if !annotations.is_empty() {
            metadata["annotations"] = string_map(annotations);
        }
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {
                "containers": [{"name": "app", "image": "busybox", "imagePullPolicy": "IfNotPresent"}],
                "restartPolicy": "Always",
                "nodeName": "node1",
            },
            "status": {"phase": "Pending", "qosClass": "BestEffort"},
        });
        self.lock()
            .pods
            .insert((namespace.to_string(), name.to_string()), pod);
    }

    /// Adds (or replaces) a node, with `spec.podCIDR` when given.
    pub fn add_node(&self, name: &str, pod_cidr: Option<&str>) {
        let spec = match pod_cidr {
            Some(cidr) => json!({"podCIDR": cidr, "podCIDRs": [cidr]}),
            None => json!({}),
        };
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "uid": uid(&format!("node/{name}")),
                "resourceVersion": "815",
                "labels": {"kubernetes.io/hostname": name},
            },
            "spec": spec,
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]},
        });
        self.lock().nodes.insert(name.to_string(), node);
    }

    /// Every request read so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// Writes a kubeconfig file whose current context points at this server. A second context
    /// (not current) points at a closed port with other credentials, so a client that ignores
    /// `current-context` fails.
    pub fn write_kubeconfig(&self, user: KubeUser, ca: KubeCa) -> PathBuf {
        let n = {
            let mut count = self.kubeconfigs.lock().unwrap_or_else(|e| e.into_inner());
            *count += 1;
            *count
        };
        let path = self.dir.join(&format!("kubeconfig-{n}"));
        let cluster = match ca {
            KubeCa::None => String::new(),
            KubeCa::File => format!("    certificate-authority: {}\n", self.ca_file().display()),
            KubeCa::Data => format!(
                "    certificate-authority-data: {}\n",
                base64_file(&self.ca_file())
            ),
            KubeCa::Insecure => "    insecure-skip-tls-verify: true\n".to_string(),
        };
        let user = match user {
            KubeUser::None => "  user: {}\n".to_string(),
            KubeUser::Token(token) => format!("  user:\n    token: {token}\n"),
            KubeUser::ClientCertFiles => format!(
                "  user:\n    client-certificate: {}\n    client-key: {}\n",
                self.client_cert_file().display(),
                self.client_key_file().display()
            ),
            KubeUser::ClientCertData => format!(
                "  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
                base64_file(&self.client_cert_file()),
                base64_file(&self.client_key_file())
            ),
        };
        let text = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: decoy\n  cluster:\n    server: https://127.0.0.1:1\n\
             - name: stand-in\n  cluster:\n    server: {url}\n{cluster}\
             users:\n\
             - name: decoy\n  user:\n    token: decoy-token\n\
             - name: calico\n{user}\
             contexts:\n\
             - name: decoy\n  context:\n    cluster: decoy\n    user: decoy\n\
             - name: calico@stand-in\n  context:\n    cluster: stand-in\n    user: calico\n\
             current-context: calico@stand-in\n\
             preferences: {{}}\n",
            url = self.url(),
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so that the loop sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("the stand-in API server thread panicked");
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let (tls, state) = (tls.clone(), state.clone());
        std::thread::spawn(move || serve_connection(stream, tls, state));
    }
}

fn serve_connection(tcp: TcpStream, tls: Arc<ServerConfig>, state: Arc<Mutex<State>>) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(conn) = ServerConnection::new(tls) else {
        return;
    };
    let mut stream = BufReader::new(StreamOwned::new(conn, tcp));
    // The first read drives the handshake; a client that rejects our certificate (or presents
    // one from another CA) ends here.
    let Some((method, path, token)) = read_request_head(&mut stream) else {
        return;
    };
    let client_cert = stream
        .get_ref()
        .conn
        .peer_certificates()
        .is_some_and(|c| !c.is_empty());
    let request = Request {
        method,
        path,
        token,
        client_cert,
    };
    let (status, body) = {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        state.requests.push(request.clone());
        respond(&state, &request)
    };
    let stream = stream.get_mut();
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    stream.conn.send_close_notify();
    let _ = stream.flush();
}

/// Reads the request line and headers; returns method, target and bearer token.
fn read_request_head(stream: &mut impl BufRead) -> Option<(String, String, Option<String>)> {
    let mut line = String::new();
    stream.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut token = None;
    loop {
        line.clear();
        if stream.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            token = value
                .trim()
                .strip_prefix("Bearer ")
                .map(|t| t.trim().to_string());
        }
    }
    Some((method, path, token))
}

fn respond(state: &State, request: &Request) -> (u16, Value) {
    let authenticated = match &state.auth {
        Some(Auth::Anonymous) | None => true,
        Some(Auth::Token(expected)) => request.token.as_deref() == Some(expected.as_str()),
        Some(Auth::ClientCert) => request.client_cert,
    };
    if !authenticated {
        return (401, status_body(401, "Unauthorized", "Unauthorized", None));
    }
    let route = request.path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    let (kind, name, namespace) = match segments.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", name] => ("pods", *name, Some(*ns)),
        ["api", "v1", "nodes", name] => ("nodes", *name, None),
        _ => {
            let msg = "the server could not find the requested resource";
            return (404, status_body(404, "NotFound", msg, None));
        }
    };
    if request.method != "GET" {
        let msg = format!("{} is not supported by the stand-in server", request.method);
        return (405, status_body(405, "MethodNotAllowed", &msg, None));
    }
    if state.forbidden {
        let scope = match namespace {
            Some(ns) => format!(" in the namespace \"{ns}\""),
            None => " at the cluster scope".to_string(),
        };
        let user = if request.client_cert {
            "calico-cni"
        } else {
            "system:serviceaccount:kube-system:calico"
        };
        let msg = format!(
            "{kind} \"{name}\" is forbidden: User \"{user}\" cannot get resource \"{kind}\" \
             in API group \"\"{scope}"
        );
        return (403, status_body(403, "Forbidden", &msg, Some((kind, name))));
    }
    let found = match namespace {
        Some(ns) => state.pods.get(&(ns.to_string(), name.to_string())),
        None => state.nodes.get(name),
    };
    match found {
        Some(object) => (200, object.clone()),
        None => {
            let msg = format!("{kind} \"{name}\" not found");
            (404, status_body(404, "NotFound", &msg, Some((kind, name))))
        }
    }
}

/// The API's `Status` error document.
fn status_body(code: u16, reason: &str, message: &str, object: Option<(&str, &str)>) -> Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some((kind, name)) = object {
        status["details"] = json!({"name": name, "kind": kind});
    }
    status
}

fn string_map(pairs: &[(&str, &str)]) -> Value {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A stable UUID-shaped id derived from the object's name.
fn uid(seed: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let hex = format!("{hash:016x}{:016x}", hash.rotate_left(17));
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn base64_file(path: &std::path::Path) -> String {
    use base64::Engine;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Generates the CA, server and client certificates, writes the PEM files the tests use into
/// `dir`, and returns the server's TLS config.
fn generate_pki(dir: &TempDir) -> ServerConfig {
    let ca = new_ca("stand-in kubernetes CA");
    let untrusted = new_ca("untrusted CA");

    let mut server =
        CertificateParams::new(vec!["localhost".to_string()]).expect("server cert params");
    server
        .subject_alt_names
        .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
    server
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().expect("server key");
    let server_cert = server
        .signed_by(&server_key, &ca)
        .expect("sign the server certificate");

    let mut client = CertificateParams::new(Vec::<String>::new()).expect("client cert params");
    client
        .distinguished_name
        .push(DnType::CommonName, "calico-cni");
    client
        .distinguished_name
        .push(DnType::OrganizationName, "system:nodes");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate().expect("client key");
    let client_cert = client
        .signed_by(&client_key, &ca)
        .expect("sign the client certificate");

    for (name, pem) in [
        ("ca.crt", ca.pem()),
        ("untrusted-ca.crt", untrusted.pem()),
        ("client.crt", client_cert.pem()),
        ("client.key", client_key.serialize_pem()),
    ] {
        std::fs::write(dir.join(name), pem).unwrap_or_else(|e| panic!("write {name}: {e}"));
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).expect("trust the stand-in CA");
    // Client certificates are optional at the TLS layer; `Auth` decides per request.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .expect("client certificate verifier");
    let chain: Vec<CertificateDer<'static>> = vec![server_cert.der().clone(), ca.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server certificate")
}
