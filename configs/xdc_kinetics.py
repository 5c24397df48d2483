"""XDC pretrained on Kinetics-400 (paper §4, Tables 1-3): k = 256, R(2+1)D-18 and audio ResNet-18.

    python -m avssl.data_prep.make_records --dataset=kinetics400 --input=kinetics400/train.csv \
        --video_dir=~/kinetics400 --fps=30 --short_side=256 --sample_rate=16000 \
        --output_dir=~/records/kinetics400
    python -m avssl.main --config=configs/xdc_kinetics.py --workdir=runs/xdc_kinetics

The records carry the frame rate and audio sample rate (30 fps, 16 kHz as made above). The other XDC
configs (AudioSet, the SDC/MDC/CDC baselines, the demo) start from this one.

Table 1's same-modality XDC: `--config.xdc.variant=xdc_same_video` (or `xdc_same_audio`). Table 2's
k sweep: `--config.xdc.num_clusters=64` ... 1024. `:tiny` is the same run at CPU-test size.
"""

import ml_collections

from avssl import config_lib, optim
from avssl.data import audio, pipeline
from avssl.methods import xdc as xdc_lib
from avssl.models import encoders
from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False)
  # The optimiser, batch and epochs are in the paper's supplement, which is not public: DeepCluster's
  # SGD (lr 0.05 at batch 256, momentum 0.9, weight decay 1e-5, constant), and 120 epochs, room for
  # §4.2's "5 to 6 deep clustering iterations" of up to 20 epochs each.
  config = common.loop_config(
      batch_size=256,  # DeepCluster's (above).
      total_epochs=120.0,  # 6 iterations × `xdc.epochs_per_iteration` (above).
      seed=0)  # Not in the paper.
  config.method = 'xdc'
  config.data = pipeline.default_config(
      dir='~/records/kinetics400',  # §4.1: the ~7K Kinetics videos without audio left out.
      num_frames=8,  # §4.1: clips of L = 8 frames (30 fps, a random start: temporal jittering).
      min_resize=256, max_resize=256, crop_size=224,  # §4.1: short side 256, random 224² crop.
      eval_resize=256,  # Feature passes: the centre 224² crop (§4.1's inference view).
      flip=False,  # §4.1 names no flip.
      audio_seconds=2.0,  # §4.1: 2 s of audio ...
      audio=audio.default_config('logmel'),  # ... as Q = 40 mel filters × P = 100 frames.
      volume_jitter=0.0)  # §4.1 names no audio augmentation.
  config.model = common.model_config(
      video=encoders.encoder_config('r2plus1d', depth=18),  # §4.1: R(2+1)D-18 ...
      audio=encoders.encoder_config('audio_resnet', depth=18),  # ... and ResNet-18.
      bn_momentum=0.9, bn_eps=1e-3)  # The released encoder's BN.
  config.xdc = xdc_lib.default_config(
      variant='xdc',  # §3.2; Table 1's baselines: `sdc`, `mdc`, `cdc` (their own configs).
      num_clusters=256,  # Table 2: k = 256 is best for UCF101 after Kinetics (74.2), 128 for HMDB51.
      balance='sample')  # DeepCluster's uniform sampling over pseudo-labels (§3.1 adapts it).
  config.optimizer = optim.default_optimizer_config(
      name='sgd', momentum=0.9, weight_decay=1e-5)  # DeepCluster's (above).
  config.schedule = optim.default_schedule_config(
      name='constant', base_lr=0.05)  # DeepCluster's (above).
  config.label = common.label_config()
  config.evaluation.run = ('method', 'kmeans')  # Probes: add 'probe' and `evaluation.probe.dirs`.
  config = shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config


def shrink(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`:tiny`: the same run at CPU-test size: small encoders, 4-frame 32² clips, 0.4 s of audio as a
  16 × 16 log-mel, k <= 6, 6 steps in deep-clustering iterations of (at most) one epoch."""
  config.batch_size = 16
  common.by_steps(config, total=6, checkpoint_every=3)
  config.log_every_steps = 1
  common.tiny_inputs(config)
  config.xdc.update(dict(num_clusters=min(config.xdc.num_clusters, 6), epochs_per_iteration=1.0,
                         holdout_fraction=0.25 if config.xdc.holdout_fraction else 0.0))
  common.shrink_evaluation(config)
  return config
