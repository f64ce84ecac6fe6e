//! The Runtime API (2018-06-01) one execution environment talks to.
//!
//! The router is the runtime's side; the [`Controller`] is the environment driver's side: it
//! posts the invoke the next `/next` returns and receives what the runtime reports
//! ([`RuntimeEvent`]s). Between them sits RIE's runtime state machine (RIE `core/states.go`):
//!
//! ```text
//! Started --/next--> Ready --(invoke posted)--> Running --/response--> InvocationResponse
//!    |                 ^                           |                        | (body read)
//!    |                 |                           +--/error--> InvocationErrorResponse
//!    |                 |                                                    |
//!    |                 +-------------------/next--- RuntimeResponseSentState <+
//!    +--/init/error--> InitError
//! ```
//!
//! A call the current state does not allow is answered `403 InvalidStateTransition` with RIE's
//! message (`State transition from Ready to InvocationResponse failed for runtime. Error: State
//! transition is not allowed`); `/response` or `/error` for a request id other than the invoke
//! in flight is `400 InvalidRequestID`. Unlike RIE, a wrong request id leaves the state alone
//! (RIE moves to `InvocationResponse` first and would then refuse the right id too). As in RIE,
//! `/next` while an invoke is in flight and unanswered hands out that same invoke again.
//!
//! Header names are case-insensitive (HTTP); responses are written with RIE's canonical
//! (title-case) header names by [`serve`].

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};

use crate::invoke::{
    FunctionError, ResponseBody, ResponseStream, StreamAbort, StreamError, StreamItem,
};
use crate::logs::lock;
use crate::wire::{self, runtime_header as h, runtime_path, APPLICATION_JSON};

/// The invoke `/next` hands out.
#[derive(Debug, Clone)]
pub(crate) struct InvokeEvent {
    pub request_id: String,
    pub deadline_ms: u64,
    pub function_arn: String,
    pub trace_id: String,
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
    pub payload: Bytes,
}

/// A response or error the runtime posted for an invoke.
#[derive(Debug)]
pub(crate) struct RuntimeResponse {
    pub content_type: String,
    pub function_error: Option<FunctionError>,
    pub body: ResponseBody,
    /// For a streamed response: lets the driver end the stream with a platform error.
    pub abort: Option<StreamAbort>,
}

/// What the runtime did, for the environment driver.
#[derive(Debug)]
pub(crate) enum RuntimeEvent {
    /// The first `/next`: init is done.
    Ready,
    /// `/init/error`, with the caller's error document.
    InitError { error_type: String, body: Bytes },
    /// `/response` or `/error` for the invoke in flight (a stream starts here).
    Response {
        request_id: String,
        response: RuntimeResponse,
    },
    /// `/next` after a response: the invoke is over.
    Next,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuntimeState {
    Started,
    InitError,
    Ready,
    Running,
    InvocationResponse,
    InvocationErrorResponse,
    ResponseSent,
}

impl RuntimeState {
    /// RIE's state names (`core/runtime_state_names.go`), used in 403 messages.
    fn name(self) -> &'static str {
        match self {
            RuntimeState::Started => "Started",
            RuntimeState::InitError => "InitError",
            RuntimeState::Ready => "Ready",
            RuntimeState::Running => "Running",
            RuntimeState::InvocationResponse => "InvocationResponse",
            RuntimeState::InvocationErrorResponse => "InvocationErrorResponse",
            RuntimeState::ResponseSent => "RuntimeResponseSentState",
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: RuntimeState,
    invoke: Option<Arc<InvokeEvent>>,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    posted: Notify,
    events: mpsc::UnboundedSender<RuntimeEvent>,
}

/// The driver's side of one environment's Runtime API.
#[derive(Debug)]
pub(crate) struct Controller {
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<RuntimeEvent>,
}

impl Controller {
    /// Makes `invoke` what `/next` returns (now, to a waiting `/next`, or to the next one).
    pub(crate) fn post(&self, invoke: InvokeEvent) {
        lock(&self.shared.inner).invoke = Some(Arc::new(invoke));
        self.shared.posted.notify_waiters();
    }

    /// The next thing the runtime did. Never `None` while the controller lives (it holds a
    /// sender itself), so it is safe in `select!`.
    pub(crate) async fn event(&mut self) -> Option<RuntimeEvent> {
        self.events.recv().await
    }
}

/// A fresh Runtime API in state `Started`.
pub(crate) fn runtime_api() -> (Router, Controller) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            state: RuntimeState::Started,
            invoke: None,
        }),
        posted: Notify::new(),
        events: tx,
    });
    let router = Router::new()
        .route(runtime_path::NEXT, get(next))
        .route(runtime_path::RESPONSE, post(response))
        .route(runtime_path::ERROR, post(error))
        .route(runtime_path::INIT_ERROR, post(init_error))
        .route(runtime_path::PING, get(|| async { "pong" }))
        .fallback(not_found)
        .with_state(shared.clone());
    (router, Controller { shared, events: rx })
}

/// Serves `router` on `listener` until the returned task is aborted (which also closes every
/// connection). HTTP/1.1 with title-case header names, as RIE (Go) writes them.
pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        let service = hyper_util::service::TowerToHyperService::new(router.clone());
                        connections.spawn(async move {
                            let conn = hyper::server::conn::http1::Builder::new()
                                .title_case_headers(true)
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                            if let Err(e) = conn.await {
                                tracing::debug!(error = %e, "runtime API connection ended");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "runtime API accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    })
}

fn rie_json(status: StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, APPLICATION_JSON)], body).into_response()
}

fn forbidden(from: RuntimeState, to: RuntimeState) -> Response {
    rie_json(
        StatusCode::FORBIDDEN,
        wire::invalid_state_transition_body(from.name(), to.name()),
    )
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [(CONTENT_TYPE, APPLICATION_JSON)],
        wire::ACCEPTED_BODY,
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [
            (CONTENT_TYPE, "text/plain; charset=utf-8"),
            (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        wire::NOT_FOUND_BODY,
    )
        .into_response()
}

/// Why `/response` or `/error` was refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// Not allowed in the current state (403).
    State(RuntimeState, RuntimeState),
    /// Not the invoke in flight (400).
    RequestId,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::State(from, to) => forbidden(from, to),
            Refusal::RequestId => {
                rie_json(StatusCode::BAD_REQUEST, wire::invalid_request_id_body())
            }
        }
    }
}

impl Shared {
    /// Checks and takes the transition `Running -> to` for the invoke `request_id`.
    fn begin(&self, request_id: &str, to: RuntimeState) -> Result<(), Refusal> {
        let mut g = lock(&self.inner);
        if g.state != RuntimeState::Running {
            return Err(Refusal::State(g.state, to));
        }
        if g.invoke.as_deref().map(|i| i.request_id.as_str()) != Some(request_id) {
            return Err(Refusal::RequestId);
        }
        g.state = to;
        g.invoke = None;
        Ok(())
    }

    fn deliver(&self, request_id: String, response: RuntimeResponse) {
        let _ = self.events.send(RuntimeEvent::Response {
            request_id,
            response,
        });
    }

    fn response_sent(&self) {
        lock(&self.inner).state = RuntimeState::ResponseSent;
    }
}

async fn next(State(s): State<Arc<Shared>>) -> Response {
    {
        let mut g = lock(&s.inner);
        match g.state {
            RuntimeState::Started => {
                g.state = RuntimeState::Ready;
                let _ = s.events.send(RuntimeEvent::Ready);
            }
            RuntimeState::Ready | RuntimeState::Running => {}
            RuntimeState::ResponseSent => {
                g.state = RuntimeState::Ready;
                let _ = s.events.send(RuntimeEvent::Next);
            }
            st => return forbidden(st, RuntimeState::Ready),
        }
    }
    loop {
        let posted = s.posted.notified();
        tokio::pin!(posted);
        posted.as_mut().enable();
        {
            let mut g = lock(&s.inner);
            if matches!(g.state, RuntimeState::Ready | RuntimeState::Running) {
                if let Some(invoke) = g.invoke.clone() {
                    g.state = RuntimeState::Running;
                    drop(g);
                    return render_invoke(&invoke);
                }
            }
        }
        posted.await;
    }
}

/// A header value, or `None` (and a log line) if it cannot be one. JSON line breaks become
/// spaces, which keeps valid JSON valid.
fn header_value(name: &http::HeaderName, value: &str) -> Option<HeaderValue> {
    let cleaned = value.replace(['\r', '\n'], " ");
    match HeaderValue::from_str(&cleaned) {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::warn!(header = %name, "value cannot be sent as a header; left out");
            None
        }
    }
}

fn render_invoke(inv: &InvokeEvent) -> Response {
    let mut resp = Response::new(Body::from(inv.payload.clone()));
    let headers = resp.headers_mut();
    let mut set = |name: http::HeaderName, value: &str| {
        if let Some(v) = header_value(&name, value) {
            headers.insert(name, v);
        }
    };
    set(h::AWS_REQUEST_ID, &inv.request_id);
    set(h::DEADLINE_MS, &inv.deadline_ms.to_string());
    set(h::INVOKED_FUNCTION_ARN, &inv.function_arn);
    set(h::TRACE_ID, &inv.trace_id);
    if let Some(cc) = inv.client_context.as_deref().filter(|c| !c.is_empty()) {
        set(h::CLIENT_CONTEXT, cc);
    }
    if let Some(ci) = inv.cognito_identity.as_deref().filter(|c| !c.is_empty()) {
        set(h::COGNITO_IDENTITY, ci);
    }
    set(CONTENT_TYPE, APPLICATION_JSON);
    resp
}

/// A body read with a size limit.
#[derive(Debug)]
pub(crate) enum Limited {
    /// All of it.
    Complete(Bytes),
    /// More than the limit: the size seen (the whole body, unless reading stopped at the
    /// drain cap).
    TooLarge(u64),
    /// The connection failed before the end of the body.
    Broken,
}

/// Reads `body` up to `limit` bytes; past the limit keeps reading (and discarding) up to
/// `drain_cap` bytes so the client sees an orderly answer.
pub(crate) async fn read_limited(mut body: Body, limit: usize, drain_cap: u64) -> Limited {
    let mut buf = BytesMut::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Limited::Broken;
        };
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > limit as u64 {
                buf = BytesMut::new();
                if total >= drain_cap {
                    return Limited::TooLarge(total);
                }
            } else {
                buf.extend_from_slice(&data);
            }
        }
    }
    if total > limit as u64 {
        Limited::TooLarge(total)
    } else {
        Limited::Complete(buf.freeze())
    }
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

async fn response(
    State(s): State<Arc<Shared>>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(refusal) = s.begin(&request_id, RuntimeState::InvocationResponse) {
        return refusal.into_response();
    }
    let content_type = content_type(&headers)
        .unwrap_or(APPLICATION_JSON)
        .to_owned();
    match headers
        .get(h::FUNCTION_RESPONSE_MODE)
        .map(HeaderValue::as_bytes)
    {
        None => buffered_response(&s, request_id, content_type, body).await,
        Some(b"streaming") => streamed_response(&s, request_id, content_type, body).await,
        Some(_) => {
            // RIE: the caller gets Runtime.InvalidResponseModeHeader, the runtime a 400.
            let error_type = "Runtime.InvalidResponseModeHeader";
            s.deliver(
                request_id.clone(),
                RuntimeResponse {
                    content_type: APPLICATION_JSON.to_owned(),
                    function_error: Some(FunctionError::new(error_type)),
                    body: ResponseBody::Buffered(Bytes::from(wire::platform_error_body(
                        error_type,
                        &format!("RequestId: {request_id} Error: Invalid function response mode"),
                    ))),
                    abort: None,
                },
            );
            let _ = read_limited(body, 0, u64::MAX).await;
            s.response_sent();
            rie_json(StatusCode::BAD_REQUEST, wire::invalid_response_mode_body())
        }
    }
}

async fn buffered_response(
    s: &Shared,
    request_id: String,
    content_type: String,
    body: Body,
) -> Response {
    let (response, status, answer) =
        match read_limited(body, wire::MAX_RESPONSE_SIZE, u64::MAX).await {
            Limited::Complete(bytes) => (
                RuntimeResponse {
                    content_type,
                    function_error: None,
                    body: ResponseBody::Buffered(bytes),
                    abort: None,
                },
                StatusCode::ACCEPTED,
                None,
            ),
            Limited::TooLarge(_) => (
                RuntimeResponse {
                    content_type: APPLICATION_JSON.to_owned(),
                    function_error: Some(FunctionError::new("Function.ResponseSizeTooLarge")),
                    body: ResponseBody::Buffered(Bytes::from(wire::response_too_large_body(
                        wire::MAX_RESPONSE_SIZE,
                    ))),
                    abort: None,
                },
                StatusCode::PAYLOAD_TOO_LARGE,
                Some(wire::request_entity_too_large_body(wire::MAX_RESPONSE_SIZE)),
            ),
            Limited::Broken => (
                truncated_response(&request_id),
                StatusCode::BAD_REQUEST,
                Some(wire::truncated_request_body()),
            ),
        };
    s.deliver(request_id, response);
    s.response_sent();
    match answer {
        None => accepted(),
        Some(body) => rie_json(status, body),
    }
}

fn truncated_response(request_id: &str) -> RuntimeResponse {
    let error_type = "Runtime.TruncatedResponse";
    RuntimeResponse {
        content_type: APPLICATION_JSON.to_owned(),
        function_error: Some(FunctionError::new(error_type)),
        body: ResponseBody::Buffered(Bytes::from(wire::platform_error_body(
            error_type,
            &format!("RequestId: {request_id} Error: HTTP request detected as truncated"),
        ))),
        abort: None,
    }
}

async fn streamed_response(
    s: &Shared,
    request_id: String,
    content_type: String,
    mut body: Body,
) -> Response {
    let (sender, abort, stream) = ResponseStream::channel();
    s.deliver(
        request_id.clone(),
        RuntimeResponse {
            content_type,
            function_error: None,
            body: ResponseBody::Streaming(stream),
            abort: Some(abort),
        },
    );
    let limit = wire::MAX_STREAMED_RESPONSE_SIZE;
    let mut total = 0usize;
    let mut answer = None;
    let mut end = Ok(());
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(_) => {
                end = Err(StreamError {
                    error_type: "Runtime.TruncatedResponse".to_owned(),
                    body: Bytes::from(wire::platform_error_body(
                        "Runtime.TruncatedResponse",
                        &format!(
                            "RequestId: {request_id} Error: HTTP request detected as truncated"
                        ),
                    )),
                });
                answer = Some((StatusCode::BAD_REQUEST, wire::truncated_request_body()));
                break;
            }
        };
        match frame.into_data() {
            Ok(data) => {
                if answer.is_some() {
                    continue; // over the limit: drain
                }
                total += data.len();
                if total > limit {
                    end = Err(StreamError {
                        error_type: "Function.ResponseSizeTooLarge".to_owned(),
                        body: Bytes::from(wire::response_too_large_body(limit)),
                    });
                    answer = Some((
                        StatusCode::PAYLOAD_TOO_LARGE,
                        wire::request_entity_too_large_body(limit),
                    ));
                    continue;
                }
                // A caller that went away does not stop the runtime's upload.
                let _ = sender.chunks.send(StreamItem::Chunk(data)).await;
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    if answer.is_none() {
                        if let Some(err) = trailer_error(&trailers) {
                            end = Err(err);
                        }
                    }
                }
            }
        }
    }
    let _ = sender.chunks.send(StreamItem::End(end)).await;
    s.response_sent();
    match answer {
        None => accepted(),
        Some((status, body)) => rie_json(status, body),
    }
}

/// The error a streamed response's trailers report, if any.
fn trailer_error(trailers: &HeaderMap) -> Option<StreamError> {
    let error_type = trailers.get(h::FUNCTION_ERROR_TYPE)?;
    let error_type = wire::normalize_error_type(&String::from_utf8_lossy(error_type.as_bytes()));
    let body = match trailers.get(h::FUNCTION_ERROR_BODY) {
        Some(v) => base64::engine::general_purpose::STANDARD
            .decode(v.as_bytes())
            .map(Bytes::from)
            .unwrap_or_else(|_| Bytes::copy_from_slice(v.as_bytes())),
        None => Bytes::from(wire::platform_error_body(&error_type, "")),
    };
    Some(StreamError { error_type, body })
}

/// `application/vnd.aws.lambda.error.cause+json` (RIE `rapi/handler/invocationerror.go`).
const ERROR_WITH_CAUSE: &str = "application/vnd.aws.lambda.error.cause+json";

/// The error document the caller gets for an error body the runtime posted: the body itself
/// when it is JSON; for RIE's error-with-cause type, the error part re-encoded; otherwise one
/// built from the (normalised) type and the body's text.
fn error_document(content_type: Option<&str>, error_type: &str, body: &[u8]) -> Bytes {
    if content_type == Some(ERROR_WITH_CAUSE) {
        #[derive(Deserialize)]
        struct WithCause {
            #[serde(rename = "errorMessage", default)]
            error_message: String,
            #[serde(rename = "errorType", default)]
            error_type: String,
            #[serde(rename = "stackTrace", default)]
            stack_trace: Vec<String>,
        }
        #[derive(Serialize)]
        struct Filtered<'a> {
            #[serde(rename = "errorMessage")]
            error_message: &'a str,
            #[serde(rename = "errorType")]
            error_type: &'a str,
            #[serde(rename = "stackTrace", skip_serializing_if = "<[String]>::is_empty")]
            stack_trace: &'a [String],
        }
        return match serde_json::from_slice::<WithCause>(body) {
            Ok(e) => Bytes::from(wire::go_json(&Filtered {
                error_message: &e.error_message,
                error_type: &e.error_type,
                stack_trace: &e.stack_trace,
            })),
            Err(_) => Bytes::from_static(b"\"Invalid error body\""),
        };
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        return Bytes::copy_from_slice(body);
    }
    Bytes::from(wire::platform_error_body(
        error_type,
        &String::from_utf8_lossy(body),
    ))
}

fn error_type_header(headers: &HeaderMap) -> String {
    let raw = headers
        .get(h::FUNCTION_ERROR_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    wire::normalize_error_type(&raw)
}

async fn error(
    State(s): State<Arc<Shared>>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(refusal) = s.begin(&request_id, RuntimeState::InvocationErrorResponse) {
        return refusal.into_response();
    }
    let mut error_type = error_type_header(&headers);
    let document = match read_limited(body, wire::MAX_RESPONSE_SIZE, u64::MAX).await {
        Limited::Complete(bytes) => error_document(content_type(&headers), &error_type, &bytes),
        Limited::TooLarge(_) => {
            error_type = "Function.ResponseSizeTooLarge".to_owned();
            Bytes::from(wire::response_too_large_body(wire::MAX_RESPONSE_SIZE))
        }
        Limited::Broken => Bytes::from(wire::platform_error_body(&error_type, "")),
    };
    s.deliver(
        request_id,
        RuntimeResponse {
            content_type: APPLICATION_JSON.to_owned(),
            function_error: Some(FunctionError::new(error_type)),
            body: ResponseBody::Buffered(document),
            abort: None,
        },
    );
    s.response_sent();
    accepted()
}

async fn init_error(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    {
        let mut g = lock(&s.inner);
        if g.state != RuntimeState::Started {
            return forbidden(g.state, RuntimeState::InitError);
        }
        g.state = RuntimeState::InitError;
    }
    let error_type = error_type_header(&headers);
    let document = match read_limited(body, wire::MAX_RESPONSE_SIZE, u64::MAX).await {
        Limited::Complete(bytes) => error_document(content_type(&headers), &error_type, &bytes),
        Limited::TooLarge(_) | Limited::Broken => {
            Bytes::from(wire::platform_error_body(&error_type, ""))
        }
    };
    let _ = s.events.send(RuntimeEvent::InitError {
        error_type,
        body: document,
    });
    accepted()
}

#[cfg(test)]
mod tests;
