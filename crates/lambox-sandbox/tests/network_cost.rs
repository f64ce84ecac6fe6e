//! What `--network nat` costs a cold start. Own test binary (no other test runs
//! concurrently): `cargo test -p lambox-sandbox --test network_cost -- --ignored --nocapture` (the
//! workspace's test profile is optimised).
//!
//! * Making one namespace the way the `lambox-netns` pool thread does: `lo` only, and `lo` +
//!   veth pair + addresses + route (interleaved, side by side).
//! * `Sandbox::spawn` (until the function is exec'd) with NAT when the pool had a namespace
//!   ready (port 9001, the pool's), and when it had not (port 9002, never pooled: the helper
//!   makes it), against the same without NAT (port 9002).

mod common;

use std::time::Duration;

use lambox_sandbox::{time_namespace_setup, HostNetwork, Network, Sandbox, DEFAULT_SUBNET};

fn pct(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn line(name: &str, v: &mut [Duration]) {
    let (p10, p50, p90) = (pct(v, 10), pct(v, 50), pct(v, 90));
    println!(
        "{name:<62} n={:<4} p10 {:>8.3} ms  p50 {:>8.3} ms  p90 {:>8.3} ms",
        v.len(),
        p10.as_secs_f64() * 1e3,
        p50.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3
    );
}

#[test]
#[ignore = "a measurement: cargo test -p lambox-sandbox --test network_cost -- --ignored --nocapture"]
fn nat_cold_start_cost() {
    let Some(mut f) = common::fixture() else {
        return;
    };
    let host = HostNetwork::setup(
        &f.config.state_dir,
        DEFAULT_SUBNET.parse().expect("subnet"),
        None,
    )
    .expect("host network");
    let nat = host.network();

    // 1. The pool thread's work per namespace.
    let (mut lo_only, mut with_veth) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        lo_only.extend(time_namespace_setup(10, &Network::None).expect("lo only"));
        with_veth.extend(time_namespace_setup(10, &nat).expect("nat"));
    }
    line("pool thread: new netns, lo up, listener", &mut lo_only);
    line("pool thread: same + veth, addresses, route", &mut with_veth);

    // 2. On the critical path: spawn → exec'd (wall clock), and the CPU time of the helper,
    // PID 1 and /bin/true (less sensitive to a busy machine than the wall clock).
    let children_cpu = || {
        // SAFETY: all-zero is a valid `rusage`, which getrusage then fills in.
        let mut r: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `r` is a valid, writable rusage; RUSAGE_CHILDREN is a valid `who`.
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut r) };
        Duration::new(r.ru_utime.tv_sec as u64, r.ru_utime.tv_usec as u32 * 1000)
            + Duration::new(r.ru_stime.tv_sec as u64, r.ru_stime.tv_usec as u32 * 1000)
    };
    let mut spec = f.spec(&["/bin/true"]);
    let configs = [
        ("nat, namespace from the pool", nat.clone(), 9001),
        ("nat, pool empty (helper makes it)", nat.clone(), 9002),
        ("none, pool empty (helper makes it)", Network::None, 9002),
    ];
    let mut wall = vec![Vec::new(); configs.len()];
    let mut cpu = vec![Vec::new(); configs.len()];
    for i in 0..65 {
        for (k, (_, network, port)) in configs.iter().enumerate() {
            f.config.network = network.clone();
            spec.runtime_api_port = *port;
            let c0 = children_cpu();
            let t = std::time::Instant::now();
            let (sandbox, mut child, _l) = Sandbox::spawn(&f.config, &spec).expect("spawn");
            let took = t.elapsed();
            assert!(child.wait().expect("wait").success());
            let c = children_cpu() - c0;
            sandbox.cleanup();
            if i >= 5 {
                wall[k].push(took);
                cpu[k].push(c);
            }
            // Let the pool thread refill.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for (k, (name, _, _)) in configs.iter().enumerate() {
        line(&format!("spawn, {name}"), &mut wall[k]);
        line(
            &format!("  CPU of helper+PID 1+/bin/true, {name}"),
            &mut cpu[k],
        );
    }
    host.teardown();
}
