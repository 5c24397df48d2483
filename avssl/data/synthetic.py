"""Synthetic audio-visual data with a known class structure, for demos, tests and benchmarks.

Two generators live here.

`SyntheticAV` (dataset name 'synthetic') makes in-memory examples for tests of the training loop: every
class has one fixed video template and one fixed spectrogram template; an example is its class's
templates plus Gaussian noise, both drawn from `(seed, split, index)`. So any example can be generated on
any host without storage, the data are identical however they are split over processes, and the classes
are learnable (and clusterable) from either modality alone, with the noise level setting how hard.

avsynth (`AvsynthSpec`, `render_clip`) makes clips that `avssl/data_prep/make_synthetic.py` writes as
real mp4 files with a sound track, so the demo goes through the same decoding and record path as real videos.
Its classes are built for the question of SeLaVi's Table 2, whether labels use both modalities: class c
shows visual pattern c // 2 and plays sound pattern ((c + 1) mod K) // 2, so the picture alone confuses
the classes {2j, 2j+1}, the sound alone confuses {2j-1, 2j}, and only both together name the class. A
visual pattern is a shape, colour, path and speed; a sound pattern a pitch, timbre, beat rate and duty.
Everything else varies per clip and carries no class information: a smooth background texture, a
second moving object, positions, orientations, phases, loudness and noise at a random SNR. Clip i is a
pure function of `(spec, i)`, so any clip can be regenerated alone.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

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


# avsynth: the classes.

SHAPES = ('disc', 'square', 'triangle', 'ring', 'cross')
PATHS = ('horizontal', 'vertical', 'diagonal', 'orbit')
SPEEDS = (0.3, 0.55, 0.8)  # frame sizes per second
TIMBRES = {  # amplitudes of harmonics 1, 2, ...; the fundamental is always the loudest, by 4 dB
    'sine': (1.0,),
    'square': (1.0, 0.0, 1 / 3, 0.0, 1 / 5, 0.0, 1 / 7),
    'sawtooth': (1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 6, 1 / 7, 1 / 8),
    'octaves': (1.0, 0.6, 0.0, 0.45, 0.0, 0.0, 0.0, 0.3),
    'buzz': (1.0, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3),
}
BEAT_RATES = (1.5, 3.0, 5.0)  # beats per second
DUTIES = (0.25, 0.45, 0.65, 0.85)  # fraction of each beat that sounds
_GOLDEN = (math.sqrt(5) - 1) / 2
# ITU-R 601-2 luma weights, for a background's grey level.
_LUMA = (0.299, 0.587, 0.114)
_LOWEST_PITCH, _PITCH_OCTAVES = 180.0, 4.0


class _ClipLength:
  """The frame and sample counts of a clip spec with `fps`, `duration` and `sample_rate`: shared by
  avsynth and avnuisance, whose clips both decode to exactly these lengths."""
  fps: float
  duration: float
  sample_rate: int

  @property
  def num_frames(self) -> int:
    return max(1, round(self.fps * self.duration))

  @property
  def num_samples(self) -> int:
    """Samples of sound: exactly the video's length, as `video_io.decode` returns it."""
    return round(self.num_frames / self.fps * self.sample_rate)


@dataclasses.dataclass(frozen=True)
class AvsynthSpec(_ClipLength):
  """Everything that determines an avsynth dataset.

  Attributes:
    num_videos: number of clips N.
    num_classes: number of classes K, at least 3 (with 2, both modalities would merge the same
      pair). Even is typical: odd K leaves one class alone in its look and one in its sound.
    size: frame height and width in pixels (even, for yuv420p video).
    fps: frame rate.
    duration: seconds per clip; the clip has round(fps * duration) frames and the sound exactly as long.
    sample_rate: audio sample rate.
    balance: 'balanced' (equal class counts) or 'zipf' (class c gets a share proportional to
      1 / (c + 1) ** zipf_exponent, the long tail SeLaVi's prior is about).
    zipf_exponent: the Zipf exponent s.
    flow_friendly: textured objects whose motion per frame is capped, for optical flow (GOCA): TV-L1
      sees motion only where there is texture, and loses objects that jump too far.
    snr_db: the range of the per-clip signal-to-noise ratio of the sound, in dB.
    test_fraction: share of each class's clips in the test split.
    seed: the seed every random choice derives from.
  """
  num_videos: int = 2000
  num_classes: int = 8
  size: int = 64
  fps: float = 10.0
  duration: float = 2.0
  sample_rate: int = 16000
  balance: str = 'balanced'
  zipf_exponent: float = 1.0
  flow_friendly: bool = False
  snr_db: tuple[float, float] = (0.0, 20.0)
  test_fraction: float = 0.1
  seed: int = 0

  def __post_init__(self):
    problems = []
    if self.num_videos < 1:
      problems.append(f'num_videos={self.num_videos} must be positive')
    if self.num_classes < 3:
      problems.append(f'num_classes={self.num_classes} must be at least 3: with fewer, the '
                      'picture and the sound would merge the same classes')
    if self.size < 16 or self.size % 2:
      problems.append(f'size={self.size} must be even and at least 16')
    if self.fps <= 0 or self.duration <= 0 or self.fps * self.duration < 0.5:
      problems.append(f'fps={self.fps} and duration={self.duration} must give at least one frame')
    if self.sample_rate < 8000:
      problems.append(f'sample_rate={self.sample_rate} is below 8000 Hz, too low for the pitches')
    if self.balance not in ('balanced', 'zipf'):
      problems.append(f"balance={self.balance!r} must be 'balanced' or 'zipf'")
    if self.zipf_exponent < 0:
      problems.append(f'zipf_exponent={self.zipf_exponent} must be non-negative')
    if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
      problems.append(f'snr_db={self.snr_db} must be a (low, high) pair')
    if not 0 <= self.test_fraction < 1:
      problems.append(f'test_fraction={self.test_fraction} must be in [0, 1)')
    if problems:
      raise ValueError('AvsynthSpec: ' + '; '.join(problems))


@dataclasses.dataclass(frozen=True)
class VisualAttributes:
  """What a visual pattern looks like: the class object's shape, colour, path and speed."""
  shape: str
  hue: float
  colour: tuple[float, float, float]
  path: str
  speed: float


@dataclasses.dataclass(frozen=True)
class SoundAttributes:
  """What a sound pattern sounds like: pitch (Hz), timbre, beat rate (Hz) and duty."""
  pitch: float
  timbre: str
  beat_rate: float
  duty: float


def visual_pattern(c: int, num_classes: int) -> int:
  """The visual pattern of class c: classes 2j and 2j+1 look alike."""
  del num_classes
  return c // 2


def sound_pattern(c: int, num_classes: int) -> int:
  """The sound pattern of class c: classes 2j-1 and 2j (and K-1 and 0) sound alike."""
  return ((c + 1) % num_classes) // 2


def num_patterns(num_classes: int) -> int:
  """How many visual (and how many sound) patterns K classes use."""
  return (num_classes + 1) // 2


def visual_attributes(pattern: int) -> VisualAttributes:
  """The look of a visual pattern id.

  Shape, path and speed cycle with coprime periods (5, 4, 3) and the hue steps by the golden ratio
  around the colour wheel, so any two of the first 40 patterns differ in at least two of shape, path,
  speed and a 30-degree hue difference, and the first few are far apart in all of them.
  """
  hue = (pattern * _GOLDEN) % 1.0
  return VisualAttributes(shape=SHAPES[pattern % 5], hue=hue, colour=_hsv_to_rgb(hue, 0.85, 0.95),
                          path=PATHS[pattern % 4], speed=SPEEDS[pattern % 3])


def sound_attributes(pattern: int) -> SoundAttributes:
  """The sound of a sound pattern id, spread like `visual_attributes`.

  Pitches step by the golden ratio over four octaves from 180 Hz (a log scale, as hearing and the
  mel spectrogram are), timbre, beat rate and duty cycle with periods 5, 3 and 4.
  """
  pitch = _LOWEST_PITCH * 2.0 ** (_PITCH_OCTAVES * ((pattern * _GOLDEN) % 1.0))
  return SoundAttributes(pitch=pitch, timbre=list(TIMBRES)[pattern % 5],
                         beat_rate=BEAT_RATES[pattern % 3], duty=DUTIES[pattern % 4])


def class_name(c: int, num_classes: int) -> str:
  """Folder name that spells out the class and its patterns, e.g. 'c03_v1_a2'."""
  width = max(2, len(str(num_classes - 1)))
  return (f'c{c:0{width}d}_v{visual_pattern(c, num_classes)}'
          f'_a{sound_pattern(c, num_classes)}')


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
  k = (np.array([5.0, 3.0, 1.0]) + 6.0 * h) % 6.0
  rgb = v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
  r, g, b = (float(x) for x in rgb)
  return r, g, b


# avsynth: which clip has which class.


@functools.lru_cache(maxsize=8)
def labels(spec: AvsynthSpec | NuisanceSpec) -> np.ndarray:
  """The class of every clip, `[N]` int64 (read-only).

  Balanced: every run of K consecutive clips holds each class once, in a random order, so every prefix
  is balanced too. Zipf: exact counts (largest-remainder rounding of N p_c, p_c proportional to
  1 / (c + 1) ** s, so the counts never increase with c), in a random order. The released SeLaVi
  code accepts a `zipf` option and silently uses uniform classes; these counts really are skewed.
  """
  n, k = spec.num_videos, spec.num_classes
  rng = np.random.default_rng([spec.seed, 1])
  if spec.balance == 'balanced':
    blocks = -(-n // k)
    order = np.argsort(rng.random((blocks, k)), axis=1).reshape(-1)[:n]
  else:
    order = rng.permutation(np.repeat(np.arange(k), zipf_counts(n, k, spec.zipf_exponent)))
  order.flags.writeable = False
  return order


def zipf_counts(n: int, num_classes: int, exponent: float) -> np.ndarray:
  """Class counts summing to n, proportional to 1 / (c + 1) ** exponent, non-increasing in c."""
  p = 1.0 / np.arange(1, num_classes + 1) ** exponent
  share = n * p / p.sum()
  counts = np.floor(share).astype(np.int64)
  counts[np.argsort(counts - share, kind='stable')[:n - counts.sum()]] += 1
  return np.sort(counts)[::-1]


def class_of(index: int, spec: AvsynthSpec | NuisanceSpec) -> int:
  """The class of clip `index`."""
  if not 0 <= index < spec.num_videos:
    raise IndexError(f'clip {index} is not in 0..{spec.num_videos - 1}')
  return int(labels(spec)[index])


@functools.lru_cache(maxsize=8)
def test_mask(spec: AvsynthSpec | NuisanceSpec) -> np.ndarray:
  """Which clips are in the test split, `[N]` bool (read-only).

  Stratified: of each class's clips in index order, every (1 / test_fraction)-th one, rounded, so
  each class keeps round(n_c * test_fraction) test clips and the rare Zipf classes are tested too.
  """
  y = labels(spec)
  order = np.argsort(y, kind='stable')
  starts = np.searchsorted(y[order], np.arange(spec.num_classes))
  rank = np.empty(len(y), np.int64)
  rank[order] = np.arange(len(y)) - starts[y[order]]
  f = spec.test_fraction
  mask = np.floor((rank + 1) * f + 0.5) > np.floor(rank * f + 0.5)
  mask.flags.writeable = False
  return mask


def split_of(index: int, spec: AvsynthSpec | NuisanceSpec) -> str:
  """'train' or 'test' for clip `index`."""
  class_of(index, spec)
  return 'test' if test_mask(spec)[index] else 'train'


# avsynth: rendering.


class Clip(NamedTuple):
  """A rendered clip: frames `[T, H, W, 3]` uint8, waveform `[S]` float32 in [-1, 1], its class, and
  its factors (`factors.csv`'s columns after `video_id`: the class and every nuisance, binned)."""
  frames: np.ndarray
  waveform: np.ndarray
  label: int
  factors: dict[str, int | str]


def render_clip(spec: AvsynthSpec, index: int) -> Clip:
  """Clip `index` of avsynth.

  The picture and the sound draw their nuisances from separate streams of `(seed, index)`, so
  changing, say, the frame size leaves the sound of every clip as it was.
  """
  label = class_of(index, spec)
  frames, _, look = render_video(spec, visual_pattern(label, spec.num_classes),
                                 np.random.default_rng([spec.seed, 2, index]))
  waveform, sound = render_audio(spec, sound_pattern(label, spec.num_classes),
                                 np.random.default_rng([spec.seed, 3, index]))
  return Clip(frames, waveform, label, {'class': label, **look, **sound})


def render_video(spec: AvsynthSpec, pattern: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, int | str]]:
  """Frames `[T, H, W, 3]` uint8 of one clip of `pattern`, the class object's coverage `[T, H, W]`,
  and the clip's visual nuisances, binned (`AVSYNTH_FACTORS`).

  The class object is drawn over a smooth random background and a smaller distracting object with a
  random shape, colour, path and speed; its own position, direction and orientation are random.
  The coverage (1 inside, 0 outside, fractional on the anti-aliased edge) lets a test measure the
  pattern apart from the nuisances.
  """
  size = spec.size
  t = np.arange(spec.num_frames, dtype=np.float32) / np.float32(spec.fps)
  background = _background(rng, size)
  frames = np.broadcast_to(background, (len(t), size, size, 3)).copy()
  look = visual_attributes(pattern)
  # Drawn in this order (the clips' bits depend on it): shape, colour, path, speed.
  shape = SHAPES[rng.integers(len(SHAPES))]
  hue = rng.random()
  colour = _hsv_to_rgb(hue, rng.uniform(0.2, 0.6), rng.uniform(0.5, 0.9))
  path = PATHS[rng.integers(len(PATHS))]
  speed = rng.uniform(min(SPEEDS), max(SPEEDS))
  _draw(frames, spec, rng, shape=shape, radius=0.1 * size, colour=colour, path=path, speed=speed,
        t=t)
  coverage = _draw(frames, spec, rng, shape=look.shape, radius=0.16 * size, colour=look.colour,
                   path=look.path, speed=look.speed, t=t)
  mean = background.reshape(-1, 3).mean(0)
  factors: dict[str, int | str] = {
      'background_level': _bin(float(mean @ np.asarray(_LUMA)), 0.1, 0.55, 3),
      'background_tint': 'rgb'[int(np.argmax(mean))], 'distractor_shape': shape,
      'distractor_path': path, 'distractor_hue': _bin(hue, 0.0, 1.0, 6),
      'distractor_speed': _bin(speed, min(SPEEDS), max(SPEEDS), 3)}
  return (frames * 255.0 + 0.5).astype(np.uint8), coverage, factors


def _bin(value: float, low: float, high: float, bins: int) -> int:
  """The index of `value` among `bins` equal bins of [low, high] (values outside go to the ends)."""
  return int(np.clip(np.floor((value - low) / (high - low) * bins), 0, bins - 1))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
  """A dim, nearly grey smooth texture, so that the saturated class object stands out."""
  luminance = 0.65 * _smooth_noise(rng, size, 4, 1) + 0.35 * _smooth_noise(rng, size, 9, 1)
  tint = 0.75 + 0.5 * _smooth_noise(rng, size, 3, 3)
  return np.clip((0.1 + 0.45 * luminance) * tint, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
  """Value noise `[size, size, channels]` in [0, 1]: a random grid, smoothstep-interpolated."""
  grid = rng.random((cells + 1, cells + 1, channels), dtype=np.float32)
  position = (np.arange(size, dtype=np.float32) + 0.5) * (cells / size)
  cell = np.minimum(position.astype(np.int64), cells - 1)
  f = position - cell
  f = f * f * (3 - 2 * f)
  weights = np.zeros((size, cells + 1), np.float32)
  weights[np.arange(size), cell] = 1 - f
  weights[np.arange(size), cell + 1] = f
  return np.einsum('ya,abc,xb->yxc', weights, grid, weights)


def _draw(frames: np.ndarray, spec: AvsynthSpec | NuisanceSpec, rng: np.random.Generator, *, shape: str,
          radius: float, colour: tuple[float, float, float], path: str, speed: float,
          t: np.ndarray) -> np.ndarray:
  """Composites a moving object over `frames` (float, in place) and returns its coverage."""
  centres = _path(rng, path, speed * spec.size * _speed_scale(spec), t, radius, spec.size)
  angle = rng.uniform(0, 2 * np.pi)
  grid = np.arange(spec.size, dtype=np.float32) + 0.5
  dx = grid[None, None, :] - centres[:, 0, None, None]
  dy = grid[None, :, None] - centres[:, 1, None, None]
  u = np.float32(np.cos(angle)) * dx + np.float32(np.sin(angle)) * dy
  v = np.float32(np.cos(angle)) * dy - np.float32(np.sin(angle)) * dx
  coverage = np.clip(0.5 - _SIGNED_DISTANCE[shape](u, v, np.float32(radius)), 0.0, 1.0)
  fill = np.asarray(colour, np.float32)
  if spec.flow_friendly:
    k = np.float32(2 * np.pi / max(3.0, 1.5 * radius))
    fill = fill * (0.7 + 0.3 * np.sin(k * u) * np.sin(k * v))[..., None]
  frames += coverage[..., None] * (fill - frames)
  return coverage


def _speed_scale(spec: AvsynthSpec | NuisanceSpec) -> float:
  """1, or in the flow-friendly variant the factor that slows every object alike (keeping the speed
  patterns apart) so that none moves more than 5% of the frame (at most 16 px) per frame.

  TV-L1 with OpenCV's defaults measures such steps on these objects to about 0.2 px, and they stay
  well inside GOCA's +-20 px flow clip; at 10% of the frame it underestimates diagonal motion by half.
  """
  if not spec.flow_friendly:
    return 1.0
  return min(1.0, min(16.0, 0.05 * spec.size) * spec.fps / (max(SPEEDS) * spec.size))


def _path(rng: np.random.Generator, path: str, speed: float, t: np.ndarray, radius: float,
          size: int) -> np.ndarray:
  """Centres `[T, 2]` (x, y) of an object moving at `speed` px/s, bouncing inside the frame.

  The margin holds the farthest corner of any shape (the square's, 0.85 * sqrt(2) * radius), so
  objects are never cut off by the frame's edge.
  """
  low = 1.25 * radius + 1.0
  span = size - 2 * low
  if path == 'orbit':
    orbit = min(0.2 * size, 0.45 * span)
    centre = low + orbit + rng.random(2) * (span - 2 * orbit)
    angle = rng.uniform(0, 2 * np.pi) + rng.choice([-1.0, 1.0]) * (speed / orbit) * t
    return (centre + orbit * np.stack([np.cos(angle), np.sin(angle)], axis=1)).astype(np.float32)
  direction = {'horizontal': (1.0, 0.0), 'vertical': (0.0, 1.0),
               'diagonal': (math.sqrt(0.5), math.sqrt(0.5))}[path]
  direction = np.asarray(direction) * rng.choice([-1.0, 1.0], size=2)
  travel = rng.random(2) * 2 * span + speed * t[:, None] * direction
  folded = travel % (2 * span)
  return (low + np.where(folded > span, 2 * span - folded, folded)).astype(np.float32)


def _triangle(u: np.ndarray, v: np.ndarray, r: np.float32) -> np.ndarray:
  c, s = np.float32(math.sqrt(3) / 2), np.float32(0.5)
  return np.maximum(np.maximum(-v, c * u + s * v), -c * u + s * v) - 0.5 * r


def _cross(u: np.ndarray, v: np.ndarray, r: np.float32) -> np.ndarray:
  au, av, w = np.abs(u), np.abs(v), 0.33 * r
  return np.minimum(np.maximum(au - r, av - w), np.maximum(au - w, av - r))


_SIGNED_DISTANCE = {  # negative inside, in pixels; exact near the edge, which is all that is used
    'disc': lambda u, v, r: np.sqrt(u * u + v * v) - r,
    'square': lambda u, v, r: np.maximum(np.abs(u), np.abs(v)) - 0.85 * r,
    'triangle': _triangle,
    'ring': lambda u, v, r: np.abs(np.sqrt(u * u + v * v) - 0.7 * r) - 0.3 * r,
    'cross': _cross,
}


def render_audio(spec: AvsynthSpec, pattern: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, dict[str, int | str]]:
  """Waveform `[S]` float32 of one clip of `pattern`, the pattern's beating tone plus white noise, and
  its nuisances, binned (`AVSYNTH_FACTORS`).

  Random per clip: the tone's phase, the beat's phase, the SNR (uniform in `spec.snr_db`) and the
  loudness (peak 0.3 to 0.9). Harmonics at or above 0.45 * sample_rate are left out, so no sample
  rate aliases a pattern into another.
  """
  sound = sound_attributes(pattern)
  t = np.arange(spec.num_samples) / spec.sample_rate
  amplitudes = np.asarray(TIMBRES[sound.timbre])
  harmonics = np.arange(1, len(amplitudes) + 1)
  keep = (amplitudes > 0) & (harmonics * sound.pitch < 0.45 * spec.sample_rate)
  phase = 2 * np.pi * (sound.pitch * t + rng.random())
  tone = amplitudes[keep] @ np.sin(harmonics[keep, None] * phase[None, :])
  beat = (sound.beat_rate * t + rng.random()) % 1.0
  ramp = 0.01 * sound.beat_rate  # 10 ms attack and release, in beats: no clicks
  tone *= np.clip(np.minimum(beat, sound.duty - beat) / ramp, 0.0, 1.0)
  snr = rng.uniform(*spec.snr_db)
  noise = rng.standard_normal(len(t)) * math.sqrt(np.mean(tone ** 2) / 10 ** (snr / 10))
  mix = tone + noise
  peak = rng.uniform(0.3, 0.9)
  factors: dict[str, int | str] = {
      'snr': _bin(snr, *spec.snr_db, 4) if spec.snr_db[1] > spec.snr_db[0] else 0,
      'loudness': _bin(peak, 0.3, 0.9, 3)}
  return (mix * (peak / np.max(np.abs(mix)))).astype(np.float32), factors


# avnuisance: the class in a small object and a short sound, drowned in nuisances.

TEXTURES = ('flat', 'stripes', 'checker', 'blobs')
NOISE_COLOURS = {'brown': -2.0, 'pink': -1.0, 'white': 0.0, 'blue': 1.0}  # power ∝ frequency^x
_NUISANCE_SPEED = 0.5  # frame sizes per second, every class alike
_NUISANCE_RADIUS = 0.12  # of the frame size: the object covers about 4% of the frame
_EVENT_LOWEST_PITCH, _EVENT_OCTAVES = 200.0, 3.5
_RAMP_SECONDS = 0.02


@dataclasses.dataclass(frozen=True)
class NuisanceSpec(_ClipLength):
  """Everything that determines an avnuisance dataset (`make_synthetic --nuisance`).

  Class c is a small object of shape `SHAPES[c % 5]` moving along `PATHS[c % 4]` and a short tone
  burst of its own pitch and timbre (`nuisance_attributes`): each modality alone names the class,
  unlike avsynth. Everything else is drawn per clip, independently of the class and, per modality, of
  each other: the background's hue, brightness and texture, the object's colour and position; the
  noise's colour and level, the event's onset and the clip's loudness. The nuisances fill the frame
  and the spectrogram, so clustering the raw inputs groups them by nuisance.

  Attributes:
    num_videos, num_classes, size, fps, duration, sample_rate, balance, zipf_exponent, test_fraction,
      seed: as in `AvsynthSpec`; num_classes is 2 to 20 (the distinct shape-and-path pairs).
    event_seconds: the sound event's length; it starts uniformly at random within the clip.
    snr_db: range of the event's SNR against the noise, over the event's span, in dB.
    loudness_db: range of the clip's peak level, in dB of full scale.
  """
  num_videos: int = 2000
  num_classes: int = 10
  size: int = 64
  fps: float = 10.0
  duration: float = 2.0
  sample_rate: int = 16000
  balance: str = 'balanced'
  zipf_exponent: float = 1.0
  event_seconds: float = 0.4
  snr_db: tuple[float, float] = (-5.0, 10.0)
  loudness_db: tuple[float, float] = (-30.0, -1.0)
  test_fraction: float = 0.1
  seed: int = 0

  def __post_init__(self):
    problems = []
    if self.num_videos < 1:
      problems.append(f'num_videos={self.num_videos} must be positive')
    if not 2 <= self.num_classes <= len(SHAPES) * len(PATHS):
      problems.append(f'num_classes={self.num_classes} must be 2 to {len(SHAPES) * len(PATHS)} (the '
                      'distinct shape-and-path pairs)')
    if self.size < 16 or self.size % 2:
      problems.append(f'size={self.size} must be even and at least 16')
    if self.fps <= 0 or self.fps * self.duration < 0.5:
      problems.append(f'fps={self.fps} and duration={self.duration} must give at least one frame')
    if self.sample_rate < 8000:
      problems.append(f'sample_rate={self.sample_rate} is below 8000 Hz, too low for the pitches')
    if self.balance not in ('balanced', 'zipf') or self.zipf_exponent < 0:
      problems.append(f"balance={self.balance!r} must be 'balanced' or 'zipf' and zipf_exponent="
                      f'{self.zipf_exponent} non-negative')
    if not 0 < self.event_seconds < self.duration:
      problems.append(f'event_seconds={self.event_seconds} must lie in (0, duration={self.duration})')
    for name in ('snr_db', 'loudness_db'):
      low, high = getattr(self, name)
      if low > high or (name == 'loudness_db' and high > 0):
        problems.append(f'{name}={getattr(self, name)} must be a (low, high) pair'
                        + (' at most 0 dB' if name == 'loudness_db' else ''))
    if not 0 <= self.test_fraction < 1:
      problems.append(f'test_fraction={self.test_fraction} must be in [0, 1)')
    if problems:
      raise ValueError('NuisanceSpec: ' + '; '.join(problems))

  flow_friendly = False  # For `_draw`: plain objects.


@dataclasses.dataclass(frozen=True)
class NuisanceAttributes:
  """What names class c: the object's shape and path, the event's pitch (Hz) and timbre."""
  shape: str
  path: str
  pitch: float
  timbre: str


def nuisance_attributes(c: int, num_classes: int) -> NuisanceAttributes:
  """Class c's object and sound. Shape and path cycle with coprime periods (5, 4), so the first 20
  classes are distinct pairs; pitches are evenly spaced on a log scale over 3.5 octaves from 200 Hz
  and the timbre cycles with period 5, so neighbouring pitches also differ in timbre."""
  pitch = _EVENT_LOWEST_PITCH * 2.0 ** (_EVENT_OCTAVES * c / num_classes)
  return NuisanceAttributes(shape=SHAPES[c % len(SHAPES)], path=PATHS[c % len(PATHS)], pitch=pitch,
                            timbre=list(TIMBRES)[c % len(TIMBRES)])


def nuisance_class_name(c: int, num_classes: int) -> str:
  """Folder name of class c, e.g. 'c03_ring_orbit'."""
  look = nuisance_attributes(c, num_classes)
  return f'c{c:0{max(2, len(str(num_classes - 1)))}d}_{look.shape}_{look.path}'


def render_nuisance_clip(spec: NuisanceSpec, index: int) -> Clip:
  """Clip `index` of avnuisance; picture and sound from separate streams of `(seed, index)`."""
  label = class_of(index, spec)
  frames, _, look = render_nuisance_video(spec, label, np.random.default_rng([spec.seed, 2, index]))
  waveform, _, sound = render_nuisance_audio(spec, label,
                                             np.random.default_rng([spec.seed, 3, index]))
  return Clip(frames, waveform, label, {'class': label, **look, **sound})


def render_nuisance_video(spec: NuisanceSpec, label: int, rng: np.random.Generator
                          ) -> tuple[np.ndarray, np.ndarray, dict[str, int | str]]:
  """Frames `[T, H, W, 3]` uint8, the object's coverage `[T, H, W]` and the binned visual nuisances.

  A saturated background of random hue and brightness, flat or textured, fills the frame; the
  class's object, of a random colour, brighter (in HSV value) than the background where that is dark
  and darker where it is bright, so it stands out in brightness as well as in colour, moves along the
  class's path from a random start in a random direction.
  """
  size = spec.size
  t = np.arange(spec.num_frames, dtype=np.float32) / np.float32(spec.fps)
  hue, level = rng.random(), rng.uniform(0.2, 0.8)
  texture = TEXTURES[rng.integers(len(TEXTURES))]
  value = np.clip(level + 0.15 * _texture(rng, texture, size), 0.0, 1.0)
  background = np.asarray(_hsv_to_rgb(hue, rng.uniform(0.5, 0.9), 1.0), np.float32) * value[..., None]
  frames = np.broadcast_to(background, (len(t), size, size, 3)).copy()
  object_hue = rng.random()
  contrast = rng.uniform(0.3, 0.45)
  colour = _hsv_to_rgb(object_hue, rng.uniform(0.5, 1.0),
                       level + contrast if level < 0.5 else level - contrast)
  look = nuisance_attributes(label, spec.num_classes)
  coverage = _draw(frames, spec, rng, shape=look.shape, radius=_NUISANCE_RADIUS * size,
                   colour=colour, path=look.path, speed=_NUISANCE_SPEED, t=t)
  factors: dict[str, int | str] = {
      'background_hue': _bin(hue, 0.0, 1.0, 6), 'background_level': _bin(level, 0.2, 0.8, 3),
      'texture': texture, 'object_hue': _bin(object_hue, 0.0, 1.0, 6)}
  return (frames * 255.0 + 0.5).astype(np.uint8), coverage, factors


def _texture(rng: np.random.Generator, texture: str, size: int) -> np.ndarray:
  """A `[size, size]` pattern in [-1, 1]: flat, sinusoidal stripes or a checkerboard of random angle
  and period (6 to 16 px), or smooth blobs."""
  if texture == 'flat':
    return np.zeros((size, size), np.float32)
  if texture == 'blobs':
    return 2.0 * _smooth_noise(rng, size, 5, 1)[..., 0] - 1.0
  angle, period = rng.uniform(0, np.pi), rng.uniform(6.0, 16.0)
  y, x = np.mgrid[:size, :size].astype(np.float32)
  u = (np.cos(angle) * x + np.sin(angle) * y) * (2 * np.pi / period)
  if texture == 'stripes':
    return np.sin(u).astype(np.float32)
  v = (np.cos(angle) * y - np.sin(angle) * x) * (2 * np.pi / period)
  return np.sign(np.sin(u) * np.sin(v)).astype(np.float32)


def render_nuisance_audio(spec: NuisanceSpec, label: int, rng: np.random.Generator
                          ) -> tuple[np.ndarray, tuple[int, int], dict[str, int | str]]:
  """Waveform `[S]` float32, the event's span in samples and the binned audio nuisances.

  The class's tone burst (`event_seconds`, 20 ms raised-cosine ramps) starts at a uniform onset in
  noise of a random colour (`NOISE_COLOURS`) at a uniform SNR over the event's span; the mix is
  scaled to a peak level uniform in `loudness_db`. Harmonics at or above 0.45 * sample_rate are left
  out.
  """
  sound = nuisance_attributes(label, spec.num_classes)
  rate, n = spec.sample_rate, spec.num_samples
  length = round(spec.event_seconds * rate)
  onset = int(rng.integers(0, n - length + 1))
  t = np.arange(length) / rate
  amplitudes = np.asarray(TIMBRES[sound.timbre])
  harmonics = np.arange(1, len(amplitudes) + 1)
  keep = (amplitudes > 0) & (harmonics * sound.pitch < 0.45 * rate)
  phase = 2 * np.pi * (sound.pitch * t + rng.random())
  event = amplitudes[keep] @ np.sin(harmonics[keep, None] * phase[None, :])
  ramp = np.clip(np.minimum(t, t[-1] - t) / _RAMP_SECONDS, 0.0, 1.0)
  event *= 0.5 - 0.5 * np.cos(np.pi * ramp)
  colour = list(NOISE_COLOURS)[rng.integers(len(NOISE_COLOURS))]
  noise = _coloured_noise(rng, n, rate, NOISE_COLOURS[colour])
  snr = rng.uniform(*spec.snr_db)
  mix = noise * math.sqrt(np.mean(event ** 2) / 10 ** (snr / 10))
  mix[onset:onset + length] += event
  loudness = rng.uniform(*spec.loudness_db)
  waveform = (mix * (10 ** (loudness / 20) / np.max(np.abs(mix)))).astype(np.float32)
  factors: dict[str, int | str] = {
      'noise_colour': colour, 'snr': _bin(snr, *spec.snr_db, 3),
      'loudness': _bin(loudness, *spec.loudness_db, 3), 'onset': _bin(onset, 0, n - length + 1, 4)}
  return waveform, (onset, onset + length), factors


def _coloured_noise(rng: np.random.Generator, n: int, rate: int, exponent: float) -> np.ndarray:
  """`n` samples of unit-power Gaussian noise whose power spectrum goes as frequency^exponent (flat
  below 50 Hz, so brown noise has no unbounded drift)."""
  spectrum = np.fft.rfft(rng.standard_normal(n))
  frequency = np.maximum(np.fft.rfftfreq(n, 1 / rate), 50.0)
  noise = np.fft.irfft(spectrum * frequency ** (exponent / 2), n)
  return noise / np.sqrt(np.mean(noise ** 2))
