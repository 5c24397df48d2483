"""SeLaVi on AVE (paper §4, Table 5 b): K = 28, unsupervised finetuning of the VGG-Sound model (its
encoders through `init_from`; new heads). AVE has about 4k videos, so the global batch is smaller.

    python -m avssl.data_prep.make_records --dataset=ave --input=AVE_Dataset/Annotations.txt \
        --video_dir=~/AVE_Dataset/AVE --sample_rate=24000 --output_dir=~/records/ave
    python -m avssl.main --config=configs/selavi_ave.py --workdir=runs/selavi_ave \
        --config.init_from=runs/selavi_vggsound
"""

import ml_collections

from avssl import config_lib
from configs import common, selavi_vggsound


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False)
  config = selavi_vggsound.get_config()
  config.data.dir = '~/records/ave'
  config.selavi.num_clusters = 28  # The release's K: AVE's 28 classes.
  config.total_epochs = 50.0  # Not in the paper's main text: this project's length.
  config.batch_size = 256  # About 4k videos: a smaller batch, the lr scaled with it as the release's.
  config.schedule.multiplier = config.batch_size / 16
  config.init_from = 'runs/selavi_vggsound'
  if arg.tiny:
    config = selavi_vggsound.shrink(config)
    config.init_from = ''
  return common.accelerate(config) if arg.accel else config
