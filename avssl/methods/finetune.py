"""Supervised finetuning of one pretrained encoder on a labelled dataset (UCF101, HMDB51, ESC-50).

The SeLaVi protocol (the release's `finetune_video.py`, `docs/papers_and_releases.md`): the encoder of
one modality, its pooled feature, optional dropout (off by default, as the reference's
`use_dropout=False`) and a linear classifier with orthogonal weights and zero bias, trained with
softmax cross-entropy on `label`. The encoder is the submodule named `video` or `audio`, as in the
pretraining models, so `config.init_from` (`train.initialise_from`) copies a pretraining run's encoder
weights and BatchNorm statistics by name; the classifier is named `finetune_head`, a name no
pretraining model uses, so it always starts fresh.

`config.finetune.freeze_backbone` is the honest linear probe: the encoder runs in inference mode (its
BatchNorm uses and keeps its running statistics) behind a stop-gradient, and the optimiser's
`lr_multipliers` must give the encoder factor 0 (checked here), so weight decay cannot move it either:
backbone weights and statistics stay bit-identical. The reference's `--feature_extract` left the
backbone in train mode, so its statistics drifted.

Evaluation reads the views the evaluation split gives (`[B, V, ...]`, V = clips × crops) and reports
top-1 accuracy per view (clip level) and per video, from the per-view logits averaged over the V views
(`aggregate='logits'`, what the reference's `aggregrate_video_accuracy` averages) or the per-view
softmax averaged (`aggregate='softmax'`, the usual reading of XDC's "average their predictions").
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from avssl import preemption, sharding
from avssl.data import on_device
from avssl.evaluation import features as features_lib
from avssl.methods import base
from avssl.models import encoders
from avssl.models.common import Norm
from avssl.train_state import TrainState

MODALITIES = ('video', 'audio')
AGGREGATES = ('logits', 'softmax')
HEAD = 'finetune_head'


def default_config(**overrides) -> ml_collections.ConfigDict:
  """Every key of `config.finetune`: the method's (modality, classes, dropout, freezing, view
  aggregation) and the driver's (`avssl/modes/finetune.py`: fold dirs, the selection and test
  splits, the checkpoint-selection metric and the evaluation batch size; 0 means `batch_size`)."""
  config = ml_collections.ConfigDict(dict(
      modality='video', num_classes=0, dropout=0.0, freeze_backbone=False, aggregate='logits',
      dirs=(), val_split='val', test_split='test', select_metric='accuracy_video',
      eval_batch_size=0))
  config.update(overrides)
  return config


class FinetuneModel(nn.Module):
  """One encoder (`video` or `audio`; the other is None) → dropout → linear classifier."""
  video: nn.Module | None
  audio: nn.Module | None
  num_classes: int
  dropout: float = 0.0
  frozen: bool = False

  @nn.compact
  def __call__(self, video: jax.Array | None = None, audio: jax.Array | None = None, *,
               train: bool) -> jax.Array:
    encoder, x = (self.video, video) if self.video is not None else (self.audio, audio)
    assert encoder is not None, 'FinetuneModel needs a video or an audio encoder'
    features = encoder(x, train and not self.frozen)
    if self.frozen:
      features = jax.lax.stop_gradient(features)
    features = nn.Dropout(self.dropout, deterministic=not train)(features.astype(jnp.float32))
    # The reference's `_initialize_weights`: orthogonal weight (gain 1), zero bias.
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.orthogonal(),
                    bias_init=nn.initializers.zeros, name=HEAD)(features)


def num_classes(config: ml_collections.ConfigDict, classes: Sequence[str] = ()) -> int:
  """`config.finetune.num_classes`, else `config.data.num_classes`, else the run's data's `classes`
  (known without its records in a run opened by `avssl.load_run`), else the records manifest's."""
  if config.finetune.num_classes:
    return int(config.finetune.num_classes)
  if config.data.get('num_classes'):
    return int(config.data.num_classes)
  if classes:
    return len(classes)
  if config.data.name == 'records':
    from avssl.data import pipeline  # pylint: disable=g-import-not-at-top
    classes = pipeline.read_manifest(config.data.dir).get('classes', [])
    if classes:
      return len(classes)
  raise ValueError('finetune: set config.finetune.num_classes (the data names no classes)')


def view_accuracies(logits: jax.Array, labels: jax.Array, mask: jax.Array,
                    aggregate: str = 'logits') -> dict[str, jax.Array]:
  """Sums over the real examples of a batch of per-view logits `[B, V, K]`: video-level top-1 and
  top-5 hits (views aggregated by `aggregate`), clip-level top-1 hits (the fraction of an example's
  views that are right), the video-level cross-entropy, and the count."""
  if aggregate == 'logits':
    video = logits.mean(axis=1)
  elif aggregate == 'softmax':
    video = jnp.log(jax.nn.softmax(logits, axis=-1).mean(axis=1))
  else:
    raise ValueError(f"config.finetune.aggregate={aggregate!r}; use 'logits' or 'softmax'")
  safe = jnp.maximum(labels, 0)  # Padding rows carry label -1; their mask is 0.
  top5 = jax.lax.top_k(video, min(5, video.shape[-1]))[1]
  hits5 = (top5 == safe[:, None]).any(axis=-1)
  clip = (logits.argmax(-1) == safe[:, None]).mean(axis=1)
  loss = optax.softmax_cross_entropy_with_integer_labels(video, safe)
  return {'video_top1': ((video.argmax(-1) == safe) * mask).sum(),
          'video_top5': (hits5 * mask).sum(), 'clip_top1': (clip * mask).sum(),
          'loss': (loss * mask).sum(), 'count': mask.sum()}


class Finetune(base.Method):
  """Cross-entropy finetuning (or a frozen linear probe) of one encoder; see the module docstring.
  Implements `HasEncoders`."""

  def __init__(self, config: ml_collections.ConfigDict, context: base.RunContext | None = None):
    super().__init__(config, context)
    self.settings = config.finetune
    modality = self.settings.modality
    if modality not in MODALITIES:
      raise ValueError(f'config.finetune.modality={modality!r}; use one of {MODALITIES}')
    self.modality = modality
    self.inputs = (modality,)
    if self.settings.freeze_backbone:
      factor = dict(config.optimizer.get('lr_multipliers') or {}).get(modality)
      if factor != 0:
        raise ValueError(
            f'config.finetune.freeze_backbone needs config.optimizer.lr_multipliers.{modality}=0 '
            f'(it is {factor}): otherwise weight decay and momentum still move the frozen encoder')
    if self.settings.aggregate not in AGGREGATES:
      raise ValueError(f'config.finetune.aggregate={self.settings.aggregate!r}; use one of '
                       f'{AGGREGATES}')

  def build_model(self) -> nn.Module:
    norm = Norm.from_config(self.config.model)
    video = audio = None
    if self.modality == 'video':
      video = encoders.video_encoder(self.config.model.video, norm)
    else:
      audio = encoders.audio_encoder(self.config.model.audio, norm)
    classes = self._context.data.classes if self._context is not None else ()
    return FinetuneModel(video=video, audio=audio, num_classes=num_classes(self.config, classes),
                         dropout=float(self.settings.dropout),
                         frozen=bool(self.settings.freeze_backbone))

  def loss(self, params, state: TrainState, batch, rng):
    variables = {'params': params, 'batch_stats': state.batch_stats}
    inputs = {self.modality: batch[self.modality]}
    if self.settings.freeze_backbone:  # Inference-mode encoder: no statistic is touched.
      logits = self.model.apply(variables, **inputs, train=True, rngs={'dropout': rng})
      batch_stats = state.batch_stats
    else:
      logits, updates = self.model.apply(variables, **inputs, train=True, rngs={'dropout': rng},
                                         mutable=['batch_stats'])
      batch_stats = updates['batch_stats']
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
    accuracy = (logits.argmax(-1) == batch['label']).mean()
    return loss, base.StepOutput(batch_stats, {'accuracy': accuracy}, state.method_state)

  def view_logits(self, state: TrainState, batch) -> jax.Array:
    """Eval-mode logits `[B, V, K]` of every view (V = 1 when the batch has one view per example)."""
    x = on_device.normalize_input(self.modality, batch[self.modality],
                                  *on_device.scale(self.config.data))
    return _view_logits(self.model, self.modality, state.params, state.batch_stats, x)

  def encoders(self, state: TrainState) -> dict[str, base.Encoder]:
    """`HasEncoders`: the finetuned encoder."""
    m = self.modality
    return {m: base.Encoder(getattr(self.model, m), {
        'params': state.params[m], 'batch_stats': state.batch_stats.get(m, {})}, m)}

  def evaluate(self, state: TrainState, batches: Iterator[base.Batch]) -> dict[str, float]:
    """Top-1 (and top-5) accuracy at video level over the views, top-1 at clip level, and the
    video-level cross-entropy (`eval_loss`), over the real examples of `batches`."""
    totals: dict[str, float] = {}
    for batch in batches:
      preemption.check()
      batch = sharding.to_global(batch, self.context.mesh)
      sums = jax.device_get(_batch_sums(self.model, self.modality, self.settings.aggregate,
                                        on_device.scale(self.config.data), state.params,
                                        state.batch_stats, batch[self.modality], batch['label'],
                                        batch['mask']))
      for key, value in sums.items():
        totals[key] = totals.get(key, 0.0) + float(value)
    count = totals.get('count', 0.0)
    if not count:
      return {}
    return {'accuracy_video': totals['video_top1'] / count,
            'accuracy_video_top5': totals['video_top5'] / count,
            'accuracy_clip': totals['clip_top1'] / count,
            'eval_loss': totals['loss'] / count, 'num_videos': count}

  def report(self, results: dict[str, float]) -> str | None:
    if not results:
      return None
    return ('| video top-1 | video top-5 | clip top-1 | videos |\n|---|---|---|---|\n'
            f'| {100 * results["accuracy_video"]:.2f} | {100 * results["accuracy_video_top5"]:.2f} | '
            f'{100 * results["accuracy_clip"]:.2f} | {int(results["num_videos"])} |')


def _view_logits(model: nn.Module, modality: str, params, batch_stats, x: jax.Array) -> jax.Array:
  """Views go through the network one at a time (`lax.map`), so memory is that of one view's batch."""
  apply = lambda v: model.apply({'params': params, 'batch_stats': batch_stats}, **{modality: v},
                                train=False)
  if x.ndim == features_lib.RANK[modality] + 1:
    return apply(x)[:, None]
  return jnp.moveaxis(jax.lax.map(apply, jnp.moveaxis(x, 1, 0)), 0, 1)


# Module-level with the (hashable, compared by value) model static, so every run and the finetuning
# driver's restored checkpoints share one compilation per batch shape. `scale` (the data's mean and
# std) normalises uint8 inputs here, on the device (`on_device.normalize_input`).
@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _batch_sums(model: nn.Module, modality: str, aggregate: str, scale: on_device.Scale, params,
                batch_stats, x: jax.Array, labels: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
  x = on_device.normalize_input(modality, x, *scale)
  return view_accuracies(_view_logits(model, modality, params, batch_stats, x), labels, mask,
                         aggregate)
