#!/bin/bash
# A private MariaDB server for tests and development, bound to 127.0.0.1 only.
#
#   mariadb.sh start DIR PORT   prints mysql://dockyard:dockyard@127.0.0.1:PORT/dockyard
#   mariadb.sh stop DIR
#   mariadb.sh status DIR       prints the URL if running (exit 0), else exit 3
#
# Data in DIR/mariadb/. The user dockyard/dockyard may do anything (it creates
# a database per test run); root has no password (unix socket or 127.0.0.1).
# See README.md beside this file.
. "$(dirname "$0")/lib.sh"
svc_setup mariadb "$@"
# The client tools must not pick up the caller's settings.
unset MYSQL_PWD MYSQL_HOST MYSQL_TCP_PORT MYSQL_UNIX_PORT MYSQL_HISTFILE

DATA=$SDIR/data
RUN=$SDIR/run
PIDFILE=$RUN/mariadbd.pid

url() {
    echo "mysql://dockyard:dockyard@127.0.0.1:$1/dockyard"
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
    drop_sock_dir
    exit 0
    ;;
esac

require mariadbd mariadb-install-db mariadb-admin mariadb
take_lock

pid=$(current_pid)
if [ -n "$pid" ] && check_already_running "$pid"; then
    url "$PORT"
    exit 0
fi
if port_busy "$PORT"; then
    die "something else already listens on 127.0.0.1:$PORT"
fi

# Whom to run as. As root: the mysql user if it can reach DIR (it needs every
# parent directory to be searchable), else root itself (mariadbd allows it with
# --user=root). As anyone else: ourselves.
SOCKDIR=$(sock_dir)
SOCK=$SOCKDIR/mariadbd.sock
mkdir -p "$DATA" "$RUN" "$SOCKDIR"
if [ "$(id -u)" = 0 ]; then
    RUN_USER=mysql
    chown mysql:mysql "$DATA" "$RUN" "$SOCKDIR"
    touch "$LOG" && chown mysql:mysql "$LOG"
    if ! can_reach mysql "$DATA"; then
        log "user mysql cannot reach $DATA (a parent directory is not searchable): running as root"
        RUN_USER=root
    fi
else
    RUN_USER=$(id -un)
fi

# Options for a fast, throw-away test instance: no binary log, no fsync on
# commit, small buffers, no DNS lookups. The character set matches Debian's
# packaged defaults (utf8mb4, utf8mb4_general_ci: case-insensitive!).
OPTS="--no-defaults --user=$RUN_USER --datadir=$DATA
    --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci
    --skip-name-resolve --innodb-buffer-pool-size=64M --innodb-log-file-size=16M
    --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 --sync-binlog=0
    --skip-log-bin --max-connections=500 --log-error=$LOG"

# Initialise the data directory once (redo it if an earlier attempt died).
if [ ! -e "$SDIR/.installed" ]; then
    rm -rf "${DATA:?}"/* "$SDIR/.provisioned"
    # shellcheck disable=SC2086
    if ! mariadb-install-db $OPTS --auth-root-authentication-method=normal \
        --skip-test-db --skip-name-resolve >>"$LOG" 2>&1 9>&- </dev/null; then
        fail "mariadb-install-db failed"
    fi
    touch "$SDIR/.installed"
fi

rm -f "$PIDFILE"
# shellcheck disable=SC2086
setsid mariadbd $OPTS --bind-address=127.0.0.1 --port="$PORT" --socket="$SOCK" \
    --pid-file="$PIDFILE" </dev/null >>"$LOG" 2>&1 9>&- &
STARTED_PID=$!

admin() {
    mariadb-admin --no-defaults --protocol=socket --socket="$SOCK" -uroot \
        --connect-timeout=2 "$@"
}
wait_until "the server to accept connections" "$STARTED_PID" admin ping
wait_until "127.0.0.1:$PORT to accept connections" "$STARTED_PID" \
    mariadb-admin --no-defaults --protocol=tcp -h127.0.0.1 -P"$PORT" -uroot \
    --connect-timeout=2 ping
echo "$PORT" >"$SDIR/port"

if [ ! -e "$SDIR/.provisioned" ]; then
    if ! mariadb --no-defaults --protocol=socket --socket="$SOCK" -uroot >>"$LOG" 2>&1 <<'EOF'; then
CREATE DATABASE IF NOT EXISTS dockyard CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'dockyard'@'127.0.0.1' IDENTIFIED BY 'dockyard';
CREATE USER IF NOT EXISTS 'dockyard'@'::1' IDENTIFIED BY 'dockyard';
CREATE USER IF NOT EXISTS 'dockyard'@'localhost' IDENTIFIED BY 'dockyard';
GRANT ALL PRIVILEGES ON *.* TO 'dockyard'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'dockyard'@'::1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'dockyard'@'localhost' WITH GRANT OPTION;
DELETE FROM mysql.global_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1');
DELETE FROM mysql.proxies_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1');
FLUSH PRIVILEGES;
EOF
        fail "could not create the dockyard database and user"
    fi
    touch "$SDIR/.provisioned"
fi

# The real check: the URL we print works.
if ! mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P"$PORT" -udockyard \
    -pdockyard dockyard -e 'SELECT 1' >/dev/null 2>>"$LOG"; then
    fail "cannot connect as dockyard over 127.0.0.1:$PORT"
fi
url "$PORT"
