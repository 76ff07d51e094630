#!/usr/bin/env bash
# Installs what is missing, then runs every check: formatting, clippy with -D warnings,
# and every test (unit, handler and integration tests against real ZooKeeper and Redis,
# which the test harness starts itself on free loopback ports).
#
#   ./deploy/local/test.sh
source "$(dirname "$0")/lib.sh"
cd "$LARDER_ROOT_DIR"

ensure_packages curl:curl
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

say "== cargo fmt --check"
cargo fmt --all -- --check
say "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "== tests"
cargo nextest run --workspace --no-fail-fast
