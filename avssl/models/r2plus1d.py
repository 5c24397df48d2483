"""R(2+1)D video ResNets (Tran et al. 2018), torchvision's structure, channels-last `[B, T, H, W, 3]`.

The video encoder of SeLaVi, XDC, GOCA and IICL. Kept layer for layer equal to torchvision's
`VideoResNet(R2Plus1dStem, Conv2Plus1D)` so that published PyTorch weights load (`convert.py`):
  - stem: conv 3->45 (1,7,7) stride (1,2,2) + BN + ReLU, conv 45->64 (3,1,1) + BN + ReLU; no max-pool;
  - four stages of BasicBlocks (64/128/256/512 channels, strides 1/2/2/2 on T, H and W); each (2+1)D conv
    is a (1,3,3) spatial conv to `mid` channels + BN + ReLU, then a (3,1,1) temporal conv;
  - a 1x1x1 strided conv + BN shortcut where the shape changes.

`mid` follows torchvision by default: one value per block, `(in*out*27) // (in*9 + 3*out)` from the
block's input and output channels. XDC computes it per conv from that conv's own channels, which differs
only for the second conv of each stage's first block (288/576/1152 instead of 230/460/921):
`mid_channels='per_conv'`.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from avssl.models import common
from avssl.models.common import Norm

DEPTHS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
WIDTHS = (64, 128, 256, 512)


def mid_channels(c_in: int, c_out: int) -> int:
  """Channels between the spatial and temporal convs, matching a full 3x3x3 conv's parameter count."""
  return (c_in * c_out * 27) // (c_in * 9 + 3 * c_out)


class Conv2Plus1D(nn.Module):
  """(1,3,3) spatial conv -> BN -> ReLU -> (3,1,1) temporal conv; the stride is split the same way."""
  features: int
  mid: int
  stride: int = 1
  norm: Norm = Norm()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    s = self.stride
    x = common.conv(self.mid, (1, 3, 3), (1, s, s), norm=self.norm, name='spatial')(x)
    x = nn.relu(self.norm(train, name='mid_bn')(x))
    return common.conv(self.features, (3, 1, 1), (s, 1, 1), norm=self.norm, name='temporal')(x)


class BasicBlock(nn.Module):
  """Two (2+1)D convs with BN, a residual connection, ReLU after the sum."""
  features: int
  stride: int = 1
  mid_channels: str = 'per_block'
  norm: Norm = Norm()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c_in = x.shape[-1]
    mid1 = mid_channels(c_in, self.features)
    mid2 = mid1 if self.mid_channels == 'per_block' else mid_channels(self.features, self.features)
    y = Conv2Plus1D(self.features, mid1, self.stride, self.norm, name='conv1')(x, train)
    y = nn.relu(self.norm(train, name='bn1')(y))
    y = Conv2Plus1D(self.features, mid2, 1, self.norm, name='conv2')(y, train)
    y = self.norm(train, name='bn2')(y)
    if self.stride != 1 or c_in != self.features:
      x = common.conv(self.features, (1, 1, 1), self.stride, norm=self.norm, name='downsample')(x)
      x = self.norm(train, name='downsample_bn')(x)
    return nn.relu(x + y)


class R2Plus1D(nn.Module):
  """The R(2+1)D trunk; returns the pooled feature and, with `return_map=True`, the last feature map.

  Pooling (`pool`): 'avg' global average (512-d, pre-training and probes); 'max222' SeLaVi's retrieval
  feature, MaxPool(2,2,2) then flatten (9216-d for a 32x112x112 clip); 'avg122' GOCA's adaptive average
  pool to (1,2,2), flattened (2048-d). `num_classes` adds torchvision's final linear layer.
  """
  depth: int = 18
  mid_channels: str = 'per_block'
  pool: str = 'avg'
  num_classes: int | None = None
  norm: Norm = Norm()

  @nn.compact
  def __call__(self, video: jax.Array, train: bool, return_map: bool = False):
    return self.norm.remat_module(R2Plus1D._forward, 'full', (2, 3))(self, video, train, return_map)

  def _forward(self, video: jax.Array, train: bool, return_map: bool = False):
    """The encoder; `__call__` runs it under `nn.remat` when `norm.remat == 'full'`."""
    if self.mid_channels not in ('per_block', 'per_conv'):
      raise ValueError(f"mid_channels={self.mid_channels!r} is not 'per_block' or 'per_conv'")
    x = video.astype(self.norm.dtype)
    x = common.conv(45, (1, 7, 7), (1, 2, 2), norm=self.norm, name='stem_spatial')(x)
    x = nn.relu(self.norm(train, name='stem_spatial_bn')(x))
    x = common.conv(64, (3, 1, 1), 1, norm=self.norm, name='stem_temporal')(x)
    x = nn.relu(self.norm(train, name='stem_temporal_bn')(x))
    block_class = self.norm.remat_module(BasicBlock, 'blocks')
    for stage, (blocks, width) in enumerate(zip(DEPTHS[self.depth], WIDTHS)):
      for block in range(blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        x = block_class(width, stride, self.mid_channels, self.norm,
                        name=f'layer{stage + 1}_{block}')(x, train)
    feature = pool_features(x, self.pool)
    if self.num_classes:
      feature = nn.Dense(self.num_classes, kernel_init=common.linear_init,
                         bias_init=common.linear_bias_init(feature.shape[-1]), dtype=self.norm.dtype,
                         name='fc')(feature)
    feature = feature.astype(jnp.float32)
    return (feature, x) if return_map else feature


def pool_features(x: jax.Array, pool: str) -> jax.Array:
  """Pools a `[B, T, H, W, C]` map into one vector per clip (see `R2Plus1D`)."""
  if pool == 'avg':
    return x.mean(axis=(1, 2, 3))
  if pool == 'max222':
    pooled = nn.max_pool(x, (2, 2, 2), strides=(2, 2, 2), padding='VALID')
    return pooled.reshape(x.shape[0], -1)
  if pool == 'avg122':
    return adaptive_avg_pool(x, (1, 2, 2)).reshape(x.shape[0], -1)
  raise ValueError(f"pool={pool!r} is not one of 'avg', 'max222', 'avg122'")


def adaptive_avg_pool(x: jax.Array, output: Sequence[int]) -> jax.Array:
  """PyTorch's AdaptiveAvgPool over the middle axes: bin i covers [floor(i*n/k), ceil((i+1)*n/k))."""
  for axis, k in enumerate(output, start=1):
    n = x.shape[axis]
    bins = [jax.lax.slice_in_dim(x, (i * n) // k, -(-(i + 1) * n // k), axis=axis).mean(
        axis=axis, keepdims=True) for i in range(k)]
    x = jnp.concatenate(bins, axis=axis)
  return x
