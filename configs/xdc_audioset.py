"""XDC pretrained on AudioSet (paper §4, Tables 2-3): k = 256, R(2+1)D-18 and audio ResNet-18.

AudioSet has no parser in `avssl.data_prep`: put the downloaded clips in `train/` (and `test/`) folders
and convert them as a folder dataset (labels, if any, from the folder names).

    python -m avssl.data_prep.make_records --dataset=folder --input=~/audioset --fps=30 --short_side=256 \
        --sample_rate=16000 --output_dir=~/records/audioset
    python -m avssl.main --config=configs/xdc_audioset.py --workdir=runs/xdc_audioset

AudioSet-240K (Table 2's middle rows) is the same config on a 240K-video subset; its best k is 64
(UCF101, ESC50) or 128 (HMDB51). `:tiny` is the same run at CPU-test size.
"""

import ml_collections

from avssl import config_lib
from configs import common, xdc_kinetics


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False)
  config = xdc_kinetics.get_config()
  config.data.dir = '~/records/audioset'
  # Table 2: after the full AudioSet (2M videos), k = 256 is best for UCF101 (84.9) and HMDB51 (48.8).
  config.xdc.num_clusters = 256
  config = xdc_kinetics.shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config
