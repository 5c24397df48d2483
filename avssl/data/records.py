"""The record format: one `tf.train.SequenceExample` per video, written and parsed only here.

Layout (after DeepMind's dmvr `SequenceExample` layout):

- context: `video_id` (stable across runs and hosts), `source` (the file it came from), `split`,
  `duration` (s), `fps`, `sample_rate`, `num_frames`, `num_samples`, `height`, `width`,
  `label/index` (-1 when unknown), `label/name`, `segment/start` and `segment/end` (an annotated event
  inside the video, AVE; -1 when none), and `WAVEFORM/feature/floats`, the mono waveform as float32.
- feature lists: `image/encoded`, one JPEG per frame at `fps`; `flow/encoded`, optional, one 2-channel
  PNG per pair of consecutive frames holding the uint8-quantised optical flow (u, v). PNG is lossless:
  the released GOCA pipeline stored flow as JPEG and then mp4, which damages it.

Frames stay JPEG-compressed in the records so that the input pipeline decodes only the frames a clip
samples. The waveform is stored whole; a clip takes its window on the video's clock.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from etils import epy
with epy.lazy_imports():  # The configs import this module; TensorFlow loads when first used.
  import tensorflow as tf

IMAGE_KEY = 'image/encoded'
FLOW_KEY = 'flow/encoded'
WAVEFORM_KEY = 'WAVEFORM/feature/floats'
NO_LABEL = -1


@dataclasses.dataclass
class VideoRecord:
  """Everything one record holds, as numpy.

  Attributes:
    video_id: stable unique id within the dataset.
    source: path of the media file it was decoded from.
    split: 'train', 'val' or 'test'.
    frames: `[T, H, W, 3]` uint8 RGB at `fps` (T may be 0 for audio-only data).
    waveform: `[S]` float32 mono at `sample_rate` (S may be 0 for silent data).
    fps, sample_rate, duration: the clocks and the length in seconds.
    label_index, label_name: the annotated class, or `NO_LABEL` and ''.
    segment: (start, end) seconds of an annotated event, or None.
    flow: `[T - 1, H, W, 2]` uint8 quantised flow, or None.
  """
  video_id: str
  source: str
  split: str
  frames: np.ndarray
  waveform: np.ndarray
  fps: float
  sample_rate: int
  duration: float
  label_index: int = NO_LABEL
  label_name: str = ''
  segment: tuple[float, float] | None = None
  flow: np.ndarray | None = None


def _bytes(values: list[bytes]) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values: list[int]) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _floats(values) -> tf.train.Feature:
  return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def encode_frames(frames: np.ndarray, quality: int) -> list[bytes]:
  return [tf.io.encode_jpeg(f, quality=quality).numpy() for f in frames]


def encode_flow(flow: np.ndarray) -> list[bytes]:
  return [tf.io.encode_png(f).numpy() for f in flow]


def serialize(record: VideoRecord, *, jpeg_quality: int = 90) -> bytes:
  """The record as a serialized `SequenceExample`, its features in key order (protobuf's default
  map order differs from process to process, and so would the bytes of the same record)."""
  frames = np.asarray(record.frames, np.uint8)
  height, width = frames.shape[1:3] if frames.size else (0, 0)
  start, end = record.segment or (-1.0, -1.0)
  context = {
      'video_id': _bytes([record.video_id.encode()]),
      'source': _bytes([record.source.encode()]),
      'split': _bytes([record.split.encode()]),
      'duration': _floats([record.duration]),
      'fps': _floats([record.fps]),
      'sample_rate': _ints([record.sample_rate]),
      'num_frames': _ints([len(frames)]),
      'num_samples': _ints([len(record.waveform)]),
      'height': _ints([height]),
      'width': _ints([width]),
      'label/index': _ints([record.label_index]),
      'label/name': _bytes([record.label_name.encode()]),
      'segment/start': _floats([start]),
      'segment/end': _floats([end]),
      WAVEFORM_KEY: _floats(np.asarray(record.waveform, np.float32)),
  }
  lists = {IMAGE_KEY: tf.train.FeatureList(
      feature=[_bytes([b]) for b in encode_frames(frames, jpeg_quality)])}
  if record.flow is not None:
    lists[FLOW_KEY] = tf.train.FeatureList(feature=[_bytes([b]) for b in encode_flow(record.flow)])
  example = tf.train.SequenceExample(context=tf.train.Features(feature=context),
                                     feature_lists=tf.train.FeatureLists(feature_list=lists))
  return example.SerializeToString(deterministic=True)


def _context_features() -> dict[str, Any]:
  """The context fields' parsing spec (built on use: importing this module needs no TensorFlow)."""
  return {
      'video_id': tf.io.FixedLenFeature([], tf.string),
      'source': tf.io.FixedLenFeature([], tf.string),
      'split': tf.io.FixedLenFeature([], tf.string),
      'duration': tf.io.FixedLenFeature([], tf.float32),
      'fps': tf.io.FixedLenFeature([], tf.float32),
      'sample_rate': tf.io.FixedLenFeature([], tf.int64),
      'num_frames': tf.io.FixedLenFeature([], tf.int64),
      'num_samples': tf.io.FixedLenFeature([], tf.int64),
      'height': tf.io.FixedLenFeature([], tf.int64),
      'width': tf.io.FixedLenFeature([], tf.int64),
      'label/index': tf.io.FixedLenFeature([], tf.int64, default_value=NO_LABEL),
      'label/name': tf.io.FixedLenFeature([], tf.string, default_value=''),
      'segment/start': tf.io.FixedLenFeature([], tf.float32, default_value=-1.0),
      'segment/end': tf.io.FixedLenFeature([], tf.float32, default_value=-1.0),
      WAVEFORM_KEY: tf.io.VarLenFeature(tf.float32),
  }


def parse(serialized: tf.Tensor, *, with_flow: bool = False) -> dict[str, tf.Tensor]:
  """A serialized record → tensors: context fields by name, `frames` and `flow` as encoded strings
  (`[T]` and `[T - 1]`, decoded later and only where sampled), `waveform` as `[S]` float32."""
  sequence = {IMAGE_KEY: tf.io.FixedLenSequenceFeature([], tf.string)}
  if with_flow:
    sequence[FLOW_KEY] = tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)
  context, lists = tf.io.parse_single_sequence_example(serialized, _context_features(), sequence)
  out = {k: v for k, v in context.items() if k != WAVEFORM_KEY}
  out['waveform'] = tf.sparse.to_dense(context[WAVEFORM_KEY])
  out['frames'] = lists[IMAGE_KEY]
  if with_flow:
    out['flow'] = lists[FLOW_KEY]
  return out


def read(serialized: bytes) -> VideoRecord:
  """A serialized record back to numpy (for tools and tests; the pipeline uses `parse`)."""
  example = tf.train.SequenceExample.FromString(serialized)
  ctx = example.context.feature

  def one(key: str) -> Any:
    feature = ctx[key]
    kind = feature.WhichOneof('kind')
    value = getattr(feature, kind).value[0]
    return value.decode() if kind == 'bytes_list' else value

  lists = example.feature_lists.feature_list
  frames = [tf.io.decode_jpeg(f.bytes_list.value[0]).numpy() for f in lists[IMAGE_KEY].feature]
  flow = None
  if FLOW_KEY in lists:
    flow = np.stack([tf.io.decode_png(f.bytes_list.value[0], channels=0).numpy()  # Grey + alpha.
                     for f in lists[FLOW_KEY].feature])
  start, end = one('segment/start'), one('segment/end')
  return VideoRecord(
      video_id=one('video_id'), source=one('source'), split=one('split'),
      frames=np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8),
      waveform=np.asarray(ctx[WAVEFORM_KEY].float_list.value, np.float32),
      fps=one('fps'), sample_rate=int(one('sample_rate')), duration=one('duration'),
      label_index=int(one('label/index')), label_name=one('label/name'),
      segment=None if start < 0 else (start, end), flow=flow)
