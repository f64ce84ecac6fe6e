//! The wire: header names, media types, repository names, references, routes and the
//! manifest fields the registry reads. Parsed once, at the boundary.

use std::collections::BTreeMap;
use std::fmt;

use lambox_image::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use lambox_image::Digest;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult, Code};

pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";
pub const API_VERSION: &str = "registry/2.0";
pub const CONTENT_DIGEST_HEADER: &str = "docker-content-digest";
pub const UPLOAD_UUID_HEADER: &str = "docker-upload-uuid";
pub const OCI_SUBJECT_HEADER: &str = "oci-subject";
pub const OCI_FILTERS_APPLIED_HEADER: &str = "oci-filters-applied";
/// Docker's schema 1 manifests: refused (deprecated, signed, unsupported by lambox).
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// A repository name as the distribution spec defines it:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> ApiResult<Self> {
        let invalid = || {
            ApiError::new(Code::NameInvalid, format!("invalid repository name {s:?}"))
                .detail(serde_json::json!({ "name": s }))
        };
        if s.is_empty() || s.len() > 255 || !s.split('/').all(valid_component) {
            return Err(invalid());
        }
        Ok(RepoName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

/// Parse a digest from the wire; anything but `sha256:<64 hex>` is `DIGEST_INVALID`.
pub fn parse_digest(s: &str) -> ApiResult<Digest> {
    s.parse().map_err(|_| {
        ApiError::new(
            Code::DigestInvalid,
            format!("invalid digest {s:?}: lambox stores sha256:<64 lower-case hex digits>"),
        )
        .detail(serde_json::json!({ "digest": s }))
    })
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> ApiResult<Self> {
        if s.contains(':') {
            return parse_digest(s).map(Reference::Digest);
        }
        if !valid_tag(s) {
            return Err(
                ApiError::new(Code::TagInvalid, format!("invalid tag {s:?}"))
                    .detail(serde_json::json!({ "tag": s })),
            );
        }
        Ok(Reference::Tag(s.to_string()))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// What a path under `/v2/` addresses. Repository names may contain slashes, so the path is
/// read from its end: the last one or two segments say what it is, the rest is the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags(RepoName),
    Manifest(RepoName, Reference),
    Blob(RepoName, Digest),
    UploadStart(RepoName),
    Upload(RepoName, String),
    Referrers(RepoName, Digest),
}

impl Route {
    /// `rest` is the path after `/v2/`, percent-decoded.
    pub fn parse(rest: &str) -> ApiResult<Route> {
        if rest.is_empty() {
            return Ok(Route::Base);
        }
        if rest == "_catalog" {
            return Ok(Route::Catalog);
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        let name = |k: usize| RepoName::parse(&segs[..n - k].join("/"));
        if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
            return Ok(Route::Tags(name(2)?));
        }
        if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
            return Ok(if segs[n - 1].is_empty() {
                Route::UploadStart(name(3)?)
            } else {
                Route::Upload(name(3)?, segs[n - 1].to_string())
            });
        }
        if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
            return Ok(Route::UploadStart(name(2)?));
        }
        if n >= 2 {
            match segs[n - 2] {
                "blobs" => return Ok(Route::Blob(name(2)?, parse_digest(segs[n - 1])?)),
                "manifests" => {
                    return Ok(Route::Manifest(name(2)?, Reference::parse(segs[n - 1])?))
                }
                "referrers" => return Ok(Route::Referrers(name(2)?, parse_digest(segs[n - 1])?)),
                _ => {}
            }
        }
        Err(ApiError::new(
            Code::Unsupported,
            format!("no registry endpoint at /v2/{rest}"),
        )
        .status(http::StatusCode::NOT_FOUND))
    }
}

/// A descriptor as the registry reads it from a pushed manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireDescriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub urls: Vec<String>,
}

/// The fields of a manifest or index the registry checks and indexes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireManifest {
    pub schema_version: Option<u32>,
    pub media_type: Option<String>,
    pub artifact_type: Option<String>,
    pub config: Option<WireDescriptor>,
    pub layers: Option<Vec<WireDescriptor>>,
    pub manifests: Option<Vec<WireDescriptor>>,
    pub subject: Option<WireDescriptor>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Which of the four accepted kinds a manifest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Index,
}

/// The media type a pushed manifest is stored and served with, and its kind. The
/// document's `mediaType` and the request's `Content-Type` must agree when both are given.
pub fn manifest_kind(content_type: Option<&str>, m: &WireManifest) -> ApiResult<(String, Kind)> {
    let invalid = |msg: String| ApiError::new(Code::ManifestInvalid, msg);
    let ct = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|c| !c.is_empty() && c != "application/json" && c != "application/octet-stream");
    if m.schema_version != Some(2) {
        return Err(invalid(format!(
            "manifest schemaVersion {:?} is not supported (only 2: Docker v2 schema 2 or OCI)",
            m.schema_version
        )));
    }
    let media_type = match (ct, m.media_type.as_deref()) {
        (Some(c), Some(d)) if c != d => {
            return Err(invalid(format!(
                "manifest mediaType {d:?} does not match Content-Type {c:?}"
            )))
        }
        (_, Some(d)) => d.to_string(),
        (Some(c), None) => c,
        (None, None) if m.manifests.is_some() && m.config.is_none() => OCI_INDEX.to_string(),
        (None, None) => OCI_MANIFEST.to_string(),
    };
    let kind = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => Kind::Image,
        OCI_INDEX | DOCKER_LIST => Kind::Index,
        DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => {
            return Err(invalid(
                "Docker schema 1 manifests are not supported: push schema 2 or OCI".into(),
            ))
        }
        other => {
            return Err(invalid(format!(
                "unsupported manifest media type {other:?}"
            )))
        }
    };
    match kind {
        Kind::Image if m.config.is_none() || m.layers.is_none() => Err(invalid(format!(
            "{media_type} manifest needs \"config\" and \"layers\""
        ))),
        Kind::Index if m.manifests.is_none() => {
            Err(invalid(format!("{media_type} needs \"manifests\"")))
        }
        _ => Ok((media_type, kind)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_grammar() {
        for ok in ["a", "a/b/c", "lambda/hello-world", "a.b_c__d---e/f0", "0"] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "-a", "a-", "a..b", "a___b", "a._b", "a:b",
        ] {
            let e = RepoName::parse(bad).expect_err(bad);
            assert_eq!(e.code, Code::NameInvalid);
        }
        assert!(RepoName::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn routes_are_read_from_the_end_so_names_may_contain_slashes() {
        let d = Digest::of(b"x");
        let n = |s: &str| RepoName::parse(s).expect("name");
        assert_eq!(Route::parse("").expect("base"), Route::Base);
        assert_eq!(
            Route::parse("a/b/c/tags/list").expect("tags"),
            Route::Tags(n("a/b/c"))
        );
        assert_eq!(
            Route::parse(&format!("a/blobs/b/blobs/{d}")).expect("blob"),
            Route::Blob(n("a/blobs/b"), d.clone())
        );
        assert_eq!(
            Route::parse("a/b/blobs/uploads/").expect("start"),
            Route::UploadStart(n("a/b"))
        );
        assert_eq!(
            Route::parse("a/b/blobs/uploads").expect("start"),
            Route::UploadStart(n("a/b"))
        );
        assert_eq!(
            Route::parse("a/manifests/blobs/uploads/xyz").expect("upload"),
            Route::Upload(n("a/manifests"), "xyz".into())
        );
        assert_eq!(
            Route::parse("a/b/manifests/v1").expect("manifest"),
            Route::Manifest(n("a/b"), Reference::Tag("v1".into()))
        );
        assert_eq!(
            Route::parse(&format!("x/referrers/{d}")).expect("referrers"),
            Route::Referrers(n("x"), d)
        );
        assert_eq!(
            Route::parse("a/manifests/-bad").expect_err("tag").code,
            Code::TagInvalid
        );
        assert_eq!(
            Route::parse("a/blobs/sha256:zz").expect_err("digest").code,
            Code::DigestInvalid
        );
        assert_eq!(
            Route::parse("A/tags/list").expect_err("name").code,
            Code::NameInvalid
        );
        assert_eq!(Route::parse("a/b").expect_err("nothing").status, 404);
    }

    #[test]
    fn tags() {
        assert!(valid_tag("latest") && valid_tag("_x") && valid_tag("v1.2-rc_3"));
        assert!(
            !valid_tag("") && !valid_tag(".x") && !valid_tag("a/b") && !valid_tag(&"a".repeat(129))
        );
    }
}
