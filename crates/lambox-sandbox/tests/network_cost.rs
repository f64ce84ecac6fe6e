//! What `--network nat` costs a cold start. Own test binary (no other test runs
//! concurrently): `cargo test -p lambox-sandbox --test network_cost -- --nocapture` (the
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
        "{name:<44} n={:<4} p10 {:>8.3} ms  p50 {:>8.3} ms  p90 {:>8.3} ms",
        v.len(),
        p10.as_secs_f64() * 1e3,
        p50.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3
    );
}

#[test]
fn nat_cold_start_cost() {
    let Some(mut f) = common::fixture() else {
        return;
    };
    let host = HostNetwork::setup(&f.config.state_dir, DEFAULT_SUBNET.parse().expect("subnet"))
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

    // 2. On the critical path: spawn → exec'd.
    let mut spec = f.spec(&["/bin/true"]);
    let (mut pooled, mut nat_unpooled, mut none_unpooled) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..65 {
        for (network, port, out) in [
            (nat.clone(), 9001, &mut pooled),
            (nat.clone(), 9002, &mut nat_unpooled),
            (Network::None, 9002, &mut none_unpooled),
        ] {
            f.config.network = network;
            spec.runtime_api_port = port;
            let t = std::time::Instant::now();
            let (sandbox, mut child, _l) = Sandbox::spawn(&f.config, &spec).expect("spawn");
            let took = t.elapsed();
            assert!(child.wait().expect("wait").success());
            sandbox.cleanup();
            if i >= 5 {
                out.push(took);
            }
            // Let the pool thread refill.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    line("spawn, nat, namespace from the pool", &mut pooled);
    line(
        "spawn, nat, pool empty (helper makes it)",
        &mut nat_unpooled,
    );
    line(
        "spawn, none, pool empty (helper makes it)",
        &mut none_unpooled,
    );
    host.teardown();
}
