//! AWS Signature Version 4 verification for `lambox serve --auth sigv4`: an axum middleware
//! ([`Guard`]) that checks the `Authorization: AWS4-HMAC-SHA256 …` header of every request of
//! the router it wraps against the configured access keys before the handler runs.
//!
//! The canonical request is rebuilt from the request as received (the SigV4 specification for
//! services other than S3: the path's dot segments removed and every segment URI-encoded once
//! more, the query re-encoded and sorted, only the headers named in `SignedHeaders`, the SHA-256
//! of the body as received — `X-Amz-Content-Sha256`, when sent, is what was signed, and the body
//! must still hash to it), the signing key is derived from the secret, and the signatures are
//! compared in constant time (`hmac`'s `verify_slice`). The body is buffered (at most
//! [`MAX_BUFFERED_BODY`] bytes kept; a longer one is hashed to its end, then handed on cut,
//! so the handler's size check still answers 413 after the signature was checked, as AWS checks
//! auth first).
//!
//! Errors as AWS words them (botocore reads the code from `x-amzn-ErrorType` / `__type`):
//! no `Authorization` → `MissingAuthenticationTokenException` "Missing Authentication Token";
//! an unknown access key → `UnrecognizedClientException` "The security token included in the
//! request is invalid."; a wrong signature → `InvalidSignatureException` "The request signature
//! we calculated does not match …"; a date more than 15 minutes off → `InvalidSignatureException`
//! "Signature expired: T is now earlier than T' (NOW - 15 min.)" / "Signature not yet current:
//! T is still later than T' (NOW + 15 min.)" (the format of AWS's answers quoted in
//! cloudfoundry/bosh-aws-cpi-release docs/troubleshooting.md and serverless/enterprise#11,
//! there with a 5-minute window); a header that cannot be parsed →
//! `IncompleteSignatureException`. Query-string presigning (`X-Amz-Signature=`) is refused
//! (`IncompleteSignatureException`): no AWS client presigns Lambda or ECR API calls.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::BytesMut;
use hmac::{Hmac, Mac};
use http::request::Parts;
use http::StatusCode;
use http_body_util::BodyExt as _;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest as _, Sha256};

use crate::error::ApiError;

/// The only algorithm SigV4 defines for HMAC signatures.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far the request's `X-Amz-Date` may be from the server's clock, either way (AWS: 15 min).
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// The most of a body the verifier keeps for the handler (the handlers' own limits are lower:
/// 6 MB sync invoke).
pub const MAX_BUFFERED_BODY: usize = 64 * 1024 * 1024;
/// The signing name of the Lambda API.
pub const SERVICE_LAMBDA: &str = "lambda";
/// The signing name of ECR's API.
pub const SERVICE_ECR: &str = "ecr";
/// The signing name of CloudWatch Logs (`lambox logs`, `aws logs`).
pub const SERVICE_LOGS: &str = "logs";

const X_AMZ_DATE: &str = "x-amz-date";
const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";
const X_AMZ_SIGNATURE: &str = "X-Amz-Signature";
const TERMINATOR: &str = "aws4_request";
const DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// RFC 3986 unreserved characters stay; everything else is `%XX` (SigV4's `UriEncode`).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// The same for a path: `/` stays.
const UNRESERVED_PATH: &AsciiSet = &UNRESERVED.remove(b'/');

type HmacSha256 = Hmac<Sha256>;

/// A secret access key; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn new(secret: String) -> Self {
        SecretKey(secret)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// One access key pair the server accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret: SecretKey,
}

/// Why a request was refused; `Display` is the message AWS sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Missing Authentication Token")]
    Missing,
    #[error("{0}")]
    Incomplete(String),
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")]
    Mismatch,
    #[error("Signature expired: {signed} is now earlier than {limit} ({now} - 15 min.)")]
    Expired {
        signed: String,
        limit: String,
        now: String,
    },
    #[error("Signature not yet current: {signed} is still later than {limit} ({now} + 15 min.)")]
    NotYetCurrent {
        signed: String,
        limit: String,
        now: String,
    },
    #[error("{0}")]
    Scope(String),
}

impl AuthError {
    /// The AWS error code (`x-amzn-ErrorType`).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "MissingAuthenticationTokenException",
            AuthError::Incomplete(_) => "IncompleteSignatureException",
            AuthError::UnknownKey => "UnrecognizedClientException",
            AuthError::Mismatch
            | AuthError::Expired { .. }
            | AuthError::NotYetCurrent { .. }
            | AuthError::Scope(_) => "InvalidSignatureException",
        }
    }

    /// The Lambda API's (rest-json) answer: 403, `x-amzn-ErrorType`, `{"Type":"User","message":…}`.
    pub fn lambda_response(&self) -> Response {
        ApiError::new(
            StatusCode::FORBIDDEN,
            self.code(),
            "User",
            &self.to_string(),
        )
        .into_response()
    }
}

/// The parsed `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: Vec<u8>,
}

impl<'a> Authorization<'a> {
    fn parse(value: &'a str) -> Result<Self, AuthError> {
        let (algorithm, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        if algorithm != ALGORITHM {
            return Err(AuthError::Incomplete(format!(
                "Unsupported Authorization scheme {:?}: lambox accepts {ALGORITHM} (AWS Signature Version 4) only.",
                truncate(algorithm)
            )));
        }
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let Some((k, v)) = part.trim().split_once('=') else {
                continue;
            };
            match k {
                "Credential" => credential = Some(v),
                "SignedHeaders" => signed = Some(v),
                "Signature" => signature = Some(v),
                _ => {}
            }
        }
        let mut missing = Vec::new();
        for (name, v) in [
            ("Credential", credential),
            ("Signature", signature),
            ("SignedHeaders", signed),
        ] {
            if v.is_none_or(str::is_empty) {
                missing.push(format!("Authorization header requires '{name}' parameter."));
            }
        }
        let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature)
        else {
            return Err(AuthError::Incomplete(missing.join(" ")));
        };
        if !missing.is_empty() {
            return Err(AuthError::Incomplete(missing.join(" ")));
        }
        let parts: Vec<&str> = credential.split('/').collect();
        let [access_key_id, date, region, service, terminator] = parts[..] else {
            return Err(AuthError::Incomplete(format!(
                "Credential {:?} is not ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request.",
                truncate(credential)
            )));
        };
        if terminator != TERMINATOR {
            return Err(AuthError::Scope(format!(
                "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{}'.",
                truncate(terminator)
            )));
        }
        let signature = hex::decode(signature).map_err(|_| AuthError::Mismatch)?;
        Ok(Authorization {
            access_key_id,
            date,
            region,
            service,
            signed_headers: signed.split(';').collect(),
            signature,
        })
    }
}

/// At most 64 characters of client input in a message.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Checks SigV4 signatures against a set of access keys, for one region.
#[derive(Debug)]
pub struct Verifier {
    keys: HashMap<String, SecretKey>,
    region: String,
}

impl Verifier {
    pub fn new(keys: impl IntoIterator<Item = AccessKey>, region: &str) -> Self {
        Verifier {
            keys: keys
                .into_iter()
                .map(|k| (k.access_key_id, k.secret))
                .collect(),
            region: region.to_owned(),
        }
    }

    /// Checks the request (`parts`, and the SHA-256 of the body as received) signed for
    /// `service` at `now`.
    pub fn verify(
        &self,
        parts: &Parts,
        body_sha256: &[u8; 32],
        service: &str,
        now: SystemTime,
    ) -> Result<(), AuthError> {
        let auth = self.check_headers(parts, service, now)?;
        let secret = self
            .keys
            .get(auth.access_key_id)
            .ok_or(AuthError::UnknownKey)?;
        let body_hex = hex::encode(body_sha256);
        let payload_hash = match header_str(parts, X_AMZ_CONTENT_SHA256) {
            Some(claimed) if claimed != body_hex => return Err(AuthError::Mismatch),
            _ => body_hex,
        };
        let canonical = canonical_request(parts, &auth.signed_headers, &payload_hash);
        let amz_date = header_str(parts, X_AMZ_DATE).unwrap_or_default();
        let scope = format!(
            "{}/{}/{}/{TERMINATOR}",
            auth.date, auth.region, auth.service
        );
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut key = format!("AWS4{}", secret.0).into_bytes();
        for part in [auth.date, auth.region, auth.service, TERMINATOR] {
            key = hmac(&key, part.as_bytes()).to_vec();
        }
        let mut mac = HmacSha256::new_from_slice(&key).map_err(|_| AuthError::Mismatch)?;
        mac.update(string_to_sign.as_bytes());
        mac.verify_slice(&auth.signature)
            .map_err(|_| AuthError::Mismatch)
    }

    /// Everything that can be checked before the body is read: the header's form, the key,
    /// the date and the scope.
    fn check_headers<'p>(
        &self,
        parts: &'p Parts,
        service: &str,
        now: SystemTime,
    ) -> Result<Authorization<'p>, AuthError> {
        let Some(value) = parts.headers.get(http::header::AUTHORIZATION) else {
            let presigned = parts.uri.query().is_some_and(|q| {
                q.split('&')
                    .any(|p| p.split('=').next() == Some(X_AMZ_SIGNATURE))
            });
            return Err(if presigned {
                AuthError::Incomplete(
                    "Presigned (query-string) requests are not supported by lambox; sign with the Authorization header."
                        .to_owned(),
                )
            } else {
                AuthError::Missing
            });
        };
        let value = value.to_str().map_err(|_| {
            AuthError::Incomplete("The Authorization header is not ASCII.".to_owned())
        })?;
        let auth = Authorization::parse(value)?;
        if !self.keys.contains_key(auth.access_key_id) {
            return Err(AuthError::UnknownKey);
        }
        for required in ["host", X_AMZ_DATE] {
            if !auth.signed_headers.contains(&required) {
                return Err(AuthError::Incomplete(format!(
                    "'{required}' must be a 'SignedHeader' in the AWS Authorization."
                )));
            }
        }
        let amz_date = header_str(parts, X_AMZ_DATE).ok_or_else(|| {
            AuthError::Incomplete(
                "Authorization header requires existence of a 'X-Amz-Date' header.".to_owned(),
            )
        })?;
        let signed_at = chrono::NaiveDateTime::parse_from_str(amz_date, DATE_FORMAT)
            .map_err(|_| {
                AuthError::Incomplete(format!(
                    "Date must be in ISO-8601 'basic format'. Got '{}'.",
                    truncate(amz_date)
                ))
            })?
            .and_utc();
        let now = chrono::DateTime::<chrono::Utc>::from(now);
        let skew = chrono::Duration::from_std(MAX_SKEW).unwrap_or(chrono::Duration::MAX);
        let fmt = |t: chrono::DateTime<chrono::Utc>| t.format(DATE_FORMAT).to_string();
        if signed_at < now - skew {
            return Err(AuthError::Expired {
                signed: fmt(signed_at),
                limit: fmt(now - skew),
                now: fmt(now),
            });
        }
        if signed_at > now + skew {
            return Err(AuthError::NotYetCurrent {
                signed: fmt(signed_at),
                limit: fmt(now + skew),
                now: fmt(now),
            });
        }
        if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
            return Err(AuthError::Scope(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{amz_date}'.",
                truncate(auth.date),
                amz_date.get(..8).unwrap_or(amz_date)
            )));
        }
        if auth.region != self.region {
            return Err(AuthError::Scope(format!(
                "Credential should be scoped to a valid region, not '{}'. This server's region is '{}'.",
                truncate(auth.region),
                self.region
            )));
        }
        if auth.service != service {
            return Err(AuthError::Scope(format!(
                "Credential should be scoped to correct service: '{service}'."
            )));
        }
        Ok(auth)
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length; the error case cannot happen.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn header_str<'p>(parts: &'p Parts, name: &str) -> Option<&'p str> {
    parts.headers.get(name)?.to_str().ok()
}

/// SigV4's canonical request for a service other than S3.
fn canonical_request(parts: &Parts, signed_headers: &[&str], payload_hash: &str) -> String {
    let mut out = String::new();
    out.push_str(parts.method.as_str());
    out.push('\n');
    out.push_str(&canonical_uri(parts.uri.path()));
    out.push('\n');
    out.push_str(&canonical_query(parts.uri.query().unwrap_or("")));
    out.push('\n');
    for name in signed_headers {
        let values: Vec<String> = parts
            .headers
            .get_all(*name)
            .iter()
            .map(|v| canonical_header_value(v.as_bytes()))
            .collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    out
}

/// The path as received (already URI-encoded once by the client), dot segments removed, and
/// encoded once more: what botocore's and the SDKs' signers hash for non-S3 services.
fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let trailing = path.len() > 1 && path.ends_with('/');
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut normalized = format!("/{}", segments.join("/"));
    if trailing && normalized.len() > 1 {
        normalized.push('/');
    }
    utf8_percent_encode(&normalized, UNRESERVED_PATH).to_string()
}

/// Each `name=value` decoded and re-encoded with SigV4's `UriEncode`, sorted by name, then
/// value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let enc = |s: &str| {
                let raw: Vec<u8> = percent_decode_str(s).collect();
                percent_encoding::percent_encode(&raw, UNRESERVED).to_string()
            };
            (enc(k), enc(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Leading and trailing blanks removed, runs of spaces inside made one.
fn canonical_header_value(v: &[u8]) -> String {
    let text = String::from_utf8_lossy(v);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads the body, hashing all of it and keeping at most [`MAX_BUFFERED_BODY`] bytes.
async fn read_body(body: Body) -> Result<([u8; 32], Bytes), AuthError> {
    let mut body = body;
    let mut hasher = Sha256::new();
    let mut kept = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| AuthError::Mismatch)?;
        if let Ok(data) = frame.into_data() {
            hasher.update(&data);
            let room = MAX_BUFFERED_BODY.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    Ok((hasher.finalize().into(), kept.freeze()))
}

/// Reads and drops up to [`MAX_BUFFERED_BODY`] bytes of `body`.
async fn drain(mut body: Body) {
    let mut seen = 0;
    while seen < MAX_BUFFERED_BODY {
        match body.frame().await {
            Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
}

/// The middleware's state: the verifier, the service name requests must be signed for, and
/// how the wrapped API words its errors.
#[derive(Clone)]
pub struct Guard {
    verifier: Arc<Verifier>,
    service: &'static str,
    render: fn(&AuthError) -> Response,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("verifier", &self.verifier)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Guard {
    pub fn new(
        verifier: Arc<Verifier>,
        service: &'static str,
        render: fn(&AuthError) -> Response,
    ) -> Self {
        Guard {
            verifier,
            service,
            render,
        }
    }

    /// `router` with every route (and its fallback) behind the check.
    pub fn wrap(self, router: Router) -> Router {
        router.layer(middleware::from_fn_with_state(self, guard))
    }
}

async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let now = SystemTime::now();
    // Refuse what the headers alone decide before reading a byte of the body.
    if let Err(e) = g.verifier.check_headers(&parts, g.service, now) {
        // Read (a bounded part of) what the client is still sending, so that it gets the
        // answer rather than a reset connection.
        drain(body).await;
        return refuse(&g, &parts, &e);
    }
    let (hash, body) = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return refuse(&g, &parts, &e),
    };
    if let Err(e) = g.verifier.verify(&parts, &hash, g.service, now) {
        return refuse(&g, &parts, &e);
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
}

fn refuse(g: &Guard, parts: &Parts, e: &AuthError) -> Response {
    let key = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .map(truncate)
        .unwrap_or_default();
    tracing::info!(code = e.code(), access_key_id = %key, reason = %e, "request refused");
    (g.render)(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's SigV4 test suite, `get-vanilla`: `GET /` to example.amazonaws.com at
    /// 20150830T123600Z, key AKIDEXAMPLE, region us-east-1, service `service`.
    const VANILLA_SIGNATURE: &str =
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";

    fn verifier() -> Verifier {
        Verifier::new(
            [AccessKey {
                access_key_id: "AKIDEXAMPLE".into(),
                secret: SecretKey::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            }],
            "us-east-1",
        )
    }

    fn vanilla(signature: &str, date: &str) -> Parts {
        let req = http::Request::get("/")
            .header("host", "example.amazonaws.com")
            .header("x-amz-date", date)
            .header(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}"
                ),
            )
            .body(())
            .expect("request");
        req.into_parts().0
    }

    fn at(s: &str) -> SystemTime {
        let t = chrono::NaiveDateTime::parse_from_str(s, DATE_FORMAT)
            .expect("date")
            .and_utc();
        SystemTime::from(t)
    }

    fn empty_hash() -> [u8; 32] {
        Sha256::digest(b"").into()
    }

    #[test]
    fn aws_test_suite_get_vanilla_verifies() {
        let parts = vanilla(VANILLA_SIGNATURE, "20150830T123600Z");
        let v = verifier();
        assert_eq!(
            v.verify(&parts, &empty_hash(), "service", at("20150830T123600Z")),
            Ok(())
        );
        // Within 15 minutes either way still verifies.
        assert_eq!(
            v.verify(&parts, &empty_hash(), "service", at("20150830T125000Z")),
            Ok(())
        );
        // One changed digit of the signature, another service or body: refused.
        let bad = format!("4{}", &VANILLA_SIGNATURE[1..]);
        assert_eq!(
            v.verify(
                &vanilla(&bad, "20150830T123600Z"),
                &empty_hash(),
                "service",
                at("20150830T123600Z")
            ),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            v.verify(
                &parts,
                &Sha256::digest(b"x").into(),
                "service",
                at("20150830T123600Z")
            ),
            Err(AuthError::Mismatch)
        );
        assert!(matches!(
            v.verify(&parts, &empty_hash(), "lambda", at("20150830T123600Z")),
            Err(AuthError::Scope(_))
        ));
    }

    #[test]
    fn dates_outside_fifteen_minutes_are_refused_in_aws_words() {
        let parts = vanilla(VANILLA_SIGNATURE, "20150830T123600Z");
        let e = verifier()
            .verify(&parts, &empty_hash(), "service", at("20150830T130000Z"))
            .expect_err("expired");
        assert_eq!(e.code(), "InvalidSignatureException");
        assert_eq!(
            e.to_string(),
            "Signature expired: 20150830T123600Z is now earlier than 20150830T124500Z (20150830T130000Z - 15 min.)"
        );
        let e = verifier()
            .verify(&parts, &empty_hash(), "service", at("20150830T120000Z"))
            .expect_err("future");
        assert_eq!(
            e.to_string(),
            "Signature not yet current: 20150830T123600Z is still later than 20150830T121500Z (20150830T120000Z + 15 min.)"
        );
    }

    #[test]
    fn canonical_forms_follow_the_spec_for_non_s3_services() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a/./b/../c"), "/a/c");
        assert_eq!(
            canonical_uri("/2015-03-31/functions/arn%3Aaws%3Alambda/invocations"),
            "/2015-03-31/functions/arn%253Aaws%253Alambda/invocations"
        );
        assert_eq!(
            canonical_uri("/2015-03-31/functions/"),
            "/2015-03-31/functions/"
        );
        assert_eq!(
            canonical_query("b=2&a=x%20y&a=1&Qualifier=%24LATEST"),
            "Qualifier=%24LATEST&a=1&a=x%20y&b=2"
        );
        assert_eq!(canonical_header_value(b"  a   b  c "), "a b c");
    }

    #[test]
    fn malformed_authorization_headers_are_incomplete_never_panics() {
        for value in [
            "",
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA256 ",
            "AWS4-HMAC-SHA256 Credential=",
            "AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date",
            "Basic QUtJRDpzZWNyZXQ=",
            "AWS4-HMAC-SHA256 ,,,,==,=",
        ] {
            let e = Authorization::parse(value).expect_err(value);
            assert!(
                matches!(e, AuthError::Incomplete(_)),
                "{value:?}: {e:?}"
            );
            assert!(!e.to_string().contains('\n'));
        }
        let e = Authorization::parse(
            "AWS4-HMAC-SHA256 Credential=A/20150830/us-east-1/s/aws5, SignedHeaders=host, Signature=00",
        )
        .expect_err("terminator");
        assert!(matches!(e, AuthError::Scope(_)), "{e:?}");
    }

    #[test]
    fn odd_signed_header_names_are_a_mismatch_not_a_panic() {
        for signed in [
            "host;x-amz-date;bad header",
            "host;x-amz-date;",
            "host;x-amz-date;\u{e9}t\u{e9}",
            "HOST;x-amz-date",
        ] {
            let mut parts = vanilla(VANILLA_SIGNATURE, "20150830T123600Z");
            let value = format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders={signed}, Signature={VANILLA_SIGNATURE}"
            );
            let Ok(value) = http::HeaderValue::from_str(&value) else {
                continue;
            };
            parts.headers.insert(http::header::AUTHORIZATION, value);
            let r = verifier().verify(&parts, &empty_hash(), "service", at("20150830T123600Z"));
            assert!(r.is_err(), "{signed}");
        }
    }

    #[test]
    fn secrets_are_not_printed() {
        let k = AccessKey {
            access_key_id: "AKID".into(),
            secret: SecretKey::new("hunter2".into()),
        };
        assert!(!format!("{k:?}").contains("hunter2"));
        assert!(!format!("{:?}", Verifier::new([k], "us-east-1")).contains("hunter2"));
    }
}
