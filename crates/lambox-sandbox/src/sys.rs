//! The few system calls that rustix does not offer safely, wrapped once, each with its safety
//! argument. Everything here is only ever called by the single-threaded init helper (see
//! [`crate::init_main`]) and the processes it forks.

use std::ffi::{c_int, CString};
use std::io;

use rustix::process::Pid;

/// Signals the helper and the namespace's PID 1 pass on to the process below them.
pub(crate) const FORWARDED: [c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Result of [`fork`].
pub(crate) enum Forked {
    Child,
    Parent(Pid),
}

/// `fork()`.
///
/// Only for the single-threaded init helper and its descendants: the child of a
/// multi-threaded process may only call async-signal-safe functions, and the code after our
/// forks allocates.
pub(crate) fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions of its own; the hazard is running
    // non-async-signal-safe code in the child of a multi-threaded parent. Our callers are the
    // init helper (a freshly exec'd, single-threaded process: `init_main` is documented to be
    // called before any thread exists) and its single-threaded children.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(Pid::from_raw(pid).ok_or_else(|| {
            io::Error::other("fork returned an invalid pid")
        })?)),
    }
}

fn sigset(signals: &[c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is a plain bit array for which all-zero is a valid value; sigemptyset
    // then initialises it properly.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in signals {
        // SAFETY: `set` is initialised; invalid signal numbers only make sigaddset fail.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}

/// Block `signals` for the calling thread (the whole process: it is single-threaded), so that
/// they stay pending until [`wait_signal`] takes them. Blocked signals survive `fork` and
/// `exec`; [`reset_signals_for_exec`] clears them again before the function runs.
pub(crate) fn block_signals(signals: &[c_int]) -> io::Result<()> {
    let set = sigset(signals);
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let r = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Wait until one of `signals` (which must be blocked) is pending, take it, return its number.
pub(crate) fn wait_signal(signals: &[c_int]) -> io::Result<c_int> {
    let set = sigset(signals);
    loop {
        // SAFETY: `set` is initialised; a null siginfo pointer is allowed.
        let r = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if r >= 0 {
            return Ok(r);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Give the function the signal state a freshly started process expects: every disposition
/// back to default (an ignored signal, such as the SIGPIPE that Rust's runtime ignores in the
/// helper, would otherwise stay ignored across exec) and nothing blocked.
pub(crate) fn reset_signals_for_exec() {
    let max = libc::SIGRTMAX();
    for sig in 1..=max {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: setting SIG_DFL installs no handler code; numbers libc reserves for itself
        // or that do not exist only make the call fail, which we ignore.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let empty = sigset(&[]);
    // SAFETY: `empty` is initialised; a null old-set pointer is allowed.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) };
}

/// Die of `sig` the way the process we mirror did, so that our own parent sees "killed by
/// signal N". Falls back to exit code 128 + N if the signal does not kill us.
pub(crate) fn die_of_signal(sig: c_int) -> ! {
    // No core file of the helper for a mirrored SIGSEGV/SIGABRT: the function's own core (if
    // any) is what matters. Lowering a limit needs no privilege.
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: None,
        },
    );
    // SAFETY: SIG_DFL installs no handler code.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
    let set = sigset(&[sig]);
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    // SAFETY: raise has no preconditions; for a fatal default disposition it does not return.
    unsafe { libc::raise(sig) };
    exit_now(128 + sig)
}

/// `_exit`: leave at once, without running atexit handlers or flushing std's buffers (which a
/// forked child shares with its parent's memory image and must not flush twice).
pub(crate) fn exit_now(code: c_int) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

/// Mark every file descriptor from `first` up close-on-exec, so that the function inherits
/// exactly 0, 1 and 2 while the status socket stays usable until the exec itself.
pub(crate) fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags; it touches
    // no memory and cannot invalidate any OwnedFd.
    let r = unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as c_int) };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11 lack CLOSE_RANGE_CLOEXEC: walk the descriptor table instead (the
    // soft RLIMIT_NOFILE has already been lowered to at most 1024).
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1024)
        .min(1 << 20) as c_int;
    for fd in first as c_int..limit {
        // SAFETY: F_GETFD/F_SETFD on a number that may or may not be open only read or set
        // the descriptor flag; a closed number fails with EBADF, which we skip.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// `execve(path, argv, envp)`; returns only on failure, with the reason.
pub(crate) fn execve(path: &CString, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // SAFETY: `path` and every element are NUL-terminated C strings that outlive the call; both
    // pointer arrays are NULL-terminated. On success execve does not return.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
    io::Error::last_os_error()
}

/// The decoded form of a raw `wait` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
}

/// Decode a raw `wait` status (the `WIFEXITED`/`WIFSIGNALED` encoding, identical on every
/// Linux architecture).
pub(crate) fn decode_wait_status(raw: i32) -> Exit {
    let low = raw & 0x7f;
    if low == 0 {
        Exit::Code((raw >> 8) & 0xff)
    } else if low != 0x7f {
        Exit::Signal(low)
    } else {
        // Stopped: not something we ask waitpid for; treat as a generic failure.
        Exit::Code(125)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_decoding() {
        assert_eq!(decode_wait_status(0), Exit::Code(0));
        assert_eq!(decode_wait_status(42 << 8), Exit::Code(42));
        assert_eq!(decode_wait_status(9), Exit::Signal(9));
        assert_eq!(decode_wait_status(11 | 0x80), Exit::Signal(11)); // core dumped
    }
}
