//! Empty environment cgroups left by a lambox process that died (`<pid>-<n>` with a pid that no
//! longer exists) are removed by the next process that starts an environment; those of live
//! processes stay. The "next process" is this test binary re-run with a filter.

mod common;

use std::path::PathBuf;
use std::process::Command;

use lambox_sandbox::Sandbox;

const CHILD_ENV: &str = "LAMBOX_STALE_TEST_CHILD";

/// Run in a child process only: start one environment (which computes the cgroup layout, and
/// with it the stale-group cleanup) and stop it.
#[test]
fn child_starts_one_environment() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let Some(f) = common::fixture() else { return };
    let (sandbox, mut child, _l) =
        Sandbox::spawn(&f.config, &f.spec(&["/bin/true"])).expect("spawn");
    assert!(child.wait().expect("wait").success());
    sandbox.cleanup();
}

#[test]
fn stale_cgroups_of_dead_processes_are_removed() {
    let Some(f) = common::fixture() else { return };
    // Where the environments' cgroups live: the parents of one environment's directories.
    let (sandbox, mut child, _l) =
        Sandbox::spawn(&f.config, &f.spec(&["/bin/true"])).expect("spawn");
    assert!(child.wait().expect("wait").success());
    let groups: Vec<PathBuf> = sandbox
        .cgroup_dirs()
        .iter()
        .filter_map(|d| d.parent().map(PathBuf::from))
        .collect();
    sandbox.cleanup();

    // A pid that has exited (reaped: it cannot be anyone's now unless reused).
    let mut gone = Command::new("/bin/true").spawn().expect("spawn true");
    let dead = gone.id();
    gone.wait().expect("wait");
    let stale: Vec<PathBuf> = groups.iter().map(|g| g.join(format!("{dead}-7"))).collect();
    let alive: Vec<PathBuf> = groups
        .iter()
        .map(|g| g.join(format!("{}-9999", std::process::id())))
        .collect();
    for d in stale.iter().chain(&alive) {
        std::fs::create_dir(d).expect("create a cgroup");
    }

    let out = Command::new(std::env::current_exe().expect("current exe"))
        .args(["--exact", "child_starts_one_environment", "--nocapture"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the child");
    let removed: Vec<bool> = stale.iter().map(|d| !d.exists()).collect();
    let kept: Vec<bool> = alive.iter().map(|d| d.exists()).collect();
    for d in stale.iter().chain(&alive) {
        let _ = std::fs::remove_dir(d);
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(removed.iter().all(|r| *r), "stale cgroups left: {stale:?}");
    assert!(
        kept.iter().all(|k| *k),
        "a live process's cgroups were removed"
    );
}
