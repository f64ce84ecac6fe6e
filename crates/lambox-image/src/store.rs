//! The content-addressed store.
//!
//! ```text
//! DATA/blobs/sha256/<hex>   verified blobs: manifests, configs, compressed layers
//! DATA/layers/<hex>/        one unpacked layer per diff_id, in overlayfs lowerdir form
//! DATA/tmp/<pid>-<n>-<what> work in progress of a live process; anything of a dead one is stale
//! DATA/locks/<hex>          flock(2) per digest while it is being fetched or unpacked
//! DATA/lock                 flock(2): shared while importing, exclusive while collecting garbage
//! DATA/lambox.db            SQLite: images, names, layer sizes; the registry's repositories,
//!                           blob links, manifests and tags (`reg_*` tables, lambox-registry)
//! ```
//!
//! Invariants: a path under `blobs/` or `layers/` exists only once its content was verified
//! against its digest and synced to disk (written under `tmp/`, synced, then renamed); an image
//! row exists only once every blob and layer it names is in place. So a `kill -9` at any moment
//! leaves, at worst, stale files under `tmp/`, which the next [`Store::open`] removes.

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use rustix::fs::{flock, FlockOperation};
use serde::{Deserialize, Serialize};

use crate::error::IoContext;
use crate::{Digest, Error, Result};

/// A stored layer as the image refers to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LayerRecord {
    /// Digest of the blob as distributed (compressed).
    pub digest: Digest,
    /// Digest of the uncompressed tar (the config's diff_id); names the unpacked directory.
    pub diff_id: Digest,
    pub media_type: String,
    /// Compressed size in bytes.
    pub size: u64,
    /// Uncompressed tar size in bytes.
    pub uncompressed_size: u64,
}

/// A stored image: one single-platform manifest and everything it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageRecord {
    /// Digest of the manifest (the image's identity).
    pub digest: Digest,
    pub media_type: String,
    pub config_digest: Digest,
    pub os: String,
    pub architecture: String,
    pub layers: Vec<LayerRecord>,
    /// Seconds since the Unix epoch when it was stored.
    pub stored_at: u64,
}

impl ImageRecord {
    /// Total uncompressed size of all layers.
    pub fn uncompressed_size(&self) -> u64 {
        self.layers.iter().map(|l| l.uncompressed_size).sum()
    }
}

/// An image and the names that point at it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageEntry {
    pub names: Vec<String>,
    #[serde(flatten)]
    pub image: ImageRecord,
}

/// What garbage collection removed.
#[derive(Debug, Default, Clone, Copy, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GcStats {
    pub blobs: u64,
    pub layers: u64,
    pub temps: u64,
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    db: Mutex<Connection>,
    lock_path: PathBuf,
    /// Stale temps removed when the store was opened (reported by the next `gc`).
    cleaned_on_open: AtomicU64,
}

/// Holds the store's import lock (shared) or GC lock (exclusive) until dropped (closing its
/// own open file description releases the flock).
#[derive(Debug)]
pub struct StoreGuard {
    _file: File,
}

/// Holds a per-digest lock until dropped.
#[derive(Debug)]
pub struct DigestLock {
    _file: File,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The registry's tables (lambox-registry owns their contents). They live in the store's
/// database so that garbage collection sees every blob a repository refers to: a blob linked
/// into a repository (`reg_blobs`) or stored as a manifest (`reg_manifests`) is live.
/// `reg_blobs.linked_at` (unix seconds) is when an upload linked a blob no manifest has
/// claimed yet, 0 once one has; `reg_refs` says which manifests pushed since it exists name
/// which blobs (see lambox-registry's `gc`).
const REGISTRY_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS reg_repos (name TEXT PRIMARY KEY, created_at INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS reg_blobs (repo TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
        linked_at INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (repo, digest));
    CREATE TABLE IF NOT EXISTS reg_manifests (repo TEXT NOT NULL, digest TEXT NOT NULL,
        media_type TEXT NOT NULL, size INTEGER NOT NULL, artifact_type TEXT, subject TEXT,
        annotations TEXT, pushed_at INTEGER NOT NULL, PRIMARY KEY (repo, digest));
    CREATE INDEX IF NOT EXISTS reg_manifests_subject ON reg_manifests (repo, subject);
    CREATE TABLE IF NOT EXISTS reg_tags (repo TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL,
        PRIMARY KEY (repo, tag));
    CREATE TABLE IF NOT EXISTS reg_refs (repo TEXT NOT NULL, blob TEXT NOT NULL, manifest TEXT NOT NULL,
        PRIMARY KEY (repo, blob, manifest));
";

impl Store {
    /// The default data directory: `$LAMBOX_DATA_DIR` is handled by the CLI; this is
    /// `/var/lib/lambox` for root, else `$XDG_DATA_HOME/lambox` or `~/.local/share/lambox`.
    pub fn default_root() -> PathBuf {
        if rustix::process::geteuid().is_root() {
            return PathBuf::from("/var/lib/lambox");
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("lambox");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
        PathBuf::from(home).join(".local/share/lambox")
    }

    /// Open (creating if needed) the store at `root`, and remove temporary files that crashed
    /// processes left behind.
    pub fn open(root: &Path) -> Result<Store> {
        for dir in ["blobs/sha256", "layers", "tmp", "locks"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).ctx(|| format!("create store directory {}", p.display()))?;
        }
        let lock_path = root.join("lock");
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .ctx(|| format!("open {}", lock_path.display()))?;
        // Switching a new database to WAL needs an exclusive lock that SQLite's busy handler
        // does not wait for: two processes opening a fresh store at once would see "database
        // is locked". So opening (and creating the schema) is serialised by a short flock.
        let open_lock_path = root.join("open.lock");
        let open_lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&open_lock_path)
            .ctx(|| format!("open {}", open_lock_path.display()))?;
        flock(open_lock.as_fd(), FlockOperation::LockExclusive)
            .map_err(|e| Error::io("lock the store for opening", e.into()))?;
        let db_path = root.join("lambox.db");
        let db_err = |source| Error::Db {
            path: db_path.clone(),
            source,
        };
        let db = Connection::open(&db_path).map_err(db_err)?;
        db.busy_timeout(std::time::Duration::from_secs(60))
            .map_err(db_err)?;
        db.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS images (digest TEXT PRIMARY KEY, record TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS names (name TEXT PRIMARY KEY, digest TEXT NOT NULL REFERENCES images(digest));
             CREATE TABLE IF NOT EXISTS layers (diff_id TEXT PRIMARY KEY, uncompressed_size INTEGER NOT NULL);",
        )
        .map_err(db_err)?;
        db.execute_batch(REGISTRY_SCHEMA).map_err(db_err)?;
        // Stores made before `linked_at` existed: add it (their links count as claimed).
        let has_linked_at = db
            .prepare("SELECT 1 FROM pragma_table_info('reg_blobs') WHERE name = 'linked_at'")
            .and_then(|mut st| st.exists([]))
            .map_err(db_err)?;
        if !has_linked_at {
            db.execute_batch(
                "ALTER TABLE reg_blobs ADD COLUMN linked_at INTEGER NOT NULL DEFAULT 0",
            )
            .map_err(db_err)?;
        }
        drop(open_lock);
        let store = Store {
            root: root.to_path_buf(),
            db: Mutex::new(db),
            lock_path,
            cleaned_on_open: AtomicU64::new(0),
        };
        let cleaned = store.clean_stale_temps()?;
        store.cleaned_on_open.store(cleaned, Ordering::Relaxed);
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A poisoned lock only means another thread panicked mid-query; SQLite itself is
        // consistent, so carry on with it.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn db_err(&self, source: rusqlite::Error) -> Error {
        Error::Db {
            path: self.root.join("lambox.db"),
            source,
        }
    }

    /// Run `f` on the store's database connection (one at a time). For crates that keep their
    /// own tables in the store's database (lambox-registry's `reg_*` tables).
    pub fn with_db<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut db = self.db();
        f(&mut db).map_err(|e| self.db_err(e))
    }

    /// Take the store lock shared (importing, committing pushed blobs) or exclusive (garbage
    /// collection); blocks until it is free.
    ///
    /// Each guard opens the lock file anew: flock(2) locks belong to an open file description,
    /// so guards on one shared descriptor would not exclude each other between threads of one
    /// process (`lambox serve` pushes and collects garbage in the same process), and the first
    /// guard dropped would release the others' lock.
    pub fn lock(&self, exclusive: bool) -> Result<StoreGuard> {
        let op = if exclusive {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::LockShared
        };
        let file = File::options()
            .write(true)
            .open(&self.lock_path)
            .ctx(|| format!("open {}", self.lock_path.display()))?;
        flock(file.as_fd(), op).map_err(|e| Error::io("lock the store", e.into()))?;
        Ok(StoreGuard { _file: file })
    }

    /// Serialise work on one digest across threads and processes.
    pub fn lock_digest(&self, digest: &Digest) -> Result<DigestLock> {
        let path = self.root.join("locks").join(digest.hex());
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(|| format!("open lock {}", path.display()))?;
        flock(file.as_fd(), FlockOperation::LockExclusive)
            .map_err(|e| Error::io(format!("lock {digest}"), e.into()))?;
        Ok(DigestLock { _file: file })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_path(diff_id).is_dir()
    }

    /// A fresh path under `tmp/` owned by this process.
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{}-{n}-{what}", std::process::id()))
    }

    /// Read a stored blob whole (manifests and configs).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(digest);
        fs::read(&p).ctx(|| format!("read blob {digest}"))
    }

    /// Store bytes already in memory, verifying them first.
    pub fn write_blob(&self, expected: &Digest, bytes: &[u8]) -> Result<()> {
        let actual = Digest::of(bytes);
        if &actual != expected {
            return Err(Error::DigestMismatch {
                object: format!("blob {expected}"),
                expected: expected.clone(),
                actual,
            });
        }
        if self.has_blob(expected) {
            return Ok(());
        }
        let tmp = self.temp_path("blob");
        let mut f = File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        f.write_all(bytes)
            .ctx(|| format!("write {}", tmp.display()))?;
        self.commit_blob(f, &tmp, expected)
    }

    /// Sync a verified temp file and move it into place as blob `digest`.
    pub fn commit_blob(&self, file: File, tmp: &Path, digest: &Digest) -> Result<()> {
        file.sync_data().ctx(|| format!("sync blob {digest}"))?;
        drop(file);
        self.commit_synced_blob(tmp, digest)
    }

    /// Move a verified temp file whose data is already on disk (a `syncfs` of the store's file
    /// system covered it) into place as blob `digest`.
    pub fn commit_synced_blob(&self, tmp: &Path, digest: &Digest) -> Result<()> {
        let dest = self.blob_path(digest);
        fs::rename(tmp, &dest).ctx(|| format!("store blob {digest}"))?;
        sync_dir(dest.parent())
    }

    /// Sync a verified, unpacked temp directory and move it into place as layer `diff_id`.
    pub fn commit_layer(&self, tmp: &Path, diff_id: &Digest, uncompressed_size: u64) -> Result<()> {
        let dir = File::open(tmp).ctx(|| format!("open {}", tmp.display()))?;
        rustix::fs::syncfs(dir.as_fd())
            .map_err(|e| Error::io(format!("sync layer {diff_id}"), e.into()))?;
        let dest = self.layer_path(diff_id);
        match fs::rename(tmp, &dest) {
            Ok(()) => {}
            // Another process committed the same layer first; ours is redundant.
            Err(_) if dest.is_dir() => remove_tree(tmp)?,
            Err(e) => return Err(Error::io(format!("store layer {diff_id}"), e)),
        }
        sync_dir(dest.parent())?;
        self.db()
            .execute(
                "INSERT OR REPLACE INTO layers (diff_id, uncompressed_size) VALUES (?1, ?2)",
                params![diff_id.to_string(), uncompressed_size as i64],
            )
            .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// The recorded uncompressed size of a stored layer.
    pub fn layer_size(&self, diff_id: &Digest) -> Result<Option<u64>> {
        self.db()
            .query_row(
                "SELECT uncompressed_size FROM layers WHERE diff_id = ?1",
                params![diff_id.to_string()],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|o| o.map(|n| n as u64))
            .map_err(|e| self.db_err(e))
    }

    /// Record an image (whose blobs and layers are all in place) and point `name` at it.
    pub fn put_image(&self, image: &ImageRecord, name: Option<&str>) -> Result<()> {
        let record =
            serde_json::to_string(image).map_err(|e| Error::malformed("image record", e))?;
        let mut db = self.db();
        let tx = db.transaction().map_err(|e| self.db_err(e))?;
        tx.execute(
            "INSERT OR REPLACE INTO images (digest, record) VALUES (?1, ?2)",
            params![image.digest.to_string(), record],
        )
        .map_err(|e| self.db_err(e))?;
        if let Some(n) = name {
            tx.execute(
                "INSERT OR REPLACE INTO names (name, digest) VALUES (?1, ?2)",
                params![n, image.digest.to_string()],
            )
            .map_err(|e| self.db_err(e))?;
        }
        tx.commit().map_err(|e| self.db_err(e))
    }

    /// Every stored image with its names, newest first.
    pub fn images(&self) -> Result<Vec<ImageEntry>> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT digest, record FROM images")
            .map_err(|e| self.db_err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (digest, record) = row.map_err(|e| self.db_err(e))?;
            let image: ImageRecord = serde_json::from_str(&record)
                .map_err(|e| Error::malformed(format!("stored image record {digest}"), e))?;
            out.push(image);
        }
        drop(stmt);
        let mut entries = Vec::new();
        for image in out {
            let names = self.names_of(&db, &image.digest)?;
            entries.push(ImageEntry { names, image });
        }
        entries.sort_by(|a, b| {
            b.image
                .stored_at
                .cmp(&a.image.stored_at)
                .then(a.names.cmp(&b.names))
        });
        Ok(entries)
    }

    fn names_of(&self, db: &Connection, digest: &Digest) -> Result<Vec<String>> {
        let mut stmt = db
            .prepare("SELECT name FROM names WHERE digest = ?1 ORDER BY name")
            .map_err(|e| self.db_err(e))?;
        let names = stmt
            .query_map(params![digest.to_string()], |r| r.get::<_, String>(0))
            .map_err(|e| self.db_err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.db_err(e))?;
        Ok(names)
    }

    /// Find an image by name (`name`, or `name:latest`), full digest, or a unique prefix of at
    /// least 4 hex digits of its digest.
    pub fn find(&self, query: &str) -> Result<ImageEntry> {
        let all = self.images()?;
        let by_name = |n: &str| all.iter().find(|e| e.names.iter().any(|x| x == n));
        if let Some(e) = by_name(query).or_else(|| by_name(&format!("{query}:latest"))) {
            return Ok(e.clone());
        }
        let hex = query.strip_prefix("sha256:").unwrap_or(query);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hex = hex.to_ascii_lowercase();
            let matches: Vec<_> = all
                .iter()
                .filter(|e| e.image.digest.hex().starts_with(&hex))
                .collect();
            match matches.as_slice() {
                [one] => return Ok((*one).clone()),
                [] => {}
                _ => {
                    return Err(Error::Platform(format!(
                        "image id {query:?} is ambiguous: it matches {} images; give more digits",
                        matches.len()
                    )))
                }
            }
        }
        Err(Error::ImageNotFound(query.to_string()))
    }

    /// Remove a name; if it was the image's last name (or `query` named the image by digest),
    /// remove the image too. Returns the removed names and whether the image went.
    pub fn remove(&self, query: &str) -> Result<(Vec<String>, Option<Digest>)> {
        let entry = self.find(query)?;
        let named = entry
            .names
            .iter()
            .any(|n| n == query || *n == format!("{query}:latest"));
        let mut db = self.db();
        let tx = db.transaction().map_err(|e| self.db_err(e))?;
        let digest = entry.image.digest.to_string();
        let (removed_names, remove_image) = if named && entry.names.len() > 1 {
            let name = if entry.names.iter().any(|n| n == query) {
                query.to_string()
            } else {
                format!("{query}:latest")
            };
            tx.execute("DELETE FROM names WHERE name = ?1", params![name])
                .map_err(|e| self.db_err(e))?;
            (vec![name], false)
        } else {
            tx.execute("DELETE FROM names WHERE digest = ?1", params![digest])
                .map_err(|e| self.db_err(e))?;
            tx.execute("DELETE FROM images WHERE digest = ?1", params![digest])
                .map_err(|e| self.db_err(e))?;
            (entry.names.clone(), true)
        };
        tx.commit().map_err(|e| self.db_err(e))?;
        Ok((removed_names, remove_image.then_some(entry.image.digest)))
    }

    /// Remove blobs and layers no stored image refers to, and stale temporary files. Takes the
    /// store lock exclusively, so it never races an import.
    pub fn gc(&self) -> Result<GcStats> {
        self.gc_with(|_| Ok(()))
    }

    /// [`Store::gc`], running `first` once the exclusive lock is held and before anything is
    /// judged live: the registry drops blob links no manifest needs any more there, so that
    /// dropping them and freeing the blobs happen with no push in between.
    pub fn gc_with(&self, first: impl FnOnce(&Store) -> Result<()>) -> Result<GcStats> {
        let _guard = self.lock(true)?;
        first(self)?;
        let mut stats = GcStats {
            temps: self.clean_stale_temps()? + self.cleaned_on_open.swap(0, Ordering::Relaxed),
            ..GcStats::default()
        };
        let images = self.images()?;
        let mut live_blobs = std::collections::HashSet::new();
        let mut live_layers = std::collections::HashSet::new();
        for digest in self.registry_blobs()? {
            live_blobs.insert(digest);
        }
        for e in &images {
            live_blobs.insert(e.image.digest.hex());
            live_blobs.insert(e.image.config_digest.hex());
            for l in &e.image.layers {
                live_blobs.insert(l.digest.hex());
                live_layers.insert(l.diff_id.hex());
            }
        }
        for (dir, live, count) in [
            ("blobs/sha256", &live_blobs, &mut stats.blobs),
            ("layers", &live_layers, &mut stats.layers),
        ] {
            let path = self.root.join(dir);
            for entry in fs::read_dir(&path).ctx(|| format!("list {}", path.display()))? {
                let entry = entry.ctx(|| format!("list {}", path.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !live.contains(&name) {
                    remove_tree(&entry.path())?;
                    *count += 1;
                }
            }
        }
        let live_ids: Vec<String> = live_layers.iter().map(|h| format!("sha256:{h}")).collect();
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT diff_id FROM layers")
            .map_err(|e| self.db_err(e))?;
        let recorded = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.db_err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.db_err(e))?;
        for id in recorded.iter().filter(|id| !live_ids.contains(id)) {
            db.execute("DELETE FROM layers WHERE diff_id = ?1", params![id])
                .map_err(|e| self.db_err(e))?;
        }
        Ok(stats)
    }

    /// Hex digests of every blob the registry refers to (linked blobs and manifests).
    fn registry_blobs(&self) -> Result<Vec<String>> {
        self.with_db(|db| {
            let mut stmt =
                db.prepare("SELECT digest FROM reg_blobs UNION SELECT digest FROM reg_manifests")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.map(|r| r.map(|d| d.strip_prefix("sha256:").unwrap_or(&d).to_string()))
                .collect()
        })
    }

    /// Remove `tmp/` entries whose owning process is gone. Returns how many were removed.
    fn clean_stale_temps(&self) -> Result<u64> {
        let tmp = self.root.join("tmp");
        let mut removed = 0;
        for entry in fs::read_dir(&tmp).ctx(|| format!("list {}", tmp.display()))? {
            let entry = entry.ctx(|| format!("list {}", tmp.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let owner_alive = name
                .split('-')
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists());
            if !owner_alive {
                remove_tree(&entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn sync_dir(dir: Option<&Path>) -> Result<()> {
    if let Some(d) = dir {
        File::open(d)
            .and_then(|f| f.sync_all())
            .ctx(|| format!("sync {}", d.display()))?;
    }
    Ok(())
}

/// Remove a file or a whole tree, without following symlinks.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("remove {}", path.display()), e)),
    };
    let r = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    r.ctx(|| format!("remove {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(layers: &[(&[u8], &[u8])]) -> ImageRecord {
        ImageRecord {
            digest: Digest::of(format!("{layers:?}").as_bytes()),
            media_type: crate::manifest::OCI_MANIFEST.into(),
            config_digest: Digest::of(b"config"),
            os: "linux".into(),
            architecture: "amd64".into(),
            layers: layers
                .iter()
                .map(|(blob, tar)| LayerRecord {
                    digest: Digest::of(blob),
                    diff_id: Digest::of(tar),
                    media_type: crate::manifest::OCI_LAYER_GZIP.into(),
                    size: blob.len() as u64,
                    uncompressed_size: tar.len() as u64,
                })
                .collect(),
            stored_at: 1,
        }
    }

    #[test]
    fn names_digests_and_removal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let img = record(&[(b"blob", b"tar")]);
        store
            .put_image(&img, Some("example.com/a:v1"))
            .expect("put");
        store
            .put_image(&img, Some("example.com/a:latest"))
            .expect("put");
        assert_eq!(store.find("example.com/a").expect("latest").image, img);
        assert_eq!(
            store.find(&img.digest.to_string()).expect("digest").image,
            img
        );
        assert_eq!(
            store.find(&img.digest.hex()[..8]).expect("prefix").image,
            img
        );
        assert!(matches!(store.find("nope"), Err(Error::ImageNotFound(_))));
        let (names, gone) = store.remove("example.com/a:v1").expect("untag");
        assert_eq!((names, gone), (vec!["example.com/a:v1".to_string()], None));
        let (_, gone) = store.remove("example.com/a").expect("remove");
        assert_eq!(gone, Some(img.digest));
        assert!(store.images().expect("list").is_empty());
    }

    #[test]
    fn write_blob_verifies_and_gc_collects_unreferenced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let err = store
            .write_blob(&Digest::of(b"x"), b"y")
            .expect_err("mismatch");
        assert!(matches!(err, Error::DigestMismatch { .. }));
        assert!(!store.has_blob(&Digest::of(b"x")));
        let img = record(&[(b"blob", b"tar")]);
        store
            .write_blob(&Digest::of(b"blob"), b"blob")
            .expect("write");
        store
            .write_blob(&Digest::of(b"orphan"), b"orphan")
            .expect("write");
        store.put_image(&img, None).expect("put");
        let stats = store.gc().expect("gc");
        assert_eq!(stats.blobs, 1);
        assert!(store.has_blob(&Digest::of(b"blob")));
        assert!(!store.has_blob(&Digest::of(b"orphan")));
    }

    #[test]
    fn gc_keeps_blobs_the_registry_refers_to() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        for b in [&b"linked"[..], b"manifest", b"orphan"] {
            store.write_blob(&Digest::of(b), b).expect("write");
        }
        store
            .with_db(|db| {
                db.execute(
                    "INSERT INTO reg_blobs (repo, digest, size) VALUES ('a/b', ?1, 6)",
                    params![Digest::of(b"linked").to_string()],
                )?;
                db.execute(
                    "INSERT INTO reg_manifests (repo, digest, media_type, size, pushed_at)
                     VALUES ('a/b', ?1, 'x', 8, 0)",
                    params![Digest::of(b"manifest").to_string()],
                )
            })
            .expect("link");
        assert_eq!(store.gc().expect("gc").blobs, 1);
        assert!(store.has_blob(&Digest::of(b"linked")));
        assert!(store.has_blob(&Digest::of(b"manifest")));
        assert!(!store.has_blob(&Digest::of(b"orphan")));
    }

    #[test]
    fn stale_temps_of_dead_processes_are_removed_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Store::open(dir.path()).expect("open"));
        // PID 0x7ffffffe is never a live process on Linux (pid_max is at most 2^22).
        let stale = dir.path().join("tmp/2147483646-0-layer");
        fs::create_dir_all(stale.join("a/b")).expect("mkdir");
        let live = dir
            .path()
            .join(format!("tmp/{}-0-blob", std::process::id()));
        fs::write(&live, b"x").expect("write");
        drop(Store::open(dir.path()).expect("reopen"));
        assert!(!stale.exists());
        assert!(live.exists());
    }
}
