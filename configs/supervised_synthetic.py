"""Supervised audio-visual classification on synthetic clips: the loop's smallest complete run.

    python -m avssl.main --config=configs/supervised_synthetic.py:tiny --workdir=runs/demo

`:tiny` trains for a few seconds on the CPU and reaches well above chance (1/8) eval accuracy.
"""

import ml_collections

from avssl import config_lib, optim
from configs import common
from avssl.data import synthetic


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, batch_size=0, seed=0)
  config = common.loop_config(batch_size=64, total_epochs=20.0, seed=arg.seed)
  config.method = 'supervised'
  config.log_every_steps = 10
  config.data = synthetic.default_config(num_train=4096, num_eval=512, frame_size=32,
                                         num_frames=8, audio_bins=32, audio_frames=32)
  config.model = common.model_config(width=32, dropout=0.0, bn_momentum=0.9, bn_eps=1e-5)
  config.optimizer = optim.default_optimizer_config(name='sgd', momentum=0.9, weight_decay=1e-5)
  config.schedule = optim.default_schedule_config(name='warmup_cosine', base_lr=0.5,
                                                  warmup_epochs=1.0)
  if arg.tiny:
    config.batch_size = 16
    config.data = synthetic.default_config(num_train=256, num_eval=64)
    config.model.width = 8
    common.by_steps(config, total=30, checkpoint_every=10, warmup=3)
    config.log_every_steps = 5
    config.schedule.base_lr = 1.0
  if arg.batch_size:
    config.batch_size = arg.batch_size
  return config
