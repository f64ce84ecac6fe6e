//! The caller-facing invoke API's own answers (no function runs for these), via `oneshot`.

mod common;

use axum::body::Body;
use common::*;
use http::Request;
use http_body_util::BodyExt as _;
use lambox_runtime::{invoke_router, PoolOptions};
use tower::ServiceExt as _;

fn idle_pool() -> lambox_runtime::Pool {
    // Never launched by these tests: every request is refused before an invoke starts.
    let dir = std::env::temp_dir();
    pool(script_function_no_write(&dir), PoolOptions::default()).0
}

fn script_function_no_write(dir: &std::path::Path) -> lambox_runtime::FunctionConfig {
    lambox_runtime::FunctionConfig::new(
        "idle",
        lambox_runtime::ImageConfig {
            entrypoint: vec!["/bin/false".into()],
            cmd: vec![],
            workdir: Some(dir.display().to_string()),
            env: vec![],
        },
    )
}

fn error_of(a: &Answer) -> (&str, serde_json::Value) {
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert!(a.header("x-amzn-requestid").is_some());
    (
        a.header("x-amzn-errortype").expect("x-amzn-ErrorType"),
        a.json(),
    )
}

#[tokio::test]
async fn oversized_payloads_are_413() {
    let pool = idle_pool();
    let a = invoke(&pool, &[], vec![b' '; 6 * 1024 * 1024 + 1]).await;
    assert_eq!(a.status, 413);
    assert_eq!(error_of(&a).0, "RequestTooLargeException");
    assert_eq!(
        a.text(),
        "{\"Message\":\"6291457 byte payload is too large for the RequestResponse invocation type (limit 6291456 bytes)\"}"
    );
    let a = invoke(
        &pool,
        &[("X-Amz-Invocation-Type", "Event")],
        vec![b' '; 1024 * 1024 + 1],
    )
    .await;
    assert_eq!(a.status, 413);
    assert_eq!(
        a.text(),
        "{\"Message\":\"1048577 byte payload is too large for the Event invocation type (limit 1048576 bytes)\"}"
    );
}

#[tokio::test]
async fn dry_run_is_204_without_running() {
    let pool = idle_pool();
    let a = invoke(&pool, &[("X-Amz-Invocation-Type", "DryRun")], "{}").await;
    assert_eq!(a.status, 204);
    assert!(a.body.is_empty());
    assert_eq!(pool.idle_environments(), 0);
}

#[tokio::test]
async fn bad_requests_are_400() {
    let pool = idle_pool();
    let a = invoke(&pool, &[("X-Amz-Invocation-Type", "Sometimes")], "{}").await;
    assert_eq!(a.status, 400);
    let (code, body) = error_of(&a);
    assert_eq!(code, "ValidationException");
    assert_eq!(
        body,
        serde_json::json!({"Type": "User", "message": "1 validation error detected: Value 'Sometimes' at 'invocationType' failed to satisfy constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]"})
    );
    let a = invoke(&pool, &[("X-Amz-Log-Type", "Everything")], "{}").await;
    assert_eq!(a.status, 400);
    assert!(a
        .text()
        .contains("at 'logType' failed to satisfy constraint"));

    let a = invoke(&pool, &[], "not json").await;
    assert_eq!(a.status, 400);
    let (code, body) = error_of(&a);
    assert_eq!(code, "InvalidRequestContentException");
    assert!(body["message"].as_str().is_some_and(|m| m.starts_with(
        "Could not parse request body into json: Could not parse payload into json: "
    )));

    let a = invoke(&pool, &[("X-Amz-Client-Context", "%%%")], "{}").await;
    assert_eq!(a.status, 400);
    assert_eq!(error_of(&a).0, "InvalidRequestContentException");
}

#[tokio::test]
async fn unknown_operations_are_404() {
    let pool = idle_pool();
    for req in [
        Request::get("/2015-03-31/functions/f/invocations").body(Body::empty()),
        Request::post("/2015-03-31/functions/f/configuration").body(Body::empty()),
        Request::get("/").body(Body::empty()),
    ] {
        let resp = invoke_router(pool.clone())
            .oneshot(req.expect("request"))
            .await
            .expect("infallible");
        assert_eq!(resp.status(), 404);
        assert_eq!(
            resp.headers()["x-amzn-errortype"],
            "UnknownOperationException"
        );
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(
            &body[..],
            b"{\"Type\":\"User\",\"message\":\"Unknown operation\"}"
        );
    }
}

#[tokio::test]
async fn launch_failure_of_the_platform_is_500() {
    // A launcher that cannot start anything (not an entrypoint problem): ServiceException.
    #[derive(Debug)]
    struct Broken;
    impl lambox_runtime::Launcher for Broken {
        fn launch(
            &self,
            _: &lambox_runtime::LaunchSpec,
        ) -> Result<lambox_runtime::Launched, lambox_runtime::LaunchError> {
            Err(lambox_runtime::LaunchError::Other(
                "no cgroup for you".into(),
            ))
        }
    }
    let pool = lambox_runtime::Pool::new(
        script_function_no_write(&std::env::temp_dir()),
        std::sync::Arc::new(Broken),
        std::sync::Arc::new(lambox_runtime::MemoryLogSink::new()),
        PoolOptions::default(),
    )
    .expect("pool");
    let a = invoke(&pool, &[], "{}").await;
    assert_eq!(a.status, 500);
    let (code, body) = error_of(&a);
    assert_eq!(code, "ServiceException");
    assert_eq!(
        body,
        serde_json::json!({"Type": "Service", "message": "cannot start an execution environment: no cgroup for you"})
    );
}
