//! The registry's metadata in the store's database (`reg_*` tables, created by
//! `lambox_image::store::Store::open`): repositories, blob links, manifests, tags.
//!
//! A blob is visible in a repository only once linked there (pushed, or mounted from another
//! repository): the bytes are shared by the whole store, the links are per repository.

use rusqlite::{params, Connection, OptionalExtension};

use lambox_image::Digest;

/// A stored manifest's row.
#[derive(Debug, Clone)]
pub struct ManifestRow {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn ensure_repo(db: &Connection, repo: &str) -> rusqlite::Result<()> {
    db.execute(
        "INSERT OR IGNORE INTO reg_repos (name, created_at) VALUES (?1, ?2)",
        params![repo, now()],
    )?;
    Ok(())
}

pub fn repo_exists(db: &Connection, repo: &str) -> rusqlite::Result<bool> {
    db.query_row(
        "SELECT 1 FROM reg_repos WHERE name = ?1",
        params![repo],
        |_| Ok(()),
    )
    .optional()
    .map(|o| o.is_some())
}

/// Link a blob into `repo`, unclaimed (see [`crate::gc`]): a manifest must name it within
/// the grace period or a collection unlinks it.
pub fn link_blob(db: &Connection, repo: &str, digest: &Digest, size: u64) -> rusqlite::Result<()> {
    ensure_repo(db, repo)?;
    db.execute(
        "INSERT OR REPLACE INTO reg_blobs (repo, digest, size, linked_at) VALUES (?1, ?2, ?3, ?4)",
        params![repo, digest.to_string(), size as i64, now()],
    )?;
    Ok(())
}

/// Manifest `manifest` of `repo` names these blobs: they stay as long as one manifest does.
pub fn claim_blobs<'a>(
    db: &Connection,
    repo: &str,
    manifest: &Digest,
    digests: impl IntoIterator<Item = &'a Digest>,
) -> rusqlite::Result<()> {
    let mut claim =
        db.prepare("UPDATE reg_blobs SET linked_at = 0 WHERE repo = ?1 AND digest = ?2")?;
    let mut refer =
        db.prepare("INSERT OR IGNORE INTO reg_refs (repo, blob, manifest) VALUES (?1, ?2, ?3)")?;
    for d in digests {
        claim.execute(params![repo, d.to_string()])?;
        refer.execute(params![repo, d.to_string(), manifest.to_string()])?;
    }
    Ok(())
}

/// A client asked whether `repo` has this blob (and will not upload it if so). If no manifest
/// there names it (its images were deleted, or its push has not finished), it gets the grace
/// of a fresh upload, so a collection does not take it before the client's manifest comes.
/// Returns its size if linked.
pub fn touch_blob(db: &Connection, repo: &str, digest: &Digest) -> rusqlite::Result<Option<u64>> {
    db.execute(
        "UPDATE reg_blobs SET linked_at = ?3 WHERE repo = ?1 AND digest = ?2
         AND NOT EXISTS (SELECT 1 FROM reg_refs WHERE repo = ?1 AND blob = ?2)",
        params![repo, digest.to_string(), now()],
    )?;
    blob_size(db, repo, digest)
}

/// The size of a blob linked into `repo` (manifests count as blobs too), if it is.
pub fn blob_size(db: &Connection, repo: &str, digest: &Digest) -> rusqlite::Result<Option<u64>> {
    db.query_row(
        "SELECT size FROM reg_blobs WHERE repo = ?1 AND digest = ?2
         UNION ALL SELECT size FROM reg_manifests WHERE repo = ?1 AND digest = ?2 LIMIT 1",
        params![repo, digest.to_string()],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|o| o.map(|n| n as u64))
}

/// Unlink a blob from a repository. Returns whether it was linked.
pub fn unlink_blob(db: &Connection, repo: &str, digest: &Digest) -> rusqlite::Result<bool> {
    let n = db.execute(
        "DELETE FROM reg_blobs WHERE repo = ?1 AND digest = ?2",
        params![repo, digest.to_string()],
    )?;
    Ok(n > 0)
}

pub fn manifest_by_digest(
    db: &Connection,
    repo: &str,
    digest: &str,
) -> rusqlite::Result<Option<ManifestRow>> {
    db.query_row(
        "SELECT digest, media_type, size, artifact_type, annotations FROM reg_manifests
         WHERE repo = ?1 AND digest = ?2",
        params![repo, digest],
        row,
    )
    .optional()
}

pub fn manifest_by_tag(
    db: &Connection,
    repo: &str,
    tag: &str,
) -> rusqlite::Result<Option<ManifestRow>> {
    db.query_row(
        "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations
         FROM reg_tags t JOIN reg_manifests m ON m.repo = t.repo AND m.digest = t.digest
         WHERE t.repo = ?1 AND t.tag = ?2",
        params![repo, tag],
        row,
    )
    .optional()
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ManifestRow> {
    Ok(ManifestRow {
        digest: r.get(0)?,
        media_type: r.get(1)?,
        size: r.get::<_, i64>(2)? as u64,
        artifact_type: r.get(3)?,
        annotations: r.get(4)?,
    })
}

/// What a manifest push records.
#[derive(Debug, Clone)]
pub struct NewManifest<'a> {
    pub repo: &'a str,
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub size: u64,
    pub artifact_type: Option<&'a str>,
    pub subject: Option<&'a Digest>,
    pub annotations: Option<String>,
    pub tag: Option<&'a str>,
}

/// Record a manifest (and its tag) in one transaction.
pub fn put_manifest(db: &mut Connection, m: &NewManifest<'_>) -> rusqlite::Result<()> {
    let tx = db.transaction()?;
    ensure_repo(&tx, m.repo)?;
    tx.execute(
        "INSERT OR REPLACE INTO reg_manifests
         (repo, digest, media_type, size, artifact_type, subject, annotations, pushed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            m.repo,
            m.digest.to_string(),
            m.media_type,
            m.size as i64,
            m.artifact_type,
            m.subject.map(|s| s.to_string()),
            m.annotations,
            now()
        ],
    )?;
    if let Some(tag) = m.tag {
        tx.execute(
            "INSERT OR REPLACE INTO reg_tags (repo, tag, digest) VALUES (?1, ?2, ?3)",
            params![m.repo, tag, m.digest.to_string()],
        )?;
    }
    tx.commit()
}

/// Whether pushing `digest` as `tag` would move the tag of an IMMUTABLE (ECR) repository.
pub fn immutable_tag_moves(
    db: &Connection,
    repo: &str,
    tag: &str,
    digest: &Digest,
) -> rusqlite::Result<bool> {
    let current: Option<String> = db
        .query_row(
            "SELECT t.digest FROM reg_tags t JOIN reg_ecr_repos e ON e.name = t.repo
             WHERE t.repo = ?1 AND t.tag = ?2 AND e.tag_mutability = 'IMMUTABLE'",
            params![repo, tag],
            |r| r.get(0),
        )
        .optional()?;
    Ok(current.is_some_and(|c| c != digest.to_string()))
}

/// Delete a manifest and every tag pointing at it. Returns whether it existed.
pub fn delete_manifest(db: &mut Connection, repo: &str, digest: &Digest) -> rusqlite::Result<bool> {
    let tx = db.transaction()?;
    let d = digest.to_string();
    tx.execute(
        "DELETE FROM reg_tags WHERE repo = ?1 AND digest = ?2",
        params![repo, d],
    )?;
    tx.execute(
        "DELETE FROM reg_refs WHERE repo = ?1 AND manifest = ?2",
        params![repo, d],
    )?;
    let n = tx.execute(
        "DELETE FROM reg_manifests WHERE repo = ?1 AND digest = ?2",
        params![repo, d],
    )?;
    tx.commit()?;
    Ok(n > 0)
}

pub fn delete_tag(db: &Connection, repo: &str, tag: &str) -> rusqlite::Result<bool> {
    let n = db.execute(
        "DELETE FROM reg_tags WHERE repo = ?1 AND tag = ?2",
        params![repo, tag],
    )?;
    Ok(n > 0)
}

/// Up to `limit` tags of `repo` after `last`, in lexical (byte) order.
pub fn tags(db: &Connection, repo: &str, last: &str, limit: i64) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        db.prepare("SELECT tag FROM reg_tags WHERE repo = ?1 AND tag > ?2 ORDER BY tag LIMIT ?3")?;
    let rows = stmt.query_map(params![repo, last, limit], |r| r.get(0))?;
    rows.collect()
}

/// Up to `limit` repository names after `last`, in lexical order.
pub fn repos(db: &Connection, last: &str, limit: i64) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        db.prepare("SELECT name FROM reg_repos WHERE name > ?1 ORDER BY name LIMIT ?2")?;
    let rows = stmt.query_map(params![last, limit], |r| r.get(0))?;
    rows.collect()
}

/// Manifests of `repo` whose subject is `subject`, by digest.
pub fn referrers(
    db: &Connection,
    repo: &str,
    subject: &Digest,
) -> rusqlite::Result<Vec<ManifestRow>> {
    let mut stmt = db.prepare(
        "SELECT digest, media_type, size, artifact_type, annotations FROM reg_manifests
         WHERE repo = ?1 AND subject = ?2 ORDER BY digest",
    )?;
    let rows = stmt.query_map(params![repo, subject.to_string()], row)?;
    rows.collect()
}
