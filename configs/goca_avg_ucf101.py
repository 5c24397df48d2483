"""Avg, Table 1's naive merge: the RGB and flow backbones' features averaged before one projection
head and one SwAV problem.

Pretrained on UCF101 with S3D, as Table 1 (records as for `goca_ucf101.py`):

    python -m avssl.main --config=configs/goca_avg_ucf101.py --workdir=runs/goca_avg_ucf101

`:backbone=r2plus1d` for R(2+1)D-18; `:tiny` is CPU-test size.
"""

import ml_collections

from avssl import config_lib
from configs import common, goca_ucf101


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False, backbone='s3d')
  config = goca_ucf101.build(records='~/records/ucf101_1', backbone=arg.backbone, variant='avg')
  config = goca_ucf101.shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config
