//! Everything that crosses a wire, named once: header names, paths, size limits, and the exact
//! bytes of every error body this crate writes.
//!
//! Two APIs meet here. The **Runtime API** (`/2018-06-01`) is what a function's runtime talks
//! to; its error bodies are rendered the way AWS's Runtime Interface Emulator (RIE, the
//! production `rapid` code) renders them: Go's `json.Encoder` output of
//! `{"errorMessage":…,"errorType":…}` followed by a newline. The **Invoke API**
//! (`/2015-03-31`) is what callers use; its error bodies follow AWS's REST-JSON shape.
//!
//! Sources are cited per item as in `shared/docs/lambda-reference.md`: RIE paths are relative
//! to `internal/lambda/` of aws/aws-lambda-runtime-interface-emulator @ 4fa2157.

use http::HeaderName;
use serde::Serialize;

/// Runtime API header names (`/next` response headers and runtime request headers).
/// RIE: `rapi/rendering/rendering.go` (`renderInvokeHeaders`), `rapi/handler/*.go`.
pub mod runtime_header {
    use super::HeaderName;

    /// The invoke's request id (a UUID).
    pub const AWS_REQUEST_ID: HeaderName = HeaderName::from_static("lambda-runtime-aws-request-id");
    /// The invoke's deadline, Unix epoch milliseconds.
    pub const DEADLINE_MS: HeaderName = HeaderName::from_static("lambda-runtime-deadline-ms");
    /// ARN of the function that was invoked.
    pub const INVOKED_FUNCTION_ARN: HeaderName =
        HeaderName::from_static("lambda-runtime-invoked-function-arn");
    /// X-Ray tracing header.
    pub const TRACE_ID: HeaderName = HeaderName::from_static("lambda-runtime-trace-id");
    /// Client context JSON (decoded from the caller's base64 `X-Amz-Client-Context`).
    pub const CLIENT_CONTEXT: HeaderName = HeaderName::from_static("lambda-runtime-client-context");
    /// Cognito identity JSON.
    pub const COGNITO_IDENTITY: HeaderName =
        HeaderName::from_static("lambda-runtime-cognito-identity");
    /// Error type of `/error` and `/init/error`, and of a streamed response's error trailer.
    pub const FUNCTION_ERROR_TYPE: HeaderName =
        HeaderName::from_static("lambda-runtime-function-error-type");
    /// Base64 error body, in a streamed response's trailer.
    pub const FUNCTION_ERROR_BODY: HeaderName =
        HeaderName::from_static("lambda-runtime-function-error-body");
    /// `streaming` selects a streamed response.
    pub const FUNCTION_RESPONSE_MODE: HeaderName =
        HeaderName::from_static("lambda-runtime-function-response-mode");
}

/// Invoke API header names (AWS `Invoke`, reference §5.4).
pub mod invoke_header {
    use super::HeaderName;

    /// `RequestResponse` (default), `Event` or `DryRun`.
    pub const INVOCATION_TYPE: HeaderName = HeaderName::from_static("x-amz-invocation-type");
    /// `None` (default) or `Tail`.
    pub const LOG_TYPE: HeaderName = HeaderName::from_static("x-amz-log-type");
    /// Base64 of a JSON client context.
    pub const CLIENT_CONTEXT: HeaderName = HeaderName::from_static("x-amz-client-context");
    /// Base64 of the last 4 KB of the invoke's log (response, with `Tail`).
    pub const LOG_RESULT: HeaderName = HeaderName::from_static("x-amz-log-result");
    /// `Unhandled` when the function failed (response).
    pub const FUNCTION_ERROR: HeaderName = HeaderName::from_static("x-amz-function-error");
    /// `$LATEST` (response).
    pub const EXECUTED_VERSION: HeaderName = HeaderName::from_static("x-amz-executed-version");
    /// The request id (response).
    pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-amzn-requestid");
    /// The AWS error code of an error response.
    pub const ERROR_TYPE: HeaderName = HeaderName::from_static("x-amzn-errortype");
    /// X-Ray trace header a caller may pass.
    pub const TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");
}

/// Runtime API paths (axum route syntax).
pub mod runtime_path {
    /// `GET`: long-poll for the next event.
    pub const NEXT: &str = "/2018-06-01/runtime/invocation/next";
    /// `POST`: the invoke's response.
    pub const RESPONSE: &str = "/2018-06-01/runtime/invocation/{request_id}/response";
    /// `POST`: the invoke's error.
    pub const ERROR: &str = "/2018-06-01/runtime/invocation/{request_id}/error";
    /// `POST`: init failed.
    pub const INIT_ERROR: &str = "/2018-06-01/runtime/init/error";
    /// `GET`: RIE's legacy health check, answered `pong`.
    pub const PING: &str = "/ping";
}

/// Invoke API path (axum route syntax).
pub const INVOKE_PATH: &str = "/2015-03-31/functions/{function_name}/invocations";

/// The version every invoke runs (`X-Amz-Executed-Version`, `START … Version:`).
pub const LATEST: &str = "$LATEST";

/// Largest buffered response a runtime may post: 6 MiB + 100 B.
/// RIE `interop/model.go` `MaxPayloadSize`.
pub const MAX_RESPONSE_SIZE: usize = 6 * 1024 * 1024 + 100;
/// Largest streamed response (200 MiB since July 2025; reference §1.5).
pub const MAX_STREAMED_RESPONSE_SIZE: usize = 200 * 1024 * 1024;
/// Largest synchronous request payload (reference §5.4: "limit 6291456 bytes").
pub const MAX_SYNC_PAYLOAD: usize = 6 * 1024 * 1024;
/// Largest asynchronous (`Event`) request payload, 1 MB (reference, header note).
pub const MAX_ASYNC_PAYLOAD: usize = 1024 * 1024;
/// Size of the log tail returned with `X-Amz-Log-Type: Tail`.
pub const LOG_TAIL_BYTES: usize = 4 * 1024;
/// How long init may take before Lambda gives up on it (reference §2.3).
pub const INIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `Content-Type` of JSON bodies.
pub const APPLICATION_JSON: &str = "application/json";

/// The body RIE returns for an accepted response or error: `{"status":"OK"}` + newline.
/// RIE `rapi/rendering/rendering.go` `RenderAccepted`, `rapi/rendering/render_json.go`.
pub const ACCEPTED_BODY: &str = "{\"status\":\"OK\"}\n";

/// RIE's 404 body for an unknown path (Go's `http.NotFound`, served by chi).
pub const NOT_FOUND_BODY: &str = "404 page not found\n";

/// Go `json.Encoder` rendering of RIE's `model.ErrorResponse` (errorMessage first, trailing
/// newline). RIE `rapi/model/errorresponse.go`, `rapi/rendering/render_json.go`.
pub fn rie_error_body(error_type: &str, error_message: &str) -> String {
    #[derive(Serialize)]
    struct ErrorResponse<'a> {
        #[serde(rename = "errorMessage")]
        error_message: &'a str,
        #[serde(rename = "errorType")]
        error_type: &'a str,
    }
    let mut body = go_json(&ErrorResponse {
        error_message,
        error_type,
    });
    body.push('\n');
    body
}

/// Runtime API 400 for a request id that is not the invoke in flight.
/// RIE `rapi/rendering/render_error.go` `RenderInvalidRequestID`.
pub fn invalid_request_id_body() -> String {
    rie_error_body("InvalidRequestID", "Invalid request ID")
}

/// Runtime API 403 for a call out of order, e.g. `/response` twice.
/// RIE `rapi/handler/constants.go` `StateTransitionFailedForRuntimeMessageFormat`,
/// `core/states.go` `ErrNotAllowed`.
pub fn invalid_state_transition_body(from: &str, to: &str) -> String {
    rie_error_body(
        "InvalidStateTransition",
        &format!(
            "State transition from {from} to {to} failed for runtime. Error: State transition is not allowed"
        ),
    )
}

/// Runtime API 413 for a buffered response over [`MAX_RESPONSE_SIZE`] (or a streamed one over
/// `limit`). RIE `rapi/rendering/render_error.go` `RenderRequestEntityTooLarge`.
pub fn request_entity_too_large_body(limit: usize) -> String {
    rie_error_body(
        "RequestEntityTooLarge",
        &format!("Exceeded maximum allowed payload size ({limit} bytes)."),
    )
}

/// Runtime API 400 for an unknown `Lambda-Runtime-Function-Response-Mode`.
/// RIE `rapi/rendering/render_error.go` `RenderInvalidFunctionResponseMode`.
pub fn invalid_response_mode_body() -> String {
    rie_error_body(
        "InvalidFunctionResponseMode",
        "Invalid function response mode",
    )
}

/// Runtime API 400 when the response body could not be read to its end.
/// RIE `rapi/rendering/render_error.go` `RenderTruncatedHTTPRequestError`.
pub fn truncated_request_body() -> String {
    rie_error_body("TruncatedHTTPRequest", "HTTP request detected as truncated")
}

/// A caller-visible function error body with `errorType` first, as Lambda's platform errors
/// are observed (`Sandbox.Timedout`, `Runtime.ExitError`, reference §1.8).
pub fn platform_error_body(error_type: &str, error_message: &str) -> String {
    #[derive(Serialize)]
    struct PlatformError<'a> {
        #[serde(rename = "errorType")]
        error_type: &'a str,
        #[serde(rename = "errorMessage")]
        error_message: &'a str,
    }
    go_json(&PlatformError {
        error_type,
        error_message,
    })
}

/// The caller's body when a buffered response was too large:
/// `{"errorMessage":"Response payload size exceeded maximum allowed payload size (6291556 bytes).","errorType":"Function.ResponseSizeTooLarge"}`
/// (reference §1.4, as observed from real Lambda).
pub fn response_too_large_body(limit: usize) -> String {
    #[derive(Serialize)]
    struct TooLarge<'a> {
        #[serde(rename = "errorMessage")]
        error_message: &'a str,
        #[serde(rename = "errorType")]
        error_type: &'a str,
    }
    go_json(&TooLarge {
        error_message: &format!(
            "Response payload size exceeded maximum allowed payload size ({limit} bytes)."
        ),
        error_type: "Function.ResponseSizeTooLarge",
    })
}

/// Normalises a runtime-reported error type as RIE does: a value containing
/// `(Runtime|Function)\.[A-Z][a-zA-Z]+` (unanchored, as Go's `regexp.MatchString`) passes
/// through; otherwise `Function.Unknown` if it starts with `Function.`, else `Runtime.Unknown`.
/// RIE `fatalerror/fatalerror.go` `GetValidRuntimeOrFunctionErrorType`.
pub fn normalize_error_type(error_type: &str) -> String {
    fn matches_at(s: &[u8], prefix: &[u8]) -> bool {
        if !s.starts_with(prefix) {
            return false;
        }
        let rest = &s[prefix.len()..];
        rest.len() >= 2 && rest[0].is_ascii_uppercase() && rest[1].is_ascii_alphabetic()
    }
    let bytes = error_type.as_bytes();
    let valid = (0..bytes.len()).any(|i| {
        let s = &bytes[i..];
        matches_at(s, b"Runtime.") || matches_at(s, b"Function.")
    });
    if valid {
        error_type.to_owned()
    } else if error_type.starts_with("Function.") {
        "Function.Unknown".to_owned()
    } else {
        "Runtime.Unknown".to_owned()
    }
}

/// Serialises like Go's `json.Encoder` with `SetEscapeHTML(true)` (without the newline):
/// `<`, `>` and `&` become `\u003c`, `\u003e`, `\u0026`, and U+2028/U+2029 are escaped.
pub fn go_json<T: Serialize>(value: &T) -> String {
    // Serialising plain structs of strings cannot fail; fall back to an empty object anyway
    // rather than panic.
    let plain = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned());
    let mut out = String::with_capacity(plain.len());
    for c in plain.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// An Invoke API error: status, `x-amzn-ErrorType` code and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: http::StatusCode,
    /// AWS error code, sent as `x-amzn-ErrorType`.
    pub code: &'static str,
    /// The JSON body.
    pub body: String,
}

impl ApiError {
    /// `{"Type":"User"|"Service","message":…}` (botocore's documented shape, reference §5.1).
    pub fn new(status: http::StatusCode, code: &'static str, kind: &str, message: &str) -> Self {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(rename = "Type")]
            kind: &'a str,
            message: &'a str,
        }
        ApiError {
            status,
            code,
            body: go_json(&Body { kind, message }),
        }
    }

    /// 413 `RequestTooLargeException`:
    /// `{"Message":"6991583 byte payload is too large for the RequestResponse invocation type (limit 6291456 bytes)"}`
    /// (reference §5.4, as observed).
    pub fn request_too_large(size: u64, invocation_type: &str, limit: usize) -> Self {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(rename = "Message")]
            message: &'a str,
        }
        let message = format!(
            "{size} byte payload is too large for the {invocation_type} invocation type (limit {limit} bytes)"
        );
        ApiError {
            status: http::StatusCode::PAYLOAD_TOO_LARGE,
            code: "RequestTooLargeException",
            body: go_json(&Body { message: &message }),
        }
    }

    /// 429 `TooManyRequestsException`, reason
    /// `ReservedFunctionConcurrentInvocationLimitExceeded`, message `Rate Exceeded.`
    /// (shape per botocore's TooManyRequestsException: Type, message, Reason; reference §5.1).
    pub fn too_many_requests() -> Self {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(rename = "Reason")]
            reason: &'a str,
            #[serde(rename = "Type")]
            kind: &'a str,
            message: &'a str,
        }
        ApiError {
            status: http::StatusCode::TOO_MANY_REQUESTS,
            code: "TooManyRequestsException",
            body: go_json(&Body {
                reason: "ReservedFunctionConcurrentInvocationLimitExceeded",
                kind: "User",
                message: "Rate Exceeded.",
            }),
        }
    }

    /// 404 `UnknownOperationException` for a path no operation matches.
    pub fn unknown_operation() -> Self {
        ApiError::new(
            http::StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "User",
            "Unknown operation",
        )
    }

    /// 400 `InvalidParameterValueException`.
    pub fn invalid_parameter(message: &str) -> Self {
        ApiError::new(
            http::StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            "User",
            message,
        )
    }

    /// 400 `InvalidRequestContentException`.
    pub fn invalid_request_content(message: &str) -> Self {
        ApiError::new(
            http::StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            "User",
            message,
        )
    }

    /// 500 `ServiceException`: the platform itself failed.
    pub fn service(message: &str) -> Self {
        ApiError::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            "Service",
            message,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rie_bodies_are_byte_exact() {
        assert_eq!(
            invalid_request_id_body(),
            "{\"errorMessage\":\"Invalid request ID\",\"errorType\":\"InvalidRequestID\"}\n"
        );
        assert_eq!(
            request_entity_too_large_body(MAX_RESPONSE_SIZE),
            "{\"errorMessage\":\"Exceeded maximum allowed payload size (6291556 bytes).\",\"errorType\":\"RequestEntityTooLarge\"}\n"
        );
        assert_eq!(
            invalid_state_transition_body("Ready", "InvocationResponse"),
            "{\"errorMessage\":\"State transition from Ready to InvocationResponse failed for runtime. Error: State transition is not allowed\",\"errorType\":\"InvalidStateTransition\"}\n"
        );
    }

    #[test]
    fn caller_bodies_are_byte_exact() {
        assert_eq!(
            response_too_large_body(MAX_RESPONSE_SIZE),
            "{\"errorMessage\":\"Response payload size exceeded maximum allowed payload size (6291556 bytes).\",\"errorType\":\"Function.ResponseSizeTooLarge\"}"
        );
        assert_eq!(
            platform_error_body("Sandbox.Timedout", "RequestId: x Error: Task timed out after 1.00 seconds"),
            "{\"errorType\":\"Sandbox.Timedout\",\"errorMessage\":\"RequestId: x Error: Task timed out after 1.00 seconds\"}"
        );
        assert_eq!(
            ApiError::request_too_large(6991583, "RequestResponse", MAX_SYNC_PAYLOAD).body,
            "{\"Message\":\"6991583 byte payload is too large for the RequestResponse invocation type (limit 6291456 bytes)\"}"
        );
    }

    #[test]
    fn error_types_are_normalised_like_rie() {
        assert_eq!(
            normalize_error_type("Runtime.ImportModuleError"),
            "Runtime.ImportModuleError"
        );
        assert_eq!(normalize_error_type("Function.MyError"), "Function.MyError");
        assert_eq!(normalize_error_type("Unhandled"), "Runtime.Unknown");
        assert_eq!(normalize_error_type(""), "Runtime.Unknown");
        assert_eq!(normalize_error_type("Function.x"), "Function.Unknown");
        assert_eq!(normalize_error_type("Runtime.X"), "Runtime.Unknown");
        // Unanchored, as Go's MatchString.
        assert_eq!(normalize_error_type("MyRuntime.Crash"), "MyRuntime.Crash");
    }

    #[test]
    fn go_json_escapes_html() {
        assert_eq!(go_json(&"a<b>&c"), "\"a\\u003cb\\u003e\\u0026c\"");
    }
}
