//! One execution environment and the lifecycle of an invoke in it (reference §2.3):
//!
//! * **Init** runs on the first invoke of a new environment (on-demand): launch, then wait for
//!   the runtime's first `/next`, at most [`INIT_TIMEOUT`](crate::wire::INIT_TIMEOUT) (10 s).
//! * **Suppressed init**: if that init fails (launch error, `/init/error`, the runtime exits,
//!   or the 10 s pass), Lambda logs `INIT_REPORT … Phase: init`, resets the environment and
//!   retries init *inside the invoke*, bounded by the invoke's own timeout. If the retry fails
//!   too, the caller gets that failure (`INIT_REPORT … Phase: invoke`, then `START`, `END`,
//!   `REPORT … Status: error|timeout`).
//! * **Invoke**: `START`, the event goes to `/next`, the response goes to the caller as soon as
//!   the runtime posts it; the invoke ends when the runtime calls `/next` again (`END`,
//!   `REPORT`), and the environment is frozen (after [`FREEZE_DELAY`] idle) until the next invoke thaws it. The deadline is
//!   `START + timeout`.
//! * **Reset**: on timeout, runtime exit or out-of-memory the environment is killed; the caller
//!   gets the platform's error and the next invoke cold-starts a new environment.

use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::process::Child;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clock;
use crate::config::FunctionConfig;
use crate::invoke::{
    FunctionError, InvokeError, InvokeReport, InvokeRequest, InvokeResponse, InvokeStatus,
    ReportHandle, ResponseBody, StreamAbort, StreamError,
};
use crate::launch::{EnvControl, LaunchError, Launched, Launcher};
use crate::logs::{self, Emitter, EnvLog, InvokeLog, LogSource, Pipe, PlatformStatus, Report};
use crate::runtime_api::{self, Controller, InvokeEvent, RuntimeEvent};
use crate::wire::{self, APPLICATION_JSON};

/// How long an environment stays thawed after an invoke before it is frozen. An invoke that
/// arrives sooner finds it running and pays no freeze and thaw (on this 2-core VM they were a
/// third of lambox's CPU per warm invoke). Lambda freezes right after the response, so a
/// function's background work may run up to this much longer here (see ARCHITECTURE.md).
pub(crate) const FREEZE_DELAY: Duration = Duration::from_millis(5);

/// Whether an environment is frozen, or about to be; shared with the delayed freeze task.
#[derive(Debug, Default)]
struct FreezeState {
    /// A freeze is scheduled (the task that sees this still set does it).
    pending: bool,
    /// Counts scheduled freezes, so that a stale task never freezes a later idle period.
    generation: u64,
    frozen: bool,
}

/// What every environment of one function shares.
pub(crate) struct FunctionContext {
    pub config: FunctionConfig,
    pub launcher: Arc<dyn Launcher>,
    pub emitter: Emitter,
    pub init_timeout: Duration,
    pub function_arn: String,
    next_env_id: AtomicU64,
}

impl std::fmt::Debug for FunctionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionContext")
            .field("function", &self.config.name)
            .field("init_timeout", &self.init_timeout)
            .finish_non_exhaustive()
    }
}

impl FunctionContext {
    pub(crate) fn new(
        config: FunctionConfig,
        launcher: Arc<dyn Launcher>,
        emitter: Emitter,
        init_timeout: Duration,
    ) -> Self {
        FunctionContext {
            function_arn: config.function_arn(),
            config,
            launcher,
            emitter,
            init_timeout,
            next_env_id: AtomicU64::new(1),
        }
    }
}

/// Why an environment failed an invoke (or its init).
#[derive(Debug)]
enum Failure {
    /// The environment could not be started.
    Launch(LaunchError),
    /// The runtime reported `/init/error`.
    InitError { error_type: String, body: Bytes },
    /// The runtime's process ended.
    Exit {
        message: String,
        error_type: &'static str,
    },
    /// The deadline passed.
    Timeout,
}

impl Failure {
    fn error_type(&self) -> String {
        match self {
            Failure::Launch(LaunchError::InvalidWorkingDir(_)) => {
                "Runtime.InvalidWorkingDir".to_owned()
            }
            Failure::Launch(_) => "Runtime.InvalidEntrypoint".to_owned(),
            Failure::InitError { error_type, .. } => error_type.clone(),
            Failure::Exit { error_type, .. } => (*error_type).to_owned(),
            Failure::Timeout => "Sandbox.Timedout".to_owned(),
        }
    }

    fn status(&self) -> PlatformStatus {
        match self {
            Failure::Timeout => PlatformStatus::Timeout,
            other => PlatformStatus::Error(other.error_type()),
        }
    }

    /// The platform's `Error: …` message, where it has one.
    fn message(&self, timeout: Duration) -> Option<String> {
        match self {
            Failure::Launch(e) => Some(e.to_string()),
            Failure::Exit { message, .. } => Some(message.clone()),
            Failure::Timeout => Some(format!(
                "Task timed out after {:.2} seconds",
                timeout.as_secs_f64()
            )),
            Failure::InitError { .. } => None,
        }
    }

    /// The caller's error document.
    fn caller_body(&self, request_id: &str, timeout: Duration) -> Bytes {
        match (self, self.message(timeout)) {
            (Failure::InitError { body, .. }, _) => body.clone(),
            (_, Some(message)) => Bytes::from(wire::platform_error_body(
                &self.error_type(),
                &format!("RequestId: {request_id} Error: {message}"),
            )),
            (_, None) => Bytes::from(wire::platform_error_body(&self.error_type(), "")),
        }
    }

    /// The platform's log line for this failure inside an invoke.
    fn log_line(&self, request_id: &str, elapsed: Duration) -> Option<String> {
        match self {
            Failure::Timeout => Some(logs::timeout_line(SystemTime::now(), request_id, elapsed)),
            Failure::InitError { .. } => None,
            other => other
                .message(Duration::ZERO)
                .map(|m| logs::error_line(request_id, &m, &other.error_type())),
        }
    }
}

/// Go's names of Linux signals (`syscall.Signal.String()`), which Lambda's error messages use
/// (`signal: killed`).
fn go_signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "hangup",
        2 => "interrupt",
        3 => "quit",
        4 => "illegal instruction",
        5 => "trace/breakpoint trap",
        6 => "aborted",
        7 => "bus error",
        8 => "floating point exception",
        9 => "killed",
        10 => "user defined signal 1",
        11 => "segmentation fault",
        12 => "user defined signal 2",
        13 => "broken pipe",
        14 => "alarm clock",
        15 => "terminated",
        16 => "stack fault",
        17 => "child exited",
        18 => "continued",
        19 => "stopped (signal)",
        20 => "stopped",
        21 => "stopped (tty input)",
        22 => "stopped (tty output)",
        23 => "urgent I/O condition",
        24 => "CPU time limit exceeded",
        25 => "file size limit exceeded",
        26 => "virtual timer expired",
        27 => "profiling timer expired",
        28 => "window changed",
        29 => "I/O possible",
        30 => "power failure",
        31 => "bad system call",
        n => return format!("signal {n}"),
    };
    name.to_owned()
}

/// RIE's wording for a runtime that exited (`rapid/handlers.go`, `supervisor/model`).
fn exit_message(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(0), _) => "Runtime exited without providing a reason".to_owned(),
            (Some(code), _) => format!("Runtime exited with error: exit status {code}"),
            (None, Some(sig)) => {
                format!("Runtime exited with error: signal: {}", go_signal_name(sig))
            }
            (None, None) => "Runtime exited without providing a reason".to_owned(),
        },
        Err(e) => format!("Runtime exited with error: {e}"),
    }
}

/// A made-up X-Ray header: `Root=1-<epoch hex>-<24 hex>;Parent=<16 hex>;Sampled=0`.
fn new_trace_id() -> String {
    let secs = clock::epoch_millis(SystemTime::now()) / 1000;
    let root = uuid::Uuid::new_v4().simple().to_string();
    let parent = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "Root=1-{secs:08x}-{};Parent={};Sampled=0",
        &root[..24],
        &parent[..16]
    )
}

/// Delivers an invoke's result and, later, its report.
pub(crate) struct Responder {
    reply: Option<oneshot::Sender<Result<InvokeResponse, InvokeError>>>,
    report_tx: Option<oneshot::Sender<InvokeReport>>,
    report_rx: Option<oneshot::Receiver<InvokeReport>>,
}

impl Responder {
    pub(crate) fn new(reply: oneshot::Sender<Result<InvokeResponse, InvokeError>>) -> Self {
        let (tx, rx) = oneshot::channel();
        Responder {
            reply: Some(reply),
            report_tx: Some(tx),
            report_rx: Some(rx),
        }
    }

    fn respond(
        &mut self,
        request_id: &str,
        content_type: String,
        function_error: Option<FunctionError>,
        body: ResponseBody,
    ) {
        if let (Some(reply), Some(report)) = (self.reply.take(), self.report_rx.take()) {
            let _ = reply.send(Ok(InvokeResponse {
                request_id: request_id.to_owned(),
                content_type,
                function_error,
                body,
                report: ReportHandle(report),
            }));
        }
    }

    fn respond_error(&mut self, request_id: &str, error_type: String, body: Bytes) {
        self.respond(
            request_id,
            APPLICATION_JSON.to_owned(),
            Some(FunctionError::new(error_type)),
            ResponseBody::Buffered(body),
        );
    }

    pub(crate) fn fail(&mut self, error: InvokeError) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Err(error));
        }
    }

    fn report(&mut self, report: InvokeReport) {
        if let Some(tx) = self.report_tx.take() {
            let _ = tx.send(report);
        }
    }
}

/// A started execution environment.
pub(crate) struct Environment {
    id: u64,
    child: Option<Child>,
    control: Arc<dyn EnvControl>,
    api: Controller,
    server: JoinHandle<()>,
    log: Arc<EnvLog>,
    pipes: Vec<Arc<Pipe>>,
    readers: Vec<JoinHandle<()>>,
    freeze_state: Arc<std::sync::Mutex<FreezeState>>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("id", &self.id)
            .field("freeze", &*lock_freeze(&self.freeze_state))
            .finish_non_exhaustive()
    }
}

fn lock_freeze(m: &std::sync::Mutex<FreezeState>) -> std::sync::MutexGuard<'_, FreezeState> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for Environment {
    fn drop(&mut self) {
        lock_freeze(&self.freeze_state).pending = false;
        self.control.kill();
        self.server.abort();
        for r in &self.readers {
            r.abort();
        }
        let control = self.control.clone();
        match (self.child.take(), tokio::runtime::Handle::try_current()) {
            (Some(mut child), Ok(handle)) => {
                // Release the environment once its processes are gone.
                handle.spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                    control.cleanup();
                });
            }
            _ => control.cleanup(),
        }
    }
}

async fn wait_child(child: &mut Option<Child>) -> std::io::Result<ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

impl Environment {
    /// Starts one environment (no init yet).
    async fn launch(ctx: &FunctionContext) -> Result<Environment, LaunchError> {
        let id = ctx.next_env_id.fetch_add(1, Ordering::Relaxed);
        let spec = ctx.config.launch_spec();
        let launcher = ctx.launcher.clone();
        let Launched {
            mut child,
            listener,
            control,
        } = tokio::task::spawn_blocking(move || launcher.launch(&spec))
            .await
            .map_err(|e| LaunchError::Other(format!("the launcher failed: {e}")))??;
        let control: Arc<dyn EnvControl> = Arc::from(control);
        let listener = match listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
        {
            Ok(l) => l,
            Err(e) => {
                control.kill();
                let _ = child.wait().await;
                control.cleanup();
                return Err(LaunchError::Other(format!(
                    "cannot serve the runtime API: {e}"
                )));
            }
        };
        let (router, api) = runtime_api::runtime_api();
        let server = runtime_api::serve(listener, router);
        let log = Arc::new(EnvLog::new(ctx.emitter.clone(), id));
        let mut env = Environment {
            id,
            child: None,
            control,
            api,
            server,
            log,
            pipes: Vec::new(),
            readers: Vec::new(),
            freeze_state: Arc::default(),
        };
        let outputs = [
            (
                child.stdout.take().map(|p| p.into_owned_fd()),
                LogSource::Stdout,
            ),
            (
                child.stderr.take().map(|p| p.into_owned_fd()),
                LogSource::Stderr,
            ),
        ];
        env.child = Some(child);
        for (fd, source) in outputs {
            let started = match fd {
                Some(Ok(fd)) => Pipe::start(fd, source, env.log.clone()),
                Some(Err(e)) => Err(e),
                None => continue,
            };
            match started {
                Ok((pipe, task)) => {
                    env.pipes.push(pipe);
                    env.readers.push(task);
                }
                Err(e) => {
                    return Err(LaunchError::Other(format!(
                        "cannot read the function's output: {e}"
                    )))
                }
            }
        }
        tracing::debug!(function = %ctx.config.name, environment = id, "environment launched");
        Ok(env)
    }

    /// Waits for the runtime's first `/next`.
    async fn wait_init(&mut self, deadline: Instant) -> Result<(), Failure> {
        loop {
            tokio::select! {
                biased;
                ev = self.api.event() => match ev {
                    Some(RuntimeEvent::Ready) => return Ok(()),
                    Some(RuntimeEvent::InitError { error_type, body }) => {
                        return Err(Failure::InitError { error_type, body })
                    }
                    Some(_) => {}
                    None => return Err(Failure::Launch(LaunchError::Other("the runtime API stopped".to_owned()))),
                },
                status = wait_child(&mut self.child) => {
                    return Err(exit_failure(&status, self.control.as_ref()))
                }
                () = tokio::time::sleep_until(deadline) => return Err(Failure::Timeout),
            }
        }
    }

    /// Kills every process, reaps the runtime and emits what it wrote.
    async fn kill(&mut self) {
        self.control.kill();
        if let Some(mut child) = self.child.take() {
            if tokio::time::timeout(Duration::from_secs(2), child.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    environment = self.id,
                    "runtime still running 2 s after SIGKILL"
                );
            }
        }
        self.drain_logs();
    }

    fn drain_logs(&self) {
        for p in &self.pipes {
            p.drain();
        }
    }

    /// Whether the runtime process is still there (an idle environment may have died).
    pub(crate) fn is_alive(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) | None => false,
        }
    }

    fn max_memory_used_mb(&self, configured: u32) -> u64 {
        self.control
            .max_memory_bytes()
            .map(|b| b.div_ceil(1024 * 1024))
            .unwrap_or(u64::from(configured))
    }

    /// Cancels a scheduled freeze, or thaws.
    fn thaw(&mut self) -> std::io::Result<()> {
        let mut st = lock_freeze(&self.freeze_state);
        st.pending = false;
        if st.frozen {
            self.control.thaw()?;
            st.frozen = false;
        }
        Ok(())
    }

    /// Freezes the environment [`FREEZE_DELAY`] from now, unless [`Environment::thaw`] comes
    /// first. Needs a tokio runtime (it is called at the end of an invoke); without one it
    /// freezes at once.
    fn freeze(&mut self) {
        let generation = {
            let mut st = lock_freeze(&self.freeze_state);
            st.generation += 1;
            st.pending = true;
            st.generation
        };
        let state = self.freeze_state.clone();
        let control = self.control.clone();
        let id = self.id;
        let freeze_now = move || {
            let mut st = lock_freeze(&state);
            if !st.pending || st.generation != generation {
                return;
            }
            st.pending = false;
            // One write: the kernel stops the threads in the background (under load that takes
            // milliseconds, which must not block a runtime worker); a thaw cancels it.
            match control.freeze_nowait() {
                Ok(()) => st.frozen = true,
                Err(e) => {
                    tracing::warn!(environment = id, error = %e, "cannot freeze the environment")
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    tokio::time::sleep(FREEZE_DELAY).await;
                    freeze_now();
                });
            }
            Err(_) => freeze_now(),
        }
    }
}

fn exit_failure(status: &std::io::Result<ExitStatus>, control: &dyn EnvControl) -> Failure {
    Failure::Exit {
        message: exit_message(status),
        error_type: if control.oom_killed() {
            "Runtime.OutOfMemory"
        } else {
            "Runtime.ExitError"
        },
    }
}

/// An init that failed: why, in which environment, after how long.
struct InitFailed {
    failure: Failure,
    environment: Option<u64>,
    elapsed: Duration,
}

/// Launches an environment and runs its init until `deadline`.
async fn start_environment(
    ctx: &FunctionContext,
    deadline: Instant,
) -> Result<Environment, InitFailed> {
    let t0 = Instant::now();
    let mut env = match Environment::launch(ctx).await {
        Ok(env) => env,
        Err(e) => {
            return Err(InitFailed {
                failure: Failure::Launch(e),
                environment: None,
                elapsed: t0.elapsed(),
            })
        }
    };
    match env.wait_init(deadline).await {
        Ok(()) => Ok(env),
        Err(failure) => {
            let elapsed = t0.elapsed();
            env.kill().await;
            Err(InitFailed {
                failure,
                environment: Some(env.id),
                elapsed,
            })
        }
    }
}

fn billed_ms(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Runs one invoke: in `warm` if given (and alive), else in a new environment. Returns the
/// environment if it can take another invoke.
pub(crate) async fn run_invoke(
    ctx: &FunctionContext,
    warm: Option<Environment>,
    request_id: String,
    request: InvokeRequest,
    mut responder: Responder,
) -> Option<Environment> {
    let invoke_log = Arc::new(InvokeLog::new(ctx.emitter.clone(), &request_id));
    let timeout = ctx.config.timeout();
    let warm = warm.and_then(|mut env| match env.thaw() {
        Ok(()) => Some(env),
        Err(e) => {
            tracing::warn!(environment = env.id, error = %e, "cannot thaw the environment; starting a new one");
            None
        }
    });
    let (env, start, init_duration) = match warm {
        Some(env) => (env, Instant::now(), None),
        None => {
            let t0 = Instant::now();
            match start_environment(ctx, t0 + ctx.init_timeout).await {
                Ok(env) => (env, Instant::now(), Some(t0.elapsed())),
                Err(first) => {
                    if let Failure::Launch(LaunchError::Other(msg)) = &first.failure {
                        responder.fail(InvokeError::Sandbox(msg.clone()));
                        return None;
                    }
                    ctx.emitter.write(
                        first.environment,
                        None,
                        LogSource::Platform,
                        &logs::init_report_line(first.elapsed, "init", &first.failure.status()),
                    );
                    // Suppressed init: retry inside the invoke, bounded by its timeout.
                    let start = Instant::now();
                    match start_environment(ctx, start + timeout).await {
                        Ok(env) => (env, start, None),
                        Err(second) => {
                            if let Failure::Launch(LaunchError::Other(msg)) = &second.failure {
                                responder.fail(InvokeError::Sandbox(msg.clone()));
                                return None;
                            }
                            fail_without_environment(
                                ctx,
                                &invoke_log,
                                &request_id,
                                start,
                                second,
                                responder,
                            );
                            return None;
                        }
                    }
                }
            }
        }
    };
    env.invoke(
        ctx,
        invoke_log,
        &request_id,
        request,
        start,
        init_duration,
        responder,
    )
    .await
}

/// The suppressed init failed too: the invoke fails with it.
fn fail_without_environment(
    ctx: &FunctionContext,
    log: &InvokeLog,
    request_id: &str,
    start: Instant,
    failed: InitFailed,
    mut responder: Responder,
) {
    let timeout = ctx.config.timeout();
    let status = failed.failure.status();
    ctx.emitter.write(
        failed.environment,
        None,
        LogSource::Platform,
        &logs::init_report_line(failed.elapsed, "invoke", &status),
    );
    log.set_environment(failed.environment);
    log.platform(&logs::start_line(request_id, &ctx.config.version));
    let duration = start.elapsed();
    if let Some(line) = failed.failure.log_line(request_id, duration) {
        log.platform(&line);
    }
    responder.respond_error(
        request_id,
        failed.failure.error_type(),
        failed.failure.caller_body(request_id, timeout),
    );
    log.platform(&logs::end_line(request_id));
    let report = Report {
        request_id,
        duration,
        billed_ms: billed_ms(duration),
        memory_mb: ctx.config.memory_mb,
        max_memory_used_mb: u64::from(ctx.config.memory_mb),
        init_duration: None,
        status: status.clone(),
    };
    log.platform(&logs::report_line(&report));
    responder.report(invoke_report(&report, log));
}

fn invoke_report(r: &Report<'_>, log: &InvokeLog) -> InvokeReport {
    InvokeReport {
        request_id: r.request_id.to_owned(),
        duration: r.duration,
        billed_duration_ms: r.billed_ms,
        init_duration: r.init_duration,
        max_memory_used_mb: r.max_memory_used_mb,
        status: match &r.status {
            PlatformStatus::None => InvokeStatus::Completed,
            PlatformStatus::Timeout => InvokeStatus::Timeout,
            PlatformStatus::Error(t) => InvokeStatus::Error(t.clone()),
        },
        log_tail: log.tail(),
    }
}

impl Environment {
    #[expect(
        clippy::too_many_arguments,
        reason = "the invoke's whole context, passed once"
    )]
    async fn invoke(
        mut self,
        ctx: &FunctionContext,
        log: Arc<InvokeLog>,
        request_id: &str,
        request: InvokeRequest,
        start: Instant,
        init_duration: Option<Duration>,
        mut responder: Responder,
    ) -> Option<Environment> {
        let timeout = ctx.config.timeout();
        let deadline = start + timeout;
        let deadline_wall = SystemTime::now() + deadline.saturating_duration_since(Instant::now());
        self.log.attach(Some(log.clone()));
        log.platform(&logs::start_line(request_id, &ctx.config.version));
        self.api.post(InvokeEvent {
            request_id: request_id.to_owned(),
            deadline_ms: clock::epoch_millis(deadline_wall),
            function_arn: ctx.function_arn.clone(),
            trace_id: request.trace_id.unwrap_or_else(new_trace_id),
            client_context: request.client_context,
            cognito_identity: request.cognito_identity,
            payload: request.payload,
        });
        let mut responded = false;
        let mut abort: Option<StreamAbort> = None;
        let outcome = loop {
            tokio::select! {
                biased;
                ev = self.api.event() => match ev {
                    Some(RuntimeEvent::Response { request_id: rid, response }) if rid == request_id => {
                        responded = true;
                        abort = response.abort;
                        responder.respond(request_id, response.content_type, response.function_error, response.body);
                    }
                    Some(RuntimeEvent::Next) if responded => break Ok(()),
                    Some(_) => {}
                    None => break Err(Failure::Launch(LaunchError::Other("the runtime API stopped".to_owned()))),
                },
                status = wait_child(&mut self.child) => break Err(exit_failure(&status, self.control.as_ref())),
                () = tokio::time::sleep_until(deadline) => break Err(Failure::Timeout),
            }
        };
        let duration = start.elapsed();
        let max_memory = self.max_memory_used_mb(ctx.config.memory_mb);
        let status = match &outcome {
            Ok(()) => PlatformStatus::None,
            Err(failure) => {
                // A stream in progress learns the platform's reason before the kill breaks
                // the runtime's upload.
                if let Some(abort) = abort.take() {
                    let _ = abort.send(StreamError {
                        error_type: failure.error_type(),
                        body: failure.caller_body(request_id, timeout),
                    });
                }
                self.kill().await;
                if !responded {
                    responder.respond_error(
                        request_id,
                        failure.error_type(),
                        failure.caller_body(request_id, timeout),
                    );
                }
                if let Some(line) = failure.log_line(request_id, duration) {
                    log.platform(&line);
                }
                failure.status()
            }
        };
        self.drain_logs();
        self.log.attach(None);
        log.platform(&logs::end_line(request_id));
        let report = Report {
            request_id,
            duration,
            billed_ms: billed_ms(duration + init_duration.unwrap_or_default()),
            memory_mb: ctx.config.memory_mb,
            max_memory_used_mb: max_memory,
            init_duration,
            status,
        };
        log.platform(&logs::report_line(&report));
        responder.report(invoke_report(&report, &log));
        match outcome {
            Ok(()) => {
                self.freeze();
                Some(self)
            }
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_messages_match_rie() {
        let code = |c: i32| Ok(ExitStatus::from_raw(c << 8));
        let sig = |s: i32| Ok(ExitStatus::from_raw(s));
        assert_eq!(
            exit_message(&code(3)),
            "Runtime exited with error: exit status 3"
        );
        assert_eq!(
            exit_message(&code(0)),
            "Runtime exited without providing a reason"
        );
        assert_eq!(
            exit_message(&sig(9)),
            "Runtime exited with error: signal: killed"
        );
        assert_eq!(
            exit_message(&sig(11)),
            "Runtime exited with error: signal: segmentation fault"
        );
        assert_eq!(
            exit_message(&sig(64)),
            "Runtime exited with error: signal: signal 64"
        );
    }

    #[test]
    fn failure_bodies() {
        let t = Duration::from_secs(1);
        assert_eq!(
            Failure::Timeout.caller_body("id", t),
            "{\"errorType\":\"Sandbox.Timedout\",\"errorMessage\":\"RequestId: id Error: Task timed out after 1.00 seconds\"}"
        );
        let exit = Failure::Exit {
            message: "Runtime exited with error: exit status 42".into(),
            error_type: "Runtime.ExitError",
        };
        assert_eq!(
            exit.caller_body("id", t),
            "{\"errorType\":\"Runtime.ExitError\",\"errorMessage\":\"RequestId: id Error: Runtime exited with error: exit status 42\"}"
        );
        assert_eq!(
            exit.log_line("id", t).as_deref(),
            Some(
                "RequestId: id Error: Runtime exited with error: exit status 42\nRuntime.ExitError"
            )
        );
        let launch = Failure::Launch(LaunchError::InvalidEntrypoint(
            "fork/exec /var/task/bootstrap: no such file or directory".into(),
        ));
        assert_eq!(
            launch.caller_body("55fac1c7", t),
            "{\"errorType\":\"Runtime.InvalidEntrypoint\",\"errorMessage\":\"RequestId: 55fac1c7 Error: fork/exec /var/task/bootstrap: no such file or directory\"}"
        );
        assert_eq!(billed_ms(Duration::from_micros(10_050)), 11);
        assert_eq!(billed_ms(Duration::ZERO), 1);
    }

    #[test]
    fn trace_ids_look_like_xray() {
        let t = new_trace_id();
        assert!(t.starts_with("Root=1-"), "{t}");
        let parts: Vec<&str> = t.split(';').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].len(), "Root=1-".len() + 8 + 1 + 24);
        assert_eq!(parts[1].len(), "Parent=".len() + 16);
        assert_eq!(parts[2], "Sampled=0");
    }
}
