//! `make bench`: the release plugins (A: `calico` + `calico-ipam` on etcd) side by side with
//! Debian's `ptp` + `host-local` (B), run the way a runtime runs them. Writes `results.md` and
//! `latency.png` into the output directory and prints `ratio add_p50=.. del_p50=..
//! burst_add_p50=..` last.
//!
//! Usage: calico-bench --bin <dir of the release plugins> --out <dir>
//! Environment: N (single cycles, default 100), P (burst size, 30), BURST_ROUNDS (3),
//! SCALE_ADDS (IPAM scale run, 1000), SCALE_WORKERS (16).

mod burst;
mod cpu;
mod etcd;
mod exec;
mod footprint;
mod kernel;
mod netns;
mod plot;
mod policy_cost;
mod report;
mod requests;
mod scale;
mod setups;
mod signals;
mod single;
mod stats;
mod workdir;

use std::path::PathBuf;
use std::process::ExitCode;

use report::{Machine, Results};
use setups::Setup;
use workdir::WorkDir;

/// Logged single cycles for the request counts.
const REQUEST_CYCLES: usize = 5;

struct Options {
    bin: PathBuf,
    out: PathBuf,
    cycles: usize,
    burst: usize,
    burst_rounds: usize,
    scale_adds: usize,
    scale_workers: usize,
}

fn main() -> ExitCode {
    let outcome = options().and_then(|options| {
        signals::install()?;
        netns::remove_leftovers();
        bench(&options)
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) if signals::interrupted() => {
            eprintln!("calico-bench: interrupted; everything it made is removed");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("calico-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(options: &Options) -> Result<(), String> {
    // Declared first, so dropped last: after the etcd processes and namespaces that use it.
    let work = WorkDir::create()?;
    for dir in ["locks", "hints", "host-local"] {
        work.subdir(dir)?;
    }
    let machine = machine();
    eprintln!("starting etcd");
    let etcd = etcd::Etcd::start(&work.subdir("etcd")?, 1)?;
    exec::helper(
        &options.bin.join("calico-ipam").display().to_string(),
        &[
            "--etcd-endpoints",
            &etcd.endpoints(),
            "pool",
            "add",
            setups::POOL_A,
        ],
    )?;
    let a = Setup::calico(&options.bin, &etcd.endpoints(), work.path());
    let b = Setup::reference(work.path());

    eprintln!("single ADD/CHECK/DEL: {} cycles", options.cycles);
    let single = single::run_cycles(&work, [&a, &b], options.cycles)?;
    eprintln!(
        "bursts of {}: {} rounds",
        options.burst, options.burst_rounds
    );
    let bursts = burst::run_bursts(&work, [&a, &b], &etcd, options.burst, options.burst_rounds)?;
    eprintln!("local policy: {} cycles with and without", options.cycles);
    let policy = policy_cost::run_cycles(&work, &a, options.cycles)?;
    eprintln!("etcd requests and footprint");
    let requests = requests::count_requests(&work, &a, &etcd, REQUEST_CYCLES)?;
    let ipam_max_rss_kib = [
        footprint::ipam_max_rss_kib(&work, &a)?,
        footprint::ipam_max_rss_kib(&work, &b)?,
    ];
    drop(etcd);
    eprintln!("IPAM scale run: {} ADDs", options.scale_adds);
    let scale = scale::run_scale(
        &work,
        &options.bin,
        options.scale_adds,
        options.scale_workers,
    )?;

    let results = Results {
        machine,
        single,
        bursts,
        requests,
        ipam_max_rss_kib,
        scale,
        policy,
    };
    let markdown = results.markdown();
    let report = options.out.join("results.md");
    std::fs::write(&report, &markdown)
        .map_err(|e| format!("cannot write {}: {e}", report.display()))?;
    plot::draw(&results, &options.out.join("latency.png"))?;
    println!("{markdown}");
    println!("{}", results.ratio_line());
    Ok(())
}

fn options() -> Result<Options, String> {
    let mut bin = None;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bin" => bin = args.next().map(PathBuf::from),
            "--out" => out = args.next().map(PathBuf::from),
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: calico-bench --bin <dir> --out <dir>"
                ));
            }
        }
    }
    Ok(Options {
        bin: bin.ok_or("--bin <dir of the release plugins> is required")?,
        out: out.ok_or("--out <dir> is required")?,
        cycles: env_count("N", 100, 1)?,
        burst: env_count("P", 30, 2)?,
        burst_rounds: env_count("BURST_ROUNDS", 3, 1)?,
        scale_adds: env_count("SCALE_ADDS", 1000, 1)?,
        scale_workers: env_count("SCALE_WORKERS", 16, 1)?,
    })
}

/// A positive count from the environment variable `name`, or `default`.
fn env_count(name: &str, default: usize, min: usize) -> Result<usize, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(format!(
                "{name}={v:?} is not a whole number of at least {min}"
            )),
        },
    }
}

fn machine() -> Machine {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into())
    };
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let load = read("/proc/loadavg");
    Machine {
        date,
        kernel: read("/proc/sys/kernel/osrelease"),
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        load: load
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    }
}
