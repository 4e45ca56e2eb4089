#!/usr/bin/env bash
# The Python SDK's checks (run by scripts/test.sh; sdk/python/README.md): in a virtualenv with the pinned tools of
# sdk/python/requirements-dev.txt, on the oldest Python the SDK supports when this machine has it (3.9, else
# python3):
#   1. pip install ./sdk/python into a fresh virtualenv of its own (what a user does);
#   2. mypy --strict on the package;
#   3. python -m build: an sdist and a wheel;
#   4. pytest sdk/python/tests against a stack of its own (boxyard dev up in a temporary directory: real QEMU
#      boxes), the examples included, and the README's example run with the fresh virtualenv of step 1.
# Build first: cargo build --workspace, scripts/build-guest.sh, scripts/build-rootfs.sh (scripts/test.sh does).
# Usage: scripts/test-python-sdk.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

step() { echo "==> $*" >&2; }

python="${BOXYARD_PYTHON:-}"
if [ -z "$python" ]; then
  for p in /root/.pyenv/versions/3.9.*/bin/python3.9 python3.9 python3; do
    if "$p" -c 'import sys; assert sys.version_info >= (3, 9)' 2>/dev/null; then python="$p"; break; fi
  done
fi
[ -n "$python" ] || { echo "test-python-sdk.sh: no Python 3.9 or newer" >&2; exit 1; }
version="$("$python" -c 'import platform; print(platform.python_version())')"

venv="${BOXYARD_PYSDK_VENV:-/var/tmp/boxyard-pysdk-$version}"
want="$(sha256sum sdk/python/requirements-dev.txt | cut -d' ' -f1)"
if [ "$(cat "$venv/.requirements-sha256" 2>/dev/null)" != "$want" ]; then
  step "Python SDK tools: a virtualenv in $venv (Python $version, sdk/python/requirements-dev.txt)"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r sdk/python/requirements-dev.txt
  echo "$want" >"$venv/.requirements-sha256"
fi

work="$(mktemp -d /var/tmp/boxyard-pysdk.XXXXXX)"
trap 'rm -rf "$work"' EXIT

step "pip install ./sdk/python into a fresh virtualenv (Python $version)"
"$python" -m venv "$work/user"
"$work/user/bin/pip" install --quiet --disable-pip-version-check ./sdk/python
"$work/user/bin/python" -c 'import boxyard; print("installed boxyard", boxyard.__version__)'

# The tools' virtualenv tests the checkout itself (installed, not editable, so the package's files are what ships).
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps ./sdk/python

step "mypy --strict (sdk/python/src/boxyard)"
(cd sdk/python && "$venv/bin/python" -m mypy --strict src/boxyard)

step "python -m build: sdist and wheel"
"$venv/bin/python" -m build --outdir "$work/dist" sdk/python >/dev/null
ls "$work/dist"

step "pytest sdk/python/tests (a stack of its own)"
export BOXYARD_BIN_DIR="${BOXYARD_BIN_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/debug}"
unset BOXYARD_URL BOXYARD_KEY
# The README's example runs with the fresh virtualenv of step 1, as a user would.
export BOXYARD_USER_PYTHON="$work/user/bin/python"
(cd sdk/python && "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@")
