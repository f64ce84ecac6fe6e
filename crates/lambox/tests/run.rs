//! End-to-end: `lambox run` on real images with real runtime interface clients (AWS's
//! awslambdaric, the Rust lambda_runtime crate, a shell custom runtime), in the real sandbox,
//! invoked over HTTP as the emulator's users do.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{oci_ref, DataDir};
use serde_json::Value;

/// A `lambox run` process, stopped with SIGTERM on drop.
struct Running {
    server: common::Server,
    addr: String,
    data: DataDir,
}

impl Running {
    fn start(image: &str, extra: &[&str]) -> Running {
        Running::start_with_env(image, extra, &[])
    }

    /// `lambox run` with extra variables in lambox's own environment.
    fn start_with_env(image: &str, extra: &[&str], env: &[(&str, &str)]) -> Running {
        let data = DataDir::new();
        let port = common::free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = data.lambox();
        cmd.args(["run", "-q", &oci_ref(image), "--listen", &addr])
            .args(extra)
            .envs(env.iter().copied())
            // Its own process group, as a shell job has: `interrupt_group` is a terminal's Ctrl-C.
            .process_group(0);
        let server = common::Server::spawn(cmd, data.path().join("run.log"), &addr);
        Running { server, addr, data }
    }

    fn log_text(&self) -> String {
        self.server.log_text()
    }

    fn invoke(
        &self,
        payload: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<(String, String)>, String) {
        post(
            &self.addr,
            "/2015-03-31/functions/function/invocations",
            payload,
            headers,
        )
    }

    fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// Polls the log until `pred` holds (or panics after `secs`).
    fn wait_log(&self, secs: u64, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let log = self.log_text();
            if pred(&log) {
                return log;
            }
            assert!(Instant::now() < deadline, "no {what} in the log: {log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        self.server.kill9();
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        self.server.stop()
    }
}

fn post(
    addr: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    s.write_all(body.as_bytes()).expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("http response");
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, headers, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n.min(rest.len())]);
        s = rest.get(n + 2..).unwrap_or("");
    }
    out
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn python_awslambdaric_image_serves_invokes_with_lambda_logs() {
    let mut run = Running::start("hello-python", &[]);
    let (status, headers, body) = run.invoke(r#"{"name":"lambox"}"#, &[("X-Amz-Log-Type", "Tail")]);
    assert_eq!(status, 200, "{body} {}", run.log_text());
    let v = json(&body);
    assert_eq!(v["body"], "hello from lambox");
    assert_eq!(v["name"], "lambox");
    assert_eq!(header(&headers, "x-amz-executed-version"), Some("$LATEST"));
    assert_eq!(header(&headers, "x-amz-function-error"), None);
    let tail = header(&headers, "x-amz-log-result").expect("log tail");
    let out = std::process::Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().expect("stdin").write_all(tail.as_bytes())?;
            c.wait_with_output()
        });
    let tail = String::from_utf8_lossy(&out.expect("base64").stdout).into_owned();
    assert!(
        tail.contains("START RequestId: ") && tail.contains("REPORT RequestId: "),
        "{tail}"
    );
    // Warm invoke: same environment, no Init Duration.
    let (status, _, _) = run.invoke("{}", &[]);
    assert_eq!(status, 200);
    assert_eq!(run.stop().code(), Some(0));
    let log = run.log_text();
    assert_eq!(log.matches("START RequestId: ").count(), 2, "{log}");
    assert_eq!(log.matches("\tInit Duration: ").count(), 1, "{log}");
    assert!(
        log.contains("Version: $LATEST") && log.contains("\tMax Memory Used: "),
        "{log}"
    );
}

#[test]
fn the_function_sees_the_lambda_environment_from_inside() {
    let run = Running::start(
        "probe-python",
        // /tmp is a tmpfs charged to the environment's memory (ARCHITECTURE.md): give the
        // function more memory than /tmp so filling /tmp hits ENOSPC, not the OOM killer.
        &[
            "--memory",
            "1024",
            "--ephemeral-storage",
            "600",
            "-e",
            "USER_VAR=1",
        ],
    );
    let (status, _, body) = run.invoke("{}", &[]);
    assert_eq!(status, 200, "{body} {}", run.log_text());
    let v = json(&body);
    let text = v.to_string();
    // Identity and privileges: sbx_user1051, no capabilities, no_new_privs.
    assert_eq!(
        (v["uid"].clone(), v["gid"].clone(), v["euid"].clone()),
        (993.into(), 990.into(), 993.into()),
        "{text}"
    );
    assert_eq!(v["status"]["CapEff"], "0000000000000000", "{text}");
    assert_eq!(v["status"]["CapPrm"], "0000000000000000", "{text}");
    assert_eq!(v["status"]["NoNewPrivs"], "1", "{text}");
    assert_eq!(v["rlimits"]["RLIMIT_NOFILE"]["soft"], 1024, "{text}");
    // Read-only root; a private /tmp of the configured size.
    assert_eq!(v["root_create"]["errno"], "EROFS", "{text}");
    let tmp_mb = v["tmp"]["size_mb"].as_f64().expect("tmp size");
    assert!((599.0..=601.0).contains(&tmp_mb), "{text}");
    assert_eq!(v["tmp"]["writable"], true);
    let (status, _, body) = run.invoke(r#"{"write_tmp_mb":700}"#, &[]);
    assert_eq!(status, 200);
    assert_eq!(json(&body)["write_tmp"]["errno"], "ENOSPC", "{body}");
    // Its own PID namespace (the function is not PID 1) and network namespace (lo, and eth0
    // with the default --network nat), with its Runtime API reachable at Lambda's address.
    assert_ne!(v["pid"], 1, "{text}");
    assert!(
        v["proc_pids"].as_array().expect("pids").len() < 10,
        "{text}"
    );
    assert_eq!(v["interfaces"], serde_json::json!(["lo", "eth0"]), "{text}");
    assert_eq!(v["connect_127.0.0.1:9001"]["connected"], true, "{text}");
    assert_eq!(v["cwd"], "/function");
    // Lambda's variables, the Runtime API address, and no HOME.
    let env = &v["env"];
    assert_eq!(env["AWS_LAMBDA_RUNTIME_API"], "127.0.0.1:9001", "{text}");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "function");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "1024");
    assert_eq!(env["LAMBDA_TASK_ROOT"], "/var/task");
    assert_eq!(env["USER_VAR"], "1");
    assert!(env.get("HOME").is_none() || env["HOME"].is_null(), "{text}");
}

#[test]
fn rust_lambda_runtime_errors_are_reported_as_lambda_does() {
    let run = Running::start("rust-echo", &["--timeout", "2"]);
    let (status, h, body) = run.invoke(r#"{"hello":"world"}"#, &[]);
    assert_eq!(
        (status, json(&body)["hello"].clone()),
        (200, Value::from("world")),
        "{body}"
    );
    assert_eq!(header(&h, "x-amz-function-error"), None);

    let (status, h, body) = run.invoke(r#"{"error":"boom"}"#, &[]);
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-amz-function-error"), Some("Unhandled"));
    assert_eq!(json(&body)["errorMessage"], "boom", "{body}");

    let (status, h, body) = run.invoke(r#"{"sleep_ms":5000}"#, &[]);
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-amz-function-error"), Some("Unhandled"));
    let v = json(&body);
    assert_eq!(v["errorType"], "Sandbox.Timedout", "{body}");
    assert!(
        v["errorMessage"]
            .as_str()
            .expect("message")
            .ends_with("Task timed out after 2.00 seconds"),
        "{body}"
    );

    // After the timeout, a fresh environment serves the next invoke.
    let (status, _, body) = run.invoke(r#"{"again":1}"#, &[]);
    assert_eq!(
        (status, json(&body)["again"].clone()),
        (200, Value::from(1)),
        "{body}"
    );

    let (_, h, body) = run.invoke(r#"{"exit":3}"#, &[]);
    assert_eq!(header(&h, "x-amz-function-error"), Some("Unhandled"));
    let v = json(&body);
    assert_eq!(v["errorType"], "Runtime.ExitError", "{body}");
    assert!(
        v["errorMessage"]
            .as_str()
            .expect("message")
            .contains("exit status 3"),
        "{body}"
    );

    let (_, h, body) = run.invoke(r#"{"bytes":7000000}"#, &[]);
    assert_eq!(header(&h, "x-amz-function-error"), Some("Unhandled"));
    assert_eq!(
        json(&body)["errorType"],
        "Function.ResponseSizeTooLarge",
        "{body}"
    );

    let (status, _, body) = run.invoke(r#"{"ok":true}"#, &[]);
    assert_eq!(
        (status, json(&body)["ok"].clone()),
        (200, Value::from(true)),
        "{body}"
    );
}

#[test]
fn out_of_memory_is_reported_and_the_next_invoke_gets_a_fresh_environment() {
    // 128 MB is also 128/1769 of a CPU: touching 400 MB takes a while, so a long timeout.
    let run = Running::start("rust-echo", &["--memory", "128", "--timeout", "60"]);
    let (_, h, body) = run.invoke(r#"{"alloc_mb":400}"#, &[]);
    assert_eq!(header(&h, "x-amz-function-error"), Some("Unhandled"));
    assert_eq!(json(&body)["errorType"], "Runtime.OutOfMemory", "{body}");
    let (status, _, body) = run.invoke(r#"{"after":"oom"}"#, &[]);
    assert_eq!(
        (status, json(&body)["after"].clone()),
        (200, Value::from("oom")),
        "{body}"
    );
    assert!(
        run.log_text().contains("Max Memory Used: 128 MB"),
        "{}",
        run.log_text()
    );
}

#[test]
fn shell_custom_runtime_and_bad_entrypoints() {
    let run = Running::start("shell-runtime", &[]);
    let (status, _, body) = run.invoke(r#"{"a":1}"#, &[]);
    assert_eq!((status, body.trim()), (200, r#"{"a":1}"#));
    let (_, h, body) = run.invoke(r#"{"fail":1}"#, &[]);
    assert_eq!(header(&h, "x-amz-function-error"), Some("Unhandled"));
    assert_eq!(json(&body)["errorType"], "ShellError", "{body}");
    drop(run);

    let run = Running::start("shell-runtime", &["--entrypoint", "/var/task/nope"]);
    let (_, h, body) = run.invoke("{}", &[]);
    assert_eq!(header(&h, "x-amz-function-error"), Some("Unhandled"));
    assert_eq!(
        json(&body)["errorType"],
        "Runtime.InvalidEntrypoint",
        "{body}"
    );
    drop(run);

    let run = Running::start("shell-runtime", &["--workdir", "/nope"]);
    let (_, _, body) = run.invoke("{}", &[]);
    assert_eq!(
        json(&body)["errorType"],
        "Runtime.InvalidWorkingDir",
        "{body}"
    );
}

#[test]
fn concurrent_invokes_run_in_parallel_environments() {
    let run = Running::start("rust-echo", &["--concurrency", "4", "--timeout", "10"]);
    run.invoke("{}", &[]); // warm one environment
    let started = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let addr = run.addr.clone();
            std::thread::spawn(move || {
                post(
                    &addr,
                    "/2015-03-31/functions/function/invocations",
                    &format!(r#"{{"sleep_ms":1000,"i":{i}}}"#),
                    &[],
                )
            })
        })
        .collect();
    for h in handles {
        let (status, _, body) = h.join().expect("join");
        assert_eq!(status, 200, "{body}");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2800),
        "4 parallel 1 s invokes took {took:?}"
    );
}

/// Every cgroup directory this `lambox run` made: its environments' and its pre-spawned
/// helpers' (which wait, alone in fresh cgroups, for an environment's spec).
fn all_cgroups(pid: u32) -> Vec<String> {
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("find /sys/fs/cgroup -mindepth 2 -maxdepth 6 -type d -path '*/lambox/{pid}-*' 2>/dev/null"),
        ])
        .output()
        .expect("find");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn procs(dir: &str) -> Vec<u32> {
    std::fs::read_to_string(format!("{dir}/cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The environments' cgroup directories: those of cgroups holding more than the helper (an
/// environment has at least the helper and its PID 1; a waiting pre-spawned helper is alone).
fn env_cgroups(pid: u32) -> Vec<String> {
    let all = all_cgroups(pid);
    let name = |d: &str| d.rsplit('/').next().unwrap_or_default().to_owned();
    let envs: std::collections::HashSet<String> = all
        .iter()
        .filter(|d| procs(d).len() >= 2)
        .map(|d| name(d))
        .collect();
    all.into_iter()
        .filter(|d| envs.contains(&name(d)))
        .collect()
}

/// How many environments those cgroups are (one directory per hierarchy on cgroup v1).
fn env_count(pid: u32) -> usize {
    let mut names: Vec<String> = env_cgroups(pid)
        .iter()
        .filter_map(|d| d.rsplit('/').next().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    names.len()
}

/// The processes in those cgroups.
fn env_pids(pid: u32) -> Vec<u32> {
    let mut pids: Vec<u32> = env_cgroups(pid).iter().flat_map(|d| procs(d)).collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Nothing of a stopped `lambox run` is left: mounts, processes, cgroups.
fn assert_nothing_left(data: &std::path::Path, pid: u32, env_pids: &[u32]) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(data.to_str().expect("utf8")),
        "mounts left: {mounts}"
    );
    // No process of ours is left: nothing runs with this data dir's run/ state, and the
    // environments' processes are gone.
    let ps = std::process::Command::new("ps")
        .args(["-eo", "pid,args"])
        .output()
        .expect("ps");
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(!ps.contains(data.to_str().expect("utf8")), "{ps}");
    for p in env_pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{p}")).exists(),
            "environment process {p} left"
        );
    }
    // No cgroup of its environments (named `<lambox pid>-<n>`) is left.
    assert_eq!(all_cgroups(pid), Vec::<String>::new(), "cgroups left");
}

#[test]
fn shutdown_leaves_nothing_behind() {
    let mut run = Running::start("rust-echo", &["--concurrency", "2"]);
    for _ in 0..2 {
        assert_eq!(run.invoke("{}", &[]).0, 200);
    }
    let data = run.data.path().to_path_buf();
    let pid = run.pid();
    let pids = env_pids(pid);
    assert!(!pids.is_empty(), "no environment process found");
    assert!(run.stop().success(), "{}", run.log_text());
    assert_nothing_left(&data, pid, &pids);
}

#[test]
fn sigterm_lets_a_running_invoke_finish_then_leaves_nothing_behind() {
    let mut run = Running::start("rust-echo", &["--timeout", "10", "--concurrency", "2"]);
    // An Event invoke has no connection to keep it alive: the pool's graceful shutdown does.
    let (status, h, _) = run.invoke(
        r#"{"sleep_ms":2500}"#,
        &[("X-Amz-Invocation-Type", "Event")],
    );
    assert_eq!(status, 202);
    let event_id = header(&h, "x-amzn-requestid").expect("id").to_owned();
    let addr = run.addr.clone();
    let caller = std::thread::spawn(move || {
        post(
            &addr,
            "/2015-03-31/functions/function/invocations",
            r#"{"sleep_ms":2000,"in":"flight"}"#,
            &[],
        )
    });
    run.wait_log(60, "two STARTs", |l| {
        l.matches("START RequestId: ").count() == 2
    });
    let data = run.data.path().to_path_buf();
    let pid = run.pid();
    let pids = env_pids(pid);
    assert!(!pids.is_empty(), "no environment process found");
    let stopped = Instant::now();
    assert!(run.stop().success(), "{}", run.log_text());
    let (status, _, body) = caller.join().expect("caller");
    assert_eq!(
        (status, json(&body)["in"].clone()),
        (200, Value::from("flight")),
        "{body} {}",
        run.log_text()
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopped.elapsed()
    );
    let log = run.log_text();
    let shutting = log.find("lambox: shutting down").expect("shutdown line");
    let end = log.find("END RequestId: ").expect("END");
    assert!(shutting < end, "the invoke ended before SIGTERM: {log}");
    assert_eq!(log.matches("REPORT RequestId: ").count(), 2, "{log}");
    let event_end = log
        .find(&format!("END RequestId: {event_id}"))
        .expect("the Event invoke's END");
    assert!(shutting < event_end, "{log}");
    assert!(!log.contains("Status: error"), "{log}");
    assert_nothing_left(&data, pid, &pids);
    assert!(
        TcpStream::connect(&run.addr).is_err(),
        "still listening after shutdown"
    );
}

#[test]
fn ctrl_c_at_a_terminal_lets_a_running_invoke_finish() {
    let mut run = Running::start("rust-echo", &["--timeout", "10"]);
    let addr = run.addr.clone();
    let caller = std::thread::spawn(move || {
        post(
            &addr,
            "/2015-03-31/functions/function/invocations",
            r#"{"sleep_ms":1500,"ctrl":"c"}"#,
            &[],
        )
    });
    run.wait_log(60, "START", |l| l.contains("START RequestId: "));
    // A terminal sends SIGINT to the whole foreground process group.
    let pid = run.pid();
    let _ = std::process::Command::new("kill")
        .args(["-INT", "--", &format!("-{pid}")])
        .status();
    let (status, h, body) = caller.join().expect("caller");
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "x-amz-function-error"), None, "{body}");
    assert_eq!(json(&body)["ctrl"], "c", "{body}");
    // lambox exits by itself, cleanly, leaving nothing.
    let status = run.server.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status} {}", run.log_text());
    assert!(
        run.log_text().contains("END RequestId: "),
        "{}",
        run.log_text()
    );
    assert_nothing_left(run.data.path(), pid, &[]);
}

#[test]
fn invokes_still_running_after_the_grace_period_are_stopped() {
    let mut run = Running::start("rust-echo", &["--timeout", "30", "--shutdown-grace", "1"]);
    let addr = run.addr.clone();
    let caller = std::thread::spawn(move || {
        post(
            &addr,
            "/2015-03-31/functions/function/invocations",
            r#"{"sleep_ms":20000}"#,
            &[],
        )
    });
    run.wait_log(60, "START", |l| l.contains("START RequestId: "));
    let data = run.data.path().to_path_buf();
    let pid = run.pid();
    let pids = env_pids(pid);
    let stopped = Instant::now();
    assert!(run.stop().success(), "{}", run.log_text());
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(6), "shutdown took {took:?}");
    let (status, h, body) = caller.join().expect("caller");
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "x-amz-function-error"), Some("Unhandled"));
    let v = json(&body);
    assert_eq!(v["errorType"], "Runtime.ExitError", "{body}");
    assert!(
        v["errorMessage"]
            .as_str()
            .expect("message")
            .ends_with("Runtime exited with error: signal: killed"),
        "{body}"
    );
    assert_nothing_left(&data, pid, &pids);
}

#[test]
fn idle_environments_are_torn_down_after_the_idle_timeout() {
    let run = Running::start("rust-echo", &["--idle-timeout", "1"]);
    assert_eq!(run.invoke("{}", &[]).0, 200);
    let pid = run.pid();
    let pids = env_pids(pid);
    assert!(!pids.is_empty(), "no environment process found");
    assert_eq!(env_count(pid), 1);
    // Torn down about 1 s after the invoke: processes and cgroups gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !env_cgroups(pid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "environment not reaped: {:?}",
            env_cgroups(pid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in &pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{p}")).exists(),
            "process {p} left"
        );
    }
    // The next invoke cold-starts.
    let (status, _, body) = run.invoke(r#"{"after":"idle"}"#, &[]);
    assert_eq!(
        (status, json(&body)["after"].clone()),
        (200, Value::from("idle"))
    );
    let log = run.wait_log(10, "second REPORT", |l| {
        l.matches("REPORT RequestId: ").count() == 2
    });
    assert_eq!(log.matches("\tInit Duration: ").count(), 2, "{log}");
}

#[test]
fn without_an_idle_timeout_environments_stay_warm() {
    let run = Running::start("rust-echo", &["--idle-timeout", "0"]);
    assert_eq!(run.invoke("{}", &[]).0, 200);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(env_count(run.pid()), 1);
    assert_eq!(run.invoke("{}", &[]).0, 200);
    let log = run.wait_log(10, "second REPORT", |l| {
        l.matches("REPORT RequestId: ").count() == 2
    });
    assert_eq!(log.matches("\tInit Duration: ").count(), 1, "{log}");
}

#[test]
fn event_invokes_answer_202_at_once_and_run_in_the_background() {
    let run = Running::start("rust-echo", &["--timeout", "10"]);
    let t = Instant::now();
    let (status, h, body) = run.invoke(
        r#"{"sleep_ms":1500}"#,
        &[("X-Amz-Invocation-Type", "Event")],
    );
    let answered = t.elapsed();
    assert_eq!((status, body.as_str()), (202, ""), "{}", run.log_text());
    assert!(
        answered < Duration::from_millis(1000),
        "202 after {answered:?}"
    );
    let id = header(&h, "x-amzn-requestid")
        .expect("request id")
        .to_owned();
    // Its START/END/REPORT appear in lambox's stdout once it has run.
    let log = run.wait_log(20, "REPORT", |l| {
        l.contains(&format!("REPORT RequestId: {id}"))
    });
    let start = log
        .find(&format!("START RequestId: {id} Version: $LATEST"))
        .expect("START");
    let end = log.find(&format!("END RequestId: {id}")).expect("END");
    assert!(start < end, "{log}");
    let report = log[end..]
        .lines()
        .find(|l| l.starts_with("REPORT"))
        .expect("REPORT");
    let duration: f64 = report
        .split("\tDuration: ")
        .nth(1)
        .and_then(|d| d.split(' ').next())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("{report}"));
    assert!(duration >= 1500.0, "{report}");
    assert!(t.elapsed() >= Duration::from_millis(1500));
}

/// Runs curl (a real HTTP client) with `--no-buffer` and hands each output line to `each`
/// with the time it arrived, in epoch milliseconds.
fn curl_lines(url: &str, data: &str, headers: &[&str]) -> (Vec<(u128, String)>, String) {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-sS",
        "-N",
        "--noproxy",
        "*",
        "-D",
        "/dev/stderr",
        "-XPOST",
        url,
        "-d",
        data,
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut lines = Vec::new();
    let mut reader = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut buf = Vec::new();
    while reader.read_until(b'\n', &mut buf).expect("read") > 0 {
        lines.push((now_ms(), String::from_utf8_lossy(&buf).into_owned()));
        buf.clear();
    }
    let out = child.wait_with_output().expect("curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
}

#[test]
fn streamed_responses_reach_the_caller_as_they_are_sent() {
    let run = Running::start("rust-echo", &["--timeout", "10"]);
    let url = format!(
        "http://{}/2015-03-31/functions/function/invocations",
        run.addr
    );
    let (lines, head) = curl_lines(&url, r#"{"stream":{"chunks":3,"interval_ms":800}}"#, &[]);
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.contains("x-amz-function-error"), "{head}");
    // Each chunk carries the time the function sent it.
    let chunks: Vec<(u128, u128)> = lines
        .iter()
        .filter_map(|(received, text)| {
            let sent = text.split("sent_ms=").nth(1)?.trim().parse().ok()?;
            Some((*received, sent))
        })
        .collect();
    assert_eq!(chunks.len(), 3, "{lines:?}");
    assert!(lines[0].1.contains("chunk 1/3"), "{lines:?}");
    let (first_received, _) = chunks[0];
    let (_, last_sent) = chunks[2];
    assert!(
        first_received < last_sent,
        "the first chunk arrived at {first_received}, after the last was sent at {last_sent}"
    );
    // Chunk 1 arrives about 1.6 s before the end of the stream.
    assert!(last_sent - first_received >= 1000, "{chunks:?}");
    // A buffered answer still works on the same environment afterwards.
    let (status, _, body) = run.invoke(r#"{"after":"stream"}"#, &[]);
    assert_eq!(
        (status, json(&body)["after"].clone()),
        (200, Value::from("stream"))
    );
}

fn b64(s: &str) -> String {
    let mut child = std::process::Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("base64");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(s.as_bytes())
        .expect("write");
    String::from_utf8(child.wait_with_output().expect("base64").stdout).expect("utf8")
}

const CLIENT_CONTEXT: &str = r#"{"client":{"installationId":"inst-1","appTitle":"lambox tests","appVersionName":"1.0","appVersionCode":"7","appPackageName":"dev.lambox"},"custom":{"k":"v"},"env":{"platform":"linux"}}"#;

#[test]
fn client_context_is_passed_to_the_function() {
    let run = Running::start("rust-echo", &[]);
    let cc = b64(CLIENT_CONTEXT);
    let (status, _, body) = run.invoke(r#"{"context":true}"#, &[("X-Amz-Client-Context", &cc)]);
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    // As lambda_runtime parsed it from Lambda-Runtime-Client-Context.
    let got = &v["client_context"];
    assert_eq!(got["client"]["installationId"], "inst-1", "{body}");
    assert_eq!(got["client"]["appTitle"], "lambox tests", "{body}");
    assert_eq!(got["custom"]["k"], "v", "{body}");
    assert!(
        v["invoked_function_arn"]
            .as_str()
            .expect("arn")
            .ends_with(":function:function"),
        "{body}"
    );
    // Without the header, the runtime gets none.
    let (_, _, body) = run.invoke(r#"{"context":true}"#, &[]);
    assert_eq!(json(&body)["client_context"], Value::Null, "{body}");
    // Not base64 JSON: refused before anything runs.
    let (status, h, _) = run.invoke("{}", &[("X-Amz-Client-Context", "not base64!")]);
    assert_eq!(status, 400);
    assert_eq!(
        header(&h, "x-amzn-errortype"),
        Some("InvalidRequestContentException")
    );
    drop(run);

    // A shell runtime sees the header byte for byte.
    let run = Running::start("aws-base", &[]);
    let (status, _, body) = run.invoke("{}", &[("X-Amz-Client-Context", &cc)]);
    assert_eq!(status, 200, "{body} {}", run.log_text());
    assert_eq!(json(&body)["client_context"], CLIENT_CONTEXT, "{body}");
}

#[test]
fn aws_base_image_entrypoint_starts_the_real_runtime_not_the_emulator() {
    let run = Running::start("aws-base", &[]);
    let (status, h, body) = run.invoke(r#"{"a":1}"#, &[]);
    assert_eq!(status, 200, "{body} {}", run.log_text());
    assert_eq!(header(&h, "x-amz-function-error"), None);
    let v = json(&body);
    // /lambda-entrypoint.sh exec'd /var/runtime/bootstrap with the image's CMD as _HANDLER,
    // and it answered through lambox's Runtime API.
    assert_eq!(v["runtime"], "/var/runtime/bootstrap", "{body}");
    assert_eq!(v["handler"], "app.handler", "{body}");
    assert_eq!(v["runtime_api"], "127.0.0.1:9001", "{body}");
    assert_eq!(v["event"], serde_json::json!({"a": 1}), "{body}");
    let procs: Vec<&str> = v["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        procs.iter().any(|p| p.contains("/var/runtime/bootstrap")),
        "{procs:?}"
    );
    assert!(
        !procs.iter().any(|p| p.contains("aws-lambda-rie")),
        "the emulator runs: {procs:?}"
    );
    // Function errors carry X-Amz-Function-Error, which the emulator never sends.
    let (_, h, body) = run.invoke(r#"{"x":"fail"}"#, &[]);
    assert_eq!(header(&h, "x-amz-function-error"), Some("Unhandled"));
    assert_eq!(json(&body)["errorType"], "AwsBaseError", "{body}");
    let log = run.log_text();
    assert!(
        log.contains("aws-base bootstrap: started") && log.contains("handler app.handler"),
        "{log}"
    );
    // The emulator tags its log lines "(rapid)".
    assert!(!log.contains("(rapid)"), "{log}");
    drop(run);

    // The control: without AWS_LAMBDA_RUNTIME_API the same entrypoint starts the emulator,
    // which never takes lambox's events, so the invoke fails.
    let run = Running::start(
        "aws-base",
        &[
            "--timeout",
            "2",
            "--entrypoint",
            "/bin/sh",
            "--cmd",
            "-c",
            "--cmd",
            "unset AWS_LAMBDA_RUNTIME_API; exec /lambda-entrypoint.sh app.handler",
        ],
    );
    let (_, h, body) = run.invoke(r#"{"a":1}"#, &[]);
    assert_eq!(
        header(&h, "x-amz-function-error"),
        Some("Unhandled"),
        "{body}"
    );
    assert!(!body.contains("/var/runtime/bootstrap"), "{body}");
    // It was the emulator (it cannot bind 127.0.0.1:9001, which lambox holds).
    run.wait_log(10, "the emulator's log", |l| l.contains("(rapid)"));
}

#[test]
fn env_file_and_env_flags_with_reserved_keys_winning() {
    let data = DataDir::new();
    let file = data.path().join("vars.env");
    std::fs::write(
        &file,
        "# variables for the probe\n\nFILE_ONLY=from file\n  SHARED=file\nQUOTED=\"a b\" \n\
         EQ=x=y\nFROM_HOST\nNOT_ON_HOST\nAWS_LAMBDA_FUNCTION_NAME=evil\nLAMBDA_TASK_ROOT=/evil\n",
    )
    .expect("env file");
    let run = Running::start_with_env(
        "probe-python",
        &[
            "--env-file",
            file.to_str().expect("utf8"),
            "-e",
            "SHARED=flag",
            "-e",
            "AWS_LAMBDA_FUNCTION_VERSION=7",
            "-e",
            "BARE_FLAG",
            "--function-name",
            "probe",
        ],
        &[("FROM_HOST", "host value"), ("BARE_FLAG", "bare")],
    );
    let (status, _, body) = run.invoke("{}", &[]);
    assert_eq!(status, 200, "{body} {}", run.log_text());
    let env = &json(&body)["env"];
    assert_eq!(env["FILE_ONLY"], "from file", "{env}");
    assert_eq!(env["SHARED"], "flag", "-e wins over --env-file: {env}");
    assert_eq!(env["QUOTED"], "\"a b\" ", "{env}");
    assert_eq!(env["EQ"], "x=y", "{env}");
    assert_eq!(env["FROM_HOST"], "host value", "{env}");
    assert!(env.get("NOT_ON_HOST").is_none(), "{env}");
    assert_eq!(env["BARE_FLAG"], "bare", "{env}");
    // Reserved keys: Lambda's values win over the user's.
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "probe", "{env}");
    assert_eq!(env["LAMBDA_TASK_ROOT"], "/var/task", "{env}");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST", "{env}");
}

#[test]
fn a_bad_env_file_line_is_a_one_line_error_naming_file_and_line() {
    let data = DataDir::new();
    let file = data.path().join("bad.env");
    std::fs::write(&file, "# ok\nGOOD=1\nMY VAR=2\n").expect("env file");
    let out = data
        .lambox()
        .args(["run", "-q", &oci_ref("rust-echo"), "--listen"])
        .arg(format!("127.0.0.1:{}", common::free_port()))
        .args(["--env-file", file.to_str().expect("utf8")])
        .output()
        .expect("lambox run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "{}:3: variable name \"MY VAR\" contains whitespace",
        file.display()
    );
    assert!(err.contains(&want), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let missing = data.path().join("missing.env");
    let out = data
        .lambox()
        .args(["run", "-q", &oci_ref("rust-echo")])
        .args(["--env-file", missing.to_str().expect("utf8")])
        .output()
        .expect("lambox run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(missing.to_str().expect("utf8")), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn environments_of_a_killed_lambox_are_ended_by_the_next_one() {
    let mut first = Running::start("rust-echo", &["--idle-timeout", "0"]);
    assert_eq!(first.invoke("{}", &[]).0, 200);
    let old = first.pid();
    let pids = env_pids(old);
    assert!(pids.len() >= 2, "no environment found: {pids:?}");
    first.kill9();
    // Orphaned: nothing of lambox ends them (the helper's parent is gone).
    std::thread::sleep(Duration::from_millis(300));
    let alive = |p: &u32| std::path::Path::new(&format!("/proc/{p}")).exists();
    assert!(
        pids.iter().any(alive),
        "the environment died with lambox: {pids:?}"
    );
    // The next lambox process (any data dir) ends them and removes their cgroups when it
    // prepares its own (at start: it pre-spawns a helper).
    let second = Running::start("rust-echo", &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(alive) || !all_cgroups(old).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left: processes {:?}, cgroups {:?}",
            pids.iter().filter(|p| alive(p)).collect::<Vec<_>>(),
            all_cgroups(old)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(second.invoke("{}", &[]).0, 200);
}
