"""Reading and writing media files with PyAV: the one place that touches containers and codecs.

`decode` turns a video file into what a record holds: frames at a fixed frame rate with a fixed short
side, and the mono waveform at a fixed sample rate, both on the video's clock. It decodes every source
frame once and converts (`reformat`, swscale) only the frames it keeps, which is far cheaper than the
released SeLaVi loader's full-resolution decode per clip plus an ffmpeg subprocess for the whole audio
track (`docs/papers_and_releases.md`).

Timing is what audio-visual learning depends on, so it is explicit: output frame i shows what the video
shows at time t0 + i / fps (the last source frame whose timestamp is at or before that time, t0 being
the first frame's timestamp), and waveform sample j is the sound at t0 + j / sample_rate. Audio that
starts late is padded with silence, audio that starts early is cut; its length is always exactly
round(duration * sample_rate), duration being the video stream's.

Files that cannot be used raise `MediaError` with a short reason, which `avssl.data_prep` writes to
its manifest; nothing else in a bad file can stop a conversion.

Media files are local: PyAV (FFmpeg) opens local paths, not `gs://` URLs, so this module is the one
that does not go through `avssl.files`. Videos on Cloud Storage are copied to local disk first; the
records made from them may go anywhere (`make_records --output_dir=gs://...`).
"""

from __future__ import annotations

import dataclasses
import fractions
import math
import os
from collections.abc import Iterator

import av
import numpy as np


class MediaError(Exception):
  """A media file that cannot be used; `str(error)` is the reason recorded in the manifest."""


@dataclasses.dataclass
class Decoded:
  """One decoded file.

  Attributes:
    frames: `[T, H, W, 3]` uint8 RGB at `fps`, or None for audio-only input.
    waveform: `[S]` float32 mono in [-1, 1] at `sample_rate`, or None when the file has no audio and
      audio was not required.
    fps: frame rate of `frames`.
    sample_rate: sample rate of `waveform`.
    duration: seconds covered (the video stream's duration; the audio's for audio-only input).
    source_fps: the container's average frame rate (0 for audio-only input).
  """
  frames: np.ndarray | None
  waveform: np.ndarray | None
  fps: float
  sample_rate: int
  duration: float
  source_fps: float


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(height, width) scaled so that the shorter one is `short_side`, rounded to even numbers.

  Even sizes keep the frames encodable as yuv420p video and as JPEG without padding.
  """
  scale = short_side / min(height, width)
  return (max(2, 2 * round(height * scale / 2)), max(2, 2 * round(width * scale / 2)))


def decode(path: str, *, fps: float, short_side: int | None, sample_rate: int,
           require_audio: bool = True, audio_only: bool = False,
           min_duration: float = 0.0) -> Decoded:
  """Decodes `path` to frames at `fps` (short side `short_side`, or native) and mono audio.

  Args:
    path: any container FFmpeg reads.
    fps: output frame rate.
    short_side: output short side in pixels, or None to keep the source size.
    sample_rate: output audio sample rate (16, 24 or 48 kHz in the papers).
    require_audio: raise `MediaError` when the file has no audio stream.
    audio_only: decode only the audio (ESC-50); `frames` is None.
    min_duration: raise `MediaError` for files shorter than this many seconds.

  Raises:
    MediaError: not a media file, no video (or audio) stream, too short, or a decode error.
  """
  try:
    container = av.open(path)
  except (av.error.FFmpegError, UnicodeDecodeError) as e:
    raise MediaError(f'not a readable media file ({_reason(e)})') from e
  with container:
    try:
      return _decode(container, fps, short_side, sample_rate, require_audio, audio_only,
                     min_duration)
    except av.error.FFmpegError as e:
      raise MediaError(f'decode error ({_reason(e)})') from e


def _reason(error: Exception) -> str:
  return str(error).replace(str(getattr(error, 'filename', '') or '\0'), '').strip(" :;'")


def _decode(container: av.container.InputContainer, fps: float, short_side: int | None,
            sample_rate: int, require_audio: bool, audio_only: bool,
            min_duration: float) -> Decoded:
  has_audio = bool(container.streams.audio)
  if require_audio and not has_audio:
    raise MediaError('no audio stream')
  if audio_only:
    if not has_audio:
      raise MediaError('no audio stream')
    waveform, start = _audio(container, sample_rate)
    duration = len(waveform) / sample_rate
    _check_duration(duration, min_duration)
    return Decoded(None, waveform, fps, sample_rate, duration, 0.0)
  if not container.streams.video:
    raise MediaError('no video stream')
  video = container.streams.video[0]
  frames, times, source_fps = _video_frames(container, video, fps)
  size = None if short_side is None else short_side_size(frames[0].height, frames[0].width,
                                                         short_side)
  t0 = times[0]
  duration = times[-1] - t0 + 1.0 / source_fps
  _check_truncation(container, video, duration)
  _check_duration(duration, min_duration)
  num_frames = max(1, math.floor(duration * fps + 1e-6))
  rgb = _resample_frames(frames, times, t0, fps, num_frames, size)
  aligned = None
  if has_audio:
    container.seek(0)
    samples, audio_start = _audio(container, sample_rate)
    aligned = _align(samples, audio_start - t0, sample_rate, round(duration * sample_rate))
  return Decoded(rgb, aligned, fps, sample_rate, duration, source_fps)


def _check_duration(duration: float, min_duration: float) -> None:
  if duration < min_duration:
    raise MediaError(f'too short: {duration:.2f} s < min_duration {min_duration:g} s')


def _check_truncation(container: av.container.InputContainer, video: av.VideoStream,
                      duration: float) -> None:
  """A file whose frames stop well before its header's duration was cut off (a partial download)."""
  declared = None
  if video.duration is not None and video.time_base is not None:
    declared = float(video.duration * video.time_base)
  elif container.duration is not None:
    declared = container.duration / av.time_base
  if declared and duration < 0.9 * declared - 0.5:
    raise MediaError(f'truncated: decoded {duration:.2f} s of the {declared:.2f} s the header '
                     'declares')


def _video_frames(container: av.container.InputContainer, video: av.VideoStream,
                  fps: float) -> tuple[list[av.VideoFrame], np.ndarray, float]:
  """All decoded frames (still in the codec's format) and their presentation times in seconds."""
  video.thread_type = 'AUTO'
  frames: list[av.VideoFrame] = []
  stamps: list[float] = []
  for frame in container.decode(video):
    if frame.time is None:
      continue
    frames.append(frame)
    stamps.append(frame.time)
  if not frames:
    raise MediaError('no decodable video frames')
  order = np.argsort(stamps, kind='stable')
  frames = [frames[i] for i in order]
  times = np.asarray(stamps, np.float64)[order]
  rate = float(video.average_rate) if video.average_rate else 0.0
  if rate <= 0:
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else fps
  return frames, times, rate


def _resample_frames(frames: list[av.VideoFrame], times: np.ndarray, t0: float, fps: float,
                     num_frames: int, size: tuple[int, int] | None) -> np.ndarray:
  """Frame i = the last source frame shown at or before t0 + i / fps, converted once to RGB at `size`
  (height, width; None keeps the source size). Chosen indices never decrease, so a source frame
  shown twice (upsampling) is converted once."""
  targets = t0 + np.arange(num_frames) / fps
  chosen = np.clip(np.searchsorted(times, targets + 1e-6, side='right') - 1, 0, len(times) - 1)
  kwargs = {} if size is None else {'height': size[0], 'width': size[1], 'interpolation': 'AREA'}
  rgb = {i: frames[i].to_ndarray(format='rgb24', **kwargs) for i in np.unique(chosen).tolist()}
  return np.stack([rgb[i] for i in chosen.tolist()])


def _audio(container: av.container.InputContainer, sample_rate: int) -> tuple[np.ndarray, float]:
  """The first audio stream as mono float32 at `sample_rate`, and the time of its first sample.

  FFmpeg's resampler does the down-mix (5.1 → mono with the standard matrix) and the rate conversion.
  """
  stream = container.streams.audio[0]
  resampler = av.AudioResampler(format='flt', layout='mono', rate=sample_rate)
  chunks: list[np.ndarray] = []
  start: float | None = None
  for frame in container.decode(stream):
    if start is None and frame.time is not None:
      start = frame.time
    chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
  chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
  if not chunks:
    raise MediaError('audio stream has no decodable samples')
  return np.concatenate(chunks).astype(np.float32), float(start or 0.0)


def _align(samples: np.ndarray, offset: float, sample_rate: int, length: int) -> np.ndarray:
  """`samples` (starting `offset` seconds after the first video frame) placed on the video's clock."""
  shift = round(offset * sample_rate)
  if shift > 0:
    samples = np.concatenate([np.zeros(shift, np.float32), samples])
  elif shift < 0:
    samples = samples[-shift:]
  if len(samples) < length:
    samples = np.concatenate([samples, np.zeros(length - len(samples), np.float32)])
  return samples[:length]


def write_video(path: str, frames: np.ndarray, fps: float, waveform: np.ndarray | None = None,
                sample_rate: int | None = None, *, codec: str = 'libx264', crf: int = 18,
                audio_layout: str = 'mono') -> None:
  """Writes an mp4 (or any container the extension names) with an optional audio track.

  Used to make the avsynth demo data and test files, so they go through the same decoding path as
  real videos. MP4s get their index first (`faststart`), as web videos do, so that a cut-off download
  still opens and is recognised as truncated.

  Args:
    path: output file; its extension picks the container.
    frames: `[T, H, W, 3]` uint8 RGB, H and W even.
    fps: frame rate (an integer rate keeps timestamps exact).
    waveform: `[S]` or `[S, channels]` float32 in [-1, 1], or None for a file with no audio stream.
    sample_rate: the waveform's rate.
    codec: video codec (libx264, mpeg4, ...).
    crf: x264 quality (lower is better).
    audio_layout: channel layout written ('mono', 'stereo', '5.1', ...); must match the waveform.
  """
  if waveform is not None and sample_rate is None:
    raise ValueError('write_video: a waveform needs its sample_rate')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  options = {'movflags': 'faststart'} if path.endswith(('.mp4', '.mov')) else {}
  with av.open(path, 'w', options=options) as container:
    stream = container.add_stream(codec, rate=_rate(fps))
    if not isinstance(stream, av.VideoStream):
      raise ValueError(f'write_video: codec={codec!r} is not a video codec')
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = 'yuv420p'
    if codec == 'libx264':
      # Without macroblock-tree rate control: with it, x264 (core 165) gave small frames such as
      # avsynth's 64² different bytes and pixels (up to 38 levels) from one write of the same frames
      # to the next, depending on what the process had allocated before, so two runs of
      # make_synthetic wrote different data sets. Without it, a clip's bytes depend on its frames.
      stream.options = {'crf': str(crf), 'preset': 'veryfast', 'x264-params': 'mbtree=0'}
    audio = None
    if waveform is not None and sample_rate is not None:
      audio = container.add_stream('aac', rate=sample_rate, layout=audio_layout)
      audio.options = {'aac_coder': 'fast'}  # Half the encoding time of the default coder.
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame),
                                                             format='rgb24')))
    container.mux(stream.encode(None))
    if audio is not None and waveform is not None and sample_rate is not None:
      for chunk in _audio_frames(waveform, sample_rate, audio_layout):
        container.mux(audio.encode(chunk))
      container.mux(audio.encode(None))


def _rate(fps: float) -> fractions.Fraction:
  return fractions.Fraction(fps).limit_denominator(1001)


def _audio_frames(waveform: np.ndarray, sample_rate: int, layout: str,
                  chunk: int = 1024) -> Iterator[av.AudioFrame]:
  planar = np.asarray(waveform, np.float32).reshape(len(waveform), -1).T
  for start in range(0, planar.shape[1], chunk):
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, start:start + chunk]),
                                       format='fltp', layout=layout)
    frame.sample_rate = sample_rate
    frame.pts = start
    yield frame
