#!/usr/bin/env bash
# Builds the container-image fixtures the lambox tests use, offline, without a
# Docker daemon (see docs: "Building real Lambda test images ...").
#
#   scripts/build-fixtures.sh [CACHE_DIR]
#
# CACHE_DIR defaults to $LAMBOX_FIXTURES, else /var/cache/lambox-fixtures.
# Results are cached: each fixture has a stamp file in CACHE_DIR/stamps whose
# content is a key made of the sha256 of this script and of scripts/mkimage.py
# plus the fixture's own inputs, so a second run only checks stamps (seconds)
# and editing the scripts rebuilds the images. The two slow network steps
# (debootstrap, pip) are keyed on their recipe only, so editing this script
# does not redo them; delete CACHE_DIR/stamps/rootfs-debian-python or
# CACHE_DIR/stamps/pip-awslambdaric (or pip-tools) to force them. The Rust
# function (functions/echo-rust) is built with cargo only when the sha256 of its
# sources + Cargo.lock (+ rustc -V) changes (stamp rust-echo-rust).
#
# Layout of CACHE_DIR (every image has an OCI layout `oci/` whose index.json
# references it as tag `latest`):
#   rootfs/busybox/             busybox-static root (+ /etc/passwd, /etc/group, /tmp 1777)
#   rootfs/busybox.tar          the same as an uncompressed GNU tar
#   rootfs/debian-python/       debootstrap bookworm minbase + python3, ca-certificates
#   rootfs/debian-python.tar    the same as an uncompressed GNU tar
#   rootfs/debian-python.pyver  its python3 minor version (3.11)
#   pip/awslambdaric/           awslambdaric installed with pip --target for that version
#   build/hello-python/         the build context: function/{app.py, awslambdaric...}
#   build/probe-python/         the same for probe-python: function/{probe.py, awslambdaric...}
#   build/echo-rust/bootstrap   functions/echo-rust built with `cargo build --release`
#                               (target dir: $LAMBOX_FIXTURES_CARGO_TARGET, default
#                               REPO/target/lambox-fixtures), debuginfo stripped
#   bin/aws-lambda-rie          AWS's Runtime Interface Emulator (x86_64, static), from
#                               the aws-sam-cli wheel (samcli/local/rapid/aws-lambda-rie-x86_64)
#   bin/cargo-lambda            -> ../pip/cargo-lambda/bin/cargo-lambda (`cargo-lambda lambda watch`)
#   bin/VERSIONS                where those two came from, versions, sha256
#   pip/cargo-lambda/           cargo-lambda from PyPI, pip install --target --no-deps
#                               (its ziglang dependency, 400 MB, is only for cross builds)
#   pip/aws/                    the AWS CLI (awscli) and boto3, pip install --target, for the
#                               `lambox serve` tests: PYTHONPATH=pip/aws python3 -m awscli
#   logs/rie-check.log          the last check of the function images under the RIE
#   images/NAME/oci/            OCI layout, tag latest
#   images/NAME/docker.tar      docker-archive, localhost/NAME:latest (single-platform images)
#   images/busybox/oci-v2s2/    OCI layout holding a Docker v2 schema 2 manifest
#   images/layers-whiteout/expected.txt   the expected merged view
#   images/umoci-busybox/NOTE   what is odd about its layers
#   images/NAME.SKIPPED         a buildah image that could not be built here, and why
#   SUMMARY.txt                 what was built
#
# Images (busybox ones share one deterministic layer; ./-prefixed GNU tar):
#   busybox               1 gzip layer; Cmd sh -c "echo hi" (+ docker.tar, oci-v2s2/)
#   uncompressed-busybox  the same, layer application/vnd.oci.image.layer.v1.tar
#   zstd-busybox          the same recompressed by skopeo: ...layer.v1.tar+zstd
#   umoci-busybox         `umoci insert` layers: no end-of-archive blocks (layer 1),
#                         and no final padding either (layer 2: /etc/umoci-note)
#   multiarch             OCI index: linux/amd64 + linux/arm64/v8 (Cmd echoes the arch)
#   attestation           OCI index: linux/amd64 + a BuildKit-style attestation manifest
#   layers-whiteout       3 layers: whiteout, opaque dir, hardlink, symlink, setuid, uid 1000
#   debian-python         the debootstrapped base alone (1 layer)
#   hello-python          the bundled example: base + /function (awslambdaric, app.py)
#   rust-echo             functions/echo-rust (lambda_runtime; buffered and streamed
#                         responses, see its main.rs) at /var/task/bootstrap plus
#                         the glibc libraries `ldd` lists, copied from the host; no shell;
#                         1 layer; Entrypoint ["/var/task/bootstrap"], no Cmd
#   shell-runtime         busybox + /var/task/bootstrap: a POSIX sh custom runtime using
#                         busybox wget (scripts/fixtures/shell-runtime/bootstrap); 2 layers;
#                         Entrypoint ["/var/task/bootstrap"], no Cmd
#   aws-base              the layout of AWS's Lambda base images, offline: busybox (shared
#                         layer) + /lambda-entrypoint.sh (ours, written from AWS's documented
#                         behaviour: no AWS_LAMBDA_RUNTIME_API -> exec aws-lambda-rie
#                         /var/runtime/bootstrap, else exec /var/runtime/bootstrap; _HANDLER
#                         = its one argument), the real emulator at
#                         /usr/local/bin/aws-lambda-rie (bin/aws-lambda-rie), a POSIX sh
#                         runtime at /var/runtime/bootstrap that reports what it sees
#                         (scripts/fixtures/aws-base/); 2 layers;
#                         Entrypoint ["/lambda-entrypoint.sh"], Cmd ["app.handler"]
#   probe-python          debian-python base (shared layer) + awslambdaric + probe.py
#                         (scripts/fixtures/probe-python); Cmd ["probe.handler"]: reports
#                         uid, caps, mounts, cgroup, rlimits, /tmp, env... from inside
#   hello-python-buildah  the same by `buildah bud` from examples/hello-python/Dockerfile
#   buildah-run           busybox + a buildah RUN layer (stray etc/hostname, run/)
set -Eeuo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
CACHE=${1:-${LAMBOX_FIXTURES:-/var/cache/lambox-fixtures}}

T_START=$EPOCHREALTIME
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}'; }
log() { printf '[fixtures %6ss] %s\n' "$(elapsed "$T_START")" "$*" >&2; }
die() { printf 'build-fixtures: ERROR: %s\n' "$*" >&2; exit 1; }
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot, ownership in layers)"

mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
ROOTFS=$CACHE/rootfs
IMAGES=$CACHE/images
STAMPS=$CACHE/stamps
LOGS=$CACHE/logs
BUILD=$CACHE/build
mkdir -p "$ROOTFS" "$IMAGES" "$STAMPS" "$LOGS" "$BUILD"

# One build at a time per cache (tests in parallel processes all call us).
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
  log "another build holds $CACHE/.lock; waiting"
  flock 9
fi

# Packages and podman/buildah configuration (idempotent, fast when done).
"$HERE/setup.sh" "$CACHE" >"$LOGS/setup.log" 2>&1 || {
  tail -n 30 "$LOGS/setup.log" >&2
  die "scripts/setup.sh failed (log: $LOGS/setup.log)"
}
export CONTAINERS_CONF=$CACHE/containers/containers.conf
export CONTAINERS_STORAGE_CONF=$CACHE/containers/storage.conf
export PIP_CERT=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
export SSL_CERT_FILE=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
# Fixed "created" times in hand-written configs (2023-11-14T22:13:20Z).
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

MKIMAGE=(python3 "$HERE/mkimage.py")
SCRIPT_KEY=$(cat "${BASH_SOURCE[0]}" "$HERE/mkimage.py" | sha256sum | cut -d' ' -f1)
sha() { sha256sum "$@" | cut -d' ' -f1; }

stamp_ok() { [[ -f $STAMPS/$1 ]] && [[ $(<"$STAMPS/$1") == "$2" ]]; }
stamp_set() { printf '%s\n' "$2" >"$STAMPS/$1"; }
stamp_get() { cat "$STAMPS/$1" 2>/dev/null || true; }

# q LOGNAME CMD...: run an external command, output to a log; on failure show it.
q() {
  local lf=$LOGS/$1
  shift
  if ! "$@" >>"$lf" 2>&1; then
    tail -n 40 "$lf" >&2
    die "failed: $* (full log: $lf)"
  fi
}

# Unmount anything left mounted below $1 (debootstrap mounts proc/sys in its
# target), deepest first.
umount_below() {
  local m
  awk -v r="$1" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
}
safe_rm() { # rm -rf that never crosses into a mounted filesystem
  local p
  for p in "$@"; do
    [[ -e $p || -L $p ]] || continue
    umount_below "$p"
    rm -rf --one-file-system "$p"
  done
}

# ----------------------------------------------------------------------------
# Root filesystems
# ----------------------------------------------------------------------------
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || die "$BUSYBOX missing (package busybox-static)"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
  die "$BUSYBOX is dynamically linked: install busybox-static"
fi
BUSYBOX_KEY="$SCRIPT_KEY busybox=$(sha "$BUSYBOX")"

build_busybox_rootfs() {
  local tmp=$ROOTFS/.busybox.tmp p
  safe_rm "$tmp" "$ROOTFS/.busybox.tar.tmp"
  mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,proc,sys,dev,var,home}
  install -m 0755 "$BUSYBOX" "$tmp/bin/busybox"
  # Same result as `chroot ROOT /bin/busybox --install -s`, without a chroot.
  while read -r p; do
    [[ $p == bin/busybox ]] && continue
    mkdir -p "$tmp/$(dirname "$p")"
    [[ -e $tmp/$p || -L $tmp/$p ]] || ln -s /bin/busybox "$tmp/$p"
  done < <("$BUSYBOX" --list-full)
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
    'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$tmp/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$tmp/etc/group"
  chmod 1777 "$tmp/tmp"
  chmod 0700 "$tmp/root"
  # Fixed mtimes: the busybox-based images come out byte-identical every time.
  tar --numeric-owner --sort=name --mtime="@$SOURCE_DATE_EPOCH" -C "$tmp" -cf "$ROOTFS/.busybox.tar.tmp" .
  safe_rm "$ROOTFS/busybox"
  mv "$tmp" "$ROOTFS/busybox"
  mv "$ROOTFS/.busybox.tar.tmp" "$ROOTFS/busybox.tar"
}

if stamp_ok rootfs-busybox "$BUSYBOX_KEY" && [[ -d $ROOTFS/busybox && -f $ROOTFS/busybox.tar ]]; then
  log "rootfs busybox: cached"
else
  t=$EPOCHREALTIME
  build_busybox_rootfs
  stamp_set rootfs-busybox "$BUSYBOX_KEY"
  log "rootfs busybox: built in $(elapsed "$t") s"
fi

# Debian bookworm minbase with python3, from the mirror apt is configured with.
apt_mirror() {
  local m=
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    m=$(awk '/^URIs:/{for (i = 2; i <= NF; i++) if ($i !~ /security/) {print $i; exit}}' \
      /etc/apt/sources.list.d/debian.sources)
  fi
  if [[ -z $m ]]; then
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [[ -f $f ]] || continue
      m=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\// && $i !~ /security/) {print $i; exit}}' "$f")
      [[ -z $m ]] || break
    done
  fi
  [[ -n $m ]] || die "cannot find a Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
  printf '%s\n' "$m"
}

DEBIAN_KEY="debootstrap v1 bookworm minbase include=python3,ca-certificates; cleaned apt caches+lists"
build_debian_rootfs() {
  local tmp=$ROOTFS/.debian-python.tmp mirror
  mirror=$(apt_mirror)
  safe_rm "$tmp" "$ROOTFS/.debian-python.tar.tmp"
  log "rootfs debian-python: debootstrap from $mirror (about a minute; log: $LOGS/debootstrap.log)"
  : >"$LOGS/debootstrap.log"
  if ! debootstrap --variant=minbase --include=python3,ca-certificates \
    bookworm "$tmp" "$mirror" >>"$LOGS/debootstrap.log" 2>&1; then
    umount_below "$tmp"
    tail -n 30 "$LOGS/debootstrap.log" >&2
    [[ -f $tmp/debootstrap/debootstrap.log ]] && tail -n 30 "$tmp/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (log: $LOGS/debootstrap.log)"
  fi
  umount_below "$tmp"
  chroot "$tmp" apt-get clean
  rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/*.bin "$tmp"/var/log/bootstrap.log
  mkdir -p "$tmp/var/lib/apt/lists/partial"
  # Don't carry the build host's identity into the image.
  : >"$tmp/etc/resolv.conf"
  printf 'localhost\n' >"$tmp/etc/hostname"
  local pyver
  pyver=$(find "$tmp/usr/bin" -maxdepth 1 -name 'python3.*' -printf '%f\n' |
    grep -E '^python3\.[0-9]+$' | sed 's/^python//' | sort -V | tail -n 1)
  [[ -n $pyver ]] || die "no python3.X in the debootstrapped root"
  tar --numeric-owner --sort=name -C "$tmp" -cf "$ROOTFS/.debian-python.tar.tmp" .
  safe_rm "$ROOTFS/debian-python"
  mv "$tmp" "$ROOTFS/debian-python"
  mv "$ROOTFS/.debian-python.tar.tmp" "$ROOTFS/debian-python.tar"
  printf '%s\n' "$pyver" >"$ROOTFS/debian-python.pyver"
}

if stamp_ok rootfs-debian-python "$DEBIAN_KEY" && [[ -f $ROOTFS/debian-python.tar && -s $ROOTFS/debian-python.pyver ]]; then
  if [[ ! -d $ROOTFS/debian-python ]]; then
    log "rootfs debian-python: restoring the directory from debian-python.tar"
    safe_rm "$ROOTFS/.debian-python.tmp"
    mkdir -p "$ROOTFS/.debian-python.tmp"
    tar --numeric-owner -xpf "$ROOTFS/debian-python.tar" -C "$ROOTFS/.debian-python.tmp"
    mv "$ROOTFS/.debian-python.tmp" "$ROOTFS/debian-python"
  fi
  log "rootfs debian-python: cached"
else
  t=$EPOCHREALTIME
  build_debian_rootfs
  stamp_set rootfs-debian-python "$DEBIAN_KEY"
  log "rootfs debian-python: built in $(elapsed "$t") s"
fi
PYVER=$(<"$ROOTFS/debian-python.pyver")

# awslambdaric for that python, installed on the host (pip inside the root
# would not trust the proxy CA).
AWSLAMBDARIC_PKGS=(awslambdaric==4.2.2 simplejson==4.3.0 snapshot-restore-py==1.0.0)
PIP_KEY="pip v1 py$PYVER manylinux2014_x86_64 ${AWSLAMBDARIC_PKGS[*]}"
find_pip_python() {
  local py
  for py in python3 /usr/bin/python3; do
    if "$py" -m pip --version >/dev/null 2>&1; then
      printf '%s\n' "$py"
      return
    fi
  done
  die "no python3 with pip (install python3-pip: scripts/setup.sh does)"
}
if stamp_ok pip-awslambdaric "$PIP_KEY" && [[ -d $CACHE/pip/awslambdaric/awslambdaric ]]; then
  log "pip awslambdaric: cached"
else
  t=$EPOCHREALTIME
  PY=$(find_pip_python)
  safe_rm "$CACHE/pip/.awslambdaric.tmp"
  mkdir -p "$CACHE/pip"
  : >"$LOGS/pip.log"
  q pip.log env PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY" -m pip install --no-input --root-user-action=ignore \
    --target "$CACHE/pip/.awslambdaric.tmp" --python-version "$PYVER" --implementation cp \
    --only-binary=:all: --platform manylinux2014_x86_64 "${AWSLAMBDARIC_PKGS[@]}"
  rm -rf "$CACHE/pip/.awslambdaric.tmp/bin"
  safe_rm "$CACHE/pip/awslambdaric"
  mv "$CACHE/pip/.awslambdaric.tmp" "$CACHE/pip/awslambdaric"
  stamp_set pip-awslambdaric "$PIP_KEY"
  log "pip awslambdaric: installed in $(elapsed "$t") s"
fi

# The hello-python build context: function/ = awslambdaric + app.py.
APP=$REPO/examples/hello-python/app.py
DOCKERFILE=$REPO/examples/hello-python/Dockerfile
[[ -f $APP && -f $DOCKERFILE ]] || die "examples/hello-python/{app.py,Dockerfile} missing"
CTX=$BUILD/hello-python
CTX_KEY="$SCRIPT_KEY $(stamp_get pip-awslambdaric) app=$(sha "$APP")"
if stamp_ok ctx-hello-python "$CTX_KEY" && [[ -f $CTX/function/app.py ]]; then
  log "hello-python build context: cached"
else
  safe_rm "$CTX"
  mkdir -p "$CTX/function"
  cp -a "$CACHE/pip/awslambdaric/." "$CTX/function/"
  install -m 0644 "$APP" "$CTX/function/app.py"
  chmod 0755 "$CTX" "$CTX/function"
  stamp_set ctx-hello-python "$CTX_KEY"
  log "hello-python build context: staged"
fi

# The probe-python build context: function/ = awslambdaric + probe.py.
PROBE_PY=$HERE/fixtures/probe-python/probe.py
[[ -f $PROBE_PY ]] || die "$PROBE_PY missing"
PROBE_CTX=$BUILD/probe-python
PROBE_CTX_KEY="$SCRIPT_KEY $(stamp_get pip-awslambdaric) probe=$(sha "$PROBE_PY")"
if stamp_ok ctx-probe-python "$PROBE_CTX_KEY" && [[ -f $PROBE_CTX/function/probe.py ]]; then
  log "probe-python build context: cached"
else
  safe_rm "$PROBE_CTX"
  mkdir -p "$PROBE_CTX/function"
  cp -a "$CACHE/pip/awslambdaric/." "$PROBE_CTX/function/"
  install -m 0644 "$PROBE_PY" "$PROBE_CTX/function/probe.py"
  chmod 0755 "$PROBE_CTX" "$PROBE_CTX/function"
  stamp_set ctx-probe-python "$PROBE_CTX_KEY"
  log "probe-python build context: staged"
fi

# AWS's Runtime Interface Emulator (inside the aws-sam-cli wheel) and
# cargo-lambda, both from PyPI, pinned. Not used to build images: they are
# the behaviour oracle and speed peers for tests and benchmarks (see
# scripts/rie-run.sh). cargo-lambda's only dependency, ziglang (~400 MB), is
# for cross-compiling and is left out (--no-deps).
SAM_CLI_VERSION=1.170.0
CARGO_LAMBDA_VERSION=1.9.2
TOOLS_KEY="tools v1 aws-sam-cli==$SAM_CLI_VERSION:samcli/local/rapid/aws-lambda-rie-x86_64 cargo-lambda==$CARGO_LAMBDA_VERSION --no-deps"
if stamp_ok pip-tools "$TOOLS_KEY" && [[ -x $CACHE/bin/aws-lambda-rie && -x $CACHE/pip/cargo-lambda/bin/cargo-lambda && -f $CACHE/bin/VERSIONS ]]; then
  log "tools (aws-lambda-rie, cargo-lambda): cached"
else
  t=$EPOCHREALTIME
  PY=$(find_pip_python)
  mkdir -p "$CACHE/bin" "$CACHE/pip"
  safe_rm "$CACHE/pip/.sam-cli.tmp" "$CACHE/pip/.cargo-lambda.tmp"
  : >"$LOGS/pip-tools.log"
  PIPQ=(env PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY" -m pip)
  q pip-tools.log "${PIPQ[@]}" download --no-input --no-deps --only-binary=:all: \
    -d "$CACHE/pip/.sam-cli.tmp" "aws-sam-cli==$SAM_CLI_VERSION"
  q pip-tools.log "$PY" - "$CACHE/pip/.sam-cli.tmp" "$CACHE/bin/.aws-lambda-rie.tmp" <<'PY'
import glob, shutil, sys, zipfile
(whl,) = glob.glob(sys.argv[1] + "/aws_sam_cli-*.whl")
with zipfile.ZipFile(whl) as z, z.open("samcli/local/rapid/aws-lambda-rie-x86_64") as src, \
        open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 0755 "$CACHE/bin/.aws-lambda-rie.tmp"
  mv "$CACHE/bin/.aws-lambda-rie.tmp" "$CACHE/bin/aws-lambda-rie"
  safe_rm "$CACHE/pip/.sam-cli.tmp"
  q pip-tools.log "${PIPQ[@]}" install --no-input --root-user-action=ignore --no-deps \
    --only-binary=:all: --target "$CACHE/pip/.cargo-lambda.tmp" "cargo-lambda==$CARGO_LAMBDA_VERSION"
  [[ -x $CACHE/pip/.cargo-lambda.tmp/bin/cargo-lambda ]] || die "the cargo-lambda wheel has no bin/cargo-lambda"
  safe_rm "$CACHE/pip/cargo-lambda"
  mv "$CACHE/pip/.cargo-lambda.tmp" "$CACHE/pip/cargo-lambda"
  ln -sfn ../pip/cargo-lambda/bin/cargo-lambda "$CACHE/bin/cargo-lambda"
  {
    printf 'aws-lambda-rie  aws-sam-cli %s (PyPI wheel, samcli/local/rapid/aws-lambda-rie-x86_64) sha256 %s\n' \
      "$SAM_CLI_VERSION" "$(sha "$CACHE/bin/aws-lambda-rie")"
    printf 'cargo-lambda    %s (PyPI cargo-lambda==%s, pip --target --no-deps) sha256 %s\n' \
      "$("$CACHE/pip/cargo-lambda/bin/cargo-lambda" lambda --version 2>&1 | head -n 1)" \
      "$CARGO_LAMBDA_VERSION" "$(sha "$CACHE/pip/cargo-lambda/bin/cargo-lambda")"
  } >"$CACHE/bin/VERSIONS"
  stamp_set pip-tools "$TOOLS_KEY"
  log "tools (aws-lambda-rie, cargo-lambda): installed in $(elapsed "$t") s"
fi

# The real AWS clients the `lambox serve` tests drive lambox with (awscli v1 is on PyPI;
# `python3 -m awscli`, with PYTHONPATH set to this directory). Keyed on the versions only.
AWS_PKGS=(awscli==1.46.3 boto3==1.44.8 botocore==1.44.8)
AWS_KEY="pip-aws v1 ${AWS_PKGS[*]}"
if stamp_ok pip-aws "$AWS_KEY" && [[ -d $CACHE/pip/aws/awscli && -d $CACHE/pip/aws/boto3 ]]; then
  log "pip aws (awscli, boto3): cached"
else
  t=$EPOCHREALTIME
  PY=$(find_pip_python)
  safe_rm "$CACHE/pip/.aws.tmp"
  mkdir -p "$CACHE/pip"
  : >"$LOGS/pip-aws.log"
  q pip-aws.log env PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY" -m pip install --no-input \
    --root-user-action=ignore --target "$CACHE/pip/.aws.tmp" "${AWS_PKGS[@]}"
  safe_rm "$CACHE/pip/aws"
  mv "$CACHE/pip/.aws.tmp" "$CACHE/pip/aws"
  stamp_set pip-aws "$AWS_KEY"
  log "pip aws (awscli, boto3): installed in $(elapsed "$t") s"
fi

# functions/echo-rust, built with cargo in its own target directory (so that
# this never waits for, or invalidates, the caller's build). Keyed on its
# sources, Cargo.lock and the compiler, not on this script: a warm run only
# hashes a few files.
ECHO_DIR=$REPO/functions/echo-rust
[[ -f $ECHO_DIR/Cargo.toml ]] || die "functions/echo-rust missing"
CARGO_BIN=${CARGO:-cargo}
echo_rust_key() {
  local rustc_v
  rustc_v=$(rustc -V 2>/dev/null || echo "no rustc")
  printf 'echo-rust v1 release strip=debuginfo rustc=%s src=%s\n' "$rustc_v" "$(
    cd "$REPO" && {
      find functions/echo-rust -name target -prune -o -type f -print0 | sort -z | xargs -0 sha256sum
      sha256sum Cargo.lock
    } | sha256sum | cut -d' ' -f1
  )"
}
ECHO_KEY=$(echo_rust_key)
ECHO_BIN=$BUILD/echo-rust/bootstrap
if stamp_ok rust-echo-rust "$ECHO_KEY" && [[ -x $ECHO_BIN ]]; then
  log "echo-rust: cached"
else
  t=$EPOCHREALTIME
  command -v "$CARGO_BIN" >/dev/null 2>&1 || die "cargo not found: needed to build functions/echo-rust"
  CARGO_TGT=${LAMBOX_FIXTURES_CARGO_TARGET:-$REPO/target/lambox-fixtures}
  log "echo-rust: cargo build --release -p echo-rust (target dir $CARGO_TGT; log: $LOGS/cargo-echo-rust.log)"
  : >"$LOGS/cargo-echo-rust.log"
  q cargo-echo-rust.log env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET \
    CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    "$CARGO_BIN" build --release -p echo-rust --manifest-path "$REPO/Cargo.toml" --target-dir "$CARGO_TGT"
  mkdir -p "$BUILD/echo-rust"
  install -m 0755 "$CARGO_TGT/release/echo-rust" "$BUILD/echo-rust/.bootstrap.tmp"
  mv "$BUILD/echo-rust/.bootstrap.tmp" "$ECHO_BIN"
  stamp_set rust-echo-rust "$ECHO_KEY"
  log "echo-rust: built in $(elapsed "$t") s"
fi

# ----------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------
# build_image NAME KEY FUNC: FUNC OUTDIR writes OUTDIR/oci (and more); the
# result is moved to images/NAME only when complete.
BUILT=()
build_image() {
  local name=$1 key=$2 fn=$3 t
  if stamp_ok "image-$name" "$key" && [[ -f $IMAGES/$name/oci/index.json ]]; then
    log "image $name: cached"
    return
  fi
  t=$EPOCHREALTIME
  local tmp=$IMAGES/.$name.tmp
  safe_rm "$tmp"
  mkdir -p "$tmp"
  : >"$LOGS/image-$name.log"
  "$fn" "$tmp"
  # Swap by renames so that readers never see a half-written image.
  local old=$IMAGES/.$name.old
  safe_rm "$old"
  [[ -e $IMAGES/$name ]] && mv "$IMAGES/$name" "$old"
  mv "$tmp" "$IMAGES/$name"
  safe_rm "$old"
  stamp_set "image-$name" "$key"
  BUILT+=("$name")
  log "image $name: built in $(elapsed "$t") s"
}

# Exports and checks with skopeo, the reference client.
skopeo_check() { # NAME OCI_DIR: a real client can read it
  q "image-$1.log" skopeo inspect "oci:$2:latest"
}
docker_archive() { # NAME OUTDIR
  q "image-$1.log" skopeo copy "oci:$2/oci:latest" "docker-archive:$2/docker.tar:localhost/$1:latest"
}

BB_TAR=$ROOTFS/busybox.tar
BB_IMG_KEY="$SCRIPT_KEY $(stamp_get rootfs-busybox)"
BB_CMD='["/bin/sh","-c","echo hi"]'
BB_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

img_busybox() {
  local out=$1
  q image-busybox.log "${MKIMAGE[@]}" image --out "$out/oci" --layer "$BB_TAR" \
    --cmd "$BB_CMD" --env "$BB_ENV"
  skopeo_check busybox "$out/oci"
  docker_archive busybox "$out"
  # A layout whose manifest is Docker v2 schema 2 (what `docker save` >= 25
  # writes). Note skopeo 1.9 can write but not read such a layout.
  q image-busybox.log skopeo copy --format v2s2 "oci:$out/oci:latest" "oci:$out/oci-v2s2:latest"
}
build_image busybox "$BB_IMG_KEY" img_busybox

img_uncompressed() {
  local out=$1
  q image-uncompressed-busybox.log "${MKIMAGE[@]}" image --out "$out/oci" --layer "$BB_TAR" \
    --compress none --cmd "$BB_CMD" --env "$BB_ENV"
  skopeo_check uncompressed-busybox "$out/oci"
}
build_image uncompressed-busybox "$BB_IMG_KEY" img_uncompressed

img_zstd() {
  local out=$1
  q image-zstd-busybox.log skopeo copy --dest-compress-format zstd \
    "oci:$IMAGES/busybox/oci:latest" "oci:$out/oci:latest"
  grep -q 'tar+zstd' "$out/oci/blobs/sha256/"* || die "zstd-busybox: skopeo wrote no zstd layer"
  skopeo_check zstd-busybox "$out/oci"
}
build_image zstd-busybox "$BB_IMG_KEY" img_zstd

img_umoci() {
  local out=$1 lf=image-umoci-busybox.log
  q $lf umoci init --layout "$out/oci"
  q $lf umoci new --image "$out/oci:latest"
  # Layer 1: the busybox root (its last entry is a directory, so only the
  # end-of-archive blocks are missing).
  q $lf umoci insert --image "$out/oci:latest" "$ROOTFS/busybox" /
  # Layer 2: a single file whose size is not a multiple of 512, so the final
  # padding of its data is missing too (GNU tar: "Unexpected EOF in archive").
  printf 'inserted by umoci 0.4.7\n' >"$BUILD/umoci-note"
  q $lf umoci insert --image "$out/oci:latest" "$BUILD/umoci-note" /etc/umoci-note
  q $lf umoci config --image "$out/oci:latest" \
    --config.cmd /bin/sh --config.cmd -c --config.cmd 'echo hi' --config.env "$BB_ENV"
  q $lf umoci gc --layout "$out/oci"
  skopeo_check umoci-busybox "$out/oci"
  docker_archive umoci-busybox "$out"
  # Record the quirks this fixture exists for.
  python3 - "$out/oci" >"$out/NOTE" <<'PY'
import gzip, json, os, subprocess, sys
root = sys.argv[1]
blob = lambda d: os.path.join(root, "blobs", *d.split(":"))
idx = json.load(open(os.path.join(root, "index.json")))
m = json.load(open(blob(idx["manifests"][0]["digest"])))
print("Layers written by `umoci insert` (umoci 0.4.7), kept as they are on purpose:")
for i, l in enumerate(m["layers"], 1):
    data = gzip.open(blob(l["digest"])).read()
    r = subprocess.run(["tar", "-tf", "-"], input=data, capture_output=True)
    gnu = "ok" if r.returncode == 0 else "; ".join(r.stderr.decode().split("\n")).strip("; ")
    print(f"layer {i} {l['digest']}: {len(data)} bytes uncompressed, size % 512 = {len(data) % 512}, "
          f"ends with two zero blocks: {data[-1024:] == bytes(1024)}; GNU tar -t: {gnu}")
PY
}
build_image umoci-busybox "$BB_IMG_KEY umoci=$(sha "$(command -v umoci)")" img_umoci

img_multiarch() {
  local out=$1 lf=image-multiarch.log
  q $lf "${MKIMAGE[@]}" image --out "$out/oci" --tag amd64 --layer "$BB_TAR" \
    --arch amd64 --cmd '["/bin/sh","-c","echo amd64"]' --env "$BB_ENV"
  # arm64 reuses the amd64 layer bytes: only the metadata matters for tests.
  q $lf "${MKIMAGE[@]}" image --out "$out/oci" --tag arm64 --layer "$BB_TAR" \
    --arch arm64 --variant v8 --cmd '["/bin/sh","-c","echo arm64"]' --env "$BB_ENV"
  q $lf "${MKIMAGE[@]}" index --out "$out/oci" --tag latest --member amd64 --member arm64
  skopeo_check multiarch "$out/oci"
  q $lf skopeo --override-arch arm64 --override-variant v8 inspect "oci:$out/oci:latest"
}
build_image multiarch "$BB_IMG_KEY" img_multiarch

img_attestation() {
  local out=$1 lf=image-attestation.log
  q $lf "${MKIMAGE[@]}" image --out "$out/oci" --tag image --layer "$BB_TAR" \
    --cmd "$BB_CMD" --env "$BB_ENV"
  q $lf "${MKIMAGE[@]}" attest --out "$out/oci" --tag attestation --subject image
  q $lf "${MKIMAGE[@]}" index --out "$out/oci" --tag latest --member image --member attestation
  skopeo_check attestation "$out/oci"
}
build_image attestation "$BB_IMG_KEY" img_attestation

img_whiteout() {
  local out=$1 s=$BUILD/layers-whiteout
  safe_rm "$s"
  mkdir -p "$s"/{l1,l2,l3}
  # Layer 1: the base.
  mkdir -p "$s/l1/a/x" "$s/l1/b/q" "$s/l1/c"
  echo inner >"$s/l1/a/x/inner"
  echo y >"$s/l1/a/y"
  echo p >"$s/l1/b/p"
  echo deep >"$s/l1/b/q/deep"
  echo file >"$s/l1/c/file"
  ln "$s/l1/c/file" "$s/l1/c/hl"
  ln -s /c/file "$s/l1/c/sym"
  echo suid >"$s/l1/c/suid"
  chmod 4755 "$s/l1/c/suid"
  echo owned >"$s/l1/c/owned"
  chown 1000:1000 "$s/l1/c/owned"
  chmod 0600 "$s/l1/c/owned"
  # Layer 2: delete /a/x, make /b opaque with a new /b/r.
  mkdir -p "$s/l2/a" "$s/l2/b"
  : >"$s/l2/a/.wh.x"
  : >"$s/l2/b/.wh..wh..opq"
  echo r >"$s/l2/b/r"
  # Layer 3: add /a/z.
  mkdir -p "$s/l3/a"
  echo z >"$s/l3/a/z"
  chmod 0755 "$s"/l{1,2,3} "$s"/l{1,2,3}/* "$s/l1/a/x" "$s/l1/b/q"
  chmod 0644 "$s/l1/a/x/inner" "$s/l1/a/y" "$s/l1/b/p" "$s/l1/b/q/deep" "$s/l1/c/file" \
    "$s/l2/a/.wh.x" "$s/l2/b/.wh..wh..opq" "$s/l2/b/r" "$s/l3/a/z"
  q image-layers-whiteout.log "${MKIMAGE[@]}" image --out "$out/oci" \
    --layer "$s/l1" --layer "$s/l2" --layer "$s/l3" --mtime "$SOURCE_DATE_EPOCH" --cmd '["/c/file"]'
  skopeo_check layers-whiteout "$out/oci"
  docker_archive layers-whiteout "$out"
  # The merged view every correct unpacker must produce:
  # path type mode uid:gid [content-or-target]
  cat >"$out/expected.txt" <<'EOF'
/a dir 0755 0:0
/a/y file 0644 0:0 y
/a/z file 0644 0:0 z
/b dir 0755 0:0
/b/r file 0644 0:0 r
/c dir 0755 0:0
/c/file file 0644 0:0 file
/c/hl hardlink-of:/c/file 0644 0:0 file
/c/owned file 0600 1000:1000 owned
/c/suid file 4755 0:0 suid
/c/sym symlink 0777 0:0 /c/file
EOF
}
build_image layers-whiteout "$SCRIPT_KEY" img_whiteout

DEB_IMG_KEY="$SCRIPT_KEY $(stamp_get rootfs-debian-python)"
PY_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

img_debian_python() { # the base alone (shares its layer blob with hello-python)
  local out=$1
  q image-debian-python.log "${MKIMAGE[@]}" image --out "$out/oci" \
    --layer "$ROOTFS/debian-python.tar" --cmd '["/usr/bin/python3"]' --env "$PY_ENV"
  skopeo_check debian-python "$out/oci"
}
build_image debian-python "$DEB_IMG_KEY" img_debian_python

img_hello_python() {
  local out=$1
  q image-hello-python.log "${MKIMAGE[@]}" image --out "$out/oci" \
    --layer "$ROOTFS/debian-python.tar" --layer "$CTX" \
    --entrypoint '["/usr/bin/python3","-m","awslambdaric"]' --cmd '["app.handler"]' \
    --workdir /function --env "$PY_ENV"
  skopeo_check hello-python "$out/oci"
  docker_archive hello-python "$out"
}
build_image hello-python "$DEB_IMG_KEY $(stamp_get ctx-hello-python)" img_hello_python

FN_ENV=(--env "$PY_ENV" --env LAMBDA_TASK_ROOT=/var/task --env LAMBDA_RUNTIME_DIR=/var/runtime)

# The files the dynamic loader needs for echo-rust, as `ldd` lists them
# (libc.so.6, libgcc_s.so.1, libm.so.6, /lib64/ld-linux-x86-64.so.2 with glibc).
echo_rust_libs() {
  { ldd "$ECHO_BIN" 2>/dev/null || true; } |
    awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u
}
ECHO_LIBS_KEY=$(echo_rust_libs | while read -r l; do printf '%s=%s ' "$l" "$(sha "$l")"; done)

img_rust_echo() { # echo-rust + its libraries, nothing else: no shell
  local out=$1 r=$BUILD/rust-echo-root lib
  safe_rm "$r"
  mkdir -p "$r"/{etc,tmp,proc,sys,dev,opt,var/task,var/runtime}
  install -m 0755 "$ECHO_BIN" "$r/var/task/bootstrap"
  while read -r lib; do
    [[ -n $lib ]] || continue
    mkdir -p "$r$(dirname "$lib")"
    cp -L "$lib" "$r$lib"
  done < <(echo_rust_libs)
  printf 'root:x:0:0:root:/root:/sbin/nologin\n' >"$r/etc/passwd"
  printf 'root:x:0:\n' >"$r/etc/group"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$r/etc/hosts"
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$r/etc/nsswitch.conf"
  chmod 0644 "$r"/etc/*
  find "$r" -type d -exec chmod 0755 {} +
  chmod 1777 "$r/tmp"
  q image-rust-echo.log "${MKIMAGE[@]}" image --out "$out/oci" --layer "$r" --mtime "$SOURCE_DATE_EPOCH" \
    --entrypoint '["/var/task/bootstrap"]' --workdir /var/task "${FN_ENV[@]}"
  skopeo_check rust-echo "$out/oci"
  docker_archive rust-echo "$out"
  safe_rm "$r"
}
build_image rust-echo "$SCRIPT_KEY $(stamp_get rust-echo-rust) libs: $ECHO_LIBS_KEY" img_rust_echo

SHELL_BOOTSTRAP=$HERE/fixtures/shell-runtime/bootstrap
[[ -f $SHELL_BOOTSTRAP ]] || die "$SHELL_BOOTSTRAP missing"
img_shell_runtime() { # the busybox layer (shared) + /var/task/bootstrap
  local out=$1 s=$BUILD/shell-runtime-layer
  safe_rm "$s"
  mkdir -p "$s/var/task"
  install -m 0755 "$SHELL_BOOTSTRAP" "$s/var/task/bootstrap"
  chmod 0755 "$s" "$s/var" "$s/var/task"
  q image-shell-runtime.log "${MKIMAGE[@]}" image --out "$out/oci" \
    --layer "$BB_TAR" --layer "$s" --mtime "$SOURCE_DATE_EPOCH" \
    --entrypoint '["/var/task/bootstrap"]' --workdir /var/task "${FN_ENV[@]}"
  skopeo_check shell-runtime "$out/oci"
  docker_archive shell-runtime "$out"
  safe_rm "$s"
}
build_image shell-runtime "$BB_IMG_KEY bootstrap=$(sha "$SHELL_BOOTSTRAP")" img_shell_runtime

AWS_BASE_DIR=$HERE/fixtures/aws-base
[[ -f $AWS_BASE_DIR/lambda-entrypoint.sh && -f $AWS_BASE_DIR/bootstrap ]] || die "$AWS_BASE_DIR/{lambda-entrypoint.sh,bootstrap} missing"
img_aws_base() { # the busybox layer (shared) + AWS's base-image layout
  local out=$1 s=$BUILD/aws-base-layer
  safe_rm "$s"
  mkdir -p "$s/usr/local/bin" "$s/var/runtime" "$s/var/task"
  install -m 0755 "$AWS_BASE_DIR/lambda-entrypoint.sh" "$s/lambda-entrypoint.sh"
  install -m 0755 "$AWS_BASE_DIR/bootstrap" "$s/var/runtime/bootstrap"
  install -m 0755 "$CACHE/bin/aws-lambda-rie" "$s/usr/local/bin/aws-lambda-rie"
  find "$s" -type d -exec chmod 0755 {} +
  q image-aws-base.log "${MKIMAGE[@]}" image --out "$out/oci" \
    --layer "$BB_TAR" --layer "$s" --mtime "$SOURCE_DATE_EPOCH" \
    --entrypoint '["/lambda-entrypoint.sh"]' --cmd '["app.handler"]' --workdir /var/task \
    "${FN_ENV[@]}" --env LANG=en_US.UTF-8 --env TZ=:/etc/localtime
  skopeo_check aws-base "$out/oci"
  safe_rm "$s"
}
build_image aws-base "$BB_IMG_KEY entrypoint=$(sha "$AWS_BASE_DIR/lambda-entrypoint.sh") \
bootstrap=$(sha "$AWS_BASE_DIR/bootstrap") rie=$(sha "$CACHE/bin/aws-lambda-rie")" img_aws_base

img_probe_python() { # like hello-python, with probe.py (no docker.tar: 240 MB)
  local out=$1
  q image-probe-python.log "${MKIMAGE[@]}" image --out "$out/oci" \
    --layer "$ROOTFS/debian-python.tar" --layer "$PROBE_CTX" \
    --entrypoint '["/usr/bin/python3","-m","awslambdaric"]' --cmd '["probe.handler"]' \
    --workdir /function --env "$PY_ENV"
  skopeo_check probe-python "$out/oci"
}
build_image probe-python "$DEB_IMG_KEY $(stamp_get ctx-probe-python)" img_probe_python

# ----------------------------------------------------------------------------
# The function images under AWS's Runtime Interface Emulator (the oracle):
# unpack each image's layers into a temp root, run it with scripts/rie-run.sh,
# invoke it with curl. Redone only when an image, the RIE or rie-run.sh
# changes. What worked by hand, and what rie-run.sh does (reuse for benchmarks):
#
#   mkdir ROOT; for each layer blob in manifest order: tar --numeric-owner -xpf BLOB -C ROOT
#   scripts/rie-run.sh ROOT 18080 -r -- /var/task/bootstrap        # rust-echo, shell-runtime
#   scripts/rie-run.sh ROOT 18080 -r -w /function -- /usr/bin/python3 -m awslambdaric probe.handler
#   curl --noproxy '*' -XPOST http://127.0.0.1:18080/2015-03-31/functions/function/invocations -d '{"a":1}'
#   # -> {"a":1}
#
# where rie-run.sh runs, as root (ROOT itself is never written to):
#   env -i PATH=... LAMBDA_TASK_ROOT=/var/task ... \
#     unshare --mount --propagation private --pid --fork --kill-child=SIGKILL sh -c '
#       mount -t tmpfs rie-run $TMP; mount -t overlay -o lowerdir=ROOT,upperdir=$TMP/upper,workdir=$TMP/work rie-run $TMP/merged
#       cp aws-lambda-rie $TMP/merged/usr/local/bin/; mount -t proc proc $TMP/merged/proc
#       (tmpfs /dev with null zero full random urandom bind-mounted; tmpfs /dev/shm; tmpfs /tmp 512m)
#       mount -o remount,ro,bind $TMP/merged                      # -r
#       exec unshare --root=$TMP/merged --wd=/var/task \
#         /usr/local/bin/aws-lambda-rie --runtime-interface-emulator-address 127.0.0.1:18080 \
#           --runtime-api-address 127.0.0.1:FREE_PORT /var/task/bootstrap'
# The RIE's flags go before the entrypoint (it has no --help: unknown words are
# the command); without --runtime-interface-emulator-address it listens on
# 0.0.0.0:8080. It serves the Runtime API to the function on 127.0.0.1:9001
# unless --runtime-api-address says otherwise (AWS_LAMBDA_RUNTIME_API follows).
# ----------------------------------------------------------------------------
RIE_PID= RIE_ADDR=
RIE_SESSION_LOG=$LOGS/.rie-session.log
rie_stop() {
  if [[ -n $RIE_PID ]]; then
    kill -TERM "$RIE_PID" 2>/dev/null || true
    wait "$RIE_PID" 2>/dev/null || true
    cat "$RIE_SESSION_LOG" >>"$LOGS/rie-check.log" 2>/dev/null || true
    rm -f "$RIE_SESSION_LOG"
  fi
  RIE_PID=
}
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
rie_start() { # ROOT [rie-run options] -- ENTRYPOINT...: start, wait until ready
  local root=$1 port attempt lf=$LOGS/rie-check.log
  shift
  for attempt in 1 2 3; do
    port=$(free_port)
    printf '$ scripts/rie-run.sh %s %s -l warn %s\n' "$root" "$port" "$*" >>"$lf"
    : >"$RIE_SESSION_LOG"
    "$HERE/rie-run.sh" "$root" "$port" -l warn "$@" >>"$RIE_SESSION_LOG" 2>&1 &
    RIE_PID=$! RIE_ADDR=127.0.0.1:$port
    for _ in $(seq 200); do
      if grep -q "rie-run: ready on $RIE_ADDR" "$RIE_SESSION_LOG"; then return 0; fi
      kill -0 "$RIE_PID" 2>/dev/null || break
      sleep 0.05
    done
    rie_stop
  done
  return 1
}
# rie_expect EVENT PYTHON_EXPR: invoke; EXPR (on the parsed JSON response r)
# must be true.
rie_expect() {
  local lf=$LOGS/rie-check.log body
  printf '$ curl -XPOST http://%s/2015-03-31/functions/function/invocations -d %q\n' "$RIE_ADDR" "$1" >>"$lf"
  body=$(curl -sS --noproxy '*' --max-time 60 -XPOST \
    "http://$RIE_ADDR/2015-03-31/functions/function/invocations" -d "$1" 2>>"$lf") || {
    rie_stop
    tail -n 30 "$lf" >&2
    die "RIE check: invoking $RIE_ADDR failed (log: $lf)"
  }
  printf '%.2000s\n' "$body" >>"$lf"
  if ! python3 -c 'import json, sys; r = json.loads(sys.argv[1]); sys.exit(0 if eval(sys.argv[2]) else 1)' \
    "$body" "$2" 2>>"$lf"; then
    rie_stop
    tail -n 30 "$lf" >&2
    die "RIE check: event $1 gave ${body:0:300}; expected $2 (log: $lf)"
  fi
}
unpack_image() { # OCI_LAYOUT DEST: apply the layers in order (these images have no whiteouts)
  local blob
  safe_rm "$2"
  mkdir -p "$2"
  while read -r blob; do
    tar --numeric-owner -xpf "$blob" -C "$2"
  done < <(python3 - "$1" <<'PY'
import json, os, sys
root = sys.argv[1]
path = lambda d: os.path.join(root, "blobs", *d.split(":"))
idx = json.load(open(os.path.join(root, "index.json")))
m = json.load(open(path(idx["manifests"][0]["digest"])))
for l in m["layers"]:
    print(path(l["digest"]))
PY
  )
}

RIE_CHECK_KEY="$SCRIPT_KEY $(stamp_get pip-tools) rie-run=$(sha "$HERE/rie-run.sh") \
$(stamp_get image-rust-echo | sha256sum) $(stamp_get image-shell-runtime | sha256sum) \
$(stamp_get image-probe-python | sha256sum) $(stamp_get image-aws-base | sha256sum)"
if stamp_ok rie-check "$RIE_CHECK_KEY"; then
  log "RIE check of rust-echo, shell-runtime, probe-python, aws-base: cached"
elif ! unshare --mount --pid --fork true >/dev/null 2>&1; then
  log "WARNING: RIE check skipped: cannot create mount+pid namespaces here (unshare failed)"
else
  t=$EPOCHREALTIME
  trap rie_stop EXIT
  RC=$BUILD/rie-check
  : >"$LOGS/rie-check.log"

  unpack_image "$IMAGES/shell-runtime/oci" "$RC/shell-runtime"
  rie_start "$RC/shell-runtime" -r -- /var/task/bootstrap || die "RIE did not start for shell-runtime (log: $LOGS/rie-check.log)"
  rie_expect '{"a":1}' 'r == {"a": 1}'
  rie_expect '{"x":"fail"}' 'r == {"errorMessage": "failed", "errorType": "ShellError"}'
  rie_expect '[1,2]' 'r == [1, 2]'
  rie_stop

  unpack_image "$IMAGES/rust-echo/oci" "$RC/rust-echo"
  rie_start "$RC/rust-echo" -r -- /var/task/bootstrap || die "RIE did not start for rust-echo (log: $LOGS/rie-check.log)"
  rie_expect '{"a":1}' 'r == {"a": 1}'
  rie_expect '{"error":"boom"}' 'r["errorType"] == "EchoError" and r["errorMessage"] == "boom"'
  rie_expect '{"bytes":5}' 'r == "xxxxx"'
  rie_expect '{"sleep_ms":20,"alloc_mb":16}' 'r == {"sleep_ms": 20, "alloc_mb": 16}'
  rie_stop

  # AWS's base-image entrypoint under the RIE (which sets AWS_LAMBDA_RUNTIME_API
  # for its child): /lambda-entrypoint.sh must exec the runtime with _HANDLER.
  unpack_image "$IMAGES/aws-base/oci" "$RC/aws-base"
  rie_start "$RC/aws-base" -r -- /lambda-entrypoint.sh app.handler || die "RIE did not start for aws-base (log: $LOGS/rie-check.log)"
  rie_expect '{"a":1}' 'r["handler"] == "app.handler" and r["runtime"] == "/var/runtime/bootstrap" and r["event"] == {"a": 1}'
  rie_expect '{"x":"fail"}' 'r == {"errorMessage": "failed", "errorType": "AwsBaseError"}'
  rie_stop

  unpack_image "$IMAGES/probe-python/oci" "$RC/probe-python"
  rie_start "$RC/probe-python" -r -w /function -- /usr/bin/python3 -m awslambdaric probe.handler ||
    die "RIE did not start for probe-python (log: $LOGS/rie-check.log)"
  rie_expect '{}' 'r["uid"] == 0 and r["root_writable"] is False and r["tmp"]["writable"] and r["cwd"] == "/function" and r["connect_127.0.0.1:9001"]["connected"] is False'
  rie_expect '{"write_tmp_mb":600}' 'r["write_tmp"]["ok"] is False and r["write_tmp"]["errno"] == "ENOSPC"'
  rie_stop

  trap - EXIT
  safe_rm "$RC"
  stamp_set rie-check "$RIE_CHECK_KEY"
  log "RIE check of rust-echo, shell-runtime, probe-python, aws-base: passed in $(elapsed "$t") s (log: $LOGS/rie-check.log)"
fi

# Images built by buildah from a Dockerfile, offline (base imported with
# `podman import`, CONTAINERS_CONF for the rlimits, runc). Optional: if buildah
# fails here, the other fixtures stay usable and images/NAME.SKIPPED says why.
buildah_storage_reset() {
  buildah rm --all >/dev/null 2>&1 || true
  safe_rm "$CACHE/containers/storage" "$CACHE/containers/run"
}
# buildah_image NAME OUT BASE_TAR BASE_REF DOCKERFILE CONTEXT
buildah_image() {
  local name=$1 out=$2 base_tar=$3 base_ref=$4 dockerfile=$5 ctx=$6
  local lf=$LOGS/image-$name.log ok=1
  buildah_storage_reset
  podman import --quiet "$base_tar" "$base_ref" >>"$lf" 2>&1 &&
    buildah bud --network none --runtime runc --layers=false \
      -f "$dockerfile" -t "localhost/$name:latest" "$ctx" >>"$lf" 2>&1 &&
    buildah push "localhost/$name:latest" "oci:$out/oci:latest" >>"$lf" 2>&1 &&
    skopeo copy "containers-storage:localhost/$name:latest" \
      "docker-archive:$out/docker.tar:localhost/$name:latest" >>"$lf" 2>&1 &&
    skopeo inspect "oci:$out/oci:latest" >>"$lf" 2>&1 || ok=0
  buildah_storage_reset
  if ((ok)); then
    rm -f "$IMAGES/$name.SKIPPED"
  else
    tail -n 20 "$lf" >&2
    {
      echo "buildah could not build $name on this machine; log: $lf"
      tail -n 20 "$lf"
    } >"$IMAGES/$name.SKIPPED"
    log "WARNING: $name skipped (see $IMAGES/$name.SKIPPED)"
    safe_rm "$out"
    mkdir -p "$out"
  fi
}
after_buildah() { # NAME: forget a skipped image so that the next run retries
  if [[ -f $IMAGES/$1.SKIPPED ]]; then
    safe_rm "$IMAGES/$1"
    rm -f "$STAMPS/image-$1"
  fi
}
BUILDAH_VER=$(sha "$(command -v buildah)")

# hello-python from examples/hello-python/Dockerfile: buildah's own layering
# of the same function (COPY only, so no stray entries in its layer).
img_hello_python_buildah() {
  buildah_image hello-python-buildah "$1" "$ROOTFS/debian-python.tar" \
    localhost/debian-python:bookworm "$DOCKERFILE" "$CTX"
}
build_image hello-python-buildah \
  "$DEB_IMG_KEY $(stamp_get ctx-hello-python) dockerfile=$(sha "$DOCKERFILE") buildah=$BUILDAH_VER" \
  img_hello_python_buildah
after_buildah hello-python-buildah

# busybox + a RUN step: the RUN layer gets buildah's stray entries
# (etc/hostname, run/) next to the file the step wrote.
img_buildah_run() {
  local ctx=$BUILD/buildah-run
  safe_rm "$ctx"
  mkdir -p "$ctx"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM localhost/busybox:latest
RUN echo built-by-buildah > /hello.txt
CMD ["/bin/cat", "/hello.txt"]
EOF
  buildah_image buildah-run "$1" "$ROOTFS/busybox.tar" localhost/busybox:latest \
    "$ctx/Dockerfile" "$ctx"
}
build_image buildah-run "$BB_IMG_KEY buildah=$BUILDAH_VER" img_buildah_run
after_buildah buildah-run

# Drop images this script no longer builds.
KNOWN=" busybox uncompressed-busybox zstd-busybox umoci-busybox multiarch attestation layers-whiteout debian-python hello-python rust-echo shell-runtime aws-base probe-python hello-python-buildah buildah-run "
for d in "$IMAGES"/*/; do
  n=$(basename "$d")
  [[ $KNOWN == *" $n "* ]] || { log "removing stale image $n"; safe_rm "$d"; rm -f "$STAMPS/image-$n"; }
done

# ----------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------
python3 - "$CACHE" >"$CACHE/SUMMARY.txt" <<'PY'
import json, os, sys
cache = sys.argv[1]
images = os.path.join(cache, "images")

def blob(root, digest):
    return json.load(open(os.path.join(root, "blobs", *digest.split(":"))))

def du(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for dp, _, fs in os.walk(path):
        for f in fs:
            p = os.path.join(dp, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total

def describe(root):
    idx = json.load(open(os.path.join(root, "index.json")))
    out = []
    for d in idx["manifests"]:
        tag = d.get("annotations", {}).get("org.opencontainers.image.ref.name", "?")
        mt = d["mediaType"]
        if mt.endswith("index.v1+json"):
            sub = blob(root, d["digest"])
            plats = []
            for m in sub["manifests"]:
                p = m.get("platform", {})
                s = p.get("os", "?") + "/" + p.get("architecture", "?")
                if p.get("variant"):
                    s += "/" + p["variant"]
                if m.get("annotations", {}).get("vnd.docker.reference.type"):
                    s += "(" + m["annotations"]["vnd.docker.reference.type"] + ")"
                plats.append(s)
            out.append(f"{tag}: index [{', '.join(plats)}]")
        else:
            m = blob(root, d["digest"])
            c = blob(root, m["config"]["digest"])
            lts = sorted({l["mediaType"].rsplit(".", 1)[-1] for l in m["layers"]})
            out.append(
                f"{tag}: {mt.split('/')[-1]} {len(m['layers'])} layer(s) [{','.join(lts)}] "
                f"{c.get('os')}/{c.get('architecture')} "
                f"entrypoint={c.get('config', {}).get('Entrypoint')} cmd={c.get('config', {}).get('Cmd')}"
            )
    return out

print(f"lambox fixtures in {cache}")
print()
for r in ["busybox", "busybox.tar", "debian-python", "debian-python.tar"]:
    p = os.path.join(cache, "rootfs", r)
    if os.path.exists(p):
        print(f"rootfs/{r:<28} {du(p) / 1e6:8.1f} MB")
versions = os.path.join(cache, "bin", "VERSIONS")
if os.path.exists(versions):
    print()
    for line in open(versions):
        print("bin/" + line.rstrip())
print()
for name in sorted(os.listdir(images)):
    d = os.path.join(images, name)
    if name.startswith(".") or not os.path.isdir(d):
        if name.endswith(".SKIPPED"):
            print(f"images/{name}: {open(d).readline().strip()}")
        continue
    print(f"images/{name}/  ({du(d) / 1e6:.1f} MB)")
    for sub in sorted(os.listdir(d)):
        p = os.path.join(d, sub)
        if os.path.isfile(os.path.join(p, "index.json")):
            for line in describe(p):
                print(f"  {sub + '/':<10} {line}")
        else:
            print(f"  {sub}")
PY
cat "$CACHE/SUMMARY.txt"
log "done: ${#BUILT[@]} image(s) rebuilt${BUILT:+ (${BUILT[*]})}; cache $CACHE"
