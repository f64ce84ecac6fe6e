#!/usr/bin/env bash
# A throw-away loopback OCI registry (Debian's docker-registry, the CNCF
# distribution registry) for tests and demos.
#
#   scripts/registry.sh start DIR   start it; prints ADDR (127.0.0.1:PORT)
#   scripts/registry.sh stop DIR    stop the registry started in DIR
#   scripts/registry.sh addr DIR    print ADDR of the running one
#
# DIR gets config.yml, data/ (filesystem storage), registry.log, and the files
# pid, port and addr. It listens on 127.0.0.1 only, without auth, plain HTTP:
# use `skopeo copy --dest-tls-verify=false ... docker://ADDR/REPO:TAG`.
# (Debian's /etc/docker/registry/config.yml listens on all interfaces with
# auth: it is never used here.)
set -euo pipefail

die() { printf 'registry: ERROR: %s\n' "$*" >&2; exit 1; }
usage() { die "usage: $0 start|stop|addr DIR"; }

[[ $# -eq 2 ]] || usage
cmd=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd)

alive() { # is the pid in $dir/pid our registry?
  local pid
  [[ -f $dir/pid ]] || return 1
  pid=$(<"$dir/pid")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$dir/config.yml"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

ready() { # ADDR
  curl -fsS -o /dev/null --max-time 2 "http://$1/v2/" 2>/dev/null
}

start() {
  command -v docker-registry >/dev/null || die "docker-registry not installed (run scripts/setup.sh)"
  if alive; then
    cat "$dir/addr"
    return
  fi
  mkdir -p "$dir/data"
  local attempt port pid addr i
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    addr=127.0.0.1:$port
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: $addr
EOF
    nohup docker-registry serve "$dir/config.yml" </dev/null >"$dir/registry.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/pid"
    for ((i = 0; i < 100; i++)); do
      if ready "$addr"; then
        echo "$port" >"$dir/port"
        echo "$addr" >"$dir/addr"
        echo "$addr"
        return
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
    printf 'registry: attempt %s on %s failed:\n' "$attempt" "$addr" >&2
    tail -n 5 "$dir/registry.log" >&2
  done
  die "could not start docker-registry (log: $dir/registry.log)"
}

stop() {
  if ! alive; then
    rm -f "$dir/pid" "$dir/port" "$dir/addr"
    return
  fi
  local pid i
  pid=$(<"$dir/pid")
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/pid" "$dir/port" "$dir/addr"
}

case $cmd in
start) start ;;
stop) stop ;;
addr)
  if alive; then cat "$dir/addr"; else die "no registry running in $dir"; fi
  ;;
*) usage ;;
esac
