//! `lambox lint`: what AWS would refuse, or what would fail at run time, caught at home.
//!
//! [`lint`] is a pure check over a stored image — its config and its layers seen through a
//! [`LayeredView`] — plus the function's `ImageConfig` [`Overrides`]. It never fails: every
//! problem, including trouble reading the store, becomes a [`Finding`] in the [`LintReport`].
//! An image is deployable when no finding has [`Level::Error`].
//!
//! Codes are stable identifiers (scripts may match on them); messages are one line, name the
//! path concerned, and quote image-supplied strings with `{:?}` so a hostile name cannot break
//! the line.
//!
//! | level   | code                          | meaning |
//! |---------|-------------------------------|---------|
//! | error   | `os-not-linux`                | config `os` is not `linux` |
//! | error   | `unsupported-architecture`    | config `architecture` is neither `amd64` nor `arm64` |
//! | error   | `image-too-large`             | uncompressed size over the limit (Lambda: 10 GB) |
//! | error   | `no-command`                  | ENTRYPOINT ++ CMD (after overrides) is empty |
//! | error   | `entrypoint-not-absolute`     | argv\[0\] does not start with `/` (`Runtime.InvalidEntrypoint`) |
//! | error   | `entrypoint-missing`          | argv\[0\] (or a script's `#!` interpreter) does not resolve in the image |
//! | error   | `entrypoint-not-executable`   | not a regular file, or uid 993/gid 990 cannot execute it or search a directory on its path |
//! | error   | `workdir-missing`             | working directory missing or not a directory (`Runtime.InvalidWorkingDir`) |
//! | error   | `workdir-not-accessible`      | uid 993 cannot `chdir` into the working directory |
//! | error   | `unreadable-files`            | files under the working directory, or a script entrypoint, that uid 993 cannot read |
//! | error   | `check-failed`                | the store could not be read while checking |
//! | warning | `entrypoint-is-symlink`       | argv\[0\] itself is a symlink (AWS advises against it; it runs) |
//! | warning | `no-runtime-interface-client` | heuristic: nothing in the image seems to speak the Runtime API |
//! | note    | `walk-truncated`              | the working directory has more entries than were checked |
//! | note    | `ignored-user`                | image sets `User`, which Lambda ignores |
//! | note    | `ignored-exposed-ports`       | image sets `ExposedPorts`, which Lambda ignores |
//! | note    | `ignored-volumes`             | image sets `Volumes`, which Lambda ignores |
//! | note    | `ignored-stop-signal`         | image sets `StopSignal`, which Lambda ignores |
//!
//! `HEALTHCHECK` is ignored by Lambda too, but the OCI image config (and so `oci-spec`) has no
//! field for it, so there is no note for it.
//!
//! Permissions are checked as the kernel checks them for Lambda's default user (uid 993, gid 990,
//! no supplementary groups, no capabilities): the owner bits apply if the file's uid is 993,
//! else the group bits if its gid is 990, else the other bits. POSIX ACLs are not considered.
//! A binary entrypoint needs only `x` (the kernel maps it without the caller reading it); a `#!`
//! script entrypoint also needs `r`, since its interpreter opens it, so only then does an
//! unreadable entrypoint count in `unreadable-files`. The script's interpreter must exist and be
//! executable too (reported as `entrypoint-missing` / `entrypoint-not-executable`).
//!
//! The argv is [`effective_command`] (Docker's merge rules) and the working directory
//! [`effective_workdir`]. When the working directory is `/`, the tree is not walked (that would be
//! the whole image, full of files Lambda never opens).

use std::collections::HashSet;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci_spec::image::{Arch, ImageConfiguration, Os};
use serde::ser::SerializeStruct;
use serde::Serialize;

use crate::layered::{LayeredView, Resolved};

/// The uid Lambda runs function code as (`sbx_user1051`).
pub const LAMBDA_UID: u32 = 993;
/// The gid Lambda runs function code as.
pub const LAMBDA_GID: u32 = 990;
/// At most this many entries under the working directory are checked for readability.
pub const MAX_WALK_ENTRIES: usize = 100_000;
/// At most this much of the entrypoint binary is scanned for `AWS_LAMBDA_RUNTIME_API`.
pub const MAX_SCAN_BYTES: u64 = 64 * 1024 * 1024;
/// How many offending paths a finding lists before saying "and N more".
const LISTED_PATHS: usize = 5;

const READ: u32 = 4;
const EXEC: u32 = 1;

/// What [`lint`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct LintInput<'a> {
    /// The image's layers.
    pub view: &'a LayeredView,
    /// The image's config.
    pub config: &'a ImageConfiguration,
    /// Total uncompressed size of the layers, in bytes.
    pub uncompressed_size: u64,
    /// The size limit to check against (normally [`crate::LAMBDA_MAX_IMAGE_SIZE`]).
    pub max_size: u64,
    /// The function's `ImageConfig`.
    pub overrides: &'a Overrides,
}

/// A function's `ImageConfig`: per-function replacements for the image's settings. `None` means
/// "not overridden".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `ImageConfig.EntryPoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `ImageConfig.Command`.
    pub cmd: Option<Vec<String>>,
    /// `ImageConfig.WorkingDirectory`.
    pub workdir: Option<String>,
}

/// How bad a finding is. Serialized as `"error"`, `"warning"`, `"note"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// AWS would refuse the image or the function cannot start.
    Error,
    /// Likely a problem, but the function may still run.
    Warning,
    /// Informational: something Lambda ignores.
    Note,
}

/// One problem found. Serialized as `{"Level":…,"Code":…,"Message":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Finding {
    pub level: Level,
    /// Stable identifier, e.g. `entrypoint-missing`.
    pub code: &'static str,
    /// One line, naming the path concerned.
    pub message: String,
}

/// Everything [`lint`] found, errors first, then warnings, then notes. Serialized as
/// `{"Deployable":bool,"Findings":[…]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LintReport {
    pub findings: Vec<Finding>,
}

impl LintReport {
    /// Whether no finding is an error.
    pub fn deployable(&self) -> bool {
        !self.findings.iter().any(|f| f.level == Level::Error)
    }

    /// Whether some finding has `code`.
    pub fn has(&self, code: &str) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }

    /// The findings of level `level`.
    pub fn at_level(&self, level: Level) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.level == level)
    }
}

impl Serialize for LintReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("LintReport", 2)?;
        s.serialize_field("Deployable", &self.deployable())?;
        s.serialize_field("Findings", &self.findings)?;
        s.end()
    }
}

/// The argv Lambda starts: entrypoint ++ cmd, after `ImageConfig` overrides.
///
/// The merge follows Docker's rules (Lambda's documentation does not say what happens when only
/// `EntryPoint` is overridden; this is the documented choice for lambox):
///
/// * entrypoint = `overrides.entrypoint` if set (even to an empty list), else the image's;
/// * cmd = `overrides.cmd` if set and non-empty; otherwise, **when the entrypoint is overridden
///   with a non-empty list, the image's CMD is dropped** (Docker resets CMD when `--entrypoint`
///   is given); otherwise the image's CMD.
///
/// An empty `Command` override therefore means "no override", as in Docker.
pub fn effective_command(config: &ImageConfiguration, overrides: &Overrides) -> Vec<String> {
    let image = config.config().as_ref();
    let image_entrypoint = image.and_then(|c| c.entrypoint().as_ref());
    let image_cmd = image.and_then(|c| c.cmd().as_ref());

    let entrypoint: &[String] = match &overrides.entrypoint {
        Some(ep) => ep,
        None => image_entrypoint.map(Vec::as_slice).unwrap_or_default(),
    };
    let cmd: &[String] = match &overrides.cmd {
        Some(cmd) if !cmd.is_empty() => cmd,
        _ if overrides
            .entrypoint
            .as_ref()
            .is_some_and(|ep| !ep.is_empty()) =>
        {
            &[]
        }
        _ => image_cmd.map(Vec::as_slice).unwrap_or_default(),
    };
    entrypoint.iter().chain(cmd).cloned().collect()
}

/// The working directory Lambda starts the process in: `overrides.workdir`, else the image's
/// `WorkingDir`, else `/` (empty strings count as unset).
pub fn effective_workdir(config: &ImageConfiguration, overrides: &Overrides) -> String {
    let image = config
        .config()
        .as_ref()
        .and_then(|c| c.working_dir().as_deref());
    overrides
        .workdir
        .as_deref()
        .filter(|w| !w.is_empty())
        .or(image.filter(|w| !w.is_empty()))
        .unwrap_or("/")
        .to_owned()
}

/// Check a stored image against what Lambda enforces and what would fail at run time.
pub fn lint(input: &LintInput) -> LintReport {
    let mut findings = Findings::default();

    check_platform(input, &mut findings);
    check_size(input, &mut findings);

    let argv = effective_command(input.config, input.overrides);
    let workdir = effective_workdir(input.config, input.overrides);

    let entry = check_entrypoint(input.view, &argv, &mut findings);
    let wd = check_workdir(input.view, &workdir, &mut findings);
    check_readable(input.view, wd.as_ref(), entry.as_ref(), &mut findings);
    if !has_runtime_interface_client(input.view, &argv, entry.as_ref(), &workdir) {
        findings.push(
            Level::Warning,
            "no-runtime-interface-client",
            format!(
                "found no Lambda runtime interface client for entrypoint {:?} (no awslambdaric or \
                 aws-lambda-ric, no AWS base image /var/runtime/bootstrap or \
                 /lambda-entrypoint.sh, no /var/task/bootstrap, no binary mentioning \
                 AWS_LAMBDA_RUNTIME_API); the function must implement the Runtime API itself",
                argv.first().map(String::as_str).unwrap_or_default()
            ),
        );
    }
    check_ignored_settings(input.config, &mut findings);

    let mut findings = findings.0;
    findings.sort_by_key(|f| f.level);
    LintReport { findings }
}

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn push(&mut self, level: Level, code: &'static str, message: String) {
        self.0.push(Finding {
            level,
            code,
            message,
        });
    }
}

fn check_platform(input: &LintInput, findings: &mut Findings) {
    let os = input.config.os();
    if *os != Os::Linux {
        findings.push(
            Level::Error,
            "os-not-linux",
            format!(
                "image config os is {:?}; Lambda runs only linux images",
                os.to_string()
            ),
        );
    }
    let arch = input.config.architecture();
    if !matches!(arch, Arch::Amd64 | Arch::ARM64) {
        findings.push(
            Level::Error,
            "unsupported-architecture",
            format!(
                "image config architecture is {:?}; Lambda supports only amd64 (x86_64) and arm64",
                arch.to_string()
            ),
        );
    }
}

fn check_size(input: &LintInput, findings: &mut Findings) {
    if input.uncompressed_size > input.max_size {
        findings.push(
            Level::Error,
            "image-too-large",
            format!(
                "image is {} bytes uncompressed, more than the limit of {} bytes (Lambda's limit \
                 is 10 GB)",
                input.uncompressed_size, input.max_size
            ),
        );
    }
}

/// Checks argv\[0\]; returns it resolved when it is a regular file.
fn check_entrypoint(
    view: &LayeredView,
    argv: &[String],
    findings: &mut Findings,
) -> Option<Resolved> {
    let Some(ep) = argv.first() else {
        findings.push(
            Level::Error,
            "no-command",
            "image has no ENTRYPOINT or CMD and no ImageConfig override sets one".to_owned(),
        );
        return None;
    };
    if !ep.starts_with('/') {
        findings.push(
            Level::Error,
            "entrypoint-not-absolute",
            format!(
                "entrypoint {ep:?} is not an absolute path; Lambda fails such functions with \
                 Runtime.InvalidEntrypoint"
            ),
        );
        return None;
    }
    let resolved = match view.resolve(ep, true) {
        Ok(Some(r)) => r,
        Ok(None) => {
            findings.push(
                Level::Error,
                "entrypoint-missing",
                format!(
                    "entrypoint {ep:?} does not exist in the image (Runtime.InvalidEntrypoint)"
                ),
            );
            return None;
        }
        Err(e) => {
            findings.push(
                Level::Error,
                "entrypoint-missing",
                format!(
                    "entrypoint {ep:?} cannot be resolved in the image: {} \
                     (Runtime.InvalidEntrypoint)",
                    one_line(&e.to_string())
                ),
            );
            return None;
        }
    };
    if resolved.final_was_symlink {
        findings.push(
            Level::Warning,
            "entrypoint-is-symlink",
            format!(
                "entrypoint {ep:?} is a symlink to {:?}; AWS advises against symlinked \
                 entrypoints, but they run (AWS's own python base image uses one)",
                resolved.path
            ),
        );
    }
    if !resolved.metadata.is_file() {
        findings.push(
            Level::Error,
            "entrypoint-not-executable",
            format!(
                "entrypoint {ep:?} resolves to {:?}, which is not a regular file \
                 (Runtime.InvalidEntrypoint)",
                resolved.path
            ),
        );
        return None;
    }
    check_executable(ep, "entrypoint", &resolved, findings);

    if let Some(interpreter) = shebang_interpreter(&resolved.host_path) {
        let interp_path = Path::new(std::ffi::OsStr::from_bytes(&interpreter));
        if interp_path.is_absolute() {
            let what = format!("interpreter of entrypoint script {:?}", resolved.path);
            match view.resolve(interp_path, true) {
                Ok(Some(r)) if r.metadata.is_file() => {
                    check_executable(&interp_path.display().to_string(), &what, &r, findings);
                }
                Ok(Some(r)) => findings.push(
                    Level::Error,
                    "entrypoint-not-executable",
                    format!(
                        "{what}, {interp_path:?}, resolves to {:?}, which is not a regular file",
                        r.path
                    ),
                ),
                Ok(None) => findings.push(
                    Level::Error,
                    "entrypoint-missing",
                    format!("{what}, {interp_path:?}, does not exist in the image"),
                ),
                Err(e) => findings.push(
                    Level::Error,
                    "entrypoint-missing",
                    format!(
                        "{what}, {interp_path:?}, cannot be resolved in the image: {}",
                        one_line(&e.to_string())
                    ),
                ),
            }
        }
    }
    Some(resolved)
}

/// Whether uid 993 can execute `resolved` (a regular file), searching every directory on the way.
fn check_executable(name: &str, what: &str, resolved: &Resolved, findings: &mut Findings) {
    if let Some(dir) = resolved
        .searched_dirs
        .iter()
        .find(|d| !lambda_user_may(&d.metadata, EXEC))
    {
        findings.push(
            Level::Error,
            "entrypoint-not-executable",
            format!(
                "{what} {name:?}: directory {:?} is not searchable by uid {LAMBDA_UID} gid \
                 {LAMBDA_GID} ({})",
                dir.path,
                describe(&dir.metadata)
            ),
        );
        return;
    }
    if !lambda_user_may(&resolved.metadata, EXEC) {
        findings.push(
            Level::Error,
            "entrypoint-not-executable",
            format!(
                "{what} {:?} is not executable by uid {LAMBDA_UID} gid {LAMBDA_GID} ({})",
                resolved.path,
                describe(&resolved.metadata)
            ),
        );
    }
}

/// Checks the working directory; returns it resolved when it is an accessible directory.
fn check_workdir(view: &LayeredView, workdir: &str, findings: &mut Findings) -> Option<Resolved> {
    let resolved = match view.resolve(workdir, true) {
        Ok(Some(r)) if r.is_dir() => r,
        Ok(Some(r)) => {
            findings.push(
                Level::Error,
                "workdir-missing",
                format!(
                    "working directory {workdir:?} resolves to {:?}, which is not a directory \
                     (Runtime.InvalidWorkingDir)",
                    r.path
                ),
            );
            return None;
        }
        Ok(None) => {
            findings.push(
                Level::Error,
                "workdir-missing",
                format!(
                    "working directory {workdir:?} does not exist in the image \
                     (Runtime.InvalidWorkingDir)"
                ),
            );
            return None;
        }
        Err(e) => {
            findings.push(
                Level::Error,
                "workdir-missing",
                format!(
                    "working directory {workdir:?} cannot be resolved in the image: {} \
                     (Runtime.InvalidWorkingDir)",
                    one_line(&e.to_string())
                ),
            );
            return None;
        }
    };
    let blocking = resolved
        .searched_dirs
        .iter()
        .map(|d| (&d.path, &d.metadata))
        .chain(std::iter::once((&resolved.path, &resolved.metadata)))
        .find(|(_, m)| !lambda_user_may(m, EXEC));
    if let Some((path, metadata)) = blocking {
        findings.push(
            Level::Error,
            "workdir-not-accessible",
            format!(
                "working directory {workdir:?}: directory {path:?} is not searchable by uid \
                 {LAMBDA_UID} gid {LAMBDA_GID} ({}); chdir fails (Runtime.InvalidWorkingDir)",
                describe(metadata)
            ),
        );
    }
    Some(resolved)
}

/// `unreadable-files`: the working directory tree (unless it is `/`) and a script entrypoint.
fn check_readable(
    view: &LayeredView,
    workdir: Option<&Resolved>,
    entry: Option<&Resolved>,
    findings: &mut Findings,
) {
    let mut unreadable = Unreadable::default();

    // A script is read by its interpreter; a binary only needs `x`.
    let script = entry.filter(|e| shebang_interpreter(&e.host_path).is_some());
    if let Some(script) = script {
        if !lambda_user_may(&script.metadata, READ) {
            unreadable.add(&script.path);
        }
    }

    if let Some(wd) = workdir.filter(|wd| wd.path != Path::new("/")) {
        if !lambda_user_may(&wd.metadata, READ | EXEC) {
            unreadable.add(&wd.path);
        }
        let skip = script.map(|s| s.path.as_path());
        let walked = view.walk(&wd.path, MAX_WALK_ENTRIES, |e| {
            if Some(e.path.as_path()) == skip {
                return;
            }
            let want = if e.is_dir() {
                READ | EXEC
            } else if e.metadata.is_file() {
                READ
            } else {
                // Symlinks, devices, FIFOs, sockets: nothing to read.
                return;
            };
            if !lambda_user_may(&e.metadata, want) {
                unreadable.add(&e.path);
            }
        });
        match walked {
            Ok(Some(summary)) if summary.truncated => findings.push(
                Level::Note,
                "walk-truncated",
                format!(
                    "checked only the first {} entries under working directory {:?} for \
                     readability",
                    summary.visited, wd.path
                ),
            ),
            Ok(_) => {}
            Err(e) => findings.push(
                Level::Error,
                "check-failed",
                format!(
                    "could not check the files under working directory {:?}: {}",
                    wd.path,
                    one_line(&e.to_string())
                ),
            ),
        }
    }

    if unreadable.count > 0 {
        let mut listed = unreadable
            .first
            .iter()
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let more = unreadable.count.saturating_sub(unreadable.first.len());
        if more > 0 {
            listed.push_str(&format!(" and {more} more"));
        }
        findings.push(
            Level::Error,
            "unreadable-files",
            format!(
                "{} file(s) the Lambda user (uid {LAMBDA_UID} gid {LAMBDA_GID}) cannot read: \
                 {listed}",
                unreadable.count
            ),
        );
    }
}

#[derive(Default)]
struct Unreadable {
    count: usize,
    first: Vec<PathBuf>,
}

impl Unreadable {
    fn add(&mut self, path: &Path) {
        self.count += 1;
        if self.first.len() < LISTED_PATHS {
            self.first.push(path.to_path_buf());
        }
    }
}

/// Heuristic: does anything in the image look like it speaks the Runtime API?
fn has_runtime_interface_client(
    view: &LayeredView,
    argv: &[String],
    entry: Option<&Resolved>,
    workdir: &str,
) -> bool {
    const ARGV_MARKERS: &[&str] = &[
        "awslambdaric",
        "aws-lambda-ric",
        "aws_lambda_ric",
        "com.amazonaws.services.lambda.runtime.api.client",
    ];
    if argv
        .iter()
        .any(|a| ARGV_MARKERS.iter().any(|m| a.contains(m)))
    {
        return true;
    }

    const FIXED: &[&str] = &[
        "/var/runtime/bootstrap",
        "/lambda-entrypoint.sh",
        "/var/task/bootstrap",
        "/opt/extensions/lambda-adapter",
        "/usr/local/lib/node_modules/aws-lambda-ric",
        "/usr/lib/node_modules/aws-lambda-ric",
    ];
    if FIXED.iter().any(|p| view.exists(p)) {
        return true;
    }

    // `pip install --target` / `npm install` next to the code.
    let mut code_dirs: Vec<&str> = vec![workdir, "/function", "/var/task"];
    let mut seen = HashSet::new();
    code_dirs.retain(|d| seen.insert(*d));
    for dir in code_dirs {
        let dir = Path::new(dir);
        if view.exists(dir.join("awslambdaric"))
            || view.exists(dir.join("node_modules").join("aws-lambda-ric"))
        {
            return true;
        }
    }

    // Installed into a system Python.
    for base in ["/usr/lib", "/usr/local/lib", "/var/lang/lib"] {
        let Ok(Some(entries)) = view.read_dir(base) else {
            continue;
        };
        for e in entries {
            if !e.name.as_bytes().starts_with(b"python3") {
                continue;
            }
            for packages in ["site-packages", "dist-packages"] {
                if view.exists(e.path.join(packages).join("awslambdaric")) {
                    return true;
                }
            }
        }
    }

    // A binary that implements the Runtime API itself (Rust lambda_runtime, Go, …).
    entry.is_some_and(|e| file_contains(&e.host_path, b"AWS_LAMBDA_RUNTIME_API", MAX_SCAN_BYTES))
}

fn check_ignored_settings(config: &ImageConfiguration, findings: &mut Findings) {
    let Some(c) = config.config().as_ref() else {
        return;
    };
    if let Some(user) = c.user().as_deref().filter(|u| !u.is_empty()) {
        findings.push(
            Level::Note,
            "ignored-user",
            format!(
                "image sets User {user:?}; Lambda ignores it and runs the function as uid \
                 {LAMBDA_UID} gid {LAMBDA_GID}"
            ),
        );
    }
    if let Some(ports) = c.exposed_ports().as_ref().filter(|p| !p.is_empty()) {
        findings.push(
            Level::Note,
            "ignored-exposed-ports",
            format!("image sets ExposedPorts {ports:?}; Lambda ignores them"),
        );
    }
    if let Some(volumes) = c.volumes().as_ref().filter(|v| !v.is_empty()) {
        findings.push(
            Level::Note,
            "ignored-volumes",
            format!("image sets Volumes {volumes:?}; Lambda ignores them"),
        );
    }
    if let Some(signal) = c.stop_signal().as_deref().filter(|s| !s.is_empty()) {
        findings.push(
            Level::Note,
            "ignored-stop-signal",
            format!("image sets StopSignal {signal:?}; Lambda ignores it"),
        );
    }
}

/// Whether uid 993 / gid 990 (no supplementary groups, no capabilities) has all of the
/// permission bits in `want` (4 = read, 2 = write, 1 = execute/search), as the kernel decides.
fn lambda_user_may(metadata: &Metadata, want: u32) -> bool {
    let mode = metadata.mode();
    let bits = if metadata.uid() == LAMBDA_UID {
        mode >> 6
    } else if metadata.gid() == LAMBDA_GID {
        mode >> 3
    } else {
        mode
    } & 0o7;
    bits & want == want
}

fn describe(metadata: &Metadata) -> String {
    format!(
        "mode {:04o}, owner {}:{}",
        metadata.mode() & 0o7777,
        metadata.uid(),
        metadata.gid()
    )
}

/// Messages are one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The interpreter named by a `#!` line at the start of the regular file `host`, as the kernel
/// parses it (first 256 bytes; the first word after `#!`). `None` for anything else.
fn shebang_interpreter(host: &Path) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(256);
    std::fs::File::open(host)
        .ok()?
        .take(256)
        .read_to_end(&mut buf)
        .ok()?;
    let rest = buf.strip_prefix(b"#!")?;
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let interpreter: Vec<u8> = line
        .iter()
        .copied()
        .skip_while(|b| *b == b' ' || *b == b'\t')
        .take_while(|b| !matches!(b, b' ' | b'\t' | b'\0' | b'\r'))
        .collect();
    (!interpreter.is_empty()).then_some(interpreter)
}

/// Whether the first `limit` bytes of the regular file `host` contain `needle`. Read errors
/// count as "no".
fn file_contains(host: &Path, needle: &[u8], limit: u64) -> bool {
    let Ok(file) = std::fs::File::open(host) else {
        return false;
    };
    let mut reader = file.take(limit);
    let keep = needle.len().saturating_sub(1);
    let mut window: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        window.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if contains(&window, needle) {
            return true;
        }
        let drop = window.len().saturating_sub(keep);
        window.drain(..drop);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, _)) = needle.split_first() else {
        return true;
    };
    let mut start = 0;
    while let Some(pos) = haystack
        .get(start..)
        .and_then(|h| h.iter().position(|&b| b == first))
    {
        let at = start + pos;
        if haystack.get(at..at + needle.len()) == Some(needle) {
            return true;
        }
        start = at + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layered::tests::{chown, set_mode, Layers};

    const ELF: &[u8] = b"\x7fELF\x02\x01\x01\0not really a binary";

    fn config(json: serde_json::Value) -> ImageConfiguration {
        let mut base = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        if let (Some(base), Some(extra)) = (base.as_object_mut(), json.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(base).expect("valid image config")
    }

    /// A python-style function image: /usr/bin/python3 (0755 root), /var/task/app.py (0644 root).
    fn good_layers() -> Layers {
        let l = Layers::new(2);
        l.file(0, "/usr/bin/python3.11", ELF, 0o755);
        l.symlink(0, "/usr/bin/python3", "python3.11");
        l.file(
            1,
            "/var/task/app.py",
            b"def handler(e, c): return e\n",
            0o644,
        );
        l.dir(1, "/var/task/pkg", 0o755);
        l.file(1, "/var/task/pkg/__init__.py", b"", 0o644);
        l
    }

    fn good_config() -> ImageConfiguration {
        config(serde_json::json!({"config": {
            "Entrypoint": ["/usr/bin/python3.11", "-m", "awslambdaric"],
            "Cmd": ["app.handler"],
            "WorkingDir": "/var/task",
        }}))
    }

    fn run(view: &LayeredView, config: &ImageConfiguration, overrides: &Overrides) -> LintReport {
        lint(&LintInput {
            view,
            config,
            uncompressed_size: 1000,
            max_size: crate::LAMBDA_MAX_IMAGE_SIZE,
            overrides,
        })
    }

    fn codes(report: &LintReport) -> Vec<&'static str> {
        report.findings.iter().map(|f| f.code).collect()
    }

    fn message<'a>(report: &'a LintReport, code: &str) -> &'a str {
        report
            .findings
            .iter()
            .find(|f| f.code == code)
            .map(|f| f.message.as_str())
            .unwrap_or_else(|| panic!("no {code} finding in {report:?}"))
    }

    #[test]
    fn good_image_is_deployable_without_findings() {
        let l = good_layers();
        let report = run(&l.view(), &good_config(), &Overrides::default());
        assert!(report.findings.is_empty(), "{report:?}");
        assert!(report.deployable());
        let json = serde_json::to_value(&report).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({"Deployable": true, "Findings": []})
        );
    }

    #[test]
    fn missing_entrypoint() {
        let l = good_layers();
        let overrides = Overrides {
            entrypoint: Some(vec!["/usr/local/bin/nope".into(), "awslambdaric".into()]),
            ..Overrides::default()
        };
        let report = run(&l.view(), &good_config(), &overrides);
        assert!(!report.deployable());
        assert_eq!(codes(&report), ["entrypoint-missing"]);
        let msg = message(&report, "entrypoint-missing");
        assert!(msg.contains("/usr/local/bin/nope") && msg.contains("Runtime.InvalidEntrypoint"));
        let json = serde_json::to_value(&report).expect("serialize");
        assert_eq!(json["Deployable"], false);
        assert_eq!(json["Findings"][0]["Level"], "error");
        assert_eq!(json["Findings"][0]["Code"], "entrypoint-missing");
        assert!(json["Findings"][0]["Message"].is_string());
    }

    #[test]
    fn relative_entrypoint() {
        let l = good_layers();
        let cfg = config(serde_json::json!({"config": {
            "Entrypoint": ["python3", "-m", "awslambdaric"], "WorkingDir": "/var/task"}}));
        let report = run(&l.view(), &cfg, &Overrides::default());
        assert_eq!(codes(&report), ["entrypoint-not-absolute"]);
        assert!(message(&report, "entrypoint-not-absolute").contains("Runtime.InvalidEntrypoint"));
        assert!(!report.deployable());
    }

    #[test]
    fn no_command() {
        let l = good_layers();
        let cfg = config(serde_json::json!({"config": {"WorkingDir": "/var/task"}}));
        let report = run(&l.view(), &cfg, &Overrides::default());
        assert!(report.has("no-command"));
        assert!(!report.deployable());
    }

    #[test]
    fn entrypoint_0700_root_is_not_executable_by_993() {
        let l = good_layers();
        set_mode(&l.host(0, "/usr/bin/python3.11"), 0o700);
        let report = run(&l.view(), &good_config(), &Overrides::default());
        assert_eq!(codes(&report), ["entrypoint-not-executable"]);
        let msg = message(&report, "entrypoint-not-executable");
        assert!(
            msg.contains("/usr/bin/python3.11") && msg.contains("0700"),
            "{msg}"
        );

        // Owner class wins, even when "other" would allow it (kernel semantics).
        set_mode(&l.host(0, "/usr/bin/python3.11"), 0o075);
        chown(&l.host(0, "/usr/bin/python3.11"), LAMBDA_UID, 0);
        assert!(
            run(&l.view(), &good_config(), &Overrides::default()).has("entrypoint-not-executable")
        );
        // Group class applies to gid 990 when the owner is someone else.
        set_mode(&l.host(0, "/usr/bin/python3.11"), 0o705);
        chown(&l.host(0, "/usr/bin/python3.11"), 0, LAMBDA_GID);
        assert!(
            run(&l.view(), &good_config(), &Overrides::default()).has("entrypoint-not-executable")
        );
        set_mode(&l.host(0, "/usr/bin/python3.11"), 0o750);
        assert!(run(&l.view(), &good_config(), &Overrides::default()).deployable());
    }

    #[test]
    fn unsearchable_directory_on_entrypoint_path() {
        let l = good_layers();
        set_mode(&l.host(0, "/usr/bin"), 0o700);
        let report = run(&l.view(), &good_config(), &Overrides::default());
        let msg = message(&report, "entrypoint-not-executable");
        assert!(
            msg.contains("\"/usr/bin\"") && msg.contains("not searchable"),
            "{msg}"
        );
    }

    #[test]
    fn directory_entrypoint_is_not_executable() {
        let l = good_layers();
        let overrides = Overrides {
            entrypoint: Some(vec!["/var/task/pkg".into(), "awslambdaric".into()]),
            ..Overrides::default()
        };
        let report = run(&l.view(), &good_config(), &overrides);
        assert!(message(&report, "entrypoint-not-executable").contains("not a regular file"));
    }

    #[test]
    fn workdir_missing() {
        let l = good_layers();
        let overrides = Overrides {
            workdir: Some("/function".into()),
            ..Overrides::default()
        };
        let report = run(&l.view(), &good_config(), &overrides);
        assert_eq!(codes(&report), ["workdir-missing"]);
        let msg = message(&report, "workdir-missing");
        assert!(msg.contains("/function") && msg.contains("Runtime.InvalidWorkingDir"));

        // A file is not a working directory either.
        let overrides = Overrides {
            workdir: Some("/var/task/app.py".into()),
            ..Overrides::default()
        };
        assert!(run(&l.view(), &good_config(), &overrides).has("workdir-missing"));
    }

    #[test]
    fn workdir_not_searchable() {
        let l = good_layers();
        set_mode(&l.host(1, "/var/task"), 0o700);
        let report = run(&l.view(), &good_config(), &Overrides::default());
        assert!(report.has("workdir-not-accessible"), "{report:?}");
        assert!(report.has("unreadable-files"), "{report:?}");
    }

    #[test]
    fn unreadable_file_in_workdir() {
        let l = good_layers();
        l.file(1, "/var/task/secret.json", b"{}", 0o600);
        l.file(1, "/var/task/pkg/private.py", b"", 0o600);
        // Whiteouts and symlinks are not files to read.
        l.whiteout(1, "/var/task/deleted");
        l.symlink(1, "/var/task/link", "/etc/shadow");
        let report = run(&l.view(), &good_config(), &Overrides::default());
        assert_eq!(codes(&report), ["unreadable-files"]);
        let msg = message(&report, "unreadable-files");
        assert!(msg.starts_with("2 file(s)"), "{msg}");
        assert!(
            msg.contains("\"/var/task/secret.json\"") && msg.contains("/var/task/pkg/private.py")
        );
        assert!(!report.deployable());
    }

    #[test]
    fn root_workdir_is_not_walked() {
        let l = good_layers();
        l.file(1, "/secret", b"x", 0o600);
        let overrides = Overrides {
            workdir: Some("/".into()),
            ..Overrides::default()
        };
        let report = run(&l.view(), &good_config(), &overrides);
        assert!(report.findings.is_empty(), "{report:?}");
    }

    #[test]
    fn script_entrypoint_needs_read_and_an_interpreter() {
        let l = good_layers();
        l.file(
            1,
            "/entry.sh",
            b"#!/bin/sh\nexec /usr/bin/python3 -m awslambdaric \"$@\"\n",
            0o711,
        );
        let overrides = Overrides {
            entrypoint: Some(vec!["/entry.sh".into()]),
            ..Overrides::default()
        };
        let report = run(&l.view(), &good_config(), &overrides);
        let missing = message(&report, "entrypoint-missing");
        assert!(
            missing.contains("/bin/sh") && missing.contains("interpreter"),
            "{missing}"
        );
        assert!(message(&report, "unreadable-files").contains("/entry.sh"));

        l.file(0, "/bin/sh", ELF, 0o755);
        set_mode(&l.host(1, "/entry.sh"), 0o755);
        let report = run(&l.view(), &good_config(), &overrides);
        // Nothing in argv or the script names a runtime interface client: only the heuristic
        // warning is left.
        assert_eq!(codes(&report), ["no-runtime-interface-client"]);
        assert!(report.deployable(), "{report:?}");
    }

    #[test]
    fn symlink_entrypoint_is_only_a_warning() {
        let l = good_layers();
        let overrides = Overrides {
            entrypoint: Some(vec![
                "/usr/bin/python3".into(),
                "-m".into(),
                "awslambdaric".into(),
            ]),
            ..Overrides::default()
        };
        let report = run(&l.view(), &good_config(), &overrides);
        assert_eq!(codes(&report), ["entrypoint-is-symlink"]);
        let f = report.findings.first().expect("one finding");
        assert_eq!(f.level, Level::Warning);
        assert!(f.message.contains("/usr/bin/python3.11") && f.message.contains("run"));
        assert!(report.deployable());
    }

    #[test]
    fn ignored_settings_are_notes() {
        let l = good_layers();
        let cfg = config(serde_json::json!({"config": {
            "User": "app",
            "ExposedPorts": {"8080/tcp": {}},
            "Volumes": {"/data": {}},
            "StopSignal": "SIGINT",
            "Entrypoint": ["/usr/bin/python3.11", "-m", "awslambdaric"],
            "Cmd": ["app.handler"],
            "WorkingDir": "/var/task",
        }}));
        let report = run(&l.view(), &cfg, &Overrides::default());
        assert_eq!(
            codes(&report),
            [
                "ignored-user",
                "ignored-exposed-ports",
                "ignored-volumes",
                "ignored-stop-signal"
            ]
        );
        assert!(report.findings.iter().all(|f| f.level == Level::Note));
        assert!(message(&report, "ignored-user").contains("\"app\""));
        assert!(report.deployable());
        let json = serde_json::to_value(&report).expect("serialize");
        assert_eq!(json["Findings"][0]["Level"], "note");
    }

    #[test]
    fn runtime_interface_client_heuristics() {
        let no_ric = Overrides {
            entrypoint: Some(vec!["/usr/bin/python3.11".into(), "app.py".into()]),
            ..Overrides::default()
        };
        let l = good_layers();
        let report = run(&l.view(), &good_config(), &no_ric);
        assert_eq!(codes(&report), ["no-runtime-interface-client"]);
        assert_eq!(
            report.findings.first().map(|f| f.level),
            Some(Level::Warning)
        );
        assert!(report.deployable());

        // pip-installed into the system python.
        let l = good_layers();
        l.dir(
            1,
            "/usr/local/lib/python3.12/site-packages/awslambdaric",
            0o755,
        );
        assert!(run(&l.view(), &good_config(), &no_ric).findings.is_empty());

        // pip install --target into the task root.
        let l = good_layers();
        l.dir(1, "/var/task/awslambdaric", 0o755);
        assert!(run(&l.view(), &good_config(), &no_ric).findings.is_empty());

        // AWS base image.
        let l = good_layers();
        l.file(0, "/lambda-entrypoint.sh", b"#!/bin/sh\n", 0o755);
        assert!(run(&l.view(), &good_config(), &no_ric).findings.is_empty());

        // A binary that speaks the Runtime API itself.
        let l = good_layers();
        let mut bin = vec![0u8; 3 << 20];
        bin.splice(0..0, ELF.iter().copied());
        // Straddle the 1 MiB read boundary.
        let at = (1 << 20) - 5;
        bin.splice(at..at, b"AWS_LAMBDA_RUNTIME_API".iter().copied());
        l.file(1, "/var/task/bootstrap-bin", &bin, 0o755);
        let overrides = Overrides {
            entrypoint: Some(vec!["/var/task/bootstrap-bin".into()]),
            ..Overrides::default()
        };
        assert!(run(&l.view(), &good_config(), &overrides)
            .findings
            .is_empty());
    }

    #[test]
    fn platform_and_size() {
        let l = good_layers();
        let mut cfg = good_config();
        cfg.set_os(Os::Windows);
        cfg.set_architecture(Arch::s390x);
        let report = lint(&LintInput {
            view: &l.view(),
            config: &cfg,
            uncompressed_size: crate::LAMBDA_MAX_IMAGE_SIZE + 1,
            max_size: crate::LAMBDA_MAX_IMAGE_SIZE,
            overrides: &Overrides::default(),
        });
        assert_eq!(
            codes(&report),
            [
                "os-not-linux",
                "unsupported-architecture",
                "image-too-large"
            ]
        );
        let msg = message(&report, "image-too-large");
        assert!(msg.contains(&(crate::LAMBDA_MAX_IMAGE_SIZE + 1).to_string()));
        assert!(msg.contains(&crate::LAMBDA_MAX_IMAGE_SIZE.to_string()) && msg.contains("10 GB"));
        cfg.set_os(Os::Linux);
        cfg.set_architecture(Arch::ARM64);
        assert!(run(&l.view(), &cfg, &Overrides::default())
            .findings
            .is_empty());
    }

    #[test]
    fn effective_command_follows_docker_merge_rules() {
        let cfg = config(serde_json::json!({"config": {
            "Entrypoint": ["/ep", "a"], "Cmd": ["c1", "c2"]}}));
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let none = Overrides::default();
        assert_eq!(effective_command(&cfg, &none), s(&["/ep", "a", "c1", "c2"]));
        let cmd_only = Overrides {
            cmd: Some(s(&["x"])),
            ..Overrides::default()
        };
        assert_eq!(effective_command(&cfg, &cmd_only), s(&["/ep", "a", "x"]));
        let ep_only = Overrides {
            entrypoint: Some(s(&["/other"])),
            ..Overrides::default()
        };
        assert_eq!(effective_command(&cfg, &ep_only), s(&["/other"]));
        let both = Overrides {
            entrypoint: Some(s(&["/other"])),
            cmd: Some(s(&["y"])),
            ..Overrides::default()
        };
        assert_eq!(effective_command(&cfg, &both), s(&["/other", "y"]));
        let empty_ep = Overrides {
            entrypoint: Some(Vec::new()),
            ..Overrides::default()
        };
        assert_eq!(effective_command(&cfg, &empty_ep), s(&["c1", "c2"]));
        let empty_cmd = Overrides {
            cmd: Some(Vec::new()),
            ..Overrides::default()
        };
        assert_eq!(
            effective_command(&cfg, &empty_cmd),
            s(&["/ep", "a", "c1", "c2"])
        );
        assert!(effective_command(&config(serde_json::json!({})), &none).is_empty());
    }

    #[test]
    fn effective_workdir_defaults() {
        let with = config(serde_json::json!({"config": {"WorkingDir": "/app"}}));
        let without = config(serde_json::json!({}));
        let none = Overrides::default();
        let wd = Overrides {
            workdir: Some("/x".into()),
            ..Overrides::default()
        };
        assert_eq!(effective_workdir(&with, &none), "/app");
        assert_eq!(effective_workdir(&with, &wd), "/x");
        assert_eq!(effective_workdir(&without, &none), "/");
    }

    #[test]
    fn substring_search() {
        assert!(contains(b"xxAWSyy", b"AWS"));
        assert!(!contains(b"xxAWyy", b"AWS"));
        assert!(contains(b"AAWS", b"AWS"));
        assert!(!contains(b"", b"A"));
    }
}
