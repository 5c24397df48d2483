"""SeLaVi on VGG-Sound (paper §4, Tables 2, 3, 5): K = 309, 10 heads in 2 groups, 200 epochs.

    python -m data_prep.make_records --dataset=vggsound --input=vggsound.csv \
        --video_dir=~/vggsound --sample_rate=24000 --output_dir=~/records/vggsound
    python -m avssl.main --config=configs/selavi_vggsound.py --workdir=runs/selavi_vggsound \
        --config.data.dir=~/records/vggsound

`:tiny` is the same run at CPU-test size.
"""

import ml_collections

from avssl import config_lib, presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False)
  config = presets.selavi(records='~/records/vggsound', num_clusters=309)
  return presets.shrink_selavi(config) if arg.tiny else config
