//! Real clients against a server started in the test: skopeo (and podman, with a private
//! containers storage) push the fixture images in Docker v2 schema 2 and OCI form and pull
//! them back; the pulled manifest and every blob must be byte-identical to what was pushed.

mod common;

use common::{fixture_image, head_digest, run, skopeo_round_trip, Server};

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
