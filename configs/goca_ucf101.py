"""GOCA pretrained on UCF101 (paper §4: Tables 1, 3, 4 lower part, 6), RGB + TV-L1 flow.

    python -m data_prep.make_records --dataset=ucf101 --input=~/ucfTrainTestlist --video_dir=~/UCF-101 \
        --fold=1 --fps=30 --short_side=256 --flow --output_dir=~/records/ucf101_1
    python -m avssl.main --config=configs/goca_ucf101.py:backbone=s3d --workdir=runs/goca_ucf101_s3d
    python -m avssl.main --config=configs/goca_ucf101.py:backbone=s3d --workdir=runs/goca_ucf101_s3d \
        --mode=eval

`backbone` is `r2plus1d` (R(2+1)D-18 at 112², the default) or `s3d` (S3D at 128², Table 1's
ablations); `variant` is `goca` or a Table 1 baseline (`sview`, `avg`, `sep`; also their own configs).
The evaluation retrieves the test split's videos from the train split (R@k with RGB, flow and both
averaged, Table 1/4) and clusters the test split with k-means (Table 6). `:tiny` is CPU-test size.
"""

import ml_collections

from avssl import config_lib, presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, backbone='r2plus1d', variant='goca')
  config = presets.goca(records='~/records/ucf101_1', backbone=arg.backbone, variant=arg.variant)
  return presets.shrink_goca(config) if arg.tiny else config
