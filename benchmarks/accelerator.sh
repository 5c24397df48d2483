#!/usr/bin/env bash
# The accelerator benchmark as one prepared command (benchmarks/accelerator.py says what it measures):
# the jax parts, then torchvision's R(2+1)D-18 in its own process, then one table.
#
#   bash benchmarks/accelerator.sh [--tiny] [--out=DIR] [--budget_s=S] [--only=PARTS]
#
# Runs with the machine's own python3 (or $PYTHON) and packages: jax, flax, optax, orbax and numpy are
# needed; TensorFlow, PyAV and clu are not. What else the model code imports (ml-collections) is
# installed from the wheels in .whl/ when that folder exists (`bash benchmarks/fetch_wheels.sh` puts
# them there on a machine that reaches PyPI; the folder is git-ignored and travels with the tree).
# Results go to DIR (default $OUT, else a new temporary folder): accelerator.json, the logs, table.md.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}
out=${OUT:-}
tiny=()
jax_args=()
only=''
for arg in "$@"; do
  case $arg in
    --tiny) tiny=(--tiny) ;;
    --out=*) out=${arg#--out=} ;;
    --budget_s=*) jax_args+=("$arg") ;;
    --only=*) jax_args+=("$arg"); only=${arg#--only=} ;;
    *) echo "accelerator.sh: unknown argument $arg (use --tiny, --out=DIR, --budget_s=S," \
         "--only=PARTS)" >&2; exit 2 ;;
  esac
done
out=${out:-$(mktemp -d)}
mkdir -p "$out"
results=$out/accelerator.json
rm -f "$results"

if compgen -G '.whl/*.whl' >/dev/null; then
  site=$(mktemp -d)
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    .whl/*.whl || exit 1
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$python" -c 'import ml_collections' 2>/dev/null; then
  echo 'accelerator.sh: ml_collections is not installed: run `bash benchmarks/fetch_wheels.sh` on a' \
    'machine that reaches PyPI and bring .whl/ along' >&2
  exit 1
fi

"$python" benchmarks/accelerator.py jax --results="$results" "${tiny[@]}" "${jax_args[@]}" 2>&1 | tee "$out/jax.log"
if [ -z "$only" ] || [[ ,$only, == *,torch,* ]]; then  # --only=PARTS: the torch part when named.
  "$python" benchmarks/accelerator.py torch --results="$results" "${tiny[@]}" 2>&1 \
    | tee "$out/torch.log"
fi
if "$python" -c 'import tensorflow, av' 2>/dev/null && [ ${#tiny[@]} -eq 0 ]; then
  "$python" benchmarks/input_pipeline.py --videos=2 --clips=40 2>&1 | tee "$out/input_pipeline.log"
else
  echo 'input pipeline: not measured here (it needs TensorFlow and PyAV, or --tiny was given):' \
    'python benchmarks/input_pipeline.py where they are installed'
fi
"$python" benchmarks/accelerator.py table --results="$results" | tee "$out/table.md"
