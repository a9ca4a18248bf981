#!/usr/bin/env bash
# Several instances on one machine, without root: Redis, N Anygle instances on the Redis engine
# and nginx in front (the shipped etc/nginx/anygle.conf, plain HTTP), all from a private folder
# on ports of your choice.  For trying the multi-instance setup; production is systemd
# (docs/operations.md) or docker-compose.yml.
#
#   deploy/local/run.sh start [N]    # N instances (default 3); prints the URL
#   deploy/local/run.sh stop         # stops everything it started
#
# Settings (environment): DIR (var/local), PORT (nginx, 8080), REDIS_PORT (6390),
# WS_BASE (14100: instance n listens on WS_BASE+n), HTTP_BASE (14200).  Logs are in $DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${DIR:-var/local}
PORT=${PORT:-8080}
REDIS_PORT=${REDIS_PORT:-6390}
WS_BASE=${WS_BASE:-14100}
HTTP_BASE=${HTTP_BASE:-14200}
PY=.venv/bin/python

wait_port() {  # wait_port PORT WHAT: until something listens there (20 s)
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "run.sh: $2 did not start on port $1 (see $DIR)" >&2
    return 1
}

start() {
    local n=${1:-3}
    mkdir -p "$DIR/redis" "$DIR/nginx"
    DIR=$(cd "$DIR" && pwd)
    [ -x "$PY" ] || { echo "run.sh: no .venv here: run bash .ci/install first" >&2; exit 1; }
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DIR/redis" --appendonly yes \
        --daemonize yes --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log"
    wait_port "$REDIS_PORT" redis-server
    local upstreams=()
    for i in $(seq "$n"); do
        local ws=$((WS_BASE + i)) http=$((HTTP_BASE + i))
        # --pidfile per instance: twistd refuses a second server on the same twistd.pid
        PYTHONPATH=. .venv/bin/twistd --pidfile="$DIR/anygle-$i.pid" \
            --logfile="$DIR/anygle-$i.log" anygle --engine=redis \
            --redis="redis://127.0.0.1:$REDIS_PORT/0" --instance-id="$(hostname)-$i" \
            --ws="tcp:$ws:interface=127.0.0.1" --http="tcp:$http:interface=127.0.0.1"
        upstreams+=("$ws:$http")
    done
    for pair in "${upstreams[@]}"; do wait_port "${pair#*:}" "anygle (HTTP ${pair#*:})"; done
    # The shipped config with these instances as its upstreams, on $PORT (the test harness's
    # own translation of it: the site's server block, the maps and the locations unchanged).
    PYTHONPATH=. "$PY" - "$DIR/nginx" "$PORT" "${upstreams[@]}" <<'PYTHON'
import sys
from tests.harness import nginx_config, write_nginx_config
prefix, port, pairs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
upstreams = [tuple(int(p) for p in pair.split(":")) for pair in pairs]
argv = write_nginx_config(prefix, nginx_config(port, upstreams, prefix))
open(f"{prefix}/argv", "w").write("\n".join(argv))
PYTHON
    mapfile -t argv <"$DIR/nginx/argv"
    nohup "${argv[@]}" >"$DIR/nginx.log" 2>&1 &
    echo $! >"$DIR/nginx.pid"
    wait_port "$PORT" nginx
    echo "Anygle: $n instances behind http://127.0.0.1:$PORT/ (ws://127.0.0.1:$PORT/); logs in $DIR"
}

stop() {
    for pidfile in "$DIR"/anygle-*.pid "$DIR/nginx.pid" "$DIR/redis.pid"; do
        [ -e "$pidfile" ] || continue
        local pid
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$pidfile"
    done
    echo "Anygle: stopped (data and logs stay in $DIR)"
}

case "${1:-}" in
    start) start "${2:-3}" ;;
    stop) stop ;;
    *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
