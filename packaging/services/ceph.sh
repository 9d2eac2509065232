#!/bin/bash
# A private one-node Ceph cluster (one monitor, one OSD on memstore, no
# manager) for tests and development, bound to 127.0.0.1 only, with the pool
# `registry` created.
#
#   ceph.sh start DIR [MON_PORT]   prints the path of a client ceph.conf
#   ceph.sh stop DIR
#   ceph.sh status DIR             prints that path if running (exit 0), else exit 3
#
# The monitor listens (msgr2 only) on 127.0.0.1:MON_PORT (default 26789); the
# OSD binds ports MON_PORT+1 .. MON_PORT+40. No authentication (auth none),
# so any client user name works (e.g. client.admin). The OSD keeps its data
# in RAM (memstore, CEPH_MEMSTORE_BYTES, default 6 GiB of capacity; memory is
# used only for what is stored): nothing survives `stop`, and every `start`
# after a stop makes a fresh cluster. Everything lives in DIR/ceph/:
# daemon.conf (the daemons'), ceph.conf (for clients), mon/, osd/, run/
# (pid files, admin sockets), log/. See README.md beside this file.
SVC_EXTRA_USAGE=" (PORT optional, default 26789)"
if [ "${1:-}" = start ] && [ $# -eq 2 ]; then
    set -- "$1" "$2" 26789
fi
. "$(dirname "$0")/lib.sh"
svc_setup ceph "$@"
# The ceph tools must not pick up the caller's cluster.
unset CEPH_ARGS CEPH_CONF

RUN=$SDIR/run
DCONF=$SDIR/daemon.conf
CCONF=$SDIR/ceph.conf
MEMSTORE_BYTES=${CEPH_MEMSTORE_BYTES:-6442450944}

# pid_of NAME (mon.a | osd.0): the pid if the daemon runs and is ours.
pid_of() {
    _p=$(read_pid "$RUN/$1.pid")
    if is_ours "$_p"; then
        echo "$_p"
    fi
}

kill_daemons() {
    for _d in osd.0 mon.a; do
        _p=$(pid_of "$_d")
        if [ -n "$_p" ]; then
            # memstore keeps nothing, so there is nothing to shut down cleanly.
            stop_pid "$_p" KILL
            log "stopped $_d (pid $_p)"
        fi
    done
    rm -f "$RUN"/*.pid "$SDIR/port"
}

case $CMD in
status)
    if [ -n "$(pid_of mon.a)" ] && [ -n "$(pid_of osd.0)" ]; then
        echo "$CCONF"
        exit 0
    fi
    exit 3
    ;;
stop)
    take_lock
    kill_daemons
    exit 0
    ;;
esac

require ceph-mon ceph-osd monmaptool ceph rados
take_lock

mon_pid=$(pid_of mon.a)
osd_pid=$(pid_of osd.0)
if [ -n "$mon_pid" ] && [ -n "$osd_pid" ] && check_already_running "$mon_pid"; then
    echo "$CCONF"
    exit 0
fi
# Half a cluster (one daemon died) is no use: start afresh.
kill_daemons
if port_busy "$PORT"; then
    die "something else already listens on 127.0.0.1:$PORT"
fi

rm -rf "$SDIR/mon" "$SDIR/osd" "$RUN" "$SDIR/log" "$SDIR/monmap"
mkdir -p "$SDIR/mon/a" "$SDIR/osd/0" "$RUN" "$SDIR/log"
: >"$LOG"
FSID=$(cat /proc/sys/kernel/random/uuid)
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
MON_ADDR="[v2:127.0.0.1:$PORT]"

common_conf() {
    cat <<EOF
[global]
fsid = $FSID
mon host = $MON_ADDR
auth cluster required = none
auth service required = none
auth client required = none
EOF
}

{
    common_conf
    cat <<EOF
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind port min = $((PORT + 1))
ms bind port max = $((PORT + 40))
run dir = $RUN
pid file = $RUN/\$name.pid
admin socket = $RUN/\$name.asok
log file = $SDIR/log/\$name.log
log to stderr = false
err to stderr = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0

[mon]
mon data = $SDIR/mon/\$id
# Without these every command waits about a second for paxos.
paxos propose interval = 0.05
paxos min wait = 0.01
# The data directory's file system may be nearly full; memstore is in RAM.
mon data avail warn = 1
mon data avail crit = 0

[osd]
osd data = $SDIR/osd/\$id
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
EOF
} >"$DCONF"

{
    common_conf
    cat <<EOF

[client]
# A full or broken cluster makes requests fail instead of hang.
rados osd op timeout = 30
rados mon op timeout = 30
client mount timeout = 30
log to stderr = false
err to stderr = true
log file = $SDIR/log/client.log
admin socket =
EOF
} >"$CCONF"

CEPH() {
    timeout 20 ceph -c "$CCONF" "$@" >>"$LOG" 2>&1
}

# setsid: own session, so a caller capturing our output is not kept waiting;
# -f: foreground, so $! is the daemon and a death is noticed at once.
monmaptool --create --fsid "$FSID" --addv a "$MON_ADDR" "$SDIR/monmap" >>"$LOG" 2>&1 ||
    fail "monmaptool failed"
ceph-mon -c "$DCONF" --mkfs -i a --monmap "$SDIR/monmap" >>"$LOG" 2>&1 ||
    fail "ceph-mon --mkfs failed"
setsid ceph-mon -c "$DCONF" -f -i a </dev/null >>"$LOG" 2>&1 9>&- &
STARTED_PID=$!
wait_until "the monitor to answer" "$STARTED_PID" CEPH mon stat
MON_PID=$STARTED_PID

CEPH osd new "$OSD_UUID" || fail "ceph osd new failed"
ceph-osd -c "$DCONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" >>"$LOG" 2>&1 ||
    fail "ceph-osd --mkfs failed"
setsid ceph-osd -c "$DCONF" -f -i 0 </dev/null >>"$LOG" 2>&1 9>&- &
STARTED_PID=$!
# fail() kills STARTED_PID only; take the monitor with it.
trap '[ -z "${STARTED_PID:-}" ] || ! alive "$MON_PID" || kill -KILL "$MON_PID" 2>/dev/null' EXIT

CEPH osd pool create registry 8 8 || fail "creating the pool failed"
CEPH osd pool application enable registry dockyard || fail "tagging the pool failed"
# I/O works once the pool's placement groups are active on the OSD.
probe() {
    timeout 5 rados -c "$CCONF" -p registry put .probe /dev/null &&
        rados -c "$CCONF" -p registry rm .probe
}
wait_until "the pool to accept writes" "$STARTED_PID" probe
wait_until "the daemons to write their pid files" "$STARTED_PID" \
    test -s "$RUN/mon.a.pid" -a -s "$RUN/osd.0.pid"
STARTED_PID=
trap - EXIT
echo "$PORT" >"$SDIR/port"
echo "$CCONF"
