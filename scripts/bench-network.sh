#!/usr/bin/env bash
# Cold start of `lambox run` with --network nat against --network none, interleaved: start
# lambox, give its namespace pool half a second, time the first invoke (a cold start of the
# rust-echo fixture: sandbox, runtime init, invoke), stop it with SIGTERM. Prints each sample
# and the medians.
#
#   LAMBOX_FIXTURES=/var/cache/lambox-fixtures [LAMBOX=target/release/lambox] [N=25] \
#     scripts/bench-network.sh          # as root, after scripts/build-fixtures.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LAMBOX=${LAMBOX:-target/debug/lambox}
N=${N:-25}
IMG="oci:${LAMBOX_FIXTURES:-/var/cache/lambox-fixtures}/images/rust-echo/oci:latest"
D=$(mktemp -d)
OUT=$(mktemp)
trap 'rm -rf "$D" "$OUT"' EXIT
"$LAMBOX" --data-dir "$D" load "$IMG" >/dev/null
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq 1 "$N"); do
  for mode in nat none; do
    port=$((20000 + RANDOM % 20000))
    "$LAMBOX" --data-dir "$D" run -q "$IMG" --listen "127.0.0.1:$port" --network "$mode" \
      >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 250); do
      (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.02
    done
    sleep 0.5
    if t=$(curl -sf -o /dev/null -w '%{time_total}' -XPOST \
      "http://127.0.0.1:$port/2015-03-31/functions/function/invocations" -d '{}'); then
      echo "$mode $t" | tee -a "$OUT"
    else
      echo "$mode failed (port $port taken?)"
    fi
    kill -TERM "$pid"
    wait "$pid" || true
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in nat none; do
  awk -v m="$mode" '$1 == m {print $2 * 1000}' "$OUT" | sort -n | awk -v m="$mode" '
    {v[NR] = $1}
    END {printf "%s: n=%d p10 %.1f ms, p50 %.1f ms, p90 %.1f ms\n", m, NR,
         v[int(NR * 0.1) + 1], v[int(NR * 0.5) + 1], v[int(NR * 0.9) + 1]}'
done
