"""SeLaVi: labelling unlabelled videos from scratch with multi-modal self-supervision (Asano et al., 2020).

Training alternates two steps (§3): gradient steps in which the video and the audio network both
predict the **same** self-label of each clip, one per head (Eq. 1, one cross-entropy per modality and
head); and, on a schedule, a label update that assigns every clip of the dataset to clusters by optimal
transport (Eq. 3, Sinkhorn-Knopp with λ = 20) on the log-probabilities averaged over the two modalities
(Eq. 6), with cluster sizes drawn from a Gaussian prior and matched by the sort trick (Eq. 4-5). The
heads are decorrelated (§3.3): each label update splits them at random into groups, and every group
gets its own pass over the data with fresh augmentations. At step 0, after a BatchNorm warm-up, each
audio head's clusters are permuted to match the video head's (modality alignment, Eq. 7), solved
exactly as a linear assignment.

The same module runs the paper's baselines as configurations: SeLa (frames only: `modalities=
('video',)`, with SeLa's λ, uniform marginals, one group and linear heads, `head_hidden=0`; Table 3 a)
and Concat (one head on the concatenated features: `fusion='concat'`, Table 3 b); and the ablations of
Table 3 as switches (`alignment`, `prior`, `num_groups`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from avssl import passes, preemption, sharding
from avssl.clustering import alignment
from avssl.clustering import sinkhorn as sk
from avssl.data import on_device
from avssl.evaluation import metrics as metrics_lib
from avssl.evaluation import tables
from avssl.methods import base
from avssl.models import encoders
from avssl.models.common import Norm
from avssl.models.heads import MultiHead
from avssl.train_state import TrainState

MODALITIES = ('video', 'audio')


def default_config(**overrides) -> ml_collections.ConfigDict:
  """SeLaVi's constants (paper §4 "Implementation details"; the release's,
  `docs/papers_and_releases.md`).

  The transport stops when the L1 violation of the cluster marginal, Σ_k |Σ_n Q_nk − r_k|, is at
  most `sinkhorn_tol` (a share of the plan's unit mass, whatever N), or after `sinkhorn_max_iters`.
  The release stops at Σ_n |β_n / β'_n − 1| ≤ 0.1, checked every 10 iterations: that sum is N times
  the L1 violation of the *sample* marginal after the cluster update, so its tolerance is 0.1 / N in
  the same units: 5.6e-5 on the demo's 1,800 clips, 5.9e-7 on VGG-Sound's 170,752, against 1e-3 here.
  `sinkhorn_warm_start` starts each label update from the previous one's cluster potentials
  (`_log_marginals`); the release starts every solve from uniform scalings. On the SeLa demo it saves
  0.4 % of the iterations (`docs/papers_and_releases.md`, "Sinkhorn iterations"): the network and the
  sorted prior move too much between updates. `sinkhorn_overrelaxation` is ω of the safeguarded
  over-relaxed Sinkhorn (`clustering/sinkhorn.py`), which reaches the same plan at the same tolerance
  in a third of the iterations there, within the cap in all 76 solves where plain Sinkhorn-Knopp
  (ω = 1, the release's) stops at it in 55; the error then bounds both marginals.

  Two switches for data whose nuisances differ between the modalities (`docs/nuisance.md`), off by
  default: `targets='cross'` trains each modality's heads on labels solved from the *other*
  modality's probabilities alone (XDC's cross-modal targets) instead of the shared Eq. 6 label, so a
  network can only fit them with what both modalities share; `modality_weights` (w_video, w_audio)
  weights Eq. 6's average of the log-probabilities (empty: equal, the paper's).
  """
  config = ml_collections.ConfigDict(dict(
      num_clusters=309, num_heads=10, num_groups=2, lam=20.0,
      prior='gaussian', prior_sd=0.1, prior_order='paper',
      alignment=True, alignment_method='exact',
      num_label_updates=100, schedule_power=1.5, bn_warmup_batches=20,
      modalities=MODALITIES, fusion='none',
      sinkhorn_mode='scaling', sinkhorn_tol=1e-3, sinkhorn_max_iters=2000,
      sinkhorn_warm_start=True, sinkhorn_overrelaxation=1.95,
      head_hidden=512, head_dropout=0.3,
      targets='shared', modality_weights=()))
  config.update(overrides)
  return config


class SeLaViModel(nn.Module):
  """Encoders of the configured modalities, each with `num_heads` MLP heads of K clusters.

  Returns `{modality: logits [num_heads, B, K]}`, or `{'concat': ...}` for the Concat baseline.
  """
  video: nn.Module | None
  audio: nn.Module | None
  num_heads: int
  num_clusters: int
  hidden: int = 512
  dropout: float = 0.3
  fusion: str = 'none'
  norm: Norm = Norm()

  @nn.compact
  def __call__(self, video: jax.Array | None = None, audio: jax.Array | None = None, *,
               train: bool) -> dict[str, jax.Array]:
    features = {}
    if self.video is not None:
      features['video'] = self.video(video, train)
    if self.audio is not None:
      features['audio'] = self.audio(audio, train)
    heads = lambda name: MultiHead(self.num_heads, self.num_clusters, self.hidden, self.dropout,
                                   self.norm, name=name)
    if self.fusion == 'concat':
      fused = jnp.concatenate([features[m] for m in MODALITIES], axis=-1)
      return {'concat': heads('concat_heads')(fused, train)}
    return {m: heads(f'{m}_heads')(f, train) for m, f in features.items()}


class SeLaVi(base.Method):
  """Self-labelling across modalities; see the module docstring. Implements `Clusters`,
  `SelfLabels`, `ClusterPrior` and `HasEncoders`."""

  def __init__(self, config: ml_collections.ConfigDict, context: base.RunContext | None = None):
    super().__init__(config, context)
    self.settings = config.selavi
    unknown = set(self.settings.modalities) - set(MODALITIES)
    if unknown or not self.settings.modalities:
      raise ValueError(f'config.selavi.modalities={self.settings.modalities}; use video and/or audio')
    if self.settings.fusion not in ('none', 'concat'):
      raise ValueError(f"config.selavi.fusion={self.settings.fusion!r}; use 'none' or 'concat'")
    if self.settings.fusion == 'concat' and len(self.settings.modalities) != 2:
      raise ValueError('config.selavi.fusion=concat needs both modalities')
    if self.settings.num_heads % self.settings.num_groups:
      raise ValueError(f'config.selavi.num_heads={self.settings.num_heads} does not split into '
                       f'num_groups={self.settings.num_groups} equal groups')
    if not 1.0 <= self.settings.sinkhorn_overrelaxation < 2.0:
      raise ValueError(f'config.selavi.sinkhorn_overrelaxation={self.settings.sinkhorn_overrelaxation}'
                       ' is outside [1, 2); 1 is plain Sinkhorn-Knopp (the release)')
    self.inputs = tuple(m for m in MODALITIES if m in self.settings.modalities)
    if self.settings.targets not in ('shared', 'cross'):
      raise ValueError(f"config.selavi.targets={self.settings.targets!r}; use 'shared' or 'cross'")
    if self.settings.targets == 'cross' and (len(self.inputs) != 2 or self.settings.fusion != 'none'):
      raise ValueError('config.selavi.targets=cross needs both modalities, each with its own heads')
    weights = tuple(self.settings.modality_weights)
    if weights and (len(weights) != 2 or min(weights) < 0 or sum(weights) <= 0):
      raise ValueError(f'config.selavi.modality_weights={weights}: give (w_video, w_audio), '
                       'non-negative and not both 0, or () for the paper\'s equal weights')

  def build_model(self) -> nn.Module:
    norm = Norm.from_config(self.config.model)
    s = self.settings
    return SeLaViModel(
        video=encoders.video_encoder(self.config.model.video, norm) if 'video' in self.inputs
        else None,
        audio=encoders.audio_encoder(self.config.model.audio, norm) if 'audio' in self.inputs
        else None,
        num_heads=s.num_heads, num_clusters=s.num_clusters, hidden=s.head_hidden,
        dropout=s.head_dropout, fusion=s.fusion, norm=norm)

  def _apply(self, variables: dict[str, Any], batch: base.Batch, **kwargs):
    return self.model.apply(variables, **{m: batch[m] for m in self.inputs}, **kwargs)

  def init_variables(self, rng: jax.Array, batch: base.Batch) -> dict[str, Any]:
    return self.model.init({'params': rng, 'dropout': rng}, **{m: batch[m] for m in self.inputs},
                           train=False)

  def init_method_state(self, num_examples: int) -> dict[str, jax.Array]:
    """The self-label table (N × heads), the prior draws (one per head, kept for the whole run, as the
    release does), the number of label updates done (the schedule position), each head's final
    cluster-marginal error in the last transport solve (how closely the sizes follow the prior), and
    each head's cluster potentials from that solve (`[heads, K]`, the next solve's warm start; see
    `_log_marginals`). All are checkpointed, so a resumed run solves exactly as an uninterrupted one."""
    s = self.settings
    key = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), 0x5E1A)
    if s.prior == 'gaussian':
      prior = sk.gaussian_prior(key, s.num_heads, s.num_clusters, num_examples, s.prior_sd)
    elif s.prior == 'uniform':
      prior = jnp.full((s.num_heads, s.num_clusters), num_examples / s.num_clusters, jnp.float32)
    else:
      raise ValueError(f"config.selavi.prior={s.prior!r}; use 'gaussian' or 'uniform'")
    state = {'self_labels': jnp.zeros((num_examples, s.num_heads), jnp.int32), 'prior': prior,
             'updates': jnp.zeros((), jnp.int32),
             'marginal_error': jnp.zeros((s.num_heads,), jnp.float32),
             'sinkhorn_potential': jnp.zeros((s.num_heads, s.num_clusters), jnp.float32)}
    if s.targets == 'cross':  # [0]: solved from the video heads (the audio's targets); [1]: audio.
      state['cross_labels'] = jnp.zeros((2, num_examples, s.num_heads), jnp.int32)
    return state

  def loss(self, params, state: TrainState, batch, rng):
    """Eq. 1 with SeLaVi's shared label: ½ Σ_modality mean_heads CE(logits, self-label); with
    `targets='cross'` each modality's label is the one solved from the other modality."""
    outputs, updates = self._apply({'params': params, 'batch_stats': state.batch_stats}, batch,
                                   train=True, rngs={'dropout': rng}, mutable=['batch_stats'])
    labels = {m: state.method_state['self_labels'][batch['index']].T for m in outputs}  # [heads, B]
    if self.settings.targets == 'cross':
      cross = state.method_state['cross_labels'][:, batch['index']]
      labels = {'video': cross[1].T, 'audio': cross[0].T}
    losses = {m: optax.softmax_cross_entropy_with_integer_labels(logits, labels[m]).mean()
              for m, logits in outputs.items()}
    loss = sum(losses.values()) / len(losses)
    metrics = {f'loss_{m}': v for m, v in losses.items()}
    return loss, base.StepOutput(updates['batch_stats'], metrics, state.method_state)

  # The label update.

  def scheduled_update(self, state: TrainState, step: int) -> base.Update | None:
    """A label update (and its summary scalars) at each step of `label_update_steps`."""
    if step not in self._update_steps:
      return None
    data = self.context.data
    state = self.label_update(state, data, self.context.mesh)
    return base.Update(state, self.label_update_summary(state, data), data_pass=True)

  def data_pass_steps(self) -> list[int]:
    return sorted(self._update_steps)

  @functools.cached_property
  def _update_steps(self) -> frozenset[int]:
    return frozenset(self.label_update_steps(self.context.total_steps, self.context.steps_per_epoch))

  def label_update_steps(self, total_steps: int, steps_per_epoch: int) -> list[int]:
    """total_steps · linspace(0, 1, nopts)^1.5, the first at step 0; the last point (the end of
    training) is never reached, as in the release."""
    del steps_per_epoch
    s = self.settings
    points = total_steps * np.linspace(0, 1, s.num_label_updates) ** s.schedule_power
    return sorted({int(p) for p in points if int(p) < total_steps})

  def label_update(self, state: TrainState, data, mesh: jax.sharding.Mesh) -> TrainState:
    s = self.settings
    update = int(state.method_state['updates'])
    first = int(state.step) == 0
    if first and s.bn_warmup_batches:
      state = self._warm_up_batchnorm(state, data, mesh)
    table = state.method_state['self_labels']
    cross = state.method_state.get('cross_labels')
    errors = state.method_state['marginal_error']
    potentials = state.method_state['sinkhorn_potential']
    warm = s.sinkhorn_warm_start and update > 0
    for g, heads in enumerate(head_groups(self.config.seed, update, s.num_heads, s.num_groups)):
      batches = data.dataset_batches(augment=True, pass_seed=update * s.num_groups + g)
      log_probs, index, mask = self.dataset_log_probs(state, batches, mesh, heads)
      if first and s.alignment and set(log_probs) == set(MODALITIES):
        state, log_probs = self._align(state, log_probs, mask, heads, mesh)
      rows = jnp.asarray(heads)
      log_p = self._fuse(log_probs)  # Eq. 6.
      result, log_r = self._transport(state, log_p, mask, heads, mesh,
                                      log_r_plus=potentials[rows] if warm else None)
      table = _scatter_labels(table, index, mask, rows, result.labels)
      errors = errors.at[rows].set(result.error)
      potentials = potentials.at[rows].set(result.log_alpha - log_r)
      self._log_solve(update, heads, result, warm)
      if cross is not None:
        for i, m in enumerate(MODALITIES):
          alone, _ = self._transport(state, log_probs[m], mask, heads, mesh, log_r_plus=None)
          cross = cross.at[i].set(_scatter_labels(cross[i], index, mask, rows, alone.labels))
          self._log_solve(update, heads, alone, False, m)
    method_state = {**state.method_state, 'self_labels': table, 'marginal_error': errors,
                    'sinkhorn_potential': potentials, 'updates': jnp.asarray(update + 1, jnp.int32)}
    if cross is not None:
      method_state['cross_labels'] = cross
    return state.replace(method_state=sharding.placed_like(method_state, state.method_state))

  def _fuse(self, log_probs: dict[str, jax.Array]) -> jax.Array:
    """Eq. 6: the modalities' log-probabilities averaged, weighted by `modality_weights` if set."""
    weights = tuple(self.settings.modality_weights)
    if not weights or len(log_probs) != 2:
      return _average(list(log_probs.values()))
    w_video, w_audio = (w / sum(weights) for w in weights)
    return w_video * log_probs['video'] + w_audio * log_probs['audio']

  def _transport(self, state: TrainState, log_p: jax.Array, mask: jax.Array,
                 heads: tuple[int, ...], mesh: jax.sharding.Mesh, log_r_plus: jax.Array | None):
    """Eq. 3-5 for `heads`: the Sinkhorn solve of `log_p` against the heads' sorted prior draws (or
    uniform marginals), warm-started from `log_r_plus` (the stored potentials) when given. Returns
    the solve and the log-marginals it used."""
    s = self.settings
    marginals = None
    if s.prior == 'gaussian':
      masses = _masked_mass(log_p, mask)
      marginals = jnp.stack([sk.sorted_marginal(state.method_state['prior'][h], masses[i],
                                                s.prior_order) for i, h in enumerate(heads)])
    log_r = _log_marginals(marginals, len(heads), s.num_clusters)
    result = sk.sinkhorn_heads(log_p, s.lam, col_marginals=marginals, mesh=mesh,
                               row_mask=mask, mode=s.sinkhorn_mode, tol=s.sinkhorn_tol,
                               num_iters=s.sinkhorn_max_iters,
                               overrelaxation=s.sinkhorn_overrelaxation,
                               init_log_alphas=None if log_r_plus is None else log_r + log_r_plus)
    return result, log_r

  def _log_solve(self, update: int, heads: tuple[int, ...], result, warm: bool,
                 source: str = 'both modalities') -> None:
    s = self.settings
    error = np.asarray(result.error)
    logging.info('Label update %d, heads %s (%s): Sinkhorn iterations %s (%s start), marginal error '
                 '%s', update, heads, source, np.asarray(result.iterations).tolist(),
                 'warm' if warm else 'cold', np.round(error, 5).tolist())
    if error.max() > s.sinkhorn_tol:
      logging.warning('Label update %d: Sinkhorn stopped at %d iterations with marginal error %.4f > '
                      'tol %g; the labels are used, but cluster sizes follow the prior only that '
                      'closely (raise config.selavi.sinkhorn_max_iters for more).', update,
                      s.sinkhorn_max_iters, float(error.max()), s.sinkhorn_tol)

  def label_update_summary(self, state: TrainState, data) -> dict[str, float]:
    """The self-labels just made, for the training log: the agreement between heads (mean pairwise
    NMI, §4.1) and, when the records have labels, NMI and ARI against them; each as mean and std over
    heads (`label_update/<name>/{mean,std}`)."""
    table = sharding.host_copy(state.method_state['self_labels'])
    summary = {}
    if table.shape[1] > 1:
      summary.update(_mean_std('head_agreement', metrics_lib.pairwise_nmi(table)))
    truth = _ground_truth(data, self.config.data.train_split)
    if truth is not None:
      for name, metric in (('nmi', metrics_lib.nmi), ('ari', metrics_lib.ari)):
        values = [metric(truth, table[:, h]) for h in range(table.shape[1])]
        summary.update(_mean_std(name, (float(np.mean(values)), float(np.std(values)))))
    return summary

  def cluster_prior(self, state: TrainState) -> np.ndarray:
    """Each head's Gaussian (or uniform) target cluster sizes `[heads, K]`, drawn once per run."""
    return sharding.host_copy(state.method_state['prior'])

  def _warm_up_batchnorm(self, state: TrainState, data, mesh) -> TrainState:
    """Train-mode forward passes without gradients, so eval-mode BN has sane statistics for the
    first label update (the release's `warmup_batchnorm`, `docs/papers_and_releases.md`)."""
    @jax.jit
    def forward(params, batch_stats, batch, rng):
      batch = on_device.normalize(batch, self.config.data)
      _, updates = self._apply({'params': params, 'batch_stats': batch_stats}, batch, train=True,
                               rngs={'dropout': rng}, mutable=['batch_stats'])
      return updates['batch_stats']

    batch_stats = state.batch_stats
    for i, batch in enumerate(itertools.islice(data.train_batches(0),
                                                self.settings.bn_warmup_batches)):
      preemption.check()
      batch_stats = forward(state.params, batch_stats, sharding.to_global(batch, mesh),
                            jax.random.fold_in(state.rng, 2**30 + i))
    return state.replace(batch_stats=sharding.placed_like(batch_stats, state.batch_stats))

  def dataset_log_probs(self, state: TrainState, batches: Iterator[dict[str, np.ndarray]],
                        mesh: jax.sharding.Mesh, heads: tuple[int, ...]
                        ) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    """Eval-mode log-softmax of `heads` over a dataset pass: `{modality: [len(heads), R, K]}`, with
    the rows' dataset indices `[R]` and mask `[R]`, all row-sharded; nothing is gathered."""
    forward = self._log_prob_fn(heads)
    name = f'label pass (heads {", ".join(map(str, heads))})'
    tracker = passes.PassProgress(name, batches, mesh)
    chunks, indices, masks = [], [], []
    for batch in batches:
      preemption.check()
      batch = sharding.to_global(batch, mesh)
      chunks.append(forward(state.params, state.batch_stats, batch))
      indices.append(batch['index'])
      masks.append(batch['mask'])
      tracker.update(batch['mask'].shape[0], chunks[-1])
    tracker.finish(chunks)
    rows = _rows_fn(mesh)
    log_probs = {m: rows(jnp.stack([c[m] for c in chunks]), 2) for m in chunks[0]}
    return log_probs, rows(jnp.stack(indices), 1), rows(jnp.stack(masks), 1)

  @functools.lru_cache(maxsize=None)
  def _log_prob_fn(self, heads: tuple[int, ...]):
    @jax.jit
    def forward(params, batch_stats, batch):
      batch = on_device.normalize(batch, self.config.data)
      outputs = self._apply({'params': params, 'batch_stats': batch_stats}, batch, train=False)
      return {m: jax.nn.log_softmax(logits[jnp.asarray(heads)], axis=-1)
              for m, logits in outputs.items()}
    return forward

  def _align(self, state: TrainState, log_probs: dict[str, jax.Array], mask: jax.Array,
             heads: tuple[int, ...], mesh) -> tuple[TrainState, dict[str, jax.Array]]:
    """Eq. 7 for each head of the group: permute the audio head's outputs to match the video head."""
    dense = state.params['audio_heads']['heads']['out']
    audio = log_probs['audio']
    for i, h in enumerate(heads):
      p_v = jnp.exp(log_probs['video'][i]) * mask[:, None]
      p_a = jnp.exp(audio[i]) * mask[:, None]
      found = alignment.align(p_v, p_a, mesh=mesh, method=self.settings.alignment_method,
                              seed=self.config.seed + h)
      dense = alignment.permute_head(dense, found.perm, head=h)
      audio = audio.at[i].set(audio[i][:, jnp.asarray(found.perm)])
      logging.info('Modality alignment, head %d: L1 cost %.1f -> %.1f', h, found.identity_cost,
                   found.cost)
    params = jax.tree.map(lambda x: x, state.params)
    out = state.params['audio_heads']['heads']['out']
    params['audio_heads']['heads']['out'] = sharding.placed_like(dense, out)
    return state.replace(params=params), {**log_probs, 'audio': audio}

  # Evaluation and labels.

  def predictions(self, state: TrainState, batches: Iterator[base.Batch]) -> dict[str, np.ndarray]:
    """Per-head argmax and confidence `[N, heads]` of every view the model has ('video', 'audio', and
    'video + audio' from the averaged log-probabilities, Eq. 6), with index and label; on the host,
    real rows only, in dataset-index order."""
    forward = self._prediction_fn(tuple(range(self.settings.num_heads)))
    return passes.ordered_pass(lambda batch: forward(state.params, state.batch_stats, batch),
                               batches, self.context.mesh, name='predictions')

  def _views(self, params, batch_stats, batch, heads: tuple[int, ...]) -> dict[str, jax.Array]:
    """Each view's log-probabilities `[len(heads), B, K]`."""
    views = self._log_prob_fn(heads)(params, batch_stats, batch)
    if 'concat' in views:
      views = {'video + audio': views['concat']}
    elif len(views) == 2:  # Eq. 6's average, renormalised: the normalised geometric mean.
      views['video + audio'] = jax.nn.log_softmax(self._fuse(views), axis=-1)
    return views

  @functools.lru_cache(maxsize=None)
  def _prediction_fn(self, heads: tuple[int, ...]):
    @jax.jit
    def forward(params, batch_stats, batch):
      out = {'label': batch['label']}
      for name, lp in self._views(params, batch_stats, batch, heads).items():
        out[f'{name}/label'] = jnp.argmax(lp, axis=-1).T  # [B, heads]
        out[f'{name}/confidence'] = jnp.exp(jnp.max(lp, axis=-1)).T
      return out
    return forward

  def cluster_probs(self, state: TrainState, batch: base.Batch) -> dict[str, jax.Array]:
    """`Clusters`: the probabilities `[heads, B, K]` of every view (see `predictions`)."""
    views = self._views(state.params, state.batch_stats, batch,
                        tuple(range(self.settings.num_heads)))
    return {name: jnp.exp(lp) for name, lp in views.items()}

  def self_labels(self, state: TrainState) -> dict[str, np.ndarray]:
    """`SelfLabels`: the self-label table `[N, heads]` of the last label update."""
    return {'self-labels': sharding.host_copy(state.method_state['self_labels'])}

  def encoders(self, state: TrainState) -> dict[str, base.Encoder]:
    """`HasEncoders`: the encoder of each modality the model has."""
    return {m: base.Encoder(getattr(self.model, m), {
        'params': state.params[m], 'batch_stats': state.batch_stats.get(m, {})}, m)
            for m in self.inputs}

  def evaluate(self, state: TrainState, batches: Iterator[base.Batch]) -> dict[str, float]:
    """Clustering metrics against ground truth (Table 2): per head, mean ± std over heads, for each
    view; with the self-label table too when the evaluation split is the training split."""
    pred = self.predictions(state, batches)
    keep = pred['label'] >= 0
    if not keep.any():
      return {}
    truth = pred['label'][keep]
    views = {name[:-len('/label')]: pred[name][keep] for name in pred if name.endswith('/label')}
    if self.config.data.eval_split == self.config.data.train_split:
      table = sharding.host_copy(state.method_state['self_labels'])
      views['self-labels'] = table[pred['index'][keep]]
    results = {}
    for name, labels in views.items():
      per_head = metrics_lib.per_head(truth, labels)
      for metric in metrics_lib.METRICS:
        for stat in ('mean', 'std', 'head0', 'best_head_optimistic'):
          results[tables.clustering_key(name, metric, stat)] = float(per_head[metric][stat])
    return results

  def report(self, results: dict[str, float]) -> str:
    """`evaluate`'s results as a Markdown table shaped like the paper's Table 2 (mean ± std)."""
    return metrics_lib.markdown_table(tables.rows_of('', results))


def _mean_std(name: str, values: tuple[float, float]) -> dict[str, float]:
  return {f'label_update/{name}/mean': float(values[0]), f'label_update/{name}/std': float(values[1])}


def _ground_truth(data, split: str) -> np.ndarray | None:
  """The classes of the training videos in dataset-index order (-1: unknown), or None where the data
  has no video table or no labels."""
  videos = data.video_table(split)
  if videos is None:
    return None
  truth = np.array([int(v['label_index'] or -1) for v in videos], np.int64)
  return truth if (truth >= 0).any() else None


def head_groups(seed: int, update: int, num_heads: int, num_groups: int) -> list[tuple[int, ...]]:
  """The decorrelated heads' groups of one label update (§3.3): a random split, drawn anew per update
  from (seed, update) so that a resumed run draws the same; each group gets its own dataset pass."""
  order = np.random.default_rng([seed, update]).permutation(num_heads)
  return [tuple(int(h) for h in np.sort(order[g::num_groups])) for g in range(num_groups)]


def _average(log_probs: list[jax.Array]) -> jax.Array:
  total = log_probs[0]
  for log_p in log_probs[1:]:
    total = total + log_p
  return total / len(log_probs)


def _log_marginals(marginals: jax.Array | None, num_heads: int, num_clusters: int) -> jax.Array:
  """log r `[heads, K]` of a group's solves: the sorted prior's, or uniform's where it is None.

  The cluster potential log α of a solve is stored as log α − log r, and the next update starts from
  log r' plus it (`sinkhorn_potential`). The sort trick may hand cluster k another prior mass r'_k
  than last time, but the potential belongs to the cluster, not to the prior slot: log α_k − log r_k =
  −log Σ_n β_n P_nk^λ is made of column k of the network's output, so it stays with k, and adding
  log r'_k is exactly the cluster update that the previous row scalings β make under the new
  marginal. On the SeLa demo's solves, permuting the potentials with the prior instead took 108,510
  iterations in all, against 108,205 this way and 108,568 from a cold start.
  """
  if marginals is None:
    return jnp.full((num_heads, num_clusters), -np.log(num_clusters), jnp.float32)
  return jnp.log(marginals)


@jax.jit
def _masked_mass(log_p: jax.Array, mask: jax.Array) -> jax.Array:
  """Each head's current soft cluster mass `[heads, K]` over the real rows (for the sort trick)."""
  return jnp.einsum('hnk,n->hk', jax.nn.softmax(log_p, axis=-1), mask)


@jax.jit
def _scatter_labels(table: jax.Array, index: jax.Array, mask: jax.Array, heads: jax.Array,
                    labels: jax.Array) -> jax.Array:
  """table[index, heads] = labels for the real rows; padding rows go to an index that is dropped."""
  rows = jnp.where(mask > 0, index, table.shape[0])
  return table.at[rows[:, None], heads[None, :]].set(labels.T, mode='drop')


@functools.lru_cache(maxsize=None)
def _rows_fn(mesh: jax.sharding.Mesh):
  """`[batches, ..., B, ...]` stacked pass outputs → rows `[..., B · batches, ...]`, device-local.

  Each device holds its slice of every batch; putting the batch axis outside the stacking axis keeps
  those rows on their device (no data moves), and row order does not matter to the transport.
  """
  @functools.partial(jax.jit, static_argnums=1)
  def rows(stacked: jax.Array, batch_axis: int) -> jax.Array:
    moved = jnp.moveaxis(stacked, 0, batch_axis)  # [..., B, batches, ...]
    shape = moved.shape[:batch_axis - 1] + (-1,) + moved.shape[batch_axis + 1:]
    out = moved.reshape(shape)
    spec = P(*([None] * (batch_axis - 1) + [sharding.DATA_AXIS]))
    return jax.lax.with_sharding_constraint(out, NamedSharding(mesh, spec))
  return rows
