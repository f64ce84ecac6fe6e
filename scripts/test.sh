#!/usr/bin/env bash
# THE test command (README.md): installs what the tests need, builds the
# image fixtures (cached), then format check, clippy and the whole test suite.
#
#   scripts/test.sh            # as root on Debian 12
#
# LAMBOX_FIXTURES selects the fixture cache (default /var/cache/lambox-fixtures).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export LAMBOX_FIXTURES=${LAMBOX_FIXTURES:-/var/cache/lambox-fixtures}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

step() { printf '\n==> %s\n' "$*" >&2; }
fail() { printf '\ntest.sh: FAILED: %s\n' "$*" >&2; exit 1; }
t0=$SECONDS

command -v cargo >/dev/null || fail "cargo not found (the Rust toolchain must be installed)"

step "setup: Debian packages (scripts/setup.sh)"
scripts/setup.sh "$LAMBOX_FIXTURES" || fail "scripts/setup.sh"

step "fixtures: test images in $LAMBOX_FIXTURES (scripts/build-fixtures.sh)"
scripts/build-fixtures.sh "$LAMBOX_FIXTURES" || fail "scripts/build-fixtures.sh"

step "cargo fmt --all -- --check"
cargo fmt --all -- --check || fail "formatting (run: cargo fmt --all)"

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings || fail "clippy"

step "cargo test --workspace"
cargo test --workspace || fail "cargo test"

printf '\ntest.sh: all passed in %d s\n' "$((SECONDS - t0))" >&2
