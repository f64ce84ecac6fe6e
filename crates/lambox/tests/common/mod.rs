//! Helpers shared by the lambox integration tests (`mod common;`).
//!
//! - [`fixtures`]: the fixture cache built by `scripts/build-fixtures.sh`
//!   (run once per test process), [`image`], [`oci`], [`docker_archive`].
//! - [`lambox`]: a `Command` for the binary under test; [`DataDir`] gives it a
//!   throw-away `--data-dir`.
//! - [`Registry`]: a loopback `docker-registry` with storage in a temp dir,
//!   killed on drop; [`Registry::push`] copies an image into it with skopeo.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where `scripts/build-fixtures.sh` puts the fixtures unless told otherwise.
pub const DEFAULT_FIXTURES: &str = "/var/cache/lambox-fixtures";

/// The workspace root (the directory with `scripts/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("canonicalize the workspace root")
}

/// The fixture cache directory, built (or checked, which takes about a second
/// when nothing changed) by `scripts/build-fixtures.sh` once per test process.
/// Honours `LAMBOX_FIXTURES`. Panics with the script's output if it fails.
pub fn fixtures() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("LAMBOX_FIXTURES")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_FIXTURES));
        let script = repo_root().join("scripts/build-fixtures.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        if !out.status.success() {
            panic!(
                "building the test fixtures failed ({}): {} {}\n\
                 (run it by hand as root; scripts/setup.sh installs what it needs)\n\
                 --- stdout ---\n{}\n--- stderr ---\n{}",
                out.status,
                script.display(),
                dir.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
        }
        dir.canonicalize()
            .unwrap_or_else(|e| panic!("fixture dir {}: {e}", dir.display()))
    })
    .clone()
}

/// `fixtures()/images/NAME`, which must exist (panics with the reason if the
/// build skipped it, e.g. `images/NAME.SKIPPED` for the buildah images).
pub fn image(name: &str) -> PathBuf {
    let images = fixtures().join("images");
    let dir = images.join(name);
    if !dir.join("oci/index.json").is_file() {
        let why = std::fs::read_to_string(images.join(format!("{name}.SKIPPED")))
            .unwrap_or_else(|_| "no such fixture".to_owned());
        panic!(
            "fixture image {name} missing in {}: {why}",
            images.display()
        );
    }
    dir
}

/// The OCI layout of fixture image NAME (its only tag is `latest`).
pub fn oci(name: &str) -> PathBuf {
    image(name).join("oci")
}

/// `oci:PATH:latest` for fixture image NAME, as skopeo (and lambox) spell it.
pub fn oci_ref(name: &str) -> String {
    format!("oci:{}:latest", oci(name).display())
}

/// The docker-archive (`docker save` style tar) of fixture image NAME, tagged
/// `localhost/NAME:latest`.
pub fn docker_archive(name: &str) -> PathBuf {
    let p = image(name).join("docker.tar");
    assert!(p.is_file(), "fixture {name} has no docker.tar");
    p
}

/// The binary under test.
pub fn lambox() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lambox"));
    cmd.env_remove("LAMBOX_DATA_DIR").stdin(Stdio::null());
    cmd
}

/// Runs CMD, panics (showing its output) unless it exits 0; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throw-away lambox data directory.
#[derive(Debug)]
pub struct DataDir(pub tempfile::TempDir);

impl DataDir {
    pub fn new() -> Self {
        DataDir(
            tempfile::Builder::new()
                .prefix("lambox-data-")
                .tempdir()
                .expect("create a temp data dir"),
        )
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// `["--data-dir", PATH]` (a global option: it may go anywhere).
    pub fn args(&self) -> [OsString; 2] {
        ["--data-dir".into(), self.0.path().as_os_str().to_owned()]
    }

    /// `lambox --data-dir PATH`.
    pub fn lambox(&self) -> Command {
        let mut cmd = lambox();
        cmd.args(self.args());
        cmd
    }
}

impl Default for DataDir {
    fn default() -> Self {
        Self::new()
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; racy by nature).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Minimal HTTP/1.0 GET on loopback: (status code, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n"
    )?;
    // No shutdown of the write side: hyper takes a half-closed connection for a client that
    // went away and may drop the request unanswered. HTTP/1.0: the server closes after it.
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {buf:.100}")))?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// A loopback `docker-registry` (CNCF distribution) on a free port, plain
/// HTTP, no auth, storage in a temp dir. Killed (and reaped) on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

/// Start Debian's docker-registry with `config`, its output in `log`. The caller waits for it
/// and kills it.
pub fn spawn_registry(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("create registry log");
    Command::new("docker-registry")
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log fd"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start docker-registry ({e}); run scripts/setup.sh"))
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("lambox-registry-")
            .tempdir()
            .expect("create a registry temp dir");
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port());
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: {addr}\n",
                    dir.path().join("data").display()
                ),
            )
            .expect("write registry config");
            let log_path = dir.path().join("registry.log");
            let mut child = spawn_registry(&config, &log_path);
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if matches!(http_get(&addr, "/v2/"), Ok((200, _))) {
                    return Registry { child, addr, dir };
                }
                if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!("docker-registry did not come up on loopback; last log:\n{last_log}");
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// `ADDR/REPO_TAG`, a reference into this registry.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }

    /// Where the registry stores its data.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Copies an image into the registry as REPO:TAG with skopeo
    /// (`--all`: every manifest of an index). SRC is an OCI layout directory
    /// (tag `latest`), a `.tar` docker-archive, or any skopeo reference
    /// (`oci:DIR:TAG`, `docker-archive:FILE`, ...). FORMAT is skopeo's
    /// `--format` (`v2s2` for Docker v2 schema 2 manifests, `oci`), or None to
    /// keep the source's.
    pub fn push(&self, oci_dir_or_src: &str, dest_repo_tag: &str, format: Option<&str>) {
        let p = Path::new(oci_dir_or_src);
        let src = if p.join("index.json").is_file() {
            format!("oci:{oci_dir_or_src}:latest")
        } else if p.is_file() && oci_dir_or_src.ends_with(".tar") {
            format!("docker-archive:{oci_dir_or_src}")
        } else {
            oci_dir_or_src.to_owned()
        };
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--all", "--dest-tls-verify=false"]);
        if let Some(f) = format {
            cmd.args(["--format", f]);
        }
        cmd.arg(&src)
            .arg(format!("docker://{}/{dest_repo_tag}", self.addr))
            .stdin(Stdio::null());
        run_ok(&mut cmd);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fixture cache's PyPI awscli and boto3 (`pip/aws`, installed by scripts/build-fixtures.sh).
pub fn aws_pythonpath() -> PathBuf {
    let p = fixtures().join("pip/aws");
    assert!(
        p.join("awscli").is_dir(),
        "{} has no awscli (scripts/build-fixtures.sh installs it)",
        p.display()
    );
    p
}

/// python3 in `cwd` with the fixture cache's awscli/boto3, the given credentials, region
/// us-east-1 and no AWS configuration of the machine.
pub fn aws_python(cwd: &Path, access_key_id: &str, secret_access_key: &str) -> Command {
    let mut cmd = Command::new("python3");
    cmd.current_dir(cwd)
        .env("PYTHONPATH", aws_pythonpath())
        .env("AWS_ACCESS_KEY_ID", access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret_access_key)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .stdin(Stdio::null());
    cmd
}

/// A long-running lambox process (`lambox run`/`lambox serve`) whose output goes to a log
/// file; stopped with SIGTERM on drop.
pub struct Server {
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    /// Spawns `cmd` with stdout and stderr to `log`, and waits (≤ 120 s) until `addr` accepts
    /// connections.
    pub fn spawn(mut cmd: Command, log: PathBuf, addr: &str) -> Server {
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdout(file.try_clone().expect("clone"))
            .stderr(file)
            .spawn()
            .expect("spawn lambox");
        let s = Server {
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "lambox did not listen on {addr}: {}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits (≤ `timeout`) for the process to exit by itself; panics if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("lambox did not exit: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait (≤ 30 s) and return the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        self.wait_exit(Duration::from_secs(30))
    }

    /// SIGKILL (no chance to clean up), and wait for it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        child.wait().expect("wait");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

/// `lambox serve --network none` on a free port with `extra` arguments, its output in
/// `serve-ADDR.log` of the data directory; the server and its `http://ADDR` endpoint.
pub fn serve(data: &DataDir, extra: &[&str]) -> (Server, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = data.lambox();
    cmd.args(["serve", "--listen", &addr, "--network", "none"])
        .args(extra)
        .env("LAMBOX_LOG", "info");
    let log = data
        .path()
        .join(format!("serve-{}.log", addr.replace([':', '.'], "-")));
    (Server::spawn(cmd, log, &addr), format!("http://{addr}"))
}

/// python3 with the fixture cache's awscli/boto3 and dummy credentials.
pub fn python(cwd: &Path) -> Command {
    aws_python(cwd, "test", "test")
}
