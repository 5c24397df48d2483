"""IICL's cross-modal co-attention (Wei et al. 2022, §III-B), between the encoders and the heads.

Each modality's last feature map is flattened into tokens: T'·H'·W' positions for video, time x frequency
positions for audio. Each stream is attended with the other modality as the guide (Eq. 1,
Attention(Q, K, V) = softmax(QKᵀ/√d)V, here multi-head):

  visual stream: H_v = Attention(Q from audio, K = V = F_v)    (audio-guided)
  audio stream:  H_a = Attention(Q from video, K = V = F_a)    (visual-guided)

Two readings of which clips meet in the block (`docs/papers_and_releases.md`):

- **Pairwise** (`PairwiseCoAttention`, the default): the block is applied to a *candidate pair*
  (video i, audio j), matched or not, as the co-attention of the paper's reference [5] (trained by
  audio-visual synchronisation) is, and IICL's contrast scores every pair of the batch. The query of
  each stream is the other modality's pooled token and the residual is the stream's *own* pooled token,
  so H_v(i, j) is video i's state plus a mixture of video i's values chosen by audio j, and the
  reverse: the partner only steers the attention. A positive pair (i, i) then sees nothing that a
  negative (i, j) lacks, and the contrast has to be won by audio-visual correspondence.
- **Per clip** (`CoAttention`, the ablation `co_attention.reading='per_clip'`): each clip's video with
  its own audio only, every token of one modality a query (so the visual stream returns one token per
  *audio* position), the *query* added back as the residual, the outputs mean-pooled. Its H_v(i)
  carries audio i, and H_a(i) video i, which no negative pair shares: the cross-modal contrast can be
  solved by matching a clip's own content across the two outputs (the README's IICL section).

No token carries a position encoding, so neither reading depends on the order of either modality's
tokens. Each block follows the post-LayerNorm Transformer (the "cross-modal attention transformer block"
of the paper): x = LN(residual + MHA(q, kv)); x = LN(x + FFN(x)), the FFN a two-layer ReLU MLP. The
paper uses one block (§IV-B) and only remarks that blocks "can be stacked in multiple layers to refine
the attention maps" without saying how. Our reading for `depth` > 1: per clip, each stream's query
sequence is refined block by block against the same (projected) tokens of the other modality;
pairwise, block l's query into one modality comes from the other stream's output of block l − 1.
Heads and width are not in the paper.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_dense_init = nn.initializers.xavier_uniform()


def tokens_from_map(x: jax.Array) -> jax.Array:
  """Flattens a channels-last map `[B, ..., C]` (e.g. `[B, T', H', W', C]`) to tokens `[B, N, C]`."""
  return x.reshape(x.shape[0], -1, x.shape[-1])


class CrossAttentionBlock(nn.Module):
  """Queries from one modality attend to the other's tokens; residual, LayerNorm, FFN, residual, LayerNorm.

  With `sow_weights`, the attention weights `[B, num_heads, N_query, N_key]` are sown into the
  `intermediates` collection for inspection.
  """
  width: int
  num_heads: int
  mlp_ratio: float = 4.0
  sow_weights: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, queries: jax.Array, keys_values: jax.Array) -> jax.Array:
    dense = lambda features, name: nn.Dense(features, kernel_init=_dense_init, dtype=self.dtype,
                                            param_dtype=jnp.float32, name=name)
    layer_norm = lambda name: nn.LayerNorm(dtype=self.dtype, param_dtype=jnp.float32, name=name)
    # Eq. 1 per head, d = width / num_heads; softmax in float32 even for bfloat16 activations.
    attended = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, qkv_features=self.width, out_features=self.width,
        kernel_init=_dense_init, force_fp32_for_softmax=True, dtype=self.dtype,
        param_dtype=jnp.float32, name='attention')(queries, keys_values, sow_weights=self.sow_weights)
    x = layer_norm('norm_attention')(queries + attended)
    hidden = nn.relu(dense(int(self.mlp_ratio * self.width), 'mlp_hidden')(x))
    return layer_norm('norm_mlp')(x + dense(self.width, 'mlp_out')(hidden))


class CoAttention(nn.Module):
  """Video tokens `[B, Nv, Cv]` and audio tokens `[B, Na, Ca]` -> attended H_v, H_a `[B, width]` (float32).

  With `return_tokens=True` also returns the token sequences of the visual stream `[B, Na, width]` and
  the audio stream `[B, Nv, width]` (see the module docstring for why the counts are swapped).
  """
  width: int = 512
  num_heads: int = 8
  depth: int = 1
  mlp_ratio: float = 4.0
  sow_weights: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, video_tokens: jax.Array, audio_tokens: jax.Array, return_tokens: bool = False
               ) -> tuple[jax.Array, jax.Array] | tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    project = lambda name: nn.Dense(self.width, kernel_init=_dense_init, dtype=self.dtype,
                                    param_dtype=jnp.float32, name=name)
    block = lambda name: CrossAttentionBlock(self.width, self.num_heads, self.mlp_ratio,
                                             self.sow_weights, self.dtype, name=name)
    f_v = project('project_video')(video_tokens.astype(self.dtype))
    f_a = project('project_audio')(audio_tokens.astype(self.dtype))
    # §III-B: visual stream Q = F_a, K = V = F_v; audio stream Q = F_v, K = V = F_a.
    tokens_v, tokens_a = f_a, f_v
    for i in range(self.depth):
      tokens_v = block(f'visual_{i}')(tokens_v, f_v)
      tokens_a = block(f'audio_{i}')(tokens_a, f_a)
    h_v = tokens_v.astype(jnp.float32).mean(axis=1)
    h_a = tokens_a.astype(jnp.float32).mean(axis=1)
    return (h_v, h_a, tokens_v, tokens_a) if return_tokens else (h_v, h_a)


#: One clip's inputs to `PairwiseCoAttention.pair` for one modality, every array with the clip's leading
#: axes: `pooled` `[..., width]` (the mean of its projected tokens: its stream's first residual),
#: `query` `[..., heads, width / heads]` (its pooled token projected as the first block's query into
#: the *other* modality's tokens), and per block `keys`, `values` `[..., tokens, heads, width / heads]`.
Stream = dict[str, Any]


class PooledQueryBlock(nn.Module):
  """One stream of one pairwise block: a single query vector from the other modality attends to this
  modality's tokens (Eq. 1, multi-head); this stream's own state is the residual; then LayerNorm, FFN,
  residual, LayerNorm.

  The key and value projections (`keys_values`) and the first block's query projection (`queries`)
  are per clip; only `__call__` runs per pair.
  """
  width: int
  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32

  def setup(self):
    if self.width % self.num_heads:
      raise ValueError(f'co-attention width {self.width} does not divide into {self.num_heads} heads')
    heads = (self.num_heads, self.width // self.num_heads)
    general = lambda features, axis=-1: nn.DenseGeneral(features, axis=axis, kernel_init=_dense_init,
                                                        dtype=self.dtype, param_dtype=jnp.float32)
    dense = lambda features: nn.Dense(features, kernel_init=_dense_init, dtype=self.dtype,
                                      param_dtype=jnp.float32)
    layer_norm = lambda: nn.LayerNorm(dtype=self.dtype, param_dtype=jnp.float32)
    self.query, self.key, self.value = general(heads), general(heads), general(heads)
    self.out = general(self.width, axis=(-2, -1))
    self.norm_attention = layer_norm()
    self.mlp_hidden = dense(int(self.mlp_ratio * self.width))
    self.mlp_out = dense(self.width)
    self.norm_mlp = layer_norm()

  def keys_values(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`[..., T, width]` tokens -> keys and values `[..., T, heads, width / heads]`."""
    return self.key(tokens), self.value(tokens)

  def queries(self, state: jax.Array) -> jax.Array:
    """`[..., width]` -> the query `[..., heads, width / heads]`."""
    return self.query(state)

  def __call__(self, query: jax.Array, keys: jax.Array, values: jax.Array,
               residual: jax.Array) -> jax.Array:
    """One query per pair over this modality's T tokens: `[..., width]`."""
    logits = jnp.einsum('...hd,...thd->...ht', query, keys) * query.shape[-1] ** -0.5
    # Softmax in float32 even for bfloat16 activations.
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    attended = self.out(jnp.einsum('...ht,...thd->...hd', weights, values))
    x = self.norm_attention(residual.astype(self.dtype) + attended)
    return self.norm_mlp(x + self.mlp_out(nn.relu(self.mlp_hidden(x))))


class PairwiseCoAttention(nn.Module):
  """Co-attention of candidate pairs (video i, audio j) with pooled queries (the module docstring).

  `clips` turns each clip's tokens into its `Stream` once; `pair` runs the blocks on pairs of streams
  (any matching leading axes; `jax.vmap` over rows and columns gives every pair of a batch without
  copying a clip's keys and values); `__call__` is `pair` on each clip's own pair.

  Cost per pair at the paper's sizes (width 512, 8 heads, FFN ×4; R(2+1)D-18 on 32 × 128² gives
  Nv = 4·8·8 = 256 video tokens, the audio ResNet-18 on 40 × 100 log-mel Na = 2·4 = 8), in multiply-
  adds: the visual stream 2·Nv·512 (scores, mixture) + 512² (output projection) + 2·4·512² (FFN)
  = 2.62 M, the audio stream 2·Na·512 + 9·512² = 2.37 M, and the two instance heads IICL puts on every
  pair (512 → 512 → 1024) 1.57 M: 6.56 M MAC per pair (XLA's cost analysis of the lowered forward:
  6.59 M). A batch of N = 256 has N² = 65,536 pairs, 0.43 T MAC, 1.6 % of the video encoder's
  256 × 105.8 G MAC forward (`benchmarks/step_cost.py`'s hand count). The per-clip part (input, key,
  value and first query projections, 208 M MAC a clip) is 0.2 % of it.
  """
  width: int = 512
  num_heads: int = 8
  depth: int = 1
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32

  def setup(self):
    dense = lambda: nn.Dense(self.width, kernel_init=_dense_init, dtype=self.dtype,
                             param_dtype=jnp.float32)
    block = lambda: PooledQueryBlock(self.width, self.num_heads, self.mlp_ratio, self.dtype)
    self.project_video, self.project_audio = dense(), dense()
    self.visual = [block() for _ in range(self.depth)]
    self.audio = [block() for _ in range(self.depth)]

  def clips(self, video_tokens: jax.Array, audio_tokens: jax.Array) -> tuple[Stream, Stream]:
    """Video tokens `[..., Nv, Cv]` and audio tokens `[..., Na, Ca]` -> each clip's `Stream`."""
    f_v = self.project_video(video_tokens.astype(self.dtype))
    f_a = self.project_audio(audio_tokens.astype(self.dtype))
    # §III-B: the visual stream's keys and values are video tokens, its queries come from audio; the
    # audio stream the reverse.
    return (self._stream(f_v, self.visual, self.audio[0]),
            self._stream(f_a, self.audio, self.visual[0]))

  @staticmethod
  def _stream(tokens: jax.Array, own: list[PooledQueryBlock], other: PooledQueryBlock) -> Stream:
    pooled = tokens.mean(axis=-2)
    keys, values = zip(*(block.keys_values(tokens) for block in own))
    return {'pooled': pooled, 'query': other.queries(pooled), 'keys': keys, 'values': values}

  def pair(self, video: Stream, audio: Stream) -> tuple[jax.Array, jax.Array]:
    """H_v, H_a `[..., width]` (float32) of the pairs (video[k], audio[k])."""
    x_v, x_a = video['pooled'], audio['pooled']
    q_v, q_a = audio['query'], video['query']  # The visual stream's query comes from audio.
    for i, (visual, audible) in enumerate(zip(self.visual, self.audio)):
      if i:
        q_v, q_a = visual.queries(x_a), audible.queries(x_v)
      x_v, x_a = (visual(q_v, video['keys'][i], video['values'][i], x_v),
                  audible(q_a, audio['keys'][i], audio['values'][i], x_a))
    return x_v.astype(jnp.float32), x_a.astype(jnp.float32)

  def __call__(self, video_tokens: jax.Array, audio_tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Each clip's own pair: H_v, H_a `[B, width]` of (video i, audio i)."""
    return self.pair(*self.clips(video_tokens, audio_tokens))
