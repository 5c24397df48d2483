"""Heads on top of the encoders' pooled features.

- `MLPHead` / `MultiHead`: SeLaVi's head (`MLPv2` in the release): Dropout(0.3) -> Linear(512, no bias)
  -> BN -> ReLU -> Dropout(0.3) -> Linear(K). SeLaVi trains `num_heads` of them per modality (§3.4,
  decorrelated heads); `MultiHead` holds their parameters stacked on a leading axis and evaluates all of
  them in one batched matmul (`nn.vmap`), not a Python loop of modules.
- `LinearHead`: XDC's classifier on the pooled feature.
- `ProjectionHead` + `normalize_prototypes`: GOCA's (SwAV's) D->2048->2048->128 projection with BN+ReLU
  and an L2-normalised output, and the unit-norm prototype columns (GOCA keeps its prototypes as a
  plain `[dim, K]` table, `methods/goca.py`).
- `InstanceHead`, `ClusterHead`: IICL's (§III-C) two-layer heads to the 1024-d instance space (L2-
  normalised) and to C cluster probabilities (softmax).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from avssl.models import common
from avssl.models.common import Norm


def _dense(features: int, fan_in: int, norm: Norm, use_bias: bool = True,
           name: str | None = None) -> nn.Dense:
  """A linear layer with PyTorch's default initialisation."""
  return nn.Dense(features, use_bias=use_bias, kernel_init=common.linear_init,
                  bias_init=common.linear_bias_init(fan_in), dtype=norm.dtype,
                  param_dtype=jnp.float32, name=name)


class MLPHead(nn.Module):
  """SeLaVi's head: dropout -> dense(hidden, no bias) -> BN -> ReLU -> dropout -> dense(K).

  `hidden=0` is SeLa's head instead (its release's `top_layer`): one dense(K) on the pooled feature,
  no dropout, so the SeLa baseline (SeLaVi Table 3 a) clusters with SeLa's own heads.
  """
  num_clusters: int
  hidden: int = 512
  dropout: float = 0.3
  norm: Norm = Norm()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if not self.hidden:
      return _dense(self.num_clusters, x.shape[-1], self.norm, name='out')(x).astype(jnp.float32)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = _dense(self.hidden, x.shape[-1], self.norm, use_bias=False, name='hidden')(x)
    x = nn.relu(self.norm(train, name='bn')(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return _dense(self.num_clusters, self.hidden, self.norm, name='out')(x).astype(jnp.float32)


class MultiHead(nn.Module):
  """`num_heads` independent `MLPHead`s on the same input; logits `[num_heads, B, K]`.

  Parameters and BN statistics carry a leading `num_heads` axis; each head gets its own dropout mask.
  """
  num_heads: int
  num_clusters: int
  hidden: int = 512
  dropout: float = 0.3
  norm: Norm = Norm()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    stacked = nn.vmap(MLPHead, in_axes=None, out_axes=0, axis_size=self.num_heads,
                      variable_axes={'params': 0, 'batch_stats': 0},
                      split_rngs={'params': True, 'dropout': True})
    return stacked(self.num_clusters, self.hidden, self.dropout, self.norm, name='heads')(x, train)


class LinearHead(nn.Module):
  """A linear classifier (XDC's fc on the pooled feature)."""
  num_classes: int
  norm: Norm = Norm()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    return _dense(self.num_classes, x.shape[-1], self.norm, name='fc')(x).astype(jnp.float32)


class ProjectionHead(nn.Module):
  """GOCA/SwAV projection: D -> hidden -> BN -> ReLU -> hidden -> BN -> ReLU -> out, L2-normalised."""
  hidden: int = 2048
  out: int = 128
  norm: Norm = Norm()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i in range(2):
      x = _dense(self.hidden, x.shape[-1], self.norm, name=f'dense{i}')(x)
      x = nn.relu(self.norm(train, name=f'bn{i}')(x))
    z = _dense(self.out, self.hidden, self.norm, name='out')(x).astype(jnp.float32)
    return l2_normalize(z)


def normalize_prototypes(kernel: jax.Array) -> jax.Array:
  """Unit-norm prototype columns of a `[dim, num_prototypes]` kernel."""
  return kernel / jnp.linalg.norm(kernel, axis=0, keepdims=True).clip(1e-12)


class InstanceHead(nn.Module):
  """IICL §III-C g_ins: dense(d) -> ReLU -> dense(1024), L2-normalised (cosine similarity space)."""
  out: int = 1024
  norm: Norm = Norm()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    d = x.shape[-1]
    x = nn.relu(_dense(d, d, self.norm, name='dense0')(x))
    return l2_normalize(_dense(self.out, d, self.norm, name='out')(x).astype(jnp.float32))


class ClusterHead(nn.Module):
  """IICL §III-C g_clu: dense(d) -> ReLU -> dense(C) -> softmax over the C clusters."""
  num_clusters: int = 400
  norm: Norm = Norm()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    d = x.shape[-1]
    x = nn.relu(_dense(d, d, self.norm, name='dense0')(x))
    return jax.nn.softmax(_dense(self.num_clusters, d, self.norm, name='out')(x).astype(jnp.float32))


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  return x / jnp.linalg.norm(x, axis=axis, keepdims=True).clip(1e-12)
