#!/usr/bin/env bash
# Noisy neighbour, measured on release binaries with the gateway in its own process:
# the p99 of a quiet namespace read at a fixed rate (open loop, larder-bench openloop)
# alone, beside a neighbour driven at 10 times its rate limit (answered 429 beyond it),
# and beside a neighbour sending the same rate within its limit (all served), in
# alternating rounds, so the cost of refused requests can be told from the cost of the
# same amount of traffic on the same cores.
#
#   ./deploy/bench/noisy-neighbour.sh [--rounds N]
#
# Uses the local platform (started with --release if it is not up, and stopped again).
set -euo pipefail
source "$(dirname "$0")/../local/lib.sh"
cd "$LARDER_ROOT_DIR"

rounds=3
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) rounds=$2; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
    shift
done
ensure_packages jq:jq
QUIET_RATE=${LARDER_NOISY_QUIET_RATE:-1000}
NOISY_LIMIT=${LARDER_NOISY_LIMIT:-200}
FLOOD_RATE=$((NOISY_LIMIT * 10))

cargo build --release --quiet -p larder-gateway -p larder-control-plane -p larder-agent -p larder-bench
started=no
if ! curl -fsS -o /dev/null "http://$LARDER_GATEWAY_ADDR/healthz" 2>/dev/null; then
    ./deploy/local/up.sh --release --no-build >/dev/null
    started=yes
fi
cleanup() { [ "$started" = no ] || ./deploy/local/down.sh >/dev/null; }
trap cleanup EXIT

BIN=target/release
export LARDER_URL=http://$LARDER_CP_ADDR LARDER_TOKEN
LARDER_TOKEN=$(cat "$LARDER_STATE/admin.token")
GW=http://$LARDER_GATEWAY_ADDR
quiet_token=$(cat "$LARDER_STATE/demo.token")
"$BIN/larderctl" ns create noisy --owner team-noisy --ops "$NOISY_LIMIT" --burst "$NOISY_LIMIT" >/dev/null 2>&1 || true
"$BIN/larderctl" ns create busy --owner team-busy --ops 1000000 --burst 1000000 >/dev/null 2>&1 || true
noisy_token=$("$BIN/larderctl" token issue noisy --subject noisy | tail -1)
busy_token=$("$BIN/larderctl" token issue busy --subject busy | tail -1)
sleep 1
head -c 100 /dev/zero | tr '\0' x >"$LARDER_STATE/value-100.bin"
for pair in "demo:$quiet_token" "noisy:$noisy_token" "busy:$busy_token"; do
    curl -fsS -o /dev/null -X PUT -H "Authorization: Bearer ${pair#*:}" \
        --data-binary "@$LARDER_STATE/value-100.bin" "$GW/v1/namespaces/${pair%%:*}/keys/k" \
        || die "seeding namespace ${pair%%:*} failed"
done

quiet() {
    "$BIN/larder-bench" openloop --target gateway --op get --size 100 \
        --url "$GW/v1/namespaces/demo/keys/k" --header "Authorization: Bearer $quiet_token" \
        --rate "$QUIET_RATE" --duration 8 --connections 16 2>/dev/null \
        | jq -r '"p50 \(.latency.p50_us) µs, p99 \(.latency.p99_us) µs, \(.errors) failed"'
}
flood() { # NAMESPACE TOKEN OUT
    "$BIN/larder-bench" openloop --target gateway --op get --size 100 \
        --url "$GW/v1/namespaces/$1/keys/k" --header "Authorization: Bearer $2" \
        --rate "$FLOOD_RATE" --duration 11 --warmup 0.5 --connections 32 >"$3" 2>/dev/null
}
say "quiet namespace at $QUIET_RATE/s; neighbour limited to $NOISY_LIMIT ops/s, driven at $FLOOD_RATE/s"
for round in $(seq 1 "$rounds"); do
    say "round $round: alone:                          $(quiet)"
    flood noisy "$noisy_token" "$LARDER_STATE/flood-noisy.json" & pid=$!
    sleep 1
    say "round $round: beside the neighbour over limit: $(quiet)"
    wait "$pid"
    say "  neighbour: $(jq -c '.error_detail' "$LARDER_STATE/flood-noisy.json") refused, $(jq '.rps|floor' "$LARDER_STATE/flood-noisy.json") req/s served"
    flood busy "$busy_token" "$LARDER_STATE/flood-busy.json" & pid=$!
    sleep 1
    say "round $round: beside the same rate, all served: $(quiet)"
    wait "$pid"
done
