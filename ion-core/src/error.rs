//! The one error type every backend trait returns, with a semantic kind and a transient flag.

use std::fmt;
use std::time::Duration;

use crate::name::{ValidationError, Zone};

/// What went wrong, independent of the backend that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The thing asked for does not exist.
    NotFound,
    /// A create found the thing already there.
    AlreadyExists,
    /// An optimistic-concurrency check failed (expected revision or generation mismatch).
    Conflict,
    /// The request was refused for what it contained; retrying it unchanged will fail again.
    InvalidInput,
    /// Credentials are missing, wrong, or lack a permission.
    PermissionDenied,
    /// The backend asked us to slow down (throttling, HTTP 429).
    RateLimited,
    /// The backend (or one zone of it) cannot serve now; it may later.
    Unavailable,
    /// A configuration value is missing or malformed.
    InvalidConfig,
    /// The backend cannot do this at all.
    Unsupported,
    /// Stored data failed an integrity check (checksum or length mismatch).
    Corrupt,
    /// Anything else; the message says what.
    Unexpected,
}

impl ErrorKind {
    /// Whether errors of this kind are worth retrying by default.
    pub fn is_transient_by_default(self) -> bool {
        matches!(self, ErrorKind::RateLimited | ErrorKind::Unavailable)
    }

    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::RateLimited => "rate limited",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::InvalidConfig => "invalid config",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Unexpected => "unexpected",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a backend or from ion itself.
///
/// Backends map every SDK, driver or process error to one of these in a single tested function;
/// no SDK error type crosses a trait boundary, though it stays reachable through
/// [`std::error::Error::source`].
pub struct Error {
    kind: ErrorKind,
    message: String,
    transient: bool,
    zone: Option<Zone>,
    retry_after: Option<Duration>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// `Result` with ion's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind`; transient when the kind is transient by default.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            transient: kind.is_transient_by_default(),
            zone: None,
            retry_after: None,
            source: None,
        }
    }

    /// [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// [`ErrorKind::AlreadyExists`].
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }
    /// [`ErrorKind::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    /// [`ErrorKind::InvalidInput`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
    /// [`ErrorKind::PermissionDenied`].
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, message)
    }
    /// [`ErrorKind::RateLimited`] (transient).
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::RateLimited, message)
    }
    /// [`ErrorKind::Unavailable`] (transient).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    /// [`ErrorKind::InvalidConfig`].
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidConfig, message)
    }
    /// [`ErrorKind::Unsupported`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    /// [`ErrorKind::Corrupt`].
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }
    /// [`ErrorKind::Unexpected`].
    pub fn unexpected(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unexpected, message)
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Overrides whether retrying may help.
    pub fn with_transient(mut self, transient: bool) -> Self {
        self.transient = transient;
        self
    }

    /// Scopes the error to one zone (e.g. no capacity there): the planner places elsewhere.
    pub fn with_zone(mut self, zone: Zone) -> Self {
        self.zone = Some(zone);
        self
    }

    /// The backend's hint for when to retry.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The zone the error is scoped to, if any.
    pub fn zone(&self) -> Option<&Zone> {
        self.zone.as_ref()
    }

    /// The backend's retry hint, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The human-readable message (without the kind).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if let Some(zone) = &self.zone {
            write!(f, " (zone {zone})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind)
            .field("message", &self.message)
            .field("transient", &self.transient);
        if let Some(zone) = &self.zone {
            d.field("zone", zone);
        }
        if let Some(after) = &self.retry_after {
            d.field("retry_after", after);
        }
        if let Some(source) = &self.source {
            d.field("source", &format_args!("{source}"));
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Self {
        Error::invalid_input(e.to_string()).with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_follows_kind_unless_overridden() {
        assert!(Error::unavailable("x").is_transient());
        assert!(Error::rate_limited("x").is_transient());
        assert!(!Error::not_found("x").is_transient());
        assert!(!Error::unavailable("x").with_transient(false).is_transient());
    }

    #[test]
    fn display_names_kind_and_zone() {
        let e = Error::unavailable("no capacity").with_zone(Zone::parse("us-east-1a").unwrap());
        assert_eq!(e.to_string(), "unavailable: no capacity (zone us-east-1a)");
    }

    #[test]
    fn validation_errors_become_invalid_input() {
        let e: Error = crate::name::TenantId::parse("a;b").unwrap_err().into();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("tenant id"));
    }
}
