//! lambox's registry: the OCI Distribution API (Docker Registry HTTP API v2) over lambox's
//! image store.
//!
//! [`Registry::router`] is an axum `Router` for everything under `/v2/`; it is meant to be
//! merged into `lambox serve`'s router next to the Lambda API. Blobs are the store's blobs
//! (`DATA/blobs/sha256/<hex>`), so an image pushed here is in the store already; which blobs
//! a repository can see, its manifests and its tags are rows in the store's database
//! (see [`meta`]). Manifests are stored byte for byte as pushed and served with the media
//! type they were pushed with.
//!
//! Uploads are hashed while they stream into `DATA/tmp/` and renamed into `blobs/` only when
//! the digest the client names matches (see [`upload`]). Deleting blobs, manifests and tags
//! removes metadata only: the bytes stay until garbage collection of blobs no repository,
//! image or function refers to, a later step (`lambox prune` already keeps every blob the
//! registry refers to).

use std::sync::Arc;
use std::time::Duration;

use axum::routing::any;
use axum::Router;

use lambox_image::store::Store;

mod api;
pub mod auth;
pub mod ecr;
pub mod error;
pub mod meta;
pub mod scan;
pub mod source;
pub mod upload;
pub mod wire;

pub use error::{ApiError, Code};

/// How the registry behaves.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// An upload session idle this long is removed with its bytes.
    pub upload_timeout: Duration,
    /// Require a token from ECR's `GetAuthorizationToken` on every `/v2/` request (see
    /// [`auth`]). Off by default: `lambox serve` listens on loopback and its Lambda API is
    /// not authenticated either unless `--auth sigv4`, which turns this on too.
    pub auth: bool,
    /// How long a token is valid (ECR: 12 hours).
    pub token_ttl: Duration,
    /// An OSV JSON export (file or directory of `*.json`) scans match packages against.
    pub vuln_db: Option<std::path::PathBuf>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            upload_timeout: Duration::from_secs(3600),
            auth: false,
            token_ttl: Duration::from_secs(12 * 3600),
            vuln_db: None,
        }
    }
}

/// The registry's state: the store and the upload sessions. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<Store>,
    uploads: upload::Uploads,
    config: RegistryConfig,
    /// Serialises the registry's commits (rename into `blobs/` + link). The store lock is an
    /// flock on one file description, shared by every thread of the process: had two commits
    /// taken it at once, the first to finish would have released it for both.
    commit: std::sync::Mutex<()>,
}

impl Registry {
    pub fn new(store: Arc<Store>, config: RegistryConfig) -> Self {
        if let Err(e) = store.with_db(|db| {
            db.execute_batch(auth::SCHEMA)?;
            db.execute_batch(scan::SCHEMA)?;
            db.execute_batch(ecr::SCHEMA)
        }) {
            tracing::error!("registry: create tables: {e}");
        }
        Registry {
            inner: Arc::new(Inner {
                store,
                uploads: upload::Uploads::default(),
                config,
                commit: std::sync::Mutex::new(()),
            }),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// The `/v2/` API. Routes: `/v2`, `/v2/` and `/v2/{*rest}` (repository names contain
    /// slashes, so the rest of the path is parsed by [`wire::Route::parse`]).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v2", any(api::dispatch))
            .route("/v2/", any(api::dispatch))
            .route("/v2/{*rest}", any(api::dispatch))
            .with_state(self.clone())
    }

    /// Run `f` holding the registry's commit lock and the store lock (shared), so a garbage
    /// collection never sees a blob between its rename and its link.
    pub(crate) fn committing<T>(
        &self,
        f: impl FnOnce(&Store) -> lambox_image::Result<T>,
    ) -> lambox_image::Result<T> {
        let _one = self.inner.commit.lock().unwrap_or_else(|p| p.into_inner());
        let _guard = self.inner.store.lock(false)?;
        f(&self.inner.store)
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// Scan an image of a repository in the background (see [`scan`]); its row says
    /// `IN_PROGRESS` until it is done.
    pub fn start_scan(&self, repo: &str, digest: &lambox_image::Digest) {
        let (reg, repo, digest) = (self.clone(), repo.to_string(), digest.clone());
        let store = reg.inner.store.clone();
        let _ = store.with_db(|db| {
            db.execute(
                "INSERT OR REPLACE INTO reg_scans (repo, digest, status, description)
                 VALUES (?1, ?2, 'IN_PROGRESS', 'The scan is in progress.')",
                rusqlite::params![repo, digest.to_string()],
            )
        });
        tokio::task::spawn_blocking(move || {
            scan::run_and_record(
                reg.store(),
                reg.inner.config.vuln_db.as_deref(),
                &repo,
                &digest,
            )
        });
    }

    /// Upload sessions in progress.
    pub fn upload_count(&self) -> usize {
        self.inner.uploads.len()
    }

    /// Remove upload sessions idle for longer than the configured timeout, with their files.
    pub async fn expire_uploads(&self) -> usize {
        self.inner
            .uploads
            .expire(self.inner.config.upload_timeout)
            .await
    }

    /// Run [`Registry::expire_uploads`] every `timeout / 4` (at least every second) until the
    /// runtime shuts down.
    pub fn spawn_upload_reaper(&self) -> tokio::task::JoinHandle<()> {
        let reg = self.clone();
        let period = (self.inner.config.upload_timeout / 4).max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let n = reg.expire_uploads().await;
                if n > 0 {
                    tracing::info!("registry: removed {n} abandoned upload(s)");
                }
            }
        })
    }
}
