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
//! the digest the client names matches (see [`upload`]). Deleting a manifest, a blob link or
//! a repository starts a garbage collection in the background ([`Registry::request_gc`],
//! [`gc`]) that frees the blobs no repository, stored image or function needs any more.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::any;
use axum::Router;

use lambox_image::store::Store;

mod api;
pub mod auth;
pub mod ecr;
pub mod error;
pub mod gc;
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
    /// How long an uploaded blob may wait for a manifest naming it (see [`gc`]).
    pub unclaimed_grace: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            upload_timeout: Duration::from_secs(3600),
            auth: false,
            token_ttl: Duration::from_secs(12 * 3600),
            vuln_db: None,
            unclaimed_grace: gc::UNCLAIMED_GRACE,
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
    /// Serialises the registry's commits (rename into `blobs/` + link), so the checks a commit
    /// makes (an IMMUTABLE tag, the blobs a manifest names) hold until it is done.
    commit: std::sync::Mutex<()>,
    /// A collection is queued and has not started yet.
    gc_queued: std::sync::atomic::AtomicBool,
    /// One collection at a time.
    gc_running: std::sync::Mutex<()>,
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
                gc_queued: std::sync::atomic::AtomicBool::new(false),
                gc_running: std::sync::Mutex::new(()),
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

    /// Collect garbage in the background (see [`gc`]) after something was deleted. Requests
    /// made while one collection waits to start are served by it; one made while a collection
    /// runs queues another, so every deletion is followed by a complete collection.
    pub fn request_gc(&self) -> Option<tokio::task::JoinHandle<()>> {
        use std::sync::atomic::Ordering;
        if self.inner.gc_queued.swap(true, Ordering::SeqCst) {
            return None;
        }
        let reg = self.clone();
        Some(tokio::task::spawn_blocking(move || {
            let _one = reg
                .inner
                .gc_running
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            reg.inner.gc_queued.store(false, Ordering::SeqCst);
            match gc::collect(&reg.inner.store, reg.inner.config.unclaimed_grace) {
                Ok((links, stats)) => tracing::info!(
                    links,
                    blobs = stats.blobs,
                    layers = stats.layers,
                    "registry: garbage collected"
                ),
                Err(e) => tracing::warn!("registry: garbage collection failed: {e}"),
            }
        }))
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
