#!/usr/bin/env bash
# Larder's benchmark, one command: builds in release mode, starts the local platform and
# Webdis on the same Redis master, and measures side by side on this machine's cores:
#   - peak throughput, closed loop (wrk): gateway GET/PUT of 100 B and 4 KiB with auth,
#     rate limiting and metrics on; Webdis GET/SET of the same values; near-cache hot-key
#     GET vs Redis-path GET; redis-benchmark GET/SET as the floor;
#   - CPU seconds per 10k requests of the gateway, Webdis and Redis (/proc/<pid>/stat);
#   - latency, open loop at 50 % and 80 % of Webdis's GET peak (p50/p99/p99.9/max from
#     each request's intended send time: no coordinated omission);
#   - the same loads on a reference server (axum + the redis crate, nothing else: the
#     stack's own cost) and a perf profile of the gateway under GET load;
#   - the scale figures (larder-bench scale): start to ready and memory with 10,000
#     namespaces, apply time of one change, propagation to 3 gateways.
# Results: .larder/bench/results.json, .larder/bench/results.md, and the table in
# docs/performance.md.
#
#   ./deploy/bench/run.sh [--repeats N] [--duration S] [--quick] [--no-build] [--no-scale]
#                         [--no-profile] [--no-doc] [--no-renice] [--keep]
#
# --quick:     1 repeat of 3 s, no scale run (a smoke test; not for the docs).
# --no-renice: do not raise the priority (nice -5) of the measured servers, Redis and
#              the load generators over other work on a shared machine.
# --keep:      leave the platform and Webdis running afterwards.
#
# The platform runs as its own instance of deploy/local/up.sh (state in
# .larder/bench/platform, ports: ZooKeeper 2281, Redis 6479/6480 and 7101-7103, control
# plane 8181, gateway 8180), so a development platform on the default ports is left
# alone and the gateway measured is always the release build. LARDER_BENCH_PLATFORM=local
# uses the default local platform (.larder/local, gateway :8080, Redis :6379) instead;
# it must then run release binaries. A platform that was already up is kept; one this
# script started is stopped at the end, as is Webdis (by its pid).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_DIR=$ROOT/.larder/bench
if [ "${LARDER_BENCH_PLATFORM:-own}" = own ]; then
    export LARDER_STATE=${LARDER_STATE:-$BENCH_DIR/platform}
    export LARDER_ZK_PORT=${LARDER_ZK_PORT:-2281}
    export LARDER_GATEWAY_ADDR=${LARDER_GATEWAY_ADDR:-127.0.0.1:8180}
    export LARDER_CP_ADDR=${LARDER_CP_ADDR:-127.0.0.1:8181}
    export LARDER_REDIS_MASTER_PORT=${LARDER_REDIS_MASTER_PORT:-6479}
    export LARDER_REDIS_REPLICA_PORT=${LARDER_REDIS_REPLICA_PORT:-6480}
    export LARDER_REDIS_CLUSTER_PORTS=${LARDER_REDIS_CLUSTER_PORTS:-7101 7102 7103}
    export LARDER_AGENT_BASE_PORT=${LARDER_AGENT_BASE_PORT:-9221}
fi
source "$ROOT/deploy/local/lib.sh"

repeats=3
duration=10
build=yes
scale=yes
profile=yes
doc=yes
renice=yes
keep=no
while [ $# -gt 0 ]; do
    case $1 in
        --repeats) repeats=$2; shift ;;
        --duration) duration=$2; shift ;;
        --quick) repeats=1; duration=3; scale=no; doc=no ;;
        --no-build) build=no ;;
        --no-scale) scale=no ;;
        --no-profile) profile=no ;;
        --no-doc) doc=no ;;
        --no-renice) renice=no ;;
        --keep) keep=yes ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
    shift
done
[[ $repeats =~ ^[1-9][0-9]*$ ]] || die "--repeats must be a positive number"
[[ $duration =~ ^[1-9][0-9]*$ ]] || die "--duration must be a positive number of seconds"

WEBDIS_PORT=${LARDER_BENCH_WEBDIS_PORT:-7379}
CONNECTIONS=64
THREADS=2
BIN=$ROOT/target/release
mkdir -p "$BENCH_DIR/run"
RUNS=$BENCH_DIR/runs.jsonl
WEBDIS_PIDFILE=$BENCH_DIR/run/webdis.pid
REF_PORT=${LARDER_BENCH_REFERENCE_PORT:-7380}
REF_PIDFILE=$BENCH_DIR/run/reference.pid

ensure_packages curl:curl jq:jq wrk:wrk webdis:webdis redis-benchmark:redis-tools perf:linux-perf

if [ "$build" = yes ]; then
    say "building (release)…"
    (cd "$ROOT" && cargo build --quiet --release --bins)
fi
[ -x "$BIN/larder-bench" ] || die "$BIN/larder-bench is missing; run without --no-build"
NICE=()
[ "$renice" = yes ] && NICE=(nice -n -5)
bench() { "${NICE[@]}" "$BIN/larder-bench" "$@"; }
# set_nice VALUE PID...: every thread of each process (Linux priorities are per thread).
set_nice() {
    local value=$1 pid; shift
    for pid in "$@"; do
        renice -n "$value" -p $(ls "/proc/$pid/task" 2>/dev/null) >/dev/null 2>&1 || true
    done
}

# ----- platform and Webdis, torn down on exit unless they were up before -------------

platform_was_up=no
is_running gateway && platform_was_up=yes
webdis_started=no
cleanup() {
    local status=$?
    if [ "$renice" = yes ] && [ -n "${GW_PID:-}" ]; then
        set_nice 0 "$GW_PID" "$REDIS_PID" ${WD_PID:+"$WD_PID"} ${REF_PID:+"$REF_PID"}
    fi
    if [ "$keep" = no ]; then
        if [ "$webdis_started" = yes ] && [ -f "$WEBDIS_PIDFILE" ]; then
            local pid; pid=$(cat "$WEBDIS_PIDFILE")
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
            rm -f "$WEBDIS_PIDFILE"
            say "  webdis: stopped (pid $pid)"
        fi
        if [ -f "$REF_PIDFILE" ]; then
            local ref; ref=$(cat "$REF_PIDFILE")
            kill -TERM "$ref" 2>/dev/null || true
            rm -f "$REF_PIDFILE"
            say "  reference server: stopped (pid $ref)"
        fi
        if [ "$platform_was_up" = no ]; then
            "$ROOT/deploy/local/down.sh" || true
        fi
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "platform (state $LARDER_STATE)"
"$ROOT/deploy/local/up.sh" --release --no-build >"$BENCH_DIR/up.log" 2>&1 \
    || { tail -n 30 "$BENCH_DIR/up.log" >&2; die "up.sh failed; see $BENCH_DIR/up.log"; }
GW_PID=$(cat "$RUN_DIR/gateway.pid")
REDIS_PID=$(cat "$RUN_DIR/redis-master.pid")
gw_exe=$(readlink "/proc/$GW_PID/exe")
[ "$gw_exe" = "$BIN/larder-gateway" ] \
    || die "the gateway on $LARDER_GATEWAY_ADDR runs $gw_exe, not the release build; stop that platform (down.sh) or use other ports"
say "  gateway pid $GW_PID ($gw_exe), Redis master pid $REDIS_PID"

say "provisioning the bench namespaces"
export LARDER_URL=http://$LARDER_CP_ADDR
LARDER_TOKEN=$(cat "$LARDER_STATE/admin.token")
export LARDER_TOKEN
ctl() { "$BIN/larderctl" "$@"; }
# A rate limit far above any load here: limiting is on (every request is charged) but
# never refuses.
limits=(--ops 100000000 --burst 100000000)
ctl ns create bench --owner bench --cluster main "${limits[@]}" >/dev/null 2>&1 \
    || ctl ns update bench "${limits[@]}" >/dev/null
ctl ns create bench-near --owner bench --cluster main "${limits[@]}" \
    --near-cache on --near-cache-staleness-ms 1000 >/dev/null 2>&1 \
    || ctl ns update bench-near "${limits[@]}" --near-cache on --near-cache-staleness-ms 1000 >/dev/null
BENCH_TOKEN=$(ctl token issue bench --subject bench --perm read,write --ttl 86400)
NEAR_TOKEN=$(ctl token issue bench-near --subject bench --perm read,write --ttl 86400)

GW=http://$LARDER_GATEWAY_ADDR
WD=http://127.0.0.1:$WEBDIS_PORT
for size in 100 4096; do
    head -c "$size" /dev/zero | tr '\0' 'x' >"$BENCH_DIR/value-$size.bin"
done
# Every request the gateway serves goes through auth, the rate limiter and metrics.
put_gw() { # NS TOKEN KEY SIZE
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $2" \
        -H 'Content-Type: application/octet-stream' --data-binary "@$BENCH_DIR/value-$4.bin" \
        "$GW/v1/namespaces/$1/keys/$3")
    [[ $code == 2?? ]] || die "seeding $1/$3 through the gateway answered $code"
}
for size in 100 4096; do put_gw bench "$BENCH_TOKEN" "v$size" "$size"; done
put_gw bench-near "$NEAR_TOKEN" hot 100

say "Webdis on 127.0.0.1:$WEBDIS_PORT (Redis master :$LARDER_REDIS_MASTER_PORT)"
if [ -f "$WEBDIS_PIDFILE" ] && kill -0 "$(cat "$WEBDIS_PIDFILE")" 2>/dev/null; then
    say "  webdis: already up (pid $(cat "$WEBDIS_PIDFILE"))"
else
    (exec 3<>"/dev/tcp/127.0.0.1/$WEBDIS_PORT") 2>/dev/null \
        && die "port $WEBDIS_PORT is taken by something else; set LARDER_BENCH_WEBDIS_PORT"
    cat >"$BENCH_DIR/webdis.json" <<JSON
{
    "redis_host": "127.0.0.1",
    "redis_port": $LARDER_REDIS_MASTER_PORT,
    "redis_auth": null,
    "http_host": "127.0.0.1",
    "http_port": $WEBDIS_PORT,
    "threads": $THREADS,
    "pool_size": 20,
    "daemonize": false,
    "websockets": false,
    "database": 0,
    "acl": [{"disabled": ["DEBUG", "FLUSHDB", "FLUSHALL", "CONFIG", "SHUTDOWN"]}],
    "verbosity": 1,
    "logfile": "$BENCH_DIR/webdis.log"
}
JSON
    webdis "$BENCH_DIR/webdis.json" >"$BENCH_DIR/webdis.out" 2>&1 </dev/null &
    echo $! >"$WEBDIS_PIDFILE"
    webdis_started=yes
    for _ in $(seq 1 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$WEBDIS_PORT") 2>/dev/null && break
        sleep 0.1
    done
    (exec 3<>"/dev/tcp/127.0.0.1/$WEBDIS_PORT") 2>/dev/null \
        || die "webdis did not start; see $BENCH_DIR/webdis.out"
    say "  webdis: started (pid $(cat "$WEBDIS_PIDFILE"))"
fi
WD_PID=$(cat "$WEBDIS_PIDFILE")

say "reference server (axum + redis crate, nothing else) on 127.0.0.1:$REF_PORT"
if [ -f "$REF_PIDFILE" ] && kill -0 "$(cat "$REF_PIDFILE")" 2>/dev/null; then
    say "  reference: already up (pid $(cat "$REF_PIDFILE"))"
else
    "$BIN/larder-bench" reference-server --listen "127.0.0.1:$REF_PORT" \
        --redis "redis://127.0.0.1:$LARDER_REDIS_MASTER_PORT/" >"$BENCH_DIR/reference.log" 2>&1 </dev/null &
    echo $! >"$REF_PIDFILE"
    for _ in $(seq 1 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$REF_PORT") 2>/dev/null && break
        sleep 0.1
    done
    (exec 3<>"/dev/tcp/127.0.0.1/$REF_PORT") 2>/dev/null \
        || die "the reference server did not start; see $BENCH_DIR/reference.log"
    say "  reference: started (pid $(cat "$REF_PIDFILE"))"
fi
REF_PID=$(cat "$REF_PIDFILE")
REF=http://127.0.0.1:$REF_PORT
for size in 100 4096; do
    curl -fsS -o /dev/null -X PUT --data-binary "@$BENCH_DIR/value-$size.bin" "$WD/SET/bench-v$size" \
        || die "seeding bench-v$size through Webdis failed"
    got=$(curl -fsS "$WD/GET/bench-v$size.txt" | wc -c)
    [ "$got" -eq "$size" ] || die "Webdis returned $got bytes for bench-v$size, not $size"
done
got=$(curl -fsS -H "Authorization: Bearer $BENCH_TOKEN" "$GW/v1/namespaces/bench/keys/v4096" | wc -c)
[ "$got" -eq 4096 ] || die "the gateway returned $got bytes for bench/v4096"

# ----- measurements ----------------------------------------------------------------

# Other work on a shared machine (compilers, tests) competes for the same cores; at a
# higher priority the measured processes are disturbed less, and alike.
[ "$renice" = yes ] && set_nice -5 "$GW_PID" "$REDIS_PID" "$WD_PID" "$REF_PID"

PIDS=(--pid "gateway=$GW_PID" --pid "webdis=$WD_PID" --pid "reference=$REF_PID" --pid "redis=$REDIS_PID")
: >"$RUNS"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)

closed() { # TARGET OP SIZE REPEAT URL [ARGS...]
    local target=$1 op=$2 size=$3 repeat=$4 url=$5; shift 5
    bench closedloop --target "$target" --op "$op" --size "$size" --repeat "$repeat" "${PIDS[@]}" \
        --out "$RUNS" --duration "$duration" --connections "$CONNECTIONS" --threads "$THREADS" \
        --url "$url" "$@" \
        | jq -r '"  \(.target) \(.op) \(.size) B: \(.rps|floor) req/s, \(.errors) failed, CPU s/10k: \((.target | if . == "near" then "gateway" else . end) as $p | .cpu_s_per_10k[$p] // 0 | .*1000|floor/1000), redis \(.cpu_s_per_10k.redis // 0 | .*1000|floor/1000)"'
    sleep 1
}
gw_auth=(--header "Authorization: Bearer $BENCH_TOKEN")
near_auth=(--header "Authorization: Bearer $NEAR_TOKEN")
octet=(--header 'Content-Type: application/octet-stream')

for repeat in $(seq 1 "$repeats"); do
    say "repeat $repeat/$repeats: closed loop (wrk -t$THREADS -c$CONNECTIONS -d${duration}s)"
    # Gateway and Webdis alternate so that drifting background load hits both alike.
    for size in 100 4096; do
        closed gateway get "$size" "$repeat" "$GW/v1/namespaces/bench/keys/v$size" "${gw_auth[@]}"
        closed webdis get "$size" "$repeat" "$WD/GET/bench-v$size.txt"
    done
    for size in 100 4096; do
        closed gateway put "$size" "$repeat" "$GW/v1/namespaces/bench/keys/w$size" "${gw_auth[@]}" \
            "${octet[@]}" --method PUT --body-file "$BENCH_DIR/value-$size.bin"
        closed webdis set "$size" "$repeat" "$WD/SET/bench-w$size" \
            --method PUT --body-file "$BENCH_DIR/value-$size.bin"
    done
    closed near get 100 "$repeat" "$GW/v1/namespaces/bench-near/keys/hot" "${near_auth[@]}"
    closed reference get 100 "$repeat" "$REF/keys/bench-v100"
    closed reference put 100 "$repeat" "$REF/keys/bench-r100" \
        --method PUT --body-file "$BENCH_DIR/value-100.bin"

    say "repeat $repeat/$repeats: redis-benchmark (floor)"
    for size in 100 4096; do
        for op in set get; do
            bench redis-benchmark --target redis --op "$op" --size "$size" --repeat "$repeat" \
                --pid "redis=$REDIS_PID" --out "$RUNS" --port "$LARDER_REDIS_MASTER_PORT" \
                --requests $((duration * 40000)) --connections "$CONNECTIONS" --threads "$THREADS" \
                | jq -r '"  redis \(.op) \(.size) B: \(.rps|floor) req/s"'
        done
    done

    peak=$(jq -s "map(select(.kind == \"closed\" and .target == \"webdis\" and .op == \"get\" and .size == 100 and .repeat == $repeat)) | .[0].rps" "$RUNS")
    say "repeat $repeat/$repeats: open loop at 50 % and 80 % of Webdis's GET 100 B peak ($peak req/s)"
    for fraction in 0.5 0.8; do
        rate=$(jq -n "$peak * $fraction | floor")
        for target in gateway webdis; do
            if [ "$target" = gateway ]; then
                url=$GW/v1/namespaces/bench/keys/v100; auth=("${gw_auth[@]}")
            else
                url=$WD/GET/bench-v100.txt; auth=()
            fi
            bench openloop --target "$target" --op get --size 100 --repeat "$repeat" "${PIDS[@]}" \
                --out "$RUNS" --url "$url" "${auth[@]}" --rate "$rate" --rate-fraction "$fraction" \
                --duration "$duration" --connections "$CONNECTIONS" \
                | jq -r '"  \(.target) at \(.offered_rps|floor) req/s: p50 \(.latency.p50_us/1000) ms, p99 \(.latency.p99_us/1000) ms, p99.9 \(.latency.p999_us/1000) ms, max \(.latency.max_us/1000) ms, \(.errors) failed"'
            sleep 1
        done
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

report_args=()
if [ "$profile" = yes ]; then
    say "profiling the gateway under closed-loop GET 100 B (perf record, ${duration}s)"
    perf_data=$BENCH_DIR/perf.data
    # DWARF call graphs: release builds keep no frame pointers. Self time and inclusive
    # time (profile-children.txt) come from the same samples.
    perf record -F 499 --call-graph dwarf,16384 -p "$GW_PID" -o "$perf_data" -- sleep "$duration" \
        >"$BENCH_DIR/perf-record.log" 2>&1 &
    perf_pid=$!
    sleep 0.5
    bench closedloop --target gateway --op get --size 100 --repeat 0 --duration "$duration" \
        --connections "$CONNECTIONS" --threads "$THREADS" --url "$GW/v1/namespaces/bench/keys/v100" \
        "${gw_auth[@]}" >"$BENCH_DIR/profile-run.json"
    wait "$perf_pid" || true
    perf report -i "$perf_data" --stdio --no-children --sort dso,symbol --percent-limit 0.02 -g none \
        >"$BENCH_DIR/profile.txt" 2>/dev/null || true
    perf report -i "$perf_data" --stdio --no-children --sort dso --percent-limit 0.5 -g none \
        >"$BENCH_DIR/profile-dso.txt" 2>/dev/null || true
    perf report -i "$perf_data" --stdio --children --sort symbol --percent-limit 0.5 -g none \
        >"$BENCH_DIR/profile-children.txt" 2>/dev/null || true
    report_args+=(--profile "$BENCH_DIR/profile.txt" --profile-dso "$BENCH_DIR/profile-dso.txt")
fi

if [ "$scale" = yes ]; then
    say "scale figures (larder-bench scale: its own ZooKeeper, Redis and gateway processes)"
    bench scale --out "$BENCH_DIR/scale.json" >/dev/null
    report_args+=(--scale "$BENCH_DIR/scale.json")
fi

cpu=$(sed -n 's/^Model name: *//p' < <(lscpu) | head -n1)
machine="$(nproc) cores ($cpu), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, Linux $(uname -r); load generator, servers, Redis on the same cores"
versions="webdis $(dpkg-query -W -f='${Version}' webdis 2>/dev/null), wrk $(dpkg-query -W -f='${Version}' wrk 2>/dev/null), $(redis-server --version | cut -d' ' -f1-3)"
[ "$doc" = yes ] && report_args+=(--doc "$ROOT/docs/performance.md")
say ""
bench report --runs "$RUNS" "${report_args[@]}" \
    --machine "$machine" \
    --command "./deploy/bench/run.sh --repeats $repeats --duration $duration" \
    --note "run started $started_at; load average (1/5/15 min) before: $load_before, after: $load_after (the machine is shared)" \
    --note "$versions; Webdis $THREADS threads, GET as /GET/<key>.txt (raw value), SET as PUT /SET/<key> with the body" \
    --note "$([ "$renice" = yes ] && echo 'gateway, Webdis, Redis master and the load generators ran at nice -5 (other work at 0)' || echo 'every process at the default priority')" \
    --json "$BENCH_DIR/results.json" --markdown "$BENCH_DIR/results.md"
say ""
say "results: $BENCH_DIR/results.json, $BENCH_DIR/results.md$([ "$doc" = yes ] && echo ', docs/performance.md')"
