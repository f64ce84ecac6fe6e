use std::path::PathBuf;

use crate::Digest;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with an image. Messages are one line, lower-case, and name the
/// object they are about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("invalid digest {0:?}: expected sha256:<64 lower-case hex digits>")]
    InvalidDigest(String),

    #[error("{object}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        object: String,
        expected: Digest,
        actual: Digest,
    },

    #[error("{object}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        object: String,
        expected: u64,
        actual: u64,
    },

    #[error("{object}: malformed: {reason}")]
    Malformed { object: String, reason: String },

    #[error("{object}: unsupported media type {media_type:?}")]
    UnsupportedMediaType { object: String, media_type: String },

    #[error("{0}")]
    Platform(String),

    #[error("{object}: image is larger than the limit of {limit} bytes uncompressed (Lambda's limit is 10 GiB)")]
    TooLarge { object: String, limit: u64 },

    #[error("layer {layer}: refused entry {entry:?}: {reason}")]
    HostileEntry {
        layer: String,
        entry: String,
        reason: String,
    },

    #[error("{object}: not found")]
    NotFound { object: String },

    #[error("image {0:?} is not in the store")]
    ImageNotFound(String),

    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("store database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

impl Error {
    /// An I/O error with what we were doing and to what.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn malformed(object: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Malformed {
            object: object.into(),
            reason: reason.to_string(),
        }
    }
}

/// Attach context to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
