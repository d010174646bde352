//! CPU time spent by the plugins and by etcd over a stretch of the run: a burst on two cores is
//! decided by how much CPU each ADD costs, the plugin's own processes and etcd's share together.

use std::time::Duration;

/// User plus system time of every child process reaped so far (a plugin and whatever it ran
/// and reaped itself; etcd is still running, so it is not in here).
pub fn reaped_children() -> Duration {
    // SAFETY: getrusage fills the struct it is given and reads nothing else.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

/// User plus system time of the running process `pid`, all its threads (from
/// `/proc/<pid>/stat`, in clock ticks).
pub fn of_process(pid: u32) -> Result<Duration, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of stat(5); the list starts at field 3.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        return Err(format!("{path} has no utime and stime: {stat}"));
    };
    // SAFETY: sysconf only reads a system setting.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(
        (user + system) * 1_000_000 / per_second,
    ))
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// CPU summed over several stretches, and the runs they held.
#[derive(Default, Clone, Copy)]
pub struct CpuUse {
    pub plugins: Duration,
    pub etcd: Duration,
    pub runs: usize,
}

impl CpuUse {
    /// Milliseconds per run: the plugins', etcd's.
    pub fn per_run_ms(&self) -> (f64, f64) {
        let per = |d: Duration| d.as_secs_f64() * 1000.0 / self.runs.max(1) as f64;
        (per(self.plugins), per(self.etcd))
    }
}
