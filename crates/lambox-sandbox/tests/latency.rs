//! Setup latency: time from `Sandbox::spawn` being called until it returns, which is when the
//! function process has been exec'd (the helper's end-of-file comes with the exec). Own test
//! binary, so no other test runs concurrently. `cargo test -p lambox-sandbox --test latency --
//! --nocapture` prints the numbers.

mod common;

use std::time::{Duration, Instant};

use lambox_sandbox::Sandbox;

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[test]
fn setup_latency_p50() {
    let Some(f) = common::fixture() else { return };
    let spec = f.spec(&["/bin/true"]);
    let mut setup = Vec::new();
    let mut total = Vec::new();
    let mut cleanup = Vec::new();
    let cpu = |who: libc::c_int| {
        // SAFETY: all-zero is a valid `rusage`, which getrusage then fills in.
        let mut r: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `r` is a valid, writable rusage; `who` is one of the RUSAGE_* constants.
        unsafe { libc::getrusage(who, &mut r) };
        Duration::new(r.ru_utime.tv_sec as u64, r.ru_utime.tv_usec as u32 * 1000)
            + Duration::new(r.ru_stime.tv_sec as u64, r.ru_stime.tv_usec as u32 * 1000)
    };
    let mut children_cpu = Duration::ZERO;
    let mut thread_cpu = Duration::ZERO;
    for i in 0..55 {
        let (c0, th0) = (cpu(libc::RUSAGE_CHILDREN), cpu(libc::RUSAGE_THREAD));
        let t0 = Instant::now();
        let (sandbox, mut child, _listener) = Sandbox::spawn(&f.config, &spec).expect("spawn");
        let t1 = Instant::now();
        let th1 = cpu(libc::RUSAGE_THREAD);
        let status = child.wait().expect("wait");
        let t2 = Instant::now();
        if i >= 5 {
            children_cpu += cpu(libc::RUSAGE_CHILDREN) - c0;
            thread_cpu += th1 - th0;
        }
        sandbox.cleanup();
        let t3 = Instant::now();
        assert!(status.success());
        if i >= 5 {
            // the first runs warm caches (binary pages, layer dentries)
            setup.push(t1 - t0);
            total.push(t2 - t0);
            cleanup.push(t3 - t2);
        }
    }
    for v in [&mut setup, &mut total, &mut cleanup] {
        v.sort();
    }
    println!(
        "sandbox setup (spawn → function exec'd), {} runs: min {:?}, p10 {:?}, p50 {:?}, p90 {:?}, max {:?}",
        setup.len(),
        setup[0],
        pct(&setup, 10),
        pct(&setup, 50),
        pct(&setup, 90),
        setup[setup.len() - 1]
    );
    println!(
        "spawn → /bin/true exited: p50 {:?}; cleanup: p50 {:?}",
        pct(&total, 50),
        pct(&cleanup, 50)
    );
    let n = setup.len() as u32;
    println!(
        "CPU per environment: spawn's own thread {:?}; helper + PID 1 + /bin/true, start to exit {:?}",
        thread_cpu / n,
        children_cpu / n
    );
    assert!(
        pct(&setup, 50) < Duration::from_millis(50),
        "setup p50 {:?}",
        pct(&setup, 50)
    );
}
