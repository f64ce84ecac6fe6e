//! AWS error responses of the control plane, as botocore's Lambda model (2015-03-31) shapes
//! them: HTTP status, `x-amzn-ErrorType: <Code>` and a JSON body `{"Type":…,"message":…}`.
//!
//! The model spells the message member `Message` for `ResourceNotFoundException` and
//! `ServiceException`, and `message` for the others; each constructor follows the model (botocore
//! reads either). The status and header come from [`ApiError`], defined once in
//! `lambox_runtime::wire` and shared with the invoke path.

use http::StatusCode;
use lambox_runtime::wire::go_json;
pub use lambox_runtime::wire::ApiError;
use serde::Serialize;

fn with_capital_message(status: StatusCode, code: &'static str, kind: &str, msg: &str) -> ApiError {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(rename = "Type")]
        kind: &'a str,
        #[serde(rename = "Message")]
        message: &'a str,
    }
    ApiError {
        status,
        code,
        body: go_json(&Body { kind, message: msg }),
    }
}

/// 404 `ResourceNotFoundException` (body member `Message`).
pub fn not_found(message: &str) -> ApiError {
    with_capital_message(
        StatusCode::NOT_FOUND,
        "ResourceNotFoundException",
        "User",
        message,
    )
}

/// 404 for a function (or version) that does not exist: `Function not found: ARN`.
pub fn function_not_found(arn: &str) -> ApiError {
    not_found(&format!("Function not found: {arn}"))
}

/// 400 `InvalidParameterValueException`.
pub fn invalid_parameter(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "InvalidParameterValueException",
        "User",
        message,
    )
}

/// 400 `ValidationException`, the shape AWS's front end gives a value that breaks a constraint
/// of the API model: `1 validation error detected: Value 'X' at 'field' failed to satisfy
/// constraint: …`.
pub fn validation(value: &str, field: &str, constraint: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "ValidationException",
        "User",
        &format!(
            "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {constraint}"
        ),
    )
}

/// 409 `ResourceConflictException`.
pub fn conflict(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "ResourceConflictException",
        "User",
        message,
    )
}

/// 412 `PreconditionFailedException` for a stale `RevisionId`.
pub fn precondition_failed(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "PreconditionFailedException",
        "User",
        &format!(
            "The Revision Id provided does not match the latest Revision Id. Call the {what} API to retrieve the latest Revision Id"
        ),
    )
}

/// 400 `InvalidRequestContentException` (a body that is not the JSON the operation takes).
pub fn invalid_request_content(message: &str) -> ApiError {
    ApiError::invalid_request_content(message)
}

/// 500 `ServiceException` (body member `Message`): lambox itself failed.
pub fn service(message: &str) -> ApiError {
    with_capital_message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "ServiceException",
        "Service",
        message,
    )
}

/// Why an invoke is throttled (botocore's `ThrottleReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleReason {
    /// The account's concurrency is used up.
    ConcurrentInvocationLimitExceeded,
    /// The function's reserved concurrency is used up (or is 0).
    ReservedFunctionConcurrentInvocationLimitExceeded,
}

impl ThrottleReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ThrottleReason::ConcurrentInvocationLimitExceeded => {
                "ConcurrentInvocationLimitExceeded"
            }
            ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded => {
                "ReservedFunctionConcurrentInvocationLimitExceeded"
            }
        }
    }
}

/// 429 `TooManyRequestsException` with `Reason`: `{"Reason":…,"Type":"User","message":"Rate
/// Exceeded."}`.
pub fn too_many_requests(reason: ThrottleReason) -> ApiError {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(rename = "Reason")]
        reason: &'a str,
        #[serde(rename = "Type")]
        kind: &'a str,
        message: &'a str,
    }
    ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        code: "TooManyRequestsException",
        body: go_json(&Body {
            reason: reason.as_str(),
            kind: "User",
            message: "Rate Exceeded.",
        }),
    }
}

/// Failures of lambox's own state (the SQLite database): reported to callers as
/// `ServiceException`.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database {path}: {source}")]
    Db {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database {path}: stored record {key} is unreadable: {source}")]
    Corrupt {
        path: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "state database {path}: schema version {found} is newer than this lambox ({supported})"
    )]
    TooNew {
        path: String,
        found: i64,
        supported: i64,
    },
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> ApiError {
        tracing::error!(error = %e, "state failure");
        service(&e.to_string())
    }
}
