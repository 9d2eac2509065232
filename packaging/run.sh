#!/bin/sh
# Sets up and runs Dockyard on its embedded default (SQLite and blobs under
# ./data, conf/runtime.toml) on a fresh Debian 12 machine with Rust: installs
# librados-dev (the Ceph blob store is built in by default) if it is missing,
# then builds and serves. Extra arguments go to `dockyard web` (default:
# --address 0.0.0.0 --port 5000).
set -eu
cd "$(dirname "$0")/.."
if ! dpkg-query -W -f='${Status}' librados-dev 2>/dev/null | grep -q 'install ok installed'; then
    SUDO=
    if [ "$(id -u)" != 0 ]; then
        SUDO=sudo
    fi
    $SUDO apt-get update
    $SUDO apt-get install -y -o DPkg::Lock::Timeout=600 librados-dev
fi
if [ $# -eq 0 ]; then
    set -- --address 0.0.0.0 --port 5000
fi
exec cargo run --release -- web "$@"
