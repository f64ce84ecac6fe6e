//! The environments of one function and the scheduling of its invokes.
//!
//! Up to `concurrency` environments exist at once, each running one invoke at a time. An
//! invoke takes an idle environment (the most recently used one, still warm) or, if none is
//! idle, starts a new one; when all `concurrency` are busy it waits in a FIFO queue of at most
//! `queue_capacity` invokes; past that it is refused with
//! [`InvokeError::TooManyRequests`] (the invoke API answers 429
//! `TooManyRequestsException`). A caller that goes away while queued leaves the queue; once
//! an invoke has started it runs to its end even if its caller is gone, as in Lambda.
//!
//! `Event` invokes ([`Pool::invoke_async`]) are admitted the same way (a full queue refuses them
//! too) and run in the background; their results are dropped (logs still go to the sink).
//! Lambda's retries of failed asynchronous invokes are not implemented.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::config::{ConfigError, FunctionConfig};
use crate::environment::{run_invoke, Environment, FunctionContext, Responder};
use crate::invoke::{InvokeError, InvokeRequest, InvokeResponse};
use crate::launch::Launcher;
use crate::logs::{lock, Emitter, LogSink};
use crate::wire;

/// How a pool schedules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    /// Most environments at once (each runs one invoke at a time). At least 1.
    pub concurrency: usize,
    /// Most invokes waiting for an environment; more are refused (429). May be 0.
    pub queue_capacity: usize,
    /// Init phase limit (Lambda: 10 s). After it, init is retried within the invoke.
    pub init_timeout: Duration,
}

impl Default for PoolOptions {
    /// One environment, a queue of 100, Lambda's 10 s init limit.
    fn default() -> Self {
        PoolOptions {
            concurrency: 1,
            queue_capacity: 100,
            init_timeout: wire::INIT_TIMEOUT,
        }
    }
}

struct PoolInner {
    ctx: FunctionContext,
    options: PoolOptions,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    idle: Mutex<Vec<Environment>>,
    closed: AtomicBool,
}

/// The execution environments of one function (cheap to clone; clones share the pool).
/// Dropping the last clone kills idle environments; running invokes finish first.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("function", &self.inner.ctx.config.name)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// Counts a queued invoke while it lives.
struct QueueSlot(Arc<PoolInner>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Pool {
    /// A pool for `config` whose environments `launcher` starts and whose logs go to `sink`.
    /// Nothing is started until the first invoke (on-demand). Creating a pool needs no tokio
    /// runtime; invoking needs one (multi-threaded or not).
    pub fn new(
        config: FunctionConfig,
        launcher: Arc<dyn Launcher>,
        sink: Arc<dyn LogSink>,
        options: PoolOptions,
    ) -> Result<Pool, ConfigError> {
        config.validate()?;
        if options.concurrency == 0 {
            return Err(ConfigError::Concurrency);
        }
        let emitter = Emitter::new(sink, &config.name);
        Ok(Pool {
            inner: Arc::new(PoolInner {
                ctx: FunctionContext::new(config, launcher, emitter, options.init_timeout),
                permits: Arc::new(Semaphore::new(options.concurrency)),
                waiting: AtomicUsize::new(0),
                idle: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
                options,
            }),
        })
    }

    /// The function's configuration.
    pub fn config(&self) -> &FunctionConfig {
        &self.inner.ctx.config
    }

    /// The scheduling options.
    pub fn options(&self) -> &PoolOptions {
        &self.inner.options
    }

    /// Environments idle right now.
    pub fn idle_environments(&self) -> usize {
        lock(&self.inner.idle).len()
    }

    /// Invokes waiting for an environment right now.
    pub fn queued(&self) -> usize {
        self.inner.waiting.load(Ordering::Acquire)
    }

    /// Runs one synchronous (`RequestResponse`) invoke and returns as soon as the response is
    /// known. Function failures (errors, timeouts, crashes) are `Ok` responses with
    /// [`function_error`](InvokeResponse::function_error) set.
    pub async fn invoke(&self, request: InvokeRequest) -> Result<InvokeResponse, InvokeError> {
        check_size(&request, wire::MAX_SYNC_PAYLOAD)?;
        let permit = self.admit_sync().await?;
        let (tx, rx) = oneshot::channel();
        let request_id = new_request_id();
        tokio::spawn(
            self.inner
                .clone()
                .run(permit, request_id, request, Responder::new(tx)),
        );
        rx.await.unwrap_or_else(|_| {
            Err(InvokeError::Sandbox(
                "the invoke ended without a result".to_owned(),
            ))
        })
    }

    /// Accepts an asynchronous (`Event`) invoke and runs it in the background. Returns its
    /// request id, or why it was refused. Must be called within a tokio runtime (it spawns).
    pub fn invoke_async(&self, request: InvokeRequest) -> Result<String, InvokeError> {
        check_size(&request, wire::MAX_ASYNC_PAYLOAD)?;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(InvokeError::ShuttingDown);
        }
        let request_id = new_request_id();
        let (tx, _rx) = oneshot::channel();
        let responder = Responder::new(tx);
        match self.inner.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(self.inner.clone().run(
                    permit,
                    request_id.clone(),
                    request,
                    responder,
                ));
            }
            Err(_) => {
                let slot = self.reserve_slot()?;
                let inner = self.inner.clone();
                let id = request_id.clone();
                tokio::spawn(async move {
                    let permit = inner.permits.clone().acquire_owned().await;
                    drop(slot);
                    if let Ok(permit) = permit {
                        inner.run(permit, id, request, responder).await;
                    }
                });
            }
        }
        Ok(request_id)
    }

    /// Refuses new invokes and kills the idle environments. Running invokes finish; their
    /// environments are then killed.
    pub fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.permits.close();
        let idle = std::mem::take(&mut *lock(&self.inner.idle));
        drop(idle);
    }

    fn reserve_slot(&self) -> Result<QueueSlot, InvokeError> {
        let before = self.inner.waiting.fetch_add(1, Ordering::AcqRel);
        let slot = QueueSlot(self.inner.clone());
        if before >= self.inner.options.queue_capacity {
            return Err(InvokeError::TooManyRequests {
                concurrency: self.inner.options.concurrency,
                queued: self.inner.options.queue_capacity,
            });
        }
        Ok(slot)
    }

    async fn admit_sync(&self) -> Result<OwnedSemaphorePermit, InvokeError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(InvokeError::ShuttingDown);
        }
        if let Ok(permit) = self.inner.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let slot = self.reserve_slot()?;
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| InvokeError::ShuttingDown)?;
        drop(slot);
        Ok(permit)
    }
}

fn check_size(request: &InvokeRequest, limit: usize) -> Result<(), InvokeError> {
    if request.payload.len() > limit {
        return Err(InvokeError::RequestTooLarge {
            size: request.payload.len(),
            limit,
        });
    }
    Ok(())
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

impl PoolInner {
    fn take_idle(&self) -> Option<Environment> {
        loop {
            let mut env = lock(&self.idle).pop()?;
            if env.is_alive() {
                return Some(env);
            }
            tracing::debug!(?env, "idle environment found dead; discarded");
        }
    }

    async fn run(
        self: Arc<Self>,
        permit: OwnedSemaphorePermit,
        request_id: String,
        request: InvokeRequest,
        responder: Responder,
    ) {
        let warm = self.take_idle();
        let env = run_invoke(&self.ctx, warm, request_id, request, responder).await;
        if let Some(env) = env {
            let mut idle = lock(&self.idle);
            // Checked under the lock `shutdown` empties the idle list with.
            if self.closed.load(Ordering::Acquire) {
                drop(idle);
                drop(env);
            } else {
                idle.push(env);
            }
        }
        // The environment is back before the next queued invoke gets the permit.
        drop(permit);
    }
}
