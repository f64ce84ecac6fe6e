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
//!
//! Otherwise (and after sleep/alloc) the answer is the event itself.

use std::time::Duration;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

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

async fn handler(event: LambdaEvent<Value>) -> Result<Value, EchoError> {
    let (payload, _ctx) = event.into_parts();
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
        return Ok(Value::String("x".repeat(n)));
    }
    Ok(payload)
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
        rt.block_on(handler(LambdaEvent::new(event, Default::default())))
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
}
