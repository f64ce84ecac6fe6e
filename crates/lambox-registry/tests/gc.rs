//! Garbage collection with real pushes (skopeo) of fixture images that share a base layer:
//! deleting an image or a repository frees exactly the blobs nothing else needs, a blob whose
//! manifest has not come yet survives, a stored image (a function's) keeps its blobs, and
//! collecting while clients push never breaks a push.

mod common;

use std::time::{Duration, Instant};

use common::{client, ecr_raw, head_digest, pull_and_check, push_blob, skopeo_round_trip, Server};
use lambox_registry::gc;

/// The hex digests of a pushed manifest's config and layers.
async fn blobs_of(s: &Server, repo: &str, digest: &str) -> Vec<String> {
    let m: serde_json::Value = client()
        .get(s.url(&format!("/v2/{repo}/manifests/{digest}")))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("get manifest")
        .json()
        .await
        .expect("manifest json");
    let mut out = vec![m["config"]["digest"].as_str().expect("config")[7..].to_string()];
    for l in m["layers"].as_array().expect("layers") {
        out.push(l["digest"].as_str().expect("digest")[7..].to_string());
    }
    out
}

fn stored(s: &Server, hex: &str) -> bool {
    s.dir.path().join("blobs/sha256").join(hex).exists()
}

/// Wait for the background collection the deletion started to free `gone`.
async fn wait_freed(s: &Server, gone: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while gone.iter().any(|h| stored(s, h)) {
        assert!(
            Instant::now() < deadline,
            "blobs still stored 60 s after the deletion: {:?}",
            gone.iter().filter(|h| stored(s, h)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_images_and_repositories_frees_only_unshared_blobs() {
    let s = Server::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    for (image, repo) in [("hello-python", "gc/hello"), ("probe-python", "gc/probe")] {
        ecr_raw(
            &s,
            "CreateRepository",
            serde_json::json!({ "repositoryName": repo }),
        )
        .await;
        skopeo_round_trip(&s, work.path(), image, "oci", repo).await;
    }
    let hello = head_digest(&s, "gc/hello", "latest").await;
    let probe = head_digest(&s, "gc/probe", "latest").await;
    let hello_blobs = blobs_of(&s, "gc/hello", &hello).await;
    let probe_blobs = blobs_of(&s, "gc/probe", &probe).await;
    let shared: Vec<String> = hello_blobs
        .iter()
        .filter(|h| probe_blobs.contains(h))
        .cloned()
        .collect();
    assert_eq!(shared.len(), 1, "the fixtures share their base layer");
    let only_hello: Vec<String> = hello_blobs
        .iter()
        .filter(|h| !shared.contains(h))
        .cloned()
        .collect();

    // BatchDeleteImage by tag (its only tag): hello's own blobs and manifest go, the shared
    // base layer stays for probe, which still pulls byte for byte.
    let out = ecr_raw(
        &s,
        "BatchDeleteImage",
        serde_json::json!({ "repositoryName": "gc/hello", "imageIds": [{ "imageTag": "latest" }] }),
    )
    .await;
    assert_eq!(out["failures"], serde_json::json!([]), "{out}");
    let mut gone = only_hello.clone();
    gone.push(hello[7..].to_string());
    wait_freed(&s, &gone).await;
    for h in &shared {
        assert!(stored(&s, h), "shared layer {h} was freed");
    }
    let pulled = work.path().join("probe-after-delete");
    pull_and_check(&s, "gc/probe:latest", &pulled, &probe).await;

    // DeleteRepository (force) frees the rest.
    ecr_raw(
        &s,
        "DeleteRepository",
        serde_json::json!({ "repositoryName": "gc/probe", "force": true }),
    )
    .await;
    let mut gone = probe_blobs.clone();
    gone.push(probe[7..].to_string());
    wait_freed(&s, &gone).await;
    let left: Vec<_> = std::fs::read_dir(s.dir.path().join("blobs/sha256"))
        .expect("blobs")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(
        left.is_empty(),
        "blobs left after every repository went: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_waiting_for_its_manifest_survives_until_the_grace_ends() {
    let s = Server::start().await;
    let digest = push_blob(
        &client(),
        &s,
        "gc/waiting",
        b"a layer whose manifest is still coming",
    )
    .await;
    let hex = digest[7..].to_string();
    let store = s.registry.store().clone();
    let st = store.clone();
    let (links, _) = tokio::task::spawn_blocking(move || gc::collect(&st, gc::UNCLAIMED_GRACE))
        .await
        .expect("join")
        .expect("collect");
    assert_eq!(links, 0);
    assert!(stored(&s, &hex), "a fresh upload was collected");
    // An abandoned push: once the grace is over, the link and the blob go.
    let st = store.clone();
    let (links, stats) = tokio::task::spawn_blocking(move || gc::collect(&st, Duration::ZERO))
        .await
        .expect("join")
        .expect("collect");
    assert_eq!((links, stats.blobs), (1, 1));
    assert!(!stored(&s, &hex));
    let r = client()
        .head(s.url(&format!("/v2/gc/waiting/blobs/sha256:{hex}")))
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), 404);
}

/// Pushes (skopeo, which asks HEAD for every blob and skips those there) of an image whose
/// previous copy was just deleted, while collections run back to back: every push succeeds
/// and pulls back byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collecting_while_pushing_never_breaks_a_push() {
    let s = Server::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (store, stop2) = (s.registry.store().clone(), stop.clone());
    let collector = tokio::task::spawn_blocking(move || {
        let mut runs = 0u32;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            gc::collect(&store, gc::UNCLAIMED_GRACE).expect("collect");
            runs += 1;
        }
        runs
    });
    for round in 0..4 {
        for (image, repo) in [("hello-python", "gc/a"), ("probe-python", "gc/b")] {
            skopeo_round_trip(&s, work.path(), image, "oci", repo).await;
            let digest = head_digest(&s, repo, "latest").await;
            // Delete it again (not in the last round): the next round pushes it anew.
            if round < 3 {
                let r = client()
                    .delete(s.url(&format!("/v2/{repo}/manifests/{digest}")))
                    .send()
                    .await
                    .expect("delete");
                assert_eq!(r.status(), 202);
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let runs = collector.await.expect("collector");
    assert!(runs > 1, "the collector ran {runs} time(s)");
    // Nothing the last pushes need was collected, and nothing else is left.
    let st = s.registry.store().clone();
    tokio::task::spawn_blocking(move || gc::collect(&st, Duration::ZERO))
        .await
        .expect("join")
        .expect("collect");
    for repo in ["gc/a", "gc/b"] {
        let digest = head_digest(&s, repo, "latest").await;
        let out = work
            .path()
            .join(format!("final-{}", repo.replace('/', "_")));
        pull_and_check(&s, &format!("{repo}:latest"), &out, &digest).await;
    }
}
