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
//!
//! Lifecycle:
//! * an environment idle for [`PoolOptions::idle_timeout`] is torn down (one background task
//!   per pool, started by the first environment that goes idle, ended when none is idle);
//! * [`Pool::shutdown`] refuses new invokes at once (and fails the queued ones with
//!   [`InvokeError::ShuttingDown`]); [`Pool::shutdown_gracefully`] does the same, lets the
//!   running invokes finish within a grace period, kills what still runs after it, and returns
//!   once every environment is torn down (processes reaped, mounts and cgroups released).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::{ConfigError, FunctionConfig};
use crate::environment::{run_invoke, Environment, FunctionContext, Responder};
use crate::invoke::{InvokeError, InvokeRequest, InvokeResponse};
use crate::launch::{EnvControl, LaunchError, LaunchSpec, Launched, Launcher};
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
    /// An environment idle (frozen, waiting for an invoke) this long is torn down; the next
    /// invoke then cold-starts. `None`: idle environments stay until shutdown. Lambda does not
    /// publish its idle lifetime (minutes to hours are observed).
    pub idle_timeout: Option<Duration>,
}

impl Default for PoolOptions {
    /// One environment, a queue of 100, Lambda's 10 s init limit, no idle timeout.
    fn default() -> Self {
        PoolOptions {
            concurrency: 1,
            queue_capacity: 100,
            init_timeout: wire::INIT_TIMEOUT,
            idle_timeout: None,
        }
    }
}

/// An environment waiting for an invoke, and since when.
struct Idle {
    env: Environment,
    since: Instant,
}

struct PoolInner {
    ctx: FunctionContext,
    options: PoolOptions,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// Oldest first (environments are pushed when they go idle and taken from the end).
    idle: Mutex<Vec<Idle>>,
    closed: AtomicBool,
    /// Whether the idle reaper task runs.
    reaper: AtomicBool,
    /// Invokes admitted or being admitted and not yet over; `in_flight_done` is notified when
    /// one ends.
    in_flight: AtomicUsize,
    in_flight_done: Notify,
    /// Every environment whose control is still alive (started and not yet torn down).
    live: Arc<LiveEnvironments>,
}

/// The controls of the pool's environments, to kill them all at shutdown and to know when the
/// last one is released. The pool's launcher wraps each environment's [`EnvControl`] in a
/// [`TrackedControl`] registered here; the environment drops it once torn down.
#[derive(Default)]
struct LiveEnvironments {
    controls: Mutex<Vec<Weak<ControlEntry>>>,
    released: Notify,
}

struct ControlEntry {
    control: Box<dyn EnvControl>,
    live: Weak<LiveEnvironments>,
}

impl Drop for ControlEntry {
    fn drop(&mut self) {
        if let Some(live) = self.live.upgrade() {
            live.released.notify_waiters();
        }
    }
}

impl LiveEnvironments {
    fn register(self: &Arc<Self>, control: Box<dyn EnvControl>) -> TrackedControl {
        let entry = Arc::new(ControlEntry {
            control,
            live: Arc::downgrade(self),
        });
        let mut controls = lock(&self.controls);
        controls.retain(|w| w.strong_count() > 0);
        controls.push(Arc::downgrade(&entry));
        TrackedControl(entry)
    }

    fn count(&self) -> usize {
        lock(&self.controls)
            .iter()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    fn kill_all(&self) {
        let alive: Vec<Arc<ControlEntry>> = lock(&self.controls)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for entry in alive {
            entry.control.kill();
        }
    }

    /// Waits until every registered environment has been released, or `deadline`.
    async fn released_by(&self, deadline: Instant) -> bool {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.count() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return self.count() == 0;
            }
        }
    }
}

/// An environment's control, registered with its pool while it lives.
#[derive(Debug)]
struct TrackedControl(Arc<ControlEntry>);

impl std::fmt::Debug for ControlEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.control.fmt(f)
    }
}

impl EnvControl for TrackedControl {
    fn freeze(&self) -> std::io::Result<()> {
        self.0.control.freeze()
    }
    fn thaw(&self) -> std::io::Result<()> {
        self.0.control.thaw()
    }
    fn kill(&self) {
        self.0.control.kill()
    }
    fn max_memory_bytes(&self) -> Option<u64> {
        self.0.control.max_memory_bytes()
    }
    fn oom_killed(&self) -> bool {
        self.0.control.oom_killed()
    }
    fn cleanup(&self) {
        self.0.control.cleanup()
    }
}

/// The pool's launcher: the caller's, with every started environment registered.
struct TrackingLauncher {
    inner: Arc<dyn Launcher>,
    live: Arc<LiveEnvironments>,
}

impl Launcher for TrackingLauncher {
    fn launch(&self, spec: &LaunchSpec) -> Result<Launched, LaunchError> {
        let launched = self.inner.launch(spec)?;
        Ok(Launched {
            child: launched.child,
            listener: launched.listener,
            control: Box::new(self.live.register(launched.control)),
        })
    }
}

/// Counts an invoke from before its admission until it is over (or refused).
struct InFlight(Arc<PoolInner>);

impl InFlight {
    fn new(inner: &Arc<PoolInner>) -> InFlight {
        inner.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(inner.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.in_flight_done.notify_waiters();
    }
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
        let emitter = Emitter::new(sink, &config.name, &config.version);
        let live = Arc::new(LiveEnvironments::default());
        let launcher = Arc::new(TrackingLauncher {
            inner: launcher,
            live: live.clone(),
        });
        Ok(Pool {
            inner: Arc::new(PoolInner {
                ctx: FunctionContext::new(config, launcher, emitter, options.init_timeout),
                permits: Arc::new(Semaphore::new(options.concurrency)),
                waiting: AtomicUsize::new(0),
                idle: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
                reaper: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                in_flight_done: Notify::new(),
                live,
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

    /// Whether the pool was shut down (it refuses every invoke).
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Environments idle right now.
    pub fn idle_environments(&self) -> usize {
        lock(&self.inner.idle).len()
    }

    /// Tears down the environment idle the longest, if any (its processes are killed at once),
    /// to make room for another; true if there was one.
    pub fn evict_idle(&self) -> bool {
        let oldest = {
            let mut idle = lock(&self.inner.idle);
            (!idle.is_empty()).then(|| idle.remove(0))
        };
        match oldest {
            Some(Idle { env, .. }) => {
                tracing::debug!(function = %self.inner.ctx.config.name, ?env, "idle environment evicted");
                drop(env);
                true
            }
            None => false,
        }
    }

    /// Invokes waiting for an environment right now.
    pub fn queued(&self) -> usize {
        self.inner.waiting.load(Ordering::Acquire)
    }

    /// Invokes admitted (running or queued) and not over yet.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Environments started and not yet completely torn down (busy, idle, or being released).
    pub fn environments(&self) -> usize {
        self.inner.live.count()
    }

    /// Runs one synchronous (`RequestResponse`) invoke and returns as soon as the response is
    /// known. Function failures (errors, timeouts, crashes) are `Ok` responses with
    /// [`function_error`](InvokeResponse::function_error) set.
    pub async fn invoke(&self, request: InvokeRequest) -> Result<InvokeResponse, InvokeError> {
        check_size(&request, wire::MAX_SYNC_PAYLOAD)?;
        let in_flight = InFlight::new(&self.inner);
        let permit = self.admit_sync().await?;
        let (tx, rx) = oneshot::channel();
        let request_id = new_request_id();
        tokio::spawn(self.inner.clone().run(
            permit,
            in_flight,
            request_id,
            request,
            Responder::new(tx),
        ));
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
        let in_flight = InFlight::new(&self.inner);
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
                    in_flight,
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
                    match permit {
                        Ok(permit) => inner.run(permit, in_flight, id, request, responder).await,
                        Err(_) => tracing::warn!(
                            request_id = %id,
                            "asynchronous invoke dropped: the pool shut down while it was queued"
                        ),
                    }
                });
            }
        }
        Ok(request_id)
    }

    /// Refuses new invokes, fails the queued ones ([`InvokeError::ShuttingDown`]) and kills the
    /// idle environments. Running invokes finish; their environments are then killed.
    pub fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.permits.close();
        let idle = std::mem::take(&mut *lock(&self.inner.idle));
        drop(idle);
    }

    /// [`shutdown`](Pool::shutdown), then waits up to `grace` for the running invokes to end
    /// (their callers get their responses); kills the environments of those still running
    /// after it (their callers get `Runtime.ExitError`, `signal: killed`), and returns once
    /// every environment is torn down: processes reaped, [`EnvControl::cleanup`] done. Returns
    /// whether every invoke ended within `grace`.
    ///
    /// Call it within the tokio runtime the pool's invokes run on.
    pub async fn shutdown_gracefully(&self, grace: Duration) -> bool {
        self.shutdown();
        let inner = &self.inner;
        let finished = self.in_flight_done_by(Instant::now() + grace).await;
        if !finished {
            tracing::warn!(
                function = %inner.ctx.config.name,
                running = self.in_flight(),
                "invokes still running after the {grace:?} grace period; killing their environments"
            );
            inner.live.kill_all();
            // Killed runtimes end their invokes at once (the runtime exited).
            self.in_flight_done_by(Instant::now() + TEARDOWN_LIMIT)
                .await;
        }
        // An environment is released once its processes are reaped and cleanup is done
        // (at most 2 s after SIGKILL, see `Environment`'s `Drop`).
        if !inner
            .live
            .released_by(Instant::now() + TEARDOWN_LIMIT)
            .await
        {
            tracing::warn!(
                function = %inner.ctx.config.name,
                left = inner.live.count(),
                "environments not torn down {TEARDOWN_LIMIT:?} after shutdown"
            );
        }
        finished
    }

    async fn in_flight_done_by(&self, deadline: Instant) -> bool {
        let inner = &self.inner;
        loop {
            let done = inner.in_flight_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if inner.in_flight.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                return inner.in_flight.load(Ordering::Acquire) == 0;
            }
        }
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

/// How long shutdown waits for killed environments to be released.
const TEARDOWN_LIMIT: Duration = Duration::from_secs(5);

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
            let Idle { mut env, .. } = lock(&self.idle).pop()?;
            if env.is_alive() {
                return Some(env);
            }
            tracing::debug!(?env, "idle environment found dead; discarded");
        }
    }

    async fn run(
        self: Arc<Self>,
        permit: OwnedSemaphorePermit,
        in_flight: InFlight,
        request_id: String,
        request: InvokeRequest,
        responder: Responder,
    ) {
        let warm = self.take_idle();
        let env = run_invoke(&self.ctx, warm, request_id, request, responder).await;
        if let Some(env) = env {
            self.push_idle(env);
        }
        // The environment is back before the next queued invoke gets the permit.
        drop(permit);
        drop(in_flight);
    }

    fn push_idle(self: &Arc<Self>, env: Environment) {
        let mut idle = lock(&self.idle);
        // Checked under the lock `shutdown` empties the idle list with.
        if self.closed.load(Ordering::Acquire) {
            drop(idle);
            drop(env);
            return;
        }
        idle.push(Idle {
            env,
            since: Instant::now(),
        });
        drop(idle);
        if let Some(timeout) = self.options.idle_timeout {
            if !self.reaper.swap(true, Ordering::AcqRel) {
                tokio::spawn(reap_idle(Arc::downgrade(self), timeout));
            }
        }
    }
}

/// Tears down environments idle for `timeout`; ends when none is idle (the next environment
/// that goes idle starts it again) or the pool is gone.
async fn reap_idle(pool: Weak<PoolInner>, timeout: Duration) {
    loop {
        let Some(inner) = pool.upgrade() else { return };
        let (expired, next) = {
            let mut idle = lock(&inner.idle);
            let now = Instant::now();
            // Oldest first, so the expired ones are a prefix.
            let n = idle.iter().take_while(|i| i.since + timeout <= now).count();
            let expired: Vec<Idle> = idle.drain(..n).collect();
            let next = idle.first().map(|i| i.since + timeout);
            if next.is_none() {
                // Under the lock `push_idle` pushes with: a push after this starts a new reaper.
                inner.reaper.store(false, Ordering::Release);
            }
            (expired, next)
        };
        for Idle { env, .. } in expired {
            tracing::debug!(function = %inner.ctx.config.name, ?env, "idle timeout: environment torn down");
            drop(env);
        }
        drop(inner);
        match next {
            Some(at) => tokio::time::sleep_until(at).await,
            None => return,
        }
    }
}
