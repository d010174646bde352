//! Logging to stderr, the only place besides stdout a plugin may write (stdout is reserved for
//! the result or the error JSON), and, when the config names one, to a log file as well.
//!
//! Every line is one entry: an RFC 3339 UTC timestamp, the level, the plugin, the container
//! and, for a Kubernetes pod, `namespace/name`, then the message. Control characters in any part
//! are escaped, so an entry can never span two lines or forge another one.
//!
//! The log file is shared by every plugin process of the node (calico and the calico-ipam it
//! runs, and concurrent ADDs): each entry is appended with one `write` on an `O_APPEND`
//! descriptor, so entries of different processes never interleave, and the file is rotated by
//! size (`<file>.1` … `<file>.5`, as Calico's Python plugin did with 1 MB × 5) under an `flock`
//! that serialises rotations.
//! Logging never fails a verb: a file that cannot be written is reported once on stderr.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg, OFlag};

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

    /// The word written into each entry.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warning => "warning",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

/// Who is logging: set once per request, written into every entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogContext {
    /// The plugin's name (`calico`, `calico-ipam`).
    pub plugin: String,
    /// `CNI_CONTAINERID`, when set.
    pub container_id: Option<String>,
    /// `K8S_POD_NAMESPACE/K8S_POD_NAME` from `CNI_ARGS`, when both are set.
    pub pod: Option<String>,
}

/// The size past which the log file is rotated (Calico's Python plugin: 1,000,000 bytes).
pub const LOG_FILE_MAX_BYTES: u64 = 1 << 20;

/// How many rotated files are kept (`<file>.1` is the newest).
pub const LOG_FILE_KEEP: u32 = 5;

/// Size and count limits of a rotated log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// An entry that would take the file past this size starts a new file.
    pub max_bytes: u64,
    /// Rotated files kept, `<file>.1` … `<file>.<keep>`.
    pub keep: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: LOG_FILE_MAX_BYTES,
            keep: LOG_FILE_KEEP,
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Warning as u8);
static CONTEXT: Mutex<Option<LogContext>> = Mutex::new(None);
static FILE: Mutex<FileState> = Mutex::new(FileState::Unknown(Vec::new()));

/// How often, and how long apart, a rotation tries to take the lock held by another rotation.
const LOCK_ATTEMPTS: u32 = 50;
const LOCK_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// Entries kept for a log file that is not known yet (those logged while the config is parsed).
const PENDING_MAX: usize = 32;

enum FileState {
    /// The config has not been read: entries wait here for the file it may name.
    Unknown(Vec<String>),
    /// No log file.
    Off,
    /// Entries also go to this file.
    On(LogFile),
}

/// Sets the process-wide level.
pub fn set_level(level: LogLevel) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Sets who is logging, for every later entry.
pub fn set_context(context: LogContext) {
    *lock(&CONTEXT) = Some(context);
}

/// Sends entries to `path` as well as stderr from now on (`None`: stderr only). Entries logged
/// before, while the config was being read, are written to the file first.
pub fn set_file(path: Option<&Path>) {
    let mut state = lock(&FILE);
    let pending = match std::mem::replace(&mut *state, FileState::Off) {
        FileState::Unknown(pending) => pending,
        FileState::Off | FileState::On(_) => Vec::new(),
    };
    if let Some(path) = path {
        let mut file = LogFile::new(path.to_path_buf(), Rotation::default());
        for line in &pending {
            file.write_entry(line, &mut std::io::stderr());
        }
        *state = FileState::On(file);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A thread that panicked while logging must not silence the others.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn emit(level: LogLevel, msg: &str) {
    if level as u8 > LEVEL.load(Ordering::Relaxed) {
        return;
    }
    let context = lock(&CONTEXT).clone().unwrap_or_else(|| LogContext {
        plugin: program_name(),
        ..LogContext::default()
    });
    let line = format_entry(SystemTime::now(), level, &context, msg);
    let _ = std::io::stderr().write_all(line.as_bytes());
    match &mut *lock(&FILE) {
        FileState::Unknown(pending) if pending.len() < PENDING_MAX => pending.push(line),
        FileState::On(file) => file.write_entry(&line, &mut std::io::stderr()),
        FileState::Unknown(_) | FileState::Off => {}
    }
}

/// The binary's name, for entries logged outside a CNI request (calico-ipam's admin mode).
fn program_name() -> String {
    std::env::args()
        .next()
        .and_then(|a| a.rsplit('/').next().map(str::to_string))
        .unwrap_or_default()
}

/// Logs an error.
pub fn error(msg: &str) {
    emit(LogLevel::Error, msg);
}

/// Logs a warning.
pub fn warn(msg: &str) {
    emit(LogLevel::Warning, msg);
}

/// Logs progress.
pub fn info(msg: &str) {
    emit(LogLevel::Info, msg);
}

/// Logs details.
pub fn debug(msg: &str) {
    emit(LogLevel::Debug, msg);
}

/// One entry, newline included:
/// `<RFC 3339 UTC time> <level> <plugin> container=<id> pod=<ns>/<name>: <message>`, the
/// container and pod parts only when known.
pub fn format_entry(time: SystemTime, level: LogLevel, context: &LogContext, msg: &str) -> String {
    let mut line = format!("{} {} ", rfc3339_utc(time), level.as_str());
    push_escaped(&mut line, &context.plugin);
    if let Some(id) = &context.container_id {
        line.push_str(" container=");
        push_escaped(&mut line, id);
    }
    if let Some(pod) = &context.pod {
        line.push_str(" pod=");
        push_escaped(&mut line, pod);
    }
    line.push_str(": ");
    push_escaped(&mut line, msg);
    line.push('\n');
    line
}

/// Appends `text` with control characters escaped (`\n`, `\u{1b}`): one entry stays one line.
fn push_escaped(line: &mut String, text: &str) {
    for c in text.chars() {
        if c.is_control() {
            line.extend(c.escape_debug());
        } else {
            line.push(c);
        }
    }
}

/// `time` as RFC 3339 in UTC with milliseconds, e.g. `2017-11-07T14:03:59.042Z`. Times before
/// 1970 (a broken clock) print as the epoch.
pub fn rfc3339_utc(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (the days-to-civil algorithm
/// described by Howard Hinnant), for days ≥ 0.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift to an era starting 0000-03-01 so that leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A size-rotated log file shared with other processes.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    rotation: Rotation,
    reported: bool,
}

impl LogFile {
    /// A log file at `path` (nothing is opened until the first entry).
    pub fn new(path: PathBuf, rotation: Rotation) -> LogFile {
        LogFile {
            path,
            rotation,
            reported: false,
        }
    }

    /// Appends one entry. A failure is reported on `stderr` the first time only, and never
    /// returned: the log file is a convenience, not part of the verb.
    pub fn write_entry(&mut self, line: &str, stderr: &mut dyn Write) {
        if let Err(err) = self.append(line.as_bytes())
            && !self.reported
        {
            self.reported = true;
            let _ = writeln!(
                stderr,
                "cannot write log file {}: {err}; logging to stderr only",
                self.path.display()
            );
        }
    }

    /// Opens the file, rotates it first when this entry would take it past the limit, and
    /// appends the entry with one `write`. A failed rotation is returned after the entry was
    /// written to the unrotated file.
    pub fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let (mut file, size) = open_for_append(&self.path)?;
        let mut rotation = Ok(false);
        if size > 0 && size + line.len() as u64 > self.rotation.max_bytes {
            rotation = self.rotate(&file);
            if let Ok(true) = rotation {
                file = open_for_append(&self.path)?.0;
            }
        }
        file.write_all(line)?;
        rotation.map(|_| ())
    }

    /// Shifts `<file>.1` … to `.2` …, dropping the oldest, and renames the file to `.1`; true
    /// when the path now needs opening again.
    ///
    /// Rotations of every process are serialised by an exclusive `flock` on the directory (a
    /// lock on the file itself would not do: each rotation replaces the file, so two processes
    /// could lock two different files and shift the same generations at once). Once the lock is
    /// held, a path that names another file than `file` was rotated meanwhile, and nothing is
    /// renamed twice. The lock is waited for only briefly: a process that never lets it go
    /// must not hold up the plugin, and the entry then goes to the unrotated file.
    fn rotate(&self, file: &File) -> std::io::Result<bool> {
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        let mut dir = OpenOptions::new()
            .read(true)
            .custom_flags((OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).bits())
            .open(dir)?;
        let mut attempts = 0;
        let locked = loop {
            match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => break locked,
                Err((unlocked, nix::errno::Errno::EWOULDBLOCK)) if attempts < LOCK_ATTEMPTS => {
                    attempts += 1;
                    dir = unlocked;
                    std::thread::sleep(LOCK_PAUSE);
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(false),
                Err((_, errno)) => return Err(errno.into()),
            }
        };
        let renamed = self.rename_generations(file);
        // Released as soon as the renames are done: the lock only guards them.
        drop(locked);
        renamed.map(|()| true)
    }

    fn rename_generations(&self, file: &File) -> std::io::Result<()> {
        let ours = file.metadata()?;
        let current = match std::fs::metadata(&self.path) {
            Ok(current) => current,
            // Renamed away by another process a moment ago: the next open creates a new file.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        };
        if (current.dev(), current.ino()) != (ours.dev(), ours.ino()) {
            return Ok(());
        }
        for n in (1..self.rotation.keep).rev() {
            match std::fs::rename(self.generation(n), self.generation(n + 1)) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
                _ => {}
            }
        }
        if self.rotation.keep == 0 {
            return std::fs::remove_file(&self.path);
        }
        std::fs::rename(&self.path, self.generation(1))
    }

    /// `<file>.<n>`.
    fn generation(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }
}

/// Opens `path` for appending, creating it with mode 0600 (an existing file keeps its mode), and
/// returns it with its size. `O_NONBLOCK` keeps a FIFO without a reader from blocking the
/// plugin; anything but a regular file (FIFO, device, directory) is refused.
fn open_for_append(path: &Path) -> std::io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).bits())
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok((file, metadata.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use crate::file::Scratch;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000Z"),
            (951_825_600, 7, "2000-02-29T12:00:00.007Z"),
            (1_510_063_439, 42, "2017-11-07T14:03:59.042Z"),
            (1_709_208_000, 999, "2024-02-29T12:00:00.999Z"),
            (4_102_444_799, 0, "2099-12-31T23:59:59.000Z"),
            (253_402_300_799, 0, "9999-12-31T23:59:59.000Z"),
        ];
        for (secs, millis, want) in cases {
            assert_eq!(rfc3339_utc(at(secs, millis)), want, "{secs}");
        }
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn entries_name_plugin_container_and_pod_when_known() {
        let time = at(1_510_063_439, 42);
        let plugin_only = LogContext {
            plugin: "calico-ipam".into(),
            ..LogContext::default()
        };
        let with_container = LogContext {
            container_id: Some("abc123".into()),
            ..plugin_only.clone()
        };
        let with_pod = LogContext {
            pod: Some("default/web".into()),
            ..with_container.clone()
        };
        let cases = [
            (
                &plugin_only,
                LogLevel::Warning,
                "2017-11-07T14:03:59.042Z warning calico-ipam: m\n",
            ),
            (
                &with_container,
                LogLevel::Info,
                "2017-11-07T14:03:59.042Z info calico-ipam container=abc123: m\n",
            ),
            (
                &with_pod,
                LogLevel::Debug,
                "2017-11-07T14:03:59.042Z debug calico-ipam container=abc123 pod=default/web: m\n",
            ),
        ];
        for (context, level, want) in cases {
            assert_eq!(format_entry(time, level, context, "m"), want);
        }
    }

    #[test]
    fn control_characters_cannot_split_an_entry() {
        let context = LogContext {
            plugin: "calico".into(),
            container_id: Some("c\n2017-01-01T00:00:00.000Z error forged".into()),
            pod: None,
        };
        let line = format_entry(at(0, 0), LogLevel::Error, &context, "a\nb\r\u{1b}[31mc\té");
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        assert!(line.ends_with(": a\\nb\\r\\u{1b}[31mc\\té\n"), "{line:?}");
        assert!(line.contains("container=c\\n2017"), "{line:?}");
    }

    #[test]
    fn new_file_is_private_and_existing_mode_is_kept() {
        let dir = Scratch::new("log-mode");
        let fresh = dir.0.join("new.log");
        LogFile::new(fresh.clone(), Rotation::default())
            .append(b"one\n")
            .unwrap();
        assert_eq!(mode(&fresh), 0o600);

        let existing = dir.0.join("existing.log");
        std::fs::write(&existing, "old\n").unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o640)).unwrap();
        LogFile::new(existing.clone(), Rotation::default())
            .append(b"new\n")
            .unwrap();
        assert_eq!(mode(&existing), 0o640);
        assert_eq!(read(&existing), "old\nnew\n");
    }

    #[test]
    fn full_file_rotates_and_only_keep_generations_stay() {
        let dir = Scratch::new("log-rotate");
        let path = dir.0.join("cni.log");
        let log = LogFile::new(
            path.clone(),
            Rotation {
                max_bytes: 10,
                keep: 2,
            },
        );
        // Each entry is 6 bytes: a second one would take the file past 10 bytes.
        for n in 0..5 {
            log.append(format!("line{n}\n").as_bytes()).unwrap();
        }
        assert_eq!(read(&path), "line4\n");
        assert_eq!(read(&dir.0.join("cni.log.1")), "line3\n");
        assert_eq!(read(&dir.0.join("cni.log.2")), "line2\n");
        assert!(!dir.0.join("cni.log.3").exists());
        assert_eq!(mode(&dir.0.join("cni.log.1")), 0o600);
    }

    #[test]
    fn an_entry_larger_than_the_limit_still_gets_written() {
        let dir = Scratch::new("log-large");
        let path = dir.0.join("cni.log");
        let log = LogFile::new(
            path.clone(),
            Rotation {
                max_bytes: 4,
                keep: 1,
            },
        );
        log.append(b"much too long\n").unwrap();
        log.append(b"again too long\n").unwrap();
        assert_eq!(read(&path), "again too long\n");
        assert_eq!(read(&dir.0.join("cni.log.1")), "much too long\n");
    }

    #[test]
    fn fifo_device_and_directory_are_refused_without_blocking() {
        let dir = Scratch::new("log-special");
        let fifo = dir.0.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // With a reader attached the open succeeds; it must still be refused.
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(OFlag::O_NONBLOCK.bits())
            .open(&fifo)
            .unwrap();
        for path in [fifo.clone(), PathBuf::from("/dev/null"), dir.0.clone()] {
            let log = LogFile::new(path.clone(), Rotation::default());
            assert!(log.append(b"x\n").is_err(), "{}", path.display());
        }
        drop(reader);
        // Without a reader, opening a FIFO for writing would block but for O_NONBLOCK.
        let log = LogFile::new(fifo, Rotation::default());
        assert!(log.append(b"x\n").is_err());
    }

    #[test]
    fn unwritable_file_is_reported_once() {
        let dir = Scratch::new("log-report");
        let mut log = LogFile::new(dir.0.join("missing/cni.log"), Rotation::default());
        let mut stderr = Vec::new();
        for _ in 0..3 {
            log.write_entry("x\n", &mut stderr);
        }
        let text = String::from_utf8(stderr).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("missing/cni.log"), "{text}");
    }

    #[test]
    fn concurrent_writers_lose_and_split_no_entry_while_rotating() {
        let dir = Scratch::new("log-concurrent");
        let path = dir.0.join("cni.log");
        let rotation = Rotation {
            max_bytes: 2_000,
            keep: 200,
        };
        const WRITERS: usize = 8;
        const ENTRIES: usize = 200;
        let threads: Vec<_> = (0..WRITERS)
            .map(|w| {
                let log = LogFile::new(path.clone(), rotation);
                std::thread::spawn(move || {
                    for n in 0..ENTRIES {
                        let line = format!("writer {w:02} entry {n:04} {}\n", "x".repeat(20));
                        log.append(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let files: Vec<PathBuf> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        // 64 kB of entries in files of about 2 kB (writers that lost the race for the lock
        // still append to the file being rotated).
        assert!(files.len() > 10, "{files:?}");
        let mut entries: Vec<String> = files
            .iter()
            .flat_map(|path| read(path).lines().map(str::to_string).collect::<Vec<_>>())
            .collect();
        entries.sort();
        let mut want: Vec<String> = (0..WRITERS)
            .flat_map(|w| {
                (0..ENTRIES).map(move |n| format!("writer {w:02} entry {n:04} {}", "x".repeat(20)))
            })
            .collect();
        want.sort();
        assert_eq!(entries.len(), want.len());
        assert!(entries == want, "entries were lost or split");
    }
}
