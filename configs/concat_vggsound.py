"""The Concat baseline on VGG-Sound (paper Table 3 b): one set of heads on the concatenated video and
audio features, so no modality must predict the label alone (and no alignment is needed)."""

import ml_collections

from avssl import config_lib, presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False)
  config = presets.selavi(records='~/records/vggsound', num_clusters=309)
  config.selavi.fusion = 'concat'
  config.selavi.alignment = False
  return presets.shrink_selavi(config) if arg.tiny else config
