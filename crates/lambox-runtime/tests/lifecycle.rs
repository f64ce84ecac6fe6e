//! The pool's lifecycle through its Rust API (what `lambox run` and `lambox serve` build on):
//! idle environments torn down after `idle_timeout`, and `shutdown_gracefully`. Shell-script
//! runtimes run as plain processes by `ProcessLauncher`; `crates/lambox/tests/run.rs` covers
//! the same through the binary, the sandbox and real images.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use lambox_runtime::{InvokeError, InvokeRequest, InvokeStatus, PoolOptions, ResponseBody};

/// Sleeps `$SLEEP_S` seconds (default 0) per invoke, then echoes the event.
const SLEEPY: &str = r#"#!/bin/sh
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  HEADERS="$(mktemp)"
  EVENT="$(curl -sS -D "$HEADERS" "$API/invocation/next")"
  ID=$(grep '^Lambda-Runtime-Aws-Request-Id:' "$HEADERS" | tr -d '\r' | cut -d' ' -f2)
  rm -f "$HEADERS"
  echo "handling $ID"
  sleep "${SLEEP_S:-0}"
  curl -sS -o /dev/null -X POST "$API/invocation/$ID/response" --data-binary "$EVENT"
done
"#;

fn request(payload: &'static str) -> InvokeRequest {
    InvokeRequest {
        payload: Bytes::from_static(payload.as_bytes()),
        ..InvokeRequest::default()
    }
}

fn body(b: ResponseBody) -> Bytes {
    match b {
        ResponseBody::Buffered(b) => b,
        ResponseBody::Streaming(_) => panic!("a streamed response"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_environments_are_torn_down_after_the_idle_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = PoolOptions {
        concurrency: 2,
        idle_timeout: Some(Duration::from_millis(300)),
        ..PoolOptions::default()
    };
    let (pool, _sink) = pool(script_function(dir.path(), SLEEPY), options);
    let first = pool.invoke(request("{\"n\":1}")).await.expect("invoke");
    let report = first.report.wait().await.expect("report");
    assert!(report.init_duration.is_some(), "a cold start");
    assert_eq!(body(first.body), "{\"n\":1}");
    // Back in the pool just after its report.
    eventually(2, "the environment to go idle", || {
        pool.idle_environments() == 1
    })
    .await;
    assert_eq!(pool.environments(), 1);
    // Gone once idle for 300 ms: out of the idle list, processes reaped, released.
    eventually(5, "the idle environment to be torn down", || {
        pool.environments() == 0
    })
    .await;
    assert_eq!(pool.idle_environments(), 0);
    // The next invoke cold-starts; a warm one right after does not.
    let again = pool.invoke(request("{\"n\":2}")).await.expect("invoke");
    assert!(again
        .report
        .wait()
        .await
        .expect("report")
        .init_duration
        .is_some());
    eventually(2, "the environment to go idle", || {
        pool.idle_environments() == 1
    })
    .await;
    let warm = pool.invoke(request("{\"n\":3}")).await.expect("invoke");
    assert!(warm
        .report
        .wait()
        .await
        .expect("report")
        .init_duration
        .is_none());
    pool.shutdown_gracefully(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn environments_stay_without_an_idle_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pool, _sink) = pool(script_function(dir.path(), SLEEPY), PoolOptions::default());
    pool.invoke(request("{}")).await.expect("invoke");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!((pool.idle_environments(), pool.environments()), (1, 1));
    pool.shutdown_gracefully(Duration::from_secs(1)).await;
    assert_eq!(pool.environments(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_lets_running_invokes_finish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = script_function(dir.path(), SLEEPY);
    config.env.push(("SLEEP_S".into(), "1".into()));
    let options = PoolOptions {
        concurrency: 2,
        ..PoolOptions::default()
    };
    let (pool, sink) = pool(config, options);
    let running = tokio::spawn({
        let pool = pool.clone();
        async move { pool.invoke(request("{\"sync\":1}")).await }
    });
    let event_id = pool.invoke_async(request("{\"event\":1}")).expect("event");
    eventually(10, "both invokes to start", || {
        sink.records()
            .iter()
            .filter(|r| r.text.starts_with("handling "))
            .count()
            == 2
    })
    .await;
    assert_eq!(pool.in_flight(), 2);
    let t = Instant::now();
    assert!(pool.shutdown_gracefully(Duration::from_secs(5)).await);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // After: nothing in flight, no environment left, nothing admitted.
    assert_eq!((pool.in_flight(), pool.environments()), (0, 0));
    let resp = running.await.expect("join").expect("invoke");
    assert_eq!(resp.function_error, None);
    assert_eq!(body(resp.body), "{\"sync\":1}");
    let text = sink.text();
    assert!(
        text.contains(&format!("END RequestId: {event_id}")),
        "{text}"
    );
    assert_eq!(
        pool.invoke(request("{}")).await.err(),
        Some(InvokeError::ShuttingDown)
    );
    assert_eq!(
        pool.invoke_async(request("{}")).err(),
        Some(InvokeError::ShuttingDown)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invokes_past_the_grace_period_are_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = script_function(dir.path(), SLEEPY);
    config.env.push(("SLEEP_S".into(), "30".into()));
    config.timeout_secs = 60;
    let (pool, sink) = pool(config, PoolOptions::default());
    let running = tokio::spawn({
        let pool = pool.clone();
        async move { pool.invoke(request("{}")).await }
    });
    eventually(10, "the invoke to start", || {
        sink.records()
            .iter()
            .any(|r| r.text.starts_with("handling "))
    })
    .await;
    // A queued invoke is refused at shutdown.
    let queued = tokio::spawn({
        let pool = pool.clone();
        async move { pool.invoke(request("{}")).await }
    });
    eventually(5, "the second invoke to queue", || pool.queued() == 1).await;
    let t = Instant::now();
    assert!(!pool.shutdown_gracefully(Duration::from_millis(300)).await);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(pool.environments(), 0);
    assert_eq!(
        queued.await.expect("join").err(),
        Some(InvokeError::ShuttingDown)
    );
    let resp = running.await.expect("join").expect("invoke");
    assert_eq!(
        resp.function_error.map(|e| e.error_type).as_deref(),
        Some("Runtime.ExitError")
    );
    let report = resp.report.wait().await.expect("report");
    assert_eq!(
        report.status,
        InvokeStatus::Error("Runtime.ExitError".into())
    );
}
