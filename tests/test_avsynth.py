"""avsynth: the class structure of SeLaVi's Table 2, nuisance-robust patterns, mp4 files, the CLI."""

import json
import os

import numpy as np
import pytest

from avssl.data import synthetic, video_io
from avssl.data_prep import make_synthetic

SMALL = synthetic.AvsynthSpec(num_videos=96, num_classes=8, size=32, fps=8.0, duration=1.0, seed=3)


def _groups(pattern, k: int) -> list[set[int]]:
  groups: dict[int, set[int]] = {}
  for c in range(k):
    groups.setdefault(pattern(c, k), set()).add(c)
  return list(groups.values())


@pytest.mark.parametrize('k', [3, 5, 8, 9, 16, 64])
def test_each_modality_alone_merges_pairs_and_both_name_the_class(k):
  for c in range(k):
    assert synthetic.visual_pattern(c, k) == c // 2
    assert synthetic.sound_pattern(c, k) == ((c + 1) % k) // 2
  looks, sounds = _groups(synthetic.visual_pattern, k), _groups(synthetic.sound_pattern, k)
  assert len(looks) == len(sounds) == synthetic.num_patterns(k)
  assert sorted(len(g) for g in looks) == sorted(len(g) for g in sounds) == [1] * (k % 2) + [2] * (
      k // 2)
  assert {c // 2 * 2 for g in looks for c in g if len(g) == 2} == set(range(0, k - 1, 2))
  assert not {frozenset(g) for g in looks} & {frozenset(g) for g in sounds}
  both = {(synthetic.visual_pattern(c, k), synthetic.sound_pattern(c, k)) for c in range(k)}
  assert len(both) == k
  assert synthetic.class_name(3, 8) == 'c03_v1_a2'


def test_the_first_40_patterns_differ_in_at_least_two_attributes():
  for p in range(40):
    for q in range(p + 1, 40):
      a, b = synthetic.visual_attributes(p), synthetic.visual_attributes(q)
      hue = min(abs(a.hue - b.hue), 1 - abs(a.hue - b.hue))
      assert (a.shape != b.shape) + (a.path != b.path) + (a.speed != b.speed) + (hue >= 1 / 12) >= 2
      a, b = synthetic.sound_attributes(p), synthetic.sound_attributes(q)
      semitones = abs(12 * np.log2(a.pitch / b.pitch))
      assert ((a.timbre != b.timbre) + (a.beat_rate != b.beat_rate) + (a.duty != b.duty)
              + (semitones >= 4)) >= 2


def test_clips_are_deterministic_and_nuisances_differ_between_clips():
  frames, waveform, label, _ = synthetic.render_clip(SMALL, 5)
  assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
  assert waveform.shape == (16000,) and waveform.dtype == np.float32
  assert np.abs(waveform).max() <= 1.0
  again = synthetic.render_clip(SMALL, 5)
  np.testing.assert_array_equal(frames, again[0])
  np.testing.assert_array_equal(waveform, again[1])
  assert label == again[2] == synthetic.class_of(5, SMALL)
  same_class = [i for i in range(SMALL.num_videos) if synthetic.class_of(i, SMALL) == label]
  other = synthetic.render_clip(SMALL, same_class[1] if same_class[0] == 5 else same_class[0])
  assert np.abs(frames.astype(float) - other[0]).mean() > 5
  assert not np.allclose(waveform, other[1], atol=0.05)
  larger = synthetic.AvsynthSpec(**{**vars(SMALL), 'size': 48})
  np.testing.assert_array_equal(synthetic.render_clip(larger, 5)[1], waveform)


def _visual_statistics(spec, index):
  """Mean colour of the class object, its area, its median step per frame; the frames and coverage."""
  label = synthetic.class_of(index, spec)
  frames, coverage, _ = synthetic.render_video(
      spec, synthetic.visual_pattern(label, spec.num_classes),
      np.random.default_rng([spec.seed, 2, index]))
  np.testing.assert_array_equal(frames, synthetic.render_clip(spec, index)[0])
  colour = frames[coverage > 0.99].mean(0) / 255
  grid = np.arange(spec.size) + 0.5
  area = coverage.sum((1, 2))
  centres = np.stack([(coverage.sum(1) * grid).sum(1), (coverage.sum(2) * grid).sum(1)], 1)
  step = np.median(np.linalg.norm(np.diff(centres / area[:, None], axis=0), axis=1))
  return colour, area.mean(), step, frames, coverage


def test_classes_that_share_a_visual_pattern_look_alike_and_others_do_not():
  assert len({synthetic.class_of(i, SMALL) for i in range(48)}) == 8
  stats = {}
  for index in range(48):
    label = synthetic.class_of(index, SMALL)
    stats.setdefault(synthetic.visual_pattern(label, 8), []).append(
        _visual_statistics(SMALL, index)[:3])
  for v, clips in stats.items():
    look = synthetic.visual_attributes(v)
    for colour, area, step in clips:
      np.testing.assert_allclose(colour, look.colour, atol=3 / 255)
      np.testing.assert_allclose(area, clips[0][1], rtol=0.03)
      np.testing.assert_allclose(step, look.speed * SMALL.size / SMALL.fps, rtol=0.1)
  colours = np.array([clips[0][0] for clips in stats.values()])
  distances = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
  assert distances[~np.eye(len(colours), dtype=bool)].min() > 0.3


def test_saturated_pixels_name_the_visual_pattern_despite_background_and_distractor():
  palette = np.array([synthetic.visual_attributes(v).colour for v in range(4)])
  for index in range(24):
    frames = synthetic.render_clip(SMALL, index)[0].reshape(-1, 3) / 255
    saturation = 1 - frames.min(1) / np.maximum(frames.max(1), 1e-6)
    colour = np.median(frames[saturation > 0.75], axis=0)
    nearest = np.argmin(np.linalg.norm(palette - colour, axis=1))
    assert nearest == synthetic.visual_pattern(synthetic.class_of(index, SMALL), 8)


def test_the_dominant_frequency_names_the_sound_pattern_at_any_snr():
  spec = synthetic.AvsynthSpec(**{**vars(SMALL), 'num_classes': 16, 'snr_db': (0.0, 20.0)})
  pitches = np.array([synthetic.sound_attributes(a).pitch for a in range(8)])
  for index in range(48):
    waveform = synthetic.render_clip(spec, index)[1]
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    peak = np.argmax(spectrum) * spec.sample_rate / len(waveform)
    nearest = np.argmin(np.abs(np.log(pitches / peak)))
    assert nearest == synthetic.sound_pattern(synthetic.class_of(index, spec), 16)
    assert abs(peak - pitches[nearest]) < 3


def test_flow_friendly_objects_are_textured_and_move_little_per_frame():
  spec = synthetic.AvsynthSpec(**{**vars(SMALL), 'size': 64, 'fps': 4.0, 'flow_friendly': True})
  for index in range(8):
    _, _, step, frames, coverage = _visual_statistics(spec, index)
    assert step <= 0.05 * spec.size + 0.1
    assert frames[coverage > 0.99].std(0).max() > 20


def test_balanced_zipf_and_stratified_test_split():
  balanced = synthetic.AvsynthSpec(num_videos=80, num_classes=8)
  y = synthetic.labels(balanced)
  assert all(sorted(y[i:i + 8]) == list(range(8)) for i in range(0, 80, 8))
  zipf = synthetic.AvsynthSpec(num_videos=2000, num_classes=8, balance='zipf', zipf_exponent=1.0)
  counts = np.bincount(synthetic.labels(zipf), minlength=8)
  assert counts.sum() == 2000 and np.all(np.diff(counts) <= 0)
  np.testing.assert_allclose(counts, 2000 / np.arange(1, 9) / np.sum(1 / np.arange(1, 9)), atol=1)
  flat = synthetic.AvsynthSpec(num_videos=80, num_classes=8, balance='zipf', zipf_exponent=0.0)
  np.testing.assert_array_equal(np.bincount(synthetic.labels(flat)), [10] * 8)
  test = synthetic.test_mask(zipf)
  np.testing.assert_array_equal(np.bincount(synthetic.labels(zipf)[test], minlength=8),
                                np.floor(counts * zipf.test_fraction + 0.5))
  assert synthetic.split_of(int(np.flatnonzero(test)[0]), zipf) == 'test'
  resized = synthetic.AvsynthSpec(**{**vars(zipf), 'size': 32})
  np.testing.assert_array_equal(synthetic.labels(resized), synthetic.labels(zipf))
  with pytest.raises(ValueError, match='balance'):
    synthetic.AvsynthSpec(balance='long-tail')
  with pytest.raises(ValueError, match='num_classes=2'):
    synthetic.AvsynthSpec(num_classes=2)


def test_a_written_clip_decodes_to_its_frames_and_sound(tmp_path):
  frames, waveform, _, _ = synthetic.render_clip(SMALL, 0)
  path = str(tmp_path / 'clip.mp4')
  video_io.write_video(path, frames, SMALL.fps, waveform, SMALL.sample_rate)
  decoded = video_io.decode(path, fps=SMALL.fps, short_side=None, sample_rate=SMALL.sample_rate)
  assert decoded.frames.shape == (SMALL.num_frames, 32, 32, 3)
  assert decoded.waveform.shape == (SMALL.num_samples,)
  assert np.abs(decoded.frames.astype(float) - frames).mean() < 8
  assert np.sqrt(np.mean((decoded.waveform - waveform) ** 2)) < 0.1 * np.sqrt(np.mean(waveform ** 2))


def test_the_command_line_tool_writes_the_selavi_layout_and_resumes(tmp_path, capsys):
  argv = ['--output_dir', str(tmp_path), '--num_videos', '10', '--num_classes', '4', '--size', '32',
          '--fps', '4', '--duration', '1', '--test_fraction', '0.2', '--workers', '1']
  info = make_synthetic.main(argv)
  videos = sorted(os.path.relpath(os.path.join(d, f), tmp_path)
                  for d, _, files in os.walk(tmp_path) for f in files if f.endswith('.mp4'))
  assert len(videos) == 10
  assert {v.split(os.sep)[0] for v in videos} == {'train', 'test'}
  assert {v.split(os.sep)[1] for v in videos} == {'c00_v0_a0', 'c01_v0_a1', 'c02_v1_a1', 'c03_v1_a0'}
  with open(tmp_path / 'avsynth.json') as f:
    assert json.load(f) == json.loads(json.dumps(info))
  for split in ('train', 'test'):
    for name, n in info['counts'][split].items():
      assert sum(v.startswith(os.path.join(split, name, '')) for v in videos) == n
  assert [c['sound_pattern'] for c in info['classes']] == [0, 1, 1, 0]
  assert '10 clips written, 0 already there' in capsys.readouterr().out

  kept = tmp_path / videos[0]
  mtime = os.stat(kept).st_mtime_ns
  os.remove(tmp_path / videos[1])
  make_synthetic.main(argv)
  assert '1 clips written, 9 already there' in capsys.readouterr().out
  assert os.path.exists(tmp_path / videos[1]) and os.stat(kept).st_mtime_ns == mtime
  assert not os.path.exists(tmp_path / '.partial')
  with pytest.raises(SystemExit, match='different spec'):
    make_synthetic.main(argv + ['--seed', '1'])
