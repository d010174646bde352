//! What local policy (`policy.type: local`) adds to A's ADD and DEL: cycles of A without it and
//! with it, alternating (and which goes first), each in a netns of its own. The enforced side
//! uses a table of the bench's own, which the run deletes at its end.

use crate::exec::{Invocation, run};
use crate::netns::Netns;
use crate::setups::{Container, Setup, Verb, result_addresses};
use crate::stats::Samples;
use crate::workdir::WorkDir;

/// The nftables table of the enforced side.
const TABLE: &str = "calico-bench";
/// Unrecorded cycles first: the table, chains and profile are made by the first ADD.
const WARMUP: usize = 3;

/// ADD and DEL latencies without local policy (index 0) and with it (index 1).
pub struct PolicyCost {
    pub add: [Samples; 2],
    pub del: [Samples; 2],
}

/// Runs `warm-up + cycles` cycles; `plain` is A as the other runs use it.
pub fn run_cycles(work: &WorkDir, plain: &Setup, cycles: usize) -> Result<PolicyCost, String> {
    let table = TableGuard;
    let mut enforced = plain.clone_named("bench-a-local");
    enforced.conf["policy"] = serde_json::json!({"type": "local"});
    let setups = [plain, &enforced];
    let netns = [Netns::create("policy-off")?, Netns::create("policy-on")?];
    let mut cost = PolicyCost {
        add: Default::default(),
        del: Default::default(),
    };
    for cycle in 0..WARMUP + cycles {
        let order = if cycle % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let mut container = Container {
                id: format!("p{i}c{cycle:05}p{}", std::process::id()),
                netns: netns[i].path(),
                result: None,
            };
            let what = |verb: Verb| format!("local policy {i} {} of {}", verb.name(), container.id);
            let add = run(
                work,
                &what(Verb::Add),
                &in_table(setups[i].invocation(Verb::Add, &container)),
            )?;
            container.result = Some(result_addresses(&add.stdout)?.0);
            let del = run(
                work,
                &what(Verb::Del),
                &in_table(setups[i].invocation(Verb::Del, &container)),
            )?;
            if cycle >= WARMUP {
                cost.add[i].push(add.wall);
                cost.del[i].push(del.wall);
            }
        }
    }
    drop(table);
    Ok(cost)
}

fn in_table(mut inv: Invocation) -> Invocation {
    inv.env.push(("CALICO_NFT_TABLE".into(), TABLE.into()));
    inv
}

/// Deletes the bench's table when the run ends, however it ends.
struct TableGuard;

impl Drop for TableGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", TABLE])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
