#!/bin/sh
# Sets up everything the test suite needs on a fresh Debian 12 machine with
# Rust (as root), then runs the whole suite. CI runs exactly this.
#
# The tests start the services they need themselves (MariaDB, PostgreSQL,
# Redis, OpenLDAP, Ceph under target/test-services, each test binary its own
# dockerd); this script stops the shared services afterwards.
set -eu
cd "$(dirname "$0")/.."
packaging/install-test-deps.sh
services=target/test-services
stop_services() {
    for s in mariadb postgres redis openldap ceph; do
        packaging/services/$s.sh stop "$services" >/dev/null 2>&1 || true
    done
}
trap stop_services EXIT
cargo test --locked
