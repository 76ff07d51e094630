#!/usr/bin/env bash
# Runs the whole Larder platform on loopback: ZooKeeper, a replicated standalone Redis
# (master + replica), a 3-master Redis Cluster, the control plane, one agent per Redis
# instance and a gateway. Registers both deployments, creates the `demo` namespace and
# writes an admin token and a demo tenant token under .larder/local/.
#
#   ./deploy/local/up.sh [--release] [--no-build] [--with-prometheus]
#
# --with-prometheus also runs Prometheus (Debian package `prometheus`) on
# $LARDER_PROMETHEUS_ADDR (127.0.0.1:9090), scraping every service with the alert rules
# of deploy/prometheus/alerts.yml, so its web UI shows live graphs and alerts.
#
# Safe to run again: what is up is reported and left alone. Stop with down.sh.
# Addresses can be changed with LARDER_* variables (see deploy/local/lib.sh).
source "$(dirname "$0")/lib.sh"

profile=debug
build=yes
with_prometheus=no
for arg in "$@"; do
    case $arg in
        --release) profile=release ;;
        --no-build) build=no ;;
        --with-prometheus) with_prometheus=yes ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) die "unknown option $arg" ;;
    esac
done

if [ "$with_prometheus" = yes ]; then
    ensure_packages curl:curl prometheus:prometheus
else
    ensure_packages curl:curl
fi
BIN=$LARDER_ROOT_DIR/target/$profile
if [ "$build" = yes ]; then
    say "building ($profile)…"
    build_flags=()
    [ "$profile" = release ] && build_flags+=(--release)
    (cd "$LARDER_ROOT_DIR" && cargo build --quiet --bins "${build_flags[@]}")
fi
for b in larder-gateway larder-control-plane larder-agent larderctl; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing; run without --no-build"
done

say "ZooKeeper on $ZK_CONNECT"
zk_dir=$LARDER_STATE/zookeeper
mkdir -p "$zk_dir/data" "$zk_dir/conf"
cat >"$zk_dir/conf/zoo.cfg" <<CFG
tickTime=1000
initLimit=10
syncLimit=5
dataDir=$zk_dir/data
clientPort=$LARDER_ZK_PORT
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr
maxClientCnxns=200
CFG
cat >"$zk_dir/conf/log4j.properties" <<CFG
log4j.rootLogger=WARN, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p %c{1} - %m%n
CFG
start_bg zookeeper java -Xms64m -Xmx256m -cp "$(zk_classpath "$zk_dir/conf")" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$zk_dir/conf/zoo.cfg"
wait_port "$ZK_CONNECT" zookeeper

redis_start() { # NAME PORT [ARGS...]
    local name=$1 port=$2; shift 2
    local dir=$LARDER_STATE/$name
    mkdir -p "$dir"
    start_bg "$name" redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' \
        --appendonly no --protected-mode yes "$@"
    wait_port "127.0.0.1:$port" "$name"
}

say "Redis standalone: master :$LARDER_REDIS_MASTER_PORT, replica :$LARDER_REDIS_REPLICA_PORT"
redis_start redis-master "$LARDER_REDIS_MASTER_PORT" --maxmemory 256mb --maxmemory-policy allkeys-lru
redis_start redis-replica "$LARDER_REDIS_REPLICA_PORT" --maxmemory 256mb --maxmemory-policy allkeys-lru \
    --replicaof 127.0.0.1 "$LARDER_REDIS_MASTER_PORT"

say "Redis Cluster on ports $LARDER_REDIS_CLUSTER_PORTS"
cluster_nodes=()
for port in $LARDER_REDIS_CLUSTER_PORTS; do
    redis_start "redis-cluster-$port" "$port" --cluster-enabled yes --cluster-config-file nodes.conf \
        --cluster-node-timeout 2000 --maxmemory 256mb --maxmemory-policy allkeys-lru
    cluster_nodes+=("127.0.0.1:$port")
done
first_port=${LARDER_REDIS_CLUSTER_PORTS%% *}
if ! redis-cli -p "$first_port" cluster info | grep -q 'cluster_state:ok'; then
    if [ "$(redis-cli -p "$first_port" cluster info | sed -n 's/^cluster_known_nodes:\([0-9]*\).*/\1/p')" = 1 ]; then
        redis-cli --cluster create "${cluster_nodes[@]}" --cluster-replicas 0 --cluster-yes >"$LOG_DIR/cluster-create.log" 2>&1 \
            || die "redis-cli --cluster create failed; see $LOG_DIR/cluster-create.log"
    fi
    for _ in $(seq 1 100); do
        redis-cli -p "$first_port" cluster info | grep -q 'cluster_state:ok' && break
        sleep 0.1
    done
    redis-cli -p "$first_port" cluster info | grep -q 'cluster_state:ok' || die "Redis Cluster did not reach state ok"
fi

say "control plane on $LARDER_CP_ADDR"
key_dir=$LARDER_STATE/keys
start_bg control-plane "$BIN/larder-control-plane" --listen "$LARDER_CP_ADDR" --key-dir "$key_dir" \
    --zookeeper "$ZK_CONNECT" --root "$LARDER_ZK_ROOT"
wait_http "http://$LARDER_CP_ADDR/readyz" control-plane

say "agents (one per Redis instance)"
agent_port=$LARDER_AGENT_BASE_PORT
agent() { # CLUSTER PORT
    start_bg "agent-$2" "$BIN/larder-agent" --listen "127.0.0.1:$agent_port" --zookeeper "$ZK_CONNECT" \
        --root "$LARDER_ZK_ROOT" --instance "$1=127.0.0.1:$2"
    agent_port=$((agent_port + 1))
}
agent main "$LARDER_REDIS_MASTER_PORT"
agent main "$LARDER_REDIS_REPLICA_PORT"
for port in $LARDER_REDIS_CLUSTER_PORTS; do agent shards "$port"; done

say "gateway on $LARDER_GATEWAY_ADDR"
start_bg gateway "$BIN/larder-gateway" --listen "$LARDER_GATEWAY_ADDR" --id gw-local-1 \
    --zookeeper "$ZK_CONNECT" --root "$LARDER_ZK_ROOT"
wait_http "http://$LARDER_GATEWAY_ADDR/readyz" gateway

say "provisioning through the admin API"
"$BIN/larderctl" admin-token --key-dir "$key_dir" --subject local-admin --ttl $((30 * 24 * 3600)) \
    >"$LARDER_STATE/admin.token"
chmod 600 "$LARDER_STATE/admin.token"
export LARDER_URL=http://$LARDER_CP_ADDR LARDER_TOKEN
LARDER_TOKEN=$(cat "$LARDER_STATE/admin.token")
larderctl() { "$BIN/larderctl" "$@"; }
larderctl cluster add main --topology standalone --endpoint "127.0.0.1:$LARDER_REDIS_MASTER_PORT" \
    --replica "127.0.0.1:$LARDER_REDIS_REPLICA_PORT" --capacity $((256 * 1024 * 1024)) >/dev/null
cluster_args=()
for n in "${cluster_nodes[@]}"; do cluster_args+=(--endpoint "$n"); done
larderctl cluster add shards --topology cluster "${cluster_args[@]}" --capacity $((768 * 1024 * 1024)) >/dev/null
larderctl ns create demo --owner demo-team --cluster main >/dev/null
larderctl token issue demo --subject demo-app --perm read,write,queue --ttl $((30 * 24 * 3600)) \
    >"$LARDER_STATE/demo.token"
chmod 600 "$LARDER_STATE/demo.token"
larderctl cluster ls

if [ "$with_prometheus" = yes ]; then
    say "Prometheus on $LARDER_PROMETHEUS_ADDR"
    prom_dir=$LARDER_STATE/prometheus
    mkdir -p "$prom_dir/data"
    agent_targets=()
    for ((p = LARDER_AGENT_BASE_PORT; p < agent_port; p++)); do agent_targets+=("\"127.0.0.1:$p\""); done
    # The jobs and labels of deploy/prometheus/prometheus.yml, with this platform's
    # addresses and a short interval so graphs move while you watch.
    cat >"$prom_dir/prometheus.yml" <<CFG
global:
  scrape_interval: 5s
  scrape_timeout: 4s
  evaluation_interval: 5s
rule_files:
  - $LARDER_ROOT_DIR/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: larder-gateway
    static_configs:
      - targets: ["$LARDER_GATEWAY_ADDR"]
  - job_name: larder-control-plane
    static_configs:
      - targets: ["$LARDER_CP_ADDR"]
  - job_name: larder-agent
    honor_labels: true
    static_configs:
      - targets: [$(IFS=,; echo "${agent_targets[*]}")]
CFG
    promtool check config "$prom_dir/prometheus.yml" >"$LOG_DIR/promtool.log" 2>&1 \
        || die "generated Prometheus configuration is invalid; see $LOG_DIR/promtool.log"
    start_bg prometheus prometheus --config.file="$prom_dir/prometheus.yml" \
        --storage.tsdb.path="$prom_dir/data" --storage.tsdb.retention.time=2d \
        --web.listen-address="$LARDER_PROMETHEUS_ADDR"
    wait_http "http://$LARDER_PROMETHEUS_ADDR/-/ready" prometheus 60
    # Every target must have been scraped successfully once.
    expected=$((2 + ${#agent_targets[@]}))
    up=0
    for _ in $(seq 1 60); do
        up=$(curl -fsS "http://$LARDER_PROMETHEUS_ADDR/api/v1/targets?state=active" | { grep -o '"health":"up"' || true; } | wc -l)
        [ "$up" -ge "$expected" ] && break
        sleep 0.5
    done
    [ "$up" -ge "$expected" ] || die "Prometheus scrapes only $up of $expected targets up; see http://$LARDER_PROMETHEUS_ADDR/targets"
    say "  prometheus: $up of $expected targets up"
fi

prometheus_line=""
if [ "$with_prometheus" = yes ]; then
    prometheus_line=$'\n'"  prometheus     http://$LARDER_PROMETHEUS_ADDR (graphs, alerts, targets)"
fi
rel_state=${LARDER_STATE#"$LARDER_ROOT_DIR"/}
cat <<TXT

Larder is up.
  gateway        http://$LARDER_GATEWAY_ADDR
  control plane  http://$LARDER_CP_ADDR
  ZooKeeper      $ZK_CONNECT (root $LARDER_ZK_ROOT)
  logs           $LOG_DIR$prometheus_line

Try it:
  TOKEN=\$(cat $rel_state/demo.token)
  curl -i -X PUT -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: text/plain' \\
       --data 'hello larder' 'http://$LARDER_GATEWAY_ADDR/v1/namespaces/demo/keys/greeting?ttl=300'
  curl -i -H "Authorization: Bearer \$TOKEN" http://$LARDER_GATEWAY_ADDR/v1/namespaces/demo/keys/greeting
  curl -i -X DELETE -H "Authorization: Bearer \$TOKEN" http://$LARDER_GATEWAY_ADDR/v1/namespaces/demo/keys/greeting

Admin:
  export LARDER_URL=http://$LARDER_CP_ADDR LARDER_TOKEN=\$(cat $rel_state/admin.token)
  target/$profile/larderctl cluster ls

Stop everything with ./deploy/local/down.sh
TXT
