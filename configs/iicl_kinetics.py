"""IICL pretrained on Kinetics-400 (paper §IV, Tables II-III): C = 400, R(2+1)D-18 and audio ResNet-18
with one co-attention block; 300 epochs of L_ins, then 300 of L_ins + 0.5·L_clu.

    python -m data_prep.make_records --dataset=kinetics400 --input=kinetics400/train.csv \\
        --video_dir=~/kinetics400 --fps=30 --short_side=128 --sample_rate=16000 \\
        --output_dir=~/records/kinetics400
    python -m avssl.main --config=configs/iicl_kinetics.py --workdir=runs/iicl_kinetics
    python -m avssl.main --config=configs/iicl_kinetics.py --workdir=runs/iicl_kinetics --mode=eval

Table II's ablations: `--config.iicl.losses="('ins',)"` (k-means in the instance space) and
`--config.iicl.losses="('clu',)" --config.iicl.init_epochs=0`. `eval/method.md` holds Table II and
Table III (cross-modal mAP). `:tiny` is the same run at CPU-test size.
"""

import ml_collections

from avssl import config_lib, presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False)
  # §IV-A: the ~7K Kinetics videos without audio are left out (make_records skips them by default).
  config = presets.iicl(records='~/records/kinetics400', num_clusters=400)
  return presets.shrink_iicl(config) if arg.tiny else config
