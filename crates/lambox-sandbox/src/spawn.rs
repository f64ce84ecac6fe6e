//! lambox's side of starting an environment: cgroups, the helper's command, the handshake.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rustix::net::{
    self as rnet, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

use crate::proto::{self, ErrorKind, InitSpec, Message};
use crate::{cgroup, mounts, net, Inner, Sandbox, SandboxConfig, SandboxError, Spec};

/// How long `spawn` waits for the helper to report the exec.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

fn setup_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Setup(format!("{what}: {e}"))
}

/// Reject what the helper could not run, before any process exists.
pub(crate) fn validate(spec: &Spec) -> Result<(), SandboxError> {
    let Some(entry) = spec.argv.first() else {
        return Err(SandboxError::InvalidEntrypoint(
            "no entrypoint or command given".into(),
        ));
    };
    if !entry.starts_with('/') {
        return Err(SandboxError::InvalidEntrypoint(format!(
            "fork/exec {entry}: entrypoint is not an absolute path"
        )));
    }
    let nul = |s: &str| s.contains('\0');
    if spec.argv.iter().any(|a| nul(a))
        || spec.env.iter().any(|(k, v)| nul(k) || nul(v))
        || nul(&spec.workdir)
        || nul(&spec.hostname)
    {
        return Err(SandboxError::Setup(
            "an argument, environment variable, working directory or host name contains a NUL byte"
                .into(),
        ));
    }
    if let Some((k, _)) = spec
        .env
        .iter()
        .find(|(k, _)| k.is_empty() || k.contains('='))
    {
        return Err(SandboxError::Setup(format!(
            "invalid environment variable name {k:?}"
        )));
    }
    if spec.hostname.len() > 64 {
        return Err(SandboxError::Setup(format!(
            "host name longer than 64 bytes: {:?}",
            spec.hostname
        )));
    }
    if spec.layers.is_empty() {
        return Err(SandboxError::Setup("the image has no layers".into()));
    }
    if spec.memory_mb == 0 || spec.ephemeral_storage_mb == 0 {
        return Err(SandboxError::Setup(
            "memory and ephemeral storage must be at least 1 MB".into(),
        ));
    }
    Ok(())
}

/// The state directory's two fixed entries: the skeleton layer and the shared mount point.
/// Created once per state directory and process.
fn state_dirs(state_dir: &Path) -> Result<(PathBuf, PathBuf), SandboxError> {
    static READY: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let skeleton = state_dir.join("skeleton");
    let root = state_dir.join("root");
    let mut ready = READY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !ready.iter().any(|p| p == state_dir) {
        // The skeleton's root is the top layer's root, so its mode is the mode of "/" in every
        // environment: set it (and its children's) explicitly, whatever lambox's umask is.
        use std::os::unix::fs::PermissionsExt;
        let mode = || std::fs::Permissions::from_mode(0o755);
        for d in ["proc", "dev", "tmp"] {
            let p = skeleton.join(d);
            std::fs::create_dir_all(&p)
                .and_then(|()| std::fs::set_permissions(&p, mode()))
                .map_err(|e| setup_err(format!("create {}", p.display()), e))?;
        }
        std::fs::set_permissions(&skeleton, mode())
            .map_err(|e| setup_err(format!("chmod {}", skeleton.display()), e))?;
        std::fs::create_dir_all(&root)
            .map_err(|e| setup_err(format!("create {}", root.display()), e))?;
        ready.push(state_dir.to_path_buf());
    }
    Ok((skeleton, root))
}

pub(crate) fn new_cgroups(
    layout: &cgroup::Layout,
    memory_mb: Option<u32>,
) -> Result<(String, cgroup::EnvCgroups), SandboxError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    for _ in 0..1000 {
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        match cgroup::EnvCgroups::create(layout, &id, memory_mb) {
            Ok(Some(cg)) => return Ok((id, cg)),
            Ok(None) => continue, // a stale directory from an earlier process with our pid
            Err(e) => return Err(setup_err("cgroups", e)),
        }
    }
    Err(SandboxError::Setup("no free environment id".into()))
}

/// A helper that has been started (and, if `joined`, has joined its cgroups already): what
/// [`finish`] needs to hand it the spec.
pub(crate) struct Started<C> {
    pub child: C,
    /// lambox's end of the control socket.
    pub ours: OwnedFd,
    pub id: String,
    pub cgroups: cgroup::EnvCgroups,
    /// The helper is in its cgroups already (a pre-spawned one, see `crate::helpers`).
    pub joined: bool,
}

/// The control socket pair and the helper's command (standard input = the helper's end).
pub(crate) fn helper_command(config: &SandboxConfig) -> Result<(OwnedFd, Command), SandboxError> {
    let (ours, theirs) = rnet::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| setup_err("socketpair", io::Error::from(e)))?;
    rnet::sockopt::set_socket_timeout(&ours, rnet::sockopt::Timeout::Recv, Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| setup_err("SO_RCVTIMEO", io::Error::from(e)))?;
    let mut cmd = Command::new(&config.init_exe);
    cmd.arg(crate::INIT_ARG)
        .env_clear()
        .stdin(Stdio::from(theirs));
    Ok((ours, cmd))
}

pub(crate) fn start_err(config: &SandboxConfig, e: io::Error) -> SandboxError {
    setup_err(
        format!("start the sandbox helper {}", config.init_exe.display()),
        e,
    )
}

pub(crate) fn spawn<C>(
    config: &SandboxConfig,
    spec: &Spec,
    spawner: impl FnOnce(Command) -> io::Result<C>,
    on_fail: impl FnOnce(C),
) -> Result<(Sandbox, C, TcpListener), SandboxError> {
    validate(spec)?;
    let layout = cgroup::layout().map_err(SandboxError::Setup)?;
    state_dirs(&config.state_dir)?;

    // Start the helper first: its exec overlaps with our cgroup work below (it needs the
    // cgroups only once it has read the spec).
    let (ours, cmd) = helper_command(config)?;
    // `spawner` consumes the command, so its copy of `theirs` is closed when it returns.
    let child = spawner(cmd).map_err(|e| start_err(config, e))?;

    let (id, cgroups) = match new_cgroups(layout, Some(spec.memory_mb)) {
        Ok(v) => v,
        Err(e) => {
            // The helper reads end-of-file instead of a spec and exits.
            drop(ours);
            on_fail(child);
            return Err(e);
        }
    };
    let started = Started {
        child,
        ours,
        id,
        cgroups,
        joined: false,
    };
    finish(config, spec, started, on_fail)
}

/// Send the spec to a started helper and wait for the function's exec.
pub(crate) fn finish<C>(
    config: &SandboxConfig,
    spec: &Spec,
    started: Started<C>,
    on_fail: impl FnOnce(C),
) -> Result<(Sandbox, C, TcpListener), SandboxError> {
    let Started {
        child,
        ours,
        id,
        cgroups,
        joined,
    } = started;
    let (skeleton, root) = match state_dirs(&config.state_dir) {
        Ok(v) => v,
        Err(e) => {
            drop(ours);
            on_fail(child);
            return Err(e);
        }
    };
    // A network namespace made ahead of time (lo up, listener bound), if one is ready.
    let prepared = net::take(spec.runtime_api_port, config.network.plan());

    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !spec.env.iter().any(|(k, _)| k == "AWS_LAMBDA_RUNTIME_API") {
        env.push(format!(
            "AWS_LAMBDA_RUNTIME_API=127.0.0.1:{}",
            spec.runtime_api_port
        ));
    }
    let mut lowers = Vec::with_capacity(spec.layers.len() + 1);
    lowers.push(skeleton);
    // With NAT: a layer holding only /etc/resolv.conf, over the image's.
    lowers.extend(config.network.resolv_layer().map(Path::to_path_buf));
    lowers.extend(spec.layers.iter().rev().cloned());
    let init = InitSpec {
        cgroup_procs: if joined {
            Vec::new()
        } else {
            cgroups.procs_files()
        },
        root,
        lowers,
        legacy_overlay: config.legacy_overlay,
        tmp_mb: spec.ephemeral_storage_mb,
        shm_mb: mounts::SHM_MB,
        hostname: spec.hostname.clone(),
        netns_passed: prepared.is_some(),
        nat: config.network.plan().copied(),
        port: spec.runtime_api_port,
        argv: spec.argv.clone(),
        env,
        workdir: if spec.workdir.is_empty() {
            "/".into()
        } else {
            spec.workdir.clone()
        },
        uid: crate::FUNCTION_UID,
        gid: crate::FUNCTION_GID,
        nofile: crate::FUNCTION_NOFILE,
    };
    let payload = serde_json::to_vec(&init);

    let sandbox = Sandbox {
        id,
        pid1: None,
        pid1_pid: 0,
        cgroup_dirs: cgroups.dirs.clone(),
        memory_mb: spec.memory_mb,
        inner: Mutex::new(Inner {
            cgroups,
            done: None,
        }),
    };
    // From here on, dropping `sandbox` kills whatever was started and removes the cgroups.

    let mut pid1 = None;
    let outcome = match payload {
        Ok(payload) => handshake(
            &ours,
            &payload,
            prepared.as_ref().map(|p| &p.netns),
            &mut pid1,
        ),
        Err(e) => Err(setup_err("encode the spec", e)),
    };
    let mut sandbox = sandbox;
    let mut helper_pid = None;
    if let Some((pidfd, pid, helper)) = pid1 {
        sandbox.pid1 = Some(pidfd);
        sandbox.pid1_pid = pid;
        helper_pid = Some(helper);
    }
    // The function is running: now cap its CPU (see EnvCgroups::set_cpu_quota).
    let outcome = outcome.and_then(|from_helper| {
        let listener = match (prepared, from_helper) {
            (Some(p), _) => p.listener,
            (None, Some(l)) => l,
            (None, None) => {
                return Err(SandboxError::Setup(
                    "the sandbox helper sent no listener".into(),
                ))
            }
        };
        let quota = sandbox.lock().cgroups.set_cpu_quota(spec.memory_mb);
        quota
            .map(|()| listener)
            .map_err(|e| setup_err("cgroups", e))
    });
    match outcome {
        Ok(listener) => Ok((sandbox, child, TcpListener::from(listener))),
        Err(e) => {
            drop(ours);
            sandbox.kill();
            // Let the helper see PID 1 go and exit by itself before the child is handed to
            // `on_fail` (which may kill it, e.g. tokio's kill_on_drop): killed first, it would
            // leave PID 1 to be reaped by the host's init.
            if let Some(pid) = helper_pid {
                wait_for_exit(pid, Duration::from_secs(2));
            }
            on_fail(child);
            drop(sandbox);
            Err(e)
        }
    }
}

/// Wait (at most `timeout`) until our child `pid` has exited. It is not reaped (the caller's
/// `Child` does that), so its pid cannot have been reused.
fn wait_for_exit(pid: u32, timeout: Duration) {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return;
    };
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        return;
    };
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let timeout = rustix::event::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let _ = rustix::event::poll(&mut fds, Some(&timeout));
}

/// Send the spec; collect `READY` (the listener; PID 1's pidfd and pid, and the helper's pid,
/// go to `pid1` even if an error follows, so that the caller can kill and wait) or the helper's error; wait for end-of-file,
/// which comes with the function's exec.
fn handshake(
    ours: &OwnedFd,
    payload: &[u8],
    netns: Option<&OwnedFd>,
    pid1: &mut Option<(OwnedFd, u32, u32)>,
) -> Result<Option<OwnedFd>, SandboxError> {
    let send_err =
        |e: rustix::io::Errno| setup_err("send the spec to the sandbox helper", io::Error::from(e));
    for (i, chunk) in payload.chunks(proto::CHUNK).enumerate() {
        match netns {
            Some(ns) if i == 0 => {
                let fds = [ns.as_fd()];
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut anc = SendAncillaryBuffer::new(&mut space);
                anc.push(SendAncillaryMessage::ScmRights(&fds));
                rnet::sendmsg(ours, &[IoSlice::new(chunk)], &mut anc, SendFlags::NOSIGNAL)
                    .map_err(send_err)?;
            }
            _ => {
                rnet::send(ours, chunk, SendFlags::NOSIGNAL).map_err(send_err)?;
            }
        }
    }
    rnet::shutdown(ours, rnet::Shutdown::Write)
        .map_err(|e| setup_err("send the spec to the sandbox helper", io::Error::from(e)))?;

    let mut ready: Option<Option<OwnedFd>> = None;
    let mut failure: Option<(ErrorKind, String)> = None;
    loop {
        let mut buf = [0u8; 4096];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut anc = RecvAncillaryBuffer::new(&mut space);
        let r = rnet::recvmsg(
            ours,
            &mut [IoSliceMut::new(&mut buf)],
            &mut anc,
            RecvFlags::CMSG_CLOEXEC,
        );
        let mut fds: Vec<OwnedFd> = Vec::new();
        for m in anc.drain() {
            if let RecvAncillaryMessage::ScmRights(it) = m {
                fds.extend(it);
            }
        }
        let n = match r {
            Ok(m) => m.bytes,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => {
                return Err(SandboxError::Setup(format!(
                    "the sandbox helper did not finish setting up within {} s",
                    HANDSHAKE_TIMEOUT.as_secs()
                )))
            }
            Err(e) => {
                return Err(setup_err(
                    "read from the sandbox helper",
                    io::Error::from(e),
                ))
            }
        };
        if n == 0 {
            break;
        }
        match proto::parse_message(&buf[..n.min(buf.len())]) {
            Some(Message::Ready {
                pid1: pid,
                helper_pid,
            }) if !fds.is_empty() => {
                let mut it = fds.into_iter();
                if let Some(p) = it.next() {
                    *pid1 = Some((p, pid, helper_pid));
                    ready = Some(it.next());
                }
            }
            Some(Message::Error { kind, text }) => {
                // The first error is the cause; later ones are consequences.
                failure.get_or_insert((kind, text));
            }
            _ => {
                failure.get_or_insert((
                    ErrorKind::Setup,
                    "malformed message from the sandbox helper".into(),
                ));
            }
        }
    }
    match (failure, ready) {
        (Some((ErrorKind::Entrypoint, t)), _) => Err(SandboxError::InvalidEntrypoint(t)),
        (Some((ErrorKind::WorkingDir, t)), _) => Err(SandboxError::InvalidWorkingDir(t)),
        (Some((ErrorKind::Setup, t)), _) => Err(SandboxError::Setup(t)),
        (None, Some(r)) => Ok(r),
        (None, None) => Err(SandboxError::Setup(
            "the sandbox helper exited during setup (see its standard error)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            layers: vec!["/l".into()],
            argv: vec!["/bin/true".into()],
            env: vec![("A".into(), "b".into())],
            workdir: "/".into(),
            memory_mb: 128,
            ephemeral_storage_mb: 512,
            hostname: "h".into(),
            runtime_api_port: 9001,
        }
    }

    #[test]
    fn validation() {
        assert!(validate(&spec()).is_ok());
        let mut s = spec();
        s.argv.clear();
        assert!(matches!(
            validate(&s),
            Err(SandboxError::InvalidEntrypoint(_))
        ));
        let mut s = spec();
        s.argv[0] = "true".into();
        let e = validate(&s).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("fork/exec true: entrypoint is not an absolute path")
        );
        let mut s = spec();
        s.env.push(("A=B".into(), "c".into()));
        assert!(matches!(validate(&s), Err(SandboxError::Setup(_))));
        let mut s = spec();
        s.argv.push("a\0b".into());
        assert!(matches!(validate(&s), Err(SandboxError::Setup(_))));
        let mut s = spec();
        s.layers.clear();
        assert!(matches!(validate(&s), Err(SandboxError::Setup(_))));
        let mut s = spec();
        s.hostname = "x".repeat(65);
        assert!(matches!(validate(&s), Err(SandboxError::Setup(_))));
    }
}
