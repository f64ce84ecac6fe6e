//! The image side of lambox: a verified, content-addressed store of Lambda container images.
//!
//! Images come from a [`source::Source`] (a registry, a `docker save` archive, an OCI layout or an
//! OCI archive). [`import::import`] reads the root manifest, picks the single Linux platform,
//! streams every blob through digest verification into the [`store::Store`], and unpacks each
//! layer once into a directory in overlayfs form (see [`unpack`]). [`lint`] checks a stored image
//! against the rules Lambda enforces.
//!
//! Every input here — manifests, configs, layer tars — is treated as hostile: errors are
//! [`Error`] values with one-line messages that name the object, never panics.

pub mod digest;
mod error;
pub mod import;
pub mod layered;
pub mod lint;
pub mod manifest;
pub mod source;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use error::{Error, Result};

/// Lambda's limit on the uncompressed size of an image (10 GB).
pub const LAMBDA_MAX_IMAGE_SIZE: u64 = 10 * 1024 * 1024 * 1024;
