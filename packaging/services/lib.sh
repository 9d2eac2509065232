# Shared helpers for packaging/services/*.sh (sourced, not run).
#
# Every service script is `NAME.sh start DIR PORT` / `stop DIR` / `status DIR`
# and keeps everything it owns under DIR/NAME/ (so one DIR can host all the
# services side by side):
#
#   DIR/NAME/data/      the service's data directory
#   DIR/NAME/run/       pid file and unix socket(s) (see sock_dir below)
#   DIR/NAME/NAME.log   the service's log
#   DIR/NAME/port       the port of the running instance
#   DIR/NAME/.lock      serialises concurrent start/stop calls on one DIR
#
# On success `start` and `status` print exactly one line on stdout: the URL to
# connect with. Everything else goes to stderr.

set -eu
set +m  # no job control: `setsid cmd &` must exec cmd, not fork it

SVC_TIMEOUT=${DYTEST_SERVICE_TIMEOUT:-60}

log() {
    printf '%s: %s\n' "$SVC" "$*" >&2
}

die() {
    printf '%s: error: %s\n' "$SVC" "$*" >&2
    exit 1
}

usage() {
    cat >&2 <<EOF
usage: $0 start DIR PORT${SVC_EXTRA_USAGE:-}
       $0 stop DIR
       $0 status DIR
EOF
    exit 2
}

# svc_setup NAME "$@": parses the command line into CMD, DIR, SDIR, PORT.
svc_setup() {
    SVC=$1
    shift
    [ $# -ge 2 ] || usage
    CMD=$1
    DIR=$2
    PORT=${3:-}
    case $CMD in
        start)
            [ -n "$PORT" ] || usage
            check_port "$PORT"
            ;;
        stop | status) ;;
        *) usage ;;
    esac
    [ -n "$DIR" ] || usage
    if [ "$CMD" != start ] && [ ! -d "$DIR/$SVC" ]; then
        # Never started from DIR: nothing to stop, nothing running.
        [ "$CMD" = stop ] && exit 0
        exit 3
    fi
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd -P)
    SDIR=$DIR/$SVC
    mkdir -p "$SDIR"
    LOG=$SDIR/$SVC.log
}

check_port() {
    case $1 in
        '' | *[!0-9]*) die "invalid port '$1'" ;;
    esac
    if [ "$1" -lt 1 ] || [ "$1" -gt 65535 ]; then
        die "invalid port '$1'"
    fi
}

# Serialise start/stop on the same DIR/NAME. The lock is fd 9: every daemon
# must be started with 9>&- so that it does not keep the lock.
take_lock() {
    exec 9>"$SDIR/.lock"
    if ! flock -w "$SVC_TIMEOUT" 9; then
        die "another start/stop on $SDIR did not finish within ${SVC_TIMEOUT}s"
    fi
}

# Is anything (ours or not) accepting connections on 127.0.0.1:PORT?
port_busy() {
    # shellcheck disable=SC2016
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# read_pid FILE: prints the pid recorded in FILE (first line), or nothing.
read_pid() {
    if [ -s "$1" ]; then
        head -n 1 "$1" | tr -dc '0-9'
    fi
}

# is_ours PID: the process is alive and belongs to this DIR/NAME (its
# command line or its working directory mentions SDIR). This guards against
# a stale pid file whose pid has been reused by an unrelated process.
is_ours() {
    alive "$1" || return 1
    if tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "$SDIR/"; then
        return 0
    fi
    case $(readlink "/proc/$1/cwd" 2>/dev/null) in
        "$SDIR" | "$SDIR"/*) return 0 ;;
    esac
    return 1
}

# log_tail: the end of the service log, for error messages.
log_tail() {
    if [ -s "$LOG" ]; then
        printf -- '--- last lines of %s ---\n' "$LOG" >&2
        tail -n 30 "$LOG" >&2
        printf -- '---\n' >&2
    fi
}

# fail MESSAGE: kill what this start launched (if any), show the log, exit 1.
fail() {
    printf '%s: error: %s\n' "$SVC" "$*" >&2
    log_tail
    if alive "${STARTED_PID:-}"; then
        kill -KILL "$STARTED_PID" 2>/dev/null || true
    fi
    exit 1
}

# wait_until DESCRIPTION PID COMMAND...: polls COMMAND until it succeeds, for at
# most SVC_TIMEOUT seconds, failing early if PID (when not empty) has died.
wait_until() {
    _desc=$1
    _pid=$2
    shift 2
    _deadline=$(($(date +%s) + SVC_TIMEOUT))
    while ! "$@" >/dev/null 2>&1; do
        if [ -n "$_pid" ] && ! alive "$_pid"; then
            fail "$SVC exited before $_desc"
        fi
        if [ "$(date +%s)" -ge "$_deadline" ]; then
            fail "timed out after ${SVC_TIMEOUT}s waiting for $_desc"
        fi
        sleep 0.05
    done
}

# alive PID: the process exists and is not a zombie (an orphaned daemon is
# reparented to PID 1, which may take its time to reap it).
alive() {
    [ -n "$1" ] || return 1
    kill -0 "$1" 2>/dev/null || return 1
    case $(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) in
        Z | X | '') return 1 ;;
    esac
    return 0
}

# stop_pid PID [SIGNAL]: send SIGNAL (default TERM), wait up to SVC_TIMEOUT
# seconds, then SIGKILL.
stop_pid() {
    kill "-${2:-TERM}" "$1" 2>/dev/null || return 0
    _deadline=$(($(date +%s) + SVC_TIMEOUT))
    while alive "$1"; do
        if [ "$(date +%s)" -ge "$_deadline" ]; then
            log "pid $1 ignored SIGTERM for ${SVC_TIMEOUT}s, sending SIGKILL"
            kill -KILL "$1" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.05
    done
}

# The running instance's recorded port (empty if none).
recorded_port() {
    if [ -s "$SDIR/port" ]; then
        tr -dc '0-9' <"$SDIR/port"
    fi
}

# already_running PID URL_FOR_PORT_FUNC: common idempotency check for start.
# If PID is ours: succeed (print the URL and exit) when it runs on PORT, fail
# when it runs on another port.
check_already_running() {
    _pid=$1
    if is_ours "$_pid"; then
        _rport=$(recorded_port)
        if [ -n "$_rport" ] && [ "$_rport" != "$PORT" ]; then
            die "already running from $SDIR on port $_rport (pid $_pid), not $PORT: stop it first"
        fi
        return 0
    fi
    return 1
}

# sock_dir: where to put unix sockets. Socket paths are limited to 107 bytes;
# when SDIR/run is too deep, use a short private directory under /tmp instead,
# remembered in SDIR/sockdir.
sock_dir() {
    if [ ${#SDIR} -le 70 ]; then
        printf '%s\n' "$SDIR/run"
        return
    fi
    if [ -s "$SDIR/sockdir" ] && [ -d "$(cat "$SDIR/sockdir")" ]; then
        cat "$SDIR/sockdir"
        return
    fi
    _d=$(mktemp -d "/tmp/dockyard-$SVC.XXXXXX")
    chmod 755 "$_d"
    printf '%s\n' "$_d" >"$SDIR/sockdir"
    printf '%s\n' "$_d"
}

# drop_sock_dir: on stop, remove the directory made by sock_dir, if any.
drop_sock_dir() {
    if [ -s "$SDIR/sockdir" ]; then
        _d=$(cat "$SDIR/sockdir")
        case $_d in
            /tmp/dockyard-"$SVC".*) rm -rf "$_d" ;;
        esac
        rm -f "$SDIR/sockdir"
    fi
}

# run_as USER COMMAND...: run COMMAND as USER (as is when USER is us).
run_as() {
    _u=$1
    shift
    if [ "$_u" = "$(id -un)" ]; then
        "$@"
    else
        runuser -u "$_u" -- "$@"
    fi
}

# can_reach USER PATH: can USER traverse all of PATH's parents and write PATH?
can_reach() {
    run_as "$1" test -x "$2" -a -w "$2" 2>/dev/null
}

require() {
    for _t in "$@"; do
        if ! command -v "$_t" >/dev/null 2>&1; then
            die "$_t not found: run packaging/install-test-deps.sh (as root) first"
        fi
    done
}
