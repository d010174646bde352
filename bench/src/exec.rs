//! One plugin run the way a container runtime makes it: fork/exec with only the given
//! environment, the config on stdin, then `wait4` for the exit status and the kernel's
//! accounting of the process (CPU time and peak RSS, both covering the children it reaped).

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::signals;
use crate::workdir::WorkDir;

/// What to run: the program, its environment (nothing else is inherited) and its stdin.
pub struct Invocation {
    pub program: PathBuf,
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
}

/// What one run took and printed.
pub struct Run {
    /// From just before the fork to the return of `wait4`.
    pub wall: Duration,
    /// User + system CPU of the process and of every child it waited for.
    pub cpu: Duration,
    /// `ru_maxrss`: the larger of the process's peak RSS and that of any child it waited for.
    pub max_rss_kib: u64,
    pub stdout: Vec<u8>,
}

/// Runs `inv`, failing with its stderr when it exits non-zero. Stdin, stdout and stderr are
/// files in `work`, so no pipe can fill up and the timed span holds no thread of ours.
pub fn run(work: &WorkDir, what: &str, inv: &Invocation) -> Result<Run, String> {
    signals::check()?;
    let input = work.unique_file("stdin", "json");
    let output = work.unique_file("stdout", "json");
    let errors = work.unique_file("stderr", "txt");
    std::fs::write(&input, &inv.stdin)
        .map_err(|e| format!("cannot write {}: {e}", input.display()))?;
    let open = |path: &PathBuf, create: bool| {
        if create {
            File::create(path)
        } else {
            File::open(path)
        }
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
    };
    let mut cmd = Command::new(&inv.program);
    cmd.env_clear()
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::from(open(&input, false)?))
        .stdout(Stdio::from(open(&output, true)?))
        .stderr(Stdio::from(open(&errors, true)?));

    let start = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", inv.program.display()))?;
    let (status, usage) = wait4(child.id() as libc::pid_t)?;
    let wall = start.elapsed();

    let stdout = std::fs::read(&output).unwrap_or_default();
    let stderr = std::fs::read_to_string(&errors).unwrap_or_default();
    for path in [&input, &output, &errors] {
        let _ = std::fs::remove_file(path);
    }
    if !status.success() {
        return Err(format!(
            "{what}: {} exited with {status}\nstdout: {}\nstderr: {stderr}",
            inv.program.display(),
            String::from_utf8_lossy(&stdout)
        ));
    }
    Ok(Run {
        wall,
        cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
        max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        stdout,
    })
}

/// Reaps `pid`. On Ctrl-C the child has usually died with us; on SIGTERM it is killed, so the
/// driver never waits for a plugin after being told to stop.
fn wait4(pid: libc::pid_t) -> Result<(ExitStatus, libc::rusage), String> {
    let mut killed = false;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain data that wait4 fills in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to locals; pid is our own child.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            if killed {
                return Err("interrupted".into());
            }
            return Ok((ExitStatus::from_raw(status), usage));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4 for pid {pid}: {err}"));
        }
        if signals::interrupted() && !killed {
            // SAFETY: signalling our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
}

/// Runs a helper command (`ip`, `calico-ipam pool add`) outside any timed span.
pub fn helper(program: &str, args: &[&str]) -> Result<(), String> {
    signals::check()?;
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
