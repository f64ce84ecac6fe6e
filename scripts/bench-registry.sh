#!/usr/bin/env bash
# Registry benchmark: skopeo push and pull of the hello-python fixture (2 gzip
# layers, 67 MB compressed, 173 MB of tar) against lambox's registry and Debian's
# docker-registry (the CNCF distribution registry), side by side in one run.
#
#   scripts/bench-registry.sh [--runs N] [--profile dev|release]
#
# lambox's registry is the lambox-registry `serve` example (the same Router
# `lambox serve` mounts), built with `--profile` (default dev: dependencies at
# opt-level 3, lambox's own crates at opt-level 1, as the tests run it).
# docker-registry is started by scripts/registry.sh (loopback, no auth,
# filesystem storage in the scratch dir).
#
# Rounds: one hyperfine invocation per round, --runs 1 per command, so the
# commands alternate A B C D, A B C D, ...; round 0 is a warm-up, discarded:
#   A  skopeo copy oci:hello-python → docker://lambox/hello:v1   (fresh registry)
#   B  the same to docker-registry                               (fresh registry)
#   C  skopeo copy docker://lambox/hello:v1 → dir: (fresh dir)
#   D  the same from docker-registry
# Before each push the registry is restarted on a new port with empty storage,
# so nothing is found already there and skopeo's blob-info cache knows nothing
# of it. Every prepare ends with `sync`. Prints a Markdown summary on stdout.
set -Eeuo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
FIX=${LAMBOX_FIXTURES:-/var/cache/lambox-fixtures}
RUNS=5
PROFILE=dev

die() { printf 'bench-registry: ERROR: %s\n' "$*" >&2; exit 1; }
log() { printf 'bench-registry: %s\n' "$*" >&2; }

# Internal subcommands, run by hyperfine's --prepare.
if [[ ${1:-} == __reset-lambox ]]; then
  W=$2 BIN=$3
  if [[ -f $W/lambox.pid ]]; then
    pid=$(<"$W/lambox.pid")
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$W/lambox-data"; then
      kill "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    fi
  fi
  rm -rf "$W/lambox-data"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  setsid nohup "$BIN" "127.0.0.1:$port" "$W/lambox-data" </dev/null >>"$W/lambox.log" 2>&1 &
  echo $! >"$W/lambox.pid"
  for ((i = 0; i < 200; i++)); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null && break
    sleep 0.05
  done
  echo "127.0.0.1:$port" >"$W/lambox.addr"
  sync
  exit 0
fi
if [[ ${1:-} == __reset-dreg ]]; then
  W=$2
  "$HERE/registry.sh" stop "$W/dreg" >/dev/null
  rm -rf "$W/dreg/data"
  "$HERE/registry.sh" start "$W/dreg" >/dev/null
  sync
  exit 0
fi

while [[ $# -gt 0 ]]; do
  case $1 in
  --runs) RUNS=$2; shift 2 ;;
  --profile) PROFILE=$2; shift 2 ;;
  *) die "unknown argument $1" ;;
  esac
done
command -v hyperfine >/dev/null || die "hyperfine is not installed (apt-get install hyperfine)"
command -v docker-registry >/dev/null || die "docker-registry is not installed (scripts/setup.sh)"
[[ -f $FIX/images/hello-python/oci/index.json ]] || die "no hello-python fixture in $FIX (scripts/build-fixtures.sh)"

log "building the serve example (--profile $PROFILE)"
(cd "$REPO" && cargo build -q -p lambox-registry --example serve --profile "$PROFILE")
case $PROFILE in dev) dir=debug ;; *) dir=$PROFILE ;; esac
BIN=$REPO/target/$dir/examples/serve

W=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/lambox-regbench.XXXXXX")
cleanup() {
  if [[ -f $W/lambox.pid ]]; then
    pid=$(<"$W/lambox.pid")
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$W/lambox-data"; then
      kill "$pid" 2>/dev/null || true
    fi
  fi
  "$HERE/registry.sh" stop "$W/dreg" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT

SRC="oci:$FIX/images/hello-python/oci:latest"
PUSH="skopeo copy --quiet --dest-tls-verify=false $SRC"
PULL="skopeo copy --quiet --src-tls-verify=false"
SELF="bash $HERE/bench-registry.sh"

for ((round = 0; round <= RUNS; round++)); do
  log "round $round of $RUNS"
  hyperfine --runs 1 --style none --export-json "$W/round-$round.json" \
    --prepare "$SELF __reset-lambox $W $BIN" \
    --prepare "$SELF __reset-dreg $W" \
    --prepare "rm -rf $W/pull-lambox; sync" \
    --prepare "rm -rf $W/pull-dreg; sync" \
    -n push-lambox "$PUSH docker://\$(cat $W/lambox.addr)/hello:v1" \
    -n push-docker-registry "$PUSH docker://\$(cat $W/dreg/addr)/hello:v1" \
    -n pull-lambox "$PULL docker://\$(cat $W/lambox.addr)/hello:v1 dir:$W/pull-lambox" \
    -n pull-docker-registry "$PULL docker://\$(cat $W/dreg/addr)/hello:v1 dir:$W/pull-dreg" \
    >&2
  cmp "$W/pull-lambox/manifest.json" "$W/pull-dreg/manifest.json" ||
    die "the two registries served different manifests"
done

python3 - "$W" "$RUNS" "$PROFILE" <<'PY'
import json, statistics, sys
w, runs, profile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
t = {}
for r in range(1, runs + 1):
    for res in json.load(open(f"{w}/round-{r}.json"))["results"]:
        t.setdefault(res["command"], []).append(res["times"][0])
print(f"skopeo push/pull of hello-python, {runs} alternated rounds after a warm-up; lambox built with --profile {profile}\n")
print("| command | median s | min s | max s |")
print("|---|---|---|---|")
for k, v in t.items():
    print(f"| {k} | {statistics.median(v):.2f} | {min(v):.2f} | {max(v):.2f} |")
print()
for op in ("push", "pull"):
    a, b = t[f"{op}-lambox"], t[f"{op}-docker-registry"]
    ratios = sorted(x / y for x, y in zip(a, b))
    print(f"- {op}: lambox / docker-registry = {statistics.median(a) / statistics.median(b):.2f}x of medians; per-round ratios {ratios[0]:.2f}–{ratios[-1]:.2f}")
PY
