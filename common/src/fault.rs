//! Fault points for the failure tests. With the `fault-points` feature (which `calico`'s
//! `crash-points` turns on), the environment names steps at which a run misbehaves:
//! `CALICO_CRASH_AT` kills the process with SIGKILL, `CALICO_PAUSE_AT` holds it while the file
//! named after the step exists in `CALICO_PAUSE_DIR` (the process creates it on arrival; the
//! test removes it), and `CALICO_FAIL_AT` makes the step fail. Each takes a comma-separated
//! list of steps. Without the feature, every point does nothing.

use crate::Result;

/// Kills, holds or fails the run at `step` as the environment asks.
#[cfg(feature = "fault-points")]
pub fn point(step: &str) -> Result<()> {
    let named = |var: &str| std::env::var(var).is_ok_and(|v| v.split(',').any(|s| s == step));
    if named("CALICO_PAUSE_AT") {
        hold(step);
    }
    if named("CALICO_CRASH_AT") {
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
    }
    if named("CALICO_FAIL_AT") {
        return Err(crate::Error::internal(format!(
            "injected failure at {step}"
        )));
    }
    Ok(())
}

#[cfg(feature = "fault-points")]
fn hold(step: &str) {
    let Ok(dir) = std::env::var("CALICO_PAUSE_DIR") else {
        return;
    };
    let marker = std::path::Path::new(&dir).join(step);
    if std::fs::write(&marker, b"").is_err() {
        return;
    }
    while marker.exists() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Does nothing: release builds have no fault points.
#[cfg(not(feature = "fault-points"))]
#[inline(always)]
pub fn point(_step: &str) -> Result<()> {
    Ok(())
}
