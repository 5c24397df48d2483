"""XDC: self-supervised learning by cross-modal audio-video clustering (Alwassel et al., NeurIPS 2020),
with the paper's baselines SDC, MDC, CDC and same-modality XDC as configurations (§3, Table 1).

Deep clustering (§3.1, after DeepCluster) alternates clustering and training. A deep-clustering
iteration starts with a label update of the shared loop: the current encoders run in eval mode over
every training clip; their pooled features are L2-normalised (optionally PCA-whitened as DeepCluster
does, `pca_dim`) and clustered by the sharded k-means of `avssl/clustering/kmeans.py` (k-means++,
empty clusters re-seeded), with the N × D features left on their devices' rows throughout; the cluster
ids become the pseudo-labels in the method state (so a checkpoint holds them and a resumed run trains
on the same ones); the linear classification heads and their optimiser state are re-initialised, as
cluster ids are permuted between iterations; then the encoders and heads train on softmax
cross-entropy until the iteration ends.

The variants differ only in which features are clustered and which head predicts which clusters
(`wiring`, §3.2):
  - 'sdc': k-means on each encoder's own features; each encoder predicts its own clusters.
  - 'mdc': the same two clusterings; each encoder has two heads, one per modality's clusters.
  - 'cdc': one k-means on the concatenation of the separately L2-normalised features; both encoders
    predict it.
  - 'xdc': k-means on each modality; the video encoder predicts the audio clusters and the audio
    encoder the video clusters.
  - 'xdc_same_video', 'xdc_same_audio': XDC with two encoders of one modality (Table 1's last
    columns), each predicting the other's clusters; both see the same clip.

An iteration ends after `epochs_per_iteration` epochs (`stop='epochs'`), or (`stop='plateau'`) when the
pseudo-label loss of a held-out `holdout_fraction` of the training clips has not improved for
`patience` epochs, at the latest after `epochs_per_iteration`: the authors train "until the validation
loss saturates" (`docs/papers_and_releases.md`). Held-out clips stay in the data stream and in
the k-means but not in the loss: the training step only adds up their cross-entropy (no gradient), and
`epoch_end` (called by `scheduled_update` at the top of each epoch's first step) decides from that sum, which lives in the checkpointed
method state, so a resumed run decides as an uninterrupted one.

DeepCluster trains on images "sampled based on a uniform distribution over the classes, or
pseudo-labels" (Caron et al. 2018, §3.3), which XDC adapts (§3.1); the XDC paper says no more. `balance`
chooses how:
  - 'sample' (the default): the training stream itself is resampled. After each clustering,
    `sampling_weights` gives every clip its expected draws per epoch, w_i = N / (K' · n_c) for one
    clustering (K' non-empty clusters, n_c the size of the clip's cluster c); for two (XDC, MDC, SDC:
    each encoder's targets are one of them) the product weights under which both clusterings' clusters
    get N / K' draws (`avssl/data/sampling.py`). The loop rebuilds the stream from the next step with
    those weights, and each epoch draws clip i ⌊w_i⌋ or ⌈w_i⌉ times (w_i on average), by a function of
    (weights, seed, epoch): epochs keep their length N, and the draws, which depend on the
    checkpointed pseudo-labels and the config only, are the same in a resumed run. The loss is the
    plain mean cross-entropy.
  - 'reweight': the stream stays uniform and each head's cross-entropy weighs a clip of its targets'
    cluster c by N / (K' · n_c) (`_balance_weights`): the same expectation as 'sample', but the weight
    is unbounded (a cluster of one clip weighs N / K'), so the loss has a larger variance.
  - 'none': uniform stream, unweighted loss.

Evaluation: at each label update, the NMI, accuracy and purity of every k-means clustering against the
ground truth (when the data has labels) go into the method state, so `evaluate` reports them per
iteration and `report` as a table; `--mode=label` writes the heads' clusters and the pseudo-labels
(`cluster_probs`, `self_labels`) and, with ground truth, every clustering's clusters ranked by purity
(§5, Table 6; `avssl/reporting/ranking.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax import lax
from jax.sharding import PartitionSpec as P

from avssl import config_lib, optim, passes, preemption, sharding
from avssl.clustering import kmeans as kmeans_lib
from avssl.data import on_device, sampling
from avssl.evaluation import metrics as metrics_lib
from avssl.methods import base
from avssl.models import encoders
from avssl.models.common import Norm
from avssl.models.heads import LinearHead
from avssl.train_state import TrainState

VARIANTS = ('sdc', 'mdc', 'cdc', 'xdc', 'xdc_same_video', 'xdc_same_audio')
STOPS = ('epochs', 'plateau')
BALANCES = ('sample', 'reweight', 'none')
QUALITY = ('nmi', 'accuracy', 'purity')
_TITLES = {'nmi': 'NMI', 'accuracy': 'Acc.', 'purity': 'Purity'}
_ORDER = {'video': 0, 'audio': 1, 'concat': 2}  # Row order of clusterings in tables.
_INPUT_RANK = {'video': 5, 'audio': 4}  # [B, T, H, W, 3] and [B, mel, frames, 1]; one more: views.
# Streams of random numbers, folded into the seed so that none of them repeats another's.
_KMEANS_STREAM, _HEADS_STREAM, _HOLDOUT_STREAM = 0xC1, 0xC2, 0xC3


def default_config(**overrides) -> ml_collections.ConfigDict:
  """XDC's settings. The paper gives k (Table 2) and nothing else of the clustering loop; the rest
  follows DeepCluster, which XDC adapts (§3.1), or the authors' answers
  (`docs/papers_and_releases.md`)."""
  config = ml_collections.ConfigDict(dict(
      variant='xdc',
      num_clusters=256,  # Table 2: the best k for UCF101 after Kinetics (74.2) and AudioSet (84.9).
      pca_dim=0,  # 0: off. DeepCluster's PCA + whitening (256); the paper does not say.
      kmeans_iters=20,  # DeepCluster's 20 Lloyd iterations, one k-means++ draw.
      kmeans_restarts=1,
      kmeans_tol=1e-4,
      stop='plateau',  # "Until the validation loss saturates" (the authors, XDC issue #8).
      epochs_per_iteration=20.0,  # The iteration length ('epochs'), or its cap ('plateau').
      patience=2,  # Epochs without a lower held-out loss that end an iteration ('plateau').
      holdout_fraction=0.05,  # Training clips kept out of the loss to measure it; 0 for none.
      balance='sample',  # DeepCluster's uniform sampling over pseudo-classes (module docstring).
      monitor_encoders=True))  # CDC: also cluster each encoder's features alone, for evaluation.
  config.update(overrides)
  return config


@dataclasses.dataclass(frozen=True)
class Wiring:
  """Which features each k-means clusters and which head learns which clusters.

  Attributes:
    encoders: encoder name -> modality, in model order (names are parameter names: `params['video']`).
    clusterings: clustering name -> the encoders whose (separately L2-normalised, concatenated)
      features it clusters.
    heads: (encoder, clustering) pairs: that encoder has a linear head trained on those clusters.
    monitored: clusterings made for evaluation only (CDC's per-modality k-means).
  """
  encoders: dict[str, str]
  clusterings: Mapping[str, tuple[str, ...]]
  heads: tuple[tuple[str, str], ...]
  monitored: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


def wiring(variant: str) -> Wiring:
  """The wiring of one variant of §3 / Table 1 (see the module docstring)."""
  if variant in ('xdc_same_video', 'xdc_same_audio'):
    modality = variant.rsplit('_', 1)[1]
    first, second = modality, f'{modality}_2'
    return Wiring({first: modality, second: modality}, {first: (first,), second: (second,)},
                  ((first, second), (second, first)))
  both = {'video': 'video', 'audio': 'audio'}
  own = {'video': ('video',), 'audio': ('audio',)}
  if variant == 'sdc':
    return Wiring(both, own, (('video', 'video'), ('audio', 'audio')))
  if variant == 'mdc':
    return Wiring(both, own, (('video', 'video'), ('video', 'audio'), ('audio', 'video'),
                              ('audio', 'audio')))
  if variant == 'cdc':
    return Wiring(both, {'concat': ('video', 'audio')}, (('video', 'concat'), ('audio', 'concat')),
                  monitored=own)
  if variant == 'xdc':
    return Wiring(both, own, (('video', 'audio'), ('audio', 'video')))
  raise ValueError(f'config.xdc.variant={variant!r} is not one of {VARIANTS}')


def head_name(encoder: str, clustering: str) -> str:
  """The parameter name of `encoder`'s head for `clustering`'s clusters: `params['heads'][name]`."""
  return f'{encoder}_{clustering}'


class Heads(nn.Module):
  """One linear classifier (XDC's fc on the pooled feature) per (encoder, clustering) pair."""
  pairs: tuple[tuple[str, str], ...]
  num_clusters: int
  norm: Norm = Norm()

  @nn.compact
  def __call__(self, features: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return {head_name(e, c): LinearHead(self.num_clusters, self.norm,
                                        name=head_name(e, c))(features[e]) for e, c in self.pairs}


class XDCModel(nn.Module):
  """The encoders, each under its wiring name, and the `heads`.

  Returns `(features, logits)`: `{encoder: [B, D]}` pooled features and `{head: [B, K]}` logits
  (empty without `with_heads`).
  """
  encoders: tuple[nn.Module, ...]
  names: tuple[str, ...]
  modalities: tuple[str, ...]
  heads: tuple[tuple[str, str], ...]
  num_clusters: int
  norm: Norm = Norm()

  @nn.compact
  def __call__(self, inputs: dict[str, jax.Array], *, train: bool, with_heads: bool = True):
    features = {name: encoder.copy(name=name)(inputs[modality], train)
                for encoder, name, modality in zip(self.encoders, self.names, self.modalities)}
    if not with_heads:
      return features, {}
    return features, Heads(self.heads, self.num_clusters, self.norm, name='heads')(features)


class XDC(base.Method):
  """Deep clustering across modalities; see the module docstring. Implements `Clusters` (the
  heads), `SelfLabels` (the k-means pseudo-labels) and `HasEncoders`."""

  def __init__(self, config: ml_collections.ConfigDict, context: base.RunContext | None = None):
    super().__init__(config, context)
    s = self.settings = config.xdc
    self.wiring = wiring(s.variant)
    if s.stop not in STOPS:
      raise ValueError(f'config.xdc.stop={s.stop!r} is not one of {STOPS}')
    if not 0 <= s.holdout_fraction < 1:
      raise ValueError(f'config.xdc.holdout_fraction={s.holdout_fraction} must be in [0, 1)')
    if s.stop == 'plateau' and not s.holdout_fraction:
      raise ValueError("config.xdc.stop='plateau' watches the held-out loss: set "
                       'config.xdc.holdout_fraction > 0, or use stop=epochs')
    if s.epochs_per_iteration <= 0:
      raise ValueError(f'config.xdc.epochs_per_iteration={s.epochs_per_iteration} must be > 0')
    self.balance = balance_mode(s)
    self.norm = Norm.from_config(config.model)
    self.inputs = tuple(m for m in ('video', 'audio') if m in self.wiring.encoders.values())

  def build_model(self) -> nn.Module:
    build = {'video': lambda: encoders.video_encoder(self.config.model.video, self.norm),
             'audio': lambda: encoders.audio_encoder(self.config.model.audio, self.norm)}
    names = tuple(self.wiring.encoders)
    modalities = tuple(self.wiring.encoders.values())
    return XDCModel(tuple(build[m]() for m in modalities), names, modalities, self.wiring.heads,
                    self.settings.num_clusters, self.norm)

  def _apply(self, variables: dict[str, Any], batch: base.Batch, **kwargs):
    return self.model.apply(variables, {m: batch[m] for m in self.inputs}, **kwargs)

  def init_variables(self, rng: jax.Array, batch: base.Batch) -> dict[str, Any]:
    return self.model.init({'params': rng}, {m: batch[m] for m in self.inputs}, train=False)

  def _evaluated(self) -> dict[str, tuple[str, ...]]:
    """Every clustering a label update makes: the trained ones, then the monitored ones."""
    monitored = self.wiring.monitored if self.settings.monitor_encoders else {}
    return {**self.wiring.clusterings, **monitored}

  def init_method_state(self, num_examples: int) -> dict[str, Any]:
    """The pseudo-labels of every clustering (`labels`, `[N]`), their clusters' loss weights
    (`weights`, `[K]`: 1 but with `balance='reweight'`), the label updates done (`iteration`), each
    clustering's quality per iteration (`quality`, `[iterations, len(QUALITY)]`, NaN where not
    measured) and the held-out loss bookkeeping."""
    s = self.settings
    capacity = self._max_iterations(num_examples)
    zero, zero_i = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)
    return {
        'iteration': zero_i,
        'labels': {c: jnp.zeros((num_examples,), jnp.int32) for c in self.wiring.clusterings},
        'weights': {c: jnp.ones((s.num_clusters,), jnp.float32) for c in self.wiring.clusterings},
        'quality': {c: jnp.full((capacity, len(QUALITY)), jnp.nan, jnp.float32)
                    for c in self._evaluated()},
        'holdout': {'sum': zero, 'count': zero, 'best': jnp.asarray(jnp.inf, jnp.float32),
                    'last': jnp.asarray(jnp.nan, jnp.float32), 'stale': zero_i, 'epochs': zero_i},
    }

  def _max_iterations(self, num_examples: int) -> int:
    """How many label updates the run can make (the size of the quality history)."""
    steps_per_epoch = max(num_examples // self.config.batch_size, 1)  # drop_last, as the sources.
    total = config_lib.steps(self.config, 'total', steps_per_epoch) or 0
    if self.settings.stop == 'epochs':
      return max(len(self.label_update_steps(total, steps_per_epoch)), 1)
    return max(-(-total // steps_per_epoch), 1)  # Step 0, then at most once per later epoch.

  # Training.

  def loss(self, params, state: TrainState, batch, rng):
    """Σ over heads of the (cluster-weighted) cross-entropy against the head's clustering's labels,
    averaged over the batch's clips that are not held out; the held-out clips' plain cross-entropy is
    added to `holdout.sum` (and their count to `holdout.count`) without gradient."""
    del rng  # Linear heads: no dropout.
    (_, logits), updates = self._apply({'params': params, 'batch_stats': state.batch_stats}, batch,
                                       train=True, mutable=['batch_stats'])
    method_state = state.method_state
    held = self.held_out(batch['index'])
    trained = 1.0 - held
    count = jnp.maximum(trained.sum(), 1.0)
    losses, metrics, held_sum = {}, {}, jnp.zeros((), jnp.float32)
    for encoder, clustering in self.wiring.heads:
      name = head_name(encoder, clustering)
      target = method_state['labels'][clustering][batch['index']]
      ce = optax.softmax_cross_entropy_with_integer_labels(logits[name], target)
      weight = trained * method_state['weights'][clustering][target]
      losses[name] = jnp.sum(weight * ce) / count
      held_sum += jnp.sum(held * lax.stop_gradient(ce))
      metrics[f'loss_{name}'] = losses[name]
      metrics[f'accuracy_{name}'] = jnp.sum(trained * (logits[name].argmax(-1) == target)) / count
    holdout = {**method_state['holdout'], 'sum': method_state['holdout']['sum'] + held_sum,
               'count': method_state['holdout']['count'] + held.sum()}
    return sum(losses.values()), base.StepOutput(updates['batch_stats'], metrics,
                                                  {**method_state, 'holdout': holdout})

  def held_out(self, index: jax.Array) -> jax.Array:
    """1.0 for the clips (by dataset index) kept out of the loss, else 0.0: a fixed draw per clip."""
    fraction = self.settings.holdout_fraction
    if not fraction:
      return jnp.zeros(index.shape, jnp.float32)
    key = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), _HOLDOUT_STREAM)
    draw = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i)))(index)
    return (draw < fraction).astype(jnp.float32)

  # Deep-clustering iterations.

  def scheduled_update(self, state: TrainState, step: int) -> base.Update | None:
    """At the top of a step that starts an epoch, `epoch_end` (the held-out loss; with 'plateau',
    maybe a new iteration); then, at a step of `label_update_steps`, a new iteration."""
    context = self.context
    changed = data_pass = False
    if step and step % context.steps_per_epoch == 0 and self.settings.holdout_fraction:
      before = int(state.method_state['iteration'])
      state = self.epoch_end(state, context.data, context.mesh)
      changed, data_pass = True, int(state.method_state['iteration']) != before
    if step in self._update_steps:
      state = self.label_update(state, context.data, context.mesh)
      changed = data_pass = True
    return base.Update(state, {}, data_pass) if changed else None

  @functools.cached_property
  def _update_steps(self) -> frozenset[int]:
    return frozenset(self.label_update_steps(self.context.total_steps, self.context.steps_per_epoch))

  def label_update_steps(self, total_steps: int, steps_per_epoch: int) -> list[int]:
    """Every `epochs_per_iteration` epochs from step 0 ('epochs'); only step 0 ('plateau', where
    `epoch_end` starts the later iterations)."""
    if self.settings.stop == 'plateau':
      return [0] if total_steps > 0 else []
    every = self.settings.epochs_per_iteration * steps_per_epoch
    return sorted({round(i * every) for i in range(math.ceil(total_steps / every))} - {total_steps})

  def epoch_end(self, state: TrainState, data, mesh: jax.sharding.Mesh) -> TrainState:
    """The held-out loss of the epoch; with `stop='plateau'`, a new iteration when it has not improved
    for `patience` epochs or the iteration has lasted `epochs_per_iteration` epochs."""
    s = self.settings
    if not s.holdout_fraction:
      return state
    h = {k: np.asarray(v) for k, v in jax.device_get(state.method_state['holdout']).items()}
    best, stale, epochs, last = float(h['best']), int(h['stale']), int(h['epochs']) + 1, np.nan
    if h['count'] > 0:
      last = float(h['sum'] / h['count'])
      improved = last < best
      best, stale = (last, 0) if improved else (best, stale + 1)
      logging.info('Iteration %d, epoch %d: held-out pseudo-label loss %.4f over %d clips (best %.4f, '
                   '%d epochs without improvement)', int(state.method_state['iteration']), epochs,
                   last, int(h['count']), best, stale)
    else:
      logging.warning('No held-out clip in this epoch: raise config.xdc.holdout_fraction')
    state = self._with_holdout(state, best=best, stale=stale, epochs=epochs, last=last)
    if s.stop == 'plateau' and (stale >= s.patience or epochs >= math.ceil(s.epochs_per_iteration)):
      logging.info('Iteration %d ends after %d epochs (%s)', int(state.method_state['iteration']),
                   epochs, 'plateau' if stale >= s.patience else 'epoch cap')
      state = self.label_update(state, data, mesh)
    return state

  def _with_holdout(self, state: TrainState, *, best: float, stale: int, epochs: int,
                    last: float) -> TrainState:
    """The state with the held-out sums reset and the given bookkeeping."""
    method_state = {**state.method_state, 'holdout': {
        'sum': jnp.zeros((), jnp.float32), 'count': jnp.zeros((), jnp.float32),
        'best': jnp.asarray(best, jnp.float32), 'last': jnp.asarray(last, jnp.float32),
        'stale': jnp.asarray(stale, jnp.int32), 'epochs': jnp.asarray(epochs, jnp.int32)}}
    return state.replace(method_state=sharding.placed_like(method_state, state.method_state))

  def label_update(self, state: TrainState, data, mesh: jax.sharding.Mesh) -> TrainState:
    """One deep-clustering iteration's start: features → k-means → pseudo-labels, fresh heads."""
    s = self.settings
    iteration = int(state.method_state['iteration'])
    n = data.num_train
    rows = self.dataset_features(state, data.dataset_batches(augment=False), mesh, n)
    truth = sharding.host_copy(_table(rows['index'], rows['label'], n, -1, mesh))
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(self.config.seed),
                                                _KMEANS_STREAM), iteration)
    labels, weights = {}, {}
    quality = dict(state.method_state['quality'])
    for name, sources in self._evaluated().items():
      x = rows['features'][sources[0]] if len(sources) == 1 else _concat(
          tuple(rows['features'][e] for e in sources))
      result = kmeans_lib.kmeans(x, s.num_clusters, iters=s.kmeans_iters, n_init=s.kmeans_restarts,
                                 pca_dim=s.pca_dim or None, seed=_fold_in_name(key, name),
                                 mesh=mesh, tol=s.kmeans_tol)
      table = _table(rows['index'], result.labels, n, 0, mesh)
      scores = cluster_quality(truth, sharding.host_copy(table))
      logging.info('Iteration %d, k-means on %s (%s): %d Lloyd iterations, inertia %.2f; %s',
                   iteration, name, '+'.join(sources), result.iterations, result.inertia,
                   ', '.join(f'{q} {v:.3f}' for q, v in zip(QUALITY, scores)))
      if iteration < quality[name].shape[0]:
        quality[name] = quality[name].at[iteration].set(jnp.asarray(scores, jnp.float32))
      else:
        logging.warning('Iteration %d is beyond the %d the quality history holds; not recorded',
                        iteration, quality[name].shape[0])
      if name in self.wiring.clusterings:
        labels[name] = table
        weights[name] = (_balance_weights(table, s.num_clusters) if self.balance == 'reweight'
                         else jnp.ones((s.num_clusters,), jnp.float32))
    state = self.reset_heads(state, iteration)
    method_state = {**state.method_state, 'labels': labels, 'weights': weights, 'quality': quality,
                    'iteration': jnp.asarray(iteration + 1, jnp.int32)}
    state = state.replace(method_state=sharding.placed_like(method_state, state.method_state))
    return self._with_holdout(state, best=np.inf, stale=0, epochs=0,
                              last=float(state.method_state['holdout']['last']))

  def sampling_weights(self, state: TrainState) -> np.ndarray | None:
    """With `balance='sample'`, each clip's expected draws per epoch under which every trained
    clustering's non-empty clusters get N / K' draws (DeepCluster's uniform sampling over
    pseudo-labels); None before the first clustering and with the other modes."""
    if self.balance != 'sample' or int(state.method_state['iteration']) == 0:
      return None
    labels = state.method_state['labels']
    return sampling.balanced_weights([sharding.host_copy(labels[c]) for c in self.wiring.clusterings])

  def dataset_features(self, state: TrainState, batches: Iterator[dict[str, np.ndarray]],
                       mesh: jax.sharding.Mesh, n: int) -> dict[str, Any]:
    """Eval-mode, L2-normalised pooled features of every encoder over one pass of the `n` training
    clips (views averaged): `{'features': {encoder: [n, D]}, 'index': [n], 'label': [n]}`, rows in
    pass order and sharded over the mesh; the pass's padding is dropped without a gather."""
    forward = self._feature_fn()
    tracker = passes.PassProgress('label pass (features)', batches, mesh)
    chunks = []
    for batch in batches:
      preemption.check()
      batch = sharding.to_global({k: batch[k] for k in (*self.inputs, 'index', 'label', 'mask')},
                                 mesh)
      chunks.append({'features': forward(state.params, state.batch_stats, batch),
                     'index': batch['index'], 'label': batch['label'], 'mask': batch['mask']})
      tracker.update(batch['mask'].shape[0], chunks[-1])
    tracker.finish(chunks)
    return compact_rows(chunks, n, mesh)

  @functools.lru_cache(maxsize=None)
  def _feature_fn(self):
    @jax.jit
    def forward(params, batch_stats, batch):
      batch = on_device.normalize(batch, self.config.data)
      inputs, views = {}, {}
      for m in self.inputs:
        x = batch[m]
        views[m] = x.shape[1] if x.ndim > _INPUT_RANK[m] else 1
        inputs[m] = x.reshape((-1,) + x.shape[-(_INPUT_RANK[m] - 1):])
      features, _ = self._apply({'params': params, 'batch_stats': batch_stats}, inputs, train=False,
                                with_heads=False)
      out = {}
      for encoder, f in features.items():
        v = views[self.wiring.encoders[encoder]]
        out[encoder] = kmeans_lib.l2_normalize(f.reshape(-1, v, f.shape[-1]).mean(axis=1))
      return out
    return forward

  def reset_heads(self, state: TrainState, iteration: int) -> TrainState:
    """Fresh head weights (a new draw per iteration) and the optimiser's initial state for them; the
    encoders' weights and optimiser state are kept."""
    key = jax.random.fold_in(jax.random.fold_in(state.rng, _HEADS_STREAM), iteration)
    dims = {e: state.params['heads'][head_name(e, c)]['fc']['kernel'].shape[0]
            for e, c in self.wiring.heads}
    heads = Heads(self.wiring.heads, self.settings.num_clusters, self.norm)
    fresh = heads.init(key, {e: jnp.zeros((1, d), jnp.float32) for e, d in dims.items()})['params']
    params = {**state.params, 'heads': fresh}
    opt_state = optim.reinitialised_state(self.config.optimizer, state.opt_state, params, ('heads',))
    return state.replace(params=sharding.placed_like(params, state.params),
                         opt_state=sharding.placed_like(opt_state, state.opt_state))

  # Evaluation and labels.

  def cluster_probs(self, state: TrainState, batch: base.Batch) -> dict[str, jax.Array]:
    """`Clusters`: each head's softmax `[1, B, K]` (views of a clip averaged), named
    `<encoder>_<clustering>` (`video_audio`: the video encoder's head for the audio clusters)."""
    batch = on_device.normalize(batch, self.config.data)
    inputs, views = {}, {}
    for m in self.inputs:
      x = batch[m]
      views[m] = x.shape[1] if x.ndim > _INPUT_RANK[m] else 1
      inputs[m] = x.reshape((-1,) + x.shape[-(_INPUT_RANK[m] - 1):])
    _, logits = self._apply({'params': state.params, 'batch_stats': state.batch_stats}, inputs,
                            train=False)
    out = {}
    for encoder, clustering in self.wiring.heads:
      name = head_name(encoder, clustering)
      p = jax.nn.softmax(logits[name].astype(jnp.float32), axis=-1)
      out[name] = p.reshape(-1, views[self.wiring.encoders[encoder]], p.shape[-1]).mean(axis=1)[None]
    return out

  def self_labels(self, state: TrainState) -> dict[str, np.ndarray]:
    """`SelfLabels`: each clustering's k-means pseudo-labels `[N, 1]` as `self-labels <name>`;
    none before the first label update."""
    if int(state.method_state['iteration']) == 0:
      return {}
    return {f'self-labels {name}': sharding.host_copy(table)[:, None]
            for name, table in state.method_state['labels'].items()}

  def encoders(self, state: TrainState) -> dict[str, base.Encoder]:
    """`HasEncoders`: the first encoder of each modality (`video`, `audio`)."""
    out = {}
    for module, name, modality in zip(self.model.encoders, self.model.names, self.model.modalities):
      if modality not in out:
        out[modality] = base.Encoder(module, {'params': state.params[name],
                                              'batch_stats': state.batch_stats.get(name, {})},
                                     modality)
    return out

  def evaluate(self, state: TrainState, batches: Iterator[base.Batch]) -> dict[str, float]:
    """The k-means clusterings' quality against the ground truth: `iteration<r>/<clustering>/<metric>`
    for every iteration so far, `<clustering>/<metric>` for the current pseudo-labels; with the last
    epoch's `holdout_loss`. Empty when the data has no labels and nothing was held out."""
    del batches  # The pseudo-labels are of the training clips, scored when they were made.
    method_state = state.method_state
    done = int(method_state['iteration'])
    results = {}
    for name, history in method_state['quality'].items():
      history = sharding.host_copy(history)
      for r in range(min(done, history.shape[0])):
        if np.isnan(history[r]).any():
          continue
        for metric, value in zip(QUALITY, history[r]):
          results[iteration_key(r, name, metric)] = float(value)
          if r == done - 1:
            results[f'{name}/{metric}'] = float(value)
    last = float(method_state['holdout']['last'])
    if np.isfinite(last):
      results['holdout_loss'] = last
    if results:
      results['iterations'] = float(done)
    return results

  def report(self, results: dict[str, float]) -> str | None:
    """The quality of each iteration's clusterings as a Markdown table (values in %)."""
    return quality_table(results, tuple(self._evaluated().keys() - self.wiring.clusterings.keys()))


def balance_mode(settings: ml_collections.ConfigDict) -> str:
  """`settings.balance`, checked; the `balanced` flag of configs written before it (run.json of
  older runs) read as what it did: True re-weighted the loss, False did nothing."""
  if 'balanced' in settings:
    if 'balance' in settings:
      raise ValueError('config.xdc.balanced is replaced by config.xdc.balance; set only balance '
                       f'(one of {BALANCES})')
    return 'reweight' if settings.balanced else 'none'
  if settings.balance not in BALANCES:
    raise ValueError(f'config.xdc.balance={settings.balance!r} is not one of {BALANCES}')
  return settings.balance


def cluster_quality(truth: np.ndarray, clusters: np.ndarray) -> np.ndarray:
  """NMI, accuracy (Hungarian) and purity of `clusters` against `truth` (-1: unknown; NaN if all)."""
  if not (truth >= 0).any():
    return np.full(len(QUALITY), np.nan)
  return np.array([metrics_lib.nmi(truth, clusters), metrics_lib.accuracy(truth, clusters),
                   metrics_lib.purity(truth, clusters)])


def iteration_key(iteration: int, clustering: str, metric: str) -> str:
  """The flat result key (`eval.json`) of one clustering's quality at one deep-clustering iteration,
  e.g. `iteration2/video/nmi`: written by `evaluate`, read by `quality_table` and `comparison_table`."""
  return f'iteration{iteration}/{clustering}/{metric}'


def split_iteration_key(key: str) -> tuple[int, str, str] | None:
  """`(iteration, clustering, metric)` of an `iteration_key`, else None."""
  match = re.fullmatch(r'iteration(\d+)/(.+)/(\w+)', key)
  return (int(match[1]), match[2], match[3]) if match else None


def quality_table(results: dict[str, float], eval_only: tuple[str, ...] = ()) -> str | None:
  """One run's `evaluate` results as a Markdown table: a row per iteration, per clustering its NMI,
  accuracy and purity in %. Clusterings in `eval_only` are marked so."""
  found: dict[str, None] = {}
  iterations = set()
  for key in results:
    parsed = split_iteration_key(key)
    if parsed:
      iterations.add(parsed[0])
      found.setdefault(parsed[1], None)
  if not found:
    return None
  names = sorted(found, key=lambda c: (_ORDER.get(c, len(_ORDER)), c))
  headers = [f"{name}{' (eval only)' if name in eval_only else ''} {_TITLES[q]}"
             for name in names for q in QUALITY]
  lines = ['| Iteration | ' + ' | '.join(headers) + ' |', '|---:|' + '---:|' * len(headers)]
  for r in sorted(iterations):
    cells = [_percent(results.get(iteration_key(r, name, q))) for name in names for q in QUALITY]
    lines.append(f'| {r} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _percent(value: float | None) -> str:
  return '' if value is None else f'{100 * value:.1f}'


def compact_rows(chunks: list[dict[str, Any]], n: int, mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """The `n` real rows of a padded dataset pass, as row-sharded arrays, without gathering them.

  `chunks` are the pass's batches, each a pytree of `[B, ...]` arrays sharded over the `data` axis with
  a `'mask'` entry `[B]` (0 for padding). k-means counts every row it is given, so the padding (copies
  of a real clip) must go: each device moves its real rows to the front of its block, and each output
  block then takes its rows from the blocks of the next few devices (ring shifts, `ppermute`); only
  the rows that change device move, and only the first `n` rows are kept. Returns the pytree without
  `'mask'`, every leaf `[n, ...]`, real rows in device-then-pass order.
  """
  devices = mesh.shape[sharding.DATA_AXIS]
  total = len(chunks) * chunks[0]['mask'].shape[0]
  block = total // devices
  hops = min(devices, -(-(total - n) // block) + 1)
  out = _compact_fn(mesh, hops)(chunks)
  return jax.tree.map(lambda x: x[:n], out)


@functools.lru_cache(maxsize=None)
def _compact_fn(mesh: jax.sharding.Mesh, hops: int):
  axis = sharding.DATA_AXIS
  devices = mesh.shape[axis]

  def local(stacked):
    mask = stacked.pop('mask').reshape(-1) > 0
    rows = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), stacked)
    block = mask.shape[0]
    order = jnp.argsort(~mask, stable=True)  # Real rows first, in pass order.
    rows = jax.tree.map(lambda x: x[order], rows)
    counts = lax.all_gather(jnp.sum(mask, dtype=jnp.int32), axis)
    starts = jnp.cumsum(counts) - counts
    me = lax.axis_index(axis)
    position = me * block + jnp.arange(block)  # The output rows this device holds.
    out = jax.tree.map(jnp.zeros_like, rows)
    for hop in range(hops):  # Output rows come from this device's block and the next ones'.
      received = rows if not hop else jax.tree.map(
          lambda x, hop=hop: lax.ppermute(x, axis, [((j + hop) % devices, j) for j in range(devices)]),
          rows)
      source = jnp.minimum(me + hop, devices - 1)
      offset = position - starts[source]
      take = (me + hop < devices) & (offset >= 0) & (offset < counts[source])
      offset = jnp.clip(offset, 0, block - 1)
      out = jax.tree.map(
          lambda o, x, take=take, offset=offset: jnp.where(
              take.reshape((-1,) + (1,) * (x.ndim - 1)), x[offset], o),
          out, received)
    return out

  mapped = jax.shard_map(local, mesh=mesh, in_specs=P(None, axis), out_specs=P(axis))
  return jax.jit(lambda chunks: mapped(jax.tree.map(lambda *xs: jnp.stack(xs), *chunks)))


@jax.jit
def _concat(features: tuple[jax.Array, ...]) -> jax.Array:
  """CDC's input: the separately L2-normalised features side by side (rows stay where they are)."""
  return jnp.concatenate(features, axis=1)


def _table(index: jax.Array, values: jax.Array, size: int, fill: int,
           mesh: jax.sharding.Mesh) -> jax.Array:
  """`[size]` int32 with `values[i]` at `index[i]` (`fill` elsewhere), replicated on `mesh`."""
  return _table_fn(mesh, size, fill)(index, values)


@functools.lru_cache(maxsize=None)
def _table_fn(mesh: jax.sharding.Mesh, size: int, fill: int):
  return jax.jit(lambda index, values: jnp.full((size,), fill, jnp.int32).at[index].set(
      values.astype(jnp.int32)), out_shardings=sharding.replicated(mesh))


@functools.partial(jax.jit, static_argnums=1)
def _balance_weights(labels: jax.Array, k: int) -> jax.Array:
  """N / (K' · n_c) for each of the K' non-empty clusters (0 for empty ones): weighting every clip
  by its cluster's value gives the loss of uniform sampling over pseudo-classes in expectation
  (`balance='reweight'`)."""
  counts = jnp.bincount(labels, length=k)
  used = jnp.sum(counts > 0)
  return jnp.where(counts > 0, labels.shape[0] / (used * jnp.maximum(counts, 1)), 0.0).astype(
      jnp.float32)


def _fold_in_name(key: jax.Array, name: str) -> jax.Array:
  """A key per clustering name, so that one clustering draws the same in every variant."""
  return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)




def comparison_table(runs: dict[str, dict[str, float]], metric: str = 'nmi') -> str:
  """Several runs' `evaluate` results laid out like Table 1: a column per run (variant), a row per
  iteration and clustering, `metric` in %; '–' where a run has no such clustering."""
  rows = sorted({parsed[:2] for results in runs.values() for key in results
                 if (parsed := split_iteration_key(key)) and parsed[2] == metric},
                key=lambda r: (r[0], _ORDER.get(r[1], len(_ORDER)), r[1]))
  lines = [f'| Iteration: clustering ({_TITLES[metric]}) | ' + ' | '.join(runs) + ' |',
           '|:---|' + '---:|' * len(runs)]
  for r, name in rows:
    cells = [_percent(results.get(iteration_key(r, name, metric))) or '–' for results in runs.values()]
    lines.append(f'| {r}: {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)
