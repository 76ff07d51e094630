#!/usr/bin/env bash
# Installs what is missing, then runs every check: formatting, clippy with -D warnings,
# promtool on the Prometheus configuration and alert rules (with their unit tests),
# systemd-analyze on the units, and every test (unit, handler and integration tests
# against real ZooKeeper and Redis, which the test harness starts itself on free
# loopback ports), then schemathesis against a running gateway and control plane
# (deploy/local/schemathesis.sh).
#
#   ./deploy/local/test.sh
source "$(dirname "$0")/lib.sh"
cd "$LARDER_ROOT_DIR"

ensure_packages curl:curl promtool:prometheus
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

say "== cargo fmt --check"
cargo fmt --all -- --check
say "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "== promtool: Prometheus configuration, alert rules, alert unit tests"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml
say "== build (the integration tests run the binaries)"
cargo build --quiet --workspace --bins
say "== systemd-analyze verify deploy/systemd"
if command -v systemd-analyze >/dev/null; then
    # The units name the installed paths; verify them against the built binaries.
    units=$(mktemp -d)
    trap 'rm -rf "$units"' EXIT
    for unit in deploy/systemd/*.service; do
        sed "s#/usr/local/bin/#$LARDER_ROOT_DIR/target/debug/#g" "$unit" >"$units/${unit##*/}"
    done
    systemd-analyze verify "$units"/*.service
else
    say "  systemd-analyze not installed; unit syntax is still checked by the deploy-files test"
fi
say "== tests"
cargo nextest run --workspace --no-fail-fast
say "== hostile input: schemathesis against a gateway and a control plane"
./deploy/local/schemathesis.sh --no-build
