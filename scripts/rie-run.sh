#!/usr/bin/env bash
# Runs a Lambda function's unpacked root filesystem under the AWS Lambda
# Runtime Interface Emulator (RIE), as AWS's own images do with
# `aws-lambda-rie ENTRYPOINT...`: the behaviour oracle and speed peer for
# lambox. Root only (mount/pid namespaces, chroot).
#
#   scripts/rie-run.sh ROOTFS_DIR PORT [OPTIONS] -- ENTRYPOINT [ARGS...]
#
# then invoke it with
#   curl -XPOST http://127.0.0.1:PORT/2015-03-31/functions/function/invocations -d '{"a":1}'
#
# Options (before `--`):
#   -e K=V        environment variable for the function (repeatable); the base
#                 environment is PATH, LANG, TZ, LAMBDA_TASK_ROOT=/var/task,
#                 LAMBDA_RUNTIME_DIR=/var/runtime, nothing from the caller.
#   -w DIR        working directory inside the root (default /var/task if it
#                 exists, else /).
#   -a HOST:PORT  Runtime API address the RIE serves to the function (default:
#                 a free 127.0.0.1 port; real Lambda uses 127.0.0.1:9001).
#   -r            read-only root (as in Lambda); /tmp is always a fresh tmpfs.
#   -l LEVEL      RIE log level (default info).
# Environment: RIE=path of the emulator (default
# ${LAMBOX_FIXTURES:-/var/cache/lambox-fixtures}/bin/aws-lambda-rie, installed by
# scripts/build-fixtures.sh).
#
# ROOTFS_DIR is never modified: inside a private mount namespace it becomes the
# lower layer of an overlay whose upper layer is a tmpfs; the RIE binary is
# copied into that overlay (/usr/local/bin/aws-lambda-rie), /dev gets null,
# zero, full, random, urandom bind-mounted from the host, /proc is the new PID
# namespace's, /tmp a 512 MB tmpfs. The RIE is PID 1 of a new PID namespace; it
# shares the host network namespace and listens on 127.0.0.1:PORT only.
# Runs in the foreground until the RIE exits or this script gets
# SIGINT/SIGTERM/SIGHUP; then every process in the namespace is killed and the
# temporary directory removed (mounts vanish with the namespace).
#
# Printed on stderr once the port accepts connections: "rie-run: ready on 127.0.0.1:PORT".
set -Eeuo pipefail

usage() { sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2; }
die() { printf 'rie-run: ERROR: %s\n' "$*" >&2; exit 1; }

(($# >= 2)) || usage
ROOT=$1 PORT=$2
shift 2
ENVS=() WORKDIR= RAPI= RO=0 LEVEL=info
while (($#)); do
  case $1 in
  -e) ENVS+=("$2"); shift 2 ;;
  -w) WORKDIR=$2; shift 2 ;;
  -a) RAPI=$2; shift 2 ;;
  -r) RO=1; shift ;;
  -l) LEVEL=$2; shift 2 ;;
  --) shift; break ;;
  *) usage ;;
  esac
done
(($#)) || usage
[[ $(id -u) -eq 0 ]] || die "must run as root (namespaces, mounts, chroot)"
[[ -d $ROOT ]] || die "no root filesystem directory $ROOT"
ROOT=$(cd "$ROOT" && pwd)
[[ $PORT =~ ^[0-9]+$ ]] || die "bad port $PORT"
RIE=${RIE:-${LAMBOX_FIXTURES:-/var/cache/lambox-fixtures}/bin/aws-lambda-rie}
[[ -x $RIE ]] || die "no RIE at $RIE (run scripts/build-fixtures.sh, or set RIE=)"
if [[ -z $RAPI ]]; then
  RAPI=127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fi
if [[ -z $WORKDIR ]]; then
  WORKDIR=/
  [[ -d $ROOT/var/task ]] && WORKDIR=/var/task
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/rie-run.XXXXXX")
CHILD=
cleanup() {
  trap - EXIT INT TERM HUP
  if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
    # Kill PID 1 of the namespace (unshare's child; the kernel then kills
    # every process in the namespace) and let unshare reap it and exit. If
    # that fails, kill unshare itself: --kill-child=SIGKILL does the rest.
    local k
    for k in $(ps -o pid= --ppid "$CHILD" 2>/dev/null); do kill -KILL "$k" 2>/dev/null || true; done
    for _ in $(seq 40); do kill -0 "$CHILD" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  # The mounts below TMP belong to the (now dead) namespace; only the empty
  # mount point directory is left on the host.
  rm -rf --one-file-system "$TMP" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# The base environment of AWS's base images, then the caller's.
FENV=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=en_US.UTF-8 TZ=:/etc/localtime
  LAMBDA_TASK_ROOT=/var/task LAMBDA_RUNTIME_DIR=/var/runtime "${ENVS[@]}")

# Runs as PID 1 of the new PID namespace, in the new mount namespace.
# shellcheck disable=SC2016
SETUP='
set -eu
T=$1 ROOT=$2 RIE=$3 RO=$4 WORKDIR=$5
shift 5
M=$T/merged
mount -t tmpfs -o mode=0700 rie-run "$T"
mkdir -p "$T/upper" "$T/work" "$M"
mount -t overlay -o "lowerdir=$ROOT,upperdir=$T/upper,workdir=$T/work" rie-run "$M"
mkdir -p "$M/usr/local/bin" "$M/proc" "$M/dev" "$M/tmp"
cp "$RIE" "$M/usr/local/bin/aws-lambda-rie"
chmod 0755 "$M/usr/local/bin/aws-lambda-rie"
mount -t proc -o nosuid,nodev,noexec proc "$M/proc"
mount -t tmpfs -o nosuid,mode=0755,size=64k rie-dev "$M/dev"
for n in null zero full random urandom; do
  : >"$M/dev/$n"
  mount --bind "/dev/$n" "$M/dev/$n"
done
ln -s /proc/self/fd "$M/dev/fd"
ln -s /proc/self/fd/0 "$M/dev/stdin"
ln -s /proc/self/fd/1 "$M/dev/stdout"
ln -s /proc/self/fd/2 "$M/dev/stderr"
mkdir "$M/dev/shm"
mount -t tmpfs -o nosuid,nodev,mode=1777,size=64m rie-shm "$M/dev/shm"
mount -t tmpfs -o nosuid,nodev,mode=1777,size=512m rie-tmp "$M/tmp"
if [ "$RO" = 1 ]; then
  mount -o remount,ro,bind "$M"
fi
# A nested unshare that creates no namespace: chroot + chdir, then exec.
exec unshare --root="$M" --wd="$WORKDIR" "$@"
'
env -i "${FENV[@]}" \
  unshare --mount --propagation private --pid --fork --kill-child=SIGKILL \
  /bin/sh -c "$SETUP" rie-run-setup "$TMP" "$ROOT" "$RIE" "$RO" "$WORKDIR" \
  /usr/local/bin/aws-lambda-rie --log-level "$LEVEL" \
  --runtime-interface-emulator-address "127.0.0.1:$PORT" --runtime-api-address "$RAPI" \
  "$@" </dev/null &
CHILD=$!

for _ in $(seq 200); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    printf 'rie-run: ready on 127.0.0.1:%s (runtime API %s, root %s)\n' "$PORT" "$RAPI" "$ROOT" >&2
    break
  fi
  kill -0 "$CHILD" 2>/dev/null || break
  sleep 0.05
done
set +e
wait "$CHILD"
rc=$?
CHILD=
exit "$rc"
