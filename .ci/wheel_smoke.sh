#!/usr/bin/env bash
# Install vmr as a user would (a wheel, into a fresh virtual environment outside the checkout)
# and run it from outside the checkout: `vmr --help`, `vmr demo --quick` and the Python API
# example of docs/API.md. Catches what an editable install hides (a module left out of the
# wheel, a file read from the repository at run time).
#
#   .ci/wheel_smoke.sh            # builds with .venv/bin/python (make install), else python3;
#                                 # PYTHON=... to choose another (it needs setuptools and wheel)
#   KEEP=1 .ci/wheel_smoke.sh     # keep the temporary directory for a look afterwards
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
TMP="$(mktemp -d)"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$TMP"' EXIT
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=

echo "== building the wheel (in $TMP/src, so the checkout stays clean)"
mkdir -p "$TMP/src"
cp -r "$REPO/vmr" "$REPO/setup.cfg" "$REPO/pyproject.toml" "$REPO/README.md" "$TMP/src/"
find "$TMP/src" -name __pycache__ -prune -exec rm -rf {} +
"$PYTHON" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$TMP/dist" "$TMP/src"
WHEEL="$(ls "$TMP"/dist/vmr-*.whl)"

echo "== installing $(basename "$WHEEL") into a fresh venv"
"$PYTHON" -m venv "$TMP/venv"
"$TMP/venv/bin/pip" install -q --disable-pip-version-check -c "$REPO/constraints.txt" "$WHEEL"

cd "$TMP"                                  # nothing of the checkout on the path from here on
"$TMP/venv/bin/python" - <<'PY'
import vmr, pathlib
assert "site-packages" in vmr.__file__, vmr.__file__
print("vmr", vmr.__version__, "from", pathlib.Path(vmr.__file__).parent)
PY
echo "== vmr --help"
"$TMP/venv/bin/vmr" --help > /dev/null
echo "== vmr demo --quick"
"$TMP/venv/bin/vmr" demo --quick --out "$TMP/demo_out"

echo "== the Python API example of docs/API.md"
mkdir -p "$TMP/api" && cd "$TMP/api"
"$TMP/venv/bin/python" "$REPO/.ci/api_example.py" "$REPO/docs/API.md"
echo "wheel smoke: ok"
