"""Encoders by name, so that configs choose them: `config.model.video.name`, `config.model.audio.name`."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import ml_collections

from avssl.models.audio_resnet import AudioResNet
from avssl.models.common import Norm
from avssl.models.r2plus1d import R2Plus1D
from avssl.models.s3d import S3D
from avssl.models.small import SmallAudioEncoder, SmallVideoEncoder

VIDEO = ('r2plus1d', 's3d', 'small')
AUDIO = ('audio_resnet', 'small')


def encoder_config(name: str, depth: int = 18, widths: tuple[int, ...] = (16, 32, 64),
                   pool: str = 'avg') -> ml_collections.ConfigDict:
  """Every encoder key (a locked config needs them all): `depth` for the ResNets, `widths` for the
  small encoders, `pool` for R(2+1)D's pooled feature."""
  return ml_collections.ConfigDict(dict(name=name, depth=depth, widths=widths, pool=pool))


def video_encoder(config: ml_collections.ConfigDict, norm: Norm) -> nn.Module:
  """Video `[B, T, H, W, 3]` → pooled feature `[B, D]`."""
  if config.name == 'r2plus1d':
    return R2Plus1D(depth=config.depth, pool=config.pool, norm=norm)
  if config.name == 's3d':
    return S3D(norm=dataclasses.replace(norm, eps=1e-3))
  if config.name == 'small':
    return SmallVideoEncoder(widths=tuple(config.widths), norm=norm)
  raise ValueError(f'config.model.video.name={config.name!r} is not one of {VIDEO}')


def audio_encoder(config: ml_collections.ConfigDict, norm: Norm) -> nn.Module:
  """Spectrogram `[B, bins, frames, 1]` → pooled feature `[B, D]`."""
  if config.name == 'audio_resnet':
    return AudioResNet(depth=config.depth, norm=norm)
  if config.name == 'small':
    return SmallAudioEncoder(widths=tuple(config.widths), norm=norm)
  raise ValueError(f'config.model.audio.name={config.name!r} is not one of {AUDIO}')
