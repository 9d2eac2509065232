#!/bin/bash
# A private Redis server for tests and development, bound to 127.0.0.1 only,
# without persistence (no RDB snapshots, no AOF).
#
#   redis.sh start DIR PORT   prints redis://127.0.0.1:PORT/
#   redis.sh stop DIR
#   redis.sh status DIR       prints the URL if running (exit 0), else exit 3
#
# Data directory (empty: nothing is saved) in DIR/redis/. No password.
# See README.md beside this file.
. "$(dirname "$0")/lib.sh"
svc_setup redis "$@"
# redis-cli must not pick up the caller's settings.
unset REDISCLI_AUTH REDISCLI_HISTFILE

DATA=$SDIR/data
RUN=$SDIR/run
PIDFILE=$RUN/redis.pid

url() {
    echo "redis://127.0.0.1:$1/"
}

current_pid() {
    _p=$(read_pid "$PIDFILE")
    if is_ours "$_p"; then
        echo "$_p"
    fi
}

case $CMD in
status)
    pid=$(current_pid)
    [ -n "$pid" ] || exit 3
    url "$(recorded_port)"
    exit 0
    ;;
stop)
    take_lock
    pid=$(current_pid)
    if [ -n "$pid" ]; then
        stop_pid "$pid"
        log "stopped (pid $pid)"
    fi
    rm -f "$PIDFILE" "$SDIR/port"
    exit 0
    ;;
esac

require redis-server redis-cli
take_lock

pid=$(current_pid)
if [ -n "$pid" ] && check_already_running "$pid"; then
    url "$PORT"
    exit 0
fi
if port_busy "$PORT"; then
    die "something else already listens on 127.0.0.1:$PORT"
fi

mkdir -p "$DATA" "$RUN"
rm -f "$PIDFILE"
# Runs as the caller, in the foreground of its own session (so that we know
# its pid at once and notice if it dies). No config file: everything is on
# the command line. --bind is required (the default listens on every
# address). Redis renames its process title, so is_ours recognises it by its
# working directory (--dir).
setsid redis-server --daemonize no --bind 127.0.0.1 --port "$PORT" \
    --save '' --appendonly no --dir "$DATA" --pidfile "$PIDFILE" \
    --logfile "$LOG" --databases 16 --maxclients 1000 \
    </dev/null >>"$LOG" 2>&1 9>&- &
STARTED_PID=$!
ping() {
    [ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" = PONG ]
}
wait_until "127.0.0.1:$PORT to answer PING" "$STARTED_PID" ping
wait_until "redis to write its pid file" "$STARTED_PID" test -s "$PIDFILE"
echo "$PORT" >"$SDIR/port"
url "$PORT"
