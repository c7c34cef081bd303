#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, integration and promtool checks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo fmt --all --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
