//! The synchronous etcd client of one plugin run: one endpoint at a time, failover between the
//! configured endpoints within one time budget, hedged reads.

use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions, KvClient, TlsOptions};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

use super::keys;
use super::tls::tls_options;
use super::txn::{
    Entry, Read, Txn, TxnOutcome, entry, etcd_reads, etcd_txn, read_answers, txn_keys, txn_log_key,
    txn_outcome,
};
use crate::config::EtcdSettings;
use crate::error::{Code, Context, Error, Kind, Result, codes};
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
pub const ROUNDS: u32 = 3;

/// The pause before the second round; the third waits twice as long.
const ROUND_PAUSE: Duration = Duration::from_millis(100);

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

    /// Like [`Datastore::connect`], with requests appended to `request_log` (if any) instead of
    /// the file [`REQUEST_LOG_ENV`] names.
    pub fn connect_with_request_log(
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
    ///
    /// [`MAX_TXN_OPS`]: super::MAX_TXN_OPS
    pub fn read(&self, reads: &[Read]) -> Result<Vec<Vec<Entry>>> {
        let Some(first) = reads.first() else {
            return Ok(Vec::new());
        };
        check_keys(reads.iter().map(Read::key))?;
        let request = etcd_reads(reads)?;
        let resp = self.request("read", first.key(), Mode::Hedged, |mut kv| {
            let request = request.clone();
            async move { kv.txn(request).await }
        })?;
        read_answers(resp, reads)
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
        Ok(txn_outcome(resp, sent.load(Ordering::Relaxed) > 1))
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
        // Like an unreachable Kubernetes API: runtimes that retry on "try again later" retry
        // both.
        Err(Error::new(
            Code::TryAgainLater,
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

/// Refuses, before anything is sent, a request naming a key whose segments would change its
/// level in the hierarchy ([`keys::key_problem`]).
fn check_keys<'k>(keys: impl IntoIterator<Item = &'k str>) -> Result<()> {
    match keys.into_iter().find_map(keys::key_problem) {
        Some(problem) => Err(Error::internal(problem)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::datastore::{MAX_TXN_OPS, Write};

    /// Settings for the given endpoints, no TLS or credentials, a 5 s time budget.
    fn settings_for(endpoints: Vec<String>) -> EtcdSettings {
        EtcdSettings::plain(endpoints, Duration::from_secs(5))
    }

    /// A loopback URL nothing listens on (its port bound once, then released).
    fn dead_endpoint() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
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
    fn all_endpoints_dead_is_try_again_later_naming_them() {
        let endpoints = vec![dead_endpoint(), dead_endpoint(), dead_endpoint()];
        let ds = Datastore::connect(&settings_for(endpoints.clone())).unwrap();
        let err = ds.get("/calico/v1/Ready").unwrap_err();
        assert_eq!(err.kind(), Kind::TryAgainLater);
        assert_eq!(err.code(), Code::TryAgainLater);
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
        assert_eq!(err.code(), Code::TryAgainLater);
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
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
