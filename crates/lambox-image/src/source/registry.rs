//! Pulling from a registry through the OCI Distribution API.
//!
//! [`RegistrySource`] speaks the distribution API with [`oci_client`] (token dance, blob
//! streams) plus one plain `GET` for manifests, so that the `Content-Type` the registry claimed
//! reaches the importer (oci-client's raw manifest call drops it).
//!
//! * **Transport**: HTTPS, except plain HTTP for loopback hosts or when
//!   [`RegistryOptions::plain_http`] is set. TLS is rustls with the platform verifier, which on
//!   Linux loads the system roots (`/etc/ssl/certs/ca-certificates.crt` and the other usual
//!   places) and honours `SSL_CERT_FILE` / `SSL_CERT_DIR` when they are set, so no extra roots
//!   are loaded here.
//! * **Credentials**: [`RegistryOptions::username`]/[`RegistryOptions::password`] if given, else
//!   the `auths` map of one auth file: [`RegistryOptions::auth_file`], else
//!   `$REGISTRY_AUTH_FILE`, else `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
//!   Credential helpers (`credsStore`, `credHelpers`) and `identitytoken` entries are not
//!   supported; such registries are accessed anonymously.
//! * **Async bridge**: the [`BlobSource`] trait is synchronous; each source owns a small tokio
//!   runtime. Requests run as tasks on it, and blob readers bridge the response stream with
//!   [`SyncIoBridge`], so readers must be used from plain threads (or `spawn_blocking`), never
//!   from inside an async task.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::{BlobSource, RawManifest, RegistryOptions, RegistryRef};
use crate::{Digest, Error, Result};

/// The manifest media types we ask for; the importer decides what to do with each.
const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Manifests larger than this are refused (containerd uses the same limit).
const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;
/// How much of an error response body we read to explain a failure.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Longest reason fragment taken from a server or error chain.
const MAX_REASON: usize = 300;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle time allowed between two reads of a response (blob streams have no overall timeout).
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Overall timeout for a manifest request (they are small).
const MANIFEST_TIMEOUT: Duration = Duration::from_secs(120);

const USER_AGENT: &str = concat!("lambox/", env!("CARGO_PKG_VERSION"));

/// Owns the tokio runtime; shuts it down without blocking (and so without panicking, even when
/// the last owner is dropped inside some other async context).
#[derive(Debug)]
struct RuntimeOwner(Option<tokio::runtime::Runtime>);

impl RuntimeOwner {
    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(|rt| rt.handle())
    }
}

impl Drop for RuntimeOwner {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A registry image, reached with oci-client.
pub struct RegistrySource {
    reference: RegistryRef,
    /// `http` or `https`.
    scheme: &'static str,
    auth: RegistryAuth,
    client: oci_client::Client,
    /// For manifest GETs (to see the `Content-Type`).
    http: reqwest::Client,
    /// Shared with every open blob reader, so a reader outliving the source still works.
    runtime: Arc<RuntimeOwner>,
}

impl std::fmt::Debug for RegistrySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySource")
            .field("reference", &self.reference)
            .field("scheme", &self.scheme)
            // RegistryAuth's Debug hides the password.
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl RegistrySource {
    pub fn new(reference: RegistryRef, options: &RegistryOptions) -> Result<Self> {
        validate_reference(&reference)?;
        let registry_err = |reason: String| Error::Registry {
            registry: reference.registry.clone(),
            reason,
        };

        let plain = reference.is_loopback() || options.plain_http;
        let scheme = if plain { "http" } else { "https" };
        let auth = resolve_auth(
            &reference.registry,
            &reference.repository,
            options,
            &|name| std::env::var_os(name),
        )?;
        if plain && !reference.is_loopback() && matches!(auth, RegistryAuth::Basic(..)) {
            tracing::warn!(
                registry = %reference.registry,
                "sending credentials over plain HTTP"
            );
        }

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lambox-registry")
            .enable_all()
            .build()
            .map_err(|e| {
                registry_err(format!(
                    "cannot start the network runtime: {}",
                    one_line(&e)
                ))
            })?;

        let config = ClientConfig {
            protocol: if plain {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        };
        let client = oci_client::Client::try_from(config).map_err(|e| {
            registry_err(format!("cannot set up the HTTP client: {}", one_line(&e)))
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .timeout(MANIFEST_TIMEOUT)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| {
                registry_err(format!("cannot set up the HTTP client: {}", one_line(&e)))
            })?;

        Ok(RegistrySource {
            reference,
            scheme,
            auth,
            client,
            http,
            runtime: Arc::new(RuntimeOwner(Some(runtime))),
        })
    }

    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Registry {
            registry: self.reference.registry.clone(),
            reason: reason.into(),
        }
    }

    /// An oci-client reference for this repository, by digest or tag (`latest` by default).
    fn oci_reference(&self, digest: Option<&Digest>) -> Reference {
        let r = &self.reference;
        match digest {
            Some(d) => {
                Reference::with_digest(r.registry.clone(), r.repository.clone(), d.to_string())
            }
            None => Reference::with_tag(
                r.registry.clone(),
                r.repository.clone(),
                r.tag.clone().unwrap_or_else(|| "latest".to_string()),
            ),
        }
    }

    /// Run `fut` as a task on our runtime and wait for it. Works from any thread (it never
    /// calls `block_on`), and several threads may wait at once.
    fn run<T, F>(&self, fut: F) -> Result<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let handle = self
            .runtime
            .handle()
            .ok_or_else(|| self.err("the network runtime has shut down"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        handle.spawn(async move {
            // The receiver only goes away if the caller is gone; nothing to do then.
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| self.err("the request was cancelled (the network runtime shut down)"))
    }

    fn fetch_manifest(&self, digest: Option<&Digest>) -> Result<RawManifest> {
        let r = &self.reference;
        let oci_ref = self.oci_reference(digest);
        let object = match digest {
            Some(d) => format!("manifest {}@{d}", r.repository),
            None => format!(
                "manifest {}:{}",
                r.repository,
                r.tag.as_deref().unwrap_or("latest")
            ),
        };
        let url = format!(
            "{}://{}/v2/{}/manifests/{}",
            self.scheme,
            oci_ref.resolve_registry(),
            oci_ref.repository(),
            digest
                .map(|d| d.to_string())
                .unwrap_or_else(|| oci_ref.tag().unwrap_or("latest").to_string()),
        );
        tracing::debug!(%url, "fetching manifest");
        let fetch = ManifestFetch {
            client: self.client.clone(),
            http: self.http.clone(),
            auth: self.auth.clone(),
            reference: oci_ref,
            url,
            object,
            registry: r.registry.clone(),
        };
        self.run(fetch.run())?.map_err(|reason| self.err(reason))
    }
}

/// Everything one manifest request needs, owned so it can run as a task.
struct ManifestFetch {
    client: oci_client::Client,
    http: reqwest::Client,
    auth: RegistryAuth,
    reference: Reference,
    url: String,
    /// `manifest REPO:TAG` or `manifest REPO@DIGEST`, for messages.
    object: String,
    registry: String,
}

impl ManifestFetch {
    /// The manifest bytes and the media type the registry claimed, or a one-line reason.
    async fn run(self) -> std::result::Result<RawManifest, String> {
        let object = &self.object;
        // Resolve the authorization: oci-client does the `/v2/` challenge and, for Bearer
        // challenges, the token request (sending Basic credentials if we have them). It also
        // remembers the credentials for the blob requests that follow.
        let token = self
            .client
            .auth(&self.reference, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| describe_oci_error(&e, object, &self.registry))?;

        let mut request = self
            .http
            .get(&self.url)
            .header(reqwest::header::ACCEPT, MANIFEST_MEDIA_TYPES.join(", "));
        request = match (token, &self.auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, pass)) => request.basic_auth(user, Some(pass)),
            (None, RegistryAuth::Bearer(token)) => request.bearer_auth(token),
            (None, RegistryAuth::Anonymous) => request,
        };
        let mut response = request
            .send()
            .await
            .map_err(|e| format!("{object}: {}", transport_reason(&e)))?;

        let status = response.status();
        if !status.is_success() {
            let body = read_limited(&mut response, MAX_ERROR_BODY)
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            return Err(status_reason(
                status.as_u16(),
                &body,
                object,
                &self.registry,
            ));
        }

        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(claimed_media_type);
        if let Some(len) = response.content_length() {
            if len > MAX_MANIFEST_SIZE as u64 {
                return Err(format!(
                    "{object} is {len} bytes, more than the limit of {MAX_MANIFEST_SIZE}"
                ));
            }
        }
        let bytes = match read_limited(&mut response, MAX_MANIFEST_SIZE).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Err(format!(
                    "{object} is larger than the limit of {MAX_MANIFEST_SIZE} bytes"
                ))
            }
            Err(e) => return Err(format!("{object}: {}", transport_reason(&e))),
        };
        Ok(RawManifest { bytes, media_type })
    }
}

/// Read a response body, up to `limit` bytes; `Ok(None)` if it is longer.
async fn read_limited(
    response: &mut reqwest::Response,
    limit: usize,
) -> reqwest::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if out.len() + chunk.len() > limit {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

/// The media type from a `Content-Type` header, without parameters. Generic types that do not
/// claim any manifest type at all are dropped (the importer then looks at the document).
fn claimed_media_type(header: &str) -> Option<String> {
    let essence = header.split(';').next().unwrap_or("").trim();
    if essence.is_empty()
        || matches!(
            essence.to_ascii_lowercase().as_str(),
            "application/json" | "text/plain" | "application/octet-stream"
        )
    {
        None
    } else {
        Some(essence.to_string())
    }
}

impl BlobSource for RegistrySource {
    fn root_manifest(&self) -> Result<RawManifest> {
        self.fetch_manifest(self.reference.digest.as_ref())
    }

    fn pinned_digest(&self) -> Option<&Digest> {
        self.reference.digest.as_ref()
    }

    fn manifest(&self, digest: &Digest) -> Result<RawManifest> {
        self.fetch_manifest(Some(digest))
    }

    fn open_blob(&self, digest: &Digest, size: u64) -> Result<Box<dyn Read + Send>> {
        let object = format!("blob {}@{digest}", self.reference.repository);
        let client = self.client.clone();
        let auth = self.auth.clone();
        let reference = self.oci_reference(Some(digest));
        let blob_digest = digest.to_string();
        let registry = self.reference.registry.clone();
        let task_object = object.clone();
        let stream = self.run(async move {
            // Normally a manifest fetch has stored these already; make sure anyway.
            client
                .store_auth_if_needed(reference.resolve_registry(), &auth)
                .await;
            client
                .pull_blob_stream(&reference, blob_digest.as_str())
                .await
                .map_err(|e| describe_oci_error(&e, &task_object, &registry))
        })?;
        let stream = stream.map_err(|reason| self.err(reason))?;
        if let Some(len) = stream.content_length {
            if len != size {
                return Err(Error::SizeMismatch {
                    object,
                    expected: size,
                    actual: len,
                });
            }
        }
        let handle = self
            .runtime
            .handle()
            .ok_or_else(|| self.err("the network runtime has shut down"))?
            .clone();
        let reader = SyncIoBridge::new_with_handle(StreamReader::new(stream.stream), handle);
        Ok(Box::new(BlobReader {
            inner: reader,
            registry: self.reference.registry.clone(),
            _runtime: Arc::clone(&self.runtime),
        }))
    }
}

/// A streaming blob: reads block the calling thread on the source's runtime.
struct BlobReader<R> {
    // Declared before `_runtime` so the stream is dropped while the runtime still runs.
    inner: R,
    registry: String,
    _runtime: Arc<RuntimeOwner>,
}

impl<R: Read> Read for BlobReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("registry {}: {}", self.registry, one_line(&e)),
            )
        })
    }
}

/// Refuse references that could not have come from the parser (the fields are public).
fn validate_reference(r: &RegistryRef) -> Result<()> {
    let bad = |reason: &str| Error::InvalidReference {
        reference: r.to_string(),
        reason: reason.to_string(),
    };
    let host_ok = !r.registry.is_empty()
        && r.registry.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        });
    if !host_ok {
        return Err(bad("invalid registry host"));
    }
    if !super::valid_repository(&r.repository) {
        return Err(bad("invalid repository name"));
    }
    if let Some(t) = &r.tag {
        if !super::valid_tag(t) {
            return Err(bad("invalid tag"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Error messages

/// An error and its sources on one line: whitespace squashed, repeated fragments dropped,
/// clipped to a sane length.
fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = squash(&e.to_string());
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    clip(&parts.join(": "), 3 * MAX_REASON)
}

/// Collapse all whitespace (newlines included) to single spaces.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max` characters, with an ellipsis if cut.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A transport-level failure (connection, TLS, timeout) as one line, with a hint where one
/// helps.
fn transport_reason(e: &reqwest::Error) -> String {
    let mut text = one_line(e);
    if e.is_connect() {
        // "error sending request for url (…): client error (Connect): tcp connect error: …"
        // says little beyond its last parts; name the origin instead.
        let detail: Vec<&str> = text
            .split(": ")
            .filter(|p| !p.starts_with("error sending request") && *p != "client error (Connect)")
            .collect();
        let origin = e
            .url()
            .map(|u| format!("{}://{}", u.scheme(), u.authority()))
            .unwrap_or_default();
        text = format!("cannot connect to {origin}: {}", detail.join(": "));
    }
    let lower = text.to_ascii_lowercase();
    let hint = if e.is_timeout() {
        " (timed out)"
    } else if lower.contains("invalidcontenttype") || lower.contains("corrupt message") {
        " (the registry may speak plain HTTP; enable plain HTTP for it)"
    } else if lower.contains("certificate") {
        " (TLS certificate not trusted; add its CA to the system bundle or SSL_CERT_FILE)"
    } else {
        ""
    };
    format!("{text}{hint}")
}

/// The `errors` of an OCI error body, leniently: unknown codes are fine.
#[derive(serde::Deserialize)]
struct ErrorEnvelope {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(serde::Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// `code: message; …` from an error body, or a clipped first line of a non-JSON body.
fn body_reason(body: &[u8]) -> Option<String> {
    if let Ok(env) = serde_json::from_slice::<ErrorEnvelope>(body) {
        let msgs: Vec<String> = env
            .errors
            .iter()
            .filter_map(|e| match (&e.code, &e.message) {
                (_, Some(m)) if !m.trim().is_empty() => Some(squash(m)),
                (Some(c), _) => Some(c.to_ascii_lowercase().replace('_', " ")),
                _ => None,
            })
            .collect();
        return (!msgs.is_empty()).then(|| clip(&msgs.join("; "), MAX_REASON));
    }
    let text = squash(&String::from_utf8_lossy(body));
    (!text.is_empty()).then(|| clip(&text, MAX_REASON))
}

/// A non-success HTTP status for `object` as a one-line reason.
fn status_reason(status: u16, body: &[u8], object: &str, registry: &str) -> String {
    let detail = body_reason(body);
    let generic = |d: &str| d == "manifest unknown" || d == "blob unknown to registry";
    match status {
        404 => match detail {
            Some(d) if !generic(&d) => format!("{object} not found ({d})"),
            _ => format!("{object} not found"),
        },
        401 => format!("{object}: unauthorized (check credentials for {registry})"),
        403 => format!("{object}: access denied (check credentials for {registry})"),
        429 => format!("{object}: too many requests (rate limited by the registry)"),
        _ => match detail {
            Some(d) => format!("{object}: HTTP {status}: {d}"),
            None => format!("{object}: HTTP {status}"),
        },
    }
}

/// An oci-client error for `object` as a one-line reason.
fn describe_oci_error(e: &OciDistributionError, object: &str, registry: &str) -> String {
    match e {
        OciDistributionError::UnauthorizedError { .. } => status_reason(401, b"", object, registry),
        OciDistributionError::AuthenticationFailure(reason) => {
            let reason = body_reason(reason.as_bytes()).unwrap_or_default();
            format!(
                "{object}: authentication failed (check credentials for {registry}){}",
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                }
            )
        }
        OciDistributionError::ServerError { code, message, .. } => {
            status_reason(*code, message.as_bytes(), object, registry)
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            use oci_client::errors::OciErrorCode as C;
            let codes: Vec<&C> = envelope.errors.iter().map(|e| &e.code).collect();
            let status = if codes.iter().any(|c| {
                matches!(
                    c,
                    C::BlobUnknown | C::ManifestUnknown | C::NameUnknown | C::NotFound
                )
            }) {
                404
            } else if codes.iter().any(|c| matches!(c, C::Unauthorized)) {
                401
            } else if codes.iter().any(|c| matches!(c, C::Denied)) {
                403
            } else if codes.iter().any(|c| matches!(c, C::Toomanyrequests)) {
                429
            } else {
                400
            };
            let messages: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| squash(&e.message))
                .filter(|m| !m.is_empty())
                .collect();
            let body = serde_json::json!({
                "errors": messages.iter().map(|m| serde_json::json!({"message": m})).collect::<Vec<_>>()
            });
            status_reason(status, body.to_string().as_bytes(), object, registry)
        }
        OciDistributionError::RequestError(re) => format!("{object}: {}", transport_reason(re)),
        other => format!("{object}: {}", one_line(other)),
    }
}

// ---------------------------------------------------------------------------------------------
// Credentials

/// The credentials to use for `registry`/`repository`: the options' username and password,
/// else a matching entry of the auth file, else anonymous.
fn resolve_auth(
    registry: &str,
    repository: &str,
    options: &RegistryOptions,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<RegistryAuth> {
    match (&options.username, &options.password) {
        (Some(user), Some(pass)) => return Ok(RegistryAuth::Basic(user.clone(), pass.clone())),
        (Some(_), None) => {
            return Err(Error::Registry {
                registry: registry.to_string(),
                reason: "a username was given without a password".into(),
            })
        }
        (None, Some(_)) => {
            return Err(Error::Registry {
                registry: registry.to_string(),
                reason: "a password was given without a username".into(),
            })
        }
        (None, None) => {}
    }
    let Some((path, explicit)) = auth_file_path(options, env) else {
        return Ok(RegistryAuth::Anonymous);
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        // Only a file the user named explicitly must exist.
        Err(e) if e.kind() == io::ErrorKind::NotFound && !explicit => {
            tracing::debug!(path = %path.display(), "no auth file; pulling anonymously");
            return Ok(RegistryAuth::Anonymous);
        }
        Err(e) => return Err(Error::io(format!("auth file {}", path.display()), e)),
    };
    match credentials_from_auth_file(&path, &bytes, registry, repository)? {
        Some((user, pass)) => {
            tracing::debug!(path = %path.display(), %registry, "using credentials from auth file");
            Ok(RegistryAuth::Basic(user, pass))
        }
        None => Ok(RegistryAuth::Anonymous),
    }
}

/// Which auth file to read, and whether the user named it explicitly.
fn auth_file_path(
    options: &RegistryOptions,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Option<(PathBuf, bool)> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(p) = &options.auth_file {
        return Some((p.clone(), true));
    }
    if let Some(p) = set("REGISTRY_AUTH_FILE") {
        return Some((PathBuf::from(p), false));
    }
    if let Some(dir) = set("DOCKER_CONFIG") {
        return Some((PathBuf::from(dir).join("config.json"), false));
    }
    set("HOME").map(|home| {
        (
            PathBuf::from(home).join(".docker").join("config.json"),
            false,
        )
    })
}

#[derive(serde::Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl AuthEntry {
    fn has_credentials(&self) -> bool {
        self.auth.as_deref().is_some_and(|a| !a.trim().is_empty())
            || self.username.as_deref().is_some_and(|u| !u.is_empty())
    }
}

/// The host names that mean the same registry as `registry` (Docker Hub has several).
fn registry_aliases(registry: &str) -> Vec<String> {
    let lower = registry.to_ascii_lowercase();
    match lower.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => vec![
            "docker.io".into(),
            "index.docker.io".into(),
            "registry-1.docker.io".into(),
        ],
        _ => vec![lower],
    }
}

/// Split an `auths` key into host and optional repository path: accepts `host`,
/// `host/namespace/repo`, and docker's `https://host/v1/` forms.
fn parse_auth_key(key: &str) -> (String, String) {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let key = key.trim_end_matches('/');
    let key = key
        .strip_suffix("/v1")
        .or_else(|| key.strip_suffix("/v2"))
        .unwrap_or(key)
        .trim_end_matches('/');
    match key.split_once('/') {
        Some((host, path)) => (host.to_ascii_lowercase(), path.to_string()),
        None => (key.to_ascii_lowercase(), String::new()),
    }
}

/// The `(username, password)` for `registry`/`repository` in an auth file's bytes, if any.
/// The most specific key wins (a `host/namespace` key over a bare `host`).
fn credentials_from_auth_file(
    path: &Path,
    bytes: &[u8],
    registry: &str,
    repository: &str,
) -> Result<Option<(String, String)>> {
    let object = || format!("auth file {}", path.display());
    let file: AuthFile =
        serde_json::from_slice(bytes).map_err(|e| Error::malformed(object(), e))?;
    let aliases = registry_aliases(registry);

    let mut best: Option<(usize, &String, &AuthEntry)> = None;
    for (key, entry) in &file.auths {
        if !entry.has_credentials() {
            continue;
        }
        let (host, path_part) = parse_auth_key(key);
        if !aliases.contains(&host) {
            continue;
        }
        let specificity = if path_part.is_empty() {
            0
        } else if repository == path_part
            || repository
                .strip_prefix(path_part.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        {
            path_part.len()
        } else {
            continue;
        };
        if best.is_none_or(|(s, _, _)| specificity > s) {
            best = Some((specificity, key, entry));
        }
    }
    let Some((_, key, entry)) = best else {
        return Ok(None);
    };

    if let Some(auth) = entry
        .auth
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        let engine = &base64::engine::general_purpose::STANDARD;
        let decoded = engine
            .decode(auth)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(auth))
            .map_err(|_| {
                Error::malformed(
                    object(),
                    format!("the \"auth\" of {key:?} is not valid base64"),
                )
            })?;
        let text = String::from_utf8(decoded).map_err(|_| {
            Error::malformed(object(), format!("the \"auth\" of {key:?} is not UTF-8"))
        })?;
        let (user, pass) = text.split_once(':').ok_or_else(|| {
            Error::malformed(
                object(),
                format!("the \"auth\" of {key:?} is not base64 of \"user:password\""),
            )
        })?;
        return Ok(Some((user.to_string(), pass.to_string())));
    }
    match &entry.username {
        Some(user) => Ok(Some((
            user.clone(),
            entry.password.clone().unwrap_or_default(),
        ))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn creds(json: &str, registry: &str, repo: &str) -> Result<Option<(String, String)>> {
        credentials_from_auth_file(Path::new("/x/auth.json"), json.as_bytes(), registry, repo)
    }

    fn pair(u: &str, p: &str) -> Option<(String, String)> {
        Some((u.to_string(), p.to_string()))
    }

    #[test]
    fn auth_file_matches_plain_host() {
        let json = format!(
            r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{}"}}, "other.io": {{"auth": "{}"}}}}}}"#,
            b64("alice:pa:ss"),
            b64("bob:x")
        );
        assert_eq!(
            creds(&json, "127.0.0.1:5000", "fn/hello").expect("ok"),
            pair("alice", "pa:ss")
        );
        assert_eq!(creds(&json, "other.io", "a").expect("ok"), pair("bob", "x"));
        assert_eq!(
            creds(&json, "127.0.0.1:5001", "fn/hello").expect("ok"),
            None
        );
    }

    #[test]
    fn auth_file_accepts_docker_style_keys() {
        let json = format!(
            r#"{{"auths": {{"https://registry.example.com/v1/": {{"auth": "{}"}},
                "http://plain.example.com": {{"username": "u", "password": "p"}},
                "https://index.docker.io/v1/": {{"auth": "{}"}}}}}}"#,
            b64("alice:secret"),
            b64("hub:hubpass"),
        );
        assert_eq!(
            creds(&json, "registry.example.com", "r").expect("ok"),
            pair("alice", "secret")
        );
        assert_eq!(
            creds(&json, "plain.example.com", "r").expect("ok"),
            pair("u", "p")
        );
        assert_eq!(
            creds(&json, "docker.io", "library/alpine").expect("ok"),
            pair("hub", "hubpass")
        );
        assert_eq!(
            creds(&json, "Registry.Example.com", "r").expect("ok"),
            pair("alice", "secret")
        );
    }

    #[test]
    fn auth_file_prefers_the_most_specific_key() {
        let json = format!(
            r#"{{"auths": {{"quay.io": {{"auth": "{}"}}, "quay.io/team": {{"auth": "{}"}},
                "quay.io/team/app": {{"auth": "{}"}}}}}}"#,
            b64("general:1"),
            b64("team:2"),
            b64("app:3")
        );
        assert_eq!(
            creds(&json, "quay.io", "team/app").expect("ok"),
            pair("app", "3")
        );
        assert_eq!(
            creds(&json, "quay.io", "team/other").expect("ok"),
            pair("team", "2")
        );
        assert_eq!(
            creds(&json, "quay.io", "teamx/app").expect("ok"),
            pair("general", "1")
        );
    }

    #[test]
    fn auth_file_without_usable_entries_is_anonymous() {
        // credsStore-style placeholder entries and files without `auths`.
        assert_eq!(
            creds(r#"{"auths": {"r.io": {}}}"#, "r.io", "a").expect("ok"),
            None
        );
        assert_eq!(
            creds(r#"{"credsStore": "desktop"}"#, "r.io", "a").expect("ok"),
            None
        );
        assert_eq!(
            creds(r#"{"auths": {"r.io": {"auth": ""}}}"#, "r.io", "a").expect("ok"),
            None
        );
    }

    #[test]
    fn malformed_auth_files_name_the_file() {
        for bad in [
            "{not json",
            r#"{"auths": []}"#,
            r#"{"auths": {"r.io": {"auth": "!!!not base64!!!"}}}"#,
            &format!(
                r#"{{"auths": {{"r.io": {{"auth": "{}"}}}}}}"#,
                b64("nocolon")
            ),
        ] {
            let err = creds(bad, "r.io", "a").expect_err(bad);
            let msg = err.to_string();
            assert!(msg.contains("/x/auth.json"), "{msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
        // A broken entry for another registry does not matter.
        let json = r#"{"auths": {"other.io": {"auth": "!!!"}, "r.io": {"username": "u", "password": "p"}}}"#;
        assert_eq!(creds(json, "r.io", "a").expect("ok"), pair("u", "p"));
    }

    #[test]
    fn auth_file_location_precedence() {
        let env_of = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let all: &'static [(&str, &str)] = &[
            ("REGISTRY_AUTH_FILE", "/ra.json"),
            ("DOCKER_CONFIG", "/dc"),
            ("HOME", "/home/u"),
        ];
        let explicit = RegistryOptions {
            auth_file: Some("/explicit.json".into()),
            ..Default::default()
        };
        assert_eq!(
            auth_file_path(&explicit, &env_of(all)),
            Some((PathBuf::from("/explicit.json"), true))
        );
        let none = RegistryOptions::default();
        assert_eq!(
            auth_file_path(&none, &env_of(all)),
            Some((PathBuf::from("/ra.json"), false))
        );
        assert_eq!(
            auth_file_path(&none, &env_of(&[("DOCKER_CONFIG", "/dc"), ("HOME", "/h")])),
            Some((PathBuf::from("/dc/config.json"), false))
        );
        assert_eq!(
            auth_file_path(
                &none,
                &env_of(&[("REGISTRY_AUTH_FILE", ""), ("HOME", "/h")])
            ),
            Some((PathBuf::from("/h/.docker/config.json"), false))
        );
        assert_eq!(auth_file_path(&none, &env_of(&[])), None);
    }

    #[test]
    fn resolve_auth_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("auth.json");
        std::fs::write(
            &file,
            format!(
                r#"{{"auths": {{"r.io": {{"auth": "{}"}}}}}}"#,
                b64("file:user")
            ),
        )
        .expect("write");
        let no_env = |_: &str| None;

        // Explicit username/password win over the file.
        let opts = RegistryOptions {
            username: Some("cli".into()),
            password: Some("pw".into()),
            auth_file: Some(file.clone()),
            ..Default::default()
        };
        assert!(matches!(
            resolve_auth("r.io", "a", &opts, &no_env).expect("ok"),
            RegistryAuth::Basic(u, p) if u == "cli" && p == "pw"
        ));
        let half = RegistryOptions {
            username: Some("cli".into()),
            ..Default::default()
        };
        assert!(resolve_auth("r.io", "a", &half, &no_env).is_err());

        let opts = RegistryOptions {
            auth_file: Some(file.clone()),
            ..Default::default()
        };
        assert!(matches!(
            resolve_auth("r.io", "a", &opts, &no_env).expect("ok"),
            RegistryAuth::Basic(u, p) if u == "file" && p == "user"
        ));
        assert!(matches!(
            resolve_auth("s.io", "a", &opts, &no_env).expect("ok"),
            RegistryAuth::Anonymous
        ));

        // A missing default file is anonymous; a missing explicit file is an error.
        let home = dir.path().to_path_buf();
        let env = move |name: &str| (name == "HOME").then(|| home.clone().into_os_string());
        assert!(matches!(
            resolve_auth("r.io", "a", &RegistryOptions::default(), &env).expect("ok"),
            RegistryAuth::Anonymous
        ));
        let missing = RegistryOptions {
            auth_file: Some(dir.path().join("nope.json")),
            ..Default::default()
        };
        let err = resolve_auth("r.io", "a", &missing, &no_env).expect_err("missing explicit");
        assert!(err.to_string().contains("nope.json"), "{err}");
    }

    #[test]
    fn errors_are_one_line() {
        let inner = io::Error::new(io::ErrorKind::ConnectionRefused, "refused\nby peer");
        let outer = io::Error::other(format!("cannot connect: {inner}"));
        let s = one_line(&outer);
        assert!(!s.contains('\n'), "{s}");
        let reason = status_reason(
            404,
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#,
            "manifest fn/hello:v1",
            "127.0.0.1:5000",
        );
        assert_eq!(reason, "manifest fn/hello:v1 not found");
        let reason = status_reason(
            404,
            br#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#,
            "manifest fn/nope:v1",
            "127.0.0.1:5000",
        );
        assert_eq!(
            reason,
            "manifest fn/nope:v1 not found (repository name not known to registry)"
        );
        let reason = status_reason(500, b"<html>\n<b>oops</b>\n</html>", "blob x", "r");
        assert_eq!(reason, "blob x: HTTP 500: <html> <b>oops</b> </html>");
        assert_eq!(clip("abcdef", 3), "abc…");
    }

    #[test]
    fn content_type_claims() {
        assert_eq!(
            claimed_media_type("application/vnd.oci.image.index.v1+json; charset=utf-8").as_deref(),
            Some("application/vnd.oci.image.index.v1+json")
        );
        assert_eq!(claimed_media_type("application/json"), None);
        assert_eq!(claimed_media_type(""), None);
    }

    #[test]
    fn builds_an_https_client_with_system_roots() {
        let r = RegistryRef {
            registry: "registry.example.com".into(),
            repository: "a/b".into(),
            tag: Some("v1".into()),
            digest: None,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("auth.json");
        std::fs::write(&empty, "{}").expect("write");
        let opts = RegistryOptions {
            auth_file: Some(empty),
            ..Default::default()
        };
        let source = RegistrySource::new(r, &opts).expect("https client");
        assert_eq!(source.scheme, "https");
        assert_eq!(source.pinned_digest(), None);
    }

    #[test]
    fn refuses_odd_references() {
        let r = RegistryRef {
            registry: "evil.io/x?y".into(),
            repository: "a".into(),
            tag: None,
            digest: None,
        };
        assert!(RegistrySource::new(r, &RegistryOptions::default()).is_err());
    }

    /// End-to-end tests against a real `docker-registry` (Debian's distribution 2.x).
    mod live {
        use std::io::{BufRead, BufReader, Write};
        use std::net::{TcpListener, TcpStream};
        use std::process::{Child, Command, Stdio};
        use std::time::Instant;

        use super::super::*;
        use crate::digest::HashingReader;

        const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
        /// bcrypt (cost 5) of "s3cret", made with `htpasswd -Bbn -C 5 lambox s3cret`.
        const HTPASSWD: &str =
            "lambox:$2y$05$4x.5xLXqjSWNsrP7w2H2AujsWYQobH43P7ZW5DjaCEhI6OyWi1cK.\n";

        fn have_tools() -> bool {
            let found = |name: &str| {
                std::env::var_os("PATH")
                    .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
                    .unwrap_or(false)
            };
            if !Path::new(REGISTRY_BIN).is_file() || !found("skopeo") || !found("umoci") {
                eprintln!("skipping: needs {REGISTRY_BIN}, skopeo and umoci");
                return false;
            }
            true
        }

        /// A running registry; killed (by its own PID) when dropped.
        struct Registry {
            child: Child,
            port: u16,
            dir: tempfile::TempDir,
        }

        impl Drop for Registry {
            fn drop(&mut self) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }

        impl Registry {
            fn start(htpasswd: bool) -> Registry {
                let dir = tempfile::tempdir().expect("tempdir");
                let port = TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .expect("free port")
                    .port();
                let mut config = format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                    dir.path().join("data").display()
                );
                if htpasswd {
                    let file = dir.path().join("htpasswd");
                    std::fs::write(&file, HTPASSWD).expect("write htpasswd");
                    config.push_str(&format!(
                        "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                        file.display()
                    ));
                }
                let config_path = dir.path().join("config.yml");
                std::fs::write(&config_path, config).expect("write config");
                let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
                let child = Command::new(REGISTRY_BIN)
                    .arg("serve")
                    .arg(&config_path)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().expect("log"))
                    .stderr(log)
                    .spawn()
                    .expect("start docker-registry");
                let mut reg = Registry { child, port, dir };
                reg.wait_ready();
                reg
            }

            fn log(&self) -> String {
                std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
            }

            fn wait_ready(&mut self) {
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!("docker-registry exited with {status}: {}", self.log());
                    }
                    if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
                            .is_ok()
                        {
                            let mut line = String::new();
                            if BufReader::new(s).read_line(&mut line).is_ok()
                                && line.starts_with("HTTP/1.")
                            {
                                return;
                            }
                        }
                    }
                    assert!(
                        Instant::now() < deadline,
                        "docker-registry did not answer: {}",
                        self.log()
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }

            fn host(&self) -> String {
                format!("127.0.0.1:{}", self.port)
            }

            fn reference(
                &self,
                repo: &str,
                tag: Option<&str>,
                digest: Option<Digest>,
            ) -> RegistryRef {
                RegistryRef {
                    registry: self.host(),
                    repository: repo.into(),
                    tag: tag.map(str::to_string),
                    digest,
                }
            }
        }

        fn run(cmd: &mut Command) {
            let out = cmd.output().expect("run tool");
            assert!(
                out.status.success(),
                "{cmd:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        /// Build an OCI layout with one ~512 KiB layer and push it as `test/img:v1` (OCI) and
        /// `test/img:v2s2` (Docker schema 2).
        fn push_image(reg: &Registry, creds: Option<&str>) {
            let layout = reg.dir.path().join("layout");
            let layout_s = layout.display().to_string();
            let file = reg.dir.path().join("payload");
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let data: Vec<u8> = (0..512 * 1024)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            std::fs::write(&file, data).expect("payload");
            run(Command::new("umoci").args(["init", "--layout", &layout_s]));
            let image = format!("{layout_s}:tag");
            run(Command::new("umoci").args(["new", "--image", &image]));
            run(Command::new("umoci").args([
                "config",
                "--image",
                &image,
                "--config.cmd",
                "/bin/true",
            ]));
            run(Command::new("umoci")
                .args(["insert", "--image", &image])
                .arg(&file)
                .arg("/payload"));
            for (tag, format) in [("v1", "oci"), ("v2s2", "v2s2")] {
                let mut cmd = Command::new("skopeo");
                cmd.args([
                    "--insecure-policy",
                    "copy",
                    "--dest-tls-verify=false",
                    "--format",
                    format,
                ]);
                if let Some(c) = creds {
                    cmd.args(["--dest-creds", c]);
                }
                cmd.arg(format!("oci:{image}"))
                    .arg(format!("docker://{}/test/img:{tag}", reg.host()));
                run(&mut cmd);
            }
        }

        /// Options that never read the real user's auth files.
        fn hermetic(dir: &Path) -> RegistryOptions {
            let file = dir.join("empty-auth.json");
            std::fs::write(&file, "{}").expect("write");
            RegistryOptions {
                auth_file: Some(file),
                ..Default::default()
            }
        }

        fn descriptor(v: &serde_json::Value) -> (Digest, u64) {
            let digest = v["digest"]
                .as_str()
                .expect("digest")
                .parse()
                .expect("parse");
            (digest, v["size"].as_u64().expect("size"))
        }

        /// Fetch `tag`, check the media type, and stream config and layers in parallel threads,
        /// each checked against its digest and size.
        fn check_image(source: &RegistrySource, expected_media_type: &str) -> Digest {
            let root = source.root_manifest().expect("root manifest");
            assert_eq!(root.media_type.as_deref(), Some(expected_media_type));
            let manifest: serde_json::Value = serde_json::from_slice(&root.bytes).expect("json");
            let mut blobs = vec![descriptor(&manifest["config"])];
            blobs.extend(
                manifest["layers"]
                    .as_array()
                    .expect("layers")
                    .iter()
                    .map(descriptor),
            );
            assert_eq!(blobs.len(), 2);
            std::thread::scope(|s| {
                let handles: Vec<_> = blobs
                    .iter()
                    .map(|(digest, size)| {
                        s.spawn(move || {
                            let reader = source.open_blob(digest, *size).expect("open blob");
                            let (_, got, n) = HashingReader::new(reader).finish().expect("read");
                            assert_eq!(&got, digest);
                            assert_eq!(n, *size);
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().expect("blob thread");
                }
            });
            Digest::of(&root.bytes)
        }

        #[test]
        fn pulls_from_a_real_registry() {
            if !have_tools() {
                return;
            }
            let reg = Registry::start(false);
            push_image(&reg, None);
            let opts = hermetic(reg.dir.path());

            let source = RegistrySource::new(reg.reference("test/img", Some("v1"), None), &opts)
                .expect("new");
            let digest = check_image(&source, "application/vnd.oci.image.manifest.v1+json");
            let again = source.manifest(&digest).expect("manifest by digest");
            assert_eq!(Digest::of(&again.bytes), digest);

            // Pinned by digest.
            let pinned =
                RegistrySource::new(reg.reference("test/img", None, Some(digest.clone())), &opts)
                    .expect("new");
            assert_eq!(pinned.pinned_digest(), Some(&digest));
            assert_eq!(
                Digest::of(&pinned.root_manifest().expect("pinned").bytes),
                digest
            );

            // Docker schema 2.
            let docker = RegistrySource::new(reg.reference("test/img", Some("v2s2"), None), &opts)
                .expect("new");
            check_image(
                &docker,
                "application/vnd.docker.distribution.manifest.v2+json",
            );

            // A blob reader outlives its source.
            let manifest: serde_json::Value =
                serde_json::from_slice(&docker.root_manifest().expect("root").bytes).expect("json");
            let (config, size) = descriptor(&manifest["config"]);
            let reader = docker.open_blob(&config, size).expect("open");
            drop(docker);
            let (_, got, _) = HashingReader::new(reader).finish().expect("read");
            assert_eq!(got, config);

            // Errors: one line, naming what was asked for.
            let missing = RegistrySource::new(reg.reference("test/img", Some("nope"), None), &opts)
                .expect("new");
            let err = missing
                .root_manifest()
                .expect_err("missing tag")
                .to_string();
            assert_eq!(
                err,
                format!("registry {}: manifest test/img:nope not found", reg.host())
            );
            let err = source
                .open_blob(&Digest::of(b"nothing"), 7)
                .map(|_| ())
                .expect_err("missing blob")
                .to_string();
            assert!(
                err.contains("not found") && err.contains("test/img@sha256:"),
                "{err}"
            );
            assert!(!err.contains('\n'), "{err}");
            let err = source
                .open_blob(&config, size + 1)
                .map(|_| ())
                .expect_err("size")
                .to_string();
            assert!(err.contains("size mismatch"), "{err}");
            let latest =
                RegistrySource::new(reg.reference("test/img", None, None), &opts).expect("new");
            let err = latest.root_manifest().expect_err("no latest").to_string();
            assert!(err.contains("test/img:latest not found"), "{err}");
        }

        #[test]
        fn basic_auth() {
            if !have_tools() {
                return;
            }
            let reg = Registry::start(true);
            push_image(&reg, Some("lambox:s3cret"));
            let anonymous = hermetic(reg.dir.path());

            let source =
                RegistrySource::new(reg.reference("test/img", Some("v1"), None), &anonymous)
                    .expect("new");
            let err = source.root_manifest().expect_err("needs auth").to_string();
            assert_eq!(
                err,
                format!(
                    "registry {0}: manifest test/img:v1: unauthorized (check credentials for {0})",
                    reg.host()
                )
            );

            let wrong = RegistryOptions {
                username: Some("lambox".into()),
                password: Some("wrong".into()),
                ..anonymous.clone()
            };
            let source = RegistrySource::new(reg.reference("test/img", Some("v1"), None), &wrong)
                .expect("new");
            let err = source
                .root_manifest()
                .expect_err("wrong password")
                .to_string();
            assert!(err.contains("unauthorized"), "{err}");

            let cli = RegistryOptions {
                username: Some("lambox".into()),
                password: Some("s3cret".into()),
                ..anonymous.clone()
            };
            let source = RegistrySource::new(reg.reference("test/img", Some("v1"), None), &cli)
                .expect("new");
            check_image(&source, "application/vnd.oci.image.manifest.v1+json");

            // Docker-style auth file key.
            let file = reg.dir.path().join("config.json");
            std::fs::write(
                &file,
                format!(
                    r#"{{"auths": {{"http://{}/v1/": {{"auth": "{}"}}}}}}"#,
                    reg.host(),
                    base64::engine::general_purpose::STANDARD.encode("lambox:s3cret")
                ),
            )
            .expect("write");
            let from_file = RegistryOptions {
                auth_file: Some(file),
                ..Default::default()
            };
            let source =
                RegistrySource::new(reg.reference("test/img", Some("v1"), None), &from_file)
                    .expect("new");
            check_image(&source, "application/vnd.oci.image.manifest.v1+json");
        }

        #[test]
        fn connection_refused_is_one_line() {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("port")
                .port();
            let dir = tempfile::tempdir().expect("tempdir");
            let r = RegistryRef {
                registry: format!("127.0.0.1:{port}"),
                repository: "fn/hello".into(),
                tag: Some("v1".into()),
                digest: None,
            };
            let source = RegistrySource::new(r, &hermetic(dir.path())).expect("new");
            let err = source.root_manifest().expect_err("refused").to_string();
            assert!(
                err.starts_with(&format!(
                    "registry 127.0.0.1:{port}: manifest fn/hello:v1: cannot connect to http://127.0.0.1:{port}: "
                )),
                "{err}"
            );
            assert!(
                err.to_ascii_lowercase().contains("connection refused"),
                "{err}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
