//! Pre-spawned sandbox helpers: a cold start's slowest step, done before the invoke arrives.
//!
//! Joining a fresh cgroup (the helper's write of its pid to `cgroup.procs`) takes the kernel's
//! global `cgroup_threadgroup_rwsem` for writing, a per-CPU rw-semaphore whose writer waits for
//! an RCU grace period unless another writer used it within the last one. After a quiet period
//! that is 6–40 ms (median 15 ms on this 2-core VM), more than the rest of sandbox setup
//! together; back-to-back spawns do not see it, which is why a tight loop measures only ~4 ms.
//! Forking lambox (~1.5 ms) and exec'ing the 80 MB binary (~0.8 ms) come on top.
//!
//! So a `lambox-helpers` thread keeps `size` helpers ready: each is forked, exec'd
//! (`__lambox-sandbox-init`) and already in a fresh set of cgroups (pids limit set, no memory
//! limit yet), blocked reading its control socket. [`Helpers::spawn`] takes one, writes the
//! memory limit (a cheap write), and sends the spec exactly as [`crate::Sandbox::spawn_with`]
//! would; the thread then makes a replacement. With none ready (a burst), `spawn` starts a
//! helper itself, as `spawn_with` does.
//!
//! The network namespace pool (`net.rs`) is separate and unchanged: its namespace is taken when
//! the spec is sent, so a pooled helper still enters a prepared namespace.

use std::collections::VecDeque;
use std::io;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::net::{self as rnet, RecvFlags, SendFlags};

use crate::proto::{self, Message};
use crate::spawn::{self, Started};
use crate::{cgroup, Sandbox, SandboxConfig, SandboxError, Spec};

/// How long the refill thread waits after a failed pre-spawn before trying again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How long a spawn waits for a helper that is being pre-spawned before it starts its own.
const IN_FLIGHT_WAIT: Duration = Duration::from_millis(100);
/// How long after a spawn that took a helper the replacement is started: the replacement's
/// fork and exec (a few ms of CPU) would otherwise compete with that cold start's own setup
/// and the function's init on a small machine.
const REFILL_DELAY: Duration = Duration::from_millis(20);

type Spawner<C> = dyn Fn(Command) -> io::Result<C> + Send + Sync;

/// One ready helper.
struct Ready<C> {
    started: Started<C>,
    /// pidfd of the helper (readable once it has exited).
    pidfd: OwnedFd,
}

impl<C> Ready<C> {
    fn alive(&self) -> bool {
        let mut fds = [rustix::event::PollFd::new(
            &self.pidfd,
            rustix::event::PollFlags::IN,
        )];
        matches!(
            rustix::event::poll(&mut fds, Some(&rustix::event::Timespec::default())),
            Ok(0)
        )
    }

    /// Stop the helper (it reads end-of-file instead of a spec and exits), wait for it, then
    /// remove its cgroups.
    fn discard(self) {
        let Ready {
            started:
                Started {
                    child,
                    ours,
                    mut cgroups,
                    ..
                },
            pidfd,
        } = self;
        drop(ours);
        let mut fds = [rustix::event::PollFd::new(
            &pidfd,
            rustix::event::PollFlags::IN,
        )];
        let two_s = rustix::event::Timespec {
            tv_sec: 2,
            tv_nsec: 0,
        };
        let _ = rustix::event::poll(&mut fds, Some(&two_s));
        drop(child);
        let left = cgroups.remove();
        if !left.is_empty() {
            tracing::warn!(
                ?left,
                "cgroups of a pre-spawned helper still busy; left in place"
            );
        }
    }
}

struct State<C> {
    ready: VecDeque<Ready<C>>,
    /// The refill thread is making a helper right now.
    in_flight: bool,
    /// When the last spawn that took a helper ended (see [`REFILL_DELAY`]).
    last_take: Option<std::time::Instant>,
    closed: bool,
}

struct Shared<C> {
    config: SandboxConfig,
    size: usize,
    spawner: Box<Spawner<C>>,
    state: Mutex<State<C>>,
    /// Signalled when a helper is taken and when the pool closes.
    wake: Condvar,
    /// Signalled when a pre-spawn ends (a helper is ready, or it failed).
    made: Condvar,
}

impl<C> Shared<C> {
    fn lock(&self) -> MutexGuard<'_, State<C>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A pool of pre-spawned sandbox helpers (see the module docs). `C` is what the spawner
/// returns for the helper process, e.g. a `tokio::process::Child`.
pub struct Helpers<C: Send + 'static> {
    shared: Arc<Shared<C>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<C: Send + 'static> std::fmt::Debug for Helpers<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Helpers")
            .field("size", &self.shared.size)
            .field("ready", &self.ready())
            .finish_non_exhaustive()
    }
}

impl<C: Send + 'static> Helpers<C> {
    /// Start keeping `size` helpers ready for environments built with `config`. `spawner`
    /// spawns the helper's command on the refill thread, the way the closure of
    /// [`Sandbox::spawn_with`] does (set standard output/error, e.g. pipes); it is called
    /// outside any async runtime, so a tokio spawner must enter a runtime handle itself.
    /// `size` 0 keeps none (every spawn starts its own helper).
    pub fn new(
        config: SandboxConfig,
        size: usize,
        spawner: impl Fn(Command) -> io::Result<C> + Send + Sync + 'static,
    ) -> Self {
        let shared = Arc::new(Shared {
            config,
            size,
            spawner: Box::new(spawner),
            state: Mutex::new(State {
                ready: VecDeque::new(),
                in_flight: false,
                last_take: None,
                closed: size == 0,
            }),
            wake: Condvar::new(),
            made: Condvar::new(),
        });
        let thread = if size > 0 {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("lambox-helpers".into())
                .spawn(move || refill(&s))
                .map_err(|e| tracing::warn!(error = %e, "cannot start the helper pool thread"))
                .ok()
        } else {
            None
        };
        Helpers {
            shared,
            thread: Mutex::new(thread),
        }
    }

    /// Helpers ready right now.
    pub fn ready(&self) -> usize {
        self.shared.lock().ready.len()
    }

    /// Wait (at most `timeout`) until `n` helpers are ready; returns whether they are.
    pub fn wait_ready(&self, n: usize, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while self.ready() < n {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Start an environment like [`Sandbox::spawn_with`] (same result, same errors), with a
    /// pre-spawned helper if one is ready.
    pub fn spawn(&self, spec: &Spec) -> Result<(Sandbox, C, TcpListener), SandboxError> {
        spawn::validate(spec)?;
        let config = &self.shared.config;
        while let Some(ready) = self.take() {
            if !ready.alive() {
                tracing::debug!("a pre-spawned helper has exited; discarded");
                ready.discard();
                continue;
            }
            if let Err(e) = ready.started.cgroups.set_limits(spec.memory_mb) {
                tracing::warn!(error = %e, "cannot set the limits of a pre-spawned helper");
                ready.discard();
                break;
            }
            let r = spawn::finish(config, spec, ready.started, drop);
            self.shared.lock().last_take = Some(std::time::Instant::now());
            self.shared.wake.notify_all();
            return r;
        }
        spawn::spawn(config, spec, &*self.shared.spawner, drop)
    }

    /// A ready helper; if none is but one is being made, wait for it (at most
    /// [`IN_FLIGHT_WAIT`]): it is past its fork, exec and probably its cgroup join, so it is
    /// ready sooner than a new helper would be (a new one would queue behind it for the same
    /// kernel lock anyway).
    fn take(&self) -> Option<Ready<C>> {
        let deadline = std::time::Instant::now() + IN_FLIGHT_WAIT;
        let mut st = self.shared.lock();
        loop {
            if let Some(r) = st.ready.pop_front() {
                // The refill thread is woken once this spawn is over (`spawn`).
                st.last_take = Some(std::time::Instant::now());
                return Some(r);
            }
            let now = std::time::Instant::now();
            if !st.in_flight || st.closed || now >= deadline {
                return None;
            }
            st = self
                .shared
                .made
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Stop refilling and release every ready helper (processes and cgroups). Idempotent; also
    /// done on drop. Environments already started are not affected.
    pub fn shutdown(&self) {
        let ready = {
            let mut st = self.shared.lock();
            st.closed = true;
            std::mem::take(&mut st.ready)
        };
        self.shared.wake.notify_all();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
        for r in ready {
            r.discard();
        }
        // A helper made while we were joining the thread.
        let late = std::mem::take(&mut self.shared.lock().ready);
        for r in late {
            r.discard();
        }
    }
}

impl<C: Send + 'static> Drop for Helpers<C> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn refill<C: Send + 'static>(shared: &Shared<C>) {
    loop {
        {
            let mut st = shared.lock();
            loop {
                if st.closed {
                    return;
                }
                if st.ready.len() >= shared.size {
                    st = shared.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
                    continue;
                }
                match st.last_take.map(|t| t.elapsed()) {
                    Some(e) if e < REFILL_DELAY => {
                        st = shared
                            .wake
                            .wait_timeout(st, REFILL_DELAY - e)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                    _ => break,
                }
            }
            st.in_flight = true;
        }
        let made = prespawn(shared);
        let mut st = shared.lock();
        st.in_flight = false;
        match made {
            Ok(ready) if st.closed => {
                drop(st);
                shared.made.notify_all();
                ready.discard();
                return;
            }
            Ok(ready) => {
                // Ready and no longer in flight in one step, so a waiting spawn sees one or
                // the other.
                st.ready.push_back(ready);
                drop(st);
                shared.made.notify_all();
            }
            Err(e) => {
                shared.made.notify_all();
                tracing::warn!(error = %e, "cannot pre-spawn a sandbox helper");
                if st.closed {
                    return;
                }
                let _ = shared.wake.wait_timeout(st, RETRY_PAUSE);
            }
        }
    }
}

/// Start one helper and have it join a fresh set of cgroups.
fn prespawn<C>(shared: &Shared<C>) -> Result<Ready<C>, SandboxError> {
    let config = &shared.config;
    let layout = cgroup::layout().map_err(SandboxError::Setup)?;
    let (ours, cmd) = spawn::helper_command(config)?;
    let child = (shared.spawner)(cmd).map_err(|e| spawn::start_err(config, e))?;
    let (id, mut cgroups) = match spawn::new_cgroups(layout, None) {
        Ok(v) => v,
        Err(e) => {
            drop(ours);
            drop(child);
            return Err(e);
        }
    };
    match join(&ours, &cgroups) {
        Ok(pidfd) => Ok(Ready {
            started: Started {
                child,
                ours,
                id,
                cgroups,
                joined: true,
            },
            pidfd,
        }),
        Err(e) => {
            // The helper exits on end-of-file (or has exited); give it a moment so that the
            // cgroups it may have joined empty out.
            drop(ours);
            drop(child);
            cgroups.remove();
            Err(e)
        }
    }
}

/// Ask the helper to join `cgroups`; returns its pidfd once it has.
fn join(ours: &OwnedFd, cgroups: &cgroup::EnvCgroups) -> Result<OwnedFd, SandboxError> {
    let err = |what: &str, e: rustix::io::Errno| {
        SandboxError::Setup(format!("{what}: {}", io::Error::from(e)))
    };
    let procs = serde_json::to_vec(&cgroups.procs_files())
        .map_err(|e| SandboxError::Setup(format!("encode the cgroups: {e}")))?;
    let mut msg = Vec::with_capacity(1 + procs.len());
    msg.push(proto::TAG_JOIN);
    msg.extend_from_slice(&procs);
    rnet::send(ours, &msg, SendFlags::NOSIGNAL)
        .map_err(|e| err("send the cgroups to the sandbox helper", e))?;
    let mut buf = [0u8; 4096];
    let n = loop {
        match rnet::recv(ours, &mut buf, RecvFlags::empty()) {
            Ok((n, _)) => break n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(err("read from the sandbox helper", e)),
        }
    };
    match proto::parse_message(&buf[..n.min(buf.len())]) {
        Some(Message::Joined { helper_pid }) => {
            // The helper is our child, alive (it just answered) and unreaped: its pid is its.
            let pid = rustix::process::Pid::from_raw(helper_pid as i32).ok_or_else(|| {
                SandboxError::Setup("the sandbox helper sent an invalid pid".into())
            })?;
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
                .map_err(|e| err("pidfd_open", e))
        }
        Some(Message::Error { text, .. }) => Err(SandboxError::Setup(text)),
        _ => Err(SandboxError::Setup(
            "the sandbox helper exited before joining its cgroups".into(),
        )),
    }
}
