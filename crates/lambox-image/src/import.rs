//! Import: from a [`BlobSource`] into the [`Store`], verifying everything on the way.
//!
//! Each layer goes through one streaming pass, and layers run in parallel:
//!
//! ```text
//! source ─▶ tee to tmp blob file ─▶ sha256 (blob digest) ─▶ gunzip/zstd ─▶ sha256 (diff_id)
//!        ─▶ size budget ─▶ tar unpack into tmp/…-layer
//! ```
//!
//! Only when both digests match the manifest and config are the blob and the layer directory
//! synced and renamed into place; the image row is written last. A layer already in the store
//! (by diff_id) is neither fetched nor unpacked again.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::read::MultiGzDecoder;

use crate::digest::HashingReader;
use crate::error::IoContext;
use crate::manifest::{self, Compression, Descriptor, Parsed, Platform, MAX_JSON_SIZE};
use crate::source::{BlobSource, RawManifest};
use crate::store::{remove_tree, ImageRecord, LayerRecord, Store};
use crate::unpack::{unpack_layer, SizeBudget};
use crate::{Digest, Error, Result};

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Which platform to take from a multi-platform index.
    pub platform: Option<Platform>,
    /// Cap on the total uncompressed size (Lambda's is 10 GB).
    pub max_size: u64,
    /// Name to record the image under.
    pub name: Option<String>,
    /// Layers fetched and unpacked at once.
    pub jobs: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            platform: None,
            max_size: crate::LAMBDA_MAX_IMAGE_SIZE,
            name: None,
            jobs: 4,
        }
    }
}

/// Progress callbacks; all methods default to doing nothing.
pub trait Progress: Sync {
    /// Layer `index` of the image starts; `size` is its compressed size.
    fn layer_start(&self, _index: usize, _digest: &Digest, _size: u64) {}
    /// `bytes` more compressed bytes of layer `index` were read.
    fn layer_bytes(&self, _index: usize, _bytes: u64) {}
    /// Layer `index` is in the store; `reused` when nothing had to be fetched.
    fn layer_done(&self, _index: usize, _reused: bool) {}
}

/// Reports nothing.
#[derive(Debug)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
    pub image: ImageRecord,
    pub name: Option<String>,
    /// Compressed bytes read from the source (0 when every layer was already stored).
    pub fetched_bytes: u64,
    /// Layers that were already stored and not fetched again.
    pub reused_layers: usize,
}

/// Import the image `src` points at. `object` names the source in errors.
pub fn import(
    store: &Store,
    src: &dyn BlobSource,
    object: &str,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<ImportOutcome> {
    let _guard = store.lock(false)?;

    // 1. The root manifest, verified against a pinned digest; an index narrows to one platform.
    let root = src.root_manifest()?;
    check_json_size(object, &root)?;
    let root_digest = Digest::of(&root.bytes);
    if let Some(pinned) = src.pinned_digest() {
        if &root_digest != pinned {
            return Err(Error::DigestMismatch {
                object: format!("manifest of {object}"),
                expected: pinned.clone(),
                actual: root_digest,
            });
        }
    }
    let root_object = format!("{object} manifest {root_digest}");
    let (raw, digest, parsed) =
        match manifest::parse(&root_object, &root.bytes, root.media_type.as_deref())? {
            Parsed::Manifest(m) => (root, root_digest, m),
            Parsed::Index(index) => {
                let chosen = manifest::select_platform(object, &index, options.platform.as_ref())?;
                let child_object = format!("{object} manifest {}", chosen.digest);
                let child = src.manifest(&chosen.digest)?;
                check_json_size(&child_object, &child)?;
                verify_bytes(&child_object, &chosen.digest, chosen.size, &child.bytes)?;
                let media = child.media_type.clone().or(Some(chosen.media_type.clone()));
                match manifest::parse(&child_object, &child.bytes, media.as_deref())? {
                    Parsed::Manifest(m) => (child, chosen.digest.clone(), m),
                    Parsed::Index(_) => {
                        return Err(Error::malformed(
                            child_object,
                            "nested indexes are not supported",
                        ))
                    }
                }
            }
        };
    let media_type = manifest::manifest_media_type(&parsed, raw.media_type.as_deref());

    // 2. The config: small, read whole, verified, and it must be linux/amd64|arm64.
    let config_object = format!("{object} config {}", parsed.config.digest);
    if parsed.config.size > MAX_JSON_SIZE {
        return Err(Error::malformed(
            config_object,
            format!("config of {} bytes is too large", parsed.config.size),
        ));
    }
    let config_bytes = if store.has_blob(&parsed.config.digest) {
        store.read_blob(&parsed.config.digest)?
    } else {
        let mut buf = Vec::new();
        src.open_blob(&parsed.config.digest, parsed.config.size)?
            .take(MAX_JSON_SIZE + 1)
            .read_to_end(&mut buf)
            .ctx(|| format!("read {config_object}"))?;
        verify_bytes(
            &config_object,
            &parsed.config.digest,
            parsed.config.size,
            &buf,
        )?;
        buf
    };
    let config = manifest::parse_config(&config_object, &config_bytes, parsed.layers.len())?;

    // 3. Layers, in parallel, each in one streaming pass.
    let budget = SizeBudget::new(options.max_size);
    let results: Vec<Mutex<Option<Result<Ingested>>>> =
        parsed.layers.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let jobs = options.jobs.clamp(1, parsed.layers.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= parsed.layers.len() || failed.load(Ordering::SeqCst) {
                    break;
                }
                let desc = &parsed.layers[i];
                let diff_id = &config.rootfs.diff_ids[i];
                let r = ingest_layer(store, src, object, i, desc, diff_id, &budget, progress);
                if r.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
            });
        }
    });
    let mut layers = Vec::with_capacity(parsed.layers.len());
    let mut fetched_bytes = 0;
    let mut reused_layers = 0;
    let mut first_error = None;
    for slot in results {
        match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(Ok((layer, fetched, reused))) => {
                fetched_bytes += fetched;
                reused_layers += usize::from(reused);
                layers.push(layer);
            }
            // Keep the most telling error: a size-limit hit beats the knock-on errors.
            Some(Err(Error::TooLarge { limit, .. })) => {
                first_error = Some(Error::TooLarge {
                    object: object.to_string(),
                    limit,
                });
            }
            Some(Err(e)) if first_error.is_none() => first_error = Some(e),
            Some(Err(_)) => {}
            None => {}
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }

    // 4. Manifest and config blobs, then the image row.
    store.write_blob(&parsed.config.digest, &config_bytes)?;
    store.write_blob(&digest, &raw.bytes)?;
    let image = ImageRecord {
        digest,
        media_type,
        config_digest: parsed.config.digest.clone(),
        os: config.os,
        architecture: config.architecture,
        layers,
        stored_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    store.put_image(&image, options.name.as_deref())?;
    Ok(ImportOutcome {
        image,
        name: options.name.clone(),
        fetched_bytes,
        reused_layers,
    })
}

fn check_json_size(object: &str, m: &RawManifest) -> Result<()> {
    if m.bytes.len() as u64 > MAX_JSON_SIZE {
        return Err(Error::malformed(
            format!("manifest of {object}"),
            format!(
                "{} bytes is larger than the {MAX_JSON_SIZE}-byte limit",
                m.bytes.len()
            ),
        ));
    }
    Ok(())
}

fn verify_bytes(object: &str, expected: &Digest, size: u64, bytes: &[u8]) -> Result<()> {
    let actual = Digest::of(bytes);
    if &actual != expected {
        return Err(Error::DigestMismatch {
            object: object.to_string(),
            expected: expected.clone(),
            actual,
        });
    }
    if bytes.len() as u64 != size {
        return Err(Error::SizeMismatch {
            object: object.to_string(),
            expected: size,
            actual: bytes.len() as u64,
        });
    }
    Ok(())
}

/// Copies everything read into a file (the blob being stored), and reports progress.
struct Tee<'a, R> {
    inner: R,
    file: Option<File>,
    index: usize,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(f) = &mut self.file {
            f.write_all(&buf[..n])?;
        }
        self.progress.layer_bytes(self.index, n as u64);
        Ok(n)
    }
}

/// A decompressor that can give back the compressed reader, so the blob hash can cover every
/// byte of the blob, including anything after the compressed stream ends.
enum Decoder<R: Read> {
    Plain(R),
    Gzip(Box<MultiGzDecoder<R>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<R>>>),
}

impl<R: Read> Decoder<R> {
    fn new(compression: Compression, inner: R) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Decoder::Plain(inner),
            Compression::Gzip => Decoder::Gzip(Box::new(MultiGzDecoder::new(inner))),
            Compression::Zstd => Decoder::Zstd(Box::new(zstd::stream::read::Decoder::new(inner)?)),
        })
    }

    fn into_inner(self) -> R {
        match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish().into_inner(),
        }
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

/// Reads the first bytes to sniff the compression, then replays them.
type Replayed<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

fn sniff<R: Read>(mut r: R) -> io::Result<(Compression, Replayed<R>)> {
    let mut head = vec![0u8; 4];
    let mut n = 0;
    while n < head.len() {
        let k = r.read(&mut head[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    head.truncate(n);
    Ok((Compression::sniff(&head), io::Cursor::new(head).chain(r)))
}

/// A layer whose tar or compression is broken may just be corrupt (in transit, or on disk): if
/// its compressed bytes are not what the manifest says, report that instead, since it is the
/// cause. This reads the rest of the compressed blob, at most its declared size; nothing more is
/// decompressed or unpacked. Other errors (hostile entries, the size limit) are kept as they are.
fn blame_corruption<R: Read>(
    err: Error,
    mut blob_hash: HashingReader<R>,
    desc: &Descriptor,
    object: &str,
) -> Error {
    if !matches!(err, Error::Malformed { .. } | Error::Io { .. }) {
        return err;
    }
    let rest = desc
        .size
        .saturating_sub(blob_hash.count())
        .saturating_add(1);
    if io::copy(&mut (&mut blob_hash).take(rest), &mut io::sink()).is_err()
        || blob_hash.count() > desc.size
    {
        return err;
    }
    if blob_hash.count() < desc.size {
        return Error::SizeMismatch {
            object: object.to_string(),
            expected: desc.size,
            actual: blob_hash.count(),
        };
    }
    match blob_hash.finish() {
        Ok((_, actual, _)) if actual != desc.digest => Error::DigestMismatch {
            object: object.to_string(),
            expected: desc.digest.clone(),
            actual,
        },
        _ => err,
    }
}

/// A layer in the store, the compressed bytes fetched for it, and whether it was reused.
type Ingested = (LayerRecord, u64, bool);

/// Fetch (or reuse), verify and unpack one layer.
#[allow(clippy::too_many_arguments)]
fn ingest_layer(
    store: &Store,
    src: &dyn BlobSource,
    object: &str,
    index: usize,
    desc: &Descriptor,
    diff_id: &Digest,
    budget: &SizeBudget,
    progress: &dyn Progress,
) -> Result<Ingested> {
    let record = |uncompressed_size| LayerRecord {
        digest: desc.digest.clone(),
        diff_id: diff_id.clone(),
        media_type: desc.media_type.clone(),
        size: desc.size,
        uncompressed_size,
    };
    progress.layer_start(index, &desc.digest, desc.size);
    let _lock = store.lock_digest(diff_id)?;
    let have_blob = store.has_blob(&desc.digest);
    if have_blob && store.has_layer(diff_id) {
        if let Some(size) = store.layer_size(diff_id)? {
            budget.charge(size)?;
            progress.layer_done(index, true);
            return Ok((record(size), 0, true));
        }
    }

    let layer_object = format!("{object} layer {}", desc.digest);
    let (reader, blob_tmp): (Box<dyn Read + Send>, _) = if have_blob {
        let p = store.blob_path(&desc.digest);
        (
            Box::new(File::open(&p).ctx(|| format!("open blob {}", desc.digest))?),
            None,
        )
    } else {
        let tmp = store.temp_path("blob");
        let f = File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        (src.open_blob(&desc.digest, desc.size)?, Some((tmp, f)))
    };
    let (blob_tmp_path, blob_file) = match blob_tmp {
        Some((p, f)) => (Some(p), Some(f)),
        None => (None, None),
    };
    let layer_tmp = store.temp_path("layer");
    let result = (|| {
        fs::create_dir(&layer_tmp).ctx(|| format!("create {}", layer_tmp.display()))?;
        let tee = Tee {
            inner: reader,
            file: blob_file,
            index,
            progress,
        };
        let blob_hash = HashingReader::new(tee);
        let (compression, sniffed) = sniff(blob_hash).ctx(|| format!("read {layer_object}"))?;
        // The bytes decide, not the media type: mislabelled layers are common in the wild.
        let mut decoder =
            Decoder::new(compression, sniffed).ctx(|| format!("read {layer_object}"))?;
        let mut tar_hash = HashingReader::new(&mut decoder);
        // On error, stop inflating at once: draining could mean inflating a bomb. Only the rest
        // of the compressed blob may be read, to tell a corrupt blob from a bad tar.
        if let Err(e) = unpack_layer(&mut tar_hash, &layer_tmp, &desc.digest.to_string(), budget) {
            let (_, blob_hash) = decoder.into_inner().into_inner();
            return Err(blame_corruption(e, blob_hash, desc, &layer_object));
        }
        let (_, actual_diff, tar_size) = tar_hash
            .finish()
            .map_err(|e| Error::malformed(&layer_object, format!("cannot decompress: {e}")))?;
        let (_, blob_hash) = decoder.into_inner().into_inner();
        let (tee, actual_digest, blob_size) = blob_hash
            .finish()
            .map_err(|e| Error::malformed(&layer_object, format!("read failed: {e}")))?;
        if actual_digest != desc.digest {
            return Err(Error::DigestMismatch {
                object: layer_object.clone(),
                expected: desc.digest.clone(),
                actual: actual_digest,
            });
        }
        if blob_size != desc.size {
            return Err(Error::SizeMismatch {
                object: layer_object.clone(),
                expected: desc.size,
                actual: blob_size,
            });
        }
        if &actual_diff != diff_id {
            return Err(Error::DigestMismatch {
                object: format!("{layer_object} uncompressed (diff_id)"),
                expected: diff_id.clone(),
                actual: actual_diff,
            });
        }
        drop(tee.file);
        // commit_layer's syncfs also syncs the blob written beside it under tmp/, so the blob
        // needs no sync of its own before it is renamed into place.
        store.commit_layer(&layer_tmp, diff_id, tar_size)?;
        if let Some(p) = &blob_tmp_path {
            store.commit_synced_blob(p, &desc.digest)?;
        }
        Ok(tar_size)
    })();
    match result {
        Ok(size) => {
            progress.layer_done(index, false);
            Ok((record(size), if have_blob { 0 } else { desc.size }, false))
        }
        Err(e) => {
            let _ = remove_tree(&layer_tmp);
            if let Some(p) = &blob_tmp_path {
                let _ = remove_tree(p);
            }
            Err(e)
        }
    }
}
