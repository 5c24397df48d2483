"""A small audio-visual network for CPU tests and the foundation's demo.

One convolution + BatchNorm + ReLU per modality, global average pooling, and a linear classifier on the
concatenated features. It exercises everything the real encoders need from the loop (BatchNorm
statistics, dropout RNG, sharded batches) at a size that compiles in seconds.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


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
