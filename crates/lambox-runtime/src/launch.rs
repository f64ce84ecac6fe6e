//! The seam between lifecycle and isolation: a [`Launcher`] starts one execution environment.

use std::net::TcpListener;

/// What to start. The launcher adds `AWS_LAMBDA_RUNTIME_API` itself, since only it knows the
/// address at which the environment reaches its own Runtime API.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Entrypoint + command, already merged (`argv[0]` is an absolute path inside the image).
    pub argv: Vec<String>,
    /// The complete environment except `AWS_LAMBDA_RUNTIME_API`.
    pub env: Vec<(String, String)>,
    /// Working directory inside the image.
    pub workdir: String,
    /// Memory limit, MB (128–10240).
    pub memory_mb: u32,
    /// Size of the private writable `/tmp`, MB (512–10240).
    pub ephemeral_storage_mb: u32,
}

/// Why an environment could not start. Lambda reports these to the caller as
/// `Runtime.InvalidEntrypoint` / `Runtime.InvalidWorkingDir`.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// argv\[0\] cannot be executed. Worded as Lambda reports it, e.g.
    /// `fork/exec /var/task/bootstrap: no such file or directory`; the caller sees
    /// `Runtime.InvalidEntrypoint` with `RequestId: <id> Error: <this>`.
    #[error("{0}")]
    InvalidEntrypoint(String),
    /// The working directory is unusable, e.g. `the working directory doesn't exist: /x`
    /// (RIE's wording); the caller sees `Runtime.InvalidWorkingDir`.
    #[error("{0}")]
    InvalidWorkingDir(String),
    /// The platform failed (not the function's fault): not retried, the caller gets a 500
    /// `ServiceException`.
    #[error("cannot start the execution environment: {0}")]
    Other(String),
}

/// Control over a started environment (cgroup-backed in the sandbox).
pub trait EnvControl: Send + Sync + std::fmt::Debug {
    /// Stop every process of the environment from running (between invocations).
    fn freeze(&self) -> std::io::Result<()>;
    /// Like `freeze`, but may return before the processes have stopped (a `thaw` meanwhile
    /// cancels the freeze). What the runtime uses between invokes: it never blocks a worker
    /// thread while the kernel stops the function's threads.
    fn freeze_nowait(&self) -> std::io::Result<()> {
        self.freeze()
    }
    /// Let them run again.
    fn thaw(&self) -> std::io::Result<()>;
    /// Kill every process of the environment at once. Idempotent.
    fn kill(&self);
    /// Peak memory use so far, bytes, if measurable.
    fn max_memory_bytes(&self) -> Option<u64>;
    /// Whether the kernel's OOM killer acted in this environment.
    fn oom_killed(&self) -> bool;
    /// Release everything (mounts, cgroups, namespaces) after the environment's processes are
    /// gone. Idempotent.
    fn cleanup(&self);
}

/// A started environment.
#[derive(Debug)]
pub struct Launched {
    /// Exits when the environment's function process is gone; its status is the function's
    /// (code, or the signal that killed it).
    pub child: tokio::process::Child,
    /// The Runtime API listener, already bound where (and only where) this environment can
    /// connect. The caller serves the Runtime API on it.
    pub listener: TcpListener,
    /// The function's stdout and stderr: `child.stdout`/`child.stderr` are piped.
    pub control: Box<dyn EnvControl>,
}

/// Starts environments. `launch` may block for a few milliseconds (call it from
/// `spawn_blocking` or a context where that is fine); it returns once the function process has
/// been exec'd, or with the reason it could not be.
pub trait Launcher: Send + Sync + 'static {
    fn launch(&self, spec: &LaunchSpec) -> Result<Launched, LaunchError>;
}
