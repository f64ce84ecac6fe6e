//! ECR's control API with the real aws CLI (v1, `python3 -m awscli` from the fixture cache's
//! `pip/aws`, installed by scripts/build-fixtures.sh), on the same port as the /v2/ API.

mod common;

use common::{fixture_image, Server};

/// Run `aws ecr ARGS… --endpoint-url http://ADDR`; returns (success, stdout, stderr).
async fn aws(s: &Server, args: &[&str]) -> (bool, String, String) {
    let pythonpath = fixture_image("busybox").join("../../pip/aws");
    assert!(
        pythonpath.join("awscli").is_dir(),
        "{} has no awscli (scripts/build-fixtures.sh installs it)",
        pythonpath.display()
    );
    let out = tokio::process::Command::new("python3")
        .args(["-m", "awscli", "ecr"])
        .env("PYTHONPATH", pythonpath)
        .args(args)
        .args(["--endpoint-url", &s.url(""), "--output", "json"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_PAGER", "")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("cannot run python3 -m awscli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn aws_ok(s: &Server, args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = aws(s, args).await;
    assert!(ok, "aws ecr {}: {err}", args.join(" "));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

async fn aws_err(s: &Server, args: &[&str], code: &str) {
    let (ok, out, err) = aws(s, args).await;
    assert!(!ok, "aws ecr {} should fail: {out}", args.join(" "));
    assert!(
        err.contains(code),
        "aws ecr {}: want {code}, got {err}",
        args.join(" ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_workflows_ecr_commands() {
    let s = Server::start().await;
    // The seed's command, as written.
    let v = aws_ok(
        &s,
        &[
            "create-repository",
            "--repository-name",
            "hello-world",
            "--image-scanning-configuration",
            "scanOnPush=true",
            "--image-tag-mutability",
            "MUTABLE",
        ],
    )
    .await;
    let repo = &v["repository"];
    assert_eq!(repo["repositoryName"], "hello-world");
    assert_eq!(repo["repositoryUri"], format!("{}/hello-world", s.addr));
    assert_eq!(
        repo["repositoryArn"],
        "arn:aws:ecr:us-east-1:000000000000:repository/hello-world"
    );
    assert_eq!(repo["imageScanningConfiguration"]["scanOnPush"], true);
    assert_eq!(repo["imageTagMutability"], "MUTABLE");
    aws_err(
        &s,
        &["create-repository", "--repository-name", "hello-world"],
        "RepositoryAlreadyExistsException",
    )
    .await;
    aws_err(
        &s,
        &["create-repository", "--repository-name", "Hello_World"],
        "InvalidParameterException",
    )
    .await;
    aws_err(
        &s,
        &["describe-repositories", "--repository-names", "nope"],
        "RepositoryNotFoundException",
    )
    .await;
    let v = aws_ok(&s, &["describe-repositories"]).await;
    assert_eq!(v["repositories"].as_array().expect("list").len(), 1);

    // Push to the repositoryUri, then list.
    let digestfile = s.dir.path().join("pushed.digest");
    let out = tokio::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false", "--digestfile"])
        .arg(&digestfile)
        .arg(format!(
            "oci:{}:latest",
            fixture_image("busybox").join("oci").display()
        ))
        .arg(format!("docker://{}/hello-world:latest", s.addr))
        .output()
        .await
        .expect("skopeo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed = std::fs::read_to_string(&digestfile).expect("digest");
    let v = aws_ok(&s, &["list-images", "--repository-name", "hello-world"]).await;
    assert_eq!(
        v["imageIds"],
        serde_json::json!([{ "imageDigest": pushed.trim(), "imageTag": "latest" }])
    );

    let v = aws_ok(&s, &["describe-images", "--repository-name", "hello-world"]).await;
    let d = &v["imageDetails"][0];
    assert_eq!(d["imageDigest"], pushed.trim());
    assert_eq!(d["imageTags"], serde_json::json!(["latest"]));
    assert_eq!(
        d["imageManifestMediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let manifest = common::client()
        .get(s.url(&format!("/v2/hello-world/manifests/{}", pushed.trim())))
        .send()
        .await
        .expect("manifest")
        .text()
        .await
        .expect("body");
    let m: serde_json::Value = serde_json::from_str(&manifest).expect("json");
    let layers: u64 = m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["size"].as_u64().expect("size"))
        .sum();
    assert_eq!(d["imageSizeInBytes"], layers);
    aws_err(
        &s,
        &[
            "describe-images",
            "--repository-name",
            "hello-world",
            "--image-ids",
            "imageTag=nope",
        ],
        "ImageNotFoundException",
    )
    .await;
    let v = aws_ok(
        &s,
        &[
            "batch-get-image",
            "--repository-name",
            "hello-world",
            "--image-ids",
            "imageTag=latest",
            "imageTag=nope",
        ],
    )
    .await;
    assert_eq!(
        v["images"][0]["imageManifest"], manifest,
        "the manifest as pushed"
    );
    assert_eq!(v["images"][0]["imageId"]["imageDigest"], pushed.trim());
    assert_eq!(v["failures"][0]["failureCode"], "ImageNotFound");

    aws_err(
        &s,
        &["delete-repository", "--repository-name", "hello-world"],
        "RepositoryNotEmptyException",
    )
    .await;
    // A second tag, then delete by tag: the image stays until its last tag goes.
    let put = common::client()
        .put(s.url("/v2/hello-world/manifests/v2"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 201);
    let v = aws_ok(
        &s,
        &[
            "batch-delete-image",
            "--repository-name",
            "hello-world",
            "--image-ids",
            "imageTag=latest",
        ],
    )
    .await;
    assert_eq!(v["imageIds"][0]["imageDigest"], pushed.trim());
    let v = aws_ok(&s, &["list-images", "--repository-name", "hello-world"]).await;
    assert_eq!(
        v["imageIds"],
        serde_json::json!([{ "imageDigest": pushed.trim(), "imageTag": "v2" }])
    );
    aws_ok(
        &s,
        &[
            "batch-delete-image",
            "--repository-name",
            "hello-world",
            "--image-ids",
            "imageTag=v2",
        ],
    )
    .await;
    let v = aws_ok(&s, &["list-images", "--repository-name", "hello-world"]).await;
    assert_eq!(
        v["imageIds"],
        serde_json::json!([]),
        "last tag gone: image gone"
    );
    // Its blobs went with it (garbage collection): push it anew for the force delete below.
    let (ok, out) = skopeo_push(&s, "busybox", "oci", "hello-world:latest", None).await;
    assert!(ok, "push again: {out}");
    let v = aws_ok(
        &s,
        &[
            "delete-repository",
            "--repository-name",
            "hello-world",
            "--force",
        ],
    )
    .await;
    assert_eq!(v["repository"]["repositoryName"], "hello-world");
    aws_err(
        &s,
        &["list-images", "--repository-name", "hello-world"],
        "RepositoryNotFoundException",
    )
    .await;
    let r = common::client()
        .get(s.url("/v2/hello-world/tags/list"))
        .send()
        .await
        .expect("tags");
    assert_eq!(r.status(), 404, "the repository is gone from /v2/ too");
}

/// Run a command with `stdin` fed from `input`; returns (success, stdout + stderr).
async fn run_with(
    cmd: &str,
    args: &[&str],
    envs: &[(&str, &std::path::Path)],
    input: &str,
) -> (bool, String) {
    use tokio::io::AsyncWriteExt;
    let mut c = tokio::process::Command::new(cmd);
    c.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in envs {
        c.env(k, v);
    }
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().await.expect("wait");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn skopeo_push(
    s: &Server,
    image: &str,
    format: &str,
    dest: &str,
    creds: Option<&str>,
) -> (bool, String) {
    let src = format!("oci:{}:latest", fixture_image(image).join("oci").display());
    let dest = format!("docker://{}/{dest}", s.addr);
    let mut args = vec![
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--format",
        format,
    ];
    if let Some(c) = creds {
        args.extend(["--dest-creds", c]);
    }
    args.extend([src.as_str(), dest.as_str()]);
    run_with("skopeo", &args, &[], "").await
}

/// ECR's login path with auth on: `aws ecr get-login-password | podman login`, then podman
/// and skopeo push and pull with the token; without it, or with a bogus one, 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_with_a_token_then_push_and_pull() {
    let s = Server::start_with(lambox_registry::RegistryConfig {
        auth: true,
        ..Default::default()
    })
    .await;
    // No credentials: the challenge, as the distribution spec describes it.
    let r = common::client()
        .get(s.url("/v2/"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().expect("ascii");
    assert!(
        challenge.starts_with(&format!("Basic realm=\"http://{}/\"", s.addr)),
        "{challenge}"
    );
    assert_eq!(
        common::error_code(&r.text().await.expect("body")),
        "UNAUTHORIZED"
    );

    let v = aws_ok(&s, &["get-authorization-token"]).await;
    let data = &v["authorizationData"][0];
    assert_eq!(data["proxyEndpoint"], s.url(""));
    let expires = data["expiresAt"]
        .as_f64()
        .expect("expiresAt is a timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        (expires - now - 12.0 * 3600.0).abs() < 60.0,
        "12 h: {expires} vs {now}"
    );
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(data["authorizationToken"].as_str().expect("token"))
        .expect("base64");
    let decoded = String::from_utf8(decoded).expect("utf-8");
    assert!(decoded.starts_with("AWS:"), "{decoded}");

    let (ok, password, err) = aws(&s, &["get-login-password"]).await;
    assert!(ok, "get-login-password: {err}");
    let password = password.trim().to_string();
    assert!(!password.is_empty());

    // podman, with a private storage and auth file.
    let work = tempfile::tempdir().expect("tempdir");
    let storage = work.path().join("storage.conf");
    std::fs::write(
        &storage,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
            work.path().display()
        ),
    )
    .expect("storage.conf");
    let conf = work.path().join("containers.conf");
    std::fs::write(
        &conf,
        "[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
    )
    .expect("containers.conf");
    let authfile = work.path().join("auth.json");
    std::fs::write(&authfile, "{}").expect("auth.json");
    let envs = [
        ("CONTAINERS_STORAGE_CONF", storage.as_path()),
        ("CONTAINERS_CONF", conf.as_path()),
        ("REGISTRY_AUTH_FILE", authfile.as_path()),
    ];
    let src = format!(
        "oci:{}:latest",
        fixture_image("busybox").join("oci").display()
    );
    let (ok, out) = run_with("podman", &["pull", "-q", &src], &envs, "").await;
    assert!(ok, "podman pull {src}: {out}");
    let (ok, out) = run_with("podman", &["images", "-q", "--no-trunc"], &envs, "").await;
    assert!(ok, "{out}");
    let id = out.lines().next().expect("an image").trim().to_string();
    let dest = format!("{}/hello-world:latest", s.addr);
    let (ok, out) = run_with("podman", &["tag", &id, &dest], &envs, "").await;
    assert!(ok, "{out}");

    // Not logged in: refused.
    let (ok, out) = run_with(
        "podman",
        &["push", "-q", "--tls-verify=false", &dest],
        &envs,
        "",
    )
    .await;
    assert!(!ok, "push without login must fail: {out}");
    assert!(
        out.contains("401") || out.to_lowercase().contains("unauthorized"),
        "{out}"
    );

    // The seed's login, with podman for docker.
    let (ok, out) = run_with(
        "podman",
        &[
            "login",
            "--username",
            "AWS",
            "--password-stdin",
            "--tls-verify=false",
            &s.addr.to_string(),
        ],
        &envs,
        &password,
    )
    .await;
    assert!(ok, "podman login: {out}");
    let (ok, out) = run_with(
        "podman",
        &["push", "-q", "--tls-verify=false", &dest],
        &envs,
        "",
    )
    .await;
    assert!(ok, "podman push after login: {out}");
    let (ok, out) = run_with("podman", &["rmi", "-f", &dest], &envs, "").await;
    assert!(ok, "{out}");
    let (ok, out) = run_with(
        "podman",
        &["pull", "-q", "--tls-verify=false", &dest],
        &envs,
        "",
    )
    .await;
    assert!(ok, "podman pull after login: {out}");

    // skopeo with explicit credentials; a bogus token and no token are refused.
    let good = format!("AWS:{password}");
    let (ok, out) = skopeo_push(&s, "busybox", "v2s2", "other:v1", Some(&good)).await;
    assert!(ok, "skopeo with the token: {out}");
    let (ok, out) = skopeo_push(&s, "busybox", "v2s2", "other:v2", Some("AWS:bogus")).await;
    assert!(!ok, "a bogus token must be refused: {out}");
    let (ok, out) = skopeo_push(&s, "busybox", "v2s2", "other:v3", None).await;
    assert!(!ok, "no token must be refused: {out}");
    let r = common::client()
        .get(s.url("/v2/other/tags/list"))
        .basic_auth("AWS", Some(&password))
        .send()
        .await
        .expect("tags");
    assert_eq!(r.status(), 200);
    let tags: serde_json::Value = r.json().await.expect("json");
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    let r = common::client()
        .get(s.url("/v2/other/tags/list"))
        .basic_auth("AWS", Some("bogus"))
        .send()
        .await
        .expect("tags");
    assert_eq!(r.status(), 401);
}

/// A token past its expiry is refused (the lifetime is shortened to 5 s for the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused() {
    let s = Server::start_with(lambox_registry::RegistryConfig {
        auth: true,
        token_ttl: std::time::Duration::from_secs(5),
        ..Default::default()
    })
    .await;
    let (ok, password, err) = aws(&s, &["get-login-password"]).await;
    assert!(ok, "{err}");
    let password = password.trim().to_string();
    let get = || {
        common::client()
            .get(s.url("/v2/"))
            .basic_auth("AWS", Some(&password))
            .send()
    };
    assert_eq!(get().await.expect("get").status(), 200, "fresh token");
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let r = get().await.expect("get");
    assert_eq!(r.status(), 401, "expired token");
    assert!(r.headers().contains_key("www-authenticate"));
    let (ok, out) = skopeo_push(
        &s,
        "busybox",
        "oci",
        "late:v1",
        Some(&format!("AWS:{password}")),
    )
    .await;
    assert!(!ok, "skopeo with an expired token must fail: {out}");
}

/// IMMUTABLE: a tag cannot move to another manifest (TAG_INVALID with ECR's message), a
/// re-push of the same manifest is fine; PutImageTagMutability and
/// PutImageScanningConfiguration change the repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_tags_and_repository_settings() {
    let s = Server::start().await;
    let v = aws_ok(
        &s,
        &[
            "create-repository",
            "--repository-name",
            "fixed",
            "--image-tag-mutability",
            "IMMUTABLE",
        ],
    )
    .await;
    assert_eq!(v["repository"]["imageTagMutability"], "IMMUTABLE");
    let (ok, out) = skopeo_push(&s, "busybox", "oci", "fixed:v1", None).await;
    assert!(ok, "{out}");
    let (ok, out) = skopeo_push(&s, "busybox", "oci", "fixed:v1", None).await;
    assert!(ok, "the same manifest again is not a move: {out}");
    // The Docker-format manifest of the same image has another digest: refused.
    let (ok, out) = skopeo_push(&s, "busybox", "v2s2", "fixed:v1", None).await;
    assert!(!ok, "moving an immutable tag must fail: {out}");
    assert!(
        out.contains("cannot be overwritten because the repository is immutable"),
        "{out}"
    );
    // The raw error: 400 TAG_INVALID, and the tag still points where it did.
    let before = common::client()
        .get(s.url("/v2/fixed/manifests/v1"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("get");
    let digest = before.headers()["docker-content-digest"]
        .to_str()
        .expect("ascii")
        .to_string();
    let (ok, out) = skopeo_push(&s, "busybox", "v2s2", "fixed:v2", None).await;
    assert!(ok, "a new tag is fine: {out}");
    let docker_manifest = common::client()
        .get(s.url("/v2/fixed/manifests/v2"))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    let r = common::client()
        .put(s.url("/v2/fixed/manifests/v1"))
        .header(
            "content-type",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .body(docker_manifest.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 400);
    assert_eq!(
        common::error_code(&r.text().await.expect("body")),
        "TAG_INVALID"
    );
    let v = aws_ok(
        &s,
        &[
            "describe-images",
            "--repository-name",
            "fixed",
            "--image-ids",
            "imageTag=v1",
        ],
    )
    .await;
    assert_eq!(v["imageDetails"][0]["imageDigest"], digest.as_str());

    let v = aws_ok(
        &s,
        &[
            "put-image-tag-mutability",
            "--repository-name",
            "fixed",
            "--image-tag-mutability",
            "MUTABLE",
        ],
    )
    .await;
    assert_eq!(v["imageTagMutability"], "MUTABLE");
    let (ok, out) = skopeo_push(&s, "busybox", "v2s2", "fixed:v1", None).await;
    assert!(ok, "MUTABLE again: the tag moves: {out}");
    aws_err(
        &s,
        &[
            "put-image-tag-mutability",
            "--repository-name",
            "nope",
            "--image-tag-mutability",
            "MUTABLE",
        ],
        "RepositoryNotFoundException",
    )
    .await;

    let v = aws_ok(
        &s,
        &[
            "put-image-scanning-configuration",
            "--repository-name",
            "fixed",
            "--image-scanning-configuration",
            "scanOnPush=true",
        ],
    )
    .await;
    assert_eq!(v["imageScanningConfiguration"]["scanOnPush"], true);
    let v = aws_ok(
        &s,
        &["describe-repositories", "--repository-names", "fixed"],
    )
    .await;
    assert_eq!(
        v["repositories"][0]["imageScanningConfiguration"]["scanOnPush"],
        true
    );
    assert_eq!(v["repositories"][0]["imageTagMutability"], "MUTABLE");
}

/// One file of a layer blob in the fixture's OCI layout, read with the system's tar.
fn from_layer(image: &str, layer: usize, member: &str) -> String {
    let oci = fixture_image(image).join("oci");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).expect("index"))
            .expect("json");
    let m = index["manifests"][0]["digest"].as_str().expect("digest");
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(oci.join("blobs/sha256").join(&m[7..])).expect("manifest"),
    )
    .expect("json");
    let l = m["layers"][layer]["digest"].as_str().expect("layer");
    let out = std::process::Command::new("tar")
        .arg("-xzOf")
        .arg(oci.join("blobs/sha256").join(&l[7..]))
        .arg("--wildcards")
        .arg(member)
        .output()
        .expect("tar");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// scanOnPush: the pushed hello-python image's dpkg packages and awslambdaric's dist-info are
/// listed; an OSV file written here matches awslambdaric's real version (and a range that
/// excludes it does not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_on_push_lists_packages_and_matches_osv() {
    // The oracle: the system's tar reads the layers.
    let status = from_layer("hello-python", 0, "*var/lib/dpkg/status");
    let libc6 = status
        .split("\n\n")
        .find(|s| s.lines().any(|l| l == "Package: libc6"))
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Version: ")))
        .expect("libc6 in the fixture's dpkg status")
        .to_string();
    let meta = from_layer("hello-python", 1, "*awslambdaric-*.dist-info/METADATA");
    let ric = meta
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .expect("awslambdaric METADATA")
        .to_string();

    let dir = tempfile::tempdir().expect("tempdir");
    let osv = dir.path().join("osv.json");
    std::fs::write(
        &osv,
        serde_json::json!([
            { "id": "TEST-RIC-1", "summary": "matches awslambdaric's version",
              "database_specific": { "severity": "HIGH" },
              "affected": [{ "package": { "ecosystem": "PyPI", "name": "awslambdaric" },
                             "versions": [ric] }] },
            { "id": "TEST-RIC-OLD", "summary": "fixed long ago",
              "affected": [{ "package": { "ecosystem": "PyPI", "name": "awslambdaric" },
                             "ranges": [{ "type": "ECOSYSTEM",
                                          "events": [{ "introduced": "0" }, { "fixed": "0.0.1" }] }] }] },
            { "id": "TEST-NOPE", "summary": "a package the image lacks",
              "affected": [{ "package": { "ecosystem": "PyPI", "name": "not-installed-here" },
                             "ranges": [{ "type": "ECOSYSTEM", "events": [{ "introduced": "0" }] }] }] },
        ])
        .to_string(),
    )
    .expect("osv");
    let s = Server::start_with(lambox_registry::RegistryConfig {
        vuln_db: Some(osv.clone()),
        ..Default::default()
    })
    .await;
    aws_ok(
        &s,
        &[
            "create-repository",
            "--repository-name",
            "scanned",
            "--image-scanning-configuration",
            "scanOnPush=true",
        ],
    )
    .await;
    let (ok, out) = skopeo_push(&s, "hello-python", "oci", "scanned:latest", None).await;
    assert!(ok, "{out}");
    let req =
        serde_json::json!({ "repositoryName": "scanned", "imageId": { "imageTag": "latest" } });
    let mut v = serde_json::Value::Null;
    for _ in 0..300 {
        v = common::ecr_raw(&s, "DescribeImageScanFindings", req.clone()).await;
        if v["imageScanStatus"]["status"] != "IN_PROGRESS" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(v["imageScanStatus"]["status"], "COMPLETE", "{v}");
    let pkgs = v["imageScanFindings"]["lamboxPackages"]
        .as_array()
        .expect("packages");
    let has = |eco: &str, name: &str, version: &str| {
        pkgs.iter()
            .any(|p| p["ecosystem"] == eco && p["name"] == name && p["version"] == version)
    };
    assert!(has("Debian", "libc6", &libc6), "libc6 {libc6} in {v}");
    assert!(
        has("PyPI", "awslambdaric", &ric),
        "awslambdaric {ric} in {v}"
    );
    assert!(
        pkgs.iter().filter(|p| p["ecosystem"] == "Debian").count() > 20,
        "a Debian image has many dpkg packages"
    );
    let findings = v["imageScanFindings"]["findings"]
        .as_array()
        .expect("findings");
    let names: Vec<&str> = findings.iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(names, ["TEST-RIC-1"], "only the real match: {v}");
    assert_eq!(findings[0]["severity"], "HIGH");
    assert_eq!(
        v["imageScanFindings"]["findingSeverityCounts"],
        serde_json::json!({ "HIGH": 1 })
    );
    // The aws CLI sees the status and the finding (it drops lambox's own member).
    v = aws_ok(
        &s,
        &[
            "describe-image-scan-findings",
            "--repository-name",
            "scanned",
            "--image-id",
            "imageTag=latest",
        ],
    )
    .await;
    assert_eq!(v["imageScanStatus"]["status"], "COMPLETE");
    assert_eq!(v["imageScanFindings"]["findings"][0]["name"], "TEST-RIC-1");
    v = aws_ok(&s, &["describe-images", "--repository-name", "scanned"]).await;
    assert_eq!(
        v["imageDetails"][0]["imageScanStatus"]["status"],
        "COMPLETE"
    );
    assert_eq!(
        v["imageDetails"][0]["imageScanFindingsSummary"]["findingSeverityCounts"],
        serde_json::json!({ "HIGH": 1 })
    );

    // Without scanOnPush there is no scan until StartImageScan.
    let (ok, out) = skopeo_push(&s, "busybox", "oci", "plain:latest", None).await;
    assert!(ok, "{out}");
    aws_ok(&s, &["create-repository", "--repository-name", "plain2"]).await;
    let (ok, out) = skopeo_push(&s, "busybox", "oci", "plain2:latest", None).await;
    assert!(ok, "{out}");
    aws_err(
        &s,
        &[
            "describe-image-scan-findings",
            "--repository-name",
            "plain2",
            "--image-id",
            "imageTag=latest",
        ],
        "ScanNotFoundException",
    )
    .await;
    aws_ok(
        &s,
        &[
            "start-image-scan",
            "--repository-name",
            "plain2",
            "--image-id",
            "imageTag=latest",
        ],
    )
    .await;
    let req =
        serde_json::json!({ "repositoryName": "plain2", "imageId": { "imageTag": "latest" } });
    for _ in 0..100 {
        v = common::ecr_raw(&s, "DescribeImageScanFindings", req.clone()).await;
        if v["imageScanStatus"]["status"] != "IN_PROGRESS" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(v["imageScanStatus"]["status"], "COMPLETE", "{v}");
    assert_eq!(
        v["imageScanFindings"]["findings"],
        serde_json::json!([]),
        "busybox has no package db"
    );
    assert_eq!(
        v["imageScanFindings"]["lamboxPackages"],
        serde_json::json!([])
    );
}

fn tar_layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).expect("append");
    }
    b.into_inner().expect("tar")
}

/// Creates ECR repository REPO, pushes an image of `layers` (bytes, gzip or not) as REPO:v1,
/// scans it, and returns the inventory as (ecosystem, name, version), with the whole
/// DescribeImageScanFindings answer.
async fn push_and_scan(
    s: &Server,
    repo: &str,
    layers: &[(Vec<u8>, bool)],
) -> (Vec<(String, String, String)>, serde_json::Value) {
    common::ecr_raw(
        s,
        "CreateRepository",
        serde_json::json!({ "repositoryName": repo }),
    )
    .await;
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = common::push_blob(&common::client(), s, repo, config).await;
    let mut descriptors = Vec::new();
    for (bytes, gzip) in layers {
        descriptors.push(serde_json::json!({
            "mediaType": if *gzip { "application/vnd.oci.image.layer.v1.tar+gzip" } else { "application/vnd.oci.image.layer.v1.tar" },
            "digest": common::push_blob(&common::client(), s, repo, bytes).await,
            "size": bytes.len(),
        }));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len() },
        "layers": descriptors,
    });
    let r = common::client()
        .put(s.url(&format!("/v2/{repo}/manifests/v1")))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 201);
    let req = serde_json::json!({ "repositoryName": repo, "imageId": { "imageTag": "v1" } });
    common::ecr_raw(s, "StartImageScan", req.clone()).await;
    let mut v = serde_json::Value::Null;
    for _ in 0..100 {
        v = common::ecr_raw(s, "DescribeImageScanFindings", req.clone()).await;
        if v["imageScanStatus"]["status"] != "IN_PROGRESS" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(v["imageScanStatus"]["status"], "COMPLETE", "{v}");
    let got = v["imageScanFindings"]["lamboxPackages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["ecosystem"].as_str().expect("eco").to_string(),
                p["name"].as_str().expect("name").to_string(),
                p["version"].as_str().expect("version").to_string(),
            )
        })
        .collect();
    (got, v)
}

/// The rpm database of Amazon Linux 2023 (AWS's current Lambda base images), made by the real
/// `rpm` tool, and the Berkeley DB `Packages` of Amazon Linux 2 holding the same header, made
/// by Berkeley DB's own `db_load`: an installed package is listed with its epoch, version and
/// release, under the ecosystem os-release names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_read_the_rpm_database() {
    let work = tempfile::tempdir().expect("tempdir");
    let top = work.path();
    std::fs::create_dir_all(top.join("SPECS")).expect("mkdir");
    std::fs::write(
        top.join("SPECS/hello.spec"),
        "Name: lambox-hello\nVersion: 1.2.3\nRelease: 4.amzn2023\nEpoch: 1\nSummary: t\nLicense: MIT\nBuildArch: noarch\n%description\nt\n%files\n",
    )
    .expect("spec");
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.output().expect("run");
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(std::process::Command::new("rpmbuild")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .args(["-bb", "SPECS/hello.spec"])
        .current_dir(top));
    let root = top.join("root");
    let rpm = |args: &[&str]| {
        let mut c = std::process::Command::new("rpm");
        c.arg("--root")
            .arg(&root)
            .args(["--dbpath", "/var/lib/rpm"])
            .args(args);
        c
    };
    run(&mut rpm(&["--initdb"]));
    let package = top.join("RPMS/noarch/lambox-hello-1.2.3-4.amzn2023.noarch.rpm");
    run(rpm(&["-i", "--nodeps", "--justdb"]).arg(&package));
    let db = std::fs::read(root.join("var/lib/rpm/rpmdb.sqlite")).expect("rpmdb.sqlite");

    let s = Server::start().await;
    let want = [(
        "Amazon Linux".to_owned(),
        "lambox-hello".to_owned(),
        "1:1.2.3-4.amzn2023".to_owned(),
    )];
    let amazon_linux = |version: &str, db_path: &str, db: &[u8]| {
        let os_release = format!("NAME=\"Amazon Linux\"\nVERSION=\"{version}\"\nID=\"amzn\"\n");
        tar_layer(&[("etc/os-release", os_release.as_bytes()), (db_path, db)])
    };
    let layer = amazon_linux("2023", "var/lib/rpm/rpmdb.sqlite", &db);
    let (got, v) = push_and_scan(&s, "al2023", &[(layer, false)]).await;
    assert_eq!(got, want, "{v}");
    // Amazon Linux 2: the same header in a Berkeley DB hash database (rpm's key: the record
    // number), loaded by db_load from its text format.
    let blobs: Vec<Vec<u8>> = {
        let conn = rusqlite::Connection::open(root.join("var/lib/rpm/rpmdb.sqlite"))
            .expect("open rpmdb.sqlite");
        let mut st = conn.prepare("SELECT blob FROM Packages").expect("query");
        let rows = st
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .expect("rows")
            .collect::<rusqlite::Result<Vec<_>>>()
            .expect("blobs");
        rows
    };
    assert_eq!(blobs.len(), 1);
    let hex = |b: &[u8]| b.iter().map(|x| format!("\\{x:02x}")).collect::<String>();
    let dump: String = blobs
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{}\n{}\n", hex(&(i as u32 + 1).to_le_bytes()), hex(b)))
        .collect();
    let packages = top.join("Packages");
    let mut load = std::process::Command::new("db5.3_load")
        .args(["-T", "-t", "hash"])
        .arg(&packages)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("db5.3_load");
    use std::io::Write as _;
    load.stdin
        .take()
        .expect("stdin")
        .write_all(dump.as_bytes())
        .expect("dump");
    assert!(load.wait().expect("db5.3_load").success());
    let bdb = std::fs::read(&packages).expect("Packages");
    let layer = amazon_linux("2", "var/lib/rpm/Packages", &bdb);
    let (got, v) = push_and_scan(&s, "al2", &[(layer, false)]).await;
    assert_eq!(got, want, "{v}");

    // Bytes that are not a database: the scan completes with no rpm package.
    let layer = tar_layer(&[(
        "var/lib/rpm/rpmdb.sqlite",
        b"SQLite format 3\0 but not really",
    )]);
    let (got, v) = push_and_scan(&s, "broken", &[(layer, false)]).await;
    assert!(got.is_empty(), "{v}");
}

/// The scan applies layers in order: a later file replaces an earlier one, a whiteout removes
/// a package directory, an opaque marker empties a directory; plain and gzip layers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_apply_whiteouts_and_later_layers_win() {
    use std::io::Write;
    let s = Server::start().await;
    let lower = tar_layer(&[
        (
            "var/lib/dpkg/status",
            b"Package: old-pkg\nStatus: install ok installed\nVersion: 1.0\n",
        ),
        (
            "usr/lib/node_modules/left-pad/package.json",
            br#"{"name":"left-pad","version":"1.3.0"}"#,
        ),
        (
            "usr/lib/node_modules/@scope/keep/package.json",
            br#"{"name":"@scope/keep","version":"2.0.0"}"#,
        ),
        (
            "opt/app/x-1.0.dist-info/METADATA",
            b"Metadata-Version: 2.1\nName: x\nVersion: 1.0\n\nbody\n",
        ),
    ]);
    let upper = tar_layer(&[
        (
            "var/lib/dpkg/status",
            b"Package: new-pkg\nStatus: install ok installed\nVersion: 2.0\n",
        ),
        ("usr/lib/node_modules/.wh.left-pad", b""),
        ("opt/app/.wh..wh..opq", b""),
        (
            "opt/app/y-2.0.dist-info/METADATA",
            b"Name: y\nVersion: 2.0\n",
        ),
    ]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&upper).expect("gzip");
    let upper = gz.finish().expect("gzip");
    let (got, v) = push_and_scan(&s, "layered", &[(lower, false), (upper, true)]).await;
    let want: Vec<(String, String, String)> = [
        ("Debian", "new-pkg", "2.0"),
        ("PyPI", "y", "2.0"),
        ("npm", "@scope/keep", "2.0.0"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want, "{v}");
}

/// PutImage (ECR's retag) with the aws CLI: a new tag for a pushed manifest; the same again is
/// ImageAlreadyExistsException; moving a tag of an IMMUTABLE repository is
/// ImageTagAlreadyExistsException; a manifest naming a missing layer is LayersNotFoundException.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_image_retags_as_ecr_does() {
    let s = Server::start().await;
    aws_ok(
        &s,
        &[
            "create-repository",
            "--repository-name",
            "retag",
            "--image-tag-mutability",
            "IMMUTABLE",
        ],
    )
    .await;
    let (ok, out) = skopeo_push(&s, "busybox", "oci", "retag:v1", None).await;
    assert!(ok, "{out}");
    let (ok, out) = skopeo_push(&s, "busybox", "v2s2", "retag:v2", None).await;
    assert!(ok, "{out}");
    let get = |tag: &'static str| {
        let s = &s;
        async move {
            let v = aws_ok(
                s,
                &[
                    "batch-get-image",
                    "--repository-name",
                    "retag",
                    "--image-ids",
                    &format!("imageTag={tag}"),
                ],
            )
            .await;
            (
                v["images"][0]["imageManifest"]
                    .as_str()
                    .expect("manifest")
                    .to_string(),
                v["images"][0]["imageManifestMediaType"]
                    .as_str()
                    .expect("type")
                    .to_string(),
                v["images"][0]["imageId"]["imageDigest"]
                    .as_str()
                    .expect("digest")
                    .to_string(),
            )
        }
    };
    let (m1, t1, d1) = get("v1").await;
    let put = |manifest: String, media_type: String, tag: &'static str| {
        let s = &s;
        async move {
            aws(
                s,
                &[
                    "put-image",
                    "--repository-name",
                    "retag",
                    "--image-tag",
                    tag,
                    "--image-manifest",
                    &manifest,
                    "--image-manifest-media-type",
                    &media_type,
                ],
            )
            .await
        }
    };
    let (ok, out, err) = put(m1.clone(), t1.clone(), "release").await;
    assert!(ok, "put-image: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["image"]["imageId"]["imageDigest"], d1.as_str());
    assert_eq!(v["image"]["imageId"]["imageTag"], "release");
    let (_, _, d) = get("release").await;
    assert_eq!(d, d1, "the new tag names the same manifest");
    let (ok, _, err) = put(m1.clone(), t1.clone(), "release").await;
    assert!(!ok && err.contains("ImageAlreadyExistsException"), "{err}");
    let (m2, t2, _) = get("v2").await;
    let (ok, _, err) = put(m2, t2, "v1").await;
    assert!(
        !ok && err.contains("ImageTagAlreadyExistsException"),
        "{err}"
    );
    assert!(err.contains("immutable"), "{err}");
    let mut bad: serde_json::Value = serde_json::from_str(&m1).expect("json");
    bad["layers"][0]["digest"] = serde_json::json!(format!("sha256:{}", "0".repeat(64)));
    let (ok, _, err) = put(bad.to_string(), t1, "broken").await;
    assert!(!ok && err.contains("LayersNotFoundException"), "{err}");
}
