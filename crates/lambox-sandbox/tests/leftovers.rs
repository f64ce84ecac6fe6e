//! Failed starts leave nothing behind: no cgroups, no processes, no mounts. Own test binary
//! (a single test), so that nothing else of ours runs meanwhile.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use lambox_sandbox::{Sandbox, SandboxError};

/// Pids of processes whose parent is `ppid`, or that are orphaned sandbox helpers.
fn stray_processes(ppid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
            continue;
        };
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let parent: u32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if parent == ppid
            || (parent == 1 && (comm.contains("lambox-helper") || comm.contains("lambox-init")))
        {
            out.push(format!("{name} {comm}) {rest}"));
        }
    }
    out
}

#[test]
fn failed_starts_leave_nothing() {
    let Some(f) = common::fixture() else { return };
    // Learn where our environments' cgroups live from one that starts.
    let (sandbox, mut child, _l) =
        Sandbox::spawn(&f.config, &f.spec(&["/bin/true"])).expect("spawn");
    let groups: Vec<PathBuf> = sandbox
        .cgroup_dirs()
        .iter()
        .map(|d| d.parent().expect("parent").to_path_buf())
        .collect();
    assert!(child.wait().expect("wait").success());
    drop(sandbox);

    let failures: Vec<(Vec<&str>, &str, Option<PathBuf>)> = vec![
        (vec!["/nope"], "/", None),
        (vec!["/notexec"], "/", None),
        (vec!["/bin/true"], "/nope", None),
        (
            vec!["/bin/true"],
            "/",
            Some(f.dir.path().join("no-such-layer")),
        ),
    ];
    for (argv, workdir, bad_layer) in failures {
        let mut spec = f.spec(&argv);
        spec.workdir = workdir.into();
        if let Some(l) = bad_layer {
            spec.layers.push(l);
        }
        let e = Sandbox::spawn(&f.config, &spec).expect_err("must fail");
        println!("{argv:?} in {workdir}: {e}");
        if let SandboxError::Setup(m) = &e {
            assert!(m.contains("no-such-layer"), "{m}");
        }
    }

    // Like tokio's kill_on_drop: the helper gets SIGKILL when the child is dropped. `spawn_with`
    // must let the environment wind down first, so that no PID 1 is orphaned.
    #[derive(Debug)]
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    for _ in 0..5 {
        let e = Sandbox::spawn_with(&f.config, &f.spec(&["/nope"]), |mut c| {
            c.stdout(Stdio::null()).spawn().map(KillOnDrop)
        })
        .expect_err("must fail");
        assert!(matches!(e, SandboxError::InvalidEntrypoint(_)));
    }

    let prefix = format!("{}-", std::process::id());
    for g in &groups {
        let left: Vec<String> = std::fs::read_dir(g)
            .expect("group dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        assert!(left.is_empty(), "cgroups left in {}: {left:?}", g.display());
    }
    // Helpers were reaped by `spawn`, and no PID 1 was orphaned to the host's init.
    std::thread::sleep(Duration::from_millis(100));
    let strays = stray_processes(std::process::id());
    assert!(strays.is_empty(), "{strays:#?}");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mountinfo.contains(&*f.dir.path().to_string_lossy()));
}
