//! Shared helpers of the end-to-end tests: real runtimes started by [`ProcessLauncher`],
//! invoked through the invoke API router with `oneshot`.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt as _;
use lambox_runtime::{
    invoke_router, FunctionConfig, ImageConfig, MemoryLogSink, Pool, PoolOptions, ProcessLauncher,
};
use tower::ServiceExt as _;

/// The fixture cache (`LAMBOX_FIXTURES`, default `/var/cache/lambox-fixtures`), built with
/// `scripts/build-fixtures.sh` if awslambdaric is missing.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(
            std::env::var_os("LAMBOX_FIXTURES")
                .unwrap_or_else(|| "/var/cache/lambox-fixtures".into()),
        );
        if !dir.join("pip/awslambdaric/awslambdaric").is_dir() {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-fixtures.sh");
            let status = std::process::Command::new("bash")
                .arg(&script)
                .arg(&dir)
                .status()
                .expect("run scripts/build-fixtures.sh");
            assert!(status.success(), "scripts/build-fixtures.sh failed");
        }
        dir
    })
}

/// The host Python the fixture's awslambdaric was installed for (3.11).
pub const PYTHON: &str = "/usr/bin/python3";

/// A function running `python3 -m awslambdaric <handler>` with the handlers in `dir`.
pub fn python_function(dir: &Path, handler: &str) -> FunctionConfig {
    let ric = fixtures().join("pip/awslambdaric");
    let mut config = FunctionConfig::new(
        "pyfn",
        ImageConfig {
            entrypoint: vec![PYTHON.into(), "-m".into(), "awslambdaric".into()],
            cmd: vec![handler.into()],
            workdir: Some(dir.display().to_string()),
            env: vec![(
                "PYTHONPATH".into(),
                format!("{}:{}", ric.display(), dir.display()),
            )],
        },
    );
    config.timeout_secs = 10;
    config
}

/// A function running the shell script `script` (written to `dir/bootstrap`).
pub fn script_function(dir: &Path, script: &str) -> FunctionConfig {
    let path = dir.join("bootstrap");
    std::fs::write(&path, script).expect("write bootstrap");
    let mut perms = std::fs::metadata(&path).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).expect("chmod");
    let mut config = FunctionConfig::new(
        "shfn",
        ImageConfig {
            entrypoint: vec![path.display().to_string()],
            cmd: vec![],
            workdir: Some(dir.display().to_string()),
            env: vec![("FIXTURE_DIR".into(), dir.display().to_string())],
        },
    );
    config.timeout_secs = 10;
    config
}

/// A pool with the process launcher, logging to memory.
pub fn pool(config: FunctionConfig, options: PoolOptions) -> (Pool, MemoryLogSink) {
    let sink = MemoryLogSink::new();
    let pool = Pool::new(
        config,
        Arc::new(ProcessLauncher::new()),
        Arc::new(sink.clone()),
        options,
    )
    .expect("valid config");
    (pool, sink)
}

/// A caller's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    pub fn request_id(&self) -> &str {
        self.header("x-amzn-requestid").expect("request id header")
    }

    /// The decoded `X-Amz-Log-Result`.
    pub fn log(&self) -> String {
        let b64 = self.header("x-amz-log-result").expect("X-Amz-Log-Result");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        String::from_utf8(raw).expect("utf-8 log")
    }
}

/// `POST /2015-03-31/functions/fn/invocations` with `headers` and `payload`.
pub async fn invoke(pool: &Pool, headers: &[(&str, &str)], payload: impl Into<Body>) -> Answer {
    let mut req = Request::post("/2015-03-31/functions/fn/invocations");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(payload.into()).expect("request");
    let resp = invoke_router(pool.clone())
        .oneshot(req)
        .await
        .expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

/// An invoke with `X-Amz-Log-Type: Tail`.
pub async fn invoke_tail(pool: &Pool, payload: &str) -> Answer {
    invoke(pool, &[("X-Amz-Log-Type", "Tail")], payload.to_owned()).await
}

/// Waits until `cond` holds (or panics after `secs`).
pub async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts `haystack` contains every needle, in order.
pub fn assert_in_order(haystack: &str, needles: &[&str]) {
    let mut from = 0;
    for n in needles {
        match haystack[from..].find(n) {
            Some(i) => from += i + n.len(),
            None => panic!("{n:?} not found (in order) in:\n{haystack}"),
        }
    }
}
