//! The CloudWatch Logs subset that reads function logs (`aws logs filter-log-events`,
//! `get-log-events`, `describe-log-streams`, `describe-log-groups`, and `aws logs tail` of
//! AWS CLI v2, which pages FilterLogEvents): JSON 1.1 on `POST /` with
//! `X-Amz-Target: Logs_20140328.<Op>`, over the [`LogStore`].
//!
//! Choices where CloudWatch's behaviour is not reproduced:
//! * `filterPattern` is a plain, case-sensitive substring match of the whole pattern (one
//!   pair of surrounding double quotes is removed); CloudWatch's term and JSON syntax is not
//!   parsed;
//! * `nextToken`s are positions in the store (`SEGMENT-OFFSET`); a token whose segment was
//!   dropped by retention continues at the oldest record kept;
//! * `ingestionTime` is the record's timestamp; `storedBytes` counts the stored lines.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::logs::{LogError, LogStore, Position, StoredRecord, GROUP_PREFIX};

/// `X-Amz-Target` prefix of CloudWatch Logs operations.
pub const TARGET_PREFIX: &str = "Logs_20140328.";
/// The header that names the operation (lower case, as axum reads it).
pub const TARGET_HEADER: &str = "x-amz-target";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
const NO_GROUP: &str = "The specified log group does not exist.";
const NO_STREAM: &str = "The specified log stream does not exist.";
/// Most events one GetLogEvents / FilterLogEvents answer holds (CloudWatch's limit).
const MAX_EVENTS: usize = 10_000;
/// Most groups or streams in one Describe answer.
const MAX_DESCRIBE: usize = 50;

/// A CloudWatch Logs error: status 400, `{"__type": T, "message": …}`.
#[derive(Debug)]
struct LogsError(&'static str, String);

impl IntoResponse for LogsError {
    fn into_response(self) -> Response {
        let status = if self.0 == "ServiceUnavailableException" {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        };
        let body = json!({ "__type": self.0, "message": self.1 }).to_string();
        (
            status,
            [("content-type", CONTENT_TYPE), ("x-amzn-errortype", self.0)],
            body,
        )
            .into_response()
    }
}

impl From<LogError> for LogsError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::NoGroup(_) => LogsError("ResourceNotFoundException", NO_GROUP.into()),
            other => {
                tracing::error!("logs: {other}");
                LogsError("ServiceUnavailableException", other.to_string())
            }
        }
    }
}

fn invalid(msg: impl Into<String>) -> LogsError {
    LogsError("InvalidParameterException", msg.into())
}

/// Account and region for ARNs.
#[derive(Debug, Clone)]
struct Ctx {
    store: LogStore,
    account_id: String,
    region: String,
}

impl Ctx {
    fn group_arn(&self, group: &str) -> String {
        format!(
            "arn:aws:logs:{}:{}:log-group:{group}",
            self.region, self.account_id
        )
    }
}

/// `POST /` for CloudWatch Logs targets.
pub fn router(store: LogStore, account_id: &str, region: &str) -> Router {
    Router::new().route("/", post(handle)).with_state(Ctx {
        store,
        account_id: account_id.to_owned(),
        region: region.to_owned(),
    })
}

async fn handle(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get(TARGET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let joined = tokio::task::spawn_blocking(move || {
        // Read what was written: records still queued for the writer are flushed first.
        ctx.store.flush();
        let result = match target.strip_prefix(TARGET_PREFIX) {
            Some("DescribeLogGroups") => parse(&body).and_then(|r| describe_groups(&ctx, r)),
            Some("DescribeLogStreams") => parse(&body).and_then(|r| describe_streams(&ctx, r)),
            Some("GetLogEvents") => parse(&body).and_then(|r| get_events(&ctx, r)),
            Some("FilterLogEvents") => parse(&body).and_then(|r| filter_events(&ctx, r)),
            _ => Err(LogsError(
                "UnknownOperationException",
                format!("unknown X-Amz-Target {target:?}"),
            )),
        };
        result.map(|v| without_nulls(v).to_string())
    })
    .await;
    match joined {
        Ok(Ok(body)) => (StatusCode::OK, [("content-type", CONTENT_TYPE)], body).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => LogsError("ServiceUnavailableException", e.to_string()).into_response(),
    }
}

/// Drops absent members (`nextToken` at the end) instead of sending `null`.
fn without_nulls(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, m| !m.is_null());
    }
    v
}

fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, LogsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| invalid(format!("request body: {e}")))
}

/// `limit` within 1..=max, or `default`.
fn limit(value: Option<i64>, max: usize) -> Result<usize, LogsError> {
    match value {
        None => Ok(max),
        Some(v) if v >= 1 && v as u64 <= max as u64 => Ok(v as usize),
        Some(v) => Err(invalid(format!(
            "1 validation error detected: Value '{v}' at 'limit' failed to satisfy constraint: Member must have value between 1 and {max}"
        ))),
    }
}

/// The function a group name or identifier (name or ARN) names.
fn function_of(name: Option<&str>, identifier: Option<&str>) -> Result<String, LogsError> {
    let group = match (name, identifier) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "LogGroup name and LogGroup ARN are mutually exclusive parameters.",
            ))
        }
        (Some(n), None) => n,
        (None, Some(id)) => match id.split_once(":log-group:") {
            Some((_, rest)) => rest.strip_suffix(":*").unwrap_or(rest),
            None => id,
        },
        (None, None) => {
            return Err(invalid(
                "Should provide either logGroupName or logGroupIdentifier.",
            ))
        }
    };
    group
        .strip_prefix(GROUP_PREFIX)
        .filter(|f| crate::names::valid_name(f))
        .map(str::to_owned)
        .ok_or_else(|| LogsError("ResourceNotFoundException", NO_GROUP.into()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeGroupsRequest {
    log_group_name_prefix: Option<String>,
    limit: Option<i64>,
    next_token: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LogGroup {
    log_group_name: String,
    creation_time: i64,
    metric_filter_count: u32,
    arn: String,
    stored_bytes: u64,
    log_group_class: &'static str,
    log_group_arn: String,
}

fn describe_groups(ctx: &Ctx, r: DescribeGroupsRequest) -> Result<serde_json::Value, LogsError> {
    let limit = limit(r.limit, MAX_DESCRIBE)?;
    let prefix = r.log_group_name_prefix.unwrap_or_default();
    let mut groups: Vec<LogGroup> = ctx
        .store
        .groups()?
        .into_iter()
        .map(|g| {
            let name = format!("{GROUP_PREFIX}{}", g.function);
            LogGroup {
                arn: format!("{}:*", ctx.group_arn(&name)),
                log_group_arn: ctx.group_arn(&name),
                log_group_name: name,
                creation_time: g.creation_time,
                metric_filter_count: 0,
                stored_bytes: g.stored_bytes,
                log_group_class: "STANDARD",
            }
        })
        .filter(|g| g.log_group_name.starts_with(&prefix))
        .filter(|g| {
            r.next_token
                .as_deref()
                .is_none_or(|t| g.log_group_name.as_str() > t)
        })
        .collect();
    let next = (groups.len() > limit).then(|| groups[limit - 1].log_group_name.clone());
    groups.truncate(limit);
    Ok(json!({ "logGroups": groups, "nextToken": next }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeStreamsRequest {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name_prefix: Option<String>,
    order_by: Option<String>,
    descending: Option<bool>,
    limit: Option<i64>,
    next_token: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LogStream {
    log_stream_name: String,
    creation_time: i64,
    first_event_timestamp: i64,
    last_event_timestamp: i64,
    last_ingestion_time: i64,
    arn: String,
    stored_bytes: u64,
}

fn describe_streams(ctx: &Ctx, r: DescribeStreamsRequest) -> Result<serde_json::Value, LogsError> {
    let function = function_of(
        r.log_group_name.as_deref(),
        r.log_group_identifier.as_deref(),
    )?;
    let limit = limit(r.limit, MAX_DESCRIBE)?;
    let by_time = match r.order_by.as_deref() {
        None | Some("LogStreamName") => false,
        Some("LastEventTime") => true,
        Some(o) => {
            return Err(invalid(format!(
                "1 validation error detected: Value '{o}' at 'orderBy' failed to satisfy constraint: Member must satisfy enum value set: [LogStreamName, LastEventTime]"
            )))
        }
    };
    let prefix = r.log_stream_name_prefix.unwrap_or_default();
    if by_time && !prefix.is_empty() {
        return Err(invalid(
            "Cannot order by LastEventTime with a logStreamNamePrefix.",
        ));
    }
    let skip: usize = match r.next_token.as_deref() {
        None => 0,
        Some(t) => t
            .parse()
            .map_err(|_| invalid("The specified nextToken is invalid."))?,
    };
    let group_arn = ctx.group_arn(&format!("{GROUP_PREFIX}{function}"));
    let mut streams = ctx.store.streams(&function)?;
    streams.retain(|s| s.name.starts_with(&prefix));
    if by_time {
        streams.sort_by_key(|s| (s.last_event, s.name.clone()));
    }
    if r.descending == Some(true) {
        streams.reverse();
    }
    let total = streams.len();
    let page: Vec<LogStream> = streams
        .into_iter()
        .skip(skip)
        .take(limit)
        .map(|s| LogStream {
            arn: format!("{group_arn}:log-stream:{}", s.name),
            log_stream_name: s.name,
            creation_time: s.first_event,
            first_event_timestamp: s.first_event,
            last_event_timestamp: s.last_event,
            last_ingestion_time: s.last_event,
            stored_bytes: s.stored_bytes,
        })
        .collect();
    let next = (skip + limit < total).then(|| (skip + limit).to_string());
    Ok(json!({ "logStreams": page, "nextToken": next }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetEventsRequest {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name: String,
    start_time: Option<i64>,
    end_time: Option<i64>,
    next_token: Option<String>,
    limit: Option<i64>,
    start_from_head: Option<bool>,
}

/// A record as CloudWatch's message: Lambda's messages end with a newline.
fn message(r: &StoredRecord) -> String {
    format!("{}\n", r.text)
}

/// A page token: `f/POS` (events after POS) or `b/POS` (events before POS).
fn page_token(forward: bool, p: Position) -> String {
    format!("{}/{}", if forward { 'f' } else { 'b' }, p.token())
}

fn in_time(r: &StoredRecord, start: Option<i64>, end: Option<i64>) -> bool {
    start.is_none_or(|s| r.timestamp >= s) && end.is_none_or(|e| r.timestamp <= e)
}

fn get_events(ctx: &Ctx, r: GetEventsRequest) -> Result<serde_json::Value, LogsError> {
    let function = function_of(
        r.log_group_name.as_deref(),
        r.log_group_identifier.as_deref(),
    )?;
    let limit = limit(r.limit, MAX_EVENTS)?;
    // (forward?, position): events strictly after / before it.
    let token = match r.next_token.as_deref() {
        None => None,
        Some(t) => {
            let parsed = t
                .split_once('/')
                .and_then(|(d, p)| Some((d == "f", Position::parse(p)?)))
                .filter(|_| t.starts_with("f/") || t.starts_with("b/"));
            Some(parsed.ok_or_else(|| invalid("The specified nextToken is invalid."))?)
        }
    };
    let mut all: Vec<(Position, StoredRecord)> = Vec::new();
    let mut stream_seen = false;
    ctx.store.scan(&function, None, |p, rec| {
        if rec.stream == r.log_stream_name {
            stream_seen = true;
            let wanted = match token {
                Some((true, t)) => p > t,
                Some((false, t)) => p < t,
                None => true,
            };
            if wanted && in_time(&rec, r.start_time, r.end_time) {
                all.push((p, rec));
            }
        }
        true
    })?;
    if !stream_seen {
        return Err(LogsError("ResourceNotFoundException", NO_STREAM.into()));
    }
    let from_head = match token {
        Some((forward, _)) => forward,
        None => r.start_from_head == Some(true),
    };
    let page: &[(Position, StoredRecord)] = if from_head {
        &all[..all.len().min(limit)]
    } else {
        &all[all.len().saturating_sub(limit)..]
    };
    let head = Position {
        segment: 0,
        offset: 0,
    };
    let (forward, backward) = match (page.first(), page.last()) {
        (Some(first), Some(last)) => (page_token(true, last.0), page_token(false, first.0)),
        // Nothing (more): the token that was given comes back (how clients see the end).
        _ => match (token, r.next_token) {
            (Some(_), Some(t)) => (t.clone(), t),
            _ => (page_token(true, head), page_token(false, head)),
        },
    };
    let events: Vec<serde_json::Value> = page
        .iter()
        .map(|(_, rec)| {
            json!({ "timestamp": rec.timestamp, "message": message(rec), "ingestionTime": rec.timestamp })
        })
        .collect();
    Ok(json!({ "events": events, "nextForwardToken": forward, "nextBackwardToken": backward }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterEventsRequest {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_names: Option<Vec<String>>,
    log_stream_name_prefix: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    filter_pattern: Option<String>,
    next_token: Option<String>,
    limit: Option<i64>,
    #[allow(dead_code)]
    interleaved: Option<bool>,
}

fn filter_events(ctx: &Ctx, r: FilterEventsRequest) -> Result<serde_json::Value, LogsError> {
    let function = function_of(
        r.log_group_name.as_deref(),
        r.log_group_identifier.as_deref(),
    )?;
    let limit = limit(r.limit, MAX_EVENTS)?;
    if r.log_stream_names.is_some() && r.log_stream_name_prefix.is_some() {
        return Err(invalid(
            "logStreamNames and logStreamNamePrefix are mutually exclusive parameters.",
        ));
    }
    let from = match r.next_token.as_deref() {
        None => None,
        Some(t) => {
            Some(Position::parse(t).ok_or_else(|| invalid("The specified nextToken is invalid."))?)
        }
    };
    let pattern = r.filter_pattern.as_deref().map(|p| {
        let p = p.trim();
        p.strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .unwrap_or(p)
            .to_owned()
    });
    let mut events = Vec::new();
    let mut next = None;
    ctx.store.scan(&function, from, |p, rec| {
        let stream_ok = match (&r.log_stream_names, &r.log_stream_name_prefix) {
            (Some(names), _) => names.contains(&rec.stream),
            (None, Some(prefix)) => rec.stream.starts_with(prefix.as_str()),
            (None, None) => true,
        };
        let keep = stream_ok
            && in_time(&rec, r.start_time, r.end_time)
            && pattern.as_deref().is_none_or(|pat| rec.text.contains(pat));
        if !keep {
            return true;
        }
        if events.len() == limit {
            next = Some(p.token());
            return false;
        }
        events.push(json!({
            "logStreamName": rec.stream,
            "timestamp": rec.timestamp,
            "message": message(&rec),
            "ingestionTime": rec.timestamp,
            "eventId": p.token(),
        }));
        true
    })?;
    Ok(json!({ "events": events, "searchedLogStreams": [], "nextToken": next }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    async fn call(app: &Router, op: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let req = axum::http::Request::post("/")
            .header(TARGET_HEADER, format!("{TARGET_PREFIX}{op}"))
            .header("content-type", CONTENT_TYPE)
            .body(Body::from(body.to_string()))
            .expect("request");
        let resp = app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&bytes).expect("JSON"))
    }

    #[tokio::test]
    async fn describe_get_and_filter_with_pages_and_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LogStore::open(dir.path(), crate::logs::DEFAULT_RETENTION_BYTES).expect("open");
        let sink = store.sink(None);
        for (env, text) in [(1, "START a"), (1, "hello"), (2, "START b"), (1, "END a")] {
            crate::logs::tests::record(&sink, "f", env, text);
        }
        let app = router(store, "000000000000", "us-east-1");

        let (s, v) = call(&app, "DescribeLogGroups", json!({})).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["logGroups"][0]["logGroupName"], "/aws/lambda/f");
        assert_eq!(
            v["logGroups"][0]["arn"],
            "arn:aws:logs:us-east-1:000000000000:log-group:/aws/lambda/f:*"
        );

        let (_, v) = call(
            &app,
            "DescribeLogStreams",
            json!({"logGroupName": "/aws/lambda/f", "limit": 1}),
        )
        .await;
        assert_eq!(v["logStreams"].as_array().map(Vec::len), Some(1), "{v}");
        assert_eq!(v["nextToken"], "1");

        // Pages of one event, followed by their tokens, give every event once, in order.
        let mut token = None;
        let mut messages = Vec::new();
        loop {
            let mut input = json!({"logGroupName": "/aws/lambda/f", "limit": 1});
            if let Some(t) = &token {
                input["nextToken"] = json!(t);
            }
            let (s, v) = call(&app, "FilterLogEvents", input).await;
            assert_eq!(s, 200, "{v}");
            for e in v["events"].as_array().expect("events") {
                messages.push(e["message"].as_str().expect("message").to_owned());
            }
            match v.get("nextToken").and_then(|t| t.as_str()) {
                Some(t) => token = Some(t.to_owned()),
                None => break,
            }
        }
        assert_eq!(messages, ["START a\n", "hello\n", "START b\n", "END a\n"]);
        let (_, v) = call(
            &app,
            "FilterLogEvents",
            json!({"logGroupIdentifier": "arn:aws:logs:us-east-1:000000000000:log-group:/aws/lambda/f:*", "filterPattern": "\"START\""}),
        )
        .await;
        assert_eq!(v["events"].as_array().map(Vec::len), Some(2), "{v}");

        let stream = v["events"][0]["logStreamName"]
            .as_str()
            .expect("stream")
            .to_owned();
        let (_, v) = call(
            &app,
            "GetLogEvents",
            json!({"logGroupName": "/aws/lambda/f", "logStreamName": stream, "startFromHead": true}),
        )
        .await;
        let texts: Vec<&str> = v["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter_map(|e| e["message"].as_str())
            .collect();
        assert_eq!(texts, ["START a\n", "hello\n", "END a\n"]);
        // At the end the forward token comes back unchanged.
        let fwd = v["nextForwardToken"].clone();
        let (_, v) = call(
            &app,
            "GetLogEvents",
            json!({"logGroupName": "/aws/lambda/f", "logStreamName": stream, "nextToken": fwd}),
        )
        .await;
        assert_eq!(v["events"].as_array().map(Vec::len), Some(0), "{v}");
        assert_eq!(v["nextForwardToken"], fwd);

        let (s, v) = call(
            &app,
            "FilterLogEvents",
            json!({"logGroupName": "/aws/lambda/x"}),
        )
        .await;
        assert_eq!(
            (s, v["__type"].as_str()),
            (400, Some("ResourceNotFoundException"))
        );
        assert_eq!(v["message"], "The specified log group does not exist.");
        let (s, v) = call(
            &app,
            "FilterLogEvents",
            json!({"logGroupName": "/aws/lambda/f", "limit": 0}),
        )
        .await;
        assert_eq!(
            (s, v["__type"].as_str()),
            (400, Some("InvalidParameterException"))
        );
        let (s, v) = call(&app, "PutLogEvents", json!({})).await;
        assert_eq!(
            (s, v["__type"].as_str()),
            (400, Some("UnknownOperationException"))
        );
    }
}
