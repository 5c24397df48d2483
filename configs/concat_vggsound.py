"""The Concat baseline on VGG-Sound (SeLaVi Table 3 b): "concatenating the features of both modalities
(followed by a single clustering head)" (SeLaVi §4.1).

    python -m avssl.main --config=configs/concat_vggsound.py:table3 --workdir=runs/concat_vggsound \
        --config.data.dir=~/records/vggsound

SeLaVi's run with one head on the concatenated video and audio features instead of a head per
modality, and none of SeLaVi's improvements the row's columns rule out: uniform cluster marginals (G
✗), no decorrelated heads (DH ✗: one head, one group), no modality alignment (MA –: one head has no
two modalities to align). Everything else is SeLaVi's (`selavi_vggsound.py`).
`:table3` is Table 3's 100 epochs; `:tiny` is CPU-test size.
"""

import ml_collections

from avssl import config_lib
from configs import common, selavi_vggsound


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False, table3=False)
  config = selavi_vggsound.get_config()
  concat(config)
  if arg.table3:
    selavi_vggsound.table3(config)
  config = selavi_vggsound.shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config


def concat(config: ml_collections.ConfigDict) -> None:
  """The Concat row's method in place of SeLaVi's, keeping the run's sizes: what both the VGG-Sound
  row and the demo's `:concat` use."""
  s = config.selavi
  s.fusion = 'concat'
  s.num_heads, s.num_groups = 1, 1  # "a single clustering head".
  s.prior = 'uniform'
  s.alignment = False
  # Its one head set is the view 'video + audio' (no single-modality views): the robustness curve
  # reads that one.
  config.evaluation.robustness.views = ('video + audio',)
