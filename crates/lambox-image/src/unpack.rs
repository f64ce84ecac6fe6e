//! Unpacking one layer tar into a directory in overlayfs "lowerdir" form.
//!
//! # Output form
//!
//! Every layer is unpacked on its own into an empty directory, which later becomes one `lowerdir`
//! of an overlay mount (and is read by [`crate::layered`]). OCI whiteouts are translated into what
//! overlayfs understands:
//!
//! * `dir/.wh.NAME` becomes a character device with device number 0/0 at `dir/NAME`. OCI says a
//!   whiteout only hides *lower* layers, so if this layer already put something at `NAME`, that
//!   stays (and if it is a directory, it is made opaque, since the lower one is deleted).
//! * `dir/.wh..wh..opq` sets the xattr `trusted.overlay.opaque` = `y` on `dir` (created if
//!   missing).
//! * Any other `.wh..wh.` name (such as AUFS's `.wh..wh.plnk`) is skipped.
//! * A non-directory entry replaces a whiteout like anything else; a *directory* that replaces a
//!   whiteout of the same layer is made opaque (the lower directory was deleted, then re-created).
//!
//! Regular files, directories, symlinks, hardlinks and FIFOs are created; character and block
//! devices are skipped and counted in [`UnpackStats::skipped_devices`] (Lambda has no use for
//! them and they are dangerous). PAX global headers and unknown entry types are skipped.
//!
//! Ownership (numeric uid/gid), the permission bits including setuid/setgid/sticky (anything above
//! `0o7777` is ignored), the mtime, and the PAX `SCHILY.xattr.security.capability` of regular
//! files are applied, in that order (chown before chmod, because chown clears setuid; the
//! capability after chown, because chown clears it too). Other xattrs are ignored. Hardlinks keep
//! the metadata of their target (they are the same inode). Directory mtimes are set at the very
//! end, after every child has been written, so that they survive (up to 64 MiB of remembered
//! paths; directories beyond that keep their unpack time). Parent directories that the layer does
//! not list are created as root-owned `0755` and keep the time they were created.
//!
//! Paths are resolved within this layer only, since lower layers are other directories: an entry
//! under a symlink that only a lower layer has is unpacked under a real directory of that name,
//! which overlayfs then shows instead of the lower symlink. Layers made by diffing file systems
//! record the resolved path instead, so they don't contain such entries.
//!
//! # Security
//!
//! The tar comes from strangers. Nothing is written outside `dest`, and every decision is ours:
//! the `tar` crate only parses (its own `unpack` is never used).
//!
//! * An entry whose path is absolute, has a `..` component, is empty (other than `.` — or `/`,
//!   as umoci names it — for a directory, which applies its metadata to `dest` itself), has a
//!   NUL byte, or is longer than
//!   the kernel allows, is refused with [`Error::HostileEntry`].
//! * Parent directories are opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`
//!   relative to a descriptor of `dest`. Symlinks that stay inside the layer are followed; one that
//!   leads outside (an absolute target, or too many `..`) makes the kernel fail with `EXDEV`, and
//!   the entry is refused ("path escapes the layer through a symlink").
//! * The final component is always created with `*at` calls relative to the parent descriptor,
//!   never following a symlink (`O_NOFOLLOW | O_EXCL`, `AT_SYMLINK_NOFOLLOW`). Whatever was there
//!   before is removed first (a directory recursively, again only with `*at` calls).
//! * A hardlink target is normalised like a path and must already exist in this layer, reached
//!   through the same `RESOLVE_BENEATH` lookup; it may not be a directory.
//! * Symlink *targets* are stored verbatim: an absolute or `..` target is fine as content, it is
//!   resolved in the container's root at run time, never by us.
//! * Every byte read from the stream is charged to the image's [`SizeBudget`]; once it is spent,
//!   reading stops at once and the caller gets [`Error::TooLarge`] (so a decompression bomb can't
//!   fill the disk). GNU sparse files are additionally charged their full logical size up front,
//!   since their holes are written out as zeros.
//! * The `tar` crate keeps GNU long names and PAX records in memory, so the headers of one entry
//!   may take at most 1 MiB of the stream; a larger one is refused as [`Error::Malformed`] before
//!   more is read.
//!
//! # End of archive
//!
//! A tar ends with two zero blocks, but some producers leave them out: umoci 0.4.7 (and any Go
//! program that forgets `tar.Writer.Close`) stops right after the last entry's data, without even
//! the zero padding that rounds that data up to a 512-byte block. So a stream that ends after the
//! last entry's data, anywhere between its end and the next block boundary, is accepted, as Go
//! based container tools accept it. A stream that ends anywhere else — inside a header, inside an
//! entry's data, after an extension header (long name, PAX) without its entry — is refused with
//! [`Error::Malformed`] naming the layer and the last entry. After the end-of-archive marker the
//! rest of the stream is read (and charged) to its end, so the caller's digest covers it.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt::Display;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{
    self as rfs, AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Stat, Timespec, Timestamps,
    Uid, XattrFlags,
};
use rustix::io::Errno;
use tar::EntryType;

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
            Err(Error::TooLarge {
                object: "image".to_string(),
                limit: self.limit,
            })
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
///
/// On success the stream has been read to its end. On error, reading stops at once; the caller
/// should remove `dest`, which may hold part of the layer.
pub fn unpack_layer(
    tar: impl Read,
    dest: &Path,
    layer: &str,
    budget: &SizeBudget,
) -> Result<UnpackStats> {
    let root = rfs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("layer {layer}: open {}", dest.display()), e.into()))?;
    let state = StreamState::default();
    let reader = Charged {
        inner: tar,
        budget,
        state: &state,
    };
    let mut unpacker = Unpacker {
        root,
        layer,
        budget,
        state: &state,
        stats: UnpackStats::default(),
        dir_times: HashMap::new(),
        dir_times_bytes: 0,
        buf: vec![0; COPY_BUFFER],
    };

    let mut archive = tar::Archive::new(reader);
    let mut entries = archive
        .entries()
        .map_err(|e| unpacker.stream_error(e, "cannot read the archive"))?;
    // Where the last entry's data ended in the stream, and that entry's name.
    let mut data_end = 0u64;
    let mut last: Option<String> = None;
    loop {
        // The tar crate reads long names and PAX records into memory: keep them small.
        state
            .header_limit
            .set(Some(state.pos.get().saturating_add(MAX_HEADER_BYTES)));
        let next = entries.next();
        state.header_limit.set(None);
        let mut entry = match next {
            None => break,
            Some(Ok(entry)) => entry,
            Some(Err(e)) => {
                let after = match &last {
                    Some(name) => format!("after entry {name:?}"),
                    None => "at the first entry".to_string(),
                };
                if state.headers_too_large.get() {
                    return Err(unpacker.malformed(format_args!(
                        "tar headers {after} take more than {MAX_HEADER_BYTES} bytes"
                    )));
                }
                let pos = state.pos.get();
                if state.eof.get()
                    && !state.failed.get()
                    && !state.over_budget.get()
                    && pos >= data_end
                    && pos <= round_up_to_block(data_end)
                {
                    // No end-of-archive marker, and maybe no padding after the last entry.
                    break;
                }
                let what = if state.eof.get() {
                    format!("truncated archive: the stream ends inside a header {after}")
                } else {
                    format!("bad tar header {after}")
                };
                return Err(unpacker.stream_error(e, &what));
            }
        };
        unpacker.stats.entries += 1;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        unpacker.entry(&mut entry, &name)?;
        data_end = state.pos.get();
        last = Some(name);
    }

    // Read whatever follows the end-of-archive marker (the second zero block, record padding):
    // the caller hashes the whole stream, and it is charged like everything else.
    let mut rest = archive.into_inner();
    loop {
        match rest.read(&mut unpacker.buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(unpacker.stream_error(e, "cannot read the end of the archive")),
        }
    }

    unpacker.set_dir_times()?;
    Ok(unpacker.stats)
}

/// Copy buffer for file contents.
const COPY_BUFFER: usize = 64 * 1024;
/// Tar block size.
const BLOCK: u64 = 512;
/// Most bytes one entry's headers may take: its own header plus GNU long name, long link name and
/// PAX records, which the `tar` crate holds in memory. Real ones take a few KiB.
const MAX_HEADER_BYTES: u64 = 1024 * 1024;
/// Most bytes of paths kept for setting directory mtimes at the end; past that, further
/// directories keep the time they were unpacked at.
const MAX_DIR_TIMES_BYTES: usize = 64 * 1024 * 1024;
/// Longest path the kernel accepts (`PATH_MAX` without the NUL).
const MAX_PATH: usize = 4095;
/// Longest file name the kernel accepts (`NAME_MAX`).
const MAX_NAME: usize = 255;
/// How often to retry an `openat2` that failed with `EAGAIN` (a rename elsewhere raced a `..`).
const RESOLVE_RETRIES: usize = 16;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const CAPABILITY_PAX_KEY: &[u8] = b"SCHILY.xattr.security.capability";
const CAPABILITY_XATTR: &str = "security.capability";

fn round_up_to_block(n: u64) -> u64 {
    n.div_ceil(BLOCK).saturating_mul(BLOCK)
}

/// `s` with control characters escaped, so messages stay on one line.
fn one_line(s: impl Display) -> String {
    let s = s.to_string();
    if !s.chars().any(char::is_control) {
        return s;
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// What the charging reader saw, shared with the unpacker (the reader itself belongs to the
/// `tar::Archive`).
#[derive(Debug, Default)]
struct StreamState {
    /// Bytes read from the stream so far.
    pos: Cell<u64>,
    /// The stream has ended.
    eof: Cell<bool>,
    /// The budget is spent; every further read fails.
    over_budget: Cell<bool>,
    /// The stream itself failed (decompression or I/O error).
    failed: Cell<bool>,
    /// While the `tar` crate reads headers (which it keeps in memory: long names, PAX records),
    /// the stream position it may not pass.
    header_limit: Cell<Option<u64>>,
    /// The header limit was hit.
    headers_too_large: Cell<bool>,
}

/// A reader that charges every byte it reads to the budget and records where it is.
struct Charged<'a, R> {
    inner: R,
    budget: &'a SizeBudget,
    state: &'a StreamState,
}

impl<R: Read> Read for Charged<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.state.over_budget.get() {
            return Err(io::Error::other("size budget exhausted"));
        }
        if let Some(limit) = self.state.header_limit.get() {
            let room = limit.saturating_sub(self.state.pos.get());
            if room == 0 && !buf.is_empty() {
                self.state.headers_too_large.set(true);
                return Err(io::Error::other("tar headers too large"));
            }
            let keep = usize::try_from(room).unwrap_or(usize::MAX).min(buf.len());
            return self.read_charged(&mut buf[..keep]);
        }
        self.read_charged(buf)
    }
}

impl<R: Read> Charged<'_, R> {
    fn read_charged(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = loop {
            match self.inner.read(buf) {
                Ok(n) => break n.min(buf.len()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.state.failed.set(true);
                    return Err(e);
                }
            }
        };
        if n == 0 {
            if !buf.is_empty() {
                self.state.eof.set(true);
            }
            return Ok(0);
        }
        self.state
            .pos
            .set(self.state.pos.get().saturating_add(n as u64));
        if self.budget.charge(n as u64).is_err() {
            self.state.over_budget.set(true);
            return Err(io::Error::other("size budget exhausted"));
        }
        Ok(n)
    }
}

/// A path split into its parent (relative to `dest`, maybe empty) and final name (`None` for
/// `dest` itself).
struct Target {
    parent: PathBuf,
    name: Option<PathBuf>,
}

/// Metadata from a header.
#[derive(Debug, Clone, Copy)]
struct Meta {
    uid: Uid,
    gid: Gid,
    mode: Mode,
    mtime: i64,
}

impl Meta {
    fn times(&self) -> Timestamps {
        let t = Timespec {
            tv_sec: self.mtime,
            tv_nsec: 0,
        };
        Timestamps {
            last_access: t,
            last_modification: t,
        }
    }
}

/// What was at a path before an entry replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Previous {
    Nothing,
    /// A directory, kept.
    Directory,
    /// Something removed; `whiteout` if it was a whiteout.
    Removed {
        whiteout: bool,
    },
}

struct Unpacker<'a> {
    /// `dest`, opened read-only as a directory.
    root: OwnedFd,
    layer: &'a str,
    budget: &'a SizeBudget,
    state: &'a StreamState,
    stats: UnpackStats,
    /// Directory mtimes, applied at the end (relative path → seconds).
    dir_times: HashMap<PathBuf, i64>,
    /// Memory taken by the paths in `dir_times`, roughly.
    dir_times_bytes: usize,
    buf: Vec<u8>,
}

impl Unpacker<'_> {
    fn object(&self) -> String {
        format!("layer {}", self.layer)
    }

    fn hostile(&self, entry: &str, reason: impl Into<String>) -> Error {
        Error::HostileEntry {
            layer: self.layer.to_string(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn malformed(&self, reason: impl Display) -> Error {
        Error::malformed(self.object(), one_line(reason))
    }

    fn io_err(&self, entry: &str, what: &str, e: impl Into<io::Error>) -> Error {
        Error::io(
            format!("layer {}: entry {entry:?}: {what}", self.layer),
            e.into(),
        )
    }

    /// An error while reading the stream: the budget, the stream itself, or the tar format.
    fn stream_error(&self, e: io::Error, what: &str) -> Error {
        if self.state.over_budget.get() {
            Error::TooLarge {
                object: "image".to_string(),
                limit: self.budget.limit(),
            }
        } else if self.state.failed.get() {
            Error::io(format!("layer {}: reading the layer stream", self.layer), e)
        } else {
            self.malformed(format_args!("{what}: {e}"))
        }
    }

    /// Unpack one entry and read its data to the end.
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, name: &str) -> Result<()> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // Its name is arbitrary (GNU tar uses an absolute one), and it describes nothing we use.
            return self.copy_data(entry, None, name);
        }
        let target = self.normalise(&entry.path_bytes(), name, "path")?;

        if let Some(file_name) = &target.name {
            let bytes = file_name.as_os_str().as_bytes();
            if let Some(hidden) = bytes.strip_prefix(WHITEOUT_PREFIX) {
                if bytes == WHITEOUT_OPAQUE {
                    let parent = self.open_parent(&target.parent, name)?;
                    let dir = rfs::openat(
                        &parent,
                        ".",
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| self.io_err(name, "open directory to make it opaque", e))?;
                    self.set_opaque(&dir, name)?;
                } else if bytes.starts_with(WHITEOUT_META_PREFIX) {
                    // AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not for us.
                } else {
                    if hidden.is_empty() || hidden == b"." || hidden == b".." {
                        return Err(self.hostile(name, "whiteout of an invalid name"));
                    }
                    let parent = self.open_parent(&target.parent, name)?;
                    self.whiteout(&parent, OsStr::from_bytes(hidden), name)?;
                }
                return self.copy_data(entry, None, name);
            }
        }

        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.regular(entry, &target, name)
            }
            EntryType::Directory => self.directory(entry, &target, name),
            EntryType::Symlink => self.symlink(entry, &target, name),
            EntryType::Link => self.hardlink(entry, &target, name),
            EntryType::Fifo => self.fifo(entry, &target, name),
            EntryType::Char | EntryType::Block => {
                self.stats.skipped_devices += 1;
                self.copy_data(entry, None, name)
            }
            other => {
                tracing::warn!(
                    layer = self.layer,
                    entry = %one_line(name),
                    "skipping tar entry of unknown type {:?}",
                    other.as_byte() as char
                );
                self.copy_data(entry, None, name)
            }
        }
    }

    /// Check and normalise an entry path (or hardlink target): relative, no `..`, no NUL, not
    /// too long; `.` components and repeated slashes dropped.
    fn normalise(&self, raw: &[u8], entry: &str, what: &str) -> Result<Target> {
        if raw.contains(&0) {
            return Err(self.hostile(entry, format!("{what} contains a nul byte")));
        }
        // umoci names the layer's root directory `/`: that one absolute name means the root
        // itself (like `.`), never a path on the host.
        if what == "path" && !raw.is_empty() && raw.iter().all(|b| *b == b'/') {
            return Ok(Target {
                parent: PathBuf::new(),
                name: None,
            });
        }
        let mut parts: Vec<&OsStr> = Vec::new();
        for component in Path::new(OsStr::from_bytes(raw)).components() {
            match component {
                Component::Prefix(_) | Component::RootDir => {
                    return Err(self.hostile(entry, format!("{what} is absolute")));
                }
                Component::ParentDir => {
                    return Err(self.hostile(entry, format!("{what} contains a `..` component")));
                }
                Component::CurDir => {}
                Component::Normal(part) => {
                    if part.len() > MAX_NAME {
                        return Err(self.hostile(
                            entry,
                            format!("{what} has a component longer than {MAX_NAME} bytes"),
                        ));
                    }
                    parts.push(part);
                }
            }
        }
        let total: usize = parts.iter().map(|p| p.len() + 1).sum();
        if total > MAX_PATH {
            return Err(self.hostile(entry, format!("{what} is longer than {MAX_PATH} bytes")));
        }
        let name = parts.pop().map(PathBuf::from);
        Ok(Target {
            parent: parts.iter().collect(),
            name,
        })
    }

    fn meta(&self, header: &tar::Header, entry: &str) -> Result<Meta> {
        // A numeric field left blank (some minimal writers do) reads as 0, as GNU tar reads it.
        let numeric = |field: &str, raw: &[u8], value: io::Result<u64>| match value {
            Ok(v) => Ok(v),
            Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
            Err(e) => Err(self.malformed(format_args!("entry {entry:?}: bad {field}: {e}"))),
        };
        let id = |v: u64, field: &str| {
            u32::try_from(v)
                .ok()
                .filter(|v| *v != u32::MAX)
                .ok_or_else(|| {
                    self.malformed(format_args!("entry {entry:?}: {field} {v} is out of range"))
                })
        };
        let old = header.as_old();
        let mode = numeric("mode", &old.mode, header.mode().map(u64::from))? & 0o7777;
        let uid = id(numeric("uid", &old.uid, header.uid())?, "uid")?;
        let gid = id(numeric("gid", &old.gid, header.gid())?, "gid")?;
        let mtime = numeric("mtime", &old.mtime, header.mtime())?;
        Ok(Meta {
            uid: Uid::from_raw(uid),
            gid: Gid::from_raw(gid),
            // Masked to 0o7777 above, so it fits.
            mode: Mode::from_bits_retain(u32::try_from(mode).unwrap_or(0)),
            mtime: i64::try_from(mtime).unwrap_or(i64::MAX),
        })
    }

    /// `openat2` beneath `dest`, retrying the harmless `EAGAIN`.
    fn resolve(&self, path: &Path, flags: OFlags, resolve: ResolveFlags) -> Result<OwnedFd, Errno> {
        let path = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        let mut tries = 0;
        loop {
            match rfs::openat2(
                &self.root,
                path,
                flags | OFlags::CLOEXEC,
                Mode::empty(),
                resolve,
            ) {
                Err(Errno::AGAIN) if tries < RESOLVE_RETRIES => tries += 1,
                other => return other,
            }
        }
    }

    /// Open a directory inside `dest` for use as a parent (`O_PATH`), following only symlinks
    /// that stay inside `dest`.
    fn resolve_dir(&self, path: &Path) -> Result<OwnedFd, Errno> {
        self.resolve(
            path,
            OFlags::PATH | OFlags::DIRECTORY,
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Map a failed lookup of the parent of `what` ("path" or "hardlink target").
    fn resolve_error(&self, e: Errno, entry: &str, what: &str) -> Error {
        match e {
            Errno::XDEV => {
                self.hostile(entry, format!("{what} escapes the layer through a symlink"))
            }
            Errno::LOOP => {
                self.hostile(entry, format!("too many levels of symlinks in the {what}"))
            }
            Errno::NOTDIR => {
                self.hostile(entry, format!("a parent in the {what} is not a directory"))
            }
            Errno::NOENT => self.hostile(
                entry,
                format!("a parent in the {what} is a dangling symlink"),
            ),
            Errno::NAMETOOLONG => self.hostile(entry, format!("{what} is too long")),
            e => self.io_err(entry, "open parent directory", e),
        }
    }

    /// Open the parent directory `rel` of an entry, creating missing directories (root-owned,
    /// `0755`).
    fn open_parent(&self, rel: &Path, entry: &str) -> Result<OwnedFd> {
        match self.resolve_dir(rel) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT | Errno::NOTDIR) => {}
            Err(e) => return Err(self.resolve_error(e, entry, "path")),
        }
        // Walk down one component at a time, creating what is missing.
        let mut current = self
            .resolve_dir(Path::new(""))
            .map_err(|e| self.resolve_error(e, entry, "path"))?;
        let mut prefix = PathBuf::new();
        for component in rel.components() {
            let part = component.as_os_str();
            prefix.push(part);
            let next = match self.resolve_dir(&prefix) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rfs::mkdirat(&current, part, Mode::from_bits_retain(0o755)) {
                        // mkdirat honours the umask; make it 0755 whatever the umask is.
                        Ok(()) => rfs::chmodat(
                            &current,
                            part,
                            Mode::from_bits_retain(0o755),
                            AtFlags::empty(),
                        )
                        .map_err(|e| self.io_err(entry, "set parent directory mode", e))?,
                        // A dangling symlink is in the way; the lookup below says so.
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(self.io_err(entry, "create parent directory", e)),
                    }
                    self.resolve_dir(&prefix)
                        .map_err(|e| self.resolve_error(e, entry, "path"))?
                }
                Err(Errno::NOTDIR) if is_whiteout(&current, part) => {
                    // This layer deleted the lower directory and now puts things in it: it is a
                    // new, opaque directory.
                    rfs::unlinkat(&current, part, AtFlags::empty())
                        .map_err(|e| self.io_err(entry, "remove whiteout", e))?;
                    rfs::mkdirat(&current, part, Mode::from_bits_retain(0o755))
                        .map_err(|e| self.io_err(entry, "create parent directory", e))?;
                    rfs::chmodat(
                        &current,
                        part,
                        Mode::from_bits_retain(0o755),
                        AtFlags::empty(),
                    )
                    .map_err(|e| self.io_err(entry, "set parent directory mode", e))?;
                    let fd = self
                        .resolve_dir(&prefix)
                        .map_err(|e| self.resolve_error(e, entry, "path"))?;
                    let dir = rfs::openat(
                        &fd,
                        ".",
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| self.io_err(entry, "open parent directory", e))?;
                    self.set_opaque(&dir, entry)?;
                    fd
                }
                Err(e) => return Err(self.resolve_error(e, entry, "path")),
            };
            current = next;
        }
        Ok(current)
    }

    fn set_opaque(&self, dir: &OwnedFd, entry: &str) -> Result<()> {
        rfs::fsetxattr(dir, OPAQUE_XATTR, b"y", XattrFlags::empty())
            .map_err(|e| self.io_err(entry, "set xattr trusted.overlay.opaque", e))
    }

    /// Make room for a new entry at `name` in `parent`: remove what is there, unless it is a
    /// directory and `keep_dir`.
    fn clear(
        &self,
        parent: &OwnedFd,
        name: &Path,
        keep_dir: bool,
        entry: &str,
    ) -> Result<Previous> {
        let stat = match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => return Ok(Previous::Nothing),
            Err(e) => return Err(self.io_err(entry, "inspect existing file", e)),
        };
        if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
            if keep_dir {
                return Ok(Previous::Directory);
            }
            remove_tree(parent, name.as_os_str())
                .map_err(|e| self.io_err(entry, "remove existing directory", e))?;
            Ok(Previous::Removed { whiteout: false })
        } else {
            rfs::unlinkat(parent, name, AtFlags::empty())
                .map_err(|e| self.io_err(entry, "remove existing file", e))?;
            Ok(Previous::Removed {
                whiteout: stat_is_whiteout(&stat),
            })
        }
    }

    /// `dir/.wh.NAME`: a 0/0 character device at `NAME`, unless this layer put something there.
    fn whiteout(&self, parent: &OwnedFd, hidden: &OsStr, entry: &str) -> Result<()> {
        match rfs::statat(parent, hidden, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => rfs::mknodat(
                parent,
                hidden,
                FileType::CharacterDevice,
                Mode::empty(),
                rfs::makedev(0, 0),
            )
            .map_err(|e| self.io_err(entry, "create whiteout", e)),
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                // The layer's own directory stays, but what was below it is deleted.
                let dir = rfs::openat(
                    parent,
                    hidden,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.io_err(entry, "open directory to make it opaque", e))?;
                self.set_opaque(&dir, entry)
            }
            // A file of this layer (or another whiteout): whiteouts only hide lower layers.
            Ok(_) => Ok(()),
            Err(e) => Err(self.io_err(entry, "inspect existing file", e)),
        }
    }

    /// Read the entry's data to its end, writing it to `out` if given, and check it was all there.
    fn copy_data<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        mut out: Option<&mut File>,
        name: &str,
    ) -> Result<()> {
        let expected = entry.size();
        let mut got = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n.min(self.buf.len()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(self.stream_error(e, &format!("entry {name:?}")));
                }
            };
            got = got.saturating_add(n as u64);
            if let Some(file) = out.as_mut() {
                let chunk = self.buf.get(..n).unwrap_or_default();
                file.write_all(chunk)
                    .map_err(|e| self.io_err(name, "write file", e))?;
            }
        }
        if got != expected {
            return Err(self.malformed(format_args!(
                "truncated archive: the stream ends inside the data of entry {name:?} \
                 ({got} of {expected} bytes)"
            )));
        }
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        target: &Target,
        name: &str,
    ) -> Result<()> {
        let Some(file_name) = &target.name else {
            return Err(self.hostile(name, "empty path"));
        };
        let meta = self.meta(entry.header(), name)?;
        let capability = self.capability(entry, name)?;
        if entry.header().entry_type().is_gnu_sparse() {
            // Holes are written out as zeros that never passed through the stream.
            self.budget.charge(entry.size())?;
        }
        let parent = self.open_parent(&target.parent, name)?;
        self.clear(&parent, file_name, false, name)?;
        let fd = rfs::openat(
            &parent,
            file_name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_bits_retain(0o600),
        )
        .map_err(|e| self.io_err(name, "create file", e))?;
        let mut file = File::from(fd);
        self.copy_data(entry, Some(&mut file), name)?;
        rfs::fchown(&file, Some(meta.uid), Some(meta.gid))
            .map_err(|e| self.io_err(name, "set owner", e))?;
        rfs::fchmod(&file, meta.mode).map_err(|e| self.io_err(name, "set mode", e))?;
        if let Some(capability) = capability {
            rfs::fsetxattr(&file, CAPABILITY_XATTR, &capability, XattrFlags::empty())
                .map_err(|e| self.io_err(name, "set xattr security.capability", e))?;
        }
        rfs::futimens(&file, &meta.times()).map_err(|e| self.io_err(name, "set times", e))?;
        Ok(())
    }

    /// The PAX `SCHILY.xattr.security.capability` of the entry, if any.
    fn capability<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<Option<Vec<u8>>> {
        let extensions = match entry.pax_extensions() {
            Ok(Some(extensions)) => extensions,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.stream_error(e, &format!("pax header of entry {name:?}"))),
        };
        for extension in extensions {
            let extension = extension.map_err(|e| {
                self.malformed(format_args!("bad pax header of entry {name:?}: {e}"))
            })?;
            if extension.key_bytes() == CAPABILITY_PAX_KEY {
                return Ok(Some(extension.value_bytes().to_vec()));
            }
        }
        Ok(None)
    }

    fn directory<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        target: &Target,
        name: &str,
    ) -> Result<()> {
        let meta = self.meta(entry.header(), name)?;
        let (dir, rel) = match &target.name {
            None => {
                // `.`: the layer's root.
                let dir = rfs::openat(
                    &self.root,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.io_err(name, "open layer root", e))?;
                (dir, PathBuf::new())
            }
            Some(file_name) => {
                let parent = self.open_parent(&target.parent, name)?;
                let previous = self.clear(&parent, file_name, true, name)?;
                if previous != Previous::Directory {
                    rfs::mkdirat(&parent, file_name, Mode::from_bits_retain(0o700))
                        .map_err(|e| self.io_err(name, "create directory", e))?;
                }
                let dir = rfs::openat(
                    &parent,
                    file_name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.io_err(name, "open directory", e))?;
                if previous == (Previous::Removed { whiteout: true }) {
                    self.set_opaque(&dir, name)?;
                }
                (dir, target.parent.join(file_name))
            }
        };
        rfs::fchown(&dir, Some(meta.uid), Some(meta.gid))
            .map_err(|e| self.io_err(name, "set owner", e))?;
        rfs::fchmod(&dir, meta.mode).map_err(|e| self.io_err(name, "set mode", e))?;
        if let Some(mtime) = self.dir_times.get_mut(&rel) {
            *mtime = meta.mtime;
        } else if self.dir_times_bytes < MAX_DIR_TIMES_BYTES {
            self.dir_times_bytes += rel.as_os_str().len() + 64;
            self.dir_times.insert(rel, meta.mtime);
            if self.dir_times_bytes >= MAX_DIR_TIMES_BYTES {
                tracing::warn!(
                    layer = self.layer,
                    "too many directories: later ones keep their unpack time as mtime"
                );
            }
        }
        self.copy_data(entry, None, name)
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        target: &Target,
        name: &str,
    ) -> Result<()> {
        let Some(file_name) = &target.name else {
            return Err(self.hostile(name, "empty path"));
        };
        let meta = self.meta(entry.header(), name)?;
        let link = entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        if link.is_empty() {
            return Err(self.malformed(format_args!("symlink {name:?} has no target")));
        }
        if link.contains(&0) {
            return Err(self.hostile(name, "symlink target contains a nul byte"));
        }
        let parent = self.open_parent(&target.parent, name)?;
        self.clear(&parent, file_name, false, name)?;
        rfs::symlinkat(link.as_slice(), &parent, file_name)
            .map_err(|e| self.io_err(name, "create symlink", e))?;
        rfs::chownat(
            &parent,
            file_name,
            Some(meta.uid),
            Some(meta.gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.io_err(name, "set owner", e))?;
        rfs::utimensat(&parent, file_name, &meta.times(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.io_err(name, "set times", e))?;
        self.copy_data(entry, None, name)
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        target: &Target,
        name: &str,
    ) -> Result<()> {
        let Some(file_name) = &target.name else {
            return Err(self.hostile(name, "empty path"));
        };
        let link = entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        let linked = self.normalise(&link, name, "hardlink target")?;
        let Some(linked_name) = &linked.name else {
            return Err(self.hostile(name, "hardlink target is empty"));
        };
        let missing = || self.hostile(name, "hardlink target does not exist in this layer");
        let linked_parent = match self.resolve_dir(&linked.parent) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Err(missing()),
            Err(e) => return Err(self.resolve_error(e, name, "hardlink target")),
        };
        let linked_stat = match rfs::statat(&linked_parent, linked_name, AtFlags::SYMLINK_NOFOLLOW)
        {
            Ok(stat) => stat,
            Err(Errno::NOENT) => return Err(missing()),
            Err(e) => return Err(self.io_err(name, "inspect hardlink target", e)),
        };
        if FileType::from_raw_mode(linked_stat.st_mode) == FileType::Directory {
            return Err(self.hostile(name, "hardlink target is a directory"));
        }
        let parent = self.open_parent(&target.parent, name)?;
        let same = rfs::statat(&parent, file_name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|s| s.st_dev == linked_stat.st_dev && s.st_ino == linked_stat.st_ino);
        if !same {
            self.clear(&parent, file_name, false, name)?;
            rfs::linkat(
                &linked_parent,
                linked_name,
                &parent,
                file_name,
                AtFlags::empty(),
            )
            .map_err(|e| self.io_err(name, "create hardlink", e))?;
        }
        self.copy_data(entry, None, name)
    }

    fn fifo<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        target: &Target,
        name: &str,
    ) -> Result<()> {
        let Some(file_name) = &target.name else {
            return Err(self.hostile(name, "empty path"));
        };
        let meta = self.meta(entry.header(), name)?;
        let parent = self.open_parent(&target.parent, name)?;
        self.clear(&parent, file_name, false, name)?;
        rfs::mknodat(
            &parent,
            file_name,
            FileType::Fifo,
            Mode::from_bits_retain(0o600),
            0,
        )
        .map_err(|e| self.io_err(name, "create fifo", e))?;
        rfs::chownat(
            &parent,
            file_name,
            Some(meta.uid),
            Some(meta.gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.io_err(name, "set owner", e))?;
        // We just created this FIFO in a directory only we write to: no symlink can be there.
        rfs::chmodat(&parent, file_name, meta.mode, AtFlags::empty())
            .map_err(|e| self.io_err(name, "set mode", e))?;
        rfs::utimensat(&parent, file_name, &meta.times(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.io_err(name, "set times", e))?;
        self.copy_data(entry, None, name)
    }

    /// Set the recorded directory mtimes, now that nothing will be written into them any more.
    /// A directory that was since replaced, or that can only be reached through a symlink now, is
    /// skipped.
    fn set_dir_times(&self) -> Result<()> {
        for (rel, mtime) in &self.dir_times {
            let dir = match self.resolve(
                rel,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            ) {
                Ok(dir) => dir,
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV) => continue,
                Err(e) => return Err(self.io_err(&rel.to_string_lossy(), "open directory", e)),
            };
            let t = Timespec {
                tv_sec: *mtime,
                tv_nsec: 0,
            };
            let times = Timestamps {
                last_access: t,
                last_modification: t,
            };
            rfs::futimens(&dir, &times)
                .map_err(|e| self.io_err(&rel.to_string_lossy(), "set times", e))?;
        }
        Ok(())
    }
}

fn stat_is_whiteout(stat: &Stat) -> bool {
    FileType::from_raw_mode(stat.st_mode) == FileType::CharacterDevice && stat.st_rdev == 0
}

fn is_whiteout(parent: &OwnedFd, name: &OsStr) -> bool {
    rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|s| stat_is_whiteout(&s))
}

/// Remove the directory `name` in `parent` and everything in it, with `*at` calls only and
/// without following symlinks.
fn remove_tree(parent: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let dir = rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut children = Vec::new();
    for child in rfs::Dir::read_from(&dir)? {
        let child = child?;
        let child_name = child.file_name().to_bytes();
        if child_name == b"." || child_name == b".." {
            continue;
        }
        let is_dir = match child.file_type() {
            FileType::Directory => true,
            FileType::Unknown => {
                let stat = rfs::statat(&dir, child.file_name(), AtFlags::SYMLINK_NOFOLLOW)?;
                FileType::from_raw_mode(stat.st_mode) == FileType::Directory
            }
            _ => false,
        };
        children.push((child_name.to_vec(), is_dir));
    }
    for (child_name, is_dir) in children {
        let child_name = OsStr::from_bytes(&child_name);
        if is_dir {
            remove_tree(&dir, child_name)?;
        } else {
            rfs::unlinkat(&dir, child_name, AtFlags::empty())?;
        }
    }
    rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Cursor;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tar::Header;

    const LAYER: &str = "sha256:0123456789ab";
    const MTIME: u64 = 1_600_000_000;

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// Ownership, device nodes and `trusted.*` xattrs need root; lambox runs as root.
    macro_rules! require_root {
        () => {
            if !is_root() {
                eprintln!("skipped: needs root");
                return;
            }
        };
    }

    /// A scratch area: `dest` to unpack into, and `outside`, a sentinel directory next to it
    /// holding one file, `secret`.
    struct Scratch {
        tmp: tempfile::TempDir,
        dest: PathBuf,
        outside: PathBuf,
        secret_mode: u32,
    }

    fn scratch() -> Scratch {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dest = tmp.path().join("layer");
        let outside = tmp.path().join("outside");
        fs::create_dir(&dest).expect("create dest");
        fs::create_dir(&outside).expect("create outside");
        fs::write(outside.join("secret"), b"secret").expect("write secret");
        let secret_mode = fs::metadata(outside.join("secret"))
            .expect("stat secret")
            .mode();
        Scratch {
            tmp,
            dest,
            outside,
            secret_mode,
        }
    }

    impl Scratch {
        fn unpack(&self, tar: &[u8]) -> Result<UnpackStats> {
            unpack_layer(tar, &self.dest, LAYER, &SizeBudget::new(1 << 30))
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dest.join(rel)
        }

        /// Nothing was created, changed or linked outside `dest`.
        fn assert_outside_untouched(&self) {
            let mut top: Vec<_> = fs::read_dir(self.tmp.path())
                .expect("read tmp")
                .map(|e| e.expect("entry").file_name())
                .collect();
            top.sort();
            assert_eq!(top, ["layer", "outside"]);
            let inside: Vec<_> = fs::read_dir(&self.outside)
                .expect("read outside")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(inside, ["secret"]);
            let secret = self.outside.join("secret");
            assert_eq!(fs::read(&secret).expect("read secret"), b"secret");
            let meta = fs::symlink_metadata(&secret).expect("stat secret");
            assert_eq!(meta.nlink(), 1, "secret was hardlinked");
            assert_eq!(meta.mode(), self.secret_mode, "secret mode changed");
            let me = (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            );
            assert_eq!((meta.uid(), meta.gid()), me, "secret owner changed");
        }
    }

    /// A header with raw name and link name bytes (so hostile names can be written).
    fn header(name: &[u8], kind: EntryType, size: u64, mode: u32, link: &[u8]) -> Header {
        let mut h = Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(name);
            old.linkname = [0; 100];
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_cksum();
        h
    }

    /// A PAX extended header body.
    fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (key, value) in records {
            let body = 1 + key.len() + 1 + value.len() + 1;
            let mut len = body + 1;
            loop {
                let next = len.to_string().len() + body;
                if next == len {
                    break;
                }
                len = next;
            }
            out.extend_from_slice(format!("{len} {key}=").as_bytes());
            out.extend_from_slice(value);
            out.push(b'\n');
        }
        out
    }

    /// A tar stream built block by block.
    #[derive(Default)]
    struct TarBuf(Vec<u8>);

    impl TarBuf {
        fn raw(mut self, h: &Header, data: &[u8]) -> Self {
            self.0.extend_from_slice(h.as_bytes());
            self.0.extend_from_slice(data);
            self.pad()
        }

        fn pad(mut self) -> Self {
            while self.0.len() % 512 != 0 {
                self.0.push(0);
            }
            self
        }

        fn with(
            self,
            name: &str,
            kind: EntryType,
            data: &[u8],
            link: &str,
            f: impl FnOnce(&mut Header),
        ) -> Self {
            let mut h = header(
                name.as_bytes(),
                kind,
                data.len() as u64,
                0o644,
                link.as_bytes(),
            );
            if kind == EntryType::Directory {
                h.set_mode(0o755);
            }
            f(&mut h);
            h.set_cksum();
            self.raw(&h, data)
        }

        fn file(self, name: &str, data: &[u8]) -> Self {
            self.with(name, EntryType::Regular, data, "", |_| {})
        }

        fn dir(self, name: &str) -> Self {
            self.with(name, EntryType::Directory, b"", "", |_| {})
        }

        fn symlink(self, name: &str, target: &str) -> Self {
            self.with(name, EntryType::Symlink, b"", target, |h| h.set_mode(0o777))
        }

        fn hardlink(self, name: &str, target: &str) -> Self {
            self.with(name, EntryType::Link, b"", target, |_| {})
        }

        fn pax(self, records: &[(&str, &[u8])]) -> Self {
            let body = pax(records);
            let h = header(
                b"PaxHeaders/x",
                EntryType::XHeader,
                body.len() as u64,
                0o644,
                b"",
            );
            self.raw(&h, &body)
        }

        fn finish(mut self) -> Vec<u8> {
            self.0.extend_from_slice(&[0; 1024]);
            self.0
        }
    }

    /// Symlinks to put in a layer: (name, target).
    type Links<'a> = &'a [(&'a str, &'a str)];

    fn hostile_reason(result: Result<UnpackStats>) -> String {
        match result {
            Err(Error::HostileEntry { layer, reason, .. }) => {
                assert_eq!(layer, LAYER);
                reason
            }
            other => panic!("expected a hostile entry error, got {other:?}"),
        }
    }

    fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 256];
        match rfs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => Some(buf[..n].to_vec()),
            Err(Errno::NODATA) => None,
            Err(e) => panic!("getxattr {}: {e}", path.display()),
        }
    }

    #[test]
    fn basic_layer() {
        let s = scratch();
        let tar = TarBuf::default()
            .dir("usr/")
            .dir("usr/bin/")
            .with("usr/bin/hello", EntryType::Regular, b"hi\n", "", |h| {
                h.set_mode(0o755)
            })
            .symlink("usr/bin/hi", "hello")
            .hardlink("usr/bin/hello2", "usr/bin/hello")
            .with("run/pipe", EntryType::Fifo, b"", "", |h| h.set_mode(0o620))
            .symlink("abs", "/etc/passwd")
            .file("./empty", b"")
            .finish();
        let stats = s.unpack(&tar).expect("unpack");
        assert_eq!(stats.entries, 8);
        assert_eq!(stats.skipped_devices, 0);

        let hello = s.path("usr/bin/hello");
        assert_eq!(fs::read(&hello).expect("read"), b"hi\n");
        let meta = fs::symlink_metadata(&hello).expect("stat");
        assert_eq!(meta.mode() & 0o7777, 0o755);
        assert_eq!(meta.mtime(), MTIME as i64);
        assert_eq!(meta.nlink(), 2);
        let hello2 = fs::symlink_metadata(s.path("usr/bin/hello2")).expect("stat");
        assert_eq!(hello2.ino(), meta.ino());
        assert_eq!(
            fs::read_link(s.path("usr/bin/hi")).expect("readlink"),
            Path::new("hello")
        );
        assert_eq!(
            fs::read(s.path("usr/bin/hi")).expect("read via link"),
            b"hi\n"
        );
        // An absolute symlink target is stored verbatim, never followed by us.
        assert_eq!(
            fs::read_link(s.path("abs")).expect("readlink"),
            Path::new("/etc/passwd")
        );
        let pipe = fs::symlink_metadata(s.path("run/pipe")).expect("stat");
        assert!(pipe.file_type().is_fifo());
        assert_eq!(pipe.mode() & 0o7777, 0o620);
        // A parent the layer does not list is created 0755.
        let run = fs::symlink_metadata(s.path("run")).expect("stat");
        assert!(run.is_dir());
        assert_eq!(run.mode() & 0o7777, 0o755);
        assert_eq!(fs::read(s.path("empty")).expect("read"), b"");
        // Directory mtimes are set after their children were written.
        let bin = fs::symlink_metadata(s.path("usr/bin")).expect("stat");
        assert_eq!(bin.mtime(), MTIME as i64);
        s.assert_outside_untouched();
    }

    #[test]
    fn ownership_and_special_bits_are_kept() {
        require_root!();
        let s = scratch();
        let tar = TarBuf::default()
            .with("./", EntryType::Directory, b"", "", |h| h.set_mode(0o750))
            .with("bin/su", EntryType::Regular, b"#!", "", |h| {
                h.set_mode(0o4755);
                h.set_uid(1000);
                h.set_gid(2000);
            })
            .with("bin/wall", EntryType::Regular, b"#!", "", |h| {
                h.set_mode(0o2755);
                h.set_gid(5);
            })
            .with("tmp/", EntryType::Directory, b"", "", |h| {
                h.set_mode(0o1777)
            })
            .with("home/u/", EntryType::Directory, b"", "", |h| {
                h.set_mode(0o700);
                h.set_uid(1000);
                h.set_gid(1000);
            })
            .with("link", EntryType::Symlink, b"", "bin/su", |h| {
                h.set_uid(42);
                h.set_gid(43);
            })
            .with("big", EntryType::Regular, b"", "", |h| h.set_mode(0o170644))
            .finish();
        s.unpack(&tar).expect("unpack");
        let su = fs::symlink_metadata(s.path("bin/su")).expect("stat");
        assert_eq!(
            (su.uid(), su.gid(), su.mode() & 0o7777),
            (1000, 2000, 0o4755)
        );
        let wall = fs::symlink_metadata(s.path("bin/wall")).expect("stat");
        assert_eq!((wall.gid(), wall.mode() & 0o7777), (5, 0o2755));
        let tmp = fs::symlink_metadata(s.path("tmp")).expect("stat");
        assert_eq!(tmp.mode() & 0o7777, 0o1777);
        let home = fs::symlink_metadata(s.path("home/u")).expect("stat");
        assert_eq!(
            (home.uid(), home.gid(), home.mode() & 0o7777),
            (1000, 1000, 0o700)
        );
        let link = fs::symlink_metadata(s.path("link")).expect("stat");
        assert!(link.file_type().is_symlink());
        assert_eq!((link.uid(), link.gid()), (42, 43));
        assert_eq!(link.mtime(), MTIME as i64);
        // Mode bits above 0o7777 are ignored.
        let big = fs::symlink_metadata(s.path("big")).expect("stat");
        assert!(big.is_file());
        assert_eq!(big.mode() & 0o7777, 0o644);
        // `.` applies to the layer root.
        let root = fs::symlink_metadata(&s.dest).expect("stat");
        assert_eq!(root.mode() & 0o7777, 0o750);
        assert_eq!(root.mtime(), MTIME as i64);
        s.assert_outside_untouched();
    }

    #[test]
    fn capability_from_pax_is_applied_and_other_xattrs_ignored() {
        require_root!();
        let s = scratch();
        // VFS_CAP_REVISION_2 | effective, permitted = CAP_NET_RAW.
        let mut cap = Vec::new();
        for word in [0x0200_0001u32, 1 << 13, 0, 0, 0] {
            cap.extend_from_slice(&word.to_le_bytes());
        }
        let tar = TarBuf::default()
            .pax(&[
                ("SCHILY.xattr.security.capability", &cap),
                ("SCHILY.xattr.user.ignored", b"x"),
                ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ])
            .with("bin/ping", EntryType::Regular, b"elf", "", |h| {
                h.set_mode(0o755);
                h.set_uid(0);
            })
            .finish();
        s.unpack(&tar).expect("unpack");
        let ping = s.path("bin/ping");
        assert_eq!(xattr(&ping, "security.capability"), Some(cap));
        assert_eq!(xattr(&ping, "user.ignored"), None);
        assert_eq!(xattr(&ping, "trusted.overlay.opaque"), None);
        assert_eq!(fs::read(&ping).expect("read"), b"elf");
    }

    #[test]
    fn whiteout_becomes_a_0_0_char_device() {
        require_root!();
        let s = scratch();
        let tar = TarBuf::default()
            .dir("etc/")
            .file("etc/.wh.passwd", b"")
            .file(".wh..wh..plnk", b"")
            .file("x/.wh..wh.aufs", b"")
            .finish();
        s.unpack(&tar).expect("unpack");
        let wh = fs::symlink_metadata(s.path("etc/passwd")).expect("stat whiteout");
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        assert!(!s.path("etc/.wh.passwd").exists());
        assert!(fs::symlink_metadata(s.path(".wh..wh..plnk")).is_err());
        assert!(fs::symlink_metadata(s.path("x/.wh..wh.aufs")).is_err());
        s.assert_outside_untouched();
    }

    #[test]
    fn opaque_marker_sets_the_xattr_and_creates_the_dir() {
        require_root!();
        let s = scratch();
        let tar = TarBuf::default()
            .file("a/b/.wh..wh..opq", b"")
            .dir("c/")
            .file("c/kept", b"1")
            .file("c/.wh..wh..opq", b"")
            .finish();
        s.unpack(&tar).expect("unpack");
        assert!(s.path("a/b").is_dir());
        assert_eq!(xattr(&s.path("a/b"), OPAQUE_XATTR), Some(b"y".to_vec()));
        assert_eq!(xattr(&s.path("a"), OPAQUE_XATTR), None);
        assert!(!s.path("a/b/.wh..wh..opq").exists());
        assert_eq!(xattr(&s.path("c"), OPAQUE_XATTR), Some(b"y".to_vec()));
        assert_eq!(fs::read(s.path("c/kept")).expect("read"), b"1");
    }

    #[test]
    fn whiteouts_only_hide_lower_layers() {
        require_root!();
        let s = scratch();
        let tar = TarBuf::default()
            // A file of this layer survives a whiteout of its name.
            .file("keep", b"mine")
            .file(".wh.keep", b"")
            // Whiteout then directory: the lower directory is gone, ours is opaque.
            .file(".wh.gone", b"")
            .dir("gone/")
            .file("gone/x", b"x")
            // Directory then whiteout: same.
            .dir("d/")
            .file(".wh.d", b"")
            // Whiteout then a file into the whited-out directory, without a directory entry.
            .file("w/.wh.sub", b"")
            .file("w/sub/f", b"f")
            // Whiteout then file.
            .file(".wh.f", b"")
            .file("f", b"new")
            .finish();
        s.unpack(&tar).expect("unpack");
        assert_eq!(fs::read(s.path("keep")).expect("read"), b"mine");
        assert_eq!(fs::read(s.path("gone/x")).expect("read"), b"x");
        assert_eq!(xattr(&s.path("gone"), OPAQUE_XATTR), Some(b"y".to_vec()));
        assert!(s.path("d").is_dir());
        assert_eq!(xattr(&s.path("d"), OPAQUE_XATTR), Some(b"y".to_vec()));
        assert_eq!(fs::read(s.path("w/sub/f")).expect("read"), b"f");
        assert_eq!(xattr(&s.path("w/sub"), OPAQUE_XATTR), Some(b"y".to_vec()));
        assert_eq!(xattr(&s.path("w"), OPAQUE_XATTR), None);
        assert_eq!(fs::read(s.path("f")).expect("read"), b"new");
    }

    #[test]
    fn absolute_paths_are_refused() {
        for name in ["/etc/lambox-unpack-test", "//x", "/etc/"] {
            let s = scratch();
            let tar = TarBuf::default()
                .raw(
                    &header(name.as_bytes(), EntryType::Regular, 1, 0o644, b""),
                    b"x",
                )
                .finish();
            let reason = hostile_reason(s.unpack(&tar));
            assert!(reason.contains("absolute"), "{name}: {reason}");
            s.assert_outside_untouched();
        }
        assert!(!Path::new("/etc/lambox-unpack-test").exists());
    }

    #[test]
    fn umoci_root_entry_is_the_root() {
        let s = scratch();
        let tar = TarBuf::default()
            .raw(&header(b"/", EntryType::Directory, 0, 0o711, b""), b"")
            .raw(&header(b"bin/x", EntryType::Regular, 1, 0o755, b""), b"x")
            .finish();
        s.unpack(&tar).expect("a `/` directory entry is the root");
        let mode = std::fs::metadata(&s.dest)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o711);
        assert!(s.dest.join("bin/x").is_file());
        s.assert_outside_untouched();
        // As a file, `/` is not the root: it is refused.
        let s = scratch();
        let tar = TarBuf::default()
            .raw(&header(b"/", EntryType::Regular, 1, 0o644, b""), b"x")
            .finish();
        assert!(s.unpack(&tar).is_err());
        s.assert_outside_untouched();
    }

    #[test]
    fn dotdot_is_refused() {
        for name in [
            "../x",
            "a/../../x",
            "a/../b",
            "./../x",
            "a/b/../../../x",
            "..",
        ] {
            let s = scratch();
            let tar = TarBuf::default()
                .raw(
                    &header(name.as_bytes(), EntryType::Regular, 1, 0o644, b""),
                    b"x",
                )
                .finish();
            let err = s.unpack(&tar).expect_err(name);
            let msg = err.to_string();
            assert!(
                msg.contains(LAYER) && msg.contains(&format!("{name:?}")),
                "{msg}"
            );
            let reason = hostile_reason(Err(err));
            assert!(reason.contains(".."), "{name}: {reason}");
            s.assert_outside_untouched();
            assert!(!s.tmp.path().join("x").exists());
        }
    }

    #[test]
    fn empty_paths_are_refused_except_dot_for_a_dir() {
        for name in ["", ".", "./", "./."] {
            let s = scratch();
            let tar = TarBuf::default()
                .raw(
                    &header(name.as_bytes(), EntryType::Regular, 1, 0o644, b""),
                    b"x",
                )
                .finish();
            let reason = hostile_reason(s.unpack(&tar));
            assert!(reason.contains("empty"), "{name:?}: {reason}");
        }
        let s = scratch();
        s.unpack(&TarBuf::default().dir(".").dir("./").finish())
            .expect("dot dir");
    }

    #[test]
    fn nul_in_a_pax_path_is_refused() {
        let s = scratch();
        let tar = TarBuf::default()
            .pax(&[("path", b"a\0/../../x")])
            .file("ignored", b"")
            .finish();
        let reason = hostile_reason(s.unpack(&tar));
        assert!(reason.contains("nul"), "{reason}");
        s.assert_outside_untouched();
    }

    #[test]
    fn symlink_to_etc_cannot_be_written_through() {
        let before = fs::read("/etc/passwd").expect("read /etc/passwd");
        let s = scratch();
        let tar = TarBuf::default()
            .symlink("evil", "/etc")
            .file("evil/passwd", b"root::0:0::/:/bin/sh\n")
            .finish();
        let reason = hostile_reason(s.unpack(&tar));
        assert!(
            reason.contains("escapes the layer through a symlink"),
            "{reason}"
        );
        assert_eq!(fs::read("/etc/passwd").expect("read /etc/passwd"), before);
        s.assert_outside_untouched();

        // The same with the sentinel, by absolute path, for files and directories.
        for entry in ["evil/secret", "evil/new", "evil/sub/new"] {
            for as_dir in [false, true] {
                let s = scratch();
                let target = s.outside.to_str().expect("utf-8 path").to_string();
                let tar = TarBuf::default().symlink("evil", &target);
                let tar = if as_dir {
                    tar.dir(&format!("{entry}/"))
                } else {
                    tar.file(entry, b"pwned")
                };
                let reason = hostile_reason(s.unpack(&tar.finish()));
                assert!(reason.contains("escapes"), "{entry}: {reason}");
                s.assert_outside_untouched();
            }
        }
    }

    #[test]
    fn relative_symlink_escapes_are_refused() {
        let cases: &[Links] = &[
            &[("evil", "../../..")],
            &[("evil", "../outside")],
            &[("evil", "..")],
            &[("l1", "l2"), ("l2", "../outside")],
            &[("a/up", "../..")],
        ];
        for links in cases {
            for file in ["x", "secret", "outside/new", "deeper/new"] {
                let s = scratch();
                let mut tar = TarBuf::default().dir("a/");
                for (name, target) in *links {
                    tar = tar.symlink(name, target);
                }
                let first = links[0].0;
                let tar = tar.file(&format!("{first}/{file}"), b"pwned").finish();
                let reason = hostile_reason(s.unpack(&tar));
                assert!(reason.contains("escapes"), "{links:?} {file}: {reason}");
                s.assert_outside_untouched();
            }
        }
    }

    #[test]
    fn whiteouts_cannot_escape_through_symlinks() {
        for entry in ["evil/.wh.secret", "evil/.wh..wh..opq", "evil/sub/.wh.x"] {
            let s = scratch();
            let tar = TarBuf::default()
                .symlink("evil", "../outside")
                .file(entry, b"")
                .finish();
            let reason = hostile_reason(s.unpack(&tar));
            assert!(reason.contains("escapes"), "{entry}: {reason}");
            s.assert_outside_untouched();
            if is_root() {
                assert_eq!(xattr(&s.outside, OPAQUE_XATTR), None);
            }
        }
    }

    #[test]
    fn symlinks_inside_the_layer_are_followed() {
        let s = scratch();
        let tar = TarBuf::default()
            .dir("usr/lib/")
            .symlink("lib", "usr/lib")
            .file("lib/libc.so", b"elf")
            .symlink("usr/lib64", "../usr/./lib")
            .file("usr/lib64/libm.so", b"elf")
            .finish();
        s.unpack(&tar).expect("unpack");
        assert_eq!(fs::read(s.path("usr/lib/libc.so")).expect("read"), b"elf");
        assert_eq!(fs::read(s.path("usr/lib/libm.so")).expect("read"), b"elf");
        assert!(fs::symlink_metadata(s.path("lib"))
            .expect("stat")
            .file_type()
            .is_symlink());
    }

    #[test]
    fn dangling_symlink_parent_is_refused() {
        let s = scratch();
        let tar = TarBuf::default()
            .symlink("lib", "usr/lib")
            .file("lib/x", b"x")
            .finish();
        let reason = hostile_reason(s.unpack(&tar));
        assert!(reason.contains("dangling"), "{reason}");
        s.assert_outside_untouched();
    }

    #[test]
    fn hostile_hardlinks_are_refused() {
        // (symlinks to create first, hardlink target, expected reason)
        let cases: &[(Links, &str, &str)] = &[
            (&[], "/etc/passwd", "absolute"),
            (&[], "../outside/secret", ".."),
            (&[], "a/../../outside/secret", ".."),
            (&[("evil", "../outside")], "evil/secret", "escapes"),
            (&[("evil", "/etc")], "evil/passwd", "escapes"),
            (&[], "missing", "does not exist"),
            (&[], "nodir/missing", "does not exist"),
            (&[], "a", "directory"),
            (&[], "", "empty"),
        ];
        for (links, target, expected) in cases {
            let s = scratch();
            let mut tar = TarBuf::default().dir("a/");
            for (name, link) in *links {
                tar = tar.symlink(name, link);
            }
            let tar = tar.hardlink("h", target).finish();
            let reason = hostile_reason(s.unpack(&tar));
            assert!(reason.contains(expected), "{target}: {reason}");
            assert!(fs::symlink_metadata(s.path("h")).is_err());
            s.assert_outside_untouched();
        }
    }

    #[test]
    fn long_names_work() {
        let s = scratch();
        let dir = format!("{}/{}", "d".repeat(80), "e".repeat(80));
        let long = format!("{dir}/{}", "f".repeat(120));
        let target = format!("{}/{}", "../".repeat(3), "t".repeat(200));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_entry_type(EntryType::Regular);
        b.append_data(&mut h, &long, &b"hello"[..])
            .expect("append file");
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, format!("{dir}/link"), &target)
            .expect("append symlink");
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Link);
        h.set_size(0);
        b.append_link(&mut h, format!("{dir}/{}", "g".repeat(150)), &long)
            .expect("append hardlink");
        let tar = b.into_inner().expect("finish");
        s.unpack(&tar).expect("unpack");
        assert_eq!(fs::read(s.path(&long)).expect("read"), b"hello");
        assert_eq!(
            fs::read_link(s.path(&format!("{dir}/link"))).expect("readlink"),
            Path::new(&target)
        );
        let a = fs::metadata(s.path(&long)).expect("stat");
        let b = fs::metadata(s.path(&format!("{dir}/{}", "g".repeat(150)))).expect("stat");
        assert_eq!(a.ino(), b.ino());
        s.assert_outside_untouched();
    }

    #[test]
    fn long_hostile_names_are_refused() {
        // A GNU long name that climbs out.
        let s = scratch();
        let long = format!("{}../../x", "./".repeat(60));
        let mut body = long.into_bytes();
        body.push(0);
        let tar = TarBuf::default()
            .raw(
                &header(
                    b"././@LongLink",
                    EntryType::GNULongName,
                    body.len() as u64,
                    0o644,
                    b"",
                ),
                &body,
            )
            .file("short", b"x")
            .finish();
        let reason = hostile_reason(s.unpack(&tar));
        assert!(reason.contains(".."), "{reason}");
        s.assert_outside_untouched();
    }

    #[test]
    fn devices_are_skipped() {
        let s = scratch();
        let tar = TarBuf::default()
            .with("dev/null", EntryType::Char, b"", "", |h| {
                h.set_device_major(1).expect("major");
                h.set_device_minor(3).expect("minor");
            })
            .with("dev/sda", EntryType::Block, b"", "", |h| {
                h.set_device_major(8).expect("major");
                h.set_device_minor(0).expect("minor");
            })
            .with("zero", EntryType::Char, b"", "", |_| {})
            .file("f", b"f")
            .finish();
        let stats = s.unpack(&tar).expect("unpack");
        assert_eq!(stats.skipped_devices, 3);
        assert_eq!(stats.entries, 4);
        assert!(fs::symlink_metadata(s.path("dev/null")).is_err());
        assert!(fs::symlink_metadata(s.path("dev/sda")).is_err());
        assert!(fs::symlink_metadata(s.path("zero")).is_err());
        assert!(s.path("f").is_file());
    }

    /// A header for a huge entry, then `filler` for ever; counts what is pulled from it.
    struct Bomb {
        header: Vec<u8>,
        filler: u8,
        pulled: Arc<AtomicU64>,
    }

    impl Read for Bomb {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let done = self.pulled.load(Ordering::Relaxed);
            let n = buf.len();
            for (i, b) in buf.iter_mut().enumerate() {
                let at = done as usize + i;
                *b = self.header.get(at).copied().unwrap_or(self.filler);
            }
            self.pulled.fetch_add(n as u64, Ordering::Relaxed);
            Ok(n)
        }
    }

    #[test]
    fn budget_stops_a_bomb_quickly() {
        let s = scratch();
        let limit = 1 << 20;
        let pulled = Arc::new(AtomicU64::new(0));
        let bomb = Bomb {
            header: header(b"bomb", EntryType::Regular, 1 << 40, 0o644, b"")
                .as_bytes()
                .to_vec(),
            filler: 0,
            pulled: pulled.clone(),
        };
        let started = Instant::now();
        let err = unpack_layer(bomb, &s.dest, LAYER, &SizeBudget::new(limit)).expect_err("bomb");
        assert!(
            matches!(err, Error::TooLarge { limit: l, .. } if l == limit),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(20));
        let pulled = pulled.load(Ordering::Relaxed);
        assert!(
            pulled <= limit + 2 * COPY_BUFFER as u64,
            "read {pulled} bytes"
        );
        let written = fs::metadata(s.path("bomb")).expect("stat").len();
        assert!(written <= limit, "wrote {written} bytes");
    }

    #[test]
    fn huge_extension_headers_are_refused_without_buffering_them() {
        for kind in [
            EntryType::GNULongName,
            EntryType::GNULongLink,
            EntryType::XHeader,
        ] {
            let s = scratch();
            let pulled = Arc::new(AtomicU64::new(0));
            let bomb = Bomb {
                header: header(b"././@LongLink", kind, 1 << 40, 0o644, b"")
                    .as_bytes()
                    .to_vec(),
                filler: b'a',
                pulled: pulled.clone(),
            };
            let err = unpack_layer(bomb, &s.dest, LAYER, &SizeBudget::new(1 << 40))
                .expect_err("huge header");
            let msg = malformed_reason(Err(err));
            assert!(msg.contains("tar headers"), "{kind:?}: {msg}");
            let pulled = pulled.load(Ordering::Relaxed);
            assert!(
                pulled <= MAX_HEADER_BYTES + 512,
                "{kind:?}: read {pulled} bytes"
            );
        }
    }

    #[test]
    fn long_pax_paths_work() {
        let s = scratch();
        let long = format!("{}/{}", "p".repeat(250), "q".repeat(250));
        let link = "l".repeat(300);
        let tar = TarBuf::default()
            .pax(&[("path", long.as_bytes())])
            .file("short-name-ignored", b"pax")
            .pax(&[("path", b"sym"), ("linkpath", link.as_bytes())])
            .symlink("ignored", "ignored")
            .finish();
        s.unpack(&tar).expect("unpack");
        assert_eq!(fs::read(s.path(&long)).expect("read"), b"pax");
        assert!(!s.path("short-name-ignored").exists());
        assert_eq!(
            fs::read_link(s.path("sym")).expect("readlink"),
            Path::new(&link)
        );
    }

    #[test]
    fn budget_stops_a_gzip_bomb() {
        use flate2::write::GzEncoder;
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let size: u64 = 4 << 20;
        gz.write_all(header(b"bomb", EntryType::Regular, size, 0o644, b"").as_bytes())
            .expect("gzip");
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(size >> 20) {
            gz.write_all(&zeros).expect("gzip");
        }
        gz.write_all(&[0; 1024]).expect("gzip");
        let compressed = gz.finish().expect("gzip");
        assert!(compressed.len() < 1 << 20);
        let s = scratch();
        let limit = 1 << 20;
        let reader = flate2::read::MultiGzDecoder::new(&compressed[..]);
        let err = unpack_layer(reader, &s.dest, LAYER, &SizeBudget::new(limit)).expect_err("bomb");
        assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
        assert!(fs::metadata(s.path("bomb")).expect("stat").len() <= limit);
    }

    #[test]
    fn sparse_files_are_charged_their_full_size() {
        let s = scratch();
        let real: u64 = 1 << 30;
        let mut h = header(b"sparse", EntryType::GNUSparse, 512, 0o644, b"");
        {
            let gnu = h.as_gnu_mut().expect("gnu header");
            gnu.set_real_size(real);
            gnu.sparse[0].set_offset(real - 512);
            gnu.sparse[0].set_length(512);
        }
        h.set_cksum();
        let tar = TarBuf::default().raw(&h, &[7; 512]).finish();
        let err =
            unpack_layer(&tar[..], &s.dest, LAYER, &SizeBudget::new(1 << 20)).expect_err("sparse");
        assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");

        // Within budget it unpacks, holes and all.
        let s = scratch();
        let small: u64 = 4096;
        let mut h = header(b"sparse", EntryType::GNUSparse, 512, 0o644, b"");
        {
            let gnu = h.as_gnu_mut().expect("gnu header");
            gnu.set_real_size(small);
            gnu.sparse[0].set_offset(small - 512);
            gnu.sparse[0].set_length(512);
        }
        h.set_cksum();
        let tar = TarBuf::default().raw(&h, &[7; 512]).finish();
        s.unpack(&tar).expect("unpack");
        let data = fs::read(s.path("sparse")).expect("read");
        assert_eq!(data.len() as u64, small);
        assert!(data[..3584].iter().all(|b| *b == 0) && data[3584..].iter().all(|b| *b == 7));
    }

    #[test]
    fn missing_end_of_archive_is_tolerated() {
        let body = TarBuf::default()
            .dir("d/")
            .file("d/a", b"hello")
            .file("d/b", &[b'b'; 700])
            .0;
        let data_end = body.len() - 512 + 700 - 512;
        // Ends at an entry boundary (padding present, no zero blocks).
        let cut_points = [
            ("no zero blocks", body.len()),
            ("one zero block", body.len() + 512),
            ("no padding after the last entry", data_end),
            ("part of the padding", data_end + 100),
        ];
        for (what, cut) in cut_points {
            let mut tar = body.clone();
            tar.resize(body.len() + 1024, 0);
            tar.truncate(cut);
            let s = scratch();
            let stats = s.unpack(&tar).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(stats.entries, 3, "{what}");
            assert_eq!(fs::read(s.path("d/a")).expect("read"), b"hello");
            assert_eq!(
                fs::read(s.path("d/b")).expect("read"),
                vec![b'b'; 700],
                "{what}"
            );
        }
        // An empty stream is an empty layer.
        let s = scratch();
        assert_eq!(s.unpack(b"").expect("empty").entries, 0);
    }

    fn malformed_reason(result: Result<UnpackStats>) -> String {
        match result {
            Err(e @ Error::Malformed { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(LAYER), "{msg}");
                assert!(!msg.contains('\n'), "{msg}");
                msg
            }
            other => panic!("expected a malformed error, got {other:?}"),
        }
    }

    #[test]
    fn truncated_archives_are_refused() {
        let body = TarBuf::default()
            .file("a", b"hello")
            .file("b", &[b'b'; 700])
            .0;
        let b_data = 512 * 3;
        let cases = [
            ("inside file data", b_data + 300, "\"b\""),
            ("right after a header", b_data, "\"b\""),
            ("inside a header", 1024 + 100, "after entry \"a\""),
            ("inside the first header", 100, "first entry"),
            (
                "junk after a padded entry",
                body.len() + 10,
                "after entry \"b\"",
            ),
        ];
        for (what, cut, names) in cases {
            let mut tar = body.clone();
            tar.resize(body.len() + 1024, 0);
            if what.starts_with("junk") {
                tar.truncate(body.len());
                tar.extend_from_slice(&[1; 10]);
            } else {
                tar.truncate(cut);
            }
            let s = scratch();
            let msg = malformed_reason(s.unpack(&tar));
            assert!(msg.contains("truncated"), "{what}: {msg}");
            assert!(msg.contains(names), "{what}: {msg}");
        }
        // An extension header whose entry never comes.
        let body = pax(&[("path", b"x")]);
        let tar = TarBuf::default()
            .file("a", b"a")
            .raw(
                &header(
                    b"PaxHeaders/x",
                    EntryType::XHeader,
                    body.len() as u64,
                    0o644,
                    b"",
                ),
                &body,
            )
            .0;
        let s = scratch();
        malformed_reason(s.unpack(&tar));
    }

    #[test]
    fn bad_checksum_is_malformed() {
        let mut tar = TarBuf::default().file("a", b"a").finish();
        tar[0] = b'b';
        let s = scratch();
        let msg = malformed_reason(s.unpack(&tar));
        assert!(msg.contains("checksum"), "{msg}");
    }

    #[test]
    fn the_whole_stream_is_read() {
        let mut tar = TarBuf::default().file("a", b"a").finish();
        tar.extend_from_slice(&[0; 8192]);
        tar.extend_from_slice(b"trailing junk after the end-of-archive marker");
        let s = scratch();
        let mut cursor = Cursor::new(&tar[..]);
        let budget = SizeBudget::new(1 << 20);
        unpack_layer(&mut cursor, &s.dest, LAYER, &budget).expect("unpack");
        assert_eq!(cursor.position(), tar.len() as u64);
        // ...and all of it was charged.
        let err = budget.charge(1 << 20).expect_err("budget");
        assert!(matches!(err, Error::TooLarge { .. }));
        let exact = SizeBudget::new(tar.len() as u64);
        let s = scratch();
        unpack_layer(&tar[..], &s.dest, LAYER, &exact).expect("exactly within budget");
        let s = scratch();
        let short = SizeBudget::new(tar.len() as u64 - 1);
        assert!(matches!(
            unpack_layer(&tar[..], &s.dest, LAYER, &short),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn entries_replace_what_is_there() {
        let s = scratch();
        let outside_secret = s.outside.join("secret");
        let tar = TarBuf::default()
            // A file, then a directory of the same name.
            .file("x", b"x")
            .dir("x/")
            .file("x/y", b"y")
            // A directory tree, then a file of the same name.
            .dir("d/")
            .file("d/sub/f", b"f")
            .symlink("d/sub/l", "/etc")
            .file("d", b"now a file")
            // A symlink to outside, then a file of the same name: the link is replaced, not
            // written through.
            .symlink("s", outside_secret.to_str().expect("utf-8"))
            .file("s", b"replaced")
            // A symlink, then a directory of the same name.
            .symlink("sd", "x")
            .dir("sd/")
            // The same file twice: the last one wins.
            .file("twice", b"first")
            .file("twice", b"second")
            // A hardlink to itself is a no-op.
            .file("self", b"self")
            .hardlink("self", "self")
            .finish();
        s.unpack(&tar).expect("unpack");
        assert!(s.path("x").is_dir());
        assert_eq!(fs::read(s.path("x/y")).expect("read"), b"y");
        assert_eq!(fs::read(s.path("d")).expect("read"), b"now a file");
        assert_eq!(fs::read(s.path("s")).expect("read"), b"replaced");
        assert!(fs::symlink_metadata(s.path("s")).expect("stat").is_file());
        assert!(fs::symlink_metadata(s.path("sd")).expect("stat").is_dir());
        assert_eq!(fs::read(s.path("twice")).expect("read"), b"second");
        assert_eq!(fs::read(s.path("self")).expect("read"), b"self");
        s.assert_outside_untouched();
    }

    #[test]
    fn buildah_oddities_are_fine() {
        let s = scratch();
        let tar = TarBuf::default()
            .dir("./")
            .dir("etc/")
            .with("etc/hostname", EntryType::Regular, b"", "", |h| {
                h.set_mode(0o700)
            })
            .dir("run/")
            .dir("etc/")
            .dir("./etc")
            .file("etc/hosts", b"127.0.0.1 localhost\n")
            .dir("run/")
            .finish();
        let stats = s.unpack(&tar).expect("unpack");
        assert_eq!(stats.entries, 8);
        let hostname = fs::metadata(s.path("etc/hostname")).expect("stat");
        assert_eq!(hostname.permissions().mode() & 0o7777, 0o700);
        assert!(s.path("run").is_dir());
        assert_eq!(
            fs::read(s.path("etc/hosts")).expect("read"),
            b"127.0.0.1 localhost\n"
        );
    }

    #[test]
    fn stream_errors_are_io_errors() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "corrupt deflate stream",
                ))
            }
        }
        let s = scratch();
        let err =
            unpack_layer(Failing, &s.dest, LAYER, &SizeBudget::new(1 << 20)).expect_err("failing");
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains(LAYER));
    }
}
