"""A dataset's own annotation files (or a plain folder) as one list of media files to decode.

Every dataset ships its labels and splits in its own format; the record writer (`make_records.py`) should
not care which. Each parser here reads one format and returns `Annotations`: the entries to decode, the
class names their `label_index` points into, and every listed item that cannot become an entry with the
reason why (file absent, duplicate id, not a media file), so that nothing is dropped silently.

Parsers check their input strictly and name the file, the line and what is wrong, because a silently
mis-parsed label file costs a full record-writing run (hours for VGG-Sound) before anyone notices.
Entries come back sorted by split ('train', 'val', 'test') and then by `video_id`, so the same files
always give the same records in the same order.

Pure Python on purpose: listing a dataset must not need TensorFlow or JAX.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import os
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any, NamedTuple

from avssl import files

SPLITS = ('train', 'val', 'test')

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.webm', '.mov', '.m4v', '.mpg', '.mpeg', '.flv', '.ogv', '.3gp')
AUDIO_EXTENSIONS = ('.wav', '.flac', '.mp3', '.ogg', '.opus', '.m4a', '.aac')
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS

# The common VGG-Sound download (the 10 s clips as published) names files `{ytid}_{start:06d}.mp4`; the
# SeLaVi's release expects `{ytid}_{start}_{end}.mp4`, i.e. '{ytid}_{start}_{end}.mp4' here.
VGGSOUND_FILE_PATTERN = '{ytid}_{start:06d}.mp4'

# The layout the official Kinetics crawler (ActivityNet/Crawler/Kinetics) writes when given one output
# folder per split: class folders named by the CSV label, clips named `{youtube_id}_{start}_{end}.mp4`
# with 6-digit times. CVDF's tarballs have no class folders: '{split}/{youtube_id}_...'.
KINETICS_FILE_PATTERN = '{split}/{label}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4'

# Kinetics-Sound as SeLaVi evaluates it (Asano et al., NeurIPS 2020, K = 32 clusters; the class list is
# hard-coded in the released facebookresearch/selavi `datasets/AVideoDataset.py`), in released
# Kinetics-400 names. Arandjelović & Zisserman (L3-Net, ICCV 2017, appendix A1) define 34 classes, but on a
# pre-release Kinetics: 'typing', 'fingerpicking' and 'patting' have no Kinetics-400 class, and 'blowing
# out', 'dribbling ball', 'mowing the lawn by pushing lawnmower' and 'stomping' were renamed to 'blowing out
# candles', 'dribbling basketball', 'mowing lawn' and 'stomping grapes'. SeLaVi's list keeps the 31 that
# exist and adds 'strumming guitar'. This list is the one SeLaVi's Kinetics-Sound numbers were measured on,
# and every name in it can be found in the Kinetics-400 CSVs, so it is the one used here.
KINETICS_SOUND_CLASSES = (
    'blowing nose', 'blowing out candles', 'bowling', 'chopping wood', 'dribbling basketball', 'laughing',
    'mowing lawn', 'playing accordion', 'playing bagpipes', 'playing bass guitar', 'playing clarinet',
    'playing drums', 'playing guitar', 'playing harmonica', 'playing keyboard', 'playing organ',
    'playing piano', 'playing saxophone', 'playing trombone', 'playing trumpet', 'playing violin',
    'playing xylophone', 'ripping paper', 'shoveling snow', 'shuffling cards', 'singing', 'stomping grapes',
    'strumming guitar', 'tap dancing', 'tapping guitar', 'tapping pen', 'tickling')

_SPLIT_ORDER = {name: i for i, name in enumerate(SPLITS)}
_KINETICS_SPLITS = {'train': 'train', 'validate': 'val', 'val': 'val', 'test': 'test'}
_DUPLICATE = 'duplicate video_id'


@dataclasses.dataclass(frozen=True)
class Entry:
  """One media file (or one annotated segment of it) to decode into a record.

  Attributes:
    video_id: stable and unique within the dataset; records, self-labels and label files are keyed by it.
    path: absolute path of the media file.
    split: 'train', 'val' or 'test'.
    label_index: index into `Annotations.classes`; -1 when the dataset gives no label.
    label_name: the class name; '' when unknown.
    start: start (seconds) of the annotated segment within the file, when the dataset gives one.
    end: end (seconds) of that segment.
    fold: the dataset's fold (UCF-101, HMDB-51, ESC-50), else None.
  """
  video_id: str
  path: str
  split: str
  label_index: int = -1
  label_name: str = ''
  start: float | None = None
  end: float | None = None
  fold: int | None = None


@dataclasses.dataclass
class Annotations:
  """What a parser found.

  Attributes:
    entries: the files to decode, sorted by split then video_id.
    classes: class names; `classes[entry.label_index]` is the entry's label.
    missing: (video_id or path, reason) for each listed item that is not an entry, in listing order.
  """
  entries: list[Entry]
  classes: list[str]
  missing: list[tuple[str, str]]


def folder(root: str, extensions: Sequence[str] = MEDIA_EXTENSIONS, split: str | None = None,
           output_dir: str | None = None) -> Annotations:
  """A plain folder of media files: unlabelled, in class subfolders, or under train/val/test folders.

  Layouts: `root/file`, `root/{class}/file`, and SeLaVi's `root/{train,val,test}/{class}/file` (or
  `root/{split}/file`). A class is the index of its folder name among all class folder names, sorted, so
  that labels agree across splits. Without split folders everything is 'train'. The video_id is the path
  relative to root without its extension, with the bytes of a name that are not UTF-8 escaped
  (`escape_name`). Everything not converted is reported in `missing` with its reason: hidden entries
  (starting with '.'), entries that cannot be read (a symlink loop), records folders (`output_dir`, the
  one make_records writes to, and any folder holding a manifest.json, so an output folder inside `root`
  never becomes a class), files with an extension not in `extensions`, files outside the class folders
  and deeper folders.
  """
  _check_split(split)
  root = _video_directory(root, 'root')
  suffixes = tuple(_dotted(e) for e in extensions)
  missing: list[tuple[str, str]] = []
  scan = lambda folder_path: _list_dir(root, folder_path, missing, output_dir)
  top = scan('')
  top_dirs, top_files = top
  split_dirs = [d for d in top_dirs if d in SPLITS]
  if split_dirs:
    groups = [(d, d) for d in sorted(split_dirs, key=_SPLIT_ORDER.__getitem__)]
    for name in [d for d in top_dirs if d not in SPLITS] + top_files:
      missing.append((escape_name(name), 'outside the train/val/test folders'))
  else:
    groups = [('train', '')]
  found: list[tuple[str, str, str]] = []  # (split, class folder or '', relative path)
  class_names: set[str] = set()
  for group_split, group in groups:
    dirs, names = scan(group) if group else top
    if dirs:
      class_names.update(dirs)
      for name in names:
        missing.append((escape_name(_join(group, name)), 'not inside a class folder'))
      for class_name in dirs:
        class_dir = _join(group, class_name)
        nested, class_files = scan(class_dir)
        missing.extend((escape_name(_join(class_dir, d)), 'nested folder not scanned')
                       for d in nested)
        found.extend((group_split, class_name, _join(class_dir, f)) for f in class_files)
    else:
      found.extend((group_split, '', _join(group, f)) for f in names)
  index = {name: i for i, name in enumerate(sorted(class_names))}
  entries = []
  for entry_split, class_name, rel in found:
    stem, ext = os.path.splitext(rel)
    if ext.lower() not in suffixes:
      missing.append((escape_name(rel),
                      f'not a media file: extension {ext!r} is not one of {list(suffixes)}'))
      continue
    entries.append(Entry(escape_name(stem), os.path.join(root, rel), entry_split,
                         index.get(class_name, -1), escape_name(class_name)))
  return _assemble(entries, [escape_name(c) for c in sorted(class_names)], split, missing)


def escape_name(name: str) -> str:
  """`name` with each byte that is not UTF-8 written `%XX`: Latin-1 `caf\\xe9.mp4` gives `caf%E9.mp4`.

  Python hands such bytes of a file name over as lone surrogates (PEP 383), which no record, CSV or
  JSON file can hold as UTF-8; the escape is a fixed function of the bytes, so the id is the same on
  every run. A valid name spelling the same escape (`caf%E9`) is then a duplicate video_id, reported as
  one. The file itself is opened by its real name.
  """
  return ''.join(f'%{ord(c) - 0xDC00:02X}' if '\udc80' <= c <= '\udcff' else c for c in name)


def vggsound(csv_path: str, video_dir: str, file_pattern: str = VGGSOUND_FILE_PATTERN,
             split: str | None = None) -> Annotations:
  """VGG-Sound's `vggsound.csv`: rows `ytid,start_seconds,label,split`, no header, split 'train'/'test'.

  `file_pattern` gives the media file relative to `video_dir` from the fields ytid, start, end (start + 10:
  the clips are 10 s), label and split. The video_id is `{ytid}_{start}`. Classes are the labels of the
  whole file, sorted (309 in the released file).
  """
  _check_split(split)
  video_dir = _video_directory(video_dir, 'video_dir')
  rows = []
  for where, row in _read_csv(csv_path, 'VGG-Sound CSV'):
    if len(row) != 4:
      raise ValueError(f'{where}: expected 4 fields ytid,start_seconds,label,split, got {len(row)}: {row}')
    ytid, start_text, label, row_split = (field.strip() for field in row)
    if not ytid or not label:
      raise ValueError(f'{where}: empty YouTube id or label: {row}')
    if row_split not in ('train', 'test'):
      raise ValueError(f"{where}: split must be 'train' or 'test', got {row_split!r}")
    rows.append((where, ytid, _parse_int(start_text, where, 'start_seconds'), label, row_split))
  classes = sorted({label for _, _, _, label, _ in rows})
  index = {name: i for i, name in enumerate(classes)}
  entries = []
  for where, ytid, start, label, row_split in rows:
    fields = {'ytid': ytid, 'start': start, 'end': start + 10, 'label': label, 'split': row_split}
    path = os.path.join(video_dir, _format(file_pattern, fields, where))
    entries.append(Entry(f'{ytid}_{start}', path, row_split, index[label], label))
  return _assemble(entries, classes, split)


def kinetics400(csv_path: str | Sequence[str], video_dir: str, file_pattern: str = KINETICS_FILE_PATTERN,
                split: str | None = None) -> Annotations:
  """Kinetics-400's official CSVs (one or several), header `label,youtube_id,time_start,time_end,split`.

  The split column says 'train', 'validate' (made 'val') or 'test'; a test CSV without a label column
  gives unlabelled entries. `file_pattern` gives the media file relative to `video_dir` from the fields
  youtube_id, time_start, time_end, label (as in the CSV), label_underscored (spaces made '_', as some
  copies name their class folders) and split ('train', 'val', 'test'). The video_id is
  `{youtube_id}_{time_start:06d}_{time_end:06d}`. Classes are all labels of the given CSVs, sorted.
  """
  _check_split(split)
  video_dir = _video_directory(video_dir, 'video_dir')
  rows = _read_kinetics(csv_path)
  classes = sorted({row.label for row in rows if row.label})
  index = {name: i for i, name in enumerate(classes)}
  entries = [_kinetics_entry(row, video_dir, file_pattern, index.get(row.label, -1), row.label)
             for row in rows]
  return _assemble(entries, classes, split)


def kinetics_sound(csv_path: str | Sequence[str], video_dir: str, file_pattern: str = KINETICS_FILE_PATTERN,
                   split: str | None = None) -> Annotations:
  """Kinetics-Sound: the Kinetics-400 clips of the 32 `KINETICS_SOUND_CLASSES`, labelled 0..31.

  Labels are re-indexed over the subset in sorted order (not left in the 0..399 space of Kinetics-400),
  and keep their Kinetics names. Labels match with '_' read as a space. Arguments as for `kinetics400`; the
  CSVs must carry labels, since only labels select the subset, and must contain every class of the subset,
  which catches a CSV whose class names differ from Kinetics-400's.
  """
  _check_split(split)
  video_dir = _video_directory(video_dir, 'video_dir')
  rows = _read_kinetics(csv_path)
  unlabelled = next((row for row in rows if not row.label), None)
  if unlabelled is not None:
    raise ValueError(f'{unlabelled.where}: no label; Kinetics-Sound selects clips by label, so pass the '
                     'train/validate CSVs, not the unlabelled test CSV')
  classes = sorted(KINETICS_SOUND_CLASSES)
  index = {name: i for i, name in enumerate(classes)}
  keys = {row.label: ' '.join(row.label.replace('_', ' ').split()) for row in rows}
  absent = sorted(set(classes) - set(keys.values()))
  if absent:
    raise ValueError(f'Kinetics-Sound classes {absent} do not occur in {csv_path}; are these the '
                     'Kinetics-400 CSVs?')
  entries = [_kinetics_entry(row, video_dir, file_pattern, index[keys[row.label]], keys[row.label])
             for row in rows if keys[row.label] in index]
  return _assemble(entries, classes, split)


def ave(annotations_path: str, video_dir: str, split_dir: str | None = None,
        split: str | None = None) -> Annotations:
  """AVE: `Annotations.txt` and `trainSet.txt`, `valSet.txt`, `testSet.txt` in `split_dir`.

  Lines are `Category&VideoID&Quality&StartTime&EndTime` (a first line naming these fields is skipped).
  Classes are the categories of `Annotations.txt`, sorted (28). The split files say which events are in
  which split; `split_dir` defaults to the folder of `annotations_path`. Files are
  `{video_dir}/{VideoID}.mp4`; start and end are the event's segment. One video can hold several events,
  so the video_id is `{VideoID}_{start}_{end}`.
  """
  _check_split(split)
  video_dir = _video_directory(video_dir, 'video_dir')
  split_dir = _directory(split_dir or os.path.dirname(files.local_or_url(annotations_path)), 'split_dir')
  classes = sorted({row[0] for row in _read_ave(annotations_path)})
  index = {name: i for i, name in enumerate(classes)}
  entries = []
  for entry_split, file_name in (('train', 'trainSet.txt'), ('val', 'valSet.txt'), ('test', 'testSet.txt')):
    for category, video, start, end, where in _read_ave(files.join(split_dir, file_name)):
      if category not in index:
        raise ValueError(f'{where}: category {category!r} does not occur in {annotations_path}')
      entries.append(Entry(f'{video}_{start:g}_{end:g}', os.path.join(video_dir, f'{video}.mp4'), entry_split,
                           index[category], category, start, end))
  return _assemble(entries, classes, split)


def ucf101(split_dir: str, video_dir: str, fold: int = 1, split: str | None = None) -> Annotations:
  """UCF-101's official `ucfTrainTestlist`: `classInd.txt`, `trainlist0{fold}.txt`, `testlist0{fold}.txt`.

  `classInd.txt` numbers the classes from 1 ('1 ApplyEyeMakeup'); label_index is that number minus 1.
  Train lines are 'Class/v_Class_gXX_cYY.avi N', test lines carry no number and take the label of their
  class folder. Files are `{video_dir}/Class/v_...avi`; the video_id is 'Class/v_...' (path without
  extension).
  """
  _check_split(split)
  _check_fold(fold, 3)
  video_dir = _video_directory(video_dir, 'video_dir')
  classes = _read_class_index(files.join(split_dir, 'classInd.txt'))
  index = {name: i for i, name in enumerate(classes)}
  entries = []
  for entry_split, list_name in (('train', 'trainlist'), ('test', 'testlist')):
    for where, fields in _read_fields(files.join(split_dir, f'{list_name}{fold:02d}.txt'), 'UCF-101 list'):
      if len(fields) not in (1, 2):
        raise ValueError(f'{where}: expected "Class/video.avi" with an optional class number, got {fields}')
      rel = fields[0]
      class_name, _, name = rel.partition('/')
      if not name or '/' in name or class_name not in index:
        raise ValueError(f'{where}: {rel!r} is not "Class/video.avi" with a class of classInd.txt')
      if len(fields) == 2 and _parse_int(fields[1], where, 'class number') != index[class_name] + 1:
        raise ValueError(f'{where}: class number {fields[1]} is not that of {class_name!r} in classInd.txt '
                         f'({index[class_name] + 1})')
      entries.append(Entry(os.path.splitext(rel)[0], os.path.join(video_dir, rel), entry_split,
                           index[class_name], class_name, fold=fold))
  return _assemble(entries, classes, split)


def hmdb51(split_dir: str, video_dir: str, fold: int = 1, split: str | None = None) -> Annotations:
  """HMDB-51's official `testTrainMulti_7030_splits`: one `{class}_test_split{fold}.txt` per class.

  Lines are 'video.avi id' with id 1 = train, 2 = test and 0 = in neither (skipped, as the split defines).
  Classes are the class names of the split files, sorted (51). Files are `{video_dir}/{class}/video.avi`;
  the video_id is '{class}/video' (path without extension).
  """
  _check_split(split)
  _check_fold(fold, 3)
  video_dir = _video_directory(video_dir, 'video_dir')
  split_dir = _directory(split_dir, 'split_dir')
  suffix = f'_test_split{fold}.txt'
  split_files = sorted(name for name in files.listdir(split_dir) if name.endswith(suffix))
  if not split_files:
    raise FileNotFoundError(f'split_dir {split_dir} has no *{suffix} files '
                            '(HMDB-51 testTrainMulti_7030_splits)')
  classes = [name[:-len(suffix)] for name in split_files]
  entries = []
  for label_index, (class_name, file_name) in enumerate(zip(classes, split_files)):
    for where, fields in _read_fields(files.join(split_dir, file_name), 'HMDB-51 split'):
      if len(fields) != 2:
        raise ValueError(f'{where}: expected "video.avi id", got {fields}')
      name, tag = fields[0], _parse_int(fields[1], where, 'id')
      if tag not in (0, 1, 2):
        raise ValueError(f'{where}: id must be 0 (unused), 1 (train) or 2 (test), got {tag}')
      if tag:
        rel = f'{class_name}/{name}'
        entries.append(Entry(os.path.splitext(rel)[0], os.path.join(video_dir, rel),
                             'train' if tag == 1 else 'test', label_index, class_name, fold=fold))
  return _assemble(entries, classes, split)


def esc50(csv_path: str, audio_dir: str, fold: int | None = None, split: str | None = None) -> Annotations:
  """ESC-50's `meta/esc50.csv`, header `filename,fold,target,category,esc10,src_file,take`; audio only.

  label_index is `target`, label_name `category`. With `fold=k` the clips of fold k are 'test' and the
  others 'train' (the usual cross-validation); without, all are 'train'. Every entry keeps its fold. The
  video_id is the file name without extension.
  """
  _check_split(split)
  audio_dir = _video_directory(audio_dir, 'audio_dir')
  rows = _read_csv(csv_path, 'ESC-50 CSV')
  if not rows:
    raise ValueError(f'{csv_path}: empty; expected the header filename,fold,target,category,...')
  header = [name.strip() for name in rows[0][1]]
  columns = _columns(header, ('filename', 'fold', 'target', 'category'), (), rows[0][0])
  parsed = []
  for where, row in rows[1:]:
    if len(row) != len(header):
      raise ValueError(f'{where}: expected {len(header)} fields like the header, got {len(row)}: {row}')
    row_fold = _parse_int(row[columns['fold']], where, 'fold')
    target = _parse_int(row[columns['target']], where, 'target')
    if row_fold < 1 or target < 0:
      raise ValueError(f'{where}: fold must be >= 1 and target >= 0, got fold {row_fold}, target {target}')
    name, category = row[columns['filename']].strip(), row[columns['category']].strip()
    parsed.append((where, name, row_fold, target, category))
  folds = sorted({row_fold for _, _, row_fold, _, _ in parsed})
  if fold is not None and fold not in folds:
    raise ValueError(f'fold={fold} is not one of the folds of {csv_path}: {folds}')
  names: dict[int, str] = {}
  for where, _, _, target, category in parsed:
    if names.setdefault(target, category) != category:
      raise ValueError(f'{where}: target {target} is {category!r} here but {names[target]!r} earlier')
  if sorted(names) != list(range(len(names))):
    raise ValueError(f'{csv_path}: targets must be 0..{len(names) - 1}, '
                     f'missing {sorted(set(range(max(names) + 1)) - set(names))}')
  classes = [names[i] for i in range(len(names))]
  entries = [Entry(os.path.splitext(name)[0], os.path.join(audio_dir, name),
                   'test' if row_fold == fold else 'train', target, category, fold=row_fold)
             for _, name, row_fold, target, category in parsed]
  return _assemble(entries, classes, split)


PARSERS: dict[str, Callable[..., Annotations]] = {
    'folder': folder,
    'vggsound': vggsound,
    'kinetics400': kinetics400,
    'kinetics_sound': kinetics_sound,
    'ave': ave,
    'ucf101': ucf101,
    'hmdb51': hmdb51,
    'esc50': esc50,
}


def parse(name: str, **kwargs: Any) -> Annotations:
  """The annotations of dataset `name` (a key of `PARSERS`), parsed with that parser's arguments."""
  if name not in PARSERS:
    raise ValueError(f'unknown dataset {name!r}; known datasets: {", ".join(sorted(PARSERS))}')
  return PARSERS[name](**kwargs)


class _KineticsRow(NamedTuple):
  where: str
  label: str
  youtube_id: str
  time_start: int
  time_end: int
  split: str


def _read_kinetics(csv_paths: str | Sequence[str]) -> list[_KineticsRow]:
  """The rows of the Kinetics CSVs, in file order; the label is '' where the CSV has no label column."""
  rows = []
  for csv_path in [csv_paths] if isinstance(csv_paths, str) else csv_paths:
    records = _read_csv(csv_path, 'Kinetics CSV')
    if not records:
      raise ValueError(f'{csv_path}: empty; expected the header label,youtube_id,time_start,time_end,split')
    header = [name.strip() for name in records[0][1]]
    columns = _columns(header, ('youtube_id', 'time_start', 'time_end', 'split'), ('label',), records[0][0])
    for where, record in records[1:]:
      if len(record) != len(header):
        raise ValueError(f'{where}: expected {len(header)} fields like the header, '
                         f'got {len(record)}: {record}')
      field = {name: record[i].strip() for name, i in columns.items()}
      if field['split'] not in _KINETICS_SPLITS:
        raise ValueError(f'{where}: split must be one of {sorted(_KINETICS_SPLITS)}, got {field["split"]!r}')
      if not field['youtube_id'] or ('label' in field and not field['label']):
        raise ValueError(f'{where}: empty youtube_id or label: {record}')
      start = _parse_int(field['time_start'], where, 'time_start')
      end = _parse_int(field['time_end'], where, 'time_end')
      if not 0 <= start < end:
        raise ValueError(f'{where}: expected 0 <= time_start < time_end, got {start}, {end}')
      rows.append(_KineticsRow(where, field.get('label', ''), field['youtube_id'], start, end,
                               _KINETICS_SPLITS[field['split']]))
  return rows


def _kinetics_entry(row: _KineticsRow, video_dir: str, file_pattern: str, label_index: int,
                    label_name: str) -> Entry:
  fields = {'youtube_id': row.youtube_id, 'time_start': row.time_start, 'time_end': row.time_end,
            'split': row.split}
  if row.label:
    fields.update(label=row.label, label_underscored=row.label.replace(' ', '_'))
  path = os.path.join(video_dir, _format(file_pattern, fields, row.where))
  return Entry(f'{row.youtube_id}_{row.time_start:06d}_{row.time_end:06d}', path, row.split, label_index,
               label_name)


def _read_ave(path: str) -> list[tuple[str, str, float, float, str]]:
  """(category, VideoID, start, end, 'file:line') of each event in an AVE '&'-separated file."""
  events = []
  for i, (where, line) in enumerate(_read_lines(path, 'AVE annotation file')):
    fields = [field.strip() for field in line.split('&')]
    if len(fields) != 5:
      raise ValueError(f'{where}: expected 5 fields Category&VideoID&Quality&StartTime&EndTime, '
                       f'got {len(fields)}: {line!r}')
    if i == 0 and fields[:2] == ['Category', 'VideoID']:
      continue
    category, video, _, start_text, end_text = fields
    start, end = _parse_float(start_text, where, 'StartTime'), _parse_float(end_text, where, 'EndTime')
    if not category or not video or not 0 <= start <= end:
      raise ValueError(f'{where}: expected a category, a VideoID and 0 <= StartTime <= EndTime: {line!r}')
    events.append((category, video, start, end, where))
  return events


def _read_class_index(path: str) -> list[str]:
  """UCF-101's classInd.txt as a list of names, position = class number - 1."""
  numbered = {}
  for where, fields in _read_fields(path, 'UCF-101 classInd.txt'):
    if len(fields) != 2:
      raise ValueError(f'{where}: expected "number ClassName", got {fields}')
    number = _parse_int(fields[0], where, 'class number')
    if number in numbered:
      raise ValueError(f'{where}: class number {number} appears twice')
    numbered[number] = fields[1]
  if sorted(numbered) != list(range(1, len(numbered) + 1)):
    raise ValueError(f'{path}: class numbers must be 1..{len(numbered)}, got {sorted(numbered)}')
  return [numbered[i + 1] for i in range(len(numbered))]


def _assemble(entries: Iterable[Entry], classes: list[str], split: str | None,
              missing: Iterable[tuple[str, str]] = ()) -> Annotations:
  """Drops repeated video_ids (the first listed wins), keeps `split`, checks the files exist, sorts.

  Duplicates are found before the split filter so that an id listed in two splits is always reported.
  """
  missing = list(missing)
  seen: set[str] = set()
  kept = []
  for entry in entries:
    if entry.video_id in seen:
      missing.append((entry.video_id, _DUPLICATE))
      continue
    seen.add(entry.video_id)
    if split is not None and entry.split != split:
      continue
    if not os.path.isfile(entry.path):
      missing.append((entry.video_id, f'file not found: {entry.path}'))
      continue
    kept.append(entry)
  kept.sort(key=lambda entry: (_SPLIT_ORDER[entry.split], entry.video_id))
  return Annotations(kept, classes, missing)


def _open_text(path: str, what: str) -> IO[str]:
  if not files.exists(path) or files.isdir(path):
    raise FileNotFoundError(f'{what} {path} does not exist')
  return files.open(path, encoding='utf-8-sig', newline='')


def _read_lines(path: str, what: str) -> list[tuple[str, str]]:
  """('file:line', stripped line) for each non-blank line."""
  try:
    with _open_text(path, what) as f:
      lines = f.read().splitlines()
    return [(f'{path}:{i}', line.strip()) for i, line in enumerate(lines, 1) if line.strip()]
  except UnicodeDecodeError as e:
    raise ValueError(f'{what} {path} is not UTF-8 text: {e}') from e


def _read_fields(path: str, what: str) -> list[tuple[str, list[str]]]:
  """('file:line', whitespace-separated fields) for each non-blank line."""
  return [(where, line.split()) for where, line in _read_lines(path, what)]


def _read_csv(path: str, what: str) -> list[tuple[str, list[str]]]:
  """('file:line', fields) for each non-blank CSV record; quoted fields may hold commas."""
  try:
    with _open_text(path, what) as f:
      reader = csv.reader(f)
      return [(f'{path}:{reader.line_num}', row) for row in reader if any(field.strip() for field in row)]
  except (UnicodeDecodeError, csv.Error) as e:
    raise ValueError(f'{what} {path} cannot be read as CSV: {e}') from e


def _columns(header: list[str], required: Sequence[str], optional: Sequence[str],
             where: str) -> dict[str, int]:
  """Positions of the named header columns; raises naming the absent required ones."""
  absent = [name for name in required if name not in header]
  if absent:
    raise ValueError(f'{where}: header {header} lacks the columns {absent}')
  return {name: header.index(name) for name in (*required, *optional) if name in header}


def _parse_int(text: str, where: str, field: str) -> int:
  """A whole number, also when written '14.0' as some re-exported CSVs do."""
  value = _parse_float(text, where, field)
  if not value.is_integer():
    raise ValueError(f'{where}: {field} must be a whole number, got {text!r}')
  return int(value)


def _parse_float(text: str, where: str, field: str) -> float:
  try:
    return float(text)
  except ValueError:
    raise ValueError(f'{where}: {field} must be a number, got {text!r}') from None


def _format(pattern: str, fields: dict[str, Any], where: str) -> str:
  try:
    return pattern.format(**fields)
  except KeyError as e:
    raise ValueError(f'{where}: file_pattern {pattern!r} uses {{{e.args[0]}}}, but this row only gives '
                     f'{sorted(fields)}') from None
  except (ValueError, IndexError) as e:
    raise ValueError(f'{where}: file_pattern {pattern!r} cannot be filled from {fields}: {e}') from None


def _directory(path: str, what: str) -> str:
  """A folder of annotation files, local or at a URL, as an absolute path or the URL."""
  if not files.isdir(path):
    raise FileNotFoundError(f'{what} {path} is not a directory')
  return files.local_or_url(path)


def _video_directory(path: str, what: str) -> str:
  """A folder of media files: local, since PyAV decodes local files only."""
  if files.is_url(path):
    raise ValueError(f'{what} {path}: media files are decoded from local disk; copy them there '
                     '(gsutil -m cp -r) and pass the local folder')
  return _directory(path, what)


def _list_dir(root: str, folder_path: str, missing: list[tuple[str, str]],
              output_dir: str | None) -> tuple[list[str], list[str]]:
  """Sorted names of the subfolders and files of `root/folder_path` to scan; the others go to
  `missing` with their reason (hidden, unreadable, a records folder)."""
  output = os.path.realpath(output_dir) if output_dir else None
  dirs: list[str] = []
  names: list[str] = []
  for item in sorted(os.scandir(os.path.join(root, folder_path)), key=lambda item: item.name):
    where = escape_name(_join(folder_path, item.name))
    if item.name.startswith('.'):
      missing.append((where, 'hidden (the name starts with ".")'))
      continue
    try:
      is_dir = item.is_dir()
    except OSError as e:  # is_dir follows links; a loop of them cannot be resolved.
      missing.append((where, 'a symlink loop' if e.errno == errno.ELOOP else f'unreadable: {e}'))
      continue
    if is_dir and (os.path.realpath(item.path) == output
                   or files.exists(os.path.join(item.path, 'manifest.json'))):
      missing.append((where, 'a make_records output folder, never scanned as input'))
      continue
    (dirs if is_dir else names).append(item.name)
  return sorted(dirs), sorted(names)


def _join(folder_path: str, name: str) -> str:
  return f'{folder_path}/{name}' if folder_path else name


def _dotted(extension: str) -> str:
  return '.' + extension.lower().lstrip('.')


def _check_split(split: str | None) -> None:
  if split is not None and split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS} or None, got {split!r}')


def _check_fold(fold: int, count: int) -> None:
  if fold not in range(1, count + 1):
    raise ValueError(f'fold must be 1..{count}, got {fold!r}')
