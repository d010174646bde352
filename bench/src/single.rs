//! Single ADD / CHECK / DEL, one container at a time, A and B alternating cycle by cycle (and
//! which of them goes first), so both see the same machine load. Each cycle also deletes a
//! bare veth pair, the kernel's own share of a DEL: made at the cycle's start, so that it has
//! lived about as long as a container's pair at its DEL (the kernel deletes a pair made a
//! moment before 4-6 ms faster, which no DEL sees). Each setup keeps one container netns for
//! all its cycles: after a DEL it holds only `lo` again, as a fresh one would, and no netns
//! teardown of an earlier cycle runs in the kernel's background during a timed run.

use crate::exec::{Run, run};
use crate::kernel::{BareVeth, Rtnl};
use crate::netns::Netns;
use crate::setups::{Container, Setup, Verb, result_addresses};
use crate::stats::Samples;
use crate::workdir::WorkDir;

/// Unrecorded cycles first: page cache, etcd's first writes, A's block claim.
const WARMUP: usize = 5;

/// Latencies of one setup, one series per verb.
#[derive(Default)]
pub struct VerbSamples {
    pub add: Samples,
    pub check: Samples,
    pub del: Samples,
}

impl VerbSamples {
    fn series(&mut self, verb: Verb) -> &mut Samples {
        match verb {
            Verb::Add => &mut self.add,
            Verb::Check => &mut self.check,
            Verb::Del => &mut self.del,
        }
    }
}

/// The verbs of a cycle, in order.
const VERBS: [Verb; 3] = [Verb::Add, Verb::Check, Verb::Del];

/// What the single-container cycles measured.
pub struct Single {
    pub cycles: usize,
    /// Indexed like the setups: A, then B.
    pub latency: [VerbSamples; 2],
    /// Per cycle, A's time over B's for each verb.
    pub ratio: VerbSamples,
    /// CPU (user + system, children included) of each ADD, in ms.
    pub add_cpu: [Samples; 2],
    /// The largest `ru_maxrss` of any ADD: the plugin and the children it waited for.
    pub add_max_rss_kib: [u64; 2],
    /// The driver's RTM_DELLINK of a bare veth pair.
    pub bare_delete: Samples,
}

/// Runs `warm-up + cycles` cycles.
pub fn run_cycles(work: &WorkDir, setups: [&Setup; 2], cycles: usize) -> Result<Single, String> {
    let netns = [Netns::create("single-a")?, Netns::create("single-b")?];
    let bare_netns = Netns::create("bare")?;
    let mut rtnl = Rtnl::open()?;
    let mut single = Single {
        cycles,
        latency: Default::default(),
        ratio: Default::default(),
        add_cpu: Default::default(),
        add_max_rss_kib: [0; 2],
        bare_delete: Samples::default(),
    };
    for cycle in 0..WARMUP + cycles {
        let record = cycle >= WARMUP;
        let order = if cycle % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut runs: [Vec<Run>; 2] = Default::default();
        let bare = BareVeth::create(
            &format!("cbv{}", std::process::id()),
            &bare_netns,
            "10.33.0.2",
        )?;
        for i in order {
            let id =
                format!("{}s{cycle:05}p{}", setups[i].label, std::process::id()).to_lowercase();
            runs[i] = one_container(work, setups[i], &id, &netns[i])?;
        }
        let bare = bare.delete(&mut rtnl)?;
        if !record {
            continue;
        }
        single.bare_delete.push(bare);
        for (i, runs) in runs.iter().enumerate() {
            for (verb, run) in VERBS.into_iter().zip(runs) {
                single.latency[i].series(verb).push(run.wall);
            }
            single.add_cpu[i].push(runs[0].cpu);
            single.add_max_rss_kib[i] = single.add_max_rss_kib[i].max(runs[0].max_rss_kib);
        }
        for (k, verb) in VERBS.into_iter().enumerate() {
            let ratio = runs[0][k].wall.as_secs_f64() / runs[1][k].wall.as_secs_f64();
            single.ratio.series(verb).push_value(ratio);
        }
    }
    Ok(single)
}

/// ADD, CHECK and DEL of one container in `netns`: the three runs.
fn one_container(
    work: &WorkDir,
    setup: &Setup,
    id: &str,
    netns: &Netns,
) -> Result<Vec<Run>, String> {
    let mut container = Container {
        id: id.to_string(),
        netns: netns.path(),
        result: None,
    };
    let what = |verb: Verb| format!("{} {} of container {id}", setup.label, verb.name());
    let add = run(
        work,
        &what(Verb::Add),
        &setup.invocation(Verb::Add, &container),
    )?;
    container.result = Some(result_addresses(&add.stdout)?.0);
    let check = run(
        work,
        &what(Verb::Check),
        &setup.invocation(Verb::Check, &container),
    )?;
    let del = run(
        work,
        &what(Verb::Del),
        &setup.invocation(Verb::Del, &container),
    )?;
    Ok(vec![add, check, del])
}
