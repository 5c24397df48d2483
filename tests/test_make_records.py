"""data_prep.make_records: real files in, shards and a manifest out; bad files skipped and reported."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from avssl.data import records, video_io
from data_prep import annotations, make_records
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
  return subprocess.run([sys.executable, '-m', 'data_prep.make_records', *args], cwd=REPO,
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
