//! Unpacking one layer tar into a directory in overlayfs form.
//!
//! (Owned by the unpack work: see the module docs once written.)

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// The uncompressed-size budget of one image, shared by all its layers (unpacked in parallel).
#[derive(Debug)]
pub struct SizeBudget {
    limit: u64,
    used: AtomicU64,
}

impl SizeBudget {
    pub fn new(limit: u64) -> Self {
        SizeBudget {
            limit,
            used: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Charge `n` bytes; `Err(TooLarge)` as soon as the total passes the limit.
    pub fn charge(&self, n: u64) -> Result<()> {
        let total = self.used.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if total > self.limit {
            Err(Error::TooLarge { limit: self.limit })
        } else {
            Ok(())
        }
    }
}

/// What unpacking a layer produced.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnpackStats {
    pub entries: u64,
    pub skipped_devices: u64,
}

/// Unpack the uncompressed layer tar `tar` into the empty directory `dest` (which the caller
/// created). `layer` names the layer in errors. Every byte read is charged to `budget`.
pub fn unpack_layer(tar: impl Read, dest: &Path, layer: &str, budget: &SizeBudget) -> Result<UnpackStats> {
    let _ = (tar, dest, layer, budget);
    Err(Error::malformed(layer, "unpack not implemented yet"))
}
