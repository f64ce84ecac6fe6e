//! The init helper: lambox re-executed with [`crate::INIT_ARG`], and the two processes it forks.
//!
//! ```text
//! lambox (multi-threaded)
//!  └─ helper      host PID ns; the `Child` lambox holds. Joins the cgroups, unshares the
//!     │           namespaces, brings up lo, binds the listener, builds the root, pivots.
//!     │           Forwards signals to PID 1; exits like the function did.
//!     └─ PID 1    first process of the new PID ns: mounts /proc, forks the function, reaps
//!        │        orphans, forwards signals, reports the function's status, then exits
//!        │        (which kills whatever the function left behind).
//!        └─ function   drops to uid 993, checks workdir, execs the entrypoint.
//! ```
//!
//! The helper is single-threaded by construction (`init_main` runs before anything else in
//! `main`), so forking and then running ordinary Rust code is sound.

use std::ffi::{c_int, CString};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::net::{
    self as rnet, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketType,
};
use rustix::process::{self as rproc, Pid, Resource, Rlimit, Signal, WaitOptions};
use rustix::thread::{self as rthread, CapabilitySet, CapabilitySets, UnshareFlags};

use crate::proto::{self, ErrorKind, InitSpec};
use crate::sys::{self, Exit, Forked};
use crate::{cgroup, mounts, net};

/// Why the environment could not start, as reported to lambox.
#[derive(Debug)]
pub(crate) struct Failure {
    pub kind: ErrorKind,
    pub msg: String,
}

impl Failure {
    pub(crate) fn setup(msg: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Setup,
            msg: msg.into(),
        }
    }
    fn entrypoint(msg: String) -> Self {
        Self {
            kind: ErrorKind::Entrypoint,
            msg,
        }
    }
    fn workdir(msg: String) -> Self {
        Self {
            kind: ErrorKind::WorkingDir,
            msg,
        }
    }
}

fn setup(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Failure {
    Failure::setup(format!("{what}: {e}"))
}

/// An errno as Go (and so Lambda's RIE) words it: `no such file or directory`.
pub(crate) fn errno_text(e: impl Into<io::Error>) -> String {
    let s = e.into().to_string();
    let s = match s.find(" (os error") {
        Some(i) => &s[..i],
        None => &s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The helper's end of the control socket. Every process that holds it must close it (or have
/// it close on exec) for lambox to see end-of-file, so ownership is explicit.
struct Ctl(Option<OwnedFd>);

impl Ctl {
    fn fd(&self) -> Result<&OwnedFd, Failure> {
        self.0
            .as_ref()
            .ok_or_else(|| Failure::setup("control socket already closed"))
    }
    fn report(&self, f: &Failure) {
        if let Some(fd) = &self.0 {
            let _ = rnet::send(
                fd,
                &proto::error_message(f.kind, &f.msg),
                SendFlags::NOSIGNAL,
            );
        }
    }
    fn close(&mut self) {
        self.0 = None;
    }
}

/// Signals the helper and PID 1 take synchronously (blocked, then `sigwaitinfo`).
fn waited_signals() -> Vec<c_int> {
    let mut v = sys::FORWARDED.to_vec();
    v.push(libc::SIGCHLD);
    v
}

/// Entry of the helper process. Never returns.
pub(crate) fn helper_main() -> ! {
    // A recognisable name in `ps` on the host (the command line stays lambox's).
    let _ = rthread::set_name(c"lambox-helper");
    // Step 0: signals we forward or wait for are blocked before anything is forked, so none
    // can be lost between a fork and the wait loop (children inherit the mask).
    if let Err(e) = sys::block_signals(&waited_signals()) {
        eprintln!("lambox-sandbox-init: block signals: {e}");
        sys::exit_now(125);
    }
    let mut ctl = match take_control_socket() {
        Ok(fd) => Ctl(Some(fd)),
        Err(e) => {
            eprintln!("lambox-sandbox-init: {e} (this program is started by lambox only)");
            sys::exit_now(125);
        }
    };
    // Forking and then running ordinary Rust code is only sound without other threads.
    if !single_threaded() {
        ctl.report(&Failure::setup(
            "the sandbox helper has several threads: init_main must run before any thread starts",
        ));
        sys::exit_now(125);
    }
    let running = match helper_setup(&mut ctl) {
        Ok(r) => r,
        Err(f) => {
            ctl.report(&f);
            sys::exit_now(125);
        }
    };
    ctl.close();
    helper_wait(running)
}

/// Whether this process has exactly one thread (`num_threads` in /proc/self/stat).
fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after_comm = s.rsplit_once(')')?.1.to_string();
            // Fields after comm start at field 3 (state); num_threads is field 20.
            after_comm.split_whitespace().nth(17)?.parse::<u32>().ok()
        })
        == Some(1)
}

/// The control socket arrives as standard input; move it aside (close-on-exec) and give
/// standard input /dev/null, which is what the function will inherit.
fn take_control_socket() -> io::Result<OwnedFd> {
    let ctl = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stdin(), 3)?;
    if rnet::sockopt::socket_type(&ctl)? != SocketType::SEQPACKET {
        return Err(io::Error::other("standard input is not a control socket"));
    }
    let null = rfs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    rustix::stdio::dup2_stdin(&null)?;
    Ok(ctl)
}

/// The spec, and the fds sent with it (a prepared network namespace, if any).
fn read_spec(ctl: &OwnedFd) -> Result<(InitSpec, Vec<OwnedFd>), Failure> {
    let mut data = Vec::new();
    let mut fds = Vec::new();
    let mut buf = vec![0u8; proto::CHUNK + 1];
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut anc = RecvAncillaryBuffer::new(&mut space);
        let r = rnet::recvmsg(
            ctl,
            &mut [io::IoSliceMut::new(&mut buf[..])],
            &mut anc,
            RecvFlags::CMSG_CLOEXEC,
        );
        for m in anc.drain() {
            if let RecvAncillaryMessage::ScmRights(it) = m {
                fds.extend(it);
            }
        }
        match r {
            Ok(m) if m.bytes == 0 => break,
            Ok(m) if data.is_empty() && buf.first() == Some(&proto::TAG_JOIN) => {
                // A pre-spawned helper: join the cgroups now, say so, then wait for the spec.
                let procs: Vec<std::path::PathBuf> =
                    serde_json::from_slice(&buf[1..m.bytes.min(buf.len())])
                        .map_err(|e| setup("parse the cgroups to join", e))?;
                join_cgroups(&procs)?;
                let me = rproc::getpid().as_raw_nonzero().get() as u32;
                rnet::send(ctl, &proto::joined_message(me), SendFlags::NOSIGNAL)
                    .map_err(|e| setup("report the cgroups joined", io::Error::from(e)))?;
            }
            Ok(m) => data.extend_from_slice(&buf[..m.bytes.min(buf.len())]),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(setup("read the spec", io::Error::from(e))),
        }
    }
    let spec = serde_json::from_slice(&data).map_err(|e| setup("parse the spec", e))?;
    Ok((spec, fds))
}

/// Write our pid into each `cgroup.procs` file.
fn join_cgroups(procs: &[std::path::PathBuf]) -> Result<(), Failure> {
    let me = rproc::getpid().as_raw_nonzero().get().to_string();
    for p in procs {
        cgroup::write_file(p, &me).map_err(|e| setup(format!("join cgroup {}", p.display()), e))?;
    }
    Ok(())
}

struct Running {
    pid1: Pid,
    status_r: OwnedFd,
}

fn helper_setup(ctl: &mut Ctl) -> Result<Running, Failure> {
    let (spec, mut fds) = read_spec(ctl.fd()?)?;
    let netns = if spec.netns_passed {
        Some(
            fds.pop()
                .ok_or_else(|| Failure::setup("no network namespace came with the spec"))?,
        )
    } else {
        None
    };

    // Step 1: join the environment's cgroups (one per hierarchy), so that everything forked
    // from here on is limited, accounted, freezable and killable with the environment.
    // (A pre-spawned helper has joined them already and gets an empty list.)
    join_cgroups(&spec.cgroup_procs)?;

    // Step 2: new mount, UTS, IPC (and, unless lambox prepared one, network) namespaces for us,
    // a new PID namespace for our children (the next fork becomes its PID 1). Modes below are
    // exact: no umask.
    rproc::umask(Mode::empty());
    let mut flags =
        UnshareFlags::NEWNS | UnshareFlags::NEWUTS | UnshareFlags::NEWIPC | UnshareFlags::NEWPID;
    // A NAT uplink of our own needs a handle on the host's namespace, taken before we leave it.
    let host = match (&netns, &spec.nat) {
        (None, Some(_)) => {
            Some(net::HostSide::open().map_err(|e| setup("open the host's network namespace", e))?)
        }
        _ => None,
    };
    if netns.is_none() {
        flags |= UnshareFlags::NEWNET;
    }
    // SAFETY: the hazard of unshare is CLONE_FILES/CLONE_FS making other threads' view of
    // descriptors or cwd diverge; we pass neither, and the helper has no other threads.
    unsafe { rthread::unshare_unsafe(flags) }
        .map_err(|e| setup("unshare namespaces", io::Error::from(e)))?;

    // Step 3: the environment's host name, in its own UTS namespace.
    rustix::system::sethostname(spec.hostname.as_bytes())
        .map_err(|e| setup("sethostname", io::Error::from(e)))?;

    // Step 4: the network namespace: either the one lambox prepared (lo up, listener bound;
    // lambox holds the listener), or a new one, whose `lo` we bring up and in which we bind the
    // Runtime API listener (only this environment can reach it; lambox serves it from outside
    // once we pass it over).
    let listener = match &netns {
        Some(ns) => {
            rthread::move_into_link_name_space(
                ns.as_fd(),
                Some(rthread::LinkNameSpaceType::Network),
            )
            .map_err(|e| setup("enter the network namespace", io::Error::from(e)))?;
            None
        }
        None => Some(
            net::configure(spec.port, spec.nat.as_ref().zip(host.as_ref()))
                .map_err(|e| setup("set up the network namespace", e))?,
        ),
    };
    drop(netns);
    drop(host);

    // Step 5: the root filesystem, then pivot_root into it (see mounts.rs).
    mounts::build_root(
        &spec.root,
        &spec.lowers,
        spec.legacy_overlay,
        spec.tmp_mb,
        spec.shm_mb,
    )?;

    // Step 6: PID 1 reports the function's wait status through this pipe, so that we can
    // mirror a death by signal (PID 1 of a namespace cannot signal itself).
    let (status_r, status_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| setup("pipe", io::Error::from(e)))?;

    // Step 7: fork PID 1.
    match sys::fork().map_err(|e| setup("fork PID 1", e))? {
        Forked::Child => {
            drop(listener);
            drop(status_r);
            pid1_main(ctl, &spec, status_w)
        }
        Forked::Parent(pid1) => {
            drop(status_w);
            // PID 1 is our unreaped child, so its pid cannot be reused under us here.
            let pidfd = rproc::pidfd_open(pid1, rproc::PidfdFlags::empty())
                .map_err(|e| setup("pidfd_open", io::Error::from(e)))?;
            send_ready(ctl.fd()?, pid1, &pidfd, listener.as_ref())
                .map_err(|e| setup("hand over the listener", e))?;
            Ok(Running { pid1, status_r })
        }
    }
}

fn send_ready(
    ctl: &OwnedFd,
    pid1: Pid,
    pidfd: &OwnedFd,
    listener: Option<&OwnedFd>,
) -> io::Result<()> {
    let msg = proto::ready_message(
        rproc::getpid().as_raw_nonzero().get() as u32,
        pid1.as_raw_nonzero().get() as u32,
    );
    let mut fds = vec![pidfd.as_fd()];
    fds.extend(listener.map(|l| l.as_fd()));
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !anc.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("ancillary buffer too small"));
    }
    rnet::sendmsg(ctl, &[IoSlice::new(&msg)], &mut anc, SendFlags::NOSIGNAL)?;
    Ok(())
}

/// The helper after setup: forward signals to PID 1, and when it is gone, leave the way the
/// function did.
fn helper_wait(r: Running) -> ! {
    let waited = waited_signals();
    loop {
        let sig = match sys::wait_signal(&waited) {
            Ok(s) => s,
            Err(_) => sys::exit_now(125),
        };
        if sig == libc::SIGCHLD {
            match rproc::waitpid(Some(r.pid1), WaitOptions::NOHANG) {
                Ok(Some((_, status))) => finish(status.as_raw(), &r.status_r),
                Ok(None) => {}
                Err(_) => sys::exit_now(125),
            }
        } else if let Some(s) = Signal::from_named_raw(sig) {
            // PID 1 is our unreaped child: its pid is still ours to signal.
            let _ = rproc::kill_process(r.pid1, s);
        }
    }
}

/// Exit with the function's status (reported by PID 1), or with PID 1's own if it reported
/// none (it was killed, e.g. by `Sandbox::kill`, or failed during setup).
fn finish(pid1_status: i32, status_r: &OwnedFd) -> ! {
    let mut b = [0u8; 4];
    let raw = match rustix::io::read(status_r, &mut b) {
        Ok(4) => i32::from_le_bytes(b),
        _ => pid1_status,
    };
    match sys::decode_wait_status(raw) {
        Exit::Code(c) => sys::exit_now(c),
        Exit::Signal(s) => sys::die_of_signal(s),
    }
}

/// PID 1 of the environment's PID namespace.
fn pid1_main(ctl: &mut Ctl, spec: &InitSpec, status_w: OwnedFd) -> ! {
    // If the helper dies, PID 1 dies, and with it every process of the namespace.
    let _ = rproc::set_parent_process_death_signal(Some(Signal::KILL));
    let _ = rthread::set_name(c"lambox-init");

    // Step 1: /proc showing this PID namespace only (mounted from inside it).
    if let Err(f) = mounts::mount_proc() {
        ctl.report(&f);
        sys::exit_now(125);
    }

    // Step 2: the function runs in a child: as PID 1 it would not get default signal actions
    // (awslambdaric ignores SIGTERM there).
    let function = match sys::fork() {
        Ok(Forked::Child) => {
            drop(status_w);
            function_main(ctl, spec)
        }
        Ok(Forked::Parent(p)) => p,
        Err(e) => {
            ctl.report(&setup("fork the function process", e));
            sys::exit_now(125);
        }
    };
    ctl.close();

    // Step 3: reap and forward until the function exits.
    let waited = waited_signals();
    loop {
        let sig = match sys::wait_signal(&waited) {
            Ok(s) => s,
            Err(_) => sys::exit_now(125),
        };
        if sig == libc::SIGCHLD {
            // Everything that has exited: the function, and orphans re-parented to us.
            while let Ok(Some((pid, status))) = rproc::wait(WaitOptions::NOHANG) {
                if pid == function {
                    let _ = rustix::io::write(&status_w, &status.as_raw().to_le_bytes());
                    // Our exit ends the namespace: the kernel kills whatever is left.
                    sys::exit_now(0);
                }
            }
        } else if let Some(s) = Signal::from_named_raw(sig) {
            let _ = rproc::kill_process(function, s);
        }
    }
}

fn function_main(ctl: &mut Ctl, spec: &InitSpec) -> ! {
    let f = exec_function(spec);
    ctl.report(&f);
    sys::exit_now(127)
}

/// Drop every privilege and exec the entrypoint. Returns only on failure.
fn exec_function(spec: &InitSpec) -> Failure {
    let Some(path) = spec.argv.first() else {
        return Failure::entrypoint("no entrypoint or command".into());
    };
    if !path.starts_with('/') {
        return Failure::entrypoint(format!(
            "fork/exec {path}: entrypoint is not an absolute path"
        ));
    }
    let cstrings = |v: &[String]| {
        v.iter()
            .map(|s| CString::new(s.as_str()))
            .collect::<Result<Vec<_>, _>>()
    };
    let (Ok(argv), Ok(envp), Ok(cpath)) = (
        cstrings(&spec.argv),
        cstrings(&spec.env),
        CString::new(path.as_str()),
    ) else {
        return Failure::setup("an argument or environment variable contains a NUL byte");
    };

    // Step 1: at most `nofile` open files, soft and hard; never above the current hard limit
    // (raising it would need CAP_SYS_RESOURCE).
    let current = rproc::getrlimit(Resource::Nofile);
    let n = current
        .maximum
        .map_or(spec.nofile, |hard| hard.min(spec.nofile));
    if let Err(e) = rproc::setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(n),
            maximum: Some(n),
        },
    ) {
        return setup("setrlimit(RLIMIT_NOFILE)", io::Error::from(e));
    }

    // Step 2: a cgroup namespace rooted at the environment's cgroups (all joined by the helper):
    // the function sees "/" in /proc/self/cgroup, not lambox's layout.
    // SAFETY: NEWCGROUP does not touch the descriptor table or cwd; we are single-threaded.
    if let Err(e) = unsafe { rthread::unshare_unsafe(UnshareFlags::NEWCGROUP) } {
        return setup("unshare the cgroup namespace", io::Error::from(e));
    }

    // Step 3: empty the capability bounding set (needs CAP_SETPCAP: before the uid change).
    for bit in 0..64 {
        match rthread::remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(
            1 << bit,
        )) {
            Ok(()) => {}
            Err(rustix::io::Errno::INVAL) => break, // past the kernel's last capability
            Err(e) => return setup("drop the capability bounding set", io::Error::from(e)),
        }
    }

    // Step 4: identity. No supplementary groups, then gid, then uid (real, effective and saved:
    // no way back). Moving every uid from 0 to non-zero without SECBIT_KEEP_CAPS empties the
    // permitted, effective and ambient capability sets.
    let (uid, gid) = (
        rproc::Uid::from_raw(spec.uid),
        rproc::Gid::from_raw(spec.gid),
    );
    if let Err(e) = rthread::set_thread_groups(&[]) {
        return setup("setgroups", io::Error::from(e));
    }
    if let Err(e) = rthread::set_thread_res_gid(gid, gid, gid) {
        return setup("setresgid", io::Error::from(e));
    }
    if let Err(e) = rthread::set_thread_res_uid(uid, uid, uid) {
        return setup("setresuid", io::Error::from(e));
    }
    // The inheritable set survives setuid: clear it too, so every set is empty.
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    if let Err(e) = rthread::set_capabilities(None, none) {
        return setup("capset", io::Error::from(e));
    }

    // Step 5: nothing exec'd from here on can gain privileges (set-uid bits, file caps).
    if let Err(e) = rthread::set_no_new_privs(true) {
        return setup("PR_SET_NO_NEW_PRIVS", io::Error::from(e));
    }

    // Step 6: the conventional umask for new files.
    rproc::umask(Mode::from_raw_mode(0o022));

    // Step 7: default signal dispositions, nothing blocked.
    sys::reset_signals_for_exec();

    // Step 8: the working directory, entered as the function's user: missing or not
    // searchable is Runtime.InvalidWorkingDir.
    if let Err(e) = rproc::chdir(spec.workdir.as_str()) {
        return Failure::workdir(format!("chdir {}: {}", spec.workdir, errno_text(e)));
    }

    // Step 9: only 0, 1 and 2 survive the exec; the control socket closes with it, which is
    // how lambox learns that the exec happened.
    if let Err(e) = sys::cloexec_from(3) {
        return setup("mark descriptors close-on-exec", e);
    }

    // Step 10: exec. Symlinks resolve inside the new root; execute permission is checked for
    // uid 993.
    let e = sys::execve(&cpath, &argv, &envp);
    Failure::entrypoint(format!("fork/exec {path}: {}", errno_text(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_text_is_go_style() {
        assert_eq!(
            errno_text(io::Error::from_raw_os_error(libc::ENOENT)),
            "no such file or directory"
        );
        assert_eq!(
            errno_text(io::Error::from_raw_os_error(libc::EACCES)),
            "permission denied"
        );
        assert_eq!(
            errno_text(io::Error::from_raw_os_error(libc::ENOEXEC)),
            "exec format error"
        );
    }
}
