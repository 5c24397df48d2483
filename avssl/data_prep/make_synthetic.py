"""Writes avsynth, the built-in demo and benchmark data, or avnuisance, as mp4 files with a sound track.

    python -m avssl.data_prep.make_synthetic --output_dir=data/avsynth --num_videos=2000 --workers=2
    python -m avssl.data_prep.make_synthetic --nuisance --output_dir=data/avnuisance --workers=2

The clips (see `avssl.data.synthetic`) go to `output_dir/{train,test}/{class_name}/{video_id}.mp4`,
the folder layout the released SeLaVi code reads, with class names such as `c03_v1_a2` (class 3, visual
pattern 1, sound pattern 2; avnuisance: `c03_ring_orbit`, its object's shape and path) so a cluster
browser shows at a glance which modality a cluster follows. `output_dir/avsynth.json` (avnuisance.json)
records the spec, the classes with their patterns, and the counts per split.

`output_dir/factors.csv` says what every clip shows: a header, then one row per clip in clip order,
`video_id` first, exactly as `make_records --dataset=folder` names it (`train/c03_v1_a2/avsynth_000123`:
the path under `output_dir` without extension), then `class` and every nuisance drawn for the clip,
binned into a few categories (`synthetic.Clip.factors`), so a clustering can be scored against each
one: what it follows besides the class.

Each file is written under `output_dir/.partial/` and moved into place when complete, so a run that is
stopped leaves no half-written video; running again with the same arguments writes only what is
missing. With the defaults, two workers write 2,000 clips in 20 to 30 s on two CPU cores; encoding
takes most of that, the AAC encoder alone about two thirds.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from typing import Any

import numpy as np
import tqdm

from avssl import files
from avssl.data import synthetic, video_io

_PARTIAL = '.partial'
_PROG = 'python -m avssl.data_prep.make_synthetic'
FACTORS = 'factors.csv'

Spec = synthetic.AvsynthSpec | synthetic.NuisanceSpec


def parse_args(argv: list[str] | None = None, prog: str = _PROG) -> argparse.Namespace:
  defaults = synthetic.AvsynthSpec()
  parser = argparse.ArgumentParser(
      prog=prog,
      description='Write avsynth, synthetic audio-visual clips whose class needs both modalities, '
                  'or avnuisance (--nuisance), whose class hides among strong nuisances, as mp4 '
                  'files in the SeLaVi folder layout, with a factors.csv of what each clip shows.')
  parser.add_argument('--output_dir', required=True, help='Where the train/ and test/ folders go.')
  parser.add_argument('--nuisance', action='store_true',
                      help='avnuisance: each modality names the class through a small object or a '
                           'short sound among strong class-independent nuisances '
                           '(synthetic.NuisanceSpec; its defaults apply where a flag is not given).')
  parser.add_argument('--num_videos', type=int, default=defaults.num_videos)
  parser.add_argument('--num_classes', type=int, default=None,
                      help=f'Default {defaults.num_classes} ({synthetic.NuisanceSpec.num_classes} '
                           'with --nuisance).')
  parser.add_argument('--size', type=int, default=defaults.size, help='Frame height and width.')
  parser.add_argument('--fps', type=float, default=defaults.fps)
  parser.add_argument('--duration', type=float, default=defaults.duration, help='Seconds per clip.')
  parser.add_argument('--sample_rate', type=int, default=defaults.sample_rate)
  parser.add_argument('--balance', choices=('balanced', 'zipf'), default=defaults.balance)
  parser.add_argument('--zipf_exponent', type=float, default=defaults.zipf_exponent)
  parser.add_argument('--flow_friendly', action=argparse.BooleanOptionalAction,
                      default=defaults.flow_friendly,
                      help='Textured objects with small steps per frame, for optical flow (GOCA).')
  parser.add_argument('--snr_db', type=float, nargs=2, default=None, metavar=('LOW', 'HIGH'),
                      help=f'Range of the per-clip audio SNR in dB (default {defaults.snr_db}; '
                           f'with --nuisance the event\'s, {synthetic.NuisanceSpec.snr_db}).')
  parser.add_argument('--test_fraction', type=float, default=defaults.test_fraction)
  parser.add_argument('--seed', type=int, default=defaults.seed)
  parser.add_argument('--crf', type=int, default=23, help='x264 quality (lower is better).')
  parser.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                      help='Processes that render and encode; 1 runs in this process.')
  return parser.parse_args(argv)


def spec_from_args(args: argparse.Namespace) -> Spec:
  common = dict(num_videos=args.num_videos, size=args.size, fps=args.fps, duration=args.duration,
                sample_rate=args.sample_rate, balance=args.balance,
                zipf_exponent=args.zipf_exponent, test_fraction=args.test_fraction, seed=args.seed)
  optional = {k: v for k, v in (('num_classes', args.num_classes), ('snr_db', args.snr_db))
              if v is not None}
  if 'snr_db' in optional:
    optional['snr_db'] = tuple(optional['snr_db'])
  if args.nuisance:
    if args.flow_friendly:
      raise ValueError('--flow_friendly is for avsynth only; avnuisance has plain objects')
    return synthetic.NuisanceSpec(**common, **optional)
  return synthetic.AvsynthSpec(**common, **optional, flow_friendly=args.flow_friendly)


def dataset_name(spec: Spec) -> str:
  return 'avnuisance' if isinstance(spec, synthetic.NuisanceSpec) else 'avsynth'


def class_name(spec: Spec, c: int) -> str:
  if isinstance(spec, synthetic.NuisanceSpec):
    return synthetic.nuisance_class_name(c, spec.num_classes)
  return synthetic.class_name(c, spec.num_classes)


def render(spec: Spec, index: int) -> synthetic.Clip:
  if isinstance(spec, synthetic.NuisanceSpec):
    return synthetic.render_nuisance_clip(spec, index)
  return synthetic.render_clip(spec, index)


def video_id(spec: Spec, index: int) -> str:
  """`{split}/{class_name}/{name}_{index:06d}`: the path under the output folder without extension,
  which is the video_id `make_records --dataset=folder` gives the clip."""
  return '/'.join((synthetic.split_of(index, spec), class_name(spec, synthetic.class_of(index, spec)),
                   f'{dataset_name(spec)}_{index:06d}'))


def video_path(spec: Spec, index: int) -> str:
  """`{split}/{class_name}/{video_id}.mp4`, relative to the output folder."""
  return os.path.join(*video_id(spec, index).split('/')) + '.mp4'


def _class_entry(spec: Spec, c: int) -> dict[str, Any]:
  k = spec.num_classes
  if isinstance(spec, synthetic.NuisanceSpec):
    return {'id': c, 'name': class_name(spec, c),
            **dataclasses.asdict(synthetic.nuisance_attributes(c, k))}
  v, a = synthetic.visual_pattern(c, k), synthetic.sound_pattern(c, k)
  return {'id': c, 'name': class_name(spec, c), 'visual_pattern': v, 'sound_pattern': a,
          'visual': dataclasses.asdict(synthetic.visual_attributes(v)),
          'sound': dataclasses.asdict(synthetic.sound_attributes(a))}


def describe(spec: Spec, crf: int) -> dict:
  """The contents of avsynth.json (avnuisance.json)."""
  k = spec.num_classes
  labels, test = synthetic.labels(spec), synthetic.test_mask(spec)
  counts = {split: {class_name(spec, c): int(n)
                    for c, n in enumerate(np.bincount(labels[mask], minlength=k))}
            for split, mask in (('train', ~test), ('test', test))}
  return {'name': dataset_name(spec), 'spec': dataclasses.asdict(spec),
          'num_frames': spec.num_frames, 'num_samples': spec.num_samples,
          'encoding': {'container': 'mp4', 'video': 'libx264', 'crf': crf, 'audio': 'aac'},
          'classes': [_class_entry(spec, c) for c in range(k)],
          'num_videos': {split: sum(n.values()) for split, n in counts.items()},
          'counts': counts}


def write_clip(job: tuple[Spec, int, str, str, int]) -> dict[str, int | str]:
  """Renders clip `index`, writes it to `path` (through a temporary file in `partial_dir`) unless it
  is there, and returns its factors."""
  spec, index, path, partial_dir, crf = job
  clip = render(spec, index)
  if not files.exists(path):
    partial = os.path.join(partial_dir, os.path.basename(path))
    video_io.write_video(partial, clip.frames, spec.fps, clip.waveform, spec.sample_rate, crf=crf)
    files.rename(partial, path)
  return clip.factors


def main(argv: list[str] | None = None, prog: str = _PROG) -> dict:
  """Writes the missing clips, the manifest and factors.csv; returns what the manifest holds."""
  args = parse_args(argv, prog)
  try:
    spec = spec_from_args(args)
  except ValueError as e:
    raise SystemExit(str(e)) from e
  start = time.perf_counter()
  if files.is_url(args.output_dir):
    raise SystemExit(f'--output_dir={args.output_dir}: PyAV writes videos to local files only; '
                     'write them locally (make_records can then write its records to a URL)')
  name = dataset_name(spec)
  info = describe(spec, args.crf)
  _write_manifest(args.output_dir, f'{name}.json', info)
  partial_dir = os.path.join(args.output_dir, _PARTIAL)
  files.makedirs(partial_dir)
  jobs, missing = [], 0
  for index in range(spec.num_videos):
    path = os.path.join(args.output_dir, video_path(spec, index))
    if not files.exists(path):
      files.makedirs(os.path.dirname(path))
      missing += 1
    jobs.append((spec, index, path, partial_dir, args.crf))
  progress = tqdm.tqdm(total=len(jobs), desc=name, unit='clip')
  factors = []
  if args.workers <= 1:
    for job in jobs:
      factors.append(write_clip(job))
      progress.update()
  else:
    with multiprocessing.get_context('spawn').Pool(args.workers) as pool:
      for clip_factors in pool.imap(write_clip, jobs, chunksize=8):
        factors.append(clip_factors)
        progress.update()
  progress.close()
  os.rmdir(partial_dir)
  _write_factors(args.output_dir, [video_id(spec, i) for i in range(spec.num_videos)], factors)
  print(f'{name}: {missing} clips written, {spec.num_videos - missing} already there; '
        f'{info["num_videos"]["train"]} train + {info["num_videos"]["test"]} test clips of '
        f'{spec.num_classes} classes ({spec.num_frames} frames {spec.size}x{spec.size} at '
        f'{spec.fps:g} fps, {spec.sample_rate} Hz sound) and {FACTORS} in {args.output_dir}, '
        f'{time.perf_counter() - start:.1f} s')
  return info


def _write_factors(output_dir: str, ids: list[str], factors: list[dict[str, int | str]]) -> None:
  with files.atomic_open(os.path.join(output_dir, FACTORS)) as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(['video_id', *factors[0]])
    for clip_id, row in zip(ids, factors):
      writer.writerow([clip_id, *row.values()])


def _write_manifest(output_dir: str, name: str, info: dict) -> None:
  """Writes the manifest, refusing to mix clips of another spec into an existing folder."""
  path = os.path.join(output_dir, name)
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
