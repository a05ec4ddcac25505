#!/usr/bin/env bash
# Installs the S3-protocol test server used by `crates/storage`'s tests:
# moto's standalone server from PyPI, pinned. Idempotent: does nothing when
# the pinned version is already installed. `scripts/setup.sh` calls it. The
# tests run it as `python3 -m moto.server` (override with $MOTO_SERVER).
set -euo pipefail

MOTO_VERSION="5.2.5"

python=${PYTHON:-python3}
if [ "$("$python" -c 'import moto; print(moto.__version__)' 2>/dev/null)" = "$MOTO_VERSION" ] \
    && "$python" -c 'import moto.server, flask, flask_cors' 2>/dev/null; then
    exit 0
fi
"$python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "moto[server]==${MOTO_VERSION}"
"$python" -c 'import moto.server' || {
    echo "moto.server cannot be imported after installing moto[server]==${MOTO_VERSION}" >&2
    exit 1
}
