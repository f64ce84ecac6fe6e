//! Registry auth, as ECR does it: `GetAuthorizationToken` hands out `base64("AWS:<token>")`
//! valid for 12 hours; `docker login`/`podman login` send it back as HTTP Basic credentials
//! (user `AWS`, password `<token>`). Tokens live in the store's database (`reg_tokens`), so
//! they survive a restart of `lambox serve`, and expired ones are dropped when a new one is
//! issued.
//!
//! When [`crate::RegistryConfig::auth`] is on, every `/v2/` request (including `GET /v2/`,
//! which clients probe before a login) needs a valid, unexpired token; otherwise it gets
//! 401 `UNAUTHORIZED` with `WWW-Authenticate: Basic realm="…"` (distribution spec, "Error
//! Codes"; ECR answers a `Basic` challenge too). The ECR JSON API itself is checked by SigV4
//! when `lambox serve --auth sigv4` is on (which also turns this on; see [`crate::ecr`]).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{header, HeaderMap, HeaderValue};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{ApiError, Code};

/// The user name ECR's tokens go with.
pub const USER: &str = "AWS";

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS reg_tokens (
    token TEXT PRIMARY KEY, expires_at INTEGER NOT NULL)";

/// A new token, stored with its expiry (unix seconds). Returns (token, expires_at).
pub fn issue(db: &Connection, ttl_secs: i64) -> rusqlite::Result<(String, i64)> {
    let now = crate::meta::now();
    db.execute(
        "DELETE FROM reg_tokens WHERE expires_at <= ?1",
        params![now],
    )?;
    // 244 random bits (two v4 UUIDs) from the OS's generator.
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let expires_at = now + ttl_secs;
    db.execute(
        "INSERT INTO reg_tokens (token, expires_at) VALUES (?1, ?2)",
        params![token, expires_at],
    )?;
    Ok((token, expires_at))
}

/// `base64("AWS:<token>")`, ECR's `authorizationToken`.
pub fn encode(token: &str) -> String {
    STANDARD.encode(format!("{USER}:{token}"))
}

/// Whether `token` was issued and has not expired.
pub fn valid(db: &Connection, token: &str) -> rusqlite::Result<bool> {
    let exp: Option<i64> = db
        .query_row(
            "SELECT expires_at FROM reg_tokens WHERE token = ?1",
            params![token],
            |r| r.get(0),
        )
        .optional()?;
    Ok(exp.is_some_and(|e| e > crate::meta::now()))
}

/// The token of an `Authorization: Basic base64(AWS:<token>)` header, if it has that form.
pub fn basic_token(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = STANDARD.decode(rest.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (user, pass) = s.split_once(':')?;
    (user == USER && !pass.is_empty()).then(|| pass.to_string())
}

/// 401 `UNAUTHORIZED` with the `Basic` challenge; `realm` is the registry's own URL.
pub fn challenge(host: &str, why: &str) -> ApiError {
    let realm = format!("Basic realm=\"http://{host}/\",service=\"lambox\"");
    ApiError::new(Code::Unauthorized, why.to_string()).header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&realm)
            .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"lambox\"")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_token(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {}", encode("abc"))).expect("ok"),
        );
        assert_eq!(basic_token(&h).as_deref(), Some("abc"));
        let other = STANDARD.encode("root:abc");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {other}")).expect("ok"),
        );
        assert_eq!(basic_token(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(basic_token(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(basic_token(&h), None);
    }

    #[test]
    fn tokens_expire() {
        let db = Connection::open_in_memory().expect("ok");
        db.execute_batch(SCHEMA).expect("ok");
        let (t, _) = issue(&db, 3600).expect("ok");
        assert!(valid(&db, &t).expect("ok"));
        assert!(!valid(&db, "bogus").expect("ok"));
        let (old, _) = issue(&db, -1).expect("ok");
        assert!(!valid(&db, &old).expect("ok"));
    }
}
