#!/bin/sh
# Sets up everything the test suite needs on a fresh Debian 12 machine with
# Rust (as root), then runs the whole suite. CI runs exactly this.
set -eu
cd "$(dirname "$0")/.."
packaging/install-test-deps.sh
cargo test --locked
