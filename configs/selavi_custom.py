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
on avnuisance at the demo's sizes (one run each, NMI against the classes, every nuisance factor in
brackets): the paper's settings 0.009 (background hue 0.19, loudness 0.27); the two normalisations
0.33 (≤ 0.035); with cross targets too, video + audio 0.455, video 0.328, audio 0.475 (≤ 0.010).
Not the default: it is short of what SeLaVi reaches where the classes are the loudest thing
(avsynth: 0.79), and background subtraction assumes a mostly static camera. Check what your clusters
follow with `--config.evaluation.factors.file=` (`docs/factors.md`).
"""

import ml_collections

from avssl import config_lib
from configs import common, selavi_vggsound


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
    config.data.subtract_background = 'median'
    config.data.audio_band_norm = 'mean_std'
    config.selavi.targets = 'cross'
  config = selavi_vggsound.shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config
