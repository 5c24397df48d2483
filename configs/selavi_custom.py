"""SeLaVi on your own videos: the configuration to start from.

    python -m avssl.data_prep.make_records --dataset=folder --input=~/my_videos --sample_rate=24000 \
        --output_dir=~/records/mine
    python -m avssl.main --config=configs/selavi_custom.py:records=~/records/mine,clusters=50 \
        --workdir=runs/mine
    python -m avssl.main --config=configs/selavi_custom.py:records=~/records/mine,clusters=50 \
        --workdir=runs/mine --mode=label        # runs/mine/labels.csv

Arguments: `records` (a make_records folder), `clusters` (K: how many groups you want; more than
the number of kinds you expect is fine), `heads`, `epochs`, `batch`, `frames`, `crop`. The defaults
fit one GPU with 40-80 GB: batch 64, R(2+1)D-18 on 30 × 112² clips, 100 epochs. On a CPU or a small
GPU use `frames=16,crop=96,batch=32`, or shrink further with `:tiny`.

`nuisance` is for collections whose loudest differences are not what you want to group by (camera,
background, room, microphone, noise; `docs/nuisance.md`): each clip's median frame is subtracted
(static backgrounds), each log-mel band is standardised over time (stationary noise colour and
level), and each modality's heads learn the labels solved from the other modality alone (XDC's
cross-modal targets: what one modality's nuisances do cannot be predicted by the other). Measured
at the demo's sizes (`configs/selavi_demo.py:nuisance`, NMI against the classes, the largest
nuisance factor in brackets): on avnuisance the paper's settings reach 0.010 at 10 epochs (0.27);
this recipe reaches video + audio 0.980, video 0.860, audio 0.998, self-labels 0.899 (≤ 0.008) at 30
epochs, 13 minutes on 2 CPU cores; with shared targets instead of cross ones, 30 epochs give 0.45.
It is not the default, because where the classes are the loudest thing it costs: on avsynth at the
demo's 10 epochs it gives 0.728 ± 0.011 against the paper's 0.785 ± 0.056 (each modality there
tells only pairs of classes apart, so labels from one modality alone cap the other), and background
subtraction assumes a mostly static camera. Run the nuisance report on your first clusters
(`--config.evaluation.factors.file=`, `docs/factors.md`): if they follow cameras, rooms or
backgrounds rather than what you want, rerun with `nuisance`, and train long enough (the class NMI
above stays near 0.2 for 7 epochs and passes 0.9 by the 21st).
"""

import ml_collections

from avssl import config_lib
from configs import common, selavi_vggsound


def nuisance(config: ml_collections.ConfigDict) -> None:
  """The switches for nuisance-rich collections (`docs/nuisance.md`): median-frame subtraction,
  per-band log-mel standardisation and, where each modality has its own heads (not SeLa's frames
  alone or Concat's fused head), cross-modal targets; none is in the papers."""
  config.data.subtract_background = 'median'
  config.data.audio_band_norm = 'mean_std'
  if len(config.selavi.modalities) == 2 and config.selavi.fusion == 'none':
    config.selavi.targets = 'cross'


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False, records='~/records/mine', clusters=100,
                             heads=10, epochs=100.0, batch=64, frames=30, crop=112,
                             nuisance=False)
  config = selavi_vggsound.get_config()
  config.data.dir = arg.records
  config.selavi.num_clusters = arg.clusters
  config.total_epochs = arg.epochs
  config.batch_size = arg.batch
  config.schedule.multiplier = arg.batch / 16  # VGG-Sound's lr per clip.
  config.selavi.num_heads = arg.heads
  config.selavi.num_groups = 2 if arg.heads % 2 == 0 else 1
  config.data.num_frames = arg.frames
  config.data.crop_size = arg.crop
  config.data.min_resize = max(arg.crop, round(arg.crop * 128 / 112))
  config.data.max_resize = max(arg.crop, round(arg.crop * 160 / 112))
  config.data.eval_resize = arg.crop  # The release's export: frames resized to the crop's size.
  if arg.nuisance:
    nuisance(config)
  config = selavi_vggsound.shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config
