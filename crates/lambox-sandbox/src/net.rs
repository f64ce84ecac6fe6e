//! Network namespaces: `lo` up, the environment's uplink (with NAT: a veth pair), the Runtime
//! API listener, and a small pool made ahead of time.
//!
//! Creating a network namespace is the most expensive single step of sandbox setup (~0.6–0.8 ms
//! of kernel work), and its veth pair costs about as much again. So one dedicated lambox thread,
//! `lambox-netns`, keeps [`POOL_SIZE`] namespaces ready: it `unshare(CLONE_NEWNET)`s *itself*
//! (network namespaces are per thread, and this thread does nothing else, so it never matters
//! which one it is in), configures it, binds the listener, keeps an fd of the namespace, and
//! queues both. `spawn` takes one and passes the namespace fd to the helper, which `setns`es
//! into it instead of unsharing. When the pool is empty (first spawn, bursts) or the port or
//! network differs from the first one asked for, the helper does the same work itself.
//!
//! **NAT uplink** (see `hostnet.rs` for the host's side: the nftables table and forwarding).
//! The subnet is cut into /30 slots; slot `s` is the veth pair `lambox<s>` (host end,
//! `network + 4s + 1`) ↔ `eth0` (environment, `network + 4s + 2`, default route via the host
//! end). A slot is claimed by creating its host interface: interface names are unique in the
//! host's namespace, so two environments (even of two lambox processes) never share an
//! address, and no lock or registry is needed. Neither end gets an IPv6 address. The pair is
//! destroyed by the kernel with the environment's namespace (when its last process and the
//! listener are gone): there is nothing to remove by hand.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Mutex, OnceLock};

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::net::{self as rnet, AddressFamily, SocketFlags, SocketType};
use rustix::thread::{self as rthread, UnshareFlags};
use serde::{Deserialize, Serialize};

use crate::netlink::Netlink;

/// Namespaces kept ready (plus one the thread holds while it waits for room).
const POOL_SIZE: usize = 2;

/// Host-side veth names: this prefix and the slot number. The nftables rules match it.
pub(crate) const HOST_IF_PREFIX: &str = "lambox";

/// Slots tried before giving up on finding a free one.
const MAX_PROBES: u32 = 4096;

/// Where environments' uplinks get their addresses: a subnet cut into /30 slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NatPlan {
    /// The subnet's first address (host bits zero).
    pub network: Ipv4Addr,
    /// 8..=30.
    pub prefix: u8,
}

impl NatPlan {
    fn slots(&self) -> u32 {
        1u32 << (32 - u32::from(self.prefix) - 2)
    }

    /// (host end, environment end) of slot `s`.
    fn addresses(&self, s: u32) -> (Ipv4Addr, Ipv4Addr) {
        let base = u32::from(self.network) + 4 * s;
        (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
    }
}

/// The host's network namespace, held open by a thread or process about to leave it: its fd
/// (where veth host ends are created) and an rtnetlink socket in it.
#[derive(Debug)]
pub(crate) struct HostSide {
    ns: OwnedFd,
    nl: Netlink,
}

impl HostSide {
    /// Call while still in the host's namespace.
    pub(crate) fn open() -> io::Result<Self> {
        let ns = rfs::open(
            "/proc/thread-self/ns/net",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            ns,
            nl: Netlink::open()?,
        })
    }
}

/// The next slot to try: spread by pid, so that processes (lambox, and helpers that make
/// their own namespace) rarely probe the same slots.
fn first_slot(slots: u32) -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(n)
        % slots
}

/// Configure the caller thread's (new, empty) network namespace: `lo` up; with `nat`, the
/// veth pair, both addresses and the default route. Then bind the Runtime API listener.
pub(crate) fn configure(port: u16, nat: Option<(&NatPlan, &HostSide)>) -> io::Result<OwnedFd> {
    let nl = Netlink::open()?;
    // In a new network namespace the loopback device is created first and always gets
    // interface index 1.
    nl.link_up(1)?;
    if let Some((plan, host)) = nat {
        add_uplink(&nl, plan, host)?;
    }
    runtime_api_listener(port)
}

fn add_uplink(nl: &Netlink, plan: &NatPlan, host: &HostSide) -> io::Result<()> {
    let slots = plan.slots();
    let start = first_slot(slots);
    for i in 0..slots.min(MAX_PROBES) {
        let slot = (start + i) % slots;
        let name = format!("{HOST_IF_PREFIX}{slot}");
        match nl.add_veth("eth0", &name, &host.ns) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("create veth {name}: {e}"))),
        }
        let (host_addr, env_addr) = plan.addresses(slot);
        let ctx = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        let host_if = host.nl.index_of(&name).map_err(|e| ctx(&name, e))?;
        host.nl
            .no_ipv6(host_if)
            .map_err(|e| ctx(&format!("{name} without IPv6"), e))?;
        host.nl
            .add_address(host_if, host_addr, 30)
            .map_err(|e| ctx(&format!("address {host_addr}/30 on {name}"), e))?;
        host.nl
            .link_up(host_if)
            .map_err(|e| ctx(&format!("{name} up"), e))?;
        let eth0 = nl.index_of("eth0").map_err(|e| ctx("eth0", e))?;
        nl.no_ipv6(eth0).map_err(|e| ctx("eth0 without IPv6", e))?;
        nl.add_address(eth0, env_addr, 30)
            .map_err(|e| ctx(&format!("address {env_addr}/30 on eth0"), e))?;
        nl.link_up(eth0).map_err(|e| ctx("eth0 up", e))?;
        nl.add_default_route(eth0, host_addr)
            .map_err(|e| ctx(&format!("default route via {host_addr}"), e))?;
        return Ok(());
    }
    Err(io::Error::other(format!(
        "no free address slot in {}/{} (all {HOST_IF_PREFIX}N interfaces tried are in use)",
        plan.network, plan.prefix
    )))
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

/// A configured network namespace with the Runtime API listener bound in it.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// `/proc/thread-self/ns/net` of the namespace, for `setns`.
    pub netns: OwnedFd,
    pub listener: OwnedFd,
}

struct Pool {
    port: u16,
    nat: Option<NatPlan>,
    rx: Mutex<Receiver<Prepared>>,
}

/// The pool for `port` and `nat`, started on first use; `None` if the pool was started for
/// another port or network (only the first combination asked for is pooled).
fn pool(port: u16, nat: Option<&NatPlan>) -> Option<&'static Pool> {
    static POOL: OnceLock<Option<Pool>> = OnceLock::new();
    let pool = POOL.get_or_init(|| start(port, nat.copied())).as_ref()?;
    (pool.port == port && pool.nat.as_ref() == nat).then_some(pool)
}

/// Start the pool now, so that even the first environment finds a namespace ready.
pub(crate) fn prewarm(port: u16, nat: Option<&NatPlan>) {
    let _ = pool(port, nat);
}

/// A ready namespace for `port` and `nat`, if the pool has one.
pub(crate) fn take(port: u16, nat: Option<&NatPlan>) -> Option<Prepared> {
    pool(port, nat)?
        .rx
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .try_recv()
        .ok()
}

fn start(port: u16, nat: Option<NatPlan>) -> Option<Pool> {
    let (tx, rx) = sync_channel(POOL_SIZE);
    let spawned = std::thread::Builder::new()
        .name("lambox-netns".into())
        .spawn(move || {
            // Opened while this thread is still in the host's namespace.
            let host = match nat.map(|_| HostSide::open()).transpose() {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the host's network namespace");
                    return;
                }
            };
            loop {
                let t = std::time::Instant::now();
                match prepare(port, nat.as_ref().zip(host.as_ref())) {
                    Ok(p) => {
                        tracing::trace!(took = ?t.elapsed(), "network namespace prepared");
                        if tx.send(p).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot prepare network namespaces ahead of time");
                        return;
                    }
                }
            }
        });
    match spawned {
        Ok(_) => Some(Pool {
            port,
            nat,
            rx: Mutex::new(rx),
        }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the network namespace thread");
            None
        }
    }
}

/// Move the calling thread into a new network namespace and prepare it.
fn prepare(port: u16, nat: Option<(&NatPlan, &HostSide)>) -> io::Result<Prepared> {
    // SAFETY: NEWNET changes only the calling thread's network namespace (it touches neither
    // the descriptor table nor cwd, which CLONE_FILES/CLONE_FS would). The calling thread is
    // the dedicated `lambox-netns` thread, which opens no other sockets.
    unsafe { rthread::unshare_unsafe(UnshareFlags::NEWNET) }?;
    let listener = configure(port, nat)?;
    let netns = rfs::open(
        "/proc/thread-self/ns/net",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(Prepared { netns, listener })
}

/// Time [`prepare`] `n` times on a scratch thread (namespaces are dropped as they are made):
/// medians for BENCHMARKS.md, from the `netns_cost` test.
pub(crate) fn time_prepare(n: usize, nat: Option<NatPlan>) -> io::Result<Vec<std::time::Duration>> {
    std::thread::spawn(move || {
        let host = nat.map(|_| HostSide::open()).transpose()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = std::time::Instant::now();
            let p = prepare(0, nat.as_ref().zip(host.as_ref()))?;
            out.push(t.elapsed());
            drop(p);
        }
        Ok(out)
    })
    .join()
    .map_err(|_| io::Error::other("timing thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_slash_30s() {
        let plan = NatPlan {
            network: Ipv4Addr::new(198, 18, 0, 0),
            prefix: 15,
        };
        assert_eq!(plan.slots(), 32768);
        assert_eq!(
            plan.addresses(0),
            (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2))
        );
        assert_eq!(
            plan.addresses(32767),
            (
                Ipv4Addr::new(198, 19, 255, 253),
                Ipv4Addr::new(198, 19, 255, 254)
            )
        );
        let small = NatPlan {
            network: Ipv4Addr::new(10, 9, 0, 0),
            prefix: 30,
        };
        assert_eq!(small.slots(), 1);
        assert!(first_slot(1) == 0);
    }
}
