#!/usr/bin/env bash
# Reproducible benchmark of `lambox run` against its peers, side by side in one
# run: AWS's runtime interface emulator (RIE, scripts/rie-run.sh on the same
# unpacked image), `cargo lambda watch`, `runc run`, `podman run` (and `crun`,
# which refuses this machine's hybrid cgroup layout: recorded, not timed).
#
#   scripts/bench-run.sh [--quick] [--out FILE] [--keep] [--no-build]
#                        [--no-sandbox-test] [--no-diag]
#
#   --quick            fewer samples (a smoke test of the script, ~2 min)
#   --out FILE         where the Markdown report goes (default target/bench-run.md;
#                      it is also printed on stdout; progress goes to stderr)
#   --keep             keep the scratch directory (raw samples, server logs)
#   --no-build         use target/release/lambox as it is
#   --no-sandbox-test  skip `cargo test -p lambox-sandbox --test latency --test latency_idle`
#   --no-diag          skip the diagnostics (strace -c, cgroup micro-benchmarks)
#
# Environment: LAMBOX_FIXTURES (default /var/cache/lambox-fixtures),
# BENCH_TMPDIR (scratch parent, default /var/tmp).
#
# Figures (every one next to its peer, measured in the same run, alternating):
#   1. Warm invoke latency of the rust-echo image (Rust lambda_runtime echo),
#      1 KB JSON payload, one client, one keep-alive connection per server,
#      200 warm-up invokes then 2000 timed, in 10 rounds of 200 whose order
#      rotates between the servers: lambox (default 128 MB), lambox --memory
#      1769 (one full vCPU: no CFS throttling), RIE, cargo lambda watch.
#      Plus each server's HTTP floor (GET of an unknown path, same client).
#   2. Throughput: wrk, 2 threads, 16 connections, 10 s per server and round,
#      2 rounds in alternating order; lambox --concurrency 2, cargo lambda
#      watch --concurrency 2; RIE with 1 connection (it serves one invoke at a
#      time and crashes on concurrent ones: a nil-pointer panic in
#      rapidcore/server.go after "ReserveFailed: AlreadyReserved").
#   3. Cold start, time to the runtime's first /next:
#      lambox: `Init Duration` of the REPORT line (invoke arrival → first
#      /next), forcing a fresh environment in a running `lambox run
#      --concurrency 1` with an `{"exit":1}` invoke; and separately with a
#      fresh `lambox run` process per sample. Peers, alternating with the
#      lambox samples: the bootstrap exec'd on the host without isolation (the
#      floor), `runc run` of an umoci bundle of the image, `podman run --rm
#      --runtime runc` (--network host, to reach the listener; and --network
#      none, start-to-exit only), each timed from the command's start to the
#      first GET /next at a listener that then hangs up (the runtime exits).
#      RIE: its own `INIT REPORT(durationMs)` with a fresh rie-run per sample.
#      Sandbox setup alone: `cargo test -p lambox-sandbox --test latency` (back
#      to back) and `--test latency_idle` (250 ms apart, Sandbox::spawn against a
#      pre-spawned helper of lambox_sandbox::Helpers, which `lambox run` uses).
#   4. Memory per idle environment: lambox --concurrency 8, RSS with 0, 1 and
#      8 idle environments (8 parallel invokes create them), and the RSS/PSS
#      of the per-environment helper and PID 1 processes (__lambox-sandbox-init).
#   Diagnostics: on-CPU time per invoke of each server and its function,
#   server-side syscalls per warm invoke (strace -c), where lambox's CPU goes
#   under load (perf record -g), a cold start split into phases (perf kernel
#   tracepoints), the cost of the first migration into a fresh cgroup per
#   hierarchy, freeze+thaw of a cgroup v2 freezer, CFS throttling of lambox's
#   environments.
#
# Needs root (namespaces, cgroups, mounts). Installs wrk and crun with apt if
# they are missing. Cleans up on every exit path: the processes it started are
# stopped by PID (SIGTERM, then SIGKILL of what is left of their descendants),
# runc containers it created are deleted, the scratch directory is removed.
set -Eeuo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
FIX=${LAMBOX_FIXTURES:-/var/cache/lambox-fixtures}
SCRATCH_PARENT=${BENCH_TMPDIR:-/var/tmp}
OUT=$REPO/target/bench-run.md
KEEP=0 BUILD=1 SANDBOX_TEST=1 DIAG=1 QUICK=0

die() { printf 'bench-run: ERROR: %s\n' "$*" >&2; exit 1; }
log() { printf '[bench-run %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case $1 in
  --quick) QUICK=1; shift ;;
  --out) OUT=${2:?}; shift 2 ;;
  --keep) KEEP=1; shift ;;
  --no-build) BUILD=0; shift ;;
  --no-sandbox-test) SANDBOX_TEST=0; shift ;;
  --no-diag) DIAG=0; shift ;;
  -h | --help) usage ;;
  *) usage ;;
  esac
done
[[ $(id -u) -eq 0 ]] || die "must run as root (namespaces, cgroups, mounts)"

# Sample counts.
LAT_N=2000 LAT_WARM=200 LAT_ROUNDS=10 FLOOR_N=1000
TPUT_SECS=10 TPUT_ROUNDS=2 TPUT_CONNS=16
COLD_N=30 PODMAN_N=15 RESTART_N=10 MEM_ENVS=8 STRACE_N=500
if [[ $QUICK == 1 ]]; then
  LAT_N=400 LAT_WARM=50 LAT_ROUNDS=4 FLOOR_N=200
  TPUT_SECS=3 TPUT_ROUNDS=1 COLD_N=6 PODMAN_N=3 RESTART_N=3 STRACE_N=200
fi
SCRIPT_START=$(date +%s)

# --- cleanup, on every exit path ---------------------------------------------
WORK=
PIDS=()          # processes started in the background by this script
RUNC_IDS_FILE=   # runc containers created by client.py (one id a line)
descendants() { # all descendants of $1, deepest first
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null || true); do
    descendants "$c"
    echo "$c"
  done
}
stop_pid() { # stop $1 (SIGTERM, wait ≤ 10 s), then SIGKILL whatever is left of its tree
  local pid=$1 tree i
  kill -0 "$pid" 2>/dev/null || return 0
  tree=$(descendants "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for i in $tree; do kill -KILL "$i" 2>/dev/null || true; done
}
cleanup() {
  local rc=$? p id
  trap - EXIT INT TERM HUP ERR
  set +e
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  if [[ -n $RUNC_IDS_FILE && -f $RUNC_IDS_FILE ]]; then
    while read -r id; do runc delete -f "$id" >/dev/null 2>&1 || true; done <"$RUNC_IDS_FILE"
  fi
  if [[ -n $WORK && -d $WORK ]]; then
    if [[ -n ${CONTAINERS_STORAGE_CONF:-} && -d $WORK/podman ]]; then
      podman rm -af -t 0 >/dev/null 2>&1 || true
    fi
    # Anything still mounted below the scratch dir (podman's overlay), deepest first.
    awk -v w="$WORK" '$5 == w || index($5, w "/") == 1 {print $5}' /proc/self/mountinfo | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null || true; done
    if [[ $KEEP == 1 ]]; then
      log "kept scratch dir $WORK"
    else
      rm -rf --one-file-system -- "$WORK" 2>/dev/null || log "could not remove all of $WORK"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

# --- 0. tools, build, fixtures ---------------------------------------------------
need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v crun >/dev/null || need_apt+=(crun)
if ((${#need_apt[@]})); then
  log "installing ${need_apt[*]} (apt)"
  apt-get -o DPkg::Lock::Timeout=600 install -y "${need_apt[@]}" >&2 ||
    { apt-get -o DPkg::Lock::Timeout=600 update >&2 &&
      apt-get -o DPkg::Lock::Timeout=600 install -y "${need_apt[@]}" >&2; }
fi
for tool in wrk runc podman umoci python3 strace; do
  command -v "$tool" >/dev/null || die "$tool is not installed (scripts/setup.sh installs the rest)"
done
RIE_BIN=$FIX/bin/aws-lambda-rie
CARGO_LAMBDA_BIN=$FIX/bin/cargo-lambda
IMAGE_DIR=$FIX/images/rust-echo/oci
[[ -x $RIE_BIN ]] || die "no RIE at $RIE_BIN (scripts/build-fixtures.sh)"
[[ -f $IMAGE_DIR/index.json ]] || die "no rust-echo image at $IMAGE_DIR (scripts/build-fixtures.sh)"

cd "$REPO"
if [[ $BUILD == 1 ]]; then
  log "cargo build --release -p lambox"
  cargo build --release -p lambox >&2 || die "cargo build --release failed"
fi
[[ -x $REPO/target/release/lambox ]] || die "target/release/lambox is missing (build it, or drop --no-build)"

mkdir -p "$SCRATCH_PARENT"
WORK=$(mktemp -d "$SCRATCH_PARENT/lambox-bench-run.XXXXXX")
mkdir -p "$WORK/bin" "$WORK/res" "$WORK/log" "$WORK/py"
RUNC_IDS_FILE=$WORK/runc-ids
: >"$RUNC_IDS_FILE"
# Run a private copy: the work tree may be rebuilt while this runs.
cp "$REPO/target/release/lambox" "$WORK/bin/lambox"
LAMBOX=$WORK/bin/lambox
log "scratch dir $WORK"

# --- the measuring programs (Python standard library only; shared with bench-serve.sh) ---
cp "$REPO/scripts/bench-client.py" "$WORK/py/client.py"
CLIENT=(python3 "$WORK/py/client.py")

cat >"$WORK/py/post.lua" <<'LUA'
-- wrk: POST the 1 KB JSON payload; print a JSON summary line at the end.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"data":"' .. string.rep("x", 1013) .. '"}'
done = function(summary, latency, requests)
  io.write(string.format(
    'JSON:{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
LUA

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
LOADS=()
mark_load() { LOADS+=("$1: $(loadavg)"); }

# --- 1. the image, three ways -----------------------------------------------------------
log "unpacking rust-echo (umoci bundle: RIE's root and runc's bundle)"
umoci unpack --image "$IMAGE_DIR:latest" "$WORK/bundle" >"$WORK/log/umoci.txt" 2>&1 ||
  die "umoci unpack failed: $(tail -n 3 "$WORK/log/umoci.txt")"
ROOTFS=$WORK/bundle/rootfs
[[ -x $ROOTFS/var/task/bootstrap ]] || die "bundle has no /var/task/bootstrap"
# runc: no terminal, read-only root, the host network namespace (so the runtime reaches the
# listener on 127.0.0.1); client.py fills in the environment.
python3 - "$WORK/bundle" <<'PY'
import json, sys, os
b = sys.argv[1]
c = json.load(open(os.path.join(b, "config.json")))
c["process"]["terminal"] = False
c["process"]["args"] = ["/var/task/bootstrap"]
c["root"]["readonly"] = True
c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
json.dump(c, open(os.path.join(b, "config.tmpl.json"), "w"), indent=1)
PY

# lambox: one data dir per `lambox run` process.
load_image() { "$LAMBOX" --data-dir "$1" load "oci:$IMAGE_DIR:latest" -q; }
DIGEST=$(load_image "$WORK/data-lat128")
[[ $DIGEST == sha256:* ]] || die "lambox load printed no digest: $DIGEST"
for d in lat1769 cold restart mem; do load_image "$WORK/data-$d" >/dev/null; done

# podman: private storage and engine dirs in the scratch dir; the fixture cache's
# containers.conf settings (nofile 20000, runc, cgroupfs).
mkdir -p "$WORK/podman/tmp"
cat >"$WORK/podman/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$WORK/podman/tmp"
EOF
PODMAN_DRIVER=overlay
write_storage_conf() {
  cat >"$WORK/podman/storage.conf" <<EOF
[storage]
driver = "$1"
graphroot = "$WORK/podman/storage"
runroot = "$WORK/podman/run"
EOF
}
write_storage_conf overlay
export CONTAINERS_CONF=$WORK/podman/containers.conf CONTAINERS_STORAGE_CONF=$WORK/podman/storage.conf
if ! PODMAN_IMAGE=$(podman pull -q "oci:$IMAGE_DIR:latest" 2>"$WORK/log/podman-pull.txt"); then
  log "podman overlay storage failed ($(tail -n 1 "$WORK/log/podman-pull.txt")); using vfs"
  rm -rf "$WORK/podman/storage" "$WORK/podman/run"
  PODMAN_DRIVER=vfs
  write_storage_conf vfs
  PODMAN_IMAGE=$(podman pull -q "oci:$IMAGE_DIR:latest" 2>"$WORK/log/podman-pull.txt") ||
    die "podman pull failed: $(tail -n 3 "$WORK/log/podman-pull.txt")"
fi
PODMAN_IMAGE=${PODMAN_IMAGE:0:12}

# --- 2. the servers of sections 1 and 2 ----------------------------------------------------
start_lambox() { # NAME DATA_DIR PORT ARGS...  → sets LAST_PID
  local name=$1 data=$2 port=$3
  shift 3
  "$LAMBOX" --data-dir "$data" run "$DIGEST" --listen "127.0.0.1:$port" "$@" \
    >"$WORK/log/$name.log" 2>&1 </dev/null &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}
P_LB128=$(free_port) P_LB1769=$(free_port) P_RIE=$(free_port) P_CL=$(free_port)
CMD_LB128="lambox --data-dir D run IMAGE --listen 127.0.0.1:$P_LB128 --concurrency 2"
CMD_LB1769="lambox --data-dir D run IMAGE --listen 127.0.0.1:$P_LB1769 --concurrency 2 --memory 1769"
CMD_RIE="scripts/rie-run.sh BUNDLE/rootfs $P_RIE -- /var/task/bootstrap"
CMD_CL="cargo lambda watch -p echo-rust --bin echo-rust --release --offline --ignore-changes -A 127.0.0.1 -P $P_CL --concurrency 2"

log "starting lambox (128 MB) on $P_LB128, lambox (1769 MB) on $P_LB1769"
start_lambox lambox-128 "$WORK/data-lat128" "$P_LB128" --concurrency 2
PID_LB128=$LAST_PID
start_lambox lambox-1769 "$WORK/data-lat1769" "$P_LB1769" --concurrency 2 --memory 1769
PID_LB1769=$LAST_PID
log "starting the RIE (scripts/rie-run.sh) on $P_RIE"
"$REPO/scripts/rie-run.sh" "$ROOTFS" "$P_RIE" -- /var/task/bootstrap >"$WORK/log/rie.log" 2>&1 </dev/null &
PID_RIE=$!
PIDS+=("$PID_RIE")
log "starting cargo lambda watch on $P_CL (builds echo-rust in target/release if needed, offline)"
(cd "$REPO" && exec env PATH="$FIX/bin:$PATH" "$CARGO_LAMBDA_BIN" lambda watch -p echo-rust --bin echo-rust \
  --release --offline --ignore-changes -A 127.0.0.1 -P "$P_CL" --concurrency 2) \
  >"$WORK/log/cargo-lambda.log" 2>&1 </dev/null &
PID_CL=$!
PIDS+=("$PID_CL")
for p in "$P_LB128" "$P_LB1769" "$P_RIE" "$P_CL"; do
  "${CLIENT[@]}" wait --port "$p" --secs 300 || die "nothing listens on $p (logs in $WORK/log)"
done
CL_OK=1
if ! "${CLIENT[@]}" one --port "$P_CL" --function echo-rust >"$WORK/res/cl-first.json" 2>"$WORK/log/cl-first.txt"; then
  CL_OK=0
  log "cargo lambda watch does not answer invokes: $(tail -n 3 "$WORK/log/cargo-lambda.log")"
fi

# --- 3. section 1: warm latency ----------------------------------------------------------------
TARGETS=("lambox=$P_LB128:function" "lambox-1769MB=$P_LB1769:function" "RIE=$P_RIE:function")
CPU_TREES=(--cpu "lambox=$PID_LB128" --cpu "lambox-1769MB=$PID_LB1769" --cpu "RIE=$PID_RIE")
[[ $CL_OK == 1 ]] && TARGETS+=("cargo-lambda=$P_CL:echo-rust") && CPU_TREES+=(--cpu "cargo-lambda=$PID_CL")
log "section 1: warm latency, $LAT_WARM warm-up + $LAT_N invokes per server in $LAT_ROUNDS rotating rounds"
mark_load "section 1 start"
"${CLIENT[@]}" lat --n "$LAT_N" --warmup "$LAT_WARM" --rounds "$LAT_ROUNDS" --floor-n "$FLOOR_N" \
  --out "$WORK/res/lat.json" "${CPU_TREES[@]}" "${TARGETS[@]}"
mark_load "section 1 end"

# --- 4. section 2: throughput ------------------------------------------------------------------
log "section 2: throughput, wrk ${TPUT_SECS}s per server and round, $TPUT_ROUNDS round(s)"
TPUT=("lambox|$P_LB128|function|2|$TPUT_CONNS|$PID_LB128" "lambox-1769MB|$P_LB1769|function|2|$TPUT_CONNS|$PID_LB1769")
[[ $CL_OK == 1 ]] && TPUT+=("cargo-lambda|$P_CL|echo-rust|2|$TPUT_CONNS|$PID_CL")
TPUT+=("RIE|$P_RIE|function|1|1|$PID_RIE")
: >"$WORK/res/tput.jsonl"
mark_load "section 2 start"
for ((r = 0; r < TPUT_ROUNDS; r++)); do
  n=${#TPUT[@]}
  for ((k = 0; k < n; k++)); do
    IFS='|' read -r name port fn threads conns root <<<"${TPUT[$(((k + r) % n))]}"
    "${CLIENT[@]}" cpusnap --out "$WORK/res/cpu-$name-$r-0.json" "$name=$root"
    out=$(wrk -t"$threads" -c"$conns" -d"${TPUT_SECS}s" --timeout 10s -s "$WORK/py/post.lua" \
      "http://127.0.0.1:$port/2015-03-31/functions/$fn/invocations" 2>&1) || die "wrk $name failed: $out"
    "${CLIENT[@]}" cpusnap --out "$WORK/res/cpu-$name-$r-1.json" "$name=$root"
    echo "$out" >"$WORK/log/wrk-$name-$r.txt"
    j=$(grep '^JSON:' <<<"$out" | sed 's/^JSON://')
    [[ -n $j ]] || die "wrk printed no summary for $name: $out"
    printf '{"name":"%s","round":%d,"threads":%d,"conns":%d,"w":%s}\n' "$name" "$r" "$threads" "$conns" "$j" \
      >>"$WORK/res/tput.jsonl"
    kill -0 "$PID_RIE" 2>/dev/null || die "the RIE died during $name (see $WORK/log/rie.log)"
  done
done
mark_load "section 2 end"

"${CLIENT[@]}" cgstat --out "$WORK/res/cgstat.json" "lambox=$PID_LB128" "lambox-1769MB=$PID_LB1769"
# Peers' memory, for context: each server with the environments it has now.
RIE_EMU=$(pgrep -f -- "--runtime-interface-emulator-address 127.0.0.1:$P_RIE" | while read -r p; do
  [[ $(cat "/proc/$p/comm" 2>/dev/null) == aws-lambda-rie ]] && echo "$p"; done | head -n 1 || true)
PEER_MEM=("lambox=$PID_LB128")
[[ -n $RIE_EMU ]] && PEER_MEM+=("RIE=$RIE_EMU")
CL_PROC=$(pgrep -P "$PID_CL" -x cargo-lambda | head -n 1 || true)
[[ -z $CL_PROC && $(cat "/proc/$PID_CL/comm" 2>/dev/null) == cargo-lambda ]] && CL_PROC=$PID_CL
[[ -n $CL_PROC ]] && PEER_MEM+=("cargo-lambda=$CL_PROC")
"${CLIENT[@]}" procmem --out "$WORK/res/peermem.json" "${PEER_MEM[@]}"

# --- 5. diagnostics on the warm path: server-side syscalls per invoke ------------------------------
if [[ $DIAG == 1 ]]; then
  log "diagnostics: strace -c of each server over $STRACE_N warm invokes"
  declare -A SPID=([lambox]=$PID_LB128)
  [[ -n $RIE_EMU ]] && SPID[RIE]=$RIE_EMU
  [[ -n $CL_PROC && $CL_OK == 1 ]] && SPID[cargo-lambda]=$CL_PROC
  declare -A SPORT=([lambox]="$P_LB128:function" [RIE]="$P_RIE:function" [cargo-lambda]="$P_CL:echo-rust")
  for name in "${!SPID[@]}"; do
    strace -f -c -o "$WORK/res/strace-$name.txt" -p "${SPID[$name]}" 2>/dev/null &
    ST=$!
    PIDS+=("$ST")
    sleep 1
    "${CLIENT[@]}" lat --n "$STRACE_N" --warmup 5 --rounds 1 --floor-n 20 --out "$WORK/res/strace-lat-$name.json" \
      "$name=${SPORT[$name]}" || true
    kill -INT "$ST" 2>/dev/null || true
    wait "$ST" 2>/dev/null || true
  done
fi

if [[ $DIAG == 1 ]] && command -v perf >/dev/null; then
  # Where lambox's own CPU goes under load (1769 MB: no throttling), by inclusive share.
  log "diagnostics: perf profile of lambox (1769 MB) under 5 s of wrk load"
  perf record -q -F 999 --call-graph dwarf,8192 -p "$PID_LB1769" -o "$WORK/lb.perf" -- sleep 5 \
    >"$WORK/log/perf-lambox.txt" 2>&1 </dev/null &
  PP=$!
  PIDS+=("$PP")
  wrk -t2 -c"$TPUT_CONNS" -d5s -s "$WORK/py/post.lua" \
    "http://127.0.0.1:$P_LB1769/2015-03-31/functions/function/invocations" >/dev/null 2>&1 || true
  wait "$PP" 2>/dev/null || true
  perf report -i "$WORK/lb.perf" --children --sort sym -g none --stdio >"$WORK/res/perf-lambox.txt" 2>/dev/null || true
  rm -f "$WORK/lb.perf"
fi

log "stopping the section 1/2 servers"
for p in "$PID_LB128" "$PID_LB1769" "$PID_RIE" "$PID_CL"; do stop_pid "$p"; done

# --- 6. section 3: cold starts -----------------------------------------------------------------
P_COLD=$(free_port)
CMD_COLD="lambox --data-dir D run IMAGE --listen 127.0.0.1:$P_COLD --concurrency 1"
start_lambox lambox-cold "$WORK/data-cold" "$P_COLD" --concurrency 1
PID_COLD=$LAST_PID
"${CLIENT[@]}" wait --port "$P_COLD"
"${CLIENT[@]}" one --port "$P_COLD" >/dev/null
log "section 3: cold starts, alternating lambox / host exec / runc / podman ($COLD_N rounds)"
mark_load "section 3 start"
"${CLIENT[@]}" cold --n "$COLD_N" --podman-n "$PODMAN_N" --lambox-port "$P_COLD" \
  --lambox-log "$WORK/log/lambox-cold.log" --gap 0.25 --bundle "$WORK/bundle" \
  --podman-image "$PODMAN_IMAGE" --runc-ids "$RUNC_IDS_FILE" --out "$WORK/res/cold.json"
# Where a cold start's time goes: kernel tracepoints (perf, system-wide, low overhead) over a
# few more cold starts of the same lambox, split into phases by the report.
TRACE_OK=0
if [[ $DIAG == 1 ]] && command -v perf >/dev/null; then
  log "diagnostics: perf tracepoints over $([[ $QUICK == 1 ]] && echo 3 || echo 8) cold starts"
  perf record -q -a -o "$WORK/cold.perf" -e sched:sched_process_fork,sched:sched_process_exec \
    -e cgroup:cgroup_mkdir,cgroup:cgroup_attach_task -e syscalls:sys_exit_accept4 \
    -e syscalls:sys_enter_unshare,syscalls:sys_enter_pivot_root,syscalls:sys_enter_connect \
    -e syscalls:sys_enter_writev,syscalls:sys_exit_recvmsg,syscalls:sys_enter_clone3 \
    >"$WORK/log/perf-record.txt" 2>&1 </dev/null &
  PERF_PID=$!
  PIDS+=("$PERF_PID")
  sleep 1
  if kill -0 "$PERF_PID" 2>/dev/null; then
    "${CLIENT[@]}" coldseq --port "$P_COLD" --n "$([[ $QUICK == 1 ]] && echo 3 || echo 8)" --gap 0.25 \
      --out "$WORK/res/coldseq.json" || true
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    if perf script -i "$WORK/cold.perf" -F comm,pid,tid,time,event,trace >"$WORK/cold-trace.txt" 2>/dev/null; then
      TRACE_OK=1
    fi
    rm -f "$WORK/cold.perf"
  else
    log "perf record did not start: $(tail -n 2 "$WORK/log/perf-record.txt")"
  fi
fi
stop_pid "$PID_COLD"

log "section 3: fresh processes, alternating: lambox run / rie-run.sh ($RESTART_N each)"
: >"$WORK/res/restart.jsonl"
for ((i = 0; i < RESTART_N; i++)); do
  # lambox: a new `lambox run`, first invoke 0.3 s after it listens.
  p=$(free_port)
  start_lambox "lambox-restart-$i" "$WORK/data-restart" "$p" --concurrency 1
  lp=$LAST_PID
  "${CLIENT[@]}" wait --port "$p"
  sleep 0.3
  one=$("${CLIENT[@]}" one --port "$p")
  stop_pid "$lp"
  rid=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["request_id"])' "$one")
  init=$(grep -F "REPORT RequestId: $rid" "$WORK/log/lambox-restart-$i.log" | grep -o 'Init Duration: [0-9.]*' | grep -o '[0-9.]*$' || echo null)
  printf '{"who":"lambox","init_ms":%s,"one":%s}\n' "${init:-null}" "$one" >>"$WORK/res/restart.jsonl"
  # RIE: a new rie-run.sh; INIT REPORT(durationMs) is the RIE's own init measure.
  p=$(free_port)
  "$REPO/scripts/rie-run.sh" "$ROOTFS" "$p" -- /var/task/bootstrap >"$WORK/log/rie-restart-$i.log" 2>&1 </dev/null &
  rp=$!
  PIDS+=("$rp")
  "${CLIENT[@]}" wait --port "$p"
  sleep 0.3
  one=$("${CLIENT[@]}" one --port "$p")
  sleep 0.2
  stop_pid "$rp"
  init=$(grep -o 'INIT REPORT(durationMs: [0-9.]*' "$WORK/log/rie-restart-$i.log" | grep -o '[0-9.]*$' | head -n 1 || true)
  printf '{"who":"RIE","init_ms":%s,"one":%s}\n' "${init:-null}" "$one" >>"$WORK/res/restart.jsonl"
done
mark_load "section 3 end"

# --- 7. section 4: memory per idle environment ---------------------------------------------------
P_MEM=$(free_port)
CMD_MEM="lambox --data-dir D run IMAGE --listen 127.0.0.1:$P_MEM --concurrency $MEM_ENVS --timeout 10"
log "section 4: memory with 0, 1 and $MEM_ENVS idle environments"
start_lambox lambox-mem "$WORK/data-mem" "$P_MEM" --concurrency "$MEM_ENVS" --timeout 10
PID_MEM=$LAST_PID
"${CLIENT[@]}" wait --port "$P_MEM"
"${CLIENT[@]}" mem --pid "$PID_MEM" --port "$P_MEM" --envs "$MEM_ENVS" --out "$WORK/res/mem.json"
stop_pid "$PID_MEM"

# --- 8. diagnostics: cgroup micro-benchmarks, sandbox setup ------------------------------------------
if [[ $DIAG == 1 ]]; then
  log "diagnostics: first migration into a fresh cgroup (per hierarchy), freeze+thaw"
  "${CLIENT[@]}" cgmig --n "$([[ $QUICK == 1 ]] && echo 4 || echo 12)" --gap 0.25 --out "$WORK/res/cgmig.json"
  "${CLIENT[@]}" freeze --n 300 --out "$WORK/res/freeze.json"
fi
SANDBOX_OUT=
if [[ $SANDBOX_TEST == 1 ]]; then
  log "sandbox setup: cargo test -p lambox-sandbox --test latency --test latency_idle (may build first; 10 min limit)"
  if timeout 600 cargo test -q -p lambox-sandbox --test latency --test latency_idle -- --nocapture >"$WORK/log/sandbox-latency.txt" 2>&1; then
    SANDBOX_OUT=$WORK/log/sandbox-latency.txt
  else
    log "sandbox latency test failed or timed out: $(tail -n 3 "$WORK/log/sandbox-latency.txt")"
    SANDBOX_OUT="FAILED: $(grep -m3 -E 'error|panicked' "$WORK/log/sandbox-latency.txt" | tr '\n' ' ' | cut -c1-300)"
  fi
fi

# --- 9. the report -----------------------------------------------------------------------------
log "report"
export WORK QUICK LAT_N LAT_WARM LAT_ROUNDS FLOOR_N TPUT_SECS TPUT_ROUNDS TPUT_CONNS COLD_N PODMAN_N RESTART_N
export MEM_ENVS STRACE_N DIAG SANDBOX_OUT CL_OK PODMAN_DRIVER DIGEST TRACE_OK PID_COLD
export CMD_LB128 CMD_LB1769 CMD_RIE CMD_CL CMD_COLD CMD_MEM
export LOADS_TXT=$(printf '%s\n' "${LOADS[@]}")
export M_NPROC=$(nproc) M_KERNEL=$(uname -r) M_DATE=$(date -u +%Y-%m-%dT%H:%MZ)
export M_CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
export M_MEM=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
export V_LAMBOX="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- crates 2>/dev/null || echo " + uncommitted changes in crates/ (diff sha1 $(git -C "$REPO" diff HEAD -- crates | sha1sum | cut -c1-12))")"
export V_RIE=$(awk '$1 == "aws-lambda-rie" {$1 = ""; print}' "$FIX/bin/VERSIONS" 2>/dev/null | cut -c2- | cut -d'(' -f1)
export V_CL=$("$CARGO_LAMBDA_BIN" lambda --version 2>/dev/null | head -n 1 || echo '?')
export V_RUNC=$(runc --version | head -n 1) V_CRUN=$(crun --version 2>/dev/null | head -n 1 || echo absent)
export V_PODMAN=$(podman --version) V_WRK=$( (wrk -v 2>&1 || true) | head -n 1 | cut -d' ' -f1-2) V_PY=$(python3 --version)
export ELAPSED=$(($(date +%s) - SCRIPT_START))

python3 - >"$WORK/report.md" <<'PY'
import json, os, re, statistics as st

E = os.environ
W = E["WORK"]
R = lambda f: json.load(open(os.path.join(W, "res", f)))
have = lambda f: os.path.exists(os.path.join(W, "res", f))


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


def med(xs):
    return st.median(xs) if xs else float("nan")


def f0(x):
    return "n/a" if x is None or x != x else f"{x:,.0f}"


def f1(x):
    return "n/a" if x is None or x != x else f"{x:,.1f}"


def f2(x):
    return "n/a" if x is None or x != x else f"{x:,.2f}"


def verdict(ok):
    return "**met**" if ok else "**missed**"


def is_function(cmd):
    return os.path.basename(cmd.split(" ", 1)[0]) in ("bootstrap", "echo-rust")


def cpu_split(before, after):
    """(server ns, function ns) consumed between two cpu_tree snapshots of one tree."""
    srv = fn = 0
    for pid, (cmd, ns) in after.items():
        d = ns - (before.get(pid, [cmd, 0])[1])
        if is_function(cmd):
            fn += d
        else:
            srv += d
    return srv, fn


# ---- cold-start phases from kernel tracepoints
def cold_phases(path, lpid):
    """One sample per helper that reached pivot_root. A helper's spec is its last recvmsg before
    pivot_root, the request the last accept before that. A pre-spawned helper (lambox's
    default) was forked, exec'd and joined its cgroups before the request: those phases are
    then negative and reported apart."""
    rx = re.compile(r"^\s*(.*?)\s+(\d+)/(\d+)\s+([0-9.]+):\s+(\S+):(?:\s+(.*))?$")
    tree, helpers, samples, accepts = {lpid}, {}, [], []
    cur = None
    for line in open(path, errors="replace"):
        m = rx.match(line)
        if not m:
            continue
        comm, pid, tid, t, ev, tr = m.groups()
        tr = tr or ""
        pid, tid, t = int(pid), int(tid), float(t) * 1000
        if ev == "sched:sched_process_fork":
            c = re.search(r"child_pid=(\d+)", tr)
            if c and pid in tree:
                child = int(c.group(1))
                tree.add(child)
                if pid == lpid:
                    helpers[child] = {"fork": t, "recv": []}
            continue
        if pid not in tree:
            continue
        if ev == "syscalls:sys_exit_accept4" and tid == lpid:
            try:
                if int(tr.strip().split()[-1], 16) < 1 << 63:
                    accepts.append(t)
            except ValueError:
                pass
        elif ev == "sched:sched_process_exec":
            if pid in helpers and "exec" not in helpers[pid]:
                helpers[pid]["exec"] = t
            elif "/var/task/bootstrap" in tr and cur is not None and "fn_exec" not in cur:
                cur["fn_exec"], cur["fn"] = t, pid
        elif ev == "syscalls:sys_exit_recvmsg" and pid in helpers and "pivot" not in helpers[pid]:
            helpers[pid]["recv"].append(t)
        elif ev == "cgroup:cgroup_attach_task" and pid in helpers:
            helpers[pid].setdefault("cg_first", t)
            helpers[pid]["cg_last"] = t
        elif ev == "syscalls:sys_enter_pivot_root" and pid in helpers and "pivot" not in helpers[pid]:
            h = helpers[pid]
            h["pivot"] = t
            if h["recv"]:
                h["spec"] = h["recv"][-1]
                before = [a for a in accepts if a <= h["spec"]]
                if before:
                    h["req"] = before[-1]
            cur = h
            samples.append(h)
        elif cur is not None and pid == cur.get("fn"):
            if ev == "syscalls:sys_enter_connect":
                cur.setdefault("connect", t)
            elif ev == "syscalls:sys_enter_writev":
                cur.setdefault("next", t)
    keys = ["req", "fork", "exec", "spec", "cg_first", "cg_last", "pivot", "fn_exec", "connect", "next"]
    return [s for s in samples if all(k in s for k in keys)]


out = []
p = out.append
p("## `lambox run` benchmark (scripts/bench-run.sh)")
p("")
p(f"- Machine: {E['M_NPROC']} CPUs ({E['M_CPU']}), {E['M_MEM']} RAM, kernel {E['M_KERNEL']}, {E['M_DATE']}; "
  f"total run time {int(E['ELAPSED']) // 60} min {int(E['ELAPSED']) % 60} s" + (" (**--quick**: few samples)" if E["QUICK"] == "1" else ""))
p("- Load average (1/5/15 min) — this VM is shared, so absolute figures move with it; the ratios, "
  "measured alternating in the same run, are the figures to quote:")
for line in E["LOADS_TXT"].splitlines():
    p(f"  - {line}")
p(f"- lambox {E['V_LAMBOX']} (release build, run from a private copy); image rust-echo {E['DIGEST'][:19]}…")
p(f"- Peers: RIE {E['V_RIE'].strip()}; {E['V_CL']}; {E['V_RUNC']}; {E['V_CRUN']}; {E['V_PODMAN']} "
  f"(storage driver {E['PODMAN_DRIVER']}); load generators: {E['V_WRK']}, {E['V_PY']} (raw sockets, "
  "perf_counter_ns, TCP_NODELAY, one keep-alive connection per server).")
p("")
p("Commands (D = a data dir holding only the image, IMAGE = its digest, BUNDLE = `umoci unpack` of the image):")
p("")
p("```")
for k in ("CMD_LB128", "CMD_LB1769", "CMD_RIE", "CMD_CL", "CMD_COLD", "CMD_MEM"):
    p(E[k])
p("wrk -t2 -c16 -d10s -s post.lua URL          # RIE: -t1 -c1")
p("runc run -b BUNDLE ID                       # umoci's config.json: no terminal, read-only root, host netns")
p("podman run --rm --runtime runc --network host|none -e AWS_LAMBDA_…=… IMAGE")
p("```")
p("")

# ---- 1. latency
targets_met = {}
if have("lat.json"):
    L = R("lat.json")
    names = L["order"]
    p(f"### 1. Warm invoke latency (1 KB JSON echo, one client, keep-alive; {E['LAT_WARM']} warm-up + "
      f"{E['LAT_N']} invokes per server in {E['LAT_ROUNDS']} rotating rounds), µs")
    p("")
    p("| server | p50 | p90 | p99 | min – max | p50 of rounds, min – max | HTTP floor p50 (GET unknown path) | p50 / RIE p50 |")
    p("|---|---:|---:|---:|---|---|---:|---:|")
    rie50 = pct(L["lat_us"].get("RIE", []), 50)
    for n in names:
        xs = L["lat_us"][n]
        rp = L["round_p50_us"][n]
        ratio = pct(xs, 50) / rie50 if rie50 == rie50 and rie50 else float("nan")
        bad = f" ({L['bad'][n]} bad answers)" if L["bad"][n] else ""
        p(f"| {n}{bad} | {f0(pct(xs, 50))} | {f0(pct(xs, 90))} | {f0(pct(xs, 99))} | {f0(min(xs))} – {f0(max(xs))} | "
          f"{f0(min(rp))} – {f0(max(rp))} | {f0(pct(L['floor_us'][n], 50))} ({L['floor_status'][n]}) | {f2(ratio)} |")
    lb50 = pct(L["lat_us"]["lambox"], 50)
    p("")
    p(f"Targets: lambox p50 ≤ 150 µs: {verdict(lb50 <= 150)} ({f0(lb50)} µs); below the RIE's p50: "
      f"{verdict(lb50 < rie50)} ({f2(lb50 / rie50)}× the RIE's)." if rie50 == rie50 else "")
    if "cargo-lambda" in names:
        p(f"lambox / cargo lambda watch p50: {f2(lb50 / pct(L['lat_us']['cargo-lambda'], 50))}.")
    if E["CL_OK"] != "1":
        p("cargo lambda watch did not answer invokes in this run (see its log); it is left out.")
    if L.get("cpu") and L["cpu"][0]:
        b, a = L["cpu"]
        nt = {n: len(L["lat_us"][n]) for n in names}
        parts = []
        for n in names:
            if n in a:
                srv, fn = cpu_split(b[n], a[n])
                parts.append(f"{n} {f0(srv / nt[n] / 1000)} µs + function {f0(fn / nt[n] / 1000)} µs")
        p("")
        p("On-CPU time per timed invoke (sum over the threads of each server's process tree; the emulator's side "
          "includes lambox's helpers, the RIE's wrapper processes, cargo's idle `cargo run`): " + "; ".join(parts) + ".")
    p("")

# ---- 2. throughput
if have("tput.jsonl"):
    rows = [json.loads(l) for l in open(os.path.join(W, "res", "tput.jsonl"))]
    by = {}
    for r in rows:
        by.setdefault(r["name"], []).append(r)
    p(f"### 2. Throughput (wrk, {E['TPUT_SECS']} s per server and round, {E['TPUT_ROUNDS']} round(s), alternating), invokes/s")
    p("")
    p("| server | connections | invokes/s (median of rounds) | min – max | latency p50 / p99 under load, µs | "
      "CPU per invoke, µs: server + function | errors (non-2xx, socket) |")
    p("|---|---:|---:|---|---|---|---|")
    rate = {}
    for n, rs in by.items():
        rates = [r["w"]["requests"] / (r["w"]["duration_us"] / 1e6) for r in rs]
        rate[n] = med(rates)
        errs = sum(r["w"]["status"] for r in rs), sum(r["w"][k] for r in rs for k in ("connect", "read", "write", "timeout"))
        cs, cf = [], []
        for r in rs:
            f0n = os.path.join(W, "res", f"cpu-{n}-{r['round']}-0.json")
            f1n = os.path.join(W, "res", f"cpu-{n}-{r['round']}-1.json")
            if os.path.exists(f0n) and os.path.exists(f1n) and r["w"]["requests"]:
                srv, fn = cpu_split(json.load(open(f0n))[n], json.load(open(f1n))[n])
                cs.append(srv / r["w"]["requests"] / 1000)
                cf.append(fn / r["w"]["requests"] / 1000)
        p(f"| {n} | {rs[0]['conns']} | {f0(rate[n])} | {f0(min(rates))} – {f0(max(rates))} | "
          f"{f0(med([r['w']['p50_us'] for r in rs]))} / {f0(med([r['w']['p99_us'] for r in rs]))} | "
          f"{f0(med(cs))} + {f0(med(cf))} | {errs[0]}, {errs[1]} |")
    p("")
    if "cargo-lambda" in rate:
        ratio = rate["lambox"] / rate["cargo-lambda"]
        p(f"Target: lambox (`--concurrency 2`, 128 MB) ≥ 3× cargo lambda watch (`--concurrency 2`): {verdict(ratio >= 3)} "
          f"({f2(ratio)}×; with --memory 1769: {f2(rate.get('lambox-1769MB', float('nan')) / rate['cargo-lambda'])}×). "
          f"lambox / RIE (1 connection): {f2(rate['lambox'] / rate['RIE'])}×.")
    p("The RIE gets one connection: it handles one invoke at a time and, given concurrent ones, panics "
      "(nil pointer in rapidcore/server.go after `ReserveFailed: AlreadyReserved`).")
    if have("cgstat.json"):
        cg = R("cgstat.json")
        parts = []
        for n, envs in cg.items():
            for e in envs:
                parts.append(f"{n}: quota {e['quota_us']}/{e['period_us']} µs, throttled in {e['nr_throttled']} of "
                             f"{e['nr_periods']} periods ({e['throttled_time'] / 1e9:.2f} s)")
        if parts:
            p("")
            p("CFS throttling of lambox's environments after sections 1–2 (cpu.stat): " + "; ".join(parts) + ".")
    p("")

# ---- 3. cold start
if have("cold.json"):
    C = R("cold.json")
    p("### 3. Cold start: from the start (lambox: the invoke's arrival) to the runtime's first GET /next, ms")
    p("")
    p("| method | n | first /next p50 | min – max | to exit p50 | notes |")
    p("|---|---:|---:|---|---:|---|")
    lbi = [s["init_ms"] for s in C["lambox"] if s.get("init_ms") is not None]
    lbc = [s["client_ms"] for s in C["lambox"]]
    p(f"| lambox run, fresh environment after `{{\"exit\":1}}` (REPORT Init Duration) | {len(lbi)} | {f1(med(lbi))} | "
      f"{f1(min(lbi)) if lbi else 'n/a'} – {f1(max(lbi)) if lbi else 'n/a'} | | whole cold invoke at the client: p50 {f1(med(lbc))} ms |")
    rs = [json.loads(l) for l in open(os.path.join(W, "res", "restart.jsonl"))] if have("restart.jsonl") else []
    lr = [r["init_ms"] for r in rs if r["who"] == "lambox" and r["init_ms"] is not None]
    lrc = [r["one"]["client_ms"] for r in rs if r["who"] == "lambox"]
    if lr:
        p(f"| lambox run, new process per sample (REPORT Init Duration) | {len(lr)} | {f1(med(lr))} | {f1(min(lr))} – {f1(max(lr))} | | "
          f"first invoke at the client: p50 {f1(med(lrc))} ms |")
    rr = [r["init_ms"] for r in rs if r["who"] == "RIE" and r["init_ms"] is not None]
    rrc = [r["one"]["client_ms"] for r in rs if r["who"] == "RIE"]
    if rr:
        p(f"| RIE (rie-run.sh per sample): INIT REPORT durationMs | {len(rr)} | {f1(med(rr))} | {f1(min(rr))} – {f1(max(rr))} | | "
          f"no sandbox per environment (fork+exec in a prepared chroot); first invoke at the client p50 {f1(med(rrc))} ms |")
    notes = {"host": "the bootstrap exec'd on the host, no isolation: the function's own start (floor)",
             "runc": "umoci bundle, runc creates cgroups + namespaces (host netns)",
             "podman-host": "--network host", "podman-none": "--network none: cannot reach the listener; start → exit only"}
    for m in ("host", "runc", "podman-host", "podman-none"):
        xs = C.get(m, [])
        nx = [x["next_ms"] for x in xs if x["next_ms"] is not None]
        ex = [x["exit_ms"] for x in xs]
        if not xs:
            continue
        p(f"| {m} | {len(xs)} | {f1(med(nx)) if nx else '–'} | {(f1(min(nx)) + ' – ' + f1(max(nx))) if nx else '–'} | {f1(med(ex))} | {notes[m]} |")
    cp = C.get("crun-probe", {})
    p(f"| crun | 0 | – | – | – | refused: `{' '.join(cp.get('err', []))[:140]}` (rc {cp.get('rc')}) |")
    p("")
    host = med([x["next_ms"] for x in C.get("host", []) if x["next_ms"] is not None])
    runc = med([x["next_ms"] for x in C.get("runc", []) if x["next_ms"] is not None])
    p(f"Ratios (p50): lambox / runc {f2(med(lbi) / runc)}, lambox / podman (host net) "
      f"{f2(med(lbi) / med([x['next_ms'] for x in C.get('podman-host', []) if x['next_ms'] is not None]))}, "
      f"lambox − host exec ≈ {f1(med(lbi) - host)} ms of lambox/sandbox overhead.")
    sb = None
    so = E.get("SANDBOX_OUT", "")
    if so and not so.startswith("FAILED") and os.path.exists(so):
        t = open(so).read()
        m = re.search(r"sandbox setup.*", t)
        m2 = re.search(r"spawn → /bin/true exited.*", t)
        m3 = re.search(r"CPU per environment.*", t)
        if m:
            p("")
            p("Sandbox setup alone (`cargo test -p lambox-sandbox --test latency -- --nocapture`, debug profile, "
              "50 spawns back to back): " + "; ".join(x.group(0) for x in (m, m2, m3) if x))
            mm = re.search(r"p50 ([0-9.]+)(µs|ms|s)", m.group(0))
            if mm:
                sb = float(mm.group(1)) * {"µs": 1e-3, "ms": 1, "s": 1e3}[mm.group(2)]
        m4 = re.search(r"setup after 250 ms idle.*", t)
        if m4:
            p("")
            p("Sandbox setup after a quiet period, with and without a pre-spawned helper (`cargo test -p lambox-sandbox "
              "--test latency_idle -- --nocapture`, alternating, 250 ms apart): " + m4.group(0))
    elif so:
        p("")
        p(f"Sandbox latency test: {so}")
    p("")
    ph = []
    if E.get("TRACE_OK") == "1":
        ph = cold_phases(os.path.join(W, "cold-trace.txt"), int(E["PID_COLD"]))
    sb_real = None
    pooled_ph = [s_ for s_ in ph if s_["cg_last"] < s_["req"]]
    n_traced = len(ph)
    if pooled_ph and len(pooled_ph) * 2 >= len(ph):
        ph = pooled_ph
        prep = [s_["req"] - s_["cg_last"] for s_ in ph]
        join_ = [s_["cg_last"] - s_["exec"] for s_ in ph]
        names_ = [("request → spec received by a pre-spawned helper", "req", "spec"),
                  ("→ pivot_root (unshare, setns, overlay + tmpfs mounts)", "spec", "pivot"),
                  ("→ function exec'd (PID 1, /proc, fork, exec)", "pivot", "fn_exec"),
                  ("→ function connects to its Runtime API", "fn_exec", "connect"),
                  ("→ function's first GET /next", "connect", "next")]
        p("")
        p(f"In {len(ph)} of {n_traced} traced cold starts the helper was pre-spawned: forked, exec'd and in its "
          f"cgroups a median {f1(med(prep))} ms before the request arrived; its exec → all cgroups joined, off the "
          f"request's path, took a median {f2(med(join_))} ms (min {f2(min(join_))}, max {f2(max(join_))}).")
    elif ph:
        names_ = [("request → helper forked", "req", "fork"), ("helper exec'd (lambox re-exec)", "fork", "exec"),
                  ("→ spec received (cgroups made meanwhile)", "exec", "spec"),
                  ("→ first cgroup joined (cgroup.procs write)", "spec", "cg_first"),
                  ("→ all 4 cgroups joined", "cg_first", "cg_last"),
                  ("→ pivot_root (unshare, setns, overlay + tmpfs mounts)", "cg_last", "pivot"),
                  ("→ function exec'd (PID 1, /proc, fork, exec)", "pivot", "fn_exec"),
                  ("→ function connects to its Runtime API", "fn_exec", "connect"),
                  ("→ function's first GET /next", "connect", "next")]
    if ph:
        p("")
        p(f"Where a lambox cold start's time goes ({len(ph)} more cold starts of the same `lambox run`, kernel "
          "tracepoints recorded with `perf record -a`: fork/exec, cgroup_attach_task, accept4/recvmsg/pivot_root/connect/writev), ms:")
        p("")
        p("| phase | p50 | min – max |")
        p("|---|---:|---|")
        for label, a_, b_ in names_:
            xs = [s_[b_] - s_[a_] for s_ in ph]
            p(f"| {label} | {f2(med(xs))} | {f2(min(xs))} – {f2(max(xs))} |")
        tot_ = [s_["next"] - s_["req"] for s_ in ph]
        sbx_ = [s_["fn_exec"] - s_["req"] for s_ in ph]
        sb_real = med(sbx_)
        p(f"| **request → first GET /next** | **{f2(med(tot_))}** | {f2(min(tot_))} – {f2(max(tot_))} |")
        p(f"| of which sandbox setup (request → function exec'd) | {f2(sb_real)} | {f2(min(sbx_))} – {f2(max(sbx_))} |")
    p("")
    p(f"Targets: first /next p50 ≤ 10 ms: {verdict(med(lbi) <= 10)} ({f1(med(lbi))} ms); sandbox setup p50 ≤ 5 ms: "
      + (f"{verdict(sb <= 5)} in the back-to-back test loop ({f2(sb)} ms)" if sb is not None else "test not run")
      + (f", {verdict(sb_real <= 5)} in real cold starts ({f2(sb_real)} ms, traced above)" if sb_real is not None else ""))
    p("")

# ---- 4. memory
if have("mem.json"):
    M = R("mem.json")
    n = E["MEM_ENVS"]
    s0, s1, sn = M["0"]["self"], M["1"]["self"], M[n]["self"]
    p(f"### 4. Memory per idle environment (lambox --concurrency {n}), KiB")
    p("")
    p("| lambox process | RSS | anon | file | PSS |")
    p("|---|---:|---:|---:|---:|")
    for k, s in (("0 environments", s0), ("1 idle environment", s1), (f"{n} idle environments", sn)):
        p(f"| {k} | {f0(s.get('VmRSS'))} | {f0(s.get('RssAnon'))} | {f0(s.get('RssFile'))} | {f0(s.get('Pss'))} |")
    nn = int(n)
    per = (sn["VmRSS"] - s0["VmRSS"]) / nn
    per_anon = (sn["RssAnon"] - s0["RssAnon"]) / nn
    marg = (sn["VmRSS"] - s1["VmRSS"]) / (nn - 1)
    p("")
    roles = {}
    for pr in M[n]["procs"]:
        roles.setdefault(pr["role"], []).append(pr)
    p(f"(RSS{n} − RSS0)/{n} = **{f0(per)} KiB** per environment (anonymous memory: {f0(per_anon)} KiB); "
      f"marginal (RSS{n} − RSS1)/{nn - 1} = {f0(marg)} KiB.")
    p("")
    p("| per-environment process | count | RSS each, median | PSS each, median | private (clean+dirty) each, median |")
    p("|---|---:|---:|---:|---:|")
    for role, label in (("helper", "helper (`__lambox-sandbox-init`, lambox's child)"),
                        ("pid1", "PID 1 (`__lambox-sandbox-init`)"), ("function", "the function (/var/task/bootstrap)"),
                        ("pooled", "pre-spawned helper waiting for a spec (per lambox process, not per environment)")):
        xs = roles.get(role, [])
        if xs:
            p(f"| {label} | {len(xs)} | {f0(med([x.get('VmRSS', 0) for x in xs]))} | {f0(med([x.get('Pss', 0) for x in xs]))} | "
              f"{f0(med([x.get('Private_Clean', 0) + x.get('Private_Dirty', 0) for x in xs]))} |")
    own = sum(x.get("Pss", 0) for r in ("helper", "pid1") for x in roles.get(r, []))
    priv = sum(x.get("Private_Clean", 0) + x.get("Private_Dirty", 0) for r in ("helper", "pid1") for x in roles.get(r, []))
    p("")
    tot = per + priv / nn
    totp = per + own / nn
    p(f"lambox's own memory per idle environment, marginal (what one more environment adds: lambox-process growth + "
      f"the helper's and PID 1's private pages) = {f0(per)} + {f0(priv / nn)} = **{f0(tot)} KiB**: target ≤ 1 MB "
      f"{verdict(tot <= 1024)}. Charging each environment its share of the shared lambox text too (PSS): "
      f"{f0(per)} + {f0(own / nn)} = {f0(totp)} KiB ({'≤' if totp <= 1024 else '>'} 1 MB; this share shrinks as "
      f"environments are added). Not counted: kernel memory (page tables, namespaces, cgroups, mounts)."
      + (f" The {len(roles['pooled'])} pre-spawned helper(s) are a fixed cost per lambox process, not per environment: "
         f"{f0(sum(x.get('Private_Clean', 0) + x.get('Private_Dirty', 0) for x in roles['pooled']))} KiB private in all."
         if roles.get("pooled") else ""))
    if M.get("errors"):
        p(f"Errors while creating the environments: {M['errors']}")
    if have("peermem.json"):
        PM = R("peermem.json")
        parts = []
        for name, snap in PM.items():
            fns = [k for k in snap["procs"] if re.search(r"bootstrap|echo-rust", k.get("cmd", ""))
                   and not k.get("cmd", "").startswith("cargo")]
            parts.append(f"{name} process RSS {f0(snap['self'].get('VmRSS'))} KiB "
                         f"(PSS {f0(snap['self'].get('Pss'))}), serving {len(fns)} function process(es)")
        p("")
        p("For context, after sections 1–2: " + "; ".join(parts) + ".")
    p("")

# ---- diagnostics
if E["DIAG"] == "1":
    p("### Diagnostics")
    p("")
    sc = []
    for name in ("lambox", "RIE", "cargo-lambda"):
        fn = os.path.join(W, "res", f"strace-{name}.txt")
        lj = os.path.join(W, "res", f"strace-lat-{name}.json")
        if not (os.path.exists(fn) and os.path.exists(lj)):
            continue
        L2 = json.load(open(lj))
        n_inv = len(list(L2["lat_us"].values())[0]) + 5 + 20 + 20  # timed + warm-up + floor warm-up + floor
        calls, top = 0, []
        for line in open(fn):
            f = line.split()
            if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
                c = int(f[3])
                calls += c
                top.append((c, f[-1]))
        top.sort(reverse=True)
        sc.append(f"{name}: {calls / n_inv:.1f} syscalls per request ("
                  + ", ".join(f"{s} {c / n_inv:.1f}" for c, s in top[:8]) + ")")
    if sc:
        p(f"- Server-side syscalls per warm request (strace -f -c on the server process only, "
          f"{E['STRACE_N']} invokes + a few floor requests): " + "; ".join(sc) + ".")
    if have("cgmig.json"):
        G = R("cgmig.json")
        parts = []
        for n in G["order"]:
            xs = [x["ms"] for x in G["first"][n]]
            firsts = [x["ms"] for x in G["first"][n] if x["position"] == 0]
            parts.append(f"{n}: p50 {f2(med(xs))} ms (max {f2(max(xs))}; when written first after the idle gap: p50 {f2(med(firsts))} ms)")
        p("- Joining a fresh cgroup (write of a pid to cgroup.procs, 0.25 s apart, the hierarchies in rotating order): "
          + "; ".join(parts) + ".")
    if have("perf-lambox.txt"):
        shares = {}
        pats = [("freeze (Sandbox::freeze)", r"\] lambox_sandbox::Sandbox::freeze$"),
                ("thaw (Sandbox::thaw)", r"\] lambox_sandbox::Sandbox::thaw$"),
                ("peak memory read (Sandbox::max_memory_bytes)", r"\] lambox_sandbox::Sandbox::max_memory_bytes$"),
                ("openat (cgroup files)", r"\] __x64_sys_openat$"),
                ("log lines (StdoutLogSink::write)", r"StdoutLogSink as lambox_runtime::logs::LogSink>::write$"),
                ("TCP send", r"\] tcp_sendmsg$"), ("TCP receive", r"\] tcp_recvmsg$"),
                ("epoll_wait", r"\] __x64_sys_epoll_wait$")]
        for line in open(os.path.join(W, "res", "perf-lambox.txt"), errors="replace"):
            m = re.match(r"\s*([0-9.]+)%\s+([0-9.]+)%\s+(.*)$", line.rstrip())
            if not m:
                continue
            for label, rx in pats:
                if label not in shares and re.search(rx, m.group(3)):
                    shares[label] = float(m.group(1))
        if shares:
            p("- Where lambox's own CPU goes under load (`perf record -g` on the lambox process, 1769 MB, wrk 16 "
              "connections, 5 s; inclusive share of its samples): "
              + ", ".join(f"{k} {v:.1f}%" for k, v in shares.items()) + ".")
    if have("freeze.json"):
        F = R("freeze.json")
        p(f"- cgroup v2 freeze of an idle 4-thread process until `frozen 1`: p50 {f0(med(F['freeze_us']))} µs; thaw until "
          f"`frozen 0`: p50 {f0(med(F['thaw_us']))} µs (Python, held fds, busy polling).")
    p("")
print("\n".join(out))
PY

mkdir -p "$(dirname "$OUT")"
cp "$WORK/report.md" "$OUT"
cat "$WORK/report.md"
log "report written to $OUT"
