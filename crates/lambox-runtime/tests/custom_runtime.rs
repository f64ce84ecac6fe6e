//! End to end with shell-script custom runtimes (curl, and raw HTTP over bash's /dev/tcp for
//! streaming), run as plain processes by `ProcessLauncher`.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use common::*;
use http::Request;
use http_body_util::BodyExt as _;
use lambox_runtime::{invoke_router, PoolOptions};
use tower::ServiceExt as _;

/// The classic bootstrap of AWS's custom-runtime tutorial. Header names are matched
/// case-sensitively on purpose: the Runtime API writes them title-cased, as RIE does.
const ECHO: &str = r#"#!/bin/sh
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
echo "bootstrap started"
while true; do
  HEADERS="$(mktemp)"
  EVENT="$(curl -sS -D "$HEADERS" "$API/invocation/next")"
  ID=$(grep '^Lambda-Runtime-Aws-Request-Id:' "$HEADERS" | tr -d '\r' | cut -d' ' -f2)
  DEADLINE=$(grep '^Lambda-Runtime-Deadline-Ms:' "$HEADERS" | tr -d '\r' | cut -d' ' -f2)
  rm -f "$HEADERS"
  echo "handling $ID"
  if [ -n "${HANDLER_SLEEP:-}" ]; then sleep "$HANDLER_SLEEP"; fi
  curl -sS -o /dev/null -X POST "$API/invocation/$ID/response" \
    -H 'Content-Type: text/plain' --data-binary "id=$ID deadline=$DEADLINE event=$EVENT"
done
"#;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis()
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_runtime_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pool, sink) = pool(script_function(dir.path(), ECHO), PoolOptions::default());
    let before = now_ms();
    let a = invoke_tail(&pool, "{\"k\": \"v\"}").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("text/plain"));
    let id = a.request_id().to_owned();
    let text = a.text().to_owned();
    let deadline: u128 = text
        .split("deadline=")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("deadline in {text:?}"));
    // Deadline = start + 10 s, in epoch milliseconds.
    assert!(
        deadline >= before + 9_000 && deadline <= now_ms() + 10_000,
        "{deadline}"
    );
    assert!(text.starts_with(&format!("id={id} deadline=")));
    assert!(text.ends_with(" event={\"k\": \"v\"}"));
    assert_in_order(
        &a.log(),
        &[
            &format!("START RequestId: {id} Version: $LATEST\n"),
            &format!("handling {id}\n"),
            &format!("END RequestId: {id}\n"),
            &format!("REPORT RequestId: {id}\tDuration: "),
            "\tInit Duration: ",
        ],
    );
    // Output during init belongs to no invoke; the START line follows it.
    let records = sink.records();
    let started = records
        .iter()
        .position(|r| r.text == "bootstrap started")
        .expect("init output");
    assert_eq!(records[started].request_id, None);
    assert!(records[started + 1..]
        .iter()
        .any(|r| r.text.starts_with("START")));
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_api_misuse_over_the_wire() {
    let script = r#"#!/bin/sh
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  HEADERS="$(mktemp)"
  curl -sS -D "$HEADERS" -o /dev/null "$API/invocation/next"
  ID=$(grep -i '^lambda-runtime-aws-request-id:' "$HEADERS" | tr -d '\r' | cut -d' ' -f2)
  rm -f "$HEADERS"
  curl -sS -w ' %{http_code}\n' -X POST "$API/invocation/not-$ID/response" -d x >&2
  curl -sS -w ' %{http_code}\n' -X POST "$API/invocation/$ID/error" \
    -H 'lAmBdA-rUnTiMe-FuNcTiOn-ErRoR-tYpE: Function.Custom' -d 'plain failure' >&2
  curl -sS -w ' %{http_code}\n' -X POST "$API/invocation/$ID/response" -d late >&2
  curl -sS -w ' %{http_code}\n' "$API/invocation/$ID/nowhere" >&2
done
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let (pool, _) = pool(script_function(dir.path(), script), PoolOptions::default());
    let a = invoke_tail(&pool, "{}").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(
        a.text(),
        "{\"errorType\":\"Function.Custom\",\"errorMessage\":\"plain failure\"}"
    );
    let id = a.request_id().to_owned();
    assert_in_order(
        &a.log(),
        &[
            "{\"errorMessage\":\"Invalid request ID\",\"errorType\":\"InvalidRequestID\"}\n 400\n",
            "{\"status\":\"OK\"}\n 202\n",
            "{\"errorMessage\":\"State transition from RuntimeResponseSentState to InvocationResponse failed for runtime. Error: State transition is not allowed\",\"errorType\":\"InvalidStateTransition\"}\n 403\n",
            "404 page not found\n 404\n",
            &format!("END RequestId: {id}\n"),
        ],
    );
}

/// Streams two chunks a second apart over raw HTTP/1.1 (chunked, with trailers), or hangs
/// after the first chunk, or ends with an error trailer, depending on the event.
const STREAMER: &str = r#"#!/bin/bash
set -eu
HOSTPART=${AWS_LAMBDA_RUNTIME_API%:*}
PORT=${AWS_LAMBDA_RUNTIME_API#*:}
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  HEADERS=$(mktemp)
  EVENT=$(curl -sS -D "$HEADERS" "$API/invocation/next")
  ID=$(grep -i '^lambda-runtime-aws-request-id:' "$HEADERS" | tr -d '\r' | cut -d' ' -f2)
  rm -f "$HEADERS"
  exec 3<>"/dev/tcp/$HOSTPART/$PORT"
  printf 'POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\nHost: %s\r\nLambda-Runtime-Function-Response-Mode: streaming\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\nConnection: close\r\n\r\n' "$ID" "$AWS_LAMBDA_RUNTIME_API" >&3
  printf '6\r\nfirst \r\n' >&3
  if [ "$EVENT" = '"hang"' ]; then sleep 30; fi
  sleep 1
  printf '6\r\nsecond\r\n' >&3
  if [ "$EVENT" = '"fail"' ]; then
    BODY=$(printf '{"errorType":"Runtime.StreamError","errorMessage":"midway"}' | base64 -w0)
    printf '0\r\nLambda-Runtime-Function-Error-Type: Runtime.StreamError\r\nLambda-Runtime-Function-Error-Body: %s\r\n\r\n' "$BODY" >&3
  else
    printf '0\r\n\r\n' >&3
  fi
  head -n1 <&3 >&2
  exec 3>&-
done
"#;

#[tokio::test(flavor = "multi_thread")]
async fn streamed_response_arrives_as_it_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = script_function(dir.path(), STREAMER);
    config.timeout_secs = 3;
    let (pool, sink) = pool(config, PoolOptions::default());

    // Without Tail: chunk by chunk.
    let req = Request::post("/2015-03-31/functions/f/invocations")
        .body(Body::from("\"ok\""))
        .expect("request");
    let resp = invoke_router(pool.clone())
        .oneshot(req)
        .await
        .expect("infallible");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    let mut body = resp.into_body();
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("frame");
        if let Ok(data) = frame.into_data() {
            chunks.push((Instant::now(), data));
        }
    }
    let all: Vec<u8> = chunks.iter().flat_map(|(_, d)| d.to_vec()).collect();
    assert_eq!(all, b"first second");
    let gap = chunks.last().expect("chunks").0 - chunks[0].0;
    assert!(
        gap >= Duration::from_millis(700),
        "first chunk came only {gap:?} before the last"
    );
    eventually(5, "the runtime API's answer", || {
        sink.text().contains("HTTP/1.1 202 Accepted\n")
    })
    .await;

    // With Tail the stream is collected, and its error trailer is a function error.
    let a = invoke_tail(&pool, "\"fail\"").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(
        a.text(),
        "{\"errorType\":\"Runtime.StreamError\",\"errorMessage\":\"midway\"}"
    );
    assert!(a.log().contains("HTTP/1.1 202 Accepted\n"));

    // A stream still running at the deadline ends with the timeout.
    let a = invoke_tail(&pool, "\"hang\"").await;
    assert_eq!(a.header("x-amz-function-error"), Some("Unhandled"));
    let id = a.request_id().to_owned();
    assert_eq!(
        a.text(),
        format!("{{\"errorType\":\"Sandbox.Timedout\",\"errorMessage\":\"RequestId: {id} Error: Task timed out after 3.00 seconds\"}}")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn init_error_is_retried_then_returned() {
    let script = r#"#!/bin/sh
echo launch >> "$FIXTURE_DIR/launches"
curl -sS -o /dev/null -X POST "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/init/error" \
  -H 'Lambda-Runtime-Function-Error-Type: Runtime.ConfigInvalid' \
  -d '{"errorMessage":"bad config","errorType":"Runtime.ConfigInvalid"}'
exit 1
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let (pool, sink) = pool(script_function(dir.path(), script), PoolOptions::default());
    let a = invoke_tail(&pool, "{}").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(
        a.text(),
        "{\"errorMessage\":\"bad config\",\"errorType\":\"Runtime.ConfigInvalid\"}"
    );
    let launches = || {
        std::fs::read_to_string(dir.path().join("launches"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(launches(), 2, "init, then suppressed init");
    let id = a.request_id().to_owned();
    assert_in_order(
        &sink.text(),
        &[
            "\tPhase: init\tStatus: error\tError Type: Runtime.ConfigInvalid\n",
            "\tPhase: invoke\tStatus: error\tError Type: Runtime.ConfigInvalid\n",
            &format!("START RequestId: {id} Version: $LATEST\nEND RequestId: {id}\nREPORT RequestId: {id}\t"),
            "\tStatus: error\tError Type: Runtime.ConfigInvalid\t\n",
        ],
    );
    // Every invoke starts over.
    invoke(&pool, &[], "{}").await;
    assert_eq!(launches(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_during_init_is_an_exit_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pool, sink) = pool(
        script_function(dir.path(), "#!/bin/sh\necho dying >&2\nexit 2\n"),
        PoolOptions::default(),
    );
    let a = invoke_tail(&pool, "{}").await;
    let id = a.request_id().to_owned();
    assert_eq!(a.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(
        a.text(),
        format!("{{\"errorType\":\"Runtime.ExitError\",\"errorMessage\":\"RequestId: {id} Error: Runtime exited with error: exit status 2\"}}")
    );
    assert_in_order(
        &sink.text(),
        &[
            "dying\nINIT_REPORT Init Duration: ",
            " ms\tPhase: init\tStatus: error\tError Type: Runtime.ExitError\n",
            "dying\nINIT_REPORT Init Duration: ",
            " ms\tPhase: invoke\tStatus: error\tError Type: Runtime.ExitError\n",
            &format!("START RequestId: {id} Version: $LATEST\n"),
            &format!("RequestId: {id} Error: Runtime exited with error: exit status 2\nRuntime.ExitError\n"),
            &format!("END RequestId: {id}\n"),
            "\tStatus: error\tError Type: Runtime.ExitError\t\n",
        ],
    );
}

/// Sleeps 30 s before its first `/next` on the first launch only (a marker file remembers).
const SLOW_ONCE: &str = r#"#!/bin/sh
if [ ! -e "$FIXTURE_DIR/slow-once" ]; then
  touch "$FIXTURE_DIR/slow-once"
  sleep 30
fi
exec "$FIXTURE_DIR/echo"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn init_timeout_is_retried_inside_the_invoke() {
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = dir.path().join("echo");
    std::fs::write(&echo, ECHO).expect("write echo");
    std::fs::set_permissions(&echo, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let (pool, sink) = pool(
        script_function(dir.path(), SLOW_ONCE),
        PoolOptions {
            init_timeout: Duration::from_millis(500),
            ..PoolOptions::default()
        },
    );
    let t0 = Instant::now();
    let a = invoke_tail(&pool, "{}").await;
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-amz-function-error"), None, "{}", a.text());
    let id = a.request_id().to_owned();
    assert!(a.text().starts_with(&format!("id={id} ")));
    let all = sink.text();
    assert_in_order(
        &all,
        &[
            " ms\tPhase: init\tStatus: timeout\n",
            "bootstrap started\n",
            &format!("START RequestId: {id}"),
        ],
    );
    assert!(!all.contains("Phase: invoke"), "{all}");
    assert!(!a.log().contains("Init Duration"), "{}", a.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn init_timeout_twice_is_a_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = script_function(dir.path(), "#!/bin/sh\nsleep 30\n");
    config.timeout_secs = 1;
    let (pool, sink) = pool(
        config,
        PoolOptions {
            init_timeout: Duration::from_millis(300),
            ..PoolOptions::default()
        },
    );
    let t0 = Instant::now();
    let a = invoke_tail(&pool, "{}").await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1250) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let id = a.request_id().to_owned();
    assert_eq!(
        a.text(),
        format!("{{\"errorType\":\"Sandbox.Timedout\",\"errorMessage\":\"RequestId: {id} Error: Task timed out after 1.00 seconds\"}}")
    );
    assert_in_order(
        &sink.text(),
        &[
            " ms\tPhase: init\tStatus: timeout\n",
            " ms\tPhase: invoke\tStatus: timeout\n",
            &format!("START RequestId: {id} Version: $LATEST\n"),
            &format!("Z {id} Task timed out after 1.0"),
            &format!("END RequestId: {id}\n"),
            "\tStatus: timeout\t\n",
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn launch_errors_are_invalid_entrypoint_and_workdir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = script_function(dir.path(), ECHO);
    config.image.entrypoint = vec!["/nonexistent/bootstrap".into()];
    let (pool, sink) = pool(config, PoolOptions::default());
    let a = invoke_tail(&pool, "{}").await;
    let id = a.request_id().to_owned();
    assert_eq!(a.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(
        a.text(),
        format!("{{\"errorType\":\"Runtime.InvalidEntrypoint\",\"errorMessage\":\"RequestId: {id} Error: fork/exec /nonexistent/bootstrap: no such file or directory\"}}")
    );
    // The shape of a real Lambda transcript for this error.
    assert_in_order(
        &sink.text(),
        &[
            "INIT_REPORT Init Duration: ",
            " ms\tPhase: init\tStatus: error\tError Type: Runtime.InvalidEntrypoint\nINIT_REPORT Init Duration: ",
            &format!(" ms\tPhase: invoke\tStatus: error\tError Type: Runtime.InvalidEntrypoint\nSTART RequestId: {id} Version: $LATEST\nRequestId: {id} Error: fork/exec /nonexistent/bootstrap: no such file or directory\nRuntime.InvalidEntrypoint\nEND RequestId: {id}\nREPORT RequestId: {id}\tDuration: "),
        ],
    );

    let mut config = script_function(dir.path(), ECHO);
    config.image.workdir = Some("/nonexistent".into());
    let (pool2, _) = common::pool(config, PoolOptions::default());
    let a = invoke(&pool2, &[], "{}").await;
    let id = a.request_id().to_owned();
    assert_eq!(
        a.text(),
        format!("{{\"errorType\":\"Runtime.InvalidWorkingDir\",\"errorMessage\":\"RequestId: {id} Error: the working directory doesn't exist: /nonexistent\"}}")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_is_frozen_between_invokes() {
    let script = r#"#!/bin/sh
(while true; do echo tick >> "$FIXTURE_DIR/ticks"; sleep 0.05; done) &
exec "$FIXTURE_DIR/echo"
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = dir.path().join("echo");
    std::fs::write(&echo, ECHO).expect("write echo");
    std::fs::set_permissions(&echo, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let mut config = script_function(dir.path(), script);
    config.env.push(("HANDLER_SLEEP".into(), "0.5".into()));
    let (pool, _) = pool(config, PoolOptions::default());
    let ticks = || {
        std::fs::read_to_string(dir.path().join("ticks"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(invoke(&pool, &[], "{}").await.status, 200);
    eventually(5, "the environment back in the pool", || {
        pool.idle_environments() == 1
    })
    .await;
    // lambox freezes an idle environment after a few ms (environment::FREEZE_DELAY); a tick
    // may still land in that window.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let frozen_at = ticks();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(ticks(), frozen_at, "a background process ran while frozen");
    // Thawed for the next invoke: the ticker runs during its 0.5 s.
    assert_eq!(invoke(&pool, &[], "{}").await.status, 200);
    assert!(ticks() >= frozen_at + 4, "{} -> {}", frozen_at, ticks());
}

#[tokio::test(flavor = "multi_thread")]
async fn full_queue_is_too_many_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = script_function(dir.path(), ECHO);
    config.env.push(("HANDLER_SLEEP".into(), "1".into()));
    let (pool, _) = pool(
        config,
        PoolOptions {
            concurrency: 1,
            queue_capacity: 1,
            ..PoolOptions::default()
        },
    );
    let running = {
        let pool = pool.clone();
        tokio::spawn(async move { invoke(&pool, &[], "{}").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queued = {
        let pool = pool.clone();
        tokio::spawn(async move { invoke(&pool, &[], "{}").await })
    };
    eventually(5, "one queued invoke", || pool.queued() == 1).await;
    let refused = invoke(&pool, &[], "{}").await;
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.header("x-amzn-errortype"),
        Some("TooManyRequestsException")
    );
    assert_eq!(
        refused.text(),
        "{\"Reason\":\"ReservedFunctionConcurrentInvocationLimitExceeded\",\"Type\":\"User\",\"message\":\"Rate Exceeded.\"}"
    );
    let refused = invoke(&pool, &[("X-Amz-Invocation-Type", "Event")], "{}").await;
    assert_eq!(refused.status, 429);
    for call in [running, queued] {
        let a = call.await.expect("join");
        assert_eq!(a.status, 200);
        assert!(a.text().starts_with("id="));
    }
}

/// The process launcher, with an `EnvControl` that reports what a cgroup would after an OOM
/// kill (the process launcher measures nothing).
#[derive(Debug)]
struct OomLauncher;

#[derive(Debug)]
struct OomControl(Box<dyn lambox_runtime::EnvControl>);

impl lambox_runtime::EnvControl for OomControl {
    fn freeze(&self) -> std::io::Result<()> {
        self.0.freeze()
    }
    fn thaw(&self) -> std::io::Result<()> {
        self.0.thaw()
    }
    fn kill(&self) {
        self.0.kill()
    }
    fn max_memory_bytes(&self) -> Option<u64> {
        Some(200 * 1024 * 1024 + 1)
    }
    fn oom_killed(&self) -> bool {
        true
    }
    fn cleanup(&self) {
        self.0.cleanup()
    }
}

impl lambox_runtime::Launcher for OomLauncher {
    fn launch(
        &self,
        spec: &lambox_runtime::LaunchSpec,
    ) -> Result<lambox_runtime::Launched, lambox_runtime::LaunchError> {
        let mut launched = lambox_runtime::ProcessLauncher::new().launch(spec)?;
        launched.control = Box::new(OomControl(launched.control));
        Ok(launched)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oom_kill_is_out_of_memory() {
    let script = r#"#!/bin/sh
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
curl -sS -o /dev/null "$API/invocation/next"
kill -9 $$
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = lambox_runtime::MemoryLogSink::new();
    let pool = lambox_runtime::Pool::new(
        script_function(dir.path(), script),
        std::sync::Arc::new(OomLauncher),
        std::sync::Arc::new(sink.clone()),
        PoolOptions::default(),
    )
    .expect("pool");
    let a = invoke_tail(&pool, "{}").await;
    let id = a.request_id().to_owned();
    assert_eq!(a.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(
        a.text(),
        format!("{{\"errorType\":\"Runtime.OutOfMemory\",\"errorMessage\":\"RequestId: {id} Error: Runtime exited with error: signal: killed\"}}")
    );
    assert_in_order(
        &a.log(),
        &[
            &format!("RequestId: {id} Error: Runtime exited with error: signal: killed\nRuntime.OutOfMemory\n"),
            "\tMemory Size: 128 MB\tMax Memory Used: 201 MB\tInit Duration: ",
            "\tStatus: error\tError Type: Runtime.OutOfMemory\t\n",
        ],
    );
}
