//! A pushed image as a [`BlobSource`], so `lambox_image::import::import` can turn it into a
//! stored, unpacked image (what a function runs) straight from the store: every blob is
//! already in `DATA/blobs/`, so nothing is downloaded or copied; only layers are unpacked.

use std::io::Read;
use std::sync::Arc;

use lambox_image::source::{BlobSource, RawManifest};
use lambox_image::store::Store;
use lambox_image::{Digest, Error, Result};

use crate::meta;
use crate::wire::{Reference, RepoName};

/// An image pushed to repository `repo`, resolved to one manifest digest.
#[derive(Debug)]
pub struct PushedImage {
    store: Arc<Store>,
    repo: RepoName,
    digest: Digest,
    root: RawManifest,
}

impl PushedImage {
    /// Resolve `reference` (a tag or a digest) in `repo` and read its manifest.
    pub fn open(store: Arc<Store>, repo: &str, reference: &str) -> Result<PushedImage> {
        let object = || format!("image {repo}:{reference} in the registry");
        let bad = |e: crate::ApiError| Error::InvalidReference {
            reference: format!("{repo}:{reference}"),
            reason: e.message,
        };
        let name = RepoName::parse(repo).map_err(bad)?;
        let r = Reference::parse(reference).map_err(bad)?;
        let row = store.with_db(|db| match &r {
            Reference::Tag(t) => meta::manifest_by_tag(db, name.as_str(), t),
            Reference::Digest(d) => meta::manifest_by_digest(db, name.as_str(), &d.to_string()),
        })?;
        let row = row.ok_or_else(|| Error::NotFound { object: object() })?;
        let digest: Digest = row.digest.parse()?;
        let bytes = store.read_blob(&digest)?;
        Ok(PushedImage {
            store,
            repo: name,
            digest,
            root: RawManifest {
                bytes,
                media_type: Some(row.media_type),
            },
        })
    }

    /// The manifest digest the reference resolved to (what a function pins).
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
}

impl BlobSource for PushedImage {
    fn root_manifest(&self) -> Result<RawManifest> {
        Ok(self.root.clone())
    }

    fn pinned_digest(&self) -> Option<&Digest> {
        Some(&self.digest)
    }

    fn manifest(&self, digest: &Digest) -> Result<RawManifest> {
        let row = self
            .store
            .with_db(|db| meta::manifest_by_digest(db, self.repo.as_str(), &digest.to_string()))?
            .ok_or_else(|| Error::NotFound {
                object: format!("manifest {digest} in repository {}", self.repo),
            })?;
        Ok(RawManifest {
            bytes: self.store.read_blob(digest)?,
            media_type: Some(row.media_type),
        })
    }

    fn open_blob(&self, digest: &Digest, _size: u64) -> Result<Box<dyn Read + Send>> {
        let path = self.store.blob_path(digest);
        let f = std::fs::File::open(&path)
            .map_err(|e| Error::io(format!("open blob {digest} of repository {}", self.repo), e))?;
        Ok(Box::new(f))
    }
}
