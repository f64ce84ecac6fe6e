//! `lambox serve` driven by the AWS SDK for Rust (`aws-sdk-lambda`): the real binary, a real
//! registry, the real SDK with static dummy credentials and `endpoint_url`. Typed SDK errors
//! (`is_resource_not_found_exception()`, …) prove that lambox's status codes, `x-amzn-ErrorType`
//! headers and JSON error bodies are the ones the SDK's model expects.

mod common;

use std::time::Duration;

use aws_sdk_lambda::client::Waiters;
use aws_sdk_lambda::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{FunctionCode, InvocationType, LogType, PackageType, ThrottleReason};
use aws_sdk_lambda::Client;
use base64::Engine as _;
use common::{oci, serve, DataDir, Registry, Server};
use serde_json::{json, Value};

const ROLE: &str = "arn:aws:iam::000000000000:role/x";

/// An SDK client for `endpoint`: static credentials, us-east-1, no retries (a throttle must
/// reach the test as the SDK's typed error, not be retried away).
fn client(endpoint: &str) -> Client {
    let config = aws_sdk_lambda::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_sdk_lambda::config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(60))
                .build(),
        )
        .build();
    Client::from_conf(config)
}

/// A registry holding the rust-echo fixture as `fn/echo:v1` (`image`), `lambox serve` with
/// `extra` arguments on a fresh data directory, and an SDK client for it.
struct Setup {
    _registry: Registry,
    data: DataDir,
    server: Server,
    lambda: Client,
    image: String,
}

fn setup(extra: &[&str]) -> Setup {
    let registry = Registry::start();
    registry.push(&oci("rust-echo").display().to_string(), "fn/echo:v1", None);
    let image = registry.reference("fn/echo:v1");
    let data = DataDir::new();
    let (server, endpoint) = serve(&data, extra);
    Setup {
        _registry: registry,
        data,
        server,
        lambda: client(&endpoint),
        image,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn create(lambda: &Client, name: &str, image: &str) {
    lambda
        .create_function()
        .function_name(name)
        .package_type(PackageType::Image)
        .code(FunctionCode::builder().image_uri(image).build())
        .role(ROLE)
        .timeout(10)
        .tags("team", "lambox")
        .send()
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
}

/// The SDK's own waiter (GetFunction until State is Active).
async fn wait_active(lambda: &Client, name: &str) {
    lambda
        .wait_until_function_active_v2()
        .function_name(name)
        .wait(Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{name} did not become Active: {e:?}"));
}

async fn invoke(lambda: &Client, name: &str, payload: Value) -> (Value, Option<String>, String) {
    let out = lambda
        .invoke()
        .function_name(name)
        .payload(Blob::new(payload.to_string()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("invoke {name}: {e:?}"));
    let body = out
        .payload()
        .map(|b| b.as_ref().to_vec())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).expect("JSON payload");
    (
        body,
        out.function_error().map(str::to_owned),
        out.executed_version().unwrap_or_default().to_owned(),
    )
}

#[test]
fn aws_sdk_for_rust_drives_functions_versions_aliases_concurrency_and_typed_errors() {
    let Setup {
        _registry,
        data: _data,
        server,
        lambda,
        image,
    } = setup(&[]);
    runtime().block_on(async {
        create(&lambda, "echo", &image).await;
        wait_active(&lambda, "echo").await;

        // GetFunction: configuration, code location and the tags given at creation.
        let f = lambda
            .get_function()
            .function_name("echo")
            .send()
            .await
            .expect("get-function");
        let c = f.configuration().expect("Configuration");
        assert_eq!(
            c.function_arn(),
            Some("arn:aws:lambda:us-east-1:000000000000:function:echo")
        );
        assert_eq!(c.package_type(), Some(&PackageType::Image));
        assert_eq!(c.timeout(), Some(10));
        assert_eq!(f.code().and_then(|c| c.image_uri()), Some(image.as_str()));
        assert_eq!(
            f.tags().and_then(|t| t.get("team")).map(String::as_str),
            Some("lambox")
        );

        // Invoke: the payload comes back, with the log tail.
        let out = lambda
            .invoke()
            .function_name("echo")
            .payload(Blob::new(r#"{"hello":"sdk"}"#))
            .log_type(LogType::Tail)
            .send()
            .await
            .expect("invoke");
        assert_eq!(out.status_code(), 200);
        assert_eq!(out.executed_version(), Some("$LATEST"));
        assert_eq!(out.function_error(), None);
        let body: Value =
            serde_json::from_slice(out.payload().expect("Payload").as_ref()).expect("JSON");
        assert_eq!(body, json!({"hello": "sdk"}));
        let tail = base64::engine::general_purpose::STANDARD
            .decode(out.log_result().expect("LogResult"))
            .expect("base64 LogResult");
        let tail = String::from_utf8_lossy(&tail);
        assert!(
            tail.contains("START RequestId:") && tail.contains("REPORT RequestId:"),
            "{tail}"
        );

        // A function error: FunctionError and the error payload, status 200.
        let (body, function_error, _) = invoke(&lambda, "echo", json!({"error": "boom"})).await;
        assert_eq!(function_error.as_deref(), Some("Unhandled"));
        assert_eq!(body["errorMessage"], "boom");
        assert_eq!(body["errorType"], "EchoError");

        // An event: 202, nothing in the payload.
        let ev = lambda
            .invoke()
            .function_name("echo")
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(r#"{"async":true}"#))
            .send()
            .await
            .expect("event invoke");
        assert_eq!(ev.status_code(), 202);

        // ListFunctions through the SDK's paginator, 2 per page over 5 functions.
        for n in 1..=4 {
            create(&lambda, &format!("echo-{n}"), &image).await;
        }
        let pages: Vec<_> = lambda
            .list_functions()
            .max_items(2)
            .into_paginator()
            .send()
            .collect::<Vec<_>>()
            .await;
        assert_eq!(pages.len(), 3, "5 functions in pages of 2");
        let names: Vec<String> = pages
            .into_iter()
            .flat_map(|p| {
                p.expect("list-functions page")
                    .functions
                    .unwrap_or_default()
            })
            .filter_map(|f| f.function_name)
            .collect();
        assert_eq!(names, ["echo", "echo-1", "echo-2", "echo-3", "echo-4"]);

        // Typed errors: unknown function, duplicate function.
        let e = lambda
            .get_function()
            .function_name("nope")
            .send()
            .await
            .expect_err("unknown function")
            .into_service_error();
        assert!(e.is_resource_not_found_exception(), "{e:?}");
        assert_eq!(
            e.meta().message(),
            Some("Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope")
        );
        let e = lambda
            .create_function()
            .function_name("echo")
            .package_type(PackageType::Image)
            .code(FunctionCode::builder().image_uri(&image).build())
            .role(ROLE)
            .send()
            .await
            .expect_err("duplicate function")
            .into_service_error();
        assert!(e.is_resource_conflict_exception(), "{e:?}");
        let e = lambda
            .create_function()
            .function_name("zipped")
            .code(FunctionCode::builder().zip_file(Blob::new("PK")).build())
            .role(ROLE)
            .runtime(aws_sdk_lambda::types::Runtime::Python312)
            .handler("a.b")
            .send()
            .await
            .expect_err("a Zip function")
            .into_service_error();
        assert!(e.is_invalid_parameter_value_exception(), "{e:?}");

        // UpdateFunctionConfiguration: a stale RevisionId is PreconditionFailedException; the
        // current one updates.
        let revision = c.revision_id().expect("RevisionId").to_owned();
        let updated = lambda
            .update_function_configuration()
            .function_name("echo")
            .timeout(7)
            .revision_id(&revision)
            .send()
            .await
            .expect("update with the current RevisionId");
        assert_eq!(updated.timeout(), Some(7));
        assert_ne!(updated.revision_id(), Some(revision.as_str()));
        lambda
            .wait_until_function_updated_v2()
            .function_name("echo")
            .wait(Duration::from_secs(60))
            .await
            .expect("LastUpdateStatus Successful");
        let e = lambda
            .update_function_configuration()
            .function_name("echo")
            .timeout(8)
            .revision_id(&revision)
            .send()
            .await
            .expect_err("stale RevisionId")
            .into_service_error();
        assert!(e.is_precondition_failed_exception(), "{e:?}");

        // PublishVersion and aliases.
        let v = lambda
            .publish_version()
            .function_name("echo")
            .description("first")
            .send()
            .await
            .expect("publish-version");
        assert_eq!(v.version(), Some("1"));
        assert_eq!(v.timeout(), Some(7));
        let a = lambda
            .create_alias()
            .function_name("echo")
            .name("live")
            .function_version("1")
            .send()
            .await
            .expect("create-alias");
        assert_eq!(
            a.alias_arn(),
            Some("arn:aws:lambda:us-east-1:000000000000:function:echo:live")
        );
        let e = lambda
            .create_alias()
            .function_name("echo")
            .name("live")
            .function_version("1")
            .send()
            .await
            .expect_err("duplicate alias")
            .into_service_error();
        assert!(e.is_resource_conflict_exception(), "{e:?}");
        let (_, _, executed) = invoke(&lambda, "echo:live", json!({})).await;
        assert_eq!(executed, "1");
        let got = lambda
            .get_alias()
            .function_name("echo")
            .name("live")
            .send()
            .await
            .expect("get-alias");
        assert_eq!(got.function_version(), Some("1"));
        let up = lambda
            .update_alias()
            .function_name("echo")
            .name("live")
            .function_version("$LATEST")
            .description("now latest")
            .revision_id(got.revision_id().expect("alias RevisionId"))
            .send()
            .await
            .expect("update-alias");
        assert_eq!(up.function_version(), Some("$LATEST"));
        assert_eq!(up.description(), Some("now latest"));
        let e = lambda
            .update_alias()
            .function_name("echo")
            .name("live")
            .function_version("1")
            .revision_id(got.revision_id().expect("alias RevisionId"))
            .send()
            .await
            .expect_err("stale alias RevisionId")
            .into_service_error();
        assert!(e.is_precondition_failed_exception(), "{e:?}");
        let (_, _, executed) = invoke(&lambda, "echo:live", json!({})).await;
        assert_eq!(executed, "$LATEST");
        lambda
            .create_alias()
            .function_name("echo")
            .name("stable")
            .function_version("1")
            .send()
            .await
            .expect("create-alias stable");
        let list = lambda
            .list_aliases()
            .function_name("echo")
            .send()
            .await
            .expect("list-aliases");
        let names: Vec<&str> = list.aliases().iter().filter_map(|a| a.name()).collect();
        assert_eq!(names, ["live", "stable"]);
        lambda
            .delete_alias()
            .function_name("echo")
            .name("stable")
            .send()
            .await
            .expect("delete-alias");
        let e = lambda
            .get_alias()
            .function_name("echo")
            .name("stable")
            .send()
            .await
            .expect_err("deleted alias")
            .into_service_error();
        assert!(e.is_resource_not_found_exception(), "{e:?}");
        let e = lambda
            .invoke()
            .function_name("echo:nope")
            .send()
            .await
            .expect_err("invoke of an unknown alias")
            .into_service_error();
        assert!(e.is_resource_not_found_exception(), "{e:?}");

        // Reserved concurrency 0 throttles: TooManyRequestsException with its Reason.
        let put = lambda
            .put_function_concurrency()
            .function_name("echo")
            .reserved_concurrent_executions(0)
            .send()
            .await
            .expect("put-function-concurrency");
        assert_eq!(put.reserved_concurrent_executions(), Some(0));
        let got = lambda
            .get_function_concurrency()
            .function_name("echo")
            .send()
            .await
            .expect("get-function-concurrency");
        assert_eq!(got.reserved_concurrent_executions(), Some(0));
        let e = lambda
            .invoke()
            .function_name("echo")
            .payload(Blob::new("{}"))
            .send()
            .await
            .expect_err("throttled")
            .into_service_error();
        assert!(e.is_too_many_requests_exception(), "{e:?}");
        match &e {
            aws_sdk_lambda::operation::invoke::InvokeError::TooManyRequestsException(t) => {
                assert_eq!(
                    t.reason(),
                    Some(&ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded)
                );
            }
            other => panic!("not a throttle: {other:?}"),
        }
        lambda
            .delete_function_concurrency()
            .function_name("echo")
            .send()
            .await
            .expect("delete-function-concurrency");
        let got = lambda
            .get_function_concurrency()
            .function_name("echo")
            .send()
            .await
            .expect("get-function-concurrency");
        assert_eq!(got.reserved_concurrent_executions(), None);
        let (body, _, _) = invoke(&lambda, "echo", json!({"again": 1})).await;
        assert_eq!(body, json!({"again": 1}));

        // DeleteFunction, then it is gone (typed).
        lambda
            .delete_function()
            .function_name("echo")
            .send()
            .await
            .expect("delete-function");
        let e = lambda
            .invoke()
            .function_name("echo")
            .send()
            .await
            .expect_err("deleted function")
            .into_service_error();
        assert!(e.is_resource_not_found_exception(), "{e:?}");
    });
    drop(server);
}

/// How many of `n` invokes of `name` ran each version (X-Amz-Executed-Version).
async fn executed_versions(
    lambda: &Client,
    name: &str,
    n: usize,
) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..n {
        let (body, error, version) = invoke(lambda, name, json!({"i": i})).await;
        assert_eq!((body, error), (json!({"i": i}), None));
        *seen.entry(version).or_insert(0) += 1;
    }
    seen
}

#[test]
fn weighted_aliases_split_invokes_and_tags_round_trip_through_the_sdk() {
    let Setup {
        _registry,
        data: _data,
        server,
        lambda,
        image,
    } = setup(&[]);
    runtime().block_on(async {
        create(&lambda, "split", &image).await;
        wait_active(&lambda, "split").await;
        let v1 = lambda
            .publish_version()
            .function_name("split")
            .send()
            .await
            .expect("publish 1");
        assert_eq!(v1.version(), Some("1"));
        lambda
            .update_function_configuration()
            .function_name("split")
            .timeout(11)
            .send()
            .await
            .expect("update");
        lambda
            .wait_until_function_updated_v2()
            .function_name("split")
            .wait(Duration::from_secs(60))
            .await
            .expect("updated");
        let v2 = lambda
            .publish_version()
            .function_name("split")
            .send()
            .await
            .expect("publish 2");
        assert_eq!(v2.version(), Some("2"));

        let routing = |w: f64| {
            aws_sdk_lambda::types::AliasRoutingConfiguration::builder()
                .additional_version_weights("2", w)
                .build()
        };
        let a = lambda
            .create_alias()
            .function_name("split")
            .name("canary")
            .function_version("1")
            .routing_config(routing(0.5))
            .send()
            .await
            .expect("create-alias with RoutingConfig");
        assert_eq!(
            a.routing_config()
                .and_then(|r| r.additional_version_weights())
                .and_then(|w| w.get("2")),
            Some(&0.5)
        );
        // Half of 200 invokes on each version: fewer than 40 on either has a probability
        // below 1e-17.
        let seen = executed_versions(&lambda, "split:canary", 200).await;
        assert_eq!(seen.values().sum::<usize>(), 200, "{seen:?}");
        assert!(
            seen.get("1").copied().unwrap_or(0) >= 40 && seen.get("2").copied().unwrap_or(0) >= 40,
            "{seen:?}"
        );
        // Weight 0: never the additional version; weight 1: always.
        for (w, only) in [(0.0, "1"), (1.0, "2")] {
            let up = lambda
                .update_alias()
                .function_name("split")
                .name("canary")
                .routing_config(routing(w))
                .send()
                .await
                .expect("update-alias weight");
            assert_eq!(up.function_version(), Some("1"));
            let seen = executed_versions(&lambda, "split:canary", 30).await;
            assert_eq!(
                seen,
                std::collections::BTreeMap::from([(only.to_owned(), 30)]),
                "weight {w}"
            );
        }
        // An invalid weight is the SDK's typed ValidationException... which the Lambda model
        // does not define: the SDK reports it as an unhandled error with the code.
        let e = lambda
            .update_alias()
            .function_name("split")
            .name("canary")
            .routing_config(routing(1.5))
            .send()
            .await
            .expect_err("weight 1.5")
            .into_service_error();
        assert_eq!(e.meta().code(), Some("ValidationException"), "{e:?}");
        let e = lambda
            .update_alias()
            .function_name("split")
            .name("canary")
            .function_version("$LATEST")
            .send()
            .await
            .expect_err("$LATEST with routing")
            .into_service_error();
        assert!(e.is_invalid_parameter_value_exception(), "{e:?}");
        let listed = lambda
            .list_aliases()
            .function_name("split")
            .function_version("2")
            .send()
            .await
            .expect("list-aliases FunctionVersion 2");
        assert_eq!(listed.aliases().len(), 1);

        // Tags: from CreateFunction, added, listed, removed; GetFunction shows them.
        let arn = "arn:aws:lambda:us-east-1:000000000000:function:split";
        lambda
            .tag_resource()
            .resource(arn)
            .tags("stage", "canary")
            .tags("team", "core")
            .send()
            .await
            .expect("tag-resource");
        let tags = lambda
            .list_tags()
            .resource(arn)
            .send()
            .await
            .expect("list-tags");
        assert_eq!(
            tags.tags().cloned().unwrap_or_default(),
            std::collections::HashMap::from([
                ("stage".to_owned(), "canary".to_owned()),
                ("team".to_owned(), "core".to_owned()),
            ])
        );
        lambda
            .untag_resource()
            .resource(arn)
            .tag_keys("stage")
            .send()
            .await
            .expect("untag-resource");
        let f = lambda
            .get_function()
            .function_name("split")
            .send()
            .await
            .expect("get-function");
        assert_eq!(
            f.tags().cloned().unwrap_or_default(),
            std::collections::HashMap::from([("team".to_owned(), "core".to_owned())])
        );
        let e = lambda
            .tag_resource()
            .resource("arn:aws:lambda:us-east-1:000000000000:function:nope")
            .tags("a", "b")
            .send()
            .await
            .expect_err("unknown function")
            .into_service_error();
        assert!(e.is_resource_not_found_exception(), "{e:?}");
        let e = lambda
            .tag_resource()
            .resource(arn)
            .tags("aws:reserved", "x")
            .send()
            .await
            .expect_err("reserved prefix")
            .into_service_error();
        assert!(e.is_invalid_parameter_value_exception(), "{e:?}");
    });
    drop(server);
}

/// Statuses of the events of FUNCTION (`lambox events --json`), in arrival order.
fn event_statuses(data: &DataDir, function: &str) -> Vec<String> {
    let out = common::run_ok(
        data.lambox()
            .args(["events", function, "--json", "--offline"]),
    );
    let v: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("events --json: {e}: {out}"));
    v.as_array()
        .expect("a JSON array")
        .iter()
        .filter_map(|e| e["Status"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn environments_are_bounded_by_the_memory_limit_sync_429_events_wait() {
    // Room for one 256 MB environment, not two.
    let Setup {
        _registry,
        data,
        server,
        lambda,
        image,
    } = setup(&["--memory-mb", "300"]);
    runtime().block_on(async {
        for name in ["a", "b"] {
            lambda
                .create_function()
                .function_name(name)
                .package_type(PackageType::Image)
                .code(FunctionCode::builder().image_uri(&image).build())
                .role(ROLE)
                .memory_size(256)
                .timeout(30)
                .send()
                .await
                .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
            wait_active(&lambda, name).await;
        }
        // While a's environment runs, b cannot start one: 429 with the account's Reason.
        let slow = {
            let lambda = lambda.clone();
            tokio::spawn(async move { invoke(&lambda, "a", json!({"sleep_ms": 3000})).await })
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let e = lambda
            .invoke()
            .function_name("b")
            .payload(Blob::new("{}"))
            .send()
            .await
            .expect_err("no memory for b")
            .into_service_error();
        match &e {
            aws_sdk_lambda::operation::invoke::InvokeError::TooManyRequestsException(t) => {
                assert_eq!(
                    t.reason(),
                    Some(&ThrottleReason::ConcurrentInvocationLimitExceeded)
                );
            }
            other => panic!("not a throttle: {other:?}"),
        }
        let (body, _, _) = slow.await.expect("join");
        assert_eq!(body, json!({"sleep_ms": 3000}));
        // a's environment is idle now: it is evicted to make room for b.
        let (body, error, _) = invoke(&lambda, "b", json!({"b": 1})).await;
        assert_eq!((body, error), (json!({"b": 1}), None));

        // An event for a while b runs: accepted, then it waits for the memory and runs.
        let slow = {
            let lambda = lambda.clone();
            tokio::spawn(async move {
                let r = invoke(&lambda, "b", json!({"sleep_ms": 8000})).await;
                (r, std::time::SystemTime::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let ev = lambda
            .invoke()
            .function_name("a")
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(r#"{"queued":true}"#))
            .send()
            .await
            .expect("event accepted");
        assert_eq!(ev.status_code(), 202);
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(
            event_statuses(&data, "a"),
            ["pending"],
            "the event waits for memory"
        );
        let ((body, _, _), b_done) = slow.await.expect("join");
        assert_eq!(body, json!({"sleep_ms": 8000}));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while event_statuses(&data, "a") != ["succeeded"] {
            assert!(
                std::time::Instant::now() < deadline,
                "event not run: {:?}",
                event_statuses(&data, "a")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // It ran after b's environment was done with (its idle environment evicted).
        let out = common::run_ok(data.lambox().args(["events", "a", "--json", "--offline"]));
        let events: Value = serde_json::from_str(&out).expect("events JSON");
        let finished = events[0]["FinishedMs"].as_u64().expect("FinishedMs");
        let b_done_ms = b_done
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64;
        assert!(
            finished + 500 >= b_done_ms,
            "event finished at {finished}, b at {b_done_ms}"
        );
    });
    let log = server.log_text();
    assert!(log.contains("no memory for another environment"), "{log}");
    drop(server);
}

#[test]
fn async_invocation_records_go_to_lambda_function_destinations() {
    let Setup {
        _registry,
        data,
        server,
        lambda,
        image,
    } = setup(&[]);
    runtime().block_on(async {
        for name in ["src", "dst"] {
            create(&lambda, name, &image).await;
            wait_active(&lambda, name).await;
        }
        let dst = "arn:aws:lambda:us-east-1:000000000000:function:dst";
        let target = |arn: &str| {
            aws_sdk_lambda::types::OnSuccess::builder()
                .destination(arn)
                .build()
        };
        let e = lambda
            .put_function_event_invoke_config()
            .function_name("src")
            .destination_config(
                aws_sdk_lambda::types::DestinationConfig::builder()
                    .on_failure(
                        aws_sdk_lambda::types::OnFailure::builder()
                            .destination("arn:aws:sqs:us-east-1:000000000000:q")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect_err("an SQS destination")
            .into_service_error();
        assert!(e.is_invalid_parameter_value_exception(), "{e:?}");
        assert!(
            e.meta()
                .message()
                .is_some_and(|m| m.contains("only to Lambda functions")),
            "{e:?}"
        );
        let put = lambda
            .put_function_event_invoke_config()
            .function_name("src")
            .maximum_retry_attempts(0)
            .destination_config(
                aws_sdk_lambda::types::DestinationConfig::builder()
                    .on_success(target(dst))
                    .on_failure(
                        aws_sdk_lambda::types::OnFailure::builder()
                            .destination(dst)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("put-function-event-invoke-config");
        assert_eq!(
            put.destination_config()
                .and_then(|d| d.on_success())
                .and_then(|s| s.destination()),
            Some(dst)
        );
        assert!(put.last_modified().is_some());

        for payload in [json!({"ok": 1}), json!({"error": "boom"})] {
            let ev = lambda
                .invoke()
                .function_name("src")
                .invocation_type(InvocationType::Event)
                .payload(Blob::new(payload.to_string()))
                .send()
                .await
                .expect("event");
            assert_eq!(ev.status_code(), 202);
        }
        // dst receives one record per src event (success, then failure).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let records = loop {
            let out = common::run_ok(data.lambox().args(["events", "dst", "--json", "--offline"]));
            let events: Vec<Value> = serde_json::from_str(&out).expect("events JSON");
            if events.len() == 2 && events.iter().all(|e| e["Status"] == "succeeded") {
                break events;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "records not delivered: {out}\n{}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut by_condition = std::collections::BTreeMap::new();
        for e in &records {
            let record: Value =
                serde_json::from_str(e["Payload"].as_str().expect("Payload")).expect("record JSON");
            let condition = record["requestContext"]["condition"]
                .as_str()
                .expect("condition")
                .to_owned();
            by_condition.insert(condition, record);
        }
        let ok = &by_condition["Success"];
        assert_eq!(ok["version"], "1.0");
        assert_eq!(
            ok["requestContext"]["functionArn"],
            "arn:aws:lambda:us-east-1:000000000000:function:src:$LATEST"
        );
        assert_eq!(ok["requestContext"]["approximateInvokeCount"], 1);
        assert_eq!(ok["requestPayload"], json!({"ok": 1}));
        assert_eq!(ok["responsePayload"], json!({"ok": 1}));
        assert_eq!(
            ok["responseContext"],
            json!({"statusCode": 200, "executedVersion": "$LATEST"})
        );
        assert!(ok["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        let failed = &by_condition["RetriesExhausted"];
        assert_eq!(failed["requestPayload"], json!({"error": "boom"}));
        assert_eq!(failed["responseContext"]["functionError"], "Unhandled");
        assert_eq!(failed["responsePayload"]["errorMessage"], "boom");
        assert_eq!(failed["responsePayload"]["errorType"], "EchoError");
    });
    drop(server);
}
