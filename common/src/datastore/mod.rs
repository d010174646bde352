//! The etcd (v3 API) datastore: a small synchronous client with compare-and-swap transactions
//! and failover between the configured endpoints, plus Calico's key formats ([`keys`]) and
//! values ([`model`]).
//!
//! The async etcd client and its tokio runtime stay inside this module. A plugin run makes only a
//! handful of requests, so the client talks to one endpoint at a time and connects lazily.

pub mod keys;
pub mod model;

use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KvClient,
    TlsOptions, TxnOp, TxnOpResponse,
};

use crate::config::EtcdSettings;
use crate::error::{Code, Context, Error, Kind, Result, codes};

/// Environment variable naming a file to which every etcd request appends `<verb> <key>`.
///
/// The plugins run as separate processes; tests and benchmarks count the lines.
pub const REQUEST_LOG_ENV: &str = "CALICO_ETCD_REQUEST_LOG";

/// Upper bound for establishing a connection to one endpoint (never above the request timeout),
/// so that an unreachable member is skipped quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The most operations etcd accepts in one branch of a transaction (its `--max-txn-ops`
/// default), and so the most reads one [`Datastore::read`] can make.
pub const MAX_TXN_OPS: usize = 128;

/// One key as stored in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The raw value.
    pub value: Vec<u8>,
    /// Revision of the last change of the key; what [`Condition::Revision`] compares.
    pub mod_revision: i64,
    /// Revision at which the key was created.
    pub create_revision: i64,
}

/// A condition of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist.
    Absent(String),
    /// The key's `mod_revision` equals the given one (it was not changed since it was read).
    Revision(String, i64),
}

/// A write of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Set the key to the value.
    Put(String, Vec<u8>),
    /// Delete the key (a missing key is not an error).
    Delete(String),
    /// Apply `writes` only when `key` does not exist before the transaction (its own writes do
    /// not count). When it does, the group is skipped and the rest of the transaction still
    /// commits. Groups do not nest, and etcd refuses a key written twice in one transaction.
    IfAbsent {
        /// The key whose absence the group needs.
        key: String,
        /// Applied together when `key` is absent: puts and deletes only.
        writes: Vec<Write>,
    },
}

/// One read of [`Datastore::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// One key: its entry, or nothing when it does not exist.
    Key(String),
    /// Every key under a prefix, sorted by key.
    Prefix(String),
}

impl Read {
    /// The key or prefix read.
    pub fn key(&self) -> &str {
        match self {
            Read::Key(key) | Read::Prefix(key) => key,
        }
    }
}

/// An atomic transaction: when every condition holds, all writes happen; otherwise nothing is
/// written and the keys in `reads_on_failure` are read in the same round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// All must hold for the writes to happen. Empty means the writes always happen.
    pub conditions: Vec<Condition>,
    /// Applied together when the conditions hold.
    pub writes: Vec<Write>,
    /// Keys to read when the conditions do not hold, so a compare-and-swap loop can retry
    /// without another request.
    pub reads_on_failure: Vec<String>,
}

/// The result of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOutcome {
    /// True when the conditions held and the writes were applied.
    pub committed: bool,
    /// When not committed: the current entries of `reads_on_failure` that exist, in request
    /// order. Missing keys have no entry. Empty when committed.
    pub current: Vec<Entry>,
}

impl Txn {
    /// The keys whose condition the failure reads `current` show broken: created, changed or
    /// deleted since they were read. Conditions on keys that were not read back cannot be
    /// judged and are left out.
    pub fn conflicting_keys(&self, current: &[Entry]) -> Vec<&str> {
        let now = |key: &str| current.iter().find(|e| e.key == key);
        let read_back = |key: &str| self.reads_on_failure.iter().any(|k| k == key);
        self.conditions
            .iter()
            .filter_map(|condition| match condition {
                Condition::Absent(key) => now(key).is_some().then_some(key.as_str()),
                Condition::Revision(key, revision) => (read_back(key)
                    && now(key).is_none_or(|e| e.mod_revision != *revision))
                .then_some(key.as_str()),
            })
            .collect()
    }
}

/// Logs, at info, a compare-and-swap lost to another writer, naming the keys that changed
/// since they were read (every key of a condition when the transaction read nothing back).
pub fn log_conflict(txn: &Txn, current: &[Entry]) {
    let mut keys = txn.conflicting_keys(current);
    let which = if keys.is_empty() {
        keys = txn
            .conditions
            .iter()
            .map(|c| match c {
                Condition::Absent(key) | Condition::Revision(key, _) => key.as_str(),
            })
            .collect();
        "one of"
    } else {
        "changed:"
    };
    crate::cni::log::info(&format!(
        "compare-and-swap conflict, {which} {}",
        keys.join(", ")
    ));
}

/// The connection in use: which endpoint, and its client once connected.
struct Connection {
    index: usize,
    client: Option<Client>,
}

/// Why one attempt against one endpoint failed.
enum Failure {
    /// The endpoint is unusable right now; the next one may answer.
    Transient(String),
    /// The request itself failed; another endpoint would answer the same.
    Fatal(Error),
}

/// A synchronous etcd client for one plugin run.
///
/// Requests go to one endpoint at a time. When it cannot be reached, does not answer in time or
/// reports itself unavailable, the same request is sent to the next endpoint; each endpoint is
/// tried at most once per request. (etcd-client's own balancing keeps sending requests to dead
/// members, so it is given a single endpoint.)
pub struct Datastore {
    // Declared before the runtime so that clients are dropped while the runtime still exists.
    connection: Mutex<Connection>,
    runtime: tokio::runtime::Runtime,
    endpoints: Vec<String>,
    credentials: Option<(String, String)>,
    tls: Option<TlsOptions>,
    request_timeout: Duration,
    requests: AtomicU64,
    request_log: Option<PathBuf>,
}

impl Datastore {
    /// Prepares a client for the given settings. Reads the TLS files but does not contact etcd:
    /// the first request connects. Honours [`REQUEST_LOG_ENV`].
    pub fn connect(settings: &EtcdSettings) -> Result<Datastore> {
        let request_log = std::env::var_os(REQUEST_LOG_ENV)
            .filter(|path| !path.is_empty())
            .map(PathBuf::from);
        Datastore::connect_with_request_log(settings, request_log)
    }

    fn connect_with_request_log(
        settings: &EtcdSettings,
        request_log: Option<PathBuf>,
    ) -> Result<Datastore> {
        if settings.endpoints.is_empty() {
            return Err(Error::new(
                Code::InvalidConfig,
                "no etcd endpoints configured",
            ));
        }
        let needs_tls = settings
            .endpoints
            .iter()
            .any(|ep| ep.starts_with("https://"));
        let tls = if needs_tls {
            Some(tls_options(settings)?)
        } else {
            None
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the etcd client runtime")?;
        Ok(Datastore {
            connection: Mutex::new(Connection {
                index: 0,
                client: None,
            }),
            runtime,
            endpoints: settings.endpoints.clone(),
            credentials: settings.credentials.clone(),
            tls,
            request_timeout: settings.request_timeout,
            requests: AtomicU64::new(0),
            request_log,
        })
    }

    /// Number of requests sent to etcd so far, counting every attempt against an endpoint
    /// (also failed ones and the authentication of a new connection).
    pub fn requests_made(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Reads one key; `None` when it does not exist.
    pub fn get(&self, key: &str) -> Result<Option<Entry>> {
        let mut resp = self.request("get", key, |mut kv| {
            let key = key.to_owned();
            async move { kv.get(key, None).await }
        })?;
        Ok(resp.take_kvs().into_iter().next().map(entry))
    }

    /// Reads every key under a prefix, sorted by key.
    pub fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        let mut resp = self.request("list", prefix, |mut kv| {
            let prefix = prefix.to_owned();
            async move { kv.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })?;
        Ok(resp.take_kvs().into_iter().map(entry).collect())
    }

    /// Lists the keys under a prefix without their values, sorted.
    pub fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        let mut resp = self.request("list-keys", prefix, |mut kv| {
            let prefix = prefix.to_owned();
            let options = GetOptions::new().with_prefix().with_keys_only();
            async move { kv.get(prefix, Some(options)).await }
        })?;
        Ok(resp
            .take_kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect())
    }

    /// Makes several reads in one round trip (one etcd transaction without conditions), so
    /// they all see the same revision. Answers are in request order; a missing key or an empty
    /// prefix answers with an empty list. At most [`MAX_TXN_OPS`] reads; none sends nothing.
    pub fn read(&self, reads: &[Read]) -> Result<Vec<Vec<Entry>>> {
        let Some(first) = reads.first() else {
            return Ok(Vec::new());
        };
        if reads.len() > MAX_TXN_OPS {
            return Err(Error::new(
                codes::DATASTORE,
                format!(
                    "etcd read of {} keys starting at {}: etcd allows at most {MAX_TXN_OPS} \
                     operations in one transaction",
                    reads.len(),
                    first.key()
                ),
            ));
        }
        let ops: Vec<TxnOp> = reads
            .iter()
            .map(|read| match read {
                Read::Key(key) => TxnOp::get(key.as_str(), None),
                Read::Prefix(prefix) => {
                    TxnOp::get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
                }
            })
            .collect();
        let request = etcd_client::Txn::new().and_then(ops);
        let resp = self.request("read", first.key(), |mut kv| {
            let request = request.clone();
            async move { kv.txn(request).await }
        })?;
        let answers: Vec<Vec<Entry>> = resp
            .op_responses()
            .into_iter()
            .filter_map(|op| match op {
                TxnOpResponse::Get(mut get) => {
                    Some(get.take_kvs().into_iter().map(entry).collect())
                }
                _ => None,
            })
            .collect();
        if answers.len() != reads.len() {
            return Err(Error::new(
                codes::DATASTORE,
                format!(
                    "etcd read starting at {}: {} answers to {} reads",
                    first.key(),
                    answers.len(),
                    reads.len()
                ),
            ));
        }
        Ok(answers)
    }

    /// Sets a key unconditionally.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        self.request("put", key, |mut kv| {
            let (key, value) = (key.to_owned(), value.to_vec());
            async move { kv.put(key, value, None).await }
        })?;
        Ok(())
    }

    /// Deletes one key unconditionally; true when it existed.
    ///
    /// When a first attempt timed out after deleting and the retry found nothing, this says
    /// false; callers treat a missing key as deleted anyway.
    pub fn delete(&self, key: &str) -> Result<bool> {
        let resp = self.request("delete", key, |mut kv| {
            let key = key.to_owned();
            async move { kv.delete(key, None).await }
        })?;
        Ok(resp.deleted() > 0)
    }

    /// Runs a transaction in one round trip. A [`Write::IfAbsent`] group inside another one is
    /// refused before anything is sent.
    pub fn txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        let log_key = txn_log_key(txn);
        let request = etcd_txn(txn)?;
        let resp = self.request("txn", log_key, |mut kv| {
            let request = request.clone();
            async move { kv.txn(request).await }
        })?;
        let committed = resp.succeeded();
        let mut current = Vec::new();
        if !committed {
            for op in resp.op_responses() {
                if let TxnOpResponse::Get(mut get) = op {
                    current.extend(get.take_kvs().into_iter().map(entry));
                }
            }
        }
        Ok(TxnOutcome { committed, current })
    }

    /// Sends one request, failing over to the next endpoint on transient failures.
    ///
    /// Retrying after a timeout can repeat a request that etcd did apply. That is safe only
    /// because every write the plugins make is either conditional (a transaction whose
    /// conditions no longer hold the second time, so the retry reports "not committed" and the
    /// caller re-reads) or idempotent (putting the same value, deleting a key).
    fn request<T, F, Fut>(&self, verb: &str, key: &str, call: F) -> Result<T>
    where
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let first = connection.index;
        let mut failures = Vec::new();
        for attempt in 0..self.endpoints.len() {
            let index = (first + attempt) % self.endpoints.len();
            let endpoint = &self.endpoints[index];
            match self.attempt(&mut connection, index, verb, key, &call) {
                Ok(value) => {
                    connection.index = index;
                    return Ok(value);
                }
                Err(Failure::Transient(reason)) => {
                    connection.client = None;
                    failures.push(format!("{endpoint}: {reason}"));
                }
                Err(Failure::Fatal(err)) => return Err(err),
            }
        }
        // Start the next request at the endpoint after the one that failed first.
        connection.index = (first + 1) % self.endpoints.len();
        Err(Error::new(
            codes::DATASTORE,
            format!(
                "etcd {verb} {key}: no endpoint answered ({})",
                failures.join("; ")
            ),
        )
        .with_kind(Kind::TryAgainLater))
    }

    /// One attempt of a request against the endpoint at `index`, connecting first if needed.
    fn attempt<T, F, Fut>(
        &self,
        connection: &mut Connection,
        index: usize,
        verb: &str,
        key: &str,
        call: &F,
    ) -> std::result::Result<T, Failure>
    where
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        if connection.index != index || connection.client.is_none() {
            connection.client = None;
            connection.index = index;
            connection.client = Some(self.connect_endpoint(index)?);
        }
        let Some(client) = connection.client.as_ref() else {
            return Err(Failure::Transient("not connected".into()));
        };
        self.record_request(verb, key);
        let timeout = self.request_timeout;
        let outcome = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, call(client.kv_client())).await });
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(classify(err, || {
                format!("etcd {verb} {key} on {}", self.endpoints[index])
            })),
            Err(_) => Err(Failure::Transient(format!("no answer within {timeout:?}"))),
        }
    }

    /// Builds a client for one endpoint. Without credentials this sends nothing; with them it
    /// authenticates, which is one request.
    fn connect_endpoint(&self, index: usize) -> std::result::Result<Client, Failure> {
        let endpoint = &self.endpoints[index];
        let mut options =
            ConnectOptions::new().with_connect_timeout(CONNECT_TIMEOUT.min(self.request_timeout));
        // etcd-client refuses TLS options for http:// URLs, so they go only with https ones.
        if endpoint.starts_with("https://")
            && let Some(tls) = &self.tls
        {
            options = options.with_tls(tls.clone());
        }
        if let Some((user, password)) = &self.credentials {
            options = options.with_user(user, password);
            self.record_request("authenticate", endpoint);
        }
        let timeout = self.request_timeout;
        let connected = self.runtime.block_on(async {
            tokio::time::timeout(timeout, Client::connect([endpoint.as_str()], Some(options))).await
        });
        match connected {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(err)) => Err(classify(err, || {
                format!("connect to etcd endpoint {endpoint}")
            })),
            Err(_) => Err(Failure::Transient(format!(
                "no connection within {timeout:?}"
            ))),
        }
    }

    /// Counts a request and appends it to the request log, if any.
    fn record_request(&self, verb: &str, key: &str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(path) = &self.request_log
            && let Err(err) = append_line(path, &format!("{verb} {key}\n"))
        {
            eprintln!(
                "cannot append to etcd request log {}: {err}",
                path.display()
            );
        }
    }
}

/// Appends one line with a single write, so lines of concurrent processes do not interleave.
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(line.as_bytes())
}

/// Sorts an etcd-client error into "try the next endpoint" and "give up".
fn classify(err: etcd_client::Error, what: impl FnOnce() -> String) -> Failure {
    // gRPC codes: 1 cancelled (tonic's own request timeout), 2 unknown (connection broken
    // mid-request), 4 deadline exceeded, 14 unavailable (connect failure, no leader).
    const RETRYABLE: [i32; 4] = [1, 2, 4, 14];
    match &err {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            Failure::Transient(describe(&err))
        }
        etcd_client::Error::GRpcStatus(status) if RETRYABLE.contains(&i32::from(status.code())) => {
            Failure::Transient(describe(&err))
        }
        _ => Failure::Fatal(Error::new(
            codes::DATASTORE,
            format!("{}: {}", what(), describe(&err)),
        )),
    }
}

/// A one-line description of an etcd-client error, with its underlying cause.
fn describe(err: &etcd_client::Error) -> String {
    let mut text = match err {
        etcd_client::Error::GRpcStatus(status) => status.message().to_owned(),
        other => other.to_string(),
    };
    let mut source = std::error::Error::source(err);
    if let etcd_client::Error::GRpcStatus(status) = err {
        source = std::error::Error::source(status);
    }
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

fn entry(kv: etcd_client::KeyValue) -> Entry {
    Entry {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
        create_revision: kv.create_revision(),
    }
}

/// The key a transaction is logged under: the first one it mentions.
fn txn_log_key(txn: &Txn) -> &str {
    let condition_keys = txn.conditions.iter().map(|c| match c {
        Condition::Absent(key) | Condition::Revision(key, _) => key.as_str(),
    });
    let write_keys = txn.writes.iter().map(|w| match w {
        Write::Put(key, _) | Write::Delete(key) | Write::IfAbsent { key, .. } => key.as_str(),
    });
    condition_keys
        .chain(write_keys)
        .chain(txn.reads_on_failure.iter().map(String::as_str))
        .next()
        .unwrap_or("")
}

fn etcd_txn(txn: &Txn) -> Result<etcd_client::Txn> {
    let compares: Vec<Compare> = txn
        .conditions
        .iter()
        .map(|c| match c {
            // A key that does not exist has create_revision 0.
            Condition::Absent(key) => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
            Condition::Revision(key, rev) => {
                Compare::mod_revision(key.as_str(), CompareOp::Equal, *rev)
            }
        })
        .collect();
    let writes = txn
        .writes
        .iter()
        .map(etcd_write)
        .collect::<Result<Vec<_>>>()?;
    let reads: Vec<TxnOp> = txn
        .reads_on_failure
        .iter()
        .map(|key| TxnOp::get(key.as_str(), None))
        .collect();
    Ok(etcd_client::Txn::new()
        .when(compares)
        .and_then(writes)
        .or_else(reads))
}

/// One write as a transaction operation. A conditional group becomes a nested transaction
/// (etcd 3.3 and later), whose failed condition does not fail the enclosing one.
fn etcd_write(write: &Write) -> Result<TxnOp> {
    Ok(match write {
        Write::Put(key, value) => TxnOp::put(key.as_str(), value.clone(), None),
        Write::Delete(key) => TxnOp::delete(key.as_str(), None),
        Write::IfAbsent { key, writes } => {
            let ops = writes
                .iter()
                .map(|w| match w {
                    Write::IfAbsent { key: inner, .. } => Err(Error::new(
                        codes::DATASTORE,
                        format!(
                            "etcd write group for absent {inner} inside the group for absent \
                             {key}: groups do not nest"
                        ),
                    )),
                    _ => etcd_write(w),
                })
                .collect::<Result<Vec<_>>>()?;
            // A key that does not exist has create_revision 0.
            TxnOp::txn(
                etcd_client::Txn::new()
                    .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                    .and_then(ops),
            )
        }
    })
}

/// TLS options for `https` endpoints from the configured CA, certificate and key files.
fn tls_options(settings: &EtcdSettings) -> Result<TlsOptions> {
    let mut tls = TlsOptions::new();
    if let Some(ca) = &settings.ca_cert_file {
        tls = tls.ca_certificate(Certificate::from_pem(read_tls_file("CA certificate", ca)?));
    }
    match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => {
            let cert = read_tls_file("client certificate", cert)?;
            let key = read_tls_file("client key", key)?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        (Some(cert), None) => {
            return Err(Error::new(
                Code::InvalidConfig,
                format!(
                    "etcd client certificate {} given without a key file",
                    cert.display()
                ),
            ));
        }
        (None, Some(key)) => {
            return Err(Error::new(
                Code::InvalidConfig,
                format!(
                    "etcd client key {} given without a certificate file",
                    key.display()
                ),
            ));
        }
    }
    Ok(tls)
}

fn read_tls_file(what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|err| {
        Error::new(
            Code::InvalidConfig,
            format!("read etcd {what} {}: {err}", path.display()),
        )
    })
}

/// A real etcd for tests: members on free loopback ports in a temp dir, killed and removed on
/// drop.
#[cfg(test)]
pub(crate) mod test_etcd {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use crate::config::EtcdSettings;

    struct Member {
        client_url: String,
        metrics_addr: String,
        child: Option<Child>,
    }

    /// One etcd member or a cluster of them.
    pub(crate) struct EtcdServer {
        dir: PathBuf,
        tls: bool,
        members: Vec<Member>,
    }

    /// A loopback port nothing listens on (bound once, then released).
    pub(crate) fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    impl EtcdServer {
        /// A single member.
        pub(crate) fn start() -> EtcdServer {
            EtcdServer::start_with(1, false)
        }

        /// A cluster of `size` members, all healthy when this returns.
        pub(crate) fn start_cluster(size: usize) -> EtcdServer {
            EtcdServer::start_with(size, false)
        }

        /// A single member serving clients over TLS and requiring client certificates; see
        /// [`EtcdServer::settings`] for the files.
        pub(crate) fn start_tls() -> EtcdServer {
            EtcdServer::start_with(1, true)
        }

        fn start_with(size: usize, tls: bool) -> EtcdServer {
            let mut last_error = String::new();
            // A port picked as free can be taken by someone else before etcd binds it.
            for _ in 0..3 {
                match EtcdServer::try_start(size, tls) {
                    Ok(server) => return server,
                    Err(err) => last_error = err,
                }
            }
            panic!("etcd did not start: {last_error}");
        }

        fn try_start(size: usize, tls: bool) -> Result<EtcdServer, String> {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let dir = std::env::temp_dir().join(format!(
                "calico-test-etcd-{}-{}-{nanos}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let mut server = EtcdServer {
                dir: dir.clone(),
                tls,
                members: Vec::new(),
            };
            if tls {
                make_certificates(&dir);
            }
            // Hold every listener until all ports are picked so none is picked twice.
            let listeners: Vec<TcpListener> = (0..3 * size)
                .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
                .collect();
            let ports: Vec<u16> = listeners
                .iter()
                .map(|l| l.local_addr().unwrap().port())
                .collect();
            drop(listeners);
            let peer_url = |i: usize| format!("http://127.0.0.1:{}", ports[3 * i + 1]);
            let cluster: Vec<String> = (0..size).map(|i| format!("m{i}={}", peer_url(i))).collect();
            let scheme = if tls { "https" } else { "http" };
            for i in 0..size {
                let client_url = format!("{scheme}://127.0.0.1:{}", ports[3 * i]);
                // /health is served on the plain metrics URL, also when clients use TLS.
                let metrics_addr = format!("127.0.0.1:{}", ports[3 * i + 2]);
                let log = std::fs::File::create(dir.join(format!("m{i}.log"))).unwrap();
                let mut command = Command::new("/usr/bin/etcd");
                command
                    .args(["--name", &format!("m{i}")])
                    .arg("--data-dir")
                    .arg(dir.join(format!("m{i}")))
                    .args([
                        "--listen-client-urls",
                        &client_url,
                        "--advertise-client-urls",
                        &client_url,
                    ])
                    .args([
                        "--listen-peer-urls",
                        &peer_url(i),
                        "--initial-advertise-peer-urls",
                        &peer_url(i),
                    ])
                    .args(["--listen-metrics-urls", &format!("http://{metrics_addr}")])
                    .args(["--initial-cluster", &cluster.join(",")])
                    .args([
                        "--initial-cluster-state",
                        "new",
                        "--initial-cluster-token",
                        "calico-test",
                    ])
                    .args(["--heartbeat-interval=10", "--election-timeout=100"])
                    .args(["--logger=zap", "--log-level=error"]);
                if tls {
                    command
                        .arg("--cert-file")
                        .arg(dir.join("etcd.pem"))
                        .arg("--key-file")
                        .arg(dir.join("etcd.key"))
                        .arg("--trusted-ca-file")
                        .arg(dir.join("ca.pem"))
                        .arg("--client-cert-auth");
                }
                let child = command
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .unwrap();
                server.members.push(Member {
                    client_url,
                    metrics_addr,
                    child: Some(child),
                });
            }
            server.wait_healthy()?;
            Ok(server)
        }

        fn wait_healthy(&mut self) -> Result<(), String> {
            let deadline = Instant::now() + Duration::from_secs(20);
            for i in 0..self.members.len() {
                loop {
                    if health(&self.members[i].metrics_addr) {
                        break;
                    }
                    let exited = self.members[i].child.as_mut().unwrap().try_wait().unwrap();
                    if exited.is_some() || Instant::now() > deadline {
                        let log = std::fs::read_to_string(self.dir.join(format!("m{i}.log")))
                            .unwrap_or_default();
                        return Err(format!("member m{i} not healthy ({exited:?}): {log}"));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Ok(())
        }

        /// Client URLs, in member order.
        pub(crate) fn endpoints(&self) -> Vec<String> {
            self.members.iter().map(|m| m.client_url.clone()).collect()
        }

        /// Settings for these endpoints with a request timeout of 5 s, and for a TLS server the
        /// CA, client certificate and key.
        pub(crate) fn settings(&self) -> EtcdSettings {
            let mut settings = settings_for(self.endpoints());
            if self.tls {
                settings.ca_cert_file = Some(self.dir.join("ca.pem"));
                settings.cert_file = Some(self.dir.join("etcd.pem"));
                settings.key_file = Some(self.dir.join("etcd.key"));
            }
            settings
        }

        /// Creates user `root` with `password` and turns authentication on (plain servers).
        pub(crate) fn enable_auth(&self, password: &str) {
            let endpoint = &self.members[0].client_url;
            for args in [
                vec!["user", "add", &format!("root:{password}")],
                vec!["user", "grant-role", "root", "root"],
                vec!["auth", "enable"],
            ] {
                let out = Command::new("/usr/bin/etcdctl")
                    .args(["--endpoints", endpoint])
                    .args(&args)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "etcdctl {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }

        /// Kills one member hard.
        pub(crate) fn kill(&mut self, member: usize) {
            if let Some(mut child) = self.members[member].child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    impl Drop for EtcdServer {
        fn drop(&mut self) {
            for i in 0..self.members.len() {
                self.kill(i);
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Settings for the given endpoints, no TLS or credentials, 5 s request timeout.
    pub(crate) fn settings_for(endpoints: Vec<String>) -> EtcdSettings {
        EtcdSettings {
            endpoints,
            key_file: None,
            cert_file: None,
            ca_cert_file: None,
            credentials: None,
            request_timeout: Duration::from_secs(5),
        }
    }

    /// A CA (`ca.pem`) and one certificate for 127.0.0.1 (`etcd.pem`, `etcd.key`) usable by
    /// both the server and the client.
    fn make_certificates(dir: &Path) {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        let steps: [Vec<&str>; 3] = [
            [
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "1"],
            ]
            .concat()
            .into_iter()
            .chain(["-subj", "/CN=calico-test-ca"])
            .collect(),
            [
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "etcd.key",
                    "-out",
                    "etcd.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
            vec![
                "x509",
                "-req",
                "-in",
                "etcd.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "etcd.pem",
                "-days",
                "1",
                "-extfile",
                "ext.cnf",
            ],
        ];
        for args in steps {
            let out = Command::new("openssl")
                .current_dir(dir)
                .args(&args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// True when the member answers `/health` with `"health":"true"` (it has a leader).
    fn health(addr: &str) -> bool {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let ok = response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200");
        ok && response.contains("\"health\":\"true\"")
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    use super::test_etcd::{EtcdServer, free_port, settings_for};
    use super::*;

    fn dead_endpoint() -> String {
        format!("http://127.0.0.1:{}", free_port())
    }

    #[test]
    fn conflicting_keys_are_the_ones_changed_since_read() {
        let entry = |key: &str, mod_revision| Entry {
            key: key.to_string(),
            value: Vec::new(),
            mod_revision,
            create_revision: 1,
        };
        let txn = Txn {
            conditions: vec![
                Condition::Revision("/same".into(), 5),
                Condition::Revision("/changed".into(), 5),
                Condition::Revision("/deleted".into(), 5),
                Condition::Absent("/created".into()),
                Condition::Absent("/still-absent".into()),
                Condition::Revision("/not-read".into(), 5),
            ],
            writes: Vec::new(),
            reads_on_failure: ["/same", "/changed", "/deleted", "/created", "/still-absent"]
                .map(String::from)
                .to_vec(),
        };
        let current = [
            entry("/same", 5),
            entry("/changed", 9),
            entry("/created", 9),
        ];
        assert_eq!(
            txn.conflicting_keys(&current),
            ["/changed", "/deleted", "/created"]
        );
    }

    #[test]
    #[ignore = "starts etcd"]
    fn get_put_list_delete_round_trip() {
        let etcd = EtcdServer::start();
        let ds = Datastore::connect(&etcd.settings()).unwrap();
        assert_eq!(ds.get("/calico/v1/Ready").unwrap(), None);
        ds.put("/calico/v1/Ready", b"true").unwrap();
        ds.put("/calico/t/a/1", b"one").unwrap();
        ds.put("/calico/t/a/2", b"two").unwrap();
        ds.put("/calico/t/b", b"other").unwrap();

        let ready = ds.get("/calico/v1/Ready").unwrap().unwrap();
        assert_eq!(
            (ready.key.as_str(), ready.value.as_slice()),
            ("/calico/v1/Ready", &b"true"[..])
        );
        assert_eq!(ready.create_revision, ready.mod_revision);

        let listed = ds.list("/calico/t/a/").unwrap();
        let pairs: Vec<(&str, &[u8])> = listed
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_slice()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("/calico/t/a/1", &b"one"[..]),
                ("/calico/t/a/2", &b"two"[..])
            ]
        );
        assert_eq!(
            ds.list_keys("/calico/t/").unwrap(),
            ["/calico/t/a/1", "/calico/t/a/2", "/calico/t/b"]
        );

        ds.put("/calico/t/a/1", b"uno").unwrap();
        let updated = ds.get("/calico/t/a/1").unwrap().unwrap();
        assert!(updated.mod_revision > updated.create_revision);

        assert!(ds.delete("/calico/t/a/1").unwrap());
        assert!(!ds.delete("/calico/t/a/1").unwrap());
        assert_eq!(ds.get("/calico/t/a/1").unwrap(), None);
        assert_eq!(ds.list("/calico/none/").unwrap(), []);
        assert_eq!(ds.requests_made(), 14);
    }

    #[test]
    #[ignore = "starts etcd"]
    fn txn_commits_when_conditions_hold_and_returns_current_on_conflict() {
        let etcd = EtcdServer::start();
        let ds = Datastore::connect(&etcd.settings()).unwrap();
        let block = "/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26";
        let handle = "/calico/ipam/v2/handle/h1";

        // Create-if-absent of two keys at once.
        let create = Txn {
            conditions: vec![
                Condition::Absent(block.into()),
                Condition::Absent(handle.into()),
            ],
            writes: vec![
                Write::Put(block.into(), b"v1".to_vec()),
                Write::Put(handle.into(), b"h".to_vec()),
            ],
            reads_on_failure: vec![block.into(), handle.into()],
        };
        let outcome = ds.txn(&create).unwrap();
        assert_eq!(
            outcome,
            TxnOutcome {
                committed: true,
                current: vec![]
            }
        );

        // The same create again fails and returns both current values.
        let outcome = ds.txn(&create).unwrap();
        assert!(!outcome.committed);
        let values: Vec<(&str, &[u8])> = outcome
            .current
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_slice()))
            .collect();
        assert_eq!(values, [(block, &b"v1"[..]), (handle, &b"h"[..])]);
        let revision = outcome.current[0].mod_revision;

        // CAS on the revision read succeeds once; the stale one then conflicts.
        let cas = |value: &[u8]| Txn {
            conditions: vec![Condition::Revision(block.into(), revision)],
            writes: vec![
                Write::Put(block.into(), value.to_vec()),
                Write::Delete(handle.into()),
            ],
            reads_on_failure: vec![block.into()],
        };
        assert!(ds.txn(&cas(b"v2")).unwrap().committed);
        assert_eq!(ds.get(handle).unwrap(), None);
        let stale = ds.txn(&cas(b"v3")).unwrap();
        assert!(!stale.committed);
        assert_eq!(stale.current.len(), 1);
        assert_eq!(stale.current[0].value, b"v2");
        assert!(stale.current[0].mod_revision > revision);
        assert_eq!(ds.get(block).unwrap().unwrap().value, b"v2");

        // A missing key read on failure has no entry.
        let missing = Txn {
            conditions: vec![Condition::Revision("/calico/t/missing".into(), 1)],
            writes: vec![Write::Put("/calico/t/missing".into(), b"x".to_vec())],
            reads_on_failure: vec!["/calico/t/missing".into()],
        };
        assert_eq!(
            ds.txn(&missing).unwrap(),
            TxnOutcome {
                committed: false,
                current: vec![]
            }
        );
    }

    /// Keys and values of entries, for comparing answers.
    fn pairs(entries: &[Entry]) -> Vec<(&str, &[u8])> {
        entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_slice()))
            .collect()
    }

    #[test]
    #[ignore = "starts etcd"]
    fn read_answers_keys_and_prefixes_in_request_order_in_one_request() {
        let etcd = EtcdServer::start();
        let log = std::env::temp_dir().join(format!("calico-test-etcd-log-{}", free_port()));
        let _ = std::fs::remove_file(&log);
        let ds = Datastore::connect_with_request_log(&etcd.settings(), Some(log.clone())).unwrap();
        ds.put("/calico/t/a/1", b"one").unwrap();
        ds.put("/calico/t/a/2", b"two").unwrap();
        ds.put("/calico/t/b", b"other").unwrap();
        let before = ds.requests_made();

        let answers = ds
            .read(&[
                Read::Key("/calico/t/b".into()),
                Read::Prefix("/calico/t/a/".into()),
                Read::Key("/calico/t/missing".into()),
                Read::Prefix("/calico/t/none/".into()),
                Read::Key("/calico/t/a/1".into()),
            ])
            .unwrap();
        let answers: Vec<Vec<(&str, &[u8])>> = answers.iter().map(|a| pairs(a)).collect();
        assert_eq!(
            answers,
            [
                vec![("/calico/t/b", &b"other"[..])],
                vec![
                    ("/calico/t/a/1", &b"one"[..]),
                    ("/calico/t/a/2", &b"two"[..])
                ],
                vec![],
                vec![],
                vec![("/calico/t/a/1", &b"one"[..])],
            ]
        );
        assert_eq!(ds.requests_made() - before, 1);
        assert_eq!(ds.read(&[]).unwrap(), Vec::<Vec<Entry>>::new());
        assert_eq!(ds.requests_made() - before, 1, "no reads, no request");

        let text = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_file(&log);
        assert_eq!(text.lines().last(), Some("read /calico/t/b"));
    }

    #[test]
    fn read_of_more_than_the_transaction_limit_is_refused_naming_it() {
        let ds = Datastore::connect(&settings_for(vec![dead_endpoint()])).unwrap();
        let reads: Vec<Read> = (0..=MAX_TXN_OPS)
            .map(|i| Read::Key(format!("/calico/t/{i}")))
            .collect();
        let err = ds.read(&reads).unwrap_err();
        assert!(err.msg().contains("128"), "{err:?}");
        assert!(err.msg().contains("/calico/t/0"), "{err:?}");
        assert_eq!(ds.requests_made(), 0);
    }

    #[test]
    #[ignore = "starts etcd"]
    fn if_absent_group_is_applied_only_when_its_key_is_absent() {
        let etcd = EtcdServer::start();
        let ds = Datastore::connect(&etcd.settings()).unwrap();
        let endpoint = "/calico/v1/host/n/workload/k8s/p/endpoint/eth0";
        let profile = "/calico/v1/policy/profile/kns.default/rules";
        let with_profile = |endpoint_value: &[u8], profile_value: &[u8]| Txn {
            conditions: vec![],
            writes: vec![
                Write::Put(endpoint.into(), endpoint_value.to_vec()),
                Write::IfAbsent {
                    key: profile.into(),
                    writes: vec![Write::Put(profile.into(), profile_value.to_vec())],
                },
            ],
            reads_on_failure: vec![],
        };

        // Absent: the group is applied with the rest, in one request.
        assert!(ds.txn(&with_profile(b"ep1", b"rules1")).unwrap().committed);
        assert_eq!(ds.requests_made(), 1);
        let read = ds
            .read(&[Read::Key(endpoint.into()), Read::Key(profile.into())])
            .unwrap();
        assert_eq!(pairs(&read[0]), [(endpoint, &b"ep1"[..])]);
        assert_eq!(pairs(&read[1]), [(profile, &b"rules1"[..])]);

        // Present: the group is skipped, the rest still commits.
        let outcome = ds.txn(&with_profile(b"ep2", b"rules2")).unwrap();
        assert_eq!(
            outcome,
            TxnOutcome {
                committed: true,
                current: vec![]
            }
        );
        assert_eq!(ds.requests_made(), 3);
        assert_eq!(ds.get(endpoint).unwrap().unwrap().value, b"ep2");
        assert_eq!(ds.get(profile).unwrap().unwrap().value, b"rules1");
    }

    #[test]
    #[ignore = "starts etcd"]
    fn failed_outer_condition_writes_nothing_including_the_group() {
        let etcd = EtcdServer::start();
        let ds = Datastore::connect(&etcd.settings()).unwrap();
        let endpoint = "/calico/v1/host/n/workload/k8s/p/endpoint/eth0";
        let profile = "/calico/v1/policy/profile/kns.default/rules";
        ds.put(endpoint, b"existing").unwrap();
        let create = Txn {
            conditions: vec![Condition::Absent(endpoint.into())],
            writes: vec![
                Write::Put(endpoint.into(), b"new".to_vec()),
                Write::IfAbsent {
                    key: profile.into(),
                    writes: vec![
                        Write::Put(profile.into(), b"rules".to_vec()),
                        Write::Put("/calico/t/labels".into(), b"l".to_vec()),
                    ],
                },
            ],
            reads_on_failure: vec![endpoint.into()],
        };
        let outcome = ds.txn(&create).unwrap();
        assert!(!outcome.committed);
        assert_eq!(pairs(&outcome.current), [(endpoint, &b"existing"[..])]);
        let read = ds
            .read(&[
                Read::Key(endpoint.into()),
                Read::Key(profile.into()),
                Read::Key("/calico/t/labels".into()),
            ])
            .unwrap();
        assert_eq!(pairs(&read[0]), [(endpoint, &b"existing"[..])]);
        assert_eq!((read[1].len(), read[2].len()), (0, 0));
        assert_eq!(ds.requests_made(), 3);
    }

    #[test]
    fn nested_if_absent_groups_are_refused_before_sending() {
        let ds = Datastore::connect(&settings_for(vec![dead_endpoint()])).unwrap();
        let txn = Txn {
            conditions: vec![],
            writes: vec![Write::IfAbsent {
                key: "/calico/t/outer".into(),
                writes: vec![Write::IfAbsent {
                    key: "/calico/t/inner".into(),
                    writes: vec![Write::Put("/calico/t/x".into(), b"x".to_vec())],
                }],
            }],
            reads_on_failure: vec![],
        };
        let err = ds.txn(&txn).unwrap_err();
        assert!(err.msg().contains("/calico/t/inner"), "{err:?}");
        assert!(err.msg().contains("/calico/t/outer"), "{err:?}");
        assert_eq!(ds.requests_made(), 0);
    }

    #[test]
    #[ignore = "starts etcd"]
    fn dead_first_endpoint_fails_over_to_live_ones() {
        let etcd = EtcdServer::start();
        let endpoints = vec![
            dead_endpoint(),
            etcd.endpoints()[0].clone(),
            dead_endpoint(),
        ];
        let ds = Datastore::connect(&settings_for(endpoints)).unwrap();
        ds.put("/calico/t/k", b"v").unwrap();
        assert_eq!(ds.requests_made(), 2, "one refused attempt, one answered");
        // The live endpoint is remembered: later requests go straight to it.
        assert_eq!(ds.get("/calico/t/k").unwrap().unwrap().value, b"v");
        assert_eq!(ds.requests_made(), 3);
    }

    #[test]
    #[ignore = "starts etcd"]
    fn killed_cluster_member_is_skipped() {
        let mut etcd = EtcdServer::start_cluster(3);
        let ds = Datastore::connect(&etcd.settings()).unwrap();
        ds.put("/calico/t/k", b"before").unwrap();
        // The member in use dies: the next requests go to the others.
        etcd.kill(0);
        ds.put("/calico/t/k", b"after").unwrap();
        assert_eq!(ds.get("/calico/t/k").unwrap().unwrap().value, b"after");
        let current = ds.get("/calico/t/k").unwrap().unwrap();
        let cas = Txn {
            conditions: vec![Condition::Revision(
                "/calico/t/k".into(),
                current.mod_revision,
            )],
            writes: vec![Write::Put("/calico/t/k".into(), b"cas".to_vec())],
            reads_on_failure: vec![],
        };
        assert!(ds.txn(&cas).unwrap().committed);
        // A fresh client whose first endpoint is the dead member works too.
        let fresh = Datastore::connect(&etcd.settings()).unwrap();
        assert_eq!(fresh.get("/calico/t/k").unwrap().unwrap().value, b"cas");
    }

    #[test]
    #[ignore = "starts etcd"]
    fn all_endpoints_dead_is_try_again_later_naming_them() {
        let endpoints = vec![dead_endpoint(), dead_endpoint(), dead_endpoint()];
        let ds = Datastore::connect(&settings_for(endpoints.clone())).unwrap();
        let err = ds.get("/calico/v1/Ready").unwrap_err();
        assert_eq!(err.kind(), Kind::TryAgainLater);
        assert_eq!(err.code(), codes::DATASTORE);
        assert!(err.msg().contains("/calico/v1/Ready"), "{err:?}");
        for endpoint in &endpoints {
            assert!(
                err.msg().contains(endpoint.as_str()),
                "{err:?} should name {endpoint}"
            );
        }
        assert_eq!(ds.requests_made(), 3, "each endpoint tried once");
    }

    #[test]
    #[ignore = "starts etcd"]
    fn silent_endpoint_times_out_and_the_next_answers() {
        let etcd = EtcdServer::start();
        // Accepts TCP connections (kernel backlog) but never speaks HTTP/2.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_url = format!("http://{}", silent.local_addr().unwrap());
        let mut settings = settings_for(vec![silent_url.clone()]);
        settings.request_timeout = Duration::from_millis(300);

        let ds = Datastore::connect(&settings).unwrap();
        let started = Instant::now();
        let err = ds.get("/calico/t/k").unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(err.kind(), Kind::TryAgainLater);
        assert!(err.msg().contains(&silent_url), "{err:?}");
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
            "{elapsed:?}"
        );

        settings.endpoints.push(etcd.endpoints()[0].clone());
        let ds = Datastore::connect(&settings).unwrap();
        ds.put("/calico/t/k", b"v").unwrap();
        assert_eq!(ds.get("/calico/t/k").unwrap().unwrap().value, b"v");
    }

    #[test]
    #[ignore = "starts etcd"]
    fn request_log_gets_one_line_per_request() {
        let etcd = EtcdServer::start();
        let log = std::env::temp_dir().join(format!("calico-test-etcd-log-{}", free_port()));
        let _ = std::fs::remove_file(&log);
        let ds = Datastore::connect_with_request_log(&etcd.settings(), Some(log.clone())).unwrap();
        ds.get("/calico/v1/Ready").unwrap();
        ds.list("/calico/v1/host/n/workload/").unwrap();
        ds.txn(&Txn {
            conditions: vec![Condition::Absent("/calico/t/a".into())],
            writes: vec![Write::Put("/calico/t/a".into(), b"1".to_vec())],
            reads_on_failure: vec![],
        })
        .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_file(&log);
        assert_eq!(
            text,
            "get /calico/v1/Ready\nlist /calico/v1/host/n/workload/\ntxn /calico/t/a\n"
        );
        assert_eq!(ds.requests_made(), 3);
    }

    #[test]
    #[ignore = "starts etcd"]
    fn tls_endpoint_is_used_with_ca_and_client_certificate() {
        let etcd = EtcdServer::start_tls();
        let settings = etcd.settings();
        assert!(settings.endpoints[0].starts_with("https://"));
        let ds = Datastore::connect(&settings).unwrap();
        ds.put("/calico/t/tls", b"v").unwrap();
        assert_eq!(ds.get("/calico/t/tls").unwrap().unwrap().value, b"v");

        // Without a client certificate the server refuses the handshake.
        let without_identity = EtcdSettings {
            cert_file: None,
            key_file: None,
            request_timeout: Duration::from_secs(1),
            ..settings
        };
        let err = Datastore::connect(&without_identity)
            .unwrap()
            .get("/calico/t/tls")
            .unwrap_err();
        assert_eq!(err.code(), codes::DATASTORE, "{err:?}");
    }

    #[test]
    #[ignore = "starts etcd"]
    fn credentials_authenticate_and_missing_ones_are_refused() {
        let etcd = EtcdServer::start();
        etcd.enable_auth("s3cret");
        let mut settings = etcd.settings();
        settings.credentials = Some(("root".into(), "s3cret".into()));
        let ds = Datastore::connect(&settings).unwrap();
        ds.put("/calico/t/auth", b"v").unwrap();
        assert_eq!(ds.get("/calico/t/auth").unwrap().unwrap().value, b"v");
        assert_eq!(ds.requests_made(), 3, "authenticate, put, get");

        // Refusals are not transient: no failover, no try-again-later.
        settings.credentials = Some(("root".into(), "wrong".into()));
        let err = Datastore::connect(&settings)
            .unwrap()
            .get("/calico/t/auth")
            .unwrap_err();
        assert_eq!(
            (err.code(), err.kind()),
            (codes::DATASTORE, Kind::Other),
            "{err:?}"
        );
        settings.credentials = None;
        let err = Datastore::connect(&settings)
            .unwrap()
            .get("/calico/t/auth")
            .unwrap_err();
        assert_eq!(
            (err.code(), err.kind()),
            (codes::DATASTORE, Kind::Other),
            "{err:?}"
        );
        assert!(err.msg().contains("/calico/t/auth"), "{err:?}");
    }

    #[test]
    fn unreadable_tls_files_are_invalid_config() {
        let mut settings = settings_for(vec!["https://127.0.0.1:1".into()]);
        settings.ca_cert_file = Some("/nonexistent/calico-ca.pem".into());
        let err = Datastore::connect(&settings).err().unwrap();
        assert_eq!(err.code(), Code::InvalidConfig);
        assert!(err.msg().contains("/nonexistent/calico-ca.pem"), "{err:?}");
    }

    #[test]
    fn txn_is_logged_under_its_first_key() {
        let txn = Txn {
            conditions: vec![],
            writes: vec![Write::Delete("/b".into())],
            reads_on_failure: vec!["/c".into()],
        };
        assert_eq!(txn_log_key(&txn), "/b");
        let group = Txn {
            writes: vec![Write::IfAbsent {
                key: "/g".into(),
                writes: vec![Write::Put("/p".into(), vec![])],
            }],
            ..Txn::default()
        };
        assert_eq!(txn_log_key(&group), "/g");
        assert_eq!(txn_log_key(&Txn::default()), "");
    }
}
