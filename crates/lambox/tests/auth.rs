//! `lambox serve --auth sigv4` end to end: the real binary with keys from its config file and
//! from `LAMBOX_AUTH_KEYS`, the real AWS CLI and boto3 (botocore's own SigV4 signer) from the
//! fixture cache, `--network none`. Accepted: the right key (Lambda API, ECR API, registry token
//! on `/v2/`). Refused with AWS's error types: a wrong secret, an unknown key, a request signed
//! 20 minutes ago or ahead, a body changed after signing, no Authorization header. Without
//! `--auth` any credentials work. Functions never see the server's keys.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{aws_python, free_port, http_get, oci_ref, DataDir, Server};
use serde_json::Value;

const FILE_KEY: &str = "AKIDLAMBOXFILE";
const FILE_SECRET: &str = "file-secret-9f2c7e1d0b";
const ENV_KEY: &str = "AKIDLAMBOXENV";
const ENV_SECRET: &str = "env-secret-4a8b6d3e21";

/// `lambox serve --network none` on a free port with `args`, `env` added; waits for /health.
fn serve(data: &DataDir, args: &[&str], env: &[(&str, &str)]) -> (Server, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = data.lambox();
    cmd.args(["serve", "--network", "none", "--listen", &addr])
        .args(args)
        .env("LAMBOX_LOG", "info")
        .env_remove("LAMBOX_AUTH")
        .env_remove("LAMBOX_AUTH_KEYS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let server = Server::spawn(cmd, data.path().join("serve.log"), &addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(http_get(&addr, "/health"), Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "no /health: {}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, format!("http://{addr}"))
}

/// `python3 -m awscli SERVICE ARGS --endpoint-url … --output json` with the given key.
fn aws(cwd: &Path, endpoint: &str, key: (&str, &str), args: &[&str]) -> Output {
    aws_python(cwd, key.0, key.1)
        .args(["-m", "awscli"])
        .args(args)
        .args(["--endpoint-url", endpoint, "--output", "json"])
        .output()
        .expect("run python3 -m awscli")
}

fn ok_json(out: &Output, what: &str, server: &Server) -> Value {
    assert!(
        out.status.success(),
        "{what} failed: {}\n--- serve log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
    }
}

fn failure(out: &Output, what: &str) -> String {
    assert!(!out.status.success(), "{what} should have been refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// boto3/botocore and plain HTTP against the server: each case's observed status, error code
/// and message, as JSON.
const PROBES: &str = r#"
import base64, datetime, json, sys, urllib.request, urllib.error
import boto3, botocore.auth, botocore.exceptions
from botocore.config import Config

endpoint, key, secret, function = sys.argv[1:5]
cfg = Config(retries={"max_attempts": 1}, connect_timeout=10, read_timeout=120)
def client(service, k=key, s=secret):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=k, aws_secret_access_key=s, config=cfg)

def outcome(call):
    try:
        r = call()
        return {"ok": True, "status": r["ResponseMetadata"]["HTTPStatusCode"]}
    except botocore.exceptions.ClientError as e:
        return {"ok": False, "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
                "code": e.response["Error"]["Code"], "message": e.response["Error"]["Message"]}

def raw(method, path, headers=None, body=None):
    req = urllib.request.Request(endpoint + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return {"status": r.status, "type": r.headers.get("x-amzn-ErrorType"), "body": r.read().decode()}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "type": e.headers.get("x-amzn-ErrorType"), "body": e.read().decode()}

out = {}
lam = client("lambda")
out["right_key"] = outcome(lambda: lam.get_function(FunctionName=function))
out["invoke"] = outcome(lambda: lam.invoke(FunctionName=function, Payload=b'{"hello":1}'))
# Signed, over the 6 MB sync limit: the signature is fine, the size is not.
big = b'"' + b"a" * (7 * 1024 * 1024) + b'"'
out["too_large"] = outcome(lambda: lam.invoke(FunctionName=function, Payload=big))
out["wrong_secret"] = outcome(lambda: client("lambda", s="not-the-secret").list_functions())
out["unknown_key"] = outcome(lambda: client("lambda", k="AKIDNOBODY").list_functions())

# botocore signs with the time it is told: 20 minutes ago, then 20 minutes ahead.
real_now = botocore.auth.get_current_datetime
for name, minutes in (("signed_20_min_ago", -20), ("signed_20_min_ahead", 20)):
    botocore.auth.get_current_datetime = lambda m=minutes: real_now() + datetime.timedelta(minutes=m)
    out[name] = outcome(lambda: client("lambda").list_functions())
botocore.auth.get_current_datetime = real_now

# A body changed after botocore signed it (same length, so only the signature can tell).
tampered = client("lambda")
def tamper(request, **kwargs):
    request.body = request.body.replace(b'"hello": 1', b'"hello": 2')
tampered.meta.events.register("before-send.lambda.Invoke", tamper)
out["tampered_body"] = outcome(lambda: tampered.invoke(FunctionName=function, Payload=b'{"hello": 1}'))

out["no_auth_lambda"] = raw("GET", "/2015-03-31/functions/")
out["no_auth_unknown_path"] = raw("GET", "/nothing/here")
out["no_auth_big_invoke"] = raw("POST", "/2015-03-31/functions/" + function + "/invocations", body=big)
out["malformed_header"] = raw("GET", "/2015-03-31/functions/", {"Authorization": "AWS4-HMAC-SHA256 Credential=x"})
out["presigned"] = raw("GET", "/2015-03-31/functions/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=00")
out["health"] = raw("GET", "/health")
out["no_auth_ecr"] = raw("POST", "/", {"X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories",
                                       "Content-Type": "application/x-amz-json-1.1"}, b"{}")

ecr = client("ecr")
out["ecr_right_key"] = outcome(lambda: ecr.describe_repositories())
out["ecr_unknown_key"] = outcome(lambda: client("ecr", k="AKIDNOBODY").describe_repositories())
out["ecr_wrong_secret"] = outcome(lambda: client("ecr", s="nope").describe_repositories())
token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
out["v2_without_token"] = raw("GET", "/v2/")
out["v2_with_token"] = raw("GET", "/v2/", {"Authorization": "Basic " + token})
print(json.dumps(out))
"#;

fn probes(cwd: &Path, endpoint: &str, key: (&str, &str), function: &str) -> Value {
    let out = aws_python(cwd, "unused", "unused")
        .args(["-c", PROBES, endpoint, key.0, key.1, function])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "probes failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("probes JSON")
}

fn assert_refused(v: &Value, case: &str, code: &str, message_start: &str) {
    let c = &v[case];
    assert_eq!(c["ok"], false, "{case}: {c}");
    assert_eq!(c["status"], 403, "{case}: {c}");
    assert_eq!(c["code"], code, "{case}: {c}");
    let m = c["message"].as_str().unwrap_or_default();
    assert!(m.starts_with(message_start), "{case}: {c}");
}

fn assert_raw(v: &Value, case: &str, status: u16, code: &str, message: &str) -> Value {
    let c = &v[case];
    assert_eq!(c["status"], status, "{case}: {c}");
    assert_eq!(c["type"], code, "{case}: {c}");
    let body: Value = serde_json::from_str(c["body"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{case}: body not JSON ({e}): {c}"));
    let got = body
        .get("message")
        .or_else(|| body.get("Message"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(got.starts_with(message), "{case}: {c}");
    body
}

const MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
const INVALID_TOKEN: &str = "The security token included in the request is invalid.";

#[test]
fn sigv4_accepts_the_configured_keys_and_refuses_the_rest_as_aws() {
    let data = DataDir::new();
    let config = data.path().join("lambox.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nmode = \"sigv4\"\n[[auth.keys]]\naccess_key_id = \"{FILE_KEY}\"\nsecret_access_key = \"{FILE_SECRET}\"\n"
        ),
    )
    .expect("write config");
    let config = config.to_str().expect("utf-8").to_owned();
    let (server, endpoint) = serve(
        &data,
        &["--config", &config],
        &[("LAMBOX_AUTH_KEYS", &format!("{ENV_KEY}:{ENV_SECRET}"))],
    );
    let log = server.log_text();
    assert!(
        log.contains("need AWS Signature V4") && log.contains(FILE_KEY) && log.contains(ENV_KEY),
        "{log}"
    );
    let work = tempfile::tempdir().expect("tempdir");
    let cwd = work.path();
    let file_key = (FILE_KEY, FILE_SECRET);

    // The aws CLI with the file's key: create, wait, invoke.
    let image = format!("ImageUri={}", oci_ref("probe-python"));
    let created = aws(
        cwd,
        &endpoint,
        file_key,
        &[
            "lambda",
            "create-function",
            "--function-name",
            "probe",
            "--package-type",
            "Image",
            "--code",
            &image,
            "--role",
            "arn:aws:iam::000000000000:role/x",
            "--timeout",
            "30",
        ],
    );
    assert_eq!(
        ok_json(&created, "create-function", &server)["State"],
        "Pending"
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let c = ok_json(
            &aws(
                cwd,
                &endpoint,
                file_key,
                &[
                    "lambda",
                    "get-function-configuration",
                    "--function-name",
                    "probe",
                ],
            ),
            "get-function-configuration",
            &server,
        );
        if c["State"] == "Active" {
            break;
        }
        assert_eq!(c["State"], "Pending", "{c}\n{}", server.log_text());
        assert!(Instant::now() < deadline, "probe still {c}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The environment's key works as well; the probe reports its environment.
    let report = cwd.join("report.json");
    let r = ok_json(
        &aws(
            cwd,
            &endpoint,
            (ENV_KEY, ENV_SECRET),
            &[
                "lambda",
                "invoke",
                "--function-name",
                "probe",
                "--payload",
                "{}",
                report.to_str().expect("utf-8"),
            ],
        ),
        "invoke",
        &server,
    );
    assert_eq!(r["StatusCode"], 200, "{r}");
    assert!(r.get("FunctionError").is_none(), "{r}");
    let report_text = std::fs::read_to_string(&report).expect("report");
    let seen: Value = serde_json::from_str(&report_text).expect("report JSON");
    let env = seen["env"].as_object().expect("the probe reports env");
    assert!(env.contains_key("AWS_LAMBDA_FUNCTION_NAME"), "{env:?}");
    // Function code never sees the server's keys: not in any variable, under any name.
    for secret in [FILE_SECRET, ENV_SECRET, FILE_KEY, ENV_KEY] {
        assert!(
            !report_text.contains(secret),
            "{secret} leaked: {report_text}"
        );
    }
    assert!(!env.contains_key("LAMBOX_AUTH_KEYS"), "{env:?}");

    // The aws CLI refused: a wrong secret, an unknown key.
    let e = failure(
        &aws(
            cwd,
            &endpoint,
            (FILE_KEY, "wrong-secret"),
            &["lambda", "list-functions"],
        ),
        "wrong secret",
    );
    assert!(
        e.contains("(InvalidSignatureException)") && e.contains(MISMATCH),
        "{e}"
    );
    let e = failure(
        &aws(
            cwd,
            &endpoint,
            ("AKIDNOBODY", FILE_SECRET),
            &["lambda", "list-functions"],
        ),
        "unknown key",
    );
    assert!(
        e.contains("(UnrecognizedClientException)") && e.contains(INVALID_TOKEN),
        "{e}"
    );

    // ECR through the aws CLI: the right key works, a wrong one does not.
    ok_json(
        &aws(
            cwd,
            &endpoint,
            file_key,
            &["ecr", "create-repository", "--repository-name", "fn/probe"],
        ),
        "ecr create-repository",
        &server,
    );
    let repos = ok_json(
        &aws(cwd, &endpoint, file_key, &["ecr", "describe-repositories"]),
        "ecr describe-repositories",
        &server,
    );
    assert_eq!(repos["repositories"][0]["repositoryName"], "fn/probe");
    let e = failure(
        &aws(
            cwd,
            &endpoint,
            (FILE_KEY, "nope"),
            &["ecr", "describe-repositories"],
        ),
        "ecr wrong secret",
    );
    assert!(e.contains("(InvalidSignatureException)"), "{e}");
    let password = aws(cwd, &endpoint, file_key, &["ecr", "get-login-password"]);
    assert!(
        password.status.success(),
        "{}",
        String::from_utf8_lossy(&password.stderr)
    );
    assert!(!String::from_utf8_lossy(&password.stdout).trim().is_empty());

    // boto3 and plain HTTP.
    let v = probes(cwd, &endpoint, file_key, "probe");
    assert_eq!(v["right_key"]["ok"], true, "{v}");
    assert_eq!(v["invoke"]["status"], 200, "{v}");
    let big = &v["too_large"];
    assert_eq!(big["status"], 413, "{big}");
    assert_eq!(big["code"], "RequestTooLargeException", "{big}");
    assert_refused(&v, "wrong_secret", "InvalidSignatureException", MISMATCH);
    assert_refused(
        &v,
        "unknown_key",
        "UnrecognizedClientException",
        INVALID_TOKEN,
    );
    assert_refused(
        &v,
        "signed_20_min_ago",
        "InvalidSignatureException",
        "Signature expired: ",
    );
    assert!(
        v["signed_20_min_ago"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(" is now earlier than ") && m.ends_with(" - 15 min.)")),
        "{v}"
    );
    assert_refused(
        &v,
        "signed_20_min_ahead",
        "InvalidSignatureException",
        "Signature not yet current: ",
    );
    assert_refused(&v, "tampered_body", "InvalidSignatureException", MISMATCH);
    let body = assert_raw(
        &v,
        "no_auth_lambda",
        403,
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    );
    assert_eq!(body["Type"], "User");
    assert_raw(
        &v,
        "no_auth_unknown_path",
        403,
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    );
    // Auth is checked before the payload's size.
    assert_raw(
        &v,
        "no_auth_big_invoke",
        403,
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    );
    assert_raw(
        &v,
        "malformed_header",
        403,
        "IncompleteSignatureException",
        "Authorization header requires 'Signature' parameter.",
    );
    assert_raw(
        &v,
        "presigned",
        403,
        "IncompleteSignatureException",
        "Presigned",
    );
    assert_eq!(v["health"]["status"], 200, "{v}");
    let ecr = assert_raw(
        &v,
        "no_auth_ecr",
        403,
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    );
    assert_eq!(ecr["__type"], "MissingAuthenticationTokenException");
    assert_eq!(v["ecr_right_key"]["ok"], true, "{v}");
    assert_refused(
        &v,
        "ecr_unknown_key",
        "UnrecognizedClientException",
        INVALID_TOKEN,
    );
    assert_refused(
        &v,
        "ecr_wrong_secret",
        "InvalidSignatureException",
        MISMATCH,
    );
    // `--auth sigv4` turns the registry's token auth on.
    assert_eq!(v["v2_without_token"]["status"], 401, "{v}");
    assert_eq!(v["v2_with_token"]["status"], 200, "{v}");

    // lambox's own clients sign with the key in their environment: the Lambda API (invoke,
    // functions) and the CloudWatch Logs API (logs) both accept the right key and refuse a
    // wrong secret with AWS's error, on one line.
    let client = |key: (&str, &str), args: &[&str]| {
        let out = data
            .lambox()
            .args(args)
            .args(["--endpoint", &endpoint])
            .env("AWS_ACCESS_KEY_ID", key.0)
            .env("AWS_SECRET_ACCESS_KEY", key.1)
            .env("AWS_REGION", "us-east-1")
            .output()
            .expect("run lambox client");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for args in [
        &["invoke", "probe", "--payload", "{}"][..],
        &["functions"][..],
        &["logs", "probe", "--since", "all"][..],
    ] {
        let (ok, stdout, stderr) = client(file_key, args);
        assert!(ok, "lambox {args:?} with the right key: {stderr}");
        assert!(!stdout.is_empty(), "lambox {args:?}: no output");
        let (ok, _, stderr) = client((FILE_KEY, "not-the-secret"), args);
        assert!(!ok, "lambox {args:?} with a wrong secret succeeded");
        assert!(
            stderr.contains("InvalidSignatureException") && stderr.trim().lines().count() == 1,
            "lambox {args:?} with a wrong secret: {stderr}"
        );
    }

    // Secrets never reach the log.
    let log = server.log_text();
    for secret in [FILE_SECRET, ENV_SECRET] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    assert!(log.contains("request refused"), "{log}");
}

#[test]
fn without_auth_any_credentials_work_and_sigv4_needs_keys() {
    let data = DataDir::new();
    let (server, endpoint) = serve(&data, &[], &[]);
    assert!(
        server
            .log_text()
            .contains("requests are not authenticated: any credentials are accepted"),
        "{}",
        server.log_text()
    );
    let work = tempfile::tempdir().expect("tempdir");
    for key in [("anything", "at-all"), ("AKIDNOBODY", "wrong")] {
        let fns = ok_json(
            &aws(work.path(), &endpoint, key, &["lambda", "list-functions"]),
            "list-functions",
            &server,
        );
        assert_eq!(fns["Functions"], Value::Array(Vec::new()));
        ok_json(
            &aws(
                work.path(),
                &endpoint,
                key,
                &["ecr", "describe-repositories"],
            ),
            "ecr describe-repositories",
            &server,
        );
    }
    drop(server);

    // --auth sigv4 without a key, and a malformed key: one-line errors that show no secret.
    for (args, env, expect) in [
        (
            vec!["--auth", "sigv4"],
            vec![],
            "needs at least one access key",
        ),
        (
            vec!["--auth", "sigv4"],
            vec![("LAMBOX_AUTH_KEYS", "AKIDONLY-no-colon-topsecret")],
            "not ACCESS_KEY_ID:SECRET",
        ),
    ] {
        let mut cmd = data.lambox();
        cmd.args(["serve", "--network", "none", "--listen", "127.0.0.1:1"])
            .args(&args)
            .env_remove("LAMBOX_AUTH")
            .env_remove("LAMBOX_AUTH_KEYS");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out: Output = cmd.output().expect("run lambox serve");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!err.contains("topsecret"), "{err}");
    }
}
