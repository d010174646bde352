//! `results.md`: every figure of the run in tables, with the machine it ran on.

use std::fmt::Write as _;

use crate::burst::Bursts;
use crate::policy_cost::PolicyCost;
use crate::requests::Requests;
use crate::scale::{NODES, Scale};
use crate::single::Single;
use crate::stats::Samples;

/// Where and how the run was made.
pub struct Machine {
    pub date: String,
    pub kernel: String,
    pub nproc: usize,
    pub load: String,
}

/// Everything one run measured.
pub struct Results {
    pub machine: Machine,
    pub single: Single,
    pub bursts: Bursts,
    pub requests: Requests,
    /// Peak RSS of the IPAM plugins run alone: calico-ipam, host-local.
    pub ipam_max_rss_kib: [u64; 2],
    pub scale: Scale,
    /// A's ADD and DEL without and with `policy.type: local`.
    pub policy: PolicyCost,
}

impl Results {
    /// The line `make bench` prints last: A's p50 over B's.
    pub fn ratio_line(&self) -> String {
        format!(
            "ratio add_p50={:.2} del_p50={:.2} burst_add_p50={:.2}",
            ratio(&self.single.latency[0].add, &self.single.latency[1].add),
            ratio(&self.single.latency[0].del, &self.single.latency[1].del),
            ratio(&self.bursts.setups[0].add, &self.bursts.setups[1].add),
        )
    }

    /// The whole report in Markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        self.write_header(&mut md);
        self.write_summary(&mut md);
        self.write_single(&mut md);
        self.write_burst(&mut md);
        self.write_kernel(&mut md);
        self.write_requests(&mut md);
        self.write_footprint(&mut md);
        self.write_scale(&mut md);
        self.write_policy(&mut md);
        md.push_str("\n![ADD, CHECK, DEL and burst latency distributions, A vs B](latency.png)\n");
        md
    }

    fn write_header(&self, md: &mut String) {
        let m = &self.machine;
        let _ = writeln!(md, "# `make bench` results\n");
        let _ = writeln!(
            md,
            "Run {} on Linux {}, {} cores (load average at start: {}). A = `calico` + \
             `calico-ipam`, release build, on a local etcd with default durability; B = \
             `/usr/lib/cni/ptp` + `host-local`. A and B alternate cycle by cycle. Times are wall \
             time from fork to reap of the plugin the runtime starts, in ms.\n",
            m.date, m.kernel, m.nproc, m.load
        );
    }

    /// The headline figures, the table the README shows.
    fn write_summary(&self, md: &mut String) {
        let (s, b, r) = (&self.single, &self.bursts, &self.requests);
        let [sa, sb] = &s.latency;
        let [ba, bb] = &b.setups;
        let bare = s.bare_delete.p50();
        let mib = |kib: u64| kib as f64 / 1024.0;
        let _ = writeln!(md, "## Summary\n");
        let _ = writeln!(
            md,
            "| figure | A: calico + calico-ipam | B: ptp + host-local | A/B |"
        );
        let _ = writeln!(md, "|---|---|---|---|");
        for (what, a, b) in [
            ("single ADD, p50 ms", &sa.add, &sb.add),
            ("single CHECK, p50 ms", &sa.check, &sb.check),
            ("single DEL, p50 ms", &sa.del, &sb.del),
            ("burst ADD, per process, p50 ms", &ba.add, &bb.add),
            ("burst ADD, whole burst, p50 ms", &ba.add_wall, &bb.add_wall),
            ("burst DEL, per process, p50 ms", &ba.del, &bb.del),
        ] {
            let _ = writeln!(
                md,
                "| {what} | {:.2} | {:.2} | {:.2} |",
                a.p50(),
                b.p50(),
                ratio(a, b)
            );
        }
        let _ = writeln!(
            md,
            "| single ADD with local policy, p50 ms (added to ADD) | {:.2} ({:+.2}) | | |",
            self.policy.add[1].p50(),
            self.policy.add[1].p50() - self.policy.add[0].p50()
        );
        let _ = writeln!(
            md,
            "| DEL p50 above a bare veth delete ({bare:.2} ms), ms | {:.2} | {:.2} | |",
            sa.del.p50() - bare,
            sb.del.p50() - bare
        );
        let _ = writeln!(
            md,
            "| peak RSS of an ADD (plugin and any IPAM child), MiB | {:.1} | {:.1} | |",
            mib(s.add_max_rss_kib[0]),
            mib(s.add_max_rss_kib[1])
        );
        let _ = writeln!(
            md,
            "| etcd requests / write transactions per single ADD | {:.2} / {:.2} | no etcd | |",
            r.add.requests_per_run(),
            r.add.proposed_per_run()
        );
        let _ = writeln!(
            md,
            "| etcd requests / write transactions per single DEL | {:.2} / {:.2} | no etcd | |",
            r.del.requests_per_run(),
            r.del.proposed_per_run()
        );
        let _ = writeln!(
            md,
            "| failed conditional writes (CAS conflicts) per burst ADD | {:.2} | no etcd | |",
            b.add_etcd.failed_per_run()
        );
        let _ = writeln!(
            md,
            "| IPAM scale: allocations/s, 3-member etcd, {NODES} nodes ({} duplicates) | {:.0} | | |\n",
            self.scale.duplicates,
            self.scale.per_second()
        );
    }

    /// What enforcing local policy adds to A's ADD and DEL.
    fn write_policy(&self, md: &mut String) {
        let p = &self.policy;
        let _ = writeln!(md, "\n## Local policy (`policy.type: local`)\n");
        let _ = writeln!(
            md,
            "A without and with local policy, {} cycles each, alternating, each side in its own \
             netns.\n",
            p.add[0].len()
        );
        let _ = writeln!(
            md,
            "| verb | without: p50 / p90 / p99 | with: p50 / p90 / p99 | p50 added |"
        );
        let _ = writeln!(md, "|---|---|---|---|");
        for (verb, [off, on]) in [("ADD", &p.add), ("DEL", &p.del)] {
            let _ = writeln!(
                md,
                "| {verb} | {} | {} | {:+.2} ms |",
                triple(off),
                triple(on),
                on.p50() - off.p50()
            );
        }
    }

    fn write_single(&self, md: &mut String) {
        let s = &self.single;
        let _ = writeln!(
            md,
            "## One container at a time (N = {} cycles after warm-up)\n",
            s.cycles
        );
        let _ = writeln!(
            md,
            "| verb | A p50 | A p90 | A p99 | B p50 | B p90 | B p99 | A/B of p50 | A/B per cycle, p50 |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
        let [a, b] = &s.latency;
        for (verb, a, b, r) in [
            ("ADD", &a.add, &b.add, &s.ratio.add),
            ("CHECK", &a.check, &b.check, &s.ratio.check),
            ("DEL", &a.del, &b.del, &s.ratio.del),
        ] {
            let _ = writeln!(
                md,
                "| {verb} | {} | {:.2} | {:.2} |",
                percentiles(a, b),
                ratio(a, b),
                r.p50()
            );
        }
    }

    fn write_burst(&self, md: &mut String) {
        let b = &self.bursts;
        let _ = writeln!(
            md,
            "\n## Burst: {} containers ADDed at once, then DELed at once ({} rounds each)\n",
            b.size, b.rounds
        );
        let _ = writeln!(
            md,
            "| | A p50 | A p90 | A p99 | B p50 | B p90 | B p99 | A/B of p50 |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
        let [a, bb] = &b.setups;
        for (what, a, bb) in [
            ("ADD, per process", &a.add, &bb.add),
            ("ADD, whole burst", &a.add_wall, &bb.add_wall),
            ("DEL, per process", &a.del, &bb.del),
            ("DEL, whole burst", &a.del_wall, &bb.del_wall),
        ] {
            let _ = writeln!(
                md,
                "| {what} | {} | {:.2} |",
                percentiles(a, bb),
                ratio(a, bb)
            );
        }
        let _ = writeln!(
            md,
            "\nEvery ADD of every round got addresses no other container of the round had \
             (checked; the run fails otherwise). A's ADDs take turns through the node's ADD \
             slots (twice the cores run at once; the README's `calico` section)."
        );
        let _ = writeln!(
            md,
            "\nCPU per process of the bursts, ms ({} cores: 30 processes at once are bound by \
             CPU, so these sums set how long a whole burst takes; how soon each process is done \
             depends on how they share the CPU, and A's ADDs take turns):\n",
            self.machine.nproc
        );
        let _ = writeln!(
            md,
            "| | A plugins | A etcd | A together | B plugins | B etcd (idle) | A together / B plugins |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for (what, a, bb) in [
            ("burst ADD", a.add_cpu, bb.add_cpu),
            ("burst DEL", a.del_cpu, bb.del_cpu),
        ] {
            let ((ap, ae), (bp, be)) = (a.per_run_ms(), bb.per_run_ms());
            let _ = writeln!(
                md,
                "| {what} | {ap:.2} | {ae:.2} | {:.2} | {bp:.2} | {be:.2} | {:.2} |",
                ap + ae,
                (ap + ae) / bp
            );
        }
        let _ = writeln!(
            md,
            "\nPlugins: user + system time of the reaped plugin processes and what they ran \
             (getrusage of the driver's children). etcd: its members' user + system time over \
             the same rounds, in clock ticks of 10 ms (what it spends during B's rounds is its \
             idle cost). The kernel's work outside these processes (RCU callbacks, the netns' \
             workqueues) is in neither."
        );
    }

    fn write_kernel(&self, md: &mut String) {
        let s = &self.single;
        let bare = s.bare_delete.p50();
        let _ = writeln!(md, "\n## DEL above the kernel's own time\n");
        let _ = writeln!(md, "| | p50, ms |");
        let _ = writeln!(md, "|---|---|");
        let _ = writeln!(
            md,
            "| bare veth pair, made at the cycle's start, deleted with one RTM_DELLINK from the \
             driver | {bare:.2} |"
        );
        let _ = writeln!(
            md,
            "| A DEL minus that | {:.2} |",
            s.latency[0].del.p50() - bare
        );
        let _ = writeln!(
            md,
            "| B DEL minus that | {:.2} |",
            s.latency[1].del.p50() - bare
        );
        let _ = writeln!(
            md,
            "| lowest A/B of DEL p50 there can be: the bare delete over B's DEL | {:.2} |",
            bare / s.latency[1].del.p50()
        );
        let _ = writeln!(
            md,
            "\nThe kernel deletes a veth pair inside the RTM_DELLINK call, and a process cannot \
             exit while one of its threads is in a system call: whatever else it overlaps, a DEL \
             that removes its pair lasts at least the bare delete."
        );
    }

    fn write_requests(&self, md: &mut String) {
        let (r, b) = (&self.requests, &self.bursts);
        let _ = writeln!(md, "\n## etcd per operation (A)\n");
        let _ = writeln!(
            md,
            "| | requests | write transactions | committed writes | failed conditional writes | requests by verb, all runs |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for (what, load) in [
            ("single ADD", &r.add),
            ("single DEL", &r.del),
            ("burst ADD", &b.add_etcd),
            ("burst DEL", &b.del_etcd),
        ] {
            let _ = writeln!(
                md,
                "| {what} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                load.requests_per_run(),
                load.proposed_per_run(),
                load.committed_per_run(),
                load.failed_per_run(),
                load.log.summary()
            );
        }
        let _ = writeln!(
            md,
            "\nPer run. Single rows: {} logged cycles, one at a time, after the timed ones (the \
             node's block has room). Requests: lines of the plugins' request log. Write \
             transactions: etcd's raft commit index growth (every transaction with a write goes \
             through consensus and an fsync, whether its conditions hold or not). Committed \
             writes: growth of the store's revision. The difference is failed conditional writes \
             (CAS conflicts), or deletes of keys already gone.",
            r.add.runs
        );
    }

    fn write_footprint(&self, md: &mut String) {
        let s = &self.single;
        let mib = |kib: u64| kib as f64 / 1024.0;
        let _ = writeln!(md, "\n## Footprint\n");
        let _ = writeln!(md, "| | A | B |");
        let _ = writeln!(md, "|---|---|---|");
        let _ = writeln!(
            md,
            "| peak RSS of an ADD: `calico` / `ptp` and any child it waited for, MiB | {:.1} | {:.1} |",
            mib(s.add_max_rss_kib[0]),
            mib(s.add_max_rss_kib[1])
        );
        let _ = writeln!(
            md,
            "| peak RSS of the IPAM plugin run alone: `calico-ipam` / `host-local`, MiB | {:.1} | {:.1} |",
            mib(self.ipam_max_rss_kib[0]),
            mib(self.ipam_max_rss_kib[1])
        );
        let _ = writeln!(
            md,
            "| CPU of an ADD, user + system, children included, p50 ms | {:.2} | {:.2} |",
            s.add_cpu[0].p50(),
            s.add_cpu[1].p50()
        );
        let _ = writeln!(
            md,
            "\n`ru_maxrss` of a process covers the children it waited for: where the first row is \
             larger than the second, it is the main plugin's own peak."
        );
    }

    fn write_scale(&self, md: &mut String) {
        let s = &self.scale;
        let _ = writeln!(
            md,
            "\n## IPAM at scale: 3-member etcd on loopback, {NODES} nodes, {} `calico-ipam` ADDs, {} at a time\n",
            s.allocations, s.workers
        );
        let _ = writeln!(
            md,
            "| allocations/s | wall, s | ADD p50 | ADD p90 | ADD p99 | duplicate addresses |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        let _ = writeln!(
            md,
            "| {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            s.per_second(),
            s.wall.as_secs_f64(),
            s.latency.p50(),
            s.latency.percentile(90.0),
            s.latency.percentile(99.0),
            s.duplicates
        );
    }
}

/// `A p50 | A p90 | A p99 | B p50 | B p90 | B p99`.
fn percentiles(a: &Samples, b: &Samples) -> String {
    let cells: Vec<String> = [a, b]
        .iter()
        .flat_map(|s| [50.0, 90.0, 99.0].map(|p| format!("{:.2}", s.percentile(p))))
        .collect();
    cells.join(" | ")
}

fn ratio(a: &Samples, b: &Samples) -> f64 {
    a.p50() / b.p50()
}

/// p50 / p90 / p99 of one series, in ms.
fn triple(s: &Samples) -> String {
    format!(
        "{:.2} / {:.2} / {:.2}",
        s.p50(),
        s.percentile(90.0),
        s.percentile(99.0)
    )
}
