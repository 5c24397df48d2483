"""avssl.data_prep.make_records: real files in, shards and a manifest out; bad files skipped and
reported."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from avssl.data import records, splits, video_io
from avssl.data_prep import annotations, make_records
from conftest import REPO


def _clip(path, seconds, fps=10, sample_rate=16000, with_audio=True, shade=0):
  frames = np.full((int(seconds * fps), 32, 48, 3), shade, np.uint8)
  frames[:, :8, :8] = 255
  t = np.arange(int(seconds * sample_rate)) / sample_rate
  waveform = (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32) if with_audio else None
  os.makedirs(os.path.dirname(path), exist_ok=True)
  video_io.write_video(str(path), frames, fps, waveform, sample_rate)


def _bad_folder(root):
  _clip(root / 'dogs' / 'good1.mp4', 2.0, shade=40)
  _clip(root / 'cats' / 'good2.mp4', 2.0, shade=90)
  _clip(root / 'dogs' / 'silent.mp4', 2.0, with_audio=False)
  _clip(root / 'cats' / 'short.mp4', 0.5)
  _clip(root / 'dogs' / 'whole.mp4', 4.0)
  data = (root / 'dogs' / 'whole.mp4').read_bytes()
  (root / 'dogs' / 'whole.mp4').unlink()
  (root / 'dogs' / 'cut.mp4').write_bytes(data[:len(data) // 2])
  (root / 'cats' / 'letter.mp4').write_text('Dear user, this is not a video.')


def _run_tool(*args):
  return subprocess.run([sys.executable, '-m', 'avssl.data_prep.make_records', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)


def test_bad_files_are_skipped_with_reasons_and_the_rest_converted(tmp_path):
  _bad_folder(tmp_path / 'videos')
  out = tmp_path / 'records'
  result = _run_tool('--dataset=folder', f'--input={tmp_path / "videos"}', f'--output_dir={out}',
                     '--fps=10', '--short_side=16', '--sample_rate=16000', '--min_duration=1.1',
                     '--workers=2')
  assert result.returncode == 0, result.stderr
  manifest = json.loads((out / 'manifest.json').read_text())
  reasons = {s['video_id']: s['reason'] for s in manifest['skipped']}
  assert set(reasons) == {'dogs/silent', 'cats/short', 'dogs/cut', 'cats/letter'}
  assert reasons['dogs/silent'] == 'no audio stream'
  assert reasons['cats/short'].startswith('too short: 0.50 s < min_duration 1.1 s')
  assert reasons['dogs/cut'].startswith('truncated: decoded')
  assert reasons['cats/letter'].startswith('not a readable media file')
  assert manifest['counts'] == {
      'inputs': 6, 'written': 2, 'skipped': 4, 'missing': 0,
      'skip_reasons': {'no audio stream': 1, 'not a readable media file': 1, 'too short': 1,
                       'truncated': 1}}
  assert result.stdout.strip().splitlines()[-1] == (
      'make_records: 6 inputs: 2 written, 4 skipped (no audio stream: 1, not a readable media '
      f'file: 1, too short: 1, truncated: 1), 0 listed but absent or unusable -> '
      f'{out / "manifest.json"}')
  assert manifest['classes'] == ['cats', 'dogs']
  assert manifest['splits']['train']['count'] == 2
  assert manifest['splits']['train']['class_counts'] == {'cats': 1, 'dogs': 1}
  for reason in reasons.values():
    assert reason in result.stderr  # Each skip is also reported as it happens.


def test_records_hold_the_decoded_video(tmp_path):
  _clip(tmp_path / 'videos' / 'a' / 'x.mp4', 2.0, shade=60)
  parsed = annotations.parse('folder', root=str(tmp_path / 'videos'))
  settings = make_records.Settings(fps=10, short_side=16, sample_rate=16000, min_duration=1.0,
                                   flow=False, audio_only=False, require_audio=True,
                                   jpeg_quality=95, examples_per_shard=4)
  make_records.run(parsed, str(tmp_path / 'out'), settings, dataset='folder', workers=0)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  (serialized,) = list(tf.data.TFRecordDataset(str(tmp_path / 'out' / 'train-00000-of-00001.tfrecord'))
                       .as_numpy_iterator())
  # Features in key order: the same record is the same bytes in every process.
  assert serialized == tf.train.SequenceExample.FromString(serialized).SerializeToString(
      deterministic=True)
  record = records.read(serialized)
  assert (record.video_id, record.split, record.label_index, record.label_name) == ('a/x', 'train',
                                                                                    0, 'a')
  assert record.source == str(tmp_path / 'videos' / 'a' / 'x.mp4')
  assert record.frames.shape == (20, 16, 24, 3) and record.waveform.shape == (32000,)
  assert (record.fps, record.sample_rate, record.duration) == (10.0, 16000, pytest.approx(2.0))
  table = (tmp_path / 'out' / 'train.csv').read_text().splitlines()
  assert table[1].startswith('0,a/x,')


def test_rerun_resumes_and_refuses_other_settings(tmp_path):
  for i in range(3):
    _clip(tmp_path / 'videos' / f'v{i}.mp4', 1.5, shade=30 * i)
  parsed = annotations.parse('folder', root=str(tmp_path / 'videos'))
  settings = make_records.Settings(fps=10, short_side=16, sample_rate=16000, min_duration=1.0,
                                   flow=False, audio_only=False, require_audio=True,
                                   jpeg_quality=90, examples_per_shard=2)
  out = str(tmp_path / 'out')
  first = make_records.run(parsed, out, settings, dataset='folder', workers=0)
  assert [s['count'] for s in first['splits']['train']['shards']] == [2, 1]
  shard = os.path.join(out, 'train-00001-of-00002.tfrecord')
  os.remove(shard)  # As if the run had stopped during the last shard.
  kept = os.path.getmtime(os.path.join(out, 'train-00000-of-00002.tfrecord'))
  second = make_records.run(parsed, out, settings, dataset='folder', workers=0)
  assert second == first
  assert os.path.getmtime(os.path.join(out, 'train-00000-of-00002.tfrecord')) == kept
  assert os.path.exists(shard)
  with pytest.raises(Exception, match='settings differ'):
    make_records.run(parsed, out, make_records.Settings(**{**settings.__dict__, 'fps': 25.0}),
                     dataset='folder', workers=0)
  with pytest.raises(Exception, match='settings differ'):
    make_records.run(parsed, out, dataclasses.replace(settings, shard_seed=1), dataset='folder',
                     workers=0)
  manifest_path = os.path.join(out, 'manifest.json')  # As an earlier make_records wrote it.
  with open(manifest_path) as f:
    earlier = json.load(f)
  del earlier['settings']['shard_seed']
  with open(manifest_path, 'w') as f:
    json.dump(earlier, f)
  with pytest.raises(Exception, match='cut in video_id order by an earlier make_records.*fresh'):
    make_records.run(parsed, out, settings, dataset='folder', workers=0)


def test_unwritable_output_keeps_finished_shards(tmp_path):
  for i in range(3):
    _clip(tmp_path / 'videos' / f'v{i}.mp4', 1.5)
  parsed = annotations.parse('folder', root=str(tmp_path / 'videos'))
  settings = make_records.Settings(fps=10, short_side=16, sample_rate=16000, min_duration=1.0,
                                   flow=False, audio_only=False, require_audio=True,
                                   jpeg_quality=90, examples_per_shard=2)
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'train-00001-of-00002.tfrecord.tmp').mkdir()  # The second shard cannot be written.
  with pytest.raises(SystemExit, match='cannot write .*train-00001-of-00002.tfrecord.*resume'):
    make_records.run(parsed, str(out), settings, dataset='folder', workers=0)
  assert (out / 'train-00000-of-00002.tfrecord').exists()
  assert (out / 'train-00000-of-00002.json').exists()


def test_flags_that_do_not_apply_are_errors():
  from absl import app  # pylint: disable=g-import-not-at-top
  with pytest.raises(app.UsageError, match='--fold does not apply to --dataset=folder'):
    make_records.parse_inputs('folder', {'input': str(REPO), 'fold': 2})


def _ucf_like(classes=4, clips=2):
  """UCF-101's naming without files: groups 8-25 train, 1-7 test, `clips` clips per class and group."""
  entries = [annotations.Entry(f'C{c}/v_C{c}_g{g:02d}_c{k:02d}', f'/nowhere/C{c}/{g}_{k}.avi',
                               'train' if g >= 8 else 'test', c, f'C{c}', fold=1)
             for c in range(classes) for g in range(1, 26) for k in range(clips)]
  return annotations.Annotations(entries, [f'C{c}' for c in range(classes)], [])


def _group(video_id):
  return video_id.split('_g')[1][:2]


def test_val_split_takes_whole_groups_of_train_stratified_by_class():
  from absl import app  # pylint: disable=g-import-not-at-top
  parsed = _ucf_like()
  val_split = make_records.ValSplit(0.1, make_records.default_group_pattern('ucf101'))
  carved = make_records.carve_val(parsed, val_split)
  assert carved == make_records.carve_val(parsed, val_split)  # The same split on every run.
  before = {e.video_id: e for e in parsed.entries}
  assert sorted(before) == sorted(e.video_id for e in carved.entries)
  by_split = {s: [e for e in carved.entries if e.split == s] for s in ('train', 'val', 'test')}
  assert by_split['test'] == [e for e in parsed.entries if e.split == 'test']
  assert all(before[e.video_id].split == 'train' for e in by_split['val'])
  val_groups = {_group(e.video_id) for e in by_split['val']}
  assert not val_groups & {_group(e.video_id) for e in by_split['train']}
  # Each of the 18 train groups holds 2 videos per class; 10 % of a class's 36 is 3.6 videos, which
  # two whole groups (4 per class) come closest to.
  assert len(val_groups) == 2 and len(by_split['val']) == 16
  assert all(sum(e.label_index == c for e in by_split['val']) == 4 for c in range(4))
  assert [e.split for e in carved.entries] == sorted((e.split for e in carved.entries),
                                                     key=annotations.SPLITS.index)
  singles = make_records.carve_val(parsed, make_records.ValSplit(0.1, ''))
  assert sum(e.split == 'val' for e in singles.entries) == 16  # round(3.6) = 4 per class.
  assert make_records.default_group_pattern('folder') == ''
  with pytest.raises(app.UsageError, match='has its own val split'):
    make_records.carve_val(carved, val_split)
  with pytest.raises(app.UsageError, match='does not match the group pattern.*--val_group_pattern'):
    make_records.carve_val(parsed, make_records.ValSplit(0.1, r'_p(\d+)_'))
  with pytest.raises(app.UsageError, match=r'--val_fraction must be in \(0, 1\)'):
    make_records.carve_val(parsed, make_records.ValSplit(1.0, ''))


_AVSYNTH_GROUP = r'avsynth_\d{5}(\d)'  # The last digit of the clip index: 10 groups across classes.


def _avsynth_settings():
  return make_records.Settings(fps=10.0, short_side=40, sample_rate=16000, min_duration=1.0,
                               flow=False, audio_only=False, require_audio=True, jpeg_quality=90,
                               examples_per_shard=8)


def _table(path):
  import csv  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    return list(csv.DictReader(f))


def test_val_split_records_resume_and_feed_the_eval_stream(avsynth_records, tmp_path):
  from absl import app  # pylint: disable=g-import-not-at-top
  from avssl.data import audio, pipeline  # pylint: disable=g-import-not-at-top
  videos = os.path.join(os.path.dirname(avsynth_records), 'videos')
  parsed = annotations.parse('folder', root=videos)
  val_split = make_records.ValSplit(0.2, _AVSYNTH_GROUP)
  out = str(tmp_path / 'records')
  manifest = make_records.run(make_records.carve_val(parsed, val_split), out, _avsynth_settings(),
                              dataset='folder', workers=0, val_split=val_split)
  counts = manifest['splits']
  assert sorted(counts) == ['test', 'train', 'val']
  assert counts['train']['count'] + counts['val']['count'] == 58 and counts['test']['count'] == 6
  assert 0.1 < counts['val']['count'] / 58 < 0.35
  assert all(s['file'].startswith('val-') for s in counts['val']['shards'])
  assert set(counts['val']['class_counts']) == set(counts['train']['class_counts'])
  assert manifest['val_split'] == {'fraction': 0.2, 'group_pattern': _AVSYNTH_GROUP, 'seed': 0}
  tables = {s: _table(os.path.join(out, f'{s}.csv')) for s in counts}
  ids = {s: {r['video_id'] for r in rows} for s, rows in tables.items()}
  assert not ids['train'] & ids['val'] and not ids['val'] & ids['test']
  assert ids['train'] | ids['val'] == {e.video_id for e in parsed.entries if e.split == 'train'}
  group = lambda video_id: splits.group_of(video_id, _AVSYNTH_GROUP)
  assert not {group(i) for i in ids['train']} & {group(i) for i in ids['val']}
  # Rerun: the same split, nothing converted again; another fraction is refused.
  again = make_records.carve_val(annotations.parse('folder', root=videos), val_split)
  assert make_records.run(again, out, _avsynth_settings(), dataset='folder', workers=0,
                          val_split=val_split) == manifest
  other = make_records.ValSplit(0.3, _AVSYNTH_GROUP)
  with pytest.raises(app.UsageError, match='val split .* fresh --output_dir'):
    make_records.run(make_records.carve_val(parsed, other), out, _avsynth_settings(),
                     dataset='folder', workers=0, val_split=other)
  # The input pipeline evaluates on it.
  logmel = audio.default_config('logmel')
  logmel.num_mel_bins, logmel.num_frames = 16, 8
  config = pipeline.default_config(dir=out, eval_split='val', num_frames=4, min_resize=40,
                                   max_resize=40, crop_size=32, eval_resize=40, audio_seconds=0.4,
                                   volume_jitter=0.0, audio=logmel)
  source = pipeline.RecordSource(config, batch_size=4, process_index=0, process_count=1, seed=0)
  assert (source.num_train, source.num_eval) == (counts['train']['count'], counts['val']['count'])
  seen = {int(i): int(label) for batch in source.eval_batches()
          for i, label, m in zip(batch['index'], batch['label'], batch['mask']) if m}
  assert seen == {int(r['index']): int(r['label_index']) for r in tables['val']}


def test_val_split_flags_give_the_same_split_whatever_splits_are_written(avsynth_records, tmp_path):
  videos = os.path.join(os.path.dirname(avsynth_records), 'videos')
  val_split = make_records.ValSplit(0.2, _AVSYNTH_GROUP)
  carved = make_records.carve_val(annotations.parse('folder', root=videos), val_split)
  result = _run_tool('--dataset=folder', f'--input={videos}', f'--output_dir={tmp_path}',
                     '--fps=10', '--short_side=40', '--sample_rate=16000', '--min_duration=1.0',
                     '--workers=0', '--splits=val', '--val_fraction=0.2',
                     f'--val_group_pattern={_AVSYNTH_GROUP}')
  assert result.returncode == 0, result.stderr
  manifest = json.loads((tmp_path / 'manifest.json').read_text())
  assert list(manifest['splits']) == ['val']
  assert manifest['val_split'] == dataclasses.asdict(val_split)
  assert sorted(r['video_id'] for r in _table(tmp_path / 'val.csv')) == [
      e.video_id for e in carved.entries if e.split == 'val']


def test_an_empty_input_is_an_error_naming_it(tmp_path):
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / '.DS_Store').write_text('')
  result = _run_tool('--dataset=folder', f'--input={tmp_path / "empty"}',
                     f'--output_dir={tmp_path / "records"}')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      f'make_records: no media files to convert in --input={tmp_path / "empty"}; nothing written. '
      'Not usable: .DS_Store: hidden (the name starts with ".")']
  assert not (tmp_path / 'records').exists()


def test_what_is_not_converted_is_listed_and_an_output_folder_inside_the_input_is_no_class(
    tmp_path):
  videos = tmp_path / 'videos'
  _clip(videos / 'dogs' / 'rex.mp4', 1.5)
  _clip(videos / '.trash' / 'old.mp4', 1.5)
  _clip(videos / 'cats' / 'tmp.mp4', 1.5, shade=90)
  os.rename(videos / 'cats' / 'tmp.mp4', os.fsencode(videos / 'cats') + b'/caf\xe9.mp4')  # Latin-1.
  os.symlink('b.mp4', videos / 'cats' / 'a.mp4')
  os.symlink('a.mp4', videos / 'cats' / 'b.mp4')
  out = videos / 'records'
  result = _run_tool('--dataset=folder', f'--input={videos}', f'--output_dir={out}', '--fps=10',
                     '--short_side=16', '--sample_rate=16000', '--min_duration=1.0', '--workers=0')
  assert result.returncode == 0, result.stderr
  first = json.loads((out / 'manifest.json').read_text())
  # The second run, through the API: the output folder is recognised by its manifest.json alone.
  parsed = annotations.parse('folder', root=str(videos))
  settings = make_records.Settings(**first['settings'])
  second = make_records.run(parsed, str(out), settings, dataset='folder', workers=0)
  for manifest in (first, second):
    assert manifest['classes'] == ['cats', 'dogs']
    assert manifest['counts']['written'] == 2 and manifest['inputs'] == first['inputs']
  not_converted = {'.trash': 'hidden (the name starts with ".")', 'cats/a.mp4': 'a symlink loop',
                   'cats/b.mp4': 'a symlink loop'}
  assert {m['item']: m['reason'] for m in first['missing']} == not_converted
  assert {m['item']: m['reason'] for m in second['missing']} == {
      **not_converted, 'records': 'a make_records output folder, never scanned as input'}
  sources = {r['video_id']: r['source'] for r in _table(out / 'train.csv')}
  assert sorted(sources) == ['cats/caf%E9', 'dogs/rex']
  assert sources['cats/caf%E9'] == f'{videos}/cats/caf%E9.mp4'



def _shards(directory, split='train'):
  """[(dataset index, record) of each record of a shard] per shard of `split`, in manifest order."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  manifest = json.loads((directory / 'manifest.json').read_text())
  return [[(shard['offset'] + position, records.read(serialized)) for position, serialized
           in enumerate(tf.data.TFRecordDataset(str(directory / shard['file'])).as_numpy_iterator())]
          for shard in manifest['splits'][split]['shards']]


def test_shards_of_class_folders_mix_the_classes_and_keep_indices(class_folder_records):
  """Class-foldered ids sort by class: cut in id order, each of the 4 shards of 16 holds 2 of the 8
  classes. Ordered by a hash of the ids, each holds most of them, as random shards would (7.3 on
  average), and the table's rows still are the records' indices, ids and labels."""
  from avssl.data import class_mix  # pylint: disable=g-import-not-at-top
  mixed, old = (pathlib.Path(d) for d in class_folder_records)
  classes = {}
  for directory in (mixed, old):
    shards = _shards(directory)
    classes[directory] = [len({r.label_index for _, r in shard}) for shard in shards]
    stored = [pair for shard in shards for pair in shard]
    table = _table(directory / 'train.csv')
    assert [int(r['index']) for r in table] == [i for i, _ in stored] == list(range(64))
    for index, record in stored:
      assert (table[index]['video_id'], int(table[index]['label_index'])) == (
          record.video_id, record.label_index)
  assert classes[old] == [2, 2, 2, 2]
  assert min(classes[mixed]) >= 6
  assert class_mix.expected_classes([8] * 8, 16) == pytest.approx(7.32, abs=0.01)
  mixed_ids = [r['video_id'] for r in _table(mixed / 'train.csv')]
  entries = annotations.parse('folder', root=str(mixed.parent / 'videos')).entries
  plan = lambda seed: [e.video_id for s in make_records.plan_shards(entries, 16, seed)
                       for e in s.entries]
  assert plan(0) == mixed_ids != sorted(mixed_ids)  # A fixed function of the ids and the seed ...
  assert plan(1) != plan(0) and sorted(plan(1)) == sorted(mixed_ids)  # ... which --shard_seed sets.
