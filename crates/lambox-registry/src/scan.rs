//! Image scanning: the package inventory of a pushed image, and — when a local vulnerability
//! database (an OSV JSON export) is configured — the findings that match it.
//!
//! The layers are read from the store's blobs in order, as tar streams (gzip, zstd or plain);
//! a later layer's file replaces an earlier one's, a whiteout (`.wh.NAME`) removes a path and
//! everything under it, an opaque marker (`.wh..wh..opq`) removes what lower layers had in
//! its directory. Databases read:
//! - dpkg: `var/lib/dpkg/status` (installed stanzas) and `var/lib/dpkg/status.d/*`;
//! - apk: `lib/apk/db/installed`;
//! - rpm, SQLite backend (Amazon Linux 2023 — AWS's current Lambda base images —, Fedora,
//!   RHEL 9): `var/lib/rpm/rpmdb.sqlite` or `usr/lib/sysimage/rpm/rpmdb.sqlite`, each
//!   package's header blob parsed for its name, epoch, version and release; the ecosystem is
//!   named after `etc/os-release`'s `ID` (`amzn` → `Amazon Linux`, `rhel` → `Red Hat`, …);
//! - Python: `…/NAME-VERSION.dist-info/METADATA` (`Name:` and `Version:`);
//! - npm: `…/node_modules/NAME/package.json` and `…/node_modules/@SCOPE/NAME/package.json`.
//!
//! - rpm, Berkeley DB backend (Amazon Linux 2, RHEL 7/8): the hash database
//!   `var/lib/rpm/Packages`, read page by page (no Berkeley DB library): each hash page's
//!   data items, inline or on overflow page chains, are the same header blobs.
//!
//! The ndb rpm format (SUSE) is not read. The SQLite file is image bytes: it is copied to a private temporary directory and opened
//! read-only with SQLite's defensive settings, and header blobs are bounds-checked; a
//! database that cannot be read yields no rpm packages, never an error. Nothing is invented: a finding
//! exists only when an OSV record names the package's ecosystem and name and lists its version
//! in `versions` or puts it in an `ECOSYSTEM`/`SEMVER` range (compared segment by segment:
//! numbers numerically, other text bytewise — not dpkg's or PEP 440's full rules).

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::Path;

use lambox_image::manifest::Compression;
use lambox_image::store::Store;
use lambox_image::Digest;
use serde::Serialize;
use serde_json::Value;

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Package {
    /// OSV ecosystem: `Debian`, `Alpine`, `PyPI`, `npm`.
    pub ecosystem: String,
    pub name: String,
    pub version: String,
    /// The file it was found in, inside the image.
    pub path: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("scan: {0}")]
    Store(#[from] lambox_image::Error),
    #[error("scan: read layer {0}: {1}")]
    Layer(String, std::io::Error),
    #[error("scan: manifest {0}: {1}")]
    Manifest(String, String),
    #[error("scan: vulnerability database {0}: {1}")]
    Database(String, String),
}

/// Files whose content the scanner parses.
fn interesting(path: &str) -> bool {
    RPMDB.contains(&path)
        || path == RPMDB_BDB
        || path == "etc/os-release"
        || path == "usr/lib/os-release"
        || path == "var/lib/dpkg/status"
        || path.starts_with("var/lib/dpkg/status.d/")
        || path == "lib/apk/db/installed"
        || (path.ends_with("/METADATA") && path.contains(".dist-info/"))
        || (path.ends_with("/package.json") && npm_name(path).is_some())
}

/// Where the rpm database (SQLite backend) lives.
const RPMDB: [&str; 2] = [
    "var/lib/rpm/rpmdb.sqlite",
    "usr/lib/sysimage/rpm/rpmdb.sqlite",
];

/// Where the rpm database (Berkeley DB backend) lives.
const RPMDB_BDB: &str = "var/lib/rpm/Packages";

/// The values of a Berkeley DB hash database (rpm's `Packages`: the header blobs), read
/// straight from its pages, either byte order. Every offset, length and page number is
/// checked, an overflow chain is at most as long as the file has pages; anything that does
/// not fit is skipped. Empty if the bytes are not a hash database.
fn bdb_hash_values(db: &[u8]) -> Vec<Vec<u8>> {
    const HASH_MAGIC: u32 = 0x0006_1561;
    const P_HASH_UNSORTED: u8 = 2;
    const P_OVERFLOW: u8 = 7;
    const P_HASHMETA: u8 = 8;
    const P_HASH: u8 = 13;
    const H_KEYDATA: u8 = 1;
    const H_OFFPAGE: u8 = 3;
    /// Page header: lsn, pgno, prev, next (u32 @16), entries (u16 @20), hf_offset (u16 @22),
    /// level, type (u8 @25); the item offsets follow.
    const HEADER: usize = 26;
    let Some(magic) = db.get(12..16) else {
        return Vec::new();
    };
    let magic: [u8; 4] = magic.try_into().unwrap_or_default();
    let le = if u32::from_le_bytes(magic) == HASH_MAGIC {
        true
    } else if u32::from_be_bytes(magic) == HASH_MAGIC {
        false
    } else {
        return Vec::new();
    };
    let u16_at = |b: &[u8], at: usize| -> Option<usize> {
        let v: [u8; 2] = b.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(usize::from(if le {
            u16::from_le_bytes(v)
        } else {
            u16::from_be_bytes(v)
        }))
    };
    let u32_at = |b: &[u8], at: usize| -> Option<usize> {
        let v: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(if le {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        })
        .ok()
    };
    let Some(page_size) =
        u32_at(db, 20).filter(|p| (512..=65536).contains(p) && p.is_power_of_two())
    else {
        return Vec::new();
    };
    if db.get(25) != Some(&P_HASHMETA) {
        return Vec::new();
    }
    let pages = db.len() / page_size;
    let page =
        |n: usize| db.get(n.checked_mul(page_size)?..n.checked_add(1)?.checked_mul(page_size)?);
    // The bytes of an overflow chain starting at page `first`, `len` long.
    let overflow = |first: usize, len: usize| -> Option<Vec<u8>> {
        if len > db.len() {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        let mut next = first;
        for _ in 0..pages {
            let p = page(next)?;
            if p.get(25) != Some(&P_OVERFLOW) {
                return None;
            }
            let used = u16_at(p, 22)?;
            out.extend_from_slice(p.get(HEADER..HEADER.checked_add(used)?)?);
            next = u32_at(p, 16)?;
            if next == 0 || out.len() >= len {
                break;
            }
        }
        (out.len() >= len).then(|| {
            out.truncate(len);
            out
        })
    };
    let mut values = Vec::new();
    for n in 1..pages {
        let Some(p) = page(n) else { break };
        if !matches!(p.get(25), Some(&P_HASH) | Some(&P_HASH_UNSORTED)) {
            continue;
        }
        let Some(entries) = u16_at(p, 20) else {
            continue;
        };
        let offset = |i: usize| u16_at(p, HEADER + 2 * i);
        // Items alternate key, value; items are laid out from the page's end downwards, so
        // an inline item ends where the one before it starts.
        for i in (1..entries).step_by(2) {
            let Some(at) = offset(i) else { break };
            let value = match p.get(at) {
                Some(&H_KEYDATA) => offset(i - 1)
                    .and_then(|end| p.get(at.checked_add(1)?..end))
                    .map(<[u8]>::to_vec),
                Some(&H_OFFPAGE) => u32_at(p, at + 4)
                    .zip(u32_at(p, at + 8))
                    .and_then(|(first, len)| overflow(first, len)),
                _ => None,
            };
            values.extend(value);
        }
    }
    values
}

/// OSV's ecosystem name for an rpm distribution, from os-release's `ID`.
fn rpm_ecosystem(os_release: Option<&[u8]>) -> String {
    let id = os_release
        .map(String::from_utf8_lossy)
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("ID="))
                .map(|v| v.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_default();
    match id.as_str() {
        "amzn" => "Amazon Linux",
        "rhel" => "Red Hat",
        "almalinux" => "AlmaLinux",
        "rocky" => "Rocky Linux",
        "fedora" => "Fedora",
        "centos" => "CentOS",
        "ol" => "Oracle Linux",
        "mariner" | "azurelinux" => "Azure Linux",
        "photon" => "Photon OS",
        "sles" => "SUSE",
        id if id.starts_with("opensuse") => "openSUSE",
        _ => "RPM",
    }
    .to_owned()
}

/// The packages of an rpm database (SQLite backend): `(name, [epoch:]version-release)`.
/// Empty if the bytes are not such a database.
fn rpm_packages(db: &[u8]) -> Vec<(String, String)> {
    let Ok(dir) = private_temp_dir() else {
        return Vec::new();
    };
    let path = dir.join("rpmdb.sqlite");
    let read = || -> rusqlite::Result<Vec<Vec<u8>>> {
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
        conn.execute_batch("PRAGMA trusted_schema = OFF; PRAGMA cell_size_check = ON;")?;
        let mut st = conn.prepare("SELECT blob FROM Packages")?;
        let rows = st
            .query_map([], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<rusqlite::Result<Vec<_>>>();
        rows
    };
    let blobs = match std::fs::write(&path, db) {
        Ok(()) => read().unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let _ = std::fs::remove_dir_all(&dir);
    blobs.iter().filter_map(|b| rpm_header(b)).collect()
}

/// A private scratch directory under the system's temporary directory.
fn private_temp_dir() -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!("lambox-scan-{}", uuid::Uuid::new_v4().simple()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map(|()| dir)
}

/// Name and `[epoch:]version-release` from an rpm header blob as the rpm database stores it:
/// index entry count and data size (big-endian u32 each), the 16-byte entries (tag, type,
/// offset, count), then the data. Every offset is checked; `None` if anything is off.
fn rpm_header(blob: &[u8]) -> Option<(String, String)> {
    const NAME: u32 = 1000;
    const VERSION: u32 = 1001;
    const RELEASE: u32 = 1002;
    const EPOCH: u32 = 1003;
    const STRING: u32 = 6;
    const INT32: u32 = 4;
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(
            blob.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    let entries = usize::try_from(u32_at(0)?).ok()?;
    let data_len = usize::try_from(u32_at(4)?).ok()?;
    let data_start = entries.checked_mul(16)?.checked_add(8)?;
    let data = blob.get(data_start..data_start.checked_add(data_len)?)?;
    let (mut name, mut version, mut release, mut epoch) = (None, None, None, None);
    for i in 0..entries {
        let e = 8 + i * 16;
        let (tag, kind, offset) = (
            u32_at(e)?,
            u32_at(e + 4)?,
            usize::try_from(u32_at(e + 8)?).ok()?,
        );
        let string = || -> Option<String> {
            let rest = data.get(offset..)?;
            let end = rest.iter().position(|&b| b == 0)?;
            String::from_utf8(rest[..end].to_vec()).ok()
        };
        match (tag, kind) {
            (NAME, STRING) => name = string(),
            (VERSION, STRING) => version = string(),
            (RELEASE, STRING) => release = string(),
            (EPOCH, INT32) => {
                epoch = data
                    .get(offset..offset.checked_add(4)?)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes)
            }
            _ => {}
        }
    }
    let (name, version, release) = (name?, version?, release?);
    let version = match epoch {
        Some(e) if e > 0 => format!("{e}:{version}-{release}"),
        _ => format!("{version}-{release}"),
    };
    Some((name, version))
}

/// `…/node_modules/NAME/package.json` or `…/node_modules/@S/NAME/package.json`.
fn npm_name(path: &str) -> Option<()> {
    let parts: Vec<&str> = path.split('/').collect();
    let n = parts.len();
    (n >= 3 && parts[n - 3] == "node_modules"
        || n >= 4 && parts[n - 4] == "node_modules" && parts[n - 3].starts_with('@'))
    .then_some(())
}

fn normal(p: &Path) -> String {
    let s = p.to_string_lossy();
    s.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

/// The image's files the scanner cares about, after applying every layer in order.
fn merged_files(store: &Store, manifest: &Digest) -> Result<BTreeMap<String, Vec<u8>>, ScanError> {
    let bytes = store.read_blob(manifest)?;
    let m: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ScanError::Manifest(manifest.to_string(), e.to_string()))?;
    let layers = m["layers"].as_array().ok_or_else(|| {
        ScanError::Manifest(
            manifest.to_string(),
            "not an image manifest (no layers)".into(),
        )
    })?;
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for l in layers {
        let d: Digest =
            l["digest"].as_str().unwrap_or("").parse().map_err(|_| {
                ScanError::Manifest(manifest.to_string(), "bad layer digest".into())
            })?;
        let err = |e: std::io::Error| ScanError::Layer(d.to_string(), e);
        let mut f = BufReader::new(std::fs::File::open(store.blob_path(&d)).map_err(err)?);
        let mut head = [0u8; 4];
        let n = f.read(&mut head).map_err(err)?;
        let replay = std::io::Cursor::new(head[..n].to_vec()).chain(f);
        let reader: Box<dyn Read> = match Compression::sniff(&head[..n]) {
            Compression::None => Box::new(replay),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(replay)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(replay).map_err(err)?),
        };
        let mut removed: Vec<(String, bool)> = Vec::new(); // (path, opaque dir)
        let mut added: Vec<(String, Vec<u8>)> = Vec::new();
        let mut ar = tar::Archive::new(reader);
        for e in ar.entries().map_err(err)? {
            let mut e = e.map_err(err)?;
            let path = normal(&e.path().map_err(err)?);
            let (dir, base) = match path.rsplit_once('/') {
                Some((d, b)) => (format!("{d}/"), b.to_string()),
                None => (String::new(), path.clone()),
            };
            if base == ".wh..wh..opq" {
                removed.push((dir, true));
            } else if let Some(name) = base.strip_prefix(".wh.") {
                removed.push((format!("{dir}{name}"), false));
            } else if e.header().entry_type().is_file() && interesting(&path) {
                let mut buf = Vec::new();
                e.by_ref()
                    .take(64 << 20)
                    .read_to_end(&mut buf)
                    .map_err(err)?;
                added.push((path, buf));
            } else if !e.header().entry_type().is_dir() {
                // Any other non-directory replaces what was there (e.g. a symlink).
                files.remove(&path);
            }
        }
        for (p, opaque) in removed {
            if opaque {
                files.retain(|k, _| !k.starts_with(&p));
            } else {
                let under = format!("{p}/");
                files.retain(|k, _| k != &p && !k.starts_with(&under));
            }
        }
        files.extend(added);
    }
    Ok(files)
}

fn field<'a>(stanza: &'a str, key: &str) -> Option<&'a str> {
    stanza.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

fn parse(path: &str, bytes: &[u8], out: &mut Vec<Package>) {
    let text = String::from_utf8_lossy(bytes);
    let pkg = |eco: &str, name: &str, version: &str| Package {
        ecosystem: eco.into(),
        name: name.into(),
        version: version.into(),
        path: format!("/{path}"),
    };
    if path.starts_with("var/lib/dpkg/") {
        for stanza in text.split("\n\n") {
            let installed = field(stanza, "Status").is_none_or(|s| s.ends_with(" installed"));
            if let (Some(n), Some(v), true) = (
                field(stanza, "Package"),
                field(stanza, "Version"),
                installed,
            ) {
                out.push(pkg("Debian", n, v));
            }
        }
    } else if path == "lib/apk/db/installed" {
        for stanza in text.split("\n\n") {
            if let (Some(n), Some(v)) = (field(stanza, "P"), field(stanza, "V")) {
                out.push(pkg("Alpine", n, v));
            }
        }
    } else if path.ends_with("/METADATA") {
        let head = text.split("\n\n").next().unwrap_or("");
        if let (Some(n), Some(v)) = (field(head, "Name"), field(head, "Version")) {
            out.push(pkg("PyPI", n, v));
        }
    } else if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        if let (Some(n), Some(ver)) = (v["name"].as_str(), v["version"].as_str()) {
            out.push(pkg("npm", n, ver));
        }
    }
}

/// The packages of the image whose manifest is `manifest`, sorted.
pub fn inventory(store: &Store, manifest: &Digest) -> Result<Vec<Package>, ScanError> {
    let mut out = Vec::new();
    let files = merged_files(store, manifest)?;
    let os_release = files
        .get("etc/os-release")
        .or_else(|| files.get("usr/lib/os-release"));
    for (path, bytes) in &files {
        let rpm = if RPMDB.contains(&path.as_str()) {
            Some(rpm_packages(bytes))
        } else if path == RPMDB_BDB {
            Some(
                bdb_hash_values(bytes)
                    .iter()
                    .filter_map(|b| rpm_header(b))
                    .collect(),
            )
        } else {
            None
        };
        if let Some(rpm) = rpm {
            let ecosystem = rpm_ecosystem(os_release.map(Vec::as_slice));
            for (name, version) in rpm {
                out.push(Package {
                    ecosystem: ecosystem.clone(),
                    name,
                    version,
                    path: format!("/{path}"),
                });
            }
        } else {
            parse(path, bytes, &mut out);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS reg_scans (repo TEXT NOT NULL,
    digest TEXT NOT NULL, status TEXT NOT NULL, description TEXT NOT NULL,
    completed_at INTEGER, packages TEXT, findings TEXT, PRIMARY KEY (repo, digest))";

/// Scan `digest` of `repo` now (blocking) and record the result in `reg_scans`.
pub fn run_and_record(store: &Store, vuln_db: Option<&Path>, repo: &str, digest: &Digest) {
    let set =
        |status: &str, description: &str, packages: Option<String>, findings: Option<String>| {
            let r = store.with_db(|db| {
                db.execute(
                    "INSERT OR REPLACE INTO reg_scans
                 (repo, digest, status, description, completed_at, packages, findings)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    rusqlite::params![
                        repo,
                        digest.to_string(),
                        status,
                        description,
                        (status != "IN_PROGRESS").then(crate::meta::now),
                        packages,
                        findings
                    ],
                )
            });
            if let Err(e) = r {
                tracing::error!("registry: record scan of {repo}@{digest}: {e}");
            }
        };
    set("IN_PROGRESS", "The scan is in progress.", None, None);
    let result = inventory(store, digest).and_then(|pkgs| {
        let found = match vuln_db {
            Some(p) => findings(&pkgs, &load_osv(p)?),
            None => Vec::new(),
        };
        Ok((pkgs, found))
    });
    match result {
        Ok((pkgs, found)) => set(
            "COMPLETE",
            "The scan was completed successfully.",
            serde_json::to_string(&pkgs).ok(),
            serde_json::to_string(&found).ok(),
        ),
        Err(e) => {
            tracing::warn!("registry: scan of {repo}@{digest}: {e}");
            set("FAILED", &e.to_string(), None, None)
        }
    }
}

/// Compare versions segment by segment: digit runs numerically, other runs bytewise.
fn cmp_versions(a: &str, b: &str) -> std::cmp::Ordering {
    fn segs(s: &str) -> Vec<(bool, String)> {
        let mut v: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            if !c.is_ascii_alphanumeric() {
                v.push((false, String::new()));
                continue;
            }
            let d = c.is_ascii_digit();
            match v.last_mut() {
                Some((ld, cur)) if *ld == d && !cur.is_empty() => cur.push(c),
                _ => v.push((d, c.to_string())),
            }
        }
        v.retain(|(_, s)| !s.is_empty());
        v
    }
    let (x, y) = (segs(a), segs(b));
    for i in 0..x.len().max(y.len()) {
        let o = match (x.get(i), y.get(i)) {
            (Some((true, p)), Some((true, q))) => {
                let (p, q) = (p.trim_start_matches('0'), q.trim_start_matches('0'));
                p.len().cmp(&q.len()).then_with(|| p.cmp(q))
            }
            (Some((_, p)), Some((_, q))) => p.cmp(q),
            (Some(_), None) => std::cmp::Ordering::Greater,
            (None, Some(_)) => std::cmp::Ordering::Less,
            (None, None) => std::cmp::Ordering::Equal,
        };
        if o.is_ne() {
            return o;
        }
    }
    std::cmp::Ordering::Equal
}

/// Whether an OSV `ranges[]` entry (events introduced/fixed/last_affected) covers `version`.
fn in_range(range: &Value, version: &str) -> bool {
    if !matches!(range["type"].as_str(), Some("ECOSYSTEM" | "SEMVER")) {
        return false;
    }
    let mut affected = false;
    for ev in range["events"].as_array().into_iter().flatten() {
        if let Some(i) = ev["introduced"].as_str() {
            if i == "0" || cmp_versions(version, i).is_ge() {
                affected = true;
            }
        } else if let Some(f) = ev["fixed"].as_str() {
            if cmp_versions(version, f).is_ge() {
                affected = false;
            }
        } else if let Some(l) = ev["last_affected"].as_str() {
            if cmp_versions(version, l).is_gt() {
                affected = false;
            }
        }
    }
    affected
}

/// Load an OSV export: a JSON array of records, one record, or a directory of `*.json`.
pub fn load_osv(path: &Path) -> Result<Vec<Value>, ScanError> {
    let err = |e: String| ScanError::Database(path.display().to_string(), e);
    let mut files = Vec::new();
    if path.is_dir() {
        for e in std::fs::read_dir(path).map_err(|e| err(e.to_string()))? {
            let p = e.map_err(|e| err(e.to_string()))?.path();
            if p.extension().is_some_and(|x| x == "json") {
                files.push(p);
            }
        }
    } else {
        files.push(path.to_path_buf());
    }
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).map_err(|e| err(e.to_string()))?;
        match serde_json::from_slice::<Value>(&bytes).map_err(|e| err(e.to_string()))? {
            Value::Array(a) => out.extend(a),
            v => out.push(v),
        }
    }
    Ok(out)
}

/// ECR-shaped findings (`name`, `severity`, `uri`, `attributes`) for the packages an OSV
/// record affects.
pub fn findings(packages: &[Package], osv: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for rec in osv {
        for a in rec["affected"].as_array().into_iter().flatten() {
            let (eco, name) = (
                a["package"]["ecosystem"].as_str().unwrap_or(""),
                a["package"]["name"].as_str().unwrap_or(""),
            );
            // OSV's Debian ecosystem names carry a release ("Debian:12").
            let eco_base = eco.split(':').next().unwrap_or("");
            for p in packages {
                let same_name = if p.ecosystem == "PyPI" {
                    p.name.to_lowercase().replace('_', "-") == name.to_lowercase().replace('_', "-")
                } else {
                    p.name == name
                };
                if p.ecosystem != eco_base || !same_name {
                    continue;
                }
                let listed = a["versions"]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|x| x.as_str() == Some(&p.version)));
                let ranged = a["ranges"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| in_range(r, &p.version)));
                if !(listed || ranged) {
                    continue;
                }
                let severity = rec["database_specific"]["severity"]
                    .as_str()
                    .map(str::to_uppercase)
                    .filter(|s| matches!(s.as_str(), "CRITICAL" | "HIGH" | "MEDIUM" | "LOW"))
                    .unwrap_or_else(|| "UNDEFINED".into());
                let id = rec["id"].as_str().unwrap_or("");
                out.push(serde_json::json!({
                    "name": id,
                    "description": rec["summary"].as_str().or(rec["details"].as_str()).unwrap_or(""),
                    "uri": format!("https://osv.dev/vulnerability/{id}"),
                    "severity": severity,
                    "attributes": [
                        { "key": "package_name", "value": p.name },
                        { "key": "package_version", "value": p.version },
                        { "key": "package_ecosystem", "value": p.ecosystem },
                        { "key": "package_path", "value": p.path },
                    ],
                }));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_ranges() {
        use std::cmp::Ordering::*;
        assert_eq!(cmp_versions("1.10.0", "1.9.2"), Greater);
        assert_eq!(cmp_versions("2.0", "2.0"), Equal);
        assert_eq!(cmp_versions("2.0", "2.0.1"), Less);
        let r = serde_json::json!({"type": "ECOSYSTEM",
            "events": [{"introduced": "0"}, {"fixed": "3.1.2"}]});
        assert!(in_range(&r, "3.0.9"));
        assert!(!in_range(&r, "3.1.2"));
        assert!(!in_range(&r, "3.2"));
    }

    #[test]
    fn rpm_headers_are_bounds_checked() {
        // A header with NAME, VERSION, RELEASE and EPOCH, as rpm stores it.
        let mut data = Vec::new();
        let mut entries = Vec::new();
        for (tag, kind, value) in [
            (1000u32, 6u32, b"pkg\0".to_vec()),
            (1001, 6, b"1.2\0".to_vec()),
            (1002, 6, b"3.amzn2023\0".to_vec()),
            (1003, 4, 2u32.to_be_bytes().to_vec()),
        ] {
            entries.extend(tag.to_be_bytes());
            entries.extend(kind.to_be_bytes());
            entries.extend((data.len() as u32).to_be_bytes());
            entries.extend(1u32.to_be_bytes());
            data.extend(value);
        }
        let mut blob = 4u32.to_be_bytes().to_vec();
        blob.extend((data.len() as u32).to_be_bytes());
        blob.extend(&entries);
        blob.extend(&data);
        assert_eq!(
            rpm_header(&blob),
            Some(("pkg".to_owned(), "2:1.2-3.amzn2023".to_owned()))
        );
        // Truncated anywhere, or counts that point past the end: nothing, no panic.
        for n in 0..blob.len() {
            assert_eq!(rpm_header(&blob[..n]), None, "{n}");
        }
        let mut huge = blob.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(rpm_header(&huge), None);
        let mut far = blob.clone();
        far[8 + 8..8 + 12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(rpm_header(&far), None);
        // Not a database at all.
        assert!(rpm_packages(b"not sqlite").is_empty());

        // A Berkeley DB hash database of 512-byte pages holding that header on an overflow
        // page: a meta page, a hash page (key inline, value off page), the overflow page.
        let mut db = vec![0u8; 512 * 3];
        db[12..16].copy_from_slice(&0x0006_1561u32.to_le_bytes());
        db[20..24].copy_from_slice(&512u32.to_le_bytes());
        db[25] = 8;
        let hash = &mut db[512..1024];
        hash[20..22].copy_from_slice(&2u16.to_le_bytes());
        hash[25] = 13;
        hash[26..28].copy_from_slice(&500u16.to_le_bytes()); // key at 500
        hash[28..30].copy_from_slice(&480u16.to_le_bytes()); // value ref at 480
        hash[500] = 1;
        hash[501..505].copy_from_slice(&1u32.to_le_bytes());
        hash[480] = 3;
        hash[484..488].copy_from_slice(&2u32.to_le_bytes()); // overflow page 2
        hash[488..492].copy_from_slice(&(blob.len() as u32).to_le_bytes());
        let over = &mut db[1024..1536];
        over[22..24].copy_from_slice(&(blob.len() as u16).to_le_bytes());
        over[25] = 7;
        over[26..26 + blob.len()].copy_from_slice(&blob);
        assert_eq!(bdb_hash_values(&db), vec![blob.clone()]);
        // Truncated anywhere, or pointing anywhere: no panic.
        for n in 0..db.len() {
            let _ = bdb_hash_values(&db[..n]);
        }
        for at in [
            512 + 20,
            512 + 26,
            512 + 28,
            512 + 484,
            512 + 488,
            1024 + 16,
            1024 + 22,
        ] {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut bad = db.clone();
                bad[at] = v;
                bad[at + 1] = v;
                let _ = bdb_hash_values(&bad);
            }
        }
        assert!(bdb_hash_values(b"not a database at all, not even close").is_empty());
    }

    #[test]
    fn dpkg_stanzas_only_installed() {
        let mut out = Vec::new();
        let db = b"Package: a\nStatus: install ok installed\nVersion: 1.0\n\nPackage: b\nStatus: deinstall ok config-files\nVersion: 2\n";
        parse("var/lib/dpkg/status", db, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].name.as_str(), out[0].version.as_str()),
            ("a", "1.0")
        );
    }
}
