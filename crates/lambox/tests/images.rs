//! End-to-end: the real `lambox` binary on real images (built offline by
//! scripts/build-fixtures.sh), from every kind of source, including a real loopback registry.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{docker_archive, oci, oci_ref, run_ok, DataDir, Registry};
use serde_json::Value;

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn inspect(data: &DataDir, image: &str) -> Value {
    let out = run_ok(data.lambox().args(["inspect", image]));
    serde_json::from_str(&out).expect("inspect prints JSON")
}

fn diff_ids(v: &Value) -> Vec<String> {
    v["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|l| l["DiffId"].as_str().expect("DiffId").to_string())
        .collect()
}

/// Load or pull, returning the digest printed on stdout.
fn store(data: &DataDir, verb: &str, source: &str, extra: &[&str]) -> String {
    let out = run_ok(data.lambox().args([verb, source]).args(extra));
    let digest = out.trim().to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest:?}"
    );
    digest
}

fn layer_dirs(data: &DataDir) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(data.path().join("layers"))
        .expect("layers dir")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

#[test]
fn every_source_stores_the_same_image_once() {
    let data = DataDir::new();
    let registry = Registry::start();
    registry.push(
        &oci("busybox").display().to_string(),
        "fn/busybox:oci",
        None,
    );
    registry.push(
        &oci("busybox").display().to_string(),
        "fn/busybox:v2s2",
        Some("v2s2"),
    );

    let sources = [
        ("load", oci_ref("busybox")),
        (
            "load",
            format!(
                "oci:{}:latest",
                oci("busybox").with_file_name("oci-v2s2").display()
            ),
        ),
        (
            "load",
            format!("docker-archive:{}", docker_archive("busybox").display()),
        ),
        ("pull", registry.reference("fn/busybox:oci")),
        ("pull", registry.reference("fn/busybox:v2s2")),
    ];
    let mut seen = Vec::new();
    for (verb, source) in &sources {
        let digest = store(
            &data,
            verb,
            source,
            &["--tag", "x"][..usize::from(*verb == "load") * 2],
        );
        let v = inspect(&data, &digest);
        assert_eq!(v["Os"], "linux", "{source}");
        assert_eq!(v["Architecture"], "amd64", "{source}");
        assert_eq!(
            v["Cmd"],
            serde_json::json!(["/bin/sh", "-c", "echo hi"]),
            "{source}"
        );
        seen.push((
            source.clone(),
            v["ConfigDigest"].clone(),
            diff_ids(&v),
            v["MediaType"].clone(),
        ));
    }
    for (source, config, ids, _) in &seen[1..] {
        assert_eq!(config, &seen[0].1, "config of {source}");
        assert_eq!(ids, &seen[0].2, "layers of {source}");
    }
    // The Docker v2 schema 2 push keeps its manifest type through the registry.
    assert_eq!(
        seen[4].3,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(seen[3].3, "application/vnd.oci.image.manifest.v1+json");
    // One layer, unpacked once, whatever the source.
    assert_eq!(layer_dirs(&data).len(), 1);
    assert!(layer_dirs(&data)[0].join("bin/busybox").is_file());
    // The registry image is recorded under its reference.
    let list: Value =
        serde_json::from_str(&run_ok(data.lambox().args(["images", "--json"]))).expect("json");
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .flat_map(|e| {
            e["Names"]
                .as_array()
                .expect("Names")
                .iter()
                .map(|n| n.as_str().expect("name"))
        })
        .collect();
    assert!(
        names.contains(&registry.reference("fn/busybox:v2s2").as_str()),
        "{names:?}"
    );
    let table = run_ok(data.lambox().arg("images"));
    assert!(
        table.starts_with("NAME") && table.contains("linux/amd64"),
        "{table}"
    );
}

#[test]
fn python_lambda_image_from_a_registry_is_deployable() {
    let data = DataDir::new();
    let registry = Registry::start();
    registry.push(
        &oci("debian-python").display().to_string(),
        "base/python:bookworm",
        Some("v2s2"),
    );
    registry.push(
        &oci("hello-python").display().to_string(),
        "fn/hello:v1",
        Some("v2s2"),
    );

    // The base first; then the function image shares it, so only the new layer is fetched.
    run_ok(
        data.lambox()
            .args(["pull", "-q", &registry.reference("base/python:bookworm")]),
    );
    let out = output(
        data.lambox()
            .args(["pull", &registry.reference("fn/hello:v1")]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2 layers") && stderr.contains("1 already stored"),
        "{stderr}"
    );
    let v = inspect(&data, &registry.reference("fn/hello:v1"));
    let fetched: u64 = stderr
        .split(" bytes fetched")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("fetched bytes in the summary");
    let top = v["Layers"][1]["Size"].as_u64().expect("size");
    assert_eq!(fetched, top, "only the function layer is fetched: {stderr}");
    assert_eq!(layer_dirs(&data).len(), 2);

    assert_eq!(
        v["Entrypoint"],
        serde_json::json!(["/usr/bin/python3", "-m", "awslambdaric"])
    );
    assert_eq!(v["Cmd"], serde_json::json!(["app.handler"]));
    assert_eq!(v["WorkingDir"], "/function");
    assert!(v["Size"].as_u64().expect("size") > 100_000_000);

    let lint = output(
        data.lambox()
            .args(["lint", "--json", &registry.reference("fn/hello:v1")]),
    );
    let report: Value = serde_json::from_slice(&lint.stdout).expect("lint json");
    assert!(lint.status.success(), "{report}");
    assert_eq!(report["Deployable"], true, "{report}");
    let codes: Vec<&str> = report["Findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["Code"].as_str().expect("code"))
        .collect();
    assert!(!codes.contains(&"no-runtime-interface-client"), "{codes:?}");

    // The same image with a broken override is not deployable, and says why.
    let lint = output(data.lambox().args([
        "lint",
        &registry.reference("fn/hello:v1"),
        "--entrypoint",
        "/usr/bin/python9",
    ]));
    assert_eq!(lint.status.code(), Some(1));
    let text = String::from_utf8_lossy(&lint.stdout);
    assert!(
        text.contains("entrypoint-missing") && text.contains("/usr/bin/python9"),
        "{text}"
    );
    let lint = output(data.lambox().args([
        "lint",
        &registry.reference("fn/hello:v1"),
        "--workdir",
        "/nope",
    ]));
    assert_eq!(lint.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&lint.stdout).contains("workdir-missing"));
}

#[test]
fn buildah_built_image_with_stray_entries_loads_and_lints() {
    let data = DataDir::new();
    let digest = store(
        &data,
        "load",
        &format!(
            "docker-archive:{}",
            docker_archive("hello-python-buildah").display()
        ),
        &[],
    );
    let lint = output(data.lambox().args(["lint", &digest]));
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stdout)
    );
    // buildah's stray etc/hostname (mode 0700) made it into a layer, as it was.
    let has_hostname = layer_dirs(&data)
        .iter()
        .any(|d| d.join("etc/hostname").exists());
    assert!(has_hostname);
}

struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn whiteouts_and_opaque_dirs_are_stored_in_overlay_form() {
    let data = DataDir::new();
    let digest = store(&data, "load", &oci_ref("layers-whiteout"), &[]);
    let v = inspect(&data, &digest);
    let layers: Vec<PathBuf> = diff_ids(&v)
        .iter()
        .map(|d| {
            data.path()
                .join("layers")
                .join(d.trim_start_matches("sha256:"))
        })
        .collect();
    // Layer 2 deleted /a/x: a 0/0 character device; and made /b opaque: the xattr.
    let wh = std::fs::symlink_metadata(layers[1].join("a/x")).expect("whiteout");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "{wh:?}");
    let opaque = Command::new("getfattr")
        .args(["--only-values", "-n", "trusted.overlay.opaque"])
        .arg(layers[1].join("b"))
        .output();
    if let Ok(o) = opaque {
        assert_eq!(String::from_utf8_lossy(&o.stdout), "y");
    }
    // The kernel agrees: mount the layers as the sandbox will, and look.
    let mnt = tempfile::tempdir().expect("mountpoint");
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let status = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("ro,lowerdir={}", lower.join(":")))
        .arg(mnt.path())
        .status()
        .expect("mount");
    assert!(
        status.success(),
        "overlay mount of the stored layers failed"
    );
    let _guard = Mount(mnt.path().to_path_buf());
    let names = |p: &str| {
        let mut v: Vec<String> = std::fs::read_dir(mnt.path().join(p))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("a"), ["y", "z"]);
    assert_eq!(names("b"), ["r"]);
    let c: &Path = &mnt.path().join("c");
    let file = std::fs::metadata(c.join("file")).expect("c/file");
    assert_eq!(file.nlink(), 2, "c/hl is a hardlink of c/file");
    assert_eq!(
        std::fs::read_link(c.join("sym")).expect("sym"),
        Path::new("/c/file")
    );
    assert_eq!(
        std::fs::metadata(c.join("suid")).expect("suid").mode() & 0o7777,
        0o4755
    );
    // Every path the fixture's builder expects in the merged view is there, as it expects.
    let expected = std::fs::read_to_string(common::image("layers-whiteout").join("expected.txt"))
        .expect("expected.txt");
    let mut checked = 0;
    for line in expected.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (path, kind, mode, owner) = (f[0], f[1], f[2], f[3]);
        let p = mnt.path().join(path.trim_start_matches('/'));
        let meta = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(format!("{}:{}", meta.uid(), meta.gid()), owner, "{path}");
        match kind {
            "dir" => assert!(meta.is_dir(), "{path}"),
            "symlink" => assert_eq!(
                std::fs::read_link(&p).expect("link").to_str(),
                f.get(4).copied(),
                "{path}"
            ),
            _ => {
                assert!(meta.is_file(), "{path} is {kind}");
                assert_eq!(
                    std::fs::read_to_string(&p).expect("read").trim_end(),
                    f.get(4).copied().unwrap_or(""),
                    "{path}"
                );
            }
        }
        if kind != "symlink" {
            assert_eq!(format!("{:04o}", meta.mode() & 0o7777), mode, "{path}");
        }
        checked += 1;
    }
    assert!(checked >= 10, "expected.txt lists {checked} paths");
}

#[test]
fn multi_platform_images_are_refused_unless_one_is_chosen() {
    let data = DataDir::new();
    let out = output(data.lambox().args(["load", &oci_ref("multiarch")]));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64") && err.contains("--platform"),
        "{err}"
    );
    assert!(layer_dirs(&data).is_empty());

    let digest = store(
        &data,
        "load",
        &oci_ref("multiarch"),
        &["--platform", "linux/arm64"],
    );
    assert_eq!(inspect(&data, &digest)["Architecture"], "arm64");
    let digest = store(
        &data,
        "load",
        &oci_ref("multiarch"),
        &["--platform", "linux/amd64"],
    );
    assert_eq!(inspect(&data, &digest)["Architecture"], "amd64");

    // The same through a registry, and through lint.
    let registry = Registry::start();
    registry.push(
        &oci("multiarch").display().to_string(),
        "multi/arch:v1",
        None,
    );
    let out = output(
        data.lambox()
            .args(["pull", &registry.reference("multi/arch:v1")]),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("multi-platform"));
    let digest = store(
        &data,
        "pull",
        &registry.reference("multi/arch:v1"),
        &["--platform", "linux/arm64"],
    );
    assert_eq!(inspect(&data, &digest)["Architecture"], "arm64");
    let fresh = DataDir::new();
    let lint = output(
        fresh
            .lambox()
            .args(["lint", "--json", &oci_ref("multiarch")]),
    );
    assert_eq!(lint.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&lint.stdout).expect("lint json");
    assert_eq!(
        report["Findings"][0]["Code"], "unsupported-platform",
        "{report}"
    );
}

#[test]
fn a_provenance_attestation_does_not_make_an_image_multi_platform() {
    let data = DataDir::new();
    let digest = store(&data, "load", &oci_ref("attestation"), &[]);
    let v = inspect(&data, &digest);
    assert_eq!(v["Architecture"], "amd64");
    assert_eq!(v["Layers"].as_array().expect("layers").len(), 1);
}

#[test]
fn zstd_uncompressed_and_umoci_layers_load() {
    let data = DataDir::new();
    for name in ["zstd-busybox", "uncompressed-busybox", "umoci-busybox"] {
        let digest = store(&data, "load", &oci_ref(name), &["--tag", name]);
        let v = inspect(&data, &digest);
        let media: Vec<&str> = v["Layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["MediaType"].as_str().expect("media type"))
            .collect();
        match name {
            "zstd-busybox" => assert!(media.iter().all(|m| m.ends_with("+zstd")), "{media:?}"),
            "uncompressed-busybox" => {
                assert!(media.iter().all(|m| m.ends_with(".tar")), "{media:?}")
            }
            _ => {}
        }
        let has_busybox = v["Layers"].as_array().expect("layers").iter().any(|l| {
            let id = l["DiffId"]
                .as_str()
                .expect("diff id")
                .trim_start_matches("sha256:");
            data.path()
                .join("layers")
                .join(id)
                .join("bin/busybox")
                .is_file()
        });
        assert!(has_busybox, "{name}");
    }
}

#[test]
fn rmi_untags_then_deletes_and_frees_layers() {
    let data = DataDir::new();
    store(
        &data,
        "load",
        &oci_ref("busybox"),
        &["--tag", "localhost/a:1"],
    );
    store(
        &data,
        "load",
        &oci_ref("busybox"),
        &["--tag", "localhost/a:2"],
    );
    assert_eq!(layer_dirs(&data).len(), 1);
    let out = run_ok(data.lambox().args(["rmi", "localhost/a:1"]));
    assert!(
        out.contains("untagged: localhost/a:1") && !out.contains("deleted"),
        "{out}"
    );
    assert_eq!(layer_dirs(&data).len(), 1, "still used by localhost/a:2");
    let out = run_ok(data.lambox().args(["rmi", "localhost/a:2"]));
    assert!(out.contains("deleted: sha256:"), "{out}");
    assert!(layer_dirs(&data).is_empty());
    let blobs = std::fs::read_dir(data.path().join("blobs/sha256"))
        .expect("blobs")
        .count();
    assert_eq!(blobs, 0);
    let out = output(data.lambox().args(["inspect", "localhost/a:2"]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "lambox: error: image \"localhost/a:2\" is not in the store"
    );
    run_ok(data.lambox().arg("prune"));
}

#[test]
fn bad_references_get_one_line_errors() {
    let data = DataDir::new();
    for (args, want) in [
        (vec!["pull", "hello"], "expected HOST[:PORT]/REPO"),
        (vec!["pull", "127.0.0.1:1/Hello"], "invalid repository name"),
        (
            vec!["load", "oci:/nonexistent/layout"],
            "/nonexistent/layout",
        ),
        (
            vec!["load", "docker-archive:/nonexistent.tar"],
            "/nonexistent.tar",
        ),
        (vec!["pull", "127.0.0.1:1/nothing:here"], "127.0.0.1:1"),
    ] {
        let out = output(data.lambox().args(&args));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("lambox: error: ") && err.contains(want),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn an_oci_archive_loads_like_its_layout() {
    let data = DataDir::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("busybox-oci.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(oci("busybox"))
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
    let from_archive = store(
        &data,
        "load",
        &format!("oci-archive:{}:latest", archive.display()),
        &[],
    );
    let from_layout = store(&data, "load", &oci_ref("busybox"), &[]);
    assert_eq!(from_archive, from_layout, "same manifest, same image");
    let out = output(data.lambox().args([
        "load",
        &format!("oci-archive:{}:nosuchtag", archive.display()),
    ]));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nosuchtag") && err.contains("latest"), "{err}");
}
