//! Crash points for the crash-safety tests: with the `crash-points` feature, `CALICO_CRASH_AT`
//! names a step at which the process kills itself. Without the feature this compiles to nothing.

/// Kills the process with SIGKILL when `CALICO_CRASH_AT` names `step`.
#[cfg(feature = "crash-points")]
pub fn point(step: &str) {
    if std::env::var("CALICO_CRASH_AT").is_ok_and(|wanted| wanted == step) {
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Does nothing: release builds have no crash points.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn point(_step: &str) {}
