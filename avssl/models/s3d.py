"""S3D (Xie et al., ECCV 2018, "Rethinking spatiotemporal feature learning"): the separable 3D Inception net.

GOCA compares with CoCLR and ViCC on this backbone, so the layout, channel numbers, strides and paddings
are those of the public PyTorch S3D that CoCLR and ViCC use: every 3D convolution of Inception-v1 with a
k x k x k kernel is split into a spatial (1, k, k) and a temporal (k, 1, 1) convolution, each followed by
BatchNorm and ReLU. Without self-gating this is S3D; `gating=True` gives S3D-G.

Input is channels-last `[B, T, H, W, 3]`. The network downsamples time by 8 and space by 32, so a
32 x 128 x 128 clip (GOCA's and ViCC's input) ends as a 4 x 4 x 4 x 1024 map. GOCA's released S3D path
returns that map unpooled; here the global average pool is part of the model.

BatchNorm epsilon: the TensorFlow S3D and kylemin/S3D use 1e-3 (the default here); CoCLR's `s3dg.py` uses
PyTorch's default 1e-5. Pass `norm=Norm(eps=1e-5)` to match CoCLR checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from avssl.models.common import Norm, conv, linear_bias_init, linear_init

# Channels of each Mixed block: (branch 0, branch 1 reduce, branch 1, branch 2 reduce, branch 2, branch 3).
# Inception-v1's numbers (Szegedy et al. 2015, Table 1), as in the PyTorch S3D.
MIXED = {
    'Mixed_3b': (64, 96, 128, 16, 32, 32),
    'Mixed_3c': (128, 128, 192, 32, 96, 64),
    'Mixed_4b': (192, 96, 208, 16, 48, 64),
    'Mixed_4c': (160, 112, 224, 24, 64, 64),
    'Mixed_4d': (128, 128, 256, 24, 64, 64),
    'Mixed_4e': (112, 144, 288, 32, 64, 64),
    'Mixed_4f': (256, 160, 320, 32, 128, 128),
    'Mixed_5b': (256, 160, 320, 32, 128, 128),
    'Mixed_5c': (384, 192, 384, 48, 128, 128),
}


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int],
             padding: Sequence[int]) -> jax.Array:
  """PyTorch's `MaxPool3d(window, strides, padding)`: `padding[i]` per side, padded with -inf.

  `lax.reduce_window` pads with the reduction's initial value, -inf for max, so a padded position never
  wins, as in PyTorch; zero padding would clip negative inputs at the border.
  """
  return nn.max_pool(x, tuple(window), tuple(strides), tuple((p, p) for p in padding))


class ConvBN(nn.Module):
  """Bias-free convolution (symmetric `kernel // 2` padding), BatchNorm, ReLU: every S3D layer's unit."""
  features: int
  kernel: tuple[int, int, int] = (1, 1, 1)
  strides: tuple[int, int, int] = (1, 1, 1)
  norm: Norm = Norm(eps=1e-3)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = conv(self.features, self.kernel, self.strides, norm=self.norm, name='conv')(x)
    return nn.relu(self.norm(train, name='bn')(x))


class SepConv(nn.Module):
  """A k x k x k convolution split into spatial (1, k, k) then temporal (k, 1, 1), each with BN + ReLU.

  The stride, too, is split: spatial in the first convolution, temporal in the second.
  """
  features: int
  kernel: int
  stride: int = 1
  norm: Norm = Norm(eps=1e-3)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    k, s = self.kernel, self.stride
    x = ConvBN(self.features, (1, k, k), (1, s, s), self.norm, name='spatial')(x, train)
    return ConvBN(self.features, (k, 1, 1), (s, 1, 1), self.norm, name='temporal')(x, train)


class SelfGating(nn.Module):
  """S3D-G's spatio-temporal feature gating: channels scaled by sigmoid(W · spatiotemporal mean + b)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    weights = nn.Dense(channels, kernel_init=linear_init, bias_init=linear_bias_init(channels),
                       dtype=x.dtype, param_dtype=jnp.float32, name='fc')(x.mean(axis=(1, 2, 3)))
    return x * nn.sigmoid(weights)[:, None, None, None, :]


class Inception(nn.Module):
  """A Mixed block: 1x1x1 | 1x1x1 -> sep 3 | 1x1x1 -> sep 3 | max pool 3 -> 1x1x1, concatenated."""
  channels: tuple[int, int, int, int, int, int]
  gating: bool = False
  norm: Norm = Norm(eps=1e-3)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c0, c1_reduce, c1, c2_reduce, c2, c3 = self.channels
    branches = [
        ConvBN(c0, norm=self.norm, name='branch0')(x, train),
        SepConv(c1, 3, norm=self.norm, name='branch1_sep')(
            ConvBN(c1_reduce, norm=self.norm, name='branch1_reduce')(x, train), train),
        SepConv(c2, 3, norm=self.norm, name='branch2_sep')(
            ConvBN(c2_reduce, norm=self.norm, name='branch2_reduce')(x, train), train),
        ConvBN(c3, norm=self.norm, name='branch3')(max_pool(x, (3, 3, 3), (1, 1, 1), (1, 1, 1)), train),
    ]
    if self.gating:
      branches = [SelfGating(name=f'gating{i}')(b) for i, b in enumerate(branches)]
    return jnp.concatenate(branches, axis=-1)


class S3D(nn.Module):
  """Video `[B, T, H, W, 3]` -> globally average-pooled 1024-d feature (float32).

  With `return_map=True` also returns the last feature map `[B, T/8, H/32, W/32, 1024]` in the
  activation dtype, e.g. for IICL's co-attention tokens.
  """
  norm: Norm = Norm(eps=1e-3)
  gating: bool = False

  @nn.compact
  def __call__(self, video: jax.Array, train: bool,
               return_map: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    return self.norm.remat_module(S3D._forward, 'full', (2, 3))(self, video, train, return_map)

  def _forward(self, video: jax.Array, train: bool,
               return_map: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """The network; `__call__` runs it under `nn.remat` when `norm.remat == 'full'`."""
    inception = self.norm.remat_module(Inception, 'blocks')
    mixed = lambda name, x: inception(MIXED[name], self.gating, self.norm, name=name)(x, train)
    x = video.astype(self.norm.dtype)
    x = SepConv(64, 7, stride=2, norm=self.norm, name='Conv_1a')(x, train)
    x = max_pool(x, (1, 3, 3), (1, 2, 2), (0, 1, 1))
    x = ConvBN(64, norm=self.norm, name='Conv_2b')(x, train)
    x = SepConv(192, 3, norm=self.norm, name='Conv_2c')(x, train)
    x = max_pool(x, (1, 3, 3), (1, 2, 2), (0, 1, 1))
    x = mixed('Mixed_3c', mixed('Mixed_3b', x))
    x = max_pool(x, (3, 3, 3), (2, 2, 2), (1, 1, 1))
    for name in ('Mixed_4b', 'Mixed_4c', 'Mixed_4d', 'Mixed_4e', 'Mixed_4f'):
      x = mixed(name, x)
    x = max_pool(x, (2, 2, 2), (2, 2, 2), (0, 0, 0))
    x = mixed('Mixed_5c', mixed('Mixed_5b', x))
    feature = x.astype(jnp.float32).mean(axis=(1, 2, 3))
    return (feature, x) if return_map else feature
