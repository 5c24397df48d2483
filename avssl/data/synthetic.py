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
_LOWEST_PITCH, _PITCH_OCTAVES = 180.0, 4.0


@dataclasses.dataclass(frozen=True)
class AvsynthSpec:
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

  @property
  def num_frames(self) -> int:
    return max(1, round(self.fps * self.duration))

  @property
  def num_samples(self) -> int:
    """Samples of sound: exactly the video's length, as `video_io.decode` returns it."""
    return round(self.num_frames / self.fps * self.sample_rate)


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
def labels(spec: AvsynthSpec) -> np.ndarray:
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


def class_of(index: int, spec: AvsynthSpec) -> int:
  """The class of clip `index`."""
  if not 0 <= index < spec.num_videos:
    raise IndexError(f'clip {index} is not in 0..{spec.num_videos - 1}')
  return int(labels(spec)[index])


@functools.lru_cache(maxsize=8)
def test_mask(spec: AvsynthSpec) -> np.ndarray:
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


def split_of(index: int, spec: AvsynthSpec) -> str:
  """'train' or 'test' for clip `index`."""
  class_of(index, spec)
  return 'test' if test_mask(spec)[index] else 'train'


# avsynth: rendering.


def render_clip(spec: AvsynthSpec, index: int) -> tuple[np.ndarray, np.ndarray, int]:
  """Clip `index`: frames `[T, H, W, 3]` uint8, waveform `[S]` float32 in [-1, 1], and its class.

  The picture and the sound draw their nuisances from separate streams of `(seed, index)`, so
  changing, say, the frame size leaves the sound of every clip as it was.
  """
  label = class_of(index, spec)
  frames, _ = render_video(spec, visual_pattern(label, spec.num_classes),
                           np.random.default_rng([spec.seed, 2, index]))
  waveform = render_audio(spec, sound_pattern(label, spec.num_classes),
                          np.random.default_rng([spec.seed, 3, index]))
  return frames, waveform, label


def render_video(spec: AvsynthSpec, pattern: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Frames `[T, H, W, 3]` uint8 of one clip of `pattern`, and the class object's coverage `[T, H, W]`.

  The class object is drawn over a smooth random background and a smaller distracting object with a
  random shape, colour, path and speed; its own position, direction and orientation are random.
  The coverage (1 inside, 0 outside, fractional on the anti-aliased edge) lets a test measure the
  pattern apart from the nuisances.
  """
  size = spec.size
  t = np.arange(spec.num_frames, dtype=np.float32) / np.float32(spec.fps)
  frames = np.broadcast_to(_background(rng, size), (len(t), size, size, 3)).copy()
  look = visual_attributes(pattern)
  _draw(frames, spec, rng, shape=SHAPES[rng.integers(len(SHAPES))], radius=0.1 * size,
        colour=_hsv_to_rgb(rng.random(), rng.uniform(0.2, 0.6), rng.uniform(0.5, 0.9)),
        path=PATHS[rng.integers(len(PATHS))], speed=rng.uniform(min(SPEEDS), max(SPEEDS)),
        t=t)
  coverage = _draw(frames, spec, rng, shape=look.shape, radius=0.16 * size, colour=look.colour,
                   path=look.path, speed=look.speed, t=t)
  return (frames * 255.0 + 0.5).astype(np.uint8), coverage


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


def _draw(frames: np.ndarray, spec: AvsynthSpec, rng: np.random.Generator, *, shape: str,
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


def _speed_scale(spec: AvsynthSpec) -> float:
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


def render_audio(spec: AvsynthSpec, pattern: int, rng: np.random.Generator) -> np.ndarray:
  """Waveform `[S]` float32 of one clip of `pattern`: the pattern's beating tone plus white noise.

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
  return (mix * (rng.uniform(0.3, 0.9) / np.max(np.abs(mix)))).astype(np.float32)
