//! A minimal rtnetlink client: the handful of requests environments need (a link up, a veth
//! pair, an IPv4 address, a default route), each one message and one reply, over a raw
//! `NETLINK_ROUTE` socket. A socket stays in the network namespace it was created in, so a
//! thread that moves into a new namespace can still configure the host's side through a socket
//! it opened before moving.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use rustix::net::{self as rnet, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 1 << 15;

const IFF_UP: u32 = 0x1;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u16 = 10;
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
const IN6_ADDR_GEN_MODE_NONE: u8 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

/// One rtnetlink message under construction: `nlmsghdr`, a family header, attributes.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

impl Msg {
    fn new(kind: u16, flags: u16, family_header: &[u8]) -> Self {
        let mut buf = vec![0u8; 16];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        buf[8..12].copy_from_slice(&1u32.to_ne_bytes()); // seq; pid 0 = the kernel
        buf.extend_from_slice(family_header);
        buf.resize(pad4(buf.len()), 0);
        Self {
            buf,
            nests: Vec::new(),
        }
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(pad4(self.buf.len()), 0);
        self
    }

    fn attr_str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v)
    }

    /// Start a nested attribute; its length is filled in by [`Msg::end`].
    fn begin(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Raw bytes inside the current nest (e.g. the peer's `ifinfomsg`).
    fn raw(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        self.buf.resize(pad4(self.buf.len()), 0);
        self
    }

    fn end(&mut self) -> &mut Self {
        if let Some(at) = self.nests.pop() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// `struct ifinfomsg` for `index`, with `flags` changed under `change`.
fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    // ifi_family AF_UNSPEC, pad, ifi_type: zero.
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

/// An rtnetlink socket in the caller's (thread's) current network namespace.
#[derive(Debug)]
pub(crate) struct Netlink(OwnedFd);

impl Netlink {
    pub(crate) fn open() -> io::Result<Self> {
        let s = rnet::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            None, // NETLINK_ROUTE is protocol 0
        )?;
        Ok(Self(s))
    }

    /// Send one request; return the first reply message (an acknowledgement's error is
    /// turned into `Err`).
    fn request(&self, msg: Msg) -> io::Result<Vec<u8>> {
        let m = msg.finish();
        rnet::send(&self.0, &m, SendFlags::empty())?;
        let mut buf = vec![0u8; 8192];
        let (_, n) = rnet::recv(&self.0, &mut buf[..], RecvFlags::empty())?;
        buf.truncate(n);
        if n < 16 {
            return Err(io::Error::other("short rtnetlink reply"));
        }
        if u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
            // struct nlmsgerr: `error` is 0 (an acknowledgement) or -errno.
            if n < 20 {
                return Err(io::Error::other("short rtnetlink error"));
            }
            let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            if err != 0 {
                return Err(io::Error::from_raw_os_error(-err));
            }
        }
        Ok(buf)
    }

    /// `ip link set dev <index> up`.
    pub(crate) fn link_up(&self, index: i32) -> io::Result<()> {
        let msg = Msg::new(RTM_NEWLINK, NLM_F_ACK, &ifinfomsg(index, IFF_UP, IFF_UP));
        self.request(msg).map(drop)
    }

    /// The interface index of `name` in this socket's namespace.
    pub(crate) fn index_of(&self, name: &str) -> io::Result<i32> {
        let mut msg = Msg::new(RTM_GETLINK, 0, &ifinfomsg(0, 0, 0));
        msg.attr_str(IFLA_IFNAME, name);
        let reply = self.request(msg)?;
        if reply.len() >= 32 && u16::from_ne_bytes([reply[4], reply[5]]) == RTM_NEWLINK {
            return Ok(i32::from_ne_bytes([
                reply[20], reply[21], reply[22], reply[23],
            ]));
        }
        Err(io::Error::other(format!("no link named {name}")))
    }

    /// A veth pair: `name` here, `peer` in the namespace `peer_ns`. Fails with
    /// `AlreadyExists` if `peer` is taken there.
    pub(crate) fn add_veth(&self, name: &str, peer: &str, peer_ns: impl AsFd) -> io::Result<()> {
        let mut msg = Msg::new(
            RTM_NEWLINK,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &ifinfomsg(0, 0, 0),
        );
        msg.attr_str(IFLA_IFNAME, name)
            .begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .begin(IFLA_INFO_DATA)
            .begin(VETH_INFO_PEER)
            .raw(&ifinfomsg(0, 0, 0))
            .attr_str(IFLA_IFNAME, peer)
            .attr(
                IFLA_NET_NS_FD,
                &(peer_ns.as_fd().as_raw_fd() as u32).to_ne_bytes(),
            )
            .end()
            .end()
            .end();
        self.request(msg).map(drop)
    }

    /// No IPv6 address will be generated on `index` (addr_gen_mode none): call before it
    /// goes up. (The kernel refuses this attribute when the link is created.)
    pub(crate) fn no_ipv6(&self, index: i32) -> io::Result<()> {
        let mut msg = Msg::new(RTM_NEWLINK, NLM_F_ACK, &ifinfomsg(index, 0, 0));
        msg.begin(IFLA_AF_SPEC)
            .begin(AF_INET6)
            .attr(IFLA_INET6_ADDR_GEN_MODE, &[IN6_ADDR_GEN_MODE_NONE])
            .end()
            .end();
        self.request(msg).map(drop)
    }

    /// `ip addr add <addr>/<prefix> dev <index>`.
    pub(crate) fn add_address(&self, index: i32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut h = [0u8; 8];
        h[0] = AF_INET;
        h[1] = prefix;
        h[3] = RT_SCOPE_UNIVERSE;
        h[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
        let mut msg = Msg::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &h);
        msg.attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        self.request(msg).map(drop)
    }

    /// `ip route add default via <gateway> dev <index>`.
    pub(crate) fn add_default_route(&self, index: i32, gateway: Ipv4Addr) -> io::Result<()> {
        let mut h = [0u8; 12];
        h[0] = AF_INET; // dst_len, src_len, tos: 0
        h[4] = RT_TABLE_MAIN;
        h[5] = RTPROT_BOOT;
        h[6] = RT_SCOPE_UNIVERSE;
        h[7] = RTN_UNICAST;
        let mut msg = Msg::new(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &h);
        msg.attr(RTA_GATEWAY, &gateway.octets())
            .attr(RTA_OIF, &(index as u32).to_ne_bytes());
        self.request(msg).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_are_sized_and_padded() {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK, &ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, "eth0") // 4 + 5 → 12 with padding
            .begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth") // 12
            .end();
        let b = m.finish();
        assert_eq!(b.len(), 16 + 16 + 12 + 4 + 12);
        assert_eq!(
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize,
            b.len()
        );
        // The nest's header: length 16, type IFLA_LINKINFO with the nested flag.
        assert_eq!(u16::from_ne_bytes([b[44], b[45]]), 16);
        assert_eq!(
            u16::from_ne_bytes([b[46], b[47]]),
            IFLA_LINKINFO | NLA_F_NESTED
        );
        // The name attribute keeps its unpadded length (4 + "eth0\0").
        assert_eq!(u16::from_ne_bytes([b[32], b[33]]), 9);
    }
}
