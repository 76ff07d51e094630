#!/usr/bin/env bash
# Noisy neighbour, measured on release binaries with the gateway in its own process.
#
# A quiet namespace is read at a fixed rate (open loop, larder-bench openloop) for the
# whole run, while the run's time is cut into 2-second slices taken in turn by five
# phases:
#   0  alone;
#   1  beside a neighbour driven at 10 times its rate limit (answered 429 beyond it);
#   2  alone again: the noise floor, since phases 0 and 2 differ only in time;
#   3  beside a neighbour sending the same rate within its limit (all served), so the
#      cost of refused requests can be told from the cost of the same traffic served;
#   4  beside the same rate of GET /healthz: no token, no namespace, no Redis, only HTTP
#      through the gateway, the least any request can cost on these cores; what a
#      refusal costs beyond it is what the gateway could still save.
# The neighbours' generators send only in their phase's slices. Interleaving the phases
# every few seconds compares them under the same conditions of a shared machine, whose
# own tail latency drifts by several times over minutes. The quiet namespace's p99 in
# each phase is printed, with its ratio to phase 0, and the median of the p99s of its
# 2-second slices (which a few slices disturbed by something else cannot move much).
#
# With --reference, the same is then measured on the reference server (axum and the
# redis crate, nothing else; larder-bench reference-server) in three phases: alone, beside
# a neighbour reading another key at the same rate as above, alone again. It tells what
# the same traffic does to the stack itself on these cores.
#
#   ./deploy/bench/noisy-neighbour.sh [--duration SECONDS] [--reference]
#
# Uses the local platform (started with --release if it is not up, and stopped again).
set -euo pipefail
source "$(dirname "$0")/../local/lib.sh"
cd "$LARDER_ROOT_DIR"

duration=120
reference=no
while [ $# -gt 0 ]; do
    case $1 in
        --duration) duration=$2; shift ;;
        --reference) reference=yes ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
    shift
done
ensure_packages jq:jq
QUIET_RATE=${LARDER_NOISY_QUIET_RATE:-1000}
NOISY_LIMIT=${LARDER_NOISY_LIMIT:-200}
FLOOD_RATE=$((NOISY_LIMIT * 10))
# The neighbours' load generators run at the lowest CPU priority: a neighbour's clients
# run on its own machines, and here they would otherwise take the quiet client's core
# time on a machine of two cores, which says nothing about the gateway.
NEIGHBOUR_NICE=${LARDER_NOISY_NICE:-19}

cargo build --release --quiet -p larder-gateway -p larder-control-plane -p larder-agent -p larder-bench
started=no
if ! curl -fsS -o /dev/null "http://$LARDER_GATEWAY_ADDR/healthz" 2>/dev/null; then
    ./deploy/local/up.sh --release --no-build >/dev/null
    started=yes
fi
ref_pid=
cleanup() {
    [ -z "$ref_pid" ] || kill "$ref_pid" 2>/dev/null || true
    [ "$started" = no ] || ./deploy/local/down.sh >/dev/null
}
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

# The generators of one measurement share a phase clock, starting shortly after they do.
phased=()
phases() { # COUNT
    local epoch=$(($(date +%s%3N) + 1500))
    phased=(--phases "$1" --phase-length 2 --phase-epoch-ms "$epoch" --duration "$duration" --warmup 1)
}
generate() { # URL TOKEN RATE CONNECTIONS OUT [ONLY_PHASE]
    local nice=()
    [ -z "${6:-}" ] || nice=(nice -n "$NEIGHBOUR_NICE")
    "${nice[@]}" "$BIN/larder-bench" openloop --target gateway --op get --size 100 \
        --url "$1" --header "Authorization: Bearer $2" \
        --rate "$3" --connections "$4" "${phased[@]}" ${6:+--only-phase "$6"} >"$5" 2>/dev/null
}
# report OUT NAME...: each phase's p50 and p99 of the quiet generator's record OUT.
report() {
    local out=$1; shift
    jq -r '.phase_latency as $p | .phase_slice_p99_us as $m
        | def pct(a; b): ((a / b * 100 | round) - 100) | if . >= 0 then "+\(.)" else "\(.)" end;
        $ARGS.positional | to_entries[]
        | "  phase \(.key) \(.value):\n      p50 \($p[.key].p50_us) µs, p99 \($p[.key].p99_us) µs (\(pct($p[.key].p99_us; $p[0].p99_us)) % against phase 0), median of slice p99s \($m[.key]) µs (\(pct($m[.key]; $m[0])) %), \($p[.key].samples) requests"' \
        "$out" --args "$@"
}
say "quiet namespace at $QUIET_RATE/s for ${duration} s; neighbour limited to $NOISY_LIMIT ops/s, driven at $FLOOD_RATE/s in phase 1; the same rate within a limit in phase 3, of /healthz in phase 4"
key=$GW/v1/namespaces/%s/keys/k
phases 5
generate "$(printf "$key" noisy)" "$noisy_token" "$FLOOD_RATE" 32 "$LARDER_STATE/flood-noisy.json" 1 & over=$!
generate "$(printf "$key" busy)" "$busy_token" "$FLOOD_RATE" 32 "$LARDER_STATE/flood-busy.json" 3 & served=$!
generate "$GW/healthz" none "$FLOOD_RATE" 32 "$LARDER_STATE/flood-health.json" 4 & health=$!
generate "$(printf "$key" demo)" "$quiet_token" "$QUIET_RATE" 16 "$LARDER_STATE/quiet.json"
wait "$over" "$served" "$health"
say "neighbour over its limit: $(jq -c '.error_detail' "$LARDER_STATE/flood-noisy.json") refused, $(jq '.requests - .errors' "$LARDER_STATE/flood-noisy.json") served"
say "neighbour within its limit: $(jq -c '.error_detail' "$LARDER_STATE/flood-busy.json") failed, $(jq '.requests - .errors' "$LARDER_STATE/flood-busy.json") served"
say "health checks: $(jq '.requests - .errors' "$LARDER_STATE/flood-health.json") answered, $(jq '.errors' "$LARDER_STATE/flood-health.json") failed"
say "quiet namespace: $(jq '.requests' "$LARDER_STATE/quiet.json") requests, $(jq '.errors' "$LARDER_STATE/quiet.json") failed"
report "$LARDER_STATE/quiet.json" "alone" "neighbour over its limit" "alone again (noise floor)" \
    "neighbour within its limit" "neighbour reading /healthz"

[ "$reference" = yes ] || exit 0
REF_PORT=${LARDER_NOISY_REFERENCE_PORT:-7390}
REF=http://127.0.0.1:$REF_PORT
"$BIN/larder-bench" reference-server --listen "127.0.0.1:$REF_PORT" \
    --redis "redis://127.0.0.1:$LARDER_REDIS_MASTER_PORT/" >"$LARDER_STATE/reference.log" 2>&1 </dev/null &
ref_pid=$!
for _ in $(seq 1 50); do
    curl -s -o /dev/null -X PUT --data-binary "@$LARDER_STATE/value-100.bin" "$REF/keys/noisy-q" && break
    sleep 0.1
done
for k in noisy-q noisy-n; do
    curl -fsS -o /dev/null -X PUT --data-binary "@$LARDER_STATE/value-100.bin" "$REF/keys/$k" \
        || die "the reference server did not start; see $LARDER_STATE/reference.log"
done
say "reference server: a key read at $QUIET_RATE/s for ${duration} s; a neighbour reading another key at $FLOOD_RATE/s in phase 1"
phases 3
generate "$REF/keys/noisy-n" none "$FLOOD_RATE" 32 "$LARDER_STATE/reference-flood.json" 1 & flood=$!
generate "$REF/keys/noisy-q" none "$QUIET_RATE" 16 "$LARDER_STATE/reference-quiet.json"
wait "$flood"
say "reference: $(jq '.requests' "$LARDER_STATE/reference-quiet.json") quiet requests, $(jq '.errors' "$LARDER_STATE/reference-quiet.json") failed; neighbour $(jq '.requests - .errors' "$LARDER_STATE/reference-flood.json") served"
report "$LARDER_STATE/reference-quiet.json" "alone" "neighbour at the same rate" "alone again (noise floor)"
