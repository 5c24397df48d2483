"""SeLaVi on Kinetics-400 (paper §4, Table 5 c): K = 400, trained from scratch like VGG-Sound.

    python -m avssl.data_prep.make_records --dataset=kinetics400 --input=kinetics400/train.csv \
        --video_dir=~/kinetics400 --sample_rate=24000 --output_dir=~/records/kinetics400
    python -m avssl.main --config=configs/selavi_kinetics.py --workdir=runs/selavi_kinetics
"""

import ml_collections

from avssl import config_lib
from configs import common, selavi_vggsound


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False)
  config = selavi_vggsound.get_config()
  config.data.dir = '~/records/kinetics400'
  config.selavi.num_clusters = 400  # §4 "Datasets": Kinetics-400's 400 classes.
  config = selavi_vggsound.shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config
