"""Writes avsynth, the built-in demo and benchmark data, as mp4 files with a sound track.

    python -m avssl.data_prep.make_synthetic --output_dir=data/avsynth --num_videos=2000 --workers=2

The clips (see `avssl.data.synthetic`) go to `output_dir/{train,test}/{class_name}/{video_id}.mp4`,
the folder layout the released SeLaVi code reads, with class names such as `c03_v1_a2` (class 3, visual
pattern 1, sound pattern 2) so a cluster browser shows at a glance which modality a cluster follows.
`output_dir/avsynth.json` records the spec, the classes with their patterns, and the counts per split.

Each file is written under `output_dir/.partial/` and moved into place when complete, so a run that is
stopped leaves no half-written video; running again with the same arguments writes only what is
missing. With the defaults, two workers write 2,000 clips in 20 to 30 s on two CPU cores; encoding
takes most of that, the AAC encoder alone about two thirds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
import time

import numpy as np
import tqdm

from avssl import files
from avssl.data import synthetic, video_io

_PARTIAL = '.partial'
_PROG = 'python -m avssl.data_prep.make_synthetic'


def parse_args(argv: list[str] | None = None, prog: str = _PROG) -> argparse.Namespace:
  defaults = synthetic.AvsynthSpec()
  parser = argparse.ArgumentParser(
      prog=prog,
      description='Write avsynth, synthetic audio-visual clips whose class needs both modalities, '
                  'as mp4 files in the SeLaVi folder layout.')
  parser.add_argument('--output_dir', required=True, help='Where the train/ and test/ folders go.')
  parser.add_argument('--num_videos', type=int, default=defaults.num_videos)
  parser.add_argument('--num_classes', type=int, default=defaults.num_classes)
  parser.add_argument('--size', type=int, default=defaults.size, help='Frame height and width.')
  parser.add_argument('--fps', type=float, default=defaults.fps)
  parser.add_argument('--duration', type=float, default=defaults.duration, help='Seconds per clip.')
  parser.add_argument('--sample_rate', type=int, default=defaults.sample_rate)
  parser.add_argument('--balance', choices=('balanced', 'zipf'), default=defaults.balance)
  parser.add_argument('--zipf_exponent', type=float, default=defaults.zipf_exponent)
  parser.add_argument('--flow_friendly', action=argparse.BooleanOptionalAction,
                      default=defaults.flow_friendly,
                      help='Textured objects with small steps per frame, for optical flow (GOCA).')
  parser.add_argument('--snr_db', type=float, nargs=2, default=defaults.snr_db,
                      metavar=('LOW', 'HIGH'), help='Range of the per-clip audio SNR in dB.')
  parser.add_argument('--test_fraction', type=float, default=defaults.test_fraction)
  parser.add_argument('--seed', type=int, default=defaults.seed)
  parser.add_argument('--crf', type=int, default=23, help='x264 quality (lower is better).')
  parser.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                      help='Processes that render and encode; 1 runs in this process.')
  return parser.parse_args(argv)


def spec_from_args(args: argparse.Namespace) -> synthetic.AvsynthSpec:
  return synthetic.AvsynthSpec(
      num_videos=args.num_videos, num_classes=args.num_classes, size=args.size, fps=args.fps,
      duration=args.duration, sample_rate=args.sample_rate, balance=args.balance,
      zipf_exponent=args.zipf_exponent, flow_friendly=args.flow_friendly,
      snr_db=tuple(args.snr_db), test_fraction=args.test_fraction, seed=args.seed)


def video_path(spec: synthetic.AvsynthSpec, index: int) -> str:
  """`{split}/{class_name}/{video_id}.mp4`, relative to the output folder."""
  label = synthetic.class_of(index, spec)
  return os.path.join(synthetic.split_of(index, spec),
                      synthetic.class_name(label, spec.num_classes), f'avsynth_{index:06d}.mp4')


def describe(spec: synthetic.AvsynthSpec, crf: int) -> dict:
  """The contents of avsynth.json."""
  k = spec.num_classes
  labels, test = synthetic.labels(spec), synthetic.test_mask(spec)
  classes = []
  for c in range(k):
    v, a = synthetic.visual_pattern(c, k), synthetic.sound_pattern(c, k)
    classes.append({'id': c, 'name': synthetic.class_name(c, k), 'visual_pattern': v,
                    'sound_pattern': a,
                    'visual': dataclasses.asdict(synthetic.visual_attributes(v)),
                    'sound': dataclasses.asdict(synthetic.sound_attributes(a))})
  counts = {split: {synthetic.class_name(c, k): int(n)
                    for c, n in enumerate(np.bincount(labels[mask], minlength=k))}
            for split, mask in (('train', ~test), ('test', test))}
  return {'name': 'avsynth', 'spec': dataclasses.asdict(spec), 'num_frames': spec.num_frames,
          'num_samples': spec.num_samples,
          'encoding': {'container': 'mp4', 'video': 'libx264', 'crf': crf, 'audio': 'aac'},
          'classes': classes,
          'num_videos': {split: sum(n.values()) for split, n in counts.items()},
          'counts': counts}


def write_clip(job: tuple[synthetic.AvsynthSpec, int, str, str, int]) -> None:
  """Renders clip `index` and writes it to `path`, through a temporary file in `partial_dir`."""
  spec, index, path, partial_dir, crf = job
  frames, waveform, _ = synthetic.render_clip(spec, index)
  partial = os.path.join(partial_dir, os.path.basename(path))
  video_io.write_video(partial, frames, spec.fps, waveform, spec.sample_rate, crf=crf)
  files.rename(partial, path)


def main(argv: list[str] | None = None, prog: str = _PROG) -> dict:
  """Writes the missing clips and avsynth.json; returns what was written to avsynth.json."""
  args = parse_args(argv, prog)
  try:
    spec = spec_from_args(args)
  except ValueError as e:
    raise SystemExit(str(e)) from e
  start = time.perf_counter()
  if files.is_url(args.output_dir):
    raise SystemExit(f'--output_dir={args.output_dir}: PyAV writes videos to local files only; '
                     'write them locally (make_records can then write its records to a URL)')
  info = describe(spec, args.crf)
  _write_manifest(args.output_dir, info)
  partial_dir = os.path.join(args.output_dir, _PARTIAL)
  files.makedirs(partial_dir)
  jobs = []
  for index in range(spec.num_videos):
    path = os.path.join(args.output_dir, video_path(spec, index))
    if not files.exists(path):
      files.makedirs(os.path.dirname(path))
      jobs.append((spec, index, path, partial_dir, args.crf))
  progress = tqdm.tqdm(total=len(jobs), desc='avsynth', unit='clip', disable=not jobs)
  if args.workers <= 1:
    for job in jobs:
      write_clip(job)
      progress.update()
  else:
    with multiprocessing.get_context('spawn').Pool(args.workers) as pool:
      for _ in pool.imap_unordered(write_clip, jobs, chunksize=8):
        progress.update()
  progress.close()
  os.rmdir(partial_dir)
  print(f'avsynth: {len(jobs)} clips written, {spec.num_videos - len(jobs)} already there; '
        f'{info["num_videos"]["train"]} train + {info["num_videos"]["test"]} test clips of '
        f'{spec.num_classes} classes ({spec.num_frames} frames {spec.size}x{spec.size} at '
        f'{spec.fps:g} fps, {spec.sample_rate} Hz sound) in {args.output_dir}, '
        f'{time.perf_counter() - start:.1f} s')
  return info


def _write_manifest(output_dir: str, info: dict) -> None:
  """Writes avsynth.json, refusing to mix clips of another spec into an existing folder."""
  path = os.path.join(output_dir, 'avsynth.json')
  if files.exists(path):
    with files.open(path) as f:
      old = json.load(f)
    new = json.loads(json.dumps(info))
    for key in ('spec', 'encoding'):
      if old.get(key) != new[key]:
        raise SystemExit(f'{path} was written with a different {key} ({old.get(key)}); pass the '
                         'same arguments to resume it, or a new --output_dir')
  files.makedirs(output_dir)
  with files.atomic_open(path) as f:
    json.dump(info, f, indent=1)


def cli() -> None:
  """The `avssl-make-synthetic` command (a console script of the package). It returns nothing:
  a console script exits with what its function returns, and `main` returns avsynth.json's dict."""
  main(sys.argv[1:], prog='avssl-make-synthetic')


if __name__ == '__main__':
  main(sys.argv[1:])
