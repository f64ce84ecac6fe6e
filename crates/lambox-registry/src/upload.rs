//! Blob upload sessions: bytes are appended to a file under the store's `tmp/` and hashed as
//! they arrive; the digest is compared before the file is renamed into `blobs/`.
//!
//! A session lives in this process's memory and its file is `tmp/<pid>-<n>-upload`, so a
//! crash leaves a temp of a dead process that the next `Store::open` removes; an abandoned
//! session is removed by [`Uploads::expire`] after the idle timeout.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use lambox_image::Digest;

use crate::error::{ApiError, ApiResult, Code};
use crate::wire::RepoName;

/// Bytes gathered before a write to the session file.
const WRITE_CHUNK: usize = 1 << 20;

/// One upload in progress.
#[derive(Debug)]
pub struct Session {
    pub repo: RepoName,
    pub path: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    /// Bytes written and hashed so far.
    pub size: u64,
    /// Set when a write failed: the file no longer matches the hash, the session is dead.
    broken: bool,
}

impl Session {
    pub async fn create(repo: RepoName, path: PathBuf) -> ApiResult<Session> {
        let file = tokio::fs::File::create(&path).await.map_err(|e| {
            ApiError::internal(format!("create upload file {}: {e}", path.display()))
        })?;
        Ok(Session {
            repo,
            path,
            file: Some(file),
            hasher: Sha256::new(),
            size: 0,
            broken: false,
        })
    }

    /// Append a request body. Everything received before a client hangs up is kept (and
    /// counted in `size`), so the client can ask for the offset and resume.
    pub async fn append(&mut self, body: Body) -> ApiResult<u64> {
        if self.broken {
            return Err(ApiError::new(
                Code::BlobUploadInvalid,
                "upload failed earlier; start again",
            ));
        }
        let mut stream = body.into_data_stream();
        let mut buf: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
        let mut received = 0u64;
        let mut failure = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => {
                    received += c.len() as u64;
                    buf.extend_from_slice(&c);
                    if buf.len() >= WRITE_CHUNK {
                        self.write(&buf).await?;
                        buf.clear();
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        self.write(&buf).await?;
        match failure {
            Some(e) => Err(ApiError::new(
                Code::BlobUploadInvalid,
                format!("upload body interrupted after {received} bytes: {e}"),
            )),
            None => Ok(received),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> ApiResult<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let Some(file) = self.file.as_mut() else {
            return Err(ApiError::internal("upload file already closed"));
        };
        if let Err(e) = file.write_all(bytes).await {
            self.broken = true;
            return Err(ApiError::internal(format!(
                "write upload file {}: {e}",
                self.path.display()
            )));
        }
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// The digest of everything appended so far.
    pub fn digest(&self) -> Digest {
        let hex: [u8; 32] = self.hasher.clone().finalize().into();
        // Formatting and parsing a sha256 we just computed cannot fail.
        format!("sha256:{}", hex_encode(&hex))
            .parse()
            .unwrap_or_else(|_| Digest::of(b""))
    }

    /// Flush and sync the file to disk, and close it.
    pub async fn sync(&mut self) -> ApiResult<()> {
        if let Some(mut f) = self.file.take() {
            let r = async {
                f.flush().await?;
                f.sync_data().await
            }
            .await;
            r.map_err(|e| ApiError::internal(format!("sync upload {}: {e}", self.path.display())))?;
        }
        Ok(())
    }

    /// Remove the session's file (after a cancel, a failure, or expiry).
    pub async fn discard(&mut self) {
        self.file = None;
        let _ = tokio::fs::remove_file(&self.path).await;
    }
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Debug)]
struct Entry {
    session: Arc<tokio::sync::Mutex<Session>>,
    touched: Instant,
}

/// The upload sessions of this process, by id.
#[derive(Debug, Default)]
pub struct Uploads {
    map: Mutex<HashMap<String, Entry>>,
}

impl Uploads {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, id: String, session: Session) {
        self.map().insert(
            id,
            Entry {
                session: Arc::new(tokio::sync::Mutex::new(session)),
                touched: Instant::now(),
            },
        );
    }

    /// The session `id`, refreshed as used now.
    pub fn get(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<Session>>> {
        let mut map = self.map();
        let e = map.get_mut(id)?;
        e.touched = Instant::now();
        Some(e.session.clone())
    }

    pub fn remove(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<Session>>> {
        self.map().remove(id).map(|e| e.session)
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remove sessions idle for longer than `timeout` (a session busy with a request is never
    /// idle). Returns how many were removed.
    pub async fn expire(&self, timeout: Duration) -> usize {
        let now = Instant::now();
        let stale: Vec<_> = {
            let mut map = self.map();
            let ids: Vec<String> = map
                .iter()
                .filter(|(_, e)| {
                    now.duration_since(e.touched) > timeout && e.session.try_lock().is_ok()
                })
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| map.remove(id)).collect()
        };
        let n = stale.len();
        for e in stale {
            e.session.lock().await.discard().await;
        }
        n
    }
}

impl Session {
    /// A closed, empty session left behind when a finished session is moved out of its lock.
    pub(crate) fn placeholder(repo: RepoName) -> Session {
        Session {
            repo,
            path: PathBuf::new(),
            file: None,
            hasher: Sha256::new(),
            size: 0,
            broken: true,
        }
    }
}
