//! End-to-end: `lambox run --network nat|none` with the real sandbox and the probe-python
//! image (awslambdaric). A function reaches an HTTP server outside the host (a network
//! namespace of the test's own behind a veth, standing in for the internet), but not the host,
//! another environment, nor link-local addresses (cloud metadata); `--network none` has only lo; SIGTERM leaves no
//! veth, namespace or nftables table behind.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{oci_ref, DataDir};
use serde_json::{json, Value};

fn is_root() -> bool {
    sh("id -u").trim() == "0"
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A minimal DNS server on UDP port 53 of `argv[1]`: every A question gets 192.0.2.77.
const DNS_SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
while True:
    q, peer = s.recvfrom(512)
    i = 12
    while q[i] != 0:
        i += q[i] + 1
    question = q[12:i + 5]
    is_a = q[i + 1:i + 3] == b"\x00\x01"
    answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([192, 0, 2, 77])
    head = q[:2] + b"\x81\x80" + b"\x00\x01" + (b"\x00\x01" if is_a else b"\x00\x00") + b"\x00\x00\x00\x00"
    s.sendto(head + question + (answer if is_a else b""), peer)
"#;

/// "The internet": a network namespace behind a veth pair `lxo<pid>` (not lambox's), with an
/// HTTP server (busybox httpd) on port 8080 at `addr` and at the link-local 169.254.77.77 (a
/// stand-in for the cloud metadata address 169.254.169.254: the rules drop all of
/// 169.254.0.0/16, and routing the real metadata address here would hide the host's own
/// metadata service while the test runs), which the host
/// routes to it, and a DNS server at `addr`. Everything goes away on drop (the namespace dies with its last process).
struct Outside {
    holder: Child,
    server: Option<Child>,
    dns: Option<Child>,
    addr: Ipv4Addr,
    _www: tempfile::TempDir,
}

impl Outside {
    fn start() -> Outside {
        let pid = std::process::id();
        let slot = (pid % 64) * 4;
        let host = Ipv4Addr::new(198, 51, 100, (slot + 1) as u8);
        let addr = Ipv4Addr::new(198, 51, 100, (slot + 2) as u8);
        let ifname = format!("lxo{pid}");
        let holder = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .spawn()
            .expect("unshare");
        let mut out = Outside {
            holder,
            server: None,
            dns: None,
            addr,
            _www: tempfile::tempdir().expect("tempdir"),
        };
        let ns = out.holder.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(format!("/proc/{ns}/ns/net")).ok()
            == std::fs::read_link("/proc/self/ns/net").ok()
        {
            assert!(Instant::now() < deadline, "unshare did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        sh(&format!(
            "set -e
             ip link add {ifname} type veth peer name eth0 netns {ns}
             ip addr add {host}/30 dev {ifname}
             ip link set {ifname} up
             nsenter -t {ns} -n ip link set lo up
             nsenter -t {ns} -n ip addr add {addr}/30 dev eth0
             nsenter -t {ns} -n ip addr add 169.254.77.77/32 dev eth0
             nsenter -t {ns} -n ip link set eth0 up
             nsenter -t {ns} -n ip route add default via {host}
             ip route replace 169.254.77.77/32 via {addr} dev {ifname}"
        ));
        std::fs::write(out._www.path().join("hello.txt"), "hello-from-outside\n").expect("www");
        // A DNS server answering every A question with 192.0.2.77 (others: no answer).
        out.dns = Some(
            Command::new("nsenter")
                .args(["-t", &ns.to_string(), "-n", "python3", "-c", DNS_SERVER])
                .arg(addr.to_string())
                .spawn()
                .expect("dns server"),
        );
        out.server = Some(
            Command::new("nsenter")
                .args(["-t", &ns.to_string(), "-n", "busybox", "httpd", "-f"])
                .args(["-p", "8080", "-h"])
                .arg(out._www.path())
                .spawn()
                .expect("httpd"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while host_fetch(&format!("{addr}:8080")).is_none() {
            assert!(Instant::now() < deadline, "outside server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        out
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        for c in self
            .server
            .iter_mut()
            .chain(self.dns.iter_mut())
            .chain(std::iter::once(&mut self.holder))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// GET /hello.txt from the host.
fn host_fetch(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /hello.txt HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// A banner server on all the host's addresses: environments must not reach it.
fn host_server() -> u16 {
    let l = TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(b"banner-host\n");
        }
    });
    port
}

/// The host's own global IPv4 addresses (not lambox's or the test's interfaces).
fn host_addresses() -> Vec<String> {
    sh("ip -4 -o addr show scope global | awk '{print $2, $4}'")
        .lines()
        .filter(|l| !l.starts_with("lambox") && !l.starts_with("lxo"))
        .filter_map(|l| {
            l.split_whitespace()
                .nth(1)?
                .split('/')
                .next()
                .map(str::to_string)
        })
        .collect()
}

/// Whether no lambox process with NAT runs (nobody holds /run/lambox/net.users): only then
/// may the test expect the shared table and forwarding to be gone.
fn no_lambox_uses_nat() -> bool {
    Command::new("flock")
        .args(["-n", "-x", "/run/lambox/net.users", "true"])
        .status()
        .is_ok_and(|s| s.success())
        || !std::path::Path::new("/run/lambox/net.users").exists()
}

fn table_exists() -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", "lambox"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn links_with(addr: &str) -> String {
    sh(&format!("ip -4 -o addr show to {addr}/32"))
}

/// A `lambox run` process, stopped with SIGTERM on drop.
struct Running {
    server: common::Server,
    addr: String,
    _data: DataDir,
}

impl Running {
    /// Listens on all the host's addresses (`0.0.0.0:port`), so that environments could try
    /// lambox's own Invoke API on them; `addr` is its loopback one.
    fn start(image: &str, extra: &[&str]) -> Running {
        let data = DataDir::new();
        let port = common::free_port();
        let addr = format!("127.0.0.1:{port}");
        let listen = format!("0.0.0.0:{port}");
        let mut cmd = data.lambox();
        cmd.args(["run", "-q", &oci_ref(image), "--listen", &listen])
            .args(extra);
        let server = common::Server::spawn(cmd, data.path().join("run.log"), &addr);
        Running {
            server,
            addr,
            _data: data,
        }
    }

    fn log_text(&self) -> String {
        self.server.log_text()
    }

    /// Invoke with `event`; the function's JSON answer.
    fn invoke(&self, event: &Value) -> Value {
        let body = event.to_string();
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        write!(
            s,
            "POST /2015-03-31/functions/function/invocations HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read");
        let (head, rest) = raw.split_once("\r\n\r\n").expect("http response");
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "{raw}\n{}",
            self.log_text()
        );
        assert!(
            !head.to_ascii_lowercase().contains("x-amz-function-error"),
            "{raw}"
        );
        serde_json::from_str(rest).unwrap_or_else(|e| panic!("not JSON ({e}): {rest}"))
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        self.server.stop()
    }
}

fn in_default_subnet(a: &Value) -> bool {
    a.as_str()
        .and_then(|s| s.parse::<Ipv4Addr>().ok())
        .is_some_and(|ip| {
            let o = ip.octets();
            o[0] == 198 && (o[1] & 0xfe) == 18
        })
}

#[test]
fn nat_reaches_outside_but_not_the_host_another_environment_or_metadata() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let alone_before = no_lambox_uses_nat();
    let forward_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("sysctl");
    let outside = Outside::start();
    let host_port = host_server();
    let dns = outside.addr.to_string();
    let mut run = Running::start(
        "probe-python",
        &["--concurrency", "2", "--timeout", "30", "--dns", &dns],
    );
    assert!(table_exists(), "the inet lambox table exists while running");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .expect("sysctl")
            .trim(),
        "1"
    );

    // Two invokes at once: two environments, each with its own address.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run.invoke(&json!({"sleep": 1.5})));
        let b = s.spawn(|| run.invoke(&json!({"sleep": 1.5})));
        (a.join().expect("a"), b.join().expect("b"))
    });
    let (addr_a, addr_b) = (a["eth0"].clone(), b["eth0"].clone());
    assert!(
        in_default_subnet(&addr_a) && in_default_subnet(&addr_b),
        "{a}\n{b}"
    );
    assert_ne!(addr_a, addr_b);
    assert_eq!(a["interfaces"], json!(["lo", "eth0"]));
    let gateways = [a["gateway"].clone(), b["gateway"].clone()];
    for g in &gateways {
        let g = g.as_str().expect("gateway");
        assert!(links_with(g).contains("lambox"), "the host end carries {g}");
    }

    // DNS: the --dns server, outside, through NAT.
    assert!(
        a["resolv_conf"]
            .as_str()
            .is_some_and(|r| r.ends_with(&format!("\nnameserver {dns}\n"))),
        "{}",
        a["resolv_conf"]
    );
    let v = run.invoke(&json!({"resolve": ["function.example.test"]}));
    assert_eq!(
        v["resolve"]["function.example.test"],
        json!(["192.0.2.77"]),
        "{v}"
    );

    // One environment tries everything; the other one's addresses are off limits.
    let outside_url = format!("http://{}:8080/hello.txt", outside.addr);
    let mut targets = vec![
        format!("{}:9001", addr_a.as_str().expect("a")),
        format!("{}:9001", addr_b.as_str().expect("b")),
    ];
    for g in &gateways {
        targets.push(format!("{}:{host_port}", g.as_str().expect("gw")));
    }
    let lambox_port = run.addr.rsplit_once(':').expect("port").1.to_string();
    for h in host_addresses() {
        targets.push(format!("{h}:{host_port}"));
        // lambox's own Invoke API, listening on every host address.
        targets.push(format!("{h}:{lambox_port}"));
    }
    let v = run.invoke(&json!({
        "connect": targets,
        "http_get": [outside_url, "http://169.254.77.77:8080/hello.txt"],
        "connect_timeout": 1,
    }));
    let text = v.to_string();
    let me = v["eth0"].as_str().expect("eth0").to_string();
    let other = if me == addr_a { &addr_b } else { &addr_a };
    assert!(me == addr_a || me == addr_b, "{text}");
    assert_eq!(v["http_get"][&outside_url]["status"], 200, "{text}");
    assert_eq!(v["http_get"][&outside_url]["body"], "hello-from-outside\n");
    // The host itself reaches 169.254.77.77 (the outside namespace serves it); not the function.
    assert!(host_fetch("169.254.77.77:8080").is_some_and(|b| b.contains("hello-from-outside")));
    assert!(
        v["http_get"]["http://169.254.77.77:8080/hello.txt"]["error"].is_string(),
        "{text}"
    );
    for t in &targets {
        if t.starts_with(&format!("{me}:")) {
            continue; // its own eth0: nothing listens there (the Runtime API is on lo)
        }
        assert_eq!(v["connect"][t]["connected"], false, "{t}: {text}");
    }
    assert!(targets
        .iter()
        .any(|t| t.starts_with(&format!("{}:", other.as_str().expect("o")))));
    // Its own Runtime API is where Lambda puts it.
    assert_eq!(v["connect_127.0.0.1:9001"]["connected"], true, "{text}");
    // The banner server and lambox's listener are up: the host reaches them on its addresses.
    for h in host_addresses() {
        assert!(TcpStream::connect(format!("{h}:{host_port}")).is_ok());
        assert!(TcpStream::connect(format!("{h}:{lambox_port}")).is_ok());
    }

    // SIGTERM: the veth pairs go with the namespaces; the last NAT user removes the table and
    // puts forwarding back.
    assert!(run.stop().success(), "{}", run.log_text());
    let deadline = Instant::now() + Duration::from_secs(10);
    for g in &gateways {
        let g = g.as_str().expect("gw");
        while !links_with(g).is_empty() {
            assert!(
                Instant::now() < deadline,
                "{g} is still on a host interface"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if alone_before && no_lambox_uses_nat() {
        assert!(!table_exists(), "the inet lambox table is left");
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("sysctl"),
            forward_before
        );
        // The kernel deletes veth pairs asynchronously. Our own environments' host ends are
        // checked above (by their gateway addresses); this looks for any other `lambox*`
        // interface, which only means something while no other lambox process uses NAT
        // (another test's may start meanwhile).
        while sh("ip -o link show")
            .lines()
            .any(|l| l.contains(": lambox"))
            && no_lambox_uses_nat()
        {
            assert!(Instant::now() < deadline, "lambox interfaces left");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    drop(outside);
}

#[test]
fn network_none_has_only_loopback() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let host_port = host_server();
    let run = Running::start("probe-python", &["--network", "none"]);
    let targets: Vec<String> = host_addresses()
        .iter()
        .map(|h| format!("{h}:{host_port}"))
        .collect();
    let v = run.invoke(&json!({"connect": targets}));
    let text = v.to_string();
    assert_eq!(v["interfaces"], json!(["lo"]), "{text}");
    assert!(v["eth0"]["error"].is_string(), "{text}");
    assert!(v["gateway"].is_null(), "{text}");
    for t in &targets {
        assert_eq!(v["connect"][t]["connected"], false, "{t}: {text}");
        assert!(
            v["connect"][t]["error"]
                .as_str()
                .is_some_and(|e| e.contains("unreachable")),
            "{text}"
        );
    }
    assert_eq!(v["connect_127.0.0.1:9001"]["connected"], true, "{text}");
}

#[test]
fn a_bad_or_colliding_subnet_is_refused_in_one_line() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let data = DataDir::new();
    let out = data
        .lambox()
        .args([
            "run",
            &oci_ref("probe-python"),
            "--network-subnet",
            "10.0.0.1/8",
        ])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("invalid subnet \"10.0.0.1/8\": host bits are set"),
        "{err}"
    );

    // A resolver the environments cannot reach.
    let out = data
        .lambox()
        .args(["run", "-q", &oci_ref("probe-python"), "--dns", "127.0.0.53"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("nameserver 127.0.0.53: a loopback"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // A subnet the host already routes (its own link's) would misroute replies.
    let route = sh("ip -4 -o route show scope link | awk '$1 ~ /\\// && $3 !~ /^(lambox|lxo)/ {print $1; exit}'");
    let route = route.trim();
    if route.is_empty() {
        return;
    }
    let out = data
        .lambox()
        .args([
            "run",
            "-q",
            &oci_ref("probe-python"),
            "--network-subnet",
            route,
        ])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("overlaps the host's route {route}")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
