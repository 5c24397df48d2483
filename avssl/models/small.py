"""Small networks for CPU tests and demos.

`SmallAVNet`: one convolution + BatchNorm + ReLU per modality, global average pooling, and a linear
classifier on the concatenated features. It exercises everything the real encoders need from the loop
(BatchNorm statistics, dropout RNG, sharded batches) at a size that compiles in seconds.
`SmallVideoEncoder`, `SmallAudioEncoder`: encoders with the interface of R(2+1)D and the audio ResNets
(input → pooled feature, and with `return_map=True` also the last feature map, which IICL's
co-attention reads as tokens), small enough for the demos to train on a laptop CPU.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from avssl.models import common


class SmallAVNet(nn.Module):
  """Video `[B, T, H, W, 3]` and spectrogram `[B, F, T, 1]` -> logits `[B, num_classes]`."""
  num_classes: int
  width: int = 16
  dropout: float = 0.0
  bn_momentum: float = 0.9
  bn_eps: float = 1e-5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, video: jax.Array, audio: jax.Array, train: bool) -> jax.Array:
    norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                                     epsilon=self.bn_eps, dtype=self.dtype, name=name)
    v = nn.Conv(self.width, (3, 3, 3), strides=(1, 2, 2), use_bias=False, dtype=self.dtype,
                name='video_conv')(video.astype(self.dtype))
    v = nn.relu(norm('video_bn')(v)).mean(axis=(1, 2, 3))
    a = nn.Conv(self.width, (3, 3), strides=(2, 2), use_bias=False, dtype=self.dtype,
                name='audio_conv')(audio.astype(self.dtype))
    a = nn.relu(norm('audio_bn')(a)).mean(axis=(1, 2))
    features = nn.Dropout(self.dropout, deterministic=not train)(jnp.concatenate([v, a], axis=-1))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='classifier')(features).astype(jnp.float32)


class SmallVideoEncoder(nn.Module):
  """A few (2+1)-D conv stages, global average pooled: a laptop-sized stand-in for R(2+1)D in demos.

  Each stage is a spatial (1, 3, 3) conv (stride 2 in space) then a temporal (3, 1, 1) conv, both with
  BatchNorm and ReLU, as in R(2+1)D's factorisation; `widths` sets the stages and the feature size.
  """
  widths: tuple[int, ...] = (16, 32, 64)
  norm: common.Norm = common.Norm()

  @nn.compact
  def __call__(self, video: jax.Array, train: bool, return_map: bool = False):
    forward = self.norm.remat_module(SmallVideoEncoder._forward, 'full', (2, 3))
    return forward(self, video, train, return_map)

  def _forward(self, video: jax.Array, train: bool, return_map: bool = False):
    """The encoder; `__call__` runs it under `nn.remat` when `norm.remat == 'full'`."""
    x = video.astype(self.norm.dtype)
    stage = self.norm.remat_module(SmallVideoEncoder._stage, 'blocks', (2, 3))
    for i in range(len(self.widths)):
      x = stage(self, x, train, i)
    feature = x.mean(axis=(1, 2, 3)).astype(jnp.float32)
    return (feature, x) if return_map else feature

  def _stage(self, x: jax.Array, train: bool, i: int) -> jax.Array:
    """Stage `i`, a function of the module rather than a submodule so that `remat='blocks'` can wrap
    it while the parameters keep their flat names (`spatial0`, `temporal0_bn`, ...)."""
    width = self.widths[i]
    x = common.conv(width, (1, 3, 3), (1, 2, 2), norm=self.norm, name=f'spatial{i}')(x)
    x = nn.relu(self.norm(train, name=f'spatial{i}_bn')(x))
    x = common.conv(width, (3, 1, 1), 1, norm=self.norm, name=f'temporal{i}')(x)
    return nn.relu(self.norm(train, name=f'temporal{i}_bn')(x))


class SmallAudioEncoder(nn.Module):
  """A few strided 3x3 conv stages on the spectrogram, global average pooled (the audio counterpart)."""
  widths: tuple[int, ...] = (16, 32, 64)
  norm: common.Norm = common.Norm()

  @nn.compact
  def __call__(self, spectrogram: jax.Array, train: bool, return_map: bool = False):
    forward = self.norm.remat_module(SmallAudioEncoder._forward, 'full', (2, 3))
    return forward(self, spectrogram, train, return_map)

  def _forward(self, spectrogram: jax.Array, train: bool, return_map: bool = False):
    """The encoder; `__call__` runs it under `nn.remat` when `norm.remat == 'full'`."""
    x = spectrogram.astype(self.norm.dtype)
    stage = self.norm.remat_module(SmallAudioEncoder._stage, 'blocks', (2, 3))
    for i in range(len(self.widths)):
      x = stage(self, x, train, i)
    feature = x.mean(axis=(1, 2)).astype(jnp.float32)
    return (feature, x) if return_map else feature

  def _stage(self, x: jax.Array, train: bool, i: int) -> jax.Array:
    """Stage `i` (see `SmallVideoEncoder._stage`)."""
    x = common.conv(self.widths[i], (3, 3), 2, norm=self.norm, name=f'conv{i}')(x)
    return nn.relu(self.norm(train, name=f'conv{i}_bn')(x))
