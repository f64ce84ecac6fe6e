#!/usr/bin/env bash
# Reproducible benchmark of `lambox serve` (issue 4), every figure next to its peer in the
# same run:
#
#   scripts/bench-serve.sh [--no-build] [--out FILE] [--functions N] [--quick]
#
#   1. Overhead of the control plane: warm invoke latency of the rust-echo image (Rust
#      lambda_runtime echo, 128 MB, 1 KB JSON payload, one keep-alive connection each)
#      through `lambox serve` against `lambox run` of the same binary and image, 10 rounds of
#      200 invokes alternating between them after 200 warm-up invokes (scripts/bench-client.py
#      `lat`, also used by bench-run.sh).
#   2. Registered functions: the same latency on a second `lambox serve` that holds N more
#      functions (default 1000, all Active, created through the API), alternating with the
#      first server (one function).
#   3. Async acceptance: wrk, 2 threads, 16 connections, 10 s of `Event` invokes (202 once
#      the event is stored durably) against the same server's sync invokes (wrk, same
#      settings), alternating, 3 rounds. After each Event run the script waits until the
#      queue has drained (`pending_events` of /health is 0) and reports the drain rate, so
#      every run starts with an empty queue. While that queue drains, the function's runs
#      share the 2 CPUs with the acceptance; so each round also sends `Event`s to a second
#      function `slow` (same image, payload `sleep_ms` 2000: its runs wait, using no CPU),
#      which measures what the durable queue itself accepts. Its backlog is not drained.
# Both servers run with --network none. Needs root. Installs wrk with apt if it is missing.
# Stops what it started by PID on every exit path and removes its scratch directory.
set -Eeuo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
FIX=${LAMBOX_FIXTURES:-/var/cache/lambox-fixtures}
OUT=$REPO/target/bench-serve.md
BUILD=1 EXTRA=1000 QUICK=0

die() { printf 'bench-serve: ERROR: %s\n' "$*" >&2; exit 1; }
log() { printf '[bench-serve %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case $1 in
  --no-build) BUILD=0; shift ;;
  --out) OUT=${2:?}; shift 2 ;;
  --functions) EXTRA=${2:?}; shift 2 ;;
  --quick) QUICK=1; shift ;;
  *) usage ;;
  esac
done
[[ $(id -u) -eq 0 ]] || die "must run as root (namespaces, cgroups, mounts)"
LAT_N=2000 LAT_WARM=200 LAT_ROUNDS=10 TPUT_SECS=10 TPUT_ROUNDS=3
[[ $QUICK == 1 ]] && { LAT_N=400 LAT_WARM=50 LAT_ROUNDS=4 TPUT_SECS=3 TPUT_ROUNDS=1 EXTRA=50; }

WORK= PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    # serve finishes running invokes first (up to its 30 s grace)
    for _ in $(seq 400); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  [[ -n $WORK ]] && rm -rf "$WORK"
}
trap cleanup EXIT

command -v wrk >/dev/null || apt-get -o DPkg::Lock::Timeout=600 install -y -q wrk >&2
if [[ $BUILD == 1 ]]; then
  log "cargo build --release -p lambox"
  (cd "$REPO" && cargo build --release -q -p lambox)
fi
WORK=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/lambox-bench-serve.XXXXXX")
mkdir -p "$WORK/bin" "$WORK/py" "$WORK/log" "$WORK/res"
cp "$REPO/target/release/lambox" "$WORK/bin/lambox"
cp "$HERE/bench-client.py" "$WORK/py/client.py"
LAMBOX=$WORK/bin/lambox
CLIENT=(python3 "$WORK/py/client.py")
IMAGE="oci:$FIX/images/rust-echo/oci:latest"
[[ -f $FIX/images/rust-echo/oci/index.json ]] || die "fixture rust-echo missing: run scripts/build-fixtures.sh"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

P_RUN=$(free_port)
log "lambox run on :$P_RUN"
"$LAMBOX" --data-dir "$WORK/run-data" run --network none --listen "127.0.0.1:$P_RUN" "$IMAGE" \
  >"$WORK/log/run.out" 2>"$WORK/log/run.err" &
PIDS+=($!)

start_serve() { # NAME VAR: starts serve NAME, sets VAR to its port (not in a subshell:
  # PIDS must keep the PID for cleanup)
  local port
  port=$(free_port)
  "$LAMBOX" --data-dir "$WORK/$1-data" serve --network none --listen "127.0.0.1:$port" \
    >"$WORK/log/$1.out" 2>"$WORK/log/$1.err" &
  PIDS+=($!)
  "${CLIENT[@]}" wait --port "$port" --secs 120 >&2 || die "serve $1 did not start (see $WORK/log)"
  printf -v "$2" '%s' "$port"
}
create() { # PORT NAME
  local code
  code=$(curl -s -o "$WORK/res/create.json" -w '%{http_code}' -X POST \
    "http://127.0.0.1:$1/2015-03-31/functions" -H 'content-type: application/json' \
    -d "{\"FunctionName\":\"$2\",\"PackageType\":\"Image\",\"Code\":{\"ImageUri\":\"$IMAGE\"},\"Role\":\"arn:aws:iam::000000000000:role/bench\"}")
  [[ $code == 201 ]] || die "CreateFunction $2 on :$1 answered $code: $(cat "$WORK/res/create.json")"
}
wait_active() { # PORT NAME
  for _ in $(seq 600); do
    curl -s "http://127.0.0.1:$1/2015-03-31/functions/$2/configuration" | grep -q '"State":"Active"' && return 0
    sleep 0.1
  done
  die "function $2 on :$1 is not Active after 60 s"
}

start_serve serve1 P_S1
start_serve serve2 P_S2
create "$P_S1" echo
create "$P_S1" slow
create "$P_S2" echo
wait_active "$P_S1" echo
wait_active "$P_S1" slow
wait_active "$P_S2" echo
log "registering $EXTRA more functions on serve2"
t0=$(date +%s.%N)
for i in $(seq "$EXTRA"); do create "$P_S2" "fn-$i"; done
t1=$(date +%s.%N)
wait_active "$P_S2" "fn-$EXTRA"
count=$(curl -s "http://127.0.0.1:$P_S2/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["functions"])')
[[ $count == $((EXTRA + 1)) ]] || die "serve2 lists $count functions, not $((EXTRA + 1))"
"${CLIENT[@]}" wait --port "$P_RUN" --secs 120 >&2 || die "lambox run did not start"

log "1+2. warm latency: run / serve1 / serve2 ($LAT_ROUNDS rounds of $((LAT_N / LAT_ROUNDS)))"
"${CLIENT[@]}" lat --n "$LAT_N" --warmup "$LAT_WARM" --rounds "$LAT_ROUNDS" --floor-n 200 \
  --out "$WORK/res/lat.json" "run=$P_RUN:function" "serve=$P_S1:echo" "serve-$EXTRA=$P_S2:echo"

cat >"$WORK/py/event.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Amz-Invocation-Type"] = os.getenv("INVOCATION_TYPE") or "RequestResponse"
wrk.body = '{"data":"' .. string.rep("x", 1013) .. '"}'
if os.getenv("SLOW") == "1" then wrk.body = '{"sleep_ms":2000,"data":"' .. string.rep("x", 997) .. '"}' end
local codes = {}
response = function(status) codes[status] = (codes[status] or 0) + 1 end
done = function(summary, latency, requests)
  io.write(string.format('JSON:{"requests":%d,"duration_us":%d,"non2xx":%d,"p50_us":%d}\n',
    summary.requests, summary.duration, summary.errors.status, latency:percentile(50)))
end
LUA
log "3. async acceptance vs sync invokes on serve1 (wrk, $TPUT_ROUNDS rounds of ${TPUT_SECS} s each)"
: >"$WORK/res/tput.txt"
pending() { curl -s "http://127.0.0.1:$P_S1/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pending_events"])'; }
: >"$WORK/res/drain.txt"
slow_pending=0
for r in $(seq "$TPUT_ROUNDS"); do
  kinds=(Event RequestResponse Event-slow)
  (( r % 2 == 0 )) && kinds=(Event-slow RequestResponse Event)
  for kind in "${kinds[@]}"; do
    fn=echo slow=
    [[ $kind == Event-slow ]] && fn=slow slow=1
    line=$(INVOCATION_TYPE=${kind%-slow} SLOW=$slow wrk -t2 -c16 -d"${TPUT_SECS}s" -s "$WORK/py/event.lua" \
      "http://127.0.0.1:$P_S1/2015-03-31/functions/$fn/invocations" | grep '^JSON:' | cut -c6-)
    echo "$kind $line" >>"$WORK/res/tput.txt"
    [[ $kind == Event-slow ]] && slow_pending=$(pending)
    if [[ $kind == Event ]]; then
      # The slow function's backlog stays pending: wait for echo's only.
      d0=$(date +%s.%N) left=$(( $(pending) - slow_pending ))
      while (( $(pending) > slow_pending )); do
        (( $(date +%s) - ${d0%.*} < 600 )) || die "the event queue did not drain in 10 min"
        sleep 0.2
      done
      echo "$left $(python3 -c "import sys; print($(date +%s.%N) - $d0)")" >>"$WORK/res/drain.txt"
    fi
  done
done
events=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_S1/health")

python3 - "$WORK/res/lat.json" "$WORK/res/tput.txt" "$EXTRA" "$t0" "$t1" "$WORK/res/drain.txt" >"$OUT" <<'PY'
import json, statistics, sys
lat = json.load(open(sys.argv[1]))
extra = sys.argv[3]
p50 = {k: statistics.median(v) for k, v in lat["lat_us"].items()}
rounds = lat["round_p50_us"]
print("| server | p50 µs | p90 µs | per-round p50 µs (min–max) | bad |")
print("|---|---|---|---|---|")
for k, v in lat["lat_us"].items():
    v = sorted(v)
    print(f"| {k} | {p50[k]:.0f} | {v[int(len(v) * 0.9)]:.0f} | {min(rounds[k]):.0f}–{max(rounds[k]):.0f} | {lat['bad'][k]} |")
print()
d = [s - r for s, r in zip(rounds["serve"], rounds["run"])]
d2 = [s - r for s, r in zip(rounds[f"serve-{extra}"], rounds["serve"])]
print(f"serve − run, median of per-round p50 differences: **{statistics.median(d):.0f} µs** (rounds: {', '.join(f'{x:.0f}' for x in d)})")
print(f"serve with {extra} more functions − serve with one: **{statistics.median(d2):.0f} µs** (rounds: {', '.join(f'{x:.0f}' for x in d2)})")
print(f"registering {extra} functions through CreateFunction (one curl each): {float(sys.argv[5]) - float(sys.argv[4]):.1f} s")
print()
print("| round | kind | requests/s | non-2xx | p50 µs |")
print("|---|---|---|---|---|")
rates = {"Event": [], "RequestResponse": [], "Event-slow": []}
for i, line in enumerate(open(sys.argv[2])):
    kind, js = line.split(" ", 1)
    j = json.loads(js)
    rate = j["requests"] / (j["duration_us"] / 1e6)
    rates[kind].append(rate)
    print(f"| {i // 3 + 1} | {kind} | {rate:.0f} | {j['non2xx']} | {j['p50_us']} |")
print()
drains = [tuple(map(float, l.split())) for l in open(sys.argv[6]) if l.strip()]
print()
print("| Event run | pending when wrk stopped | drained in s | drain rate events/s |")
print("|---|---|---|---|")
for i, (left, secs) in enumerate(drains):
    print(f"| {i + 1} | {left:.0f} | {secs:.1f} | {left / secs if secs > 0 else 0:.0f} |")
print()
sync = statistics.median(rates['RequestResponse'])
print(f"Event acceptance median {statistics.median(rates['Event']):.0f}/s while the queue drains (echo), "
      f"{statistics.median(rates['Event-slow']):.0f}/s for a function whose runs wait (slow); "
      f"sync invokes {sync:.0f}/s (ratios {statistics.median(rates['Event']) / sync:.2f}×, {statistics.median(rates['Event-slow']) / sync:.2f}×)")
PY
cat "$OUT"
log "report in $OUT (health $events)"
