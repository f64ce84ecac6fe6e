//! Invoke through the control plane: name → version (qualifier, alias) → admission → the
//! version's pool. Synchronous and `DryRun` invokes go to `lambox_runtime::handle_invoke`
//! (one implementation of the Invoke wire protocol); `Event` invokes are stored in the state
//! database before the 202, then run in the background.
//!
//! An event is `pending` until it succeeds or fails for good (retries exhausted, too old, its
//! function gone); failed runs are retried as Lambda does (see [`Lambda::spawn_event`]), each
//! retry's due time stored, so events still `pending` when lambox stops (or is killed) run
//! again at the next start, at their due time. Finished events keep their last error for
//! `lambox events`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use lambox_runtime::wire::{self, invoke_header as h};
use lambox_runtime::{InvokeError, InvokeRequest, ResponseBody};

use crate::error::{self, ApiError};
use crate::images::ImageFailure;
use crate::model::FunctionEventInvokeConfig;
use crate::names::{FunctionRef, Qualifier};
use crate::scheduler::PoolError;
use crate::service::{Lambda, Target};
use crate::state::{EventWrite, StoredEvent};

fn not_ready(state: &str) -> ApiError {
    error::conflict(&format!(
        "The operation cannot be performed at this time. The function is currently in the following state: {state}"
    ))
}

impl Lambda {
    fn runnable_target(&self, r: &FunctionRef) -> Result<Target, ApiError> {
        let t = self.invoke_target(r)?;
        if t.record.configuration.state != "Active" {
            return Err(not_ready(&t.record.configuration.state));
        }
        Ok(t)
    }

    /// Invoke (`POST /2015-03-31/functions/{name}/invocations`).
    pub async fn invoke(
        self: &Arc<Self>,
        r: FunctionRef,
        headers: HeaderMap,
        body: Body,
    ) -> Response {
        match self.try_invoke(r, headers, body).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        }
    }

    async fn try_invoke(
        self: &Arc<Self>,
        r: FunctionRef,
        headers: HeaderMap,
        body: Body,
    ) -> Result<Response, ApiError> {
        let target = self.runnable_target(&r)?;
        let is_event = headers.get(h::INVOCATION_TYPE).map(HeaderValue::as_bytes) == Some(b"Event");
        if is_event {
            return self.accept_event(&r, &target, body).await;
        }
        let is_dry_run =
            headers.get(h::INVOCATION_TYPE).map(HeaderValue::as_bytes) == Some(b"DryRun");
        let (reserved, total) = self.concurrency_of(&r.name)?;
        if reserved == Some(0) && is_dry_run {
            return Err(error::too_many_requests(
                error::ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded,
            ));
        }
        let admission = if is_dry_run {
            None
        } else {
            Some(self.scheduler.admit(&r.name, reserved, total)?)
        };
        let pool = self.pool_for(&target).await?;
        let memory = if is_dry_run {
            None
        } else {
            Some(self.admit_memory(&pool, &target).await?)
        };
        // The pool's FunctionConfig carries the version: X-Amz-Executed-Version and the
        // START line say which one ran.
        let resp = lambox_runtime::handle_invoke(&pool, &headers, body).await;
        drop((admission, memory));
        Ok(resp)
    }

    async fn pool_for(self: &Arc<Self>, target: &Target) -> Result<lambox_runtime::Pool, ApiError> {
        if let Some(pool) = self.scheduler.cached_pool(&target.record, &target.version) {
            return Ok(pool);
        }
        let this = self.clone();
        let t = target.clone();
        let built = tokio::task::spawn_blocking(move || this.scheduler.pool(&t.record, &t.version))
            .await
            .map_err(|e| error::service(&format!("scheduling failed: {e}")))?;
        match built {
            Ok(pool) => Ok(pool),
            Err(PoolError::Other(e)) => Err(e),
            Err(PoolError::Image(f)) => {
                // As Lambda when a function's image is deleted: the function turns Failed
                // (StateReasonCode ImageDeleted), and invokes are refused as for any Failed one.
                tracing::warn!(function = %target.record.configuration.function_name, version = %target.version, code = f.code, reason = %f.reason, "function image gone; function failed");
                self.mark_image_failed(target, &f)?;
                Err(not_ready("Failed"))
            }
        }
    }

    /// Admits an invoke against the memory budget. An environment that has just answered
    /// (of this version, to be reused, or of another, to be evicted) may not be back in the
    /// idle list yet: while any environment is busy, a refusal is retried for up to 100 ms
    /// before it is final.
    async fn admit_memory(
        &self,
        pool: &lambox_runtime::Pool,
        target: &Target,
    ) -> Result<crate::scheduler::MemoryTicket, ApiError> {
        let c = &target.record.configuration;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        loop {
            match self.scheduler.admit_memory(
                pool,
                &c.function_name,
                &target.version,
                u64::try_from(c.memory_size).unwrap_or(0),
            ) {
                Err(_)
                    if self.scheduler.has_busy_environments()
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                r => return r,
            }
        }
    }

    fn mark_image_failed(&self, target: &Target, f: &ImageFailure) -> Result<(), ApiError> {
        let mut rec = target.record.clone();
        let c = &mut rec.configuration;
        let expected = c.revision_id.clone();
        c.state = "Failed".to_owned();
        c.state_reason = Some(format!(
            "The function's image {} is no longer in lambox's store: {}",
            rec.resolved_image_uri.as_deref().unwrap_or(&rec.image_uri),
            f.reason
        ));
        c.state_reason_code = Some(f.code.to_owned());
        c.revision_id = uuid::Uuid::new_v4().hyphenated().to_string();
        let name = c.function_name.clone();
        match target.version.parse::<u64>() {
            Ok(n) => self.state.put_version(&name, n, &rec)?,
            Err(_) => self.state.replace_latest_if(&expected, &rec)?,
        };
        Ok(())
    }

    async fn accept_event(
        self: &Arc<Self>,
        r: &FunctionRef,
        target: &Target,
        body: Body,
    ) -> Result<Response, ApiError> {
        let limit = wire::MAX_ASYNC_PAYLOAD;
        let payload = axum::body::to_bytes(body, 64 * 1024 * 1024)
            .await
            .map_err(|_| error::invalid_request_content("Could not read the request body."))?;
        if payload.len() > limit {
            return Err(ApiError::request_too_large(
                payload.len() as u64,
                "Event",
                limit,
            ));
        }
        let payload = if payload.iter().all(u8::is_ascii_whitespace) {
            Bytes::from_static(b"{}")
        } else if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
            return Err(error::invalid_request_content(&format!(
                "Could not parse request body into json: Could not parse payload into json: {e}"
            )));
        } else {
            payload
        };
        let id = self.enqueue_event(r, target, payload.to_vec()).await?;
        let mut resp = StatusCode::ACCEPTED.into_response();
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(h::REQUEST_ID, v);
        }
        Ok(resp)
    }

    /// Stores an event for `target` (reached through `r`) and starts running it; its id.
    async fn enqueue_event(
        self: &Arc<Self>,
        r: &FunctionRef,
        target: &Target,
        payload: Vec<u8>,
    ) -> Result<String, ApiError> {
        let (reserved, _) = self.concurrency_of(&r.name)?;
        if reserved == Some(0) {
            // Lambda sends such events straight to the failure destination; lambox refuses
            // them (the caller sees the throttle).
            return Err(error::too_many_requests(
                error::ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded,
            ));
        }
        let event = StoredEvent {
            // Time-ordered (UUID version 7): the queue's index grows at one end, so a group
            // commit writes a few pages, not one random page per event.
            id: uuid::Uuid::now_v7().hyphenated().to_string(),
            name: r.name.clone(),
            qualifier: target.version.clone(),
            config_qualifier: match &r.qualifier {
                Some(Qualifier::Alias(a)) => a.clone(),
                _ => target.version.clone(),
            },
            payload,
            received_ms: now_ms(),
            attempts: 0,
            next_attempt_ms: 0,
        };
        // Stored and started in a task of its own: if the caller goes away while the event is
        // being stored (the client hangs up and hyper drops the request), the stored event
        // must still run now, not only after a restart.
        let id = event.id.clone();
        let this = self.clone();
        tokio::spawn(async move {
            this.events
                .write(&this.state, EventWrite::Insert(event.clone()))
                .await?;
            tracing::debug!(function = %event.name, event = %event.id, "event accepted");
            this.spawn_event(event);
            Ok::<(), String>(())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(|e| error::service(&format!("could not store the event: {e}")))?;
        Ok(id)
    }

    /// Sends the invocation record of a finished event to the OnSuccess or OnFailure
    /// destination of its event invoke config, a Lambda function, as an asynchronous invoke
    /// (Lambda's record: version, timestamp, requestContext, requestPayload, responseContext,
    /// responsePayload).
    async fn deliver(
        self: &Arc<Self>,
        event: &StoredEvent,
        config: Option<&FunctionEventInvokeConfig>,
        end: &EventEnd,
    ) {
        let Some(config) = config else { return };
        let destinations = &config.destination_config;
        let dest = match end.condition {
            "Success" => &destinations.on_success,
            _ => &destinations.on_failure,
        };
        let Some(arn) = dest.get("Destination") else {
            return;
        };
        let json_or_text = |b: &[u8]| {
            serde_json::from_slice::<serde_json::Value>(b)
                .unwrap_or_else(|_| serde_json::Value::from(String::from_utf8_lossy(b)))
        };
        let mut record = serde_json::json!({
            "version": "1.0",
            "timestamp": crate::model::timestamp_utc(u128::from(now_ms())),
            "requestContext": {
                "requestId": event.id,
                "functionArn": self.arn(&event.name, Some(&event.qualifier)),
                "condition": end.condition,
                "approximateInvokeCount": end.invokes,
            },
            "requestPayload": json_or_text(&event.payload),
        });
        if let Some(response) = &end.response {
            record["responseContext"] = serde_json::json!({
                "statusCode": 200,
                "executedVersion": event.qualifier,
            });
            if end.condition != "Success" {
                record["responseContext"]["functionError"] = "Unhandled".into();
            }
            record["responsePayload"] = json_or_text(response);
        }
        let sent = match self
            .parse_name(arn, true)
            .and_then(|r| self.runnable_target(&r).map(|t| (r, t)))
        {
            Ok((r, t)) => {
                self.enqueue_event(&r, &t, record.to_string().into_bytes())
                    .await
            }
            Err(e) => Err(e),
        };
        match sent {
            Ok(id) => {
                tracing::info!(event = %event.id, destination = %arn, record = %id, "invocation record sent")
            }
            Err(e) => {
                tracing::warn!(event = %event.id, destination = %arn, error = %e.code, body = %e.body, "invocation record not delivered")
            }
        }
    }

    /// Runs every event left `pending` by a previous run of lambox (at its next attempt time).
    pub fn resume_events(self: &Arc<Self>) -> Result<usize, crate::error::StateError> {
        let pending = self.state.pending_events()?;
        let n = pending.len();
        for e in pending {
            self.spawn_event(e);
        }
        Ok(n)
    }

    /// Lambda's async timings scaled by `async_retry_delay_scale`.
    fn scaled(&self, d: Duration) -> Duration {
        d.mul_f64(self.config.async_retry_delay_scale)
    }

    /// Runs an event until it succeeds, fails for good, or lambox stops (then it stays
    /// `pending` and the next start resumes it). A failed run (function error, timeout,
    /// environment crash) is retried up to MaximumRetryAttempts (default 2) times, 1 then 2
    /// minutes later; an event older than MaximumEventAgeInSeconds (default 6 hours) is not
    /// run again. Each step is in the state database before the next begins.
    fn spawn_event(self: &Arc<Self>, mut event: StoredEvent) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let wait = event.next_attempt_ms.saturating_sub(now_ms());
                if wait > 0 {
                    // Not counted as background work: shutdown need not wait for a retry.
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                // In line behind the function's other events (not background work either).
                let Ok(slot) = this.event_gate(&event.name).acquire_owned().await else {
                    return;
                };
                if this.is_stopping() {
                    // lambox is stopping: the event stays pending for the next start.
                    return;
                }
                let guard = this.background();
                let config = this
                    .state
                    .event_invoke_config(&event.name, &event.config_qualifier)
                    .ok()
                    .flatten();
                let max_age = this.scaled(Duration::from_secs(
                    config
                        .as_ref()
                        .and_then(|c| c.maximum_event_age_in_seconds)
                        .unwrap_or(DEFAULT_MAX_EVENT_AGE_SECS) as u64,
                ));
                let max_retries = config
                    .as_ref()
                    .and_then(|c| c.maximum_retry_attempts)
                    .unwrap_or(DEFAULT_MAX_RETRIES) as u32;
                let expires_ms = event.received_ms + max_age.as_millis() as u64;
                let outcome = this.run_event(&event, expires_ms).await;
                drop(slot);
                let finish = |status: &'static str, attempts: u32, error: Option<String>| {
                    EventWrite::Finish {
                        id: event.id.clone(),
                        status,
                        attempts,
                        error,
                        now_ms: now_ms(),
                    }
                };
                let (write, end) = match outcome {
                    EventOutcome::Stopped => return,
                    EventOutcome::Succeeded(body) => {
                        tracing::debug!(event = %event.id, attempts = event.attempts + 1, "event succeeded");
                        (
                            finish("succeeded", 1, None),
                            Some(EventEnd {
                                condition: "Success",
                                invokes: event.attempts + 1,
                                response: Some(body.to_vec()),
                            }),
                        )
                    }
                    EventOutcome::Dropped(reason) => {
                        tracing::warn!(event = %event.id, %reason, "event failed");
                        let condition = if reason.starts_with("EventAgeExceeded") {
                            "EventAgeExceeded"
                        } else {
                            "RetriesExhausted"
                        };
                        (
                            finish("failed", 0, Some(reason)),
                            Some(EventEnd {
                                condition,
                                invokes: event.attempts,
                                response: None,
                            }),
                        )
                    }
                    EventOutcome::Failed(error) if event.attempts < max_retries => {
                        event.attempts += 1;
                        let delay = this.scaled(RETRY_DELAY * event.attempts);
                        event.next_attempt_ms = now_ms() + delay.as_millis() as u64;
                        tracing::info!(event = %event.id, attempt = event.attempts, ?delay, "event failed; retrying");
                        (
                            EventWrite::Retry {
                                id: event.id.clone(),
                                error,
                                next_attempt_ms: event.next_attempt_ms,
                            },
                            None,
                        )
                    }
                    EventOutcome::Failed(error) => {
                        tracing::warn!(event = %event.id, attempts = event.attempts + 1, "event failed: retries exhausted");
                        (
                            finish("failed", 1, Some(error.clone())),
                            Some(EventEnd {
                                condition: "RetriesExhausted",
                                invokes: event.attempts + 1,
                                response: Some(error.into_bytes()),
                            }),
                        )
                    }
                };
                let retry = matches!(write, EventWrite::Retry { .. });
                if let Err(e) = this.events.write(&this.state, write).await {
                    tracing::error!(event = %event.id, error = %e, "recording the event's outcome failed");
                } else if retry {
                    drop(guard);
                    continue;
                }
                if let Some(end) = &end {
                    this.deliver(&event, config.as_ref(), end).await;
                }
                drop(guard);
                return;
            }
        });
    }

    /// The gate of `function`'s events: at most `async_concurrency` of them run at once, and
    /// the others wait in order of arrival without polling. Lambda scales an event backlog
    /// out to the function's concurrency; on one machine that many cold starts at once would
    /// take the CPU the API needs (accepting events, synchronous invokes), so lambox drains a
    /// backlog through a bounded number of environments instead. Throttles (reserved
    /// concurrency, the memory budget) still apply inside the gate.
    fn event_gate(&self, function: &str) -> Arc<tokio::sync::Semaphore> {
        let mut gates = self.event_gates.lock().unwrap_or_else(|p| p.into_inner());
        gates
            .entry(function.to_owned())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Semaphore::new(
                    self.config.async_concurrency.max(1) as usize,
                ))
            })
            .clone()
    }

    /// One run of an event: waits (rather than failing) while the function is throttled,
    /// until `expires_ms`.
    async fn run_event(self: &Arc<Self>, event: &StoredEvent, expires_ms: u64) -> EventOutcome {
        let r = FunctionRef {
            name: event.name.clone(),
            qualifier: Qualifier::parse(&event.qualifier).ok(),
            foreign: false,
        };
        loop {
            if self.is_stopping() {
                return EventOutcome::Stopped;
            }
            if now_ms() >= expires_ms {
                return EventOutcome::Dropped(
                    "EventAgeExceeded: the event is older than the function's MaximumEventAgeInSeconds"
                        .to_owned(),
                );
            }
            let target = match self.runnable_target(&r) {
                Ok(t) => t,
                Err(e) => {
                    return EventOutcome::Dropped(format!("{}: {}", e.code, e.body));
                }
            };
            let admission = match self
                .concurrency_of(&r.name)
                .and_then(|(reserved, total)| self.scheduler.admit(&r.name, reserved, total))
            {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let pool = match self.pool_for(&target).await {
                Ok(p) => p,
                Err(e) => return EventOutcome::Failed(format!("{}: {}", e.code, e.body)),
            };
            // No memory for another environment: the event waits, as for a throttle.
            let Ok(memory) = self.admit_memory(&pool, &target).await else {
                drop(admission);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let request = InvokeRequest {
                payload: Bytes::from(event.payload.clone()),
                client_context: None,
                cognito_identity: None,
                trace_id: None,
            };
            match pool.invoke(request).await {
                Ok(resp) => {
                    let (body, read_error) = match resp.body {
                        ResponseBody::Buffered(b) => (b, None),
                        ResponseBody::Streaming(s) => {
                            let (b, r) = s.collect_bytes(wire::MAX_STREAMED_RESPONSE_SIZE).await;
                            (b, r.err().map(|e| e.to_string()))
                        }
                    };
                    drop((admission, memory));
                    return match (resp.function_error, read_error) {
                        (None, None) => EventOutcome::Succeeded(body),
                        (Some(_), _) => {
                            EventOutcome::Failed(String::from_utf8_lossy(&body).into_owned())
                        }
                        (None, Some(e)) => EventOutcome::Failed(e),
                    };
                }
                Err(InvokeError::TooManyRequests { .. }) => {
                    drop((admission, memory));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(InvokeError::ShuttingDown) if self.is_stopping() => {
                    return EventOutcome::Stopped;
                }
                Err(InvokeError::ShuttingDown) => {
                    // The version's pool was replaced (new revision) between lookup and
                    // invoke: run on the new one.
                    drop((admission, memory));
                    tracing::debug!(event = %event.id, "pool replaced before the event ran; trying again");
                }
                Err(e) => return EventOutcome::Failed(e.to_string()),
            }
        }
    }
}

/// Lambda's defaults for asynchronous invocation.
const DEFAULT_MAX_RETRIES: i64 = 2;
const DEFAULT_MAX_EVENT_AGE_SECS: i64 = 21600;
/// The first retry comes a minute after the failure, the second two minutes after the next.
const RETRY_DELAY: Duration = Duration::from_secs(60);

/// How one run of an event ended.
enum EventOutcome {
    /// The function's response.
    Succeeded(Bytes),
    /// A function or platform error: retried while attempts remain.
    Failed(String),
    /// Not run (too old, function deleted or not runnable): failed at once.
    Dropped(String),
    /// lambox is stopping: the event stays pending.
    Stopped,
}

/// How an event ended, for its invocation record.
struct EventEnd {
    /// `Success`, `RetriesExhausted` or `EventAgeExceeded`.
    condition: &'static str,
    /// Runs made.
    invokes: u32,
    /// The last run's response (or error document), if a run was made.
    response: Option<Vec<u8>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
