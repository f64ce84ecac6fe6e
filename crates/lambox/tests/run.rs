//! End-to-end: `lambox run` on real images with real runtime interface clients (AWS's
//! awslambdaric, the Rust lambda_runtime crate, a shell custom runtime), in the real sandbox,
//! invoked over HTTP as the emulator's users do.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{oci_ref, DataDir};
use serde_json::Value;

/// A `lambox run` process, stopped with SIGTERM on drop.
struct Running {
    child: Option<Child>,
    addr: String,
    data: DataDir,
    log: std::path::PathBuf,
}

impl Running {
    fn start(image: &str, extra: &[&str]) -> Running {
        let data = DataDir::new();
        let port = common::free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = data.path().join("run.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = data
            .lambox()
            .args(["run", "-q", &oci_ref(image), "--listen", &addr])
            .args(extra)
            .stdout(file.try_clone().expect("clone"))
            .stderr(file)
            .spawn()
            .expect("spawn lambox run");
        let r = Running {
            child: Some(child),
            addr,
            data,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(&r.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "lambox run did not listen: {}",
                r.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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

    /// SIGTERM, wait, and return the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("lambox run did not stop on SIGTERM: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
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

#[test]
fn shutdown_leaves_nothing_behind() {
    let mut run = Running::start("rust-echo", &["--concurrency", "2"]);
    for _ in 0..2 {
        assert_eq!(run.invoke("{}", &[]).0, 200);
    }
    let data = run.data.path().to_path_buf();
    let pid = run.child.as_ref().expect("running").id();
    assert!(run.stop().success(), "{}", run.log_text());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(data.to_str().expect("utf8")),
        "mounts left: {mounts}"
    );
    // No process of ours is left: nothing runs with this data dir's run/ state.
    let ps = std::process::Command::new("ps")
        .args(["-eo", "pid,args"])
        .output()
        .expect("ps");
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(!ps.contains(data.to_str().expect("utf8")), "{ps}");
    // No cgroup of its environments (named `<lambox pid>-<n>`) is left.
    let leftovers = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("find /sys/fs/cgroup -mindepth 2 -maxdepth 6 -type d -path '*/lambox/{pid}-*' 2>/dev/null"),
        ])
        .output()
        .expect("find");
    assert_eq!(
        String::from_utf8_lossy(&leftovers.stdout),
        "",
        "cgroups left"
    );
}
