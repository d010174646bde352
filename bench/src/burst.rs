//! Bursts: P containers ADDed all at once (one process each, released together), then all
//! DELed at once; A and B alternating round by round. Every ADD of a round must get its own
//! addresses. For A, the etcd requests of the round are logged and etcd's counters read before
//! and after, which gives the failed conditional writes (CAS conflicts).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::cpu::{self, CpuUse};
use crate::etcd::Etcd;
use crate::exec::{Run, run};
use crate::netns::Netns;
use crate::requests::EtcdLoad;
use crate::setups::{Container, Setup, Verb, result_addresses, with_request_log};
use crate::stats::Samples;
use crate::workdir::WorkDir;

/// One setup's bursts.
#[derive(Default)]
pub struct SetupBursts {
    /// Each process of every round, fork to reap.
    pub add: Samples,
    pub del: Samples,
    /// Each round, release of the first to reap of the last.
    pub add_wall: Samples,
    pub del_wall: Samples,
    /// The plugins' and etcd's CPU, all rounds.
    pub add_cpu: CpuUse,
    pub del_cpu: CpuUse,
}

/// What the bursts measured.
pub struct Bursts {
    pub size: usize,
    pub rounds: usize,
    /// A, then B.
    pub setups: [SetupBursts; 2],
    /// A's etcd work, all rounds together.
    pub add_etcd: EtcdLoad,
    pub del_etcd: EtcdLoad,
}

/// Runs `rounds` rounds of `size` containers for each setup.
pub fn run_bursts(
    work: &WorkDir,
    setups: [&Setup; 2],
    etcd: &Etcd,
    size: usize,
    rounds: usize,
) -> Result<Bursts, String> {
    let netns = (0..size)
        .map(|i| Netns::create(&format!("burst-{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut bursts = Bursts {
        size,
        rounds,
        setups: Default::default(),
        add_etcd: EtcdLoad::default(),
        del_etcd: EtcdLoad::default(),
    };
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let setup = setups[i];
            let logs = (i == 0).then(|| {
                (
                    work.unique_file("burst-add", "log"),
                    work.unique_file("burst-del", "log"),
                )
            });
            let mut containers: Vec<Container> = netns
                .iter()
                .enumerate()
                .map(|(k, ns)| Container {
                    id: format!("{}b{round:02}{k:03}p{}", setup.label, std::process::id())
                        .to_lowercase(),
                    netns: ns.path(),
                    result: None,
                })
                .collect();

            let before = etcd.counters()?;
            let cpu_before = (cpu::reaped_children(), etcd.cpu()?);
            let (adds, wall) = all_at_once(
                work,
                setup,
                Verb::Add,
                &containers,
                logs.as_ref().map(|l| l.0.as_path()),
            )?;
            if let Some((add_log, _)) = &logs {
                bursts
                    .add_etcd
                    .record(size, add_log, before, etcd.counters()?)?;
            }
            record_distinct_addresses(setup, &mut containers, &adds)?;
            let stats = &mut bursts.setups[i];
            add_cpu_since(&mut stats.add_cpu, cpu_before, etcd, adds.len())?;
            adds.iter().for_each(|r| stats.add.push(r.wall));
            stats.add_wall.push(wall);

            let before = etcd.counters()?;
            let cpu_before = (cpu::reaped_children(), etcd.cpu()?);
            let (dels, wall) = all_at_once(
                work,
                setup,
                Verb::Del,
                &containers,
                logs.as_ref().map(|l| l.1.as_path()),
            )?;
            if let Some((_, del_log)) = &logs {
                bursts
                    .del_etcd
                    .record(size, del_log, before, etcd.counters()?)?;
            }
            let stats = &mut bursts.setups[i];
            add_cpu_since(&mut stats.del_cpu, cpu_before, etcd, dels.len())?;
            dels.iter().for_each(|r| stats.del.push(r.wall));
            stats.del_wall.push(wall);
        }
    }
    Ok(bursts)
}

/// Adds the plugins' and etcd's CPU since `before` (as [`cpu::reaped_children`] and
/// [`Etcd::cpu`] gave it) to `total`, with the `runs` of that stretch.
fn add_cpu_since(
    total: &mut CpuUse,
    before: (Duration, Duration),
    etcd: &Etcd,
    runs: usize,
) -> Result<(), String> {
    total.plugins += cpu::reaped_children().saturating_sub(before.0);
    total.etcd += etcd.cpu()?.saturating_sub(before.1);
    total.runs += runs;
    Ok(())
}

/// Runs `verb` for every container, one thread each, all released by one barrier: the runs
/// and the time from the release to the last reap.
fn all_at_once(
    work: &WorkDir,
    setup: &Setup,
    verb: Verb,
    containers: &[Container],
    log: Option<&Path>,
) -> Result<(Vec<Run>, Duration), String> {
    let barrier = Barrier::new(containers.len() + 1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = containers
            .iter()
            .map(|c| {
                let mut inv = setup.invocation(verb, c);
                if let Some(log) = log {
                    inv = with_request_log(inv, log);
                }
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let what = format!(
                        "{} burst {} of container {}",
                        setup.label,
                        verb.name(),
                        c.id
                    );
                    run(work, &what, &inv)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut runs = Vec::new();
        let mut failures = Vec::new();
        for worker in workers {
            match worker.join() {
                Ok(Ok(run)) => runs.push(run),
                Ok(Err(e)) => failures.push(e),
                Err(_) => failures.push("a burst thread panicked".to_string()),
            }
        }
        let wall = start.elapsed();
        if failures.is_empty() {
            Ok((runs, wall))
        } else {
            Err(format!(
                "{} of the burst failed; first: {}",
                failures.len(),
                failures[0]
            ))
        }
    })
}

/// Keeps each ADD's result for the DEL, failing when two containers got the same address.
fn record_distinct_addresses(
    setup: &Setup,
    containers: &mut [Container],
    adds: &[Run],
) -> Result<(), String> {
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for (container, add) in containers.iter_mut().zip(adds) {
        let (result, addresses) = result_addresses(&add.stdout)?;
        for address in addresses {
            if let Some(other) = owners.insert(address.clone(), container.id.clone()) {
                return Err(format!(
                    "{} burst: address {address} given to both container {other} and container {}",
                    setup.label, container.id
                ));
            }
        }
        container.result = Some(result);
    }
    Ok(())
}
