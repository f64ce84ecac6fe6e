//! End to end with AWS's Python runtime interface client (awslambdaric), run as a plain
//! process by `ProcessLauncher`, invoked through the invoke API.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use lambox_runtime::{InvokeRequest, LogSource, PoolOptions};

const HANDLERS: &str = r#"
import json, logging, os, sys, time

def echo(event, context):
    return event

def info(event, context):
    cc = context.client_context
    return {
        "request_id": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "memory": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "function_name": context.function_name,
        "version": context.function_version,
        "log_group": context.log_group_name,
        "log_stream": context.log_stream_name,
        "custom": cc.custom if cc else None,
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "env": {k: os.environ.get(k) for k in [
            "AWS_LAMBDA_RUNTIME_API", "AWS_REGION", "AWS_DEFAULT_REGION", "TZ", "LANG",
            "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR", "AWS_LAMBDA_INITIALIZATION_TYPE",
            "USER_VAR", "AWS_ACCESS_KEY_ID",
        ]},
    }

def fail(event, context):
    raise Exception("boom")

def sleep(event, context):
    time.sleep(event.get("seconds", 5))
    return {"slept": event.get("seconds", 5)}

def exit3(event, context):
    sys.exit(3)

def kill9(event, context):
    os.kill(os.getpid(), 9)

def logs(event, context):
    print("first line")
    print("two\nlines")
    sys.stderr.write("to stderr\n")
    logging.getLogger().warning("from logging")
    return "ok"

def big(event, context):
    return "x" * (7 * 1024 * 1024)

def marker(event, context):
    with open(event["path"] + ".tmp", "w") as f:
        f.write(context.aws_request_id)
    os.rename(event["path"] + ".tmp", event["path"])
    return "ok"
"#;

const BROKEN: &str = "import no_such_module_xyz\n\ndef handler(event, context):\n    return 1\n";

fn handlers_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("handlers.py"), HANDLERS).expect("write handlers");
    std::fs::write(dir.path().join("broken.py"), BROKEN).expect("write broken");
    dir
}

fn options() -> PoolOptions {
    PoolOptions::default()
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_cold_then_warm_with_tail_logs() {
    let dir = handlers_dir();
    let (pool, sink) = pool(python_function(dir.path(), "handlers.info"), options());

    let first = invoke_tail(&pool, "{}").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-amz-executed-version"), Some("$LATEST"));
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(first.header("x-amz-function-error"), None);
    let id = first.request_id().to_owned();
    let body = first.json();
    assert_eq!(body["request_id"], id.as_str());
    assert_eq!(
        body["arn"],
        "arn:aws:lambda:us-east-1:000000000000:function:pyfn"
    );
    assert_eq!(body["memory"], "128");
    assert_eq!(body["function_name"], "pyfn");
    assert_eq!(body["version"], "$LATEST");
    assert_eq!(body["log_group"], "/aws/lambda/pyfn");
    assert!(body["log_stream"]
        .as_str()
        .is_some_and(|s| s.contains("/[$LATEST]")));
    let remaining = body["remaining_ms"].as_i64().expect("remaining ms");
    assert!(
        (8_000..=10_000).contains(&remaining),
        "remaining {remaining} ms of 10 s"
    );
    assert!(body["trace"]
        .as_str()
        .is_some_and(|t| t.starts_with("Root=1-")));
    assert_eq!(body["cwd"], dir.path().display().to_string());
    assert_eq!(body["env"]["TZ"], ":UTC");
    assert_eq!(body["env"]["AWS_REGION"], "us-east-1");
    assert_eq!(body["env"]["LAMBDA_TASK_ROOT"], "/var/task");
    assert_eq!(body["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"], "on-demand");
    assert!(body["env"]["AWS_LAMBDA_RUNTIME_API"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));

    let log = first.log();
    assert!(
        log.starts_with(&format!("START RequestId: {id} Version: $LATEST\n")),
        "{log}"
    );
    assert_in_order(
        &log,
        &[
            &format!("END RequestId: {id}\n"),
            &format!("REPORT RequestId: {id}\tDuration: "),
            " ms\tBilled Duration: ",
            " ms\tMemory Size: 128 MB\tMax Memory Used: 128 MB\tInit Duration: ",
            " ms\t\n",
        ],
    );

    // Warm: same process, no init.
    let second = invoke_tail(&pool, "{}").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.json()["pid"], body["pid"]);
    let log2 = second.log();
    assert!(!log2.contains("Init Duration"), "{log2}");
    assert!(log2.contains(&format!("END RequestId: {}", second.request_id())));

    // The sink saw the same framing, attributed to the invokes.
    let records = sink.records();
    let starts: Vec<_> = records
        .iter()
        .filter(|r| r.source == LogSource::Platform && r.text.starts_with("START"))
        .collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0].request_id.as_deref(), Some(id.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_returns_the_event_and_client_context() {
    let dir = handlers_dir();
    let (pool, _) = pool(python_function(dir.path(), "handlers.echo"), options());
    let a = invoke(&pool, &[], "{\"hello\": [1, 2, 3]}").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "{\"hello\": [1, 2, 3]}");
    // An empty payload arrives as {}.
    let a = invoke(&pool, &[], "").await;
    assert_eq!(a.text(), "{}");

    let (pool, _) = pool_with_env(dir.path());
    let cc = base64::engine::general_purpose::STANDARD
        .encode("{\"custom\":{\"k\":\"v\"},\"env\":{},\"client\":{}}");
    let a = invoke(&pool, &[("X-Amz-Client-Context", &cc)], "{}").await;
    assert_eq!(a.status, 200);
    let body = a.json();
    assert_eq!(body["custom"], serde_json::json!({"k": "v"}));
    assert_eq!(body["env"]["USER_VAR"], "from-user");
    assert_eq!(body["env"]["AWS_ACCESS_KEY_ID"], "AKIDEXAMPLE");
}

fn pool_with_env(dir: &std::path::Path) -> (lambox_runtime::Pool, lambox_runtime::MemoryLogSink) {
    let mut config = python_function(dir, "handlers.info");
    config.env.push(("USER_VAR".into(), "from-user".into()));
    config.credentials = Some(lambox_runtime::AwsCredentials {
        access_key_id: Some("AKIDEXAMPLE".into()),
        secret_access_key: Some("secret".into()),
        session_token: None,
    });
    pool(config, options())
}

#[tokio::test(flavor = "multi_thread")]
async fn exception_is_an_unhandled_function_error() {
    let dir = handlers_dir();
    let (pool, sink) = pool(python_function(dir.path(), "handlers.fail"), options());
    let a = invoke_tail(&pool, "{}").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-amz-function-error"), Some("Unhandled"));
    let id = a.request_id().to_owned();
    let body = a.json();
    assert_eq!(body["errorType"], "Exception");
    assert_eq!(body["errorMessage"], "boom");
    assert_eq!(body["requestId"], id.as_str());
    assert!(body["stackTrace"].as_array().is_some_and(|s| !s.is_empty()));
    // awslambdaric's \r-joined traceback is one record, printed as several lines.
    let record = sink
        .records()
        .into_iter()
        .find(|r| r.text.starts_with("[ERROR] Exception: boom"))
        .expect("error record");
    assert!(record
        .text
        .starts_with("[ERROR] Exception: boom\nTraceback (most recent call last):\n"));
    assert_eq!(record.request_id.as_deref(), Some(id.as_str()));
    assert!(a.log().contains("[ERROR] Exception: boom\nTraceback"));
    // A function error does not reset the environment.
    let b = invoke_tail(&pool, "{}").await;
    assert!(!b.log().contains("Init Duration"));
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_kills_and_resets_the_environment() {
    let dir = handlers_dir();
    let mut config = python_function(dir.path(), "handlers.sleep");
    config.timeout_secs = 1;
    let (pool, _) = pool(config, options());
    // Warm the environment first so the timeout measures the invoke only.
    let warm = invoke(&pool, &[], "{\"seconds\": 0}").await;
    assert_eq!(warm.status, 200);
    let t0 = Instant::now();
    let a = invoke_tail(&pool, "{\"seconds\": 30}").await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-amz-function-error"), Some("Unhandled"));
    let id = a.request_id().to_owned();
    assert_eq!(
        a.text(),
        format!("{{\"errorType\":\"Sandbox.Timedout\",\"errorMessage\":\"RequestId: {id} Error: Task timed out after 1.00 seconds\"}}")
    );
    let log = a.log();
    assert_in_order(
        &log,
        &[
            &format!("START RequestId: {id}"),
            &format!("Z {id} Task timed out after 1.0"),
            &format!("END RequestId: {id}"),
            "\tStatus: timeout\t\n",
        ],
    );
    // The next invoke cold-starts a new environment.
    let b = invoke_tail(&pool, "{\"seconds\": 0}").await;
    assert_eq!(b.status, 200);
    assert_eq!(b.text(), "{\"slept\": 0}");
    assert!(b.log().contains("Init Duration"), "{}", b.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_exit_and_kill_are_exit_errors() {
    let dir = handlers_dir();
    for (handler, reason) in [
        ("handlers.exit3", "exit status 3"),
        ("handlers.kill9", "signal: killed"),
    ] {
        let (pool, _) = pool(python_function(dir.path(), handler), options());
        let a = invoke_tail(&pool, "{}").await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("x-amz-function-error"), Some("Unhandled"));
        let id = a.request_id().to_owned();
        assert_eq!(
            a.text(),
            format!("{{\"errorType\":\"Runtime.ExitError\",\"errorMessage\":\"RequestId: {id} Error: Runtime exited with error: {reason}\"}}")
        );
        assert_in_order(
            &a.log(),
            &[
                &format!("RequestId: {id} Error: Runtime exited with error: {reason}\nRuntime.ExitError\n"),
                &format!("END RequestId: {id}\n"),
                "\tStatus: error\tError Type: Runtime.ExitError\t\n",
            ],
        );
        // And the next invoke gets a fresh environment (which fails the same way).
        let b = invoke_tail(&pool, "{}").await;
        assert!(b.log().contains("Init Duration"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn import_error_fails_init_twice_then_the_invoke() {
    let dir = handlers_dir();
    let (pool, sink) = pool(python_function(dir.path(), "broken.handler"), options());
    let a = invoke_tail(&pool, "{}").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-amz-function-error"), Some("Unhandled"));
    let body = a.json();
    assert_eq!(body["errorType"], "Runtime.ImportModuleError");
    assert_eq!(
        body["errorMessage"],
        "Unable to import module 'broken': No module named 'no_such_module_xyz'"
    );
    let id = a.request_id().to_owned();
    let all = sink.text();
    assert_in_order(
        &all,
        &[
            "[ERROR] Runtime.ImportModuleError: Unable to import module 'broken'",
            "INIT_REPORT Init Duration: ",
            " ms\tPhase: init\tStatus: error\tError Type: Runtime.ImportModuleError\n",
            "[ERROR] Runtime.ImportModuleError: Unable to import module 'broken'",
            " ms\tPhase: invoke\tStatus: error\tError Type: Runtime.ImportModuleError\n",
            &format!("START RequestId: {id} Version: $LATEST\n"),
            &format!("END RequestId: {id}\n"),
            &format!("REPORT RequestId: {id}\t"),
            "\tStatus: error\tError Type: Runtime.ImportModuleError\t\n",
        ],
    );
    assert!(a.log().starts_with(&format!("START RequestId: {id}")));
}

#[tokio::test(flavor = "multi_thread")]
async fn function_output_is_forwarded_line_by_line() {
    let dir = handlers_dir();
    let (pool, sink) = pool(python_function(dir.path(), "handlers.logs"), options());
    let a = invoke_tail(&pool, "{}").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "\"ok\"");
    let id = a.request_id().to_owned();
    let ours: Vec<_> = sink
        .records()
        .into_iter()
        .filter(|r| r.request_id.as_deref() == Some(id.as_str()))
        .map(|r| (r.source, r.text))
        .collect();
    let texts: Vec<&str> = ours.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts[0], format!("START RequestId: {id} Version: $LATEST"));
    assert!(texts.contains(&"first line"));
    assert!(texts.contains(&"two"));
    assert!(texts.contains(&"lines"));
    assert!(ours.contains(&(LogSource::Stderr, "to stderr".to_owned())));
    assert!(texts
        .iter()
        .any(|t| t.starts_with("[WARNING]\t") && t.ends_with(&format!("\t{id}\tfrom logging"))));
    // Every line the function wrote comes before END.
    let end = texts
        .iter()
        .position(|t| t.starts_with("END"))
        .expect("END");
    assert!(
        texts
            .iter()
            .position(|t| *t == "to stderr")
            .expect("stderr line")
            < end
    );
    assert_in_order(
        &a.log(),
        &[
            "first line\n",
            "two\nlines\n",
            &format!("END RequestId: {id}"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_response_is_function_response_size_too_large() {
    let dir = handlers_dir();
    let (pool, _) = pool(python_function(dir.path(), "handlers.big"), options());
    let a = invoke(&pool, &[], "{}").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(
        a.text(),
        "{\"errorMessage\":\"Response payload size exceeded maximum allowed payload size (6291556 bytes).\",\"errorType\":\"Function.ResponseSizeTooLarge\"}"
    );
    // The function can still be invoked afterwards.
    let (pool2, _) = pool_echo(dir.path());
    let b = invoke(&pool2, &[], "{\"x\": 1}").await;
    assert_eq!(b.text(), "{\"x\": 1}");
    let c = invoke(&pool, &[], "{}").await;
    assert_eq!(c.header("x-amz-function-error"), Some("Unhandled"));
}

fn pool_echo(dir: &std::path::Path) -> (lambox_runtime::Pool, lambox_runtime::MemoryLogSink) {
    pool(python_function(dir, "handlers.echo"), options())
}

#[tokio::test(flavor = "multi_thread")]
async fn event_invokes_run_in_the_background() {
    let dir = handlers_dir();
    let (pool, _) = pool(python_function(dir.path(), "handlers.marker"), options());
    let marker = dir.path().join("marker");
    let payload = serde_json::json!({ "path": marker }).to_string();
    let a = invoke(&pool, &[("X-Amz-Invocation-Type", "Event")], payload).await;
    assert_eq!(a.status, 202);
    assert!(a.body.is_empty());
    let id = a.request_id().to_owned();
    eventually(15, "the event's marker file", || marker.exists()).await;
    assert_eq!(std::fs::read_to_string(&marker).expect("marker"), id);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_two_queues_the_rest() {
    let dir = handlers_dir();
    let (pool, _) = pool(
        python_function(dir.path(), "handlers.sleep"),
        PoolOptions {
            concurrency: 2,
            ..PoolOptions::default()
        },
    );
    // Two environments, warmed first so that only the invokes are timed.
    let warm: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { invoke(&pool, &[], "{\"seconds\": 0.3}").await })
        })
        .collect();
    for w in warm {
        assert_eq!(w.await.expect("join").status, 200);
    }
    eventually(5, "two idle environments", || pool.idle_environments() == 2).await;

    let t0 = Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { invoke(&pool, &[], "{\"seconds\": 1}").await })
        })
        .collect();
    for c in calls {
        let a = c.await.expect("join");
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.header("x-amz-function-error"), None, "{}", a.text());
        assert_eq!(a.text(), "{\"slept\": 1}");
    }
    let took = t0.elapsed();
    // Two rounds of 1 s: not four (no concurrency), not one (no limit).
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(3500),
        "{took:?}"
    );
    // The environments go back to the pool once their runtimes are back in /next.
    eventually(5, "two idle environments", || pool.idle_environments() == 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pool_api_without_http() {
    let dir = handlers_dir();
    let (pool, _) = pool_echo(dir.path());
    let resp = pool
        .invoke(InvokeRequest {
            payload: bytes::Bytes::from_static(b"[1]"),
            ..InvokeRequest::default()
        })
        .await
        .expect("invoke");
    assert_eq!(resp.function_error, None);
    let lambox_runtime::ResponseBody::Buffered(body) = resp.body else {
        panic!("buffered");
    };
    assert_eq!(body, "[1]");
    let report = resp.report.wait().await.expect("report");
    assert_eq!(report.status, lambox_runtime::InvokeStatus::Completed);
    assert!(report.init_duration.is_some());
    assert!(report.billed_duration_ms >= 1);
}
