//! Network namespaces: `lo` up, the Runtime API listener, and a small pool made ahead of time.
//!
//! Creating a network namespace is the most expensive single step of sandbox setup (~0.6–0.8 ms
//! of kernel work). So one dedicated lambox thread, `lambox-netns`, keeps [`POOL_SIZE`]
//! namespaces ready: it `unshare(CLONE_NEWNET)`s *itself* (network namespaces are per thread,
//! and this thread does nothing else, so it never matters which one it is in), brings `lo` up,
//! binds the listener, keeps an fd of the namespace, and queues both. `spawn` takes one and
//! passes the namespace fd to the helper, which `setns`es into it instead of unsharing. When
//! the pool is empty (first spawn, bursts) or the port differs from the first one asked for,
//! the helper creates the namespace itself as before.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Mutex, OnceLock};

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::net::{self as rnet, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use rustix::thread::{self as rthread, UnshareFlags};

/// Namespaces kept ready (plus one the thread holds while it waits for room).
const POOL_SIZE: usize = 2;

/// `ip link set lo up`, as one rtnetlink RTM_NEWLINK request, in the caller's network
/// namespace.
pub(crate) fn loopback_up() -> io::Result<()> {
    const RTM_NEWLINK: u16 = 16;
    const NLMSG_ERROR: u16 = 2;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const IFF_UP: u32 = 1;
    // In a new network namespace the loopback device is created first and always gets
    // interface index 1.
    const LO_INDEX: i32 = 1;

    let s = rnet::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        None, // NETLINK_ROUTE is protocol 0
    )?;
    // struct nlmsghdr (16 bytes) + struct ifinfomsg (16 bytes), native endian.
    let mut m = [0u8; 32];
    m[0..4].copy_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
    m[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes()); // nlmsg_type
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes()); // nlmsg_flags
    m[8..12].copy_from_slice(&1u32.to_ne_bytes()); // nlmsg_seq; nlmsg_pid 0 = kernel
                                                   // ifi_family AF_UNSPEC (0), pad, ifi_type 0: bytes 16..20 stay zero.
    m[20..24].copy_from_slice(&LO_INDEX.to_ne_bytes()); // ifi_index
    m[24..28].copy_from_slice(&IFF_UP.to_ne_bytes()); // ifi_flags
    m[28..32].copy_from_slice(&IFF_UP.to_ne_bytes()); // ifi_change: only IFF_UP
    rnet::send(&s, &m, SendFlags::empty())?;
    let mut buf = [0u8; 1024];
    let (_, n) = rnet::recv(&s, &mut buf[..], RecvFlags::empty())?;
    // The ack: nlmsghdr with type NLMSG_ERROR, then struct nlmsgerr whose `error` is 0 on
    // success or -errno.
    if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
        let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        return if err == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(-err))
        };
    }
    Err(io::Error::other("unexpected rtnetlink reply"))
}

/// A listening TCP socket on 127.0.0.1:`port` in the caller's network namespace.
pub(crate) fn runtime_api_listener(port: u16) -> io::Result<OwnedFd> {
    let s = rnet::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rnet::bind(&s, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))?;
    rnet::listen(&s, 1024)?;
    Ok(s)
}

/// A network namespace with `lo` up and the Runtime API listener bound in it.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// `/proc/thread-self/ns/net` of the namespace, for `setns`.
    pub netns: OwnedFd,
    pub listener: OwnedFd,
}

struct Pool {
    port: u16,
    rx: Mutex<Receiver<Prepared>>,
}

/// A ready namespace for `port`, if the pool has one. Starts the pool on first use.
pub(crate) fn take(port: u16) -> Option<Prepared> {
    static POOL: OnceLock<Option<Pool>> = OnceLock::new();
    let pool = POOL.get_or_init(|| start(port)).as_ref()?;
    if pool.port != port {
        return None;
    }
    pool.rx
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .try_recv()
        .ok()
}

fn start(port: u16) -> Option<Pool> {
    let (tx, rx) = sync_channel(POOL_SIZE);
    let spawned = std::thread::Builder::new()
        .name("lambox-netns".into())
        .spawn(move || loop {
            match prepare(port) {
                Ok(p) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot prepare network namespaces ahead of time");
                    return;
                }
            }
        });
    match spawned {
        Ok(_) => Some(Pool {
            port,
            rx: Mutex::new(rx),
        }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the network namespace thread");
            None
        }
    }
}

/// Move the calling thread into a new network namespace and prepare it.
fn prepare(port: u16) -> io::Result<Prepared> {
    // SAFETY: NEWNET changes only the calling thread's network namespace (it touches neither
    // the descriptor table nor cwd, which CLONE_FILES/CLONE_FS would). The calling thread is
    // the dedicated `lambox-netns` thread, which opens no other sockets.
    unsafe { rthread::unshare_unsafe(UnshareFlags::NEWNET) }?;
    loopback_up()?;
    let listener = runtime_api_listener(port)?;
    let netns = rfs::open(
        "/proc/thread-self/ns/net",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(Prepared { netns, listener })
}
