#!/usr/bin/env bash
# Here, where pip has network: put into a folder everything benchmarks/gpu.py needs to install fito on a
# CUDA machine that has its own torch and no network. That is fito's wheel and the wheels of every
# dependency except torch (which the machine has and fito never replaces), for the machine's Python and
# platform; pip there takes what is missing from the folder alone (--no-index) and keeps what it has.
#
#   benchmarks/gpu_prepare.sh [DIR] [PYTHON_VERSION]      (defaults: benchmarks/gpu_wheels, 3.12)
#
# The lent CUDA machines here run Python 3.12 with torch 2.11.0+cu130 (numpy, matplotlib, rich, xxhash
# already there). The folder is about 40 MB, ignored by git (.gitignore).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-benchmarks/gpu_wheels}"
PYV="${2:-3.12}"
mkdir -p "$DIR"
rm -f "$DIR"/fito_ckpt-*.whl
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$DIR" . 2> >(grep -v "^WARNING: Location" >&2)
# fito's own dependencies (pyproject.toml) but torch, resolved for the target with every transitive need.
deps=$(python3 - <<'PY'
import re
text = open("pyproject.toml").read()
block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
print(" ".join(d for d in re.findall(r'"([^"]+)"', block) if not re.match(r"torch\b", d)))
PY
)
# shellcheck disable=SC2086
python3 -m pip download -q --only-binary=:all: --python-version "$PYV" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$DIR" $deps \
  2> >(grep -v "^WARNING: Location" >&2)  # this machine's pip.conf names local indexes some names lack
ls "$DIR" | sed 's/^/  /'
echo "gpu_prepare.sh: $(ls "$DIR" | wc -l) wheels, $(du -sh "$DIR" | cut -f1) in $DIR (for Python $PYV, x86_64)"
