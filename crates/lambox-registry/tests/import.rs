//! An image pushed with skopeo becomes a stored, runnable image straight from the store's
//! blobs: nothing fetched, no second copy of any blob.

mod common;

use common::{fixture_image, Server};
use lambox_image::import::{import, ImportOptions, NoProgress};
use lambox_registry::source::PushedImage;

fn blob_count(s: &Server) -> usize {
    std::fs::read_dir(s.dir.path().join("blobs/sha256"))
        .expect("blobs")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_image_imports_without_fetching_or_copying() {
    let s = Server::start().await;
    let mut pushed = Vec::new();
    for (format, repo) in [("v2s2", "lambda/hello-docker"), ("oci", "lambda/hello-oci")] {
        let src = format!(
            "oci:{}:latest",
            fixture_image("hello-python").join("oci").display()
        );
        let out = tokio::process::Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--format",
                format,
            ])
            .arg(&src)
            .arg(format!("docker://{}/{repo}:v1", s.addr))
            .output()
            .await
            .expect("skopeo");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let blobs_before = blob_count(&s);
        let store = s.registry.store().clone();
        let (outcome, pinned) = tokio::task::spawn_blocking(move || {
            let src = PushedImage::open(store.clone(), repo, "v1").expect("pushed image");
            let pinned = src.digest().clone();
            let opts = ImportOptions {
                name: Some(format!("registry/{repo}:v1")),
                ..ImportOptions::default()
            };
            (
                import(&store, &src, repo, &opts, &NoProgress).expect("import"),
                pinned,
            )
        })
        .await
        .expect("task");
        assert_eq!(
            outcome.fetched_bytes, 0,
            "{format}: every blob came from the store"
        );
        assert_eq!(outcome.image.digest, pinned);
        pushed.push((repo, pinned));
        assert_eq!(outcome.image.layers.len(), 2);
        for l in &outcome.image.layers {
            assert!(s.registry.store().has_layer(&l.diff_id), "layer unpacked");
        }
        assert_eq!(
            blob_count(&s),
            blobs_before,
            "{format}: no second copy of any blob"
        );
    }
    let missing = PushedImage::open(s.registry.store().clone(), "lambda/hello-oci", "nope")
        .expect_err("unknown tag");
    assert_eq!(
        missing.to_string(),
        "image lambda/hello-oci:nope in the registry: not found"
    );

    // A stored image (what a function runs) keeps its blobs and layers after the registry's
    // copies are deleted and garbage is collected.
    for (repo, digest) in pushed {
        let r = common::client()
            .delete(s.url(&format!("/v2/{repo}/manifests/{digest}")))
            .send()
            .await
            .expect("delete manifest");
        assert_eq!(r.status(), 202);
    }
    let store = s.registry.store().clone();
    let images = tokio::task::spawn_blocking(move || {
        lambox_registry::gc::collect(&store, std::time::Duration::ZERO).expect("collect");
        store.images().expect("images")
    })
    .await
    .expect("task");
    assert_eq!(images.len(), 2);
    for e in images {
        let s2 = s.registry.store();
        assert!(s2.has_blob(&e.image.digest) && s2.has_blob(&e.image.config_digest));
        for l in &e.image.layers {
            assert!(s2.has_blob(&l.digest) && s2.has_layer(&l.diff_id), "{l:?}");
        }
    }
}
