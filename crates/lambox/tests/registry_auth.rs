//! End-to-end: `lambox pull` from a registry that uses Bearer token auth (the Docker token
//! flow), built from real parts: Debian's docker-registry (distribution 2.8) with
//! `auth: token`, and `tests/token_server.py`, a small token server that checks Basic
//! credentials and signs RS256 JWTs with the `openssl` CLI. The key and the self-signed
//! certificate the registry trusts are made here with `openssl`; the image goes in with skopeo,
//! which does the token flow itself.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_get, oci, run_ok, DataDir};
use serde_json::Value;

const USER: &str = "lambox";
const PASSWORD: &str = "t0ken-s3cret";
const SERVICE: &str = "lambox-test";
const ISSUER: &str = "lambox-test-issuer";
const REPO: &str = "fn/busybox";

/// A child process killed (by its PID) and reaped on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Standard base64 with padding (the `auth` field of a docker config.json).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Wait until `ready` holds, or the child exits, or 15 s pass; false unless ready.
fn wait_for(child: &mut Child, ready: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if ready() {
            return true;
        }
        if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The token server and the token-protected registry, on loopback.
struct TokenRegistry {
    // Declared first so both processes are gone before the directory is removed.
    registry: KillOnDrop,
    token_server: KillOnDrop,
    registry_addr: String,
    dir: tempfile::TempDir,
}

impl TokenRegistry {
    fn start() -> TokenRegistry {
        let dir = tempfile::Builder::new()
            .prefix("lambox-token-registry-")
            .tempdir()
            .expect("create a temp dir");
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        run_ok(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", "/CN=lambox test token signer", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stdin(Stdio::null()),
        );
        let (token_server, token_addr) = Self::start_token_server(dir.path(), &key, &cert);
        let (registry, registry_addr) = Self::start_registry(dir.path(), &token_addr, &cert);
        TokenRegistry {
            registry,
            token_server,
            registry_addr,
            dir,
        }
    }

    fn start_token_server(dir: &Path, key: &Path, cert: &Path) -> (KillOnDrop, String) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/token_server.py");
        // Debian's interpreter if there is one (no shim between us and the PID we kill).
        let python = if Path::new("/usr/bin/python3").is_file() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let log_path = dir.join("token_server.out");
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let out = std::fs::File::create(&log_path).expect("create token server log");
            let child = Command::new(python)
                .arg(&script)
                .arg(port.to_string())
                .args([USER, PASSWORD])
                .arg(key)
                .arg(cert)
                .arg(ISSUER)
                .arg(dir.join("tokens.log"))
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("dup log fd"))
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {python} {}: {e}", script.display()));
            let mut child = KillOnDrop(child);
            // Any HTTP answer will do (`/` is a 404).
            if wait_for(&mut child.0, || http_get(&addr, "/").is_ok()) {
                return (child, addr);
            }
            drop(child);
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!("the token server did not come up; last output:\n{last_log}");
    }

    fn start_registry(dir: &Path, token_addr: &str, cert: &Path) -> (KillOnDrop, String) {
        let config = dir.join("registry.yml");
        let log_path = dir.join("registry.log");
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port());
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                     storage:\n  filesystem:\n    rootdirectory: {data}\n\
                     http:\n  addr: {addr}\n\
                     auth:\n  token:\n    realm: http://{token_addr}/token\n    \
                     service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {cert}\n",
                    data = dir.join("data").display(),
                    cert = cert.display(),
                ),
            )
            .expect("write registry config");
            let mut child = KillOnDrop(common::spawn_registry(&config, &log_path));
            // With token auth, an anonymous `/v2/` is a 401 challenge.
            if wait_for(&mut child.0, || {
                matches!(http_get(&addr, "/v2/"), Ok((401, _)))
            }) {
                return (child, addr);
            }
            drop(child);
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!("docker-registry did not come up on loopback; last log:\n{last_log}");
    }

    fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.registry_addr)
    }

    /// The token server's log lines.
    fn token_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("tokens.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// What the two servers said, for failure messages.
    fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name));
        format!(
            "--- tokens.log ---\n{}\n--- token server ---\n{}\n--- registry ---\n{}",
            read("tokens.log").unwrap_or_default(),
            read("token_server.out").unwrap_or_default(),
            read("registry.log").unwrap_or_default(),
        )
    }

    /// Checks that both servers still run (a crash would make every pull fail for the
    /// wrong reason).
    fn assert_running(&mut self) {
        let exited = [
            ("token server", &mut self.token_server),
            ("docker-registry", &mut self.registry),
        ]
        .into_iter()
        .find_map(|(name, child)| Some((name, child.0.try_wait().ok()??)));
        if let Some((name, status)) = exited {
            panic!("the {name} exited ({status})\n{}", self.logs());
        }
    }
}

/// `lambox --data-dir DATA` with no ambient registry credentials.
fn lambox(data: &DataDir, home: &Path) -> Command {
    let mut cmd = data.lambox();
    cmd.env("HOME", home)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .env_remove("LAMBOX_REGISTRY_PASSWORD");
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a pull that must fail; returns its stderr, which must be one line.
fn pull_fails(cmd: &mut Command) -> String {
    let out = output(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded\n--- stdout ---\n{}\n--- stderr ---\n{stderr}",
        String::from_utf8_lossy(&out.stdout),
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{cmd:?}: not a one-line error:\n{stderr}"
    );
    assert!(out.stdout.is_empty(), "{cmd:?} printed to stdout");
    stderr.trim_end().to_owned()
}

/// Runs a pull that must succeed into a fresh data dir (so every blob is fetched through
/// the registry), and checks the stored image.
fn pull_succeeds(reg: &TokenRegistry, home: &Path, extra: &[&str]) {
    let data = DataDir::new();
    let reference = reg.reference(&format!("{REPO}:v1"));
    let out = output(
        lambox(&data, home)
            .args(["pull", "--quiet", &reference])
            .args(extra),
    );
    assert!(
        out.status.success(),
        "pull {reference} {extra:?} failed ({})\n--- stderr ---\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        reg.logs()
    );
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest:?}"
    );

    let inspect = run_ok(lambox(&data, home).args(["inspect", &digest]));
    let v: Value = serde_json::from_str(&inspect).expect("inspect prints JSON");
    assert_eq!(v["Digest"], digest.as_str());
    assert_eq!(v["Names"], serde_json::json!([reference]));
    assert_eq!(v["Cmd"], serde_json::json!(["/bin/sh", "-c", "echo hi"]));
    assert_eq!(v["Os"], "linux");
    let layers = v["Layers"].as_array().expect("Layers");
    assert!(!layers.is_empty(), "{inspect}");
}

/// Log lines of tokens issued to our user for a pull of REPO (lambox asks for `pull` only;
/// skopeo's push asked for `pull,push`).
fn pull_tokens(reg: &TokenRegistry) -> usize {
    let want = format!("issued {USER} repository:{REPO}:pull");
    reg.token_log().iter().filter(|l| **l == want).count()
}

#[test]
fn pull_with_bearer_token_auth() {
    let mut reg = TokenRegistry::start();
    let home = tempfile::tempdir().expect("temp HOME");

    // skopeo does the token flow itself: push with the credentials.
    let mut push = Command::new("skopeo");
    push.args(["copy", "--quiet", "--dest-tls-verify=false"])
        .args(["--dest-creds", &format!("{USER}:{PASSWORD}")])
        .arg(format!("oci:{}:latest", oci("busybox").display()))
        .arg(format!("docker://{}", reg.reference(&format!("{REPO}:v1"))))
        .env("HOME", home.path())
        .env_remove("REGISTRY_AUTH_FILE")
        .stdin(Stdio::null());
    run_ok(&mut push);
    let pushed = reg.token_log();
    assert!(
        pushed
            .iter()
            .any(|l| *l == format!("issued {USER} repository:{REPO}:pull,push")),
        "skopeo's push got no token\n{}",
        reg.logs()
    );
    reg.assert_running();
    let reference = reg.reference(&format!("{REPO}:v1"));

    // No credentials: the token server hands out a token that grants nothing and the
    // registry refuses the manifest.
    let data = DataDir::new();
    let err = pull_fails(lambox(&data, home.path()).args(["pull", "--quiet", &reference]));
    assert!(
        err.contains("unauthorized") && err.contains(&format!("manifest {REPO}:v1")),
        "{err}\n{}",
        reg.logs()
    );
    assert!(
        reg.token_log()
            .contains(&format!("issued <anonymous> repository:{REPO}:pull")),
        "lambox did not ask the token server anonymously\n{}",
        reg.logs()
    );
    assert_eq!(pull_tokens(&reg), 0);

    // --username/--password: Basic credentials to the token server, the bearer token to the
    // registry, for the manifest and every blob.
    pull_succeeds(
        &reg,
        home.path(),
        &["--username", USER, "--password", PASSWORD],
    );
    let after_cli = pull_tokens(&reg);
    assert!(after_cli >= 1, "no token issued to lambox\n{}", reg.logs());

    // An auth file, as docker login writes it.
    let auth_file: PathBuf = home.path().join("auth.json");
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            reg.registry_addr,
            base64(format!("{USER}:{PASSWORD}").as_bytes())
        ),
    )
    .expect("write the auth file");
    pull_succeeds(
        &reg,
        home.path(),
        &["--auth-file", auth_file.to_str().expect("UTF-8 temp path")],
    );
    assert!(
        pull_tokens(&reg) > after_cli,
        "the auth-file pull got no token\n{}",
        reg.logs()
    );

    // A wrong password: the token server refuses, lambox says so on one line.
    let denied_before = reg
        .token_log()
        .iter()
        .filter(|l| l.starts_with("denied"))
        .count();
    let data = DataDir::new();
    let err = pull_fails(lambox(&data, home.path()).args([
        "pull",
        "--quiet",
        &reference,
        "--username",
        USER,
        "--password",
        "wrong",
    ]));
    assert!(
        err.contains("authentication failed")
            && err.contains(&format!("check credentials for {}", reg.registry_addr)),
        "{err}"
    );
    assert!(
        reg.token_log()
            .iter()
            .filter(|l| l.starts_with("denied"))
            .count()
            > denied_before,
        "the token server never saw the wrong password\n{}",
        reg.logs()
    );
    // Nothing was stored by the failed pulls.
    let images = run_ok(lambox(&data, home.path()).args(["images", "--json"]));
    assert_eq!(
        serde_json::from_str::<Value>(&images).expect("images --json"),
        serde_json::json!([])
    );
    reg.assert_running();
}

#[test]
fn base64_matches_rfc4648() {
    for (input, want) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
        ("user:pass", "dXNlcjpwYXNz"),
    ] {
        assert_eq!(base64(input.as_bytes()), want, "{input:?}");
    }
}
