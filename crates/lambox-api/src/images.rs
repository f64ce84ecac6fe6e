//! Image resolution for functions: an `ImageUri` → one stored image, pinned by digest.
//!
//! Accepted `ImageUri` forms (parsed by `lambox_image::source::Source`):
//!
//! * `HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]`: a registry (plain HTTP for loopback hosts). The
//!   image is pulled at CreateFunction/UpdateFunctionCode time (only missing layers are
//!   fetched), so a tag is resolved to the digest it names *then*; retagging later does not
//!   change the function. If the registry cannot be reached but the store holds an image under
//!   that name (e.g. `lambox load --tag localhost/fn:v1`), the stored image is used.
//! * `oci:PATH[:TAG]`, `oci-archive:PATH[:TAG]`, `docker-archive:PATH`: local files, imported.
//!
//! * `ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO[:TAG|@sha256:DIGEST]` when REPO exists in
//!   lambox's own registry, and `HOST:PORT/…` naming lambox's own address: taken straight from
//!   the store through [`LocalRegistry`] (no HTTP, no copy), the tag pinned to its digest as
//!   for any registry. An ECR URI whose repository lambox does not have is pulled as usual.
//!
//! Failures map to Lambda's `StateReasonCode`s: not found → `ImageDeleted`; refused
//! credentials → `ImageAccessDenied`; anything wrong with the image itself (platform, media
//! type, digest, hostile layer, size) → `InvalidImage`.

use std::path::PathBuf;
use std::sync::Arc;

use lambox_image::import::{import, ImportOptions, NoProgress};
use lambox_image::manifest::Platform;
use lambox_image::source::{BlobSource, RegistryOptions, RegistryRef, Source};
use lambox_image::store::{ImageEntry, Store};
use lambox_image::{Digest, Error as ImageError};

/// What a function needs from its image to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The manifest digest (`CodeSha256` is its hex).
    pub digest: Digest,
    /// `REGISTRY/REPO@sha256:…` (or the source with the digest, for local sources).
    pub resolved_uri: String,
    /// The image's ENTRYPOINT, CMD, WORKDIR and ENV.
    pub config: lambox_runtime::ImageConfig,
    /// Layer directories, lowest first.
    pub layers: Vec<PathBuf>,
    /// Size of the image's config blob (moto's `CodeSize`); lambox reports the layers' total.
    pub code_size: u64,
}

/// Why an image cannot back a function: a `StateReasonCode` and a readable reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct ImageFailure {
    pub code: &'static str,
    pub reason: String,
}

/// Resolves image URIs and loads stored images (blocking: call from `spawn_blocking`).
pub trait ImageResolver: Send + Sync + std::fmt::Debug + 'static {
    /// Resolves (pulling or importing as needed) `uri` for `architecture` (`x86_64`|`arm64`).
    fn resolve(&self, uri: &str, architecture: &str) -> Result<ResolvedImage, ImageFailure>;
    /// Loads a stored image by the hex of its manifest digest (`CodeSha256`), at invoke time
    /// and after a restart.
    fn load(&self, code_sha256: &str) -> Result<ResolvedImage, ImageFailure>;
}

/// lambox's own registry, as image resolution sees it (wired by `lambox serve`, which knows
/// the registry crate): does repository REPO exist, and REPO at a tag or digest as a blob
/// source over the store's own blobs.
pub trait LocalRegistry: Send + Sync + std::fmt::Debug + 'static {
    fn has_repository(&self, repo: &str) -> bool;
    fn open(&self, repo: &str, reference: &str) -> Result<Box<dyn BlobSource>, ImageError>;
}

/// The image store of `lambox-image`.
#[derive(Debug)]
pub struct StoreImages {
    store: Arc<Store>,
    max_image_size: u64,
    local: Option<(Arc<dyn LocalRegistry>, Vec<String>)>,
}

/// `ACCOUNT.dkr.ecr.REGION.amazonaws.com` (12-digit account, any region name).
fn is_ecr_host(host: &str) -> bool {
    let Some((account, rest)) = host.split_once(".dkr.ecr.") else {
        return false;
    };
    let Some(region) = rest.strip_suffix(".amazonaws.com") else {
        return false;
    };
    account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl StoreImages {
    pub fn new(store: Arc<Store>, max_image_size: u64) -> Self {
        StoreImages {
            store,
            max_image_size,
            local: None,
        }
    }

    /// Resolves ECR URIs of repositories in `registry`, and URIs whose host is one of
    /// `own_hosts` (lambox's `host:port`), from the store instead of over HTTP.
    pub fn with_local_registry(
        mut self,
        registry: Arc<dyn LocalRegistry>,
        own_hosts: Vec<String>,
    ) -> Self {
        self.local = Some((registry, own_hosts));
        self
    }

    /// The local registry if `r` names an image in it.
    fn local_for(&self, r: &RegistryRef) -> Option<&Arc<dyn LocalRegistry>> {
        let (registry, own) = self.local.as_ref()?;
        let own_host = own.iter().any(|h| h.eq_ignore_ascii_case(&r.registry));
        (own_host || (is_ecr_host(&r.registry) && registry.has_repository(&r.repository)))
            .then_some(registry)
    }

    fn entry_to_resolved(
        &self,
        entry: &ImageEntry,
        resolved_uri: String,
    ) -> Result<ResolvedImage, ImageFailure> {
        let image = &entry.image;
        let config_bytes =
            self.store
                .read_blob(&image.config_digest)
                .map_err(|e| ImageFailure {
                    code: "InvalidImage",
                    reason: e.to_string(),
                })?;
        let config: serde_json::Value =
            serde_json::from_slice(&config_bytes).map_err(|e| ImageFailure {
                code: "InvalidImage",
                reason: format!("image config {}: {e}", image.config_digest),
            })?;
        let c = &config["config"];
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(ResolvedImage {
            digest: image.digest.clone(),
            resolved_uri,
            config: lambox_runtime::ImageConfig {
                entrypoint: strings(&c["Entrypoint"]),
                cmd: strings(&c["Cmd"]),
                workdir: c["WorkingDir"]
                    .as_str()
                    .filter(|w| !w.is_empty())
                    .map(str::to_owned),
                env: lambox_runtime::ImageConfig::parse_env(&strings(&c["Env"])),
            },
            layers: image
                .layers
                .iter()
                .map(|l| self.store.layer_path(&l.diff_id))
                .collect(),
            code_size: image.uncompressed_size(),
        })
    }
}

fn platform_for(architecture: &str) -> Option<Platform> {
    let arch = match architecture {
        "arm64" => "linux/arm64",
        _ => "linux/amd64",
    };
    arch.parse().ok()
}

/// Maps an image error to Lambda's reason code.
pub fn classify(e: &ImageError) -> &'static str {
    match e {
        ImageError::NotFound { .. } | ImageError::ImageNotFound(_) => "ImageDeleted",
        ImageError::Registry { reason, .. } => {
            if reason.contains("not found") {
                "ImageDeleted"
            } else {
                "ImageAccessDenied"
            }
        }
        ImageError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            "ImageDeleted"
        }
        _ => "InvalidImage",
    }
}

impl ImageResolver for StoreImages {
    fn resolve(&self, uri: &str, architecture: &str) -> Result<ResolvedImage, ImageFailure> {
        let source: Source = uri.parse().map_err(|e: ImageError| ImageFailure {
            code: "InvalidImage",
            reason: e.to_string(),
        })?;
        let local = match &source {
            Source::Registry(r) => self.local_for(r).map(|l| (l, r)),
            _ => None,
        };
        let opened = match local {
            Some((l, r)) => {
                let reference = match (&r.digest, &r.tag) {
                    (Some(d), _) => d.to_string(),
                    (None, Some(t)) => t.clone(),
                    (None, None) => "latest".to_owned(),
                };
                tracing::info!(uri, "image from lambox's own registry (no download)");
                l.open(&r.repository, &reference)
            }
            None => source.open(&RegistryOptions::default()),
        };
        let outcome = opened.and_then(|src| {
            let name = match &source {
                Source::Registry(r) => r.tagged_name(),
                _ => None,
            };
            import(
                &self.store,
                src.as_ref(),
                uri,
                &ImportOptions {
                    platform: platform_for(architecture),
                    max_size: self.max_image_size,
                    name,
                    jobs: 4,
                },
                &NoProgress,
            )
        });
        match outcome {
            Ok(outcome) => {
                let entry = ImageEntry {
                    names: outcome.name.into_iter().collect(),
                    image: outcome.image,
                };
                let resolved = match &source {
                    Source::Registry(r) => {
                        format!("{}/{}@{}", r.registry, r.repository, entry.image.digest)
                    }
                    other => format!("{other}@{}", entry.image.digest),
                };
                self.entry_to_resolved(&entry, resolved)
            }
            Err(e) => {
                // Unreachable registry: an image stored under that name still serves.
                if let (Source::Registry(r), ImageError::Registry { .. }) = (&source, &e) {
                    if let Some(name) = r.tagged_name() {
                        if let Ok(entry) = self.store.find(&name) {
                            tracing::warn!(uri, error = %e, digest = %entry.image.digest, "registry unreachable; using the stored image of that name");
                            let resolved =
                                format!("{}/{}@{}", r.registry, r.repository, entry.image.digest);
                            return self.entry_to_resolved(&entry, resolved);
                        }
                    }
                }
                Err(ImageFailure {
                    code: classify(&e),
                    reason: e.to_string(),
                })
            }
        }
    }

    fn load(&self, code_sha256: &str) -> Result<ResolvedImage, ImageFailure> {
        let digest = format!("sha256:{code_sha256}");
        let entry = self.store.find(&digest).map_err(|e| ImageFailure {
            code: "ImageDeleted",
            reason: e.to_string(),
        })?;
        self.entry_to_resolved(&entry, digest)
    }
}

#[cfg(test)]
mod tests {
    use super::is_ecr_host;

    #[test]
    fn ecr_hosts_are_account_dkr_ecr_region_amazonaws_com() {
        assert!(is_ecr_host("000000000000.dkr.ecr.us-east-1.amazonaws.com"));
        assert!(is_ecr_host("123456789012.dkr.ecr.eu-west-3.amazonaws.com"));
        for no in [
            "00000000000.dkr.ecr.us-east-1.amazonaws.com",
            "000000000000.dkr.ecr..amazonaws.com",
            "000000000000.dkr.ecr.us-east-1.amazonaws.com.evil",
            "public.ecr.aws",
            "127.0.0.1:4566",
        ] {
            assert!(!is_ecr_host(no), "{no}");
        }
    }
}
