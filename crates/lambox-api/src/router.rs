//! The HTTP side: the `2015-03-31` family of paths (plus `2017-10-31`/`2019-09-30`
//! concurrency and `2016-08-19` account settings) → [`Lambda`] operations, `GET /health`, and
//! a request id and tracing span for every request.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, StatusCode};
use lambox_runtime::wire::{invoke_header as h, ApiError, APPLICATION_JSON};
use serde::Serialize;
use tracing::Instrument;

use crate::names::FunctionRef;
use crate::service::Lambda;
use crate::sigv4::Guard;

type S = State<Arc<Lambda>>;

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(APPLICATION_JSON));
    resp
}

fn answer<T: Serialize>(status: StatusCode, r: Result<T, ApiError>) -> Response {
    match r {
        Ok(v) => json(status, &v),
        Err(e) => e.into_response(),
    }
}

fn empty(r: Result<(), ApiError>) -> Response {
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The (first) value of `key` in a raw query string, percent-decoded.
fn query(raw: &Option<String>, key: &str) -> Option<String> {
    query_all(raw, key).into_iter().next()
}

/// Every value of `key` in a raw query string (`?k=a&k=b`), percent-decoded.
fn query_all(raw: &Option<String>, key: &str) -> Vec<String> {
    raw.as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == key).then(|| percent_decode(v))
        })
        .collect()
}

fn fref(
    l: &Lambda,
    name: &str,
    raw: &Option<String>,
    allow_qualifier: bool,
) -> Result<FunctionRef, ApiError> {
    let r = l.parse_name(name, allow_qualifier)?;
    if allow_qualifier {
        r.with_query_qualifier(query(raw, "Qualifier").as_deref())
    } else {
        Ok(r)
    }
}

async fn create_function(State(l): S, body: Bytes) -> Response {
    answer(StatusCode::CREATED, l.create_function(&body))
}

async fn list_functions(State(l): S, RawQuery(q): RawQuery) -> Response {
    answer(
        StatusCode::OK,
        l.list_functions(
            query(&q, "Marker").as_deref(),
            query(&q, "MaxItems").as_deref(),
        ),
    )
}

async fn get_function(State(l): S, Path(name): Path<String>, RawQuery(q): RawQuery) -> Response {
    answer(
        StatusCode::OK,
        fref(&l, &name, &q, true).and_then(|r| l.get_function(&r)),
    )
}

async fn delete_function(State(l): S, Path(name): Path<String>, RawQuery(q): RawQuery) -> Response {
    empty(fref(&l, &name, &q, true).and_then(|r| l.delete_function(&r)))
}

async fn get_configuration(
    State(l): S,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    answer(
        StatusCode::OK,
        fref(&l, &name, &q, true).and_then(|r| l.get_configuration(&r)),
    )
}

async fn update_configuration(State(l): S, Path(name): Path<String>, body: Bytes) -> Response {
    answer(
        StatusCode::OK,
        fref(&l, &name, &None, false).and_then(|r| l.update_configuration(&r, &body)),
    )
}

async fn update_code(State(l): S, Path(name): Path<String>, body: Bytes) -> Response {
    answer(
        StatusCode::OK,
        fref(&l, &name, &None, false).and_then(|r| l.update_code(&r, &body)),
    )
}

async fn publish_version(State(l): S, Path(name): Path<String>, body: Bytes) -> Response {
    answer(
        StatusCode::CREATED,
        fref(&l, &name, &None, false).and_then(|r| l.publish_version(&r, &body)),
    )
}

async fn list_versions(State(l): S, Path(name): Path<String>, RawQuery(q): RawQuery) -> Response {
    answer(
        StatusCode::OK,
        fref(&l, &name, &None, false).and_then(|r| {
            l.list_versions(
                &r,
                query(&q, "Marker").as_deref(),
                query(&q, "MaxItems").as_deref(),
            )
        }),
    )
}

async fn create_alias(State(l): S, Path(name): Path<String>, body: Bytes) -> Response {
    answer(
        StatusCode::CREATED,
        fref(&l, &name, &None, false).and_then(|r| l.create_alias(&r, &body)),
    )
}

async fn list_aliases(State(l): S, Path(name): Path<String>, RawQuery(q): RawQuery) -> Response {
    answer(
        StatusCode::OK,
        fref(&l, &name, &None, false).and_then(|r| {
            l.list_aliases(
                &r,
                query(&q, "FunctionVersion").as_deref(),
                query(&q, "Marker").as_deref(),
                query(&q, "MaxItems").as_deref(),
            )
        }),
    )
}

async fn get_alias(State(l): S, Path((name, alias)): Path<(String, String)>) -> Response {
    answer(
        StatusCode::OK,
        fref(&l, &name, &None, false).and_then(|r| l.get_alias(&r, &alias)),
    )
}

async fn update_alias(
    State(l): S,
    Path((name, alias)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    answer(
        StatusCode::OK,
        fref(&l, &name, &None, false).and_then(|r| l.update_alias(&r, &alias, &body)),
    )
}

async fn delete_alias(State(l): S, Path((name, alias)): Path<(String, String)>) -> Response {
    empty(fref(&l, &name, &None, false).and_then(|r| l.delete_alias(&r, &alias)))
}

async fn put_concurrency(State(l): S, Path(name): Path<String>, body: Bytes) -> Response {
    answer(
        StatusCode::OK,
        fref(&l, &name, &None, false).and_then(|r| l.put_concurrency(&r, &body)),
    )
}

async fn get_concurrency(State(l): S, Path(name): Path<String>) -> Response {
    answer(
        StatusCode::OK,
        fref(&l, &name, &None, false).and_then(|r| l.get_concurrency(&r)),
    )
}

async fn delete_concurrency(State(l): S, Path(name): Path<String>) -> Response {
    empty(fref(&l, &name, &None, false).and_then(|r| l.delete_concurrency(&r)))
}

async fn put_eic(
    State(l): S,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    answer(
        StatusCode::OK,
        fref(&l, &name, &q, true).and_then(|r| l.put_event_invoke_config(&r, &body, true)),
    )
}

async fn update_eic(
    State(l): S,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    answer(
        StatusCode::OK,
        fref(&l, &name, &q, true).and_then(|r| l.put_event_invoke_config(&r, &body, false)),
    )
}

async fn get_eic(State(l): S, Path(name): Path<String>, RawQuery(q): RawQuery) -> Response {
    answer(
        StatusCode::OK,
        fref(&l, &name, &q, true).and_then(|r| l.get_event_invoke_config(&r)),
    )
}

async fn delete_eic(State(l): S, Path(name): Path<String>, RawQuery(q): RawQuery) -> Response {
    empty(fref(&l, &name, &q, true).and_then(|r| l.delete_event_invoke_config(&r)))
}

async fn tag_resource(State(l): S, Path(arn): Path<String>, body: Bytes) -> Response {
    empty(l.tag_resource(&arn, &body))
}

async fn untag_resource(State(l): S, Path(arn): Path<String>, RawQuery(q): RawQuery) -> Response {
    empty(l.untag_resource(&arn, &query_all(&q, "tagKeys")))
}

async fn list_tags(State(l): S, Path(arn): Path<String>) -> Response {
    answer(StatusCode::OK, l.list_tags(&arn))
}

/// lambox's own: `GET /lambox/v1/functions/{name}/events[?Status=failed]` →
/// `{"Events": [EventSummary…]}`.
async fn list_events(State(l): S, Path(name): Path<String>, RawQuery(q): RawQuery) -> Response {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Events {
        events: Vec<crate::state::EventSummary>,
    }
    let failed = match query(&q, "Status").as_deref() {
        None => false,
        Some("failed") => true,
        Some(other) => {
            return crate::error::invalid_parameter(&format!(
            "Status '{other}' is not supported: give Status=failed, or no Status for every event."
        ))
            .into_response()
        }
    };
    answer(
        StatusCode::OK,
        fref(&l, &name, &q, false)
            .and_then(|r| l.list_events(&r.name, failed))
            .map(|events| Events { events }),
    )
}

async fn account_settings(State(l): S) -> Response {
    answer(StatusCode::OK, l.account_settings())
}

async fn invoke(
    State(l): S,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match fref(&l, &name, &q, true) {
        Ok(r) => l.invoke(r, headers, body).await,
        Err(e) => e.into_response(),
    }
}

async fn health(State(l): S) -> Response {
    #[derive(Serialize)]
    struct Health {
        status: &'static str,
        functions: u64,
        /// Accepted events not yet run to an end (scripts wait for a queue to drain).
        pending_events: u64,
    }
    match l
        .state
        .function_count()
        .and_then(|f| Ok((f, l.state.pending_event_count()?)))
    {
        Ok((functions, pending_events)) => json(
            StatusCode::OK,
            &Health {
                status: "ok",
                functions,
                pending_events,
            },
        ),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn unknown_operation() -> Response {
    ApiError::unknown_operation().into_response()
}

/// Gives every request an id (`x-amzn-RequestId`, kept if the handler set one) and a span.
async fn request_id(req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    let span =
        tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
    async move {
        let started = std::time::Instant::now();
        let mut resp = next.run(req).await;
        let hs = resp.headers_mut();
        let error = hs
            .get(h::ERROR_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        // Errors carry this request's id; an invoke's answer keeps the invoke's own id (the
        // RequestId of its START/END/REPORT lines), which is logged with it.
        if !error.is_empty() || !hs.contains_key(h::REQUEST_ID) {
            if let Ok(v) = HeaderValue::from_str(&id) {
                hs.insert(h::REQUEST_ID, v);
            }
        }
        let invoke_id = hs
            .get(h::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| *v != id)
            .unwrap_or("")
            .to_owned();
        tracing::info!(
            status = resp.status().as_u16(),
            error,
            invoke_id,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "answered"
        );
        resp
    }
    .instrument(span)
    .await
}

/// The Lambda API router over `lambda`, accepting any credentials.
pub fn router(lambda: Arc<Lambda>) -> Router {
    router_with_auth(lambda, None)
}

/// The Lambda API router over `lambda`; with `auth`, every request but `GET /health` (unknown
/// paths too) must be signed for the `lambda` service (see [`crate::sigv4`]).
pub fn router_with_auth(lambda: Arc<Lambda>, auth: Option<Guard>) -> Router {
    const F: &str = "/2015-03-31/functions/{name}";
    let api = Router::new()
        .route(
            "/2015-03-31/functions",
            post(create_function).get(list_functions),
        )
        .route(
            "/2015-03-31/functions/",
            post(create_function).get(list_functions),
        )
        .route(F, get(get_function).delete(delete_function))
        .route(
            &format!("{F}/configuration"),
            get(get_configuration).put(update_configuration),
        )
        .route(&format!("{F}/code"), put(update_code))
        .route(
            &format!("{F}/versions"),
            post(publish_version).get(list_versions),
        )
        .route(
            &format!("{F}/aliases"),
            post(create_alias).get(list_aliases),
        )
        .route(
            &format!("{F}/aliases/{{alias}}"),
            get(get_alias).put(update_alias).delete(delete_alias),
        )
        .route(&format!("{F}/invocations"), post(invoke))
        .route(
            "/2017-10-31/functions/{name}/concurrency",
            put(put_concurrency).delete(delete_concurrency),
        )
        .route(
            "/2019-09-30/functions/{name}/concurrency",
            get(get_concurrency),
        )
        .route(
            "/2019-09-25/functions/{name}/event-invoke-config",
            put(put_eic)
                .post(update_eic)
                .get(get_eic)
                .delete(delete_eic),
        )
        .route(
            "/2017-03-31/tags/{arn}",
            get(list_tags).post(tag_resource).delete(untag_resource),
        )
        .route("/lambox/v1/functions/{name}/events", get(list_events))
        .route("/2016-08-19/account-settings", get(account_settings))
        .route("/2016-08-19/account-settings/", get(account_settings))
        .method_not_allowed_fallback(unknown_operation)
        .fallback(unknown_operation)
        .with_state(lambda.clone());
    let api = match auth {
        Some(guard) => guard.wrap(api),
        None => api,
    };
    Router::new()
        .route("/health", get(health))
        .with_state(lambda)
        .merge(api)
        .layer(middleware::from_fn(request_id))
}
