r"""Converts a folder of videos, or a dataset's own annotation files, into record shards.

  python -m avssl.data_prep.make_records --dataset=folder --input=~/videos \
      --output_dir=~/records/mine
  python -m avssl.data_prep.make_records --dataset=vggsound --input=vggsound.csv \
      --video_dir=~/vggsound/videos --output_dir=~/records/vggsound --sample_rate=24000
  python -m avssl.data_prep.make_records --dataset=ucf101 --input=~/ucfTrainTestlist \
      --video_dir=~/UCF-101 --fold=1 --output_dir=~/records/ucf101_1

Every video is decoded once (PyAV), resampled to `--fps` with short side `--short_side`, its audio
down-mixed to mono at `--sample_rate`, optionally given TV-L1 optical flow (`--flow`), and written as
one `SequenceExample` (`avssl/data/records.py`) into `{split}-NNNNN-of-NNNNN.tfrecord`. Each split's
videos are put in the order of a hash of (`--shard_seed`, video_id) and cut into shards in that order:
the output is the same on every run, and every shard is a random sample of its split. Ids sort by class
in class folders (`folder`, UCF-101, HMDB-51), so shards cut in id order would each hold a few classes,
and so would every training batch, which reads a few shards at once (`avssl/data/pipeline.py`).

Files that cannot be used (not a media file, no video or audio stream, shorter than `--min_duration`,
truncated, a decode error) are skipped with their reason; annotated files absent from disk are listed as
missing, as is every folder entry not scanned (`annotations.folder`: hidden, a symlink loop, a records
folder such as `--output_dir` itself). Both go to `manifest.json` beside the shards with the counts,
classes, settings and each shard's record count and byte size, and the conversion goes on. An input
with nothing to convert stops the command before anything is written. A shard is written to a temporary name and renamed when complete, with its own
`.json` result beside it, so an interrupted run (or a full disk) loses no finished shard, and re-running
the same command converts only the shards that are not finished.

`{split}.csv` lists every written video with its dataset index (its position in the split's shards,
which the input pipeline attaches to every example), id, source and label, in index order: the shards'
hashed order, not the ids'.

`--val_fraction` carves a validation split from train, for choosing hyperparameters without looking at
the test set (`config.data.eval_split='val'`, or the linear probe's weight decay). About that fraction
of each class's training videos moves to the split `val` (its own shards, `val.csv` and manifest entry;
train no longer holds them), in whole groups: `--val_group_pattern` finds a video's group in its id
(by default UCF-101's `_gNN_` performer groups, HMDB-51's source films and ESC-50's source recordings,
each video its own group otherwise), so that no performer or recording is on both sides. The choice is a fixed function of the train videos
and the two flags (`avssl.data.splits.split_train_val`, seed `VAL_SEED`), so a rerun gives the
same split. The manifest records the flags, and a rerun into the same folder with others is refused:
another val split needs a fresh `--output_dir`.
"""

import collections
import contextlib
import csv
import dataclasses
import hashlib
import inspect
import json
import math
import multiprocessing
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from absl import app
from absl import flags
import numpy as np
import tqdm

from avssl import files
from avssl.data import splits
# No `from __future__ import annotations` in this module: mypy would take that name for the
# `annotations` module below.
from avssl.data_prep import annotations

_DATASET = flags.DEFINE_enum('dataset', 'folder', sorted(annotations.PARSERS),
                             'Input format: a folder of videos, or a dataset\'s annotation files.')
_INPUT = flags.DEFINE_string('input', None, 'The folder (dataset=folder) or the annotation file or '
                             'folder of the dataset (its CSV, split folder or Annotations.txt).')
_VIDEO_DIR = flags.DEFINE_string('video_dir', None, 'Where the dataset\'s media files are.')
_SPLIT_DIR = flags.DEFINE_string('split_dir', None, 'AVE: the folder of trainSet.txt etc.')
_FOLD = flags.DEFINE_integer('fold', None, 'UCF101/HMDB51 split (1-3), ESC-50 test fold (1-5).')
_FILE_PATTERN = flags.DEFINE_string('file_pattern', None,
                                    'VGG-Sound/Kinetics: file name pattern of the downloaded clips.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Where shards and manifest.json go: a '
                                  'local path or a URL (gs://...).')
_FPS = flags.DEFINE_float('fps', 30.0, 'Frame rate of the stored frames (the papers sample 30 fps).')
_SHORT_SIDE = flags.DEFINE_integer('short_side', 160, 'Short side of the stored frames; 160 is the '
                                   'largest random resize of SeLaVi\'s augmentation.')
_SAMPLE_RATE = flags.DEFINE_integer('sample_rate', 24000, 'Audio sample rate (SeLaVi 24 kHz, '
                                    'XDC/IICL 16 kHz, GOCA/ESC 48 kHz).')
_MIN_DURATION = flags.DEFINE_float('min_duration', 1.1, 'Shorter files are skipped (the SeLaVi '
                                   'reference keeps streams longer than 1.1 s).')
_FLOW = flags.DEFINE_bool('flow', False, 'Also store TV-L1 optical flow (GOCA).')
_AUDIO_ONLY = flags.DEFINE_bool('audio_only', None, 'Store only audio (default: true for esc50).')
_REQUIRE_AUDIO = flags.DEFINE_bool('require_audio', True, 'Skip videos without an audio stream.')
_JPEG_QUALITY = flags.DEFINE_integer('jpeg_quality', 90, 'JPEG quality of the stored frames.')
_PER_SHARD = flags.DEFINE_integer('examples_per_shard', 256, 'Inputs per shard; keep several '
                                  'shards per host for multi-host runs.')
_SHARD_SEED = flags.DEFINE_integer(
    'shard_seed', 0, 'Seed of the videos\' order in the shards (a hash of the seed and the video_id), '
    'which makes every shard a random sample of its split.')
_WORKERS = flags.DEFINE_integer('workers', os.cpu_count() or 1,
                                'Decoding processes (0: decode in this process).')
_SPLITS = flags.DEFINE_list('splits', None, 'Only these splits (default: all the dataset has).')
_VAL_FRACTION = flags.DEFINE_float('val_fraction', 0.0, 'Fraction of the train videos moved to a '
                                   'split "val", whole groups, stratified by class (0: none).')
_VAL_GROUP_PATTERN = flags.DEFINE_string(
    'val_group_pattern', None, 'Regex whose first group (or group named "group") is a video\'s group '
    'in its video_id; groups are never split between train and val. Default: UCF-101 `_g(\\d+)_`, '
    'HMDB-51 the source film, ESC-50 the source recording, otherwise "" (each video its own '
    'group).')

MANIFEST = 'manifest.json'
VAL_SEED = 0


@dataclasses.dataclass(frozen=True)
class Settings:
  """How videos are converted and ordered in the shards (`shard_seed`, `plan_shards`); a resumed run
  must use the same."""
  fps: float
  short_side: int | None
  sample_rate: int
  min_duration: float
  flow: bool
  audio_only: bool
  require_audio: bool
  jpeg_quality: int
  examples_per_shard: int
  shard_seed: int = 0


@dataclasses.dataclass(frozen=True)
class ValSplit:
  """How the val split is carved from train; a resumed run must use the same."""
  fraction: float
  group_pattern: str
  seed: int = VAL_SEED


def default_group_pattern(dataset: str) -> str:
  """UCF-101's performer groups, HMDB-51's source films, ESC-50's source recordings; otherwise ''
  (each video its own group)."""
  patterns = {'ucf101': splits.UCF101_GROUP, 'hmdb51': splits.HMDB51_GROUP, 'esc50': splits.ESC50_GROUP}
  return patterns.get(dataset, '')


def carve_val(parsed: annotations.Annotations, val_split: ValSplit) -> annotations.Annotations:
  """`parsed` with about `val_split.fraction` of its train entries, in whole groups, moved to 'val'."""
  if not 0 < val_split.fraction < 1:
    raise app.UsageError(f'--val_fraction must be in (0, 1), got {val_split.fraction}')
  if any(e.split == 'val' for e in parsed.entries):
    raise app.UsageError('the dataset has its own val split; --val_fraction would mix another into it')
  train = [e for e in parsed.entries if e.split == 'train']
  if not train:
    raise app.UsageError('--val_fraction needs train entries to carve the val split from')
  try:
    groups = [splits.group_of(e.video_id, val_split.group_pattern) if val_split.group_pattern
              else e.video_id for e in train]
  except ValueError as error:
    raise app.UsageError(f'{error}; set --val_group_pattern ("" makes each video its own '
                         'group)') from error
  val = splits.split_train_val([e.label_index for e in train], groups, fraction=val_split.fraction,
                              seed=val_split.seed)
  moved = {e.video_id for e, v in zip(train, val) if v}
  entries = [dataclasses.replace(e, split='val') if e.video_id in moved else e
             for e in parsed.entries]
  entries.sort(key=lambda e: (annotations.SPLITS.index(e.split), e.video_id))
  return dataclasses.replace(parsed, entries=entries)


def convert(entry: annotations.Entry, settings: Settings) -> tuple[bytes | None, dict[str, Any]]:
  """One entry → (serialized record, result row) or (None, result row with the skip reason).

  Never raises for a bad file: the reason is returned, so one file cannot stop a conversion.
  """
  from avssl.data import records, video_io  # pylint: disable=g-import-not-at-top
  source = annotations.escape_name(entry.path)  # What records and tables can hold (UTF-8).
  row = {'video_id': entry.video_id, 'path': source, 'split': entry.split,
         'label_index': entry.label_index, 'label_name': entry.label_name}
  try:
    decoded = video_io.decode(
        entry.path, fps=settings.fps, short_side=settings.short_side,
        sample_rate=settings.sample_rate, require_audio=settings.require_audio,
        audio_only=settings.audio_only, min_duration=settings.min_duration)
    flow = None
    if settings.flow and decoded.frames is not None:  # Audio-only records have no frames.
      from avssl.data_prep import optical_flow  # pylint: disable=g-import-not-at-top
      flow = optical_flow.tvl1_flow(decoded.frames)
    frames = decoded.frames if decoded.frames is not None else np.zeros((0, 0, 0, 3), np.uint8)
    waveform = decoded.waveform if decoded.waveform is not None else np.zeros((0,), np.float32)
    segment = None if entry.start is None or entry.end is None else (entry.start, entry.end)
    record = records.VideoRecord(
        video_id=entry.video_id, source=source, split=entry.split, frames=frames,
        waveform=waveform, fps=decoded.fps, sample_rate=decoded.sample_rate,
        duration=decoded.duration, label_index=entry.label_index, label_name=entry.label_name,
        segment=segment, flow=flow)
    row['duration'] = round(decoded.duration, 4)
    return records.serialize(record, jpeg_quality=settings.jpeg_quality), row
  except video_io.MediaError as e:
    row['reason'] = str(e)
  except Exception as e:  # pylint: disable=broad-except
    row['reason'] = f'unexpected error: {type(e).__name__}: {e}'
  return None, row


def _convert_star(args: tuple[annotations.Entry, Settings]):
  return convert(*args)


@dataclasses.dataclass
class Shard:
  split: str
  index: int
  total: int
  entries: list[annotations.Entry]

  @property
  def name(self) -> str:
    return f'{self.split}-{self.index:05d}-of-{self.total:05d}'


def shard_order_key(video_id: str, seed: int) -> bytes:
  """Where a video goes in its split's shards: SHA-256 of (seed, video_id), the same on every machine
  and Python version (unlike `hash`), and unrelated to the class an id may start with."""
  return hashlib.sha256(f'{seed}/{video_id}'.encode()).digest()


def plan_shards(entries: Sequence[annotations.Entry], per_shard: int, seed: int) -> list[Shard]:
  """Entries of each split, in `shard_order_key` order, cut into shards of `per_shard` inputs."""
  by_split = collections.defaultdict(list)
  for entry in sorted(entries, key=lambda e: (e.split, shard_order_key(e.video_id, seed))):
    by_split[entry.split].append(entry)
  shards = []
  for split, items in sorted(by_split.items()):
    total = max(1, math.ceil(len(items) / per_shard))
    for i in range(total):
      shards.append(Shard(split, i, total, items[i * per_shard:(i + 1) * per_shard]))
  return shards


def _inputs_digest(entries: Iterable[annotations.Entry]) -> str:
  digest = hashlib.sha256()
  for e in sorted(entries, key=lambda e: (e.split, e.video_id)):
    digest.update(json.dumps(dataclasses.asdict(e), sort_keys=True).encode())
  return digest.hexdigest()


def _write_json(path: str, value: Any) -> None:
  with files.atomic_open(path) as f:
    json.dump(value, f, indent=1, sort_keys=True)


def _check_resume(output_dir: str, header: dict[str, Any]) -> None:
  """A second run into the same folder must be the same conversion, or shards would mix."""
  path = files.join(output_dir, MANIFEST)
  if not files.exists(path):
    return
  with files.open(path) as f:
    previous = json.load(f)
  if 'shard_seed' not in previous.get('settings', {}):
    raise app.UsageError(f'{path}: these shards were cut in video_id order by an earlier make_records; '
                         'this one orders them by a hash (--shard_seed). Write into a fresh '
                         '--output_dir.')
  if previous.get('val_split') != header['val_split']:
    raise app.UsageError(
        f'{path}: the shards were cut for the val split {previous.get("val_split")}, this command asks '
        f'for {header["val_split"]}; train and val shards would mix. Another --val_fraction or '
        '--val_group_pattern needs a fresh --output_dir; repeat the original command to resume.')
  for key in ('settings', 'dataset', 'inputs'):
    if previous.get(key) != header[key]:
      raise app.UsageError(
          f'{path}: the {key} differ from this command\'s ({previous.get(key)} vs {header[key]}); '
          'finished shards were made differently. Use another --output_dir, or repeat the '
          'original command to resume.')


def run(parsed: annotations.Annotations, output_dir: str, settings: Settings, *, dataset: str,
        workers: int, val_split: ValSplit | None = None) -> dict[str, Any]:
  """Converts every entry not yet in a finished shard and writes the manifest; returns it.

  `val_split` is how `parsed` was passed through `carve_val`, if it was; it is recorded and checked.
  """
  files.makedirs(output_dir)
  header = {'dataset': dataset, 'settings': dataclasses.asdict(settings),
            'val_split': dataclasses.asdict(val_split) if val_split else None,
            'inputs': {'count': len(parsed.entries), 'sha256': _inputs_digest(parsed.entries)}}
  _check_resume(output_dir, header)
  _write_json(files.join(output_dir, MANIFEST), {**header, 'status': 'in progress'})
  shards = plan_shards(parsed.entries, settings.examples_per_shard, settings.shard_seed)
  pending = [s for s in shards if not _finished(output_dir, s)]
  todo = [(e, settings) for s in pending for e in s.entries]
  with _pool(workers) as pool:
    results = (pool.imap(_convert_star, todo, chunksize=1) if pool else map(_convert_star, todo))
    with tqdm.tqdm(total=len(todo), unit='video', desc='make_records', file=sys.stderr) as bar:
      for shard in pending:
        _write_shard(output_dir, shard, results, bar)
  rows = [(shard, _load_rows(output_dir, shard)) for shard in shards]
  manifest = _manifest(output_dir, rows, parsed, header)
  _write_json(files.join(output_dir, MANIFEST), manifest)
  _write_tables(output_dir, rows)
  return manifest


def _pool(workers: int):
  """A process pool, or no pool (decode in this process) for `workers <= 0`."""
  if workers <= 0:
    return contextlib.nullcontext()
  return multiprocessing.get_context('spawn').Pool(workers)


def _finished(output_dir: str, shard: Shard) -> bool:
  base = files.join(output_dir, shard.name)
  return files.exists(base + '.tfrecord') and files.exists(base + '.json')


def _write_shard(output_dir: str, shard: Shard, results, bar: tqdm.tqdm) -> None:
  """Writes one shard under a temporary name; renames it and its result file only when complete."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  base = files.join(output_dir, shard.name)
  rows = []
  try:
    with tf.io.TFRecordWriter(base + '.tfrecord.tmp') as writer:
      for _ in shard.entries:
        serialized, row = next(results)
        row['written'] = serialized is not None
        if serialized is not None:
          writer.write(serialized)
        else:
          tqdm.tqdm.write(f'make_records: {row["path"]}: {row["reason"]}; skipped', file=sys.stderr)
        rows.append(row)
        bar.update()
  except (OSError, tf.errors.OpError) as e:
    with contextlib.suppress(OSError, tf.errors.OpError):  # Best effort, as the write failed.
      files.remove(base + '.tfrecord.tmp')
    raise SystemExit(f'make_records: cannot write {base}.tfrecord ({e}). Finished shards are kept; '
                     'free some space (or fix the folder) and run the same command to resume.') from e
  files.rename(base + '.tfrecord.tmp', base + '.tfrecord')
  _write_json(base + '.json', rows)  # Written last: it marks the shard finished (`_finished`).


def _load_rows(output_dir: str, shard: Shard) -> list[dict[str, Any]]:
  with files.open(files.join(output_dir, shard.name + '.json')) as f:
    return json.load(f)


def _manifest(output_dir: str, shard_rows: list[tuple[Shard, list[dict[str, Any]]]],
              parsed: annotations.Annotations, header: dict[str, Any]) -> dict[str, Any]:
  """Counts, classes, shards with their offsets and byte sizes (by which the input pipeline checks a
  copy of the shards without reading them), and every skipped file, from the shards' results."""
  splits: dict[str, Any] = {}
  skipped = []
  for shard, rows in shard_rows:
    written = [r for r in rows if r['written']]
    skipped += [{k: r[k] for k in ('video_id', 'path', 'split', 'reason')}
                for r in rows if not r['written']]
    split = splits.setdefault(shard.split, {'count': 0, 'shards': [], 'class_counts': {}})
    split['shards'].append({'file': shard.name + '.tfrecord', 'count': len(written),
                            'offset': split['count'],
                            'bytes': files.size(files.join(output_dir, shard.name + '.tfrecord'))})
    split['count'] += len(written)
    for r in written:
      name = r['label_name'] or '(unlabelled)'
      split['class_counts'][name] = split['class_counts'].get(name, 0) + 1
  missing = [{'item': item, 'reason': reason} for item, reason in parsed.missing]
  written = sum(s['count'] for s in splits.values())
  reasons = collections.Counter(_reason_kind(s['reason']) for s in skipped)
  return {**header, 'status': 'complete', 'classes': list(parsed.classes), 'splits': splits,
          'skipped': skipped, 'missing': missing,
          'counts': {'inputs': len(parsed.entries), 'written': written, 'skipped': len(skipped),
                     'missing': len(missing), 'skip_reasons': dict(sorted(reasons.items()))}}


def _reason_kind(reason: str) -> str:
  """'truncated: decoded 1.0 s of ...' → 'truncated', for the summary counts."""
  return reason.split(':')[0].split(' (')[0]


def _write_tables(output_dir: str, shard_rows: list[tuple[Shard, list[dict[str, Any]]]]) -> None:
  """`{split}.csv`: the written videos of each split in dataset-index order."""
  by_split: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
  for shard, rows in shard_rows:
    by_split[shard.split] += [r for r in rows if r['written']]
  for split, rows in by_split.items():
    with files.atomic_open(files.join(output_dir, f'{split}.csv'), newline='') as f:
      writer = csv.writer(f)
      writer.writerow(['index', 'video_id', 'source', 'label_index', 'label_name', 'duration'])
      for i, r in enumerate(rows):
        writer.writerow([i, r['video_id'], r['path'], r['label_index'], r['label_name'],
                         r['duration']])


def summary(manifest: dict[str, Any], output_dir: str) -> str:
  counts = manifest['counts']
  reasons = ', '.join(f'{k}: {v}' for k, v in counts['skip_reasons'].items())
  return (f'make_records: {counts["inputs"]} inputs: {counts["written"]} written, '
          f'{counts["skipped"]} skipped' + (f' ({reasons})' if reasons else '') +
          f', {counts["missing"]} listed but absent or unusable'
          f' -> {files.join(output_dir, MANIFEST)}')


def parse_inputs(dataset: str, given: dict[str, Any],
                 output_dir: str | None = None) -> annotations.Annotations:
  """Calls the annotation parser of `dataset` with the flags it takes.

  `input` goes to the parser's first argument (its folder, CSV or split folder), `video_dir` also to
  an `audio_dir`; a flag the parser does not take is an error, not silently ignored. A parser that
  scans folders gets `output_dir`, which it must not scan.
  """
  parser = annotations.PARSERS[dataset]
  names = list(inspect.signature(parser).parameters)
  kwargs: dict[str, Any] = {names[0]: files.local_or_url(given.pop('input'))}
  if 'output_dir' in names:
    kwargs['output_dir'] = output_dir
  for flag, value in given.items():
    if value is None:
      continue
    name = 'audio_dir' if flag == 'video_dir' and 'audio_dir' in names else flag
    if name not in names:
      raise app.UsageError(f'--{flag} does not apply to --dataset={dataset} (it takes '
                           f'{", ".join("--" + n for n in names[1:])})')
    kwargs[name] = files.local_or_url(value) if isinstance(value, str) and flag != 'file_pattern' \
        else value
  return parser(**kwargs)


def _require_entries(parsed: annotations.Annotations, where: str) -> None:
  """Stops before writing anything when there is nothing to convert (an empty folder, a wrong path
  or pattern), listing what was found instead, rather than writing an empty record set."""
  if parsed.entries:
    return
  found = '; '.join(f'{item}: {reason}' for item, reason in parsed.missing[:5])
  more = f' (and {len(parsed.missing) - 5} more)' if len(parsed.missing) > 5 else ''
  raise SystemExit(f'make_records: no media files to convert in {where}; nothing written. '
                   + (f'Not usable: {found}{more}' if found else 'Nothing is there.'))


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _OUTPUT_DIR.value or not _INPUT.value:
    raise app.UsageError('--input and --output_dir are required')
  output_dir = files.local_or_url(_OUTPUT_DIR.value)
  parsed = parse_inputs(_DATASET.value, {
      'input': _INPUT.value, 'video_dir': _VIDEO_DIR.value, 'split_dir': _SPLIT_DIR.value,
      'fold': _FOLD.value, 'file_pattern': _FILE_PATTERN.value}, output_dir)
  _require_entries(parsed, f'--input={_INPUT.value}')
  val_split = None
  if _VAL_FRACTION.value:
    pattern = _VAL_GROUP_PATTERN.value
    val_split = ValSplit(_VAL_FRACTION.value,
                         default_group_pattern(_DATASET.value) if pattern is None else pattern)
    parsed = carve_val(parsed, val_split)  # Before --splits, so the split never depends on it.
  if _SPLITS.value:
    parsed = dataclasses.replace(parsed, entries=[e for e in parsed.entries
                                                  if e.split in _SPLITS.value])
    _require_entries(parsed, f'--splits={",".join(_SPLITS.value)}')
  audio_only = _AUDIO_ONLY.value if _AUDIO_ONLY.value is not None else _DATASET.value == 'esc50'
  settings = Settings(
      fps=_FPS.value, short_side=_SHORT_SIDE.value or None, sample_rate=_SAMPLE_RATE.value,
      min_duration=_MIN_DURATION.value, flow=_FLOW.value, audio_only=audio_only,
      require_audio=_REQUIRE_AUDIO.value, jpeg_quality=_JPEG_QUALITY.value,
      examples_per_shard=_PER_SHARD.value, shard_seed=_SHARD_SEED.value)
  manifest = run(parsed, output_dir, settings, dataset=_DATASET.value, workers=_WORKERS.value,
                 val_split=val_split)
  print(summary(manifest, output_dir))


def cli() -> None:
  """The `avssl-make-records` command (a console script of the package), the same as
  `python -m avssl.data_prep.make_records`; `run` is the conversion itself."""
  # absl's --help shows the docstring of __main__ and the flags of the module sys.argv[0] names,
  # both the command's launcher here: give it those of this module.
  sys.modules['__main__'].__doc__ = __doc__
  for flag in flags.FLAGS.get_key_flags_for_module(__name__):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main)


if __name__ == '__main__':
  cli()
