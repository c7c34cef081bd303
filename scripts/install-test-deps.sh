#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, idempotently:
# Debian's `prometheus` package (promtool, and the server for end-to-end tests).
set -euo pipefail
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
echo "installing Debian's prometheus package (promtool) ..." >&2
$SUDO apt-get update -qq
# The package's service cannot start without systemd; that is fine, only the binaries are used.
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v promtool >/dev/null
