//! Pulling from a registry through the OCI Distribution API.

use std::io::Read;

use super::{BlobSource, RawManifest, RegistryOptions, RegistryRef};
use crate::{Digest, Error, Result};

/// A registry image, reached with oci-client.
#[derive(Debug)]
pub struct RegistrySource {
    reference: RegistryRef,
}

impl RegistrySource {
    pub fn new(reference: RegistryRef, options: &RegistryOptions) -> Result<Self> {
        let _ = options;
        Ok(RegistrySource { reference })
    }
}

impl BlobSource for RegistrySource {
    fn root_manifest(&self) -> Result<RawManifest> {
        Err(Error::Registry {
            registry: self.reference.registry.clone(),
            reason: "not implemented yet".into(),
        })
    }

    fn pinned_digest(&self) -> Option<&Digest> {
        self.reference.digest.as_ref()
    }

    fn manifest(&self, digest: &Digest) -> Result<RawManifest> {
        let _ = digest;
        self.root_manifest()
    }

    fn open_blob(&self, digest: &Digest, size: u64) -> Result<Box<dyn Read + Send>> {
        let _ = (digest, size);
        Err(Error::Registry {
            registry: self.reference.registry.clone(),
            reason: "not implemented yet".into(),
        })
    }
}
