//! The router with `oneshot`: validation, error shapes, state transitions that need no
//! function to run (invokes are covered end to end in crates/lambox/tests/serve.rs).
//! Everything here is real: a real image store and state database in a temp dir.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use lambox_api::sigv4::{AccessKey, AuthError, Guard, SecretKey, Verifier, SERVICE_LAMBDA};
use lambox_api::{Lambda, Scheduler, ServiceConfig, State, StoreImages};
use lambox_image::store::Store;
use lambox_runtime::{Launcher, MemoryLogSink, ProcessLauncher};
use serde_json::{json, Value};
use tower::ServiceExt;

struct App {
    router: Router,
    _dir: tempfile::TempDir,
}

fn app_with_limit(account_concurrency: u64) -> App {
    app_with(account_concurrency, None)
}

fn app_with(account_concurrency: u64, auth: Option<Guard>) -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(dir.path()).expect("store"));
    let state = State::open(dir.path()).expect("state");
    let images = Arc::new(StoreImages::new(store, 1 << 30));
    let scheduler = Scheduler::new(
        images.clone(),
        Arc::new(|_: &lambox_api::ResolvedImage| {
            Arc::new(ProcessLauncher::new()) as Arc<dyn Launcher>
        }),
        Arc::new(MemoryLogSink::new()),
        "000000000000".into(),
        "us-east-1".into(),
        account_concurrency as usize,
    );
    let lambda = Lambda::new(
        ServiceConfig {
            account_id: "000000000000".into(),
            region: "us-east-1".into(),
            account_concurrency,
            async_retry_delay_scale: 1.0,
            async_concurrency: 4,
        },
        state,
        images,
        scheduler,
    );
    App {
        router: lambox_api::router_with_auth(lambda, auth),
        _dir: dir,
    }
}

fn app() -> App {
    app_with_limit(1000)
}

struct Answer {
    status: StatusCode,
    error_type: Option<String>,
    request_id: Option<String>,
    body: Value,
}

async fn call(app: &App, method: &str, uri: &str, body: Option<Value>) -> Answer {
    call_with(app, method, uri, &[], body).await
}

async fn call_with(
    app: &App,
    method: &str,
    uri: &str,
    headers: &[(&str, &[u8])],
    body: Option<Value>,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(match body {
            Some(b) => Body::from(b.to_string()),
            None => Body::empty(),
        })
        .expect("request");
    let resp = app.router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let error_type = header("x-amzn-errortype");
    let request_id = header("x-amzn-requestid");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {uri}: body is not JSON ({e}): {bytes:?}"))
    };
    Answer {
        status,
        error_type,
        request_id,
        body,
    }
}

fn create_body(name: &str, image: &str) -> Value {
    json!({
        "FunctionName": name,
        "Role": "arn:aws:iam::000000000000:role/x",
        "PackageType": "Image",
        "Code": {"ImageUri": image},
    })
}

/// Asserts an AWS error: status, `x-amzn-ErrorType`, `Type`, and the message (in the member
/// botocore's model names for that exception).
fn assert_error(a: &Answer, status: u16, code: &str, message_contains: &str) {
    assert_eq!(a.status.as_u16(), status, "{:?}", a.body);
    assert_eq!(a.error_type.as_deref(), Some(code), "{:?}", a.body);
    assert!(a.request_id.is_some(), "no x-amzn-RequestId");
    let member = if matches!(code, "ResourceNotFoundException" | "ServiceException") {
        "Message"
    } else {
        "message"
    };
    let msg = a.body[member]
        .as_str()
        .unwrap_or_else(|| panic!("no {member} in {:?}", a.body));
    assert!(
        msg.contains(message_contains),
        "{msg:?} lacks {message_contains:?}"
    );
    assert!(
        a.body["Type"] == "User" || a.body["Type"] == "Service",
        "{:?}",
        a.body
    );
}

/// Polls GetFunctionConfiguration until the function leaves Pending.
async fn settled(app: &App, name: &str) -> Value {
    let start = Instant::now();
    loop {
        let a = call(
            app,
            "GET",
            &format!("/2015-03-31/functions/{name}/configuration"),
            None,
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        if a.body["State"] != "Pending" {
            return a.body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still Pending: {:?}",
            a.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn zip_functions_are_refused_with_invalid_parameter_value() {
    let app = app();
    let mut body = create_body("f", "127.0.0.1:1/x:1");
    body["PackageType"] = json!("Zip");
    let a = call(&app, "POST", "/2015-03-31/functions", Some(body)).await;
    assert_error(
        &a,
        400,
        "InvalidParameterValueException",
        "container-image functions only",
    );
    let mut body = create_body("f", "127.0.0.1:1/x:1");
    body.as_object_mut().expect("object").remove("PackageType");
    let a = call(&app, "POST", "/2015-03-31/functions", Some(body)).await;
    assert_error(
        &a,
        400,
        "InvalidParameterValueException",
        "PackageType Zip is not supported",
    );
}

#[tokio::test]
async fn create_validates_as_aws_does() {
    let app = app();
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"Role": "arn:aws:iam::000000000000:role/x", "PackageType": "Image", "Code": {"ImageUri": "a/b:c"}}),
            400,
            "ValidationException",
            "Value null at 'functionName'",
        ),
        (
            json!({"FunctionName": "bad name", "Role": "arn:aws:iam::000000000000:role/x", "PackageType": "Image", "Code": {"ImageUri": "a/b:c"}}),
            400,
            "ValidationException",
            "at 'functionName' failed to satisfy constraint",
        ),
        (
            json!({"FunctionName": "f", "Role": "not-a-role", "PackageType": "Image", "Code": {"ImageUri": "a/b:c"}}),
            400,
            "ValidationException",
            "at 'role'",
        ),
        (
            json!({"FunctionName": "f", "Role": "arn:aws:iam::000000000000:role/x", "PackageType": "Image", "Code": {}}),
            400,
            "InvalidParameterValueException",
            "Please provide ImageUri",
        ),
        (
            json!({"FunctionName": "f", "Role": "arn:aws:iam::000000000000:role/x", "PackageType": "Image", "Code": {"ImageUri": "a/b:c"}, "Handler": "x.y"}),
            400,
            "InvalidParameterValueException",
            "Handler or Runtime",
        ),
    ];
    for (body, status, code, msg) in cases {
        let a = call(&app, "POST", "/2015-03-31/functions", Some(body.clone())).await;
        assert_error(&a, status, code, msg);
    }
    let with = |k: &str, v: Value| {
        let mut b = create_body("f", "127.0.0.1:1/x:1");
        b[k] = v;
        b
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            with("MemorySize", json!(100)),
            "ValidationException",
            "Member must have value greater than or equal to 128",
        ),
        (
            with("MemorySize", json!(10241)),
            "InvalidParameterValueException",
            "less than or equal to 10240",
        ),
        (
            with("Timeout", json!(0)),
            "ValidationException",
            "greater than or equal to 1",
        ),
        (
            with("Timeout", json!(901)),
            "InvalidParameterValueException",
            "less than or equal to 900",
        ),
        (
            with("EphemeralStorage", json!({"Size": 511})),
            "ValidationException",
            "greater than or equal to 512",
        ),
        (
            with("EphemeralStorage", json!({"Size": 10241})),
            "InvalidParameterValueException",
            "less than or equal to 10240",
        ),
        (
            with("Architectures", json!(["x86_64", "arm64"])),
            "ValidationException",
            "architectures",
        ),
        (
            with("Architectures", json!(["mips"])),
            "ValidationException",
            "[x86_64, arm64]",
        ),
        (
            with(
                "Environment",
                json!({"Variables": {"AWS_REGION": "x", "OK_KEY": "1"}}),
            ),
            "InvalidParameterValueException",
            "Reserved keys used in this request: AWS_REGION",
        ),
        (
            with(
                "Environment",
                json!({"Variables": {"BIG": "x".repeat(4100)}}),
            ),
            "InvalidParameterValueException",
            "exceeded the 4KB limit",
        ),
        (
            with("Environment", json!({"Variables": {"1BAD": "x"}})),
            "ValidationException",
            "Map keys must satisfy constraint",
        ),
        (
            with("Description", json!("d".repeat(257))),
            "ValidationException",
            "length less than or equal to 256",
        ),
        (
            with("PackageType", json!("Wheel")),
            "ValidationException",
            "[Zip, Image]",
        ),
    ];
    for (body, code, msg) in cases {
        let a = call(&app, "POST", "/2015-03-31/functions", Some(body.clone())).await;
        assert_error(&a, 400, code, msg);
    }
    let a = call(&app, "POST", "/2015-03-31/functions", None).await;
    assert_eq!(a.status, 400);
    // Nothing was created by any of those.
    let a = call(&app, "GET", "/2015-03-31/functions/", None).await;
    assert_eq!(a.body["Functions"], json!([]));
}

#[tokio::test]
async fn missing_functions_are_404_with_the_arn() {
    let app = app();
    for (method, path) in [
        ("GET", "/2015-03-31/functions/nope"),
        ("GET", "/2015-03-31/functions/nope/configuration"),
        (
            "GET",
            "/2015-03-31/functions/arn:aws:lambda:us-east-1:000000000000:function:nope",
        ),
        ("GET", "/2015-03-31/functions/000000000000:function:nope"),
        ("DELETE", "/2015-03-31/functions/nope"),
        ("POST", "/2015-03-31/functions/nope/invocations"),
        ("GET", "/2015-03-31/functions/nope/versions"),
        ("GET", "/2019-09-30/functions/nope/concurrency"),
    ] {
        let a = call(&app, method, path, None).await;
        assert_error(
            &a,
            404,
            "ResourceNotFoundException",
            "Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope",
        );
    }
    // Another account's ARN names nothing here.
    let a = call(
        &app,
        "GET",
        "/2015-03-31/functions/arn:aws:lambda:us-east-1:111111111111:function:nope",
        None,
    )
    .await;
    assert_error(&a, 404, "ResourceNotFoundException", "Function not found");
    let a = call(&app, "GET", "/2015-03-31/functions/a:b:c:d:e", None).await;
    assert_error(&a, 400, "ValidationException", "functionName");
    let a = call(&app, "GET", "/2015-03-31/nothing-here", None).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.error_type.as_deref(), Some("UnknownOperationException"));
}

#[tokio::test]
async fn create_answers_pending_then_a_missing_image_fails_the_function() {
    let app = app();
    let a = call(
        &app,
        "POST",
        "/2015-03-31/functions",
        Some(create_body("gone", "oci:/nonexistent/lambox-image:latest")),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let c = &a.body;
    assert_eq!(c["FunctionName"], "gone");
    assert_eq!(
        c["FunctionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:gone"
    );
    assert_eq!(c["State"], "Pending");
    assert_eq!(c["StateReasonCode"], "Creating");
    assert_eq!(c["PackageType"], "Image");
    assert_eq!(c["Version"], "$LATEST");
    assert_eq!(c["MemorySize"], 128);
    assert_eq!(c["Timeout"], 3);
    assert_eq!(c["EphemeralStorage"], json!({"Size": 512}));
    assert_eq!(c["Architectures"], json!(["x86_64"]));
    assert!(c["RevisionId"].as_str().is_some_and(|r| r.len() == 36));

    let again = call(
        &app,
        "POST",
        "/2015-03-31/functions",
        Some(create_body("gone", "oci:/x:latest")),
    )
    .await;
    assert_error(
        &again,
        409,
        "ResourceConflictException",
        "Function already exist: gone",
    );

    let c = settled(&app, "gone").await;
    assert_eq!(c["State"], "Failed", "{c:?}");
    assert_eq!(c["StateReasonCode"], "ImageDeleted", "{c:?}");
    assert!(
        c["StateReason"]
            .as_str()
            .is_some_and(|r| r.contains("/nonexistent/lambox-image")),
        "{c:?}"
    );

    // A Failed function cannot be invoked, updated or published.
    let a = call(
        &app,
        "POST",
        "/2015-03-31/functions/gone/invocations",
        Some(json!({})),
    )
    .await;
    assert_error(
        &a,
        409,
        "ResourceConflictException",
        "currently in the following state: Failed",
    );
    let a = call(
        &app,
        "POST",
        "/2015-03-31/functions/gone/versions",
        Some(json!({})),
    )
    .await;
    assert_error(&a, 409, "ResourceConflictException", "Failed");

    // An unreachable registry: ImageAccessDenied.
    let a = call(
        &app,
        "POST",
        "/2015-03-31/functions",
        Some(create_body("noreg", "127.0.0.1:1/fn/x:v1")),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let c = settled(&app, "noreg").await;
    assert_eq!(c["State"], "Failed");
    assert_eq!(c["StateReasonCode"], "ImageAccessDenied", "{c:?}");
}

#[tokio::test]
async fn update_configuration_honours_revision_id_and_validates() {
    let app = app();
    call(
        &app,
        "POST",
        "/2015-03-31/functions",
        Some(create_body("u", "oci:/nonexistent/x:latest")),
    )
    .await;
    let c = settled(&app, "u").await;
    let rev = c["RevisionId"].as_str().expect("rev").to_owned();
    let a = call(
        &app,
        "PUT",
        "/2015-03-31/functions/u/configuration",
        Some(json!({"MemorySize": 256, "RevisionId": "stale"})),
    )
    .await;
    assert_error(&a, 412, "PreconditionFailedException", "Revision Id");
    let a = call(
        &app,
        "PUT",
        "/2015-03-31/functions/u/configuration",
        Some(json!({"Timeout": 901})),
    )
    .await;
    assert_error(&a, 400, "InvalidParameterValueException", "900");
    let a = call(
        &app,
        "PUT",
        "/2015-03-31/functions/u/configuration",
        Some(json!({
            "MemorySize": 256, "Timeout": 30, "Description": "d",
            "Environment": {"Variables": {"GREETING": "hi"}},
            "ImageConfig": {"Command": ["app.other"]},
            "RevisionId": rev,
        })),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["MemorySize"], 256);
    assert_eq!(a.body["Timeout"], 30);
    assert_eq!(
        a.body["Environment"],
        json!({"Variables": {"GREETING": "hi"}})
    );
    assert_eq!(
        a.body["ImageConfigResponse"],
        json!({"ImageConfig": {"Command": ["app.other"]}})
    );
    assert_ne!(a.body["RevisionId"], json!(rev));
    let a = call(&app, "GET", "/2015-03-31/functions/u", None).await;
    assert_eq!(a.body["Configuration"]["MemorySize"], 256);
    assert_eq!(a.body["Code"]["ImageUri"], "oci:/nonexistent/x:latest");
    assert_eq!(a.body["Code"]["RepositoryType"], "ECR");
}

#[tokio::test]
async fn list_functions_pages_with_marker_and_max_items() {
    let app = app();
    for n in ["a1", "a2", "a3"] {
        let a = call(
            &app,
            "POST",
            "/2015-03-31/functions",
            Some(create_body(n, "oci:/nonexistent/x:latest")),
        )
        .await;
        assert_eq!(a.status, StatusCode::CREATED);
    }
    let a = call(&app, "GET", "/2015-03-31/functions/?MaxItems=2", None).await;
    let names: Vec<&str> = a.body["Functions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["FunctionName"].as_str())
        .collect();
    assert_eq!(names, ["a1", "a2"]);
    let marker = a.body["NextMarker"].as_str().expect("marker").to_owned();
    let a = call(
        &app,
        "GET",
        &format!("/2015-03-31/functions/?MaxItems=2&Marker={marker}"),
        None,
    )
    .await;
    let names: Vec<&str> = a.body["Functions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["FunctionName"].as_str())
        .collect();
    assert_eq!(names, ["a3"]);
    assert!(a.body.get("NextMarker").is_none());
    let a = call(&app, "GET", "/2015-03-31/functions/?MaxItems=0", None).await;
    assert_error(&a, 400, "ValidationException", "maxItems");
    let a = call(&app, "DELETE", "/2015-03-31/functions/a2", None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = call(&app, "GET", "/2015-03-31/functions", None).await;
    assert_eq!(a.body["Functions"].as_array().map(Vec::len), Some(2));
    let a = call(&app, "GET", "/2015-03-31/functions/a2", None).await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn qualifiers_in_name_and_query_must_agree() {
    let app = app();
    call(
        &app,
        "POST",
        "/2015-03-31/functions",
        Some(create_body("q", "oci:/nonexistent/x:latest")),
    )
    .await;
    let a = call(&app, "GET", "/2015-03-31/functions/q:1?Qualifier=2", None).await;
    assert_error(
        &a,
        400,
        "InvalidParameterValueException",
        "does not match the specified qualifier",
    );
    let a = call(
        &app,
        "GET",
        "/2015-03-31/functions/q?Qualifier=%24LATEST",
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = call(&app, "GET", "/2015-03-31/functions/q:7", None).await;
    assert_error(&a, 404, "ResourceNotFoundException", "function:q:7");
    let a = call(
        &app,
        "DELETE",
        "/2015-03-31/functions/q?Qualifier=%24LATEST",
        None,
    )
    .await;
    assert_error(
        &a,
        400,
        "InvalidParameterValueException",
        "$LATEST version cannot be deleted",
    );
    let a = call(
        &app,
        "POST",
        "/2015-03-31/functions/q/aliases",
        Some(json!({"Name": "live", "FunctionVersion": "3"})),
    )
    .await;
    assert_error(&a, 404, "ResourceNotFoundException", "function:q:3");
    let a = call(
        &app,
        "POST",
        "/2015-03-31/functions/q/aliases",
        Some(json!({"Name": "123", "FunctionVersion": "$LATEST"})),
    )
    .await;
    assert_error(&a, 400, "ValidationException", "name");
    let a = call(
        &app,
        "POST",
        "/2015-03-31/functions/q/aliases",
        Some(json!({"Name": "live", "FunctionVersion": "$LATEST"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    assert_eq!(
        a.body["AliasArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:q:live"
    );
    let a = call(&app, "GET", "/2015-03-31/functions/q:live", None).await;
    assert_eq!(a.status, StatusCode::OK);
    let a = call(&app, "GET", "/2015-03-31/functions/q/aliases/nope", None).await;
    assert_error(
        &a,
        404,
        "ResourceNotFoundException",
        "Cannot find alias arn",
    );
}

#[tokio::test]
async fn reserved_concurrency_and_account_settings() {
    let app = app_with_limit(1000);
    call(
        &app,
        "POST",
        "/2015-03-31/functions",
        Some(create_body("c", "oci:/nonexistent/x:latest")),
    )
    .await;
    let a = call(&app, "GET", "/2019-09-30/functions/c/concurrency", None).await;
    assert_eq!((a.status, &a.body), (StatusCode::OK, &json!({})));
    let a = call(
        &app,
        "PUT",
        "/2017-10-31/functions/c/concurrency",
        Some(json!({"ReservedConcurrentExecutions": 901})),
    )
    .await;
    assert_error(
        &a,
        400,
        "InvalidParameterValueException",
        "below its minimum value of [100]",
    );
    let a = call(
        &app,
        "PUT",
        "/2017-10-31/functions/c/concurrency",
        Some(json!({"ReservedConcurrentExecutions": -1})),
    )
    .await;
    assert_error(&a, 400, "ValidationException", "greater than or equal to 0");
    let a = call(
        &app,
        "PUT",
        "/2017-10-31/functions/c/concurrency",
        Some(json!({"ReservedConcurrentExecutions": 5})),
    )
    .await;
    assert_eq!(
        (a.status, &a.body),
        (StatusCode::OK, &json!({"ReservedConcurrentExecutions": 5}))
    );
    let a = call(&app, "GET", "/2016-08-19/account-settings/", None).await;
    assert_eq!(a.body["AccountLimit"]["ConcurrentExecutions"], 1000);
    assert_eq!(
        a.body["AccountLimit"]["UnreservedConcurrentExecutions"],
        995
    );
    assert_eq!(a.body["AccountUsage"]["FunctionCount"], 1);
    let a = call(&app, "GET", "/2015-03-31/functions/c", None).await;
    assert_eq!(
        a.body["Concurrency"],
        json!({"ReservedConcurrentExecutions": 5})
    );
    let a = call(&app, "DELETE", "/2017-10-31/functions/c/concurrency", None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = call(&app, "GET", "/2019-09-30/functions/c/concurrency", None).await;
    assert_eq!(a.body, json!({}));
}

#[tokio::test]
async fn health_answers_ok() {
    let app = app();
    let a = call(&app, "GET", "/health", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.body,
        json!({"status": "ok", "functions": 0, "pending_events": 0})
    );
    assert!(a.request_id.is_some());
}

#[tokio::test]
async fn event_invoke_config_is_stored_validated_and_versioned_by_qualifier() {
    let app = app();
    call(
        &app,
        "POST",
        "/2015-03-31/functions",
        Some(create_body("e", "oci:/nonexistent/x:latest")),
    )
    .await;
    const P: &str = "/2019-09-25/functions/e/event-invoke-config";
    let a = call(&app, "GET", P, None).await;
    assert_error(&a, 404, "ResourceNotFoundException", "arn:aws:lambda:us-east-1:000000000000:function:e:$LATEST doesn't have an EventInvokeConfig");
    let a = call(&app, "POST", P, Some(json!({"MaximumRetryAttempts": 1}))).await;
    assert_eq!(a.status, 404, "Update needs an existing config");
    let a = call(&app, "PUT", P, Some(json!({"MaximumRetryAttempts": 3}))).await;
    assert_error(&a, 400, "ValidationException", "maximumRetryAttempts");
    let a = call(
        &app,
        "PUT",
        P,
        Some(json!({"MaximumEventAgeInSeconds": 59})),
    )
    .await;
    assert_error(&a, 400, "ValidationException", "maximumEventAgeInSeconds");
    let a = call(&app, "PUT", P, Some(json!({"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:000000000000:q"}}}))).await;
    assert_error(
        &a,
        400,
        "InvalidParameterValueException",
        "only to Lambda functions",
    );
    let a = call(&app, "PUT", P, Some(json!({"DestinationConfig": {"OnSuccess": {"Destination": "arn:aws:lambda:eu-west-1:000000000000:function:d"}}}))).await;
    assert_error(
        &a,
        400,
        "InvalidParameterValueException",
        "another account or region",
    );
    let dest = json!({"OnSuccess": {"Destination": "arn:aws:lambda:us-east-1:000000000000:function:d"},
                      "OnFailure": {"Destination": "arn:aws:lambda:us-east-1:000000000000:function:d:live"}});
    let a = call(&app, "PUT", P, Some(json!({"DestinationConfig": dest}))).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["DestinationConfig"], dest);
    let a = call(&app, "POST", P, Some(json!({"MaximumRetryAttempts": 1}))).await;
    assert_eq!(
        a.body["DestinationConfig"], dest,
        "an update keeps the destinations"
    );
    let a = call(
        &app,
        "PUT",
        P,
        Some(json!({"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(
        a.body["FunctionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:e:$LATEST"
    );
    assert_eq!(a.body["MaximumRetryAttempts"], 0);
    assert_eq!(
        a.body["DestinationConfig"],
        json!({"OnSuccess": {}, "OnFailure": {}})
    );
    assert!(a.body["LastModified"].as_f64().is_some_and(|t| t > 1.7e9));
    let a = call(
        &app,
        "POST",
        P,
        Some(json!({"MaximumEventAgeInSeconds": 3600})),
    )
    .await;
    assert_eq!(
        (
            a.body["MaximumRetryAttempts"].clone(),
            a.body["MaximumEventAgeInSeconds"].clone()
        ),
        (json!(0), json!(3600))
    );
    let a = call(&app, "GET", &format!("{P}?Qualifier=%24LATEST"), None).await;
    assert_eq!(a.body["MaximumEventAgeInSeconds"], 3600);
    let a = call(&app, "GET", &format!("{P}?Qualifier=1"), None).await;
    assert_error(&a, 404, "ResourceNotFoundException", "function:e:1");
    let a = call(&app, "DELETE", P, None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = call(&app, "DELETE", P, None).await;
    assert_eq!(a.status, 404);
}

fn signed_app() -> App {
    let verifier = Verifier::new(
        [AccessKey {
            access_key_id: "AKIDTEST".into(),
            secret: SecretKey::new("secret".into()),
        }],
        "us-east-1",
    );
    app_with(
        1000,
        Some(Guard::new(
            Arc::new(verifier),
            SERVICE_LAMBDA,
            AuthError::lambda_response,
        )),
    )
}

fn amz_date(ago: Duration) -> String {
    (chrono::Utc::now() - chrono::Duration::from_std(ago).expect("duration"))
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

fn authorization(key: &str, date: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={key}/{}/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature={}",
        &date[..8],
        "0".repeat(64)
    )
}

#[tokio::test]
async fn sigv4_refusals_are_one_line_403s_in_aws_words() {
    let app = signed_app();
    const L: &str = "/2015-03-31/functions/";
    // /health is not guarded.
    let a = call(&app, "GET", "/health", None).await;
    assert_eq!(a.status, StatusCode::OK);

    for path in [L, "/2015-03-31/functions/x/invocations", "/no/such/path"] {
        let a = call(&app, "GET", path, None).await;
        assert_error(
            &a,
            403,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        );
    }

    let now = amz_date(Duration::ZERO);
    let host: &[u8] = b"127.0.0.1:4566";
    for bad in [
        &b"AWS4-HMAC-SHA256"[..],
        b"AWS4-HMAC-SHA256 Credential=AKIDTEST",
        b"AWS4-HMAC-SHA256 Credential=AKIDTEST/x, SignedHeaders=host, Signature=zz",
        b"AWS4-HMAC-SHA256 Credential==,,,Signature=,SignedHeaders=;;;",
        b"Bearer abc",
        b"AWS4-HMAC-SHA256 Credential=\xff\xfe/20260101/us-east-1/lambda/aws4_request",
        b"   ",
    ] {
        let a = call_with(
            &app,
            "GET",
            L,
            &[
                ("authorization", bad),
                ("x-amz-date", now.as_bytes()),
                ("host", host),
            ],
            None,
        )
        .await;
        assert_eq!(a.status, 403, "{bad:?}: {:?}", a.body);
        assert_eq!(
            a.error_type.as_deref(),
            Some("IncompleteSignatureException"),
            "{bad:?}: {:?}",
            a.body
        );
        let msg = a.body["message"].as_str().expect("message");
        assert!(!msg.is_empty() && !msg.contains('\n'), "{msg:?}");
    }

    let call_signed = |key: &'static str, date: String| {
        let app = &app;
        async move {
            let auth = authorization(key, &date);
            call_with(
                app,
                "GET",
                L,
                &[
                    ("authorization", auth.as_bytes()),
                    ("x-amz-date", date.as_bytes()),
                    ("host", host),
                ],
                None,
            )
            .await
        }
    };
    let a = call_signed("AKIDNOBODY", now.clone()).await;
    assert_error(
        &a,
        403,
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    );
    let a = call_signed("AKIDTEST", now.clone()).await;
    assert_error(
        &a,
        403,
        "InvalidSignatureException",
        "The request signature we calculated does not match the signature you provided.",
    );
    let old = amz_date(Duration::from_secs(20 * 60));
    let a = call_signed("AKIDTEST", old.clone()).await;
    assert_error(
        &a,
        403,
        "InvalidSignatureException",
        &format!("Signature expired: {old} is now earlier than "),
    );
    // A date that is not ISO 8601 basic format.
    let a = call_signed("AKIDTEST", "2026-01-01T00:00:00Z".into()).await;
    assert_error(&a, 403, "IncompleteSignatureException", "ISO-8601");
}

/// `oci:DIR:latest` of the fixture image NAME (scripts/build-fixtures.sh; `LAMBOX_FIXTURES`).
fn fixture_image(name: &str) -> String {
    let root = std::env::var("LAMBOX_FIXTURES")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "/var/cache/lambox-fixtures".to_owned());
    let dir = std::path::Path::new(&root)
        .join("images")
        .join(name)
        .join("oci");
    assert!(
        dir.join("index.json").is_file(),
        "fixture {} missing: run scripts/build-fixtures.sh",
        dir.display()
    );
    format!("oci:{}:latest", dir.display())
}

/// An Active function NAME with published versions 1 (Timeout 3) and 2 (Timeout 4).
async fn two_versions(app: &App, name: &str) {
    let a = call(
        app,
        "POST",
        "/2015-03-31/functions",
        Some(create_body(name, &fixture_image("busybox"))),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let c = settled(app, name).await;
    assert_eq!(c["State"], "Active", "{c:?}");
    let versions = format!("/2015-03-31/functions/{name}/versions");
    let a = call(app, "POST", &versions, None).await;
    assert_eq!(a.body["Version"], "1", "{:?}", a.body);
    let a = call(
        app,
        "PUT",
        &format!("/2015-03-31/functions/{name}/configuration"),
        Some(json!({"Timeout": 4})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let a = call(app, "POST", &versions, None).await;
    assert_eq!(a.body["Version"], "2", "{:?}", a.body);
}

#[tokio::test]
async fn weighted_aliases_are_validated_stored_listed_and_protect_their_versions() {
    let app = app();
    two_versions(&app, "w").await;
    const P: &str = "/2015-03-31/functions/w/aliases";
    let alias = |version: &str, weights: Value| {
        json!({"Name": "live", "FunctionVersion": version,
               "RoutingConfig": {"AdditionalVersionWeights": weights}})
    };
    let refused: Vec<(Value, u16, &str, &str)> = vec![
        (
            alias("$LATEST", json!({"1": 0.5})),
            400,
            "InvalidParameterValueException",
            "$LATEST is not supported for an alias pointing to more than 1 version",
        ),
        (
            alias("1", json!({"2": 1.5})),
            400,
            "ValidationException",
            "Member must have value less than or equal to 1.0",
        ),
        (
            alias("1", json!({"2": -0.1})),
            400,
            "ValidationException",
            "greater than or equal to 0.0",
        ),
        (
            alias("1", json!({"two": 0.5})),
            400,
            "ValidationException",
            "Value 'two' at 'routingConfig.additionalVersionWeights'",
        ),
        (
            alias("1", json!({"2": 0.5, "3": 0.1})),
            400,
            "InvalidParameterValueException",
            "one additional version",
        ),
        (
            alias("1", json!({"1": 0.5})),
            400,
            "InvalidParameterValueException",
            "the alias's own FunctionVersion",
        ),
        (
            alias("1", json!({"9": 0.5})),
            404,
            "ResourceNotFoundException",
            "function:w:9",
        ),
        (
            json!({"Name": "live", "FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"2": "half"}}}),
            400,
            "InvalidRequestContentException",
            "",
        ),
    ];
    for (body, status, code, msg) in refused {
        let a = call(&app, "POST", P, Some(body.clone())).await;
        assert_eq!(a.status.as_u16(), status, "{body}: {:?}", a.body);
        assert_eq!(a.error_type.as_deref(), Some(code), "{body}: {:?}", a.body);
        let text = a.body.to_string();
        assert!(text.contains(msg), "{body}: {text} lacks {msg}");
    }
    assert_eq!(call(&app, "GET", P, None).await.body["Aliases"], json!([]));

    let a = call(&app, "POST", P, Some(alias("1", json!({"2": 0.25})))).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    assert_eq!(
        a.body["RoutingConfig"],
        json!({"AdditionalVersionWeights": {"2": 0.25}})
    );
    let a = call(&app, "GET", &format!("{P}/live"), None).await;
    assert_eq!(
        a.body["RoutingConfig"]["AdditionalVersionWeights"]["2"],
        0.25
    );
    assert_eq!(a.body["FunctionVersion"], "1");
    call(
        &app,
        "POST",
        P,
        Some(json!({"Name": "plain", "FunctionVersion": "1"})),
    )
    .await;
    let a = call(&app, "GET", &format!("{P}/plain"), None).await;
    assert!(a.body.get("RoutingConfig").is_none(), "{:?}", a.body);

    // FunctionVersion filters by the versions an alias invokes, then Marker/MaxItems page.
    let names = |a: &Answer| -> Vec<String> {
        a.body["Aliases"]
            .as_array()
            .expect("Aliases")
            .iter()
            .filter_map(|x| x["Name"].as_str().map(str::to_owned))
            .collect()
    };
    let a = call(&app, "GET", &format!("{P}?FunctionVersion=2"), None).await;
    assert_eq!(names(&a), ["live"]);
    let a = call(&app, "GET", &format!("{P}?FunctionVersion=1"), None).await;
    assert_eq!(names(&a), ["live", "plain"]);
    let a = call(
        &app,
        "GET",
        &format!("{P}?FunctionVersion=1&MaxItems=1"),
        None,
    )
    .await;
    assert_eq!(names(&a), ["live"]);
    let marker = a.body["NextMarker"]
        .as_str()
        .expect("NextMarker")
        .to_owned();
    let a = call(
        &app,
        "GET",
        &format!("{P}?FunctionVersion=1&MaxItems=1&Marker={marker}"),
        None,
    )
    .await;
    assert_eq!(names(&a), ["plain"]);
    assert!(a.body.get("NextMarker").is_none());
    let a = call(&app, "GET", &format!("{P}?FunctionVersion=%24LATEST"), None).await;
    assert_eq!(names(&a), Vec::<String>::new());
    let a = call(&app, "GET", &format!("{P}?FunctionVersion=live"), None).await;
    assert_error(&a, 400, "ValidationException", "functionVersion");

    // A version an alias routes to cannot be deleted.
    let a = call(&app, "DELETE", "/2015-03-31/functions/w?Qualifier=2", None).await;
    assert_error(&a, 409, "ResourceConflictException", "function:w:live");

    // UpdateAlias: routing kept when not given, checked against a new FunctionVersion,
    // replaced, and removed with an empty map.
    let a = call(
        &app,
        "PUT",
        &format!("{P}/live"),
        Some(json!({"Description": "canary"})),
    )
    .await;
    assert_eq!(
        a.body["RoutingConfig"]["AdditionalVersionWeights"]["2"],
        0.25
    );
    let a = call(
        &app,
        "PUT",
        &format!("{P}/live"),
        Some(json!({"FunctionVersion": "2"})),
    )
    .await;
    assert_error(
        &a,
        400,
        "InvalidParameterValueException",
        "own FunctionVersion",
    );
    let a = call(
        &app,
        "PUT",
        &format!("{P}/live"),
        Some(json!({"FunctionVersion": "2", "RoutingConfig": {"AdditionalVersionWeights": {"1": 1.0}}})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(
        (
            a.body["FunctionVersion"].clone(),
            a.body["RoutingConfig"].clone()
        ),
        (json!("2"), json!({"AdditionalVersionWeights": {"1": 1.0}}))
    );
    let a = call(
        &app,
        "PUT",
        &format!("{P}/live"),
        Some(json!({"RoutingConfig": {"AdditionalVersionWeights": {}}})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert!(a.body.get("RoutingConfig").is_none(), "{:?}", a.body);
    assert_eq!(a.body["Description"], "canary");
}

#[tokio::test]
async fn tags_are_validated_added_listed_removed_and_shown_by_get_function() {
    let app = app();
    let mut body = create_body("t", "oci:/nonexistent/x:latest");
    body["Tags"] = json!({"aws:owner": "x"});
    let a = call(&app, "POST", "/2015-03-31/functions", Some(body.clone())).await;
    assert_error(&a, 400, "InvalidParameterValueException", "'aws:'");
    body["Tags"] = json!({"team": "a", "cost": "1"});
    let a = call(&app, "POST", "/2015-03-31/functions", Some(body)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);

    const ARN: &str = "arn:aws:lambda:us-east-1:000000000000:function:t";
    // The ARN as botocore sends it: colons percent-encoded.
    let path = format!("/2017-03-31/tags/{}", ARN.replace(':', "%3A"));
    let a = call(&app, "GET", &path, None).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body, json!({"Tags": {"team": "a", "cost": "1"}}));

    let a = call(
        &app,
        "POST",
        &path,
        Some(json!({"Tags": {"team": "b", "env": "dev"}})),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.body);
    let a = call(&app, "GET", "/2015-03-31/functions/t", None).await;
    assert_eq!(
        a.body["Tags"],
        json!({"team": "b", "cost": "1", "env": "dev"})
    );
    let a = call(
        &app,
        "DELETE",
        &format!("{path}?tagKeys=cost&tagKeys=env&tagKeys=absent"),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.body);
    let a = call(&app, "GET", &format!("/2017-03-31/tags/{ARN}"), None).await;
    assert_eq!(a.body, json!({"Tags": {"team": "b"}}));

    // Validation: limits, the reserved prefix, missing members.
    let many: serde_json::Map<String, Value> =
        (0..50).map(|i| (format!("k{i}"), json!("v"))).collect();
    let a = call(&app, "POST", &path, Some(json!({"Tags": many}))).await;
    assert_error(&a, 400, "InvalidParameterValueException", "at most 50 tags");
    let long_key = "k".repeat(129);
    let long_value = "v".repeat(257);
    let cases = [
        (
            json!({"Tags": {long_key.clone(): "v"}}),
            "1 to 128 characters",
        ),
        (json!({"Tags": {"k": long_value}}), "at most 256 characters"),
        (json!({"Tags": {"AWS:x": "v"}}), "reserved"),
    ];
    for (body, msg) in cases {
        let a = call(&app, "POST", &path, Some(body)).await;
        assert_error(&a, 400, "InvalidParameterValueException", msg);
    }
    let a = call(&app, "POST", &path, Some(json!({}))).await;
    assert_error(&a, 400, "ValidationException", "'tags'");
    let a = call(&app, "DELETE", &path, None).await;
    assert_error(&a, 400, "ValidationException", "'tagKeys'");
    let a = call(&app, "GET", &path, None).await;
    assert_eq!(
        a.body,
        json!({"Tags": {"team": "b"}}),
        "refused changes left no trace"
    );

    // The resource must be an existing function's unqualified ARN.
    let a = call(
        &app,
        "GET",
        "/2017-03-31/tags/arn:aws:lambda:us-east-1:000000000000:function:nope",
        None,
    )
    .await;
    assert_error(&a, 404, "ResourceNotFoundException", "function:nope");
    let a = call(
        &app,
        "GET",
        "/2017-03-31/tags/arn:aws:lambda:eu-west-1:000000000000:function:t",
        None,
    )
    .await;
    assert_error(&a, 404, "ResourceNotFoundException", "Function not found");
    let a = call(&app, "GET", &format!("/2017-03-31/tags/{ARN}:1"), None).await;
    assert_error(&a, 400, "InvalidParameterValueException", "unqualified ARN");
    for bad in [
        "t",
        "arn:aws:sqs:us-east-1:000000000000:queue",
        "arn:aws:lambda:us-east-1:000000000000:layer:l",
    ] {
        let a = call(&app, "GET", &format!("/2017-03-31/tags/{bad}"), None).await;
        assert_error(&a, 400, "ValidationException", "at 'resource'");
    }

    // Deleting the function deletes its tags.
    call(&app, "DELETE", "/2015-03-31/functions/t", None).await;
    call(
        &app,
        "POST",
        "/2015-03-31/functions",
        Some(create_body("t", "oci:/nonexistent/x:latest")),
    )
    .await;
    let a = call(&app, "GET", &path, None).await;
    assert_eq!(a.body, json!({"Tags": {}}));
}

#[tokio::test]
async fn lambox_events_listing_refuses_unknown_functions_and_statuses() {
    let app = app();
    let a = call(&app, "GET", "/lambox/v1/functions/nope/events", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(
        a.body["Message"],
        "Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope"
    );
    let a = call(
        &app,
        "GET",
        "/lambox/v1/functions/nope/events?Status=pending",
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body["Type"], "User");
}
