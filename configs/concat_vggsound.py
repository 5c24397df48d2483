"""The Concat baseline on VGG-Sound (paper Table 3 b): one set of heads on the concatenated video and
audio features, so no modality must predict the label alone (and no alignment is needed)."""

import ml_collections

from avssl import config_lib
from configs import common, selavi_vggsound


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False)
  config = selavi_vggsound.get_config()
  config.selavi.fusion = 'concat'
  config.selavi.alignment = False
  config = selavi_vggsound.shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config
