#!/usr/bin/env python3
"""Write OCI image layouts by hand (no daemon, no registry), for test fixtures.

Layers are made with GNU tar (`tar --numeric-owner --sort=name -C DIR -cf - .`)
from directories, or taken as-is from uncompressed tarballs, then compressed
(gzip via pigz/gzip, zstd, or none). The manifest and config JSON is written
here, with real digests, sizes and diff_ids.

Subcommands (all take --out LAYOUT_DIR; the layout is created if missing):

  image   --tag T --layer DIR_OR_TAR... [--compress gzip|zstd|none] [--mtime EPOCH]
          [--entrypoint JSON] [--cmd JSON] [--workdir W] [--env K=V]...
          [--user U] [--label K=V]... [--arch amd64] [--os linux] [--variant V]
      Adds one image manifest to the layout, referenced as tag T in index.json
      (an existing T is replaced).

  attest  --tag T --subject S
      Adds a BuildKit-style attestation manifest (platform unknown/unknown,
      layer application/vnd.in-toto+json) about the manifest tagged S, tagged T.

  index   --tag T --member T1 --member T2 ...
      Adds an image index whose manifests are the members (platforms taken from
      their configs, attestation annotations kept), tagged T; the member tags are
      removed from index.json so that T is the layout's only entry point.
"""

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
IN_TOTO = "application/vnd.in-toto+json"
REF_NAME = "org.opencontainers.image.ref.name"
CHUNK = 1 << 20


def die(msg):
    print(f"mkimage: error: {msg}", file=sys.stderr)
    sys.exit(1)


def now():
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    t = (
        datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
        if epoch
        else datetime.datetime.now(datetime.timezone.utc)
    )
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_file(path):
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
            size += len(b)
    return "sha256:" + h.hexdigest(), size


class Layout:
    def __init__(self, root):
        self.root = root
        self.blobs = os.path.join(root, "blobs", "sha256")
        os.makedirs(self.blobs, exist_ok=True)
        ol = os.path.join(root, "oci-layout")
        if not os.path.exists(ol):
            with open(ol, "w") as f:
                json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.index_path = os.path.join(root, "index.json")
        if os.path.exists(self.index_path):
            with open(self.index_path) as f:
                self.index = json.load(f)
        else:
            self.index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}

    def tmpfile(self):
        fd, path = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        os.close(fd)
        return path

    def put_file(self, path):
        """Move a finished file into blobs/; returns (digest, size)."""
        digest, size = sha256_file(path)
        dest = self.blob_path(digest)
        if os.path.exists(dest):
            os.unlink(path)
        else:
            os.chmod(path, 0o644)
            os.replace(path, dest)
        return digest, size

    def put_bytes(self, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        dest = self.blob_path(digest)
        if not os.path.exists(dest):
            tmp = self.tmpfile()
            with open(tmp, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        return digest, len(data)

    def put_json(self, obj):
        return self.put_bytes(json.dumps(obj, indent=2, sort_keys=False).encode())

    def blob_path(self, digest):
        algo, hexd = digest.split(":", 1)
        assert algo == "sha256"
        return os.path.join(self.blobs, hexd)

    def read_json(self, digest):
        with open(self.blob_path(digest)) as f:
            return json.load(f)

    def find(self, tag):
        for d in self.index["manifests"]:
            if d.get("annotations", {}).get(REF_NAME) == tag:
                return d
        die(f"no manifest tagged {tag!r} in {self.index_path}")

    def set_tag(self, tag, desc):
        desc = dict(desc)
        ann = dict(desc.get("annotations", {}))
        ann[REF_NAME] = tag
        desc["annotations"] = ann
        self.index["manifests"] = [
            d for d in self.index["manifests"] if d.get("annotations", {}).get(REF_NAME) != tag
        ] + [desc]

    def drop_tag(self, tag):
        self.index["manifests"] = [
            d for d in self.index["manifests"] if d.get("annotations", {}).get(REF_NAME) != tag
        ]

    def save(self):
        tmp = self.tmpfile()
        with open(tmp, "w") as f:
            json.dump(self.index, f, indent=2)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.index_path)


def make_tar(src, layout, mtime=None):
    """Uncompressed layer tar for SRC (a directory or an existing .tar)."""
    if os.path.isdir(src):
        out = layout.tmpfile()
        cmd = ["tar", "--numeric-owner", "--sort=name"]
        if mtime is not None:
            cmd.append(f"--mtime=@{mtime}")
        with open(out, "wb") as f:
            subprocess.run(cmd + ["-C", src, "-cf", "-", "."], stdout=f, check=True)
        return out, True
    if os.path.isfile(src):
        with open(src, "rb") as f:
            magic = f.read(4)
        if magic[:2] == b"\x1f\x8b" or magic == b"\x28\xb5\x2f\xfd":
            die(f"{src}: give an uncompressed tar (compression is chosen with --compress)")
        return src, False
    die(f"layer source {src} is neither a directory nor a file")


def compress(tar_path, method, layout):
    if method == "none":
        out = layout.tmpfile()
        shutil.copyfile(tar_path, out)
        return out
    out = layout.tmpfile()
    if method == "gzip":
        if shutil.which("pigz"):
            cmd = ["pigz", "-n", "-c", tar_path]
        else:
            cmd = ["gzip", "-n", "-c", tar_path]
    elif method == "zstd":
        cmd = ["zstd", "-q", "-c", "-T0", tar_path]
    else:
        die(f"unknown compression {method}")
    with open(out, "wb") as f:
        subprocess.run(cmd, stdout=f, check=True)
    return out


def cmd_image(a):
    lay = Layout(a.out)
    layers, diff_ids, history = [], [], []
    for src in a.layer:
        tar_path, temp = make_tar(src, lay, a.mtime)
        diff_id, _ = sha256_file(tar_path)
        blob = compress(tar_path, a.compress, lay)
        if temp:
            os.unlink(tar_path)
        digest, size = lay.put_file(blob)
        layers.append(
            {
                "mediaType": OCI_LAYER[a.compress],
                "digest": digest,
                "size": size,
            }
        )
        diff_ids.append(diff_id)
        history.append({"created": now(), "created_by": f"mkimage.py layer {os.path.basename(src)}"})
    cfg = {}
    if a.user:
        cfg["User"] = a.user
    if a.env:
        cfg["Env"] = a.env
    if a.entrypoint is not None:
        cfg["Entrypoint"] = json.loads(a.entrypoint)
    if a.cmd is not None:
        cfg["Cmd"] = json.loads(a.cmd)
    if a.workdir:
        cfg["WorkingDir"] = a.workdir
    if a.label:
        cfg["Labels"] = dict(kv.split("=", 1) for kv in a.label)
    config = {"created": now(), "architecture": a.arch, "os": a.os}
    if a.variant:
        config["variant"] = a.variant
    config.update(
        {
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        }
    )
    cdigest, csize = lay.put_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cdigest, "size": csize},
        "layers": layers,
    }
    mdigest, msize = lay.put_json(manifest)
    lay.set_tag(a.tag, {"mediaType": manifest["mediaType"], "digest": mdigest, "size": msize})
    lay.save()
    print(mdigest)


def cmd_attest(a):
    lay = Layout(a.out)
    subject = lay.find(a.subject)
    statement = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [
            {
                "name": "pkg:docker/localhost/lambox-fixture@latest?platform=linux%2Famd64",
                "digest": {"sha256": subject["digest"].split(":", 1)[1]},
            }
        ],
        "predicate": {
            "builder": {"id": "https://github.com/lambox/scripts/mkimage.py"},
            "buildType": "https://mobyproject.org/buildkit@v1",
            "metadata": {"buildStartedOn": now(), "buildFinishedOn": now()},
        },
    }
    ldigest, lsize = lay.put_json(statement)
    config = {
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [ldigest]},
    }
    cdigest, csize = lay.put_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cdigest, "size": csize},
        "layers": [
            {
                "mediaType": IN_TOTO,
                "digest": ldigest,
                "size": lsize,
                "annotations": {"in-toto.io/predicate-type": statement["predicateType"]},
            }
        ],
    }
    mdigest, msize = lay.put_json(manifest)
    lay.set_tag(
        a.tag,
        {
            "mediaType": OCI_MANIFEST,
            "digest": mdigest,
            "size": msize,
            "annotations": {
                "vnd.docker.reference.digest": subject["digest"],
                "vnd.docker.reference.type": "attestation-manifest",
            },
            "platform": {"architecture": "unknown", "os": "unknown"},
        },
    )
    lay.save()
    print(mdigest)


def cmd_index(a):
    lay = Layout(a.out)
    members = []
    for tag in a.member:
        d = dict(lay.find(tag))
        ann = {k: v for k, v in d.get("annotations", {}).items() if k != REF_NAME}
        if ann:
            d["annotations"] = ann
        else:
            d.pop("annotations", None)
        if "platform" not in d:
            m = lay.read_json(d["digest"])
            c = lay.read_json(m["config"]["digest"])
            p = {"architecture": c["architecture"], "os": c["os"]}
            if c.get("variant"):
                p["variant"] = c["variant"]
            d["platform"] = p
        members.append(d)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": members}
    idigest, isize = lay.put_json(index)
    for tag in a.member:
        lay.drop_tag(tag)
    lay.set_tag(a.tag, {"mediaType": OCI_INDEX, "digest": idigest, "size": isize})
    lay.save()
    print(idigest)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    i = sub.add_parser("image")
    i.add_argument("--out", required=True)
    i.add_argument("--tag", default="latest")
    i.add_argument("--layer", action="append", default=[])
    i.add_argument("--compress", choices=["gzip", "zstd", "none"], default="gzip")
    i.add_argument("--mtime", type=int, help="set every entry's mtime in directory layers (epoch seconds)")
    i.add_argument("--entrypoint")
    i.add_argument("--cmd")
    i.add_argument("--workdir")
    i.add_argument("--env", action="append", default=[])
    i.add_argument("--label", action="append", default=[])
    i.add_argument("--user")
    i.add_argument("--arch", default="amd64")
    i.add_argument("--os", default="linux")
    i.add_argument("--variant")
    i.set_defaults(func=cmd_image)

    t = sub.add_parser("attest")
    t.add_argument("--out", required=True)
    t.add_argument("--tag", required=True)
    t.add_argument("--subject", required=True)
    t.set_defaults(func=cmd_attest)

    x = sub.add_parser("index")
    x.add_argument("--out", required=True)
    x.add_argument("--tag", default="latest")
    x.add_argument("--member", action="append", required=True)
    x.set_defaults(func=cmd_index)

    a = p.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
