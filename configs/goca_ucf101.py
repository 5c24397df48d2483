"""GOCA pretrained on UCF101 (paper §4: Tables 1, 3, 4 lower part, 6), RGB + TV-L1 flow.

    python -m avssl.data_prep.make_records --dataset=ucf101 --input=~/ucfTrainTestlist --video_dir=~/UCF-101 \
        --fold=1 --fps=30 --short_side=256 --flow --output_dir=~/records/ucf101_1
    python -m avssl.main --config=configs/goca_ucf101.py:backbone=s3d --workdir=runs/goca_ucf101_s3d
    python -m avssl.main --config=configs/goca_ucf101.py:backbone=s3d --workdir=runs/goca_ucf101_s3d \
        --mode=eval

`backbone` is `r2plus1d` (R(2+1)D-18 at 112², the default) or `s3d` (S3D at 128², Table 1's
ablations); `variant` is `goca` or a Table 1 baseline (`sview`, `avg`, `sep`; also their own configs).
The evaluation retrieves the test split's videos from the train split (R@k with RGB, flow and both
averaged, Table 1/4) and clusters the test split with k-means (Table 6). `:tiny` is CPU-test size.
"""

import ml_collections

from avssl import config_lib, optim
from avssl.data import pipeline
from avssl.methods import goca as goca_lib
from avssl.models import encoders
from configs import common


def build(*, records: str, backbone: str, variant: str) -> ml_collections.ConfigDict:
  """GOCA as pretrained in the paper (§4 "Backbones and Training details"), or one of its Table 1
  baselines (`variant`: sview, avg, sep), on the records `records` with the video `backbone`."""
  if backbone not in ('r2plus1d', 's3d'):
    raise ValueError(f"backbone={backbone!r}; GOCA uses 'r2plus1d' or 's3d'")
  r2plus1d = backbone == 'r2plus1d'
  config = common.loop_config(
      batch_size=640,  # §4: 64 GPUs × 10 samples.
      total_epochs=500.0,  # §4: 500 epochs.
      seed=0)  # Not in the paper.
  config.method = 'goca'
  short_side = (128, 160) if r2plus1d else (136, 190)  # The release's scale jitter per backbone.
  config.data = pipeline.default_config(
      dir=records,
      eval_split='test',  # Retrieval queries and k-means clusters are the test split (Tables 1, 6).
      num_frames=32,  # §4: "Each clip contains 32 consecutive frames".
      multi_crop=((2, 32), (4, 16)),  # §4 "Data Augmentations": multi-temporal-resolution, 2 + 4.
      min_resize=short_side[0], max_resize=short_side[1],
      crop_size=112 if r2plus1d else 128,  # The release: 112² for R(2+1)D-18, 128² for S3D.
      eval_resize=short_side[0],
      eval_clips=10, eval_crops=3,  # §4: tests with 3 (spatial) × 10 (temporal) views.
      antialias=True,  # The release resizes with PIL.
      # §4 "Data Augmentations": flip, crop, blur, colour jitter; strengths and probabilities are the
      # release's, on RGB only.
      flip=True, color_jitter=(0.4, 0.4, 0.2, 0.1), color_jitter_prob=0.8, grayscale_prob=0.2,
      blur_prob=0.5,
      mean=0.45, std=0.225,  # One scalar mean / std for RGB and flow alike (ImageNet's, rounded).
      with_flow=True,  # §4: TV-L1 optical flow (records made with `make_records --flow`).
      with_audio=False)
  pool = 'avg122' if r2plus1d else 'avg'  # The release: R(2+1)D-18 pooled 1×2×2 to 2048-d.
  config.model = common.model_config(  # `dtype` float32: the release trains in fp32 only.
      video=encoders.encoder_config(backbone, depth=18, pool=pool),  # §4: S3D or R(2+1)D-18.
      bn_momentum=0.9, bn_eps=1e-5)
  config.goca = goca_lib.default_config(
      variant=variant,  # §3.2; Table 1's baselines: sview, avg, sep.
      num_prototypes=1000,  # §4.1 "Effect of prototype regularizer": 1000 prototypes.
      eps1=0.02, eps2=0.03,  # λ₁, λ₂ of Eq. (6), (7): §4.1, Table 2.
      prototypes='fixed')  # §3.3: maximally separated prototypes, fixed while training.
  config.optimizer = optim.default_optimizer_config(
      name='lars', momentum=0.9, weight_decay=1e-4,  # §4: SGD + LARS; momentum and decay: release.
      trust_coefficient=0.001)  # The release's LARS trust coefficient.
  config.schedule = optim.default_schedule_config(
      name='warmup_cosine', base_lr=4.8,  # §4: lr 4.8, increased during the first 10 warm-up
      warmup_epochs=10.0,  # epochs and then decreased to 0.0048 with cosine learning rate decay.
      end_lr_fraction=0.001)
  streams = ('video', 'flow', 'video + flow')  # §4: a "+" suffix is RGB and flow averaged.
  config.evaluation.run = ('method', 'kmeans', 'retrieval')
  config.evaluation.kmeans.update(dict(encoders=('trained',), modalities=streams, joint='average'))
  config.evaluation.retrieval.update(dict(modalities=streams, clips=10, crops=3, pool=pool))
  config.evaluation.probe.update(dict(pool=pool))
  return config


def shrink(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`:tiny`: the same run at CPU-test size: small encoders, clips of 4 + 2 frames at 32², 16
  prototypes separated in 100 steps, a few steps of 8 clips."""
  config.batch_size = 8
  common.by_steps(config, total=4, checkpoint_every=2, warmup=2)
  config.log_every_steps = 1
  config.model.video = encoders.encoder_config('small', widths=(8, 16))
  config.data.update(dict(num_frames=4, multi_crop=((2, 4), (2, 2)), min_resize=36, max_resize=40,
                          crop_size=32, eval_resize=36, eval_clips=2, eval_crops=1,
                          shuffle_buffer=16))
  config.goca.update(dict(num_prototypes=16, projection_hidden=32, projection_dim=16,
                          separation_steps=100))
  config.schedule.base_lr = 0.1
  common.shrink_evaluation(config)
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False, backbone='r2plus1d', variant='goca')
  config = build(records='~/records/ucf101_1', backbone=arg.backbone, variant=arg.variant)
  config = shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config
