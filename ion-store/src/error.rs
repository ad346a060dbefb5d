//! The one place where `mongodb` driver errors become `ion_core::Error`.

use ion_core::Error;
use mongodb::error::{
    Error as DriverError, ErrorKind as DriverKind, GridFsErrorKind, WriteFailure, RETRYABLE_ERROR,
    RETRYABLE_WRITE_ERROR, SYSTEM_OVERLOADED_ERROR, TRANSIENT_TRANSACTION_ERROR,
};

/// Server codes meaning "this member cannot serve now, another may soon": the primary stepped
/// down or is shutting down, an election is running, the network to a shard failed, the
/// operation hit a time limit. All are retried.
const UNAVAILABLE_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    43,    // CursorNotFound (the cursor's member went away)
    50,    // MaxTimeMSExpired
    64,    // WriteConcernFailed (wtimeout: the write may or may not have been applied)
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    134,   // ReadConcernMajorityNotAvailableYet
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10058, // LegacyNotPrimary
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

const DUPLICATE_KEY_CODES: &[i32] = &[11000, 11001, 12582];
/// IndexOptionsConflict, IndexKeySpecsConflict: an index of that name or keys already exists
/// with other options.
const INDEX_CONFLICT_CODES: &[i32] = &[85, 86];
const RATE_LIMITED_CODES: &[i32] = &[16500, 462];
const PERMISSION_CODES: &[i32] = &[11, 13, 18, 33];
const INVALID_INPUT_CODES: &[i32] = &[2, 9, 10, 14, 17, 52, 56, 57, 10334, 17419];
const UNSUPPORTED_CODES: &[i32] = &[59, 115, 238, 303];

/// Maps a driver error to ion's kinds; the driver error stays reachable as the source.
///
/// Transient (retried by [`crate::RetryPolicy`]): network and pool errors, server selection
/// timeouts, primary stepdown / not writable primary / shutting down, write concern timeouts, and
/// anything the driver labels retryable. A transient error on a write means its outcome is
/// unknown: callers resolve it by reading back, never by assuming either outcome.
pub(crate) fn map_error(e: DriverError) -> Error {
    // The driver also labels plain connection failures "overloaded" (back-pressure retries);
    // a refused connection is an unavailable server, not throttling.
    let overloaded = e.contains_label(SYSTEM_OVERLOADED_ERROR)
        && !matches!(
            e.kind.as_ref(),
            DriverKind::Io(_) | DriverKind::ConnectionPoolCleared { .. }
        );
    let labelled_retryable = e.contains_label(RETRYABLE_WRITE_ERROR)
        || e.contains_label(RETRYABLE_ERROR)
        || e.contains_label(TRANSIENT_TRANSACTION_ERROR);
    let mapped = match e.kind.as_ref() {
        DriverKind::Io(io) => Error::unavailable(format!("mongodb connection failed: {io}")),
        DriverKind::ConnectionPoolCleared { .. } => {
            Error::unavailable(format!("mongodb connection pool cleared: {e}"))
        }
        DriverKind::ServerSelection { message, .. } => {
            Error::unavailable(format!("no suitable mongodb server: {message}"))
        }
        DriverKind::DnsResolve { message, .. } => {
            Error::unavailable(format!("mongodb dns resolution failed: {message}"))
        }
        DriverKind::Authentication { message, .. } => {
            Error::permission_denied(format!("mongodb authentication failed: {message}"))
        }
        DriverKind::InvalidArgument { message, .. } => {
            Error::invalid_input(format!("mongodb refused an argument: {message}"))
        }
        DriverKind::InvalidTlsConfig { message, .. } => {
            Error::invalid_config(format!("mongodb tls configuration: {message}"))
        }
        DriverKind::BsonSerialization(err) => {
            Error::invalid_input(format!("value does not serialize to bson: {err}"))
        }
        DriverKind::BsonDeserialization(err) => {
            Error::unexpected(format!("stored bson does not deserialize: {err}"))
        }
        DriverKind::Command(c) => by_code(c.code, &c.code_name, &c.message),
        DriverKind::Write(WriteFailure::WriteError(w)) => {
            by_code(w.code, w.code_name.as_deref().unwrap_or(""), &w.message)
        }
        DriverKind::Write(WriteFailure::WriteConcernError(w)) => {
            // The write reached the primary but not the requested members in time: the
            // outcome is unknown until read back, so it is transient whatever the code.
            Error::unavailable(format!(
                "mongodb write concern not satisfied (the write may have been applied): code {} ({}): {}",
                w.code, w.code_name, w.message
            ))
        }
        DriverKind::InsertMany(m) => match (&m.write_errors, &m.write_concern_error) {
            (Some(errs), _) if !errs.is_empty() => by_code(
                errs[0].code,
                errs[0].code_name.as_deref().unwrap_or(""),
                &errs[0].message,
            ),
            (_, Some(w)) => Error::unavailable(format!(
                "mongodb write concern not satisfied (the write may have been applied): code {} ({}): {}",
                w.code, w.code_name, w.message
            )),
            _ => Error::unexpected(format!("mongodb insert failed: {e}")),
        },
        DriverKind::GridFs(g) => return map_gridfs(g, &e),
        DriverKind::IncompatibleServer { message, .. } => {
            Error::unsupported(format!("mongodb server is incompatible: {message}"))
        }
        DriverKind::SessionsNotSupported => {
            Error::unsupported("the mongodb deployment does not support sessions")
        }
        DriverKind::Shutdown => Error::unexpected("the mongodb client was shut down"),
        _ => Error::unexpected(format!("mongodb: {e}")),
    };
    let mapped = if overloaded && mapped.kind() != ion_core::ErrorKind::AlreadyExists {
        Error::rate_limited(format!("mongodb is overloaded: {}", mapped.message()))
    } else if labelled_retryable && !mapped.is_transient() {
        Error::unavailable(mapped.message().to_owned())
    } else {
        mapped
    };
    mapped.with_source(e)
}

/// Maps a server error code, whether it came as a command error or a write error.
fn by_code(code: i32, name: &str, message: &str) -> Error {
    let text = format!("mongodb error {code} ({name}): {message}");
    if DUPLICATE_KEY_CODES.contains(&code) || INDEX_CONFLICT_CODES.contains(&code) {
        Error::already_exists(text)
    } else if UNAVAILABLE_CODES.contains(&code) {
        Error::unavailable(text)
    } else if RATE_LIMITED_CODES.contains(&code) {
        Error::rate_limited(text)
    } else if PERMISSION_CODES.contains(&code) {
        Error::permission_denied(text)
    } else if code == 26 {
        Error::not_found(text)
    } else if INVALID_INPUT_CODES.contains(&code) {
        Error::invalid_input(text)
    } else if UNSUPPORTED_CODES.contains(&code) {
        Error::unsupported(text)
    } else if code == 100 {
        // UnsatisfiableWriteConcern: e.g. w=3 against fewer data-bearing members.
        Error::invalid_config(text)
    } else {
        Error::unexpected(text)
    }
}

fn map_gridfs(g: &GridFsErrorKind, e: &DriverError) -> Error {
    match g {
        GridFsErrorKind::FileNotFound { .. } | GridFsErrorKind::RevisionNotFound { .. } => {
            Error::not_found(format!("gridfs: {g:?}")).with_source(e.clone())
        }
        GridFsErrorKind::MissingChunk { .. }
        | GridFsErrorKind::WrongSizeChunk { .. }
        | GridFsErrorKind::WrongNumberOfChunks { .. } => {
            Error::corrupt(format!("gridfs chunks are damaged: {g:?}")).with_source(e.clone())
        }
        // The cleanup after a failed upload failed too: report the original failure (what the
        // caller can act on); leftover chunks are collected by `sweep_incomplete`.
        GridFsErrorKind::AbortError {
            original_error: Some(original),
            ..
        } => map_error(original.clone()),
        GridFsErrorKind::AbortError { delete_error, .. } => map_error(delete_error.clone()),
        _ => Error::unexpected(format!("gridfs: {g:?}")).with_source(e.clone()),
    }
}

/// Maps an I/O error from a GridFS stream: the driver wraps its own errors in `io::Error`.
pub(crate) fn map_io_error(e: std::io::Error) -> Error {
    if e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<DriverError>().is_some())
    {
        let inner = e
            .into_inner()
            .and_then(|b| b.downcast::<DriverError>().ok())
            .expect("checked above");
        return map_error(*inner);
    }
    Error::unavailable(format!("gridfs stream failed: {e}")).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ion_core::ErrorKind;
    use mongodb::bson::{doc, from_document};
    use mongodb::error::{CommandError, WriteConcernError, WriteError};

    fn command(code: i32, name: &str) -> DriverError {
        let c: CommandError =
            from_document(doc! { "code": code, "codeName": name, "errmsg": "boom" }).unwrap();
        DriverKind::Command(c).into()
    }

    fn write(code: i32) -> DriverError {
        let w: WriteError = from_document(doc! { "code": code, "errmsg": "E11000 dup" }).unwrap();
        DriverKind::Write(WriteFailure::WriteError(w)).into()
    }

    fn kind_and_transient(e: DriverError) -> (ErrorKind, bool) {
        let m = map_error(e);
        (m.kind(), m.is_transient())
    }

    #[test]
    fn duplicate_key_is_already_exists_and_not_retried() {
        assert_eq!(
            kind_and_transient(write(11000)),
            (ErrorKind::AlreadyExists, false)
        );
        assert_eq!(
            kind_and_transient(command(11000, "DuplicateKey")),
            (ErrorKind::AlreadyExists, false)
        );
        assert_eq!(
            kind_and_transient(command(85, "IndexOptionsConflict")),
            (ErrorKind::AlreadyExists, false)
        );
    }

    #[test]
    fn stepdown_and_not_writable_primary_are_transient() {
        for (code, name) in [
            (10107, "NotWritablePrimary"),
            (189, "PrimarySteppedDown"),
            (11602, "InterruptedDueToReplStateChange"),
            (91, "ShutdownInProgress"),
            (13435, "NotPrimaryNoSecondaryOk"),
        ] {
            assert_eq!(
                kind_and_transient(command(code, name)),
                (ErrorKind::Unavailable, true),
                "{name}"
            );
        }
    }

    #[test]
    fn network_errors_are_transient() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e: DriverError = DriverKind::Io(std::sync::Arc::new(io)).into();
        assert_eq!(kind_and_transient(e), (ErrorKind::Unavailable, true));
    }

    #[test]
    fn write_concern_errors_are_transient_and_say_the_write_may_have_happened() {
        let w: WriteConcernError = from_document(doc! {
            "code": 64, "codeName": "WriteConcernFailed", "errmsg": "waiting for replication timed out",
            "errorLabels": ["RetryableWriteError"],
        })
        .unwrap();
        let e: DriverError = DriverKind::Write(WriteFailure::WriteConcernError(w)).into();
        assert!(e.contains_label(RETRYABLE_WRITE_ERROR));
        let m = map_error(e);
        assert_eq!(m.kind(), ErrorKind::Unavailable);
        assert!(m.is_transient());
        assert!(m.message().contains("may have been applied"), "{m}");
    }

    #[test]
    fn auth_and_authorization_are_permission_denied() {
        assert_eq!(
            kind_and_transient(command(18, "AuthenticationFailed")),
            (ErrorKind::PermissionDenied, false)
        );
        assert_eq!(
            kind_and_transient(command(13, "Unauthorized")),
            (ErrorKind::PermissionDenied, false)
        );
    }

    #[test]
    fn other_codes_map_to_their_kinds() {
        assert_eq!(
            kind_and_transient(command(16500, "RequestRateTooLarge")),
            (ErrorKind::RateLimited, true)
        );
        assert_eq!(
            kind_and_transient(command(26, "NamespaceNotFound")),
            (ErrorKind::NotFound, false)
        );
        assert_eq!(
            kind_and_transient(command(2, "BadValue")),
            (ErrorKind::InvalidInput, false)
        );
        assert_eq!(
            kind_and_transient(command(238, "NotImplemented")),
            (ErrorKind::Unsupported, false)
        );
        assert_eq!(
            kind_and_transient(command(100, "UnsatisfiableWriteConcern")),
            (ErrorKind::InvalidConfig, false)
        );
        assert_eq!(
            kind_and_transient(command(8000, "AtlasError")),
            (ErrorKind::Unexpected, false)
        );
    }

    #[test]
    fn gridfs_damage_is_corrupt_and_client_shutdown_is_not_transient() {
        let e: DriverError = DriverKind::Shutdown.into();
        assert_eq!(kind_and_transient(e), (ErrorKind::Unexpected, false));
        let e: DriverError = DriverKind::GridFs(GridFsErrorKind::UploadStreamClosed).into();
        assert_eq!(map_error(e).kind(), ErrorKind::Unexpected);
    }

    #[test]
    fn io_wrapped_driver_errors_keep_their_kind() {
        let inner = write(11000);
        let io = std::io::Error::other(inner);
        assert_eq!(map_io_error(io).kind(), ErrorKind::AlreadyExists);
        let plain = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipe");
        assert!(map_io_error(plain).is_transient());
    }

    #[test]
    fn the_driver_error_stays_reachable_as_source() {
        let m = map_error(command(10107, "NotWritablePrimary"));
        let src = std::error::Error::source(&m).expect("source");
        assert!(src.downcast_ref::<DriverError>().is_some());
    }
}
