//! Smoke tests of the test fixtures and of the helpers in `tests/common`:
//! every fixture image is a complete OCI layout (every blob present, with the
//! size and sha256 its descriptor says), and the loopback registry helper can
//! take a push from skopeo.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Every image scripts/build-fixtures.sh makes, and whether it also has a
/// docker-archive.
const IMAGES: &[(&str, bool)] = &[
    ("busybox", true),
    ("uncompressed-busybox", false),
    ("zstd-busybox", false),
    ("umoci-busybox", true),
    ("multiarch", false),
    ("attestation", false),
    ("layers-whiteout", true),
    ("debian-python", false),
    ("hello-python", true),
    ("rust-echo", true),
    ("shell-runtime", true),
    ("aws-base", false),
    ("probe-python", false),
    ("hello-python-buildah", true),
    ("buildah-run", true),
];

/// Built by buildah, which may be unable to run on some machine: the build
/// then leaves images/NAME.SKIPPED instead of failing.
const OPTIONAL: &[&str] = &["hello-python-buildah", "buildah-run"];

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn blob_path(layout: &Path, digest: &str) -> std::path::PathBuf {
    let (algo, hex) = digest
        .split_once(':')
        .unwrap_or_else(|| panic!("bad digest {digest}"));
    assert_eq!(algo, "sha256", "unexpected digest algorithm in {digest}");
    layout.join("blobs").join(algo).join(hex)
}

/// sha256 of every blob of a layout, computed by `sha256sum`.
fn blob_hashes(layout: &Path) -> BTreeMap<String, String> {
    let dir = layout.join("blobs/sha256");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    let out = common::run_ok(Command::new("sha256sum").args(&names));
    out.lines()
        .map(|l| {
            let (hash, path) = l.split_once("  ").expect("sha256sum line");
            let name = Path::new(path)
                .file_name()
                .expect("blob file name")
                .to_string_lossy()
                .into_owned();
            (name, hash.to_owned())
        })
        .collect()
}

/// Checks one descriptor and everything below it; returns how many blobs.
fn check_descriptor(layout: &Path, d: &Value, hashes: &BTreeMap<String, String>) -> usize {
    let digest = d["digest"].as_str().expect("descriptor digest");
    let size = d["size"].as_u64().expect("descriptor size");
    let media_type = d["mediaType"].as_str().unwrap_or("");
    let path = blob_path(layout, digest);
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("blob {}: {e}", path.display()));
    assert_eq!(meta.len(), size, "size of {}", path.display());
    let hex = digest.split_once(':').expect("digest").1;
    assert_eq!(
        hashes.get(hex).map(String::as_str),
        Some(hex),
        "sha256 of {}",
        path.display()
    );
    let mut n = 1;
    if media_type.contains("index") || media_type.contains("manifest.list") {
        let index = read_json(&path);
        let manifests = index["manifests"].as_array().expect("index manifests");
        assert!(!manifests.is_empty(), "empty index {}", path.display());
        for m in manifests {
            n += check_descriptor(layout, m, hashes);
        }
    } else if media_type.contains("manifest") {
        let manifest = read_json(&path);
        n += check_descriptor(layout, &manifest["config"], hashes);
        let layers = manifest["layers"].as_array().expect("manifest layers");
        assert!(!layers.is_empty(), "no layers in {}", path.display());
        let config = read_json(&blob_path(
            layout,
            manifest["config"]["digest"]
                .as_str()
                .expect("config digest"),
        ));
        let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
        assert_eq!(
            diff_ids.len(),
            layers.len(),
            "diff_ids vs layers in {}",
            path.display()
        );
        for l in layers {
            n += check_descriptor(layout, l, hashes);
        }
    }
    n
}

fn check_layout(layout: &Path) {
    assert!(
        layout.join("oci-layout").is_file(),
        "{} has no oci-layout",
        layout.display()
    );
    let index = read_json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().expect("index.json manifests");
    let tags: Vec<_> = manifests
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert_eq!(tags, ["latest"], "tags in {}", layout.display());
    let hashes = blob_hashes(layout);
    let n: usize = manifests
        .iter()
        .map(|m| check_descriptor(layout, m, &hashes))
        .sum();
    assert!(n >= 3, "{} references only {n} blobs", layout.display());
}

#[test]
fn fixture_images_are_complete_oci_layouts() {
    let fixtures = common::fixtures();
    for &(name, has_archive) in IMAGES {
        if OPTIONAL.contains(&name) && fixtures.join(format!("images/{name}.SKIPPED")).exists() {
            eprintln!("fixture {name} was skipped by the build; not checked");
            continue;
        }
        check_layout(&common::oci(name));
        if has_archive {
            let tar = common::docker_archive(name);
            let listing = common::run_ok(Command::new("tar").arg("-tf").arg(&tar));
            assert!(
                listing.lines().any(|l| l == "manifest.json"),
                "{}",
                tar.display()
            );
        }
    }
    // The Docker v2 schema 2 flavour of busybox.
    check_layout(&common::image("busybox").join("oci-v2s2"));
    assert!(common::image("layers-whiteout")
        .join("expected.txt")
        .is_file());
    assert!(common::image("umoci-busybox").join("NOTE").is_file());
}

/// The config of single-manifest fixture image NAME.
fn image_config(name: &str) -> (std::path::PathBuf, Value, Value) {
    let layout = common::oci(name);
    let top = read_json(&layout.join("index.json"));
    let manifest = read_json(&blob_path(
        &layout,
        top["manifests"][0]["digest"].as_str().expect("digest"),
    ));
    let config = read_json(&blob_path(
        &layout,
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    ));
    (layout, manifest, config)
}

/// Entries of layer number I (from 0) of a fixture image, as `tar -t` lists them.
fn layer_entries(name: &str, i: usize) -> Vec<String> {
    let (layout, manifest, _) = image_config(name);
    let digest = manifest["layers"][i]["digest"]
        .as_str()
        .expect("layer digest");
    let out = common::run_ok(
        Command::new("tar")
            .arg("-tf")
            .arg(blob_path(&layout, digest)),
    );
    out.lines().map(str::to_owned).collect()
}

#[test]
fn function_images_have_their_entrypoints() {
    let strs = |v: &Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("string").to_owned())
                .collect()
        })
    };
    // (image, Entrypoint, Cmd, WorkingDir)
    type Case<'a> = (&'a str, &'a [&'a str], Option<&'a [&'a str]>, &'a str);
    let cases: &[Case] = &[
        ("rust-echo", &["/var/task/bootstrap"], None, "/var/task"),
        ("shell-runtime", &["/var/task/bootstrap"], None, "/var/task"),
        (
            "aws-base",
            &["/lambda-entrypoint.sh"],
            Some(&["app.handler"]),
            "/var/task",
        ),
        (
            "probe-python",
            &["/usr/bin/python3", "-m", "awslambdaric"],
            Some(&["probe.handler"]),
            "/function",
        ),
    ];
    for &(name, entrypoint, cmd, workdir) in cases {
        let (_, _, config) = image_config(name);
        let c = &config["config"];
        assert_eq!(
            strs(&c["Entrypoint"]),
            Some(entrypoint.iter().map(|s| s.to_string()).collect()),
            "{name} Entrypoint"
        );
        assert_eq!(
            strs(&c["Cmd"]),
            cmd.map(|c| c.iter().map(|s| s.to_string()).collect()),
            "{name} Cmd"
        );
        assert_eq!(c["WorkingDir"].as_str(), Some(workdir), "{name} WorkingDir");
        assert_eq!(config["architecture"], "amd64", "{name}");
    }

    // rust-echo: one layer, the binary plus the loader and libraries, no shell.
    let rust = layer_entries("rust-echo", 0);
    for want in [
        "./var/task/bootstrap",
        "./lib64/ld-linux-x86-64.so.2",
        "./lib/x86_64-linux-gnu/libc.so.6",
        "./etc/passwd",
        "./tmp/",
    ] {
        assert!(
            rust.iter().any(|e| e == want),
            "rust-echo lacks {want}: {rust:?}"
        );
    }
    assert!(
        !rust.iter().any(|e| e == "./bin/sh"),
        "rust-echo has a shell"
    );
    // shell-runtime: the busybox layer (shared with the busybox image) + bootstrap.
    let (_, shell, _) = image_config("shell-runtime");
    let (_, busybox, _) = image_config("busybox");
    assert_eq!(shell["layers"][0]["digest"], busybox["layers"][0]["digest"]);
    assert!(layer_entries("shell-runtime", 1)
        .iter()
        .any(|e| e == "./var/task/bootstrap"));
    // aws-base: the busybox layer + AWS's base-image layout, the real emulator included.
    let (_, aws, _) = image_config("aws-base");
    assert_eq!(aws["layers"][0]["digest"], busybox["layers"][0]["digest"]);
    let aws = layer_entries("aws-base", 1);
    for want in [
        "./lambda-entrypoint.sh",
        "./usr/local/bin/aws-lambda-rie",
        "./var/runtime/bootstrap",
    ] {
        assert!(
            aws.iter().any(|e| e == want),
            "aws-base lacks {want}: {aws:?}"
        );
    }
    // probe-python shares its base layer with hello-python.
    let (_, probe, _) = image_config("probe-python");
    let (_, hello, _) = image_config("hello-python");
    assert_eq!(probe["layers"][0]["digest"], hello["layers"][0]["digest"]);
    assert!(layer_entries("probe-python", 1)
        .iter()
        .any(|e| e == "./function/probe.py"));
}

#[test]
fn runtime_interface_emulator_is_installed() {
    let bin = common::fixtures().join("bin");
    for tool in ["aws-lambda-rie", "cargo-lambda"] {
        let p = bin.join(tool);
        let meta = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(meta.is_file(), "{}", p.display());
        assert!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0,
            "{} is not executable",
            p.display()
        );
    }
    let versions = std::fs::read_to_string(bin.join("VERSIONS")).expect("bin/VERSIONS");
    assert!(versions.contains("aws-sam-cli"), "{versions}");
    assert!(versions.contains("cargo-lambda"), "{versions}");
    assert!(common::repo_root().join("scripts/rie-run.sh").is_file());
}

#[test]
fn index_fixtures_have_the_expected_platforms() {
    let platforms = |name: &str| -> Vec<String> {
        let layout = common::oci(name);
        let top = read_json(&layout.join("index.json"));
        let index = read_json(&blob_path(
            &layout,
            top["manifests"][0]["digest"].as_str().expect("digest"),
        ));
        index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .map(|m| {
                format!(
                    "{}/{}",
                    m["platform"]["os"].as_str().unwrap_or("?"),
                    m["platform"]["architecture"].as_str().unwrap_or("?")
                )
            })
            .collect()
    };
    assert_eq!(platforms("multiarch"), ["linux/amd64", "linux/arm64"]);
    assert_eq!(platforms("attestation"), ["linux/amd64", "unknown/unknown"]);
}

#[test]
fn registry_helper_takes_pushes() {
    let registry = common::Registry::start();
    let busybox = common::oci("busybox");
    let busybox = busybox.to_str().expect("utf-8 path");
    registry.push(busybox, "busybox:latest", None);
    registry.push(busybox, "busybox:v2s2", Some("v2s2"));
    let multiarch = common::oci("multiarch");
    registry.push(
        multiarch.to_str().expect("utf-8 path"),
        "multiarch:latest",
        None,
    );

    let (code, body) =
        common::http_get(&registry.addr(), "/v2/busybox/tags/list").expect("GET tags");
    assert_eq!(code, 200, "{body}");
    let tags: Value = serde_json::from_str(&body).expect("tags JSON");
    let mut tags: Vec<_> = tags["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, ["latest", "v2s2"]);
    let (code, body) = common::http_get(&registry.addr(), "/v2/_catalog").expect("GET catalog");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("multiarch"), "{body}");
    assert!(registry.storage().is_dir());
}

#[test]
fn data_dir_and_binary_helpers() {
    let data = common::DataDir::new();
    let args = data.args();
    assert_eq!(args[0], "--data-dir");
    assert_eq!(Path::new(&args[1]), data.path());
    assert!(data.path().is_dir());
    common::run_ok(data.lambox().arg("--help"));
}
