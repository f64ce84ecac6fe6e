//! The distribution spec's conformance categories (push, pull, content discovery, content
//! management) against a real server on 127.0.0.1:0, over HTTP with reqwest.

mod common;

use common::{client, error_code, header, push_blob, sha256, Server};
use reqwest::{Method, StatusCode};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn image_manifest(media_type: &str, config: (&str, usize), layers: &[(&str, usize)]) -> Vec<u8> {
    let layer_type = if media_type == DOCKER_MANIFEST {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    };
    let config_type = if media_type == DOCKER_MANIFEST {
        "application/vnd.docker.container.image.v1+json"
    } else {
        "application/vnd.oci.image.config.v1+json"
    };
    // Pretty-printed on purpose: the registry must store and serve these exact bytes.
    serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": { "mediaType": config_type, "digest": config.0, "size": config.1 },
        "layers": layers.iter().map(|(d, n)| serde_json::json!({
            "mediaType": layer_type, "digest": d, "size": n
        })).collect::<Vec<_>>(),
    }))
    .expect("json")
}

async fn put_manifest(
    c: &reqwest::Client,
    s: &Server,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> reqwest::Response {
    c.put(s.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", media_type)
        .body(bytes.to_vec())
        .send()
        .await
        .expect("put manifest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_pull_discovery_management() {
    let s = Server::start().await;
    let c = client();
    let repo = "conformance/nested/repo";

    // ---- base ----
    let r = c.get(s.url("/v2/")).send().await.expect("base");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );

    // ---- push: monolithic POST ----
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_d = push_blob(&c, &s, repo, config).await;
    let r = c
        .head(s.url(&format!("/v2/{repo}/blobs/{config_d}")))
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), config.len().to_string());
    assert_eq!(header(&r, "docker-content-digest"), config_d);

    // ---- push: chunked POST, PATCH, PATCH, PUT ----
    let layer: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let layer_d = sha256(&layer);
    let r = c
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .expect("start");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = header(&r, "location").to_string();
    assert!(
        loc.starts_with(&format!("/v2/{repo}/blobs/uploads/")),
        "{loc}"
    );
    assert_eq!(
        header(&r, "docker-upload-uuid"),
        loc.rsplit('/').next().expect("id")
    );
    let (a, b) = (&layer[..100_000], &layer[100_000..200_000]);
    let r = c
        .patch(s.url(&loc))
        .header("content-type", "application/octet-stream")
        .header("content-range", "0-99999")
        .body(a.to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-99999");
    let loc = header(&r, "location").to_string();
    // A chunk out of order: 416, and the session is unchanged.
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "0-99999")
        .body(a.to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "range"), "0-99999");
    assert_eq!(
        error_code(&r.text().await.expect("body")),
        "BLOB_UPLOAD_INVALID"
    );
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "100000-199999")
        .body(b.to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c.get(s.url(&loc)).send().await.expect("status");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-199999");
    let r = c
        .put(s.url(&format!("{loc}?digest={layer_d}")))
        .header("content-range", "200000-299999")
        .body(layer[200_000..].to_vec())
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), layer_d);
    // The session is gone once finished.
    let r = c.get(s.url(&loc)).send().await.expect("status");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        error_code(&r.text().await.expect("body")),
        "BLOB_UPLOAD_UNKNOWN"
    );
    // The bytes are the store's blob.
    let stored =
        std::fs::read(s.dir.path().join("blobs/sha256").join(&layer_d[7..])).expect("blob");
    assert_eq!(stored, layer);

    // ---- push: streamed PATCH without Content-Range, then PUT without body ----
    let streamed = b"streamed layer bytes".to_vec();
    let streamed_d = sha256(&streamed);
    let r = c
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .expect("start");
    let loc = header(&r, "location").to_string();
    let r = c
        .patch(s.url(&loc))
        .body(streamed.clone())
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = header(&r, "location").to_string();
    let r = c
        .put(s.url(&format!("{loc}?digest={streamed_d}")))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);

    // ---- push: a wrong digest is refused and nothing is stored ----
    let wrong = sha256(b"something else");
    let r = c
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/?digest={wrong}")))
        .body(b"these bytes".to_vec())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&r.text().await.expect("body")), "DIGEST_INVALID");
    for d in [&wrong, &sha256(b"these bytes")] {
        assert!(!s.dir.path().join("blobs/sha256").join(&d[7..]).exists());
        let r = c
            .head(s.url(&format!("/v2/{repo}/blobs/{d}")))
            .send()
            .await
            .expect("head");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    assert!(s.temps().is_empty(), "temps left: {:?}", s.temps());
    // ... also when finishing a session.
    let r = c
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .expect("start");
    let loc = header(&r, "location").to_string();
    let r = c
        .put(s.url(&format!("{loc}?digest={wrong}")))
        .body(b"x".to_vec())
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&r.text().await.expect("body")), "DIGEST_INVALID");
    assert!(s.temps().is_empty(), "temps left: {:?}", s.temps());
    let r = c
        .put(s.url(&format!("/v2/{repo}/blobs/uploads/nope?digest={wrong}")))
        .send()
        .await
        .expect("put");
    assert_eq!(
        error_code(&r.text().await.expect("body")),
        "BLOB_UPLOAD_UNKNOWN"
    );
    let r = c
        .get(s.url(&format!("/v2/{repo}/blobs/sha256:abc")))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&r.text().await.expect("body")), "DIGEST_INVALID");

    // ---- push: cross-repository mount ----
    let other = "other";
    let r = c
        .post(s.url(&format!(
            "/v2/{other}/blobs/uploads/?mount={layer_d}&from={repo}"
        )))
        .send()
        .await
        .expect("mount");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        header(&r, "location"),
        format!("/v2/{other}/blobs/{layer_d}")
    );
    let r = c
        .head(s.url(&format!("/v2/{other}/blobs/{layer_d}")))
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), StatusCode::OK);
    // Not in `from`: an upload session instead.
    let r = c
        .post(s.url(&format!(
            "/v2/{other}/blobs/uploads/?mount={config_d}&from=nowhere"
        )))
        .send()
        .await
        .expect("mount");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let cancel = header(&r, "location").to_string();

    // ---- push: manifests ----
    let missing = sha256(b"never pushed");
    let bad = image_manifest(OCI_MANIFEST, (&config_d, config.len()), &[(&missing, 12)]);
    let r = put_manifest(&c, &s, repo, "v1", OCI_MANIFEST, &bad).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_code(&r.text().await.expect("body")),
        "MANIFEST_BLOB_UNKNOWN"
    );
    let wrong_size = image_manifest(OCI_MANIFEST, (&config_d, 3), &[]);
    let r = put_manifest(&c, &s, repo, "v1", OCI_MANIFEST, &wrong_size).await;
    assert_eq!(
        error_code(&r.text().await.expect("body")),
        "MANIFEST_INVALID"
    );
    let r = put_manifest(&c, &s, repo, "v1", OCI_MANIFEST, b"{not json").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_code(&r.text().await.expect("body")),
        "MANIFEST_INVALID"
    );

    let oci = image_manifest(
        OCI_MANIFEST,
        (&config_d, config.len()),
        &[(&layer_d, layer.len()), (&streamed_d, streamed.len())],
    );
    let oci_d = sha256(&oci);
    let r = put_manifest(&c, &s, repo, "v1", OCI_MANIFEST, &oci).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), oci_d);
    assert_eq!(
        header(&r, "location"),
        format!("/v2/{repo}/manifests/{oci_d}")
    );
    let docker = image_manifest(
        DOCKER_MANIFEST,
        (&config_d, config.len()),
        &[(&layer_d, layer.len())],
    );
    let docker_d = sha256(&docker);
    let r = put_manifest(&c, &s, repo, &docker_d, DOCKER_MANIFEST, &docker).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = put_manifest(&c, &s, repo, &oci_d, DOCKER_MANIFEST, &docker).await;
    assert_eq!(error_code(&r.text().await.expect("body")), "DIGEST_INVALID");
    let r = put_manifest(&c, &s, repo, "bad..tag!", OCI_MANIFEST, &oci).await;
    assert_eq!(error_code(&r.text().await.expect("body")), "TAG_INVALID");
    let r = put_manifest(&c, &s, repo, "v1", OCI_INDEX, &oci).await;
    assert_eq!(
        error_code(&r.text().await.expect("body")),
        "MANIFEST_INVALID",
        "Content-Type disagrees"
    );

    // An index must refer to manifests the repository has.
    let index = |children: &[(&str, usize, &str)]| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": children.iter().map(|(d, n, m)| serde_json::json!({
                "mediaType": m, "digest": d, "size": n,
                "platform": {"os": "linux", "architecture": "amd64"}
            })).collect::<Vec<_>>(),
        }))
        .expect("json")
    };
    let r = put_manifest(
        &c,
        &s,
        repo,
        "multi",
        OCI_INDEX,
        &index(&[(&missing, 10, OCI_MANIFEST)]),
    )
    .await;
    assert_eq!(
        error_code(&r.text().await.expect("body")),
        "MANIFEST_BLOB_UNKNOWN"
    );
    let idx = index(&[
        (&oci_d, oci.len(), OCI_MANIFEST),
        (&docker_d, docker.len(), DOCKER_MANIFEST),
    ]);
    let r = put_manifest(&c, &s, repo, "multi", OCI_INDEX, &idx).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // ---- pull ----
    for (reference, bytes, mt) in [
        ("v1", &oci, OCI_MANIFEST),
        (oci_d.as_str(), &oci, OCI_MANIFEST),
        (docker_d.as_str(), &docker, DOCKER_MANIFEST),
        ("multi", &idx, OCI_INDEX),
    ] {
        let url = s.url(&format!("/v2/{repo}/manifests/{reference}"));
        let r = c.head(&url).send().await.expect("head");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-length"), bytes.len().to_string());
        assert_eq!(header(&r, "docker-content-digest"), sha256(bytes));
        let r = c.get(&url).header("accept", mt).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type"), mt);
        assert_eq!(header(&r, "docker-content-digest"), sha256(bytes));
        assert_eq!(
            &r.bytes().await.expect("body")[..],
            &bytes[..],
            "{reference} byte for byte"
        );
    }
    let r = c
        .get(s.url(&format!("/v2/{repo}/blobs/{layer_d}")))
        .send()
        .await
        .expect("blob");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(&r.bytes().await.expect("body")[..], &layer[..]);
    let r = c
        .get(s.url(&format!("/v2/{repo}/blobs/{layer_d}")))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .expect("range");
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&r, "content-range"),
        format!("bytes 1000-1999/{}", layer.len())
    );
    assert_eq!(&r.bytes().await.expect("body")[..], &layer[1000..2000]);
    let r = c
        .get(s.url(&format!("/v2/{repo}/blobs/{layer_d}")))
        .header("range", "bytes=999999-")
        .send()
        .await
        .expect("range");
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    for (path, status, code) in [
        (
            format!("/v2/{repo}/manifests/nope"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/{repo}/manifests/{missing}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "/v2/no/such/repo/manifests/v1".to_string(),
            404,
            "NAME_UNKNOWN",
        ),
        (format!("/v2/{repo}/blobs/{missing}"), 404, "BLOB_UNKNOWN"),
        (format!("/v2/{other}/blobs/{config_d}"), 404, "BLOB_UNKNOWN"),
        ("/v2/Bad/Name/tags/list".to_string(), 400, "NAME_INVALID"),
        (
            "/v2/no/such/repo/tags/list".to_string(),
            404,
            "NAME_UNKNOWN",
        ),
    ] {
        let r = c.get(s.url(&path)).send().await.expect("get");
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_eq!(error_code(&r.text().await.expect("body")), code, "{path}");
    }

    // ---- content discovery: tags with pagination ----
    for t in ["b", "a", "c", "d"] {
        let r = put_manifest(&c, &s, repo, t, OCI_MANIFEST, &oci).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = c
        .get(s.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .expect("tags");
    let v: serde_json::Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"name": repo, "tags": ["a", "b", "c", "d", "multi", "v1"]})
    );
    let r = c
        .get(s.url(&format!("/v2/{repo}/tags/list?n=2")))
        .send()
        .await
        .expect("tags");
    assert_eq!(
        header(&r, "link"),
        format!("</v2/{repo}/tags/list?n=2&last=b>; rel=\"next\"")
    );
    let v: serde_json::Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(v["tags"], serde_json::json!(["a", "b"]));
    let r = c
        .get(s.url(&format!("/v2/{repo}/tags/list?n=2&last=d")))
        .send()
        .await
        .expect("tags");
    assert!(r.headers().get("link").is_none());
    let v: serde_json::Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(v["tags"], serde_json::json!(["multi", "v1"]));
    let r = c
        .get(s.url(&format!("/v2/{repo}/tags/list?n=0")))
        .send()
        .await
        .expect("tags");
    let v: serde_json::Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(v["tags"], serde_json::json!([]));
    let r = c
        .get(s.url(&format!("/v2/{repo}/tags/list?n=x")))
        .send()
        .await
        .expect("tags");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .get(s.url("/v2/_catalog?n=1"))
        .send()
        .await
        .expect("catalog");
    assert_eq!(
        header(&r, "link"),
        "</v2/_catalog?n=1&last=conformance%2Fnested%2Frepo>; rel=\"next\""
    );
    let v: serde_json::Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(v["repositories"], serde_json::json!([repo]));
    let r = c
        .get(s.url(&format!("/v2/_catalog?last={repo}")))
        .send()
        .await
        .expect("catalog");
    let v: serde_json::Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(v["repositories"], serde_json::json!([other]));

    // ---- content discovery: referrers ----
    let empty_d = push_blob(&c, &s, repo, b"{}").await;
    let artifact = |atype: &str, note: &str| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": atype,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_d, "size": 2},
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": oci_d, "size": oci.len()},
            "annotations": {"note": note},
        }))
        .expect("json")
    };
    let sig = artifact("application/vnd.example.signature", "sig");
    let sbom = artifact("application/vnd.example.sbom", "sbom");
    for a in [&sig, &sbom] {
        let r = put_manifest(&c, &s, repo, &sha256(a), OCI_MANIFEST, a).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "oci-subject"), oci_d);
    }
    let r = c
        .get(s.url(&format!("/v2/{repo}/referrers/{oci_d}")))
        .send()
        .await
        .expect("referrers");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(v["manifests"].as_array().expect("list").len(), 2);
    let r = c
        .get(s.url(&format!(
            "/v2/{repo}/referrers/{oci_d}?artifactType=application/vnd.example.sbom"
        )))
        .send()
        .await
        .expect("referrers");
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let v: serde_json::Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(
        v["manifests"],
        serde_json::json!([{
            "mediaType": OCI_MANIFEST, "digest": sha256(&sbom), "size": sbom.len(),
            "artifactType": "application/vnd.example.sbom", "annotations": {"note": "sbom"}
        }])
    );
    let r = c
        .get(s.url(&format!("/v2/{repo}/referrers/{missing}")))
        .send()
        .await
        .expect("referrers");
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(v["manifests"], serde_json::json!([]));

    // ---- content management ----
    let r = c
        .delete(s.url(&format!("/v2/{repo}/manifests/a")))
        .send()
        .await
        .expect("delete tag");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .get(s.url(&format!("/v2/{repo}/manifests/a")))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c
        .get(s.url(&format!("/v2/{repo}/manifests/b")))
        .send()
        .await
        .expect("get");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "other tags of the manifest stay"
    );
    let r = c
        .delete(s.url(&format!("/v2/{repo}/manifests/{oci_d}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for reference in [oci_d.as_str(), "b", "v1"] {
        let r = c
            .get(s.url(&format!("/v2/{repo}/manifests/{reference}")))
            .send()
            .await
            .expect("get");
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "{reference} after delete"
        );
        assert_eq!(
            error_code(&r.text().await.expect("body")),
            "MANIFEST_UNKNOWN"
        );
    }
    let r = c
        .delete(s.url(&format!("/v2/{repo}/manifests/{oci_d}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A blob whose manifest has not come (yet): DELETE unlinks it, and the collection that
    // follows every deletion frees it — and the blobs of the manifest deleted above.
    let loose_d = push_blob(&c, &s, repo, b"a blob no manifest names").await;
    let r = c
        .delete(s.url(&format!("/v2/{repo}/blobs/{loose_d}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .head(s.url(&format!("/v2/{repo}/blobs/{loose_d}")))
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c
        .delete(s.url(&format!("/v2/{repo}/blobs/{loose_d}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(error_code(&r.text().await.expect("body")), "BLOB_UNKNOWN");
    let blob_file = |d: &str| s.dir.path().join("blobs/sha256").join(&d[7..]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while blob_file(&loose_d).exists() || blob_file(&streamed_d).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "deleted blobs not collected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Cancel an upload.
    assert_eq!(s.registry.upload_count(), 1);
    let r = c.delete(s.url(&cancel)).send().await.expect("cancel");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c.get(s.url(&cancel)).send().await.expect("status");
    assert_eq!(
        error_code(&r.text().await.expect("body")),
        "BLOB_UPLOAD_UNKNOWN"
    );
    assert!(s.temps().is_empty(), "temps left: {:?}", s.temps());
    // Unsupported methods.
    let r = c
        .request(Method::POST, s.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&r.text().await.expect("body")), "UNSUPPORTED");
}
