//! Setup latency after a quiet period, as a real cold start sees it: `Sandbox::spawn` (the
//! helper is started and joins its cgroups on the invoke's path) against `Helpers::spawn` (a
//! pre-spawned helper, already in its cgroups), alternating, 250 ms apart. Own test binary, so
//! no other test runs concurrently. `cargo test -p lambox-sandbox --test latency_idle --
//! --nocapture` prints the numbers.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lambox_sandbox::{Helpers, Sandbox};

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn pooled_setup_is_faster_after_a_quiet_period() {
    let Some(f) = common::fixture() else { return };
    let spec = f.spec(&["/bin/true"]);
    let helpers = Helpers::new(f.config.clone(), 1, |mut cmd: Command| {
        cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn()
    });
    let (mut direct, mut pooled) = (Vec::new(), Vec::new());
    for i in 0..24 {
        assert!(helpers.wait_ready(1, Duration::from_secs(20)));
        std::thread::sleep(Duration::from_millis(250));
        let t0 = Instant::now();
        let (sandbox, mut child, _l) = if i % 2 == 0 {
            Sandbox::spawn(&f.config, &spec).expect("spawn")
        } else {
            helpers.spawn(&spec).expect("pooled spawn")
        };
        let took = t0.elapsed();
        assert!(child.wait().expect("wait").success());
        sandbox.cleanup();
        if i >= 4 {
            if i % 2 == 0 {
                direct.push(took)
            } else {
                pooled.push(took)
            }
        }
    }
    let (d, p) = (p50(direct.clone()), p50(pooled.clone()));
    direct.sort();
    pooled.sort();
    println!(
        "setup after 250 ms idle (spawn → function exec'd), 10 runs each: Sandbox::spawn p50 {d:?} (min {:?}, max {:?}); Helpers::spawn p50 {p:?} (min {:?}, max {:?})",
        direct[0], direct[direct.len() - 1], pooled[0], pooled[pooled.len() - 1]
    );
    helpers.shutdown();
    assert!(p < Duration::from_millis(50), "pooled setup p50 {p:?}");
}
