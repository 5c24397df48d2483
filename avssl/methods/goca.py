"""GOCA: guided online cluster assignment between RGB and optical flow (Coskun et al., ECCV 2022).

Two backbones of one architecture see the same clips as RGB frames (`video`) and as TV-L1 flow (`flow`).
Their pooled features go through a projection head (D → 2048 → 2048 → 128, L2-normalised) and are
scored against one set of prototypes shared by both streams (§3.2), kept fixed after being spread
maximally apart before training (§3.3, Eq. 11; `clustering/prototypes.py`).

Every step is SwAV's online assignment per stream (§3.1, Eq. 3-5): scores S = z Pᵀ of the codes' clips,
Sinkhorn with ε = λ₁ over the global batch (all devices, in the log domain), then GOCA's guidance
(Eq. 6-10): each stream's final codes solve the transport problem again with the other stream's initial
codes D′ as a prior of weight λ₂, the kernel exp((S + λ₂ log D′) / (λ₁ + λ₂)). The loss (Eq. 12-13) is
SwAV's swapped prediction within each stream: the code of each long clip is the target of the
prototype softmax (τ = 0.1) of every other clip of that stream; the RGB and flow losses are summed. The
streams meet only in the assignment.

The paper's baselines (Table 1) are variants of the same code (`config.goca.variant`):
  - `goca`: separate backbones, shared projection head and prototypes, guided codes;
  - `sep`: the same model, each stream's codes from its own scores only (no guidance);
  - `avg`: the two backbones' features averaged before one head (one SwAV problem);
  - `sview`: independent heads and prototypes per stream, no guidance (two SwAVs trained side by
    side, which for per-parameter LARS is the same as training them apart).

Where the release differs from the paper (`docs/papers_and_releases.md`), the paper is the default:
`prior_sign=+1` (the release subtracts λ₂ log D′, `-1`), no double 1/|A| in the loss, projection head
shared (`share_projection_head=False` is the release's default), flow augmented with the frames' crop and
flip (the data pipeline), Gaussian blur applied to RGB.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from avssl import config_lib, passes, sharding
from avssl.clustering import prototypes as prototypes_lib
from avssl.clustering import sinkhorn as sk
from avssl.data import on_device
from avssl.evaluation import metrics as metrics_lib
from avssl.evaluation import tables
from avssl.methods import base
from avssl.models import encoders
from avssl.models.common import Norm
from avssl.models.heads import ProjectionHead, normalize_prototypes
from avssl.train_state import TrainState

MODALITIES = ('video', 'flow')
VARIANTS = ('goca', 'sep', 'avg', 'sview')


def default_config(**overrides) -> ml_collections.ConfigDict:
  """GOCA's constants: λ₁ = 0.02, λ₂ = 0.03 (§4.1, Table 2), τ = 0.1, 3 Sinkhorn iterations, 1000
  prototypes of 128 dimensions separated by 50,000 projected SGD steps at lr 0.1 (§3.3; the release's
  file), projection 2048-2048-128 (the release; `docs/papers_and_releases.md`). Guidance starts at
  `guidance_start_epochs` (the paper trains guided throughout: 0; the release's default is epoch 100);
  `guidance_cycles` is the release's `sinkhorn_cycle`. `prototypes='online'` trains them with the
  separation loss (Eq. 11) added with `separation_weight`; the optional SwAV queue (`queue_length`, 0
  as in the release) prepends past features of the code clips to the transport problem from
  `queue_start_epochs`."""
  config = ml_collections.ConfigDict(dict(
      variant='goca', num_prototypes=1000, projection_hidden=2048, projection_dim=128,
      share_projection_head=True,
      eps1=0.02, eps2=0.03, prior_sign=1.0, guidance_cycles=1,
      guidance_start_epochs=config_lib.optional(float), guidance_start_steps=config_lib.optional(int),
      sinkhorn_iters=3, sinkhorn_mode='log', temperature=0.1,
      prototypes='fixed', separation_steps=50_000, separation_lr=0.1, separation_weight=1.0,
      queue_length=0, queue_start_epochs=config_lib.optional(float),
      queue_start_steps=config_lib.optional(int)))
  config.guidance_start_epochs = 0.0
  config.queue_start_epochs = 15.0
  for key, value in overrides.items():
    config[key] = value
  return config


class GOCAModel(nn.Module):
  """The RGB and flow backbones and their projection head(s).

  Each input is a list of clip groups `[N_g, T_g, H, W, C]` (clips of one length per group: the
  multi-temporal-resolution views); every group goes through the backbone at its own length, and the
  L2-normalised projections come back concatenated in group order, `{stream: [Σ N_g, dim]}`, with
  streams `video` and `flow`, or `avg` for the Avg baseline.
  """
  video: nn.Module
  flow: nn.Module
  variant: str = 'goca'
  share_projection_head: bool = True
  hidden: int = 2048
  dim: int = 128
  norm: Norm = Norm()

  @nn.compact
  def __call__(self, video: Sequence[jax.Array], flow: Sequence[jax.Array], *,
               train: bool) -> dict[str, jax.Array]:
    features = {'video': jnp.concatenate([self.video(x, train) for x in video]),
                'flow': jnp.concatenate([self.flow(x, train) for x in flow])}
    head = lambda name: ProjectionHead(self.hidden, self.dim, self.norm, name=name)
    if self.variant == 'avg':
      return {'avg': head('head')((features['video'] + features['flow']) / 2, train)}
    if self.share_projection_head and self.variant != 'sview':
      shared = head('head')
      return {m: shared(f, train) for m, f in features.items()}
    return {m: head(f'{m}_head')(f, train) for m, f in features.items()}


def swapped_prediction(scores: jax.Array, codes: jax.Array, temperature: float) -> jax.Array:
  """Eq. 12-13 for one stream: the mean over code clips t and other clips v ≠ t of the cross-entropy
  between code q_t and softmax(S_v / τ), averaged over the batch.

  `scores [V, B, K]` of all clips, `codes [A, B, K]` of the first A clips (rows summing to 1).
  """
  log_p = jax.nn.log_softmax(scores / temperature, axis=-1)
  cross_entropy = -jnp.einsum('abk,vbk->av', codes, log_p) / scores.shape[1]
  others = 1.0 - jnp.eye(codes.shape[0], scores.shape[0], dtype=scores.dtype)
  return jnp.sum(cross_entropy * others) / jnp.sum(others)


class GOCA(base.Method):
  """Guided online cluster assignment; see the module docstring."""

  inputs = MODALITIES
  report_title = ("Guided codes (Eq. 6-10): how often a stream's codes pick the other stream's "
                  'initial prototype')
  report_notes = {'rows': 'every evaluation view of every video; Sinkhorn over each global batch'}

  def __init__(self, config: ml_collections.ConfigDict, context: base.RunContext | None = None):
    super().__init__(config, context)
    self.settings = s = config.goca
    if s.variant not in VARIANTS:
      raise ValueError(f'config.goca.variant={s.variant!r} is not one of {VARIANTS}')
    if s.prototypes not in ('fixed', 'online'):
      raise ValueError(f"config.goca.prototypes={s.prototypes!r}; use 'fixed' or 'online'")
    if s.prior_sign not in (1.0, -1.0):
      raise ValueError(f'config.goca.prior_sign={s.prior_sign}; use +1 (paper) or -1 (release)')
    groups = tuple(tuple(g) for g in config.data.multi_crop)
    if not groups or sum(count for count, _ in groups) < 2:
      raise ValueError('GOCA needs at least two clips per example: set config.data.multi_crop, e.g. '
                       '((2, 32), (4, 16))')
    if not config.data.with_flow:
      raise ValueError('GOCA reads optical flow: set config.data.with_flow=True (records made with '
                       'make_records --flow)')
    self.groups = groups
    self.num_views = sum(count for count, _ in groups)
    self.num_code_views = groups[0][0]

  # Model and state.

  @property
  def streams(self) -> tuple[str, ...]:
    return ('avg',) if self.settings.variant == 'avg' else MODALITIES

  def prototype_set(self, stream: str) -> str:
    """The prototype matrix a stream scores against: one shared, or one per stream for SView."""
    return stream if self.settings.variant == 'sview' else 'shared'

  def build_model(self) -> nn.Module:
    norm = Norm.from_config(self.config.model)
    model = self.config.model
    s = self.settings
    return GOCAModel(video=encoders.video_encoder(model.video, norm),
                     flow=encoders.video_encoder(model.get('flow') or model.video, norm),
                     variant=s.variant, share_projection_head=s.share_projection_head,
                     hidden=s.projection_hidden, dim=s.projection_dim, norm=norm)

  def _clip_groups(self, batch: base.Batch, modality: str) -> list[jax.Array]:
    """The batch's clip groups `[B, n_g, T_g, ...]` as view-major `[n_g · B, T_g, ...]`."""
    keys = [modality] + [f'{modality}_{g}' for g in range(1, len(self.groups))]
    return [jnp.swapaxes(batch[k], 0, 1).reshape(-1, *batch[k].shape[2:]) for k in keys]

  def init_variables(self, rng: jax.Array, batch: base.Batch) -> dict[str, Any]:
    variables = self.model.init({'params': rng}, video=self._clip_groups(batch, 'video'),
                                flow=self._clip_groups(batch, 'flow'), train=False)
    if self.settings.prototypes == 'online':
      sets = sorted({self.prototype_set(m) for m in self.streams})
      keys = jax.random.split(jax.random.fold_in(rng, 0x9707), len(sets))
      shape = (self.settings.projection_dim, self.settings.num_prototypes)
      variables = {**variables, 'params': {**variables['params'], 'prototypes': {
          name: normalize_prototypes(jax.random.normal(key, shape)) for name, key in zip(sets, keys)}}}
    return variables

  def init_method_state(self, num_examples: int) -> dict[str, Any]:
    """Fixed prototypes (computed once here, kept in the checkpoint, never trained) and the queue."""
    del num_examples
    s = self.settings
    state: dict[str, Any] = {}
    if s.prototypes == 'fixed':
      sets = sorted({self.prototype_set(m) for m in self.streams})
      state['prototypes'] = {}
      for i, name in enumerate(sets):
        with jax.ensure_compile_time_eval():  # Computed once, now, even when the state is traced.
          table, max_cos = prototypes_lib.separated_prototypes(
              s.num_prototypes, s.projection_dim, steps=s.separation_steps,
              learning_rate=s.separation_lr, seed=self.config.seed + i)
        logging.info('GOCA prototypes %r: %d x %d, largest pairwise cosine %.4f after %d steps',
                     name, s.num_prototypes, s.projection_dim, max_cos, s.separation_steps)
        state['prototypes'][name] = table
    if s.queue_length:
      state['queue'] = {m: jnp.zeros((self.num_code_views, s.queue_length, s.projection_dim),
                                     jnp.float32) for m in self.streams}
    return state

  def prototypes(self, params: Any, method_state: Any) -> dict[str, jax.Array]:
    """Each stream's unit prototypes `[K, dim]`: the fixed table, or the trained ones normalised
    (SwAV re-normalises them before every step; here the forward pass does)."""
    if self.settings.prototypes == 'fixed':
      table = method_state['prototypes']
      return {m: table[self.prototype_set(m)] for m in self.streams}
    table = params['prototypes']
    return {m: normalize_prototypes(table[self.prototype_set(m)]).T for m in self.streams}

  def _model_params(self, params: Any) -> Any:
    return {k: v for k, v in params.items() if k != 'prototypes'}

  @property
  def _mesh(self) -> jax.sharding.Mesh:
    """The run's mesh (Sinkhorn over the global batch), or all devices for a method on its own."""
    return self._context.mesh if self._context else sharding.make_mesh()

  def encoders(self, state: TrainState) -> dict[str, base.Encoder]:
    """`HasEncoders`: the RGB (`video`) and the flow backbone."""
    return {m: base.Encoder(getattr(self.model, m), {
        'params': state.params[m], 'batch_stats': state.batch_stats.get(m, {})}, m)
            for m in MODALITIES}

  # Assignment.

  def _start_step(self, name: str) -> int:
    steps_per_epoch = self._context.steps_per_epoch if self._context else 1
    steps = config_lib.steps(self.settings, name, steps_per_epoch, default=0)
    return int(steps)

  def _plan(self, logits: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Codes of one transport problem: `sinkhorn_iters` iterations on exp(logits) over all rows of
    the (global) batch, uniform marginals; each real row of the result sums to 1."""
    s = self.settings
    result = sk.sinkhorn(logits, 1.0, mode=s.sinkhorn_mode, num_iters=s.sinkhorn_iters, tol=None,
                         mesh=self._mesh, return_plan=True, row_mask=mask)
    assert result.plan is not None  # return_plan=True
    rows = logits.shape[0] if mask is None else jnp.sum(mask)
    return result.plan * rows

  def assign(self, scores: dict[str, jax.Array], eps2: jax.Array | float,
             mask: jax.Array | None = None, sign: float | None = None,
             guide: bool | None = None) -> dict[str, jax.Array]:
    """Eq. 5, then Eq. 6-10: each stream's initial codes D′ from its own scores `[N, K]`; when
    guiding (GOCA's variant, or `guide`), each stream's codes again with the other's codes as prior
    of weight `eps2`, `guidance_cycles` times. `sign` overrides `config.goca.prior_sign`."""
    s = self.settings
    codes = {m: self._plan(x / s.eps1, mask) for m, x in scores.items()}
    if not (s.variant == 'goca' if guide is None else guide) or len(codes) != 2:
      return codes
    sign = s.prior_sign if sign is None else sign
    other = {'video': 'flow', 'flow': 'video'}
    for _ in range(s.guidance_cycles):
      codes = {m: self._plan(sk.guided_logits(x, codes[other[m]], s.eps1, eps2, sign), mask)
               for m, x in scores.items()}
    return codes

  def _codes(self, scores: dict[str, jax.Array], z: dict[str, jax.Array],
             prototypes: dict[str, jax.Array], state: TrainState) -> tuple[dict[str, jax.Array], Any]:
    """Codes `{stream: [A, B, K]}` of the A code clips, with the queue's rows prepended once it is
    on; and the method state with the queue advanced by this batch."""
    s = self.settings
    eps2 = jnp.where(state.step >= self._start_step('guidance_start'), s.eps2, 0.0)
    batch = scores[self.streams[0]].shape[1]
    queue = state.method_state.get('queue')

    def codes_of(with_queue: bool) -> dict[str, jax.Array]:
      out: dict[str, list[jax.Array]] = {m: [] for m in scores}
      for t in range(self.num_code_views):
        rows = {m: scores[m][t] for m in scores}
        if with_queue:
          rows = {m: jnp.concatenate([queue[m][t] @ prototypes[m].T, rows[m]]) for m in rows}
        for m, q in self.assign(rows, eps2).items():
          out[m].append(q[-batch:])
      return {m: jnp.stack(v) for m, v in out.items()}

    if queue is None:
      return codes_of(False), state.method_state
    start = max(self._start_step('queue_start'), -(-s.queue_length // batch))
    codes = jax.lax.cond(state.step >= start, lambda: codes_of(True), lambda: codes_of(False))
    newest = {m: jax.lax.stop_gradient(z[m][:self.num_code_views]) for m in z}
    advanced = {m: jnp.concatenate([newest[m], queue[m]], axis=1)[:, :s.queue_length]
                for m in queue}
    return codes, {**state.method_state, 'queue': advanced}

  # Training.

  def forward(self, params: Any, batch_stats: Any, batch: base.Batch, *, train: bool):
    """Projections `{stream: [V, B, dim]}` of every clip of the batch (and BN updates in training)."""
    variables = {'params': self._model_params(params), 'batch_stats': batch_stats}
    inputs = {m: self._clip_groups(batch, m) for m in MODALITIES}
    if train:
      z, updates = self.model.apply(variables, **inputs, train=True, mutable=['batch_stats'])
    else:
      z, updates = self.model.apply(variables, **inputs, train=False), {'batch_stats': batch_stats}
    size = batch['video'].shape[0]
    return {m: v.reshape(self.num_views, size, -1) for m, v in z.items()}, updates['batch_stats']

  def codes(self, params: Any, state: TrainState, batch: base.Batch) -> dict[str, jax.Array]:
    """The training step's codes `{stream: [A, B, K]}` for `batch` (for inspection and tests)."""
    z, _ = self.forward(params, state.batch_stats, batch, train=True)
    prototypes = self.prototypes(params, state.method_state)
    scores = {m: z[m] @ prototypes[m].T for m in z}
    return self._codes(jax.lax.stop_gradient(scores), z, prototypes, state)[0]

  def loss(self, params, state: TrainState, batch, rng):
    """Eq. 12: Σ over streams of SwAV's swapped prediction with the (guided) codes as targets, plus
    the separation loss (Eq. 11) of trained prototypes."""
    del rng
    s = self.settings
    z, batch_stats = self.forward(params, state.batch_stats, batch, train=True)
    prototypes = self.prototypes(params, state.method_state)
    scores = {m: z[m] @ prototypes[m].T for m in z}
    codes, method_state = self._codes(jax.lax.stop_gradient(scores), z, prototypes, state)
    losses = {m: swapped_prediction(scores[m], codes[m], s.temperature) for m in scores}
    loss = functools.reduce(jnp.add, losses.values())
    metrics = {f'loss_{m}': v for m, v in losses.items()}
    if s.prototypes == 'online':
      separation = functools.reduce(jnp.add, (
          prototypes_lib.separation_loss(p)
          for p in {self.prototype_set(m): prototypes[m] for m in self.streams}.values()))
      loss = loss + s.separation_weight * separation
      metrics['separation'] = separation
    if len(codes) == 2:
      metrics['code_agreement'] = jnp.mean(
          jnp.argmax(codes['video'], -1) == jnp.argmax(codes['flow'], -1))
    return loss, base.StepOutput(batch_stats, metrics, method_state)

  # Evaluation.

  def evaluate(self, state: TrainState, batches: Iterator[base.Batch]) -> dict[str, float]:
    """On each evaluation batch (every view a row, Sinkhorn over the global batch): how often a stream's
    codes pick the same prototype as the other stream's initial codes, unguided, and guided with the
    paper's and with the release's sign (whatever the variant trained with: guidance should pull the
    codes together, the release's sign push them apart); and the NMI with the ground truth of each
    stream's prototype argmax."""
    if self.streams != MODALITIES:
      return {}
    fn = self._evaluation_fn(self._mesh)
    out = passes.ordered_pass(
        lambda batch: fn(state.params, state.batch_stats, state.method_state, batch), batches,
        self._mesh, name='evaluation')
    real = float(len(out['index']))
    results = {f'agreement/{k[len("agreement/"):]}': float(np.sum(v, dtype=np.float64)) / real
               for k, v in out.items() if k.startswith('agreement/')}
    for m in MODALITIES:
      results[f'{m}/prototype_nmi'] = metrics_lib.nmi(out['label'], out[m])
    return results

  @functools.lru_cache(maxsize=None)
  def _evaluation_fn(self, mesh: jax.sharding.Mesh):
    s = self.settings

    @jax.jit
    def evaluate(params, batch_stats, method_state, batch):
      batch = on_device.normalize(batch, self.config.data)
      rows = {m: batch[m].reshape(-1, *batch[m].shape[-4:]) for m in MODALITIES}
      views = rows['video'].shape[0] // batch['mask'].shape[0]
      mask = jnp.repeat(batch['mask'], views)
      variables = {'params': self._model_params(params), 'batch_stats': batch_stats}
      z = self.model.apply(variables, video=[rows['video']], flow=[rows['flow']], train=False)
      prototypes = self.prototypes(params, method_state)
      scores = {m: z[m] @ prototypes[m].T for m in z}
      initial = self.assign(scores, 0.0, mask)
      picks = {m: jnp.argmax(q, -1) for m, q in initial.items()}
      out = {'mask': mask, 'index': jnp.repeat(batch['index'], views),
             'label': jnp.repeat(batch['label'], views),
             **{m: jnp.argmax(scores[m], -1) for m in MODALITIES}}
      for name, sign in (('unguided', None), ('guided', 1.0), ('guided_release_sign', -1.0)):
        codes = initial if sign is None else self.assign(scores, s.eps2, mask, sign, guide=True)
        for m, other in (('video', 'flow'), ('flow', 'video')):  # Per row; summed on the host.
          out[f'agreement/{name}/{m}'] = (jnp.argmax(codes[m], -1) == picks[other]).astype(
              jnp.float32)
      return out

    return evaluate

  def report(self, results: dict[str, float]) -> str | None:
    if not results:
      return None
    lines = ['| Codes | RGB agrees with flow′ | flow agrees with RGB′ |', '|:---|---:|---:|']
    for name, title in (('unguided', 'unguided (SwAV, Eq. 5)'),
                        ('guided', 'guided, paper sign (+λ₂ log D′)'),
                        ('guided_release_sign', 'guided, release sign (−λ₂ log D′)')):
      lines.append(f'| {title} | {100 * results[f"agreement/{name}/video"]:.1f} | '
                   f'{100 * results[f"agreement/{name}/flow"]:.1f} |')
    lines += ['', 'Prototype argmax NMI with the classes: RGB '
              f'{100 * results["video/prototype_nmi"]:.1f}, flow '
              f'{100 * results["flow/prototype_nmi"]:.1f}.']
    return '\n'.join(lines)


STREAM_NAMES = {'video': 'RGB', 'flow': 'flow', 'video + flow': 'RGB + flow'}


def comparison_tables(runs: dict[str, dict[str, Any]]) -> str:
  """Table 1 (retrieval R@k of each stream and of both averaged, the "+" rows) and Table 6 (k-means
  cluster quality: purity, NMI, macro-F1) of several runs' `--mode=eval` outputs, side by side;
  `runs` maps a row name (SView, Avg, Sep, GOCA) to that run's `{'retrieval': eval/retrieval.json,
  'kmeans': eval/kmeans.json}`."""
  retrieval_rows, quality_rows = {}, {}
  for name, evaluations in runs.items():
    retrieval, kmeans = evaluations['retrieval'], evaluations['kmeans']
    for stream, title in STREAM_NAMES.items():
      if stream in retrieval:
        retrieval_rows[f'{name}, test: {title}'] = retrieval[stream]
      row = f'k-means, trained encoder: {stream}'
      if row in kmeans:
        quality_rows[f'{name}, test: {title}'] = kmeans[row]
  ks = sorted({int(key[2:]) for row in retrieval_rows.values() for key in row if key[:2] == 'R@'})
  return ('### Merging strategies (GOCA Table 1 layout): retrieval of the test split in the train '
          'split\n\n' + tables.retrieval(retrieval_rows, ks)
          + '\n\n### Cluster quality (GOCA Table 6 layout): k-means, k = number of classes\n\n'
          + tables.clustering(quality_rows, ('purity', 'nmi', 'macro_f1')))
