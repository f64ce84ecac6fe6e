//! Root integration tests of the pre-spawned helper pool (`lambox_sandbox::Helpers`): real
//! processes and cgroups, the busybox image of `common`.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::fixture;
use lambox_sandbox::{Helpers, SandboxError};

fn std_spawner(mut cmd: Command) -> std::io::Result<Child> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()
}

/// Our children that are still alive (not zombies), as `pid comm`.
fn live_children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(1) == Some(&me.as_str()) && f.first() != Some(&"Z") {
            out.push(format!("{} {}", e.file_name().to_string_lossy(), head));
        }
    }
    out
}

/// Environment cgroups of this process (`<pid>-<n>`) under the given group directories.
fn our_cgroups(groups: &[PathBuf]) -> Vec<PathBuf> {
    let prefix = format!("{}-", std::process::id());
    groups
        .iter()
        .flat_map(|g| std::fs::read_dir(g).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One test, because it counts this process's children and cgroups.
#[test]
fn pooled_helpers_start_limited_environments_refill_and_clean_up() {
    let Some(f) = fixture() else { return };
    let helpers = Helpers::new(f.config.clone(), 2, std_spawner);
    assert!(
        helpers.wait_ready(2, Duration::from_secs(20)),
        "the pool did not fill"
    );
    // Two helpers wait, already in their cgroups.
    assert_eq!(live_children().len(), 2, "{:?}", live_children());

    // A pooled environment gets the spec's memory limit, the CPU cap, and every process of it
    // is in every one of its cgroups.
    let mut spec = f.spec(&["/bin/sh", "-c", "echo hello from the pool; exec sleep 30"]);
    spec.memory_mb = 128;
    let (sandbox, mut child, _listener) = helpers.spawn(&spec).expect("spawn");
    let read = |file: &str| {
        sandbox
            .cgroup_dirs()
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
            .map(|s| s.trim().to_string())
    };
    match read("memory.limit_in_bytes") {
        Some(v) => assert_eq!(v, "134217728"),
        None => assert_eq!(read("memory.max").as_deref(), Some("134217728")),
    }
    match read("cpu.cfs_quota_us") {
        Some(q) => assert_eq!(q, "7236"),
        None => assert_eq!(read("cpu.max").as_deref(), Some("7236 100000")),
    }
    assert_eq!(read("pids.max").as_deref(), Some("1024"));
    for d in sandbox.cgroup_dirs() {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).expect("procs");
        let procs: Vec<&str> = procs.split_whitespace().collect();
        assert_eq!(procs.len(), 3, "helper, PID 1, function in {}", d.display());
        assert!(procs.contains(&child.id().to_string().as_str()));
        assert!(procs.contains(&sandbox.pid1().to_string().as_str()));
    }
    // The function writes to the pipes the spawner made when the helper was pre-spawned.
    let mut out = child.stdout.take().expect("stdout");
    let mut line = [0u8; 20];
    out.read_exact(&mut line).expect("read stdout");
    assert_eq!(&line, b"hello from the pool\n");

    // The pool refills in the background.
    eventually("refill to 2", || helpers.ready() == 2);

    // A bad entrypoint in a pooled helper is reported like any other.
    let Err(err) = helpers.spawn(&f.spec(&["/nonexistent"])) else {
        panic!("a bad entrypoint must fail")
    };
    assert!(
        matches!(&err, SandboxError::InvalidEntrypoint(m) if m == "fork/exec /nonexistent: no such file or directory"),
        "{err}"
    );
    eventually("refill after a failed start", || helpers.ready() == 2);

    let groups: Vec<PathBuf> = sandbox
        .cgroup_dirs()
        .iter()
        .filter_map(|d| d.parent().map(PathBuf::from))
        .collect();
    assert_eq!(
        our_cgroups(&groups).len(),
        3 * groups.len(),
        "1 sandbox + 2 ready"
    );

    // Shutdown: no helper left, no cgroup left but the running environment's.
    helpers.shutdown();
    assert_eq!(helpers.ready(), 0);
    eventually("ready helpers gone", || live_children().len() == 1);
    assert_eq!(our_cgroups(&groups).len(), groups.len());
    sandbox.kill();
    let _ = child.wait();
    sandbox.cleanup();
    assert!(live_children().is_empty(), "{:?}", live_children());
    assert!(
        our_cgroups(&groups).is_empty(),
        "{:?}",
        our_cgroups(&groups)
    );

    // After shutdown, spawning still works (a helper of its own), and nothing refills.
    let (sandbox, mut child, _l) = helpers.spawn(&f.spec(&["/bin/true"])).expect("spawn");
    assert!(child.wait().expect("wait").success());
    sandbox.cleanup();
    assert_eq!(helpers.ready(), 0);
    assert!(our_cgroups(&groups).is_empty());
}
