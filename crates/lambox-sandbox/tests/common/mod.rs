//! Fixtures for the root integration tests: a two-layer busybox image in overlayfs lowerdir
//! form, a state directory, and helpers to run a function and collect its output.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use lambox_sandbox::{Sandbox, SandboxConfig, SandboxError, Spec};

pub const PROBE: &str = r#"#!/bin/sh
echo "uid=$(id -u)"
echo "gid=$(id -g)"
echo "groups=$(id -G)"
if touch /rootfile 2>/dev/null; then echo "rootwrite=ok"; else echo "rootwrite=fail"; fi
if touch /bin/newfile 2>/dev/null; then echo "binwrite=ok"; else echo "binwrite=fail"; fi
echo "tmpsize_kb=$(df -k /tmp | tail -n 1 | awk '{print $2}')"
if dd if=/dev/zero of=/tmp/fill bs=1M count=600 2>/dev/null; then echo "tmpfill=ok"; else echo "tmpfill=fail"; fi
echo "tmpfilled_kb=$(du -k /tmp/fill | awk '{print $1}')"
rm -f /tmp/fill
echo "tmpwrite=$(echo x > /tmp/t && cat /tmp/t)"
echo "tmpmode=$(stat -c %a /tmp)"
echo "shm_kb=$(df -k /dev/shm | tail -n 1 | awk '{print $2}')"
echo "hostname=$(hostname)"
for k in CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs; do
  echo "$k=$(awk -v k="$k:" '$1 == k {print $2}' /proc/self/status)"
done
echo "mypid=$$"
echo "ppid=$PPID"
echo "pids=$(ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\n' ' ')"
echo "pid1=$(tr '\0' ' ' < /proc/1/cmdline)"
echo "cgroup=$(tr '\n' ' ' < /proc/self/cgroup)"
echo "ifaces=$(ifconfig -a | grep -E '^[a-z0-9]' | awk '{print $1}' | tr '\n' ' ')"
echo "lo_up=$(ifconfig lo | grep -c UP)"
echo "root=$(ls -A / | tr '\n' ' ')"
echo "dev=$(ls -A /dev | tr '\n' ' ')"
echo "removed=$(test -e /etc/removed && echo present || echo absent)"
echo "base=$(cat /etc/base)"
echo "nofile=$(ulimit -n)"
echo "umask=$(umask)"
echo "home=${HOME-unset}"
echo "cwd=$(pwd)"
echo "stdin=$(readlink /proc/self/fd/0)"
echo "mounts=$(awk '{print $2 ":" $3}' /proc/self/mounts | tr '\n' ' ')"
echo "mountinfo=$(tr '\n' ' ' < /proc/self/mountinfo)"
echo "nc=$(echo hello-from-env | nc 127.0.0.1 9001)"
echo "end=1"
"#;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub layers: Vec<PathBuf>,
    pub config: SandboxConfig,
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `None` (and a note) when not root: these tests need root.
pub fn fixture() -> Option<Fixture> {
    if !is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("lambox-sandbox-test-")
        .tempdir()
        .expect("tempdir");
    let base = dir.path().join("layer-base");
    let top = dir.path().join("layer-top");
    let bin = base.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox");
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            symlink("busybox", bin.join(applet)).expect("symlink applet");
        }
    }
    std::fs::create_dir_all(base.join("etc")).expect("mkdir");
    std::fs::write(
        base.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nsbx_user1051:x:993:990::/home/sbx_user1051:/sbin/nologin\n",
    )
    .expect("write");
    std::fs::write(base.join("etc/group"), "root:x:0:\n").expect("write");
    std::fs::write(base.join("etc/removed"), "should be hidden\n").expect("write");
    std::fs::write(base.join("etc/base"), "from-base\n").expect("write");

    // Top layer: the probe, test files, and a whiteout (0/0 char device) hiding etc/removed.
    std::fs::create_dir_all(top.join("etc")).expect("mkdir");
    std::fs::create_dir_all(top.join("var/task")).expect("mkdir");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        top.join("etc/removed").as_path(),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .expect("mknod whiteout");
    write_mode(&top.join("probe.sh"), PROBE, 0o755);
    write_mode(&top.join("notexec"), "#!/bin/sh\necho no\n", 0o644);
    write_mode(&top.join("rootonly"), "#!/bin/sh\necho no\n", 0o700);
    write_mode(&top.join("noshebang"), "\x7fELF-but-not-really", 0o755);
    // An absolute symlink: must resolve inside the environment's root, not the host's.
    std::fs::create_dir_all(top.join("links")).expect("mkdir");
    symlink("/bin/busybox", top.join("links/echo")).expect("symlink");
    std::fs::create_dir_all(top.join("rootonlydir")).expect("mkdir");
    std::fs::set_permissions(
        top.join("rootonlydir"),
        std::fs::Permissions::from_mode(0o700),
    )
    .expect("chmod");

    let mut config = SandboxConfig::new(dir.path().join("run"));
    config.init_exe = PathBuf::from(env!("CARGO_BIN_EXE_lambox-sandbox-init"));
    Some(Fixture {
        layers: vec![base, top],
        config,
        dir,
    })
}

fn write_mode(p: &Path, content: &str, mode: u32) {
    std::fs::write(p, content).expect("write");
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

impl Fixture {
    pub fn spec(&self, argv: &[&str]) -> Spec {
        Spec {
            layers: self.layers.clone(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("PATH".into(), "/bin".into())],
            workdir: "/var/task".into(),
            memory_mb: 1769,
            ephemeral_storage_mb: 512,
            hostname: "lambox-test".into(),
            runtime_api_port: 9001,
        }
    }

    pub fn spawn(&self, spec: &Spec) -> Result<Running, SandboxError> {
        let (sandbox, child, listener) = Sandbox::spawn(&self.config, spec)?;
        Ok(Running {
            sandbox,
            child,
            listener,
        })
    }
}

/// A started environment; killed and cleaned up on drop, even when a test fails.
pub struct Running {
    pub sandbox: Sandbox,
    pub child: std::process::Child,
    pub listener: TcpListener,
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// `key=value` lines of the probe.
    pub fn get(&self, key: &str) -> String {
        let prefix = format!("{key}=");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| {
                panic!(
                    "no {key}= in output:\n{}\nstderr:\n{}",
                    self.stdout, self.stderr
                )
            })
            .to_string()
    }
}

impl Running {
    /// Read all output and wait (at most `timeout`, then kill).
    pub fn finish(&mut self, timeout: Duration) -> Finished {
        let mut out = self.child.stdout.take().expect("stdout");
        let mut err = self.child.stderr.take().expect("stderr");
        let t_out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() > deadline {
                self.sandbox.kill();
                panic!("function did not finish within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Finished {
            status,
            stdout: t_out.join().expect("join"),
            stderr: t_err.join().expect("join"),
        }
    }

    /// Accept one connection on the Runtime API listener (≤ 20 s), read a line, answer `pong`.
    pub fn serve_one(&self) -> std::thread::JoinHandle<Option<String>> {
        let l = self.listener.try_clone().expect("clone listener");
        std::thread::spawn(move || {
            l.set_nonblocking(true).ok()?;
            let deadline = Instant::now() + Duration::from_secs(20);
            let (mut s, _) = loop {
                match l.accept() {
                    Ok(c) => break c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            return None;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => return None,
                }
            };
            s.set_nonblocking(false).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).ok()?;
            s.write_all(b"pong\n").ok()?;
            Some(line.trim().to_string())
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.sandbox.kill();
        let _ = self.child.wait();
        self.sandbox.cleanup();
    }
}
