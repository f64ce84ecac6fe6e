#!/usr/bin/env bash
# Reproducible import benchmark: `lambox pull` against its peer, `skopeo copy
# docker://… oci:…` followed by `umoci unpack`, side by side in one run, from
# a loopback registry. BENCHMARKS.md explains every figure this prints.
#
#   scripts/bench-import.sh [--runs N] [--hash-mib N] [--results DIR] [--keep]
#
#   --runs N       timed rounds after one warm-up round (default 7, at least 5)
#   --hash-mib N   size of the uncompressed layer for the hashing figure
#                  (default 1024 MiB; 0 skips that section)
#   --results DIR  also copy the hyperfine JSON files and the summary to DIR
#   --keep         keep the scratch directory (printed at the end)
#
# Environment: LAMBOX_FIXTURES (fixture cache, default /var/cache/lambox-fixtures),
# BENCH_TMPDIR (where the scratch directory goes, default /var/tmp; every
# destination of every timed command lives there, so all write to one disk).
#
# What it does:
#   1. cargo build --release; scripts/build-fixtures.sh; installs hyperfine
#      from apt if it is missing.
#   2. Starts Debian's docker-registry on a free 127.0.0.1 port with its own
#      config (filesystem storage in the scratch dir), pushes the hello-python
#      and debian-python fixtures with skopeo.
#   3. Rounds: one hyperfine invocation per round, `--runs 1` for each command,
#      so the commands alternate A B C D E, A B C D E, ...; round 0 is a
#      warm-up and is discarded:
#        A  lambox pull hello:v1 into a fresh data dir
#        B  skopeo copy hello:v1 into a fresh OCI layout && umoci unpack
#        C  B followed by `sync -f` (the durability lambox provides)
#        D  lambox pull hello:v1 into a data dir that already has debian-python
#        E  skopeo copy into a layout that already has debian-python && umoci unpack
#      Every --prepare moves the previous destination aside (a rename; see
#      "Why destinations are moved aside" in BENCHMARKS.md), recreates the
#      starting state, and runs `sync`, so no command pays for another's writeback.
#   4. Bytes fetched, from lambox's own report (without -q).
#   5. Hashing and decompression: openssl speed, sha256sum, gzip -dc and
#      pigz -dc over the base layer blob, lambox load of an OCI layout with one
#      uncompressed layer of random data (data dir on tmpfs and on the disk),
#      and, if perf is installed, where lambox's CPU time goes.
#   6. Prints a Markdown summary on stdout (progress goes to stderr).
#
# Needs root (layer unpacking creates device nodes and trusted.* xattrs, for
# lambox and umoci alike). Cleans up (registry killed by its PID, scratch
# removed) on every exit path.
set -Eeuo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")

RUNS=7
HASH_MIB=1024
RESULTS=
KEEP=0
FIX=${LAMBOX_FIXTURES:-/var/cache/lambox-fixtures}
SCRATCH_PARENT=${BENCH_TMPDIR:-/var/tmp}

# Messages go to fd 3, a copy of the original stderr, so that they still show
# when a trap fires inside a command whose output is redirected to a log file.
exec 3>&2
die() { printf 'bench-import: ERROR: %s\n' "$*" >&3; exit 1; }
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&3; }
usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case $1 in
  --runs) RUNS=${2:?}; shift 2 ;;
  --hash-mib) HASH_MIB=${2:?}; shift 2 ;;
  --results) RESULTS=${2:?}; shift 2 ;;
  --keep) KEEP=1; shift ;;
  -h | --help) usage ;;
  *) usage ;;
  esac
done
[[ $RUNS =~ ^[0-9]+$ && $RUNS -ge 5 ]] || die "--runs must be a number >= 5"
[[ $HASH_MIB =~ ^[0-9]+$ ]] || die "--hash-mib must be a number"
[[ $(id -u) -eq 0 ]] || die "must run as root (lambox and umoci unpack layers with device nodes and trusted.* xattrs)"

# --- cleanup, on every exit path -------------------------------------------
WORK=
SHM=
REG_PID=
CHILD=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # A hyperfine still running (with the command it was timing): its own process group.
  if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM -- "-$CHILD" 2>/dev/null || kill -TERM "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  if [[ -n $REG_PID ]]; then
    "$HERE/registry.sh" stop "$WORK/registry" >/dev/null 2>&1 || true
  fi
  if [[ -n $SHM && -d $SHM ]]; then rm -rf -- "$SHM"; fi
  if [[ -n $WORK && -d $WORK ]]; then
    if [[ $KEEP == 1 ]]; then
      log "kept scratch dir $WORK"
    else
      log "removing scratch dir $WORK"
      rm -rf -- "$WORK"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

# Runs a long command (hyperfine) in its own process group and waits for it, so
# that INT/TERM reach the traps at once and cleanup can stop the whole group.
run_child() {
  setsid -w "$@" &
  CHILD=$!
  local rc=0
  wait "$CHILD" || rc=$?
  CHILD=
  return "$rc"
}

# --- 1. build, fixtures, tools ----------------------------------------------
cd "$REPO"
log "cargo build --release"
cargo build --release >&2
LAMBOX=$REPO/target/release/lambox
[[ -x $LAMBOX ]] || die "$LAMBOX was not built"

log "fixtures (scripts/build-fixtures.sh $FIX)"
bash "$REPO/scripts/build-fixtures.sh" "$FIX" >&2
for img in hello-python debian-python; do
  [[ -f $FIX/images/$img/oci/index.json ]] || die "fixture $img missing in $FIX/images"
done

if ! command -v hyperfine >/dev/null; then
  log "installing hyperfine (apt)"
  apt-get -o DPkg::Lock::Timeout=600 install -y hyperfine >&2 ||
    { apt-get -o DPkg::Lock::Timeout=600 update >&2 &&
      apt-get -o DPkg::Lock::Timeout=600 install -y hyperfine >&2; }
fi
for tool in hyperfine skopeo umoci docker-registry curl python3 openssl gzip sha256sum; do
  command -v "$tool" >/dev/null || die "$tool not installed (scripts/setup.sh installs the rest)"
done
HAVE_PIGZ=0; command -v pigz >/dev/null && HAVE_PIGZ=1
HAVE_PERF=0; command -v perf >/dev/null && perf --version >/dev/null 2>&1 && HAVE_PERF=1

mkdir -p "$SCRATCH_PARENT"
WORK=$(mktemp -d "$SCRATCH_PARENT/lambox-bench.XXXXXX")
mkdir -p "$WORK/json" "$WORK/dst" "$WORK/aside" "$WORK/log"
# Each round leaves about 1.3 GB aside; the hashing section needs 3x its size.
need_kb=$(( (RUNS + 2) * 1400 * 1024 + HASH_MIB * 3 * 1024 ))
avail_kb=$(df -Pk "$WORK" | awk 'NR==2 {print $4}')
[[ $avail_kb -gt $need_kb ]] || die "$WORK: need about $((need_kb / 1024 / 1024)) GiB free, have $((avail_kb / 1024 / 1024)) GiB"

# --- 2. registry ----------------------------------------------------------
log "starting docker-registry"
ADDR=$("$HERE/registry.sh" start "$WORK/registry")
REG_PID=$(<"$WORK/registry/pid")
log "registry at $ADDR (pid $REG_PID)"
skopeo copy -q --dest-tls-verify=false "oci:$FIX/images/hello-python/oci:latest" "docker://$ADDR/hello:v1" >&2
skopeo copy -q --dest-tls-verify=false "oci:$FIX/images/debian-python/oci:latest" "docker://$ADDR/debian-python:v1" >&2
log "pushed $ADDR/hello:v1 and $ADDR/debian-python:v1"

# --- 3. the rounds ----------------------------------------------------------
DST=$WORK/dst
# tmpfs data dir for the hashing figure (section 5), so that it measures lambox, not the disk.
SHM_DATA=/nonexistent/lambox-bench
if [[ $HASH_MIB -gt 0 ]]; then
  SHM=$(mktemp -d /dev/shm/lambox-bench.XXXXXX)
  SHM_DATA=$SHM/data
fi
PREP=$WORK/prep.sh
# The prepare step: move the previous destination aside (never delete during
# the timed part: on ext4 without a journal, creating inodes right after many
# were deleted is several times slower, see BENCHMARKS.md), set up the
# starting state, and flush all dirty data so that no run pays for another's
# writeback.
cat >"$PREP" <<EOF
#!/usr/bin/env bash
set -euo pipefail
aside() { if [[ -e \$1 ]]; then mv "\$1" "$WORK/aside/\$(basename "\$1").\$(date +%s%N)"; fi; }
case \$1 in
lambox) aside "$DST/lambox" ;;
peer) aside "$DST/peer-oci"; aside "$DST/peer-bundle" ;;
peer-sync) aside "$DST/peersync-oci"; aside "$DST/peersync-bundle" ;;
lambox-shared)
  aside "$DST/lambox-shared"
  "$LAMBOX" --data-dir "$DST/lambox-shared" pull "$ADDR/debian-python:v1" -q >/dev/null ;;
peer-shared)
  aside "$DST/peershared-oci"; aside "$DST/peershared-bundle"
  skopeo copy -q --src-tls-verify=false "docker://$ADDR/debian-python:v1" "oci:$DST/peershared-oci:base" ;;
hash-shm) rm -rf "$SHM_DATA" ;;
hash-disk) rm -rf "$DST/hash-disk" ;;
*) echo "prep.sh: unknown case \$1" >&2; exit 2 ;;
esac
sync
EOF

CMD_A="$LAMBOX --data-dir $DST/lambox pull $ADDR/hello:v1 -q"
CMD_B="sh -c 'skopeo copy -q --src-tls-verify=false docker://$ADDR/hello:v1 oci:$DST/peer-oci:latest && umoci unpack --image $DST/peer-oci:latest $DST/peer-bundle >/dev/null'"
CMD_C="sh -c 'skopeo copy -q --src-tls-verify=false docker://$ADDR/hello:v1 oci:$DST/peersync-oci:latest && umoci unpack --image $DST/peersync-oci:latest $DST/peersync-bundle >/dev/null && sync -f $DST/peersync-bundle'"
CMD_D="$LAMBOX --data-dir $DST/lambox-shared pull $ADDR/hello:v1 -q"
CMD_E="sh -c 'skopeo copy -q --src-tls-verify=false docker://$ADDR/hello:v1 oci:$DST/peershared-oci:latest && umoci unpack --image $DST/peershared-oci:latest $DST/peershared-bundle >/dev/null'"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 0; r <= RUNS; r++)); do
  if [[ $r -eq 0 ]]; then log "round 0 (warm-up, discarded)"; else log "round $r of $RUNS"; fi
  run_child hyperfine -N --runs 1 --style basic --export-json "$WORK/json/round-$r.json" \
    -n lambox-full --prepare "bash $PREP lambox" "$CMD_A" \
    -n peer-full --prepare "bash $PREP peer" "$CMD_B" \
    -n peer-full+syncfs --prepare "bash $PREP peer-sync" "$CMD_C" \
    -n lambox-shared-base --prepare "bash $PREP lambox-shared" "$CMD_D" \
    -n peer-shared-base --prepare "bash $PREP peer-shared" "$CMD_E" \
    >"$WORK/log/round-$r.txt" 2>&1 || { cat "$WORK/log/round-$r.txt" >&2; die "hyperfine round $r failed"; }
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# Check that the destinations really hold the image (the last round's).
[[ -x $DST/peer-bundle/rootfs/usr/bin/python3 ]] || die "umoci bundle has no /usr/bin/python3"
[[ $(find "$DST/lambox/layers" -mindepth 1 -maxdepth 1 -type d | wc -l) -eq 2 ]] || die "lambox data dir does not have 2 layers"

# --- 4. bytes fetched ---------------------------------------------------------
log "bytes fetched (lambox without -q)"
bash "$PREP" lambox
FULL_LINE=$("$LAMBOX" --data-dir "$DST/lambox" pull "$ADDR/hello:v1" 2>&1 >/dev/null | grep 'bytes fetched' || true)
bash "$PREP" lambox-shared
SHARED_LINE=$("$LAMBOX" --data-dir "$DST/lambox-shared" pull "$ADDR/hello:v1" 2>&1 >/dev/null | grep 'bytes fetched' || true)
[[ -n $FULL_LINE && -n $SHARED_LINE ]] || die "lambox did not report bytes fetched"
FULL_LAYERS_BYTES=$(du -sb "$DST/lambox/layers" | cut -f1)
bash "$PREP" peer-shared
skopeo --debug copy --src-tls-verify=false "docker://$ADDR/hello:v1" "oci:$DST/peershared-oci:latest" \
  >"$WORK/log/skopeo-shared.txt" 2>&1 || die "skopeo copy (shared base) failed: $(tail -n 3 "$WORK/log/skopeo-shared.txt")"
PEER_SHARED_SKIPPED=$(grep -c 'Skipping blob' "$WORK/log/skopeo-shared.txt" || true)
PEER_SHARED_GETS=$(grep -c 'GET http://[^ ]*/blobs/' "$WORK/log/skopeo-shared.txt" || true)
PEER_SHARED_SKOPEO="skopeo --debug: $PEER_SHARED_SKIPPED blob(s) skipped as already present, $PEER_SHARED_GETS blob GET(s) (layer and config)"

# Durable writes: how long lambox waits in syncfs/fdatasync/fsync during one pull.
# strace slows the pull itself (so its wall time is not used); the sync
# durations are bounded by the device, not by the tracing.
SYNC_LINE=
if command -v strace >/dev/null; then
  log "sync calls of one lambox pull (strace)"
  bash "$PREP" lambox
  if strace -f --seccomp-bpf -qq -e trace=syncfs,fdatasync,fsync -T -o "$WORK/log/strace-sync.txt" \
    "$LAMBOX" --data-dir "$DST/lambox" pull "$ADDR/hello:v1" -q >/dev/null 2>&1; then
    SYNC_LINE=$(awk '{print $2, $NF}' "$WORK/log/strace-sync.txt" | sed 's/(.*)//' |
      awk '{gsub(/[<>]/, "", $2); s[$1] += $2; n[$1]++; t += $2}
           END {for (k in s) printf "%s %d call(s) %.2f s; ", k, n[k], s[k]; printf "total %.2f s", t}')
  fi
fi

# --- 5. hashing and decompression -----------------------------------------------
BASE_BLOB=$(python3 - "$FIX/images/debian-python/oci" <<'PY'
import json, sys, os
d = sys.argv[1]
idx = json.load(open(os.path.join(d, "index.json")))
m = json.load(open(os.path.join(d, "blobs", *idx["manifests"][0]["digest"].split(":"))))
print(os.path.join(d, "blobs", *m["layers"][0]["digest"].split(":")))
PY
)
cat "$BASE_BLOB" >/dev/null
# hello-python's layers: compressed and uncompressed bytes (for the pull profile).
read -r HELLO_BLOB_BYTES HELLO_TAR_BYTES < <(python3 - "$FIX/images/hello-python/oci" <<'PY'
import gzip, json, sys, os
d = sys.argv[1]
idx = json.load(open(os.path.join(d, "index.json")))
m = json.load(open(os.path.join(d, "blobs", *idx["manifests"][0]["digest"].split(":"))))
blob = tar = 0
for l in m["layers"]:
    path = os.path.join(d, "blobs", *l["digest"].split(":"))
    blob += os.path.getsize(path)
    with gzip.open(path) as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            tar += len(b)
print(blob, tar)
PY
)
log "gzip -dc / pigz -dc over the base layer blob"
DECOMP_CMDS=(-n "gzip -dc" "sh -c 'gzip -dc $BASE_BLOB >/dev/null'")
[[ $HAVE_PIGZ == 1 ]] && DECOMP_CMDS+=(-n "pigz -dc" "sh -c 'pigz -dc $BASE_BLOB >/dev/null'")
run_child hyperfine -N --warmup 1 --runs 5 --style basic --export-json "$WORK/json/decompress.json" \
  "${DECOMP_CMDS[@]}" >"$WORK/log/decompress.txt" 2>&1 || { cat "$WORK/log/decompress.txt" >&2; die "decompression timing failed"; }
BASE_TAR_BYTES=$(gzip -dc "$BASE_BLOB" | wc -c)

log "openssl speed -evp sha256"
OPENSSL_LINE=$(openssl speed -evp sha256 -bytes 16384 -seconds 3 2>/dev/null | tail -n 1)
SHANI=$(grep -m1 -ow sha_ni /proc/cpuinfo || echo "absent")

PERF_PULL=
if [[ $HAVE_PERF == 1 ]]; then
  log "perf: where lambox pull spends its CPU time"
  bash "$PREP" lambox
  if perf record -q -e cpu-clock -c 1000000 -o "$WORK/perf-pull.data" \
    "$LAMBOX" --data-dir "$DST/lambox" pull "$ADDR/hello:v1" -q >/dev/null 2>"$WORK/log/perf-pull.txt"; then
    perf report -i "$WORK/perf-pull.data" --no-children --sort dso,sym --stdio -n \
      >"$WORK/perf-pull.txt" 2>/dev/null || true
    PERF_PULL=$WORK/perf-pull.txt
  else
    log "perf record failed (see $WORK/log/perf-pull.txt); skipping the profile"
  fi
fi

HASH_BYTES=0
PERF_LOAD=
if [[ $HASH_MIB -gt 0 ]]; then
  log "hashing: ${HASH_MIB} MiB of random data"
  H=$WORK/hash
  mkdir -p "$H/root"
  head -c "$((HASH_MIB << 20))" /dev/urandom >"$H/root/data"
  run_child hyperfine -N --warmup 1 --runs 3 --style basic --export-json "$WORK/json/sha256sum.json" \
    -n sha256sum "sha256sum $H/root/data" >"$WORK/log/sha256sum.txt" 2>&1 ||
    { cat "$WORK/log/sha256sum.txt" >&2; die "sha256sum timing failed"; }
  python3 "$REPO/scripts/mkimage.py" image --out "$H/oci" --tag latest --layer "$H/root" \
    --compress none --cmd '["/data"]' >&2
  rm -rf "$H/root"
  HASH_BYTES=$(python3 - "$H/oci" <<'PY'
import json, sys, os
d = sys.argv[1]
idx = json.load(open(os.path.join(d, "index.json")))
m = json.load(open(os.path.join(d, "blobs", *idx["manifests"][0]["digest"].split(":"))))
print(m["layers"][0]["size"])
PY
)
  cat "$H/oci/blobs/sha256/"* >/dev/null
  log "lambox load of the uncompressed layer (tmpfs data dir, then disk data dir)"
  run_child hyperfine -N --warmup 1 --runs 3 --style basic --export-json "$WORK/json/load.json" \
    -n "lambox load (data dir on tmpfs)" --prepare "bash $PREP hash-shm" \
    "$LAMBOX --data-dir $SHM_DATA load oci:$H/oci:latest -q" \
    -n "lambox load (data dir on disk)" --prepare "bash $PREP hash-disk" \
    "$LAMBOX --data-dir $DST/hash-disk load oci:$H/oci:latest -q" \
    >"$WORK/log/load.txt" 2>&1 || { cat "$WORK/log/load.txt" >&2; die "lambox load timing failed"; }
  if [[ $HAVE_PERF == 1 ]]; then
    bash "$PREP" hash-shm
    if perf record -q -e cpu-clock -c 1000000 -o "$WORK/perf-load.data" \
      "$LAMBOX" --data-dir "$SHM_DATA" load "oci:$H/oci:latest" -q >/dev/null 2>"$WORK/log/perf-load.txt"; then
      perf report -i "$WORK/perf-load.data" --no-children --sort dso,sym --stdio -n \
        >"$WORK/perf-load.txt" 2>/dev/null || true
      PERF_LOAD=$WORK/perf-load.txt
    fi
  fi
  rm -rf "$SHM_DATA" "$DST/hash-disk"
fi

# --- 6. summary -------------------------------------------------------------
log "summary"
export HELLO_BLOB_BYTES HELLO_TAR_BYTES SYNC_LINE
export WORK RUNS ADDR FULL_LINE SHARED_LINE FULL_LAYERS_BYTES PEER_SHARED_SKOPEO BASE_BLOB \
  BASE_TAR_BYTES OPENSSL_LINE SHANI HASH_BYTES PERF_PULL PERF_LOAD LOAD_START LOAD_END \
  CMD_A CMD_B CMD_C CMD_D CMD_E PREP REPO
export BENCH_FS=$(findmnt -no FSTYPE,OPTIONS -T "$WORK" | tr -s ' ')
BENCH_DEV=$(findmnt -no SOURCE -T "$WORK")
export BENCH_DEV
dev=$(basename "$BENCH_DEV")
export BENCH_JOURNAL=$(cat "/sys/fs/ext4/$dev/journal_task" 2>/dev/null || echo "n/a")
export BENCH_ROTA=$(cat "/sys/block/$dev/queue/rotational" 2>/dev/null || echo "?")
export BENCH_CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
export BENCH_NPROC=$(nproc) BENCH_KERNEL=$(uname -r) BENCH_DATE=$(date -u +%Y-%m-%dT%H:%MZ)
export BENCH_MEM=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
export V_SKOPEO=$(skopeo --version) V_UMOCI=$(umoci --version) V_HYPERFINE=$(hyperfine --version)
export V_REGISTRY=$(docker-registry --version 2>&1 | head -n1)
export V_LAMBOX="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
export V_RUSTC=$(rustc --version 2>/dev/null || echo '?')

python3 - >"$WORK/summary.md" <<'PY'
import json, os, re, statistics as st

E = os.environ
W = E["WORK"]
runs = int(E["RUNS"])

def load(path):
    return json.load(open(path))["results"]

# Per command: list of (wall, user, sys) over the timed rounds (round 0 is the warm-up).
per = {}
for r in range(1, runs + 1):
    for res in load(f"{W}/json/round-{r}.json"):
        per.setdefault(res["command"], []).append((res["times"][0], res["user"], res["system"]))

def med(xs): return st.median(xs)
def fmt(s): return f"{s:.2f} s"

def row(name):
    xs = per[name]
    w = [x[0] for x in xs]
    cpu = [x[1] + x[2] for x in xs]
    return f"| {name} | {fmt(med(w))} | {min(w):.2f}–{max(w):.2f} s | {fmt(med(cpu))} | {len(w)} |"

def ratio(a, b):
    wa = [x[0] for x in per[a]]
    wb = [x[0] for x in per[b]]
    paired = [x / y for x, y in zip(wa, wb)]
    return med(wa) / med(wb), med(paired), min(paired), max(paired)

out = []
p = out.append
p("## lambox pull vs skopeo copy + umoci unpack (loopback registry)")
p("")
p(f"Machine: {E['BENCH_NPROC']} CPUs, {E['BENCH_CPU']}, {E['BENCH_MEM']} RAM, kernel {E['BENCH_KERNEL']}; "
  f"scratch on {E['BENCH_DEV']} ({E['BENCH_FS']}; ext4 journal: {E['BENCH_JOURNAL']}; rotational flag {E['BENCH_ROTA']}); {E['BENCH_DATE']}.")
p(f"lambox {E['V_LAMBOX']} ({E['V_RUSTC']}); {E['V_SKOPEO']}; umoci {E['V_UMOCI']}; {E['V_REGISTRY']}; {E['V_HYPERFINE']}.")
p(f"Load average (1/5/15 min) before the rounds: {E['LOAD_START']}; after: {E['LOAD_END']}.")
p("")
p(f"{runs} timed rounds after 1 warm-up round; each round runs every command once, in the order of the table.")
p("Wall time is what hyperfine measured; CPU is user + system of the command and its children.")
p("")
p("| command | median wall | min–max | median CPU | runs |")
p("|---|---|---|---|---|")
for name in ["lambox-full", "peer-full", "peer-full+syncfs", "lambox-shared-base", "peer-shared-base"]:
    p(row(name))
p("")
for a, b, what in [
    ("lambox-full", "peer-full", "full image, the target (≤ 1.0×)"),
    ("lambox-full", "peer-full+syncfs", "full image, peer also made durable"),
    ("lambox-shared-base", "peer-shared-base", "base layers already stored"),
]:
    rm, rp, lo, hi = ratio(a, b)
    p(f"- **{a} / {b}** ({what}): ratio of medians **{rm:.2f}×**; per-round ratio median {rp:.2f}× (min–max {lo:.2f}–{hi:.2f}×)")
rm, _, _, hi = ratio("lambox-full", "peer-full")
p("")
p(f"Target `lambox ≤ 1.0× peer` (full image): **{'MET' if rm <= 1.0 else 'NOT MET'}** "
  f"(ratio of medians {rm:.2f}×; worst round {hi:.2f}×).")
p("")
p("### Shared base layer")
p("")
def parse(line):
    m = re.search(r"(\d+) layers, (\d+) bytes fetched, (\d+) already stored", line)
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)
fl, fb, fr = parse(E["FULL_LINE"])
sl, sb, sr = parse(E["SHARED_LINE"])
wf = med([x[0] for x in per["lambox-full"]]); ws = med([x[0] for x in per["lambox-shared-base"]])
p("| lambox pull hello:v1 | layers | layers already stored | compressed bytes fetched | median wall |")
p("|---|---|---|---|---|")
p(f"| into an empty store | {fl} | {fr} | {fb:,} | {fmt(wf)} |")
p(f"| debian-python already stored | {sl} | {sr} | {sb:,} | {fmt(ws)} |")
p("")
if fb:
    p(f"Bytes fetched with the base stored: {sb:,} of {fb:,} ({100*sb/fb:.1f} %); time {100*ws/wf:.0f} % of the full pull. "
      f"Unpacked layers of the full pull: {int(E['FULL_LAYERS_BYTES']):,} bytes on disk (du -sb).")
p(f"lambox's own report, full: `{E['FULL_LINE'].strip()}`")
p(f"lambox's own report, shared base: `{E['SHARED_LINE'].strip()}`")
p(f"Peer, base blob already in the OCI layout: {E['PEER_SHARED_SKOPEO'].strip()}; "
  "umoci then unpacks both layers again into a new bundle (it has no layer sharing).")
p("")
if E.get("SYNC_LINE"):
    p("### Durable writes")
    p("")
    p(f"Time one lambox pull (empty store) spends waiting in sync calls, from `strace -f --seccomp-bpf -T`: "
      f"{E['SYNC_LINE']}. For comparison, the peer's median grows by "
      f"{med([x[0] for x in per['peer-full+syncfs']]) - med([x[0] for x in per['peer-full']]):.2f} s when it syncs its output "
      "(peer-full+syncfs − peer-full).")
    p("")

p("### Hashing and decompression")
p("")
p(f"CPU flag sha_ni: {E['SHANI']}.")
m = re.search(r"([\d.]+)k\s*$", E["OPENSSL_LINE"])
if m:
    p(f"`openssl speed -evp sha256 -bytes 16384 -seconds 3`: {float(m.group(1))/1e6:.2f} GB/s (one thread).")
dec = load(f"{W}/json/decompress.json")
tar_bytes = int(E["BASE_TAR_BYTES"])
blob_bytes = os.path.getsize(E["BASE_BLOB"])
for res in dec:
    cpu = res["user"] + res["system"]
    p(f"`{res['command']}` over the base layer blob ({blob_bytes:,} B → {tar_bytes:,} B): "
      f"median wall {res['median']:.2f} s = {tar_bytes/res['median']/1e6:.0f} MB/s of output "
      f"(min–max {res['min']:.2f}–{res['max']:.2f} s); mean CPU {cpu:.2f} s = {tar_bytes/cpu/1e6:.0f} MB/s per CPU-second.")
hb = int(E["HASH_BYTES"])
if hb:
    s = load(f"{W}/json/sha256sum.json")[0]
    p(f"`sha256sum` (coreutils) over {hb/2**20:.0f} MiB (page cache): median {s['median']:.2f} s = {hb/s['median']/1e9:.2f} GB/s.")
    for res in load(f"{W}/json/load.json"):
        t = res["median"]
        p(f"`{res['command']}` of one uncompressed {hb/1e6:.0f} MB layer: median {t:.2f} s "
          f"(min–max {res['min']:.2f}–{res['max']:.2f} s) = {hb/t/1e6:.0f} MB/s imported; "
          f"it hashes every byte twice (blob digest and diff_id), so hashing runs at ≥ {2*hb/t/1e9:.2f} GB/s.")

def profile(path, title, hashed_bytes=None, inflated_bytes=None):
    if not path or not os.path.exists(path):
        return
    cats = {"sha256 (sha2)": 0, "inflate (zlib-rs)": 0, "kernel": 0, "other": 0}
    hot = []
    total = 0
    for line in open(path):
        m = re.match(r"\s*([\d.]+)%\s+(\d+)\s+(\S+)\s+\[(.)\]\s+(.*\S)", line)
        if not m:
            continue
        n, dso, sym = int(m.group(2)), m.group(3), m.group(5)
        total += n
        if "sha2::" in sym:
            cats["sha256 (sha2)"] += n
        elif "zlib_rs::" in sym or "inflate" in sym:
            cats["inflate (zlib-rs)"] += n
        elif dso.startswith("[kernel"):
            cats["kernel"] += n
        else:
            cats["other"] += n
        if len(hot) < 6:
            hot.append(f"{sym} {n} ms")
    if not total:
        return
    p("")
    p(f"{title} (`perf record -e cpu-clock -c 1000000`: one sample per ms of CPU): {total} ms of CPU — " +
      ", ".join(f"{k} {v} ms ({100*v/total:.0f} %)" for k, v in cats.items()) + ".")
    if hashed_bytes and cats["sha256 (sha2)"]:
        p(f"SHA-256 as lambox runs it: {hashed_bytes/1e6:.0f} MB hashed in {cats['sha256 (sha2)']} ms of CPU = "
          f"{hashed_bytes/cats['sha256 (sha2)']/1e6:.2f} GB/s.")
    if inflated_bytes and cats["inflate (zlib-rs)"]:
        p(f"Inflate as lambox runs it: {inflated_bytes/1e6:.0f} MB of tar in {cats['inflate (zlib-rs)']} ms of CPU = "
          f"{inflated_bytes/cats['inflate (zlib-rs)']/1e3:.0f} MB/s.")
    p("Hottest symbols: " + "; ".join(f"`{h}`" for h in hot) + ".")

profile(E.get("PERF_LOAD"), "Profile of `lambox load` of the uncompressed layer (tmpfs data dir)",
        hashed_bytes=2 * hb if hb else None)
# hello-python: compressed blobs are hashed by lambox and once more by oci-client's verifying stream.
hb_blob, hb_tar = int(E["HELLO_BLOB_BYTES"]), int(E["HELLO_TAR_BYTES"])
profile(E.get("PERF_PULL"), "Profile of one `lambox pull` of hello:v1 (empty store)",
        hashed_bytes=2 * hb_blob + hb_tar, inflated_bytes=hb_tar)
p(f"(hello:v1 is {hb_blob:,} compressed bytes, {hb_tar:,} bytes of tar. The SHA-256 figure counts every "
  "compressed byte twice, because oci-client's blob stream verifies the digest and lambox hashes the blob "
  "again, plus every tar byte once for the diff_id.)")
p("")
p("### Commands (as run)")
p("")
p("```sh")
for k, name, prep in [("CMD_A", "lambox-full", "lambox"), ("CMD_B", "peer-full", "peer"),
                      ("CMD_C", "peer-full+syncfs", "peer-sync"), ("CMD_D", "lambox-shared-base", "lambox-shared"),
                      ("CMD_E", "peer-shared-base", "peer-shared")]:
    p(f"# {name}  (prepare: bash prep.sh {prep})")
    p(E[k])
p("```")
print("\n".join(out))
PY

cat "$WORK/summary.md"
if [[ -n $RESULTS ]]; then
  mkdir -p "$RESULTS"
  cp "$WORK/summary.md" "$WORK/prep.sh" "$RESULTS/"
  cp "$WORK"/json/*.json "$RESULTS/"
  cp "$WORK"/log/*.txt "$RESULTS/" 2>/dev/null || true
  for f in perf-pull.txt perf-load.txt; do [[ -f $WORK/$f ]] && cp "$WORK/$f" "$RESULTS/"; done
  log "results copied to $RESULTS"
fi
