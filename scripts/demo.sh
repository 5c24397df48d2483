#!/usr/bin/env bash
# The main job on the built-in demo data: installs what it needs, generates avsynth (10 classes that
# need both modalities, as real mp4 files), converts it to records, trains SeLaVi and its frames-only
# baseline SeLa, writes SeLaVi's labels, evaluates it (k-means baselines, retrieval, linear probe,
# degraded video: runs/demo/selavi/eval/tables.md), and prints both runs' clustering metrics in one table.
# Where make_synthetic wrote a factors table (runs/demo/avsynth/factors.csv), the labels' browser and
# the evaluation also score every clustering against those per-video factors (docs/factors.md).
# Everything goes under runs/demo; running it again reuses what is done. Extra arguments go to the
# SeLaVi run (e.g. --config.total_epochs=5).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
set -x
python -m avssl.data_prep.make_synthetic --output_dir=runs/demo/avsynth --num_classes=10 --workers=2
python -m avssl.data_prep.make_records --dataset=folder --input=runs/demo/avsynth --fps=10 \
  --short_side=64 --sample_rate=16000 --min_duration=1.0 --workers=2 --output_dir=runs/demo/records
python -m avssl.main --config=configs/selavi_demo.py --workdir=runs/demo/selavi "$@"
factors=()
if [ -f runs/demo/avsynth/factors.csv ]; then
  factors=(--config.evaluation.factors.file=runs/demo/avsynth/factors.csv)
fi
python -m avssl.main --config=configs/selavi_demo.py --workdir=runs/demo/selavi --mode=label \
  "${factors[@]}" "$@"
python -m avssl.main --config=configs/selavi_demo.py --workdir=runs/demo/selavi --mode=eval \
  "${factors[@]}" "$@"
python -m avssl.main --config=configs/selavi_demo.py:sela --workdir=runs/demo/sela
set +x
echo "Labels: runs/demo/selavi/labels.csv; evaluation tables: runs/demo/selavi/eval/tables.md"
python -m avssl.modes.compare SeLaVi=runs/demo/selavi SeLa=runs/demo/sela | tee runs/demo/table.md
