//! The function side of Lambda: the Runtime API (2018-06-01) each execution environment talks
//! to, the environment lifecycle (init, invoke, timeout, reset), and invoke semantics (error
//! bodies, log framing) as callers see them.
//!
//! Environments are started by a [`launch::Launcher`]; the sandbox is one, a plain process
//! ([`ProcessLauncher`], for tests and `--no-sandbox`) another.
//!
//! # Wiring (what `lambox run` does)
//!
//! ```no_run
//! use std::sync::Arc;
//! use lambox_runtime::{
//!     invoke_router, AwsCredentials, FunctionConfig, ImageConfig, Pool, PoolOptions,
//!     ProcessLauncher, StdoutLogSink,
//! };
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // 1. The function: the image's run configuration merged with any overrides.
//! let mut config = FunctionConfig::new("hello", ImageConfig {
//!     entrypoint: vec!["/usr/bin/python3".into(), "-m".into(), "awslambdaric".into()],
//!     cmd: vec!["app.handler".into()],
//!     workdir: Some("/var/task".into()),
//!     env: ImageConfig::parse_env(&["PYTHONPATH=/var/task".to_owned()]),
//! });
//! config.timeout_secs = 30;
//! config.credentials = AwsCredentials::from_process_env();
//!
//! // 2. A pool of environments started by a launcher, logging to stdout.
//! let pool = Pool::new(
//!     config,
//!     Arc::new(ProcessLauncher::new()),          // or the sandbox's launcher
//!     Arc::new(StdoutLogSink),
//!     PoolOptions { concurrency: 4, ..PoolOptions::default() },
//! )?;
//!
//! // 3. The invoke API on a socket.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
//! axum::serve(listener, invoke_router(pool.clone())).await?;
//! # Ok(()) }
//! ```
//!
//! Callers in Rust can skip HTTP: [`Pool::invoke`] returns an [`InvokeResponse`] as soon as the
//! runtime has answered, [`Pool::invoke_async`] runs an `Event` invoke in the background.
//!
//! # Map
//!
//! * [`wire`]: header names, paths, limits and every error body, each with its source;
//! * [`config`]: [`FunctionConfig`] and the environment variables Lambda sets;
//! * `runtime_api` (private): the per-environment Runtime API server and RIE's state machine;
//! * `environment` (private): launch, init (with suppressed init), invoke, freeze, reset;
//! * [`pool`]: concurrency, the queue, async invokes;
//! * [`invoke_api`]: the caller-facing `Invoke` operation as an axum router;
//! * [`logs`]: log records, sinks, platform lines and the `Tail` log;
//! * [`process`]: [`ProcessLauncher`], the unsandboxed launcher.

mod clock;
pub mod config;
mod environment;
pub mod invoke;
pub mod invoke_api;
pub mod launch;
pub mod logs;
pub mod pool;
pub mod process;
mod runtime_api;
pub mod wire;

pub use config::{AwsCredentials, ConfigError, FunctionConfig, ImageConfig};
pub use invoke::{
    FunctionError, InvokeError, InvokeReport, InvokeRequest, InvokeResponse, InvokeStatus,
    ReportHandle, ResponseBody, ResponseStream, StreamError,
};
pub use invoke_api::{handle_invoke, invoke_router};
pub use launch::{EnvControl, LaunchError, LaunchSpec, Launched, Launcher};
pub use logs::{LogRecord, LogSink, LogSource, MemoryLogSink, OwnedLogRecord, StdoutLogSink};
pub use pool::{Pool, PoolOptions};
pub use process::ProcessLauncher;
