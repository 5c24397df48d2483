"""SeLaVi on avsynth, the built-in demo data: K = 10 clusters of 10 pair-confusable classes, small
encoders and clips sized for a laptop CPU. `bash scripts/demo.sh` makes the data and runs it.

    python -m avssl.data_prep.make_synthetic --output_dir=runs/demo/avsynth --num_classes=10
    python -m avssl.data_prep.make_records --dataset=folder --input=runs/demo/avsynth --fps=10 \
        --short_side=64 --sample_rate=16000 --min_duration=1.0 --output_dir=runs/demo/records
    python -m avssl.main --config=configs/selavi_demo.py --workdir=runs/demo/selavi

The rows of the paper's Table 3 on the same data, at the demo's sizes (K, heads, label updates,
batch, schedule): `:sela` (a, SeLa's method on frames, `sela_vggsound.sela`), `:concat` (b, one head
on both modalities' features, `concat_vggsound.concat`), and SeLaVi without its improvements,
`:no_ma,no_g,no_dh` (c), `:no_ma` (d), `:no_g` (e), `:no_dh` (f); the plain config is (g). `:tiny` is
CPU-test size.

`:nuisance` runs on avnuisance (`runs/nuisance/records` unless `records` is given; `docs/nuisance.md`
makes it) with the recipe that finds its classes under strong nuisances; it combines with the rows
above (`:sela,nuisance` is SeLa on the same inputs and schedule).
"""

import ml_collections

from avssl import config_lib
from configs import common, concat_vggsound, sela_vggsound, selavi_custom, selavi_vggsound


def _nuisance(config: ml_collections.ConfigDict) -> None:
  """avnuisance's recipe: `selavi_custom.nuisance`'s switches, audio windows of the whole 2 s clip
  (the event falls anywhere in it) and 30 epochs with 40 label updates: the class NMI stays near 0.2
  for the first 7 epochs and passes 0.9 by the 21st (`docs/nuisance.md`)."""
  selavi_custom.nuisance(config)
  config.data.audio_seconds = 2.0
  config.total_epochs = 30.0
  config.selavi.num_label_updates = 40


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False, sela=False, concat=False, no_ma=False,
                             no_g=False, no_dh=False, nuisance=False, records='')
  ablations = [name for name in ('no_ma', 'no_g', 'no_dh') if arg[name]]
  if arg.sela + arg.concat + bool(ablations) > 1:
    raise ValueError(f'configs/selavi_demo.py: sela, concat and the ablations {ablations} are '
                     'separate rows of Table 3; give one of them')
  config = selavi_vggsound.get_config()
  config.data.dir = arg.records or ('runs/nuisance/records' if arg.nuisance else 'runs/demo/records')
  config.selavi.num_clusters = 10
  config.total_epochs = 10.0
  config.batch_size = 64
  config.log_every_steps = 20
  config.checkpoint_every_epochs = 5.0
  common.demo_inputs(config)
  config.selavi.update(dict(num_heads=4, num_groups=2, num_label_updates=20,
                            bn_warmup_batches=5, head_hidden=128))
  config.schedule.update(dict(base_lr=0.1, multiplier=1.0, warmup_epochs=1.0))
  # Everything the suite measures, on avsynth's own train/test splits; small encoders pool by average.
  config.evaluation.run = ('method', 'kmeans', 'robustness', 'retrieval', 'probe')
  config.evaluation.batch_size, config.evaluation.num_frames = 64, 0
  config.evaluation.retrieval.pool = 'avg'
  # The probe reads retrieval's views (10 clips, the centre crop) instead of the paper's 10 × 3
  # crops: on avsynth's 56² frames the three 48² crops nearly coincide, and sharing the views spares
  # the demo two passes of 30 views per video over both splits (about a third of its time on 2 cores).
  config.evaluation.probe.crops = 1
  if arg.sela:
    sela_vggsound.sela(config)
    if not arg.nuisance:
      # Without SeLa's colour jitter and grayscale: avsynth's look is partly a colour, and with them
      # SeLa learns nothing here (NMI 0.8, loss at ln 10; README, Table 3). On avnuisance colours
      # are nuisances, and SeLa keeps its own augmentations.
      config.data.color_jitter, config.data.grayscale_prob = (), 0.0
  if arg.concat:
    concat_vggsound.concat(config)
  if arg.nuisance:
    _nuisance(config)
  selavi_vggsound.ablate(config, no_ma=arg.no_ma, no_g=arg.no_g, no_dh=arg.no_dh)
  config = selavi_vggsound.shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config
