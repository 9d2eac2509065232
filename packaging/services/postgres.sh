#!/bin/bash
# A private PostgreSQL 15 cluster for tests and development, bound to
# 127.0.0.1 only.
#
#   postgres.sh start DIR PORT   prints postgres://dockyard:dockyard@127.0.0.1:PORT/dockyard
#   postgres.sh stop DIR
#   postgres.sh status DIR       prints the URL if running (exit 0), else exit 3
#
# Data in DIR/postgres/. Role dockyard/dockyard (LOGIN CREATEDB) owns the
# database dockyard. TCP needs the password (scram-sha-256); the unix socket
# (see README.md) trusts everyone, e.g. the superuser postgres.
. "$(dirname "$0")/lib.sh"
svc_setup postgres "$@"
# The client tools must not pick up the caller's settings.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGPASSFILE \
    PGSERVICE PGSERVICEFILE PGSSLMODE PGOPTIONS PGTARGETSESSIONATTRS PGDATA

PGBIN=${DYTEST_PGBIN:-/usr/lib/postgresql/15/bin}
DATA=$SDIR/data
RUN=$SDIR/run
PIDFILE=$DATA/postmaster.pid

url() {
    echo "postgres://dockyard:dockyard@127.0.0.1:$1/dockyard"
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
        # SIGINT is pg_ctl's "fast" shutdown: disconnect clients, no waiting.
        stop_pid "$pid" INT
        log "stopped (pid $pid)"
    fi
    rm -f "$SDIR/port"
    drop_sock_dir
    exit 0
    ;;
esac

[ -x "$PGBIN/initdb" ] || die "$PGBIN/initdb not found: run packaging/install-test-deps.sh (as root) first"
require psql pg_isready
take_lock

pid=$(current_pid)
if [ -n "$pid" ] && check_already_running "$pid"; then
    url "$PORT"
    exit 0
fi
if port_busy "$PORT"; then
    die "something else already listens on 127.0.0.1:$PORT"
fi

# PostgreSQL refuses to run as root: as root, run it as postgres, which must
# be able to reach DIR (every parent directory searchable).
SOCKDIR=$(sock_dir)
mkdir -p "$DATA" "$RUN" "$SOCKDIR"
touch "$LOG"
if [ "$(id -u)" = 0 ]; then
    RUN_USER=postgres
    chown postgres:postgres "$DATA" "$RUN" "$SOCKDIR" "$LOG"
    if ! can_reach postgres "$DATA"; then
        die "user postgres cannot reach $DATA: make every parent directory searchable (chmod o+x) or use a DIR under /tmp"
    fi
else
    RUN_USER=$(id -un)
fi
chmod 700 "$DATA"

# A postmaster.pid or socket lock file left by a killed server would make the
# new one refuse to start while the old pid exists: reused by another process,
# or still a zombie (an orphan waits for PID 1 to reap it, which can be slow).
# We hold the lock and no server of ours runs (see above): remove them.
rm -f "$PIDFILE" "$SOCKDIR"/.s.PGSQL.*

# Initialise once (redo it if an earlier attempt died). C collation (byte
# order) and UTF8; the TCP listener needs passwords, the socket trusts.
if [ ! -e "$SDIR/.installed" ]; then
    rm -rf "${DATA:?}"/* "$SDIR/.provisioned"
    if ! run_as "$RUN_USER" "$PGBIN/initdb" -D "$DATA" -U postgres -E UTF8 \
        --locale=C --auth-local=trust --auth-host=scram-sha-256 --no-sync \
        --no-instructions >>"$LOG" 2>&1 9>&- </dev/null; then
        fail "initdb failed"
    fi
    # Fast and throw-away: no fsync. Settings that depend on the start
    # arguments (port, socket directory) are passed on the command line.
    cat >>"$DATA/postgresql.conf" <<EOF

# packaging/services/postgres.sh: a throw-away test instance.
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
shared_buffers = 32MB
logging_collector = off
log_min_messages = warning
EOF
    touch "$SDIR/.installed"
fi

# -w: pg_ctl waits until the server accepts connections. Started in its own
# session, with stdio away from our caller.
PGOPTS="-c listen_addresses=127.0.0.1 -p $PORT -k $SOCKDIR"
if ! run_as "$RUN_USER" setsid "$PGBIN/pg_ctl" -D "$DATA" -l "$LOG" -o "$PGOPTS" \
    -w -t "$SVC_TIMEOUT" -s start </dev/null >>"$LOG" 2>&1 9>&-; then
    STARTED_PID=$(read_pid "$PIDFILE")
    fail "pg_ctl start failed"
fi
STARTED_PID=$(read_pid "$PIDFILE")
[ -n "$STARTED_PID" ] || fail "no pid in $PIDFILE after start"
wait_until "127.0.0.1:$PORT to accept connections" "$STARTED_PID" \
    pg_isready -q -h 127.0.0.1 -p "$PORT" -t 2
echo "$PORT" >"$SDIR/port"

if [ ! -e "$SDIR/.provisioned" ]; then
    if ! psql -X -q -v ON_ERROR_STOP=1 -h "$SOCKDIR" -p "$PORT" -U postgres \
        -d postgres >>"$LOG" 2>&1 <<'EOF'; then
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dockyard') THEN
        CREATE ROLE dockyard LOGIN CREATEDB PASSWORD 'dockyard';
    END IF;
END
$$;
SELECT 'CREATE DATABASE dockyard OWNER dockyard'
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'dockyard')
\gexec
EOF
        fail "could not create the dockyard role and database"
    fi
    touch "$SDIR/.provisioned"
fi

# The real check: the URL we print works.
if ! PGPASSWORD=dockyard PGCONNECT_TIMEOUT=5 psql -X -q -h 127.0.0.1 -p "$PORT" \
    -U dockyard -d dockyard -c 'SELECT 1' >/dev/null 2>>"$LOG"; then
    fail "cannot connect as dockyard over 127.0.0.1:$PORT"
fi
url "$PORT"
