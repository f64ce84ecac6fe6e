//! Function logs and the CLI clients of `lambox serve`: the real binary serving the real
//! rust-echo image (`--network none`), `lambox invoke`/`functions`/`logs` against it, and the
//! real AWS CLI (PyPI awscli) reading the logs through the CloudWatch Logs API.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_port, oci, python, serve, DataDir};
use serde_json::Value;

/// The real aws CLI against `endpoint`.
fn aws(endpoint: &str, args: &[&str]) -> Output {
    let dir = std::env::temp_dir();
    python(&dir)
        .args(["-m", "awscli"])
        .args(args)
        .args(["--endpoint-url", endpoint, "--output", "json"])
        .output()
        .expect("run python3 -m awscli")
}

fn aws_ok(endpoint: &str, args: &[&str]) -> Value {
    let out = aws(endpoint, args);
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("aws {args:?}: {e}: {text}"))
    }
}

/// Creates `name` from the rust-echo fixture and waits until it is Active.
fn create_echo(endpoint: &str, name: &str) {
    let uri = format!("ImageUri=oci:{}", oci("rust-echo").display());
    aws_ok(
        endpoint,
        &[
            "lambda",
            "create-function",
            "--function-name",
            name,
            "--package-type",
            "Image",
            "--code",
            &uri,
            "--role",
            "arn:aws:iam::000000000000:role/x",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = aws_ok(
            endpoint,
            &[
                "lambda",
                "get-function-configuration",
                "--function-name",
                name,
            ],
        );
        match c["State"].as_str() {
            Some("Active") => return,
            Some("Pending") => {}
            _ => panic!("{name} did not become Active: {c}"),
        }
        assert!(Instant::now() < deadline, "{name} still {c}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `lambox ARGS --endpoint ENDPOINT` (without a data directory: these are clients).
fn client(endpoint: &str, args: &[&str]) -> Output {
    common::lambox()
        .args(args)
        .args(["--endpoint", endpoint])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .expect("run lambox")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `lambox invoke --log`: (stdout, the request id of the START line in the tail).
fn invoke_logged(endpoint: &str, function: &str, payload: &str) -> (String, String) {
    let out = client(
        endpoint,
        &["invoke", function, "--payload", payload, "--log"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tail = text(&out.stderr);
    let id = tail
        .lines()
        .find_map(|l| l.strip_prefix("START RequestId: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no START in the tail: {tail}"))
        .to_owned();
    (text(&out.stdout), id)
}

fn log_lines(endpoint: &str, function: &str) -> Vec<String> {
    let out = client(endpoint, &["logs", function, "--since", "all"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).lines().map(str::to_owned).collect()
}

/// The index of the first line after `from` that contains `needle`.
fn find(lines: &[String], from: usize, needle: &str) -> usize {
    lines[from..]
        .iter()
        .position(|l| l.contains(needle))
        .map(|i| from + i)
        .unwrap_or_else(|| panic!("no {needle:?} after line {from} in:\n{}", lines.join("\n")))
}

#[test]
fn invoke_functions_and_logs_clients_and_the_cloudwatch_api() {
    let data = DataDir::new();
    let (mut server, endpoint) = serve(&data, &[]);
    create_echo(&endpoint, "echo");

    // invoke: the payload on stdout.
    let out = client(&endpoint, &["invoke", "echo", "--payload", r#"{"a":1}"#]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON"),
        serde_json::json!({"a": 1})
    );
    // From a file, with the log tail: the function's own line is in it.
    let file = data.path().join("event.json");
    std::fs::write(&file, r#"{"alloc_mb":1,"from":"file"}"#).expect("write");
    let (stdout, first_id) = invoke_logged(&endpoint, "echo", &format!("@{}", file.display()));
    assert!(stdout.contains(r#""from":"file""#), "{stdout}");
    // A function error: payload printed, exit 1, one line naming function and error type.
    let out = client(
        &endpoint,
        &["invoke", "echo", "--payload", r#"{"error":"boom"}"#],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("boom"), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("lambox: error: function echo failed: EchoError: boom"),
        "{err}"
    );
    // API errors: the AWS type and message in one line.
    let out = client(&endpoint, &["invoke", "nope", "--payload", "{}"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("lambox: error: ") && err.contains("ResourceNotFoundException"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // No server.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = client(&dead, &["functions"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!("lambox: error: cannot reach lambox serve at {dead}: connection refused")
    );

    // functions: a table and the raw list.
    let out = client(&endpoint, &["functions"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let mut lines = table.lines();
    let header = lines.next().expect("header");
    for col in [
        "NAME",
        "STATE",
        "MEMORY",
        "TIMEOUT",
        "IMAGE",
        "LAST MODIFIED",
    ] {
        assert!(header.contains(col), "{table}");
    }
    let row = lines.next().expect("a row");
    assert!(
        row.starts_with("echo ")
            && row.contains("Active")
            && row.contains("128 MB")
            && row.contains("oci:"),
        "{table}"
    );
    // With credentials in the environment the request is SigV4-signed (serve accepts any).
    let out = common::lambox()
        .args(["functions", "--json", "--endpoint", &endpoint])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .expect("run lambox");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    // logs: each invoke's START, own output, END, REPORT, in order.
    let lines = log_lines(&endpoint, "echo");
    let start = find(
        &lines,
        0,
        &format!("START RequestId: {first_id} Version: $LATEST"),
    );
    let own = find(&lines, start, "echo-rust: allocated and touched 1 MiB");
    let end = find(&lines, own, &format!("END RequestId: {first_id}"));
    find(&lines, end, &format!("REPORT RequestId: {first_id}"));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(" START RequestId: "))
            .count(),
        3,
        "{lines:#?}"
    );
    // `TIMESTAMP STREAM MESSAGE`.
    let parts: Vec<&str> = lines[start].splitn(3, ' ').collect();
    assert!(
        parts[0].ends_with('Z') && parts[0].len() == 24,
        "{}",
        lines[start]
    );
    assert!(parts[1].contains("/[$LATEST]"), "{}", lines[start]);

    // --follow sees a new invoke's lines.
    let mut follower = common::lambox()
        .args(["logs", "echo", "--follow", "--endpoint", &endpoint])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("lambox logs --follow");
    let (tx, rx) = mpsc::channel();
    let stdout = follower.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    let (_, followed_id) = invoke_logged(&endpoint, "echo", r#"{"alloc_mb":2}"#);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains(&format!("REPORT RequestId: {followed_id}")))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("--follow did not show the new invoke: {seen:#?}"),
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("allocated and touched 2 MiB")),
        "{seen:#?}"
    );
    // Nothing printed twice.
    let starts = seen
        .iter()
        .filter(|l| l.contains(&format!("START RequestId: {followed_id}")));
    assert_eq!(starts.count(), 1, "{seen:#?}");
    let _ = follower.kill();
    let _ = follower.wait();

    // The AWS CLI: groups, streams, events (paged by the CLI with a small page size).
    let groups = aws_ok(&endpoint, &["logs", "describe-log-groups"]);
    assert_eq!(
        groups["logGroups"][0]["logGroupName"], "/aws/lambda/echo",
        "{groups}"
    );
    let streams = aws_ok(
        &endpoint,
        &[
            "logs",
            "describe-log-streams",
            "--log-group-name",
            "/aws/lambda/echo",
        ],
    );
    let stream = streams["logStreams"][0]["logStreamName"]
        .as_str()
        .expect("a stream")
        .to_owned();
    let (date, rest) = stream.split_at(11);
    assert!(date.chars().filter(|c| *c == '/').count() == 3, "{stream}");
    let hex = rest.strip_prefix("[$LATEST]").expect("version in the name");
    assert!(
        hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{stream}"
    );
    let reports = aws_ok(
        &endpoint,
        &[
            "logs",
            "filter-log-events",
            "--log-group-name",
            "/aws/lambda/echo",
            "--filter-pattern",
            "REPORT",
            "--page-size",
            "2",
        ],
    );
    let events = reports["events"].as_array().expect("events");
    assert_eq!(events.len(), 4, "{reports}");
    for e in events {
        let m = e["message"].as_str().expect("message");
        assert!(
            m.starts_with("REPORT RequestId: ") && m.ends_with("\t\n"),
            "{m:?}"
        );
    }
    let got = aws_ok(
        &endpoint,
        &[
            "logs",
            "get-log-events",
            "--log-group-name",
            "/aws/lambda/echo",
            "--log-stream-name",
            &stream,
            "--start-from-head",
        ],
    );
    assert!(
        got["events"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("START RequestId: ")),
        "{got}"
    );
    let missing = aws(
        &endpoint,
        &[
            "logs",
            "filter-log-events",
            "--log-group-name",
            "/aws/lambda/nope",
        ],
    );
    let err = text(&missing.stderr);
    assert!(
        err.contains("ResourceNotFoundException")
            && err.contains("The specified log group does not exist."),
        "{err}"
    );

    // Logs outlive the function and a restart.
    aws_ok(
        &endpoint,
        &["lambda", "delete-function", "--function-name", "echo"],
    );
    let before = log_lines(&endpoint, "echo");
    assert!(server.stop().success());
    let (_server, endpoint) = serve(&data, &[]);
    let after = log_lines(&endpoint, "echo");
    assert_eq!(before, after);
    assert!(after
        .iter()
        .any(|l| l.contains(&format!("REPORT RequestId: {followed_id}"))));
}

fn stored_bytes(data: &Path, function: &str) -> u64 {
    std::fs::read_dir(data.join("logs").join(function))
        .expect("log dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

#[test]
fn retention_keeps_each_function_log_under_its_bound_with_the_newest_lines() {
    let data = DataDir::new();
    let (_server, endpoint) = serve(&data, &["--log-retention-bytes", "4096"]);
    create_echo(&endpoint, "small");
    let mut ids = Vec::new();
    for i in 0..16 {
        let (_, id) = invoke_logged(&endpoint, "small", &format!(r#"{{"alloc_mb":{i}}}"#));
        ids.push(id);
    }
    let bytes = stored_bytes(data.path(), "small");
    assert!(bytes <= 4096, "{bytes} bytes kept");
    let lines = log_lines(&endpoint, "small");
    let last = ids.last().expect("ids");
    let start = find(&lines, 0, &format!("START RequestId: {last}"));
    let own = find(&lines, start, "allocated and touched 15 MiB");
    find(&lines, own, &format!("REPORT RequestId: {last}"));
    assert!(
        !lines.iter().any(|l| l.contains(&ids[0])),
        "the oldest invoke should have been dropped: {lines:#?}"
    );
    // A bound below the minimum is refused with one line.
    let out = data
        .lambox()
        .args([
            "serve",
            "--log-retention-bytes",
            "10",
            "--listen",
            "127.0.0.1:1",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("log retention"),
        "{}",
        text(&out.stderr)
    );
}
