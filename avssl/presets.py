"""Shared builders for the files in `configs/`: one place for what every run of a method declares.

A config file picks a preset and changes what its experiment changes (dataset, K, epochs); every key a
method reads exists here, so the locked config rejects a misspelt override at start.
"""

from __future__ import annotations

import ml_collections

from avssl import config_lib, optim
from avssl.data import audio, pipeline
from avssl.methods import finetune as finetune_lib
from avssl.methods import goca as goca_lib
from avssl.methods import iicl as iicl_lib
from avssl.methods import selavi as selavi_lib
from avssl.methods import xdc as xdc_lib
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
  config.evaluation = evaluation_config()
  return config


def evaluation_config(**overrides) -> ml_collections.ConfigDict:
  """What `--mode=eval` runs (`run`, in order) and each evaluation's protocol switches
  (`avssl/evaluation/suite.py`). 'method' is the method's own evaluation (SeLaVi: Table 2); the others
  measure any method's encoders with one shared protocol. Views and pooling follow SeLaVi §4 and its
  release (`docs/papers_and_releases.md`): retrieval 10 clips × 1 centre crop of the max-pooled 9216-d
  R(2+1)D map; probes 10 clips × 3 crops of the 512-d average; k-means k = number of classes (0), 50
  runs (GOCA); a joint "a + b" feature concatenates the normalised features (`joint='concat'`) or
  averages them (`'average'`, GOCA's "+" rows). Retrieval's "a + b" rows average the streams'
  normalised views. `batch_size` 0 means 8 videos per device; `num_frames` 0 keeps the training clip
  length."""
  config = ml_collections.ConfigDict(dict(
      run=('method',), batch_size=0, num_frames=0,
      kmeans=dict(encoders=('trained', 'random'), modalities=('video', 'audio', 'video + audio'),
                  k=0, runs=50, iters=50, normalize=True, joint='concat', seed=0),
      retrieval=dict(dir='', train_split='train', test_split='test', modalities=('video',),
                     encoder='trained', clips=10, crops=1, pool='max222', center=False,
                     ks=(1, 5, 10, 20, 50), cross_modal=False),
      probe=dict(dirs=(), modality='video', encoder='trained', clips=10, crops=3,
                 train_split='train', test_split='test', pool='avg', val_fraction=0.1,
                 group_pattern=''),
      robustness=dict(factors=(1, 4, 8, 16), views=('video', 'video + audio'), baseline_runs=5)))
  for key, value in overrides.items():
    config[key] = value
  return config


def by_steps(config: ml_collections.ConfigDict, *, total: int, checkpoint_every: int,
             warmup: int | None = None) -> None:
  """Switches the run's durations from epochs to steps, as `:tiny` variants do (a few steps on any
  data size)."""
  config.total_epochs, config.total_steps = None, total
  config.checkpoint_every_epochs, config.checkpoint_every_steps = None, checkpoint_every
  if warmup is not None:
    config.schedule.warmup_epochs, config.schedule.warmup_steps = None, warmup


def demo_inputs(config: ml_collections.ConfigDict, *, max_resize: int = 64) -> None:
  """The avsynth demo's encoders and inputs, shared by every method's demo config: small encoders
  (widths 16-32-64), 8 frames cropped to 48² from a short side of 56 to `max_resize`, and 0.8 s of
  audio as a 40 mel × 40 frame log-mel; sized to train in minutes on a laptop CPU."""
  config.model.video = encoders.encoder_config('small', widths=(16, 32, 64))
  config.model.audio = encoders.encoder_config('small', widths=(16, 32, 64))
  config.data.update(dict(num_frames=8, min_resize=56, max_resize=max_resize, crop_size=48,
                          eval_resize=56, audio_seconds=0.8, shuffle_buffer=512))
  config.data.audio = audio.default_config('logmel')
  config.data.audio.num_frames = 40


def selavi(*, records: str, num_clusters: int, total_epochs: float = 200.0,
           batch_size: int = 1024) -> ml_collections.ConfigDict:
  """SeLaVi as trained on VGG-Sound (paper §4; the release's constants, `docs/papers_and_releases.md`):
  R(2+1)D-18 and ResNet-9, 10 heads in 2 groups, λ = 20, Gaussian prior; SGD 0.9, wd 1e-5, lr 0.01
  warmed up over 10 epochs to 0.01 × batch / 16 (the reference's 0.01 × number of GPUs at 16 clips
  each), then constant; seed 31; 30 frames at 30 fps, 112², 1 s of 24 kHz audio as a 257 × 99
  logfbank."""
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
  # Table 2 (method), Table 5 (kmeans) and Fig. 2 (robustness) on the training data; retrieval and
  # probes need UCF101/HMDB51 records (`evaluation.retrieval.dir`, `evaluation.probe.dirs`).
  config.evaluation.run = ('method', 'kmeans', 'robustness')
  # Retrieval and probes use 32-frame clips (SeLaVi's release, `docs/papers_and_releases.md`).
  config.evaluation.num_frames = 32
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
  shrink_evaluation(config)
  return config


def shrink_evaluation(config: ml_collections.ConfigDict) -> None:
  """`:tiny` evaluations: 2 views, 2 k-means runs, two degradation factors, the run's clip length."""
  evaluation = config.evaluation
  evaluation.batch_size, evaluation.num_frames = 16, 0
  evaluation.kmeans.runs = 2
  evaluation.robustness.update(dict(factors=(1, 4), baseline_runs=1))
  evaluation.retrieval.update(dict(clips=2, crops=1, ks=(1, 5), pool='avg'))
  evaluation.probe.update(dict(clips=2, crops=1))


def finetune(*, modality: str, records: str, folds: int, init_from: str,
             frozen: bool = False) -> ml_collections.ConfigDict:
  """SeLaVi's finetuning protocol (the release's `finetune_video.py`, `docs/papers_and_releases.md`),
  run fold by fold by `avssl/evaluation/finetune.py`: the pretrained encoder of `modality` (R(2+1)D-18
  or ResNet-9, as pretrained by `selavi`) + a fresh linear classifier; SGD momentum 0.9, batch 32,
  weight decay 5e-3 on both groups, head lr 0.0025 and backbone lr 0.00025 (`lr_multipliers`: 0.1, or 0
  for the frozen linear probe), warmed up ×8 over 2 epochs (`GradualWarmupScheduler(multiplier=8)`;
  linear per step here, per epoch there), ×0.05 at epochs 6 and 10 (as declared: the reference passes
  them relative to the warm-up's end, and its scheduler's bookkeeping applies them one epoch later), 12
  epochs; a reference epoch shows each video 10 times (`train_clips_per_video=10`), so every duration
  here is in passes over the data, ×10. A checkpoint per reference epoch, all kept, for the driver's
  selection on `finetune.val_split`. `records` is one records folder, or a pattern with `{fold}` filled
  with 1..`folds`. Video: 32 frames at 30 fps, short side U{128..160}, 128² crop, flip, colour jitter
  0.4/0.4/0.4 (no hue) with p = 0.8; test 10 clips × 3 crops of the 128-resized frames, logits
  averaged."""
  train_clips_per_video = 10  # Reference `--train_clips_per_video`.
  epochs = lambda e: float(e * train_clips_per_video)  # Reference epochs → passes over the data.
  config = loop_config(batch_size=32, total_epochs=epochs(12), seed=0)  # `--batch_size`, `--epochs`.
  config.method = 'finetune'
  config.init_from = init_from
  config.log_every_steps = 50
  config.checkpoint_every_epochs = epochs(1)  # The reference saves (and evaluates) every epoch.
  config.keep_checkpoints = None  # All: the driver restores each one for the selection on val.
  dirs = (tuple(records.format(fold=f) for f in range(1, folds + 1)) if '{fold}' in records
          else (records,))
  config.data = pipeline.default_config(
      dir=dirs[0], eval_split='val',  # `main.py` runs evaluate on val; the driver tests after it.
      num_frames=32, min_resize=128, max_resize=160, crop_size=128,  # `--clip_len`, `--augtype 1`.
      eval_resize=128, eval_clips=10, eval_crops=3,  # `--val_clips_per_video`, `--num_spatial_crops`.
      color_jitter=(0.4, 0.4, 0.4, 0.0), color_jitter_prob=0.8,  # `clip_augmentation`.
      with_video=modality == 'video', with_audio=modality == 'audio')
  config.model = ml_collections.ConfigDict(dict(
      video=encoders.encoder_config('r2plus1d', depth=18),
      audio=encoders.encoder_config('audio_resnet', depth=9),
      bn_momentum=0.9, bn_eps=1e-5, dtype='float32'))
  config.finetune = finetune_lib.default_config(modality=modality, dirs=dirs, freeze_backbone=frozen)
  config.optimizer = optim.default_optimizer_config(
      name='sgd', momentum=0.9, weight_decay=5e-3,  # `--momentum`, `--weight_decay`, `--wd_base`.
      lr_multipliers={modality: 0.0 if frozen else 0.1})  # `--base_lr` 0.00025 / `--head_lr`.
  config.schedule = optim.default_schedule_config(
      name='step', base_lr=0.0025, multiplier=8.0,  # `--head_lr`; the warm-up's `multiplier = 8`.
      warmup_epochs=epochs(2), decay_epochs=(epochs(6), epochs(10)),  # `--lr_warmup_epochs`,
      decay_rate=0.05)  # `--lr_milestones 6,10`, `--lr_gamma`.
  return config


def shrink_finetune(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`:tiny`: the same run at CPU-test size (small encoders, 4-frame 32² clips, 2 × 3 test views, a
  few steps), evaluated on 'test' because the test records have no 'val' split; no pretraining run."""
  config.batch_size = 16
  by_steps(config, total=4, checkpoint_every=2, warmup=2)
  config.log_every_steps = 1
  config.init_from = ''
  config.model.video = encoders.encoder_config('small', widths=(8, 16))
  config.model.audio = encoders.encoder_config('small', widths=(8, 16))
  config.data.update(dict(num_frames=4, min_resize=36, max_resize=40, crop_size=32, eval_resize=32,
                          eval_clips=2, eval_crops=3 if config.data.with_video else 1,
                          audio_seconds=0.4, shuffle_buffer=16, eval_split='test'))
  config.data.audio = audio.default_config('logmel')
  config.data.audio.num_mel_bins, config.data.audio.num_frames = 16, 16
  return config


def goca(*, records: str, backbone: str = 'r2plus1d', variant: str = 'goca',
         total_epochs: float = 500.0, batch_size: int = 640) -> ml_collections.ConfigDict:
  """GOCA as pretrained in the paper (§4 "Backbones and Training details"; the release's constants,
  `docs/papers_and_releases.md`), or one of its Table 1 baselines (`variant`: sview, avg, sep).

  R(2+1)D-18 (1×2×2-pooled, 2048-d, 112² crops from a short side in [128, 160]) or S3D (1024-d,
  128² crops from [136, 190]); RGB and flow (records made with `make_records --flow --fps=30`)
  share frame indices, crop and flip. Views: 2 clips of 32 consecutive frames (the codes' clips) +
  4 of 16 (the multi-temporal-resolution crops); colour jitter (0.4, 0.4, 0.2, 0.1) at p = 0.8,
  grayscale p = 0.2 and Gaussian blur p = 0.5 on RGB only. SGD + LARS (trust 0.001), momentum 0.9,
  weight decay 1e-4, lr 4.8 warmed up over 10 epochs then cosine to 0.0048, 64 GPUs × 10 clips,
  500 epochs. Tests: 10 clips × 3 crops of 32 frames, features averaged per video, streams
  averaged for the "+" rows. Both streams are normalised with one scalar mean/std (0.45/0.225,
  ImageNet's statistics rounded), as the pipeline feeds flow like an image.
  """
  if backbone not in ('r2plus1d', 's3d'):
    raise ValueError(f"backbone={backbone!r}; GOCA uses 'r2plus1d' or 's3d'")
  r2plus1d = backbone == 'r2plus1d'
  config = loop_config(batch_size=batch_size, total_epochs=total_epochs, seed=0)
  config.method = 'goca'
  short_side = (128, 160) if r2plus1d else (136, 190)
  config.data = pipeline.default_config(
      dir=records, eval_split='test', num_frames=32, multi_crop=((2, 32), (4, 16)),
      min_resize=short_side[0], max_resize=short_side[1], crop_size=112 if r2plus1d else 128,
      eval_resize=short_side[0], eval_clips=10, eval_crops=3, antialias=True,
      color_jitter=(0.4, 0.4, 0.2, 0.1), color_jitter_prob=0.8, grayscale_prob=0.2, blur_prob=0.5,
      with_flow=True, with_audio=False)
  pool = 'avg122' if r2plus1d else 'avg'
  config.model = ml_collections.ConfigDict(dict(
      video=encoders.encoder_config(backbone, depth=18, pool=pool),
      bn_momentum=0.9, bn_eps=1e-5, dtype='float32'))  # fp32 only, as released.
  config.goca = goca_lib.default_config(variant=variant)
  config.optimizer = optim.default_optimizer_config(name='lars', momentum=0.9, weight_decay=1e-4,
                                                    trust_coefficient=0.001)
  config.schedule = optim.default_schedule_config(name='warmup_cosine', base_lr=4.8,
                                                  warmup_epochs=10.0, end_lr_fraction=0.001)
  streams = ('video', 'flow', 'video + flow')
  config.evaluation.run = ('method', 'kmeans', 'retrieval')
  config.evaluation.kmeans.update(dict(encoders=('trained',), modalities=streams, joint='average'))
  config.evaluation.retrieval.update(dict(modalities=streams, clips=10, crops=3, pool=pool))
  config.evaluation.probe.update(dict(pool=pool))
  return config


def shrink_goca(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`:tiny`: the same run at CPU-test size: small encoders, clips of 4 + 2 frames at 32², 16
  prototypes separated in 100 steps, a few steps of 8 clips."""
  config.batch_size = 8
  by_steps(config, total=4, checkpoint_every=2, warmup=2)
  config.log_every_steps = 1
  config.model.video = encoders.encoder_config('small', widths=(8, 16))
  config.data.update(dict(num_frames=4, multi_crop=((2, 4), (2, 2)), min_resize=36, max_resize=40,
                          crop_size=32, eval_resize=36, eval_clips=2, eval_crops=1,
                          shuffle_buffer=16))
  config.goca.update(dict(num_prototypes=16, projection_hidden=32, projection_dim=16,
                          separation_steps=100))
  config.schedule.base_lr = 0.1
  shrink_evaluation(config)
  return config


def xdc(*, records: str, variant: str = 'xdc', num_clusters: int = 256, total_epochs: float = 120.0,
        batch_size: int = 256) -> ml_collections.ConfigDict:
  """XDC or one of its baselines (`variant`: sdc, mdc, cdc, xdc, xdc_same_video, xdc_same_audio) as
  pretrained in the paper (§3, §4.1; `docs/papers_and_releases.md`). Records at 30 fps with 16 kHz
  audio (`make_records --fps=30 --sample_rate=16000`). The optimiser, batch and epochs are in the
  paper's supplement, which is not public: DeepCluster's SGD (lr 0.05 at batch 256, momentum 0.9,
  weight decay 1e-5, constant), and 120 epochs, room for §4.2's "5 to 6 deep clustering iterations"
  of up to 20 epochs each."""
  config = loop_config(batch_size=batch_size, total_epochs=total_epochs, seed=0)
  config.method = 'xdc'
  config.data = pipeline.default_config(
      dir=records,
      num_frames=8,  # §4.1: clips of L = 8 frames (30 fps, a random start: temporal jittering).
      min_resize=256, max_resize=256, crop_size=224,  # §4.1: short side 256, random 224² crop.
      eval_resize=256,  # Feature passes: the centre 224² crop (§4.1's inference view).
      flip=False,  # §4.1 names no flip.
      audio_seconds=2.0,  # §4.1: 2 s of audio ...
      audio=audio.default_config('logmel'),  # ... as Q = 40 mel filters × P = 100 frames.
      volume_jitter=0.0)  # §4.1 names no audio augmentation.
  config.model = ml_collections.ConfigDict(dict(
      video=encoders.encoder_config('r2plus1d', depth=18),  # §4.1: R(2+1)D-18 ...
      audio=encoders.encoder_config('audio_resnet', depth=18),  # ... and ResNet-18.
      bn_momentum=0.9, bn_eps=1e-3,  # The released encoder's BN (`docs/papers_and_releases.md`).
      dtype='float32'))
  config.xdc = xdc_lib.default_config(variant=variant, num_clusters=num_clusters)
  config.optimizer = optim.default_optimizer_config(name='sgd', momentum=0.9, weight_decay=1e-5)
  config.schedule = optim.default_schedule_config(name='constant', base_lr=0.05)
  config.label = ml_collections.ConfigDict(dict(file='labels.csv'))
  config.evaluation.run = ('method', 'kmeans')  # Probes: add 'probe' and `evaluation.probe.dirs`.
  return config


def tiny_inputs(config: ml_collections.ConfigDict) -> None:
  """CPU-test encoders and inputs shared by the audio-visual `:tiny` variants: small encoders
  (widths 8-16), 4-frame 32² clips from a short side of 36, 0.4 s of audio as a 16 × 16 log-mel."""
  config.model.video = encoders.encoder_config('small', widths=(8, 16))
  config.model.audio = encoders.encoder_config('small', widths=(8, 16))
  config.data.update(dict(num_frames=4, min_resize=36, max_resize=36, crop_size=32, eval_resize=36,
                          audio_seconds=0.4, shuffle_buffer=16))
  config.data.audio.num_mel_bins, config.data.audio.num_frames = 16, 16


def shrink_xdc(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`:tiny`: the same run at CPU-test size: small encoders, 4-frame 32² clips, 0.4 s of audio as a
  16 × 16 log-mel, k <= 6, 6 steps in deep-clustering iterations of (at most) one epoch."""
  config.batch_size = 16
  by_steps(config, total=6, checkpoint_every=3)
  config.log_every_steps = 1
  tiny_inputs(config)
  config.xdc.update(dict(num_clusters=min(config.xdc.num_clusters, 6), epochs_per_iteration=1.0,
                         holdout_fraction=0.25 if config.xdc.holdout_fraction else 0.0))
  shrink_evaluation(config)
  return config


def iicl(*, records: str, num_clusters: int = 400, init_epochs: float = 300.0,
         total_epochs: float = 600.0, batch_size: int = 256) -> ml_collections.ConfigDict:
  """IICL as pretrained in the paper (§III, §IV-B): R(2+1)D-18 on
  32 frames at 30 fps resized to 128², audio ResNet-18 on 2 s as 40 mel × 100 frames (records made
  with `make_records --fps=30 --sample_rate=16000`), one co-attention block, g_ins to 1024-d and g_clu
  to C clusters; L_ins alone for `init_epochs` (300), then L_ins + 0.5·L_clu to `total_epochs` (300
  more); Adam, lr 5e-4, weight decay 1e-6, batch 256. The paper names no augmentation: a random
  128² crop of the 128-short-side frames, no flip, no volume jitter."""
  config = loop_config(batch_size=batch_size, total_epochs=total_epochs, seed=0)
  config.method = 'iicl'
  config.data = pipeline.default_config(
      dir=records, num_frames=32, min_resize=128, max_resize=128, crop_size=128, eval_resize=128,
      flip=False, audio_seconds=2.0, audio=audio.default_config('logmel'), volume_jitter=0.0)
  config.model = ml_collections.ConfigDict(dict(
      video=encoders.encoder_config('r2plus1d', depth=18),
      audio=encoders.encoder_config('audio_resnet', depth=18),
      bn_momentum=0.9, bn_eps=1e-5, dtype='float32'))  # PyTorch's BN defaults (no code released).
  config.iicl = iicl_lib.default_config(num_clusters=num_clusters, init_epochs=init_epochs)
  config.optimizer = optim.default_optimizer_config(name='adam', weight_decay=1e-6)
  config.schedule = optim.default_schedule_config(name='constant', base_lr=5e-4)
  config.label = ml_collections.ConfigDict(dict(dir='', split='train', file='labels.csv'))
  # Table II / III (method) and encoder k-means; retrieval (§IV-C1: R@1-20 of the video encoder's
  # pooled feature, 10 clips) and probes need UCF101/HMDB51 records: `evaluation.retrieval.dir`.
  config.evaluation.run = ('method', 'kmeans')
  config.evaluation.retrieval.update(dict(pool='avg', ks=(1, 5, 10, 20)))
  return config


def shrink_iicl(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`:tiny`: the same run at CPU-test size: small encoders, 4-frame 32² clips, 0.4 s of audio as a
  16 × 16 log-mel, a 16-wide co-attention, C <= 6, 4 steps with co-training from step 2 (when both
  levels train)."""
  config.batch_size = 16
  by_steps(config, total=4, checkpoint_every=2)
  config.log_every_steps = 1
  tiny_inputs(config)
  s = config.iicl
  s.update(dict(num_clusters=min(s.num_clusters, 6), instance_dim=16, kmeans_runs=2))
  s.co_attention.update(dict(width=16, num_heads=2, mlp_ratio=2.0))
  if len(s.losses) == 2:
    s.init_epochs, s.init_steps = None, 2
  shrink_evaluation(config)
  return config
