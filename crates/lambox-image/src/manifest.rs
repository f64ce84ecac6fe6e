//! Manifests, indexes and image configs: the wire types, defined once, parsed at the boundary.
//!
//! Docker Image Manifest V2 Schema 2 and the OCI image manifest have the same shape, as do the
//! Docker manifest list and the OCI index; one type parses each pair and the media type tells
//! them apart. Digests in descriptors are parsed into [`Digest`], so a descriptor that names
//! anything but a well-formed sha256 digest never gets past parsing.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Digest, Error, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The largest manifest, index or config lambox reads (they are JSON documents, not data).
pub const MAX_JSON_SIZE: u64 = 4 * 1024 * 1024;

const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a layer media type declares, or `None` if it is not a layer type lambox
    /// knows (foreign / non-distributable layers and unknown types are refused).
    pub fn of_layer_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            OCI_LAYER | DOCKER_LAYER => Some(Compression::None),
            OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => Some(Compression::Gzip),
            OCI_LAYER_ZSTD | DOCKER_LAYER_ZSTD => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Sniff the compression from a blob's first bytes.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image manifest (OCI or Docker v2 schema 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// An OS/architecture pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = Error;

    /// `linux/amd64`, `linux/arm64`, `linux/arm64/v8`.
    fn from_str(s: &str) -> Result<Self> {
        let mut parts = s.split('/');
        let (Some(os), Some(arch)) = (parts.next(), parts.next()) else {
            return Err(Error::Platform(format!(
                "invalid platform {s:?}: expected OS/ARCH, e.g. linux/amd64 or linux/arm64"
            )));
        };
        let variant = parts.next().map(str::to_string);
        if parts.next().is_some() || os.is_empty() || arch.is_empty() {
            return Err(Error::Platform(format!(
                "invalid platform {s:?}: expected OS/ARCH, e.g. linux/amd64 or linux/arm64"
            )));
        }
        Ok(Platform {
            os: os.to_string(),
            architecture: normalise_arch(arch).to_string(),
            variant,
        })
    }
}

fn normalise_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// What a root manifest turned out to be.
#[derive(Debug)]
pub enum Parsed {
    Manifest(Manifest),
    Index(Index),
}

/// Parse manifest bytes. `claimed` is the media type the source claimed (a Content-Type or a
/// descriptor); the document's own `mediaType` wins when present.
pub fn parse(object: &str, bytes: &[u8], claimed: Option<&str>) -> Result<Parsed> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        schema_version: Option<u32>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| Error::malformed(object, e))?;
    if probe.schema_version != Some(2) {
        return Err(Error::malformed(
            object,
            format!(
                "schemaVersion {:?} is not supported (only 2: Docker v2 schema 2 or OCI)",
                probe.schema_version
            ),
        ));
    }
    let media_type = probe
        .media_type
        .clone()
        .or_else(|| claimed.map(str::to_string).filter(|m| !m.is_empty()));
    let is_index = match media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        // No media type anywhere (allowed by OCI): decide by shape.
        None | Some("application/json") => probe.manifests.is_some() && probe.config.is_none(),
        Some(other) => {
            return Err(Error::UnsupportedMediaType {
                object: object.to_string(),
                media_type: other.to_string(),
            })
        }
    };
    if is_index {
        let index: Index =
            serde_json::from_slice(bytes).map_err(|e| Error::malformed(object, e))?;
        Ok(Parsed::Index(index))
    } else {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| Error::malformed(object, e))?;
        match manifest.config.media_type.as_str() {
            OCI_CONFIG | DOCKER_CONFIG | "" => {}
            other => {
                return Err(Error::UnsupportedMediaType {
                    object: format!("{object} config {}", manifest.config.digest),
                    media_type: other.to_string(),
                })
            }
        }
        for layer in &manifest.layers {
            if Compression::of_layer_media_type(&layer.media_type).is_none() {
                return Err(Error::UnsupportedMediaType {
                    object: format!("{object} layer {}", layer.digest),
                    media_type: layer.media_type.clone(),
                });
            }
        }
        Ok(Parsed::Manifest(manifest))
    }
}

/// The media type to record for a manifest that parsed as one.
pub fn manifest_media_type(manifest: &Manifest, claimed: Option<&str>) -> String {
    manifest
        .media_type
        .clone()
        .or_else(|| {
            claimed
                .filter(|c| *c == DOCKER_MANIFEST)
                .map(str::to_string)
        })
        .unwrap_or_else(|| OCI_MANIFEST.to_string())
}

fn is_attestation(d: &Descriptor) -> bool {
    d.annotations
        .get(ANNOTATION_REFERENCE_TYPE)
        .map(String::as_str)
        == Some("attestation-manifest")
        || d.platform
            .as_ref()
            .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
}

/// Pick the one manifest of an index that lambox should run.
///
/// Lambda runs single-architecture images only. An index with exactly one runnable platform —
/// where every other entry is a build attestation (buildx provenance / SBOM) — is a
/// single-platform image and is accepted (AWS refuses these; lambox deliberately does not).
/// An index with several platforms is refused unless `wanted` selects one.
pub fn select_platform<'a>(
    object: &str,
    index: &'a Index,
    wanted: Option<&Platform>,
) -> Result<&'a Descriptor> {
    let runnable: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| !is_attestation(d))
        .collect();
    let describe = |d: &Descriptor| {
        d.platform
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "unknown platform".to_string())
    };
    let found = || {
        runnable
            .iter()
            .map(|d| describe(d))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(w) = wanted {
        return runnable
            .iter()
            .copied()
            .find(|d| {
                d.platform.as_ref().is_some_and(|p| {
                    p.os == w.os
                        && normalise_arch(&p.architecture) == w.architecture
                        && (w.variant.is_none() || p.variant == w.variant)
                })
            })
            .ok_or_else(|| {
                Error::Platform(format!(
                    "{object}: no manifest for platform {w}; the image has: {}",
                    found()
                ))
            });
    }
    match runnable.as_slice() {
        [] => Err(Error::Platform(format!("{object}: the index lists no runnable image"))),
        [one] => Ok(one),
        _ => Err(Error::Platform(format!(
            "{object} is a multi-platform image ({}); Lambda runs single-architecture images only: choose one with --platform linux/amd64 or --platform linux/arm64",
            found()
        ))),
    }
}

/// The parts of an image config lambox uses (the rest is kept in the stored blob).
#[derive(Debug, Clone, Deserialize)]
pub struct ConfigInfo {
    pub os: String,
    pub architecture: String,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// Parse a config and check it describes an image Lambda can run.
pub fn parse_config(object: &str, bytes: &[u8], layers: usize) -> Result<ConfigInfo> {
    let info: ConfigInfo =
        serde_json::from_slice(bytes).map_err(|e| Error::malformed(object, e))?;
    if info.rootfs.kind != "layers" {
        return Err(Error::malformed(
            object,
            format!("rootfs.type {:?} is not \"layers\"", info.rootfs.kind),
        ));
    }
    if info.rootfs.diff_ids.len() != layers {
        return Err(Error::malformed(
            object,
            format!(
                "config lists {} diff_ids but the manifest has {layers} layers",
                info.rootfs.diff_ids.len()
            ),
        ));
    }
    if info.os != "linux" {
        return Err(Error::Platform(format!(
            "{object}: os {:?} is not supported: Lambda runs only linux images",
            info.os
        )));
    }
    if !matches!(normalise_arch(&info.architecture), "amd64" | "arm64") {
        return Err(Error::Platform(format!(
            "{object}: architecture {:?} is not supported: Lambda runs amd64 (x86_64) and arm64 images",
            info.architecture
        )));
    }
    Ok(ConfigInfo {
        architecture: normalise_arch(&info.architecture).to_string(),
        ..info
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn index(entries: &str) -> Index {
        let json =
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{entries}]}}"#);
        match parse("test", json.as_bytes(), None).expect("parse") {
            Parsed::Index(i) => i,
            Parsed::Manifest(_) => panic!("not an index"),
        }
    }

    fn entry(digest: &str, os: &str, arch: &str, extra: &str) -> String {
        format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":10,"platform":{{"os":"{os}","architecture":"{arch}"}}{extra}}}"#
        )
    }

    #[test]
    fn multi_platform_is_refused_then_selected() {
        let i = index(&format!(
            "{},{}",
            entry(D1, "linux", "amd64", ""),
            entry(D2, "linux", "arm64", "")
        ));
        let err = select_platform("img", &i, None).expect_err("multi");
        let msg = err.to_string();
        assert!(
            msg.contains("linux/amd64, linux/arm64") && msg.contains("--platform"),
            "{msg}"
        );
        let arm: Platform = "linux/arm64".parse().expect("platform");
        assert_eq!(
            select_platform("img", &i, Some(&arm))
                .expect("arm")
                .digest
                .to_string(),
            D2
        );
        let x86: Platform = "linux/x86_64".parse().expect("platform");
        assert_eq!(
            select_platform("img", &i, Some(&x86))
                .expect("amd")
                .digest
                .to_string(),
            D1
        );
        let s390: Platform = "linux/s390x".parse().expect("platform");
        assert!(select_platform("img", &i, Some(&s390)).is_err());
    }

    #[test]
    fn attestations_do_not_count_as_platforms() {
        let att = format!(
            r#","annotations":{{"vnd.docker.reference.type":"attestation-manifest","vnd.docker.reference.digest":"{D1}"}}"#
        );
        let i = index(&format!(
            "{},{}",
            entry(D1, "linux", "amd64", ""),
            entry(D2, "unknown", "unknown", &att)
        ));
        assert_eq!(
            select_platform("img", &i, None)
                .expect("single")
                .digest
                .to_string(),
            D1
        );
    }

    #[test]
    fn refuses_bad_documents() {
        for (bytes, want) in [
            (&b"{"[..], "malformed"),
            (br#"{"schemaVersion":1,"name":"x"}"#, "schemaVersion"),
            (br#"{"schemaVersion":2,"mediaType":"text/html"}"#, "unsupported media type"),
            (
                br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:../etc","size":1},"layers":[]}"#,
                "invalid digest",
            ),
        ] {
            let err = parse("m", bytes, None).expect_err("bad");
            assert!(err.to_string().contains(want), "{err}");
            assert!(!err.to_string().contains('\n'));
        }
        let bad_layer = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{D1}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"{D2}","size":1}}]}}"#
        );
        assert!(parse("m", bad_layer.as_bytes(), None).is_err());
    }

    #[test]
    fn config_must_be_linux_amd64_or_arm64() {
        let cfg = |os: &str, arch: &str| {
            format!(
                r#"{{"os":"{os}","architecture":"{arch}","rootfs":{{"type":"layers","diff_ids":["{D1}"]}}}}"#
            )
        };
        assert!(parse_config("c", cfg("linux", "amd64").as_bytes(), 1).is_ok());
        assert!(parse_config("c", cfg("windows", "amd64").as_bytes(), 1).is_err());
        assert!(parse_config("c", cfg("linux", "riscv64").as_bytes(), 1).is_err());
        assert!(parse_config("c", cfg("linux", "amd64").as_bytes(), 2).is_err());
    }
}
