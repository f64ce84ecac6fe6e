//! Images in files: `docker save` archives, OCI image layouts, and OCI archives.
//!
//! Archives are indexed once (entry name → offset and size) and blobs are then read straight
//! from the archive file, so nothing is extracted to disk twice. Entry names are only ever map
//! keys here; nothing in an archive names a path on the host.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{BlobSource, RawManifest};
use crate::error::IoContext;
use crate::manifest::{self, Compression, Descriptor, MAX_JSON_SIZE};
use crate::{Digest, Error, Result};

/// Where an archive's entries live.
#[derive(Debug)]
enum Files {
    Dir(PathBuf),
    Tar {
        path: PathBuf,
        entries: HashMap<String, (u64, u64)>,
    },
}

fn normalise(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

impl Files {
    fn index_tar(path: &Path) -> Result<Files> {
        let object = path.display().to_string();
        let file = File::open(path).ctx(|| format!("open {object}"))?;
        let mut archive = tar::Archive::new(file);
        let mut entries = HashMap::new();
        let mut links = Vec::new();
        for entry in archive
            .entries_with_seek()
            .map_err(|e| Error::malformed(&object, e))?
        {
            let entry = entry.map_err(|e| Error::malformed(&object, e))?;
            let name = normalise(&String::from_utf8_lossy(&entry.path_bytes()));
            let kind = entry.header().entry_type();
            if kind.is_file() {
                entries.insert(name, (entry.raw_file_position(), entry.size()));
            } else if kind.is_symlink() || kind.is_hard_link() {
                // Old `docker save` deduplicates layer.tar files with links.
                if let Some(target) = entry.link_name_bytes() {
                    let target = String::from_utf8_lossy(&target).into_owned();
                    let base = if kind.is_symlink() {
                        name.rsplit_once('/')
                            .map(|(d, _)| d.to_string())
                            .unwrap_or_default()
                    } else {
                        String::new()
                    };
                    links.push((name, normalise(&format!("{base}/{target}"))));
                }
            }
        }
        for (name, target) in links {
            if let Some(&loc) = entries.get(&target) {
                entries.insert(name, loc);
            }
        }
        Ok(Files::Tar {
            path: path.to_path_buf(),
            entries,
        })
    }

    fn describe(&self) -> String {
        match self {
            Files::Dir(p) | Files::Tar { path: p, .. } => p.display().to_string(),
        }
    }

    fn open(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64)> {
        match self {
            Files::Dir(root) => {
                let p = root.join(name);
                let f = File::open(&p).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Error::NotFound {
                        object: format!("{} in {}", name, root.display()),
                    },
                    _ => Error::io(format!("open {}", p.display()), e),
                })?;
                let len = f.metadata().ctx(|| format!("stat {}", p.display()))?.len();
                Ok((Box::new(f), len))
            }
            Files::Tar { path, entries } => {
                let &(offset, size) =
                    entries
                        .get(&normalise(name))
                        .ok_or_else(|| Error::NotFound {
                            object: format!("{name} in {}", path.display()),
                        })?;
                let mut f = File::open(path).ctx(|| format!("open {}", path.display()))?;
                f.seek(SeekFrom::Start(offset))
                    .ctx(|| format!("read {}", path.display()))?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    fn read_small(&self, name: &str) -> Result<Vec<u8>> {
        let (r, size) = self.open(name)?;
        if size > MAX_JSON_SIZE {
            return Err(Error::malformed(
                format!("{name} in {}", self.describe()),
                format!("{size} bytes is larger than the {MAX_JSON_SIZE}-byte limit"),
            ));
        }
        let mut buf = Vec::new();
        r.take(MAX_JSON_SIZE)
            .read_to_end(&mut buf)
            .ctx(|| format!("read {name} in {}", self.describe()))?;
        Ok(buf)
    }
}

fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// An OCI image layout, as a directory (`oci:`) or a tar of one (`oci-archive:`).
#[derive(Debug)]
pub struct OciLayout {
    files: Files,
    root: Descriptor,
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";

impl OciLayout {
    pub fn open_dir(path: &Path, tag: Option<&str>) -> Result<Self> {
        if !path.is_dir() {
            return Err(Error::NotFound {
                object: format!("OCI layout directory {}", path.display()),
            });
        }
        Self::open(Files::Dir(path.to_path_buf()), tag)
    }

    pub fn open_archive(path: &Path, tag: Option<&str>) -> Result<Self> {
        Self::open(Files::index_tar(path)?, tag)
    }

    fn open(files: Files, tag: Option<&str>) -> Result<Self> {
        let object = format!("OCI layout {}", files.describe());
        let layout = files.read_small("oci-layout").map_err(|_| {
            Error::malformed(&object, "no oci-layout file: not an OCI image layout")
        })?;
        #[derive(Deserialize)]
        struct Layout {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let layout: Layout = serde_json::from_slice(&layout)
            .map_err(|e| Error::malformed(format!("{object} oci-layout"), e))?;
        if !layout.version.starts_with("1.") {
            return Err(Error::malformed(
                &object,
                format!("unsupported imageLayoutVersion {:?}", layout.version),
            ));
        }
        let index_bytes = files.read_small("index.json")?;
        let index: manifest::Index = serde_json::from_slice(&index_bytes)
            .map_err(|e| Error::malformed(format!("{object} index.json"), e))?;
        let names = || {
            index
                .manifests
                .iter()
                .filter_map(|d| d.annotations.get(REF_NAME).cloned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let root = match tag {
            Some(t) => index
                .manifests
                .iter()
                .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(t))
                .ok_or_else(|| Error::NotFound {
                    object: format!("tag {t:?} in {object} (it has: {})", names()),
                })?,
            None => match index.manifests.as_slice() {
                [one] => one,
                [] => return Err(Error::malformed(&object, "index.json lists no images")),
                _ => {
                    return Err(Error::malformed(
                        &object,
                        format!(
                        "index.json lists several images; name one with oci:PATH:TAG (tags: {})",
                        names()
                    ),
                    ))
                }
            },
        }
        .clone();
        Ok(OciLayout { files, root })
    }
}

impl BlobSource for OciLayout {
    fn root_manifest(&self) -> Result<RawManifest> {
        self.manifest(&self.root.digest.clone())
            .map(|m| RawManifest {
                media_type: Some(self.root.media_type.clone()).filter(|m| !m.is_empty()),
                ..m
            })
    }

    fn manifest(&self, digest: &Digest) -> Result<RawManifest> {
        Ok(RawManifest {
            bytes: self.files.read_small(&blob_name(digest))?,
            media_type: None,
        })
    }

    fn open_blob(&self, digest: &Digest, _size: u64) -> Result<Box<dyn Read + Send>> {
        Ok(self.files.open(&blob_name(digest))?.0)
    }
}

/// A `docker save` / `podman save --format docker-archive` tar.
///
/// Its `manifest.json` names a config file and layer files; lambox builds an OCI manifest from
/// them (the archive carries no registry manifest), so the image's digest differs from the
/// registry's, but its config and layers — and so what is stored and unpacked — are the same.
#[derive(Debug)]
pub struct DockerArchive {
    files: Files,
    manifest: Vec<u8>,
    blobs: HashMap<Digest, String>,
    repo_tag: Option<String>,
}

impl DockerArchive {
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::NotFound {
                object: format!("docker archive {}", path.display()),
            });
        }
        let files = Files::index_tar(path)?;
        let object = format!("docker archive {}", path.display());
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = serde_json::from_slice(&files.read_small("manifest.json")?)
            .map_err(|e| Error::malformed(format!("{object} manifest.json"), e))?;
        let entry = match entries.as_slice() {
            [one] => one,
            [] => return Err(Error::malformed(&object, "manifest.json lists no images")),
            _ => {
                return Err(Error::malformed(
                    &object,
                    "manifest.json lists several images; lambox loads one image per archive",
                ))
            }
        };
        let config_bytes = files.read_small(&entry.config)?;
        let config_digest = Digest::of(&config_bytes);
        let info = manifest::parse_config(
            &format!("{object} config"),
            &config_bytes,
            entry.layers.len(),
        )?;
        let mut blobs = HashMap::from([(config_digest.clone(), entry.config.clone())]);
        let mut layers = Vec::new();
        for (i, name) in entry.layers.iter().enumerate() {
            let (mut r, size) = files.open(name)?;
            let mut head = [0u8; 4];
            let n = r
                .read(&mut head)
                .ctx(|| format!("read {name} in {object}"))?;
            let compression = Compression::sniff(&head[..n]);
            let (digest, media_type) = match compression {
                // An uncompressed layer's digest is its diff_id; the import verifies it.
                Compression::None => (info.rootfs.diff_ids[i].clone(), manifest::OCI_LAYER),
                Compression::Gzip | Compression::Zstd => {
                    let (r, _) = files.open(name)?;
                    let (_, d, _) = crate::digest::HashingReader::new(r)
                        .finish()
                        .ctx(|| format!("read {name} in {object}"))?;
                    let mt = if compression == Compression::Gzip {
                        manifest::OCI_LAYER_GZIP
                    } else {
                        manifest::OCI_LAYER_ZSTD
                    };
                    (d, mt)
                }
            };
            blobs.insert(digest.clone(), name.clone());
            layers
                .push(serde_json::json!({"mediaType": media_type, "digest": digest, "size": size}));
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_MANIFEST,
            "config": {"mediaType": manifest::OCI_CONFIG, "digest": config_digest, "size": config_bytes.len()},
            "layers": layers,
        }))
        .map_err(|e| Error::malformed(&object, e))?;
        Ok(DockerArchive {
            files,
            manifest,
            blobs,
            repo_tag: entry.repo_tags.as_ref().and_then(|t| t.first().cloned()),
        })
    }

    /// The first `RepoTags` entry, if the archive has one.
    pub fn repo_tag(&self) -> Option<&str> {
        self.repo_tag.as_deref()
    }
}

impl BlobSource for DockerArchive {
    fn root_manifest(&self) -> Result<RawManifest> {
        Ok(RawManifest {
            bytes: self.manifest.clone(),
            media_type: Some(manifest::OCI_MANIFEST.to_string()),
        })
    }

    fn manifest(&self, digest: &Digest) -> Result<RawManifest> {
        Err(Error::NotFound {
            object: format!("manifest {digest} in {}", self.files.describe()),
        })
    }

    fn open_blob(&self, digest: &Digest, _size: u64) -> Result<Box<dyn Read + Send>> {
        let name = self.blobs.get(digest).ok_or_else(|| Error::NotFound {
            object: format!("blob {digest} in {}", self.files.describe()),
        })?;
        Ok(self.files.open(name)?.0)
    }

    fn default_name(&self) -> Option<String> {
        self.repo_tag.clone()
    }
}
