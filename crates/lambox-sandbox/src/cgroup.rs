//! Cgroups: finding our own, one per environment under it, limits, freeze, kill, statistics.
//!
//! Each resource is handled by the hierarchy that has its controller:
//!
//! * memory, pids, cpu: cgroup v2 if the v2 hierarchy has the controller available in our own
//!   cgroup (pure v2 machines), else the v1 hierarchy mounted with it (v1 and hybrid machines).
//! * freeze and kill: cgroup v2 whenever a v2 hierarchy is mounted at all, because
//!   `cgroup.freeze` and `cgroup.kill` need no controller (on a hybrid machine the unified tree
//!   has none, yet both work there); else the v1 freezer, and kill through PID 1's pidfd.
//!
//! An environment's cgroup is `<our own cgroup>/lambox/<env id>` in every hierarchy used; the
//! helper joins all of them before it forks anything.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Lambda's memory → CPU ratio: 1,769 MB is one vCPU.
pub(crate) const MB_PER_VCPU: u64 = 1769;
/// CFS bandwidth period, µs.
pub(crate) const CPU_PERIOD_US: u64 = 100_000;
/// Lambda's processes/threads quota.
pub(crate) const PIDS_MAX: u32 = 1024;
/// Name of the directory under our own cgroup that holds the environments' cgroups.
const GROUP: &str = "lambox";

/// The CPU cap Lambda gives a function of `memory_mb`: `memory / 1769` vCPUs, as a CFS quota
/// per [`CPU_PERIOD_US`] (rounded; never below the kernel's 1 ms minimum).
pub(crate) fn cpu_quota_us(memory_mb: u32) -> u64 {
    let q = (u64::from(memory_mb) * CPU_PERIOD_US + MB_PER_VCPU / 2) / MB_PER_VCPU;
    q.max(1000)
}

pub(crate) fn memory_bytes(memory_mb: u32) -> u64 {
    u64::from(memory_mb) << 20
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    V2,
}

/// Our own cgroup directory in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    pub version: Version,
    pub own: PathBuf,
}

/// Where each resource is controlled, relative to our own cgroups. Computed once per process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Layout {
    pub memory: Option<Hierarchy>,
    pub pids: Option<Hierarchy>,
    pub cpu: Option<Hierarchy>,
    pub freezer: Option<Hierarchy>,
    /// Our own directory in the v2 hierarchy, if one is mounted (gives `cgroup.kill`).
    pub unified: Option<PathBuf>,
}

/// `/proc/self/cgroup`, parsed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ProcCgroup {
    /// (controllers, path) of each v1 hierarchy.
    pub v1: Vec<(Vec<String>, String)>,
    /// Path in the v2 hierarchy.
    pub v2: Option<String>,
}

pub(crate) fn parse_proc_cgroup(text: &str) -> ProcCgroup {
    let mut out = ProcCgroup::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            out.v2 = Some(path.to_string());
        } else {
            let ctrls = ctrls
                .split(',')
                .filter(|c| !c.is_empty() && !c.starts_with("name="))
                .map(str::to_string)
                .collect::<Vec<_>>();
            if !ctrls.is_empty() {
                out.v1.push((ctrls, path.to_string()));
            }
        }
    }
    out
}

/// One cgroup filesystem mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    pub v2: bool,
    /// v1: the controllers bound to this hierarchy (from the super options).
    pub controllers: Vec<String>,
    /// The cgroup path the mount shows as its root (usually `/`).
    pub root: String,
    pub mountpoint: PathBuf,
}

/// Undo mountinfo's octal escapes (`\040` for a space, …).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let (root, mountpoint) = (unescape_mountinfo(pre[3]), unescape_mountinfo(pre[4]));
        match post[0] {
            "cgroup2" => out.push(CgroupMount {
                v2: true,
                controllers: Vec::new(),
                root,
                mountpoint: PathBuf::from(mountpoint),
            }),
            "cgroup" => {
                let known = [
                    "cpu",
                    "cpuacct",
                    "cpuset",
                    "memory",
                    "devices",
                    "freezer",
                    "blkio",
                    "pids",
                    "net_cls",
                    "net_prio",
                    "perf_event",
                    "hugetlb",
                    "rdma",
                    "misc",
                ];
                let controllers = post[2]
                    .split(',')
                    .filter(|o| known.contains(o))
                    .map(str::to_string)
                    .collect();
                out.push(CgroupMount {
                    v2: false,
                    controllers,
                    root,
                    mountpoint: PathBuf::from(mountpoint),
                });
            }
            _ => {}
        }
    }
    out
}

/// The directory of cgroup `own` in a hierarchy mounted at `mountpoint` showing `mount_root`;
/// `None` if our cgroup is outside what that mount shows.
pub(crate) fn own_dir(mount_root: &str, mountpoint: &Path, own: &str) -> Option<PathBuf> {
    let rel = if mount_root == "/" {
        own.strip_prefix('/')?
    } else {
        let rest = own.strip_prefix(mount_root)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        rest.trim_start_matches('/')
    };
    if rel.split('/').any(|c| c == "..") {
        return None;
    }
    Some(if rel.is_empty() {
        mountpoint.to_path_buf()
    } else {
        mountpoint.join(rel)
    })
}

/// Combine `/proc/self/cgroup` and the cgroup mounts into a [`Layout`]. `v2_controllers` reads
/// `cgroup.controllers` of a v2 directory.
pub(crate) fn compute_layout(
    proc: &ProcCgroup,
    mounts: &[CgroupMount],
    v2_controllers: impl Fn(&Path) -> Vec<String>,
) -> Layout {
    let mut layout = Layout::default();
    let unified = proc.v2.as_deref().and_then(|own| {
        mounts
            .iter()
            .filter(|m| m.v2)
            .find_map(|m| own_dir(&m.root, &m.mountpoint, own))
    });
    let v2_ctrls = unified.as_deref().map(&v2_controllers).unwrap_or_default();
    let v1 = |ctrl: &str| -> Option<Hierarchy> {
        let (_, own) = proc.v1.iter().find(|(c, _)| c.iter().any(|c| c == ctrl))?;
        mounts
            .iter()
            .filter(|m| !m.v2 && m.controllers.iter().any(|c| c == ctrl))
            .find_map(|m| own_dir(&m.root, &m.mountpoint, own))
            .map(|own| Hierarchy {
                version: Version::V1,
                own,
            })
    };
    let pick = |ctrl: &str| -> Option<Hierarchy> {
        match &unified {
            Some(u) if v2_ctrls.iter().any(|c| c == ctrl) => Some(Hierarchy {
                version: Version::V2,
                own: u.clone(),
            }),
            _ => v1(ctrl),
        }
    };
    layout.memory = pick("memory");
    layout.pids = pick("pids");
    layout.cpu = pick("cpu");
    layout.freezer = match &unified {
        Some(u) => Some(Hierarchy {
            version: Version::V2,
            own: u.clone(),
        }),
        None => v1("freezer"),
    };
    layout.unified = unified;
    layout
}

fn read_v2_controllers(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("cgroup.controllers"))
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Our layout, discovered on first use (and, on pure v2, the controllers delegated to our
/// environments' parent cgroup).
pub(crate) fn layout() -> Result<&'static Layout, String> {
    static LAYOUT: OnceLock<Result<Layout, String>> = OnceLock::new();
    LAYOUT
        .get_or_init(|| {
            let proc = fs::read_to_string("/proc/self/cgroup")
                .map_err(|e| format!("read /proc/self/cgroup: {e}"))?;
            let mounts = fs::read_to_string("/proc/self/mountinfo")
                .map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
            let layout = compute_layout(
                &parse_proc_cgroup(&proc),
                &parse_mountinfo(&mounts),
                read_v2_controllers,
            );
            if layout.memory.is_none() {
                return Err("no cgroup hierarchy with the memory controller is mounted".into());
            }
            prepare_v2(&layout)?;
            remove_stale_groups(&layout);
            tracing::debug!(?layout, "cgroup layout");
            Ok(layout)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// On pure v2, a cgroup's children only get a controller its `cgroup.subtree_control` enables,
/// and a non-root cgroup can enable one only while it has no processes of its own. So: enable
/// our controllers in our own cgroup (moving this process into a leaf `lambox-supervisor` if
/// our cgroup holds it), then in `<own>/lambox`.
fn prepare_v2(layout: &Layout) -> Result<(), String> {
    let Some(own) = &layout.unified else {
        return Ok(());
    };
    let wanted: Vec<&str> = [
        ("memory", &layout.memory),
        ("pids", &layout.pids),
        ("cpu", &layout.cpu),
    ]
    .iter()
    .filter(|(_, h)| matches!(h, Some(h) if h.version == Version::V2))
    .map(|(c, _)| *c)
    .collect();
    let group = own.join(GROUP);
    mkdir_exist_ok(&group).map_err(|e| format!("create cgroup {}: {e}", group.display()))?;
    if wanted.is_empty() {
        return Ok(());
    }
    let enable = wanted
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let enabled = |dir: &Path| {
        let have = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
        wanted
            .iter()
            .all(|w| have.split_whitespace().any(|h| h == *w))
    };
    if !enabled(own) {
        let control = own.join("cgroup.subtree_control");
        if let Err(e) = write_file(&control, &enable) {
            if e.raw_os_error() != Some(libc::EBUSY) {
                return Err(format!("write {}: {e}", control.display()));
            }
            let leaf = own.join("lambox-supervisor");
            mkdir_exist_ok(&leaf).map_err(|e| format!("create {}: {e}", leaf.display()))?;
            write_file(&leaf.join("cgroup.procs"), &std::process::id().to_string())
                .map_err(|e| format!("move lambox into {}: {e}", leaf.display()))?;
            write_file(&control, &enable).map_err(|e| {
                format!(
                    "write {}: {e} (other processes share lambox's cgroup; run lambox in a \
                     cgroup of its own)",
                    control.display()
                )
            })?;
        }
    }
    if !enabled(&group) {
        let control = group.join("cgroup.subtree_control");
        write_file(&control, &enable).map_err(|e| format!("write {}: {e}", control.display()))?;
    }
    Ok(())
}

fn mkdir_exist_ok(p: &Path) -> io::Result<()> {
    match fs::create_dir(p) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        r => r,
    }
}

/// Write a cgroup control file (one `write`; no create, no truncate games).
pub(crate) fn write_file(path: &Path, value: &str) -> io::Result<()> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

/// `key N` from a flat-keyed cgroup file such as `memory.events` or `memory.oom_control`.
pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// One environment's cgroups.
#[derive(Debug)]
pub(crate) struct EnvCgroups {
    /// Every directory created (one per hierarchy), in creation order.
    pub dirs: Vec<PathBuf>,
    memory: Option<(Version, PathBuf)>,
    pids: Option<PathBuf>,
    cpu: Option<(Version, PathBuf)>,
    freezer: Option<(Version, PathBuf)>,
    /// v2 directory with `cgroup.kill`.
    kill: Option<PathBuf>,
    /// The files touched on every invoke, opened once (an `openat` + `close` per access cost
    /// 12 % of lambox's CPU on the warm path): see [`HeldFiles`].
    held: HeldFiles,
}

/// Per-invoke cgroup files, open for the environment's lifetime.
#[derive(Debug, Default)]
struct HeldFiles {
    /// `cgroup.freeze` (v2) or `freezer.state` (v1), for writing.
    freeze: Option<fs::File>,
    /// `cgroup.events` (v2; pollable: the kernel notifies each change of `frozen`) or
    /// `freezer.state` (v1), for reading.
    freeze_state: Option<fs::File>,
    /// `memory.max_usage_in_bytes` (v1) or `memory.peak` (v2).
    peak: Option<fs::File>,
}

/// Read a whole (small) cgroup file from offset 0 of an open file: one `pread`.
fn pread_small(f: &fs::File) -> io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 512];
    let n = f.read_at(&mut buf, 0)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Write a value to an open cgroup file (offset ignored by cgroup files): one `pwrite`.
fn pwrite_value(f: &fs::File, value: &str) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.write_at(value.as_bytes(), 0).map(drop)
}

/// Our own cgroup in every hierarchy we use, once each.
fn own_dirs(layout: &Layout) -> Vec<&Path> {
    let mut owns: Vec<&Path> = Vec::new();
    for h in [&layout.memory, &layout.pids, &layout.cpu, &layout.freezer]
        .into_iter()
        .flatten()
    {
        owns.push(&h.own);
    }
    if let Some(u) = &layout.unified {
        owns.push(u);
    }
    let mut seen = BTreeSet::new();
    owns.retain(|p| seen.insert(p.to_path_buf()));
    owns
}

/// The pid in an environment cgroup's name (`<pid>-<n>`).
pub(crate) fn creator_pid(name: &str) -> Option<i32> {
    let (pid, n) = name.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok().filter(|p| *p > 0)
}

/// Remove the environment cgroups left by lambox processes that are gone (killed with
/// SIGKILL, or by a signal before their handler was in place): `<pid>-<n>` directories whose
/// pid no longer exists. Such a lambox's environments outlive it (their helper's parent is
/// gone, nobody serves their Runtime API), so the processes still in those cgroups — only ever
/// a dead lambox's helpers, their PID 1s and functions — are killed first (SIGKILL; PID 1's
/// death ends the rest of its PID namespace). A pid that was reused by another process keeps
/// its directories (harmless). Run once per process, when the layout is first computed.
fn remove_stale_groups(layout: &Layout) {
    let me = std::process::id() as i32;
    for own in own_dirs(layout) {
        let Ok(entries) = fs::read_dir(own.join(GROUP)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(creator_pid) else {
                continue;
            };
            let gone = pid != me
                && rustix::process::Pid::from_raw(pid).is_some_and(|p| {
                    rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH)
                });
            if gone && e.file_type().is_ok_and(|t| t.is_dir()) && remove_killing(&e.path()) {
                tracing::debug!(path = %e.path().display(), "removed a stale environment cgroup");
            }
        }
    }
}

/// `rmdir` a stale environment cgroup; while it still holds processes, SIGKILL them and
/// retry (their exit and the cgroup's release are asynchronous), for at most a second.
fn remove_killing(dir: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if fs::remove_dir(dir).is_ok() {
            return true;
        }
        // A frozen environment dies only once thawed (the v1 freezer; v2's lets SIGKILL through).
        let _ = fs::write(dir.join("cgroup.freeze"), "0");
        let _ = fs::write(dir.join("freezer.state"), "THAWED");
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let mut killed = 0;
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                if rustix::process::kill_process(p, rustix::process::Signal::KILL).is_ok() {
                    killed += 1;
                }
            }
        }
        if killed > 0 {
            tracing::warn!(
                path = %dir.display(),
                processes = killed,
                "killed the processes of an environment whose lambox process is gone"
            );
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Remove the `<own>/lambox` group directories once they hold no environment. Where another
/// environment (of this or another lambox process) is still there, `rmdir` fails and the
/// directory stays, as it must.
pub(crate) fn remove_empty_groups() {
    if let Ok(layout) = layout() {
        for own in own_dirs(layout) {
            let _ = fs::remove_dir(own.join(GROUP));
        }
    }
}

impl EnvCgroups {
    /// Create the environment's cgroups and set its pids limit and, if given, its memory limit
    /// (else [`EnvCgroups::set_limits`] later; the CPU cap comes later too, see
    /// [`EnvCgroups::set_cpu_quota`]). `Ok(None)`: `id` is taken.
    pub(crate) fn create(
        layout: &Layout,
        id: &str,
        memory_mb: Option<u32>,
    ) -> io::Result<Option<Self>> {
        let owns = own_dirs(layout);

        let env_dir = |own: &Path| own.join(GROUP).join(id);
        let mut cg = EnvCgroups {
            dirs: Vec::new(),
            memory: layout.memory.as_ref().map(|h| (h.version, env_dir(&h.own))),
            pids: layout.pids.as_ref().map(|h| env_dir(&h.own)),
            cpu: layout.cpu.as_ref().map(|h| (h.version, env_dir(&h.own))),
            freezer: layout
                .freezer
                .as_ref()
                .map(|h| (h.version, env_dir(&h.own))),
            kill: None,
            held: HeldFiles::default(),
        };
        for own in owns {
            let group = own.join(GROUP);
            let dir = group.join(id);
            let mut made = fs::create_dir(&dir);
            if matches!(&made, Err(e) if e.kind() == io::ErrorKind::NotFound) {
                // First environment under this cgroup: create the group directory.
                mkdir_exist_ok(&group)?;
                made = fs::create_dir(&dir);
            }
            match made {
                Ok(()) => cg.dirs.push(dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    cg.remove();
                    return Ok(None);
                }
                Err(e) => {
                    cg.remove();
                    return Err(io::Error::new(
                        e.kind(),
                        format!("create cgroup {}: {e}", dir.display()),
                    ));
                }
            }
        }
        if let Some(u) = &layout.unified {
            let dir = env_dir(u);
            if dir.join("cgroup.kill").exists() {
                cg.kill = Some(dir);
            }
        }
        if let Err(e) = cg.open_held().and_then(|()| match memory_mb {
            Some(mb) => cg.set_limits(mb),
            None => cg.set_pids_limit(),
        }) {
            cg.remove();
            return Err(e);
        }
        Ok(Some(cg))
    }

    fn open_held(&mut self) -> io::Result<()> {
        let open = |p: PathBuf, write: bool| {
            fs::OpenOptions::new()
                .read(!write)
                .write(write)
                .open(&p)
                .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", p.display())))
        };
        if let Some((version, dir)) = &self.freezer {
            let (w, r) = match version {
                Version::V2 => ("cgroup.freeze", "cgroup.events"),
                Version::V1 => ("freezer.state", "freezer.state"),
            };
            self.held.freeze = Some(open(dir.join(w), true)?);
            self.held.freeze_state = Some(open(dir.join(r), false)?);
        }
        if let Some((version, dir)) = &self.memory {
            let file = match version {
                Version::V1 => "memory.max_usage_in_bytes",
                Version::V2 => "memory.peak",
            };
            // memory.peak is missing before Linux 5.19: peak memory is then unknown.
            self.held.peak = open(dir.join(file), false).ok();
        }
        Ok(())
    }

    fn set_pids_limit(&self) -> io::Result<()> {
        if let Some(dir) = &self.pids {
            let p = dir.join("pids.max");
            write_file(&p, &PIDS_MAX.to_string())
                .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", p.display())))?;
        }
        Ok(())
    }

    /// Set the memory limit (and pids) of cgroups made without one (a pre-spawned helper's,
    /// see `crate::helpers`): cheap writes, done when the spec arrives.
    pub(crate) fn set_limits(&self, memory_mb: u32) -> io::Result<()> {
        let set = |dir: &Path, file: &str, value: &str| {
            let p = dir.join(file);
            write_file(&p, value)
                .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", p.display())))
        };
        let bytes = memory_bytes(memory_mb).to_string();
        match &self.memory {
            Some((Version::V1, dir)) => {
                set(dir, "memory.limit_in_bytes", &bytes)?;
                // Lambda has no swap; best effort (refused on some kernels/configs).
                let _ = set(dir, "memory.swappiness", "0");
            }
            Some((Version::V2, dir)) => {
                set(dir, "memory.max", &bytes)?;
                if dir.join("memory.swap.max").exists() {
                    let _ = set(dir, "memory.swap.max", "0");
                }
            }
            None => {}
        }
        self.set_pids_limit()
    }

    /// The `cgroup.procs` file of every directory: what the helper joins.
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Apply Lambda's CPU cap. Done once the function has been exec'd: the sandbox's own setup
    /// must not run at the 7 % of a CPU that a 128 MB function gets.
    pub(crate) fn set_cpu_quota(&self, memory_mb: u32) -> io::Result<()> {
        let quota = cpu_quota_us(memory_mb);
        let r = match &self.cpu {
            Some((Version::V1, dir)) => {
                write_file(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())
                    .and_then(|()| write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string()))
            }
            Some((Version::V2, dir)) => {
                write_file(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))
            }
            None => Ok(()),
        };
        r.map_err(|e| io::Error::new(e.kind(), format!("set the CPU quota: {e}")))
    }

    /// Freeze (`true`) or thaw, and wait (≤ 1 s) until the kernel reports it done. Uses the
    /// held files: one write, then reads of the state; on v2 the wait is a `poll` for the
    /// kernel's change notification on `cgroup.events` (no sleeping in steps), on v1 (no
    /// notification) short sleeps.
    pub(crate) fn set_frozen(&self, frozen: bool) -> io::Result<()> {
        let (Some((version, _)), Some(control), Some(state)) =
            (&self.freezer, &self.held.freeze, &self.held.freeze_state)
        else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no freezer cgroup available",
            ));
        };
        let value = match (version, frozen) {
            (Version::V2, true) => "1",
            (Version::V2, false) => "0",
            (Version::V1, true) => "FROZEN",
            (Version::V1, false) => "THAWED",
        };
        pwrite_value(control, value)?;
        let done = |text: &str| match version {
            Version::V2 => keyed_value(text, "frozen") == Some(u64::from(frozen)),
            Version::V1 => text.trim() == value,
        };
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut pause = Duration::from_micros(50);
        loop {
            // On v2 this read also re-arms the notification that `poll` waits for.
            if done(&pread_small(state)?) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} did not complete within 1 s",
                        if frozen { "freezing" } else { "thawing" }
                    ),
                ));
            }
            match version {
                Version::V2 => {
                    let left = deadline - now;
                    let mut fds = [rustix::event::PollFd::new(
                        state,
                        rustix::event::PollFlags::PRI,
                    )];
                    let timeout = rustix::event::Timespec {
                        tv_sec: left.as_secs() as i64,
                        tv_nsec: i64::from(left.subsec_nanos()),
                    };
                    match rustix::event::poll(&mut fds, Some(&timeout)) {
                        Ok(_) | Err(rustix::io::Errno::INTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Version::V1 => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
            }
        }
    }

    /// SIGKILL every process in the environment's cgroup, if the kernel can (v2
    /// `cgroup.kill`). Returns whether it could.
    pub(crate) fn kill_cgroup(&self) -> bool {
        self.kill
            .as_ref()
            .is_some_and(|d| write_file(&d.join("cgroup.kill"), "1").is_ok())
    }

    /// Ask the kernel to freeze, without waiting for it to finish (a later thaw cancels a
    /// freeze in progress).
    pub(crate) fn freeze_nowait(&self) -> io::Result<()> {
        let (Some((version, _)), Some(f)) = (&self.freezer, &self.held.freeze) else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no freezer cgroup available",
            ));
        };
        pwrite_value(
            f,
            match version {
                Version::V2 => "1",
                Version::V1 => "FROZEN",
            },
        )
    }

    /// Thaw without waiting, so that killed processes can run to their death (the v1 freezer
    /// keeps even SIGKILLed tasks frozen).
    pub(crate) fn thaw_nowait(&self) {
        if let (Some((version, _)), Some(f)) = (&self.freezer, &self.held.freeze) {
            let value = match version {
                Version::V2 => "0",
                Version::V1 => "THAWED",
            };
            let _ = pwrite_value(f, value);
        } else if let Some((version, dir)) = &self.freezer {
            let (file, value) = match version {
                Version::V2 => ("cgroup.freeze", "0"),
                Version::V1 => ("freezer.state", "THAWED"),
            };
            let _ = write_file(&dir.join(file), value);
        }
    }

    /// Peak memory use, bytes.
    pub(crate) fn peak_memory(&self) -> Option<u64> {
        pread_small(self.held.peak.as_ref()?)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether the OOM killer killed a process of this environment.
    pub(crate) fn oom_killed(&self) -> bool {
        let Some((version, dir)) = self.memory.as_ref() else {
            return false;
        };
        let file = match version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|t| keyed_value(&t, "oom_kill"))
            .is_some_and(|n| n > 0)
    }

    /// Remove the directories, retrying while processes drain (≤ 2 s; after 0.5 s, a
    /// `cgroup.kill` for anything still there). Returns those that could not be removed.
    pub(crate) fn remove(&mut self) -> Vec<PathBuf> {
        let start = Instant::now();
        let mut last_resort = false;
        let mut pause = Duration::from_micros(100);
        // Open files do not keep a cgroup directory busy, but nothing needs them any more.
        self.held = HeldFiles::default();
        let mut left = std::mem::take(&mut self.dirs);
        left.reverse();
        loop {
            left.retain(|d| match fs::remove_dir(d) {
                Ok(()) => false,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(_) => true,
            });
            if left.is_empty() || start.elapsed() >= Duration::from_secs(2) {
                self.dirs = left.clone();
                return left;
            }
            if !last_resort && start.elapsed() >= Duration::from_millis(500) {
                last_resort = true;
                self.kill_cgroup();
                self.thaw_nowait();
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n\
        5:devices:/\n4:memory:/process_api/9f4d\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";

    const HYBRID_MOUNTINFO: &str = "\
25 1 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
27 25 0:24 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
28 25 0:25 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
29 25 0:26 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
30 25 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
31 25 0:28 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
32 25 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_layout() {
        let proc = parse_proc_cgroup(HYBRID_CGROUP);
        assert_eq!(proc.v2.as_deref(), Some("/"));
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(mounts.len(), 7);
        let l = compute_layout(&proc, &mounts, |_| Vec::new());
        let v1 = |p: &str| {
            Some(Hierarchy {
                version: Version::V1,
                own: PathBuf::from(p),
            })
        };
        assert_eq!(l.memory, v1("/sys/fs/cgroup/memory/process_api/9f4d"));
        assert_eq!(l.pids, v1("/sys/fs/cgroup/pids"));
        assert_eq!(l.cpu, v1("/sys/fs/cgroup/cpu"));
        assert_eq!(
            l.freezer,
            Some(Hierarchy {
                version: Version::V2,
                own: PathBuf::from("/sys/fs/cgroup/unified")
            })
        );
        assert_eq!(l.unified, Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn pure_v2_layout() {
        let proc = parse_proc_cgroup("0::/system.slice/lambox.service\n");
        let mounts = parse_mountinfo(
            "30 25 0:29 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        let l = compute_layout(&proc, &mounts, |p| {
            assert_eq!(p, Path::new("/sys/fs/cgroup/system.slice/lambox.service"));
            vec!["cpu".into(), "memory".into(), "pids".into()]
        });
        let own = PathBuf::from("/sys/fs/cgroup/system.slice/lambox.service");
        let v2 = Some(Hierarchy {
            version: Version::V2,
            own: own.clone(),
        });
        assert_eq!(l.memory, v2);
        assert_eq!(l.pids, v2);
        assert_eq!(l.cpu, v2);
        assert_eq!(l.freezer, v2);
        assert_eq!(l.unified, Some(own));
    }

    #[test]
    fn pure_v1_comounted_layout() {
        let proc = parse_proc_cgroup("4:cpu,cpuacct:/a\n3:memory:/a\n2:freezer:/a\n");
        let mounts = parse_mountinfo(
            "26 25 0:23 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             28 25 0:25 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             29 25 0:26 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n",
        );
        let l = compute_layout(&proc, &mounts, |_| unreachable!());
        assert_eq!(
            l.cpu.map(|h| h.own),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/a"))
        );
        assert_eq!(l.pids, None);
        assert_eq!(l.freezer.map(|h| h.version), Some(Version::V1));
        assert_eq!(l.unified, None);
    }

    #[test]
    fn own_dir_respects_mount_root() {
        let mp = Path::new("/sys/fs/cgroup/memory");
        assert_eq!(own_dir("/", mp, "/"), Some(mp.to_path_buf()));
        assert_eq!(own_dir("/", mp, "/a/b"), Some(mp.join("a/b")));
        assert_eq!(own_dir("/a", mp, "/a/b"), Some(mp.join("b")));
        assert_eq!(own_dir("/a", mp, "/a"), Some(mp.to_path_buf()));
        assert_eq!(own_dir("/a", mp, "/ab"), None);
        assert_eq!(own_dir("/a", mp, "/b"), None);
        assert_eq!(own_dir("/", mp, "/a/../b"), None);
    }

    #[test]
    fn mountinfo_escapes() {
        let m = parse_mountinfo("1 0 0:1 / /sys/fs/cg\\040x rw - cgroup2 cgroup2 rw\n");
        assert_eq!(m[0].mountpoint, PathBuf::from("/sys/fs/cg x"));
    }

    #[test]
    fn cpu_quota_follows_lambda_ratio() {
        assert_eq!(cpu_quota_us(1769), 100_000);
        assert_eq!(cpu_quota_us(128), 7_236);
        assert_eq!(cpu_quota_us(3538), 200_000);
        assert_eq!(cpu_quota_us(10_240), 578_858);
        assert_eq!(cpu_quota_us(1), 1000);
        assert_eq!(memory_bytes(128), 134_217_728);
    }

    #[test]
    fn creator_pids() {
        assert_eq!(creator_pid("1234-0"), Some(1234));
        assert_eq!(creator_pid("1234-17"), Some(1234));
        assert_eq!(creator_pid("lambox-supervisor"), None);
        assert_eq!(creator_pid("0-1"), None);
        assert_eq!(creator_pid("12-x"), None);
        assert_eq!(creator_pid("12"), None);
    }

    #[test]
    fn keyed_values() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed_value(v1, "oom_kill"), Some(3));
        let v2 = "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed_value(v2, "oom_kill"), Some(1));
        assert_eq!(keyed_value("populated 1\nfrozen 0\n", "frozen"), Some(0));
        assert_eq!(keyed_value("", "frozen"), None);
    }
}
