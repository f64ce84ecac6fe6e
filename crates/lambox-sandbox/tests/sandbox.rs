//! Root integration tests: real namespaces, cgroups and mounts, with a busybox image.
//! Each test builds its own image and state directory and cleans up on failure too.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fixture, Fixture, Running};
use lambox_sandbox::Sandbox;

#[test]
fn probe_sees_a_locked_down_environment() {
    let Some(f) = fixture() else { return };
    let mut spec = f.spec(&["/bin/sh", "/probe.sh"]);
    spec.memory_mb = 1024; // /tmp's pages count against it: more than the 512 MB we fill
    let mut run = f.spawn(&spec).expect("spawn");
    let server = run.serve_one();
    let out = run.finish(Duration::from_secs(60));
    println!("{}\n{}", out.stdout, out.stderr);
    assert!(out.status.success(), "{:?}", out.status);

    // Identity.
    assert_eq!(out.get("uid"), "993");
    assert_eq!(out.get("gid"), "990");
    assert_eq!(out.get("groups"), "990");
    for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(out.get(k), "0000000000000000", "{k}");
    }
    assert_eq!(out.get("NoNewPrivs"), "1");
    assert_eq!(out.get("nofile"), "1024");
    assert_eq!(out.get("umask"), "0022");
    assert_eq!(out.get("home"), "unset");
    assert_eq!(out.get("cwd"), "/var/task");
    assert_eq!(out.get("stdin"), "/dev/null");
    assert_eq!(out.get("hostname"), "lambox-test");

    // Filesystem: read-only image, overlay semantics, sized /tmp, minimal /dev.
    assert_eq!(out.get("rootwrite"), "fail");
    assert_eq!(out.get("binwrite"), "fail");
    assert_eq!(
        out.get("removed"),
        "absent",
        "whiteout must hide the lower file"
    );
    assert_eq!(out.get("base"), "from-base");
    assert_eq!(out.get("tmpsize_kb"), "524288");
    assert_eq!(
        out.get("tmpfill"),
        "fail",
        "writing past /tmp's size must fail"
    );
    assert_eq!(out.get("tmpfilled_kb"), "524288");
    assert_eq!(out.get("tmpwrite"), "x");
    assert_eq!(out.get("tmpmode"), "1777");
    assert_eq!(out.get("shm_kb"), "65536");
    assert_eq!(
        out.get("root").split_whitespace().collect::<Vec<_>>(),
        [
            "bin",
            "dev",
            "etc",
            "links",
            "noshebang",
            "notexec",
            "probe.sh",
            "proc",
            "rootonly",
            "rootonlydir",
            "tmp",
            "var"
        ]
    );
    assert_eq!(
        out.get("dev").split_whitespace().collect::<Vec<_>>(),
        ["fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout", "urandom", "zero"]
    );
    assert_eq!(
        out.get("mounts").split_whitespace().collect::<Vec<_>>(),
        [
            "/:overlay",
            "/tmp:tmpfs",
            "/dev:tmpfs",
            "/dev/shm:tmpfs",
            "/proc:proc"
        ]
    );
    // No host path shows through, not even in the mount options.
    let host = f.dir.path().to_string_lossy().to_string();
    assert!(out.get("mountinfo").contains("lowerdir"));
    assert!(!out.stdout.contains(&host), "a host path is visible");

    // Processes: our init is PID 1, the function its child, nothing of the host.
    assert_eq!(out.get("mypid"), "2");
    assert_eq!(out.get("ppid"), "1");
    assert!(out.get("pid1").contains("__lambox-sandbox-init"));
    let pids: Vec<u32> = out
        .get("pids")
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect();
    assert_eq!(&pids[..2], [1, 2]);
    assert!(
        pids.len() < 20,
        "only the environment's processes: {pids:?}"
    );
    // Cgroup namespace: the environment's cgroups are its root.
    for entry in out.get("cgroup").split_whitespace() {
        assert!(entry.ends_with(":/"), "{entry}");
    }

    // Network: only lo, up; the Runtime API listener is reachable at 127.0.0.1:9001.
    assert_eq!(out.get("ifaces").trim(), "lo");
    assert_eq!(out.get("lo_up"), "1");
    assert_eq!(out.get("nc"), "pong");
    assert_eq!(
        server.join().expect("join").as_deref(),
        Some("hello-from-env")
    );
    assert_eq!(out.get("end"), "1");
}

#[test]
fn environment_and_descriptors_are_exact() {
    let Some(f) = fixture() else { return };
    let mut spec = f.spec(&["/bin/env"]);
    spec.env.push(("FOO".into(), "bar baz".into()));
    let out = f
        .spawn(&spec)
        .expect("spawn")
        .finish(Duration::from_secs(20));
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        [
            "PATH=/bin",
            "FOO=bar baz",
            "AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001"
        ]
    );

    // A caller-provided AWS_LAMBDA_RUNTIME_API wins.
    let mut spec = f.spec(&["/bin/env"]);
    spec.env
        .push(("AWS_LAMBDA_RUNTIME_API".into(), "127.0.0.1:9009".into()));
    spec.runtime_api_port = 9009;
    let out = f
        .spawn(&spec)
        .expect("spawn")
        .finish(Duration::from_secs(20));
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["PATH=/bin", "AWS_LAMBDA_RUNTIME_API=127.0.0.1:9009"]
    );

    // Only 0, 1, 2 are inherited (3 is ls's own directory handle).
    let spec = f.spec(&["/bin/ls", "-1", "/proc/self/fd"]);
    let out = f
        .spawn(&spec)
        .expect("spawn")
        .finish(Duration::from_secs(20));
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), ["0", "1", "2", "3"]);
}

#[test]
fn exit_status_and_signals_are_mirrored() {
    let Some(f) = fixture() else { return };
    let out = f
        .spawn(&f.spec(&["/bin/sh", "-c", "exit 42"]))
        .expect("spawn")
        .finish(Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(42));

    let out = f
        .spawn(&f.spec(&["/bin/sh", "-c", "kill -USR1 $$; sleep 5"]))
        .expect("spawn")
        .finish(Duration::from_secs(20));
    assert_eq!(out.status.signal(), Some(libc::SIGUSR1), "{:?}", out.status);

    // SIGTERM to the Child (the helper) reaches the function (not PID 1) through PID 1.
    let script = "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done";
    let mut run = f.spawn(&f.spec(&["/bin/sh", "-c", script])).expect("spawn");
    let mut lines = BufReader::new(run.child.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().expect("line").expect("read"), "ready");
    let pid = rustix::process::Pid::from_raw(run.child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("kill");
    assert_eq!(lines.next().expect("line").expect("read"), "got-term");
    let status = run.child.wait().expect("wait");
    assert_eq!(status.code(), Some(3));
}

#[test]
fn invalid_entrypoint_and_workdir_are_reported() {
    let Some(f) = fixture() else { return };
    let err = |argv: &[&str], workdir: &str| {
        let mut spec = f.spec(argv);
        spec.workdir = workdir.into();
        match Sandbox::spawn(&f.config, &spec) {
            Ok(_) => panic!("{argv:?} in {workdir} started"),
            Err(e) => e,
        }
    };
    use lambox_sandbox::SandboxError::*;
    let e = err(&["/nope"], "/");
    assert!(
        matches!(&e, InvalidEntrypoint(m) if m == "fork/exec /nope: no such file or directory"),
        "{e:?}"
    );
    let e = err(&["/notexec"], "/");
    assert!(
        matches!(&e, InvalidEntrypoint(m) if m == "fork/exec /notexec: permission denied"),
        "{e:?}"
    );
    let e = err(&["/rootonly"], "/");
    assert!(
        matches!(&e, InvalidEntrypoint(m) if m == "fork/exec /rootonly: permission denied"),
        "{e:?}"
    );
    let e = err(&["/noshebang"], "/");
    assert!(
        matches!(&e, InvalidEntrypoint(m) if m == "fork/exec /noshebang: exec format error"),
        "{e:?}"
    );
    let e = err(&["bin/sh"], "/");
    assert!(matches!(&e, InvalidEntrypoint(_)), "{e:?}");
    let e = err(&["/bin/true"], "/nope");
    assert!(
        matches!(&e, InvalidWorkingDir(m) if m == "chdir /nope: no such file or directory"),
        "{e:?}"
    );
    let e = err(&["/bin/true"], "/rootonlydir");
    assert!(
        matches!(&e, InvalidWorkingDir(m) if m == "chdir /rootonlydir: permission denied"),
        "{e:?}"
    );
    // The working directory is checked first, as Lambda's runtime does.
    let e = err(&["/nope"], "/nope");
    assert!(matches!(&e, InvalidWorkingDir(_)), "{e:?}");

    // A symlinked entrypoint runs, resolved inside the image (absolute target).
    let out = f
        .spawn(&f.spec(&["/links/echo", "via-link"]))
        .expect("spawn")
        .finish(Duration::from_secs(20));
    assert_eq!(out.stdout.trim(), "via-link");
    assert!(out.status.success());
}

#[test]
fn memory_limit_kills_and_is_reported() {
    let Some(f) = fixture() else { return };
    let mut spec = f.spec(&["/bin/sh", "-c", "cat /dev/zero | tail; echo survived"]);
    spec.memory_mb = 128;
    let mut run = f.spawn(&spec).expect("spawn");
    let limit = run
        .sandbox
        .cgroup_dirs()
        .iter()
        .find_map(|d| {
            std::fs::read_to_string(d.join("memory.limit_in_bytes"))
                .ok()
                .or_else(|| std::fs::read_to_string(d.join("memory.max")).ok())
        })
        .expect("memory limit file");
    assert_eq!(limit.trim(), "134217728");
    let out = run.finish(Duration::from_secs(120));
    println!(
        "status {:?} stdout {:?} stderr {:?}",
        out.status, out.stdout, out.stderr
    );
    assert!(run.sandbox.oom_killed(), "oom_killed must be reported");
    let peak = run.sandbox.max_memory_bytes().expect("peak");
    assert!(peak > 100 << 20 && peak <= 130 << 20, "peak {peak}");
    run.sandbox.cleanup();
    assert!(run.sandbox.oom_killed(), "still reported after cleanup");
    assert_eq!(run.sandbox.max_memory_bytes(), Some(peak));
}

#[test]
fn cgroup_limits_are_set() {
    let Some(f) = fixture() else { return };
    let mut spec = f.spec(&["/bin/sleep", "30"]);
    spec.memory_mb = 128;
    let run = f.spawn(&spec).expect("spawn");
    let read = |file: &str| {
        run.sandbox
            .cgroup_dirs()
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
            .map(|s| s.trim().to_string())
    };
    if let Some(q) = read("cpu.cfs_quota_us") {
        assert_eq!(q, "7236");
        assert_eq!(read("cpu.cfs_period_us").as_deref(), Some("100000"));
    } else {
        assert_eq!(read("cpu.max").as_deref(), Some("7236 100000"));
    }
    assert_eq!(read("pids.max").as_deref(), Some("1024"));
    // Every process of the environment is in every one of its cgroups; lambox is in none.
    let me = std::process::id().to_string();
    for d in run.sandbox.cgroup_dirs() {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).expect("procs");
        let procs: Vec<&str> = procs.split_whitespace().collect();
        assert_eq!(
            procs.len(),
            3,
            "helper, PID 1, function in {}: {procs:?}",
            d.display()
        );
        assert!(!procs.contains(&me.as_str()));
        assert!(procs.contains(&run.child.id().to_string().as_str()));
        assert!(procs.contains(&run.sandbox.pid1().to_string().as_str()));
    }
}

#[test]
fn freeze_stops_and_thaw_resumes() {
    let Some(f) = fixture() else { return };
    let script = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.02; done";
    let mut run = f.spawn(&f.spec(&["/bin/sh", "-c", script])).expect("spawn");
    let count = Arc::new(AtomicU64::new(0));
    let stdout = run.child.stdout.take().expect("stdout");
    let c = count.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(n) = line.parse() {
                c.store(n, Ordering::SeqCst);
            }
        }
    });
    let wait_for = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while count.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "counter stuck at {}",
                count.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(5);
    run.sandbox.freeze().expect("freeze");
    std::thread::sleep(Duration::from_millis(100)); // let lines already written be read
    let frozen_at = count.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        count.load(Ordering::SeqCst),
        frozen_at,
        "counter advanced while frozen"
    );
    run.sandbox.thaw().expect("thaw");
    wait_for(frozen_at + 5);

    // freeze_nowait: the same end state, without waiting; and a thaw right after it cancels it.
    run.sandbox.freeze_nowait().expect("freeze_nowait");
    std::thread::sleep(Duration::from_millis(100));
    let frozen_at = count.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        count.load(Ordering::SeqCst),
        frozen_at,
        "counter advanced after freeze_nowait"
    );
    run.sandbox.freeze_nowait().expect("freeze_nowait");
    run.sandbox.thaw().expect("thaw");
    wait_for(frozen_at + 5);

    // Killing a frozen environment works at once.
    run.sandbox.freeze().expect("freeze");
    let t = Instant::now();
    run.sandbox.kill();
    let status = run.child.wait().expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(t.elapsed() < Duration::from_secs(5));
}

fn start_time(pid: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19).map(str::to_string)
}

#[test]
fn kill_and_cleanup_leave_nothing() {
    let Some(f) = fixture() else { return };
    let script = "sleep 1000 & sleep 1000 & echo ready; wait";
    let mut run = f.spawn(&f.spec(&["/bin/sh", "-c", script])).expect("spawn");
    let mut lines = BufReader::new(run.child.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().expect("line").expect("read"), "ready");

    let mut procs: Vec<(String, Option<String>)> = Vec::new();
    for d in run.sandbox.cgroup_dirs() {
        for p in std::fs::read_to_string(d.join("cgroup.procs"))
            .expect("procs")
            .split_whitespace()
        {
            if !procs.iter().any(|(q, _)| q == p) {
                procs.push((p.to_string(), start_time(p)));
            }
        }
    }
    assert_eq!(procs.len(), 5, "helper, PID 1, sh, 2 × sleep: {procs:?}");

    run.sandbox.kill();
    let status = run.child.wait().expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    run.sandbox.kill(); // idempotent
    run.sandbox.cleanup();
    run.sandbox.cleanup(); // idempotent

    for d in run.sandbox.cgroup_dirs() {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    for (pid, start) in &procs {
        let now = start_time(pid);
        assert!(
            now.is_none() || now != *start,
            "process {pid} survived: {:?}",
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
        );
    }
    assert_no_trace(&f);
    drop(run);
}

/// No host mount mentions the fixture; the state dir holds only its two fixed entries, and the
/// shared mount point is an empty plain directory.
fn assert_no_trace(f: &Fixture) {
    let dir = f.dir.path().to_string_lossy().to_string();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mountinfo.contains(&dir),
        "a mount leaked into the host:\n{mountinfo}"
    );
    let mut entries: Vec<String> = std::fs::read_dir(&f.config.state_dir)
        .expect("state dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    entries.sort();
    assert_eq!(entries, ["root", "skeleton"]);
    assert_eq!(
        std::fs::read_dir(f.config.state_dir.join("root"))
            .expect("root")
            .count(),
        0
    );
}

#[test]
fn environments_are_isolated_from_each_other() {
    let Some(f) = fixture() else { return };
    // Two environments, both with their Runtime API on 127.0.0.1:9001: each reaches its own.
    let spec_a = f.spec(&["/bin/sh", "-c", "echo from-a | nc 127.0.0.1 9001"]);
    let spec_b = f.spec(&["/bin/sh", "-c", "echo from-b | nc 127.0.0.1 9001"]);
    let mut a = f.spawn(&spec_a).expect("spawn a");
    let mut b = f.spawn(&spec_b).expect("spawn b");
    let (sa, sb) = (a.serve_one(), b.serve_one());
    assert_eq!(sa.join().expect("join").as_deref(), Some("from-a"));
    assert_eq!(sb.join().expect("join").as_deref(), Some("from-b"));
    assert!(a.finish(Duration::from_secs(20)).status.success());
    assert!(b.finish(Duration::from_secs(20)).status.success());
}

#[test]
fn legacy_overlay_mount_and_long_layer_paths() {
    let Some(mut f) = fixture() else { return };
    // Move the top layer below a path longer than fsconfig's 256-byte string limit.
    let deep = f
        .dir
        .path()
        .join("a".repeat(100))
        .join("b".repeat(100))
        .join("c".repeat(60));
    std::fs::create_dir_all(&deep).expect("mkdir");
    let top = deep.join("layer-top");
    std::fs::rename(&f.layers[1], &top).expect("rename");
    f.layers[1] = top;
    let check = |f: &Fixture| {
        let spec = f.spec(&[
            "/bin/sh",
            "-c",
            "cat /etc/base; test -e /etc/removed || echo hidden; test -x /probe.sh && echo top",
        ]);
        let out = f
            .spawn(&spec)
            .expect("spawn")
            .finish(Duration::from_secs(20));
        assert_eq!(
            out.stdout, "from-base\nhidden\ntop\n",
            "stderr: {}",
            out.stderr
        );
    };
    check(&f);
    f.config.legacy_overlay = true;
    check(&f);
}

#[test]
fn dropping_a_sandbox_kills_and_cleans() {
    let Some(f) = fixture() else { return };
    let Running { .. } = f.spawn(&f.spec(&["/bin/sleep", "1000"])).expect("spawn");
    // (`Running`'s drop kills, waits, cleans up; here via Sandbox's own Drop.)
    let (sandbox, mut child, _l) =
        Sandbox::spawn(&f.config, &f.spec(&["/bin/sleep", "1000"])).expect("spawn");
    let dirs = sandbox.cgroup_dirs().to_vec();
    drop(sandbox);
    assert_eq!(child.wait().expect("wait").signal(), Some(libc::SIGKILL));
    for d in dirs {
        assert!(!Path::new(&d).exists());
    }
}
