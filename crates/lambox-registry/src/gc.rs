//! Garbage collection: deleting an image or a repository frees the blobs nothing else needs.
//!
//! A repository sees a blob through a link (`reg_blobs`). An upload links its blob at once —
//! before any manifest names it, since a client pushes layers first and the manifest last —
//! and marks it *unclaimed* (`linked_at` = now). The manifest PUT that names it *claims* it
//! (`linked_at` = 0, [`meta::claim_blobs`]). A collection then, holding the store lock
//! exclusively (so no upload, mount, manifest PUT or import runs meanwhile):
//!
//! 1. drops every link no manifest of its repository names, if it is claimed (its images were
//!    deleted) or has stayed unclaimed longer than [`UNCLAIMED_GRACE`] (an abandoned push);
//! 2. removes every blob and unpacked layer that no link, manifest, stored image (`lambox
//!    images`, which includes every function's image) refers to ([`Store::gc_with`]).
//!
//! A client that asked `HEAD` for a blob and skips uploading it relies on it staying: `HEAD`
//! of a linked blob no manifest of the repository names (`reg_refs`) takes the same lock and
//! renews its grace ([`meta::touch_blob`]), so a collection either ran before (the blob is
//! gone, the client uploads it) or keeps it until the manifest claims it. (A `HEAD` of a blob
//! a manifest names renews nothing: clients also ask other repositories before mounting from
//! them, and that must not keep a blob after its images go. The one race left: a push whose
//! `HEAD` found a blob through an image that is deleted, and collected, before the push's
//! manifest arrives; that manifest PUT fails with MANIFEST_BLOB_UNKNOWN and a retry uploads.)

use std::collections::HashSet;
use std::time::Duration;

use lambox_image::store::{GcStats, Store};
use lambox_image::Digest;
use rusqlite::params;

use crate::meta;
use crate::wire::WireManifest;

/// How long a blob an upload linked may wait for a manifest that names it.
pub const UNCLAIMED_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Collect garbage now (blocking; takes the store lock exclusively).
pub fn collect(store: &Store, grace: Duration) -> lambox_image::Result<(u64, GcStats)> {
    let mut dropped = 0;
    let stats = store.gc_with(|store| {
        dropped = drop_unneeded_links(store, grace)?;
        Ok(())
    })?;
    Ok((dropped, stats))
}

/// Step 1 above; returns how many links it dropped.
fn drop_unneeded_links(store: &Store, grace: Duration) -> lambox_image::Result<u64> {
    let manifests: Vec<(String, String)> = store.with_db(|db| {
        let mut st = db.prepare("SELECT repo, digest FROM reg_manifests")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    })?;
    let mut needed: HashSet<(String, String)> = HashSet::new();
    // A repository with a manifest lambox cannot read keeps all its links: collecting must
    // never take a blob an image still names.
    let mut keep_all: HashSet<String> = HashSet::new();
    for (repo, digest) in manifests {
        let named = digest
            .parse::<Digest>()
            .ok()
            .and_then(|d| store.read_blob(&d).ok())
            .and_then(|bytes| serde_json::from_slice::<WireManifest>(&bytes).ok());
        match named {
            Some(m) => {
                for d in m.config.iter().chain(m.layers.iter().flatten()) {
                    needed.insert((repo.clone(), d.digest.clone()));
                }
            }
            None => {
                tracing::warn!(
                    repo,
                    digest,
                    "registry gc: cannot read manifest; keeping every blob of its repository"
                );
                keep_all.insert(repo);
            }
        }
    }
    let cutoff = meta::now().saturating_sub(grace.as_secs() as i64);
    store.with_db(|db| {
        let tx = db.transaction()?;
        let links: Vec<(String, String, i64)> = {
            let mut st = tx.prepare("SELECT repo, digest, linked_at FROM reg_blobs")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut dropped = 0;
        for (repo, digest, linked_at) in links {
            if keep_all.contains(&repo)
                || linked_at > cutoff
                || needed.contains(&(repo.clone(), digest.clone()))
            {
                continue;
            }
            dropped += tx.execute(
                "DELETE FROM reg_blobs WHERE repo = ?1 AND digest = ?2",
                params![repo, digest],
            )? as u64;
        }
        tx.commit()?;
        Ok(dropped)
    })
}
