//! Uploads that go wrong: a client that hangs up mid-chunk (then resumes), an abandoned
//! session (expired with its bytes), concurrent uploads of the same blob.

mod common;

use std::time::Duration;

use common::{client, error_code, sha256, Server};
use lambox_registry::RegistryConfig;
use tokio::io::AsyncWriteExt;

/// Send a request whose body is cut off after `sent` of `len` bytes, then hang up.
async fn send_truncated(s: &Server, method: &str, path: &str, body: &[u8], len: usize) {
    let mut sock = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n",
        s.addr
    );
    sock.write_all(head.as_bytes()).await.expect("head");
    sock.write_all(body).await.expect("body");
    sock.flush().await.expect("flush");
    drop(sock);
}

async fn upload_range(s: &Server, loc: &str) -> Option<String> {
    let r = client().get(s.url(loc)).send().await.expect("status");
    r.headers()
        .get("range")
        .map(|v| v.to_str().expect("ascii").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_chunk_keeps_what_arrived_and_the_client_resumes() {
    let s = Server::start().await;
    let c = client();
    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let d = sha256(&blob);
    let r = c
        .post(s.url("/v2/resume/me/blobs/uploads/"))
        .send()
        .await
        .expect("start");
    let loc = r.headers()["location"].to_str().expect("ascii").to_string();
    send_truncated(&s, "PATCH", &loc, &blob[..1_234_567], blob.len()).await;
    // The server notices the hang-up and keeps what arrived.
    let mut range = None;
    for _ in 0..100 {
        range = upload_range(&s, &loc).await;
        if range.as_deref() == Some("0-1234566") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(range.as_deref(), Some("0-1234566"));
    // Resume from the offset the registry reported, and finish.
    let r = c
        .patch(s.url(&loc))
        .header("content-range", format!("1234567-{}", blob.len() - 1))
        .body(blob[1_234_567..].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 202);
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 201);
    let r = c
        .get(s.url(&format!("/v2/resume/me/blobs/{d}")))
        .send()
        .await
        .expect("get");
    assert_eq!(&r.bytes().await.expect("body")[..], &blob[..]);
    assert!(s.temps().is_empty(), "temps left: {:?}", s.temps());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_monolithic_upload_stores_nothing_and_a_retry_succeeds() {
    let s = Server::start().await;
    let blob = vec![7u8; 2_000_000];
    let d = sha256(&blob);
    let path = format!("/v2/mono/blobs/uploads/?digest={d}");
    send_truncated(&s, "POST", &path, &blob[..500_000], blob.len()).await;
    let mut left = s.temps();
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = s.temps();
    }
    assert!(left.is_empty(), "temps left: {left:?}");
    assert!(!s.dir.path().join("blobs/sha256").join(&d[7..]).exists());
    let r = client()
        .head(s.url(&format!("/v2/mono/blobs/{d}")))
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), 404);
    // Retry: the whole upload again.
    let r = client()
        .post(s.url(&path))
        .body(blob.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    let r = client()
        .get(s.url(&format!("/v2/mono/blobs/{d}")))
        .send()
        .await
        .expect("get");
    assert_eq!(&r.bytes().await.expect("body")[..], &blob[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_sessions_expire_with_their_bytes() {
    let s = Server::start_with(RegistryConfig {
        upload_timeout: Duration::from_millis(300),
        ..RegistryConfig::default()
    })
    .await;
    let c = client();
    let r = c
        .post(s.url("/v2/abandoned/blobs/uploads/"))
        .send()
        .await
        .expect("start");
    let loc = r.headers()["location"].to_str().expect("ascii").to_string();
    let r = c
        .patch(s.url(&loc))
        .body(vec![1u8; 1000])
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 202);
    assert_eq!(s.temps().len(), 1);
    assert_eq!(
        s.registry.expire_uploads().await,
        0,
        "not idle long enough yet"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(s.registry.expire_uploads().await, 1);
    assert!(s.temps().is_empty(), "temps left: {:?}", s.temps());
    let r = c.get(s.url(&loc)).send().await.expect("status");
    assert_eq!(r.status(), 404);
    assert_eq!(
        error_code(&r.text().await.expect("body")),
        "BLOB_UPLOAD_UNKNOWN"
    );
    // The reaper task does the same on its own.
    let _reaper = s.registry.spawn_upload_reaper();
    let r = c
        .post(s.url("/v2/abandoned/blobs/uploads/"))
        .send()
        .await
        .expect("start");
    assert_eq!(r.status(), 202);
    assert_eq!(s.registry.upload_count(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.registry.upload_count(), 0);
    assert!(s.temps().is_empty(), "temps left: {:?}", s.temps());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_of_one_blob_into_many_repositories() {
    let s = Server::start().await;
    let blob: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
    let d = sha256(&blob);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (url, start, blob, d) = (
            s.url(&format!("/v2/concurrent/r{i}/blobs/uploads/?digest={d}")),
            s.url(&format!("/v2/concurrent/r{i}/blobs/uploads/")),
            blob.clone(),
            d.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let c = client();
            if i % 2 == 0 {
                c.post(url).body(blob).send().await.expect("post").status()
            } else {
                let r = c.post(start).send().await.expect("start");
                let loc = r.headers()["location"].to_str().expect("ascii").to_string();
                let base = url.split("/v2/").next().expect("base").to_string();
                c.put(format!("{base}{loc}?digest={d}"))
                    .body(blob)
                    .send()
                    .await
                    .expect("put")
                    .status()
            }
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 201);
    }
    for i in 0..8 {
        let r = client()
            .get(s.url(&format!("/v2/concurrent/r{i}/blobs/{d}")))
            .send()
            .await
            .expect("get");
        assert_eq!(&r.bytes().await.expect("body")[..], &blob[..]);
    }
    assert!(s.temps().is_empty(), "temps left: {:?}", s.temps());
}
