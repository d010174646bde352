//! Peak RSS of each IPAM plugin alone. `ru_maxrss` of a plugin run covers the children it
//! waited for, so the main plugins' own figure comes from their ADDs (the single cycles) and
//! the IPAM plugins', run here directly with the same config, shows which process set it.

use crate::exec::run;
use crate::setups::{Container, NO_NETNS, Setup, Verb, result_addresses};
use crate::workdir::WorkDir;

const RUNS: usize = 5;

/// The largest `ru_maxrss` of `RUNS` direct ADDs of `setup`'s IPAM plugin (each released
/// again with a DEL).
pub fn ipam_max_rss_kib(work: &WorkDir, setup: &Setup) -> Result<u64, String> {
    let mut max = 0;
    for n in 0..RUNS {
        let mut container = Container {
            id: format!("{}i{n:05}p{}", setup.label, std::process::id()).to_lowercase(),
            netns: NO_NETNS.into(),
            result: None,
        };
        let what = format!("{} IPAM ADD of container {}", setup.label, container.id);
        let add = run(work, &what, &setup.ipam_invocation(Verb::Add, &container))?;
        max = max.max(add.max_rss_kib);
        container.result = Some(result_addresses(&add.stdout)?.0);
        let what = format!("{} IPAM DEL of container {}", setup.label, container.id);
        run(work, &what, &setup.ipam_invocation(Verb::Del, &container))?;
    }
    Ok(max)
}
