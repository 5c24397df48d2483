"""The tf.data input pipeline over record shards (`records.py`), registered as dataset `records`.

Phases, as in DeepMind's dmvr: list this host's shards → read → (shuffle) →
parse → sample a clip window → decode only the sampled frames → augment → spectrogram → batch → numpy.

Choices that matter for audio-visual learning and for exact runs:

- **One window for every modality.** The clip's start frame fixes its start time t; frames, flow and
  the audio window (starting at t, SeLaVi's choice, or centred on the clip) all come from it, and one
  draw of resize, crop and flip is applied to frames and flow alike (flip negates flow's u).
- **Multi-temporal-resolution views** (GOCA §4, SwAV's multi-crop in time): with `multi_crop`, a
  training example holds several clips of each length, every clip with its own start and its own
  augmentation draw, frames and flow of a clip sharing both. Group g's clips of `(count, frames)` are
  `video`/`flow` `[count, frames, H, W, C]` for g = 0 (the clips codes are computed on) and
  `video_g`/`flow_g` after it.
- **Flow is fed as GOCA's release feeds it**: the stored ±20 px quantisation read as an image in [0, 1]
  and normalised with the frames' `mean`/`std` (GOCA's loader), so flow and frames share one scale.
- **Normalised on the host, or on the device** (`normalize_on_device`): by default every video and
  flow entry leaves the pipeline as its float32 network input; with the key it leaves as uint8 (frames
  as pixels, flow as levels of the storage quantisation, both rounded to the nearest level after
  augmentation) and `avssl/data/on_device.py` normalises it inside the jitted step, so the host sends
  a quarter of the bytes.
- **Hosts read disjoint shards**: shard i goes to process i mod process_count.
- **Every example carries its dataset index** (0..N−1 within the split): the shard's offset in the
  manifest plus the position in the shard, the same on every run and host, so a method can look up
  its self-label.
- **Records are checked against their manifest when a split is opened.** A missing shard or one
  whose size differs from the manifest's (a partial copy, a sync cut at a record boundary) stops the
  run naming the shard and both record counts, before anything is read: one stat per shard, as
  reading VGG-Sound's shards in full would take as long as an epoch. Manifests from before byte sizes
  were recorded are checked by walking each shard's record headers instead (exact, a seek per record).
- **Ordered passes see every video once** (labels, features, evaluation, label updates): each
  process's stream is padded with masked rows to the same number of full batches, which every process
  computes from the manifest, so no video is dropped and the collectives stay in step.
- **Ordered passes read `pass_readers` shards at once, in an order that does not depend on how
  many.** SeLaVi labels the whole dataset ~200 times in a run, and reading one shard after another
  leaves the host waiting on the storage (a bucket's latency, one file's bandwidth). The pass
  interleaves `PASS_CYCLE` shards record by record, whatever `pass_readers` is, and that many threads
  read them: rows are keyed by their dataset index, but the label updates' Sinkhorn sums and k-means
  seeding see them in pass order, so the same run with more readers gives the same bits.
- **Evaluation views are fixed**: one clip is the video's centre clip, as SeLaVi's released cluster
  export takes it; several are spread uniformly from its start to its end (`_eval_starts`), each
  resized to `eval_resize` and centre-cropped (or three crops).
- **Batches mix the classes** because `make_records` writes every shard as a random sample of its
  split (a hash of the ids orders it); a training split whose shards look sorted by class (records
  of an earlier make_records) is warned about once (`class_mix`).
- **Deterministic given the seed, and resumable exactly.** An epoch's shard order and shuffle are
  seeded by (seed, epoch); each example's augmentation is a stateless function of (seed, its position
  in this host's stream). Resuming at step s starts at epoch ⌊s·b / n⌋ and skips the rest of that epoch
  before anything is decoded, so the batches are those an uninterrupted run would see.
- **Resampled epochs keep their length** (XDC's cluster-balanced sampling, `sampling.py`): each
  record is repeated or dropped as it is read, by draws that are a function of (weights, seed, epoch)
  and add up to this host's n, so the arithmetic of resuming is unchanged.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import struct
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epy
with epy.lazy_imports():  # The configs import this module; TensorFlow loads when first used.
  import tensorflow as tf

from avssl import errors, files
from avssl.data import audio, augment, class_mix, datasets, flow as flow_lib, records, sampling

MANIFEST = 'manifest.json'

#: Shards an ordered pass interleaves, record by record: it alone fixes the pass's row order.
PASS_CYCLE = 16
#: Of those, how many are read at once by default (`config.data.pass_readers`, 1..PASS_CYCLE).
PASS_READERS = 8


def default_config(**overrides) -> ml_collections.ConfigDict:
  """SeLaVi's input settings (the release's, `docs/papers_and_releases.md`): 30 frames at 30 fps, short
  side U{128..160}, crop 112, flip, 1 s of audio from the clip start as a 257 × 99 `logfbank`, volume
  ×U(0.9, 1.1); the evaluation view of its cluster export, the centre clip (`eval_clips=1`) with its
  audio, resized to a short side of 112 (`eval_resize`, the crop's size) and centre-cropped.

  Resizing is plain bilinear, as SeLaVi's release's; `antialias` filters downscaling as PIL does
  (GOCA). `color_jitter` is empty (off, as in SeLaVi's release) or the (brightness, contrast,
  saturation, hue) strengths, applied with probability `color_jitter_prob`; GOCA sets (0.4, 0.4, 0.2,
  0.1) and 0.8. `multi_crop` is empty (one clip of `num_frames` per example) or `((count, frames),
  ...)` training clips per example (GOCA: ((2, 32), (4, 16))); evaluation views are unaffected.
  `pass_readers` shards are read at once in ordered passes (labels, features, evaluation), without
  changing what they give (see the module docstring). `normalize_on_device` sends video and flow as
  uint8 and leaves their normalisation to the jitted functions that read them
  (`avssl/data/on_device.py`; the `:accel` configs set it): off, so that a run's inputs stay the
  float32 ones of every run before it.

  Two switches for data whose nuisances are stationary, off in every paper's config
  (`docs/nuisance.md`): `subtract_background` ('mean' or 'median') subtracts each clip's temporal mean
  or median frame after the augmentations (`augment.subtract_background`), in training and evaluation
  views alike; `audio_band_norm` ('mean' or 'mean_std') normalises each band of every spectrogram over
  time (`audio.normalize_bands`).
  """
  config = ml_collections.ConfigDict(dict(
      name='records', dir='', train_split='train', eval_split='test',
      num_frames=30, frame_stride=1, min_resize=128, max_resize=160, crop_size=112,
      eval_resize=112, eval_clips=1, eval_crops=1, flip=True, antialias=False,
      color_jitter=(), color_jitter_prob=0.8, grayscale_prob=0.0, blur_prob=0.0,
      subtract_background='', mean=0.45, std=0.225, multi_crop=(),
      audio_seconds=1.0, audio_align='start', volume_jitter=0.1, audio_band_norm='',
      audio=audio.default_config('logfbank'),
      with_flow=False, shuffle_buffer=256, cycle_length=8, pass_readers=PASS_READERS, num_threads=0,
      with_video=True, with_audio=True, normalize_on_device=False))
  for key, value in overrides.items():
    config[key] = value  # Replaces, not merges: another audio front end has other fields.
  return config


_REMAKE = ('copy the records folder again, or re-run the make_records command that wrote it '
           '(it converts only what is missing)')


class DataError(errors.UserError, ValueError):
  """Records that do not match their manifest or cannot be read: the message names the file, since a
  run on them would silently skip videos or die in TensorFlow without saying where (`avssl.main`
  reports it in one line)."""


def read_manifest(directory: str) -> dict[str, Any]:
  """The manifest of a records folder; a missing, unreadable or unfinished one names its path."""
  path = files.join(files.local_or_url(directory), MANIFEST)
  if not files.exists(path):
    raise FileNotFoundError(f'{path} not found: config.data.dir must be a folder written by '
                            'python -m avssl.data_prep.make_records')
  try:
    with files.open(path) as f:
      manifest = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError.
    raise DataError(f'{path} is not a readable manifest ({e}); {_REMAKE}') from e
  if not isinstance(manifest, dict) or not isinstance(manifest.get('splits', {}), dict):
    raise DataError(f'{path} is not a make_records manifest (no splits); {_REMAKE}')
  if manifest.get('status') != 'complete':
    raise ValueError(f'{path}: the conversion did not finish; re-run the same make_records command')
  return manifest


def example_spec(config: ml_collections.ConfigDict,
                 sample_rate: int) -> dict[str, jax.ShapeDtypeStruct]:
  """One training example's shapes and dtypes (a batch of 1) as `RecordSource.train_batches` makes
  them from the data config `config` and the records' `sample_rate`, without reading or decoding
  anything (and without TensorFlow): clips of frames (and flow), or `multi_crop`'s groups of clips; the
  spectrogram of `audio_seconds`; the index and label. All a model's init needs (after
  `on_device.normalize`: video and flow are uint8 where `normalize_on_device` sends them so)."""
  crop = (config.crop_size, config.crop_size)
  pixels = np.uint8 if config.get('normalize_on_device') else np.float32
  shapes: dict[str, tuple[tuple[int, ...], Any]] = {}
  if config.multi_crop:
    for g, (count, frames) in enumerate(config.multi_crop):
      suffix = f'_{g}' if g else ''
      shapes['video' + suffix] = ((count, frames, *crop, 3), pixels)
      if config.with_flow:
        shapes['flow' + suffix] = ((count, frames, *crop, 2), pixels)
  elif config.with_video:
    shapes['video'] = ((config.num_frames, *crop, 3), pixels)
    if config.with_flow:
      shapes['flow'] = ((config.num_frames, *crop, 2), pixels)
  if config.with_audio and not config.multi_crop:
    samples = int(round(config.audio_seconds * sample_rate))
    shapes['audio'] = (audio.spectrogram_shape(samples, sample_rate, config.audio), np.float32)
  shapes['index'] = ((), np.int32)
  shapes['label'] = ((), np.int32)
  return {k: jax.ShapeDtypeStruct((1, *shape), dtype) for k, (shape, dtype) in shapes.items()}


class RecordSource(datasets.DataSource):
  """This process's batches of a records folder."""

  def __init__(self, config: ml_collections.ConfigDict, *, batch_size: int, process_index: int,
               process_count: int, seed: int):
    if batch_size % process_count:
      raise ValueError(f'batch_size={batch_size} does not divide over {process_count} processes')
    self.config, self.seed = config, seed
    self.directory = files.local_or_url(config.dir)
    self.manifest = read_manifest(self.directory)
    self.process_index, self.process_count = process_index, process_count
    self.batch_size, self.local_batch = batch_size, batch_size // process_count
    # A run.json of a run from before the key existed has none.
    self.pass_readers = config.get('pass_readers', PASS_READERS)
    if not 1 <= self.pass_readers <= PASS_CYCLE:
      raise ValueError(f'config.data.pass_readers={self.pass_readers}: use 1 to {PASS_CYCLE} (the '
                       'shards an ordered pass interleaves)')
    self.host_shards(config.train_split)  # Fails early when there are fewer shards than hosts.
    self.num_train = self._split(config.train_split)['count']
    self.num_eval = (self._split(config.eval_split)['count']
                     if config.eval_split in self.manifest['splits'] else 0)
    for split in dict.fromkeys((config.train_split, config.eval_split)):
      if split in self.manifest['splits']:
        check_shards(self.directory, self._split(split)['shards'])
    if self.num_train < batch_size:
      raise ValueError(f'{self.directory}: split {config.train_split!r} has {self.num_train} videos, '
                       f'fewer than one batch (batch_size={batch_size}); lower --config.batch_size')
    self.steps_per_epoch = self.num_train // batch_size
    self.classes = self.manifest.get('classes', [])

  def example_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
    return example_spec(self.config, int(self.manifest['settings']['sample_rate']))

  def _split(self, split: str) -> dict[str, Any]:
    splits = self.manifest['splits']
    if split not in splits:
      raise ValueError(f'{self.directory} has no split {split!r} (it has {sorted(splits)}); '
                       'set config.data.train_split / eval_split')
    return splits[split]

  def host_shards(self, split: str, process_index: int | None = None) -> list[dict[str, Any]]:
    """The shards process `process_index` reads: every process_count-th non-empty one."""
    shards = [s for s in self._split(split)['shards'] if s['count']]
    if len(shards) < self.process_count:
      raise ValueError(f'{self.directory}: split {split!r} has {len(shards)} non-empty shards for '
                       f'{self.process_count} processes; re-run make_records with a smaller '
                       '--examples_per_shard')
    index = self.process_index if process_index is None else process_index
    return shards[index::self.process_count]

  def _files(self, shards: list[dict[str, Any]]) -> tuple[list[str], list[int]]:
    return [files.join(self.directory, s['file']) for s in shards], [s['offset'] for s in shards]

  def video_table(self, split: str | None = None) -> list[dict[str, str]]:
    """Rows of `{split}.csv` (index, video_id, source, label), in dataset-index order."""
    import csv  # pylint: disable=g-import-not-at-top
    with files.open(files.join(self.directory, f'{split or self.config.train_split}.csv')) as f:
      return list(csv.DictReader(f))

  # Training stream.

  def train_batches(self, start_step: int,
                    weights: np.ndarray | None = None) -> Iterator[datasets.Batch]:
    """Each epoch reads this host's shards in a seeded order, `cycle_length` at a time record by
    record, through a `shuffle_buffer`: a batch holds the classes of the shards it comes from. Shards
    that `make_records` cut are random samples of the split, so with the defaults (8 shards, 256
    records) a batch holds as many classes as a random draw of the split (`benchmarks/class_mix.py`);
    shards written in class order by an earlier make_records are warned about (`class_mix`).

    With `weights`, each record is repeated (or dropped) as the epoch's `sampling.draws` say as its
    shard is read, before the interleave and the shuffle buffer, and only the kept ones are decoded.
    A record's copies enter the buffer `cycle_length` records apart and leave it spread over about
    `shuffle_buffer` positions, each with its own clip window and augmentation (a copy's seeds come
    from its position); copies of one clip can therefore share a batch, where DeepCluster's sampler
    spreads them over the epoch. `benchmarks/balanced_sampling.py` measures it: 20,000 clips, k = 256
    with log-normal cluster sizes (σ = 1, 4-1,098 clips), batch 256: 49 % of an epoch's draws meet
    another copy of their clip in their batch (5.5 % with the epoch shuffled as a whole), 20 % with
    `shuffle_buffer=2048`; for σ = 0.5, 22 % (1 %) and 5 %."""
    split = self.config.train_split
    class_mix.warn_if_class_sorted(self.directory, split, tuple(
        (s['offset'], s['count']) for s in self._split(split)['shards']))
    shards = self.host_shards(split)
    local_count = sum(s['count'] for s in shards)
    skip = start_step * self.local_batch
    first_epoch, skip = divmod(skip, local_count)
    files, offsets = self._files(shards)
    seed = self.seed
    table: Callable[[np.ndarray], np.ndarray] | None = None
    if weights is not None:
      datasets.check_weights(weights, self.num_train)
      rows = np.concatenate([np.arange(s['offset'], s['offset'] + s['count']) for s in shards])
      weights = np.asarray(weights, np.float64)
      table = lambda e: sampling.draw_table(weights, rows, seed, int(e))

    def epoch(e):
      order = tf.random.experimental.stateless_shuffle(
          tf.range(len(files)), seed=tf.stack([tf.cast(seed, tf.int64), e]))
      draws = None
      if table is not None:  # Exactly `local_count` records in all: the epoch keeps its length.
        draws = tf.ensure_shape(tf.numpy_function(table, [e], tf.int64), [self.num_train])
      ds = _read(tf.gather(files, order), tf.gather(offsets, order), self.config.cycle_length,
                 tf.data.AUTOTUNE, draws)
      ds = ds.shuffle(self.config.shuffle_buffer, seed=_mix(seed, e))
      return ds.enumerate(start=e * local_count)

    ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch).skip(skip)
    ds = ds.map(lambda position, item: self._train_example(item, position),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    yield from _batches(ds, self.local_batch, self.config.num_threads, files)

  def _train_example(self, item: tuple[tf.Tensor, tf.Tensor], position: tf.Tensor,
                     seed: int | None = None) -> dict[str, tf.Tensor]:
    index, serialized = item
    seeds = augment.split_seed(
        tf.stack([tf.cast(self.seed if seed is None else seed, tf.int64), position]), 4)
    features = records.parse(serialized, with_flow=self.config.with_flow)
    if self.config.multi_crop:
      example = self._multi_crop(features, seeds[3])
    else:
      start = _random_start(seeds[0], self._timeline(features), self._span(features))
      example = self._clip(features, start, train=True, seed=seeds[1])
      if self.config.with_audio:
        example['audio'] = self._audio(features, start, seeds[2])
    example.update(index=tf.cast(index, tf.int32),
                   label=tf.cast(features['label/index'], tf.int32))
    return example

  def _multi_crop(self, features: dict[str, tf.Tensor], seed: tf.Tensor) -> dict[str, tf.Tensor]:
    """`multi_crop`'s groups of clips: each clip its own start and augmentation draw."""
    if self.config.with_audio or not self.config.with_video:
      raise ValueError('config.data.multi_crop takes clips of frames (and flow); set '
                       'config.data.with_audio=False and with_video=True')
    config = self.config
    example = {}
    for g, (count, num_frames) in enumerate(config.multi_crop):
      seeds = augment.split_seed(augment.split_seed(seed, len(config.multi_crop))[g], 2 * count)

      def clip(pair, num_frames=num_frames):
        start = _random_start(pair[0], self._timeline(features), self._span(features, num_frames))
        return self._clip(features, start, train=True, seed=pair[1], num_frames=num_frames)

      size = (num_frames, config.crop_size, config.crop_size)
      dtype = tf.uint8 if config.get('normalize_on_device') else tf.float32
      spec = {'video': tf.TensorSpec((*size, 3), dtype)}
      if config.with_flow:
        spec['flow'] = tf.TensorSpec((*size, 2), dtype)
      # One traced clip per group, mapped over its clips: unrolling them multiplies the graph.
      clips = tf.map_fn(clip, tf.reshape(seeds, [count, 2, -1]), fn_output_signature=spec)
      example.update({k + (f'_{g}' if g else ''): v for k, v in clips.items()})
    return example

  # Ordered passes.

  def dataset_batches(self, augment: bool = False, pass_seed: int = 0) -> datasets.PassBatches:
    """Every training video once, masked padding to equal batch counts on all hosts.

    With `augment`, clips are sampled and augmented as in training (SeLaVi's label updates), seeded by
    `pass_seed` and each video's index; without, as in evaluation.
    """
    split = self.config.train_split
    if augment:
      seed = _mix(self.seed, pass_seed + 1)
      fn = lambda index, s: self._train_example((index, s), tf.cast(index, tf.int64), seed)
    else:
      fn = self._eval_example
    return self._ordered(split, fn)

  def eval_batches(self) -> datasets.PassBatches:
    return self._ordered(self.config.eval_split, self._eval_example)

  def _ordered(self, split: str, fn) -> datasets.PassBatches:
    counts = [sum(s['count'] for s in self.host_shards(split, p)) for p in range(self.process_count)]
    return datasets.PassBatches(self._ordered_batches(split, fn, counts), sum(counts))

  def _ordered_batches(self, split: str, fn, counts: list[int]) -> Iterator[datasets.Batch]:
    """Every video of `split` once, then masked copies of the first up to `num_batches` full batches,
    the same count on every process (`counts`: each process's videos, from the manifest, checked at
    open)."""
    num_batches = max(math.ceil(c / self.local_batch) for c in counts)
    files, offsets = self._files(self.host_shards(split))
    ds = _read(tf.constant(files), tf.constant(offsets, tf.int64), PASS_CYCLE, self.pass_readers)
    ds = ds.map(lambda index, s: {**fn(index, s), 'mask': tf.constant(1.0)},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    padding = ds.take(1).map(lambda e: {**e, 'index': tf.constant(-1), 'label': tf.constant(-1),
                                        'mask': tf.constant(0.0)})
    ds = ds.concatenate(padding.cache().repeat()).take(num_batches * self.local_batch)
    seen = 0
    for batch in _batches(ds, self.local_batch, self.config.num_threads, files):
      seen += int(batch['mask'].sum())
      yield batch
    if seen != counts[self.process_index]:  # The shards changed since they were checked.
      raise DataError(f'{self.directory}: read {seen} videos of split {split!r} from {files}, the '
                      f'manifest says {counts[self.process_index]}; {_REMAKE}')

  def _eval_example(self, index: tf.Tensor, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Deterministic views: `eval_clips` windows (`_eval_starts`: the centre one, or several spread
    over the whole video) × `eval_crops` crops (1 or 3) of the frames resized to `eval_resize`."""
    features = records.parse(serialized, with_flow=self.config.with_flow)
    clips = self.config.eval_clips
    starts = _eval_starts(self._timeline(features), self._span(features), clips)
    views = [self._clip(features, starts[i], train=False) for i in range(clips)]
    example = {k: _views([v[k] for v in views]) for k in views[0]}
    if self.config.with_audio:
      spectra = [self._audio(features, starts[i], None) for i in range(clips)]
      example['audio'] = _views([tf.stack([s] * self.config.eval_crops) for s in spectra])
    example.update(index=tf.cast(index, tf.int32), label=tf.cast(features['label/index'], tf.int32))
    return example

  # Clip sampling.

  def _span(self, features: dict[str, tf.Tensor], num_frames: int | None = None) -> tf.Tensor:
    """A clip's length in ticks of the frame clock: its frames (`num_frames`, default the config's),
    or, for audio-only input, its audio window (so the window's start is drawn where the whole window
    fits)."""
    if self.config.with_video:
      frames = num_frames or self.config.num_frames
      return tf.constant((frames - 1) * self.config.frame_stride + 1)
    return tf.cast(tf.math.ceil(self.config.audio_seconds * features['fps']), tf.int32)

  def _timeline(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
    """Positions a clip can start at, in ticks of the frame clock (`fps`): the frames, or for audio-only
    records (no frames, e.g. ESC-50) the ticks the waveform spans, so their clips spread over the
    whole sound instead of all starting at 0."""
    frames = tf.shape(features['frames'])[0]
    rate = float(self.manifest['settings']['sample_rate'])
    seconds = tf.cast(tf.shape(features['waveform'])[0], tf.float32) / rate
    ticks = tf.cast(tf.math.floor(seconds * features['fps']), tf.int32)
    return tf.where(frames > 0, frames, ticks)

  def _clip(self, features: dict[str, tf.Tensor], start: tf.Tensor, *, train: bool,
            seed: tf.Tensor | None = None, num_frames: int | None = None) -> dict[str, tf.Tensor]:
    """Frames (and flow) of the window of `num_frames` (default the config's) starting at `start`:
    decoded, augmented or cropped, then normalised, or with `normalize_on_device` rounded back to
    uint8 pixels and flow levels (`augment.to_uint8`, `flow.quantize_tf`: exact where only cropping and
    flipping moved them, within half a level where resizing or colour changes made fractions; flow
    that up-scaling stretched beyond the ±20 px of the storage saturates there)."""
    config = self.config
    out: dict[str, tf.Tensor] = {}
    if not config.with_video:
      return out
    total = tf.shape(features['frames'])[0]
    indices = tf.minimum(start + tf.range(num_frames or config.num_frames) * config.frame_stride,
                         total - 1)
    frames = _decode(tf.gather(features['frames'], indices), channels=3)
    flow = None
    if config.with_flow:
      flow_indices = tf.minimum(indices, tf.shape(features['flow'])[0] - 1)
      flow = flow_lib.dequantize_tf(_decode(tf.gather(features['flow'], flow_indices), channels=2))
    if train:
      frames, flow = _augment_train(frames, flow, config, seed)
    else:
      frames, flow = _eval_crops(frames, flow, config)
    frames = augment.subtract_background(frames, config.get('subtract_background', ''))
    if config.get('normalize_on_device'):
      out['video'] = augment.to_uint8(frames)
      if flow is not None:
        out['flow'] = flow_lib.quantize_tf(flow)
      return out
    out['video'] = augment.normalize(frames, config.mean, config.std)
    if flow is not None:
      out['flow'] = flow_lib.normalize_tf(flow, config.mean, config.std)
    return out

  def _audio(self, features: dict[str, tf.Tensor], start: tf.Tensor,
             seed: tf.Tensor | None) -> tf.Tensor:
    """The spectrogram of the audio window that goes with the clip starting at frame `start`."""
    config = self.config
    rate = int(self.manifest['settings']['sample_rate'])
    length = int(round(config.audio_seconds * rate))
    waveform = features['waveform']
    clip_start = tf.cast(start, tf.float32) / features['fps']
    if config.audio_align == 'center':
      clip_start += (tf.cast(self._span(features), tf.float32) / features['fps']
                     - config.audio_seconds) / 2
    elif config.audio_align != 'start':
      raise ValueError(f"config.data.audio_align={config.audio_align!r}; use 'start' or 'center'")
    window = _audio_window(waveform, tf.cast(tf.round(clip_start * rate), tf.int32), length)
    if seed is not None and config.volume_jitter:
      window = augment.volume_jitter(window, seed,
                                     (1 - config.volume_jitter, 1 + config.volume_jitter))
    return audio.normalize_bands(audio.spectrogram(window, rate, config.audio),
                                 config.get('audio_band_norm', ''))


def _mix(seed: int | tf.Tensor, value) -> tf.Tensor:
  """One int64 seed from two (for ops that take a scalar seed)."""
  return tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(value, tf.int64)


def _read(files: tf.Tensor, offsets: tf.Tensor, cycle_length: int, readers: int,
          draws: tf.Tensor | None = None) -> tf.data.Dataset:
  """(dataset index, serialized record) of every record in `files`, interleaved record by record
  across `cycle_length` files at a time, `readers` of them read at once. The order depends on
  `cycle_length` alone (`deterministic`), never on `readers`. With `draws` (a count per dataset
  index), each record comes that many times in a row from its file (0: skipped)."""
  def one(file, offset):
    ds = tf.data.TFRecordDataset(file).enumerate(start=offset)
    if draws is None:
      return ds
    return ds.flat_map(lambda index, record: tf.data.Dataset.from_tensors((index, record)).repeat(
        draws[index]))

  pairs = tf.data.Dataset.from_tensor_slices((files, tf.cast(offsets, tf.int64)))
  if cycle_length == 1:
    return pairs.flat_map(one)
  return pairs.interleave(one, cycle_length=cycle_length, block_length=1,
                          num_parallel_calls=readers, deterministic=True)


def _eval_starts(total: tf.Tensor, span: tf.Tensor, clips: int) -> tf.Tensor:
  """`[clips]` start ticks of the evaluation windows of `span` ticks in a timeline of `total`. One
  window starts at ⌊(total − span) / 2⌋, the centre clip of SeLaVi's released cluster export
  (`docs/papers_and_releases.md`); several are spaced uniformly from the first possible start to the
  last, so they cover the whole video. Videos shorter than a window start at 0."""
  room = tf.maximum(total - span, 0)
  if clips == 1:
    return (room // 2)[None]
  return tf.cast(tf.round(tf.linspace(0.0, tf.cast(room, tf.float32), clips)), tf.int32)


def _random_start(seed: tf.Tensor, total: tf.Tensor, span: tf.Tensor) -> tf.Tensor:
  """Uniform start frame in [0, total − span] (0 for videos shorter than the clip)."""
  high = tf.maximum(total - span, 0) + 1
  return tf.random.stateless_uniform([], seed, 0, high, dtype=tf.int32)


def _decode(encoded: tf.Tensor, channels: int) -> tf.Tensor:
  """JPEG frames (3 channels) or flow PNGs (2: grey + alpha, which the PNG kernel only decodes as
  the file's own channel count, `channels=0`)."""
  if channels == 3:
    decode = lambda b: tf.io.decode_jpeg(b, channels=3)
  else:
    decode = lambda b: tf.ensure_shape(tf.io.decode_png(b, channels=0), [None, None, channels])
  return tf.map_fn(decode, encoded,
                   fn_output_signature=tf.TensorSpec([None, None, channels], tf.uint8))


def _audio_window(waveform: tf.Tensor, start: tf.Tensor, length: int) -> tf.Tensor:
  """`length` samples from `start`; moved back to end at the last sample when it would overrun (as the
  SeLaVi's release takes "the last 1 s"), zero-padded when the track is shorter than `length`."""
  total = tf.shape(waveform)[0]
  start = tf.maximum(tf.minimum(start, total - length), 0)
  window = waveform[start:start + length]
  window = tf.pad(window, [[0, length - tf.shape(window)[0]]])
  return tf.ensure_shape(window, [length])


def _augment_train(frames: tf.Tensor, flow: tf.Tensor | None, config: ml_collections.ConfigDict,
                   seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None]:
  """One draw of resize, crop and flip for frames and flow; colour changes on frames only."""
  seeds = augment.split_seed(seed, 6)
  size = augment.sample_short_side(seeds[0], config.min_resize, config.max_resize)
  frames = augment.resize_short_side(tf.cast(frames, tf.float32), size, config.antialias)
  shape = tf.shape(frames)
  window = augment.sample_crop(seeds[1], shape[1], shape[2], config.crop_size)
  frames = augment.crop(frames, window)
  flip = augment.sample_flip(seeds[2], 0.5 if config.flip else 0.0)
  frames = augment.flip(frames, flip)
  if flow is not None:
    flow = augment.resize_flow_short_side(flow, size, config.antialias)
    flow = augment.flip_flow(augment.crop(flow, window), flip)
  if config.color_jitter:
    brightness, contrast, saturation, hue = config.color_jitter
    frames = augment.color_jitter(frames, augment.sample_color_jitter(
        seeds[3], brightness, contrast, saturation, hue, p=config.color_jitter_prob))
  if config.grayscale_prob:
    frames = augment.grayscale(frames, augment.sample_grayscale(seeds[4], config.grayscale_prob))
  if config.blur_prob:
    frames = augment.gaussian_blur(frames, augment.sample_blur(seeds[5], config.blur_prob))
  return frames, flow


def _eval_crops(frames: tf.Tensor, flow: tf.Tensor | None,
                config: ml_collections.ConfigDict) -> tuple[tf.Tensor, tf.Tensor | None]:
  """Resize to `eval_resize`, then the centre crop or three crops along the long side."""
  frames = augment.resize_short_side(tf.cast(frames, tf.float32), config.eval_resize,
                                    config.antialias)
  if flow is not None:
    flow = augment.resize_flow_short_side(flow, config.eval_resize, config.antialias)
  if config.eval_crops == 1:
    crop = lambda x: augment.centre_crop(x, config.crop_size)[None]
  elif config.eval_crops == 3:
    crop = lambda x: augment.three_crops(x, config.crop_size)
  else:
    raise ValueError(f'config.data.eval_crops={config.eval_crops}; use 1 or 3')
  return crop(frames), (None if flow is None else crop(flow))


def _views(per_clip: list[tf.Tensor]) -> tf.Tensor:
  """`[crops, ...]` per clip → `[clips · crops, ...]`; a single view keeps the training shape."""
  views = tf.concat(per_clip, axis=0)
  return views[0] if views.shape[0] == 1 else views


def _batches(ds: tf.data.Dataset, local_batch: int, threads: int,
             paths: list[str]) -> Iterator[datasets.Batch]:
  """Batches as numpy; `threads` (0: one per core) bounds the pipeline's own thread pool. A damaged
  record of the shards `paths` is reported naming its shard (TensorFlow's message names none)."""
  ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = threads or os.cpu_count() or 1
  try:
    for batch in ds.with_options(options).as_numpy_iterator():
      yield {k: np.asarray(v) for k, v in batch.items()}
  except tf.errors.DataLossError as e:
    raise DataError(_damaged(paths, e.message)) from e


def _damaged(paths: list[str], message: str) -> str:
  """Which of `paths` TensorFlow's read error `message` is about: the first shard whose records do
  not end where the file does (a cut or a damaged length), else all of them (a damaged record)."""
  for path in paths:
    count, partial = count_records(path)
    if partial:
      return (f'{path}: damaged or cut after record {count} ({message}); {_REMAKE}')
  return f'a record of one of {paths} is damaged ({message}); {_REMAKE}'


def count_records(path: str) -> tuple[int, bool]:
  """(complete records in the TFRecord file `path`, whether bytes follow the last of them), from the
  record headers only: each record is a little-endian uint64 length, a uint32 CRC, the data and a
  uint32 CRC (tensorflow/core/lib/io/record_writer.cc), so a seek per record skips the data."""
  size = files.size(path)
  count = position = 0
  with files.open(path, 'rb') as f:
    while position + 12 <= size:
      f.seek(position)
      (length,) = struct.unpack('<Q', f.read(8))
      if position + 16 + length > size:
        break
      position += 16 + length
      count += 1
  return count, position != size


def check_shards(directory: str, shards: list[dict[str, Any]]) -> None:
  """Raises `DataError` naming the first missing shard, or the first whose size (or, for manifests
  without sizes, record count) differs from the manifest's, with both counts. Shards are checked in
  parallel: a stat is a round trip on a bucket."""
  with concurrent.futures.ThreadPoolExecutor(16) as pool:
    problems = list(pool.map(lambda shard: _shard_problem(directory, shard), shards))
  problem = next((p for p in problems if p), None)
  if problem:
    raise DataError(f'{problem}; {_REMAKE}')


def _shard_problem(directory: str, shard: dict[str, Any]) -> str | None:
  path = files.join(directory, shard['file'])
  if not files.exists(path):
    return f'{path} is missing (the manifest lists {shard["count"]} records in it)'
  size = files.size(path)
  if size == shard.get('bytes'):
    return None
  count, partial = count_records(path)
  if count == shard['count'] and not partial:
    if 'bytes' not in shard:
      return None
    return (f'{path} is {size} bytes, the manifest says {shard["bytes"]}, with the {count} records it '
            'lists: the shard was written again since')
  found = f'{count} records' + (' and part of another' if partial else '')
  return f'{path} holds {found}, the manifest says {shard["count"]} records'


@datasets.register('records')
def build(config: ml_collections.ConfigDict, *, batch_size: int, process_index: int,
          process_count: int, seed: int) -> datasets.DataSource:
  return RecordSource(config, batch_size=batch_size, process_index=process_index,
                      process_count=process_count, seed=seed)
