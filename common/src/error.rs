//! The one error type of both plugins: a CNI error code, a message, optional details, and the
//! context each layer adds on the way up. It serialises to the spec's error JSON.

use std::fmt;

/// Error codes of the CNI specification, plus the plugin-specific range (≥ 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1: the config's `cniVersion` is not supported.
    IncompatibleVersion,
    /// 2: a config field is not supported; the message names the key and value.
    UnsupportedField,
    /// 3: the container is unknown or does not exist.
    UnknownContainer,
    /// 4: invalid or missing environment variables.
    InvalidEnvironment,
    /// 5: I/O failure, e.g. reading stdin.
    Io,
    /// 6: the network config or another input could not be decoded.
    Decoding,
    /// 7: the network config is invalid.
    InvalidConfig,
    /// 11: a transient condition; the runtime may try again later.
    TryAgainLater,
    /// 50: the plugin cannot serve ADD now (STATUS).
    NotAvailable,
    /// 51: not available, and existing containers may have limited connectivity (STATUS).
    NotAvailableLimitedConnectivity,
    /// A plugin-specific code (100 and above).
    Plugin(u32),
    /// 999: anything else.
    Internal,
}

impl Code {
    /// The number written into the error JSON.
    pub fn number(self) -> u32 {
        match self {
            Code::IncompatibleVersion => 1,
            Code::UnsupportedField => 2,
            Code::UnknownContainer => 3,
            Code::InvalidEnvironment => 4,
            Code::Io => 5,
            Code::Decoding => 6,
            Code::InvalidConfig => 7,
            Code::TryAgainLater => 11,
            Code::NotAvailable => 50,
            Code::NotAvailableLimitedConnectivity => 51,
            Code::Plugin(n) => n,
            Code::Internal => 999,
        }
    }

    /// The code for a number read from another plugin's error JSON.
    pub fn from_number(n: u32) -> Code {
        match n {
            1 => Code::IncompatibleVersion,
            2 => Code::UnsupportedField,
            3 => Code::UnknownContainer,
            4 => Code::InvalidEnvironment,
            5 => Code::Io,
            6 => Code::Decoding,
            7 => Code::InvalidConfig,
            11 => Code::TryAgainLater,
            50 => Code::NotAvailable,
            51 => Code::NotAvailableLimitedConnectivity,
            999 => Code::Internal,
            n => Code::Plugin(n),
        }
    }
}

/// Plugin-specific codes used by this project (all ≥ 100).
pub mod codes {
    use super::Code;
    /// etcd refused or failed a request, or a value read from it does not decode (an etcd that
    /// cannot be reached is [`Code::TryAgainLater`]).
    pub const DATASTORE: Code = Code::Plugin(100);
    /// The IPAM plugin failed or returned something unusable.
    pub const IPAM: Code = Code::Plugin(101);
    /// No address could be allocated: pools exhausted or the requested address is taken.
    pub const IPAM_EXHAUSTED: Code = Code::Plugin(102);
    /// A kernel (netlink, netns, sysctl) operation failed.
    pub const DATAPLANE: Code = Code::Plugin(103);
    /// Calico's Ready flag is `false`: an upgrade or maintenance is in progress.
    pub const NOT_READY: Code = Code::Plugin(104);
    /// Compare-and-swap kept conflicting after every retry.
    pub const CONFLICT: Code = Code::Plugin(105);
    /// CHECK found the attachment differing from what ADD set up.
    pub const CHECK_FAILED: Code = Code::Plugin(106);
    /// The Kubernetes API refused or failed a read (not found, unauthorised, forbidden).
    pub const KUBERNETES: Code = Code::Plugin(107);
}

/// What a caller may branch on. Everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The object does not exist (link, netns, etcd key, allocation).
    NotFound,
    /// A transient failure: timeout or unreachable service.
    TryAgainLater,
    /// No further distinction.
    Other,
}

/// A CNI error: code, message, optional details and kind.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    code: Code,
    kind: Kind,
    msg: String,
    details: Option<String>,
}

/// Result with this crate's error.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A new error with a code and a message.
    pub fn new(code: Code, msg: impl Into<String>) -> Error {
        Error {
            code,
            kind: Kind::Other,
            msg: msg.into(),
            details: None,
        }
    }

    /// A new error with code 999.
    pub fn internal(msg: impl Into<String>) -> Error {
        Error::new(Code::Internal, msg)
    }

    /// The same error with `details` set.
    pub fn with_details(mut self, details: impl Into<String>) -> Error {
        self.details = Some(details.into());
        self
    }

    /// The same error with a kind a caller can branch on.
    pub fn with_kind(mut self, kind: Kind) -> Error {
        self.kind = kind;
        self
    }

    /// The same error with another code.
    pub fn with_code(mut self, code: Code) -> Error {
        self.code = code;
        self
    }

    /// The same error, its message prefixed by what the caller was doing.
    pub fn context(mut self, context: impl fmt::Display) -> Error {
        self.msg = format!("{context}: {}", self.msg);
        self
    }

    /// Success for no failures; otherwise one error with the first failure's code and message,
    /// and every failure's text in the details (cleanup steps that all run, then report).
    pub fn combine(mut failures: Vec<Error>) -> Result<()> {
        if failures.len() <= 1 {
            return failures.pop().map_or(Ok(()), Err);
        }
        let all: Vec<String> = failures.iter().map(|e| e.to_string()).collect();
        Err(failures.swap_remove(0).with_details(all.join("; ")))
    }

    /// The CNI code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The message, with every context prefix.
    pub fn msg(&self) -> &str {
        &self.msg
    }

    /// The details, if any.
    pub fn details(&self) -> Option<&str> {
        self.details.as_deref()
    }

    /// True when the error says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind == Kind::NotFound
    }

    /// The spec's error JSON for a given output `cniVersion`.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert("cniVersion".into(), cni_version.into());
        obj.insert("code".into(), self.code.number().into());
        obj.insert("msg".into(), self.msg.clone().into());
        if let Some(details) = &self.details {
            obj.insert("details".into(), details.clone().into());
        }
        serde_json::Value::Object(obj)
    }
}

/// Success when nothing was found; otherwise one error whose message is the first finding and
/// whose details list all of them (CHECK reports every mismatch this way).
pub fn from_findings(code: Code, findings: &[String]) -> Result<()> {
    match findings {
        [] => Ok(()),
        [only] => Err(Error::new(code, only.clone())),
        [first, ..] => Err(Error::new(code, first.clone()).with_details(findings.join("; "))),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.msg)?;
        if let Some(details) = &self.details {
            write!(f, " ({details})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} {:?}] {}", self.code.number(), self.kind, self)
    }
}

// Any standard error becomes a 999 error with its text; an I/O "not found" keeps that kind so
// that idempotent cleanups can recognise it. `Error` itself deliberately does not implement
// `std::error::Error`, which is what lets this blanket conversion exist.
impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(err: E) -> Error {
        let any: &dyn std::any::Any = &err;
        let kind = match any.downcast_ref::<std::io::Error>().map(|e| e.kind()) {
            Some(std::io::ErrorKind::NotFound) => Kind::NotFound,
            Some(std::io::ErrorKind::TimedOut) => Kind::TryAgainLater,
            _ => Kind::Other,
        };
        Error::internal(err.to_string()).with_kind(kind)
    }
}

/// Adds context to any fallible result, converting its error into [`Error`].
pub trait Context<T> {
    /// Prefix the error's message with `context`.
    fn context(self, context: impl fmt::Display) -> Result<T>;
    /// Prefix the error's message with a lazily built context.
    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T>;
    /// Set the error's code.
    fn code(self, code: Code) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.into().context(context()))
    }

    fn code(self, code: Code) -> Result<T> {
        self.map_err(|e| e.into().with_code(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_spec_shape() {
        let err = Error::new(Code::InvalidConfig, "bad name").with_details("name \"a b\"");
        assert_eq!(
            err.to_json("0.4.0"),
            serde_json::json!({"cniVersion":"0.4.0","code":7,"msg":"bad name","details":"name \"a b\""})
        );
    }

    #[test]
    fn details_are_omitted_when_absent() {
        let json = Error::internal("boom").to_json("1.0.0");
        assert!(json.get("details").is_none());
        assert_eq!(json["code"], 999);
    }

    #[test]
    fn context_prefixes_the_message_and_keeps_code() {
        let res: std::result::Result<(), std::io::Error> = Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file",
        ));
        let err = res.context("open netns /run/netns/x").unwrap_err();
        assert_eq!(err.msg(), "open netns /run/netns/x: no such file");
        assert!(err.is_not_found());
        assert_eq!(err.code(), Code::Internal);
    }

    #[test]
    fn numbers_round_trip() {
        for n in [1, 2, 3, 4, 5, 6, 7, 11, 50, 51, 100, 107, 999] {
            assert_eq!(Code::from_number(n).number(), n);
        }
    }
}
