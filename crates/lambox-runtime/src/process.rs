//! [`ProcessLauncher`]: runs a function as a plain child process on the host — **no sandbox**.
//!
//! No namespaces, no read-only root, no `/tmp` of its own, no memory limit, no other user: the
//! function sees and may change the host as the user running lambox. It exists for this crate's
//! tests (real runtimes without root) and as the documented `--no-sandbox` escape hatch.
//!
//! * argv runs as given (argv\[0\] resolved on the host), with exactly the spec's environment
//!   plus `AWS_LAMBDA_RUNTIME_API=127.0.0.1:<port>`, in the spec's working directory;
//! * the Runtime API listener is bound to `127.0.0.1:0`;
//! * the process leads its own process group: freeze and thaw are `SIGSTOP`/`SIGCONT` to the
//!   group, kill is `SIGKILL` to the group;
//! * memory use is not measured and OOM is never reported.
//!
//! Launch errors are worded as Lambda reports them: `fork/exec /path: no such file or
//! directory` (Go's exec error, `Runtime.InvalidEntrypoint`), and RIE's
//! `the working directory doesn't exist: /path` (`Runtime.InvalidWorkingDir`, RIE
//! `rie/simple_bootstrap.go`).

use std::net::{Ipv4Addr, TcpListener};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::process::{kill_process_group, Pid, Signal};

use crate::launch::{EnvControl, LaunchError, LaunchSpec, Launched, Launcher};

/// Starts environments as host processes (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessLauncher;

impl ProcessLauncher {
    /// A launcher.
    pub fn new() -> Self {
        ProcessLauncher
    }
}

/// An OS error as Go prints it: `no such file or directory`.
fn go_error_text(e: &std::io::Error) -> String {
    let text = match e.raw_os_error() {
        Some(code) => {
            let s = std::io::Error::from_raw_os_error(code).to_string();
            match s.rfind(" (os error ") {
                Some(i) => s[..i].to_owned(),
                None => s,
            }
        }
        None => e.to_string(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

impl Launcher for ProcessLauncher {
    fn launch(&self, spec: &LaunchSpec) -> Result<Launched, LaunchError> {
        let workdir = std::path::Path::new(&spec.workdir);
        if !workdir.is_absolute() {
            return Err(LaunchError::InvalidWorkingDir(format!(
                "the working directory '{}' is invalid, it needs to be an absolute path",
                spec.workdir
            )));
        }
        if !workdir.is_dir() {
            return Err(LaunchError::InvalidWorkingDir(format!(
                "the working directory doesn't exist: {}",
                spec.workdir
            )));
        }
        let Some((program, args)) = spec.argv.split_first() else {
            return Err(LaunchError::InvalidEntrypoint(
                "fork/exec : no such file or directory".to_owned(),
            ));
        };
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| LaunchError::Other(format!("cannot bind the runtime API: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| LaunchError::Other(format!("cannot bind the runtime API: {e}")))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            LaunchError::InvalidEntrypoint(format!("fork/exec {program}: {}", go_error_text(&e)))
        })?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw)
            .ok_or_else(|| LaunchError::Other("the function exited at once".to_owned()))?;
        Ok(Launched {
            child,
            listener,
            control: Box::new(ProcessControl {
                pgid,
                killed: AtomicBool::new(false),
            }),
        })
    }
}

/// Signals to the process group.
#[derive(Debug)]
struct ProcessControl {
    pgid: Pid,
    /// Once killed, the group id may be reused: never signal it again.
    killed: AtomicBool,
}

impl ProcessControl {
    fn signal(&self, sig: Signal) -> std::io::Result<()> {
        if self.killed.load(Ordering::Acquire) {
            return Ok(());
        }
        kill_process_group(self.pgid, sig).map_err(std::io::Error::from)
    }
}

impl EnvControl for ProcessControl {
    fn freeze(&self) -> std::io::Result<()> {
        self.signal(Signal::STOP)
    }

    fn thaw(&self) -> std::io::Result<()> {
        self.signal(Signal::CONT)
    }

    fn kill(&self) {
        if !self.killed.swap(true, Ordering::AcqRel) {
            // ESRCH: already gone.
            let _ = kill_process_group(self.pgid, Signal::KILL);
        }
    }

    fn max_memory_bytes(&self) -> Option<u64> {
        None
    }

    fn oom_killed(&self) -> bool {
        false
    }

    fn cleanup(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_like_go() {
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(go_error_text(&e), "no such file or directory");
        let e = std::io::Error::from_raw_os_error(8);
        assert_eq!(go_error_text(&e), "exec format error");
    }

    #[tokio::test]
    async fn launch_errors() {
        let spec = |argv: &[&str], workdir: &str| LaunchSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            workdir: workdir.into(),
            memory_mb: 128,
            ephemeral_storage_mb: 512,
        };
        let l = ProcessLauncher::new();
        match l.launch(&spec(&["/nonexistent/bootstrap"], "/")) {
            Err(LaunchError::InvalidEntrypoint(m)) => {
                assert_eq!(
                    m,
                    "fork/exec /nonexistent/bootstrap: no such file or directory"
                )
            }
            other => panic!("{other:?}"),
        }
        match l.launch(&spec(&["/bin/true"], "/nonexistent")) {
            Err(LaunchError::InvalidWorkingDir(m)) => {
                assert_eq!(m, "the working directory doesn't exist: /nonexistent")
            }
            other => panic!("{other:?}"),
        }
        match l.launch(&spec(&["/bin/true"], "rel")) {
            Err(LaunchError::InvalidWorkingDir(m)) => assert_eq!(
                m,
                "the working directory 'rel' is invalid, it needs to be an absolute path"
            ),
            other => panic!("{other:?}"),
        }
    }
}
