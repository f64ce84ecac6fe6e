//! The host's side of NAT networking: the `inet lambox` nftables table, IPv4 forwarding, and
//! the `/etc/resolv.conf` environments see.
//!
//! **One table for all lambox processes.** Its rules match the host ends of environments'
//! veth pairs by name (`lambox*`), never by address, so they serve every lambox process on the
//! host whatever subnet each uses. Who creates and removes it is decided under two lock files
//! in `/run/lambox/`: `net.lock` (held exclusively while starting or stopping) and `net.users`
//! (held shared by every running lambox process with NAT). A starter that can take `net.users`
//! exclusively is alone: it replaces any table left by a crashed run; a stopper that can take
//! it exclusively is the last, and removes the table. A crashed process's locks vanish with it.
//!
//! **Forwarding.** NAT needs `net.ipv4.ip_forward = 1`, a host-wide switch. If it was 0, the
//! first user sets it, records the old value in `/run/lambox/net.forward`, and adds a rule
//! that drops every forwarded IPv4 packet not to or from a `lambox*` interface, so the host
//! still routes nothing else; the last user restores it. If it was 1 already (Docker, a
//! router), it is left alone and no such rule is added.
//!
//! The rules (see [`table_script`]): nothing from an environment reaches the host itself
//! (input), another environment, link-local addresses (169.254.0.0/16, the cloud metadata
//! service among them), multicast or broadcast, or anything over IPv6; nothing opens a
//! connection into an environment, neither from outside nor from the host; everything else an
//! environment sends is masqueraded behind the host's address on the outgoing interface.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use rustix::fs::{self as rfs, FlockOperation, Mode, OFlags};

use crate::net::{NatPlan, HOST_IF_PREFIX};

/// The nftables table lambox owns.
pub const NFT_TABLE: &str = "inet lambox";

/// The default subnet environments' addresses come from: 198.18.0.0/15, set aside for
/// benchmarking network devices (RFC 2544), so almost never used by a real network.
pub const DEFAULT_SUBNET: &str = "198.18.0.0/15";

const LOCK_DIR: &str = "/run/lambox";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Why the host's network could not be prepared (one line, naming what failed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NetworkError(String);

fn err(what: impl fmt::Display, e: impl fmt::Display) -> NetworkError {
    NetworkError(format!("{what}: {e}"))
}

/// An IPv4 subnet for environments' addresses, `A.B.C.D/N` with N in 8..=30 and no host bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    /// Whether `addr` lies inside.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.prefix));
        u32::from(addr) & mask == u32::from(self.network)
    }

    fn overlaps(&self, network: u32, mask: u32) -> bool {
        let ours = u32::MAX << (32 - u32::from(self.prefix));
        let m = ours & mask; // the shorter of the two prefixes
        u32::from(self.network) & m == network & m
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Self, NetworkError> {
        let bad = |why: &str| NetworkError(format!("invalid subnet {s:?}: {why}"));
        let (a, p) = s.split_once('/').ok_or_else(|| bad("expected A.B.C.D/N"))?;
        let network: Ipv4Addr = a.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = p.parse().map_err(|_| bad("not a prefix length"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("the prefix length must be 8 to 30"));
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        if u32::from(network) & !mask != 0 {
            return Err(bad("host bits are set"));
        }
        Ok(Self { network, prefix })
    }
}

/// How environments are networked ([`crate::SandboxConfig::network`]).
#[derive(Debug, Clone, Default)]
pub enum Network {
    /// Only `lo` (the Runtime API). The default.
    #[default]
    None,
    /// Outbound IPv4 through a veth pair and NAT; made by [`HostNetwork::setup`].
    Nat(NatNetwork),
}

impl Network {
    pub(crate) fn plan(&self) -> Option<&NatPlan> {
        match self {
            Network::None => None,
            Network::Nat(n) => Some(&n.plan),
        }
    }

    /// The overlay layer holding `/etc/resolv.conf`, if any.
    pub(crate) fn resolv_layer(&self) -> Option<&Path> {
        match self {
            Network::None => None,
            Network::Nat(n) => Some(&n.resolv_layer),
        }
    }
}

/// The NAT network of a running [`HostNetwork`].
#[derive(Debug, Clone)]
pub struct NatNetwork {
    plan: NatPlan,
    resolv_layer: PathBuf,
}

/// The host's side of NAT networking, for as long as it lives: the nftables table and
/// forwarding (shared with other lambox processes; see the module docs). [`HostNetwork::teardown`]
/// (or drop) releases it; the last user removes the table and restores forwarding.
#[derive(Debug)]
pub struct HostNetwork {
    subnet: Subnet,
    nameservers: Vec<Ipv4Addr>,
    network: NatNetwork,
    users: Option<OwnedFd>,
}

impl HostNetwork {
    /// Prepare the host: check that `subnet` collides with no route of the host, write the
    /// environments' `resolv.conf` under `state_dir` (with `dns`, else the host's reachable
    /// nameservers), create (or join) the nftables table and turn IPv4 forwarding on. Needs
    /// root and the `nft` program.
    pub fn setup(
        state_dir: &Path,
        subnet: Subnet,
        dns: Option<&[Ipv4Addr]>,
    ) -> Result<Self, NetworkError> {
        check_routes(subnet)?;
        let (nameservers, origin) = match dns {
            Some(d) => {
                if let Some(bad) = d.iter().find(|a| !reachable_nameserver(a)) {
                    return Err(NetworkError(format!(
                        "nameserver {bad}: a loopback, link-local or unspecified address cannot be reached from an environment"
                    )));
                }
                (d.to_vec(), "given to lambox run")
            }
            None => (host_nameservers(), "from the host's resolvers"),
        };
        let resolv_layer = write_resolv_layer(state_dir, &resolv_conf(&nameservers, origin))?;

        std::fs::create_dir_all(LOCK_DIR).map_err(|e| err(format!("create {LOCK_DIR}"), e))?;
        let mutex = lock_file("net.lock")?;
        flock(&mutex, FlockOperation::LockExclusive, "net.lock")?;
        let users = lock_file("net.users")?;
        let alone = rfs::flock(&users, FlockOperation::NonBlockingLockExclusive).is_ok();
        let result = (|| {
            let we_enabled = ensure_forwarding()?;
            if alone || !table_exists() {
                nft(&table_script(alone, we_enabled))?;
            }
            Ok(())
        })();
        // Shared from now on (a conversion: we hold net.lock, so no one starts or stops in
        // between).
        let joined = flock(&users, FlockOperation::LockShared, "net.users");
        if result.is_err() && alone {
            // Nothing will use forwarding: put it back as it was.
            let _ = restore_forwarding();
        }
        drop(mutex);
        result?;
        joined?;
        Ok(Self {
            subnet,
            nameservers,
            network: NatNetwork {
                plan: NatPlan {
                    network: subnet.network,
                    prefix: subnet.prefix,
                },
                resolv_layer,
            },
            users: Some(users),
        })
    }

    /// The value for [`crate::SandboxConfig::network`].
    pub fn network(&self) -> Network {
        Network::Nat(self.network.clone())
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The nameservers written into environments' `/etc/resolv.conf` (empty: the host has
    /// none an environment can reach, e.g. only a loopback resolver).
    pub fn nameservers(&self) -> &[Ipv4Addr] {
        &self.nameservers
    }

    /// Leave: the last lambox process using NAT removes the table and restores forwarding.
    /// Environments still running lose their outbound access. Errors are logged.
    pub fn teardown(mut self) {
        self.release();
    }

    fn release(&mut self) {
        let Some(users) = self.users.take() else {
            return;
        };
        let Ok(mutex) = lock_file("net.lock") else {
            return;
        };
        if flock(&mutex, FlockOperation::LockExclusive, "net.lock").is_err() {
            return;
        }
        let _ = rfs::flock(&users, FlockOperation::Unlock);
        if rfs::flock(&users, FlockOperation::NonBlockingLockExclusive).is_ok() {
            if let Err(e) = nft(&format!("delete table {NFT_TABLE}\n")) {
                tracing::warn!(error = %e, "cannot remove the nftables table");
            }
            if let Err(e) = restore_forwarding() {
                tracing::warn!(error = %e, "cannot restore net.ipv4.ip_forward");
            }
        }
        drop(users);
        drop(mutex);
    }
}

impl Drop for HostNetwork {
    fn drop(&mut self) {
        self.release();
    }
}

fn lock_file(name: &str) -> Result<OwnedFd, NetworkError> {
    let path = format!("{LOCK_DIR}/{name}");
    rfs::open(
        &path,
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| err(format!("open {path}"), io::Error::from(e)))
}

fn flock(fd: &OwnedFd, op: FlockOperation, name: &str) -> Result<(), NetworkError> {
    loop {
        match rfs::flock(fd, op) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(err(format!("lock {LOCK_DIR}/{name}"), io::Error::from(e))),
        }
    }
}

fn forward_state() -> PathBuf {
    Path::new(LOCK_DIR).join("net.forward")
}

/// Turn IPv4 forwarding on if it is off, remembering the old value (kept from a crashed run if
/// one left it). Returns whether lambox is the one that turned it on.
fn ensure_forwarding() -> Result<bool, NetworkError> {
    let state = forward_state();
    let current = std::fs::read_to_string(IP_FORWARD).map_err(|e| err(IP_FORWARD, e))?;
    if current.trim() != "1" && !state.exists() {
        std::fs::write(&state, current.trim()).map_err(|e| err(state.display(), e))?;
    }
    if current.trim() != "1" {
        std::fs::write(IP_FORWARD, "1")
            .map_err(|e| err(format!("enable IPv4 forwarding ({IP_FORWARD})"), e))?;
    }
    Ok(state.exists())
}

fn restore_forwarding() -> io::Result<()> {
    let state = forward_state();
    match std::fs::read_to_string(&state) {
        Ok(old) => {
            std::fs::write(IP_FORWARD, old.trim())?;
            std::fs::remove_file(&state)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The table, as an `nft -f` script. `replace`: remove a stale one first. `only_ours`: lambox
/// turned forwarding on, so forward nothing that is not an environment's.
pub(crate) fn table_script(replace: bool, only_ours: bool) -> String {
    let env = format!("\"{HOST_IF_PREFIX}*\"");
    let mut s = String::new();
    if replace {
        // `table` creates it if missing, so that `delete` cannot fail.
        s.push_str(&format!("table {NFT_TABLE}\ndelete table {NFT_TABLE}\n"));
    }
    s.push_str(&format!(
        "table {NFT_TABLE} {{
  chain input {{
    type filter hook input priority filter - 10; policy accept;
    iifname {env} drop comment \"environments never reach the host itself\"
  }}
  chain forward {{
    type filter hook forward priority filter - 10; policy accept;
    iifname {env} oifname {env} drop comment \"nor each other\"
    iifname {env} meta nfproto != ipv4 drop comment \"IPv4 only\"
    iifname {env} ip daddr {{ 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/3 }} drop comment \"nor link-local (cloud metadata), loopback, multicast\"
    oifname {env} ct state established,related accept
    oifname {env} drop comment \"nothing opens a connection into an environment\"
{}  }}
  chain output {{
    type filter hook output priority filter - 10; policy accept;
    oifname {env} ct state new drop comment \"not even from the host\"
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    iifname {env} masquerade
  }}
}}
",
        if only_ours {
            format!("    meta nfproto ipv4 iifname != {env} oifname != {env} drop comment \"lambox turned forwarding on: forward nothing else\"\n")
        } else {
            String::new()
        }
    ));
    s
}

fn table_exists() -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", "lambox"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn nft(script: &str) -> Result<(), NetworkError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            err(
                "run nft",
                format!("{e} (NAT networking needs nftables; or use --network none)"),
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| err("write to nft", e))?;
    }
    let out = child.wait_with_output().map_err(|e| err("run nft", e))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        let line = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(err(
            format!("nft table {NFT_TABLE}"),
            format!("{} {line}", out.status),
        ));
    }
    Ok(())
}

/// Refuse a subnet that overlaps a route of the host (other than lambox's own interfaces):
/// environments could not reach that network, and replies would be misrouted.
fn check_routes(subnet: Subnet) -> Result<(), NetworkError> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[0].starts_with(HOST_IF_PREFIX) {
            continue;
        }
        // Destination and Mask are hex in the kernel's (little-endian) byte order.
        let (Ok(dest), Ok(mask)) = (u32::from_str_radix(f[1], 16), u32::from_str_radix(f[7], 16))
        else {
            continue;
        };
        let (dest, mask) = (
            u32::from_be_bytes(dest.to_ne_bytes()),
            u32::from_be_bytes(mask.to_ne_bytes()),
        );
        if mask == 0 {
            continue; // the default route overlaps everything, harmlessly
        }
        if subnet.overlaps(dest, mask) {
            return Err(NetworkError(format!(
                "the environments' subnet {subnet} overlaps the host's route {}/{} on {}: choose another with --network-subnet",
                Ipv4Addr::from(dest),
                mask.count_ones(),
                f[0]
            )));
        }
    }
    Ok(())
}

/// Nameservers from a resolv.conf text that an environment can reach through NAT: IPv4 and
/// not loopback.
pub(crate) fn usable_nameservers(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next()?.parse::<Ipv4Addr>().ok())
                .flatten()
        })
        .filter(reachable_nameserver)
        .collect()
}

/// Whether an environment can reach a resolver at `a` (through NAT, IPv4).
fn reachable_nameserver(a: &Ipv4Addr) -> bool {
    !a.is_loopback() && !a.is_link_local() && !a.is_unspecified()
}

/// The host's usable nameservers: `/etc/resolv.conf`'s, or if it names only a loopback
/// resolver (systemd-resolved's 127.0.0.53), the upstream servers systemd-resolved lists.
fn host_nameservers() -> Vec<Ipv4Addr> {
    for path in ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"] {
        let v = usable_nameservers(&std::fs::read_to_string(path).unwrap_or_default());
        if !v.is_empty() {
            return v;
        }
    }
    Vec::new()
}

pub(crate) fn resolv_conf(nameservers: &[Ipv4Addr], origin: &str) -> String {
    let mut s = format!("# Written by lambox ({origin}).\n");
    if nameservers.is_empty() {
        s.push_str("# The host has no resolver an environment can reach (only loopback ones).\n");
    }
    for n in nameservers.iter().take(3) {
        s.push_str(&format!("nameserver {n}\n"));
    }
    s
}

/// An overlay layer holding only `etc/resolv.conf` with `content`, named by its content
/// (`state_dir/dns-<hash>`) so that lambox processes sharing a state directory never rewrite
/// one another's. Written under a temporary name and renamed into place.
fn write_resolv_layer(state_dir: &Path, content: &str) -> Result<PathBuf, NetworkError> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    content.hash(&mut h);
    let dir = state_dir.join(format!("dns-{:016x}", h.finish()));
    if dir.join("etc/resolv.conf").exists() {
        return Ok(dir);
    }
    let tmp = state_dir.join(format!(".dns-{}", std::process::id()));
    let write = || -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("etc"))?;
        for d in [tmp.as_path(), &tmp.join("etc")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        }
        let f = tmp.join("etc/resolv.conf");
        std::fs::write(&f, content)?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644))?;
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => Ok(()),
            // Another process put the same content in place first.
            Err(_) if dir.join("etc/resolv.conf").exists() => std::fs::remove_dir_all(&tmp),
            Err(e) => Err(e),
        }
    };
    write().map_err(|e| err(format!("write {}", dir.display()), e))?;
    Ok(dir)
}

/// Start making network namespaces for environments of `config` with their Runtime API on
/// `runtime_api_port` now (in the background), rather than at the first spawn, so that the
/// first cold start does not pay for its namespace either. Only the first port and network
/// asked for (here or by a spawn) are ever pooled.
pub fn prewarm_network(config: &crate::SandboxConfig, runtime_api_port: u16) {
    crate::net::prewarm(runtime_api_port, config.network.plan());
}

/// Prepare `n` network namespaces the way the `lambox-netns` thread does (with `network`'s
/// uplink, if any), dropping each at once; returns each one's duration. For measurements.
#[doc(hidden)]
pub fn time_namespace_setup(n: usize, network: &Network) -> io::Result<Vec<std::time::Duration>> {
    crate::net::time_prepare(n, network.plan().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_strictly() {
        let s: Subnet = DEFAULT_SUBNET.parse().expect("default");
        assert_eq!(s.to_string(), "198.18.0.0/15");
        assert!(s.contains(Ipv4Addr::new(198, 19, 1, 2)));
        assert!(!s.contains(Ipv4Addr::new(198, 20, 0, 1)));
        for bad in [
            "198.18.0.0",
            "198.18.0.1/15",
            "10.0.0.0/31",
            "10.0.0.0/7",
            "x/8",
            "10.0.0.0/x",
        ] {
            let e = bad.parse::<Subnet>().err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains(bad)),
                "{bad}: {e:?}"
            );
        }
        assert!(s.overlaps(u32::from(Ipv4Addr::new(198, 19, 4, 0)), u32::MAX << 8));
        assert!(s.overlaps(u32::from(Ipv4Addr::new(198, 0, 0, 0)), u32::MAX << 24));
        assert!(!s.overlaps(u32::from(Ipv4Addr::new(192, 0, 2, 0)), u32::MAX << 8));
    }

    #[test]
    fn only_reachable_nameservers_are_kept() {
        let text = "# c\nnameserver 127.0.0.53\nnameserver 10.1.2.3\nnameserver fd00::1\nsearch x\nnameserver 169.254.169.253\nnameserver 9.9.9.9\n";
        assert_eq!(
            usable_nameservers(text),
            vec![Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::new(9, 9, 9, 9)]
        );
        assert!(resolv_conf(&[], "x").contains("no resolver"));
        assert!(resolv_conf(&usable_nameservers(text), "x")
            .ends_with("nameserver 10.1.2.3\nnameserver 9.9.9.9\n"));
    }

    #[test]
    fn the_script_forwards_only_environments_when_lambox_enabled_forwarding() {
        let s = table_script(true, true);
        assert!(s.starts_with("table inet lambox\ndelete table inet lambox\n"));
        assert!(s.contains("iifname != \"lambox*\" oifname != \"lambox*\" drop"));
        assert!(s.contains("169.254.0.0/16"));
        assert!(!table_script(false, false).contains("delete"));
        assert!(!table_script(false, false).contains("forward nothing else"));
    }
}
