//! The etcd (v3 API) datastore: a small synchronous client with compare-and-swap transactions
//! and failover between the configured endpoints, plus Calico's key formats ([`keys`]) and
//! values ([`model`]).
//!
//! The async etcd client and its tokio runtime stay inside this module. A plugin run makes only a
//! handful of requests, so the client talks to one endpoint at a time and connects lazily; a
//! member that accepts connections but never answers (stopped, partitioned) costs a read
//! [`HEDGE_DELAY`], not a timeout (see [`Datastore`]).

pub mod endpoint;
pub mod keys;
pub mod model;
pub mod records;
pub mod undo;

use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KvClient,
    TlsOptions, TxnOp, TxnOpResponse,
};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::EtcdSettings;
use crate::error::{Code, Context, Error, Kind, Result, codes};
use crate::file::{MAX_PEM_FILE_LEN, read_config_file};
use crate::log;

/// Environment variable naming a file to which every etcd request appends `<verb> <key>`:
/// `txn` for a transaction that writes (committed or not), `read` for reads (a transaction
/// without writes included), `get`, `list`, `put`, `delete` for the single-key calls.
///
/// The plugins run as separate processes; tests and benchmarks count the lines.
pub const REQUEST_LOG_ENV: &str = "CALICO_ETCD_REQUEST_LOG";

/// Upper bound for establishing a TCP connection to one endpoint, so that a member whose host is
/// gone (no answer to SYN) is skipped without waiting for the kernel's retries.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a read waits for the endpoint in use before it sends the same read to every other
/// endpoint and takes the first answer. A healthy member answers a read in a few milliseconds,
/// even under load well within this; a stopped or partitioned one never does.
pub const HEDGE_DELAY: Duration = Duration::from_millis(200);

/// How often a request goes through all endpoints when each failed: a second and third round
/// ride out a leader election ("no leader", "leader changed") without failing the plugin run.
const ROUNDS: u32 = 3;

/// The pause before the second round; the third waits twice as long.
const ROUND_PAUSE: Duration = Duration::from_millis(100);

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
    /// True when the transaction was sent more than once (after a timeout or a broken
    /// connection), so an earlier attempt may have been applied and its answer lost: only then
    /// may a failed outcome whose keys already hold what was written count as this run's own.
    pub resent: bool,
    /// The store's revision after the transaction: when it committed writes, the
    /// `mod_revision` they now carry (what a later compare-and-swap on them compares); 0 when
    /// unknown.
    pub revision: i64,
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
    crate::log::info(&format!(
        "compare-and-swap conflict, {which} {}",
        keys.join(", ")
    ));
}

/// What the requests of one run share: a client per endpoint once built, the endpoint that
/// answered last, and how much of the time budget is spent.
struct State {
    clients: Vec<Option<Client>>,
    preferred: usize,
    spent: Duration,
}

/// How a request may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A read: after [`HEDGE_DELAY`] without an answer it goes to every endpoint at once.
    Hedged,
    /// A write: to one endpoint at a time, so that at most one copy is in flight.
    Serial,
}

/// Why one attempt against one endpoint failed.
enum Failure {
    /// The endpoint is unusable right now; the next one may answer.
    Transient(String),
    /// The request itself failed; another endpoint would answer the same.
    Fatal(Error),
}

/// How one pass over the endpoints ended.
enum RoundEnd<T> {
    Answered(T),
    Fatal(Error),
    /// Every endpoint failed: another round may find the cluster recovered.
    AllFailed,
    /// The time budget is used up.
    OutOfTime,
}

/// The end of one attempt: the endpoint, its client when one was built, and the outcome.
type Attempt<T> = (usize, Option<Client>, std::result::Result<T, Failure>);

/// A synchronous etcd client for one plugin run.
///
/// Requests go to the endpoint that answered last (at first the first one). When it cannot be
/// reached or reports itself unavailable, the request goes to the next endpoint; endpoints that
/// already have a connection come first. A read that gets no answer within [`HEDGE_DELAY`] is
/// sent to all other endpoints too, and the first answer wins, so a member that accepts
/// connections but never answers costs a read 200 ms. A write is never in flight twice: one that
/// gets no answer is abandoned after its share of the remaining time and then sent elsewhere.
/// When every endpoint failed, up to [`ROUNDS`] passes are made (a leader election ends in
/// well under a second). All requests of one run share one time budget, `etcd_timeout`.
/// (etcd-client's own balancing keeps sending requests to dead members, so each client is given
/// a single endpoint.) Every failover is logged at info.
pub struct Datastore {
    // Declared before the runtime so that clients are dropped while the runtime still exists.
    state: Mutex<State>,
    runtime: tokio::runtime::Runtime,
    endpoints: Vec<String>,
    credentials: Option<(String, String)>,
    tls: Option<TlsOptions>,
    timeout: Duration,
    requests: AtomicU64,
    request_log: Option<PathBuf>,
}

impl Datastore {
    /// Prepares a client for the given settings. Reads and checks the TLS files (an unreadable
    /// or unusable one is an invalid config) but does not contact etcd: the first request
    /// connects. Honours [`REQUEST_LOG_ENV`].
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
            state: Mutex::new(State {
                clients: vec![None; settings.endpoints.len()],
                preferred: 0,
                spent: Duration::ZERO,
            }),
            runtime,
            endpoints: settings.endpoints.clone(),
            credentials: settings.credentials.clone(),
            tls,
            timeout: settings.timeout,
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
        check_keys([key])?;
        let mut resp = self.request("get", key, Mode::Hedged, |mut kv| {
            let key = key.to_owned();
            async move { kv.get(key, None).await }
        })?;
        Ok(resp.take_kvs().into_iter().next().map(entry))
    }

    /// Reads every key under a prefix, sorted by key.
    pub fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        check_keys([prefix])?;
        let mut resp = self.request("list", prefix, Mode::Hedged, |mut kv| {
            let prefix = prefix.to_owned();
            async move { kv.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })?;
        Ok(resp.take_kvs().into_iter().map(entry).collect())
    }

    /// Reads every key under a prefix, sorted by key, `page` entries per request, all at the
    /// revision of the first page: a listing too large for one answer (gRPC refuses messages
    /// over 4 MiB) still reads as one consistent snapshot.
    pub fn list_paged(&self, prefix: &str, page: i64) -> Result<Vec<Entry>> {
        check_keys([prefix])?;
        let end = prefix_end(prefix.as_bytes());
        let mut found: Vec<Entry> = Vec::new();
        let mut revision = 0;
        loop {
            // After the last key read: the smallest key greater than it.
            let start = match found.last() {
                Some(last) => format!("{}\0", last.key),
                None => prefix.to_owned(),
            };
            let mut resp = self.request("list", prefix, Mode::Hedged, |mut kv| {
                let options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(page)
                    .with_revision(revision);
                let start = start.clone();
                async move { kv.get(start, Some(options)).await }
            })?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            let more = resp.more();
            let before = found.len();
            found.extend(resp.take_kvs().into_iter().map(entry));
            if !more || found.len() == before {
                return Ok(found);
            }
        }
    }

    /// Lists the keys under a prefix without their values, sorted.
    pub fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        check_keys([prefix])?;
        let mut resp = self.request("list-keys", prefix, Mode::Hedged, |mut kv| {
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
        check_keys(reads.iter().map(Read::key))?;
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
        let resp = self.request("read", first.key(), Mode::Hedged, |mut kv| {
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
        check_keys([key])?;
        self.request("put", key, Mode::Serial, |mut kv| {
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
        check_keys([key])?;
        let resp = self.request("delete", key, Mode::Serial, |mut kv| {
            let key = key.to_owned();
            async move { kv.delete(key, None).await }
        })?;
        Ok(resp.deleted() > 0)
    }

    /// Runs a transaction in one round trip. A [`Write::IfAbsent`] group inside another one is
    /// refused before anything is sent.
    pub fn txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        check_keys(txn_keys(txn))?;
        let log_key = txn_log_key(txn);
        let request = etcd_txn(txn)?;
        let sent = AtomicU64::new(0);
        // A transaction without writes only reads (see `ipam::store::read_many`): the request
        // log says so, so that counting "txn" lines counts write transactions.
        let verb = if txn.writes.is_empty() { "read" } else { "txn" };
        let resp = self.request(verb, log_key, Mode::Serial, |mut kv| {
            sent.fetch_add(1, Ordering::Relaxed);
            let request = request.clone();
            async move { kv.txn(request).await }
        })?;
        let committed = resp.succeeded();
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut current = Vec::new();
        if !committed {
            for op in resp.op_responses() {
                if let TxnOpResponse::Get(mut get) = op {
                    current.extend(get.take_kvs().into_iter().map(entry));
                }
            }
        }
        Ok(TxnOutcome {
            committed,
            current,
            resent: sent.load(Ordering::Relaxed) > 1,
            revision,
        })
    }

    /// Sends one request, failing over to other endpoints on transient failures, within what is
    /// left of the time budget.
    ///
    /// Retrying after a timeout or a broken connection can repeat a request that etcd did
    /// apply, and a read may be answered by several endpoints. That is safe only because reads
    /// change nothing, and every write the plugins make is either conditional (a transaction
    /// whose conditions no longer hold the second time, so the retry reports "not committed" and
    /// the caller re-reads) or idempotent (putting the same value, deleting a key). A write is
    /// never sent to a second endpoint while the first may still answer.
    fn request<T, F, Fut>(&self, verb: &str, key: &str, mode: Mode, call: F) -> Result<T>
    where
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let started = Instant::now();
        let deadline = started + self.timeout.saturating_sub(state.spent);
        let mut failures = Vec::new();
        let outcome = self.runtime.block_on(async {
            for round in 0..ROUNDS {
                if round > 0 {
                    let pause = ROUND_PAUSE * round;
                    if Instant::now() + pause >= deadline {
                        return RoundEnd::OutOfTime;
                    }
                    tokio::time::sleep(pause).await;
                }
                let end = self
                    .round(&mut state, verb, key, mode, &call, deadline, &mut failures)
                    .await;
                if !matches!(end, RoundEnd::AllFailed) {
                    return end;
                }
            }
            RoundEnd::AllFailed
        });
        state.spent += started.elapsed();
        let why = match outcome {
            RoundEnd::Answered(value) => return Ok(value),
            RoundEnd::Fatal(err) => return Err(err),
            RoundEnd::AllFailed => "no endpoint answered".to_owned(),
            RoundEnd::OutOfTime => format!(
                "no endpoint answered within etcd_timeout ({:?} for all etcd requests of this \
                 run)",
                self.timeout
            ),
        };
        // Later rounds mostly repeat the first one's reasons: each distinct one is named once.
        let mut distinct: Vec<&String> = Vec::new();
        for failure in &failures {
            if !distinct.contains(&failure) {
                distinct.push(failure);
            }
        }
        let tried = if distinct.is_empty() {
            "no time left to try an endpoint".to_owned()
        } else {
            distinct
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        };
        Err(Error::new(
            codes::DATASTORE,
            format!("etcd {verb} {key}: {why} ({tried})"),
        )
        .with_kind(Kind::TryAgainLater))
    }

    /// One pass over the endpoints: the preferred one first, then those with a connection,
    /// then the rest. Failures are appended to `failures` as `<endpoint>: <reason>`.
    #[allow(clippy::too_many_arguments)]
    async fn round<T, F, Fut>(
        &self,
        state: &mut State,
        verb: &str,
        key: &str,
        mode: Mode,
        call: &F,
        deadline: Instant,
        failures: &mut Vec<String>,
    ) -> RoundEnd<T>
    where
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let count = self.endpoints.len();
        let mut order: Vec<usize> = (0..count).map(|i| (state.preferred + i) % count).collect();
        order[1..].sort_by_key(|&index| state.clients[index].is_none());
        let mut pending = FuturesUnordered::new();
        let mut in_flight: Vec<usize> = Vec::new();
        // When each attempt started, by endpoint.
        let mut started = vec![Instant::now(); count];
        let mut launched = 0;
        let probe = |mut kv: KvClient| {
            let options = GetOptions::new()
                .with_keys_only()
                .with_limit(1)
                .with_serializable();
            let key = key.to_owned();
            async move { kv.get(key, Some(options)).await.map(|_| ()) }
        };
        // Serial only: reads that find out whether the endpoint holding the write is alive.
        let mut probes = FuturesUnordered::new();
        let mut probe_at: Option<Instant>;
        // Starts the next endpoint's attempt and says when to stop waiting for it: serial, when
        // it is given up (its share of the time left); hedged, when the others are asked too.
        macro_rules! launch {
            () => {{
                let index = order[launched];
                launched += 1;
                in_flight.push(index);
                started[index] = Instant::now();
                let cached = state.clients[index].clone();
                pending.push(self.attempt(index, cached, verb, key, call));
                let now = Instant::now();
                probes.clear();
                probe_at = (mode == Mode::Serial && launched < count).then(|| now + HEDGE_DELAY);
                match mode {
                    Mode::Serial => {
                        let left = deadline.saturating_duration_since(now);
                        Some(now + left / (count - launched + 1) as u32)
                    }
                    Mode::Hedged if launched < count => Some(now + HEDGE_DELAY),
                    Mode::Hedged => None,
                }
            }};
        }
        let mut give_up_at: Option<Instant> = launch!();
        loop {
            let timer = [give_up_at, probe_at]
                .into_iter()
                .flatten()
                .fold(deadline, Instant::min);
            tokio::select! {
                Some((index, client, result)) = pending.next() => {
                    in_flight.retain(|&i| i != index);
                    match result {
                        Ok(value) => {
                            state.clients[index] = client;
                            state.preferred = index;
                            return RoundEnd::Answered(value);
                        }
                        Err(Failure::Fatal(err)) => return RoundEnd::Fatal(err),
                        Err(Failure::Transient(reason)) => {
                            state.clients[index] = None;
                            self.note_failover(index, &reason, verb, key, failures);
                            if launched < count {
                                give_up_at = launch!();
                            } else if in_flight
                                .iter()
                                .all(|&i| started[i].elapsed() >= HEDGE_DELAY)
                            {
                                // Only silent endpoints are left (a stopped leader, say): the
                                // next round asks again once the cluster had time to recover,
                                // starting elsewhere.
                                for silent in in_flight.drain(..) {
                                    state.clients[silent] = None;
                                    if state.preferred == silent {
                                        state.preferred = (silent + 1) % count;
                                    }
                                    let reason = format!("no answer within {HEDGE_DELAY:?}");
                                    self.note_failover(silent, &reason, verb, key, failures);
                                }
                                return RoundEnd::AllFailed;
                            }
                        }
                    }
                }
                Some((index, client, Ok(()))) = probes.next() => {
                    let (index, client): (usize, Option<Client>) = (index, client);
                    if state.clients[index].is_none() {
                        state.clients[index] = client;
                    }
                    if in_flight.contains(&index) {
                        // Alive, only slow: the write stays where it is.
                        probes.clear();
                    } else {
                        // Another endpoint answers while the write's one answers nothing:
                        // the write moves there.
                        pending.clear();
                        for silent in in_flight.drain(..) {
                            state.clients[silent] = None;
                            let reason = format!(
                                "no answer within {HEDGE_DELAY:?}, not even to a read, while {} \
                                 answers",
                                self.endpoints[index]
                            );
                            self.note_failover(silent, &reason, verb, key, failures);
                        }
                        if let Some(position) = order[launched..].iter().position(|&i| i == index) {
                            order.swap(launched, launched + position);
                            give_up_at = launch!();
                        } else if launched < count {
                            give_up_at = launch!();
                        } else {
                            return RoundEnd::AllFailed;
                        }
                    }
                }
                _ = tokio::time::sleep_until(timer.into()) => {
                    let now = Instant::now();
                    if now >= deadline {
                        for &index in &in_flight {
                            let reason = "no answer before the time budget ran out";
                            self.note_failover(index, reason, verb, key, failures);
                        }
                        return RoundEnd::OutOfTime;
                    }
                    if probe_at.is_some_and(|at| at <= now) {
                        // A write is never sent twice at once; instead every endpoint it may
                        // still go to, and its own, is asked a cheap read.
                        probe_at = None;
                        for &index in in_flight.iter().chain(&order[launched..]) {
                            let cached = state.clients[index].clone();
                            probes.push(self.attempt(index, cached, "probe", key, &probe));
                        }
                        continue;
                    }
                    match mode {
                        Mode::Serial => {
                            // Abandon the silent attempt (dropping it closes nothing else) and
                            // forget its connection, which may be stuck.
                            pending.clear();
                            for index in in_flight.drain(..) {
                                state.clients[index] = None;
                                let reason = "no answer in time";
                                self.note_failover(index, reason, verb, key, failures);
                            }
                            if launched < count {
                                give_up_at = launch!();
                            } else {
                                return RoundEnd::AllFailed;
                            }
                        }
                        Mode::Hedged => {
                            for &index in &in_flight {
                                log::info(&format!(
                                    "etcd endpoint {} has not answered {verb} {key} within {:?}; \
                                     asking the other endpoints too",
                                    self.endpoints[index], HEDGE_DELAY
                                ));
                            }
                            while launched < count {
                                launch!();
                            }
                            give_up_at = None;
                        }
                    }
                }
            }
        }
    }

    /// Logs that `index` failed a request and the next endpoint gets it, and keeps the reason
    /// as `<endpoint>: <reason>` in `failures` for the error should every endpoint fail.
    fn note_failover(
        &self,
        index: usize,
        reason: &str,
        verb: &str,
        key: &str,
        failures: &mut Vec<String>,
    ) {
        let endpoint = &self.endpoints[index];
        log::info(&format!(
            "etcd endpoint {endpoint} failed {verb} {key}: {reason}; failing over"
        ));
        failures.push(format!("{endpoint}: {reason}"));
    }

    /// One attempt of a request against the endpoint at `index`, building its client first
    /// unless `cached` is given.
    async fn attempt<T, F, Fut>(
        &self,
        index: usize,
        cached: Option<Client>,
        verb: &str,
        key: &str,
        call: &F,
    ) -> Attempt<T>
    where
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let client = match cached {
            Some(client) => client,
            None => match self.connect_endpoint(index).await {
                Ok(client) => client,
                Err(failure) => return (index, None, Err(failure)),
            },
        };
        self.record_request(verb, key);
        let result = call(client.kv_client()).await.map_err(|err| {
            classify(err, || {
                format!("etcd {verb} {key} on {}", self.endpoints[index])
            })
        });
        (index, Some(client), result)
    }

    /// Builds a client for one endpoint. Without credentials this sends nothing; with them it
    /// authenticates, which is one request.
    async fn connect_endpoint(&self, index: usize) -> std::result::Result<Client, Failure> {
        let endpoint = &self.endpoints[index];
        // require_leader: a member cut off from the leader refuses at once ("no leader")
        // instead of holding the request, so the next endpoint gets it.
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT.min(self.timeout))
            .with_require_leader(true);
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
        Client::connect([endpoint.as_str()], Some(options))
            .await
            .map_err(|err| classify(err, || format!("connect to etcd endpoint {endpoint}")))
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

/// The end of the key range of `prefix` as etcd defines it: the prefix with its last byte below
/// 0xff incremented (and what follows dropped); `\0` (every key) when there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            if let Some(byte) = end.last_mut() {
                *byte += 1;
            }
            return end;
        }
        end.pop();
    }
    vec![0]
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
    txn_keys(txn).next().unwrap_or("")
}

/// Every key a transaction names: conditions, writes (with those of groups), reads.
fn txn_keys(txn: &Txn) -> impl Iterator<Item = &str> {
    let condition_keys = txn.conditions.iter().map(|c| match c {
        Condition::Absent(key) | Condition::Revision(key, _) => key.as_str(),
    });
    condition_keys
        .chain(txn.writes.iter().flat_map(write_keys))
        .chain(txn.reads_on_failure.iter().map(String::as_str))
}

fn write_keys(write: &Write) -> Vec<&str> {
    match write {
        Write::Put(key, _) | Write::Delete(key) => vec![key.as_str()],
        Write::IfAbsent { key, writes } => std::iter::once(key.as_str())
            .chain(writes.iter().flat_map(write_keys))
            .collect(),
    }
}

/// Refuses, before anything is sent, a request naming a key whose segments would change its
/// level in the hierarchy ([`keys::key_problem`]).
fn check_keys<'k>(keys: impl IntoIterator<Item = &'k str>) -> Result<()> {
    match keys.into_iter().find_map(keys::key_problem) {
        Some(problem) => Err(Error::internal(problem)),
        None => Ok(()),
    }
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

/// TLS options for `https` endpoints from the configured CA, certificate and key files, each
/// read once and checked before any connection is made.
fn tls_options(settings: &EtcdSettings) -> Result<TlsOptions> {
    let mut tls = TlsOptions::new();
    let ca = match &settings.ca_cert_file {
        Some(path) => Some((
            path.as_path(),
            read_config_file(path, CA_KEY, MAX_PEM_FILE_LEN)?,
        )),
        None => None,
    };
    let identity = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => Some((
            (
                cert.as_path(),
                read_config_file(cert, CERT_KEY, MAX_PEM_FILE_LEN)?,
            ),
            (
                key.as_path(),
                read_config_file(key, KEY_KEY, MAX_PEM_FILE_LEN)?,
            ),
        )),
        (None, None) => None,
        (Some(cert), None) => {
            return Err(Error::new(
                Code::InvalidConfig,
                format!("{CERT_KEY} {} given without {KEY_KEY}", cert.display()),
            ));
        }
        (None, Some(key)) => {
            return Err(Error::new(
                Code::InvalidConfig,
                format!("{KEY_KEY} {} given without {CERT_KEY}", key.display()),
            ));
        }
    };
    check_tls_files(ca.as_ref(), identity.as_ref())?;
    if let Some((_, pem)) = ca {
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    if let Some(((_, cert), (_, key))) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Ok(tls)
}

const CA_KEY: &str = "etcd_ca_cert_file";
const CERT_KEY: &str = "etcd_cert_file";
const KEY_KEY: &str = "etcd_key_file";

/// A file's path and contents.
type PemFile<'a> = (&'a Path, Vec<u8>);

/// Checks what the TLS handshake would otherwise find out late and cryptically: the CA file
/// holds at least one CA certificate, the certificate file at least one certificate, the key
/// file a private key, and the key belongs to the certificate (rustls compares the public keys
/// when the client identity is set up). Each failure is an invalid config naming the file.
fn check_tls_files(ca: Option<&PemFile>, identity: Option<&(PemFile, PemFile)>) -> Result<()> {
    let invalid = |key: &str, path: &Path, what: String| {
        Error::new(
            Code::InvalidConfig,
            format!("{key} {}: {what}", path.display()),
        )
    };
    let mut roots = rustls::RootCertStore::empty();
    if let Some((path, pem)) = ca {
        for cert in certificates(CA_KEY, path, pem)? {
            roots.add(cert).map_err(|err| {
                invalid(CA_KEY, path, format!("not a usable CA certificate: {err}"))
            })?;
        }
    }
    let Some(((cert_path, cert_pem), (key_path, key_pem))) = identity else {
        return Ok(());
    };
    let chain = certificates(CERT_KEY, cert_path, cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| {
        invalid(
            KEY_KEY,
            key_path,
            format!("no PEM private key in it ({err})"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| Error::internal(format!("set up TLS: {err}")))?
        .with_root_certificates(roots);
    match builder.with_client_auth_cert(chain, key) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(invalid(
                KEY_KEY,
                key_path,
                format!(
                    "the key does not belong to the certificate in {CERT_KEY} {}",
                    cert_path.display()
                ),
            ))
        }
        Err(rustls::Error::InvalidCertificate(err)) => Err(invalid(
            CERT_KEY,
            cert_path,
            format!("not a usable certificate: {err}"),
        )),
        Err(err) => Err(Error::new(
            Code::InvalidConfig,
            format!(
                "{CERT_KEY} {} with {KEY_KEY} {}: unusable as a TLS client identity: {err}",
                cert_path.display(),
                key_path.display()
            ),
        )),
    }
}

/// The PEM certificates in a file; none, or PEM that does not decode, is an error.
fn certificates(key: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|err| {
            Error::new(
                Code::InvalidConfig,
                format!("{key} {}: PEM that does not decode: {err}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(Error::new(
            Code::InvalidConfig,
            format!(
                "{key} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                path.display()
            ),
        ));
    }
    Ok(certs)
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

        /// Settings for these endpoints with a time budget of 5 s, and for a TLS server the
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

        /// Stops one member with SIGSTOP: its sockets stay open and the kernel still accepts
        /// connections, but nothing is answered until [`EtcdServer::resume`].
        pub(crate) fn pause(&self, member: usize) {
            self.signal(member, nix::sys::signal::Signal::SIGSTOP);
        }

        /// Lets a paused member run again.
        pub(crate) fn resume(&self, member: usize) {
            self.signal(member, nix::sys::signal::Signal::SIGCONT);
        }

        fn signal(&self, member: usize, signal: nix::sys::signal::Signal) {
            if let Some(child) = &self.members[member].child {
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                nix::sys::signal::kill(pid, signal).unwrap();
            }
        }

        /// Kills one member hard.
        pub(crate) fn kill(&mut self, member: usize) {
            self.resume(member);
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

    /// Settings for the given endpoints, no TLS or credentials, a 5 s time budget.
    pub(crate) fn settings_for(endpoints: Vec<String>) -> EtcdSettings {
        EtcdSettings {
            endpoints,
            key_file: None,
            cert_file: None,
            ca_cert_file: None,
            credentials: None,
            timeout: Duration::from_secs(5),
        }
    }

    /// A CA (`ca.pem`) and one certificate for 127.0.0.1 (`etcd.pem`, `etcd.key`) usable by
    /// both the server and the client.
    pub(crate) fn make_certificates(dir: &Path) {
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
    fn keys_that_change_level_are_refused_before_anything_is_sent() {
        let ds = Datastore::connect(&settings_for(vec![dead_endpoint()])).unwrap();
        let bad = "/calico/v1/policy/profile/../rules";
        let group = Write::IfAbsent {
            key: "/calico/v1/policy/profile/p/tags".to_string(),
            writes: vec![Write::Put(bad.to_string(), b"{}".to_vec())],
        };
        let failures = [
            ds.put(bad, b"{}").unwrap_err(),
            ds.get(bad).unwrap_err(),
            ds.list("/calico/v1/host/./").unwrap_err(),
            ds.delete("/calico/ipam/v2/handle//x").unwrap_err(),
            ds.read(&[Read::Key("/ok".into()), Read::Prefix(bad.into())])
                .unwrap_err(),
            ds.txn(&Txn {
                writes: vec![group],
                ..Txn::default()
            })
            .unwrap_err(),
        ];
        for err in failures {
            assert!(err.msg().contains("etcd key"), "{err:?}");
        }
        assert_eq!(ds.requests_made(), 0);
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
    fn paged_listing_reads_every_key_once_at_the_first_page_revision() {
        let etcd = EtcdServer::start();
        let ds = Datastore::connect(&etcd.settings()).unwrap();
        for i in 0..7 {
            ds.put(&format!("/calico/t/p/{i}"), b"v").unwrap();
        }
        ds.put("/calico/t/p0", b"outside").unwrap();
        ds.put("/calico/t/q", b"outside").unwrap();
        let before = ds.requests_made();
        let keys: Vec<String> = ds
            .list_paged("/calico/t/p/", 3)
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        let want: Vec<String> = (0..7).map(|i| format!("/calico/t/p/{i}")).collect();
        assert_eq!(keys, want);
        assert_eq!(ds.requests_made() - before, 3);
        assert_eq!(ds.list_paged("/calico/none/", 3).unwrap(), []);
    }

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
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
        assert!(outcome.committed && outcome.current.is_empty() && !outcome.resent);
        assert!(outcome.revision > 0, "the commit's revision is known");

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
        let outcome = ds.txn(&missing).unwrap();
        assert!(!outcome.committed && outcome.current.is_empty() && !outcome.resent);
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
        assert!(outcome.committed && outcome.current.is_empty() && !outcome.resent);
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
        assert_eq!(
            ds.requests_made(),
            3 * u64::from(ROUNDS),
            "each endpoint tried once per round"
        );
    }

    #[test]
    #[ignore = "starts etcd"]
    fn silent_endpoint_alone_fails_within_the_budget_naming_it() {
        // Accepts TCP connections (kernel backlog) but never speaks HTTP/2.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_url = format!("http://{}", silent.local_addr().unwrap());
        let mut settings = settings_for(vec![silent_url.clone()]);
        settings.timeout = Duration::from_millis(300);

        let ds = Datastore::connect(&settings).unwrap();
        let started = Instant::now();
        let err = ds.get("/calico/t/k").unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(err.kind(), Kind::TryAgainLater);
        assert_eq!(err.code(), codes::DATASTORE);
        assert!(err.msg().contains(&silent_url), "{err:?}");
        assert!(err.msg().contains("etcd_timeout"), "{err:?}");
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
            "{elapsed:?}"
        );
        // The budget is spent: the next request gives up at once.
        let started = Instant::now();
        let err = ds.put("/calico/t/k", b"v").unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(100), "{err:?}");
        assert!(err.msg().contains("etcd_timeout"), "{err:?}");
    }

    #[test]
    #[ignore = "starts etcd"]
    fn stopped_first_member_costs_a_read_the_hedge_delay_and_later_requests_nothing() {
        let etcd = EtcdServer::start_cluster(3);
        Datastore::connect(&etcd.settings())
            .unwrap()
            .put("/calico/t/k", b"v")
            .unwrap();
        etcd.pause(0);
        let ds = Datastore::connect(&etcd.settings()).unwrap();
        let started = Instant::now();
        assert_eq!(ds.get("/calico/t/k").unwrap().unwrap().value, b"v");
        let first = started.elapsed();
        // When the stopped member was the leader, an election comes on top.
        assert!(
            first >= HEDGE_DELAY && first < Duration::from_secs(2),
            "{first:?}"
        );
        // The member that answered is used from now on, for reads and writes.
        let started = Instant::now();
        ds.put("/calico/t/k", b"w").unwrap();
        assert_eq!(ds.get("/calico/t/k").unwrap().unwrap().value, b"w");
        assert!(started.elapsed() < HEDGE_DELAY, "{:?}", started.elapsed());
        etcd.resume(0);
    }

    #[test]
    #[ignore = "starts etcd"]
    fn two_stopped_members_cost_one_hedge_delay() {
        // Two stopped members of one cluster would take its quorum, so each stands alone.
        let stopped = [EtcdServer::start(), EtcdServer::start()];
        let live = EtcdServer::start();
        Datastore::connect(&live.settings())
            .unwrap()
            .put("/calico/t/k", b"live")
            .unwrap();
        let mut endpoints: Vec<String> = stopped.iter().map(|s| s.endpoints()[0].clone()).collect();
        endpoints.push(live.endpoints()[0].clone());
        stopped.iter().for_each(|s| s.pause(0));
        let ds = Datastore::connect(&settings_for(endpoints)).unwrap();
        let started = Instant::now();
        assert_eq!(ds.get("/calico/t/k").unwrap().unwrap().value, b"live");
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
        stopped.iter().for_each(|s| s.resume(0));
    }

    #[test]
    #[ignore = "starts etcd"]
    fn write_to_a_member_stopped_mid_run_fails_over_and_applies_once() {
        let etcd = EtcdServer::start_cluster(3);
        let mut settings = etcd.settings();
        settings.timeout = Duration::from_secs(3);
        let ds = Datastore::connect(&settings).unwrap();
        let create = Txn {
            conditions: vec![Condition::Absent("/calico/t/once".into())],
            writes: vec![Write::Put("/calico/t/once".into(), b"1".to_vec())],
            reads_on_failure: vec!["/calico/t/once".into()],
        };
        ds.get("/calico/t/warm-up").unwrap();
        // The member in use stops: the write waits its share of the budget (a third), then
        // goes to a member that answers.
        etcd.pause(0);
        let started = Instant::now();
        let outcome = ds.txn(&create).unwrap();
        let elapsed = started.elapsed();
        assert!(outcome.committed);
        assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
        etcd.resume(0);
        // The stopped member never got the write applied twice: a second create conflicts.
        let fresh = Datastore::connect(&etcd.settings()).unwrap();
        let again = fresh.txn(&create).unwrap();
        assert!(!again.committed);
        assert_eq!(pairs(&again.current), [("/calico/t/once", &b"1"[..])]);
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
            timeout: Duration::from_secs(1),
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
    fn broken_tls_files_are_invalid_config_naming_key_and_file() {
        let dir = std::env::temp_dir().join(format!("calico-test-tls-files-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        super::test_etcd::make_certificates(&dir);
        let out = std::process::Command::new("openssl")
            .current_dir(&dir)
            .args(["genpkey", "-algorithm", "EC", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-out", "other.key"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).unwrap();
            dir.join(name)
        };
        let garbage = write("garbage.pem", "not PEM at all\n");
        let bad_der = write(
            "bad-der.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let unterminated = write("unterminated.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
        let (ca, cert, key) = (
            dir.join("ca.pem"),
            dir.join("etcd.pem"),
            dir.join("etcd.key"),
        );
        let other_key = dir.join("other.key");
        let zero = std::path::PathBuf::from("/dev/zero");
        type Files<'a> = [&'a std::path::Path; 3];
        // (CA, certificate, key), the key named, the file named, what is wrong
        let cases: [(Files, &str, &std::path::Path, &str); 9] = [
            (
                [&garbage, &cert, &key],
                "etcd_ca_cert_file",
                &garbage,
                "no PEM certificate",
            ),
            (
                [&key, &cert, &key],
                "etcd_ca_cert_file",
                &key,
                "no PEM certificate",
            ),
            (
                [&bad_der, &cert, &key],
                "etcd_ca_cert_file",
                &bad_der,
                "not a usable CA",
            ),
            (
                [&unterminated, &cert, &key],
                "etcd_ca_cert_file",
                &unterminated,
                "decode",
            ),
            (
                [&zero, &cert, &key],
                "etcd_ca_cert_file",
                &zero,
                "character device",
            ),
            (
                [&ca, &key, &key],
                "etcd_cert_file",
                &key,
                "no PEM certificate",
            ),
            (
                [&ca, &bad_der, &key],
                "etcd_cert_file",
                &bad_der,
                "not a usable certificate",
            ),
            (
                [&ca, &cert, &cert],
                "etcd_key_file",
                &cert,
                "no PEM private key",
            ),
            (
                [&ca, &cert, &other_key],
                "etcd_key_file",
                &other_key,
                "does not belong",
            ),
        ];
        for ([ca, cert, key], config_key, file, why) in cases {
            let mut settings = settings_for(vec!["https://127.0.0.1:1".into()]);
            settings.ca_cert_file = Some(ca.to_path_buf());
            settings.cert_file = Some(cert.to_path_buf());
            settings.key_file = Some(key.to_path_buf());
            let started = Instant::now();
            let err = Datastore::connect(&settings).err().unwrap();
            assert!(started.elapsed() < Duration::from_secs(1), "{err:?}");
            assert_eq!(err.code(), Code::InvalidConfig, "{err:?}");
            let msg = err.msg();
            assert!(msg.contains(config_key), "{msg} should name {config_key}");
            assert!(
                msg.contains(&file.display().to_string()),
                "{msg} should name {file:?}"
            );
            assert!(msg.contains(why), "{msg} should say {why}");
        }
        // The files that belong together pass.
        let mut settings = settings_for(vec!["https://127.0.0.1:1".into()]);
        settings.ca_cert_file = Some(ca);
        settings.cert_file = Some(cert);
        settings.key_file = Some(key);
        assert!(Datastore::connect(&settings).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
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
