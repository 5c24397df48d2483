"""XDC pretrained on Kinetics-400 (paper §4, Tables 1-3): k = 256, R(2+1)D-18 and audio ResNet-18.

    python -m data_prep.make_records --dataset=kinetics400 --input=kinetics400/train.csv \
        --video_dir=~/kinetics400 --fps=30 --short_side=256 --sample_rate=16000 \
        --output_dir=~/records/kinetics400
    python -m avssl.main --config=configs/xdc_kinetics.py --workdir=runs/xdc_kinetics

Table 1's same-modality XDC: `--config.xdc.variant=xdc_same_video` (or `xdc_same_audio`). Table 2's
k sweep: `--config.xdc.num_clusters=64` ... 1024. `:tiny` is the same run at CPU-test size.
"""

import ml_collections

from avssl import config_lib, presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False)
  # Table 2: after Kinetics, k = 256 is best for UCF101 (74.2, Table 1's XDC), 128 for HMDB51.
  config = presets.xdc(records='~/records/kinetics400', variant='xdc', num_clusters=256)
  return presets.shrink_xdc(config) if arg.tiny else config
