//! NAT networking with the real sandbox: an environment reaches a server outside the host
//! (in a network namespace of the test's own, behind a veth, as the internet would be) but not
//! the host itself, another environment, nor the cloud metadata address; its veth pair goes
//! away with it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::fixture;
use lambox_sandbox::{HostNetwork, Subnet, DEFAULT_SUBNET};

/// Tries each `name=host:port` target (TCP; prints what the server sent, or FAIL), and
/// `http…=URL` (busybox wget, whose own `-T` crashes, hence `timeout`). With `listen` first, also serves a banner on 0.0.0.0:8080 and
/// stays up until killed.
const NET_PROBE: &str = r#"#!/bin/sh
listen=no
if [ "$1" = listen ]; then listen=yes; shift; nc -ll -p 8080 -e /bin/echo "banner-$(hostname)" & sleep 0.3; fi
echo "ifaces=$(ip -o link | awk -F': ' '{split($2, a, "@"); print a[1]}' | sort | tr '\n' ' ')"
echo "me=$(ip -4 -o addr show dev eth0 | awk '{split($4, a, "/"); print a[1]}')"
echo "gw=$(ip route | awk '/^default/ {print $3}')"
if [ $listen = yes ]; then echo "self=$(sleep 0.5 | nc -w 2 $(ip -4 -o addr show dev eth0 | awk '{split($4, a, "/"); print a[1]}') 8080)"; fi
echo "nameservers=$(awk '/^nameserver/ {print $2}' /etc/resolv.conf | tr '\n' ' ')"
for t in "$@"; do
  name=${t%%=*}; target=${t#*=}
  case $name in
    http*) out=$(timeout 3 wget -q -O - "$target" 2>/dev/null) ;;
    *) out=$(sleep 0.5 | nc -w 2 ${target%:*} ${target##*:} 2>/dev/null) ;;
  esac
  echo "$name=${out:-FAIL}"
done
echo "done=1"
if [ $listen = yes ]; then exec sleep 60; fi
"#;

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

/// "The internet": a network namespace behind a veth pair `lxo<pid>` (not lambox's), with an
/// HTTP server (busybox httpd) on port 8080 at `addr` and at the link-local 169.254.77.77 (a
/// stand-in for the cloud metadata address 169.254.169.254: the rules drop all of
/// 169.254.0.0/16, and routing the real metadata address here would hide the host's own
/// metadata service while the test runs), which the host
/// routes to it. Everything goes away on drop (the namespace dies with its last process).
struct Outside {
    holder: Child,
    server: Option<Child>,
    addr: Ipv4Addr,
    _www: tempfile::TempDir,
}

impl Outside {
    fn start() -> Outside {
        let pid = std::process::id();
        let slot = (pid % 64) * 4;
        let host = Ipv4Addr::new(203, 0, 113, (slot + 1) as u8);
        let addr = Ipv4Addr::new(203, 0, 113, (slot + 2) as u8);
        let ifname = format!("lxo{pid}");
        let holder = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .spawn()
            .expect("unshare");
        let mut out = Outside {
            holder,
            server: None,
            addr,
            _www: tempfile::tempdir().expect("tempdir"),
        };
        let ns = out.holder.id();
        // Wait until the holder has unshared (its netns differs from ours).
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
        out.server = Some(
            Command::new("nsenter")
                .args([
                    "-t",
                    &ns.to_string(),
                    "-n",
                    "busybox",
                    "httpd",
                    "-f",
                    "-p",
                    "8080",
                    "-h",
                ])
                .arg(out._www.path())
                .spawn()
                .expect("httpd"),
        );
        // Ready when the host can fetch from it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while http_get(&format!("{addr}:8080")).is_none() {
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
            .chain(std::iter::once(&mut self.holder))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn http_get(addr: &str) -> Option<String> {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /hello.txt HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// A banner server on the host (all addresses): environments must not reach it.
fn host_server() -> u16 {
    let l = TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
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

fn get(out: &str, key: &str) -> String {
    let prefix = format!("{key}=");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}= in:\n{out}"))
        .trim()
        .to_string()
}

fn link_exists_with(addr: &str) -> bool {
    !sh(&format!("ip -4 -o addr show to {addr}/32"))
        .trim()
        .is_empty()
}

/// The two tests share the host's `inet lambox` table: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn nft_table() -> Option<String> {
    let out = Command::new("nft")
        .args(["list", "table", "inet", "lambox"])
        .output()
        .expect("nft");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether no lambox process uses NAT (nobody holds /run/lambox/net.users).
fn no_nat_users() -> bool {
    !std::path::Path::new("/run/lambox/net.users").exists()
        || Command::new("flock")
            .args(["-n", "-x", "/run/lambox/net.users", "true"])
            .status()
            .is_ok_and(|s| s.success())
}

#[test]
fn a_stale_table_is_replaced_and_the_last_user_removes_it() {
    let Some(f) = fixture() else { return };
    let _serial = serial();
    if !no_nat_users() {
        eprintln!("skipped: another lambox process uses NAT");
        return;
    }
    let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("sysctl");
    // What a crashed run would leave: the table (here with a chain of its own), forwarding on,
    // and the record of what it was before.
    sh("nft add table inet lambox && nft add chain inet lambox stale_chain");
    std::fs::create_dir_all("/run/lambox").expect("mkdir");
    std::fs::write("/run/lambox/net.forward", forward.trim()).expect("record");
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("sysctl");
    let subnet: Subnet = DEFAULT_SUBNET.parse().expect("subnet");
    let first = HostNetwork::setup(&f.config.state_dir, subnet, None).expect("first");
    let table = nft_table().expect("table");
    assert!(!table.contains("stale_chain"), "{table}");
    assert!(table.contains("masquerade"), "{table}");
    // A second user (another lambox process: flock locks belong to open files) joins...
    let second = HostNetwork::setup(&f.config.state_dir, subnet, None).expect("second");
    assert_eq!(
        nft_table().as_deref(),
        Some(table.as_str()),
        "joined, not replaced"
    );
    // ...the first leaves: the table stays for the second...
    first.teardown();
    assert!(nft_table().is_some(), "still used by the second");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .expect("sysctl")
            .trim(),
        "1"
    );
    // ...and the last one removes it and puts forwarding back.
    second.teardown();
    assert!(nft_table().is_none(), "table left");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("sysctl"),
        forward,
        "forwarding as it was before the crashed run"
    );
    assert!(!std::path::Path::new("/run/lambox/net.forward").exists());
}

#[test]
fn nat_reaches_outside_but_not_the_host_other_environments_or_metadata() {
    let Some(mut f) = fixture() else { return };
    let _serial = serial();
    let outside = Outside::start();
    let subnet: Subnet = DEFAULT_SUBNET.parse().expect("subnet");
    let host = HostNetwork::setup(&f.config.state_dir, subnet, None).expect("host network");
    f.config.network = host.network();
    std::fs::write(f.layers[1].join("net.sh"), NET_PROBE).expect("write");
    std::fs::set_permissions(
        f.layers[1].join("net.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let host_port = host_server();

    // Environment B listens on 0.0.0.0:8080 and checks it can reach itself there.
    let mut spec_b = f.spec(&["/bin/sh", "/net.sh", "listen"]);
    spec_b.hostname = "env-b".into();
    let mut b = f.spawn(&spec_b).expect("spawn B");
    let mut b_out = String::new();
    let mut lines = BufReader::new(b.child.stdout.take().expect("stdout"));
    while !b_out.contains("done=1") {
        let mut line = String::new();
        if lines.read_line(&mut line).expect("read B") == 0 {
            panic!("B exited early:\n{b_out}");
        }
        b_out.push_str(&line);
    }
    let b_addr = get(&b_out, "me");
    if std::env::var_os("NETTEST_PAUSE").is_some() {
        eprintln!(
            "PAUSE: B pid1 {} outside {} ns {}",
            b.sandbox.pid1(),
            outside.addr,
            outside.holder.id()
        );
        std::thread::sleep(Duration::from_secs(40));
    }
    assert!(
        subnet.contains(b_addr.parse().expect("B's address")),
        "{b_out}"
    );

    // Environment A tries everything.
    let mut args = vec![
        "/bin/sh".to_string(),
        "/net.sh".into(),
        format!("http_outside=http://{}:8080/hello.txt", outside.addr),
        "http_metadata=http://169.254.77.77:8080/hello.txt".into(),
        format!("env_b=http://{b_addr}:8080/"),
        format!("env_b_tcp={b_addr}:8080"),
        format!("env_b_runtime_api={b_addr}:9001"),
    ];
    for (i, a) in host_addresses().iter().enumerate() {
        args.push(format!("host{i}={a}:{host_port}"));
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut spec_a = f.spec(&argv);
    // Another port than B's: never pooled, so the helper makes A's namespace and veth pair
    // itself (B's path is the pool's, once it has started).
    spec_a.runtime_api_port = 9002;
    let mut a = f.spawn(&spec_a).expect("spawn A");
    let out = a.finish(Duration::from_secs(60));
    println!("B:\n{b_out}\nA:\n{}\n{}", out.stdout, out.stderr);
    let a_out = out.stdout;
    assert_eq!(get(&a_out, "ifaces"), "eth0 lo");
    let a_addr = get(&a_out, "me");
    let gw = get(&a_out, "gw");
    assert!(subnet.contains(a_addr.parse().expect("A's address")));
    assert_ne!(a_addr, b_addr);
    assert!(link_exists_with(&gw), "A's host end carries {gw}");

    // Outbound works, through NAT (the outside network has no route to the subnet).
    assert_eq!(get(&a_out, "http_outside"), "hello-from-outside");
    // The host reaches 169.254.77.77 (the outside namespace serves it), environments not.
    assert!(http_get("169.254.77.77:8080").is_some_and(|b| b.contains("hello-from-outside")));
    assert_eq!(get(&a_out, "http_metadata"), "FAIL");
    // B's server is up (B reaches it on its own address), yet A cannot reach it.
    assert_eq!(get(&b_out, "ifaces"), "eth0 lo");
    assert_eq!(get(&b_out, "self"), "banner-env-b");
    assert_eq!(get(&a_out, "env_b"), "FAIL");
    assert_eq!(get(&a_out, "env_b_tcp"), "FAIL");
    assert_eq!(get(&a_out, "env_b_runtime_api"), "FAIL");
    // Nothing on the host: neither its own addresses nor the gateway.
    // (The gateway differs per environment: this one asks with its own.)
    let probe_gw = {
        let script = format!(
            "gw=$(ip route | awk '/^default/ {{print $3}}'); exec /bin/sh /net.sh gw_host=$gw:{host_port}"
        );
        let mut r = f
            .spawn(&f.spec(&["/bin/sh", "-c", &script]))
            .expect("spawn gw probe");
        r.finish(Duration::from_secs(30)).stdout
    };
    assert_eq!(get(&probe_gw, "gw_host"), "FAIL", "{probe_gw}");
    for (i, _) in host_addresses().iter().enumerate() {
        assert_eq!(get(&a_out, &format!("host{i}")), "FAIL", "{a_out}");
    }
    // The host server does answer the host itself (it is up).
    assert!(std::net::TcpStream::connect(("127.0.0.1", host_port)).is_ok());

    // resolv.conf: the host's reachable nameservers.
    let expect: Vec<String> = host.nameservers().iter().map(|a| a.to_string()).collect();
    assert_eq!(get(&a_out, "nameservers"), expect.join(" "));

    // The veth pair dies with the environment.
    drop(a);
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(10);
    while link_exists_with(&gw) {
        assert!(Instant::now() < deadline, "A's veth is still there");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(outside);
    host.teardown();
}
