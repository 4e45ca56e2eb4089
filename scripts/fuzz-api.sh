#!/usr/bin/env bash
# The API contract checks against a live stack (run by scripts/test.sh; docs/api.md, "The contract"):
#   1. a Python client generated from /v1/openapi.json by openapi-python-client creates a box, runs an execution
#      and lists boxes with a limit (tests/contract/generated_client.py);
#   2. schemathesis fuzzes every operation, positive and negative data, stateful phase included, with an org admin
#      key and then with the platform key, and everything it made is deleted (tests/contract/fuzz.py).
# Any finding fails. The tools are pinned in tests/contract/requirements.txt and installed into a virtualenv
# ($BOXYARD_PY, default /var/tmp/boxyard-py).
#
# Usage: scripts/fuzz-api.sh [--seed N] [--budget SECONDS] [--url URL --key PLATFORM_KEY]
#   Without --url it brings up a stack of its own (boxyard dev up in a temporary directory, with its own profile
#   file) and takes it down afterwards; build first (cargo build --workspace, scripts/build-guest.sh,
#   scripts/build-rootfs.sh). --budget is per schemathesis run (default 120 s); --seed fixes the data (default
#   20261201).
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

step() { echo "==> $*" >&2; }

seed=20261201 budget=120 url="" key=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seed) seed="$2"; shift 2 ;;
    --budget) budget="$2"; shift 2 ;;
    --url) url="$2"; shift 2 ;;
    --key) key="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fuzz-api.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

venv="${BOXYARD_PY:-/var/tmp/boxyard-py}"
want="$(sha256sum tests/contract/requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$venv/.requirements-sha256" 2>/dev/null)" != "$want" ]; then
  step "contract tools: a virtualenv in $venv (schemathesis, openapi-python-client, pinned)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/contract/requirements.txt
  echo "$want" >"$venv/.requirements-sha256"
fi

work="$(mktemp -d /var/tmp/boxyard-contract.XXXXXX)"
chmod 755 "$work" # the stack's PostgreSQL runs as the postgres user
bin="${CARGO_TARGET_DIR:-$PWD/target}/debug"
cleanup() {
  if [ -z "$url_given" ]; then
    XDG_CONFIG_HOME="$work/config" "$bin/boxyard" dev down --dir "$work/stack" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
url_given="$url"
trap cleanup EXIT
if [ -z "$url" ]; then
  step "a local stack of its own (boxyard dev up --dir $work/stack)"
  XDG_CONFIG_HOME="$work/config" "$bin/boxyard" dev up --dir "$work/stack" >&2
  profile="$work/config/boxyard/profiles.json"
  url="$("$venv/bin/python" -c 'import json,sys; p=json.load(open(sys.argv[1])); print(p["profiles"]["dev"]["url"])' "$profile")"
  key="$("$venv/bin/python" -c 'import json,sys; p=json.load(open(sys.argv[1])); print(p["profiles"]["dev"]["key"])' "$profile")"
fi
[ -n "$key" ] || { echo "fuzz-api.sh: --url needs --key (a platform admin key)" >&2; exit 2; }

status=0
step "a client generated from /v1/openapi.json (openapi-python-client)"
"$venv/bin/python" tests/contract/generated_client.py --url "$url" --key "$key" --work "$work/generated" || status=1
step "schemathesis against $url"
"$venv/bin/python" tests/contract/fuzz.py --url "$url" --key "$key" --seed "$seed" --budget "$budget" \
  --report-dir "${BOXYARD_FUZZ_REPORTS:-$work/reports}" || status=1
exit $status
