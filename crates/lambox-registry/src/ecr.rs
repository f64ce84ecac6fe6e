//! The start of ECR's control API (JSON 1.1, `X-Amz-Target:
//! AmazonEC2ContainerRegistry_V20150921.<Op>`, `POST /`): CreateRepository,
//! DescribeRepositories, DeleteRepository, ListImages, DescribeImages, BatchGetImage and
//! BatchDeleteImage over the registry's repositories.
//!
//! Also GetAuthorizationToken (see [`crate::auth`]), PutImageTagMutability and
//! PutImageScanningConfiguration; an IMMUTABLE repository refuses a manifest PUT that would
//! move an existing tag (`TAG_INVALID`, ECR's message); PutImage (ECR's retag); StartImageScan
//! and DescribeImageScanFindings (see [`crate::scan`]). SigV4 is checked, when on, by the
//! layer `lambox serve` puts around [`router`] (lambox-api's `sigv4::Guard`), whose errors use
//! [`error_response`].
//! `repositoryUri` is `<Host header>/<name>`, so it can be pushed to as it is.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http::{HeaderMap, StatusCode};
use rusqlite::{params, OptionalExtension};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{meta, Registry};

pub const TARGET_HEADER: &str = "x-amz-target";
pub const TARGET_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921.";
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The account lambox reports (like other local AWS emulators, all zeros).
pub const ACCOUNT_ID: &str = "000000000000";
pub const REGION: &str = "us-east-1";

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS reg_ecr_repos (name TEXT PRIMARY KEY,
    tag_mutability TEXT NOT NULL, scan_on_push INTEGER NOT NULL, created_at INTEGER NOT NULL)";

/// An ECR error: `{"__type": code, "message": …}`, status 400.
#[derive(Debug)]
struct EcrError(&'static str, String);

impl IntoResponse for EcrError {
    fn into_response(self) -> Response {
        error_response(StatusCode::BAD_REQUEST, self.0, &self.1)
    }
}

/// An ECR (JSON 1.1) error answer: `{"__type": code, "message": …}` with `x-amzn-ErrorType`.
pub fn error_response(status: StatusCode, code: &'static str, message: &str) -> Response {
    let body = json!({ "__type": code, "message": message }).to_string();
    (
        status,
        [("content-type", CONTENT_TYPE), ("x-amzn-errortype", code)],
        body,
    )
        .into_response()
}

fn invalid(msg: impl Into<String>) -> EcrError {
    EcrError("InvalidParameterException", msg.into())
}

fn internal(e: impl std::fmt::Display) -> EcrError {
    tracing::error!("ecr: {e}");
    EcrError("ServerException", e.to_string())
}

fn not_found(name: &str) -> EcrError {
    EcrError(
        "RepositoryNotFoundException",
        format!(
            "The repository with name '{name}' does not exist in the registry with id '{ACCOUNT_ID}'"
        ),
    )
}

/// `POST /` for ECR targets.
pub fn router(registry: &Registry) -> Router {
    if let Err(e) = registry.store().with_db(|db| db.execute_batch(SCHEMA)) {
        tracing::error!("ecr: create table: {e}");
    }
    Router::new()
        .route("/", post(handle))
        .with_state(registry.clone())
}

/// ECR's repository-name rule: 2–256 characters,
/// `(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*`.
fn valid_name(n: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (2..=256).contains(&n.len())
        && n.split('/').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && alnum(b[0])
                && alnum(b[b.len() - 1])
                && b.iter()
                    .all(|&x| alnum(x) || matches!(x, b'.' | b'_' | b'-'))
                && !b.windows(2).any(|w| !alnum(w[0]) && !alnum(w[1]))
        })
}

async fn handle(State(reg): State<Registry>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get(TARGET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(op) = target.strip_prefix(TARGET_PREFIX) else {
        return EcrError(
            "UnknownOperationException",
            format!("unknown X-Amz-Target {target:?}"),
        )
        .into_response();
    };
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return invalid(format!("request body is not JSON: {e}")).into_response(),
        }
    };
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1:4566")
        .to_string();
    if op == "PutImage" {
        return match put_image(&reg, input).await {
            Ok(v) => (
                StatusCode::OK,
                [("content-type", CONTENT_TYPE)],
                v.to_string(),
            )
                .into_response(),
            Err(e) => e.into_response(),
        };
    }
    let op = op.to_string();
    let r = tokio::task::spawn_blocking(move || run(&reg, &op, input, &host)).await;
    match r {
        Ok(Ok(v)) => (
            StatusCode::OK,
            [("content-type", CONTENT_TYPE)],
            v.to_string(),
        )
            .into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => internal(e).into_response(),
    }
}

/// `{"HIGH": n, …}` over findings.
fn severity_counts(found: &[Value]) -> serde_json::Map<String, Value> {
    let mut counts = serde_json::Map::new();
    for f in found {
        let s = f["severity"].as_str().unwrap_or("UNDEFINED").to_string();
        let n = counts.get(&s).and_then(Value::as_u64).unwrap_or(0);
        counts.insert(s, json!(n + 1));
    }
    counts
}

/// PutImage: a manifest pushed through the JSON API (ECR's way to retag), stored by the same
/// code as a `/v2/` manifest PUT, so its checks (blobs present, IMMUTABLE tags) are the same.
async fn put_image(reg: &Registry, input: Value) -> Result<Value, EcrError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Put {
        repository_name: Option<String>,
        image_manifest: Option<String>,
        image_manifest_media_type: Option<String>,
        image_tag: Option<String>,
        image_digest: Option<String>,
    }
    let p: Put = serde_json::from_value(input).map_err(|e| invalid(e.to_string()))?;
    let i = Input {
        repository_name: p.repository_name.clone(),
        repository_names: None,
        image_tag_mutability: None,
        image_scanning_configuration: None,
        force: false,
        max_results: None,
        next_token: None,
        image_ids: None,
        image_id: None,
    };
    let name = required_name(&i)?.to_string();
    let reg2 = reg.clone();
    let n2 = name.clone();
    tokio::task::spawn_blocking(move || get_repo(&reg2, &n2))
        .await
        .map_err(internal)??
        .ok_or_else(|| not_found(&name))?;
    let manifest = p
        .image_manifest
        .ok_or_else(|| invalid("imageManifest is required"))?;
    let digest = lambox_image::Digest::of(manifest.as_bytes()).to_string();
    if let Some(d) = &p.image_digest {
        if d != &digest {
            return Err(EcrError(
                "ImageDigestDoesNotMatchException",
                format!("imageDigest {d} does not match the manifest's digest {digest}"),
            ));
        }
    }
    let reference = p.image_tag.clone().unwrap_or_else(|| digest.clone());
    let repo = crate::wire::RepoName::parse(&name).map_err(|e| invalid(e.message))?;
    let r = crate::wire::Reference::parse(&reference).map_err(|e| invalid(e.message))?;
    // The same manifest under the same tag again: ECR says ImageAlreadyExistsException.
    if let Some(tag) = &p.image_tag {
        let id = ImageId {
            image_digest: None,
            image_tag: Some(tag.clone()),
        };
        let (reg2, n2) = (reg.clone(), name.clone());
        let current = tokio::task::spawn_blocking(move || resolve(&reg2, &n2, &id))
            .await
            .map_err(internal)??;
        if current.is_some_and(|c| c.digest == digest) {
            return Err(EcrError(
                "ImageAlreadyExistsException",
                format!(
                    "Image with digest '{digest}' and tag '{tag}' already exists in the repository with name '{name}' in registry with id '{ACCOUNT_ID}'"
                ),
            ));
        }
    }
    let mut headers = HeaderMap::new();
    if let Some(mt) = &p.image_manifest_media_type {
        if let Ok(v) = http::HeaderValue::from_str(mt) {
            headers.insert(http::header::CONTENT_TYPE, v);
        }
    }
    let body = axum::body::Body::from(manifest.clone());
    match crate::api::put_manifest(reg, &repo, &r, &headers, body).await {
        Ok(_) => {}
        Err(e) => {
            use crate::error::Code;
            let kind = match e.code {
                Code::TagInvalid => "ImageTagAlreadyExistsException",
                Code::ManifestBlobUnknown => "LayersNotFoundException",
                Code::Unknown => "ServerException",
                _ => "InvalidParameterException",
            };
            return Err(EcrError(kind, e.message));
        }
    }
    let (reg2, n2, d2) = (reg.clone(), name.clone(), digest.clone());
    let media_type = tokio::task::spawn_blocking(move || {
        reg2.store()
            .with_db(|db| meta::manifest_by_digest(db, &n2, &d2))
            .map_err(internal)
    })
    .await
    .map_err(internal)??
    .map(|m| m.media_type)
    .unwrap_or_default();
    let mut image_id = json!({ "imageDigest": digest });
    if let Some(t) = &p.image_tag {
        image_id["imageTag"] = json!(t);
    }
    Ok(json!({ "image": {
        "registryId": ACCOUNT_ID,
        "repositoryName": name,
        "imageId": image_id,
        "imageManifest": manifest,
        "imageManifestMediaType": media_type,
    } }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Input {
    repository_name: Option<String>,
    repository_names: Option<Vec<String>>,
    image_tag_mutability: Option<String>,
    image_scanning_configuration: Option<ScanConfig>,
    #[serde(default)]
    force: bool,
    max_results: Option<usize>,
    next_token: Option<String>,
    image_ids: Option<Vec<ImageId>>,
    image_id: Option<ImageId>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageId {
    image_digest: Option<String>,
    image_tag: Option<String>,
}

impl ImageId {
    fn json(&self) -> Value {
        let mut v = json!({});
        if let Some(d) = &self.image_digest {
            v["imageDigest"] = json!(d);
        }
        if let Some(t) = &self.image_tag {
            v["imageTag"] = json!(t);
        }
        v
    }

    fn describe(&self) -> String {
        format!(
            "{{imageDigest:'{}', imageTag:'{}'}}",
            self.image_digest.as_deref().unwrap_or("null"),
            self.image_tag.as_deref().unwrap_or("null")
        )
    }
}

/// A manifest of a repository, found by an ECR imageId (digest and/or tag; both must agree).
fn resolve(
    reg: &Registry,
    repo: &str,
    id: &ImageId,
) -> Result<Option<meta::ManifestRow>, EcrError> {
    let (repo, id) = (repo.to_string(), id.clone());
    reg.store()
        .with_db(move |db| {
            let by_tag = match &id.image_tag {
                Some(t) => Some(meta::manifest_by_tag(db, &repo, t)?),
                None => None,
            };
            Ok(match (by_tag, &id.image_digest) {
                (Some(row), Some(d)) => row.filter(|r| &r.digest == d),
                (Some(row), None) => row,
                (None, Some(d)) => meta::manifest_by_digest(db, &repo, d)?,
                (None, None) => None,
            })
        })
        .map_err(internal)
}

fn tags_of(reg: &Registry, repo: &str, digest: &str) -> Result<Vec<String>, EcrError> {
    let (repo, digest) = (repo.to_string(), digest.to_string());
    reg.store()
        .with_db(move |db| {
            let mut s = db
                .prepare("SELECT tag FROM reg_tags WHERE repo = ?1 AND digest = ?2 ORDER BY tag")?;
            let rows = s.query_map(params![repo, digest], |r| r.get(0))?;
            rows.collect()
        })
        .map_err(internal)
}

fn read_manifest(reg: &Registry, digest: &str) -> Result<Vec<u8>, EcrError> {
    let d: lambox_image::Digest = digest.parse().map_err(internal)?;
    reg.store().read_blob(&d).map_err(internal)
}

fn image_ids(i: &Input) -> Result<&[ImageId], EcrError> {
    match i.image_ids.as_deref() {
        Some(ids) if !ids.is_empty() => Ok(ids),
        _ => Err(invalid("imageIds must list at least one image")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScanConfig {
    #[serde(default)]
    scan_on_push: bool,
}

struct Repo {
    name: String,
    mutability: String,
    scan_on_push: bool,
    created_at: i64,
}

fn repo_json(r: &Repo, host: &str) -> Value {
    json!({
        "repositoryArn": format!("arn:aws:ecr:{REGION}:{ACCOUNT_ID}:repository/{}", r.name),
        "registryId": ACCOUNT_ID,
        "repositoryName": r.name,
        "repositoryUri": format!("{host}/{}", r.name),
        "createdAt": r.created_at,
        "imageTagMutability": r.mutability,
        "imageScanningConfiguration": { "scanOnPush": r.scan_on_push },
        "encryptionConfiguration": { "encryptionType": "AES256" },
    })
}

fn get_repo(reg: &Registry, name: &str) -> Result<Option<Repo>, EcrError> {
    reg.store()
        .with_db(|db| {
            db.query_row(
                "SELECT name, tag_mutability, scan_on_push, created_at FROM reg_ecr_repos
                 WHERE name = ?1",
                params![name],
                |r| {
                    Ok(Repo {
                        name: r.get(0)?,
                        mutability: r.get(1)?,
                        scan_on_push: r.get::<_, i64>(2)? != 0,
                        created_at: r.get(3)?,
                    })
                },
            )
            .optional()
        })
        .map_err(internal)
}

fn required_name(i: &Input) -> Result<&str, EcrError> {
    let n = i
        .repository_name
        .as_deref()
        .ok_or_else(|| invalid("repositoryName is required"))?;
    if !valid_name(n) {
        return Err(invalid(format!(
            "Invalid parameter at 'repositoryName' failed to satisfy constraint: 'must satisfy \
             regular expression '(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*' \
             and length 2-256': {n:?}"
        )));
    }
    Ok(n)
}

fn run(reg: &Registry, op: &str, input: Value, host: &str) -> Result<Value, EcrError> {
    let i: Input = serde_json::from_value(input).map_err(|e| invalid(e.to_string()))?;
    match op {
        "CreateRepository" => {
            let name = required_name(&i)?;
            let mutability = i.image_tag_mutability.as_deref().unwrap_or("MUTABLE");
            if !matches!(mutability, "MUTABLE" | "IMMUTABLE") {
                return Err(invalid(format!(
                    "imageTagMutability {mutability:?} is not MUTABLE or IMMUTABLE"
                )));
            }
            let repo = Repo {
                name: name.to_string(),
                mutability: mutability.to_string(),
                scan_on_push: i
                    .image_scanning_configuration
                    .as_ref()
                    .is_some_and(|s| s.scan_on_push),
                created_at: meta::now(),
            };
            let inserted = reg
                .store()
                .with_db(|db| {
                    let n = db.execute(
                        "INSERT OR IGNORE INTO reg_ecr_repos
                         (name, tag_mutability, scan_on_push, created_at) VALUES (?1, ?2, ?3, ?4)",
                        params![
                            repo.name,
                            repo.mutability,
                            repo.scan_on_push,
                            repo.created_at
                        ],
                    )?;
                    meta::ensure_repo(db, &repo.name)?;
                    Ok(n)
                })
                .map_err(internal)?;
            if inserted == 0 {
                return Err(EcrError(
                    "RepositoryAlreadyExistsException",
                    format!(
                        "The repository with name '{name}' already exists in the registry with id '{ACCOUNT_ID}'"
                    ),
                ));
            }
            Ok(json!({ "repository": repo_json(&repo, host) }))
        }
        "DescribeRepositories" => {
            let names: Vec<String> = match &i.repository_names {
                Some(n) => n.clone(),
                None => reg
                    .store()
                    .with_db(|db| {
                        let mut s = db.prepare("SELECT name FROM reg_ecr_repos ORDER BY name")?;
                        let rows = s.query_map([], |r| r.get(0))?;
                        rows.collect()
                    })
                    .map_err(internal)?,
            };
            let mut out = Vec::new();
            for n in &names {
                let r = get_repo(reg, n)?.ok_or_else(|| not_found(n))?;
                out.push(repo_json(&r, host));
            }
            Ok(json!({ "repositories": out }))
        }
        "DeleteRepository" => {
            let name = required_name(&i)?;
            let repo = get_repo(reg, name)?.ok_or_else(|| not_found(name))?;
            let images: i64 = reg
                .store()
                .with_db(|db| {
                    db.query_row(
                        "SELECT COUNT(*) FROM reg_manifests WHERE repo = ?1",
                        params![name],
                        |r| r.get(0),
                    )
                })
                .map_err(internal)?;
            if images > 0 && !i.force {
                return Err(EcrError(
                    "RepositoryNotEmptyException",
                    format!(
                        "The repository with name '{name}' in registry with id '{ACCOUNT_ID}' cannot be deleted because it still contains images"
                    ),
                ));
            }
            reg.store()
                .with_db(|db| {
                    let tx = db.transaction()?;
                    for t in [
                        "reg_tags",
                        "reg_manifests",
                        "reg_blobs",
                        "reg_refs",
                        "reg_scans",
                    ] {
                        tx.execute(&format!("DELETE FROM {t} WHERE repo = ?1"), params![name])?;
                    }
                    tx.execute("DELETE FROM reg_repos WHERE name = ?1", params![name])?;
                    tx.execute("DELETE FROM reg_ecr_repos WHERE name = ?1", params![name])?;
                    tx.commit()
                })
                .map_err(internal)?;
            reg.request_gc();
            Ok(json!({ "repository": repo_json(&repo, host) }))
        }
        "ListImages" => {
            let name = required_name(&i)?;
            get_repo(reg, name)?.ok_or_else(|| not_found(name))?;
            let ids: Vec<(String, Option<String>)> = reg
                .store()
                .with_db(|db| {
                    let mut s = db.prepare(
                        "SELECT m.digest, t.tag FROM reg_manifests m
                         LEFT JOIN reg_tags t ON t.repo = m.repo AND t.digest = m.digest
                         WHERE m.repo = ?1 ORDER BY m.digest, t.tag",
                    )?;
                    let rows = s.query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    rows.collect()
                })
                .map_err(internal)?;
            let start: usize = match &i.next_token {
                Some(t) => t
                    .parse()
                    .map_err(|_| invalid(format!("invalid nextToken {t:?}")))?,
                None => 0,
            };
            let max = i.max_results.unwrap_or(1000).clamp(1, 1000);
            let page: Vec<Value> = ids
                .iter()
                .skip(start)
                .take(max)
                .map(|(d, t)| match t {
                    Some(t) => json!({ "imageDigest": d, "imageTag": t }),
                    None => json!({ "imageDigest": d }),
                })
                .collect();
            let mut out = json!({ "imageIds": page });
            if start + max < ids.len() {
                out["nextToken"] = json!((start + max).to_string());
            }
            Ok(out)
        }
        "DescribeImages" => {
            let name = required_name(&i)?;
            get_repo(reg, name)?.ok_or_else(|| not_found(name))?;
            let rows: Vec<meta::ManifestRow> = match &i.image_ids {
                Some(ids) => {
                    let mut rows = Vec::new();
                    for id in ids {
                        let row = resolve(reg, name, id)?.ok_or_else(|| {
                            EcrError(
                                "ImageNotFoundException",
                                format!(
                                    "The image with imageId {} does not exist within the repository with name '{name}' in the registry with id '{ACCOUNT_ID}'",
                                    id.describe()
                                ),
                            )
                        })?;
                        rows.push(row);
                    }
                    rows
                }
                None => {
                    let repo = name.to_string();
                    let digests: Vec<String> = reg
                        .store()
                        .with_db(move |db| {
                            let mut s = db.prepare(
                                "SELECT digest FROM reg_manifests WHERE repo = ?1 ORDER BY pushed_at, digest",
                            )?;
                            let rows = s.query_map(params![repo], |r| r.get(0))?;
                            rows.collect()
                        })
                        .map_err(internal)?;
                    let mut rows = Vec::new();
                    for d in digests {
                        let id = ImageId {
                            image_digest: Some(d),
                            image_tag: None,
                        };
                        rows.extend(resolve(reg, name, &id)?);
                    }
                    rows
                }
            };
            let mut details = Vec::new();
            for row in rows {
                let m: Value =
                    serde_json::from_slice(&read_manifest(reg, &row.digest)?).map_err(internal)?;
                // ECR reports the compressed size of the layers (the manifest's own for an index).
                let size: u64 = match m["layers"].as_array() {
                    Some(layers) => layers.iter().filter_map(|l| l["size"].as_u64()).sum(),
                    None => row.size,
                };
                let mut d = json!({
                    "registryId": ACCOUNT_ID,
                    "repositoryName": name,
                    "imageDigest": row.digest,
                    "imageSizeInBytes": size,
                    "imageManifestMediaType": row.media_type,
                });
                let tags = tags_of(reg, name, &row.digest)?;
                if !tags.is_empty() {
                    d["imageTags"] = json!(tags);
                }
                if let Some(a) = &row.artifact_type {
                    d["artifactMediaType"] = json!(a);
                }
                let (n2, d2) = (name.to_string(), row.digest.clone());
                let scan: Option<(String, String, Option<i64>, Option<String>)> = reg
                    .store()
                    .with_db(move |db| {
                        db.query_row(
                            "SELECT status, description, completed_at, findings FROM reg_scans
                             WHERE repo = ?1 AND digest = ?2",
                            params![n2, d2],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                        )
                        .optional()
                    })
                    .map_err(internal)?;
                if let Some((status, description, completed, found)) = scan {
                    d["imageScanStatus"] = json!({ "status": status, "description": description });
                    if status == "COMPLETE" {
                        let found: Vec<Value> = found
                            .as_deref()
                            .and_then(|f| serde_json::from_str(f).ok())
                            .unwrap_or_default();
                        d["imageScanFindingsSummary"] = json!({
                            "imageScanCompletedAt": completed,
                            "findingSeverityCounts": severity_counts(&found),
                        });
                    }
                }
                details.push(d);
            }
            Ok(json!({ "imageDetails": details }))
        }
        "BatchGetImage" => {
            let name = required_name(&i)?;
            get_repo(reg, name)?.ok_or_else(|| not_found(name))?;
            let (mut images, mut failures) = (Vec::new(), Vec::new());
            for id in image_ids(&i)? {
                match resolve(reg, name, id)? {
                    Some(row) => {
                        let bytes = read_manifest(reg, &row.digest)?;
                        let mut image_id = id.json();
                        image_id["imageDigest"] = json!(row.digest);
                        images.push(json!({
                            "registryId": ACCOUNT_ID,
                            "repositoryName": name,
                            "imageId": image_id,
                            "imageManifest": String::from_utf8_lossy(&bytes),
                            "imageManifestMediaType": row.media_type,
                        }));
                    }
                    None => failures.push(json!({
                        "imageId": id.json(),
                        "failureCode": "ImageNotFound",
                        "failureReason": "Requested image not found",
                    })),
                }
            }
            Ok(json!({ "images": images, "failures": failures }))
        }
        "BatchDeleteImage" => {
            let name = required_name(&i)?;
            get_repo(reg, name)?.ok_or_else(|| not_found(name))?;
            let (mut deleted, mut failures) = (Vec::new(), Vec::new());
            for id in image_ids(&i)? {
                let Some(row) = resolve(reg, name, id)? else {
                    failures.push(json!({
                        "imageId": id.json(),
                        "failureCode": "ImageNotFound",
                        "failureReason": "Requested image not found",
                    }));
                    continue;
                };
                let digest: lambox_image::Digest = row.digest.parse().map_err(internal)?;
                let (repo, tag) = (name.to_string(), id.image_tag.clone());
                // ECR: a tag alone removes the tag, and the image with its last tag; a digest
                // removes the image and all its tags. The blobs go in the collection below.
                reg.store()
                    .with_db(move |db| {
                        match &tag {
                            Some(t) => {
                                meta::delete_tag(db, &repo, t)?;
                                let left: i64 = db.query_row(
                                    "SELECT COUNT(*) FROM reg_tags WHERE repo = ?1 AND digest = ?2",
                                    params![repo, digest.to_string()],
                                    |r| r.get(0),
                                )?;
                                if left == 0 {
                                    meta::delete_manifest(db, &repo, &digest)?;
                                }
                            }
                            None => {
                                meta::delete_manifest(db, &repo, &digest)?;
                            }
                        }
                        Ok(())
                    })
                    .map_err(internal)?;
                let mut v = id.json();
                v["imageDigest"] = json!(row.digest);
                deleted.push(v);
            }
            if !deleted.is_empty() {
                reg.request_gc();
            }
            Ok(json!({ "imageIds": deleted, "failures": failures }))
        }
        "StartImageScan" | "DescribeImageScanFindings" => {
            let name = required_name(&i)?;
            get_repo(reg, name)?.ok_or_else(|| not_found(name))?;
            let id = i
                .image_id
                .as_ref()
                .ok_or_else(|| invalid("imageId is required"))?;
            let row = resolve(reg, name, id)?.ok_or_else(|| {
                EcrError(
                    "ImageNotFoundException",
                    format!(
                        "The image with imageId {} does not exist within the repository with name '{name}' in the registry with id '{ACCOUNT_ID}'",
                        id.describe()
                    ),
                )
            })?;
            let mut image_id = id.json();
            image_id["imageDigest"] = json!(row.digest);
            let digest: lambox_image::Digest = row.digest.parse().map_err(internal)?;
            if op == "StartImageScan" {
                reg.start_scan(name, &digest);
                return Ok(json!({
                    "registryId": ACCOUNT_ID,
                    "repositoryName": name,
                    "imageId": image_id,
                    "imageScanStatus": { "status": "IN_PROGRESS" },
                }));
            }
            type ScanRow = (String, String, Option<i64>, Option<String>, Option<String>);
            let scan: Option<ScanRow> = reg
                .store()
                .with_db(|db| {
                    db.query_row(
                        "SELECT status, description, completed_at, packages, findings
                         FROM reg_scans WHERE repo = ?1 AND digest = ?2",
                        params![name, row.digest],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                    )
                    .optional()
                })
                .map_err(internal)?;
            let Some((status, description, completed, packages, found)) = scan else {
                return Err(EcrError(
                    "ScanNotFoundException",
                    format!(
                        "Image scan does not exist for the image with '{}' in the repository with name '{name}' in the registry with id '{ACCOUNT_ID}'",
                        id.describe()
                    ),
                ));
            };
            let mut out = json!({
                "registryId": ACCOUNT_ID,
                "repositoryName": name,
                "imageId": image_id,
                "imageScanStatus": { "status": status, "description": description },
            });
            if status == "COMPLETE" {
                let found: Vec<Value> = found
                    .as_deref()
                    .and_then(|f| serde_json::from_str(f).ok())
                    .unwrap_or_default();
                let packages: Value = packages
                    .as_deref()
                    .and_then(|p| serde_json::from_str(p).ok())
                    .unwrap_or(json!([]));
                let counts = severity_counts(&found);
                let mut f = json!({
                    "imageScanCompletedAt": completed,
                    "findingSeverityCounts": counts,
                    "findings": found,
                    // lambox's own member: the package inventory (the aws CLI drops unknown
                    // members; the raw JSON response carries it).
                    "lamboxPackages": packages,
                });
                if let Some(p) = reg.config().vuln_db.as_deref() {
                    if let Ok(m) = std::fs::metadata(p).and_then(|m| m.modified()) {
                        if let Ok(d) = m.duration_since(std::time::UNIX_EPOCH) {
                            f["vulnerabilitySourceUpdatedAt"] = json!(d.as_secs());
                        }
                    }
                }
                out["imageScanFindings"] = f;
            }
            Ok(out)
        }
        "GetAuthorizationToken" => {
            let ttl = reg.config().token_ttl.as_secs() as i64;
            let (token, expires_at) = reg
                .store()
                .with_db(|db| crate::auth::issue(db, ttl))
                .map_err(internal)?;
            Ok(json!({ "authorizationData": [{
                "authorizationToken": crate::auth::encode(&token),
                "expiresAt": expires_at,
                "proxyEndpoint": format!("http://{host}"),
            }] }))
        }
        "PutImageTagMutability" => {
            let name = required_name(&i)?;
            get_repo(reg, name)?.ok_or_else(|| not_found(name))?;
            let mutability = i
                .image_tag_mutability
                .as_deref()
                .ok_or_else(|| invalid("imageTagMutability is required"))?;
            if !matches!(mutability, "MUTABLE" | "IMMUTABLE") {
                return Err(invalid(format!(
                    "imageTagMutability {mutability:?} is not MUTABLE or IMMUTABLE"
                )));
            }
            reg.store()
                .with_db(|db| {
                    db.execute(
                        "UPDATE reg_ecr_repos SET tag_mutability = ?2 WHERE name = ?1",
                        params![name, mutability],
                    )
                })
                .map_err(internal)?;
            Ok(json!({
                "registryId": ACCOUNT_ID,
                "repositoryName": name,
                "imageTagMutability": mutability,
            }))
        }
        "PutImageScanningConfiguration" => {
            let name = required_name(&i)?;
            get_repo(reg, name)?.ok_or_else(|| not_found(name))?;
            let scan_on_push = i
                .image_scanning_configuration
                .as_ref()
                .ok_or_else(|| invalid("imageScanningConfiguration is required"))?
                .scan_on_push;
            reg.store()
                .with_db(|db| {
                    db.execute(
                        "UPDATE reg_ecr_repos SET scan_on_push = ?2 WHERE name = ?1",
                        params![name, scan_on_push],
                    )
                })
                .map_err(internal)?;
            Ok(json!({
                "registryId": ACCOUNT_ID,
                "repositoryName": name,
                "imageScanningConfiguration": { "scanOnPush": scan_on_push },
            }))
        }
        other => Err(EcrError(
            "UnknownOperationException",
            format!("ECR operation {other} is not implemented by lambox yet"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn ecr_names() {
        for ok in ["hello-world", "a/b", "ab", "lambda/fn.v2_x"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["a", "A1", "-ab", "ab-", "a//b", "a--b", "a/B", "ab/"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
