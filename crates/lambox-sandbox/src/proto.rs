//! The wire between `spawn` (in lambox) and the init helper: one `SOCK_SEQPACKET` socket pair,
//! the helper's end on its standard input.
//!
//! * lambox → helper: the [`InitSpec`] as JSON, cut into messages of at most [`CHUNK`] bytes
//!   (the first with a prepared network namespace attached as `SCM_RIGHTS`, if lambox had one),
//!   ended by `shutdown(SHUT_WR)`.
//! * Pre-spawned helpers (`crate::helpers`) first get a [`TAG_JOIN`] message naming the cgroups
//!   to join at once, and answer it with [`TAG_JOIN`] and their pid; the spec follows later.
//! * helper → lambox: [`TAG_READY`] once (with a pidfd of the namespace's PID 1 and, unless
//!   lambox prepared the network namespace, the listener attached), and [`TAG_ERROR`] if anything
//!   fails before the function is exec'd. Every copy of the helper's end is close-on-exec or closed on purpose, so end-of-file
//!   means: the function process has been exec'd (or everything has exited).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Size of one spec message (well below the default socket buffer, so a send never needs the
/// reader to make progress first).
pub(crate) const CHUNK: usize = 32 * 1024;

/// `R` + helper pid (u32 LE) + PID 1's pid in lambox's PID namespace (u32 LE); fds attached: a
/// pidfd of PID 1, then the Runtime API listener if the helper created the network namespace.
pub(crate) const TAG_READY: u8 = b'R';
/// `E` + [`ErrorKind`] byte + UTF-8 message.
pub(crate) const TAG_ERROR: u8 = b'E';
/// lambox → a pre-spawned helper, before the spec: `J` + the JSON array of `cgroup.procs` files
/// to join now (see `crate::helpers`). helper → lambox once joined: `J` + its pid (u32 LE).
pub(crate) const TAG_JOIN: u8 = b'J';

/// Which kind of failure a [`TAG_ERROR`] message reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ErrorKind {
    Entrypoint = 1,
    WorkingDir = 2,
    Setup = 3,
}

impl ErrorKind {
    pub(crate) fn from_byte(b: u8) -> Self {
        match b {
            1 => Self::Entrypoint,
            2 => Self::WorkingDir,
            _ => Self::Setup,
        }
    }
}

/// Everything the helper needs, computed by lambox (the helper reads no configuration itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InitSpec {
    /// `cgroup.procs` files of the environment's cgroups, one per hierarchy: the helper writes
    /// its pid into each before it forks anything.
    pub cgroup_procs: Vec<PathBuf>,
    /// Mount point (a plain, empty, shared directory) for the root overlay in the new mount
    /// namespace.
    pub root: PathBuf,
    /// Overlay lower directories, TOP first: the skeleton, then the image layers top → bottom.
    pub lowers: Vec<PathBuf>,
    /// Use `mount(2)` with a `lowerdir=` string instead of `fsconfig("lowerdir+")` (kernels
    /// before 6.8 lack the latter; the helper also falls back on its own).
    pub legacy_overlay: bool,
    pub tmp_mb: u32,
    pub shm_mb: u32,
    pub hostname: String,
    /// The first spec message carries (SCM_RIGHTS) a prepared network namespace to `setns`
    /// into: `lo` is up and lambox already holds the listener.
    pub netns_passed: bool,
    /// Without a passed namespace: give the new one a NAT uplink from this plan.
    #[serde(default)]
    pub nat: Option<crate::net::NatPlan>,
    pub port: u16,
    pub argv: Vec<String>,
    /// `KEY=VALUE`, exactly what the function gets.
    pub env: Vec<String>,
    pub workdir: String,
    pub uid: u32,
    pub gid: u32,
    pub nofile: u64,
}

/// Encode a [`TAG_ERROR`] message.
pub(crate) fn error_message(kind: ErrorKind, text: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(2 + text.len());
    m.push(TAG_ERROR);
    m.push(kind as u8);
    // Keep it one line and bounded, whatever the source produced.
    let line: String = text.replace(['\n', '\r'], " ").chars().take(2000).collect();
    m.extend_from_slice(line.as_bytes());
    m
}

/// Encode a [`TAG_READY`] message (the fds travel alongside).
pub(crate) fn ready_message(helper_pid: u32, pid1: u32) -> [u8; 9] {
    let mut m = [0u8; 9];
    m[0] = TAG_READY;
    m[1..5].copy_from_slice(&helper_pid.to_le_bytes());
    m[5..9].copy_from_slice(&pid1.to_le_bytes());
    m
}

/// Encode the helper's [`TAG_JOIN`] answer.
pub(crate) fn joined_message(helper_pid: u32) -> [u8; 5] {
    let mut m = [0u8; 5];
    m[0] = TAG_JOIN;
    m[1..5].copy_from_slice(&helper_pid.to_le_bytes());
    m
}

/// A decoded helper → lambox message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message {
    Joined { helper_pid: u32 },
    Ready { helper_pid: u32, pid1: u32 },
    Error { kind: ErrorKind, text: String },
}

pub(crate) fn parse_message(m: &[u8]) -> Option<Message> {
    match *m.first()? {
        TAG_READY if m.len() == 9 => {
            let helper_pid = u32::from_le_bytes(m[1..5].try_into().ok()?);
            let pid1 = u32::from_le_bytes(m[5..9].try_into().ok()?);
            Some(Message::Ready { helper_pid, pid1 })
        }
        TAG_JOIN if m.len() == 5 => Some(Message::Joined {
            helper_pid: u32::from_le_bytes(m[1..5].try_into().ok()?),
        }),
        TAG_ERROR if m.len() >= 2 => Some(Message::Error {
            kind: ErrorKind::from_byte(m[1]),
            text: String::from_utf8_lossy(&m[2..]).into_owned(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let r = ready_message(7, 4_000_000);
        assert_eq!(
            parse_message(&r),
            Some(Message::Ready {
                helper_pid: 7,
                pid1: 4_000_000
            })
        );
        let e = error_message(ErrorKind::WorkingDir, "chdir /x: no such\nfile");
        assert_eq!(
            parse_message(&e),
            Some(Message::Error {
                kind: ErrorKind::WorkingDir,
                text: "chdir /x: no such file".into()
            })
        );
        assert_eq!(
            parse_message(&joined_message(42)),
            Some(Message::Joined { helper_pid: 42 })
        );
        assert_eq!(parse_message(b""), None);
        assert_eq!(parse_message(b"R12"), None);
        assert_eq!(parse_message(b"Zx"), None);
    }
}
