#!/usr/bin/env bash
# The pure-Python wheels benchmarks/accelerator.sh needs on a machine that has jax, flax, optax and
# orbax but cannot reach PyPI (a lent GPU image): fetched here into .whl/ (git-ignored), at the
# versions requirements.txt pins, for Python 3.12 on x86-64 Linux. Their own needs (absl-py, PyYAML)
# are in such images already.
#
#   bash benchmarks/fetch_wheels.sh [PYTHON_VERSION]      # default 3.12
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version=${1:-3.12}
pin() { grep -E "^$1==" requirements.txt | sed 's/ .*//'; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "$(pin ml-collections)"
ls -l .whl
