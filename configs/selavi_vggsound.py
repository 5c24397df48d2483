"""SeLaVi on VGG-Sound (paper §4, Tables 2, 3, 5): K = 309, 10 heads in 2 groups, λ = 20, 200 epochs.

    python -m avssl.data_prep.make_records --dataset=vggsound --input=vggsound.csv \
        --video_dir=~/vggsound --sample_rate=24000 --output_dir=~/records/vggsound
    python -m avssl.main --config=configs/selavi_vggsound.py --workdir=runs/selavi_vggsound \
        --config.data.dir=~/records/vggsound

The recipe is the paper's where the paper states it (§3 for the method, §4 "Training details") and
otherwise the authors' release (its `master.sh` launch settings, its data loader and model): the paper
defers the rest to its Appendix A.2. The records carry the frame rate and audio sample rate
(`make_records` resamples to 30 fps and, with `--sample_rate=24000`, 24 kHz mono). The other SeLaVi
configs (Kinetics, Kinetics-Sound, AVE, the SeLa/Concat baselines, the demo) start from this one and
change what their experiment changes.

Table 3 (the ablation, "evaluated at 100 epochs") is this file's arguments `table3` (100 epochs) and
`no_ma`, `no_g`, `no_dh` (each removes one of SeLaVi's improvements): row (g) is `:table3`, (f)
`:table3,no_dh`, (e) `:table3,no_g`, (d) `:table3,no_ma`, (c) `:table3,no_ma,no_g,no_dh`; rows (a) and
(b) are `sela_vggsound.py:table3` and `concat_vggsound.py:table3`.
`:tiny` is the same run at CPU-test size.
"""

import ml_collections

from avssl import config_lib, optim
from avssl.data import audio, pipeline
from avssl.methods import selavi as selavi_lib
from avssl.models import encoders
from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False, table3=False, no_ma=False, no_g=False,
                             no_dh=False)
  config = common.loop_config(
      batch_size=1024,  # Release: 16 clips per GPU × 64 GPUs.
      total_epochs=200.0,  # §4 "Training details": SGD for 200 epochs.
      seed=31)  # Release: seed 31.
  config.method = 'selavi'
  config.data = pipeline.default_config(
      dir='~/records/vggsound',
      eval_split='train',  # Table 2 labels the training videos themselves (transductive).
      num_frames=30,  # Release: 30 frames = 1 s at 30 fps, a uniformly random start.
      min_resize=128, max_resize=160,  # Release: short side U{128..160} ...
      crop_size=112,  # ... then a random 112² crop.
      eval_resize=112,  # Release: evaluation views at short side 112, the centre 112² crop ...
      eval_clips=1,  # ... of the centre clip (its cluster export: Table 2, Fig. 2, labels.csv).
      flip=True,  # Release: horizontal flip, p = 0.5; its colour jitter and grayscale are off.
      mean=0.45, std=0.225,  # Release: one scalar mean / std on every channel.
      audio_seconds=1.0,  # Release: 1 s of 24 kHz mono audio from the clip's start ...
      audio_align='start',
      audio=audio.default_config('logfbank'),  # ... as a 257 × 99 logfbank (20 ms / 10 ms).
      volume_jitter=0.1)  # Release: volume × U(0.9, 1.1).
  config.model = common.model_config(
      video=encoders.encoder_config('r2plus1d', depth=18),  # §4 "Training details": R(2+1)D-18 ...
      audio=encoders.encoder_config('audio_resnet', depth=9),  # ... and a 9-layer audio ResNet.
      bn_momentum=0.9, bn_eps=1e-5)  # Release: PyTorch's BatchNorm defaults (momentum 0.1), synced.
  config.selavi = selavi_lib.default_config(
      num_clusters=309,  # §4 "Datasets": K = the number of classes, VGG-Sound's 309.
      num_heads=10, num_groups=2,  # §3 "Decorrelated clustering heads"; release: 10 heads, 2 groups.
      lam=20.0,  # λ of Eq. (3), applied to the modalities' product (Eq. 6); release: 20.
      prior='gaussian', prior_sd=0.1,  # §3 Gaussian marginals (Table 3 G); release: N/K·(1 + 0.1·ε).
      alignment=True,  # §3 "Modality alignment", Eq. (7) (Table 3 MA).
      num_label_updates=100, schedule_power=1.5,  # Release: 100 SK points spaced by power 1.5.
      bn_warmup_batches=20,  # Release: 20 batches of BatchNorm statistics before the first SK.
      head_hidden=512, head_dropout=0.3)  # Release: MLP heads 512-512-K with dropout 0.3.
  config.optimizer = optim.default_optimizer_config(
      name='sgd', momentum=0.9, weight_decay=1e-5)  # §4 "Training details".
  config.schedule = optim.default_schedule_config(
      name='warmup_constant',  # Release: no decay after the warm-up.
      base_lr=0.01,  # Release: base lr 0.01 ...
      multiplier=config.batch_size / 16,  # ... warmed up to 0.01 × the GPUs (16 clips each) ...
      warmup_epochs=10.0)  # ... over 10 epochs.
  config.label = common.label_config()
  # Table 2 (method), Table 5 (kmeans) and Fig. 2 (robustness) on the training data; retrieval and
  # probes need UCF101/HMDB51 records (`evaluation.retrieval.dir`, `evaluation.probe.dirs`).
  config.evaluation.run = ('method', 'kmeans', 'robustness')
  config.evaluation.num_frames = 32  # Table 4: retrieval and probes use 32-frame clips.
  ablate(config, no_ma=arg.no_ma, no_g=arg.no_g, no_dh=arg.no_dh)
  if arg.table3:
    table3(config)
  config = shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config


def ablate(config: ml_collections.ConfigDict, *, no_ma: bool, no_g: bool, no_dh: bool) -> None:
  """Table 3's ablations of SeLaVi (rows c-f; its columns MA, G, DH): `no_ma` skips the modality
  alignment (§3.3, Eq. 7), `no_g` makes the cluster marginals uniform (SeLa's, §3.1) instead of
  Gaussian (§3.2), `no_dh` labels every head from one pass over the data with one draw of
  augmentations instead of a pass per group (§3.3 "Decorrelated clustering heads"; the heads stay 10,
  as in SeLa, which that paragraph improves on; the release's `ind_groups` 1)."""
  if no_ma:
    config.selavi.alignment = False
  if no_g:
    config.selavi.prior = 'uniform'
  if no_dh:
    config.selavi.num_groups = 1


def table3(config: ml_collections.ConfigDict) -> None:
  """`:table3`: the length of Table 3's runs, 100 epochs (its caption). The label updates keep their
  number and spacing over the shorter run, as the release places them over the run's own epochs
  (`epochs · N · linspace(0, 1, 100)^1.5`); the learning-rate warm-up keeps its 10 epochs."""
  config.total_epochs = 100.0


def shrink(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`:tiny`: the same run at CPU-test size (small encoders, 4-frame 32² clips, a few steps)."""
  config.batch_size = 16
  common.by_steps(config, total=4, checkpoint_every=2, warmup=2)
  config.log_every_steps = 1
  config.schedule.multiplier = 1.0
  config.model.video = encoders.encoder_config('small', widths=(8, 16))
  config.model.audio = encoders.encoder_config('small', widths=(8, 16))
  config.data.update(dict(num_frames=4, min_resize=36, max_resize=40, crop_size=32,
                          eval_resize=36, audio_seconds=0.4, shuffle_buffer=16))
  config.data.audio = audio.default_config('logmel')
  config.data.audio.num_mel_bins, config.data.audio.num_frames = 16, 16
  # Fewer clusters, heads and hidden units, never more (Concat keeps its one head, SeLa its linear ones).
  s = config.selavi
  s.update(dict(num_clusters=min(s.num_clusters, 6), num_heads=min(s.num_heads, 2),
                num_label_updates=3, bn_warmup_batches=2, head_hidden=min(s.head_hidden, 16)))
  common.shrink_evaluation(config)
  return config

