r"""Full finetuning of the SeLaVi video encoder on UCF101, its 3 official splits (SeLaVi Table A.3;
protocol of the authors' release, `finetune_video.py`: `build` below).

    for fold in 1 2 3; do python -m avssl.data_prep.make_records --dataset=ucf101 --input=~/ucfTrainTestlist \
        --video_dir=~/UCF-101 --fold=$fold --val_fraction=0.1 --output_dir=~/records/ucf101_$fold; done
    python -m avssl.main --mode=finetune --config=configs/finetune_ucf101.py \
        --workdir=runs/finetune_ucf101 --config.init_from=runs/selavi_vggsound

Each fold trains on its 'train' split, selects the epoch on 'val' (carved out of train by
make_records), and reports only that epoch on 'test'; `finetune.json` has the mean ± std over folds.
Arguments: `records` (a pattern with {fold}), `folds`, `init_from` (the pretraining run's workdir;
'' trains from scratch), `frozen` (the linear probe: encoder and its BatchNorm statistics fixed, head
only), `tiny` (CPU-test size).
"""

import ml_collections

from avssl import config_lib, optim
from avssl.data import audio, pipeline
from avssl.methods import finetune as finetune_lib
from avssl.models import encoders
from configs import common


def build(*, modality: str, records: str, folds: int, init_from: str,
          frozen: bool) -> ml_collections.ConfigDict:
  """SeLaVi's finetuning protocol (SeLaVi Table A.3, run as its release's `finetune_video.py`; the
  flags named below are that script's), fold by fold by `avssl/modes/finetune.py`: the pretrained
  encoder of `modality` (R(2+1)D-18 or ResNet-9, as `selavi_vggsound.py` pretrains them) + a fresh
  linear classifier. The release's warm-up is per epoch, linear per step here; its milestones are
  declared as here (it passes them relative to the warm-up's end, and its scheduler's bookkeeping
  applies them one epoch later). A release epoch shows each video 10 times, so every duration here is
  in passes over the data, ×10. A checkpoint per release epoch, all kept, for the driver's selection on
  `finetune.val_split`. `records` is one records folder, or a pattern with `{fold}` filled with
  1..`folds`; `frozen` is the linear probe (encoder lr 0, BatchNorm statistics fixed)."""
  train_clips_per_video = 10  # `--train_clips_per_video`.
  epochs = lambda e: float(e * train_clips_per_video)  # Release epochs → passes over the data.
  config = common.loop_config(
      batch_size=32,  # `--batch_size`.
      total_epochs=epochs(12),  # `--epochs`.
      seed=0)  # Not in the release's command.
  config.method = 'finetune'
  config.init_from = init_from
  config.log_every_steps = 50
  config.checkpoint_every_epochs = epochs(1)  # The release saves (and evaluates) every epoch.
  config.keep_checkpoints = None  # All: the driver restores each one for the selection on val.
  dirs = (tuple(records.format(fold=f) for f in range(1, folds + 1)) if '{fold}' in records
          else (records,))
  config.data = pipeline.default_config(
      dir=dirs[0], eval_split='val',  # `main.py` runs evaluate on val; the driver tests after it.
      num_frames=32,  # `--clip_len`, at 30 fps.
      min_resize=128, max_resize=160, crop_size=128,  # `--augtype 1`: short side U{128..160}, 128².
      flip=True,
      eval_resize=128, eval_clips=10, eval_crops=3,  # `--val_clips_per_video`, `--num_spatial_crops`.
      color_jitter=(0.4, 0.4, 0.4, 0.0), color_jitter_prob=0.8,  # `clip_augmentation`, no hue.
      audio=audio.default_config('logfbank'),  # The pretraining front end (`selavi_vggsound.py`).
      with_video=modality == 'video', with_audio=modality == 'audio')
  config.model = common.model_config(
      video=encoders.encoder_config('r2plus1d', depth=18),
      audio=encoders.encoder_config('audio_resnet', depth=9),
      bn_momentum=0.9, bn_eps=1e-5)
  config.finetune = finetune_lib.default_config(modality=modality, dirs=dirs, freeze_backbone=frozen)
  config.optimizer = optim.default_optimizer_config(
      name='sgd', momentum=0.9, weight_decay=5e-3,  # `--momentum`, `--weight_decay`, `--wd_base`.
      lr_multipliers={modality: 0.0 if frozen else 0.1})  # `--base_lr` 0.00025 / `--head_lr`.
  config.schedule = optim.default_schedule_config(
      name='step', base_lr=0.0025, multiplier=8.0,  # `--head_lr`; the warm-up's `multiplier = 8`.
      warmup_epochs=epochs(2), decay_epochs=(epochs(6), epochs(10)),  # `--lr_warmup_epochs`,
      decay_rate=0.05)  # `--lr_milestones 6,10`, `--lr_gamma`.
  return config


def shrink(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`:tiny`: the same run at CPU-test size (small encoders, 4-frame 32² clips, 2 × 3 test views, a
  few steps), evaluated on 'test' because the test records have no 'val' split; no pretraining run."""
  config.batch_size = 16
  common.by_steps(config, total=4, checkpoint_every=2, warmup=2)
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


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, tiny=False, accel=False, frozen=False,
                             records='~/records/ucf101_{fold}', folds=3,
                             init_from='runs/selavi_vggsound')
  config = build(modality='video', records=arg.records, folds=arg.folds, init_from=arg.init_from,
                 frozen=arg.frozen)
  config = shrink(config) if arg.tiny else config
  return common.accelerate(config) if arg.accel else config
