"""SeLa on VGG-Sound frames only (paper Table 3 a): the SeLaVi code with one modality (video), one
label per clip from the video network alone; the baseline SeLaVi's multi-modality improves on.
"""

import ml_collections

from avssl import config_lib
from configs import common, selavi_vggsound


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False)
  config = selavi_vggsound.get_config()
  config.selavi.modalities = ('video',)
  config.selavi.alignment = False
  config = selavi_vggsound.shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config
