//! Where images come from. Every source answers the same three questions — the root manifest,
//! a manifest by digest, and a blob by digest — and [`crate::import`] does the rest, so all
//! sources produce the same stored image.

use std::io::Read;
use std::path::PathBuf;

use crate::{Digest, Error, Result};

pub mod archive;
pub mod registry;

/// Raw manifest bytes as a source served them, with the media type it claimed (if any).
#[derive(Debug, Clone)]
pub struct RawManifest {
    pub bytes: Vec<u8>,
    pub media_type: Option<String>,
}

/// A place blobs can be read from. Implementations do not verify: the importer hashes
/// everything it reads and refuses mismatches.
pub trait BlobSource: Send + Sync {
    /// The root manifest (may be an index / manifest list).
    fn root_manifest(&self) -> Result<RawManifest>;
    /// The digest the user pinned (`@sha256:…`), if any; the root manifest must match it.
    fn pinned_digest(&self) -> Option<&Digest> {
        None
    }
    /// A manifest referred to by an index.
    fn manifest(&self, digest: &Digest) -> Result<RawManifest>;
    /// A stream of a blob's bytes; `size` is the descriptor's declared size.
    fn open_blob(&self, digest: &Digest, size: u64) -> Result<Box<dyn Read + Send>>;
    /// The name to store the image under when the user gives none.
    fn default_name(&self) -> Option<String> {
        None
    }
}

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Use plain HTTP even for a non-loopback host.
    pub plain_http: bool,
    /// Credentials given on the command line (win over the auth file).
    pub username: Option<String>,
    pub password: Option<String>,
    /// An explicit auth file (else `$REGISTRY_AUTH_FILE`, else `~/.docker/config.json`).
    pub auth_file: Option<PathBuf>,
}

/// A parsed image source, as the user writes it on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]`
    Registry(RegistryRef),
    /// `docker-archive:PATH`
    DockerArchive(PathBuf),
    /// `oci:PATH[:TAG]`
    OciLayout { path: PathBuf, tag: Option<String> },
    /// `oci-archive:PATH[:TAG]`
    OciArchive { path: PathBuf, tag: Option<String> },
}

/// A registry reference. The registry host is always explicit: lambox has no default registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// `host` or `host:port`
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl RegistryRef {
    /// The name the image is recorded under in the store: `registry/repo:tag` (tag `latest`
    /// when neither tag nor digest is given), or `None` for a digest-only reference.
    pub fn tagged_name(&self) -> Option<String> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(format!("{}/{}:{t}", self.registry, self.repository)),
            (None, None) => Some(format!("{}/{}:latest", self.registry, self.repository)),
            (None, Some(_)) => None,
        }
    }

    /// Whether the host is a loopback address (plain HTTP is used for those).
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => self.registry.as_str(),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false)
    }
}

impl std::fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn split_path_tag(rest: &str) -> (PathBuf, Option<String>) {
    // `oci:PATH:TAG` — a tag never contains '/', a path's last segment may contain ':' only
    // if the user also gives a tag; follow skopeo and split on the last ':' after the last '/'.
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match rest[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (PathBuf::from(&rest[..at]), Some(rest[at + 1..].to_string()))
        }
        None => (PathBuf::from(rest), None),
    }
}

fn valid_tag(tag: &str) -> bool {
    // distribution spec: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_repository(repo: &str) -> bool {
    // distribution spec: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
    !repo.is_empty()
        && repo.split('/').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
                })
        })
}

impl std::str::FromStr for Source {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            if rest.is_empty() {
                return Err(bad("docker-archive: needs a path"));
            }
            return Ok(Source::DockerArchive(PathBuf::from(rest)));
        }
        for (prefix, archive) in [("oci:", false), ("oci-archive:", true)] {
            if let Some(rest) = s.strip_prefix(prefix) {
                let (path, tag) = split_path_tag(rest);
                if path.as_os_str().is_empty() {
                    return Err(bad("needs a path"));
                }
                if let Some(t) = &tag {
                    if !valid_tag(t) {
                        return Err(bad("invalid tag"));
                    }
                }
                return Ok(if archive {
                    Source::OciArchive { path, tag }
                } else {
                    Source::OciLayout { path, tag }
                });
            }
        }
        let s_ref = s.strip_prefix("docker://").unwrap_or(s);
        let (name, digest) = match s_ref.split_once('@') {
            Some((n, d)) => (n, Some(d.parse::<Digest>()?)),
            None => (s_ref, None),
        };
        let (registry, path) = name.split_once('/').ok_or_else(|| {
            bad("expected HOST[:PORT]/REPO[:TAG|@sha256:DIGEST], or docker-archive:, oci: or oci-archive:")
        })?;
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(bad(
                "the registry host must be explicit (lambox has no default registry), e.g. 127.0.0.1:5000/repo:tag",
            ));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) => (r, Some(t.to_string())),
            None => (path, None),
        };
        if !valid_repository(repository) {
            return Err(bad(
                "invalid repository name (lower-case letters, digits, '.', '_', '-' and '/')",
            ));
        }
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return Err(bad("invalid tag"));
            }
        }
        Ok(Source::Registry(RegistryRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        }))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Registry(r) => write!(f, "{r}"),
            Source::DockerArchive(p) => write!(f, "docker-archive:{}", p.display()),
            Source::OciLayout { path, tag } | Source::OciArchive { path, tag } => {
                let kind = if matches!(self, Source::OciLayout { .. }) {
                    "oci"
                } else {
                    "oci-archive"
                };
                write!(f, "{kind}:{}", path.display())?;
                if let Some(t) = tag {
                    write!(f, ":{t}")?;
                }
                Ok(())
            }
        }
    }
}

impl Source {
    /// Open the source for reading.
    pub fn open(&self, registry: &RegistryOptions) -> Result<Box<dyn BlobSource>> {
        match self {
            Source::Registry(r) => Ok(Box::new(registry::RegistrySource::new(
                r.clone(),
                registry,
            )?)),
            Source::DockerArchive(p) => Ok(Box::new(archive::DockerArchive::open(p)?)),
            Source::OciLayout { path, tag } => Ok(Box::new(archive::OciLayout::open_dir(
                path,
                tag.as_deref(),
            )?)),
            Source::OciArchive { path, tag } => Ok(Box::new(archive::OciLayout::open_archive(
                path,
                tag.as_deref(),
            )?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(s: &str) -> RegistryRef {
        match s.parse::<Source>().expect(s) {
            Source::Registry(r) => r,
            other => panic!("{s} parsed as {other:?}"),
        }
    }

    #[test]
    fn parses_registry_refs() {
        let r = reg("127.0.0.1:5000/fn/hello:v1");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "fn/hello");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(r.is_loopback());
        let d = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        let r = reg(&format!("localhost/hello@{d}"));
        assert_eq!(r.digest.expect("digest").to_string(), d);
        assert_eq!(r.tag, None);
        let r = reg("example.com/hello");
        assert!(!r.is_loopback());
        assert_eq!(r.tagged_name().as_deref(), Some("example.com/hello:latest"));
    }

    #[test]
    fn parses_file_sources() {
        assert_eq!(
            "oci:/x/layout:v2".parse::<Source>().expect("oci"),
            Source::OciLayout {
                path: "/x/layout".into(),
                tag: Some("v2".into())
            }
        );
        assert_eq!(
            "oci-archive:img.tar"
                .parse::<Source>()
                .expect("oci-archive"),
            Source::OciArchive {
                path: "img.tar".into(),
                tag: None
            }
        );
        assert_eq!(
            "docker-archive:/a/b.tar".parse::<Source>().expect("docker"),
            Source::DockerArchive("/a/b.tar".into())
        );
    }

    #[test]
    fn refuses_bad_refs() {
        for bad in [
            "hello",
            "hello:latest",
            "library/hello",
            "127.0.0.1:5000/Hello",
            "127.0.0.1:5000/hello:bad/tag",
            "127.0.0.1:5000/hello@sha256:abc",
            "docker-archive:",
            "127.0.0.1:5000/../x",
        ] {
            let err = bad.parse::<Source>().expect_err(bad);
            assert!(!err.to_string().contains('\n'), "one line: {err}");
        }
    }
}
