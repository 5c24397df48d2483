"""GOCA pretrained on Kinetics-400 (paper §4, Table 4 upper part), RGB + TV-L1 flow.

    python -m avssl.data_prep.make_records --dataset=kinetics400 --input=kinetics400/train.csv \
        --video_dir=~/kinetics400 --fps=30 --short_side=256 --flow --output_dir=~/records/kinetics400
    python -m avssl.main --config=configs/goca_kinetics.py:backbone=s3d --workdir=runs/goca_k400

Retrieval and probes then use UCF101/HMDB51 records: `--config.evaluation.retrieval.dir=...`,
`--config.evaluation.probe.dirs=...`. `backbone` and `variant` as in `goca_ucf101.py`; `:tiny` is
CPU-test size.
"""

import ml_collections

from avssl import config_lib
from configs import common, goca_ucf101


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False, backbone='r2plus1d', variant='goca')
  config = goca_ucf101.build(records='~/records/kinetics400', backbone=arg.backbone,
                             variant=arg.variant)
  config.evaluation.run = ('method', 'kmeans')
  if arg.tiny:
    config = goca_ucf101.shrink(config)
  else:
    config.data.eval_split = 'val'  # Kinetics has no labelled test split; k-means runs on val.
  return common.accelerate(config) if arg.accel else config
