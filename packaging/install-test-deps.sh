#!/bin/sh
# Installs what the integration tests (tests/clients.rs) need on a Debian 12
# machine, as root: real registry clients (docker CLI + dockerd, skopeo,
# podman), umoci to build OCI layouts offline, the reference registry
# (docker-registry) to compare against (DYTEST_CLIENTS_REGISTRY=reference),
# and load/proxy tools (wrk, nginx), plus the backing services that
# packaging/services/*.sh start as private, loopback-only instances for tests
# and development: MariaDB, PostgreSQL, Redis, OpenLDAP (slapd) and a one-node
# Ceph cluster, plus librados-dev for the `rados` cargo feature.
#
# Idempotent: run it as often as you like. Never removes anything. Does not
# start any service (the tests start their own private dockerd, and
# packaging/services/*.sh their own private database/cache/LDAP instances).
set -eu

if [ "$(id -u)" != 0 ]; then
    echo "install-test-deps.sh: must run as root" >&2
    exit 1
fi

PACKAGES="
    ca-certificates
    tar
    gzip
    jq
    docker.io
    containerd
    runc
    skopeo
    podman
    golang-github-containers-common
    umoci
    docker-registry
    wrk
    nginx-light
    curl
    mariadb-server
    mariadb-client
    postgresql-15
    postgresql-client-15
    redis-server
    redis-tools
    slapd
    ldap-utils
    openssl
    appc-spec gnupg
    procps
    ceph-mon
    ceph-osd
    ceph-common
    librados-dev
"

# On a machine without systemd, a package's maintainer script may try to
# start its service (dockerd, docker-registry, nginx) through invoke-rc.d.
# Forbid that for the duration of the install unless a policy already exists.
POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$POLICY"
    chmod 755 "$POLICY"
    CREATED_POLICY=1
fi
cleanup() {
    if [ -n "$CREATED_POLICY" ]; then
        rm -f "$POLICY"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

missing=
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done

# slapd's postinst asks for a domain and an admin password. Preseed the
# answers so the install never prompts and never fails; the system instance it
# configures is never started (see the policy above) and is not used by the
# tests: packaging/services/openldap.sh runs its own private slapd.
if command -v debconf-set-selections >/dev/null 2>&1; then
    debconf-set-selections <<'EOF'
slapd slapd/no_configuration boolean false
slapd slapd/domain string dockyard.test
slapd shared/organization string Dockyard
slapd slapd/password1 password admin
slapd slapd/password2 password admin
slapd slapd/purge_database boolean false
slapd slapd/move_old_database boolean true
EOF
fi

if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    # shellcheck disable=SC2086
    apt-get install -y -o DPkg::Lock::Timeout=600 $PACKAGES
else
    echo "install-test-deps.sh: all packages already installed"
fi

# skopeo and podman refuse to work without a signature policy; the
# containers-common package ships one, but make sure it is there.
if [ ! -e /etc/containers/policy.json ]; then
    mkdir -p /etc/containers
    cat > /etc/containers/policy.json <<'EOF'
{
    "default": [
        {
            "type": "insecureAcceptAnything"
        }
    ]
}
EOF
fi

# Report what the tests will use.
for tool in dockerd docker skopeo podman umoci docker-registry \
        mariadbd mariadb-install-db mariadb-admin mariadb \
        /usr/lib/postgresql/15/bin/initdb /usr/lib/postgresql/15/bin/pg_ctl psql \
        redis-server redis-cli slapd slapadd ldapsearch ldapadd openssl \
        ceph-mon ceph-osd monmaptool ceph rados; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install-test-deps.sh: $tool still missing after install" >&2
        exit 1
    fi
done
echo "install-test-deps.sh: dockerd $(dockerd --version 2>/dev/null | sed 's/^Docker version //')"
echo "install-test-deps.sh: $(skopeo --version)"
echo "install-test-deps.sh: $(podman --version)"
echo "install-test-deps.sh: $(umoci --version)"
echo "install-test-deps.sh: $(mariadbd --version 2>/dev/null)"
echo "install-test-deps.sh: $(/usr/lib/postgresql/15/bin/postgres --version)"
echo "install-test-deps.sh: $(redis-server --version)"
echo "install-test-deps.sh: slapd $(dpkg-query -W -f='${Version}' slapd)"
echo "install-test-deps.sh: $(ceph --version)"
