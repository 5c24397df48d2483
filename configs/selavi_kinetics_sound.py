"""SeLaVi on Kinetics-Sound (paper §4, Table 5 d): K = 32, "unsupervised finetuning" of the VGG-Sound
model — the encoders start from its checkpoint (`init_from`), the heads (K differs) start fresh.

    python -m avssl.data_prep.make_records --dataset=kinetics_sound --input=kinetics400/train.csv \
        --video_dir=~/kinetics400 --sample_rate=24000 --output_dir=~/records/kinetics_sound
    python -m avssl.main --config=configs/selavi_kinetics_sound.py --workdir=runs/selavi_ks \
        --config.init_from=runs/selavi_vggsound

The length of the finetuning is not in the paper's main text (its appendix A.2 has the details); 50
epochs is this project's default, a config value.
"""

import ml_collections

from avssl import config_lib
from configs import common, selavi_vggsound


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False)
  config = selavi_vggsound.get_config()
  config.data.dir = '~/records/kinetics_sound'
  config.selavi.num_clusters = 32  # The release's K; §4 "Datasets" counts 34 classes.
  config.total_epochs = 50.0  # This project's default (above).
  config.init_from = 'runs/selavi_vggsound'
  if arg.tiny:
    config = selavi_vggsound.shrink(config)
    config.init_from = ''
  return common.accelerate(config) if arg.accel else config
