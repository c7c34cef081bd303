#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, integration and promtool checks, for the whole
# workspace (the exporter and crates/gitlab-sim) in one shared build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The daemon without the simulator (`demo` feature off) still builds: a check only, no codegen.
cargo check --no-default-features --locked
# The API documentation builds without a warning (broken or private intra-doc links).
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --workspace --locked
cargo test --workspace --all-targets --locked
