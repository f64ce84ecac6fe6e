//! Invoke through the control plane: name → version (qualifier, alias) → admission → the
//! version's pool. Synchronous and `DryRun` invokes go to `lambox_runtime::handle_invoke`
//! (one implementation of the Invoke wire protocol); `Event` invokes are stored in the state
//! database before the 202, then run in the background.
//!
//! Not done yet (issue 4's later steps): retries of failed events (Lambda: 2, after 1 and 2
//! minutes), MaximumRetryAttempts/MaximumEventAgeInSeconds, and listing failed events. An
//! event is marked `succeeded` or `failed` after its one run; events still `pending` when
//! lambox stops (or is killed) run again at the next start.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use lambox_runtime::wire::{self, invoke_header as h};
use lambox_runtime::{InvokeError, InvokeRequest, ResponseBody};

use crate::error::{self, ApiError};
use crate::names::{FunctionRef, Qualifier};
use crate::service::{Lambda, Target};
use crate::state::StoredEvent;

fn not_ready(state: &str) -> ApiError {
    error::conflict(&format!(
        "The operation cannot be performed at this time. The function is currently in the following state: {state}"
    ))
}

impl Lambda {
    fn runnable_target(&self, r: &FunctionRef) -> Result<Target, ApiError> {
        let t = self.target(r)?;
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
        // The pool's FunctionConfig carries the version: X-Amz-Executed-Version and the
        // START line say which one ran.
        let resp = lambox_runtime::handle_invoke(&pool, &headers, body).await;
        drop(admission);
        Ok(resp)
    }

    async fn pool_for(self: &Arc<Self>, target: &Target) -> Result<lambox_runtime::Pool, ApiError> {
        if let Some(pool) = self.scheduler.cached_pool(&target.record, &target.version) {
            return Ok(pool);
        }
        let this = self.clone();
        let t = target.clone();
        tokio::task::spawn_blocking(move || this.scheduler.pool(&t.record, &t.version))
            .await
            .map_err(|e| error::service(&format!("scheduling failed: {e}")))?
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
        let (reserved, _) = self.concurrency_of(&r.name)?;
        if reserved == Some(0) {
            // Lambda sends such events straight to the failure destination; lambox has none yet.
            return Err(error::too_many_requests(
                error::ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded,
            ));
        }
        let event = StoredEvent {
            id: uuid::Uuid::new_v4().hyphenated().to_string(),
            name: r.name.clone(),
            qualifier: target.version.clone(),
            payload: payload.to_vec(),
        };
        let received = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        self.state.insert_event(&event, received)?;
        tracing::info!(function = %r.name, event = %event.id, "event accepted");
        let id = event.id.clone();
        self.spawn_event(event);
        let mut resp = StatusCode::ACCEPTED.into_response();
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(h::REQUEST_ID, v);
        }
        Ok(resp)
    }

    /// Runs every event left `pending` by a previous run of lambox.
    pub fn resume_events(self: &Arc<Self>) -> Result<usize, crate::error::StateError> {
        let pending = self.state.pending_events()?;
        let n = pending.len();
        for e in pending {
            self.spawn_event(e);
        }
        Ok(n)
    }

    fn spawn_event(self: &Arc<Self>, event: StoredEvent) {
        let guard = self.background();
        let this = self.clone();
        tokio::spawn(async move {
            let status = this.run_event(&event).await;
            if let Err(e) = this.state.finish_event(&event.id, status) {
                tracing::error!(event = %event.id, error = %e, "recording the event's outcome failed");
            }
            drop(guard);
        });
    }

    /// One run of an event: waits (rather than failing) while the function is throttled.
    async fn run_event(self: &Arc<Self>, event: &StoredEvent) -> &'static str {
        let r = FunctionRef {
            name: event.name.clone(),
            qualifier: Qualifier::parse(&event.qualifier).ok(),
            foreign: false,
        };
        loop {
            let target = match self.runnable_target(&r) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(event = %event.id, error = %e.body, "event dropped: its function cannot run");
                    return "failed";
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
                Err(e) => {
                    tracing::warn!(event = %event.id, error = %e.body, "event failed");
                    return "failed";
                }
            };
            let request = InvokeRequest {
                payload: Bytes::from(event.payload.clone()),
                client_context: None,
                cognito_identity: None,
                trace_id: None,
            };
            match pool.invoke(request).await {
                Ok(resp) => {
                    let failed = resp.function_error.is_some();
                    let failed = match resp.body {
                        ResponseBody::Buffered(_) => failed,
                        ResponseBody::Streaming(s) => {
                            s.collect_bytes(wire::MAX_STREAMED_RESPONSE_SIZE)
                                .await
                                .1
                                .is_err()
                                || failed
                        }
                    };
                    drop(admission);
                    return if failed { "failed" } else { "succeeded" };
                }
                Err(InvokeError::TooManyRequests { .. }) => {
                    drop(admission);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(InvokeError::ShuttingDown) => {
                    // Stays pending: the next start runs it.
                    return "pending";
                }
                Err(e) => {
                    tracing::warn!(event = %event.id, error = %e, "event failed");
                    return "failed";
                }
            }
        }
    }
}
