//! A read-only view of an image's stored layers stacked as overlayfs would stack them, for
//! looking paths up without mounting anything.
//!
//! The store unpacks every layer into its own directory in overlayfs "lowerdir" form:
//!
//! * a deleted entry is a character device with device number 0/0 (a *whiteout*);
//! * a directory whose lower-layer content is hidden carries the xattr
//!   `trusted.overlay.opaque` = `y` (an *opaque* directory).
//!
//! [`LayeredView`] answers "what would the merged mount show at this path?" by looking at those
//! directories directly, with the rules of overlayfs lookup:
//!
//! * the topmost layer that has an entry for a name wins;
//! * a whiteout in a layer hides that name in every lower layer;
//! * a directory merges with directories of the same name in lower layers, down to (and including)
//!   the first one that is opaque; a non-directory or a whiteout below it also ends the merge;
//! * a non-directory hides everything of that name below it (including directories).
//!
//! Opacity of a layer's *root* directory is ignored, as overlayfs ignores it for lower layers.
//!
//! Symlinks are followed inside the image only: a target is read with `read_link` on the layer
//! file and resolved again in the view, an absolute target starts over at the image root, and
//! `..` at the root stays at the root. Nothing here ever asks the host kernel to follow a
//! symlink, so a hostile image can't make a lookup leave its layer directories. After
//! [`MAX_SYMLINK_HOPS`] symlinks a lookup fails with "too many levels of symbolic links", like
//! the kernel's `ELOOP`.
//!
//! Paths that cannot resolve (a missing component, a non-directory used as a directory, an empty
//! symlink target, a name with a NUL byte or longer than the file system allows) resolve to
//! `None`; `Err` is kept for symlink loops and for I/O errors on the store itself.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// How many symlinks one lookup may follow before failing (the kernel's limit).
pub const MAX_SYMLINK_HOPS: u32 = 40;

/// The xattr overlayfs reads to decide that a directory hides lower layers' content.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// The layers of one image, bottom → top, viewed as the merged overlayfs mount would show them.
#[derive(Debug, Clone)]
pub struct LayeredView {
    layers: Vec<PathBuf>,
}

/// A directory of the merged view: where it is and which layers contribute to its content.
#[derive(Debug, Clone)]
struct MergedDir {
    /// Path relative to the image root; empty for the root.
    rel: PathBuf,
    /// Indices into `LayeredView::layers` of the layers whose directory at `rel` takes part in
    /// the merge, topmost first. Never empty.
    layers: Vec<usize>,
    /// `symlink_metadata` of the topmost of them (what the mount shows for the directory).
    metadata: Metadata,
}

impl MergedDir {
    fn image_path(&self) -> PathBuf {
        Path::new("/").join(&self.rel)
    }

    fn top_layer(&self) -> usize {
        self.layers.first().copied().unwrap_or_default()
    }
}

/// One name looked up in a merged directory.
#[derive(Debug)]
struct Found {
    layer: usize,
    host_path: PathBuf,
    metadata: Metadata,
    /// Contributing layers (topmost first) when the entry is a directory; empty otherwise.
    dir_layers: Vec<usize>,
}

/// A directory in which a lookup searched for a name: the kernel requires search (`x`)
/// permission on each of them.
#[derive(Debug, Clone)]
pub struct SearchedDir {
    /// Its image path (symlink-free).
    pub path: PathBuf,
    /// `symlink_metadata` of the winning directory entry.
    pub metadata: Metadata,
}

/// The result of [`LayeredView::resolve`].
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The image path after resolution: absolute, without `.`/`..`, and without symlinks except
    /// for the final component when it was not followed.
    pub path: PathBuf,
    /// The winning entry in its layer directory on the host (for reading metadata or content;
    /// never a symlink unless the final symlink was not followed).
    pub host_path: PathBuf,
    /// Index of the layer (0 = bottom) holding the winning entry.
    pub layer: usize,
    /// `symlink_metadata` of the winning entry.
    pub metadata: Metadata,
    /// Whether the final component of the path asked for was a symlink (followed or not).
    pub final_was_symlink: bool,
    /// Every directory the lookup searched, in first-visit order, without duplicates (the root
    /// included). Symlinks followed on the way add the directories they lead through.
    pub searched_dirs: Vec<SearchedDir>,
    dir: Option<MergedDir>,
}

impl Resolved {
    /// Whether the resolved entry is a directory.
    pub fn is_dir(&self) -> bool {
        self.dir.is_some()
    }
}

/// One entry of a merged directory listing.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// Its name in the directory.
    pub name: OsString,
    /// Its image path.
    pub path: PathBuf,
    /// The winning entry in its layer directory on the host.
    pub host_path: PathBuf,
    /// Index of the layer (0 = bottom) holding the winning entry.
    pub layer: usize,
    /// `symlink_metadata` of the winning entry (never a whiteout: those are hidden).
    pub metadata: Metadata,
    dir: Option<MergedDir>,
}

impl DirEntry {
    /// Whether the entry is a directory (symlinks are not followed).
    pub fn is_dir(&self) -> bool {
        self.dir.is_some()
    }
}

/// What [`LayeredView::walk`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkSummary {
    /// Entries passed to the visitor.
    pub visited: usize,
    /// Whether the walk stopped at its entry limit before seeing everything.
    pub truncated: bool,
}

impl LayeredView {
    /// A view of `layers`, given bottom → top (the order of the image's `rootfs.diff_ids`).
    pub fn new(layers: Vec<PathBuf>) -> Self {
        LayeredView { layers }
    }

    /// The layer directories, bottom → top.
    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    /// Resolve the image path `path` as the merged mount would, following symlinks inside the
    /// image; the final component is followed only when `follow_final` is set (or the path ends
    /// in `/`, `/.` or `/..`, which require a directory). A relative `path` is taken from the
    /// image root. `Ok(None)` when nothing is there.
    pub fn resolve(&self, path: impl AsRef<Path>, follow_final: bool) -> Result<Option<Resolved>> {
        let bytes = path.as_ref().as_os_str().as_bytes();
        if bytes.contains(&0) {
            return Ok(None);
        }
        let Some(root) = self.root()? else {
            return Ok(None);
        };

        let mut segments: Vec<&[u8]> = bytes.split(|&b| b == b'/').collect();
        // A trailing `/` means "this must be a directory": make it a trailing `.`, which the
        // walk below treats exactly like that.
        if segments.len() > 1 && segments.last().is_some_and(|s| s.is_empty()) {
            segments.pop();
            segments.push(b".");
        }
        let mut pending: VecDeque<(OsString, bool)> = segments
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| (OsStr::from_bytes(s).to_os_string(), false))
            .collect();
        // The original path's final component (not the `.` standing for a trailing slash).
        let final_index = pending
            .iter()
            .rposition(|(name, _)| name.as_bytes() != b".")
            .filter(|&i| i + 2 >= pending.len());
        if let Some((_, is_final)) = final_index.and_then(|i| pending.get_mut(i)) {
            *is_final = true;
        }

        let mut walk = Walk {
            stack: vec![root],
            searched: Vec::new(),
            searched_seen: HashSet::new(),
        };
        let mut hops = 0u32;
        let mut final_was_symlink = false;

        while let Some((name, is_original_final)) = pending.pop_front() {
            walk.record_search();
            let is_last = pending.is_empty();
            match name.as_bytes() {
                b"." => continue,
                b".." => {
                    if walk.stack.len() > 1 {
                        walk.stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let Some(dir) = walk.stack.last() else {
                return Ok(None);
            };
            let Some(found) = self.lookup_in(dir, &name)? else {
                return Ok(None);
            };
            let file_type = found.metadata.file_type();
            if is_original_final {
                final_was_symlink = file_type.is_symlink();
            }
            let entry_path = dir.image_path().join(&name);

            if file_type.is_symlink() {
                if is_last && !follow_final {
                    return Ok(Some(walk.finish_entry(
                        entry_path,
                        found,
                        final_was_symlink,
                    )));
                }
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(Error::malformed(
                        path.as_ref().display().to_string(),
                        "too many levels of symbolic links",
                    ));
                }
                let target = std::fs::read_link(&found.host_path).map_err(|e| {
                    Error::io(format!("read symlink {}", found.host_path.display()), e)
                })?;
                let target = target.as_os_str().as_bytes();
                if target.is_empty() {
                    return Ok(None);
                }
                if target.first() == Some(&b'/') {
                    walk.stack.truncate(1);
                }
                let mut target_segments: Vec<&[u8]> = target.split(|&b| b == b'/').collect();
                if target_segments.len() > 1 && target_segments.last().is_some_and(|s| s.is_empty())
                {
                    target_segments.pop();
                    target_segments.push(b".");
                }
                for segment in target_segments.iter().rev().filter(|s| !s.is_empty()) {
                    pending.push_front((OsStr::from_bytes(segment).to_os_string(), false));
                }
                continue;
            }

            if file_type.is_dir() {
                let rel = dir.rel.join(&name);
                walk.stack.push(MergedDir {
                    rel,
                    layers: found.dir_layers,
                    metadata: found.metadata,
                });
                continue;
            }

            // Not a directory: only valid as the very last component.
            if !is_last {
                return Ok(None);
            }
            return Ok(Some(walk.finish_entry(
                entry_path,
                found,
                final_was_symlink,
            )));
        }

        // Everything consumed and we stand in a directory.
        let Some(dir) = walk.stack.pop() else {
            return Ok(None);
        };
        let layer = dir.top_layer();
        Ok(Some(Resolved {
            path: dir.image_path(),
            host_path: self.host_path(layer, &dir.rel),
            layer,
            metadata: dir.metadata.clone(),
            final_was_symlink,
            searched_dirs: walk.searched,
            dir: Some(dir),
        }))
    }

    /// `symlink_metadata` of the entry at `path` (the final symlink not followed), or `None`.
    pub fn symlink_metadata(&self, path: impl AsRef<Path>) -> Result<Option<Metadata>> {
        Ok(self.resolve(path, false)?.map(|r| r.metadata))
    }

    /// Metadata of what `path` leads to after following symlinks, or `None`.
    pub fn metadata(&self, path: impl AsRef<Path>) -> Result<Option<Metadata>> {
        Ok(self.resolve(path, true)?.map(|r| r.metadata))
    }

    /// Whether anything exists at `path` after following symlinks. Errors (symlink loops, I/O)
    /// count as "no".
    pub fn exists(&self, path: impl AsRef<Path>) -> bool {
        matches!(self.resolve(path, true), Ok(Some(_)))
    }

    /// The merged listing of the directory `path` (symlinks followed), sorted by name, with
    /// whiteouts and whatever they or opaque directories hide left out. `None` when `path` does
    /// not resolve to a directory.
    pub fn read_dir(&self, path: impl AsRef<Path>) -> Result<Option<Vec<DirEntry>>> {
        match self.resolve(path, true)? {
            Some(Resolved { dir: Some(dir), .. }) => Ok(Some(self.list(&dir)?)),
            _ => Ok(None),
        }
    }

    /// The merged listing of a directory entry got from [`LayeredView::read_dir`] or
    /// [`LayeredView::walk`]; `None` when it is not a directory.
    pub fn read_dir_entry(&self, entry: &DirEntry) -> Result<Option<Vec<DirEntry>>> {
        match &entry.dir {
            Some(dir) => Ok(Some(self.list(dir)?)),
            None => Ok(None),
        }
    }

    /// Visit every entry below the directory `path` (symlinks in `path` followed, symlinks below
    /// it not), directories before their content, names in sorted order within a directory.
    /// Stops after `max_entries` entries. `None` when `path` is not a directory.
    pub fn walk(
        &self,
        path: impl AsRef<Path>,
        max_entries: usize,
        mut visit: impl FnMut(&DirEntry),
    ) -> Result<Option<WalkSummary>> {
        let Some(Resolved { dir: Some(top), .. }) = self.resolve(path, true)? else {
            return Ok(None);
        };
        let mut summary = WalkSummary {
            visited: 0,
            truncated: false,
        };
        // A stack of listings, each reversed so that `pop` yields names in sorted order.
        let mut todo: Vec<Vec<DirEntry>> = vec![reversed(self.list(&top)?)];
        while let Some(level) = todo.last_mut() {
            let Some(entry) = level.pop() else {
                todo.pop();
                continue;
            };
            if summary.visited >= max_entries {
                summary.truncated = true;
                break;
            }
            summary.visited += 1;
            visit(&entry);
            if let Some(dir) = &entry.dir {
                todo.push(reversed(self.list(dir)?));
            }
        }
        Ok(Some(summary))
    }

    /// The merged root directory, or `None` for an image without layers.
    fn root(&self) -> Result<Option<MergedDir>> {
        let Some(top) = self.layers.len().checked_sub(1) else {
            return Ok(None);
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        let mut metadata = None;
        for i in (0..=top).rev() {
            let Some(root) = self.layers.get(i) else {
                continue;
            };
            let meta = std::fs::symlink_metadata(root)
                .map_err(|e| Error::io(format!("layer directory {}", root.display()), e))?;
            if !meta.is_dir() {
                return Err(Error::malformed(
                    format!("layer directory {}", root.display()),
                    "not a directory",
                ));
            }
            if metadata.is_none() {
                metadata = Some(meta);
            }
            layers.push(i);
        }
        Ok(metadata.map(|metadata| MergedDir {
            rel: PathBuf::new(),
            layers,
            metadata,
        }))
    }

    fn host_path(&self, layer: usize, rel: &Path) -> PathBuf {
        // Layer indices always come from `self.layers`; the fallback only avoids a panic path
        // and names nothing that exists.
        let root = self
            .layers
            .get(layer)
            .map(PathBuf::as_path)
            .unwrap_or(Path::new("/nonexistent/lambox-layer"));
        if rel.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        }
    }

    /// Look `name` (one normal component) up in `dir` as overlayfs would.
    fn lookup_in(&self, dir: &MergedDir, name: &OsStr) -> Result<Option<Found>> {
        let mut top: Option<(usize, PathBuf, Metadata)> = None;
        let mut dir_layers = Vec::new();
        for &layer in &dir.layers {
            let host = self.host_path(layer, &dir.rel).join(name);
            let metadata = match std::fs::symlink_metadata(&host) {
                Ok(m) => m,
                Err(e) if is_absent(&e) => continue,
                Err(e) => return Err(Error::io(format!("stat {}", host.display()), e)),
            };
            if is_whiteout(&metadata) {
                if top.is_none() {
                    return Ok(None);
                }
                break;
            }
            if metadata.is_dir() {
                let opaque = is_opaque(&host)?;
                if top.is_none() {
                    top = Some((layer, host, metadata));
                }
                dir_layers.push(layer);
                if opaque {
                    break;
                }
            } else {
                if top.is_none() {
                    return Ok(Some(Found {
                        layer,
                        host_path: host,
                        metadata,
                        dir_layers: Vec::new(),
                    }));
                }
                // A non-directory below a directory ends the merge.
                break;
            }
        }
        Ok(top.map(|(layer, host_path, metadata)| Found {
            layer,
            host_path,
            metadata,
            dir_layers,
        }))
    }

    /// The merged, sorted listing of `dir`.
    fn list(&self, dir: &MergedDir) -> Result<Vec<DirEntry>> {
        let mut names = BTreeSet::new();
        for &layer in &dir.layers {
            let host = self.host_path(layer, &dir.rel);
            let entries = std::fs::read_dir(&host)
                .map_err(|e| Error::io(format!("read directory {}", host.display()), e))?;
            for entry in entries {
                let entry = entry
                    .map_err(|e| Error::io(format!("read directory {}", host.display()), e))?;
                names.insert(entry.file_name());
            }
        }
        let parent = dir.image_path();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let Some(found) = self.lookup_in(dir, &name)? else {
                continue;
            };
            let path = parent.join(&name);
            let sub = found.metadata.is_dir().then(|| MergedDir {
                rel: dir.rel.join(&name),
                layers: found.dir_layers,
                metadata: found.metadata.clone(),
            });
            out.push(DirEntry {
                name,
                path,
                host_path: found.host_path,
                layer: found.layer,
                metadata: found.metadata,
                dir: sub,
            });
        }
        Ok(out)
    }
}

/// The state of one `resolve`: the directories we stand in and the ones searched so far.
struct Walk {
    stack: Vec<MergedDir>,
    searched: Vec<SearchedDir>,
    searched_seen: HashSet<PathBuf>,
}

impl Walk {
    /// Note that a name is being looked up in the current directory.
    fn record_search(&mut self) {
        if let Some(dir) = self.stack.last() {
            let path = dir.image_path();
            if self.searched_seen.insert(path.clone()) {
                self.searched.push(SearchedDir {
                    path,
                    metadata: dir.metadata.clone(),
                });
            }
        }
    }

    fn finish_entry(self, path: PathBuf, found: Found, final_was_symlink: bool) -> Resolved {
        Resolved {
            path,
            host_path: found.host_path,
            layer: found.layer,
            metadata: found.metadata,
            final_was_symlink,
            searched_dirs: self.searched,
            dir: None,
        }
    }
}

fn reversed(mut entries: Vec<DirEntry>) -> Vec<DirEntry> {
    entries.reverse();
    entries
}

/// A 0/0 character device: an overlayfs whiteout.
pub fn is_whiteout(metadata: &Metadata) -> bool {
    metadata.file_type().is_char_device() && metadata.rdev() == 0
}

/// Whether the directory at `host` (in a layer directory) is marked opaque.
fn is_opaque(host: &Path) -> Result<bool> {
    let mut buf = [0u8; 8];
    match rustix::fs::lgetxattr(host, OPAQUE_XATTR, &mut buf) {
        Ok(n) => Ok(buf.get(..n) == Some(&b"y"[..])),
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP | rustix::io::Errno::RANGE) => {
            Ok(false)
        }
        Err(e) => Err(Error::io(
            format!("read xattr {OPAQUE_XATTR} of {}", host.display()),
            e.into(),
        )),
    }
}

/// Errors that mean "no such entry" for a name looked up in a directory that exists.
fn is_absent(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
        || matches!(
            rustix::io::Errno::from_io_error(e),
            Some(rustix::io::Errno::NAMETOOLONG | rustix::io::Errno::NOTDIR)
        )
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// Layer directories built by hand in a temporary directory, in overlayfs lowerdir form.
    pub(crate) struct Layers {
        _tmp: tempfile::TempDir,
        dirs: Vec<PathBuf>,
    }

    impl Layers {
        pub(crate) fn new(n: usize) -> Layers {
            let tmp = tempfile::tempdir().expect("tempdir");
            let dirs: Vec<PathBuf> = (0..n)
                .map(|i| tmp.path().join(format!("layer{i}")))
                .collect();
            for d in &dirs {
                std::fs::create_dir(d).expect("create layer dir");
                set_mode(d, 0o755);
                chown_root(d);
            }
            Layers { _tmp: tmp, dirs }
        }

        pub(crate) fn view(&self) -> LayeredView {
            LayeredView::new(self.dirs.clone())
        }

        pub(crate) fn root(&self, layer: usize) -> &Path {
            self.dirs.get(layer).expect("layer index")
        }

        /// The host path of `rel` (absolute image path) in `layer`.
        pub(crate) fn host(&self, layer: usize, rel: &str) -> PathBuf {
            self.root(layer).join(rel.trim_start_matches('/'))
        }

        /// Create the parents of `rel` in `layer` as root-owned 0755 directories.
        fn parents(&self, layer: usize, rel: &str) -> PathBuf {
            let host = self.host(layer, rel);
            let mut dir = self.root(layer).to_path_buf();
            let parent = Path::new(rel.trim_start_matches('/'))
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            for c in parent.components() {
                dir.push(c);
                if std::fs::symlink_metadata(&dir).is_err() {
                    std::fs::create_dir(&dir).expect("create parent dir");
                    set_mode(&dir, 0o755);
                    chown_root(&dir);
                }
            }
            host
        }

        pub(crate) fn dir(&self, layer: usize, rel: &str, mode: u32) -> PathBuf {
            let host = self.parents(layer, rel);
            if std::fs::symlink_metadata(&host).is_err() {
                std::fs::create_dir(&host).expect("create dir");
            }
            chown_root(&host);
            set_mode(&host, mode);
            host
        }

        pub(crate) fn file(&self, layer: usize, rel: &str, content: &[u8], mode: u32) -> PathBuf {
            let host = self.parents(layer, rel);
            std::fs::write(&host, content).expect("write file");
            chown_root(&host);
            set_mode(&host, mode);
            host
        }

        pub(crate) fn symlink(&self, layer: usize, rel: &str, target: &str) -> PathBuf {
            let host = self.parents(layer, rel);
            std::os::unix::fs::symlink(target, &host).expect("create symlink");
            host
        }

        pub(crate) fn whiteout(&self, layer: usize, rel: &str) -> PathBuf {
            let host = self.parents(layer, rel);
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &host,
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::empty(),
                0,
            )
            .expect("mknod a 0/0 whiteout (tests run as root)");
            host
        }

        pub(crate) fn opaque(&self, layer: usize, rel: &str) -> PathBuf {
            let host = self.dir(layer, rel, 0o755);
            rustix::fs::lsetxattr(&host, OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty())
                .expect(
                    "set trusted.overlay.opaque (tests run as root on a file system with xattrs)",
                );
            host
        }
    }

    pub(crate) fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    pub(crate) fn chown_root(path: &Path) {
        std::os::unix::fs::lchown(path, Some(0), Some(0)).expect("chown to root");
    }

    pub(crate) fn chown(path: &Path, uid: u32, gid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown");
    }

    fn resolve(view: &LayeredView, path: &str) -> Option<Resolved> {
        view.resolve(path, true).expect("resolve")
    }

    fn names(entries: &[DirEntry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn upper_layer_overrides_lower() {
        let l = Layers::new(2);
        l.file(0, "/etc/a", b"lower", 0o644);
        l.file(0, "/etc/b", b"only lower", 0o644);
        let upper = l.file(1, "/etc/a", b"upper", 0o600);
        let view = l.view();

        let a = resolve(&view, "/etc/a").expect("a exists");
        assert_eq!(a.path, Path::new("/etc/a"));
        assert_eq!(a.host_path, upper);
        assert_eq!(a.layer, 1);
        assert_eq!(a.metadata.mode() & 0o777, 0o600);
        assert!(!a.final_was_symlink);
        assert!(!a.is_dir());

        let b = resolve(&view, "/etc/b").expect("b exists");
        assert_eq!(b.layer, 0);
        assert_eq!(b.host_path, l.host(0, "/etc/b"));

        // `/etc` merges both layers.
        let etc = view.read_dir("/etc").expect("read_dir").expect("is a dir");
        assert_eq!(names(&etc), ["a", "b"]);
        assert_eq!(etc.first().map(|e| e.layer), Some(1));

        assert!(resolve(&view, "/etc/c").is_none());
        let root = resolve(&view, "/").expect("root");
        assert!(root.is_dir());
        assert_eq!(root.path, Path::new("/"));
        assert_eq!(root.layer, 1);
    }

    #[test]
    fn whiteout_hides_lower_entries() {
        let l = Layers::new(3);
        l.file(0, "/etc/a", b"x", 0o644);
        l.file(0, "/etc/b", b"x", 0o644);
        l.file(0, "/opt/x/y", b"x", 0o644);
        l.whiteout(1, "/etc/a");
        l.whiteout(1, "/opt/x");
        let view = l.view();

        assert!(resolve(&view, "/etc/a").is_none());
        assert!(view.symlink_metadata("/etc/a").expect("lstat").is_none());
        assert!(resolve(&view, "/opt/x").is_none());
        assert!(resolve(&view, "/opt/x/y").is_none());
        assert_eq!(
            names(&view.read_dir("/etc").expect("ls").expect("dir")),
            ["b"]
        );
        assert!(names(&view.read_dir("/opt").expect("ls").expect("dir")).is_empty());

        // A later layer can bring the name back.
        let again = l.file(2, "/etc/a", b"again", 0o644);
        let a = resolve(&l.view(), "/etc/a").expect("re-created");
        assert_eq!(a.host_path, again);
        // …but a re-created directory does not bring back what the whiteout hid.
        l.dir(2, "/opt/x", 0o755);
        assert!(resolve(&l.view(), "/opt/x").is_some());
        assert!(resolve(&l.view(), "/opt/x/y").is_none());
    }

    #[test]
    fn opaque_directory_hides_lower_content_but_keeps_upper() {
        let l = Layers::new(3);
        l.file(0, "/app/old", b"x", 0o644);
        l.file(1, "/app/lower", b"x", 0o644);
        l.opaque(2, "/app");
        l.file(2, "/app/new", b"x", 0o644);
        l.file(2, "/app/sub/deep", b"x", 0o644);
        let view = l.view();

        assert!(resolve(&view, "/app/old").is_none());
        assert!(resolve(&view, "/app/lower").is_none());
        assert_eq!(
            resolve(&view, "/app/new").expect("new").host_path,
            l.host(2, "/app/new")
        );
        assert!(resolve(&view, "/app/sub/deep").is_some());
        assert_eq!(
            names(&view.read_dir("/app").expect("ls").expect("dir")),
            ["new", "sub"]
        );

        // Without the opaque marker, all three layers merge.
        let l2 = Layers::new(3);
        l2.file(0, "/app/old", b"x", 0o644);
        l2.file(1, "/app/lower", b"x", 0o644);
        l2.file(2, "/app/new", b"x", 0o644);
        let merged = l2.view().read_dir("/app").expect("ls").expect("dir");
        assert_eq!(names(&merged), ["lower", "new", "old"]);
    }

    #[test]
    fn opaque_in_middle_layer_stops_the_merge_there() {
        let l = Layers::new(3);
        l.file(0, "/d/bottom", b"x", 0o644);
        l.opaque(1, "/d");
        l.file(1, "/d/middle", b"x", 0o644);
        l.file(2, "/d/top", b"x", 0o644);
        let view = l.view();
        assert_eq!(
            names(&view.read_dir("/d").expect("ls").expect("dir")),
            ["middle", "top"]
        );
        assert!(resolve(&view, "/d/bottom").is_none());
    }

    #[test]
    fn non_directory_hides_directory_below() {
        let l = Layers::new(2);
        l.file(0, "/data/x", b"x", 0o644);
        l.file(1, "/data", b"now a file", 0o644);
        let view = l.view();
        let data = resolve(&view, "/data").expect("data");
        assert!(data.metadata.is_file());
        assert!(resolve(&view, "/data/x").is_none());
        assert!(view.read_dir("/data").expect("ls").is_none());
        // A trailing slash asks for a directory.
        assert!(resolve(&view, "/data/").is_none());

        // A directory over a file: the file below does not merge in.
        let l = Layers::new(3);
        l.dir(0, "/d/sub", 0o755);
        l.file(0, "/d/sub/x", b"x", 0o644);
        l.file(1, "/d", b"file", 0o644);
        l.file(2, "/d/y", b"y", 0o644);
        let view = l.view();
        assert!(resolve(&view, "/d").expect("d").is_dir());
        assert_eq!(
            names(&view.read_dir("/d").expect("ls").expect("dir")),
            ["y"]
        );
        assert!(resolve(&view, "/d/sub/x").is_none());
    }

    #[test]
    fn symlinks_resolve_inside_the_view() {
        let l = Layers::new(2);
        let real = l.file(0, "/usr/bin/python3.11", b"\x7fELF", 0o755);
        l.symlink(0, "/usr/bin/python3", "python3.11");
        l.symlink(1, "/usr/local/bin/python", "/usr/bin/python3.11");
        let view = l.view();

        let py = resolve(&view, "/usr/local/bin/python").expect("python");
        assert_eq!(py.path, Path::new("/usr/bin/python3.11"));
        assert_eq!(py.host_path, real);
        assert_eq!(py.layer, 0);
        assert!(py.final_was_symlink);
        assert!(py.metadata.is_file());
        let searched: Vec<&Path> = py.searched_dirs.iter().map(|d| d.path.as_path()).collect();
        assert_eq!(
            searched,
            ["/", "/usr", "/usr/local", "/usr/local/bin", "/usr/bin"].map(Path::new)
        );

        let link = view
            .resolve("/usr/local/bin/python", false)
            .expect("resolve")
            .expect("link");
        assert!(link.metadata.file_type().is_symlink());
        assert!(link.final_was_symlink);
        assert_eq!(link.path, Path::new("/usr/local/bin/python"));
        assert_eq!(link.host_path, l.host(1, "/usr/local/bin/python"));

        let py3 = resolve(&view, "/usr/bin/python3").expect("python3");
        assert_eq!(py3.path, Path::new("/usr/bin/python3.11"));
        assert!(py3.final_was_symlink);

        // Not a symlink at the end, but one on the way.
        l.symlink(1, "/lib", "usr/lib");
        l.file(0, "/usr/lib/libc.so.6", b"x", 0o755);
        l.dir(0, "/usr/bin", 0o755);
        let view = l.view();
        let libc = resolve(&view, "/lib/libc.so.6").expect("libc");
        assert_eq!(libc.path, Path::new("/usr/lib/libc.so.6"));
        assert!(!libc.final_was_symlink);
        // `..` after a symlinked directory is physical, as in the kernel.
        let bin = resolve(&view, "/lib/../bin").expect("/usr/bin");
        assert_eq!(bin.path, Path::new("/usr/bin"));
        assert!(view.metadata("/lib/").expect("stat").expect("dir").is_dir());
    }

    #[test]
    fn dotdot_in_symlink_target_stays_inside_the_image() {
        assert!(
            Path::new("/etc/shadow").exists() && Path::new("/etc/passwd").exists(),
            "the host has /etc/shadow and /etc/passwd, so escaping would be noticed"
        );
        let l = Layers::new(1);
        l.symlink(0, "/var/task/link", "../../../../etc/shadow");
        l.symlink(0, "/var/task/abs", "/etc/passwd");
        l.symlink(0, "/var/task/up", "../../../../../../..");
        l.dir(0, "/etc", 0o755);
        let view = l.view();
        assert!(resolve(&view, "/var/task/link").is_none());
        assert!(resolve(&view, "/var/task/abs").is_none());
        assert!(resolve(&view, "/../../etc/shadow").is_none());
        let up = resolve(&view, "/var/task/up").expect("root");
        assert_eq!(up.path, Path::new("/"));
        assert_eq!(up.host_path, l.root(0));
        assert!(resolve(&view, "/var/task/up/etc/shadow").is_none());

        let shadow = l.file(0, "/etc/shadow", b"image shadow", 0o600);
        let view = l.view();
        let r = resolve(&view, "/var/task/link").expect("image's /etc/shadow");
        assert_eq!(r.path, Path::new("/etc/shadow"));
        assert_eq!(r.host_path, shadow);
        assert!(r.host_path.starts_with(l.root(0)));
    }

    #[test]
    fn symlink_loops_fail() {
        let l = Layers::new(1);
        l.symlink(0, "/a", "/b");
        l.symlink(0, "/b", "a");
        l.symlink(0, "/self", "self");
        let view = l.view();
        for p in ["/a", "/b", "/self", "/a/x"] {
            let err = view.resolve(p, true).expect_err("loop");
            assert!(
                err.to_string()
                    .contains("too many levels of symbolic links"),
                "{err}"
            );
        }
        // Not following the final component does not loop.
        assert!(view.resolve("/a", false).expect("lstat").is_some());
    }

    #[test]
    fn forty_symlink_hops_are_allowed_not_forty_one() {
        let l = Layers::new(1);
        l.file(0, "/target", b"x", 0o644);
        // /l1 -> /l2 -> … -> /l41 -> /target
        for i in 1..=41 {
            let next = if i == 41 {
                "/target".to_owned()
            } else {
                format!("l{}", i + 1)
            };
            l.symlink(0, &format!("/l{i}"), &next);
        }
        let view = l.view();
        // 40 links from /l2.
        assert!(resolve(&view, "/l2").is_some());
        // 41 links from /l1.
        assert!(view.resolve("/l1", true).is_err());
    }

    #[test]
    fn odd_paths() {
        let l = Layers::new(1);
        l.file(0, "/f", b"x", 0o644);
        let view = l.view();
        assert!(resolve(&view, "/f\0").is_none());
        assert!(resolve(&view, "f").is_some());
        assert!(resolve(&view, "//f").is_some());
        assert!(resolve(&view, "/./f").is_some());
        assert!(resolve(&view, "/f/.").is_none());
        assert!(resolve(&view, "/f/..").is_none());
        assert!(resolve(&view, &format!("/{}", "n".repeat(300))).is_none());
        assert!(LayeredView::new(Vec::new())
            .resolve("/", true)
            .expect("empty")
            .is_none());
    }

    #[test]
    fn walk_visits_merged_tree_and_stops_at_limit() {
        let l = Layers::new(2);
        l.file(0, "/w/a", b"x", 0o644);
        l.file(0, "/w/gone", b"x", 0o644);
        l.file(0, "/w/sub/b", b"x", 0o644);
        l.whiteout(1, "/w/gone");
        l.file(1, "/w/sub/c", b"x", 0o644);
        l.symlink(1, "/w/link", "/etc");
        let view = l.view();

        let mut seen = Vec::new();
        let summary = view
            .walk("/w", 100, |e| seen.push(e.path.display().to_string()))
            .expect("walk")
            .expect("dir");
        assert_eq!(seen, ["/w/a", "/w/link", "/w/sub", "/w/sub/b", "/w/sub/c"]);
        assert_eq!(
            summary,
            WalkSummary {
                visited: 5,
                truncated: false
            }
        );

        let mut n = 0;
        let summary = view.walk("/w", 2, |_| n += 1).expect("walk").expect("dir");
        assert_eq!(n, 2);
        assert!(summary.truncated);
        assert!(view.walk("/w/a", 10, |_| {}).expect("walk").is_none());
    }
}
