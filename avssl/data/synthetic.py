"""Synthetic audio-visual clips with a known class structure, for demos and tests.

Every class has one fixed video template and one fixed spectrogram template; an example is its class's
templates plus Gaussian noise, both drawn from `(seed, split, index)`. So any example can be generated on
any host without storage, the data are identical however they are split over processes, and the classes
are learnable (and clusterable) from either modality alone, with the noise level setting how hard.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from avssl.data import datasets

_SPLIT_ID = {'train': 0, 'eval': 1}


class SyntheticAV:
  """Example generator; `fetch(split, indices)` returns a batch dict."""

  def __init__(self, config: ml_collections.ConfigDict, seed: int):
    self.config = config
    self.seed = seed
    rng = np.random.default_rng([seed, 7])
    video_shape = (config.num_frames, config.frame_size, config.frame_size, 3)
    audio_shape = (config.audio_bins, config.audio_frames, 1)
    self.video_templates = _coarse_patterns(rng, config.num_classes, video_shape, config.cells)
    self.audio_templates = _coarse_patterns(rng, config.num_classes, audio_shape, config.cells)

  def label(self, split: str, index: int) -> int:
    """Classes are balanced and interleaved, scrambled per split by a fixed permutation."""
    perm = np.random.default_rng([self.seed, _SPLIT_ID[split], 11]).permutation(
        self.config.num_classes)
    return int(perm[index % self.config.num_classes])

  def example(self, split: str, index: int) -> dict[str, np.ndarray]:
    label = self.label(split, index)
    rng = np.random.default_rng([self.seed, _SPLIT_ID[split], index])
    noise = np.float32(self.config.noise)
    video = self.video_templates[label] + noise * rng.standard_normal(
        self.video_templates.shape[1:], np.float32)
    audio = self.audio_templates[label] + noise * rng.standard_normal(
        self.audio_templates.shape[1:], np.float32)
    return {'video': video, 'audio': audio, 'label': np.int32(label)}

  def fetch(self, split: str, indices: np.ndarray) -> datasets.Batch:
    return datasets.stack([self.example(split, int(i)) for i in indices])


def _coarse_patterns(rng: np.random.Generator, n: int, shape: tuple[int, ...],
                     cells: int) -> np.ndarray:
  """`n` unit-variance patterns of `shape`, constant over blocks (`cells` per axis, channels free).

  Blocky patterns, like objects and sound events, survive pooling and small shifts, so the classes can
  be told apart by small convolutional networks.
  """
  coarse = tuple(min(cells, d) for d in shape[:-1]) + shape[-1:]
  patterns = rng.standard_normal((n,) + coarse).astype(np.float32)
  for axis, (size, c) in enumerate(zip(shape[:-1], coarse[:-1]), start=1):
    patterns = np.repeat(patterns, -(-size // c), axis=axis).take(range(size), axis=axis)
  return patterns


@datasets.register('synthetic')
def build(config: ml_collections.ConfigDict, *, batch_size: int, process_index: int,
          process_count: int, seed: int) -> datasets.DataSource:
  generator = SyntheticAV(config, seed)
  return datasets.IndexedSource(generator.fetch, config.num_train, config.num_eval,
                                batch_size=batch_size, process_index=process_index,
                                process_count=process_count, seed=seed)


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(dict(
      name='synthetic', num_train=512, num_eval=128, num_classes=8, num_frames=4, frame_size=16,
      audio_bins=16, audio_frames=16, cells=4, noise=1.0))
  config.update(overrides)
  return config
