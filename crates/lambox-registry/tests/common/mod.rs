//! A registry server started inside the test on 127.0.0.1:0, over a store in a temp dir.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
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
