#!/bin/bash
# A private OpenLDAP server (slapd) for tests and development, bound to
# 127.0.0.1 only, seeded with openldap-seed.ldif (users and nested groups).
#
#   openldap.sh start DIR PORT [LDAPS_PORT]   prints ldap://127.0.0.1:PORT/
#   openldap.sh stop DIR
#   openldap.sh status DIR                    prints the URL if running (exit 0), else exit 3
#
# Suffix dc=dockyard,dc=test; rootdn cn=admin,dc=dockyard,dc=test, password
# admin. StartTLS works on PORT, and ldaps:// on LDAPS_PORT when given, with a
# certificate for localhost and 127.0.0.1 signed by a private CA:
# DIR/openldap/tls/ca.crt. See README.md beside this file.
#
# DYTEST_LDAP_MEMBEROF picks how memberOf is provided (set at the first
# start of a DIR, like the seed):
#   overlay (default)  slapo-memberof: memberOf is stored on each entry and
#                      lists the groups whose member names it directly (alice:
#                      devs; the group devs: platform). Nested groups are for
#                      the client to resolve.
#   nested             slapo-dynlist: memberOf is computed at search time and
#                      includes nested groups (alice: devs and platform);
#                      filters on memberOf see it too. A group's member, when
#                      asked for by name, also lists the nested members
#                      (platform: devs, carol and alice); filters on member
#                      only see the stored values.
#   none               no memberOf at all.
# Either way memberOf is operational: ask for it by name (or "+").
# DYTEST_LDAP_DEBUG: slapd's -d level (default 32768: errors only; "stats"
# logs every operation) into DIR/openldap/openldap.log.
SVC_EXTRA_USAGE=" [LDAPS_PORT]"
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd -P)
svc_setup openldap "$@"
LDAPS_PORT=${4:-}

SUFFIX="dc=dockyard,dc=test"
ROOTDN="cn=admin,$SUFFIX"
ROOTPW="admin"
DATA=$SDIR/data
RUN=$SDIR/run
TLS=$SDIR/tls
CONF=$SDIR/slapd.conf
PIDFILE=$RUN/slapd.pid
SEED=${DYTEST_LDAP_SEED:-$HERE/openldap-seed.ldif}

url() {
    echo "ldap://127.0.0.1:$1/"
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

if [ -n "$LDAPS_PORT" ]; then
    check_port "$LDAPS_PORT"
    [ "$LDAPS_PORT" != "$PORT" ] || die "LDAPS_PORT must differ from PORT"
fi
require slapd ldapadd ldapsearch openssl
[ -r "$SEED" ] || die "seed LDIF $SEED not readable"
take_lock

pid=$(current_pid)
if [ -n "$pid" ] && check_already_running "$pid"; then
    if [ "$(cat "$SDIR/ldaps_port" 2>/dev/null)" != "$LDAPS_PORT" ]; then
        die "already running from $SDIR with LDAPS port '$(cat "$SDIR/ldaps_port" 2>/dev/null)', not '$LDAPS_PORT': stop it first"
    fi
    url "$PORT"
    exit 0
fi
for p in $PORT $LDAPS_PORT; do
    if port_busy "$p"; then
        die "something else already listens on 127.0.0.1:$p"
    fi
done

mkdir -p "$DATA" "$RUN" "$TLS"

# A private CA and a server certificate for localhost / 127.0.0.1, made once.
# ECDSA P-256: quick to generate, accepted by GnuTLS (slapd), OpenSSL and
# rustls.
if [ ! -s "$TLS/server.crt" ] || [ ! -s "$TLS/ca.crt" ]; then
    (
        set -e
        cd "$TLS"
        rm -f ./*.crt ./*.key ./*.csr ./*.srl
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout ca.key -out ca.crt -days 3650 -subj "/O=Dockyard/CN=Dockyard test CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout server.key -out server.csr -subj "/O=Dockyard/CN=localhost"
        printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" \
            "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature" \
            "extendedKeyUsage=serverAuth" >server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key \
            -set_serial "0x$(openssl rand -hex 8)" -days 3650 \
            -extfile server.ext -out server.crt
        rm -f server.csr server.ext
        chmod 600 ca.key server.key
    ) >>"$LOG" 2>&1 9>&- || fail "could not make the TLS certificates"
fi

# How memberOf works is fixed at the first start (with the seed).
if [ -s "$SDIR/memberof-mode" ]; then
    MODE=$(cat "$SDIR/memberof-mode")
else
    MODE=${DYTEST_LDAP_MEMBEROF:-overlay}
fi
case $MODE in
    overlay)
        MODULES="moduleload memberof"
        OVERLAY="overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint TRUE"
        ;;
    nested)
        # memberof is loaded only for its definition of memberOf.
        MODULES="moduleload memberof
moduleload dynlist"
        OVERLAY="overlay dynlist
dynlist-attrset groupOfURLs memberURL member+memberOf@groupOfNames*"
        ;;
    none)
        MODULES=
        OVERLAY=
        ;;
    *) die "DYTEST_LDAP_MEMBEROF must be overlay, nested or none, not '$MODE'" ;;
esac
MEMBEROF_INDEX=
[ "$MODE" != overlay ] || MEMBEROF_INDEX="index memberOf eq"

# The configuration is rewritten at every start (it does not depend on the
# ports). slapd runs as the caller; everything it touches is under SDIR.
cat >"$CONF" <<EOF
# Generated by packaging/services/openldap.sh: edits are lost at next start.
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/dyngroup.schema

modulepath /usr/lib/ldap
moduleload back_mdb
$MODULES

pidfile $PIDFILE
argsfile $RUN/slapd.args

TLSCACertificateFile $TLS/ca.crt
TLSCertificateFile $TLS/server.crt
TLSCertificateKeyFile $TLS/server.key

sizelimit 1000

database mdb
suffix "$SUFFIX"
rootdn "$ROOTDN"
rootpw $ROOTPW
directory $DATA
maxsize 104857600
dbnosync
index objectClass eq
index uid,cn,mail eq,sub
index member eq
$MEMBEROF_INDEX

# Passwords: a user may change their own, anyone may bind with them, nobody
# reads them. Everything else is readable by everyone (anonymous included).
access to attrs=userPassword
    by self write
    by anonymous auth
    by * none
access to *
    by * read

$OVERLAY
EOF

URLS="ldap://127.0.0.1:$PORT/"
[ -z "$LDAPS_PORT" ] || URLS="$URLS ldaps://127.0.0.1:$LDAPS_PORT/"
rm -f "$PIDFILE"
# -d keeps slapd in the foreground (in its own session) with its log on
# stderr, i.e. in LOG; without it slapd forks and logs only to syslog.
setsid slapd -d "${DYTEST_LDAP_DEBUG:-32768}" -f "$CONF" -h "$URLS" \
    </dev/null >>"$LOG" 2>&1 9>&- &
STARTED_PID=$!

ldap_ready() {
    ldapsearch -x -LLL -o nettimeout=2 -H "ldap://127.0.0.1:$PORT/" -s base -b "" \
        namingContexts
}
wait_until "127.0.0.1:$PORT to answer" "$STARTED_PID" ldap_ready
if [ -n "$LDAPS_PORT" ]; then
    ldaps_ready() {
        LDAPTLS_CACERT=$TLS/ca.crt ldapsearch -x -LLL -o nettimeout=2 \
            -H "ldaps://127.0.0.1:$LDAPS_PORT/" -s base -b "" namingContexts
    }
    wait_until "ldaps://127.0.0.1:$LDAPS_PORT to answer" "$STARTED_PID" ldaps_ready
fi
echo "$PORT" >"$SDIR/port"
printf '%s\n' "$LDAPS_PORT" >"$SDIR/ldaps_port"

if [ ! -e "$SDIR/.seeded" ]; then
    # A seed that died half-way: start again from an empty database.
    if ldapsearch -x -LLL -H "ldap://127.0.0.1:$PORT/" -D "$ROOTDN" -w "$ROOTPW" \
        -s base -b "$SUFFIX" dn >/dev/null 2>&1; then
        fail "$DATA holds data but was never completely seeded: remove $SDIR and start again"
    fi
    if ! ldapadd -x -H "ldap://127.0.0.1:$PORT/" -D "$ROOTDN" -w "$ROOTPW" \
        -f "$SEED" >>"$LOG" 2>&1; then
        # Leave an empty database for the next attempt.
        stop_pid "$STARTED_PID"
        rm -rf "${DATA:?}"/*
        fail "could not load $SEED"
    fi
    echo "$MODE" >"$SDIR/memberof-mode"
    touch "$SDIR/.seeded"
fi

# The real check: a seeded user can bind.
if ! ldapsearch -x -LLL -H "ldap://127.0.0.1:$PORT/" \
    -D "uid=alice,ou=people,$SUFFIX" -w alicepw -s base \
    -b "uid=alice,ou=people,$SUFFIX" dn >/dev/null 2>>"$LOG"; then
    fail "cannot bind as uid=alice,ou=people,$SUFFIX"
fi
url "$PORT"
