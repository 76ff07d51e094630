# Shared helpers of the local-platform scripts. Sourced, not run.
#
# Everything the scripts start is recorded as a pid file under $LARDER_STATE/run, so
# down.sh stops exactly what up.sh started and nothing else.

set -euo pipefail

LARDER_ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LARDER_STATE=${LARDER_STATE:-$LARDER_ROOT_DIR/.larder/local}
RUN_DIR=$LARDER_STATE/run
LOG_DIR=$LARDER_STATE/log
mkdir -p "$RUN_DIR" "$LOG_DIR"

: "${LARDER_ZK_PORT:=2181}"
: "${LARDER_GATEWAY_ADDR:=127.0.0.1:8080}"
: "${LARDER_CP_ADDR:=127.0.0.1:8081}"
: "${LARDER_REDIS_MASTER_PORT:=6379}"
: "${LARDER_REDIS_REPLICA_PORT:=6380}"
: "${LARDER_REDIS_CLUSTER_PORTS:=7001 7002 7003}"
: "${LARDER_AGENT_BASE_PORT:=9121}"
: "${LARDER_ZK_ROOT:=/larder}"
: "${LARDER_PROMETHEUS_ADDR:=127.0.0.1:9090}"
ZK_CONNECT=127.0.0.1:$LARDER_ZK_PORT

say() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

zk_classpath() {
    local jars=/usr/share/java
    printf '%s' "$1:$jars/zookeeper.jar:$jars/zookeeper-jute.jar:$jars/slf4j-api.jar:$jars/slf4j-log4j12.jar:$jars/log4j-1.2.jar"
}

# Installs the Debian packages the platform runs on when any is missing, and the extra
# ones named as COMMAND:PACKAGE (e.g. promtool:prometheus) whose command is missing.
ensure_packages() {
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-cli >/dev/null || missing+=(redis-tools)
    [ -f /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
    command -v java >/dev/null || missing+=(default-jre-headless)
    for extra in "$@"; do
        command -v "${extra%%:*}" >/dev/null || missing+=("${extra##*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# is_running NAME: the process recorded for NAME is alive.
is_running() {
    local pidfile=$RUN_DIR/$1.pid
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# start_bg NAME CMD...: starts CMD in the background with its own log and pid file,
# unless NAME already runs.
start_bg() {
    local name=$1; shift
    if is_running "$name"; then
        say "  $name: already up (pid $(cat "$RUN_DIR/$name.pid"))"
        return 0
    fi
    nohup "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$RUN_DIR/$name.pid"
    say "  $name: started (pid $!)"
}

# wait_port HOST:PORT NAME [SECONDS]: polls until something accepts connections.
wait_port() {
    local addr=$1 name=$2 limit=${3:-30}
    local host=${addr%:*} port=${addr##*:}
    local deadline=$((SECONDS + limit))
    until (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; do
        if ! is_running "$name"; then
            tail -n 20 "$LOG_DIR/$name.log" >&2 || true
            die "$name exited; log: $LOG_DIR/$name.log"
        fi
        [ $SECONDS -lt $deadline ] || die "$name did not open $addr within ${limit}s; log: $LOG_DIR/$name.log"
        sleep 0.1
    done
}

# wait_http URL NAME [SECONDS]: polls until URL answers 2xx.
wait_http() {
    local url=$1 name=$2 limit=${3:-30}
    local deadline=$((SECONDS + limit))
    until curl -fsS -o /dev/null "$url" 2>/dev/null; do
        if ! is_running "$name"; then
            tail -n 20 "$LOG_DIR/$name.log" >&2 || true
            die "$name exited; log: $LOG_DIR/$name.log"
        fi
        [ $SECONDS -lt $deadline ] || die "$name not ready at $url within ${limit}s; log: $LOG_DIR/$name.log"
        sleep 0.1
    done
}

# stop NAME: TERM, wait up to 10 s, then KILL; only the recorded pid.
stop() {
    local name=$1 pidfile=$RUN_DIR/$1.pid
    [ -f "$pidfile" ] || return 0
    local pid; pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            say "  $name: killed (pid $pid)"
        else
            say "  $name: stopped (pid $pid)"
        fi
    fi
    rm -f "$pidfile"
}
