#!/usr/bin/env bash
# The fast lane (`pytest -q -m "not slow"`) against another torch, in a virtual environment of its own.
#
#   scripts/other_torch.sh [TORCH_VERSION]        (default 2.14.1)
#
# pyproject.toml accepts any torch >= 2.11; the suite runs on 2.13.0 (constraints.txt). This checks a second
# version: it makes (or reuses) a venv at $FITO_OTHER_TORCH_VENV (default: /tmp/fito-torch-VERSION), installs
# torch==VERSION there, then fito with the test extra pinned beside that torch, and runs the fast lane with
# this checkout's src/ (editable). On this project's machines 2.14.1 for Python 3.11 lies on disk (pip takes
# it from there; a CUDA build, about 5.5 GB in the venv, run on the CPU); other versions download GBs.
# It prints one summary line at the end and exits with pytest's code. docs/torch_versions.md has the results.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${1:-2.14.1}"
VENV="${FITO_OTHER_TORCH_VENV:-${TMPDIR:-/tmp}/fito-torch-$VERSION}"
PY="$VENV/bin/python"
start=$(date +%s)

if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi
pins="$VENV/fito-constraints.txt"
echo "torch==$VERSION" > "$pins"
"$PY" -m pip install -q "torch==$VERSION" 2> >(grep -v "^WARNING: Location" >&2)  # local pip.conf noise
"$PY" -m pip install -q -e '.[test]' -c "$pins" 2> >(grep -v "^WARNING: Location" >&2)
installed=$(date +%s)

torch_seen=$("$PY" -c 'import torch; print(torch.__version__)')
case "$torch_seen" in
  "$VERSION"|"$VERSION"+*) ;;
  *) echo "other_torch.sh: asked for torch $VERSION, the venv has $torch_seen" >&2; exit 2 ;;
esac
fito_seen=$(cd /tmp && env -u PYTHONPATH "$PY" -c 'import fito; print(fito.__file__)')
case "$fito_seen" in
  "$PWD/src/"*) ;;
  *) echo "other_torch.sh: the venv imports fito from $fito_seen, not $PWD/src" >&2; exit 2 ;;
esac

# The venv first on PATH (rank launchers and `fito` sub-processes use it); no PYTHONPATH from outside.
log="$VENV/fast_lane.log"
set +e
env -u PYTHONPATH PATH="$VENV/bin:$PATH" VIRTUAL_ENV="$VENV" \
  "$PY" -m pytest -q -m "not slow" -p no:cacheprovider 2>&1 | tee "$log"
code=${PIPESTATUS[0]}
set -e
end=$(date +%s)
summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed)|(passed|failed|error).* in [0-9.]+s' "$log" | tail -1)
echo "other_torch.sh: torch $torch_seen, python $("$PY" -c 'import sys; print(sys.version.split()[0])')," \
     "\`fito --version\`: $(cd /tmp && env -u PYTHONPATH "$PY" -m fito --version); install $((installed - start)) s," \
     "fast lane $((end - installed)) s: ${summary:-no pytest summary} (exit $code; log $log)"
exit "$code"
