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
    let put = common::client()
        .put(s.url("/v2/hello-world/manifests/latest"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 201);
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
