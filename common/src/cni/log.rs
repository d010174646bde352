//! Logging to stderr, the only place besides stdout a plugin may write; stdout is reserved for
//! the result or the error JSON.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

/// How much to log (`log_level` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    /// Errors only.
    Error = 0,
    /// Warnings and errors (the default, as in Calico).
    #[default]
    Warning = 1,
    /// Progress messages.
    Info = 2,
    /// Everything.
    Debug = 3,
}

impl LogLevel {
    /// Calico's rule: `debug` and `info` (any case) select those levels, anything else warnings.
    pub fn parse(text: &str) -> LogLevel {
        match text.to_ascii_lowercase().as_str() {
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "error" => LogLevel::Error,
            _ => LogLevel::Warning,
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Warning as u8);

/// Sets the process-wide level.
pub fn set_level(level: LogLevel) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

fn emit(level: LogLevel, tag: &str, msg: &str) {
    if level as u8 <= LEVEL.load(Ordering::Relaxed) {
        let name = std::env::args()
            .next()
            .and_then(|a| a.rsplit('/').next().map(str::to_string))
            .unwrap_or_default();
        let _ = writeln!(std::io::stderr(), "{name} {tag}: {msg}");
    }
}

/// Logs an error.
pub fn error(msg: &str) {
    emit(LogLevel::Error, "error", msg);
}

/// Logs a warning.
pub fn warn(msg: &str) {
    emit(LogLevel::Warning, "warning", msg);
}

/// Logs progress.
pub fn info(msg: &str) {
    emit(LogLevel::Info, "info", msg);
}

/// Logs details.
pub fn debug(msg: &str) {
    emit(LogLevel::Debug, "debug", msg);
}
