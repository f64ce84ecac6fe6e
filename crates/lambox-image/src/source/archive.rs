//! Images in files: `docker save` archives, OCI image layouts, and OCI archives.

use std::io::Read;
use std::path::Path;

use super::{BlobSource, RawManifest};
use crate::{Digest, Error, Result};

#[derive(Debug)]
pub struct DockerArchive {}

impl DockerArchive {
    pub fn open(path: &Path) -> Result<Self> {
        Err(Error::NotFound { object: path.display().to_string() })
    }
}

impl BlobSource for DockerArchive {
    fn root_manifest(&self) -> Result<RawManifest> {
        unimplemented_source()
    }
    fn manifest(&self, _: &Digest) -> Result<RawManifest> {
        unimplemented_source()
    }
    fn open_blob(&self, _: &Digest, _: u64) -> Result<Box<dyn Read + Send>> {
        unimplemented_source()
    }
}

#[derive(Debug)]
pub struct OciLayout {}

impl OciLayout {
    pub fn open_dir(path: &Path, _tag: Option<&str>) -> Result<Self> {
        Err(Error::NotFound { object: path.display().to_string() })
    }
    pub fn open_archive(path: &Path, _tag: Option<&str>) -> Result<Self> {
        Err(Error::NotFound { object: path.display().to_string() })
    }
}

impl BlobSource for OciLayout {
    fn root_manifest(&self) -> Result<RawManifest> {
        unimplemented_source()
    }
    fn manifest(&self, _: &Digest) -> Result<RawManifest> {
        unimplemented_source()
    }
    fn open_blob(&self, _: &Digest, _: u64) -> Result<Box<dyn Read + Send>> {
        unimplemented_source()
    }
}

fn unimplemented_source<T>() -> Result<T> {
    Err(Error::malformed("source", "not implemented yet"))
}
