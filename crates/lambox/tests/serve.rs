//! `lambox serve` end to end: the real binary, a real registry, the real AWS CLI (PyPI
//! awscli, `python3 -m awscli`) and boto3 from the fixture cache (`pip/aws`, installed by
//! scripts/build-fixtures.sh), dummy credentials.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{free_port, http_get, oci, python, DataDir, Registry};
use serde_json::Value;

/// A running `lambox serve`; SIGTERM then SIGKILL on drop.
struct Server {
    child: Option<Child>,
    addr: String,
    log: PathBuf,
}

impl Server {
    fn start(data: &DataDir, extra: &[&str]) -> Server {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = data
            .path()
            .join(format!("serve-{}.log", addr.replace([':', '.'], "-")));
        let out = std::fs::File::create(&log).expect("create serve log");
        let child = data
            .lambox()
            .args(["serve", "--listen", &addr])
            .args(extra)
            .env("LAMBOX_LOG", "info")
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("start lambox serve");
        let server = Server {
            child: Some(child),
            addr,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(http_get(&server.addr, "/health"), Ok((200, _))) {
            assert!(
                Instant::now() < deadline,
                "serve did not come up:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait; returns the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("serve did not stop on SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_millis(500));
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Aws<'a> {
    server: &'a Server,
    dir: PathBuf,
}

impl Aws<'_> {
    fn run(&self, args: &[&str]) -> Output {
        python(&self.dir)
            .args(["-m", "awscli", "lambda"])
            .args(args)
            .args([
                "--endpoint-url",
                &self.server.endpoint(),
                "--output",
                "json",
            ])
            .output()
            .expect("run python3 -m awscli")
    }

    /// Runs and expects success; returns the JSON it printed (Null if nothing).
    fn ok(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "aws lambda {args:?} failed ({}):\n{}\n--- serve log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.server.log_text()
        );
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("aws {args:?}: not JSON ({e}): {text}"))
        }
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "aws lambda {args:?} should have failed"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn wait_active(aws: &Aws, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = aws.ok(&["get-function-configuration", "--function-name", name]);
        match c["State"].as_str() {
            Some("Active") if c["LastUpdateStatus"] != "InProgress" => return c,
            Some("Pending") | Some("Active") => {}
            _ => panic!(
                "function {name} did not become Active: {c}\n{}",
                aws.server.log_text()
            ),
        }
        assert!(Instant::now() < deadline, "{name} still {c}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn event_statuses(data: &DataDir) -> Vec<String> {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print('\\n'.join(r[0] for r in c.execute('select status from events order by received_ms')))")
        .arg(data.path().join("lambox-api.db"))
        .output()
        .expect("python3 sqlite3");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn aws_cli_creates_invokes_versions_and_deletes_an_image_function() {
    let registry = Registry::start();
    registry.push(&oci("rust-echo").display().to_string(), "fn/echo:v1", None);
    let image = registry.reference("fn/echo:v1");
    let data = DataDir::new();
    let mut server = Server::start(&data, &[]);
    let work = tempfile::tempdir().expect("tempdir");
    let aws = Aws {
        server: &server,
        dir: work.path().to_owned(),
    };

    // Zip functions are refused with the AWS error type.
    let zip = work.path().join("f.zip");
    let made = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; zipfile.ZipFile(sys.argv[1], 'w').writestr('a.py', '')",
        ])
        .arg(&zip)
        .status()
        .expect("python3");
    assert!(made.success());
    let zip_arg = format!("fileb://{}", zip.display());
    let err = aws.fails(&[
        "create-function",
        "--function-name",
        "zipped",
        "--runtime",
        "python3.12",
        "--handler",
        "a.b",
        "--role",
        "arn:aws:iam::000000000000:role/x",
        "--zip-file",
        &zip_arg,
    ]);
    assert!(
        err.contains("InvalidParameterValueException")
            && err.contains("container-image functions only"),
        "{err}"
    );

    let created = aws.ok(&[
        "create-function",
        "--function-name",
        "echo",
        "--package-type",
        "Image",
        "--code",
        &format!("ImageUri={image}"),
        "--role",
        "arn:aws:iam::000000000000:role/x",
        "--timeout",
        "5",
    ]);
    assert_eq!(
        created["FunctionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:echo"
    );
    assert_eq!(created["State"], "Pending");
    assert_eq!(created["PackageType"], "Image");
    let c = wait_active(&aws, "echo");
    assert_eq!(c["Timeout"], 5);

    let f = aws.ok(&["get-function", "--function-name", "echo"]);
    assert_eq!(f["Code"]["ImageUri"], image.as_str());
    let resolved = f["Code"]["ResolvedImageUri"]
        .as_str()
        .expect("ResolvedImageUri");
    let sha = f["Configuration"]["CodeSha256"]
        .as_str()
        .expect("CodeSha256");
    assert_eq!(
        resolved,
        format!("{}/fn/echo@sha256:{sha}", registry.addr())
    );
    let images = data
        .lambox()
        .args(["images", "--json"])
        .output()
        .expect("images");
    assert!(
        String::from_utf8_lossy(&images.stdout).contains(sha),
        "the store holds the resolved image"
    );

    // Synchronous invoke with the log tail.
    let out = work.path().join("out.json");
    let r = aws.ok(&[
        "invoke",
        "--function-name",
        "echo",
        "--payload",
        r#"{"hello":"world"}"#,
        "--log-type",
        "Tail",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(r["StatusCode"], 200);
    assert_eq!(r["ExecutedVersion"], "$LATEST");
    assert!(r.get("FunctionError").is_none(), "{r}");
    let payload: Value = serde_json::from_slice(&std::fs::read(&out).expect("out")).expect("json");
    assert_eq!(payload["hello"], "world");
    let tail = base64::engine::general_purpose::STANDARD
        .decode(r["LogResult"].as_str().expect("LogResult"))
        .expect("base64");
    let tail = String::from_utf8_lossy(&tail);
    assert!(
        tail.contains("START RequestId:") && tail.contains("REPORT RequestId:"),
        "{tail}"
    );

    // A function error.
    let r = aws.ok(&[
        "invoke",
        "--function-name",
        "echo",
        "--payload",
        r#"{"error":"boom"}"#,
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(r["FunctionError"], "Unhandled");
    let payload: Value = serde_json::from_slice(&std::fs::read(&out).expect("out")).expect("json");
    assert_eq!(payload["errorMessage"], "boom");

    // DryRun and Event.
    let r = aws.ok(&[
        "invoke",
        "--function-name",
        "echo",
        "--invocation-type",
        "DryRun",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(r["StatusCode"], 204);
    let r = aws.ok(&[
        "invoke",
        "--function-name",
        "echo",
        "--invocation-type",
        "Event",
        "--payload",
        r#"{"async":1}"#,
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(r["StatusCode"], 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    while event_statuses(&data) != ["succeeded"] {
        assert!(
            Instant::now() < deadline,
            "event not run: {:?}",
            event_statuses(&data)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Versions and aliases: ExecutedVersion follows the qualifier.
    let v = aws.ok(&["publish-version", "--function-name", "echo"]);
    assert_eq!(v["Version"], "1");
    assert_eq!(
        v["FunctionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:echo:1"
    );
    let again = aws.ok(&["publish-version", "--function-name", "echo"]);
    assert_eq!(again["Version"], "1", "nothing changed: the same version");
    aws.ok(&[
        "create-alias",
        "--function-name",
        "echo",
        "--name",
        "live",
        "--function-version",
        "1",
    ]);
    let versions = aws.ok(&["list-versions-by-function", "--function-name", "echo"]);
    let vs: Vec<&str> = versions["Versions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|v| v["Version"].as_str())
        .collect();
    assert_eq!(vs, ["$LATEST", "1"]);
    let r = aws.ok(&[
        "invoke",
        "--function-name",
        "echo:live",
        "--payload",
        "{}",
        "--log-type",
        "Tail",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(r["ExecutedVersion"], "1");
    let tail = base64::engine::general_purpose::STANDARD
        .decode(r["LogResult"].as_str().expect("LogResult"))
        .expect("base64");
    let tail = String::from_utf8_lossy(&tail);
    assert!(tail.contains(" Version: 1\n"), "{tail}");
    let r = aws.ok(&[
        "invoke",
        "--function-name",
        "echo",
        "--qualifier",
        "1",
        "--payload",
        "{}",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(r["ExecutedVersion"], "1");

    // Reserved concurrency 0 throttles everything.
    aws.ok(&[
        "put-function-concurrency",
        "--function-name",
        "echo",
        "--reserved-concurrent-executions",
        "0",
    ]);
    let err = aws.fails(&[
        "invoke",
        "--function-name",
        "echo",
        "--payload",
        "{}",
        out.to_str().expect("utf-8"),
    ]);
    assert!(err.contains("TooManyRequestsException"), "{err}");
    aws.ok(&["delete-function-concurrency", "--function-name", "echo"]);

    let list = aws.ok(&["list-functions"]);
    let names: Vec<&str> = list["Functions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["FunctionName"].as_str())
        .collect();
    assert_eq!(names, ["echo"]);

    // State survives a restart; SIGTERM exits 0.
    let status = server.stop();
    assert!(
        status.success(),
        "serve exited {status}:\n{}",
        server.log_text()
    );
    let server = Server::start(&data, &[]);
    let aws = Aws {
        server: &server,
        dir: work.path().to_owned(),
    };
    let c = aws.ok(&["get-function-configuration", "--function-name", "echo"]);
    assert_eq!(
        (c["State"].as_str(), c["CodeSha256"].as_str()),
        (Some("Active"), Some(sha))
    );
    let r = aws.ok(&[
        "invoke",
        "--function-name",
        "echo:live",
        "--payload",
        r#"{"after":"restart"}"#,
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(r["StatusCode"], 200);
    let payload: Value = serde_json::from_slice(&std::fs::read(&out).expect("out")).expect("json");
    assert_eq!(payload["after"], "restart");

    aws.ok(&["delete-function", "--function-name", "echo"]);
    let err = aws.fails(&["get-function", "--function-name", "echo"]);
    assert!(
        err.contains("ResourceNotFoundException")
            && err.contains(
                "Function not found: arn:aws:lambda:us-east-1:000000000000:function:echo"
            ),
        "{err}"
    );
}

#[test]
fn boto3_drives_config_updates_retags_and_errors() {
    let registry = Registry::start();
    registry.push(
        &oci("hello-python").display().to_string(),
        "fn/hello:v1",
        None,
    );
    let data = DataDir::new();
    let server = Server::start(&data, &[]);
    let work = tempfile::tempdir().expect("tempdir");
    let script = r#"
import base64, json, sys, time
import boto3
from botocore.exceptions import ClientError

endpoint, registry = sys.argv[1], sys.argv[2]
lam = boto3.client("lambda", endpoint_url=endpoint)
image = f"{registry}/fn/hello:v1"

def wait_active(name):
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})

c = lam.create_function(FunctionName="hello", PackageType="Image", Code={"ImageUri": image},
                        Role="arn:aws:iam::000000000000:role/x", MemorySize=256,
                        Environment={"Variables": {"GREETING": "hi"}})
assert c["State"] == "Pending", c
wait_active("hello")
first = lam.get_function(FunctionName="hello")
sha1 = first["Configuration"]["CodeSha256"]
assert first["Configuration"]["MemorySize"] == 256
assert first["Configuration"]["Environment"] == {"Variables": {"GREETING": "hi"}}

r = lam.invoke(FunctionName="hello", Payload=json.dumps({"k": "v"}), LogType="Tail")
body = json.loads(r["Payload"].read())
assert r["StatusCode"] == 200 and body["k"] == "v" and body["body"] == "hello from lambox", body
assert "REPORT RequestId" in base64.b64decode(r["LogResult"]).decode()

# Retagging the image does not change the function; UpdateFunctionCode does.
print("RETAG", flush=True)
sys.stdout.flush()
input()
after_retag = lam.get_function(FunctionName="hello")["Configuration"]["CodeSha256"]
assert after_retag == sha1, (after_retag, sha1)
r = lam.invoke(FunctionName="hello", Payload=b"{}")
assert json.loads(r["Payload"].read())["body"] == "hello from lambox"
u = lam.update_function_code(FunctionName="hello", ImageUri=image, Publish=True)
assert u["LastUpdateStatus"] == "InProgress", u
wait_active("hello")
sha2 = lam.get_function(FunctionName="hello")["Configuration"]["CodeSha256"]
assert sha2 != sha1, "UpdateFunctionCode resolves the tag again"
r = lam.invoke(FunctionName="hello", Payload=json.dumps({"hello": "rust"}))
assert json.loads(r["Payload"].read()) == {"hello": "rust"}, "now the retagged image (rust-echo) runs"

# Publish=True published the new code as version 1; a version an alias uses cannot go.
versions = lam.list_versions_by_function(FunctionName="hello")["Versions"]
assert [(v["Version"], v["CodeSha256"]) for v in versions] == [("$LATEST", sha2), ("1", sha2)], versions
lam.create_alias(FunctionName="hello", Name="live", FunctionVersion="1")
try:
    lam.delete_function(FunctionName="hello", Qualifier="1")
    raise SystemExit("deleted a version an alias uses")
except ClientError as e:
    assert e.response["Error"]["Code"] == "ResourceConflictException", e.response
lam.delete_alias(FunctionName="hello", Name="live")
lam.delete_function(FunctionName="hello", Qualifier="1")
try:
    lam.get_function(FunctionName="hello", Qualifier="1")
    raise SystemExit("version 1 still there")
except ClientError as e:
    assert e.response["Error"]["Code"] == "ResourceNotFoundException", e.response

# Configuration updates, RevisionId preconditions.
rev = lam.get_function_configuration(FunctionName="hello")["RevisionId"]
try:
    lam.update_function_configuration(FunctionName="hello", Timeout=10, RevisionId="stale")
    raise SystemExit("stale RevisionId accepted")
except ClientError as e:
    assert e.response["Error"]["Code"] == "PreconditionFailedException", e.response
u = lam.update_function_configuration(FunctionName="hello", Timeout=10, RevisionId=rev)
assert u["Timeout"] == 10 and u["RevisionId"] != rev

for call, code in [
    (lambda: lam.get_function(FunctionName="nope"), "ResourceNotFoundException"),
    (lambda: lam.update_function_configuration(FunctionName="hello", MemorySize=20000), "InvalidParameterValueException"),
    (lambda: lam.update_function_configuration(FunctionName="hello", Environment={"Variables": {"AWS_REGION": "x"}}), "InvalidParameterValueException"),
    (lambda: lam.create_function(FunctionName="hello", PackageType="Image", Code={"ImageUri": image}, Role="arn:aws:iam::000000000000:role/x"), "ResourceConflictException"),
    (lambda: lam.invoke(FunctionName="hello", Payload=b"x" * (6 * 1024 * 1024 + 1)), "RequestTooLargeException"),
    (lambda: lam.invoke(FunctionName="hello", InvocationType="Event", Payload=b"[" + b"1," * 600000 + b"1]"), "RequestTooLargeException"),
    (lambda: lam.invoke(FunctionName="hello", Payload=b"not json"), "InvalidRequestContentException"),
]:
    try:
        call()
        raise SystemExit(f"expected {code}")
    except ClientError as e:
        assert e.response["Error"]["Code"] == code, (code, e.response)
        assert e.response["Error"]["Message"], e.response

s = lam.get_account_settings()
assert s["AccountLimit"]["ConcurrentExecutions"] == 1000 and s["AccountUsage"]["FunctionCount"] == 1, s
names = [f["FunctionName"] for page in lam.get_paginator("list_functions").paginate() for f in page["Functions"]]
assert names == ["hello"], names
lam.delete_function(FunctionName="hello")
print("OK", flush=True)
"#;
    std::fs::write(work.path().join("t.py"), script).expect("write script");
    let mut child = python(work.path())
        .arg("t.py")
        .arg(server.endpoint())
        .arg(registry.addr())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    // Wait for the script to reach the retag point, retag, let it go on.
    use std::io::{BufRead, BufReader, Write};
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read");
    if line.trim() == "RETAG" {
        registry.push(&oci("rust-echo").display().to_string(), "fn/hello:v1", None);
        child
            .stdin
            .as_mut()
            .expect("stdin")
            .write_all(b"go\n")
            .expect("write");
        line.clear();
        stdout.read_line(&mut line).expect("read");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success() && line.trim() == "OK",
        "boto3 script failed ({}), last line {line:?}:\n{}\n--- serve log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
}

/// Runs a boto3 script (argv: endpoint, registry) that may print `TERM` once: the server is
/// then sent SIGTERM while the script goes on. Returns the server's exit status if stopped.
fn run_boto3(
    server: &mut Server,
    registry: &Registry,
    dir: &Path,
    script: &str,
) -> Option<std::process::ExitStatus> {
    use std::io::{BufRead, BufReader};
    std::fs::write(dir.join("t.py"), script).expect("write script");
    let mut child = python(dir)
        .arg("t.py")
        .arg(server.endpoint())
        .arg(registry.addr())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut last = String::new();
    let mut stopped = None;
    for line in stdout.lines() {
        let line = line.expect("read");
        if line == "TERM" {
            stopped = Some(server.stop());
        }
        last = line;
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success() && last == "OK",
        "boto3 script failed ({}), last line {last:?}:\n{}\n--- serve log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    stopped
}

#[test]
fn reserved_and_account_concurrency_throttle_with_reason_and_sigterm_finishes_invokes() {
    let registry = Registry::start();
    registry.push(&oci("rust-echo").display().to_string(), "fn/echo:v1", None);
    let data = DataDir::new();
    let mut server = Server::start(
        &data,
        &["--account-concurrency", "2", "--shutdown-grace", "20"],
    );
    let work = tempfile::tempdir().expect("tempdir");
    let script = r#"
import json, sys, threading, time
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, registry = sys.argv[1], sys.argv[2]
lam = boto3.client("lambda", endpoint_url=endpoint,
                   config=Config(retries={"total_max_attempts": 1}, read_timeout=60, max_pool_connections=10))
lam.create_function(FunctionName="slow", PackageType="Image", Code={"ImageUri": f"{registry}/fn/echo:v1"},
                    Role="arn:aws:iam::000000000000:role/x", Timeout=20)
lam.get_waiter("function_active_v2").wait(FunctionName="slow", WaiterConfig={"Delay": 1, "MaxAttempts": 120})
# Warm two environments' worth of cold start out of the timings below.
lam.invoke(FunctionName="slow", Payload=b"{}")

def slow(results, ms):
    r = lam.invoke(FunctionName="slow", Payload=json.dumps({"sleep_ms": ms}))
    results.append((r["StatusCode"], json.loads(r["Payload"].read()), r.get("FunctionError")))

def throttled(reason):
    try:
        lam.invoke(FunctionName="slow", Payload=b"{}")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "TooManyRequestsException", e.response
        assert e.response["Reason"] == reason, e.response
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        return
    raise SystemExit("not throttled: " + reason)

# Reserved concurrency 1: a second concurrent invoke is throttled.
lam.put_function_concurrency(FunctionName="slow", ReservedConcurrentExecutions=1)
results = []
t = threading.Thread(target=slow, args=(results, 3000)); t.start()
time.sleep(1.0)
throttled("ReservedFunctionConcurrentInvocationLimitExceeded")
t.join()
assert results == [(200, {"sleep_ms": 3000}, None)], results

# No reservation: the account's 2 are shared; a third concurrent invoke is throttled.
lam.delete_function_concurrency(FunctionName="slow")
results = []
ts = [threading.Thread(target=slow, args=(results, 3000)) for _ in range(2)]
for x in ts: x.start()
time.sleep(1.5)
throttled("ConcurrentInvocationLimitExceeded")
for x in ts: x.join()
assert sorted(r[0] for r in results) == [200, 200], results

# SIGTERM while an invoke runs: it finishes, then lambox exits.
results = []
t = threading.Thread(target=slow, args=(results, 2000)); t.start()
time.sleep(0.7)
print("TERM", flush=True)
t.join()
assert results == [(200, {"sleep_ms": 2000}, None)], results
print("OK", flush=True)
"#;
    let status = run_boto3(&mut server, &registry, work.path(), script)
        .expect("the script asked for SIGTERM");
    assert!(
        status.success(),
        "serve exited {status}:\n{}",
        server.log_text()
    );
    let log = server.log_text();
    assert!(log.contains("lambox: stopped"), "{log}");
}

#[test]
fn events_accepted_before_a_kill_9_run_after_restart() {
    let registry = Registry::start();
    registry.push(&oci("rust-echo").display().to_string(), "fn/echo:v1", None);
    let data = DataDir::new();
    let mut server = Server::start(&data, &[]);
    let work = tempfile::tempdir().expect("tempdir");
    let aws = Aws {
        server: &server,
        dir: work.path().to_owned(),
    };
    let image = registry.reference("fn/echo:v1");
    aws.ok(&[
        "create-function",
        "--function-name",
        "echo",
        "--package-type",
        "Image",
        "--code",
        &format!("ImageUri={image}"),
        "--role",
        "arn:aws:iam::000000000000:role/x",
        "--timeout",
        "30",
    ]);
    wait_active(&aws, "echo");
    aws.ok(&[
        "put-function-concurrency",
        "--function-name",
        "echo",
        "--reserved-concurrent-executions",
        "1",
    ]);

    // A long synchronous invoke holds the only slot, so the event must wait.
    let busy = python(work.path())
        .args([
            "-m",
            "awscli",
            "lambda",
            "invoke",
            "--function-name",
            "echo",
            "--payload",
            r#"{"sleep_ms":20000}"#,
        ])
        .args([
            "--endpoint-url",
            &server.endpoint(),
            "--cli-read-timeout",
            "60",
        ])
        .arg(work.path().join("busy.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("background invoke");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server.log_text().contains("START RequestId") {
        assert!(
            Instant::now() < deadline,
            "the long invoke did not start:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = work.path().join("out.json");
    let r = aws.ok(&[
        "invoke",
        "--function-name",
        "echo",
        "--invocation-type",
        "Event",
        "--payload",
        r#"{"durable":true}"#,
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(r["StatusCode"], 202);
    assert_eq!(event_statuses(&data), ["pending"]);

    // kill -9: the accepted event is in the database, not run.
    let mut child = server.child.take().expect("running");
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let mut busy = busy;
    let _ = busy.wait();
    assert_eq!(event_statuses(&data), ["pending"]);

    let mut server = Server::start(&data, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while event_statuses(&data) != ["succeeded"] {
        assert!(
            Instant::now() < deadline,
            "event not run after restart: {:?}\n{}",
            event_statuses(&data),
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        server.log_text().contains("resuming events"),
        "{}",
        server.log_text()
    );
    let status = server.stop();
    assert!(status.success(), "{status}");
    // A restart after that finds nothing to run again.
    let mut server = Server::start(&data, &[]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!server.log_text().contains("resuming events"));
    assert_eq!(event_statuses(&data), ["succeeded"]);
    server.stop();
}

/// `lambox events FUNCTION --json` for `data`.
/// `lambox events FUNCTION --json [--failed]`, asking `server`.
fn events_json(server: &Server, function: &str, failed: bool) -> Vec<Value> {
    let mut cmd = common::lambox();
    cmd.args([
        "events",
        function,
        "--json",
        "--endpoint",
        &server.endpoint(),
    ]);
    if failed {
        cmd.arg("--failed");
    }
    let out = common::run_ok(&mut cmd);
    serde_json::from_str::<Vec<Value>>(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Waits until `function`'s newest event is no longer pending; returns it.
fn wait_event_done(server: &Server, function: &str, count: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let all = events_json(server, function, false);
        if all.len() == count && all[count - 1]["Status"] != "pending" {
            return all[count - 1].clone();
        }
        assert!(
            Instant::now() < deadline,
            "event {count} of {function} still pending: {all:?}\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn starts(server: &Server) -> usize {
    server.log_text().matches("START RequestId").count()
}

#[test]
fn async_failures_are_retried_per_event_invoke_config_across_a_kill_9_then_kept_failed() {
    let registry = Registry::start();
    registry.push(&oci("rust-echo").display().to_string(), "fn/echo:v1", None);
    let data = DataDir::new();
    // Lambda's 1 and 2 minute retry delays (and event ages) × 0.05: 3 s and 6 s.
    let scale = ["--async-retry-delay-scale", "0.05"];
    let server = Server::start(&data, &scale);
    let work = tempfile::tempdir().expect("tempdir");
    let aws = Aws {
        server: &server,
        dir: work.path().to_owned(),
    };
    let image = registry.reference("fn/echo:v1");
    aws.ok(&[
        "create-function",
        "--function-name",
        "echo",
        "--package-type",
        "Image",
        "--code",
        &format!("ImageUri={image}"),
        "--role",
        "arn:aws:iam::000000000000:role/x",
    ]);
    wait_active(&aws, "echo");
    let out = work.path().join("out.json");
    let out = out.to_str().expect("utf-8");
    let event = |aws: &Aws, payload: &str| {
        let r = aws.ok(&[
            "invoke",
            "--function-name",
            "echo",
            "--invocation-type",
            "Event",
            "--payload",
            payload,
            out,
        ]);
        assert_eq!(r["StatusCode"], 202);
    };

    // MaximumRetryAttempts 1: an event that always fails runs twice, then is kept as failed
    // with the function's error.
    aws.ok(&[
        "put-function-event-invoke-config",
        "--function-name",
        "echo",
        "--maximum-retry-attempts",
        "1",
    ]);
    event(&aws, r#"{"error":"boom one"}"#);
    let e = wait_event_done(&server, "echo", 1);
    assert_eq!(e["Status"], "failed", "{e}");
    assert_eq!(e["Attempts"], 2, "{e}");
    assert!(
        e["Error"].as_str().unwrap_or("").contains("boom one"),
        "{e}"
    );
    assert_eq!(starts(&server), 2, "{}", server.log_text());

    // Sent through an alias, the alias's config applies (MaximumRetryAttempts 0: one run).
    aws.ok(&[
        "create-alias",
        "--function-name",
        "echo",
        "--name",
        "live",
        "--function-version",
        "$LATEST",
    ]);
    aws.ok(&[
        "put-function-event-invoke-config",
        "--function-name",
        "echo",
        "--qualifier",
        "live",
        "--maximum-retry-attempts",
        "0",
    ]);
    let r = aws.ok(&[
        "invoke",
        "--function-name",
        "echo:live",
        "--invocation-type",
        "Event",
        "--payload",
        r#"{"error":"boom alias"}"#,
        out,
    ]);
    assert_eq!(r["StatusCode"], 202);
    let e = wait_event_done(&server, "echo", 2);
    assert_eq!(
        (&e["Status"], &e["Attempts"]),
        (&"failed".into(), &1.into()),
        "{e}"
    );
    assert_eq!(starts(&server), 3);

    // A success runs once.
    event(&aws, r#"{"ok":1}"#);
    let e = wait_event_done(&server, "echo", 3);
    assert_eq!(
        (&e["Status"], &e["Attempts"]),
        (&"succeeded".into(), &1.into()),
        "{e}"
    );
    assert_eq!(starts(&server), 4);

    // MaximumEventAgeInSeconds 60 (3 s here): the retry, due 3 s after the failure, finds the
    // event too old, so it fails after one run.
    aws.ok(&[
        "update-function-event-invoke-config",
        "--function-name",
        "echo",
        "--maximum-retry-attempts",
        "2",
        "--maximum-event-age-in-seconds",
        "60",
    ]);
    event(&aws, r#"{"error":"boom old"}"#);
    let e = wait_event_done(&server, "echo", 4);
    assert_eq!(e["Status"], "failed", "{e}");
    assert_eq!(e["Attempts"], 1, "{e}");
    assert!(
        e["Error"]
            .as_str()
            .unwrap_or("")
            .contains("EventAgeExceeded"),
        "{e}"
    );
    assert_eq!(starts(&server), 5);

    // No config: Lambda's default, 2 retries. Killed (-9) while the first retry is due, the
    // event keeps its attempt count and runs its remaining retries after the restart.
    aws.ok(&[
        "delete-function-event-invoke-config",
        "--function-name",
        "echo",
    ]);
    event(&aws, r#"{"error":"boom default"}"#);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = events_json(&server, "echo", false);
        if all.len() == 5 && all[4]["Attempts"] == 1 {
            assert_eq!(all[4]["Status"], "pending", "{all:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{all:?}\n{}", server.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut server = server;
    let mut child = server.child.take().expect("running");
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let mut server = Server::start(&data, &scale);
    let e = wait_event_done(&server, "echo", 5);
    assert_eq!(e["Status"], "failed", "{e}");
    assert_eq!(e["Attempts"], 3, "{e}");
    assert!(server.log_text().contains("resuming events"));
    // The restarted server ran the remaining two attempts and nothing else.
    assert_eq!(starts(&server), 2, "{}", server.log_text());

    // `lambox events --failed`: the three failed events, oldest first; a table without --json.
    let failed = events_json(&server, "echo", true);
    let errors: Vec<_> = failed
        .iter()
        .map(|e| {
            (
                e["Attempts"].as_u64().unwrap_or(0),
                e["Payload"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (2, r#"{"error":"boom one"}"#.to_owned()),
            (1, r#"{"error":"boom alias"}"#.to_owned()),
            (1, r#"{"error":"boom old"}"#.to_owned()),
            (3, r#"{"error":"boom default"}"#.to_owned()),
        ]
    );
    let endpoint = server.endpoint();
    let table = common::run_ok(common::lambox().args([
        "events",
        "echo",
        "--failed",
        "--endpoint",
        &endpoint,
    ]));
    assert_eq!(table.lines().count(), 5, "{table}");
    assert!(table.lines().all(|l| !l.contains("succeeded")), "{table}");
    let missing = common::lambox()
        .args(["events", "nope", "--endpoint", &endpoint])
        .output()
        .expect("run");
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("ResourceNotFoundException: Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope"),
        "{stderr}"
    );
    // --offline reads the same from the data directory.
    let offline =
        common::run_ok(
            data.lambox()
                .args(["events", "echo", "--failed", "--json", "--offline"]),
        );
    let offline: Vec<Value> = serde_json::from_str(&offline).expect("JSON");
    assert_eq!(offline, failed);
    let missing = data
        .lambox()
        .args(["events", "nope", "--offline"])
        .output()
        .expect("run");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("function nope not found"));
    assert!(server.stop().success());
}

#[test]
fn idle_environments_are_reaped_after_the_idle_timeout() {
    let registry = Registry::start();
    registry.push(&oci("rust-echo").display().to_string(), "fn/echo:v1", None);
    let data = DataDir::new();
    let mut server = Server::start(&data, &["--idle-timeout", "3"]);
    let work = tempfile::tempdir().expect("tempdir");
    // One boto3 process, so the invokes are back to back: cold, warm, then after 6 s idle
    // (past the 3 s timeout) cold again. Cold = `Init Duration` in the REPORT line.
    let script = r#"
import base64, sys, time, boto3
lam = boto3.client("lambda", endpoint_url=sys.argv[1])
lam.create_function(FunctionName="echo", PackageType="Image", Role="arn:aws:iam::000000000000:role/x",
                    Code={"ImageUri": sys.argv[2] + "/fn/echo:v1"})
lam.get_waiter("function_active_v2").wait(FunctionName="echo", WaiterConfig={"Delay": 1})
def cold():
    r = lam.invoke(FunctionName="echo", Payload=b"{}", LogType="Tail")
    return "Init Duration" in base64.b64decode(r["LogResult"]).decode()
seen = [cold(), cold()]
time.sleep(6)
seen.append(cold())
assert seen == [True, False, True], seen
print("OK")
"#;
    run_boto3(&mut server, &registry, work.path(), script);
    assert!(server.stop().success());
}

/// podman with its own storage, configuration and login file under `dir` (the seed's
/// `docker login` / `docker push`, with podman: there is no Docker engine here).
struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn new(dir: &Path) -> Podman {
        std::fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
                dir.display()
            ),
        )
        .expect("storage.conf");
        std::fs::write(
            dir.join("containers.conf"),
            "[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .expect("containers.conf");
        std::fs::write(dir.join("auth.json"), "{}").expect("auth.json");
        Podman {
            dir: dir.to_owned(),
        }
    }

    /// Runs podman with `stdin`; panics with its output unless it succeeds.
    fn ok(&self, args: &[&str], stdin: &str, server: &Server) -> String {
        use std::io::Write as _;
        let mut child = Command::new("podman")
            .args(args)
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("REGISTRY_AUTH_FILE", self.dir.join("auth.json"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("podman");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("stdin");
        let out = child.wait_with_output().expect("podman");
        assert!(
            out.status.success(),
            "podman {args:?}: {}\n--- serve log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Pulls fixture image NAME, tags it `SERVER/REPO_TAG` and pushes it; returns the digest.
    fn push(&self, server: &Server, name: &str, repo_tag: &str) -> String {
        let src = common::oci_ref(name);
        let id = self.ok(&["pull", "-q", &src], "", server);
        let dest = format!("{}/{repo_tag}", server.addr);
        self.ok(&["tag", id.trim(), &dest], "", server);
        let digest_file = self.dir.join("digest");
        self.ok(
            &[
                "push",
                "-q",
                "--tls-verify=false",
                "--digestfile",
                digest_file.to_str().expect("utf-8"),
                &dest,
            ],
            "",
            server,
        );
        std::fs::read_to_string(digest_file)
            .expect("digest file")
            .trim()
            .to_owned()
    }
}

/// The seed's whole path, on one `lambox serve` with registry auth: `aws ecr
/// create-repository` (the seed's flags) → `aws ecr get-login-password | podman login` → push
/// → create-function from the pushed ECR ImageUri → invoke → retag and push another image →
/// the function is unchanged → update-function-code → the new code runs.
#[test]
fn seed_path_login_push_create_invoke_retag_update_on_lambox_own_registry() {
    let data = DataDir::new();
    let server = Server::start(&data, &["--registry-auth"]);
    let work = tempfile::tempdir().expect("tempdir");
    let aws = Aws {
        server: &server,
        dir: work.path().to_owned(),
    };
    let aws_ecr = |args: &[&str]| {
        let out = python(work.path())
            .args(["-m", "awscli", "ecr"])
            .args(args)
            .args(["--endpoint-url", &server.endpoint(), "--output", "json"])
            .output()
            .expect("aws ecr");
        assert!(
            out.status.success(),
            "aws ecr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    aws_ecr(&[
        "create-repository",
        "--repository-name",
        "fn/echo",
        "--image-scanning-configuration",
        "scanOnPush=true",
        "--image-tag-mutability",
        "MUTABLE",
    ]);
    let podman_dir = tempfile::tempdir().expect("tempdir");
    let podman = Podman::new(podman_dir.path());
    let password = aws_ecr(&["get-login-password"]);
    podman.ok(
        &[
            "login",
            "--username",
            "AWS",
            "--password-stdin",
            "--tls-verify=false",
            &server.addr,
        ],
        password.trim(),
        &server,
    );
    let v1 = podman.push(&server, "rust-echo", "fn/echo:v1");

    // An image URI written for AWS, and one naming lambox's own address.
    let ecr_uri = "000000000000.dkr.ecr.us-east-1.amazonaws.com/fn/echo:v1";
    let own_uri = format!("{}/fn/echo:v1", server.addr);
    for (name, uri) in [("ecr", ecr_uri), ("own", own_uri.as_str())] {
        aws.ok(&[
            "create-function",
            "--function-name",
            name,
            "--package-type",
            "Image",
            "--code",
            &format!("ImageUri={uri}"),
            "--role",
            "arn:aws:iam::000000000000:role/x",
        ]);
        let c = wait_active(&aws, name);
        assert_eq!(c["CodeSha256"], v1.trim_start_matches("sha256:"), "{c}");
    }
    let f = aws.ok(&["get-function", "--function-name", "ecr"]);
    assert_eq!(f["Code"]["ImageUri"], ecr_uri);
    assert_eq!(
        f["Code"]["ResolvedImageUri"],
        format!("000000000000.dkr.ecr.us-east-1.amazonaws.com/fn/echo@{v1}")
    );
    let out = work.path().join("out.json");
    let out = out.to_str().expect("utf-8");
    let invoke = |name: &str| {
        let r = aws.ok(&[
            "invoke",
            "--function-name",
            name,
            "--payload",
            r#"{"hi":1}"#,
            out,
        ]);
        assert_eq!(r["StatusCode"], 200, "{r}");
        std::fs::read_to_string(out).expect("out")
    };
    assert_eq!(invoke("ecr"), r#"{"hi":1}"#);
    assert_eq!(invoke("own"), r#"{"hi":1}"#);

    // A digest reference works too.
    aws.ok(&[
        "create-function",
        "--function-name",
        "bydigest",
        "--package-type",
        "Image",
        "--code",
        &format!("ImageUri=000000000000.dkr.ecr.us-east-1.amazonaws.com/fn/echo@{v1}"),
        "--role",
        "arn:aws:iam::000000000000:role/x",
    ]);
    wait_active(&aws, "bydigest");
    assert_eq!(invoke("bydigest"), r#"{"hi":1}"#);

    // Another image pushed to the same tag changes nothing until UpdateFunctionCode.
    let v2 = podman.push(&server, "hello-python", "fn/echo:v1");
    assert_ne!(v1, v2);
    let c = aws.ok(&["get-function-configuration", "--function-name", "ecr"]);
    assert_eq!(c["CodeSha256"], v1.trim_start_matches("sha256:"));
    assert_eq!(invoke("ecr"), r#"{"hi":1}"#);
    aws.ok(&[
        "update-function-code",
        "--function-name",
        "ecr",
        "--image-uri",
        ecr_uri,
    ]);
    let c = wait_active(&aws, "ecr");
    assert_eq!(c["CodeSha256"], v2.trim_start_matches("sha256:"), "{c}");
    // The new code runs: hello-python's answer, not the echo.
    let answer: Value = serde_json::from_str(&invoke("ecr")).expect("JSON");
    assert_eq!(answer["body"], "hello from lambox", "{answer}");
    let own = aws.ok(&["get-function-configuration", "--function-name", "own"]);
    assert_eq!(own["CodeSha256"], v1.trim_start_matches("sha256:"));
    // Every resolution (ecr, own, bydigest, the update) took the store path, not HTTP.
    assert_eq!(
        server
            .log_text()
            .matches("image from lambox's own registry")
            .count(),
        4,
        "{}",
        server.log_text()
    );
}

#[test]
fn a_function_whose_image_left_the_store_turns_failed_with_image_deleted() {
    let registry = Registry::start();
    registry.push(&oci("rust-echo").display().to_string(), "fn/echo:v1", None);
    let data = DataDir::new();
    let mut server = Server::start(&data, &[]);
    let work = tempfile::tempdir().expect("tempdir");
    let image = registry.reference("fn/echo:v1");
    let digest = {
        let aws = Aws {
            server: &server,
            dir: work.path().to_owned(),
        };
        aws.ok(&[
            "create-function",
            "--function-name",
            "echo",
            "--package-type",
            "Image",
            "--code",
            &format!("ImageUri={image}"),
            "--role",
            "arn:aws:iam::000000000000:role/x",
            "--publish",
        ]);
        let c = wait_active(&aws, "echo");
        c["CodeSha256"].as_str().expect("CodeSha256").to_owned()
    };
    assert!(server.stop().success());
    common::run_ok(data.lambox().args(["rmi", &format!("sha256:{digest}")]));

    let server = Server::start(&data, &[]);
    let aws = Aws {
        server: &server,
        dir: work.path().to_owned(),
    };
    let out = work.path().join("out.json");
    let out = out.to_str().expect("utf-8");
    for q in ["$LATEST", "1"] {
        let e = aws.fails(&["invoke", "--function-name", "echo", "--qualifier", q, out]);
        assert!(
            e.contains("ResourceConflictException") && e.contains("Failed"),
            "{q}: {e}"
        );
        let c = aws.ok(&[
            "get-function-configuration",
            "--function-name",
            "echo",
            "--qualifier",
            q,
        ]);
        assert_eq!(c["State"], "Failed", "{q}: {c}");
        assert_eq!(c["StateReasonCode"], "ImageDeleted", "{q}: {c}");
        assert!(
            c["StateReason"].as_str().unwrap_or("").contains("fn/echo"),
            "{c}"
        );
    }
    assert!(!server.log_text().contains("ServiceException"));

    // UpdateFunctionCode brings the image back: $LATEST is Active again and runs.
    aws.ok(&[
        "update-function-code",
        "--function-name",
        "echo",
        "--image-uri",
        &image,
    ]);
    let c = wait_active(&aws, "echo");
    assert_eq!(c["State"], "Active");
    let r = aws.ok(&["invoke", "--function-name", "echo", "--payload", "{}", out]);
    assert_eq!(r["StatusCode"], 200, "{r}");
}

#[test]
fn aws_cli_weighted_alias_update_and_list_aliases_with_filter_and_pages() {
    let registry = Registry::start();
    registry.push(&oci("rust-echo").display().to_string(), "fn/echo:v1", None);
    let image = registry.reference("fn/echo:v1");
    let data = DataDir::new();
    let server = Server::start(&data, &["--network", "none"]);
    let work = tempfile::tempdir().expect("tempdir");
    let aws = Aws {
        server: &server,
        dir: work.path().to_owned(),
    };
    aws.ok(&[
        "create-function",
        "--function-name",
        "w",
        "--package-type",
        "Image",
        "--code",
        &format!("ImageUri={image}"),
        "--role",
        "arn:aws:iam::000000000000:role/x",
    ]);
    wait_active(&aws, "w");
    aws.ok(&["publish-version", "--function-name", "w"]);
    aws.ok(&[
        "update-function-configuration",
        "--function-name",
        "w",
        "--timeout",
        "4",
    ]);
    wait_active(&aws, "w");
    let v = aws.ok(&["publish-version", "--function-name", "w"]);
    assert_eq!(v["Version"], "2");

    let a = aws.ok(&[
        "create-alias",
        "--function-name",
        "w",
        "--name",
        "canary",
        "--function-version",
        "1",
        "--routing-config",
        r#"{"AdditionalVersionWeights": {"2": 1.0}}"#,
    ]);
    assert_eq!(a["RoutingConfig"]["AdditionalVersionWeights"]["2"], 1.0);
    for name in ["one", "two"] {
        aws.ok(&[
            "create-alias",
            "--function-name",
            "w",
            "--name",
            name,
            "--function-version",
            "1",
        ]);
    }
    let out = work.path().join("out.json");
    let r = aws.ok(&[
        "invoke",
        "--function-name",
        "w:canary",
        "--payload",
        "{}",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        r["ExecutedVersion"], "2",
        "weight 1.0 runs the additional version"
    );

    // UpdateAlias: a new weight, then a new FunctionVersion without routing.
    let u = aws.ok(&[
        "update-alias",
        "--function-name",
        "w",
        "--name",
        "canary",
        "--routing-config",
        r#"{"AdditionalVersionWeights": {"2": 0.0}}"#,
    ]);
    assert_eq!(u["RoutingConfig"]["AdditionalVersionWeights"]["2"], 0.0);
    let r = aws.ok(&[
        "invoke",
        "--function-name",
        "w:canary",
        "--payload",
        "{}",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        r["ExecutedVersion"], "1",
        "weight 0.0 runs the alias's own version"
    );
    let err = aws.fails(&[
        "update-alias",
        "--function-name",
        "w",
        "--name",
        "canary",
        "--function-version",
        "$LATEST",
    ]);
    assert!(
        err.contains("InvalidParameterValueException") && err.contains("$LATEST is not supported"),
        "{err}"
    );

    // ListAliases: the CLI follows NextMarker with one alias per page; FunctionVersion filters.
    let names = |v: &Value| -> Vec<String> {
        v["Aliases"]
            .as_array()
            .expect("Aliases")
            .iter()
            .filter_map(|a| a["Name"].as_str().map(str::to_owned))
            .collect()
    };
    let all = aws.ok(&["list-aliases", "--function-name", "w", "--page-size", "1"]);
    assert_eq!(names(&all), ["canary", "one", "two"]);
    let first = aws.ok(&["list-aliases", "--function-name", "w", "--max-items", "2"]);
    assert_eq!(names(&first), ["canary", "one"]);
    let token = first["NextToken"].as_str().expect("NextToken").to_owned();
    let rest = aws.ok(&[
        "list-aliases",
        "--function-name",
        "w",
        "--starting-token",
        &token,
    ]);
    assert_eq!(names(&rest), ["two"]);
    let v2 = aws.ok(&[
        "list-aliases",
        "--function-name",
        "w",
        "--function-version",
        "2",
    ]);
    assert_eq!(names(&v2), ["canary"]);
    aws.ok(&[
        "update-alias",
        "--function-name",
        "w",
        "--name",
        "canary",
        "--routing-config",
        r#"{"AdditionalVersionWeights": {}}"#,
    ]);
    let v2 = aws.ok(&[
        "list-aliases",
        "--function-name",
        "w",
        "--function-version",
        "2",
    ]);
    assert_eq!(names(&v2), Vec::<String>::new());
    aws.ok(&[
        "delete-function",
        "--function-name",
        "w",
        "--qualifier",
        "2",
    ]);
}

/// A registry holding rust-echo as `fn/echo:v1`, a `lambox serve` (with `args`) on a new data
/// directory, and function NAME created from that image with boto3 and Active.
fn echo_function(name: &str, args: &[&str]) -> (Registry, DataDir, Server, tempfile::TempDir) {
    let registry = Registry::start();
    registry.push(&oci("rust-echo").display().to_string(), "fn/echo:v1", None);
    let data = DataDir::new();
    let mut server = Server::start(&data, args);
    let work = tempfile::tempdir().expect("tempdir");
    let script = format!(
        r#"
import sys, boto3
lam = boto3.client("lambda", endpoint_url=sys.argv[1])
lam.create_function(FunctionName="{name}", PackageType="Image", Role="arn:aws:iam::000000000000:role/x",
                    Code={{"ImageUri": sys.argv[2] + "/fn/echo:v1"}})
lam.get_waiter("function_active_v2").wait(FunctionName="{name}", WaiterConfig={{"Delay": 1}})
print("OK")
"#
    );
    run_boto3(&mut server, &registry, work.path(), &script);
    (registry, data, server, work)
}

/// Waits (≤ 60 s) until `function` has `n` events and all succeeded; returns them.
fn wait_events_succeeded(server: &Server, function: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = events_json(server, function, false);
        if events.len() == n && events.iter().all(|e| e["Status"] == "succeeded") {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "events of {function} not all run: {events:?}\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn concurrent_first_invokes_and_events_of_a_fresh_function_all_run() {
    // Every invoke below is a first invoke of the version: no pool exists yet, so they all
    // build one at once. Exactly one pool must survive and serve them all (a lost race used
    // to shut down the pool an invoke was already queued on: a 500 for a sync invoke, an
    // event left pending until the next restart).
    let (registry, _data, mut server, work) = echo_function("burst", &[]);
    let script = r#"
import json, sys, threading, boto3
N = 4
gate = threading.Barrier(2 * N)
results = {}
def call(i, kind):
    c = boto3.client("lambda", endpoint_url=sys.argv[1])
    gate.wait()
    r = c.invoke(FunctionName="burst", InvocationType=kind, Payload=json.dumps({"i": i}).encode())
    results[(kind, i)] = (r["StatusCode"], r.get("FunctionError"), r["Payload"].read())
threads = [threading.Thread(target=call, args=(i, k)) for i in range(N) for k in ("RequestResponse", "Event")]
for t in threads: t.start()
for t in threads: t.join()
for i in range(N):
    assert results[("RequestResponse", i)][:2] == (200, None), results
    assert json.loads(results[("RequestResponse", i)][2]) == {"i": i}, results
    assert results[("Event", i)][0] == 202, results
print("OK")
"#;
    run_boto3(&mut server, &registry, work.path(), script);
    wait_events_succeeded(&server, "burst", 4);
    assert!(server.stop().success());
}

#[test]
fn events_of_one_function_run_at_most_async_concurrency_at_once() {
    let (registry, _data, mut server, work) = echo_function("gated", &["--async-concurrency", "2"]);
    let script = r#"
import json, sys, boto3
lam = boto3.client("lambda", endpoint_url=sys.argv[1])
for i in range(6):
    r = lam.invoke(FunctionName="gated", InvocationType="Event", Payload=json.dumps({"sleep_ms": 800, "i": i}).encode())
    assert r["StatusCode"] == 202, r
print("OK")
"#;
    run_boto3(&mut server, &registry, work.path(), script);
    let events = wait_events_succeeded(&server, "gated", 6);
    // Six events of 0.8 s sent at once, at most two running at a time: at least 2.4 s from
    // the first received to the last finished (at once, all six would take about 0.8 s).
    let ms = |e: &Value, k: &str| e[k].as_u64().unwrap_or_else(|| panic!("{k} in {e}"));
    let first = events
        .iter()
        .map(|e| ms(e, "ReceivedMs"))
        .min()
        .expect("events");
    let last = events
        .iter()
        .map(|e| ms(e, "FinishedMs"))
        .max()
        .expect("events");
    assert!(
        last - first >= 2400,
        "ran in {} ms: {events:?}",
        last - first
    );
    // And fewer environments than events: a gate slot is free again as soon as a response
    // is back, a moment before its environment is idle again, so a third may start.
    let log = server.log_text();
    let cold = log
        .lines()
        .filter(|l| l.starts_with("REPORT") && l.contains("Init Duration"))
        .count();
    assert!((2..=4).contains(&cold), "{cold} cold starts:\n{log}");
    assert!(server.stop().success());
}

#[test]
fn an_event_stored_while_its_client_hangs_up_still_runs() {
    use std::io::Write as _;
    let (_registry, _data, mut server, _work) = echo_function("hangup", &[]);
    // Each client sends a whole Event invoke and closes its socket at once, without waiting
    // for the 202: hyper then drops the request while the event is being stored. Whatever
    // was stored must run now (it used to stay pending until the next restart).
    let body = br#"{"hello":"world"}"#;
    for _ in 0..100 {
        let mut s = std::net::TcpStream::connect(&server.addr).expect("connect");
        write!(
            s,
            "POST /2015-03-31/functions/hangup/invocations HTTP/1.1\r\nHost: {}\r\nX-Amz-Invocation-Type: Event\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            server.addr,
            body.len()
        )
        .expect("write head");
        s.write_all(body).expect("write body");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = match http_get(&server.addr, "/health") {
            Ok((200, body)) => serde_json::from_str::<Value>(&body).expect("JSON"),
            other => panic!("/health: {other:?}\n{}", server.log_text()),
        };
        if health["pending_events"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stored events left pending: {health}\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let events = events_json(&server, "hangup", false);
    assert!(!events.is_empty(), "no event was stored at all");
    assert!(
        events.iter().all(|e| e["Status"] == "succeeded"),
        "{events:?}"
    );
    assert!(server.stop().success());
}
