//! The environment's root filesystem, built by the init helper inside its new mount namespace.
//!
//! Layout seen by the function:
//!
//! ```text
//! /          overlay, read-only, nosuid, nodev: skeleton (top) + image layers (no upper dir)
//! /tmp       tmpfs size=<ephemeral_storage_mb>m mode=1777, nosuid, nodev
//! /dev       tmpfs mode=755 nosuid noexec: null zero full random urandom (mknod), fd, stdin,
//!            stdout, stderr (symlinks into /proc/self/fd)
//! /dev/shm   tmpfs size=64m mode=1777, nosuid, nodev, noexec
//! /proc      procfs of the environment's PID namespace, nosuid, nodev, noexec (mounted by PID 1)
//! ```
//!
//! The skeleton (a lambox-owned directory holding only empty `proc`, `dev` and `tmp`) is the
//! TOPMOST layer, so those three are always real directories, whatever the image has there (a
//! missing directory, a file, a symlink pointing elsewhere): the mounts below can never be
//! redirected by image content.
//!
//! Mounts use the fd-based mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`): no option
//! strings to escape, `/dev` is populated through its mount fd before it is attached, and
//! overlay layers are passed one by one (`lowerdir+`, Linux ≥ 6.8; older kernels get one
//! `lowerdir=` string through `mount(2)`). Either way each layer is named `/proc/self/fd/N` of
//! an `O_PATH` fd: no length or character limits, and no host path in the mount options that
//! the function can read.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, CWD};
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, mount, mount_change, move_mount,
    unmount, FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags,
    MoveMountFlags, UnmountFlags,
};

use crate::init::Failure;

/// Size of `/dev/shm`, MiB.
pub(crate) const SHM_MB: u32 = 64;

fn setup(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Failure {
    Failure::setup(format!("{what}: {e}"))
}

/// Messages the kernel left in a filesystem context's log (read after a failed fsconfig):
/// they name the real reason ("overlayfs: failed to resolve …") where errno cannot.
fn fs_log(fs: &OwnedFd) -> String {
    let mut out = Vec::new();
    for _ in 0..8 {
        let mut buf = [0u8; 512];
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => out.push(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            _ => break,
        }
    }
    out.join("; ")
}

fn fs_error(fs: &OwnedFd, what: &str, e: rustix::io::Errno) -> Failure {
    let log = fs_log(fs);
    if log.is_empty() {
        setup(what, io::Error::from(e))
    } else {
        setup(what, format!("{} ({log})", io::Error::from(e)))
    }
}

/// A filesystem context with string options, created and turned into a detached mount.
fn new_mount(
    fstype: &str,
    options: &[(&str, &str)],
    attrs: MountAttrFlags,
) -> Result<OwnedFd, Failure> {
    let what = format!("mount {fstype}");
    let fs = fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| setup(&what, io::Error::from(e)))?;
    for (k, v) in options {
        fsconfig_set_string(&fs, *k, *v).map_err(|e| fs_error(&fs, &what, e))?;
    }
    fsconfig_create(&fs).map_err(|e| fs_error(&fs, &what, e))?;
    fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(|e| fs_error(&fs, &what, e))
}

/// Attach the detached mount `m` at `path` relative to `dir`.
fn attach(m: &OwnedFd, dir: impl AsFd, path: &str, what: &str) -> Result<(), Failure> {
    move_mount(m, "", dir, path, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| setup(format!("attach {what}"), io::Error::from(e)))
}

/// Build the whole root at `root` and make it our root (`pivot_root`); the host's tree is
/// detached and unreachable afterwards. Runs in the helper, right after `unshare`.
pub(crate) fn build_root(
    root: &Path,
    lowers: &[PathBuf],
    legacy_overlay: bool,
    tmp_mb: u32,
    shm_mb: u32,
) -> Result<(), Failure> {
    // Step 1: nothing we mount may propagate to the host's namespace (and nothing of the
    // host's later mounts into ours): make every mount we copied private, recursively.
    mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(|e| setup("make / private", io::Error::from(e)))?;

    // Step 2: the image, read-only, at the shared mount point (a plain empty directory on the
    // host; the mount exists only in this namespace).
    let rootfd = mount_overlay(root, lowers, legacy_overlay)?;

    // Step 3: the writable /tmp, limited to the ephemeral storage size (writing past it fails
    // with ENOSPC). Mode 1777 lets uid 993 write; root owns it.
    let size = format!("{tmp_mb}m");
    let tmp = new_mount(
        "tmpfs",
        &[("size", &size), ("mode", "1777")],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )?;
    attach(&tmp, &rootfd, "tmp", "/tmp")?;

    // Step 4: a minimal /dev, populated through its mount fd before it becomes visible.
    let dev = new_mount(
        "tmpfs",
        &[("size", "64k"), ("nr_inodes", "64"), ("mode", "755")],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    populate_dev(&dev)?;
    attach(&dev, &rootfd, "dev", "/dev")?;

    // Step 5: /dev/shm (POSIX shared memory), small and world-writable with the sticky bit.
    let size = format!("{shm_mb}m");
    let shm = new_mount(
        "tmpfs",
        &[("size", &size), ("mode", "1777")],
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    attach(&shm, &rootfd, "dev/shm", "/dev/shm")?;
    drop(rootfd);

    // Step 6: switch roots. With cwd at the new root, pivot_root(".", ".") stacks the old root
    // on top of the new one at the same place...
    rustix::process::chdir(root).map_err(|e| setup("chdir to the new root", io::Error::from(e)))?;
    rustix::process::pivot_root(".", ".").map_err(|e| setup("pivot_root", io::Error::from(e)))?;
    // ...so unmounting "." (lazily: the host's mounts below it may be busy) peels the old root
    // off, taking the whole host tree with it...
    unmount(".", UnmountFlags::DETACH)
        .map_err(|e| setup("detach the old root", io::Error::from(e)))?;
    // ...and "/" now resolves to the image's root for us and for everything we fork.
    rustix::process::chdir("/").map_err(|e| setup("chdir /", io::Error::from(e)))?;
    Ok(())
}

/// Mount the read-only overlay at `root`; returns the mount's fd (a handle on its root).
fn mount_overlay(root: &Path, lowers: &[PathBuf], legacy: bool) -> Result<OwnedFd, Failure> {
    if !legacy {
        match overlay_lowerdir_plus(lowers)? {
            Some(m) => {
                attach(&m, CWD, path_str(root)?, "the root overlay")?;
                return Ok(m);
            }
            None => tracing::debug!("overlay lowerdir+ unsupported; using lowerdir="),
        }
    }
    overlay_legacy(root, lowers)?;
    rfs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| setup("open the new root", io::Error::from(e)))
}

fn path_str(p: &Path) -> Result<&str, Failure> {
    p.to_str()
        .ok_or_else(|| Failure::setup(format!("path is not UTF-8: {}", p.display())))
}

/// Overlay flags for a lower-only stack: read-only, and no set-uid/device semantics from image
/// content.
fn overlay_attrs() -> MountAttrFlags {
    MountAttrFlags::MOUNT_ATTR_RDONLY
        | MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
}

/// Hardening options: never follow `trusted.overlay.redirect` or `metacopy` xattrs that an
/// image layer could carry. Best effort: a kernel that does not know an option keeps its
/// (equally safe for a lower-only stack) default.
const OVERLAY_HARDENING: [(&str, &str); 2] = [("redirect_dir", "nofollow"), ("metacopy", "off")];

/// Names for the layer directories: `/proc/self/fd/N` of an `O_PATH` fd. Neither the 256-byte
/// fsconfig string limit nor `:`/`,` in a path can get in the way, and the mount options the
/// function can read in /proc/self/mounts name no host path.
fn layer_fds(lowers: &[PathBuf]) -> Result<Vec<(OwnedFd, String)>, Failure> {
    lowers
        .iter()
        .map(|l| {
            let fd = rfs::open(
                l,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| setup(format!("open layer {}", l.display()), io::Error::from(e)))?;
            let name = format!("/proc/self/fd/{}", fd.as_raw_fd());
            Ok((fd, name))
        })
        .collect()
}

/// The overlay through `fsconfig(lowerdir+)`; `Ok(None)` if the kernel does not know it.
fn overlay_lowerdir_plus(lowers: &[PathBuf]) -> Result<Option<OwnedFd>, Failure> {
    let what = "mount the root overlay";
    let layers = layer_fds(lowers)?;
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| setup(what, io::Error::from(e)))?;
    for (i, (_, name)) in layers.iter().enumerate() {
        match fsconfig_set_string(&fs, "lowerdir+", name.as_str()) {
            Ok(()) => {}
            // The first layer refused as an invalid parameter: this kernel has no lowerdir+.
            Err(rustix::io::Errno::INVAL) if i == 0 => return Ok(None),
            Err(e) => {
                return Err(fs_error(
                    &fs,
                    &format!("{what} (layer {})", lowers[i].display()),
                    e,
                ))
            }
        }
    }
    for (k, v) in OVERLAY_HARDENING {
        let _ = fsconfig_set_string(&fs, k, v);
    }
    fsconfig_create(&fs).map_err(|e| fs_error(&fs, what, e))?;
    let m = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, overlay_attrs())
        .map_err(|e| fs_error(&fs, what, e))?;
    drop(layers);
    Ok(Some(m))
}

/// The overlay through `mount(2)` and one `lowerdir=` string (kernels before 6.8).
fn overlay_legacy(root: &Path, lowers: &[PathBuf]) -> Result<(), Failure> {
    let fds = layer_fds(lowers)?;
    let names: Vec<&str> = fds.iter().map(|(_, n)| n.as_str()).collect();
    let mut data = format!("lowerdir={}", names.join(":"));
    for (k, v) in OVERLAY_HARDENING {
        data.push_str(&format!(",{k}={v}"));
    }
    let data = CString::new(data).map_err(|e| setup("overlay options", e))?;
    let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
    let r = mount("overlay", root, "overlay", flags, Some(data.as_c_str()));
    if let Err(rustix::io::Errno::INVAL) = r {
        // Maybe an option this kernel lacks: retry without the hardening ones.
        let plain = CString::new(format!("lowerdir={}", names.join(":")))
            .map_err(|e| setup("overlay options", e))?;
        mount("overlay", root, "overlay", flags, Some(plain.as_c_str()))
            .map_err(|e| setup("mount the root overlay", io::Error::from(e)))?;
    } else {
        r.map_err(|e| setup("mount the root overlay", io::Error::from(e)))?;
    }
    Ok(())
}

/// Device nodes and links of the minimal /dev.
fn populate_dev(dev: &OwnedFd) -> Result<(), Failure> {
    for (name, minor) in [
        ("null", 3),
        ("zero", 5),
        ("full", 7),
        ("random", 8),
        ("urandom", 9),
    ] {
        rfs::mknodat(
            dev,
            name,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rfs::makedev(1, minor),
        )
        .map_err(|e| setup(format!("mknod /dev/{name}"), io::Error::from(e)))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        rfs::symlinkat(target, dev, name)
            .map_err(|e| setup(format!("symlink /dev/{name}"), io::Error::from(e)))?;
    }
    rfs::mkdirat(dev, "shm", Mode::from_raw_mode(0o755))
        .map_err(|e| setup("mkdir /dev/shm", io::Error::from(e)))?;
    Ok(())
}

/// Mount the procfs of the caller's PID namespace at /proc. Must run in PID 1 (or below):
/// procfs shows the PID namespace of the process that creates it.
pub(crate) fn mount_proc() -> Result<(), Failure> {
    let m = new_mount(
        "proc",
        &[],
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    attach(&m, CWD, "/proc", "/proc")
}
