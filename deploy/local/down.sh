#!/usr/bin/env bash
# Stops what up.sh started (by the pid files under .larder/local/run), newest tier first.
source "$(dirname "$0")/lib.sh"

say "stopping Larder"
stop prometheus
stop gateway
for f in "$RUN_DIR"/agent-*.pid; do [ -e "$f" ] && stop "$(basename "$f" .pid)"; done
stop control-plane
for f in "$RUN_DIR"/redis-*.pid; do [ -e "$f" ] && stop "$(basename "$f" .pid)"; done
stop zookeeper
left=$(ls "$RUN_DIR" 2>/dev/null | wc -l)
[ "$left" -eq 0 ] || die "$left pid files left in $RUN_DIR"
say "nothing of Larder's is running"
