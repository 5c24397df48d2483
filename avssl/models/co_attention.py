"""IICL's cross-modal co-attention (Wei et al. 2022, §III-B), between the encoders and the heads.

Each modality's last feature map is flattened into tokens: T'·H'·W' positions for video, time x frequency
positions for audio. The two streams use the other modality as the guide:

  visual stream: H_v = Attention(Q = F_a, K = V = F_v)    (audio-guided)
  audio stream:  H_a = Attention(Q = F_v, K = V = F_a)    (visual-guided)

with Attention(Q, K, V) = softmax(QKᵀ/√d)V (Eq. 1), here multi-head. A query sequence fixes the output's
token count, so the visual stream returns one token per *audio* position (Na tokens): that position's
audio query plus, through the residual, the mixture of video values it attends to; the audio stream
returns one token per video position (Nv tokens). We keep those counts and mean-pool each stream over its
tokens to get H_v and H_a, rather than re-indexing the outputs by their own modality's positions. No
token carries a position encoding, so H_v and H_a do not depend on the order of either modality's tokens.

Each block follows the post-LayerNorm Transformer (the "cross-modal attention transformer block" of the
paper): x = LN(q + MHA(q, kv)); x = LN(x + FFN(x)), the FFN a two-layer ReLU MLP. The paper uses one
block (§IV-B) and only remarks that blocks "can be stacked in multiple layers to refine the attention
maps" without saying how. Our reading for `depth` > 1: each stream's query sequence is refined block by
block against the same (projected) tokens of the other modality. Heads and width are not in the paper.
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
