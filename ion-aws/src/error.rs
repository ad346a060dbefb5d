//! The one mapping from AWS SDK errors (S3 and EC2) to `ion_core::Error`.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::waiters::error::WaiterError;
use ion_core::{Error, ErrorKind, Zone};

/// What the SDK reported, reduced to the facts the mapping depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure<'a> {
    /// The service answered with an error code and/or HTTP status.
    Service {
        /// The AWS error code (`NoSuchKey`, `InsufficientInstanceCapacity`, …).
        code: Option<&'a str>,
        /// The HTTP status.
        status: Option<u16>,
    },
    /// The request may have reached the service but no usable answer came back (connection
    /// reset, attempt or operation timeout, truncated response).
    NoResponse,
    /// The request could not be built or sent for a reason retrying will not fix.
    Local,
}

/// Codes meaning "no capacity for this request in this zone": the planner places elsewhere.
const CAPACITY: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "InsufficientAddressCapacity",
    "InsufficientCapacityOnHost",
    "InsufficientFreeAddressesInSubnet",
    "InsufficientVolumeCapacity",
];
/// Codes meaning "this zone cannot run this request at all" (e.g. instance type not offered).
const ZONE_UNSUPPORTED: &[&str] = &["Unsupported"];
const THROTTLING: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "BandwidthLimitExceeded",
    "EC2ThrottledException",
    "PriorRequestNotComplete",
];
const AUTH: &[&str] = &[
    "AuthFailure",
    "UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "MissingAuthenticationToken",
    "OptInRequired",
    "Blocked",
    "AccountProblem",
    "AllAccessDisabled",
];
/// Account-wide quotas: not transient and not zone-scoped; an operator must raise them.
const QUOTA: &[&str] = &[
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
    "MaxSpotInstanceCountExceeded",
    "SnapshotLimitExceeded",
    "VolumeLimitExceeded",
    "TooManyBuckets",
];
const NOT_FOUND: &[&str] = &[
    "NoSuchKey",
    "NotFound",
    "NoSuchBucket",
    "NoSuchUpload",
    "NoSuchVersion",
];
const ALREADY_EXISTS: &[&str] = &["BucketAlreadyOwnedByYou", "BucketAlreadyExists"];
const CONFLICT: &[&str] = &[
    "PreconditionFailed",
    "OperationAborted",
    "ConditionalRequestConflict",
    "IncorrectState",
    "IncorrectInstanceState",
    "IdempotentParameterMismatch",
    "ConcurrentTagAccess",
];
const CORRUPT: &[&str] = &[
    "BadDigest",
    "InvalidDigest",
    "XAmzContentSHA256Mismatch",
    "XAmzContentChecksumMismatch",
];
const SERVER: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServerInternal",
];
const UNSUPPORTED: &[&str] = &["NotImplemented", "UnsupportedOperation"];

/// Maps one failure to an ion error. `operation` names the call (`"s3 put_object"`); `zone` is
/// the zone the call targeted, if any, so capacity errors can be scoped to it.
pub(crate) fn classify(
    operation: &str,
    failure: Failure<'_>,
    detail: &str,
    zone: Option<&Zone>,
) -> Error {
    let message = if detail.is_empty() {
        operation.to_owned()
    } else {
        format!("{operation}: {detail}")
    };
    let (code, status) = match failure {
        Failure::NoResponse => return Error::unavailable(message),
        Failure::Local => return Error::unexpected(message),
        Failure::Service { code, status } => (code.unwrap_or(""), status),
    };
    let is = |set: &[&str]| set.contains(&code);
    if is(CAPACITY) {
        let e = Error::unavailable(message);
        return match zone {
            Some(z) => e.with_zone(z.clone()),
            None => e,
        };
    }
    if is(ZONE_UNSUPPORTED) {
        if let Some(z) = zone {
            return Error::unavailable(message)
                .with_zone(z.clone())
                .with_transient(false);
        }
        return Error::unsupported(message);
    }
    if is(THROTTLING) || status == Some(429) {
        return Error::rate_limited(message);
    }
    if is(AUTH) || matches!(status, Some(401 | 403)) {
        return Error::permission_denied(message);
    }
    if is(QUOTA) {
        return Error::unavailable(message).with_transient(false);
    }
    if is(NOT_FOUND) || code.ends_with(".NotFound") {
        return Error::not_found(message);
    }
    if is(ALREADY_EXISTS) || code.ends_with(".Duplicate") || code.ends_with("AlreadyExists") {
        return Error::already_exists(message);
    }
    if is(CONFLICT) || matches!(status, Some(409 | 412)) {
        return Error::conflict(message);
    }
    if is(CORRUPT) {
        return Error::corrupt(message);
    }
    if is(SERVER) || matches!(status, Some(500 | 502 | 503 | 504)) {
        return Error::unavailable(message);
    }
    if is(UNSUPPORTED) || status == Some(501) {
        return Error::unsupported(message);
    }
    if status == Some(404) {
        return Error::not_found(message);
    }
    if code.starts_with("Invalid")
        || code.starts_with("Malformed")
        || code.starts_with("Missing")
        || code.ends_with(".Malformed")
        || matches!(status, Some(400..=499))
    {
        return Error::invalid_input(message);
    }
    Error::unexpected(message)
}

/// Maps any S3 or EC2 SDK error to an ion error, keeping the SDK error as the source.
pub(crate) fn map_sdk_error<E>(
    operation: &str,
    err: SdkError<E, HttpResponse>,
    zone: Option<&Zone>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (failure, detail) = match &err {
        SdkError::ServiceError(ctx) => {
            let e = ctx.err();
            let detail = match (e.code(), e.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_owned(),
                (None, Some(m)) => m.to_owned(),
                (None, None) => format!("http status {}", ctx.raw().status().as_u16()),
            };
            let failure = Failure::Service {
                code: None,
                status: Some(ctx.raw().status().as_u16()),
            };
            (failure, detail)
        }
        SdkError::TimeoutError(_) => (Failure::NoResponse, "timed out".to_owned()),
        SdkError::DispatchFailure(d) => {
            let what = if d.is_timeout() {
                "timed out"
            } else if d.is_io() {
                "connection failed"
            } else if d.is_user() {
                "could not send the request"
            } else {
                "dispatch failed"
            };
            let failure = if d.is_io() || d.is_timeout() || d.is_other() {
                Failure::NoResponse
            } else {
                Failure::Local
            };
            (failure, format!("{what}: {}", source_chain(&err)))
        }
        SdkError::ResponseError(_) => (
            Failure::NoResponse,
            format!("bad response: {}", source_chain(&err)),
        ),
        SdkError::ConstructionFailure(_) => (
            Failure::Local,
            format!("could not build the request: {}", source_chain(&err)),
        ),
        _ => (Failure::Local, source_chain(&err)),
    };
    // The code lives inside the error; borrow it here so `failure` can carry it.
    let code = err
        .as_service_error()
        .and_then(|e| e.code())
        .map(str::to_owned);
    let failure = match failure {
        Failure::Service { status, .. } => Failure::Service {
            code: code.as_deref(),
            status,
        },
        other => other,
    };
    classify(operation, failure, &detail, zone).with_source(err)
}

fn source_chain(err: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut next = err.source();
    while let Some(e) = next {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&e.to_string());
        next = e.source();
    }
    if out.is_empty() {
        err.to_string()
    } else {
        out
    }
}

/// Maps a failed SDK waiter: giving up is transient `Unavailable`; reaching a failure state
/// (e.g. the instance terminated while we waited for it to run) is permanent `Unavailable`.
pub(crate) fn map_waiter_error<O, E>(operation: &str, err: WaiterError<O, E>) -> Error
where
    O: std::fmt::Debug + Send + Sync + 'static,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        WaiterError::ExceededMaxWait(_) => Error::unavailable(format!(
            "{operation}: gave up waiting after the maximum wait"
        )),
        WaiterError::FailureState(_) => Error::unavailable(format!(
            "{operation}: the resource reached a state it will not recover from"
        ))
        .with_transient(false),
        WaiterError::OperationFailed(f) => map_sdk_error(operation, f.into_error(), None),
        other => Error::unexpected(format!("{operation}: {}", source_chain(&other))),
    }
}

/// Maps a failure while streaming a response body: a checksum mismatch is `Corrupt`, anything
/// else (connection lost part-way) is transient `Unavailable`.
pub(crate) fn map_body_error(
    operation: &str,
    err: aws_smithy_types::byte_stream::error::Error,
) -> Error {
    let mut detail = err.to_string();
    let chain = source_chain(&err);
    if chain != detail {
        detail = format!("{detail}: {chain}");
    }
    let e = if detail.to_ascii_lowercase().contains("checksum") {
        Error::corrupt(format!("{operation}: {detail}"))
    } else {
        Error::unavailable(format!("{operation}: {detail}"))
    };
    e.with_source(err)
}

/// True when `err` is a "no usable answer" failure after which the request may or may not have
/// taken effect; launches reconcile by idempotency tag before trying again.
pub(crate) fn response_lost(err: &Error) -> bool {
    err.kind() == ErrorKind::Unavailable && err.zone().is_none() && err.is_transient()
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_smithy_types::body::SdkBody;

    use super::*;

    fn zone() -> Zone {
        Zone::parse("us-east-1a").unwrap()
    }

    fn service(code: &str, status: u16) -> Error {
        let err = GetObjectError::generic(ErrorMetadata::builder().code(code).message("m").build());
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        map_sdk_error("op", SdkError::service_error(err, raw), Some(&zone()))
    }

    #[test]
    fn capacity_is_unavailable_scoped_to_the_zone() {
        for code in [
            "InsufficientInstanceCapacity",
            "InsufficientHostCapacity",
            "InsufficientCapacity",
        ] {
            let e = service(code, 500);
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{code}");
            assert!(e.is_transient(), "{code}");
            assert_eq!(e.zone(), Some(&zone()), "{code}");
            assert!(!response_lost(&e), "a refusal is not a lost response");
        }
        let e = classify(
            "op",
            Failure::Service {
                code: Some("InsufficientInstanceCapacity"),
                status: Some(500),
            },
            "",
            None,
        );
        assert_eq!(e.zone(), None, "no zone to scope to");
    }

    #[test]
    fn zone_without_the_instance_type_is_zone_scoped_and_permanent() {
        let e = service("Unsupported", 400);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert_eq!(e.zone(), Some(&zone()));
        assert!(!e.is_transient());
    }

    #[test]
    fn throttling_is_rate_limited_and_transient() {
        for (code, status) in [
            ("RequestLimitExceeded", 503),
            ("Throttling", 400),
            ("SlowDown", 503),
            ("", 429),
        ] {
            let e = service(code, status);
            assert_eq!(e.kind(), ErrorKind::RateLimited, "{code}");
            assert!(e.is_transient(), "{code}");
            assert_eq!(e.zone(), None, "throttling is not a zone problem");
        }
    }

    #[test]
    fn auth_errors_are_permission_denied_and_not_retried() {
        for (code, status) in [
            ("AuthFailure", 401),
            ("UnauthorizedOperation", 403),
            ("AccessDenied", 403),
            ("InvalidClientTokenId", 403),
            ("SignatureDoesNotMatch", 403),
            ("", 403),
        ] {
            let e = service(code, status);
            assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{code}");
            assert!(!e.is_transient(), "{code}");
        }
    }

    #[test]
    fn missing_things_are_not_found() {
        for (code, status) in [
            ("NoSuchKey", 404),
            ("NotFound", 404),
            ("NoSuchBucket", 404),
            ("NoSuchUpload", 404),
            ("InvalidInstanceID.NotFound", 400),
            ("InvalidSnapshot.NotFound", 400),
            ("", 404),
        ] {
            assert_eq!(service(code, status).kind(), ErrorKind::NotFound, "{code}");
        }
    }

    #[test]
    fn other_codes_map_to_their_kinds() {
        let cases = [
            ("BucketAlreadyOwnedByYou", 409, ErrorKind::AlreadyExists),
            ("InvalidGroup.Duplicate", 400, ErrorKind::AlreadyExists),
            ("PreconditionFailed", 412, ErrorKind::Conflict),
            ("IdempotentParameterMismatch", 400, ErrorKind::Conflict),
            ("BadDigest", 400, ErrorKind::Corrupt),
            ("InternalError", 500, ErrorKind::Unavailable),
            ("", 503, ErrorKind::Unavailable),
            ("NotImplemented", 501, ErrorKind::Unsupported),
            ("InvalidParameterValue", 400, ErrorKind::InvalidInput),
            ("InvalidInstanceID.Malformed", 400, ErrorKind::InvalidInput),
            ("EntityTooSmall", 400, ErrorKind::InvalidInput),
            ("InstanceLimitExceeded", 400, ErrorKind::Unavailable),
            ("Weird", 302, ErrorKind::Unexpected),
        ];
        for (code, status, kind) in cases {
            let e = service(code, status);
            assert_eq!(e.kind(), kind, "{code}");
            assert_eq!(e.zone(), None, "{code} is not zone-scoped");
        }
        assert!(service("InternalError", 500).is_transient());
        assert!(!service("InstanceLimitExceeded", 400).is_transient());
        assert!(!service("InvalidParameterValue", 400).is_transient());
    }

    #[test]
    fn message_names_operation_and_code_and_keeps_the_source() {
        let e = service("NoSuchKey", 404);
        assert!(e.message().starts_with("op: NoSuchKey"), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn lost_responses_are_transient_unavailable() {
        let timeout: SdkError<GetObjectError, HttpResponse> =
            SdkError::timeout_error("attempt timeout");
        let e = map_sdk_error("op", timeout, Some(&zone()));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_transient());
        assert_eq!(e.zone(), None, "a timeout says nothing about capacity");
        assert!(response_lost(&e));

        let io: SdkError<GetObjectError, HttpResponse> = SdkError::dispatch_failure(
            ConnectorError::io(Box::new(std::io::Error::other("connection reset"))),
        );
        let e = map_sdk_error("op", io, None);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.message().contains("connection reset"), "{e}");
        assert!(response_lost(&e));

        let user: SdkError<GetObjectError, HttpResponse> = SdkError::dispatch_failure(
            ConnectorError::user(Box::new(std::io::Error::other("bad"))),
        );
        let e = map_sdk_error("op", user, None);
        assert_eq!(e.kind(), ErrorKind::Unexpected);
        assert!(!e.is_transient());
    }

    #[test]
    fn construction_failures_are_not_transient() {
        let err: SdkError<GetObjectError, HttpResponse> =
            SdkError::construction_failure("missing bucket");
        let e = map_sdk_error("op", err, None);
        assert_eq!(e.kind(), ErrorKind::Unexpected);
        assert!(!e.is_transient());
    }
}
