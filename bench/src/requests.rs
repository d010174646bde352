//! etcd requests of A's ADD and DEL, from the request log the plugins append to when
//! `CALICO_ETCD_REQUEST_LOG` names a file: one `<verb> <key>` line per request sent (verbs
//! `get`, `list`, `list-keys`, `put`, `delete`, `txn`, `authenticate`). The log cannot say
//! whether a conditional write committed; the store's revision, which grows by one per write
//! that changed something, can.

use std::collections::BTreeMap;
use std::path::Path;

use crate::etcd::{Counters, Etcd};
use crate::exec::run;
use crate::netns::Netns;
use crate::setups::{Container, Setup, Verb, result_addresses, with_request_log};
use crate::workdir::WorkDir;

/// Requests counted by verb.
#[derive(Default, Clone)]
pub struct RequestLog {
    pub by_verb: BTreeMap<String, usize>,
}

impl RequestLog {
    /// Reads a request log; a missing file is an empty log (no request made).
    pub fn read(path: &Path) -> Result<RequestLog, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("cannot read request log {}: {e}", path.display())),
        };
        let mut log = RequestLog::default();
        for line in text.lines() {
            let verb = line.split_whitespace().next().unwrap_or_default();
            *log.by_verb.entry(verb.to_string()).or_default() += 1;
        }
        Ok(log)
    }

    pub fn merge(&mut self, other: &RequestLog) {
        for (verb, n) in &other.by_verb {
            *self.by_verb.entry(verb.clone()).or_default() += n;
        }
    }

    /// Every request.
    pub fn requests(&self) -> usize {
        self.by_verb.values().sum()
    }

    /// `verb count` pairs, e.g. `get 1, txn 2`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .by_verb
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        parts.join(", ")
    }
}

/// The etcd work of a series of runs of one verb.
#[derive(Default)]
pub struct EtcdLoad {
    pub runs: usize,
    pub log: RequestLog,
    /// Writes that changed something: the growth of the store's revision.
    pub committed: u64,
    /// Transactions with a write, through consensus whether their conditions held or not.
    pub proposed: u64,
}

impl EtcdLoad {
    /// Adds `runs` runs that logged to `log` between the counters `before` and `after`.
    pub fn record(
        &mut self,
        runs: usize,
        log: &Path,
        before: Counters,
        after: Counters,
    ) -> Result<(), String> {
        let (committed, proposed) = after.since(before);
        self.runs += runs;
        self.log.merge(&RequestLog::read(log)?);
        self.committed += committed;
        self.proposed += proposed;
        Ok(())
    }

    pub fn requests_per_run(&self) -> f64 {
        self.per_run(self.log.requests() as u64)
    }

    pub fn proposed_per_run(&self) -> f64 {
        self.per_run(self.proposed)
    }

    pub fn committed_per_run(&self) -> f64 {
        self.per_run(self.committed)
    }

    /// Write transactions that changed nothing: failed conditions (CAS conflicts), or deletes
    /// of keys already gone.
    pub fn failed_per_run(&self) -> f64 {
        self.per_run(self.proposed.saturating_sub(self.committed))
    }

    fn per_run(&self, total: u64) -> f64 {
        total as f64 / self.runs.max(1) as f64
    }
}

/// A's etcd work in single ADD/DEL cycles (the block already has room).
pub struct Requests {
    pub add: EtcdLoad,
    pub del: EtcdLoad,
}

/// Runs `cycles` logged ADD/DEL cycles of `setup`, one at a time.
pub fn count_requests(
    work: &WorkDir,
    setup: &Setup,
    etcd: &Etcd,
    cycles: usize,
) -> Result<Requests, String> {
    let netns = Netns::create("requests")?;
    let mut requests = Requests {
        add: EtcdLoad::default(),
        del: EtcdLoad::default(),
    };
    for cycle in 0..cycles {
        let mut container = Container {
            id: format!("{}r{cycle:05}p{}", setup.label, std::process::id()).to_lowercase(),
            netns: netns.path(),
            result: None,
        };
        for verb in [Verb::Add, Verb::Del] {
            let log = work.unique_file(&format!("requests-{}", verb.name()), "log");
            let before = etcd.counters()?;
            let inv = with_request_log(setup.invocation(verb, &container), &log);
            let done = run(
                work,
                &format!("logged {} of container {}", verb.name(), container.id),
                &inv,
            )?;
            let after = etcd.counters()?;
            if verb == Verb::Add {
                container.result = Some(result_addresses(&done.stdout)?.0);
                requests.add.record(1, &log, before, after)?;
            } else {
                requests.del.record(1, &log, before, after)?;
            }
        }
    }
    Ok(requests)
}
