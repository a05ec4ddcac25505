#!/usr/bin/env bash
# Installs the S3-protocol test server used by `crates/storage`'s tests:
# moto's standalone server (`moto_server`) from PyPI, pinned. Idempotent: does
# nothing when the pinned version is already installed. `scripts/setup.sh`
# calls it; the tests find `moto_server` on PATH (or in $MOTO_SERVER).
set -euo pipefail

MOTO_VERSION="5.2.5"

python=${PYTHON:-python3}
if "$python" -m pip show moto 2>/dev/null | grep -qx "Version: ${MOTO_VERSION}" \
    && "$python" -c 'import flask, flask_cors' 2>/dev/null \
    && command -v moto_server >/dev/null; then
    exit 0
fi
"$python" -m pip install --quiet --disable-pip-version-check "moto[server]==${MOTO_VERSION}"
command -v moto_server >/dev/null || {
    echo "moto_server is not on PATH after installing moto[server]==${MOTO_VERSION}" >&2
    exit 1
}
