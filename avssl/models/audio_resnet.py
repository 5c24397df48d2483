"""Audio ResNets on a one-channel log-mel spectrogram `[B, mel, time, 1]`.

torchvision's 2-D ResNet with BasicBlocks and a one-channel first conv (7x7, stride 2, no bias), then
BN, ReLU, MaxPool 3x3 stride 2, four stages (64/128/256/512, strides 1/2/2/2) and global average pooling.
SeLaVi's "ResNet-9" has one block per stage (input 257x99 -> 9x4x512 map, 512-d); XDC and IICL use
ResNet-18, two blocks per stage (input 40x100). Layer for layer equal to torchvision, so the SeLaVi
checkpoint's audio trunk loads (`convert.py`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from avssl.models import common
from avssl.models.common import Norm

DEPTHS = {9: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
WIDTHS = (64, 128, 256, 512)


class BasicBlock2D(nn.Module):
  """3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, residual (1x1 strided conv + BN where shapes change)."""
  features: int
  stride: int = 1
  norm: Norm = Norm()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = common.conv(self.features, (3, 3), self.stride, norm=self.norm, name='conv1')(x)
    y = nn.relu(self.norm(train, name='bn1')(y))
    y = common.conv(self.features, (3, 3), 1, norm=self.norm, name='conv2')(y)
    y = self.norm(train, name='bn2')(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = common.conv(self.features, (1, 1), self.stride, norm=self.norm, name='downsample')(x)
      x = self.norm(train, name='downsample_bn')(x)
    return nn.relu(x + y)


class AudioResNet(nn.Module):
  """Returns the 512-d average-pooled feature and, with `return_map=True`, the last feature map."""
  depth: int = 9
  norm: Norm = Norm()

  @nn.compact
  def __call__(self, spectrogram: jax.Array, train: bool, return_map: bool = False):
    return self.norm.remat_module(AudioResNet._forward, 'full', (2, 3))(self, spectrogram, train, return_map)

  def _forward(self, spectrogram: jax.Array, train: bool, return_map: bool = False):
    """The encoder; `__call__` runs it under `nn.remat` when `norm.remat == 'full'`."""
    x = spectrogram.astype(self.norm.dtype)
    x = common.conv(64, (7, 7), 2, norm=self.norm, name='conv1')(x)
    x = nn.relu(self.norm(train, name='bn1')(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    block_class = self.norm.remat_module(BasicBlock2D, 'blocks')
    for stage, (blocks, width) in enumerate(zip(DEPTHS[self.depth], WIDTHS)):
      for block in range(blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        x = block_class(width, stride, self.norm, name=f'layer{stage + 1}_{block}')(x, train)
    feature = x.mean(axis=(1, 2)).astype(jnp.float32)
    return (feature, x) if return_map else feature
