"""IICL pretrained on Kinetics-400 (paper §IV, Tables II-III): C = 400, R(2+1)D-18 and audio ResNet-18
with one co-attention block; 300 epochs of L_ins, then 300 of L_ins + 0.5·L_clu.

    python -m avssl.data_prep.make_records --dataset=kinetics400 --input=kinetics400/train.csv \\
        --video_dir=~/kinetics400 --fps=30 --short_side=128 --sample_rate=16000 \\
        --output_dir=~/records/kinetics400
    python -m avssl.main --config=configs/iicl_kinetics.py --workdir=runs/iicl_kinetics
    python -m avssl.main --config=configs/iicl_kinetics.py --workdir=runs/iicl_kinetics --mode=eval

The records carry the frame rate and audio sample rate (30 fps, 16 kHz as made above). The other IICL
configs (AudioSet, the demo) start from this one. Table II's ablations:
`--config.iicl.losses="('ins',)"` (k-means in the instance space) and
`--config.iicl.losses="('clu',)" --config.iicl.init_epochs=0`; the co-attention of each clip's own
pair only: `--config.iicl.co_attention.reading=per_clip`. `eval/method.md` holds Table II and
Table III (cross-modal mAP). `:tiny` is the same run at CPU-test size.
"""

import ml_collections

from avssl import config_lib, optim
from avssl.data import audio, pipeline
from avssl.methods import iicl as iicl_lib
from avssl.models import encoders
from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False)
  config = common.loop_config(
      batch_size=256,  # §IV-B: "the batch size is 256".
      total_epochs=600.0,  # §IV-B: 300 epochs of initialisation + 300 of co-training.
      seed=0)  # Not in the paper.
  config.method = 'iicl'
  config.data = pipeline.default_config(
      # §IV-A: the ~7K Kinetics videos without audio are left out (make_records skips them).
      dir='~/records/kinetics400',
      num_frames=32,  # §IV-B: a 32-frame RGB clip at 30 fps ...
      min_resize=128, max_resize=128, crop_size=128, eval_resize=128,  # ... resized to 128².
      flip=False,  # The paper names no augmentation: a random 128² crop only.
      audio_seconds=2.0,  # §IV-B: 2 s of audio ...
      audio=audio.default_config('logmel'),  # ... as Q = 40 mel filters × P = 100 frames.
      volume_jitter=0.0)
  config.model = common.model_config(
      video=encoders.encoder_config('r2plus1d', depth=18),  # §IV-B: R(2+1)D (18 layers) ...
      audio=encoders.encoder_config('audio_resnet', depth=18),  # ... and ResNet(-18).
      bn_momentum=0.9, bn_eps=1e-5)  # PyTorch's BN defaults (no code released).
  config.iicl = iicl_lib.default_config(
      losses=('ins', 'clu'),  # Eq. (7): L_ins + λ·L_clu.
      num_clusters=400,  # C, §IV-D1: Table I's best of 100/200/400/800.
      instance_dim=1024,  # §IV-B: the row space of g_ins.
      tau_ins=0.5, tau_clu=0.5,  # §IV-B.
      lam=0.5,  # §IV-B: λ = 0.5 at the co-training stage.
      init_epochs=300.0)  # §IV-B: the initialisation stage, L_ins alone for 300 epochs.
  config.iicl.co_attention.depth = 1  # §IV-B: one co-attention block ...
  # ... on every (video, audio) pair of the batch, as the co-attention of the paper's reference [5];
  # 'per_clip' (each clip's own pair only) is the ablation whose contrast has a shortcut.
  config.iicl.co_attention.reading = 'pairwise'
  config.optimizer = optim.default_optimizer_config(
      name='adam', weight_decay=1e-6)  # §IV-B: Adam, weight decay 1e-6 ...
  config.schedule = optim.default_schedule_config(
      name='constant', base_lr=5e-4)  # ... and lr 5e-4 (no schedule named).
  config.label = common.label_config()
  # Table II / III (method) and encoder k-means; retrieval (§IV-C1: R@1-20 of the video encoder's
  # pooled feature, 10 clips) and probes need UCF101/HMDB51 records: `evaluation.retrieval.dir`.
  config.evaluation.run = ('method', 'kmeans')
  config.evaluation.retrieval.update(dict(pool='avg', ks=(1, 5, 10, 20)))
  config = shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config


def shrink(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`:tiny`: the same run at CPU-test size: small encoders, 4-frame 32² clips, 0.4 s of audio as a
  16 × 16 log-mel, a 16-wide co-attention, C <= 6, 4 steps with co-training from step 2 (when both
  levels train)."""
  config.batch_size = 16
  common.by_steps(config, total=4, checkpoint_every=2)
  config.log_every_steps = 1
  common.tiny_inputs(config)
  s = config.iicl
  s.update(dict(num_clusters=min(s.num_clusters, 6), instance_dim=16, kmeans_runs=2))
  s.co_attention.update(dict(width=16, num_heads=2, mlp_ratio=2.0))
  if len(s.losses) == 2:
    s.init_epochs, s.init_steps = None, 2
  common.shrink_evaluation(config)
  return config
