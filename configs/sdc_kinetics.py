"""SDC, Table 1's single-modality baseline: DeepCluster on each encoder alone (each encoder predicts
the k-means clusters of its own features), pretrained on Kinetics-400.

XDC's encoders, inputs and k (§4.2 Study 1: "all models in this ablation study use the same visual
and audio encoders and only differ in the way they use self-supervision").

    python -m avssl.main --config=configs/sdc_kinetics.py --workdir=runs/sdc_kinetics

Records as for `configs/xdc_kinetics.py`. `:tiny` is the same run at CPU-test size.
"""

import ml_collections

from avssl import config_lib
from configs import common, xdc_kinetics


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False)
  config = xdc_kinetics.get_config()
  config.xdc.variant = 'sdc'
  config = xdc_kinetics.shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config
