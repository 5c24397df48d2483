"""XDC and its baselines on avsynth, the built-in demo data: k = 10 for 10 pair-confusable classes
(a class's look is shared with one other class and its sound with another), small encoders and clips
sized for a laptop CPU, four deep-clustering iterations of two epochs each.

    python -m avssl.main --config=configs/xdc_demo.py:variant=xdc --workdir=runs/demo/xdc
    python -m avssl.main --config=configs/xdc_demo.py:variant=sdc --workdir=runs/demo/sdc
    python -m avssl.main --config=configs/xdc_demo.py:variant=mdc --workdir=runs/demo/mdc
    python -m avssl.main --config=configs/xdc_demo.py:variant=cdc --workdir=runs/demo/cdc
    python -m avssl.modes.compare --layout=xdc SDC=runs/demo/sdc MDC=runs/demo/mdc \
        CDC=runs/demo/cdc XDC=runs/demo/xdc

The records are those of `configs/selavi_demo.py` (runs/demo/records, made by `scripts/demo.sh`).
Each run's `eval.md` has the NMI, accuracy and purity of its k-means labels at every iteration; the
last command puts the four runs side by side. `variant` is any of `avssl.methods.xdc.VARIANTS`;
`:tiny` is CPU-test size.
"""

import ml_collections

from avssl import config_lib
from configs import common, xdc_kinetics


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False, variant='xdc', records='runs/demo/records',
                             clusters=10)
  config = xdc_kinetics.get_config()
  config.data.dir = arg.records
  config.xdc.update(dict(variant=arg.variant, num_clusters=arg.clusters))
  config.total_epochs = 8.0
  config.batch_size = 64
  config.log_every_steps = 20
  config.checkpoint_every_epochs = 2.0
  common.demo_inputs(config, max_resize=56)  # No scale jitter: §4.1 names only a random crop.
  # Iterations of a fixed length, so that the variants' iterations line up in one table.
  config.xdc.update(dict(stop='epochs', epochs_per_iteration=2.0, holdout_fraction=0.0))
  config.schedule.base_lr = 0.1
  config = xdc_kinetics.shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config
