//! Real clients against a server started in the test: skopeo (and podman, with a private
//! containers storage) push the fixture images in Docker v2 schema 2 and OCI form and pull
//! them back; the pulled manifest and every blob must be byte-identical to what was pushed.

mod common;

use std::path::{Path, PathBuf};

use common::{fixture_image, sha256, Server};

async fn run(cmd: &str, args: &[&str], envs: &[(&str, &Path)]) -> String {
    let mut c = tokio::process::Command::new(cmd);
    c.args(args).stdin(std::process::Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Check a `skopeo copy … dir:DIR` result: `manifest.json` has digest `want`, and every blob
/// it names is present with the right digest and size, and is the store's blob.
fn check_pulled(dir: &Path, want: &str, store: &Path) {
    let manifest = std::fs::read(dir.join("manifest.json")).expect("manifest.json");
    assert_eq!(sha256(&manifest), want, "pulled manifest is byte-identical");
    let m: serde_json::Value = serde_json::from_slice(&manifest).expect("json");
    let mut descs = vec![m["config"].clone()];
    descs.extend(m["layers"].as_array().expect("layers").iter().cloned());
    for d in descs {
        let digest = d["digest"].as_str().expect("digest");
        let hex = &digest[7..];
        let bytes = std::fs::read(dir.join(hex)).expect("pulled blob");
        assert_eq!(sha256(&bytes), digest);
        assert_eq!(bytes.len() as u64, d["size"].as_u64().expect("size"));
        let stored = store.join("blobs/sha256").join(hex);
        assert_eq!(
            std::fs::metadata(&stored)
                .expect("the store has the blob")
                .len(),
            bytes.len() as u64
        );
    }
}

async fn head_digest(s: &Server, repo: &str, tag: &str) -> String {
    let r = common::client()
        .head(s.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), 200, "{repo}:{tag}");
    r.headers()["docker-content-digest"]
        .to_str()
        .expect("ascii")
        .to_string()
}

/// Push `image` with skopeo in `format`, pull it back into a `dir:` layout, compare.
async fn skopeo_round_trip(s: &Server, work: &Path, image: &str, format: &str, repo: &str) {
    let src = format!("oci:{}:latest", fixture_image(image).join("oci").display());
    let dest = format!("docker://{}/{repo}:latest", s.addr);
    let digestfile = work.join(format!("{}-{format}.digest", repo.replace('/', "_")));
    run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--format",
            format,
            "--digestfile",
            digestfile.to_str().expect("utf-8"),
            &src,
            &dest,
        ],
        &[],
    )
    .await;
    let pushed = std::fs::read_to_string(&digestfile).expect("digestfile");
    assert_eq!(head_digest(s, repo, "latest").await, pushed.trim());
    let raw = run(
        "skopeo",
        &["inspect", "--raw", "--tls-verify=false", &dest],
        &[],
    )
    .await;
    let mt = serde_json::from_str::<serde_json::Value>(&raw).expect("json")["mediaType"]
        .as_str()
        .expect("mediaType")
        .to_string();
    let want = if format == "v2s2" {
        "application/vnd.docker.distribution.manifest.v2+json"
    } else {
        "application/vnd.oci.image.manifest.v1+json"
    };
    assert_eq!(mt, want, "{image} pushed as {format}");
    let out: PathBuf = work.join(format!("pull-{}-{format}", repo.replace('/', "_")));
    run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &dest,
            &format!("dir:{}", out.display()),
        ],
        &[],
    )
    .await;
    check_pulled(&out, pushed.trim(), s.dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skopeo_push_and_pull_docker_v2s2_and_oci() {
    let s = Server::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    for (image, format, repo) in [
        ("busybox", "oci", "fixtures/busybox-oci"),
        ("busybox", "v2s2", "fixtures/busybox-v2s2"),
        ("hello-python", "oci", "lambda/hello-python"),
        ("hello-python", "v2s2", "lambda/hello-python-docker"),
    ] {
        skopeo_round_trip(&s, work.path(), image, format, repo).await;
    }
    // A second push of the same image finds every blob there (HEAD) and is accepted again.
    skopeo_round_trip(&s, work.path(), "busybox", "oci", "fixtures/busybox-oci").await;
    let tags = common::client()
        .get(s.url("/v2/_catalog"))
        .send()
        .await
        .expect("catalog")
        .text()
        .await
        .expect("body");
    assert!(tags.contains("lambda/hello-python-docker"), "{tags}");
    assert!(s.temps().is_empty(), "temps left: {:?}", s.temps());
}

/// Two pushes at once of images that share their layers, into two repositories.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_skopeo_pushes_sharing_layers() {
    let s = Server::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    let (a, b) = tokio::join!(
        skopeo_round_trip(&s, work.path(), "hello-python", "oci", "shared/one"),
        skopeo_round_trip(&s, work.path(), "hello-python", "oci", "shared/two"),
    );
    let ((), ()) = (a, b);
    assert_eq!(
        head_digest(&s, "shared/one", "latest").await,
        head_digest(&s, "shared/two", "latest").await
    );
    assert!(s.temps().is_empty(), "temps left: {:?}", s.temps());
}

/// podman push and pull, with its own containers storage in a temp dir (no daemon needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn podman_push_and_pull() {
    let s = Server::start().await;
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
    let envs = [
        ("CONTAINERS_STORAGE_CONF", storage.as_path()),
        ("CONTAINERS_CONF", conf.as_path()),
    ];
    let src = format!(
        "oci:{}:latest",
        fixture_image("busybox").join("oci").display()
    );
    run("podman", &["pull", "-q", &src], &envs).await;
    let local = "localhost/lambox-registry-test/busybox:latest";
    let id = run("podman", &["images", "-q", "--no-trunc"], &envs).await;
    let id = id.lines().next().expect("an image").trim().to_string();
    run("podman", &["tag", &id, local], &envs).await;
    for (format, repo) in [
        ("v2s2", "podman/busybox-docker"),
        ("oci", "podman/busybox-oci"),
    ] {
        let dest = format!("{}/{repo}:latest", s.addr);
        let digestfile = work.path().join(format!("{format}.digest"));
        run(
            "podman",
            &[
                "push",
                "-q",
                "--tls-verify=false",
                "--format",
                format,
                "--digestfile",
                digestfile.to_str().expect("utf-8"),
                local,
                &format!("docker://{dest}"),
            ],
            &envs,
        )
        .await;
        let pushed = std::fs::read_to_string(&digestfile).expect("digestfile");
        assert_eq!(head_digest(&s, repo, "latest").await, pushed.trim());
        let pulled = run(
            "podman",
            &["pull", "-q", "--tls-verify=false", &dest],
            &envs,
        )
        .await;
        // The image ID is the config digest of the manifest podman pushed.
        let manifest = common::client()
            .get(s.url(&format!("/v2/{repo}/manifests/{}", pushed.trim())))
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("body");
        let m: serde_json::Value = serde_json::from_str(&manifest).expect("json");
        let config = m["config"]["digest"].as_str().expect("config digest");
        assert_eq!(format!("sha256:{}", pulled.trim()), config, "image id");
        let digests = run(
            "podman",
            &[
                "image",
                "inspect",
                "--format",
                "{{json .RepoDigests}}",
                &dest,
            ],
            &envs,
        )
        .await;
        let want = format!("{dest}@{}", pushed.trim());
        let want = want.replace(":latest@", "@");
        assert!(digests.contains(&want), "{digests} has {want}");
    }
}
