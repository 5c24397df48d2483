"""SeLaVi on AVE (paper §4, Table 5 b): K = 28, unsupervised finetuning of the VGG-Sound model (its
encoders through `init_from`; new heads). AVE has about 4k videos, so the global batch is smaller.

    python -m data_prep.make_records --dataset=ave --input=AVE_Dataset/Annotations.txt \
        --video_dir=~/AVE_Dataset/AVE --sample_rate=24000 --output_dir=~/records/ave
    python -m avssl.main --config=configs/selavi_ave.py --workdir=runs/selavi_ave \
        --config.init_from=runs/selavi_vggsound
"""

import ml_collections

from avssl import config_lib, presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False)
  config = presets.selavi(records='~/records/ave', num_clusters=28, total_epochs=50.0,
                          batch_size=256)
  config.init_from = 'runs/selavi_vggsound'
  if arg.tiny:
    config = presets.shrink_selavi(config)
    config.init_from = ''
  return config
