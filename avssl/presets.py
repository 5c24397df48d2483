"""Shared builders for the files in `configs/`: one place for what every run of a method declares.

A config file picks a preset and changes what its experiment changes (dataset, K, epochs); every key a
method reads exists here, so the locked config rejects a misspelt override at start.
"""

from __future__ import annotations

import ml_collections

from avssl import config_lib, optim
from avssl.data import audio, pipeline
from avssl.methods import selavi as selavi_lib
from avssl.models import encoders


def loop_config(*, batch_size: int, total_epochs: float, seed: int) -> ml_collections.ConfigDict:
  """The keys of the shared loop (`avssl/train.py`)."""
  config = ml_collections.ConfigDict()
  config.seed = seed
  config.batch_size = batch_size
  config.total_epochs = config_lib.optional(float)
  config.total_steps = config_lib.optional(int)
  config.total_epochs = total_epochs
  config.log_every_steps = 50
  config.eval_every_epochs = config_lib.optional(float)
  config.eval_every_steps = config_lib.optional(int)
  config.checkpoint_every_epochs = config_lib.optional(float)
  config.checkpoint_every_steps = config_lib.optional(int)
  config.checkpoint_every_epochs = 5.0
  config.keep_checkpoints = 3
  config.init_from = ''  # Another run's workdir whose weights start this run (matching names/shapes).
  config.distributed = config_lib.distributed_config()
  return config


def by_steps(config: ml_collections.ConfigDict, *, total: int, checkpoint_every: int,
             warmup: int | None = None) -> None:
  """Switches the run's durations from epochs to steps, as `:tiny` variants do (a few steps on any
  data size)."""
  config.total_epochs, config.total_steps = None, total
  config.checkpoint_every_epochs, config.checkpoint_every_steps = None, checkpoint_every
  if warmup is not None:
    config.schedule.warmup_epochs, config.schedule.warmup_steps = None, warmup


def selavi(*, records: str, num_clusters: int, total_epochs: float = 200.0,
           batch_size: int = 1024) -> ml_collections.ConfigDict:
  """SeLaVi as trained on VGG-Sound (paper §4, reference `selavi.md` §4): R(2+1)D-18 and ResNet-9,
  10 heads in 2 groups, λ = 20, Gaussian prior; SGD 0.9, wd 1e-5, lr 0.01 warmed up over 10 epochs
  to 0.01 × batch / 16 (the reference's 0.01 × number of GPUs at 16 clips each), then constant;
  seed 31; 30 frames at 30 fps, 112², 1 s of 24 kHz audio as a 257 × 99 logfbank."""
  config = loop_config(batch_size=batch_size, total_epochs=total_epochs, seed=31)
  config.method = 'selavi'
  config.data = pipeline.default_config(dir=records, eval_split='train')
  config.model = ml_collections.ConfigDict(dict(
      video=encoders.encoder_config('r2plus1d', depth=18),
      audio=encoders.encoder_config('audio_resnet', depth=9),
      bn_momentum=0.9, bn_eps=1e-5, dtype='float32'))
  config.selavi = selavi_lib.default_config(num_clusters=num_clusters)
  config.optimizer = optim.default_optimizer_config(name='sgd', momentum=0.9, weight_decay=1e-5)
  config.schedule = optim.default_schedule_config(
      name='warmup_constant', base_lr=0.01, multiplier=batch_size / 16, warmup_epochs=10.0)
  config.label = ml_collections.ConfigDict(dict(dir='', split='train', file='labels.csv',
                                                save_probs=False))
  return config


def shrink_selavi(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`:tiny`: the same run at CPU-test size (small encoders, 4-frame 32² clips, a few steps)."""
  config.batch_size = 16
  by_steps(config, total=4, checkpoint_every=2, warmup=2)
  config.log_every_steps = 1
  config.schedule.multiplier = 1.0
  config.model.video = encoders.encoder_config('small', widths=(8, 16))
  config.model.audio = encoders.encoder_config('small', widths=(8, 16))
  config.data.update(dict(num_frames=4, min_resize=36, max_resize=40, crop_size=32,
                          eval_resize=36, audio_seconds=0.4, shuffle_buffer=16))
  config.data.audio = audio.default_config('logmel')
  config.data.audio.num_mel_bins, config.data.audio.num_frames = 16, 16
  config.selavi.update(dict(num_clusters=min(config.selavi.num_clusters, 6), num_heads=2,
                            num_label_updates=3, bn_warmup_batches=2, head_hidden=16))
  return config
