//! The handlers: one dispatcher for every path under `/v2/` (see [`Route`]).

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use percent_encoding::percent_decode_str;
use rusqlite::Connection;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use lambox_image::manifest::{MAX_JSON_SIZE, OCI_INDEX};
use lambox_image::Digest;

use crate::error::{ApiError, ApiResult, Code};
use crate::meta::{self, NewManifest};
use crate::upload::Session;
use crate::wire::{
    manifest_kind, parse_digest, Kind, Reference, RepoName, Route, WireManifest, API_VERSION,
    API_VERSION_HEADER, CONTENT_DIGEST_HEADER, OCI_FILTERS_APPLIED_HEADER, OCI_SUBJECT_HEADER,
    UPLOAD_UUID_HEADER,
};
use crate::Registry;

/// Bytes per read when serving a blob.
const READ_CHUNK: usize = 1 << 20;

pub async fn dispatch(
    State(reg): State<Registry>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut resp = match handle(&reg, &method, &uri, &headers, body).await {
        Ok(r) => r,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!("registry: {method} {uri}: {e}");
            }
            e.into_response()
        }
    };
    resp.headers_mut()
        .insert(API_VERSION_HEADER, HeaderValue::from_static(API_VERSION));
    resp
}

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(uri: &Uri) -> Query {
        Query(
            form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn unsupported(method: &Method, what: &str) -> ApiError {
    ApiError::new(
        Code::Unsupported,
        format!("{method} is not supported on {what}"),
    )
}

async fn handle(
    reg: &Registry,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if reg.config().auth {
        check_auth(reg, headers).await?;
    }
    let raw = uri.path().strip_prefix("/v2").unwrap_or("");
    let raw = raw.strip_prefix('/').unwrap_or(raw);
    let rest = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::new(Code::NameInvalid, format!("path /v2/{raw} is not UTF-8")))?;
    let q = Query::parse(uri);
    let head = method == Method::HEAD;
    match Route::parse(&rest)? {
        Route::Base => match *method {
            Method::GET | Method::HEAD => {
                Ok(json(StatusCode::OK, "{}".into(), "application/json", head))
            }
            _ => Err(unsupported(method, "/v2/")),
        },
        Route::Catalog => match *method {
            Method::GET => catalog(reg, &q).await,
            _ => Err(unsupported(method, "the catalog")),
        },
        Route::Tags(name) => match *method {
            Method::GET => tags_list(reg, &name, &q).await,
            _ => Err(unsupported(method, "a tag list")),
        },
        Route::Manifest(name, r) => match *method {
            Method::GET | Method::HEAD => get_manifest(reg, &name, &r, head).await,
            Method::PUT => put_manifest(reg, &name, &r, headers, body).await,
            Method::DELETE => delete_manifest(reg, &name, &r).await,
            _ => Err(unsupported(method, "a manifest")),
        },
        Route::Blob(name, d) => match *method {
            Method::GET | Method::HEAD => get_blob(reg, &name, &d, headers, head).await,
            Method::DELETE => delete_blob(reg, &name, &d).await,
            _ => Err(unsupported(method, "a blob")),
        },
        Route::UploadStart(name) => match *method {
            Method::POST => start_upload(reg, &name, &q, body).await,
            _ => Err(unsupported(method, "the upload endpoint")),
        },
        Route::Upload(name, id) => match *method {
            Method::PATCH => patch_upload(reg, &name, &id, headers, body).await,
            Method::PUT => put_upload(reg, &name, &id, &q, headers, body).await,
            Method::GET => upload_status(reg, &name, &id).await,
            Method::DELETE => cancel_upload(reg, &name, &id).await,
            _ => Err(unsupported(method, "an upload")),
        },
        Route::Referrers(name, d) => match *method {
            Method::GET => referrers(reg, &name, &d, &q).await,
            _ => Err(unsupported(method, "the referrers API")),
        },
    }
}

/// With auth on: the request's Basic credentials must carry a valid, unexpired token.
async fn check_auth(reg: &Registry, headers: &HeaderMap) -> ApiResult<()> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let Some(token) = crate::auth::basic_token(headers) else {
        return Err(crate::auth::challenge(
            &host,
            "authentication required: log in with user AWS and the password from `aws ecr get-login-password`",
        ));
    };
    if db(reg, move |db| crate::auth::valid(db, &token)).await? {
        Ok(())
    } else {
        Err(crate::auth::challenge(
            &host,
            "the authorization token is invalid or has expired: log in again",
        ))
    }
}

/// Run a database function off the async threads.
async fn db<T: Send + 'static>(
    reg: &Registry,
    f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
) -> ApiResult<T> {
    let store = reg.store().clone();
    tokio::task::spawn_blocking(move || store.with_db(f))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

/// [`db`] under the registry's commit lock and the store lock (shared): for what must not
/// interleave with a garbage collection (see [`crate::gc`]).
async fn locked_db<T: Send + 'static>(
    reg: &Registry,
    f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
) -> ApiResult<T> {
    let reg = reg.clone();
    tokio::task::spawn_blocking(move || reg.committing(|store| store.with_db(f)))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

fn hv(s: &str) -> HeaderValue {
    // Every value built here is ASCII (paths of valid names, digests, numbers, media types
    // that were valid header values when they arrived).
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn json(status: StatusCode, body: String, content_type: &str, head: bool) -> Response {
    let len = body.len();
    let mut resp = if head {
        (status, Body::empty()).into_response()
    } else {
        (status, body).into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, hv(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

fn empty(status: StatusCode, headers: Vec<(&'static str, HeaderValue)>) -> Response {
    let mut resp = (status, Body::empty()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    for (k, v) in headers {
        h.insert(k, v);
    }
    resp
}

// ---- blobs ----

async fn get_blob(
    reg: &Registry,
    name: &RepoName,
    digest: &Digest,
    headers: &HeaderMap,
    head: bool,
) -> ApiResult<Response> {
    let unknown = || {
        ApiError::new(
            Code::BlobUnknown,
            format!("blob {digest} is not in repository {name}"),
        )
        .detail(serde_json::json!({ "digest": digest.to_string() }))
    };
    let (repo, d) = (name.to_string(), digest.clone());
    // A HEAD is how a pushing client decides not to upload a blob: it renews the blob's grace.
    let size = if head {
        locked_db(reg, move |db| meta::touch_blob(db, &repo, &d)).await?
    } else {
        db(reg, move |db| meta::blob_size(db, &repo, &d)).await?
    }
    .ok_or_else(unknown)?;
    let path = reg.store().blob_path(digest);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(unknown()),
        Err(e) => return Err(ApiError::internal(format!("open blob {digest}: {e}"))),
    };
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) if !head => parse_range(r, size),
        _ => RangeReq::Whole,
    };
    let mut resp = match range {
        RangeReq::Unsatisfiable => {
            return Ok(empty(
                StatusCode::RANGE_NOT_SATISFIABLE,
                vec![("content-range", hv(&format!("bytes */{size}")))],
            ))
        }
        RangeReq::Whole => {
            let body = if head {
                Body::empty()
            } else {
                Body::from_stream(ReaderStream::with_capacity(file, READ_CHUNK))
            };
            let mut resp = (StatusCode::OK, body).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            resp
        }
        RangeReq::Part(start, end) => {
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(|e| ApiError::internal(format!("seek blob {digest}: {e}")))?;
            let len = end - start + 1;
            let body = Body::from_stream(ReaderStream::with_capacity(file.take(len), READ_CHUNK));
            let mut resp = (StatusCode::PARTIAL_CONTENT, body).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            h.insert(
                header::CONTENT_RANGE,
                hv(&format!("bytes {start}-{end}/{size}")),
            );
            resp
        }
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(CONTENT_DIGEST_HEADER, hv(&digest.to_string()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    Ok(resp)
}

#[derive(Debug, PartialEq, Eq)]
enum RangeReq {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

/// A single `bytes=` range (RFC 9110 §14.1.2); anything else is ignored (the whole blob).
fn parse_range(v: &str, size: u64) -> RangeReq {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return RangeReq::Whole;
    };
    if spec.contains(',') {
        return RangeReq::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeReq::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(s), Ok(e)) if s <= e => Some((s, e.min(size.saturating_sub(1)))),
        (Ok(s), Err(_)) if b.is_empty() => Some((s, size.saturating_sub(1))),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => {
            Some((size.saturating_sub(n), size.saturating_sub(1)))
        }
        (Err(_), Ok(_)) if a.is_empty() => return RangeReq::Unsatisfiable,
        _ => return RangeReq::Whole,
    };
    match range {
        Some((s, e)) if s < size && s <= e => RangeReq::Part(s, e),
        _ => RangeReq::Unsatisfiable,
    }
}

async fn delete_blob(reg: &Registry, name: &RepoName, digest: &Digest) -> ApiResult<Response> {
    let (repo, d) = (name.to_string(), digest.clone());
    if !db(reg, move |db| meta::unlink_blob(db, &repo, &d)).await? {
        return Err(ApiError::new(
            Code::BlobUnknown,
            format!("blob {digest} is not in repository {name}"),
        )
        .detail(serde_json::json!({ "digest": digest.to_string() })));
    }
    reg.request_gc();
    Ok(empty(StatusCode::ACCEPTED, vec![]))
}

// ---- uploads ----

fn upload_location(name: &RepoName, id: &str) -> HeaderValue {
    hv(&format!("/v2/{name}/blobs/uploads/{id}"))
}

fn upload_range(size: u64) -> HeaderValue {
    hv(&format!("0-{}", size.saturating_sub(1)))
}

fn upload_accepted(status: StatusCode, name: &RepoName, id: &str, size: u64) -> Response {
    empty(
        status,
        vec![
            ("location", upload_location(name, id)),
            ("range", upload_range(size)),
            (UPLOAD_UUID_HEADER, hv(id)),
        ],
    )
}

fn blob_created(name: &RepoName, digest: &Digest) -> Response {
    empty(
        StatusCode::CREATED,
        vec![
            ("location", hv(&format!("/v2/{name}/blobs/{digest}"))),
            (CONTENT_DIGEST_HEADER, hv(&digest.to_string())),
        ],
    )
}

async fn new_session(reg: &Registry, name: &RepoName) -> ApiResult<Session> {
    Session::create(name.clone(), reg.store().temp_path("upload")).await
}

async fn start_upload(
    reg: &Registry,
    name: &RepoName,
    q: &Query,
    body: Body,
) -> ApiResult<Response> {
    if let Some(mount) = q.get("mount") {
        let digest = parse_digest(mount)?;
        if let Some(from) = q.get("from") {
            let from = RepoName::parse(from)?;
            let (f, repo, d) = (from.to_string(), name.to_string(), digest.clone());
            let path = reg.store().blob_path(&digest);
            let mounted = locked_db(reg, move |db| match meta::blob_size(db, &f, &d)? {
                Some(size) if path.exists() => meta::link_blob(db, &repo, &d, size).map(|()| true),
                _ => Ok(false),
            })
            .await?;
            if mounted {
                return Ok(blob_created(name, &digest));
            }
        }
        // Not mountable: the spec says to answer with an upload session instead.
    } else if let Some(d) = q.get("digest") {
        let digest = parse_digest(d)?;
        let mut s = new_session(reg, name).await?;
        if let Err(e) = s.append(body).await {
            s.discard().await;
            return Err(e);
        }
        return finish(reg, s, &digest)
            .await
            .map(|()| blob_created(name, &digest));
    }
    let s = new_session(reg, name).await?;
    let id = uuid::Uuid::new_v4().to_string();
    reg.inner.uploads.insert(id.clone(), s);
    Ok(upload_accepted(StatusCode::ACCEPTED, name, &id, 0))
}

/// Verify a session's bytes against `expected` and commit them as a blob linked into its
/// repository; on a mismatch the bytes are removed and nothing is stored.
async fn finish(reg: &Registry, mut s: Session, expected: &Digest) -> ApiResult<()> {
    let actual = s.digest();
    if &actual != expected {
        s.discard().await;
        return Err(ApiError::new(
            Code::DigestInvalid,
            format!(
                "upload of {} bytes to {} has digest {actual}, not {expected}",
                s.size, s.repo
            ),
        )
        .detail(
            serde_json::json!({ "expected": expected.to_string(), "actual": actual.to_string() }),
        ));
    }
    if let Err(e) = s.sync().await {
        s.discard().await;
        return Err(e);
    }
    let reg2 = reg.clone();
    let (path, digest, size, repo) = (s.path.clone(), expected.clone(), s.size, s.repo.to_string());
    let r = tokio::task::spawn_blocking(move || {
        reg2.committing(|store| {
            if store.has_blob(&digest) {
                let _ = std::fs::remove_file(&path);
            } else {
                store.commit_synced_blob(&path, &digest)?;
            }
            store.with_db(|db| meta::link_blob(db, &repo, &digest, size))
        })
    })
    .await
    .map_err(ApiError::internal)?;
    if r.is_err() {
        s.discard().await;
    }
    r.map_err(ApiError::from)
}

/// `Content-Range: <start>-<end>` of a chunk.
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim();
    let v = v
        .strip_prefix("bytes ")
        .or_else(|| v.strip_prefix("bytes="))
        .unwrap_or(v);
    let (a, b) = v.split_once('-')?;
    let b = b.split('/').next()?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

fn session_unknown(id: &str, name: &RepoName) -> ApiError {
    ApiError::new(
        Code::BlobUploadUnknown,
        format!("upload {id} is not in progress in repository {name}"),
    )
}

/// Check a chunk's `Content-Range` (if any) against the session's offset.
fn check_chunk(headers: &HeaderMap, s: &Session, name: &RepoName, id: &str) -> ApiResult<()> {
    let Some(cr) = headers.get(header::CONTENT_RANGE) else {
        return Ok(());
    };
    let out_of_order = |msg: String| {
        ApiError::new(Code::BlobUploadInvalid, msg)
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::LOCATION, upload_location(name, id))
            .header(header::RANGE, upload_range(s.size))
    };
    let text = cr.to_str().unwrap_or("");
    let Some((start, end)) = parse_content_range(text) else {
        return Err(out_of_order(format!("invalid Content-Range {text:?}")));
    };
    if start != s.size {
        return Err(out_of_order(format!(
            "chunk starts at {start}, but upload {id} has {} bytes",
            s.size
        )));
    }
    let len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = len {
        if len != end - start + 1 {
            return Err(out_of_order(format!(
                "Content-Range {text:?} does not match Content-Length {len}"
            )));
        }
    }
    Ok(())
}

/// The upload session `id` of repository `name`, locked (and refreshed as used now); an unknown
/// id, or one of another repository, is BLOB_UPLOAD_UNKNOWN.
async fn locked_session(
    reg: &Registry,
    name: &RepoName,
    id: &str,
) -> ApiResult<tokio::sync::OwnedMutexGuard<Session>> {
    let s = reg
        .inner
        .uploads
        .get(id)
        .ok_or_else(|| session_unknown(id, name))?
        .lock_owned()
        .await;
    if &s.repo != name {
        return Err(session_unknown(id, name));
    }
    Ok(s)
}

async fn patch_upload(
    reg: &Registry,
    name: &RepoName,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let mut s = locked_session(reg, name, id).await?;
    check_chunk(headers, &s, name, id)?;
    s.append(body).await?;
    // A long PATCH counts as use at its end too, not only at its start (the reaper's clock).
    reg.inner.uploads.get(id);
    Ok(upload_accepted(StatusCode::ACCEPTED, name, id, s.size))
}

async fn put_upload(
    reg: &Registry,
    name: &RepoName,
    id: &str,
    q: &Query,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let mut s = locked_session(reg, name, id).await?;
    let digest = match q.get("digest") {
        Some(d) => parse_digest(d)?,
        None => {
            return Err(ApiError::new(
                Code::DigestInvalid,
                format!("completing upload {id} needs a ?digest= parameter"),
            ))
        }
    };
    check_chunk(headers, &s, name, id)?;
    s.append(body).await?;
    // The session ends here, whatever the outcome of the digest check.
    reg.inner.uploads.remove(id);
    let taken = std::mem::replace(&mut *s, Session::placeholder(name.clone()));
    drop(s);
    finish(reg, taken, &digest).await?;
    Ok(blob_created(name, &digest))
}

async fn upload_status(reg: &Registry, name: &RepoName, id: &str) -> ApiResult<Response> {
    let s = locked_session(reg, name, id).await?;
    Ok(upload_accepted(StatusCode::NO_CONTENT, name, id, s.size))
}

async fn cancel_upload(reg: &Registry, name: &RepoName, id: &str) -> ApiResult<Response> {
    let mut s = locked_session(reg, name, id).await?;
    reg.inner.uploads.remove(id);
    s.discard().await;
    Ok(empty(StatusCode::NO_CONTENT, vec![]))
}

// ---- manifests ----

fn manifest_unknown(name: &RepoName, r: &Reference) -> ApiError {
    ApiError::new(
        Code::ManifestUnknown,
        format!("manifest {r} is not in repository {name}"),
    )
    .detail(serde_json::json!({ "reference": r.to_string() }))
}

fn name_unknown(name: &RepoName) -> ApiError {
    ApiError::new(
        Code::NameUnknown,
        format!("repository {name} does not exist"),
    )
    .detail(serde_json::json!({ "name": name.to_string() }))
}

async fn get_manifest(
    reg: &Registry,
    name: &RepoName,
    r: &Reference,
    head: bool,
) -> ApiResult<Response> {
    let (repo, rr) = (name.to_string(), r.clone());
    let (row, exists) = db(reg, move |db| {
        let row = match &rr {
            Reference::Tag(t) => meta::manifest_by_tag(db, &repo, t)?,
            Reference::Digest(d) => meta::manifest_by_digest(db, &repo, &d.to_string())?,
        };
        Ok((row, meta::repo_exists(db, &repo)?))
    })
    .await?;
    let Some(row) = row else {
        return Err(if exists {
            manifest_unknown(name, r)
        } else {
            name_unknown(name)
        });
    };
    let digest: Digest = row
        .digest
        .parse()
        .map_err(|e| ApiError::internal(format!("stored manifest digest: {e}")))?;
    let len = row.size;
    let body = if head {
        Body::empty()
    } else {
        match tokio::fs::read(reg.store().blob_path(&digest)).await {
            Ok(b) => Body::from(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(manifest_unknown(name, r))
            }
            Err(e) => return Err(ApiError::internal(format!("read manifest {digest}: {e}"))),
        }
    };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, hv(&row.media_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(CONTENT_DIGEST_HEADER, hv(&row.digest));
    Ok(resp)
}

/// The blobs (image manifest) or manifests (index) a manifest names must be in its repository
/// with the sizes it gives.
fn check_named(
    db: &Connection,
    repo: &str,
    r: &Reference,
    kind: Kind,
    wanted: &[(Digest, u64)],
) -> rusqlite::Result<Result<(), ApiError>> {
    let what = if kind == Kind::Image {
        "blob"
    } else {
        "manifest"
    };
    for (d, size) in wanted {
        let have = match kind {
            Kind::Image => meta::blob_size(db, repo, d)?,
            Kind::Index => meta::manifest_by_digest(db, repo, &d.to_string())?.map(|row| row.size),
        };
        match have {
            None => {
                return Ok(Err(ApiError::new(
                    Code::ManifestBlobUnknown,
                    format!("manifest {r} refers to {what} {d}, which is not in repository {repo}"),
                )
                .detail(serde_json::json!({ "digest": d.to_string() }))))
            }
            Some(have) if have != *size => {
                return Ok(Err(ApiError::new(
                    Code::ManifestInvalid,
                    format!("manifest {r} gives {what} {d} size {size}, but it has {have} bytes"),
                )))
            }
            Some(_) => {}
        }
    }
    Ok(Ok(()))
}

pub(crate) async fn put_manifest(
    reg: &Registry,
    name: &RepoName,
    r: &Reference,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let bytes = axum::body::to_bytes(body, MAX_JSON_SIZE as usize)
        .await
        .map_err(|_| {
            ApiError::new(
                Code::SizeInvalid,
                format!(
                    "manifest {r} for {name} is larger than {MAX_JSON_SIZE} bytes (or was cut off)"
                ),
            )
            .status(StatusCode::PAYLOAD_TOO_LARGE)
        })?;
    let digest = Digest::of(&bytes);
    if let Reference::Digest(d) = r {
        if d != &digest {
            return Err(ApiError::new(
                Code::DigestInvalid,
                format!("manifest pushed as {d} has digest {digest}"),
            )
            .detail(
                serde_json::json!({ "expected": d.to_string(), "actual": digest.to_string() }),
            ));
        }
    }
    let invalid = |msg: String| ApiError::new(Code::ManifestInvalid, msg);
    let m: WireManifest = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("manifest {r} for {name} is not valid JSON: {e}")))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let (media_type, kind) = manifest_kind(content_type, &m)?;
    let desc_digest = |d: &crate::wire::WireDescriptor| {
        d.digest.parse::<Digest>().map_err(|_| {
            invalid(format!(
                "descriptor digest {:?} is not sha256:<64 hex digits>",
                d.digest
            ))
        })
    };
    let subject = m.subject.as_ref().map(desc_digest).transpose()?;
    // Every referenced blob (image manifest) or manifest (index) must be in this repository.
    let mut wanted: Vec<(Digest, u64)> = Vec::new();
    match kind {
        Kind::Image => {
            for d in m.config.iter().chain(m.layers.iter().flatten()) {
                if d.urls.is_empty() {
                    wanted.push((desc_digest(d)?, d.size));
                }
            }
        }
        Kind::Index => {
            for d in m.manifests.iter().flatten() {
                wanted.push((desc_digest(d)?, d.size));
            }
        }
    }
    let artifact_type = m.artifact_type.clone().or_else(|| match kind {
        Kind::Image => m.config.as_ref().map(|c| c.media_type.clone()),
        Kind::Index => None,
    });
    let annotations = (!m.annotations.is_empty())
        .then(|| serde_json::to_string(&m.annotations).unwrap_or_default());
    let tag = match r {
        Reference::Tag(t) => Some(t.clone()),
        Reference::Digest(_) => None,
    };
    let reg2 = reg.clone();
    let (repo, d, mt, subj, rr) = (
        name.to_string(),
        digest.clone(),
        media_type,
        subject.clone(),
        r.clone(),
    );
    tokio::task::spawn_blocking(move || {
        reg2.committing(|store| {
            // Checked under the store lock: no garbage collection can take a named blob
            // between this check and the manifest's row (which claims them).
            if let Err(e) = store.with_db(|db| check_named(db, &repo, &rr, kind, &wanted))? {
                return Ok(Err(e));
            }
            // An IMMUTABLE repository (ECR) keeps a tag on its manifest: checked under the
            // commit lock, so two pushes of one tag cannot both pass.
            if let Some(t) = tag.as_deref() {
                let moved = store.with_db(|db| meta::immutable_tag_moves(db, &repo, t, &d))?;
                if moved {
                    return Ok(Err(ApiError::new(
                        Code::TagInvalid,
                        format!(
                            "The image tag '{t}' already exists in the '{repo}' repository and cannot be overwritten because the repository is immutable."
                        ),
                    )));
                }
            }
            store.write_blob(&d, &bytes)?;
            store.with_db(|db| {
                meta::put_manifest(
                    db,
                    &NewManifest {
                        repo: &repo,
                        digest: &d,
                        media_type: &mt,
                        size: bytes.len() as u64,
                        artifact_type: artifact_type.as_deref(),
                        subject: subj.as_ref(),
                        annotations,
                        tag: tag.as_deref(),
                    },
                )?;
                if kind == Kind::Image {
                    meta::claim_blobs(db, &repo, &d, wanted.iter().map(|(d, _)| d))?;
                }
                Ok(())
            })
            .map(Ok)
        })
    })
    .await
    .map_err(ApiError::internal)???;
    if kind == Kind::Image {
        let repo = name.to_string();
        let scan = db(reg, move |db| {
            use rusqlite::OptionalExtension;
            db.query_row(
                "SELECT scan_on_push FROM reg_ecr_repos WHERE name = ?1",
                [repo],
                |r| r.get::<_, i64>(0),
            )
            .optional()
        })
        .await?;
        if scan == Some(1) {
            reg.start_scan(&name.to_string(), &digest);
        }
    }
    let mut hs = vec![
        ("location", hv(&format!("/v2/{name}/manifests/{digest}"))),
        (CONTENT_DIGEST_HEADER, hv(&digest.to_string())),
    ];
    if let Some(s) = subject {
        hs.push((OCI_SUBJECT_HEADER, hv(&s.to_string())));
    }
    Ok(empty(StatusCode::CREATED, hs))
}

async fn delete_manifest(reg: &Registry, name: &RepoName, r: &Reference) -> ApiResult<Response> {
    let (repo, rr) = (name.to_string(), r.clone());
    let found = db(reg, move |db| match &rr {
        Reference::Digest(d) => meta::delete_manifest(db, &repo, d),
        Reference::Tag(t) => meta::delete_tag(db, &repo, t),
    })
    .await?;
    if !found {
        return Err(manifest_unknown(name, r));
    }
    reg.request_gc();
    Ok(empty(StatusCode::ACCEPTED, vec![]))
}

// ---- listing ----

/// `n` of a paginated list: absent means everything.
fn page_size(q: &Query) -> ApiResult<Option<i64>> {
    match q.get("n") {
        None => Ok(None),
        Some(n) => n.parse::<u32>().map(|n| Some(i64::from(n))).map_err(|_| {
            ApiError::new(
                Code::PaginationNumberInvalid,
                format!("invalid page size n={n:?}"),
            )
            .detail(serde_json::json!({ "n": n }))
        }),
    }
}

/// Take one more than asked for to know whether there is a next page; returns the page and
/// the `Link` header for the next one.
fn paginate(
    mut items: Vec<String>,
    n: Option<i64>,
    path: &str,
) -> (Vec<String>, Option<HeaderValue>) {
    let Some(n) = n else {
        return (items, None);
    };
    if items.len() as i64 <= n {
        return (items, None);
    }
    items.truncate(n as usize);
    let link = items.last().map(|last| {
        let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
        hv(&format!("<{path}?n={n}&last={last}>; rel=\"next\""))
    });
    (items, link)
}

async fn tags_list(reg: &Registry, name: &RepoName, q: &Query) -> ApiResult<Response> {
    let n = page_size(q)?;
    let last = q.get("last").unwrap_or("").to_string();
    let repo = name.to_string();
    let limit = n.map_or(-1, |n| n + 1);
    let tags = db(reg, move |db| {
        if !meta::repo_exists(db, &repo)? {
            return Ok(None);
        }
        meta::tags(db, &repo, &last, limit).map(Some)
    })
    .await?
    .ok_or_else(|| name_unknown(name))?;
    let (tags, link) = paginate(tags, n, &format!("/v2/{name}/tags/list"));
    let body = serde_json::json!({ "name": name.to_string(), "tags": tags }).to_string();
    let mut resp = json(StatusCode::OK, body, "application/json", false);
    if let Some(l) = link {
        resp.headers_mut().insert(header::LINK, l);
    }
    Ok(resp)
}

async fn catalog(reg: &Registry, q: &Query) -> ApiResult<Response> {
    let n = page_size(q)?;
    let last = q.get("last").unwrap_or("").to_string();
    let limit = n.map_or(-1, |n| n + 1);
    let repos = db(reg, move |db| meta::repos(db, &last, limit)).await?;
    let (repos, link) = paginate(repos, n, "/v2/_catalog");
    let body = serde_json::json!({ "repositories": repos }).to_string();
    let mut resp = json(StatusCode::OK, body, "application/json", false);
    if let Some(l) = link {
        resp.headers_mut().insert(header::LINK, l);
    }
    Ok(resp)
}

async fn referrers(
    reg: &Registry,
    name: &RepoName,
    subject: &Digest,
    q: &Query,
) -> ApiResult<Response> {
    let filter = q.get("artifactType").map(str::to_string);
    let (repo, s) = (name.to_string(), subject.clone());
    let rows = db(reg, move |db| meta::referrers(db, &repo, &s)).await?;
    let manifests: Vec<serde_json::Value> = rows
        .into_iter()
        .filter(|row| filter.is_none() || row.artifact_type == filter)
        .map(|row| {
            let mut d = serde_json::json!({
                "mediaType": row.media_type,
                "digest": row.digest,
                "size": row.size,
            });
            if let Some(a) = row.artifact_type {
                d["artifactType"] = a.into();
            }
            if let Some(a) = row
                .annotations
                .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
            {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    })
    .to_string();
    let mut resp = json(StatusCode::OK, body, OCI_INDEX, false);
    if filter.is_some() {
        resp.headers_mut().insert(
            OCI_FILTERS_APPLIED_HEADER,
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeReq::Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeReq::Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeReq::Part(90, 99));
        assert_eq!(parse_range("bytes=50-500", 100), RangeReq::Part(50, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeReq::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeReq::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeReq::Whole);
        assert_eq!(parse_range("items=0-1", 100), RangeReq::Whole);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-9"), Some((0, 9)));
        assert_eq!(parse_content_range("bytes 10-19/*"), Some((10, 19)));
        assert_eq!(parse_content_range("9-0"), None);
        assert_eq!(parse_content_range("x"), None);
    }
}
