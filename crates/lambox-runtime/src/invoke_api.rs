//! The caller-facing `Invoke` operation (`POST /2015-03-31/functions/{name}/invocations`,
//! reference §5.4) over a [`Pool`].
//!
//! Request headers: `X-Amz-Invocation-Type` (`RequestResponse` default → 200, `Event` → 202
//! and the invoke runs in the background, `DryRun` → 204), `X-Amz-Log-Type: Tail` (→
//! `X-Amz-Log-Result`, base64 of the last 4 KB of the invoke's log; the answer then waits for
//! the invoke's `REPORT`), `X-Amz-Client-Context` (base64 of a JSON object, passed to the
//! runtime decoded), `X-Amzn-Trace-Id`.
//!
//! Response headers: `X-Amz-Executed-Version: $LATEST`, `x-amzn-RequestId`,
//! `X-Amz-Function-Error: Unhandled` when the function failed, `Content-Type` as the runtime
//! gave it (else `application/json`).
//!
//! The payload must be JSON (an empty one is sent to the function as `{}`), at most 6 MB
//! (`Event`: 1 MB): else 400 `InvalidRequestContentException` or 413
//! `RequestTooLargeException`. A full queue is 429 `TooManyRequestsException`; a platform
//! failure 500 `ServiceException`; any other path or method 404 `UnknownOperationException`.
//! Errors carry `x-amzn-ErrorType` and a JSON body (see [`ApiError`]).
//!
//! A streamed response is passed on chunk by chunk as the runtime sends it. If it fails midway
//! (error trailer, timeout) the connection is cut, since the status line is long gone; with
//! `Tail` it is collected first, so a failure becomes an ordinary function error.

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::invoke::{FunctionError, InvokeError, InvokeRequest, ResponseBody};
use crate::pool::Pool;
use crate::runtime_api::{read_limited, Limited};
use crate::wire::{self, invoke_header as h, ApiError, APPLICATION_JSON, LATEST};

/// The invoke API for one function: every function name in the path resolves to `pool`
/// (what `lambox run` serves).
pub fn invoke_router(pool: Pool) -> Router {
    Router::new()
        .route(wire::INVOKE_PATH, post(invoke))
        .method_not_allowed_fallback(unknown_operation)
        .fallback(unknown_operation)
        .with_state(pool)
}

async fn invoke(State(pool): State<Pool>, headers: HeaderMap, body: Body) -> Response {
    handle_invoke(&pool, &headers, body).await
}

async fn unknown_operation() -> Response {
    ApiError::unknown_operation().into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, self.body).into_response();
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(APPLICATION_JSON));
        headers.insert(h::ERROR_TYPE, HeaderValue::from_static(self.code));
        if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().hyphenated().to_string()) {
            headers.insert(h::REQUEST_ID, v);
        }
        resp
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

impl InvocationType {
    fn name(self) -> &'static str {
        match self {
            InvocationType::RequestResponse => "RequestResponse",
            InvocationType::Event => "Event",
            InvocationType::DryRun => "DryRun",
        }
    }
}

fn enum_error(value: &[u8], field: &str, allowed: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "ValidationException",
        "User",
        &format!(
            "1 validation error detected: Value '{}' at '{field}' failed to satisfy constraint: Member must satisfy enum value set: [{allowed}]",
            String::from_utf8_lossy(value)
        ),
    )
}

struct Parsed {
    invocation_type: InvocationType,
    tail: bool,
    client_context: Option<String>,
    trace_id: Option<String>,
}

fn parse_headers(headers: &HeaderMap) -> Result<Parsed, ApiError> {
    let invocation_type = match headers.get(h::INVOCATION_TYPE).map(HeaderValue::as_bytes) {
        None | Some(b"RequestResponse") => InvocationType::RequestResponse,
        Some(b"Event") => InvocationType::Event,
        Some(b"DryRun") => InvocationType::DryRun,
        Some(other) => {
            return Err(enum_error(
                other,
                "invocationType",
                "Event, RequestResponse, DryRun",
            ))
        }
    };
    let tail = match headers.get(h::LOG_TYPE).map(HeaderValue::as_bytes) {
        None | Some(b"None") => false,
        Some(b"Tail") => true,
        Some(other) => return Err(enum_error(other, "logType", "None, Tail")),
    };
    let client_context = match headers.get(h::CLIENT_CONTEXT) {
        None => None,
        Some(v) => Some(decode_client_context(v.as_bytes()).ok_or_else(|| {
            ApiError::invalid_request_content(
                "Client context must be a valid Base64-encoded JSON object.",
            )
        })?),
    };
    let trace_id = headers
        .get(h::TRACE_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    Ok(Parsed {
        invocation_type,
        tail,
        client_context,
        trace_id,
    })
}

/// Base64 → UTF-8 → a JSON object.
fn decode_client_context(b64: &[u8]) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(_)) => Some(text),
        _ => None,
    }
}

/// Handles one `Invoke` request against `pool` (the router's handler; usable by a server that
/// resolves the function name itself).
pub async fn handle_invoke(pool: &Pool, headers: &HeaderMap, body: Body) -> Response {
    match try_invoke(pool, headers, body).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

fn invoke_error(e: InvokeError, invocation_type: InvocationType) -> ApiError {
    match e {
        InvokeError::TooManyRequests { .. } => ApiError::too_many_requests(),
        InvokeError::RequestTooLarge { size, limit } => {
            ApiError::request_too_large(size as u64, invocation_type.name(), limit)
        }
        e @ InvokeError::Sandbox(_) => ApiError::service(&e.to_string()),
        InvokeError::ShuttingDown => ApiError::service("The function is shutting down."),
    }
}

fn with_request_id(mut resp: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert(h::REQUEST_ID, v);
    }
    resp
}

async fn try_invoke(pool: &Pool, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let parsed = parse_headers(headers)?;
    let limit = match parsed.invocation_type {
        InvocationType::Event => wire::MAX_ASYNC_PAYLOAD,
        InvocationType::RequestResponse | InvocationType::DryRun => wire::MAX_SYNC_PAYLOAD,
    };
    let payload = match read_limited(body, limit, 64 * 1024 * 1024).await {
        Limited::Complete(b) => b,
        Limited::TooLarge(seen) => {
            let size = headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(seen);
            return Err(ApiError::request_too_large(
                size,
                parsed.invocation_type.name(),
                limit,
            ));
        }
        Limited::Broken => {
            return Err(ApiError::invalid_request_content(
                "Could not read the request body.",
            ))
        }
    };
    let payload = if payload.iter().all(u8::is_ascii_whitespace) {
        Bytes::from_static(b"{}")
    } else if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
        return Err(ApiError::invalid_request_content(&format!(
            "Could not parse request body into json: Could not parse payload into json: {e}"
        )));
    } else {
        payload
    };
    let request = InvokeRequest {
        payload,
        client_context: parsed.client_context,
        cognito_identity: None,
        trace_id: parsed.trace_id,
    };
    let invocation_type = parsed.invocation_type;
    match invocation_type {
        InvocationType::DryRun => {
            let id = uuid::Uuid::new_v4().hyphenated().to_string();
            Ok(with_request_id(StatusCode::NO_CONTENT.into_response(), &id))
        }
        InvocationType::Event => {
            let id = pool
                .invoke_async(request)
                .map_err(|e| invoke_error(e, invocation_type))?;
            Ok(with_request_id(StatusCode::ACCEPTED.into_response(), &id))
        }
        InvocationType::RequestResponse => {
            let resp = pool
                .invoke(request)
                .await
                .map_err(|e| invoke_error(e, invocation_type))?;
            let mut function_error = resp.function_error;
            let mut content_type = resp.content_type;
            let body = match resp.body {
                ResponseBody::Buffered(b) => Body::from(b),
                ResponseBody::Streaming(stream) if parsed.tail => {
                    let (bytes, end) = stream.collect_bytes(wire::MAX_STREAMED_RESPONSE_SIZE).await;
                    match end {
                        Ok(()) => Body::from(bytes),
                        Err(e) => {
                            function_error = Some(FunctionError {
                                error_type: e.error_type,
                            });
                            content_type = APPLICATION_JSON.to_owned();
                            Body::from(e.body)
                        }
                    }
                }
                ResponseBody::Streaming(stream) => Body::from_stream(stream),
            };
            let log_result = if parsed.tail {
                resp.report
                    .wait()
                    .await
                    .map(|r| base64::engine::general_purpose::STANDARD.encode(&r.log_tail))
            } else {
                None
            };
            let mut out = Response::new(body);
            let hs = out.headers_mut();
            hs.insert(
                CONTENT_TYPE,
                HeaderValue::from_str(&content_type)
                    .unwrap_or_else(|_| HeaderValue::from_static(APPLICATION_JSON)),
            );
            hs.insert(
                h::EXECUTED_VERSION,
                HeaderValue::from_str(&pool.config().version)
                    .unwrap_or_else(|_| HeaderValue::from_static(LATEST)),
            );
            if function_error.is_some() {
                hs.insert(
                    h::FUNCTION_ERROR,
                    HeaderValue::from_static(FunctionError::UNHANDLED),
                );
            }
            if let Some(v) = log_result.and_then(|l| HeaderValue::from_str(&l).ok()) {
                hs.insert(h::LOG_RESULT, v);
            }
            Ok(with_request_id(out, &resp.request_id))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_context_must_be_a_base64_json_object() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(
            decode_client_context(b64("{\"custom\":{\"a\":1}}").as_bytes()).as_deref(),
            Some("{\"custom\":{\"a\":1}}")
        );
        assert_eq!(decode_client_context(b64("[1]").as_bytes()), None);
        assert_eq!(decode_client_context(b"!!!"), None);
    }
}
