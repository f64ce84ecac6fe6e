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
