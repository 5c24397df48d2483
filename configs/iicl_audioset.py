"""IICL pretrained on AudioSet (paper §IV-D1, Table I: the number of clusters C, 400 best).

AudioSet has no parser in `avssl.data_prep`: put the downloaded clips in `train/` (and `test/`) folders
and convert them as a folder dataset.

    python -m avssl.data_prep.make_records --dataset=folder --input=~/audioset --fps=30 --short_side=128 \\
        --sample_rate=16000 --output_dir=~/records/audioset
    python -m avssl.main --config=configs/iicl_audioset.py --workdir=runs/iicl_audioset

Table I's sweep: `--config.iicl.num_clusters=100` ... 800. `:tiny` is the same run at CPU-test size.
"""

import ml_collections

from avssl import config_lib
from configs import common, iicl_kinetics


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False)
  config = iicl_kinetics.get_config()
  config.data.dir = '~/records/audioset'
  config.iicl.num_clusters = 400  # §IV-D1, Table I: C = 400 is best.
  config = iicl_kinetics.shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config
