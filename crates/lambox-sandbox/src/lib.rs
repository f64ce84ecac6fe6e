//! Linux execution environments for Lambda functions: one process tree per environment, in its
//! own namespaces and cgroups, on a read-only overlay of the image's layers, as uid 993 with no
//! capabilities. The only crate of lambox allowed `unsafe` (each block carries its `SAFETY:`).
//!
//! # Using it
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // First thing in main (before any thread exists): the re-exec'd helper lands here.
//! lambox_sandbox::run_init_if_requested();
//!
//! let config = lambox_sandbox::SandboxConfig::new("/var/lib/lambox/run");
//! let spec = lambox_sandbox::Spec {
//!     layers: vec!["/var/lib/lambox/layers/aa…".into(), "/var/lib/lambox/layers/bb…".into()],
//!     argv: vec!["/usr/bin/python3".into(), "-m".into(), "awslambdaric".into(), "app.handler".into()],
//!     env: vec![("PATH".into(), "/usr/local/bin:/usr/bin/:/bin".into())],
//!     workdir: "/var/task".into(),
//!     memory_mb: 128,
//!     ephemeral_storage_mb: 512,
//!     hostname: "169.254.10.1".into(),
//!     runtime_api_port: 9001,
//! };
//! // With tokio: `Sandbox::spawn_with(&config, &spec, |cmd| {
//! //     tokio::process::Command::from(cmd).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() })`
//! let (sandbox, child, listener) = lambox_sandbox::Sandbox::spawn(&config, &spec)?;
//! // serve the Runtime API on `listener`; read the function's output from child.stdout/stderr;
//! // between invokes: sandbox.freeze()?, sandbox.thaw()?; at the end:
//! sandbox.kill();
//! # let mut child = child; child.wait()?;
//! sandbox.cleanup(); // also done on drop
//! # Ok(()) }
//! ```
//!
//! ## The init re-exec convention
//!
//! `spawn` runs [`SandboxConfig::init_exe`] (default `/proc/self/exe`, i.e. lambox itself) with
//! argv `[<exe>, "__lambox-sandbox-init"]` ([`INIT_ARG`]), an empty environment, standard input
//! = the control socket, standard output/error = whatever the caller set (the function inherits
//! them). The binary's `main` must call [`run_init_if_requested`] (or check `argv[1] ==
//! INIT_ARG` and call [`init_main`]) before it starts any thread. Nothing else is read from the
//! command line.
//!
//! # Design
//!
//! **Process tree.** lambox is multi-threaded, so it only `posix_spawn`s (no `pre_exec`): the
//! helper (`lambox-helper` in `ps`) is a fresh, single-threaded exec of lambox. It joins the
//! environment's cgroups, unshares mount/UTS/IPC/PID namespaces, enters the network namespace
//! (see **Network**), sets the host name, builds the root and `pivot_root`s into it, then forks
//! PID 1 (`lambox-init`) of the new PID namespace. PID 1 mounts `/proc`, forks the function process, reaps orphans, forwards
//! SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 (the helper forwards them to PID 1 too, so a
//! signal to the `Child` reaches the function), and exits when the function does; its exit
//! kills everything left in the namespace. The helper then exits with the function's exit code,
//! or re-raises the signal that killed it, so the `Child`'s status reads like the function's.
//! The function is never PID 1 (as PID 1, awslambdaric would ignore SIGTERM).
//!
//! **Handshake.** One `SOCK_SEQPACKET` pair: lambox sends the spec as JSON (with the prepared
//! network namespace attached, see below); the helper sends back `READY` with a pidfd of PID 1
//! (and the listener, if it made the network namespace itself). Every copy of the helper's end is
//! closed on purpose or close-on-exec in the function, so end-of-file means "the function has
//! been exec'd"; before that, an `ERROR` message carries a one-line reason (`fork/exec /x: no
//! such file or directory`, `chdir /x: …`, or a setup failure). So `spawn` returns synchronously
//! with the exec's outcome. lambox starts the helper first and creates the cgroups while the
//! helper execs.
//!
//! **Pre-spawned helpers** ([`Helpers`], `helpers.rs`). The same helper, started ahead of time
//! by a `lambox-helpers` thread and told (a `J` message before the spec) to join a fresh set
//! of cgroups at once, because that join is the slowest step of a cold start (it can wait for
//! an RCU grace period). [`Helpers::spawn`] takes one, sets its memory limit and continues with
//! the handshake above.
//!
//! **Cgroups** (see `cgroup.rs`). `<own cgroup>/lambox/<env id>` in every hierarchy used. Memory,
//! pids and cpu use v2 if our v2 cgroup has the controller (pure v2; lambox then enables them
//! in `subtree_control`, moving itself into `<own>/lambox-supervisor` if needed), else v1
//! (hybrid and v1). Freeze and kill use v2 `cgroup.freeze`/`cgroup.kill` whenever a v2 tree is
//! mounted (they need no controller), else the v1 freezer and PID 1's pidfd. Limits: memory =
//! `memory_mb` MiB (`memory.limit_in_bytes` / `memory.max`, swappiness 0 / `swap.max` 0), pids
//! 1024, CPU cap `memory_mb / 1769` vCPUs as a CFS quota per 100 ms (`cpu.cfs_quota_us` /
//! `cpu.max`). The helper joins every hierarchy before forking anything. The CPU cap is written
//! right after the exec (when `spawn` returns), so that sandbox setup itself is not throttled
//! to 7 % of a CPU for a 128 MB function. Max memory: `memory.max_usage_in_bytes` /
//! `memory.peak`; OOM: `oom_kill` in `memory.oom_control` / `memory.events`.
//!
//! **Root filesystem** (see `mounts.rs`). In the new mount namespace, after making every mount
//! private: a read-only overlay (no upper dir; nosuid, nodev) of the image's layers under a
//! lambox-owned *skeleton* layer (top) that provides empty `proc`, `dev` and `tmp`; a tmpfs
//! `/tmp` of `ephemeral_storage_mb` (mode 1777); a tmpfs `/dev` with null, zero, full, random,
//! urandom and the fd/stdin/stdout/stderr links; `/dev/shm` (64 MiB tmpfs, 1777); a fresh
//! procfs of the environment's PID namespace. The overlay is mounted on `state_dir/root`, one
//! plain directory shared by every environment (each mounts it in its own namespace, so nothing
//! ever appears there on the host); `pivot_root` then detaches the host's tree entirely. When
//! the environment's last process exits, the kernel drops its mounts: there is nothing to
//! unmount on the host, and no per-environment directory under `state_dir` at all.
//!
//! **Identity.** The function process: RLIMIT_NOFILE 1024 (soft and hard, never above the
//! current hard limit), its own cgroup namespace, an empty capability bounding set, no
//! supplementary groups, gid 990, uid 993 (real/effective/saved, which empties the permitted,
//! effective and ambient sets; the inheritable set is cleared explicitly), `no_new_privs`,
//! umask 022, default signal dispositions, nothing blocked, only fds 0–2 (0 is `/dev/null`).
//! The environment is exactly `Spec::env` plus `AWS_LAMBDA_RUNTIME_API=127.0.0.1:<port>` unless
//! `Spec::env` sets it; in particular no `HOME`.
//!
//! **Network.** A network namespace with `lo` (up), in which `127.0.0.1:<runtime_api_port>`
//! is bound; lambox serves the Runtime API on that listening socket from the host (a socket
//! keeps its namespace), and no other environment can reach it. With
//! [`SandboxConfig::network`] = [`Network::Nat`] (from a [`HostNetwork`], which owns the host's
//! nftables table and forwarding) it also has `eth0`, a veth pair to `lambox<N>` on the host
//! with a /30 of the subnet and a default route, and a lower layer with `/etc/resolv.conf`.
//! Creating a namespace (and its veth pair) is the most expensive setup step, so a dedicated
//! lambox thread (`lambox-netns`, started by [`prewarm_network`] or the first `spawn`) keeps
//! two ready: it `unshare(CLONE_NEWNET)`s itself (network namespaces are per thread),
//! configures the namespace and binds the listener; `spawn` passes the namespace fd to the
//! helper (`SCM_RIGHTS`), which `setns`es into it. With the pool empty, or for a port or
//! network other than the first one asked for, the helper does the same itself, and passes
//! the listener back. See `net.rs` and `hostnet.rs`.
//!
//! # Known limits
//!
//! * `/tmp` is a tmpfs: its pages are charged to the environment's memory cgroup, so a function
//!   with less memory than it writes to `/tmp` is OOM-killed rather than seeing ENOSPC (on Lambda
//!   `/tmp` is disk-backed and does not count against memory).
//! * The overlay's lower layers must not change while mounted (the store never rewrites them).
//! * If lambox dies, running environments keep running (their helpers are not tied to a
//!   lambox thread); their cgroups stay under `<own>/lambox/`. Once empty, they are removed by
//!   the next lambox process that starts an environment (`<pid>-<n>` directories whose pid is
//!   gone). Pre-spawned helpers ([`Helpers`]) exit by themselves when lambox dies (end-of-file
//!   on their control socket).
//! * The re-exec costs what loading the executable costs: exec'ing an 80 MB lambox release
//!   build takes ~1.5 ms longer than the 13 MB `lambox-sandbox-init` test binary (measured:
//!   `lambox --version` against that binary, p50). Pointing [`SandboxConfig::init_exe`] at a
//!   small binary that only calls [`init_main`] would save it.
//! * Pure cgroup v2 is implemented but only the hybrid layout has been tested.

mod cgroup;
mod helpers;
mod hostnet;
mod init;
mod mounts;
mod net;
mod netlink;
mod proto;
mod spawn;
mod sys;

pub use helpers::Helpers;
pub use hostnet::{
    prewarm_network, time_namespace_setup, HostNetwork, NatNetwork, Network, NetworkError, Subnet,
    DEFAULT_SUBNET, NFT_TABLE,
};

use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::{fmt, io};

/// `argv[1]` that makes the lambox binary act as the sandbox init helper.
pub const INIT_ARG: &str = "__lambox-sandbox-init";
/// The function's user: Lambda's `sbx_user1051`.
pub const FUNCTION_UID: u32 = 993;
/// The function's group.
pub const FUNCTION_GID: u32 = 990;
/// The function's RLIMIT_NOFILE (soft and hard), capped at the current hard limit.
pub const FUNCTION_NOFILE: u64 = 1024;

/// Entry point of the re-exec'd init helper; see the crate docs. Must be called before the
/// process has started any thread. Never returns.
pub fn init_main() -> ! {
    init::helper_main()
}

/// If this process was started as the sandbox init helper (`argv[1] == INIT_ARG`), become it
/// (never returns); otherwise return at once. Call it first thing in `main`.
pub fn run_init_if_requested() {
    if std::env::args_os().nth(1).is_some_and(|a| a == INIT_ARG) {
        init_main()
    }
}

/// Remove lambox's cgroup group directories that no environment uses any more (call at
/// shutdown, after every [`Sandbox`] is gone). Those still in use stay.
pub fn remove_empty_cgroups() {
    cgroup::remove_empty_groups();
}

/// Where environments are built.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// A lambox-owned directory (e.g. `DATA/run`). `spawn` creates `skeleton/{proc,dev,tmp}`
    /// (the top overlay layer) and `root/` (the shared mount point) in it, once.
    pub state_dir: PathBuf,
    /// The executable that calls [`init_main`] when given [`INIT_ARG`]. Default
    /// `/proc/self/exe` (lambox itself).
    pub init_exe: PathBuf,
    /// Mount the overlay with one `lowerdir=` option string (`mount(2)`) even where the kernel
    /// has `fsconfig(lowerdir+)` (Linux ≥ 6.8). Older kernels get the former anyway. For tests.
    pub legacy_overlay: bool,
    /// Only `lo` (default), or a NAT uplink from a [`HostNetwork`].
    pub network: Network,
}

impl SandboxConfig {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            init_exe: PathBuf::from("/proc/self/exe"),
            legacy_overlay: false,
            network: Network::None,
        }
    }
}

/// One environment to start.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Image layer directories in overlayfs lowerdir form, bottom → top.
    pub layers: Vec<PathBuf>,
    /// Entrypoint + command, merged; `argv[0]` must be an absolute path inside the image.
    pub argv: Vec<String>,
    /// The function's environment, complete (see the crate docs for the one addition).
    pub env: Vec<(String, String)>,
    /// Working directory inside the image (empty means `/`).
    pub workdir: String,
    /// Memory limit, MB (also sets the CPU cap: 1769 MB = 1 vCPU).
    pub memory_mb: u32,
    /// Size of `/tmp`, MB.
    pub ephemeral_storage_mb: u32,
    /// Host name inside the environment (≤ 64 bytes).
    pub hostname: String,
    /// Port of the Runtime API listener on 127.0.0.1 inside the environment (Lambda: 9001).
    pub runtime_api_port: u16,
}

/// Why an environment could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Lambda's `Runtime.InvalidEntrypoint`, e.g. `fork/exec /x: no such file or directory`.
    #[error("{0}")]
    InvalidEntrypoint(String),
    /// Lambda's `Runtime.InvalidWorkingDir`, e.g. `chdir /x: no such file or directory`.
    #[error("{0}")]
    InvalidWorkingDir(String),
    /// Anything else (one line, naming what failed).
    #[error("cannot start the execution environment: {0}")]
    Setup(String),
}

/// Numbers kept once the cgroups are gone.
#[derive(Debug, Clone, Copy)]
struct FinalStats {
    peak: Option<u64>,
    oom: bool,
}

#[derive(Debug)]
struct Inner {
    cgroups: cgroup::EnvCgroups,
    done: Option<FinalStats>,
}

/// A started environment: control over its processes (through its cgroups and PID 1) and its
/// resources. Dropping it kills the environment and releases everything ([`Sandbox::cleanup`]).
pub struct Sandbox {
    id: String,
    pid1: Option<OwnedFd>,
    pid1_pid: u32,
    cgroup_dirs: Vec<PathBuf>,
    memory_mb: u32,
    inner: Mutex<Inner>,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.id)
            .field("pid1", &self.pid1_pid)
            .field("cgroups", &self.cgroup_dirs)
            .finish()
    }
}

impl Sandbox {
    /// Start an environment whose function writes to pipes (`child.stdout`, `child.stderr`).
    /// Returns once the function process has been exec'd, or with why it could not be.
    /// Blocks for a few milliseconds.
    pub fn spawn(
        config: &SandboxConfig,
        spec: &Spec,
    ) -> Result<(Sandbox, Child, TcpListener), SandboxError> {
        spawn::spawn(
            config,
            spec,
            |mut cmd| cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn(),
            |mut child: Child| {
                // The environment has been killed: the helper exits by itself. Kill it only if
                // it does not (killing it first would orphan its PID 1).
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                while matches!(child.try_wait(), Ok(None)) {
                    if std::time::Instant::now() > deadline {
                        let _ = child.kill();
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                let _ = child.wait();
            },
        )
    }

    /// Like [`Sandbox::spawn`], but the caller spawns the prepared command, e.g. as a tokio
    /// child: `|cmd| tokio::process::Command::from(cmd).stdout(Stdio::piped())
    /// .stderr(Stdio::piped()).spawn()`. The closure may set standard output and error (the
    /// function inherits them) and options such as `kill_on_drop`; it must not change the
    /// program, arguments, environment or standard input, and must not keep the `Command`
    /// (its copy of the control socket would hide the exec's end-of-file: `spawn_with` would
    /// then time out after 30 s).
    ///
    /// On error, the environment has been killed and its cgroups removed; the spawned child is
    /// dropped (a tokio child is reaped by tokio in the background; for a std child, prefer
    /// [`Sandbox::spawn`], which waits for it).
    pub fn spawn_with<C>(
        config: &SandboxConfig,
        spec: &Spec,
        spawn: impl FnOnce(Command) -> io::Result<C>,
    ) -> Result<(Sandbox, C, TcpListener), SandboxError> {
        spawn::spawn(config, spec, spawn, drop)
    }

    /// The environment's id (its cgroups' directory name).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Pid of the environment's PID 1, as seen from lambox (for diagnostics).
    pub fn pid1(&self) -> u32 {
        self.pid1_pid
    }

    /// The environment's cgroup directories, one per hierarchy (for diagnostics).
    pub fn cgroup_dirs(&self) -> &[PathBuf] {
        &self.cgroup_dirs
    }

    /// The memory limit it was started with, MB.
    pub fn memory_mb(&self) -> u32 {
        self.memory_mb
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stop every process of the environment (cgroup freezer); returns once the kernel reports
    /// them frozen (error after 1 s).
    pub fn freeze(&self) -> io::Result<()> {
        let inner = self.lock();
        if inner.done.is_some() {
            return Err(io::Error::other("environment already cleaned up"));
        }
        inner.cgroups.set_frozen(true)
    }

    /// Like [`Sandbox::freeze`], but return as soon as the kernel has been asked (one write);
    /// the processes stop moments later (under load, freezing can take milliseconds: every
    /// thread must be scheduled to stop). A [`Sandbox::thaw`] meanwhile cancels it.
    pub fn freeze_nowait(&self) -> io::Result<()> {
        let inner = self.lock();
        if inner.done.is_some() {
            return Err(io::Error::other("environment already cleaned up"));
        }
        inner.cgroups.freeze_nowait()
    }

    /// Let them run again.
    pub fn thaw(&self) -> io::Result<()> {
        let inner = self.lock();
        if inner.done.is_some() {
            return Err(io::Error::other("environment already cleaned up"));
        }
        inner.cgroups.set_frozen(false)
    }

    /// SIGKILL every process of the environment at once, and thaw it if it was frozen.
    /// Idempotent. The kill goes to PID 1 through its pidfd: the kernel then kills the whole PID
    /// namespace, and the helper, seeing PID 1 die, dies of the same signal, so the `Child`
    /// exits "killed by signal 9" and nothing is left for anyone else to reap. (Killing the
    /// whole cgroup instead would kill the helper first and orphan PID 1 to the host's init;
    /// `cgroup.kill` is only the fallback when there is no pidfd, and the last resort of
    /// [`Sandbox::cleanup`].) For the same reason, stop an environment with this rather than
    /// by killing the `Child` (or tokio's `kill_on_drop`): PID 1 would still die (it has
    /// `PR_SET_PDEATHSIG`), but as an orphan reaped by the host's init. To ask the function to
    /// stop, send SIGTERM to the `Child`: it is forwarded.
    pub fn kill(&self) {
        let signalled =
            self.pid1.as_ref().is_some_and(|fd| {
                match rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL) {
                    Ok(()) | Err(rustix::io::Errno::SRCH) => true,
                    Err(_) => false,
                }
            });
        let inner = self.lock();
        if inner.done.is_none() {
            if !signalled {
                inner.cgroups.kill_cgroup();
            }
            inner.cgroups.thaw_nowait();
        }
    }

    /// Peak memory use of the environment so far, bytes.
    pub fn max_memory_bytes(&self) -> Option<u64> {
        let inner = self.lock();
        match inner.done {
            Some(s) => s.peak,
            None => inner.cgroups.peak_memory(),
        }
    }

    /// Whether the kernel's OOM killer killed a process of this environment.
    pub fn oom_killed(&self) -> bool {
        let inner = self.lock();
        match inner.done {
            Some(s) => s.oom,
            None => inner.cgroups.oom_killed(),
        }
    }

    /// Kill what is left and remove the environment's cgroups (waiting up to 2 s for its
    /// processes to drain). Mounts need no work: they live only in the environment's mount
    /// namespace, which goes away with its last process. Idempotent; also run on drop.
    /// [`Sandbox::max_memory_bytes`] and [`Sandbox::oom_killed`] keep answering afterwards.
    pub fn cleanup(&self) {
        if self.lock().done.is_some() {
            return;
        }
        self.kill();
        let mut inner = self.lock();
        if inner.done.is_some() {
            return;
        }
        let stats = FinalStats {
            peak: inner.cgroups.peak_memory(),
            oom: inner.cgroups.oom_killed(),
        };
        let left = inner.cgroups.remove();
        if !left.is_empty() {
            tracing::warn!(env = %self.id, ?left, "cgroups still busy after 2 s; left in place");
        }
        inner.done = Some(stats);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.cleanup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn sandbox_can_be_shared_across_threads() {
        send_sync::<Sandbox>();
        send_sync::<SandboxConfig>();
        send_sync::<Spec>();
    }
}
