//! The Runtime API state machine, driven with `oneshot` (no sockets).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Frame;
use tower::ServiceExt as _;

use super::*;

type Answer = (StatusCode, HeaderMap, Bytes);

async fn call(router: &Router, req: Request<Body>) -> Answer {
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, body)
}

fn get_next() -> Request<Body> {
    Request::get(runtime_path::NEXT)
        .body(Body::empty())
        .expect("request")
}

fn post(path: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::post(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body.into()).expect("request")
}

fn response_path(id: &str) -> String {
    format!("/2018-06-01/runtime/invocation/{id}/response")
}

fn error_path(id: &str) -> String {
    format!("/2018-06-01/runtime/invocation/{id}/error")
}

fn invoke(id: &str) -> InvokeEvent {
    InvokeEvent {
        request_id: id.to_owned(),
        deadline_ms: 1_542_409_706_888,
        function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f".to_owned(),
        trace_id: "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1"
            .to_owned(),
        client_context: Some("{\"custom\":{\"k\":\"v\"}}".to_owned()),
        cognito_identity: None,
        payload: Bytes::from_static(b"{\"hello\":\"world\"}"),
    }
}

async fn event(ctl: &mut Controller) -> RuntimeEvent {
    tokio::time::timeout(Duration::from_secs(5), ctl.event())
        .await
        .expect("an event in time")
        .expect("event")
}

fn body_str(b: &Bytes) -> &str {
    std::str::from_utf8(b).expect("utf-8")
}

/// Brings a fresh API to Running with invoke `id` delivered; returns the `/next` answer.
async fn running(router: &Router, ctl: &mut Controller, id: &str) -> Answer {
    let r = router.clone();
    let next = tokio::spawn(async move { call(&r, get_next()).await });
    assert!(matches!(event(ctl).await, RuntimeEvent::Ready));
    ctl.post(invoke(id));
    next.await.expect("join")
}

#[tokio::test]
async fn next_long_polls_and_renders_the_invoke() {
    let (router, mut ctl) = runtime_api();
    let r = router.clone();
    let next = tokio::spawn(async move { call(&r, get_next()).await });
    assert!(matches!(event(&mut ctl).await, RuntimeEvent::Ready));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!next.is_finished(), "/next must wait for an invoke");
    ctl.post(invoke("req-1"));
    let (status, headers, body) = next.await.expect("join");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body_str(&body), "{\"hello\":\"world\"}");
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(h("Lambda-Runtime-Aws-Request-Id").as_deref(), Some("req-1"));
    assert_eq!(
        h("lambda-runtime-deadline-ms").as_deref(),
        Some("1542409706888")
    );
    assert_eq!(
        h("Lambda-Runtime-Invoked-Function-Arn").as_deref(),
        Some("arn:aws:lambda:us-east-1:000000000000:function:f")
    );
    assert!(h("Lambda-Runtime-Trace-Id").is_some_and(|t| t.starts_with("Root=1-")));
    assert_eq!(
        h("Lambda-Runtime-Client-Context").as_deref(),
        Some("{\"custom\":{\"k\":\"v\"}}")
    );
    assert_eq!(h("Lambda-Runtime-Cognito-Identity"), None);
    assert_eq!(h("content-type").as_deref(), Some("application/json"));

    // A second /next before any response hands out the same invoke again (RIE).
    let (status, headers, _) = call(&router, get_next()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["lambda-runtime-aws-request-id"], "req-1");
}

#[tokio::test]
async fn response_is_accepted_once() {
    let (router, mut ctl) = runtime_api();
    running(&router, &mut ctl, "req-1").await;
    let (status, headers, body) = call(
        &router,
        post(
            &response_path("req-1"),
            &[("Content-Type", "text/plain")],
            "hi",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body_str(&body), "{\"status\":\"OK\"}\n");
    assert_eq!(headers["content-type"], "application/json");
    match event(&mut ctl).await {
        RuntimeEvent::Response {
            request_id,
            response,
        } => {
            assert_eq!(request_id, "req-1");
            assert_eq!(response.content_type, "text/plain");
            assert_eq!(response.function_error, None);
            assert!(matches!(response.body, ResponseBody::Buffered(b) if b == "hi"));
        }
        other => panic!("{other:?}"),
    }
    // Twice: RIE's 403 from the response-sent state.
    let (status, _, body) = call(&router, post(&response_path("req-1"), &[], "again")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body_str(&body),
        "{\"errorMessage\":\"State transition from RuntimeResponseSentState to InvocationResponse failed for runtime. Error: State transition is not allowed\",\"errorType\":\"InvalidStateTransition\"}\n"
    );
    let (status, _, body) = call(&router, post(&error_path("req-1"), &[], "{}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body_str(&body).contains("State transition from RuntimeResponseSentState to InvocationErrorResponse failed for runtime."));

    // Back to /next: the invoke is over, the next one waits.
    let r = router.clone();
    let next = tokio::spawn(async move { call(&r, get_next()).await });
    assert!(matches!(event(&mut ctl).await, RuntimeEvent::Next));
    ctl.post(invoke("req-2"));
    let (_, headers, _) = next.await.expect("join");
    assert_eq!(headers["lambda-runtime-aws-request-id"], "req-2");
}

#[tokio::test]
async fn misuse_is_answered_as_rie_does() {
    let (router, mut ctl) = runtime_api();
    // Before any /next: Started.
    let (status, _, body) = call(&router, post(&response_path("x"), &[], "r")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body_str(&body),
        "{\"errorMessage\":\"State transition from Started to InvocationResponse failed for runtime. Error: State transition is not allowed\",\"errorType\":\"InvalidStateTransition\"}\n"
    );
    // Waiting in /next with no invoke: Ready.
    let r = router.clone();
    let next = tokio::spawn(async move { call(&r, get_next()).await });
    assert!(matches!(event(&mut ctl).await, RuntimeEvent::Ready));
    let (status, _, body) = call(&router, post(&response_path("x"), &[], "r")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body_str(&body).starts_with(
        "{\"errorMessage\":\"State transition from Ready to InvocationResponse failed"
    ));
    let (status, _, body) = call(&router, post(runtime_path::INIT_ERROR, &[], "{}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body_str(&body).contains("State transition from Ready to InitError failed"));

    ctl.post(invoke("req-1"));
    next.await.expect("join");
    // Unknown request id: 400, and the right id still works afterwards.
    for path in [response_path("nope"), error_path("nope")] {
        let (status, headers, body) = call(&router, post(&path, &[], "{}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(
            body_str(&body),
            "{\"errorMessage\":\"Invalid request ID\",\"errorType\":\"InvalidRequestID\"}\n"
        );
    }
    let (status, _, _) = call(&router, post(&response_path("req-1"), &[], "ok")).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // Unknown paths and RIE's ping.
    let (status, headers, body) = call(
        &router,
        Request::get("/2018-06-01/runtime/nothing")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body_str(&body), "404 page not found\n");
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    let (status, _, body) = call(
        &router,
        Request::get("/ping").body(Body::empty()).expect("request"),
    )
    .await;
    assert_eq!((status, body_str(&body)), (StatusCode::OK, "pong"));
}

#[tokio::test]
async fn errors_pass_json_through_and_build_the_rest() {
    struct Case {
        headers: &'static [(&'static str, &'static str)],
        body: &'static str,
        error_type: &'static str,
        document: &'static str,
    }
    let cases = [
        // JSON body, awslambdaric's header: passed through as sent.
        Case {
            headers: &[("Lambda-Runtime-Function-Error-Type", "Runtime.ImportModuleError")],
            body: "{\"errorMessage\": \"boom\", \"errorType\": \"Exception\"}",
            error_type: "Runtime.ImportModuleError",
            document: "{\"errorMessage\": \"boom\", \"errorType\": \"Exception\"}",
        },
        // The Rust runtime's `unhandled`, header name in another case.
        Case {
            headers: &[("LAMBDA-RUNTIME-FUNCTION-ERROR-TYPE", "unhandled")],
            body: "{\"errorType\":\"E\",\"errorMessage\":\"m\"}",
            error_type: "Runtime.Unknown",
            document: "{\"errorType\":\"E\",\"errorMessage\":\"m\"}",
        },
        // No header, not JSON: built from the normalised type and the text.
        Case {
            headers: &[],
            body: "boom <here>",
            error_type: "Runtime.Unknown",
            document: "{\"errorType\":\"Runtime.Unknown\",\"errorMessage\":\"boom \\u003chere\\u003e\"}",
        },
        Case {
            headers: &[("lambda-runtime-function-error-type", "Function.x")],
            body: "",
            error_type: "Function.Unknown",
            document: "{\"errorType\":\"Function.Unknown\",\"errorMessage\":\"\"}",
        },
        // RIE's error-with-cause content type: the error part, re-encoded.
        Case {
            headers: &[("Content-Type", "application/vnd.aws.lambda.error.cause+json")],
            body: "{\"errorMessage\":\"m\",\"errorType\":\"T\",\"stackTrace\":[\"a\"],\"errorCause\":{\"x\":1}}",
            error_type: "Runtime.Unknown",
            document: "{\"errorMessage\":\"m\",\"errorType\":\"T\",\"stackTrace\":[\"a\"]}",
        },
    ];
    for case in cases {
        let (router, mut ctl) = runtime_api();
        running(&router, &mut ctl, "req-1").await;
        let (status, _, body) =
            call(&router, post(&error_path("req-1"), case.headers, case.body)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(body_str(&body), "{\"status\":\"OK\"}\n");
        match event(&mut ctl).await {
            RuntimeEvent::Response { response, .. } => {
                assert_eq!(
                    response.function_error,
                    Some(FunctionError::new(case.error_type))
                );
                assert_eq!(response.content_type, "application/json");
                match response.body {
                    ResponseBody::Buffered(b) => assert_eq!(body_str(&b), case.document),
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn oversized_response_is_413_to_the_runtime() {
    let (router, mut ctl) = runtime_api();
    running(&router, &mut ctl, "req-1").await;
    let big = vec![b'x'; wire::MAX_RESPONSE_SIZE + 1];
    let (status, _, body) = call(&router, post(&response_path("req-1"), &[], big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        body_str(&body),
        "{\"errorMessage\":\"Exceeded maximum allowed payload size (6291556 bytes).\",\"errorType\":\"RequestEntityTooLarge\"}\n"
    );
    match event(&mut ctl).await {
        RuntimeEvent::Response { response, .. } => {
            assert_eq!(
                response.function_error,
                Some(FunctionError::new("Function.ResponseSizeTooLarge"))
            );
            match response.body {
                ResponseBody::Buffered(b) => assert_eq!(
                    body_str(&b),
                    "{\"errorMessage\":\"Response payload size exceeded maximum allowed payload size (6291556 bytes).\",\"errorType\":\"Function.ResponseSizeTooLarge\"}"
                ),
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
    // Exactly at the limit is fine.
    let (router, mut ctl) = runtime_api();
    running(&router, &mut ctl, "req-1").await;
    let max = vec![b'x'; wire::MAX_RESPONSE_SIZE];
    let (status, _, _) = call(&router, post(&response_path("req-1"), &[], max)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn init_error_is_reported_once() {
    let (router, mut ctl) = runtime_api();
    let (status, _, body) = call(
        &router,
        post(
            runtime_path::INIT_ERROR,
            &[("Lambda-Runtime-Function-Error-Type", "Runtime.ImportModuleError")],
            "{\"errorMessage\":\"Unable to import module 'x'\",\"errorType\":\"Runtime.ImportModuleError\"}",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body_str(&body), "{\"status\":\"OK\"}\n");
    match event(&mut ctl).await {
        RuntimeEvent::InitError { error_type, body } => {
            assert_eq!(error_type, "Runtime.ImportModuleError");
            assert_eq!(
                body_str(&body),
                "{\"errorMessage\":\"Unable to import module 'x'\",\"errorType\":\"Runtime.ImportModuleError\"}"
            );
        }
        other => panic!("{other:?}"),
    }
    let (status, _, body) = call(&router, post(runtime_path::INIT_ERROR, &[], "{}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body_str(&body).contains("State transition from InitError to InitError failed"));
    let (status, _, body) = call(&router, get_next()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body_str(&body).contains("State transition from InitError to Ready failed"));
}

fn stream_body(frames: Vec<Frame<Bytes>>) -> Body {
    Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(
        frames.into_iter().map(Ok::<_, Infallible>),
    )))
}

#[tokio::test]
async fn streamed_responses_pass_chunks_and_trailer_errors() {
    // A complete stream.
    let (router, mut ctl) = runtime_api();
    running(&router, &mut ctl, "req-1").await;
    let r = router.clone();
    let upload = tokio::spawn(async move {
        call(
            &r,
            post(
                &response_path("req-1"),
                &[
                    ("Lambda-Runtime-Function-Response-Mode", "streaming"),
                    ("Content-Type", "text/event-stream"),
                ],
                stream_body(vec![
                    Frame::data(Bytes::from("a")),
                    Frame::data(Bytes::from("b")),
                ]),
            ),
        )
        .await
    });
    let RuntimeEvent::Response { response, .. } = event(&mut ctl).await else {
        panic!("expected a response");
    };
    assert_eq!(response.content_type, "text/event-stream");
    let ResponseBody::Streaming(stream) = response.body else {
        panic!("expected a stream");
    };
    let items: Vec<_> = StreamExt::collect(stream).await;
    assert_eq!(items, vec![Ok(Bytes::from("a")), Ok(Bytes::from("b"))]);
    let (status, _, body) = upload.await.expect("join");
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body_str(&body), "{\"status\":\"OK\"}\n");

    // A stream whose trailers report an error.
    let (router, mut ctl) = runtime_api();
    running(&router, &mut ctl, "req-1").await;
    let mut trailers = HeaderMap::new();
    trailers.insert(
        "lambda-runtime-function-error-type",
        "Runtime.StreamError".parse().expect("value"),
    );
    trailers.insert(
        "lambda-runtime-function-error-body",
        base64::engine::general_purpose::STANDARD
            .encode("{\"errorType\":\"Runtime.StreamError\",\"errorMessage\":\"midway\"}")
            .parse()
            .expect("value"),
    );
    let r = router.clone();
    let upload = tokio::spawn(async move {
        call(
            &r,
            post(
                &response_path("req-1"),
                &[("lambda-runtime-function-response-mode", "streaming")],
                stream_body(vec![
                    Frame::data(Bytes::from("partial")),
                    Frame::trailers(trailers),
                ]),
            ),
        )
        .await
    });
    let RuntimeEvent::Response { response, .. } = event(&mut ctl).await else {
        panic!("expected a response");
    };
    let ResponseBody::Streaming(stream) = response.body else {
        panic!("expected a stream");
    };
    let items: Vec<_> = StreamExt::collect(stream).await;
    assert_eq!(
        items,
        vec![
            Ok(Bytes::from("partial")),
            Err(StreamError {
                error_type: "Runtime.StreamError".into(),
                body: Bytes::from(
                    "{\"errorType\":\"Runtime.StreamError\",\"errorMessage\":\"midway\"}"
                ),
            })
        ]
    );
    assert_eq!(upload.await.expect("join").0, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn unknown_response_mode_is_rejected() {
    let (router, mut ctl) = runtime_api();
    running(&router, &mut ctl, "req-1").await;
    let (status, _, body) = call(
        &router,
        post(
            &response_path("req-1"),
            &[("Lambda-Runtime-Function-Response-Mode", "chunky")],
            "x",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body_str(&body),
        "{\"errorMessage\":\"Invalid function response mode\",\"errorType\":\"InvalidFunctionResponseMode\"}\n"
    );
    let RuntimeEvent::Response { response, .. } = event(&mut ctl).await else {
        panic!("expected a response");
    };
    assert_eq!(
        response.function_error,
        Some(FunctionError::new("Runtime.InvalidResponseModeHeader"))
    );
}
