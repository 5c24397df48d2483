"""Training throughput of SeLaVi's encoders: forward + backward of R(2+1)D-18 and audio ResNet-9.

    python benchmarks/encoders.py            # SeLaVi's input: 30x112x112 clip + 257x99 spectrogram
    python benchmarks/encoders.py --small    # 8x56x56 + 128x50, about a minute on a laptop CPU

Prints clips/s for the Flax encoders (jit, BN in train mode, gradients of all parameters) and, when torch
and torchvision are installed, for torchvision's r2plus1d_18 + a ResNet-9 built the way SeLaVi builds
it, measured in the same run, with the ratio. Also states the machine it ran on.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import machine
from avssl.models.audio_resnet import AudioResNet
from avssl.models.common import Norm
from avssl.models.r2plus1d import R2Plus1D


def _time(step, iters: int) -> float:
  """Seconds per call after two warm-up calls (compilation, allocator)."""
  for _ in range(2):
    step()
  start = time.perf_counter()
  for _ in range(iters):
    step()
  return (time.perf_counter() - start) / iters


def jax_clips_per_second(video_shape, audio_shape, batch: int, iters: int, dtype) -> float:
  norm = Norm(dtype=dtype)
  video_net, audio_net = R2Plus1D(norm=norm), AudioResNet(depth=9, norm=norm)
  rng = np.random.default_rng(0)
  video = jnp.asarray(rng.standard_normal((batch, *video_shape), np.float32))
  audio = jnp.asarray(rng.standard_normal((batch, *audio_shape), np.float32))
  variables = jax.jit(lambda: {'video': video_net.init(jax.random.PRNGKey(0), video[:1], train=False),
                               'audio': audio_net.init(jax.random.PRNGKey(1), audio[:1],
                                                       train=False)})()

  def loss(params, video, audio):
    v, _ = video_net.apply({**variables['video'], 'params': params['video']}, video, train=True,
                           mutable=['batch_stats'])
    a, _ = audio_net.apply({**variables['audio'], 'params': params['audio']}, audio, train=True,
                           mutable=['batch_stats'])
    return jnp.mean(v ** 2) + jnp.mean(a ** 2)

  grad = jax.jit(jax.grad(loss))
  params = {'video': variables['video']['params'], 'audio': variables['audio']['params']}
  seconds = _time(lambda: jax.block_until_ready(grad(params, video, audio)), iters)
  return batch / seconds


def torch_clips_per_second(video_shape, audio_shape, batch: int, iters: int) -> float | None:
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import torchvision  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  video_net = torchvision.models.video.r2plus1d_18(weights=None)
  video_net.fc = torch.nn.Identity()
  audio_net = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
  audio_net.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
  audio_net.fc = torch.nn.Identity()
  video_net.to(device).train()
  audio_net.to(device).train()
  t, h, w, c = video_shape
  video = torch.randn(batch, c, t, h, w, device=device)
  audio = torch.randn(batch, 1, *audio_shape[:2], device=device)

  def step():
    video_net.zero_grad()
    audio_net.zero_grad()
    loss = video_net(video).pow(2).mean() + audio_net(audio).pow(2).mean()
    loss.backward()
    if device == 'cuda':
      torch.cuda.synchronize()

  return batch / _time(step, iters)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--small', action='store_true', help='8x56x56 clips, 128x50 spectrograms')
  parser.add_argument('--batch', type=int, default=None, help='clips per step (default 8, small 4)')
  parser.add_argument('--iters', type=int, default=None, help='timed steps (default 5, small 3)')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'],
                      help='activation dtype of the Flax encoders')
  args = parser.parse_args()
  video_shape, audio_shape = ((8, 56, 56, 3), (128, 50, 1)) if args.small else \
      ((30, 112, 112, 3), (257, 99, 1))
  batch = args.batch or (4 if args.small else 8)
  iters = args.iters or (3 if args.small else 5)
  print(f'machine: {machine.jax_devices()}; host: {machine.cpu()}')
  print(f'input: video {video_shape}, audio {audio_shape}, batch {batch}, {iters} timed steps')
  ours = jax_clips_per_second(video_shape, audio_shape, batch, iters, jnp.dtype(args.dtype))
  print(f'avssl (Flax, {args.dtype}) R(2+1)D-18 + ResNet-9 forward+backward: {ours:.2f} clips/s')
  reference = torch_clips_per_second(video_shape, audio_shape, batch, iters)
  if reference is None:
    print('reference: torch/torchvision not installed; no ratio')
  else:
    print(f'reference (PyTorch {__import__("torch").__version__}, float32) torchvision r2plus1d_18 '
          f'+ ResNet-9: {reference:.2f} clips/s')
    print(f'ratio avssl / reference: {ours / reference:.2f}')


if __name__ == '__main__':
  main()
