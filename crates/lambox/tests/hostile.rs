//! Hostile and broken images, end to end: the real `lambox` binary on OCI image layouts that
//! these tests write byte by byte (layer tars with absolute and `..` names, symlink and hardlink
//! escapes, a gzip bomb, corrupt and truncated blobs, malformed manifests), and on real images
//! in a loopback registry (a pull killed with SIGKILL, two concurrent pulls sharing a layer).
//!
//! Every refusal must be one line on stderr naming the object and the reason, must write
//! nothing outside the data directory, and must leave the store clean: no image, nothing under
//! `layers/` or `tmp/`, no blob of the refused image.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lambox_image::manifest::{OCI_CONFIG, OCI_LAYER, OCI_LAYER_GZIP, OCI_MANIFEST};
use lambox_image::Digest;
use serde_json::{json, Value};
use tar::EntryType;

// ---------------------------------------------------------------------------------------------
// Layer tars, written header by header (tar::Builder refuses the names these tests need).

/// One tar entry: a GNU header with NAME and LINK written verbatim, then DATA padded to a block.
fn entry(name: &str, kind: EntryType, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        assert!(
            name.len() <= old.name.len() && link.len() <= old.linkname.len(),
            "test bug: {name:?} -> {link:?} does not fit a plain tar header"
        );
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn file(name: &str, data: &[u8]) -> Vec<u8> {
    entry(name, EntryType::Regular, "", data)
}

fn dir(name: &str) -> Vec<u8> {
    entry(name, EntryType::Directory, "", b"")
}

fn symlink(name: &str, target: &str) -> Vec<u8> {
    entry(name, EntryType::Symlink, target, b"")
}

fn hardlink(name: &str, target: &str) -> Vec<u8> {
    entry(name, EntryType::Link, target, b"")
}

/// The entries, then the end-of-archive marker (two zero blocks).
fn tar(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = entries.concat();
    out.extend_from_slice(&[0; 1024]);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

/// Bytes that do not compress (xorshift), so a gzip of them is about as long as they are.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// OCI image layouts.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
}

/// A layer blob as it goes into the layout.
#[derive(Debug, Clone)]
struct Layer {
    blob: Vec<u8>,
    /// What the config lists for it.
    diff_id: Digest,
    media_type: String,
}

impl Layer {
    fn new(tar: &[u8], compression: Compression) -> Layer {
        let (blob, media_type) = match compression {
            Compression::None => (tar.to_vec(), OCI_LAYER),
            Compression::Gzip => (gzip(tar), OCI_LAYER_GZIP),
        };
        Layer {
            blob,
            diff_id: Digest::of(tar),
            media_type: media_type.to_owned(),
        }
    }
}

/// What [`write_image`] wrote.
#[derive(Debug, Clone)]
struct Image {
    manifest: Digest,
    config: Digest,
    layers: Vec<Digest>,
}

impl Image {
    fn blobs(&self) -> Vec<Digest> {
        let mut all = vec![self.manifest.clone(), self.config.clone()];
        all.extend(self.layers.iter().cloned());
        all
    }
}

fn init_layout(dir: &Path) {
    fs::create_dir_all(dir.join("blobs/sha256")).expect("create layout");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
}

fn put_blob(dir: &Path, bytes: &[u8]) -> Digest {
    let d = Digest::of(bytes);
    fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).expect("write blob");
    d
}

/// `index.json` with one manifest, tagged `latest`.
fn put_index(dir: &Path, manifest: &Digest, size: usize) {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": manifest.to_string(),
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec_pretty(&index).expect("json"),
    )
    .expect("index.json");
}

/// A linux/amd64 config without `rootfs` (which [`write_image`] fills in).
fn base_config() -> Value {
    json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
    })
}

/// Write a complete OCI layout of one image into DIR: blobs with their real digests, a config
/// (CONFIG, plus `rootfs` with the layers' diff_ids unless CONFIG has one), a manifest, and
/// `index.json` tagging it `latest`.
fn write_image(dir: &Path, layers: &[Layer], mut config: Value) -> Image {
    init_layout(dir);
    if config.get("rootfs").is_none() {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
        config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    }
    let config_bytes = serde_json::to_vec(&config).expect("json");
    let config_digest = put_blob(dir, &config_bytes);
    let mut digests = Vec::new();
    let descriptors: Vec<Value> = layers
        .iter()
        .map(|l| {
            let d = put_blob(dir, &l.blob);
            digests.push(d.clone());
            json!({"mediaType": l.media_type, "digest": d.to_string(), "size": l.blob.len()})
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": config_digest.to_string(),
            "size": config_bytes.len(),
        },
        "layers": descriptors,
    });
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("json");
    let manifest_digest = put_blob(dir, &manifest_bytes);
    put_index(dir, &manifest_digest, manifest_bytes.len());
    Image {
        manifest: manifest_digest,
        config: config_digest,
        layers: digests,
    }
}

fn read_json(path: &Path) -> Value {
    let text = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// The manifest an OCI layout tags `latest` (its only image, in the fixtures).
fn layout_manifest(layout: &Path) -> Value {
    let index = read_json(&layout.join("index.json"));
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("index digest");
    read_json(&blob_file(layout, digest))
}

fn blob_file(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    layout.join("blobs/sha256").join(hex)
}

/// The diff_ids of the image an OCI layout tags `latest`.
fn layout_diff_ids(layout: &Path) -> Vec<String> {
    let manifest = layout_manifest(layout);
    let config = read_json(&blob_file(
        layout,
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    ));
    config["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .iter()
        .map(|d| d.as_str().expect("diff_id").to_owned())
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read dir") {
        let e = e.expect("dir entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A throw-away world per test: a data dir with a sentinel directory next to it, and an escape
// directory in the temp dir that a careless unpack could write into.

#[derive(Debug)]
struct Scratch {
    /// `TMP/lambox-hostile-XXXX/` with `data/`, `sentinel/`, `layout/`.
    root: tempfile::TempDir,
    /// `TMP/lambox-escape-XXXX/`: exists, and must stay as the test left it.
    escape: tempfile::TempDir,
    /// `TMP/lambox-escape-XXXX-absent`: must never come to exist.
    absent: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let root = tempfile::Builder::new()
            .prefix("lambox-hostile-")
            .tempdir()
            .expect("temp dir");
        for d in ["data", "sentinel", "layout"] {
            fs::create_dir(root.path().join(d)).expect("mkdir");
        }
        let escape = tempfile::Builder::new()
            .prefix("lambox-escape-")
            .tempdir()
            .expect("temp dir");
        let mut absent = escape.path().as_os_str().to_owned();
        absent.push("-absent");
        Scratch {
            root,
            escape,
            absent: PathBuf::from(absent),
        }
    }

    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn sentinel(&self) -> PathBuf {
        self.root.path().join("sentinel")
    }

    fn layout(&self) -> PathBuf {
        self.root.path().join("layout")
    }

    fn escape(&self) -> &Path {
        self.escape.path()
    }

    /// `lambox --data-dir DATA`, run from inside the sentinel directory (so a write relative to
    /// the working directory would show up there too).
    fn lambox(&self) -> Command {
        let mut cmd = common::lambox();
        cmd.arg("--data-dir")
            .arg(self.data())
            .current_dir(self.sentinel());
        cmd
    }

    fn load_command(&self, global: &[&str]) -> Command {
        let mut cmd = self.lambox();
        cmd.args(global)
            .arg("load")
            .arg(format!("oci:{}:latest", self.layout().display()))
            .args(["--tag", "localhost/hostile:latest"]);
        cmd
    }

    /// `lambox load oci:LAYOUT:latest` (progress on: stderr must still be one line on failure).
    fn load(&self) -> Output {
        self.load_command(&[]).output().expect("run lambox load")
    }

    /// `..` components leading from a layer being unpacked (`DATA/tmp/NAME/`) up to `/`.
    fn up_to_root(&self) -> String {
        let data = self.data().canonicalize().expect("canonicalize");
        let depth = data
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .count()
            + 2;
        vec![".."; depth].join("/")
    }

    /// The escape directory as a path relative to `/`.
    fn escape_rel(&self) -> String {
        let p = self.escape().canonicalize().expect("canonicalize");
        p.to_str()
            .expect("utf-8 temp dir")
            .trim_start_matches('/')
            .to_owned()
    }

    fn images(&self) -> Vec<Value> {
        let out = common::run_ok(self.lambox().args(["images", "--json"]));
        serde_json::from_str::<Value>(&out)
            .expect("images --json")
            .as_array()
            .expect("images --json is an array")
            .clone()
    }

    /// Nothing was written outside the data dir: the sentinel is empty, the escape directory
    /// holds exactly KEEP (files the test put there, with their contents), the absent path
    /// does not exist.
    fn assert_nothing_outside(&self, keep: &[(&str, &[u8])]) {
        assert_eq!(
            listing(&self.sentinel()),
            Vec::<String>::new(),
            "something was written next to the data dir"
        );
        let expected: Vec<String> = keep.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(
            listing(self.escape()),
            expected,
            "something was written into {}",
            self.escape().display()
        );
        for (name, content) in keep {
            let p = self.escape().join(name);
            assert_eq!(
                fs::read(&p).expect("read"),
                *content,
                "{} changed",
                p.display()
            );
            assert_eq!(
                fs::metadata(&p).expect("stat").nlink(),
                1,
                "{} got a hardlink",
                p.display()
            );
        }
        assert!(
            fs::symlink_metadata(&self.absent).is_err(),
            "{} was created",
            self.absent.display()
        );
    }

    /// The store holds nothing of IMAGE: `tmp/` and `layers/` are empty, no blob of it is stored,
    /// and `lambox images` lists nothing. (`tmp/` is checked first: opening the store for
    /// `lambox images` would remove a dead process's temps.)
    fn assert_store_clean(&self, image: &Image) {
        let data = self.data();
        assert_eq!(listing(&data.join("tmp")), Vec::<String>::new(), "tmp/");
        assert_eq!(
            listing(&data.join("layers")),
            Vec::<String>::new(),
            "layers/"
        );
        let blobs = listing(&data.join("blobs/sha256"));
        for d in image.blobs() {
            assert!(
                !blobs.contains(&d.hex()),
                "blob {d} of the refused image is stored"
            );
        }
        assert_eq!(self.images(), Vec::<Value>::new(), "images --json");
    }
}

/// File names in DIR, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Bytes on disk under PATH (allocated blocks, not apparent sizes).
fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0; // removed while we looked
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            for e in entries.flatten() {
                total += disk_usage(&e.path());
            }
        }
    }
    total
}

/// The command failed with exactly one line on stderr, `lambox: error: ...`, containing every
/// string in NEEDLES. Returns the line.
fn assert_refused(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "lambox succeeded but should have refused; stderr:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stderr must be exactly one line, got:\n{stderr}"
    );
    let line = lines[0];
    eprintln!("refused as expected: {line}");
    assert!(line.starts_with("lambox: error:"), "{line}");
    for n in needles {
        assert!(line.contains(n), "the error should mention {n:?}: {line}");
    }
    line.to_owned()
}

/// Build a one-layer image from ENTRIES (gzip), load it, and check it is refused with an error
/// naming the layer and containing NEEDLES, that nothing leaked out and the store is clean.
fn refuse_layer(s: &Scratch, entries: &[Vec<u8>], needles: &[&str], keep: &[(&str, &[u8])]) {
    let layer = Layer::new(&tar(entries), Compression::Gzip);
    let image = write_image(&s.layout(), &[layer], base_config());
    let out = s.load();
    let layer_digest = image.layers[0].to_string();
    let mut all = vec![layer_digest.as_str()];
    all.extend_from_slice(needles);
    assert_refused(&out, &all);
    s.assert_store_clean(&image);
    s.assert_nothing_outside(keep);
}

// ---------------------------------------------------------------------------------------------
// 1-4: entries that try to leave the layer.

#[test]
fn absolute_entry_is_refused() {
    let s = Scratch::new();
    let name = format!("{}/pwned", s.escape().display());
    refuse_layer(
        &s,
        &[file("ok.txt", b"fine"), file(&name, b"pwned")],
        &[&format!("{name:?}"), "absolute"],
        &[],
    );

    let s = Scratch::new();
    let name = format!("{}/pwned", s.absent.display());
    refuse_layer(
        &s,
        &[dir("etc/"), file(&name, b"pwned")],
        &[&format!("{name:?}"), "absolute"],
        &[],
    );
}

#[test]
fn dotdot_entries_are_refused() {
    let cases: [fn(&Scratch) -> String; 4] = [
        |s| {
            format!(
                "../{}/pwned",
                s.escape().file_name().expect("name").to_string_lossy()
            )
        },
        |_| "a/../../x".to_owned(),
        // From DATA/tmp/LAYER/: straight into the sentinel next to the data dir.
        |_| "../../../sentinel/pwned".to_owned(),
        // All the way up to /, then down into the escape directory.
        |s| format!("{}/{}/pwned", s.up_to_root(), s.escape_rel()),
    ];
    for case in cases {
        let s = Scratch::new();
        let name = case(&s);
        refuse_layer(
            &s,
            &[dir("a/"), file("a/ok", b"fine"), file(&name, b"pwned")],
            &[&format!("{name:?}"), "`..`"],
            &[],
        );
    }
}

#[test]
fn writes_through_escaping_symlinks_are_refused() {
    // An absolute symlink to a directory that exists, then a file under it.
    let s = Scratch::new();
    let target = s.escape().display().to_string();
    refuse_layer(
        &s,
        &[symlink("evil", &target), file("evil/pwned", b"pwned")],
        &["\"evil/pwned\"", "escapes the layer through a symlink"],
        &[],
    );

    // A relative symlink climbing to `/`, then a path down into the escape directory.
    let s = Scratch::new();
    let name = format!("evil/{}/pwned", s.escape_rel());
    refuse_layer(
        &s,
        &[symlink("evil", &s.up_to_root()), file(&name, b"pwned")],
        &[&format!("{name:?}"), "escapes the layer through a symlink"],
        &[],
    );

    // The same with the literal `../../../../..` and a directory entry under it.
    let s = Scratch::new();
    refuse_layer(
        &s,
        &[
            symlink("evil", "../../../../.."),
            dir(&format!("evil/{}/sub/", s.escape_rel())),
        ],
        &["escapes the layer through a symlink"],
        &[],
    );

    // A symlink to the sentinel next to the data dir, then a symlink written through it.
    let s = Scratch::new();
    let sentinel = s.sentinel().display().to_string();
    refuse_layer(
        &s,
        &[
            symlink("evil", &sentinel),
            symlink("evil/link", "/etc/passwd"),
        ],
        &["\"evil/link\"", "escapes the layer through a symlink"],
        &[],
    );
}

#[test]
fn hardlinks_out_of_the_layer_are_refused() {
    let passwd_before = fs::read("/etc/passwd").expect("read /etc/passwd");
    let nlink_before = fs::metadata("/etc/passwd").expect("stat").nlink();

    let s = Scratch::new();
    refuse_layer(
        &s,
        &[file("ok", b"fine"), hardlink("hl", "/etc/passwd")],
        &["\"hl\"", "hardlink target is absolute"],
        &[],
    );

    let s = Scratch::new();
    refuse_layer(
        &s,
        &[file("ok", b"fine"), hardlink("hl", "../../etc/passwd")],
        &["\"hl\"", "hardlink target contains a `..` component"],
        &[],
    );

    // A victim file the test owns, hardlinked by absolute and by climbing path, then written
    // through: it must keep its content and its single link.
    let victim: &[u8] = b"original";
    for absolute in [true, false] {
        let s = Scratch::new();
        fs::write(s.escape().join("victim"), victim).expect("write victim");
        let target = if absolute {
            format!("{}/victim", s.escape().display())
        } else {
            format!("{}/{}/victim", s.up_to_root(), s.escape_rel())
        };
        let reason = if absolute {
            "absolute"
        } else {
            "contains a `..` component"
        };
        refuse_layer(
            &s,
            &[hardlink("hl", &target), file("hl", b"pwned")],
            &["\"hl\"", reason],
            &[("victim", victim)],
        );
    }

    assert_eq!(fs::read("/etc/passwd").expect("read"), passwd_before);
    assert_eq!(
        fs::metadata("/etc/passwd").expect("stat").nlink(),
        nlink_before
    );
}

// ---------------------------------------------------------------------------------------------
// 5: a gzip bomb.

/// Size of the one file in the bomb layer: 2 GiB of zeros.
const BOMB_FILE_SIZE: u64 = 2 << 30;

/// The bomb layer: a tar of one 2 GiB file of zeros, gzipped (about 2 MB), streamed through the
/// encoder and the diff_id hash a MiB at a time. Returns the blob and its real diff_id.
fn bomb_layer() -> Layer {
    use sha2::Digest as _;
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..5].copy_from_slice(b"zeros");
    header.set_entry_type(EntryType::Regular);
    header.set_size(BOMB_FILE_SIZE);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut diff_id = sha2::Sha256::new();
    let mut put = |bytes: &[u8]| {
        gz.write_all(bytes).expect("gzip");
        diff_id.update(bytes);
    };
    put(header.as_bytes());
    let mib = vec![0u8; 1 << 20];
    for _ in 0..(BOMB_FILE_SIZE >> 20) {
        put(&mib);
    }
    put(&[0; 1024]); // end of archive
    let blob = gz.finish().expect("gzip");
    Layer {
        blob,
        diff_id: format!("sha256:{:x}", diff_id.finalize())
            .parse()
            .expect("digest"),
        media_type: OCI_LAYER_GZIP.to_owned(),
    }
}

#[test]
fn gzip_bomb_is_stopped_at_the_size_limit() {
    let s = Scratch::new();
    let layer = bomb_layer();
    assert!(
        layer.blob.len() < 4 << 20,
        "bomb blob is {} bytes",
        layer.blob.len()
    );
    let image = write_image(&s.layout(), &[layer], base_config());

    let limit = 10_000_000u64;
    let started = Instant::now();
    let mut child = s
        .load_command(&["--max-image-size", &limit.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lambox load");
    // Watch the data dir's disk use while it runs.
    let mut peak = 0;
    while child.try_wait().expect("wait").is_none() {
        peak = peak.max(disk_usage(&s.data()));
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "lambox load of a gzip bomb still running after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("wait");
    let took = started.elapsed();
    peak = peak.max(disk_usage(&s.data()));

    assert_refused(&out, &["larger than the limit", &format!("{limit} bytes")]);
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(peak < 50_000_000, "data dir reached {peak} bytes on disk");
    s.assert_store_clean(&image);
    s.assert_nothing_outside(&[]);
}

// ---------------------------------------------------------------------------------------------
// 6-8: blobs that are not what the manifest and config say.

#[test]
fn corrupt_layer_blob_is_a_digest_mismatch() {
    let s = Scratch::new();
    let layout = s.layout();
    copy_tree(&common::oci("busybox"), &layout);
    let manifest = layout_manifest(&layout);
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer digest")
        .to_owned();
    let path = blob_file(&layout, &layer);
    let mut bytes = fs::read(&path).expect("read blob");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    fs::write(&path, &bytes).expect("write blob");
    let image = Image {
        manifest: read_json(&layout.join("index.json"))["manifests"][0]["digest"]
            .as_str()
            .expect("index digest")
            .parse()
            .expect("digest"),
        config: manifest["config"]["digest"]
            .as_str()
            .expect("config")
            .parse()
            .expect("digest"),
        layers: vec![layer.parse().expect("digest")],
    };

    let out = s.load();
    assert_refused(&out, &[&layer, "digest mismatch"]);
    s.assert_store_clean(&image);
    s.assert_nothing_outside(&[]);
}

#[test]
fn wrong_diff_id_is_refused() {
    let s = Scratch::new();
    let layer = Layer::new(
        &tar(&[dir("etc/"), file("etc/hello", b"hello")]),
        Compression::Gzip,
    );
    let wrong = Digest::of(b"not this layer");
    let mut config = base_config();
    config["rootfs"] = json!({"type": "layers", "diff_ids": [wrong.to_string()]});
    let image = write_image(&s.layout(), &[layer], config);

    let out = s.load();
    assert_refused(
        &out,
        &[
            &image.layers[0].to_string(),
            "diff_id",
            "digest mismatch",
            &wrong.to_string(),
        ],
    );
    s.assert_store_clean(&image);
    s.assert_nothing_outside(&[]);
}

#[test]
fn truncated_gzip_blob_is_refused() {
    let s = Scratch::new();
    let full = tar(&[file("big", &noise(256 << 10)), file("after", b"after")]);
    let whole = Layer::new(&full, Compression::Gzip);
    // Cut in half; the manifest describes the cut bytes, so only decompression can fail.
    let cut = Layer {
        blob: whole.blob[..whole.blob.len() / 2].to_vec(),
        ..whole
    };
    let image = write_image(&s.layout(), &[cut], base_config());

    let out = s.load();
    assert_refused(&out, &[&image.layers[0].to_string()]);
    s.assert_store_clean(&image);
    s.assert_nothing_outside(&[]);
}

// ---------------------------------------------------------------------------------------------
// 9: manifests and indexes that are wrong.

#[test]
fn malformed_manifest_json_is_refused() {
    let s = Scratch::new();
    let layout = s.layout();
    init_layout(&layout);
    let manifest = br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"#;
    let digest = put_blob(&layout, manifest);
    put_index(&layout, &digest, manifest.len());

    let out = s.load();
    assert_refused(&out, &[&layout.display().to_string(), "malformed"]);
    let image = Image {
        manifest: digest,
        config: Digest::of(b""),
        layers: vec![],
    };
    s.assert_store_clean(&image);
    s.assert_nothing_outside(&[]);
}

#[test]
fn unknown_layer_media_type_is_refused() {
    let s = Scratch::new();
    let mut layer = Layer::new(&tar(&[file("a", b"a")]), Compression::Gzip);
    layer.media_type = "application/vnd.example.mystery.layer.v1+tar".to_owned();
    let image = write_image(&s.layout(), &[layer], base_config());

    let out = s.load();
    assert_refused(
        &out,
        &[
            &image.layers[0].to_string(),
            "unsupported media type",
            "application/vnd.example.mystery.layer.v1+tar",
        ],
    );
    s.assert_store_clean(&image);
    s.assert_nothing_outside(&[]);
}

#[test]
fn index_pointing_to_a_missing_blob_is_refused() {
    let s = Scratch::new();
    let layout = s.layout();
    init_layout(&layout);
    let missing = Digest::of(b"a manifest that is not there");
    put_index(&layout, &missing, 123);

    let out = s.load();
    assert_refused(&out, &[&missing.hex(), "not found"]);
    let image = Image {
        manifest: missing,
        config: Digest::of(b""),
        layers: vec![],
    };
    s.assert_store_clean(&image);
    s.assert_nothing_outside(&[]);
}

// ---------------------------------------------------------------------------------------------
// 10: odd but legitimate tars load.

#[test]
fn missing_end_of_archive_marker_is_accepted() {
    for compression in [Compression::Gzip, Compression::None] {
        let s = Scratch::new();
        // Complete entries, no two zero blocks after them.
        let body = [dir("etc/"), file("etc/hello.txt", b"hello, world\n")].concat();
        let layer = Layer::new(&body, compression);
        let diff_id = layer.diff_id.clone();
        let image = write_image(&s.layout(), &[layer], base_config());

        let out = s.load();
        assert!(
            out.status.success(),
            "{compression:?}: load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            image.manifest.to_string()
        );
        let hello = s
            .data()
            .join("layers")
            .join(diff_id.hex())
            .join("etc/hello.txt");
        assert_eq!(fs::read(&hello).expect("read hello.txt"), b"hello, world\n");
        let images = s.images();
        assert_eq!(images.len(), 1, "{images:?}");
        assert_eq!(images[0]["Names"], json!(["localhost/hostile:latest"]));
        assert_eq!(listing(&s.data().join("tmp")), Vec::<String>::new());
        s.assert_nothing_outside(&[]);
    }
}

#[test]
fn umoci_image_loads() {
    let s = Scratch::new();
    let layout = common::oci("umoci-busybox");
    let out = s
        .lambox()
        .arg("load")
        .arg(format!("oci:{}:latest", layout.display()))
        .output()
        .expect("run lambox load");
    assert!(
        out.status.success(),
        "load of the umoci image failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let images = s.images();
    assert_eq!(images.len(), 1, "{images:?}");
    for diff_id in layout_diff_ids(&layout) {
        let hex = diff_id.strip_prefix("sha256:").expect("sha256");
        assert!(
            s.data().join("layers").join(hex).is_dir(),
            "layer {diff_id} is not stored"
        );
    }
    assert_eq!(listing(&s.data().join("tmp")), Vec::<String>::new());
    s.assert_nothing_outside(&[]);
}

// ---------------------------------------------------------------------------------------------
// 11-12: real pulls from a loopback registry.

/// `sha256sum` of every file in DIR (fast, unlike sha2 in a debug build): name → hash.
fn sha256sums(dir: &Path) -> Vec<(String, String)> {
    let names = listing(dir);
    if names.is_empty() {
        return Vec::new();
    }
    let out = common::run_ok(Command::new("sha256sum").args(&names).current_dir(dir));
    out.lines()
        .map(|l| {
            let (hash, name) = l.split_once("  ").expect("sha256sum line");
            (name.to_owned(), hash.to_owned())
        })
        .collect()
}

fn assert_blobs_verified(data: &Path) {
    for (name, hash) in sha256sums(&data.join("blobs/sha256")) {
        assert_eq!(name, hash, "blob {name} does not hash to its name");
    }
}

#[test]
fn kill_during_pull_leaves_a_clean_store() {
    let registry = common::Registry::start();
    let fixture = common::oci("hello-python");
    registry.push(fixture.to_str().expect("utf-8"), "hello:v1", None);
    let reference = registry.reference("hello:v1");
    let diff_ids: BTreeSet<String> = layout_diff_ids(&fixture)
        .iter()
        .map(|d| d.trim_start_matches("sha256:").to_owned())
        .collect();

    // Kill at a few delays until one lands mid-transfer (temps left in tmp/).
    let mut landed = None;
    for delay in [300, 100, 800, 2000, 5000] {
        let data = common::DataDir::new();
        let mut child = data
            .lambox()
            .args(["pull", "--quiet", &reference])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn lambox pull");
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().expect("wait").is_some() {
            continue; // finished (or failed) before the kill
        }
        child.kill().expect("SIGKILL lambox");
        child.wait().expect("reap lambox");
        let temps = listing(&data.path().join("tmp"));
        eprintln!("SIGKILL after {delay} ms: tmp/ holds {temps:?}");
        if !temps.is_empty() {
            landed = Some(data);
            break;
        }
    }
    let data = landed.expect("no SIGKILL landed while the pull had temps in tmp/");
    let root = data.path();

    // Only verified content is in place.
    assert_blobs_verified(root);
    for layer in listing(&root.join("layers")) {
        assert!(
            diff_ids.contains(&layer),
            "layers/{layer} is not a layer of the image"
        );
    }
    // No image; opening the store removed the dead process's temps.
    let images = common::run_ok(data.lambox().args(["images", "--json"]));
    assert_eq!(
        serde_json::from_str::<Value>(&images).expect("json"),
        json!([])
    );
    assert_eq!(listing(&root.join("tmp")), Vec::<String>::new());

    // Pulling again works and stores the image.
    let digest = common::run_ok(data.lambox().args(["pull", "--quiet", &reference]));
    let images: Value =
        serde_json::from_str(&common::run_ok(data.lambox().args(["images", "--json"])))
            .expect("json");
    let images = images.as_array().expect("array");
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0]["Digest"], json!(digest.trim()));
    assert_eq!(images[0]["Names"], json!([reference]));
    let stored: BTreeSet<String> = listing(&root.join("layers")).into_iter().collect();
    assert_eq!(stored, diff_ids);

    // Nothing is left over for prune to remove.
    let prune = common::run_ok(data.lambox().arg("prune"));
    assert!(
        prune.starts_with("removed 0 blobs, 0 layers, ")
            && prune.contains("leftovers of interrupted imports"),
        "{prune}"
    );
    assert_eq!(listing(&root.join("tmp")), Vec::<String>::new());
    assert_blobs_verified(root);
}

/// From the summary line `stored NAME (...): N layers, B bytes fetched, R already stored`: R.
fn reused_layers(stderr: &str) -> usize {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("stored "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"));
    let (before, _) = line
        .rsplit_once(" already stored")
        .unwrap_or_else(|| panic!("bad summary line: {line}"));
    before
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad summary line: {line}"))
}

#[test]
fn concurrent_pulls_share_one_copy_of_a_layer() {
    let registry = common::Registry::start();
    let base = common::oci("debian-python");
    let app = common::oci("hello-python");
    registry.push(base.to_str().expect("utf-8"), "base:v1", None);
    registry.push(app.to_str().expect("utf-8"), "hello:v1", None);
    let base_ids = layout_diff_ids(&base);
    let app_ids = layout_diff_ids(&app);
    let shared: Vec<&String> = base_ids.iter().filter(|d| app_ids.contains(d)).collect();
    assert_eq!(shared.len(), 1, "the fixtures should share the base layer");
    let shared = shared[0].clone();

    let data = common::DataDir::new();
    let children: Vec<_> = ["base:v1", "hello:v1"]
        .iter()
        .map(|tag| {
            data.lambox()
                .args(["pull", &registry.reference(tag)])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn lambox pull")
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    for out in &outputs {
        assert!(
            out.status.success(),
            "pull failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The shared layer was fetched by one pull; the other found it stored.
    let reused: usize = outputs
        .iter()
        .map(|o| reused_layers(&String::from_utf8_lossy(&o.stderr)))
        .sum();
    assert_eq!(reused, 1, "exactly one pull should reuse the shared layer");

    let all: BTreeSet<String> = base_ids
        .iter()
        .chain(&app_ids)
        .map(|d| d.trim_start_matches("sha256:").to_owned())
        .collect();
    let stored: BTreeSet<String> = listing(&data.path().join("layers")).into_iter().collect();
    assert_eq!(stored, all, "one directory per distinct layer");
    assert!(data
        .path()
        .join("layers")
        .join(shared.trim_start_matches("sha256:"))
        .is_dir());

    for (tag, ids) in [("base:v1", &base_ids), ("hello:v1", &app_ids)] {
        let out = common::run_ok(data.lambox().args(["inspect", &registry.reference(tag)]));
        let v: Value = serde_json::from_str(&out).expect("inspect json");
        let listed: Vec<String> = v["Layers"]
            .as_array()
            .expect("Layers")
            .iter()
            .map(|l| l["DiffId"].as_str().expect("DiffId").to_owned())
            .collect();
        assert_eq!(&listed, ids, "{tag}");
        assert!(
            listed.contains(&shared),
            "{tag} does not list the shared layer"
        );
    }
    assert_eq!(listing(&data.path().join("tmp")), Vec::<String>::new());
    assert_blobs_verified(data.path());
}
