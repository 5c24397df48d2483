"""Training-clip throughput: avssl's records pipeline against the released SeLaVi loader's way.

    python benchmarks/input_pipeline.py               # 8 source videos, 160 clips each way
    python benchmarks/input_pipeline.py --clips 400

Both produce the same training example (SeLaVi's, `docs/papers_and_releases.md`): 30 frames at 30 fps
resized to a random short side in [128, 160], a random 112 × 112 crop, a random flip, normalised; and
1 s of 24 kHz mono audio from the clip start as a 257 × 99 `logfbank`.

- **released way**, as `datasets/AVideoDataset.py` does it, in one process: open the source mp4 with
  PyAV and decode every frame at full resolution, take the 30 frames of a random 1 s window, resize
  (OpenCV bilinear, faster than the release's torch resize) and crop; run an ffmpeg subprocess that
  decodes the whole audio track to 24 kHz mono s16 and cut 1 s from it; compute the spectrogram.
- **avssl**: `avssl.data_prep.make_records` once (not timed; reported), then
  `RecordSource.train_batches`: JPEG frames at short side 160 in `SequenceExample` shards, only the 30 sampled frames decoded, the
  audio window cut from the stored waveform — on all cores (tf.data's default) and on one thread.

The source videos are made from the real clip in `tests/data/` (Big Buck Bunny, CC-BY): looped to 10 s,
640 × 360, 30 fps, H.264 + AAC at 48 kHz — a typical VGG-Sound / Kinetics download.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import pathlib
import subprocess
import tempfile
import time

import cv2
import imageio_ffmpeg
import numpy as np
import tensorflow as tf

import machine
from avssl.data import audio, pipeline, video_io
from avssl.data_prep import annotations, make_records

REPO = pathlib.Path(__file__).resolve().parents[1]
_ARGS = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
_ARGS.add_argument('--videos', type=int, default=8, help='source videos')
_ARGS.add_argument('--clips', type=int, default=160, help='clips timed each way')
_ARGS.add_argument('--batch', type=int, default=8, help='avssl batch size')
_ARGS.add_argument('--workdir', default=None, help='keep the videos and records here')

FPS, SAMPLE_RATE, FRAMES, CROP = 30, 24000, 30, 112


def make_sources(directory: pathlib.Path, count: int) -> list[str]:
  """`count` 10 s, 640 × 360, 30 fps videos with 48 kHz audio, from the real test clip."""
  clip = video_io.decode(str(REPO / 'tests' / 'data' / 'bigbuckbunny.mp4'), fps=FPS,
                         short_side=360, sample_rate=48000)
  reps = -(-10 * FPS // len(clip.frames))
  frames = np.concatenate([clip.frames] * reps)[:10 * FPS]
  waveform = np.concatenate([clip.waveform] * reps)[:10 * 48000]
  paths = []
  for i in range(count):
    path = directory / 'videos' / f'bunny{i:02d}.mp4'
    if not path.exists():
      video_io.write_video(str(path), np.roll(frames, 7 * i, axis=0), FPS, waveform, 48000,
                           crf=23)
    paths.append(str(path))
  return paths


def released_clip(path: str, rng: np.random.Generator, spectrogram) -> dict[str, np.ndarray]:
  """One training example the way the released loader makes it."""
  with video_io.av.open(path) as container:
    frames = [f.to_ndarray(format='rgb24') for f in container.decode(video=0)]
    fps = float(container.streams.video[0].average_rate)
  span = int(FRAMES / FPS * fps)
  start = int(rng.integers(0, len(frames) - span + 1))
  picked = np.linspace(start, start + span - 1, FRAMES).round().astype(int)
  size = int(rng.integers(128, 161))
  height, width = frames[0].shape[:2]
  new = (size, round(width * size / height)) if height < width else (round(height * size / width),
                                                                      size)
  top, left = rng.integers(0, new[0] - CROP + 1), rng.integers(0, new[1] - CROP + 1)
  clip = np.stack([cv2.resize(frames[i], (new[1], new[0]), interpolation=cv2.INTER_LINEAR)
                   [top:top + CROP, left:left + CROP] for i in picked])
  if rng.random() < 0.5:
    clip = clip[:, :, ::-1]
  video = (clip.astype(np.float32) / 255 - 0.45) / 0.225
  pcm = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-nostdin', '-loglevel', 'error', '-i',
                        path, '-f', 's16le', '-ac', '1', '-ar', str(SAMPLE_RATE), '-'],
                       capture_output=True, check=True).stdout
  waveform = np.frombuffer(pcm, np.int16).astype(np.float32) / 32768
  begin = min(round(start / fps * SAMPLE_RATE), len(waveform) - SAMPLE_RATE)
  window = waveform[begin:begin + SAMPLE_RATE] * rng.uniform(0.9, 1.1)
  return {'video': video, 'audio': spectrogram(window[None]).numpy()[0]}


def time_released(paths: list[str], clips: int) -> float:
  rng = np.random.default_rng(0)
  spectrogram = tf.function(lambda w: audio.spectrogram(w, SAMPLE_RATE,
                                                        audio.default_config('logfbank')))
  released_clip(paths[0], rng, spectrogram)  # Traces the spectrogram function.
  start = time.perf_counter()
  for i in range(clips):
    example = released_clip(paths[i % len(paths)], rng, spectrogram)
  assert example['video'].shape == (FRAMES, CROP, CROP, 3) and example['audio'].shape == (257, 99, 1)
  return clips / (time.perf_counter() - start)


def time_records(directory: str, clips: int, batch: int, threads: int) -> float:
  config = pipeline.default_config(dir=directory, eval_split='train', num_threads=threads)
  source = pipeline.RecordSource(config, batch_size=batch, process_index=0, process_count=1, seed=0)
  batches = source.train_batches(0)
  for _ in itertools.islice(batches, 3):  # Warm-up: tracing, file buffers, autotuning.
    pass
  steps = -(-clips // batch)
  start = time.perf_counter()
  # Draws `steps` batches, keeping only the last one (checked below).
  example = collections.deque(itertools.islice(batches, steps), maxlen=1).pop()
  assert example['video'].shape == (batch, FRAMES, CROP, CROP, 3)
  assert example['audio'].shape == (batch, 257, 99, 1)
  return steps * batch / (time.perf_counter() - start)


def main() -> None:
  args = _ARGS.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    work = pathlib.Path(args.workdir or tmp)
    paths = make_sources(work, args.videos)
    settings = make_records.Settings(
        fps=FPS, short_side=160, sample_rate=SAMPLE_RATE, min_duration=1.1, flow=False,
        audio_only=False, require_audio=True, jpeg_quality=90, examples_per_shard=4)
    reused = (work / 'records' / make_records.MANIFEST).exists()
    start = time.perf_counter()
    parsed = annotations.parse('folder', root=str(work / 'videos'))
    make_records.run(parsed, str(work / 'records'), settings, dataset='folder',
                     workers=os.cpu_count() or 1)
    convert = time.perf_counter() - start
    size = sum(f.stat().st_size for f in (work / 'records').glob('*.tfrecord'))
    released = time_released(paths, args.clips)
    ours_all = time_records(str(work / 'records'), args.clips, args.batch, 0)
    ours_one = time_records(str(work / 'records'), args.clips, args.batch, 1)
  print(f'machine: {machine.cpu()}; tensorflow {tf.__version__}, PyAV {video_io.av.__version__}')
  conversion = ('reused from --workdir' if reused else
                f'{convert:.1f} s to convert once ({convert / args.videos:.2f} s/video)')
  print(f'sources: {args.videos} videos, 10 s, 640x360, 30 fps, AAC 48 kHz; records: {conversion}, '
        f'{size / args.videos / 2**20:.1f} MiB/video')
  print(f'released way (PyAV full decode + ffmpeg subprocess, 1 process): {released:6.2f} clips/s')
  print(f'avssl records, tf.data on all cores:                           {ours_all:6.2f} clips/s  '
        f'(x{ours_all / released:.1f})')
  print(f'avssl records, tf.data on 1 thread:                            {ours_one:6.2f} clips/s  '
        f'(x{ours_one / released:.1f})')


if __name__ == '__main__':
  main()
