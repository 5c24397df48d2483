"""Helpers shared by the files in `configs/`: the keys every run declares, the `:tiny` shrinkers and
the `:accel` settings.

A recipe (`selavi_vggsound.py`, `xdc_kinetics.py`, ...) states its paper's numbers itself; what is
here holds no paper number, only the loop's and the evaluations' keys (every key a method reads
exists, so the locked config rejects a misspelt override at start), the CPU-test sizes and the
precision, memory and input settings of a run on a GPU or TPU.
"""

from __future__ import annotations

import ml_collections

from avssl import config_lib
from avssl.data import audio
from avssl.models import encoders


def loop_config(*, batch_size: int, total_epochs: float, seed: int) -> ml_collections.ConfigDict:
  """The keys of the shared loop (`avssl/loop.py`)."""
  config = ml_collections.ConfigDict()
  config.seed = seed
  config.batch_size = batch_size
  config.total_epochs = config_lib.optional(float)
  config.total_steps = config_lib.optional(int)
  config.total_epochs = total_epochs
  config.log_every_steps = 50  # Metrics are fetched, checked for NaN/Inf and logged this often.
  config.prefetch_batches = 2  # Global batches on their way to the devices ahead of the step.
  config.profile_start_step = -1  # Trace steps from this one into <workdir>/profile (-1: never),
  config.profile_num_steps = 5  # this many, on process 0 (TensorBoard's profile plugin, Perfetto).
  config.eval_every_epochs = config_lib.optional(float)
  config.eval_every_steps = config_lib.optional(int)
  config.checkpoint_every_epochs = config_lib.optional(float)
  config.checkpoint_every_steps = config_lib.optional(int)
  config.checkpoint_every_epochs = 5.0
  config.keep_checkpoints = 3
  # Also save right after every update that reads the dataset (SeLaVi's label updates, XDC's
  # clusterings), so that a preemption or crash never costs a finished pass (methods without such
  # updates are unaffected).
  config.checkpoint_after_update = True
  config.checkpoint_dir = ''  # Where checkpoints go ('' = <workdir>/checkpoints); a path or a URL.
  config.init_from = ''  # Another run's workdir whose weights start this run (matching names/shapes).
  config.allow_untrained = False  # Let eval, label and init_from use the random initialisation.
  # A persistent XLA compilation cache ('' = off): a rerun, resume or label pass on the same kind of
  # machine loads its compiled steps instead of compiling them (minutes for the paper models).
  config.compilation_cache_dir = ''
  config.distributed = config_lib.distributed_config()
  config.evaluation = evaluation_config()
  return config


def model_config(*, bn_momentum: float, bn_eps: float, **fields) -> ml_collections.ConfigDict:
  """`config.model`: the recipe's encoders and BatchNorm (`fields`, `bn_momentum`, `bn_eps`) and the
  precision and memory keys every method reads through `avssl.models.common.Norm`: `dtype` (the
  activations'; 'float32' as in every paper) and `remat` / `remat_policy` ('none', i.e. no
  rematerialisation; see `common.Norm`), so that any locked config accepts e.g.
  `--config.model.remat=blocks`."""
  return ml_collections.ConfigDict(dict(
      **fields, bn_momentum=bn_momentum, bn_eps=bn_eps, dtype='float32', remat='none',
      remat_policy='nothing_saveable'))


def accelerate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`:accel`, for a GPU or TPU (after `:tiny` where both are given): bfloat16 activations
  (`model.dtype`; parameters, BatchNorm statistics and the losses stay float32, see
  `avssl/models/common.py`), the encoders' blocks recomputed in the backward pass instead of kept
  (`model.remat='blocks'`: the memory a paper's per-device batch needs), and video and flow sent to
  the device as uint8 and normalised in the jitted step (`data.normalize_on_device`: a quarter of
  the bytes from host to device). Parameters keep their shapes and dtypes, so checkpoints are those
  of the float32 run."""
  config.model.dtype = 'bfloat16'
  config.model.remat = 'blocks'
  config.data.normalize_on_device = True
  return config


def evaluation_config(**overrides) -> ml_collections.ConfigDict:
  """What `--mode=eval` runs (`run`, in order) and each evaluation's protocol switches
  (`avssl/modes/evaluate.py`). 'method' is the method's own evaluation (SeLaVi: Table 2); the others
  measure any method's encoders with one shared protocol. Views and pooling follow SeLaVi §4 and its
  release's evaluation: retrieval 10 clips × 1 centre crop of the max-pooled 9216-d R(2+1)D map;
  probes 10 clips × 3 crops of the 512-d average; k-means k = number of classes (0), 50 runs (GOCA);
  a joint "a + b" feature concatenates the normalised features (`joint='concat'`) or averages them
  (`'average'`, GOCA's "+" rows). Retrieval's "a + b" rows average the streams' normalised views.
  `batch_size` 0 means 8 videos per device; `num_frames` 0 keeps the training clip length.
  `factors.file`, a CSV of per-video factors (camera, date, ...), adds the nuisance report (the NMI of
  every clustering against each factor, `avssl/evaluation/factors.py`) to `--mode=eval` and the best
  factor of each cluster to `--mode=label`'s browser; numeric or date columns with more than
  `max_categories` distinct values are cut into `bins` quantile bins."""
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
      robustness=dict(factors=(1, 4, 8, 16), views=('video', 'video + audio'), baseline_runs=5),
      factors=dict(file='', bins=10, max_categories=20)))
  for key, value in overrides.items():
    config[key] = value
  return config


def label_config() -> ml_collections.ConfigDict:
  """What `--mode=label` writes, the same keys for every clustering method: the videos of the records
  `dir` (split `split`; '' labels the training data), into `file` in the workdir, with each view's
  soft assignments beside it when `save_probs` (SeLaVi only)."""
  return ml_collections.ConfigDict(dict(dir='', split='train', file='labels.csv', save_probs=False))


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


def tiny_inputs(config: ml_collections.ConfigDict) -> None:
  """CPU-test encoders and inputs shared by the audio-visual `:tiny` variants: small encoders
  (widths 8-16), 4-frame 32² clips from a short side of 36, 0.4 s of audio as a 16 × 16 log-mel."""
  config.model.video = encoders.encoder_config('small', widths=(8, 16))
  config.model.audio = encoders.encoder_config('small', widths=(8, 16))
  config.data.update(dict(num_frames=4, min_resize=36, max_resize=36, crop_size=32, eval_resize=36,
                          audio_seconds=0.4, shuffle_buffer=16))
  config.data.audio.num_mel_bins, config.data.audio.num_frames = 16, 16


def shrink_evaluation(config: ml_collections.ConfigDict) -> None:
  """`:tiny` evaluations: 2 views, 2 k-means runs, two degradation factors, the run's clip length."""
  evaluation = config.evaluation
  evaluation.batch_size, evaluation.num_frames = 16, 0
  evaluation.kmeans.runs = 2
  evaluation.robustness.update(dict(factors=(1, 4), baseline_runs=1))
  evaluation.retrieval.update(dict(clips=2, crops=1, ks=(1, 5), pool='avg'))
  evaluation.probe.update(dict(clips=2, crops=1))
