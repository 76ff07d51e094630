#!/usr/bin/env bash
# Hostile-input suite: schemathesis (pinned below, installed into .larder/venv) generates
# requests from the committed OpenAPI documents and sends them to a gateway and a control
# plane of a throwaway platform, then checks every answer: no 5xx, status codes, headers,
# content types and bodies as the document says, auth enforced, unsupported methods
# refused.
#
#   ./deploy/local/schemathesis.sh [--no-build]
#
# The platform is started by up.sh on its own ports and state directory
# (.larder/schemathesis), so a platform started by up.sh for development is left alone,
# and stopped by down.sh (pid files) when the run ends, however it ends. The gateway is
# exercised first, with the demo tenant token; the control plane second, with the admin
# token, because its run deletes namespaces, revokes tokens and retires signing keys.
#
# Fails when a check fails, when any response is a 5xx, or when fewer than
# LARDER_ST_MIN_REQUESTS (5000) requests reached a service. Reports (HAR and JUnit per
# service) are left in .larder/schemathesis-reports.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
: "${LARDER_ST_MIN_REQUESTS:=5000}"
# Generated cases per operation; the request counts they give are in the summary.
: "${LARDER_ST_GATEWAY_EXAMPLES:=350}"
: "${LARDER_ST_CP_EXAMPLES:=300}"
: "${LARDER_ST_SEED:=20261123}"

root=$(cd "$(dirname "$0")/../.." && pwd)
# A platform of its own: state and ports apart from the development defaults of lib.sh.
export LARDER_STATE=$root/.larder/schemathesis
export LARDER_ZK_PORT=${LARDER_ST_ZK_PORT:-22181}
export LARDER_GATEWAY_ADDR=127.0.0.1:${LARDER_ST_GATEWAY_PORT:-28080}
export LARDER_CP_ADDR=127.0.0.1:${LARDER_ST_CP_PORT:-28081}
export LARDER_REDIS_MASTER_PORT=${LARDER_ST_REDIS_PORT:-26379}
export LARDER_REDIS_REPLICA_PORT=$((LARDER_REDIS_MASTER_PORT + 1))
export LARDER_REDIS_CLUSTER_PORTS="${LARDER_ST_CLUSTER_PORTS:-27001 27002 27003}"
export LARDER_AGENT_BASE_PORT=${LARDER_ST_AGENT_BASE_PORT:-29121}
export LARDER_ZK_ROOT=/larder
# A fresh platform every run: what an earlier run left (ZooKeeper data, cluster
# membership) must not decide this one.
if [ -d "$LARDER_STATE/run" ] && ls "$LARDER_STATE/run"/*.pid >/dev/null 2>&1; then
    "$root/deploy/local/down.sh" || true
fi
rm -rf "$LARDER_STATE"
source "$root/deploy/local/lib.sh"
cd "$LARDER_ROOT_DIR"

build=yes
for arg in "$@"; do
    case $arg in
        --no-build) build=no ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) die "unknown option $arg" ;;
    esac
done

reports=$LARDER_ROOT_DIR/.larder/schemathesis-reports
rm -rf "$reports"
mkdir -p "$reports"

# schemathesis in a virtualenv of the repository, at the pinned version.
venv=$LARDER_ROOT_DIR/.larder/venv
if ! "$venv/bin/st" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        # Debian splits venv (with ensurepip) out of python3.
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    say "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
st=$venv/bin/st

# The rest runs in a network namespace of its own, with only a loopback interface:
# registering a cluster makes the control plane resolve and probe the endpoints
# schemathesis generates (hostnames like `a0`), and none of that may leave the machine.
# Packages and the build need the network, so they come first, outside.
if [ -z "${LARDER_ST_IN_NETNS:-}" ]; then
    command -v unshare >/dev/null && command -v ip >/dev/null \
        || die "unshare and ip are needed (apt-get install util-linux iproute2)"
    ensure_packages curl:curl
    [ "$build" = no ] || cargo build --quiet --workspace --bins
    netns=(unshare --net)
    [ "$(id -u)" = 0 ] || netns=(unshare --map-root-user --net)
    exec "${netns[@]}" -- env LARDER_ST_IN_NETNS=1 \
        bash -c 'ip link set lo up && exec "$0" --no-build' "$0"
fi

for port in "$LARDER_ZK_PORT" "${LARDER_GATEWAY_ADDR##*:}" "${LARDER_CP_ADDR##*:}" \
    "$LARDER_REDIS_MASTER_PORT" "$LARDER_REDIS_REPLICA_PORT" $LARDER_REDIS_CLUSTER_PORTS \
    $(seq "$LARDER_AGENT_BASE_PORT" $((LARDER_AGENT_BASE_PORT + 4))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is taken; set the LARDER_ST_*_PORT variables (see this script) to free ones"
    fi
done

cleanup() {
    local rc=$?
    say "== stopping the schemathesis platform"
    "$LARDER_ROOT_DIR/deploy/local/down.sh" || rc=1
    rm -rf "$LARDER_STATE"
    exit $rc
}
trap cleanup EXIT

up_args=()
[ "$build" = yes ] || up_args+=(--no-build)
say "== starting a throwaway platform ($LARDER_STATE)"
"$LARDER_ROOT_DIR/deploy/local/up.sh" "${up_args[@]}" >"$reports/up.log" 2>&1 \
    || { tail -n 30 "$reports/up.log" >&2; die "up.sh failed; see $reports/up.log"; }

# st_pass NAME SPEC URL TOKEN PASS MAX_EXAMPLES [EXTRA ST ARGS...]: one schemathesis
# run with tests/schemathesis/NAME.toml, its reports in the service's directory.
st_pass() {
    local name=$1 spec=$2 url=$3 token=$4 pass=$5 max_examples=$6; shift 6
    local dir=$reports/$name
    mkdir -p "$dir"
    say "== schemathesis $SCHEMATHESIS_VERSION: $name, $pass ($spec against $url)"
    # Run from the report directory: schemathesis keeps a cache in its working directory.
    (cd "$dir" && "$st" --config-file "$LARDER_ROOT_DIR/tests/schemathesis/$name.toml" run \
        "$LARDER_ROOT_DIR/$spec" \
        --url "$url" \
        --header "Authorization: Bearer $token" \
        --checks all \
        --max-examples "$max_examples" \
        --seed "$LARDER_ST_SEED" \
        --generation-database none \
        --request-timeout 40 \
        --report har,junit \
        --report-har-path "$dir/$pass.har" \
        --report-junit-path "$dir/$pass.junit.xml" \
        --no-color \
        "$@") 2>&1 | tee "$dir/$pass.txt"
}

# verdict NAME RC: counts what the service was sent and answered, from the HAR of every
# exchange of its passes, and fails unless schemathesis passed, nothing was a 5xx and
# enough requests were sent.
verdict() {
    local name=$1 rc=$2 requests server_errors
    read -r requests server_errors < <(python3 - "$reports/$name"/*.har <<'PY'
import json, sys
entries = [e for path in sys.argv[1:] for e in json.load(open(path))["log"]["entries"]]
print(len(entries), sum(1 for e in entries if e["response"]["status"] >= 500))
PY
)
    say "$name: $requests requests, $server_errors answered 5xx, schemathesis exit code $rc"
    printf '%s requests=%s 5xx=%s exit=%s\n' "$name" "$requests" "$server_errors" "$rc" >>"$reports/summary.txt"
    local failed=no
    [ "$rc" -eq 0 ] || { say "$name: FAILED: schemathesis found failures (above)"; failed=yes; }
    [ "$server_errors" -eq 0 ] || { say "$name: FAILED: $server_errors responses were 5xx"; failed=yes; }
    [ "$requests" -ge "$LARDER_ST_MIN_REQUESTS" ] \
        || { say "$name: FAILED: only $requests requests (at least $LARDER_ST_MIN_REQUESTS required)"; failed=yes; }
    [ "$failed" = no ]
}

status=0
gateway_url=http://$LARDER_GATEWAY_ADDR
cp_url=http://$LARDER_CP_ADDR
demo_token=$(cat "$LARDER_STATE/demo.token")
admin_token=$(cat "$LARDER_STATE/admin.token")

rc=0
st_pass gateway openapi/gateway.json "$gateway_url" "$demo_token" all "$LARDER_ST_GATEWAY_EXAMPLES" || rc=$?
verdict gateway "$rc" || status=1

# Retiring signing keys runs last and on its own: once the key that signed the run's
# admin token is retired, every later request is (rightly) a 401. use_after_free is left
# out: deleting a namespace is asynchronous (202) and the namespace stays readable, in
# state `deleting`, until its keys are gone (see tests/schemathesis/control-plane.toml).
rc=0
st_pass control-plane openapi/control-plane.json "$cp_url" "$admin_token" all "$LARDER_ST_CP_EXAMPLES" \
    --exclude-path '/v1/keys/{kid}/retire' --exclude-checks use_after_free || rc=$?
st_pass control-plane openapi/control-plane.json "$cp_url" "$admin_token" key-retirement "$LARDER_ST_CP_EXAMPLES" \
    --include-path '/v1/keys/{kid}/retire' || rc=$?
verdict control-plane "$rc" || status=1

[ "$status" -eq 0 ] || die "schemathesis: failures; reports in $reports"
say "schemathesis: both services passed; reports in $reports"
