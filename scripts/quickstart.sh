#!/usr/bin/env bash
# The README's first command: install what lambox needs, build it, build the bundled example
# function image offline, import it, and show what lambox sees in it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build-fixtures.sh
fixtures="${LAMBOX_FIXTURES:-/var/cache/lambox-fixtures}"

cargo build --release --bin lambox
lambox=target/release/lambox
export LAMBOX_DATA_DIR="${LAMBOX_DATA_DIR:-/var/lib/lambox}"

echo "== lambox load (the example, hello-python, as an OCI layout)"
"$lambox" load "oci:$fixtures/images/hello-python/oci:latest" --tag localhost/hello-python:latest
echo "== lambox images"
"$lambox" images
echo "== lambox inspect localhost/hello-python"
"$lambox" inspect localhost/hello-python
echo "== lambox lint localhost/hello-python"
"$lambox" lint localhost/hello-python

echo "== lambox run localhost/hello-python (the Lambda Invoke API on 127.0.0.1:9000)"
"$lambox" run localhost/hello-python --listen 127.0.0.1:9000 &
run_pid=$!
trap 'kill -TERM "$run_pid" 2>/dev/null; wait "$run_pid" 2>/dev/null' EXIT
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:9000/ && break; sleep 0.1; done
echo "== curl -XPOST http://127.0.0.1:9000/2015-03-31/functions/function/invocations -d '{\"name\":\"quickstart\"}'"
curl -s -XPOST http://127.0.0.1:9000/2015-03-31/functions/function/invocations -d '{"name":"quickstart"}'
echo
kill -TERM "$run_pid"; wait "$run_pid" || true
trap - EXIT
echo "== done: run it yourself with: $lambox run localhost/hello-python"
