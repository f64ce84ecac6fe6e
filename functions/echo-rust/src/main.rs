//! `echo-rust`: a Lambda function built on the real `lambda_runtime` crate,
//! used as a fixture image (`rust-echo`) by the lambox tests and benchmarks.
//!
//! The handler echoes the JSON event back. Special fields of an object event
//! trigger behaviours, checked in this order:
//!
//! - `{"exit": N}`: `std::process::exit(N)` without answering the invocation.
//! - `{"sleep_ms": N}`: sleeps N milliseconds, then goes on.
//! - `{"alloc_mb": N}`: allocates N MiB and writes to every page, then goes on
//!   (the memory is released before answering).
//! - `{"error": "msg"}`: a function error: errorType `EchoError`,
//!   errorMessage `msg` (posted to `/invocation/{id}/error`).
//! - `{"bytes": N}`: answers with a JSON string of N bytes (`"xxx…"`).
//! - `{"context": true}`: answers with what the runtime received besides the
//!   event: `{"request_id", "deadline_ms", "invoked_function_arn",
//!   "xray_trace_id", "client_context"}` (the client context as the
//!   `lambda_runtime` crate parsed it from `Lambda-Runtime-Client-Context`).
//! - `{"stream": {"chunks": N, "interval_ms": M}}`: a streamed response
//!   (`Lambda-Runtime-Function-Response-Mode: streaming`): N chunks
//!   `chunk I/N sent_ms=EPOCH_MS\n`, M ms apart, each written when it is
//!   sent (`sent_ms` is the wall clock just before). The crate puts its HTTP
//!   integration prelude (JSON + 8 NUL bytes) before them.
//!
//! Otherwise (and after sleep/alloc) the answer is the event itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::streaming::{self, Body};
use lambda_runtime::{service_fn, Diagnostic, FunctionResponse, LambdaEvent, StreamResponse};
use serde_json::Value;

/// A buffered JSON answer or a streamed one.
type Answer = FunctionResponse<Value, Body>;

const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

/// The function error of `{"error": "msg"}`.
#[derive(Debug)]
struct EchoError(String);

impl From<EchoError> for Diagnostic {
    fn from(e: EchoError) -> Diagnostic {
        Diagnostic {
            error_type: "EchoError".to_owned(),
            error_message: e.0,
        }
    }
}

/// `event[key]` as a non-negative integer, if it is one.
fn uint(event: &Value, key: &str) -> Option<u64> {
    event.get(key).and_then(Value::as_u64)
}

/// Allocates `mb` MiB and touches every page; returns a value derived from
/// the memory so that the work cannot be optimised away.
fn alloc_and_touch(mb: u64) -> Result<u64, EchoError> {
    let len = usize::try_from(mb)
        .ok()
        .and_then(|m| m.checked_mul(MIB))
        .ok_or_else(|| EchoError(format!("alloc_mb {mb} is too large")))?;
    let mut buf: Vec<u8> = Vec::new();
    buf.try_reserve_exact(len)
        .map_err(|e| EchoError(format!("cannot allocate {mb} MiB: {e}")))?;
    buf.resize(len, 0);
    for (i, page) in buf.chunks_mut(PAGE).enumerate() {
        page[0] = (i % 251) as u8 | 1;
    }
    let sum = buf.iter().step_by(PAGE).map(|&b| u64::from(b)).sum();
    Ok(std::hint::black_box(sum))
}

fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Starts sending `chunks` chunks `interval` apart and returns the stream at once.
fn stream(chunks: u64, interval: Duration) -> Answer {
    let (mut tx, body) = streaming::channel();
    tokio::spawn(async move {
        for i in 1..=chunks {
            if i > 1 {
                tokio::time::sleep(interval).await;
            }
            let chunk = format!("chunk {i}/{chunks} sent_ms={}\n", epoch_ms());
            if tx.send_data(chunk.into()).await.is_err() {
                eprintln!("echo-rust: the stream was closed after {} chunks", i - 1);
                return;
            }
        }
    });
    FunctionResponse::StreamingResponse(StreamResponse::from(body))
}

async fn handler(event: LambdaEvent<Value>) -> Result<Answer, EchoError> {
    let (payload, ctx) = event.into_parts();
    let buffered = FunctionResponse::BufferedResponse;
    if let Some(code) = payload.get("exit").and_then(Value::as_i64) {
        let code = i32::try_from(code).unwrap_or(1);
        eprintln!("echo-rust: exiting with status {code} as asked");
        std::process::exit(code);
    }
    if let Some(ms) = uint(&payload, "sleep_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(mb) = uint(&payload, "alloc_mb") {
        let sum = alloc_and_touch(mb)?;
        eprintln!("echo-rust: allocated and touched {mb} MiB (checksum {sum})");
    }
    if let Some(msg) = payload.get("error") {
        let msg = match msg {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return Err(EchoError(msg));
    }
    if let Some(n) = uint(&payload, "bytes") {
        let n = usize::try_from(n).map_err(|_| EchoError(format!("bytes {n} is too large")))?;
        return Ok(buffered(Value::String("x".repeat(n))));
    }
    if payload.get("context").and_then(Value::as_bool) == Some(true) {
        let client_context = serde_json::to_value(&ctx.client_context)
            .map_err(|e| EchoError(format!("cannot serialise the client context: {e}")))?;
        return Ok(buffered(serde_json::json!({
            "request_id": ctx.request_id,
            "deadline_ms": ctx.deadline,
            "invoked_function_arn": ctx.invoked_function_arn,
            "xray_trace_id": ctx.xray_trace_id,
            "client_context": client_context,
        })));
    }
    if let Some(s) = payload.get("stream") {
        let chunks = uint(s, "chunks").unwrap_or(3);
        let interval = Duration::from_millis(uint(s, "interval_ms").unwrap_or(0));
        return Ok(stream(chunks, interval));
    }
    Ok(buffered(payload))
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(handler)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invoke(event: Value) -> Result<Value, EchoError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("tokio runtime");
        match rt.block_on(handler(LambdaEvent::new(event, Default::default())))? {
            FunctionResponse::BufferedResponse(v) => Ok(v),
            FunctionResponse::StreamingResponse(_) => panic!("a streamed answer"),
        }
    }

    #[test]
    fn echoes_the_event() {
        let ev = serde_json::json!({"a": 1, "b": [true, null, "x"]});
        assert_eq!(invoke(ev.clone()).expect("echo"), ev);
        assert_eq!(invoke(Value::from("s")).expect("echo"), Value::from("s"));
    }

    #[test]
    fn error_field_is_a_function_error() {
        let err = invoke(serde_json::json!({"error": "boom"})).expect_err("error");
        let d: Diagnostic = err.into();
        assert_eq!(d.error_type, "EchoError");
        assert_eq!(d.error_message, "boom");
    }

    #[test]
    fn bytes_sleep_and_alloc() {
        let out = invoke(serde_json::json!({"bytes": 1000})).expect("bytes");
        assert_eq!(out.as_str().map(str::len), Some(1000));
        let ev = serde_json::json!({"sleep_ms": 5, "alloc_mb": 2});
        let t = std::time::Instant::now();
        assert_eq!(invoke(ev.clone()).expect("sleep+alloc"), ev);
        assert!(t.elapsed() >= Duration::from_millis(5));
    }

    #[test]
    fn context_reports_what_the_runtime_received() {
        let mut ctx = lambda_runtime::Context::default();
        ctx.request_id = "id-1".to_owned();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("tokio runtime");
        let answer = rt
            .block_on(handler(LambdaEvent::new(
                serde_json::json!({"context": true}),
                ctx,
            )))
            .expect("context");
        match answer {
            FunctionResponse::BufferedResponse(v) => {
                assert_eq!(v["request_id"], "id-1");
                assert_eq!(v["client_context"], Value::Null);
            }
            FunctionResponse::StreamingResponse(_) => panic!("a streamed answer"),
        }
    }
}
