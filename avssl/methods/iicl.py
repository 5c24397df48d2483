"""IICL: inter- and intra-level cross-modal contrastive clustering (Wei, Luo, Li, Hu, 2022).

Online and end-to-end: no pass over the dataset, no offline clustering. Each step, the video and audio
encoders' last feature maps go through one co-attention block (§III-B, Eq. 1: the visual stream is
attended with audio queries and the audio stream with visual ones) and then through two heads per
modality (§III-C, D): g_ins to a 1024-d instance space (L2-normalised) and g_clu to C cluster
probabilities (softmax). The losses, all over the **global** batch (under `jax.jit` on the batch sharded
over the mesh, plain `jnp` over the batch axis is the global computation; XLA inserts the gathers):

  - inter-level (Eq. 3-4): InfoNCE from each clip's video to its own audio against the other clips'
    audio (and the reverse), cosine / τ_ins, L_ins = L_v + L_a;
  - intra-level (Eq. 5-6): the same contrast between the *columns* of the two modalities' N × C
    cluster matrices (cluster k of the video head against cluster k of the audio head), cosine / τ_clu,
    minus H(Y), the entropies of the two modalities' cluster marginals (log clamped, so an empty
    cluster gives no NaN): L_clu = L_v_clu + L_a_clu − H(Y);
  - L = L_ins + λ·L_clu (Eq. 7).

Which clips meet in the co-attention (`co_attention.reading`, `avssl/models/co_attention.py`):

  - 'pairwise' (default): every (video i, audio j) pair of the global batch goes through the block
    and the instance heads together, so the score of a pair is s_ij = cos(g_ins(H_v(i, j)),
    g_ins(H_a(i, j))); L_ins is Eq. 3 in both directions over that N × N matrix (row i: video i's
    candidates, column j: audio j's), and L_clu, the cluster heads, the labels and Table II use each
    clip's own pair (i, i). `pair_scores` computes the matrix, rows sharded over the devices.
  - 'per_clip' (an ablation): each clip's video with its own audio only, then the embeddings of
    different clips are compared; its positives share their clip's content through the block, which
    no negative does (the README's IICL section).

The paper's denominators hold only cross-modal pairs; `intra_negatives` adds the other clips of the
anchor's own modality, as the Contrastive Clustering code does (`docs/papers_and_releases.md`).

Two stages (§III-E, §IV-B): L_ins alone for `init_epochs` (or `init_steps`), then L_ins + λ·L_clu.
The switch is `state.step >= switch_step` inside the jitted loss, with `switch_step` in the method
state (so the checkpoint carries the schedule a run started with); at the switch, the method's
`scheduled_update` gives the cluster heads a fresh initialisation and fresh optimiser moments (see
`restart_cluster_heads` for why). `losses` selects Table II's ablations: ('ins',) trains the instance level
alone (its clusters come from k-means in the instance space), ('clu',) the cluster level alone.

A clip's cluster is the argmax of the cluster head of the video, of the audio, or of their averaged
probabilities (`--mode=label` writes all three to `labels.csv`). `evaluate` gives Table II (NMI and
accuracy of those clusters and of k-means in the instance space) and Table III (cross-modal retrieval
mAP in the instance space, where both modalities share one embedding space; pairwise, each video ranks
the audio by the score of the pair, computed through the co-attention).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from avssl import config_lib, optim, passes, sharding
from avssl.clustering.kmeans import l2_normalize, pad_rows
from avssl.data import on_device
from avssl.evaluation import baselines, retrieval, tables
from avssl.evaluation import metrics as metrics_lib
from avssl.methods import base
from avssl.models import encoders
from avssl.models.co_attention import CoAttention, PairwiseCoAttention, Stream, tokens_from_map
from avssl.models.common import Norm
from avssl.models.heads import ClusterHead, InstanceHead
from avssl.train_state import TrainState

MODALITIES = ('video', 'audio')
LEVELS = ('ins', 'clu')
VIEWS = ('video + audio', 'video', 'audio')
TABLE_METRICS = ('nmi', 'accuracy', 'purity')  # Table II's NMI and ACC (Hungarian, majority-mapped).
_RANK = {'video': 5, 'audio': 4}  # [B, T, H, W, 3] and [B, mel, frames, 1]; one more: views.
_CLUSTER_HEADS_STREAM = 0x11C1
_KMEANS = 'instance k-means: '  # The prefix of the instance-space k-means results.
READINGS = ('pairwise', 'per_clip')  # Which clips meet in the co-attention (the module docstring).
# The parameters a pair's score reads: the co-attention and the instance heads.
_PAIR_PARAMS = ('co_attention', 'instance_video', 'instance_audio')


def default_config(**overrides) -> ml_collections.ConfigDict:
  """IICL's constants (paper §III, §IV-B); what the paper leaves open is marked."""
  config = ml_collections.ConfigDict(dict(
      losses=LEVELS,  # Eq. 7; ('ins',) and ('clu',) are Table II's ablations.
      num_clusters=400,  # C, §IV-D1 (Table I: best of 100/200/400/800).
      instance_dim=1024,  # §IV-B: the row space of g_ins.
      tau_ins=0.5,  # §IV-B.
      tau_clu=0.5,  # §IV-B (Contrastive Clustering's code: 1.0).
      lam=0.5,  # λ of Eq. 7, §IV-B.
      intra_negatives=False,  # Eq. 3, 5: cross-modal pairs only; True: CC's 2N - 1 terms.
      # Co-attention (§III-B): depth 1 (§IV-B); width and heads are not in the paper. Depth 0: none,
      # the heads read the pooled encoder features (an ablation). `reading`: 'pairwise' (every
      # (video, audio) pair of the batch, the default) or 'per_clip' (each clip's own pair only, an
      # ablation). `pair_block`: pairs per block of the pairwise score matrix (memory, not results;
      # with `config.model.remat` other than 'none' each block is rematerialised, `pair_scores`).
      co_attention=dict(depth=1, width=512, num_heads=8, mlp_ratio=4.0, reading='pairwise',
                        pair_block=8192),
      # Table II's k-means in the instance space: k = number of classes (0), 50 runs (as GOCA §4.3).
      kmeans_k=0, kmeans_runs=50, kmeans_iters=50))
  config.init_epochs = config_lib.optional(float)  # §III-E / §IV-B: 300 epochs of L_ins alone.
  config.init_steps = config_lib.optional(int)
  config.init_epochs = 300.0
  config.update(overrides)
  return config


# The losses (pure functions of the heads' outputs over the global batch).


def _similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.matmul(a, b.T, precision=lax.Precision.HIGHEST)


def _without_diagonal(s: jax.Array) -> jax.Array:
  return jnp.where(jnp.eye(s.shape[0], dtype=bool), -jnp.inf, s)


def contrast(cross: jax.Array, positive: jax.Array, temperature: float,
             own_a: jax.Array | None = None,
             own_b: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Eq. 3 (or 5) in both directions from cosine similarities: `cross` `[N, N]` holds anchor i of side
  a against item j of side b, `positive` `[N]` its diagonal. Returns (mean over the rows of −log
  softmax of the positive among row i / τ, the same over the columns). `own_a`, `own_b` (`[N, N]`, the
  cosines within each side) add the other rows of the anchor's own side to the denominators."""
  cross, positive = cross / temperature, positive / temperature
  from_a, from_b = cross, cross.T
  if own_a is not None and own_b is not None:
    from_a = jnp.concatenate([cross, _without_diagonal(own_a / temperature)], axis=1)
    from_b = jnp.concatenate([cross.T, _without_diagonal(own_b / temperature)], axis=1)
  return (jnp.mean(jax.nn.logsumexp(from_a, axis=1) - positive),
          jnp.mean(jax.nn.logsumexp(from_b, axis=1) - positive))


def cross_modal_nce(a: jax.Array, b: jax.Array, temperature: float,
                    intra_negatives: bool = False) -> tuple[jax.Array, jax.Array]:
  """Eq. 3 (rows: clips' embeddings) or Eq. 5 (rows: clusters' columns) in both directions.

  Row i of `a` and row i of `b` are a positive pair; similarity is cosine / `temperature` (§III-C
  calls it cosine; its formula's ‖·‖₁ norms would not give one, so we read them as L2). Returns
  (mean over the rows of `a` of −log softmax of its positive among all rows of `b`, the same from `b`
  to `a`). With `intra_negatives`, the other rows of the anchor's own side join the denominator.
  """
  a, b = l2_normalize(a.astype(jnp.float32)), l2_normalize(b.astype(jnp.float32))
  # Row by row, not `diagonal(cross)`: on a batch-sharded matrix the partitioner lowers that gather to
  # per-device branches with collectives, which deadlocked on the simulated CPU devices.
  positive = jnp.sum(a * b, axis=-1)
  own = (_similarity(a, a), _similarity(b, b)) if intra_negatives else (None, None)
  return contrast(_similarity(a, b), positive, temperature, *own)


def marginal_entropy(y: jax.Array) -> jax.Array:
  """The entropy of P(ỹ_i) = Σ_j Y_ji / ‖Y‖₁ (Eq. 6's H for one modality); the log is clamped at the
  smallest normal float so that an empty cluster contributes 0, not NaN (CC's code has log 0)."""
  p = jnp.sum(y, axis=0) / jnp.sum(y)
  return -jnp.sum(p * jnp.log(jnp.maximum(p, jnp.finfo(p.dtype).tiny)))


def losses(outputs: dict[str, jax.Array], *, tau_ins: float, tau_clu: float,
           intra_negatives: bool = False) -> dict[str, jax.Array]:
  """Eq. 3-6 for the heads present in `outputs` (`z_video`, `z_audio`: [N, D]; `y_video`, `y_audio`:
  [N, C] probabilities): `loss_ins` (Eq. 4) with its two directions, `loss_clu` (Eq. 6) with its two
  directions and `entropy` (H(Y), already subtracted in `loss_clu`).

  With `pair_scores` `[N, N]` and `pair_positives` `[N]` (the pairwise reading: the cosine of every
  (video i, audio j) pair, `pair_scores`), Eq. 3 runs over those; the rows of `z_*` (each clip's own
  pair) then only give the intra negatives."""
  terms: dict[str, jax.Array] = {}
  if 'pair_scores' in outputs:
    own = ((_similarity(outputs['z_video'], outputs['z_video']),
            _similarity(outputs['z_audio'], outputs['z_audio'])) if intra_negatives else (None, None))
    v, a = contrast(outputs['pair_scores'], outputs['pair_positives'], tau_ins, *own)
    terms.update(loss_ins=v + a, loss_ins_video=v, loss_ins_audio=a)
  elif 'z_video' in outputs:
    v, a = cross_modal_nce(outputs['z_video'], outputs['z_audio'], tau_ins, intra_negatives)
    terms.update(loss_ins=v + a, loss_ins_video=v, loss_ins_audio=a)
  if 'y_video' in outputs:
    y_v, y_a = outputs['y_video'].astype(jnp.float32), outputs['y_audio'].astype(jnp.float32)
    v, a = cross_modal_nce(y_v.T, y_a.T, tau_clu, intra_negatives)  # Columns: one row per cluster.
    entropy = marginal_entropy(y_v) + marginal_entropy(y_a)
    terms.update(loss_clu=v + a - entropy, loss_clu_video=v, loss_clu_audio=a, entropy=entropy)
  return terms


# The model.


class IICLModel(nn.Module):
  """Encoders (`video`, `audio`: the names the evaluation suite reads), co-attention, and per modality
  the instance head `instance_<modality>` and/or the cluster head `cluster_<modality>`.

  `__call__` gives the outputs of each clip's own pair (video i with audio i): `{'z_video', 'z_audio'}`
  (unit rows) and/or `{'y_video', 'y_audio'}` (probabilities). With a `PairwiseCoAttention`, `tokens`,
  `clips` and `pair` are its three steps, so that a loss can pair any video with any audio.
  """
  video: nn.Module
  audio: nn.Module
  co_attention: nn.Module | None
  levels: tuple[str, ...]
  num_clusters: int
  instance_dim: int
  norm: Norm = Norm()

  def setup(self):
    if 'ins' in self.levels:
      self.instance = {m: InstanceHead(self.instance_dim, self.norm) for m in MODALITIES}
    if 'clu' in self.levels:
      self.cluster = {m: ClusterHead(self.num_clusters, self.norm) for m in MODALITIES}

  def __call__(self, video: jax.Array, audio: jax.Array, *, train: bool,
               return_tokens: bool = False) -> dict[str, jax.Array]:
    """Each clip's own pair's head outputs; with `return_tokens` also the encoders' last maps as
    tokens, `tokens_video` `[B, Nv, C]` and `tokens_audio` `[B, Na, C]` (what `clips` reads)."""
    f_v, map_v = self.video(video, train, return_map=True)
    f_a, map_a = self.audio(audio, train, return_map=True)
    tokens = tokens_from_map(map_v), tokens_from_map(map_a)
    hidden = (f_v, f_a) if self.co_attention is None else self.co_attention(*tokens)
    out = self.heads(*hidden, levels=self.levels)
    if return_tokens:
      out.update(tokens_video=tokens[0], tokens_audio=tokens[1])
    return out

  def tokens(self, video: jax.Array, audio: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
    """The encoders' last maps as tokens, `[B, Nv, C]` and `[B, Na, C]`."""
    _, map_v = self.video(video, train, return_map=True)
    _, map_a = self.audio(audio, train, return_map=True)
    return tokens_from_map(map_v), tokens_from_map(map_a)

  def clips(self, video_tokens: jax.Array, audio_tokens: jax.Array) -> tuple[Stream, Stream]:
    """Each clip's `Stream` per modality (`PairwiseCoAttention.clips`)."""
    return self._pairwise().clips(video_tokens, audio_tokens)

  def pair(self, video: Stream, audio: Stream,
           levels: tuple[str, ...] = ('ins',)) -> dict[str, jax.Array]:
    """The heads of `levels` on the pairs (video[k], audio[k]) of two `Stream`s."""
    return self.heads(*self._pairwise().pair(video, audio), levels=levels)

  def _pairwise(self) -> PairwiseCoAttention:
    if not isinstance(self.co_attention, PairwiseCoAttention):
      raise TypeError('clips and pairs need the pairwise co-attention '
                      "(config.iicl.co_attention.reading='pairwise', depth >= 1)")
    return self.co_attention

  def heads(self, h_v: jax.Array, h_a: jax.Array, *, levels: tuple[str, ...]) -> dict[str, jax.Array]:
    out = {}
    for m, h in (('video', h_v), ('audio', h_a)):
      if 'ins' in levels:
        out[f'z_{m}'] = self.instance[m](h)
      if 'clu' in levels:
        out[f'y_{m}'] = self.cluster[m](h)
    return out


def _pair_score(model: IICLModel, params: dict[str, Any], video: Stream, audio: Stream) -> jax.Array:
  """The cosine of one pair's instance embeddings, `video` and `audio` with a leading view axis: view k
  of the video meets view k of the audio, and each side's embeddings are averaged over the views and
  renormalised, as `IICL.outputs` averages a clip's."""
  z = model.apply({'params': params}, video, audio, method=IICLModel.pair)
  return jnp.sum(l2_normalize(z['z_video'].mean(axis=0)) * l2_normalize(z['z_audio'].mean(axis=0)))


def _rows_per_block(rows: int, limit: int) -> int:
  """The largest divisor of `rows` that is at most `limit` (at least 1)."""
  return max(d for d in range(1, max(1, min(rows, limit)) + 1) if rows % d == 0)


def pair_scores(model: IICLModel, params: dict[str, Any], video: Stream, audio: Stream, *,
                mesh: Mesh, pair_block: int, remat: bool) -> tuple[jax.Array, jax.Array]:
  """The score s_ij of every pair (video i, audio j), and each video's own pair's s_ii.

  Args:
    model: the IICL model (with a `PairwiseCoAttention`).
    params: its parameters (those of `_PAIR_PARAMS` suffice).
    video: the `Stream`s of the R rows `[R, V, ...]` (V views; R a multiple of the mesh's devices).
    audio: the `Stream`s of the N columns `[N, V, ...]`.
    mesh: the mesh whose `data` axis shares out the rows.
    pair_block: about how many pairs × views one block holds (at least one row).
    remat: whether each block is rematerialised in the backward pass.

  Returns:
    `[R, N]` scores (cosine, `_pair_score`), rows sharded over `data`, and `[R]` s_ii (meaningful for
    rows i < N).

  Each device scores its own rows against every column, the columns' streams gathered (Na tokens a
  clip: small beside the rows' Nv), in blocks of rows walked by `lax.map`, so a block's activations
  are the only per-pair ones alive. With `remat` the backward pass keeps only each block's scores and
  recomputes its pairs (one more forward of the pairs, about a third of their cost): memory
  O(block · N) instead of O(R · N / devices) per device.
  """
  axis = sharding.DATA_AXIS
  rows = jax.tree.leaves(video)[0].shape[0] // mesh.shape[axis]
  columns, views = jax.tree.leaves(audio)[0].shape[:2]
  block = _rows_per_block(rows, pair_block // (columns * views))
  score = functools.partial(_pair_score, model)

  def local(params, video, audio):
    def block_scores(params, block_video, audio):
      return jax.vmap(jax.vmap(score, (None, None, 0)), (None, 0, None))(params, block_video, audio)

    if remat:
      block_scores = jax.checkpoint(block_scores)
    blocks = jax.tree.map(lambda x: x.reshape((rows // block, block) + x.shape[1:]), video)
    scores = lax.map(lambda v: block_scores(params, v, audio), blocks).reshape(rows, columns)
    own = lax.axis_index(axis) * rows + jnp.arange(rows)
    return scores, jnp.take_along_axis(scores, own[:, None], axis=1, mode='clip')[:, 0]

  return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axis), P()),
                       out_specs=(P(axis), P(axis)))(params, video, audio)


class IICL(base.Method):
  """Inter- and intra-level cross-modal contrast; see the module docstring. Implements `Clusters`
  (with a cluster head) and `HasEncoders`."""

  inputs = MODALITIES
  report_title = ('Clusters and cross-modal retrieval of the evaluation split '
                  '(IICL Tables II and III)')
  report_notes = {'views': 'clips averaged per video; one cluster head per modality'}

  def __init__(self, config: ml_collections.ConfigDict, context: base.RunContext | None = None):
    super().__init__(config, context)
    s = self.settings = config.iicl
    self.levels = tuple(level for level in LEVELS if level in s.losses)
    if not self.levels or len(self.levels) != len(s.losses):
      raise ValueError(f'config.iicl.losses={tuple(s.losses)}: name one or both of {LEVELS}')
    if self.levels == ('clu',) and (s.init_epochs or s.init_steps):
      raise ValueError("config.iicl.losses=('clu',) has no instance loss to train alone first: set "
                       'config.iicl.init_epochs (or init_steps) to 0')
    self.norm = Norm.from_config(config.model)
    # A config written before the switch existed (an older run's run.json) was trained per clip.
    self.reading = s.co_attention.get('reading', 'per_clip')
    if self.reading not in READINGS:
      raise ValueError(f'config.iicl.co_attention.reading={self.reading!r} is not one of {READINGS}')
    self.pair_block = int(s.co_attention.get('pair_block', 8192))
    if self.pair_block < 1:
      raise ValueError(f'config.iicl.co_attention.pair_block={self.pair_block} must be at least 1')
    self.pairwise = bool(s.co_attention.depth) and self.reading == 'pairwise'

  def build_model(self) -> nn.Module:
    s = self.settings
    attention = s.co_attention
    kind = PairwiseCoAttention if self.pairwise else CoAttention
    co_attention = (kind(width=attention.width, num_heads=attention.num_heads,
                         depth=attention.depth, mlp_ratio=attention.mlp_ratio, dtype=self.norm.dtype)
                    if attention.depth else None)
    return IICLModel(video=encoders.video_encoder(self.config.model.video, self.norm),
                     audio=encoders.audio_encoder(self.config.model.audio, self.norm),
                     co_attention=co_attention, levels=self.levels, num_clusters=s.num_clusters,
                     instance_dim=s.instance_dim, norm=self.norm)

  # Training.

  def switch_step(self, steps_per_epoch: int) -> int:
    """The first step of co-training (L_ins + λ·L_clu); 0 when only one level is trained."""
    if self.levels != LEVELS:
      return 0
    return config_lib.steps(self.settings, 'init', steps_per_epoch, default=0)

  def init_method_state(self, num_examples: int) -> dict[str, jax.Array]:
    """`switch_step`, from the config and the data's steps per epoch (full batches only, as the
    loop's)."""
    steps_per_epoch = max(num_examples // self.config.batch_size, 1)
    return {'switch_step': jnp.asarray(self.switch_step(steps_per_epoch), jnp.int32)}

  def loss(self, params, state: TrainState, batch, rng):
    """L_ins before `switch_step`, L_ins + λ·L_clu from it on (Eq. 7); either level alone if
    `losses` names one. Every term is logged, the inactive one too."""
    del rng  # Nothing random in the model.
    variables = {'params': params, 'batch_stats': state.batch_stats}
    if self.pairwise:
      outputs, updates = self._pairwise_outputs(params, variables, batch)
    else:
      outputs, updates = self.model.apply(variables, batch['video'], batch['audio'], train=True,
                                          mutable=['batch_stats'])
    s = self.settings
    terms = losses(outputs, tau_ins=s.tau_ins, tau_clu=s.tau_clu,
                   intra_negatives=s.intra_negatives)
    co_training = (state.step >= state.method_state['switch_step']).astype(jnp.float32)
    loss = terms.get('loss_ins', 0.0) + co_training * s.lam * terms.get('loss_clu', 0.0)
    metrics = {**terms, 'co_training': co_training}
    return loss, base.StepOutput(updates['batch_stats'], metrics, state.method_state)

  def _pairwise_outputs(self, params, variables, batch) -> tuple[dict[str, jax.Array], Any]:
    """Each clip's own pair's heads and, for L_ins, the scores of every pair of the global batch."""
    (tokens_v, tokens_a), updates = self.model.apply(
        variables, batch['video'], batch['audio'], train=True, method=IICLModel.tokens,
        mutable=['batch_stats'])
    video, audio = self.model.apply({'params': params}, tokens_v, tokens_a, method=IICLModel.clips)
    outputs = self.model.apply({'params': params}, video, audio, self.levels, method=IICLModel.pair)
    if 'ins' in self.levels:
      one_view = lambda stream: jax.tree.map(lambda x: x[:, None], stream)
      outputs['pair_scores'], outputs['pair_positives'] = pair_scores(
          self.model, {k: params[k] for k in _PAIR_PARAMS}, one_view(video), one_view(audio),
          mesh=self.context.mesh, pair_block=self.pair_block, remat=self.norm.remat != 'none')
    return outputs, updates

  def restart_steps(self, total_steps: int, steps_per_epoch: int) -> list[int]:
    """The switch to co-training, where the cluster heads restart (`restart_cluster_heads`)."""
    switch = self.switch_step(steps_per_epoch)
    return [switch] if 0 < switch < total_steps else []

  def scheduled_update(self, state: TrainState, step: int) -> base.Update | None:
    """`restart_cluster_heads` at the switch to co-training."""
    if step not in self.restart_steps(self.context.total_steps, self.context.steps_per_epoch):
      return None
    return base.Update(self.restart_cluster_heads(state), {}, data_pass=False)

  def restart_cluster_heads(self, state: TrainState) -> TrainState:
    """At the switch: the cluster heads get a fresh initialisation and fresh optimiser moments.

    In the initialisation stage they receive no loss gradient, only the (coupled) weight decay, which
    Adam normalises into steps of about the learning rate: within a few hundred steps they would decay
    to about zero. In PyTorch, parameters without a gradient are skipped, weight decay included, so in
    the paper they start co-training at their initial values; a fresh draw of the same initialisation
    is that, in distribution. Adam's shared step count (its bias correction) is kept.
    """
    params, opt_state = self._restart_fn()(state.params, state.opt_state, state.rng)
    logging.info('Step %d: co-training starts (L_ins + %g·L_clu); cluster heads re-initialised',
                 int(state.step), self.settings.lam)
    return state.replace(params=sharding.placed_like(params, state.params),
                         opt_state=sharding.placed_like(opt_state, state.opt_state))

  @functools.lru_cache(maxsize=None)
  def _restart_fn(self):
    names = tuple(f'cluster_{m}' for m in MODALITIES)
    head = ClusterHead(self.settings.num_clusters, self.norm)

    @jax.jit
    def restart(params, opt_state, rng):
      key = jax.random.fold_in(rng, _CLUSTER_HEADS_STREAM)
      params = dict(params)
      for i, name in enumerate(names):
        width = params[name]['dense0']['kernel'].shape[0]
        params[name] = head.init(jax.random.fold_in(key, i), jnp.zeros((1, width)))['params']
      return params, optim.reinitialised_state(self.config.optimizer, opt_state, params, names)
    return restart

  # Evaluation and labels.

  def outputs(self, state: TrainState, batches: Iterator[base.Batch]) -> dict[str, np.ndarray]:
    """The heads' eval-mode outputs for every real clip of `batches`, on the host in dataset-index
    order: `z_<modality>` (views averaged, renormalised), `y_<modality>` (views averaged), `label`
    and `index`. Pairwise with an instance head, also every view's encoder tokens, `tokens_video`
    `[N, V, Nv, C]` and `tokens_audio` `[N, V, Na, C]`, from which Table III scores the pairs: memory
    N·V·(Nv + Na)·C floats (Kinetics-400's ~20k validation clips, one view, at the paper's sizes:
    about 11 GB)."""
    forward = self._forward_fn(tokens=self.pairwise and 'ins' in self.levels)
    return passes.ordered_pass(lambda batch: forward(state.params, state.batch_stats, batch),
                               batches, self.context.mesh, keys=(*MODALITIES, 'label'),
                               name='outputs')

  def cluster_probs(self, state: TrainState, batch: base.Batch) -> dict[str, jax.Array]:
    """`Clusters`: the cluster head of the video, of the audio and their average, `[1, B, K]`."""
    if 'clu' not in self.levels:
      raise ValueError("config.iicl.losses=('ins',) trains no cluster head, so there are no cluster "
                       'labels to write; its clusters are k-means in the instance space (--mode=eval)')
    out = self._forward_fn()(state.params, state.batch_stats, batch)
    return {view: probs[None] for view, probs in _cluster_views(out).items()}

  def encoders(self, state: TrainState) -> dict[str, base.Encoder]:
    """`HasEncoders`: the video and the audio encoder."""
    return {m: base.Encoder(getattr(self.model, m), {
        'params': state.params[m], 'batch_stats': state.batch_stats.get(m, {})}, m)
            for m in MODALITIES}

  @functools.lru_cache(maxsize=None)
  def _forward_fn(self, tokens: bool = False):
    @jax.jit
    def forward(params, batch_stats, batch):
      batch = on_device.normalize(batch, self.config.data)
      views = batch['video'].shape[1] if batch['video'].ndim > _RANK['video'] else 1
      flat = {m: batch[m].reshape((-1,) + batch[m].shape[-(_RANK[m] - 1):]) for m in MODALITIES}
      outputs = self.model.apply({'params': params, 'batch_stats': batch_stats}, flat['video'],
                                 flat['audio'], train=False, return_tokens=tokens)
      out = {'label': batch['label']} if 'label' in batch else {}
      for name, x in outputs.items():
        if name.startswith('tokens_'):
          out[name] = x.reshape((-1, views) + x.shape[1:])
          continue
        mean = x.reshape(-1, views, x.shape[-1]).mean(axis=1)
        out[name] = l2_normalize(mean) if name.startswith('z_') else mean
      return out
    return forward

  def evaluate(self, state: TrainState, batches: Iterator[base.Batch]) -> dict[str, float]:
    """Table II: `METRICS` of the cluster heads' argmax per view (`<view>/<metric>/mean`, std 0 for
    the single head) and of k-means in the instance space (`instance k-means: <view>/<metric>/mean`
    and `/std` over the runs). Table III: cross-modal retrieval mAP in the instance space
    (`cross-modal mAP/video→audio`, `.../audio→video`). Only clips with a ground-truth label count."""
    out = self.outputs(state, batches)
    known = out['label'] >= 0
    if not known.any():
      return {}
    labels = out['label'][known]
    results = {}
    for view, probs in _cluster_views(out).items():
      scores = metrics_lib.cluster_metrics(labels, probs[known].argmax(axis=-1))
      for metric in metrics_lib.METRICS:
        results[tables.clustering_key(view, metric, 'mean')] = scores[metric]
        results[tables.clustering_key(view, metric, 'std')] = 0.0
    if 'ins' in self.levels:
      results.update(self._instance_space(state, out, known))
    return results

  def _instance_space(self, state: TrainState, out: dict[str, np.ndarray],
                      known: np.ndarray) -> dict[str, float]:
    """k-means quality and cross-modal mAP of the instance embeddings of the labelled clips (k-means
    on each clip's own pair; pairwise, the mAP ranks by the scores of all pairs)."""
    s = self.settings
    labels = out['label'][known]
    z = {m: out[f'z_{m}'][known] for m in MODALITIES}
    host_mesh = sharding.make_mesh(jax.local_devices())
    k = s.kmeans_k or len(np.unique(labels))
    views = {**z, 'video + audio': baselines.video_features([z[m][:, None] for m in MODALITIES])}
    results = {}
    for view, x in views.items():
      quality = baselines.kmeans_quality(x, labels, k, runs=s.kmeans_runs, iters=s.kmeans_iters,
                                         seed=self.config.seed, mesh=host_mesh)
      for metric in metrics_lib.METRICS:
        for stat in ('mean', 'std'):
          results[f'{_KMEANS}{view}/{metric}/{stat}'] = quality[metric][stat]
    if self.pairwise:
      scores = self._pair_scores_of(state, out['tokens_video'][known], out['tokens_audio'][known],
                                    host_mesh)
      cross = retrieval.cross_modal_map_of_scores(scores, labels, mesh=host_mesh)
    else:
      cross = retrieval.cross_modal_map(z['video'], z['audio'], labels, mesh=host_mesh)
    results.update({f'cross-modal mAP/{d}': v for d, v in cross.items()})
    return results

  def _pair_scores_of(self, state: TrainState, video_tokens: np.ndarray, audio_tokens: np.ndarray,
                      mesh: Mesh) -> jax.Array:
    """Every video against every audio of the evaluation clips through the co-attention and the
    instance heads (`pair_scores`, view k with view k): `[N, N]` on `mesh`, rows sharded."""
    n, views = video_tokens.shape[:2]
    devices = mesh.devices.size
    block = max(1, min(-(-n // devices), self.pair_block // (n * views)))
    rows = -(-n // (devices * block)) * devices * block  # A whole number of blocks per device.
    params = jax.device_put({k: jax.tree.map(sharding.host_copy, state.params[k])
                             for k in _PAIR_PARAMS}, sharding.replicated(mesh))
    audio = jax.device_put(np.asarray(audio_tokens, np.float32), sharding.replicated(mesh))
    return self._pair_scores_fn(mesh)(params, pad_rows(video_tokens, rows, mesh), audio)[:n]

  @functools.lru_cache(maxsize=None)
  def _pair_scores_fn(self, mesh: Mesh):
    @jax.jit
    def scores(params, video_tokens, audio_tokens):
      flat = lambda x: x.reshape((-1,) + x.shape[2:])
      video, audio = self.model.apply({'params': params}, flat(video_tokens), flat(audio_tokens),
                                      method=IICLModel.clips)
      views = lambda stream, like: jax.tree.map(
          lambda x: x.reshape(like.shape[:2] + x.shape[1:]), stream)
      return pair_scores(self.model, params, views(video, video_tokens), views(audio, audio_tokens),
                         mesh=mesh, pair_block=self.pair_block, remat=False)[0]
    return scores

  def report(self, results: dict[str, float]) -> str | None:
    """Table II's layout (a row per view and source of clusters) and, with an instance head, Table
    III's (cross-modal mAP)."""
    if not results:
      return None
    rows = tables.rows_of('', results)
    named = {f'{source}: {view}': rows[f'{prefix}{view}']
             for source, prefix in (('cluster head', ''), ('k-means, instance space', _KMEANS))
             for view in VIEWS if f'{prefix}{view}' in rows}
    text = ('Table II layout: NMI, accuracy (Hungarian, one cluster per class) and purity (each '
            'cluster mapped to its majority class); k-means: mean ± std over runs\n\n'
            + metrics_lib.markdown_table(named, TABLE_METRICS))
    cross = {d: results[f'cross-modal mAP/{d}'] for d in ('video→audio', 'audio→video')
             if f'cross-modal mAP/{d}' in results}
    if cross:
      text += ('\n\nTable III layout: cross-modal retrieval mAP, cosine in the instance space\n\n'
               + tables.cross_modal({'instance space': cross}))
    return text


def _cluster_views(out: dict[str, Any]) -> dict[str, Any]:
  """Cluster probabilities of the video head, the audio head and their average, if there are heads."""
  if 'y_video' not in out:
    return {}
  return {'video': out['y_video'], 'audio': out['y_audio'],
          'video + audio': (out['y_video'] + out['y_audio']) / 2}
