//! A registry server started inside the test on 127.0.0.1:0, over a store in a temp dir.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lambox_image::store::Store;
use lambox_registry::{Registry, RegistryConfig};

pub struct Server {
    pub addr: SocketAddr,
    pub registry: Registry,
    pub dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(RegistryConfig::default()).await
    }

    pub async fn start_with(config: RegistryConfig) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path()).expect("open store"));
        let registry = Registry::new(store, config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // As `lambox serve` will: the /v2/ API and ECR's JSON API on one port.
        let app = registry
            .router()
            .merge(lambox_registry::ecr::router(&registry));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Server {
            addr,
            registry,
            dir,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Files under the store's `tmp/` (upload sessions in progress, or leftovers).
    pub fn temps(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path().join("tmp"))
            .expect("tmp")
            .map(|e| e.expect("entry").path())
            .collect()
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

/// The fixture cache (`LAMBOX_FIXTURES`, default /var/cache/lambox-fixtures), built by
/// scripts/build-fixtures.sh (scripts/test.sh runs it before the tests).
pub fn fixture_image(name: &str) -> PathBuf {
    let dir = std::env::var_os("LAMBOX_FIXTURES")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/lambox-fixtures"));
    let p = dir.join("images").join(name);
    assert!(
        p.join("oci/index.json").is_file(),
        "fixture image {} missing: run scripts/build-fixtures.sh {}",
        p.display(),
        dir.display()
    );
    p
}

pub fn sha256(bytes: &[u8]) -> String {
    lambox_image::Digest::of(bytes).to_string()
}

/// The first error code of a registry error body.
pub fn error_code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body}"));
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no errors[0].code in {body}"))
        .to_string()
}

/// Run a command; panic with its output unless it succeeds; its stdout.
pub async fn run(cmd: &str, args: &[&str], envs: &[(&str, &Path)]) -> String {
    let mut c = tokio::process::Command::new(cmd);
    c.args(args).stdin(std::process::Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Check a `skopeo copy … dir:DIR` result: `manifest.json` has digest `want`, and every blob
/// it names is present with the right digest and size, and is the store's blob.
pub fn check_pulled(dir: &Path, want: &str, store: &Path) {
    let manifest = std::fs::read(dir.join("manifest.json")).expect("manifest.json");
    assert_eq!(sha256(&manifest), want, "pulled manifest is byte-identical");
    let m: serde_json::Value = serde_json::from_slice(&manifest).expect("json");
    let mut descs = vec![m["config"].clone()];
    descs.extend(m["layers"].as_array().expect("layers").iter().cloned());
    for d in descs {
        let digest = d["digest"].as_str().expect("digest");
        let hex = &digest[7..];
        let bytes = std::fs::read(dir.join(hex)).expect("pulled blob");
        assert_eq!(sha256(&bytes), digest);
        assert_eq!(bytes.len() as u64, d["size"].as_u64().expect("size"));
        let stored = store.join("blobs/sha256").join(hex);
        assert_eq!(
            std::fs::metadata(&stored)
                .expect("the store has the blob")
                .len(),
            bytes.len() as u64
        );
    }
}

pub async fn head_digest(s: &Server, repo: &str, tag: &str) -> String {
    let r = client()
        .head(s.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), 200, "{repo}:{tag}");
    r.headers()["docker-content-digest"]
        .to_str()
        .expect("ascii")
        .to_string()
}

/// Push `image` with skopeo in `format`, pull it back into a `dir:` layout, compare.
pub async fn skopeo_round_trip(s: &Server, work: &Path, image: &str, format: &str, repo: &str) {
    let src = format!("oci:{}:latest", fixture_image(image).join("oci").display());
    let dest = format!("docker://{}/{repo}:latest", s.addr);
    let digestfile = work.join(format!("{}-{format}.digest", repo.replace('/', "_")));
    run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--format",
            format,
            "--digestfile",
            digestfile.to_str().expect("utf-8"),
            &src,
            &dest,
        ],
        &[],
    )
    .await;
    let pushed = std::fs::read_to_string(&digestfile).expect("digestfile");
    assert_eq!(head_digest(s, repo, "latest").await, pushed.trim());
    let raw = run(
        "skopeo",
        &["inspect", "--raw", "--tls-verify=false", &dest],
        &[],
    )
    .await;
    let mt = serde_json::from_str::<serde_json::Value>(&raw).expect("json")["mediaType"]
        .as_str()
        .expect("mediaType")
        .to_string();
    let want = if format == "v2s2" {
        "application/vnd.docker.distribution.manifest.v2+json"
    } else {
        "application/vnd.oci.image.manifest.v1+json"
    };
    assert_eq!(mt, want, "{image} pushed as {format}");
    let out: PathBuf = work.join(format!("pull-{}-{format}", repo.replace('/', "_")));
    pull_and_check(s, &format!("{repo}:latest"), &out, pushed.trim()).await;
}

/// Pull REPO:TAG with skopeo into a `dir:` layout at `out` and [`check_pulled`] it.
pub async fn pull_and_check(s: &Server, repo_tag: &str, out: &Path, want: &str) {
    let src = format!("docker://{}/{repo_tag}", s.addr);
    let dest = format!("dir:{}", out.display());
    run(
        "skopeo",
        &["copy", "--quiet", "--src-tls-verify=false", &src, &dest],
        &[],
    )
    .await;
    check_pulled(out, want, s.dir.path());
}

pub fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {r:?}"))
        .to_str()
        .expect("ascii header")
}

/// Push a blob in one POST (monolithic upload); its digest.
pub async fn push_blob(c: &reqwest::Client, s: &Server, repo: &str, bytes: &[u8]) -> String {
    let d = sha256(bytes);
    let r = c
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .expect("post");
    assert_eq!(
        r.status(),
        reqwest::StatusCode::CREATED,
        "monolithic push to {repo}"
    );
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(header(&r, "location"), format!("/v2/{repo}/blobs/{d}"));
    d
}

/// A raw ECR JSON call (`POST /` with `X-Amz-Target`); panics unless it answers 200. Also
/// how tests see lambox's own `lamboxPackages`, which the aws CLI drops.
pub async fn ecr_raw(s: &Server, op: &str, body: serde_json::Value) -> serde_json::Value {
    let r = client()
        .post(s.url("/"))
        .header(
            "x-amz-target",
            format!("AmazonEC2ContainerRegistry_V20150921.{op}"),
        )
        .header("content-type", "application/x-amz-json-1.1")
        .body(body.to_string())
        .send()
        .await
        .expect("post");
    let status = r.status();
    let text = r.text().await.expect("body");
    assert_eq!(status, 200, "{op}: {text}");
    serde_json::from_str(&text).expect("json")
}
