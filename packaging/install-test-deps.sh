#!/bin/sh
# Installs what the integration tests (tests/clients.rs) need on a Debian 12
# machine, as root: real registry clients (docker CLI + dockerd, skopeo,
# podman), umoci to build OCI layouts offline, the reference registry
# (docker-registry) to compare against (DOCKYARD_CLIENTS_REGISTRY=reference),
# and load/proxy tools (wrk, nginx).
#
# Idempotent: run it as often as you like. Never removes anything. Does not
# start any service (the tests start their own private dockerd).
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
for tool in dockerd docker skopeo podman umoci docker-registry; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install-test-deps.sh: $tool still missing after install" >&2
        exit 1
    fi
done
echo "install-test-deps.sh: dockerd $(dockerd --version 2>/dev/null | sed 's/^Docker version //')"
echo "install-test-deps.sh: $(skopeo --version)"
echo "install-test-deps.sh: $(podman --version)"
echo "install-test-deps.sh: $(umoci --version)"
