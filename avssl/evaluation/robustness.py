"""Degraded visual input (SeLaVi §4.1 "Degraded modality", Fig. 2).

At test time only, every frame is down-sampled by a factor f and up-sampled back to its size, which
keeps the input shape but removes detail, as a heavily compressed stream would; f ∈ {1, 4, 8, 16} as in
the paper. A model that learned to rely on both modalities loses less clustering NMI with video and
audio than with video alone. The paper's Appendix A.5 (the exact filters) is not in our copy: this
uses an antialiased linear down-sampling and a linear up-sampling (`jax.image.resize`), and says so in
its output.

The curve is measured through the method's own `evaluate`, whose results name views
`<view>/nmi/mean` ('video', 'video + audio'), so any clustering method with those views gets one;
optionally with k-means on the trained video encoder's degraded features as a baseline.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from avssl.data import datasets, on_device
from avssl.evaluation import tables

FACTORS = (1, 4, 8, 16)
PROTOCOL = 'antialiased linear down-sampling by f, linear up-sampling back (jax.image.resize)'


def degrade(video: jax.Array, factor: int) -> jax.Array:
  """`[..., H, W, C]` frames down-sampled by `factor` (to at least 1 pixel) and back up to H × W."""
  if factor < 1:
    raise ValueError(f'factor={factor}: use 1 (no change) or more')
  if factor == 1:
    return video
  *lead, height, width, channels = video.shape
  small = (*lead, max(1, round(height / factor)), max(1, round(width / factor)), channels)
  down = jax.image.resize(video, small, 'linear', antialias=True)
  return jax.image.resize(down, video.shape, 'linear').astype(video.dtype)


@functools.lru_cache(maxsize=None)
def degrade_fn(factor: int, scale: on_device.Scale = (None, None)
               ) -> Callable[[jax.typing.ArrayLike], jax.Array]:
  """`degrade` at a fixed factor, jitted (also a `features.extract` transform). uint8 frames
  (`config.data.normalize_on_device`) are normalised with `scale` (the data's mean and std) first:
  the degradation acts on the network input, whichever side normalised it."""
  return jax.jit(lambda video: degrade(on_device.normalize_input('video', video, *scale), factor))


def degraded(batches: Iterator[datasets.Batch], factor: int,
             scale: on_device.Scale = (None, None)) -> Iterator[datasets.Batch]:
  """The batches with their `video` degraded (normalised first where it is uint8, with `scale`);
  everything else untouched."""
  fn = degrade_fn(factor, scale)
  for batch in batches:
    yield {**batch, 'video': np.asarray(fn(batch['video']))}


def curve(evaluate: Callable[[Iterator[datasets.Batch]], dict[str, float]],
          batches: Callable[[], Iterator[datasets.Batch]], factors: Sequence[int] = FACTORS,
          views: Sequence[str] = ('video', 'video + audio'),
          baseline: Callable[[int], float] | None = None,
          scale: on_device.Scale = (None, None)) -> dict[str, Any]:
  """NMI (mean over heads) of each view at each factor: `{'factors': [...], view: [...]}`.

  `evaluate` is the method's evaluation of a batch iterator, `batches()` a fresh pass over the
  evaluation data, `baseline(factor)` (optional) the NMI of a baseline clustering at that factor,
  `scale` the data's mean and std (`on_device.scale`) for batches with uint8 video.
  """
  out: dict[str, Any] = {'factors': list(factors), 'protocol': PROTOCOL}
  for factor in factors:
    results = evaluate(degraded(batches(), factor, scale))
    for view in views:
      key = tables.clustering_key(view, 'nmi', 'mean')
      if key not in results:
        raise ValueError(f'the method reports no {key!r}; the robustness curve needs its per-view '
                         f'clustering NMI (it reports {sorted(results)[:6]}...)')
      out.setdefault(view, []).append(results[key])
    if baseline is not None:
      out.setdefault('k-means (video encoder)', []).append(baseline(factor))
  return out
