"""avnuisance (the class in a small object and a short sound among strong nuisances) and the factors
table make_synthetic writes for it and for avsynth."""

import colorsys
import csv
import os

import numpy as np
import pytest

from avssl.data import synthetic
from avssl.data_prep import annotations, make_records, make_synthetic

SMALL = synthetic.NuisanceSpec(num_videos=40, num_classes=10, size=32, fps=8.0, duration=1.0,
                               event_seconds=0.3, seed=2)


def test_every_class_is_its_own_shape_path_pitch_and_timbre():
  looks = [synthetic.nuisance_attributes(c, 20) for c in range(20)]
  assert len({(a.shape, a.path) for a in looks}) == 20
  pitches = np.array([a.pitch for a in looks])
  np.testing.assert_allclose(np.diff(12 * np.log2(pitches)), 12 * 3.5 / 20)  # 2.1 semitones apart
  assert synthetic.nuisance_class_name(3, 10) == 'c03_ring_orbit'
  with pytest.raises(ValueError, match='num_classes=21 must be 2 to 20'):
    synthetic.NuisanceSpec(num_classes=21)
  with pytest.raises(ValueError, match='event_seconds=2.0'):
    synthetic.NuisanceSpec(event_seconds=2.0)


def test_the_nuisances_do_not_depend_on_the_class():
  """The same random stream gives the same nuisances to any class: only the object and the event
  change."""
  video = [synthetic.render_nuisance_video(SMALL, c, np.random.default_rng(7)) for c in (0, 1)]
  sound = [synthetic.render_nuisance_audio(SMALL, c, np.random.default_rng(7)) for c in (0, 1)]
  assert video[0][2] == video[1][2] and sound[0][2] == sound[1][2] and sound[0][1] == sound[1][1]
  outside = (video[0][1] == 0) & (video[1][1] == 0)
  np.testing.assert_array_equal(video[0][0][outside], video[1][0][outside])
  assert not np.array_equal(video[0][1], video[1][1])


def _hue_bin(rgb: np.ndarray) -> int:
  return min(int(colorsys.rgb_to_hsv(*(rgb / 255))[0] * 6), 5)


@pytest.mark.parametrize('index', range(12))
def test_the_factors_are_what_the_clip_shows(index):
  """Each binned factor, read back from the pixels and the samples."""
  label = synthetic.class_of(index, SMALL)
  frames, coverage, look = synthetic.render_nuisance_video(
      SMALL, label, np.random.default_rng([SMALL.seed, 2, index]))
  waveform, (onset, end), sound = synthetic.render_nuisance_audio(
      SMALL, label, np.random.default_rng([SMALL.seed, 3, index]))
  clip = synthetic.render_nuisance_clip(SMALL, index)
  assert clip.factors == {'class': label, **look, **sound} and clip.label == label
  np.testing.assert_array_equal(clip.frames, frames)
  background = frames[coverage == 0].astype(float)
  if look['texture'] == 'flat':
    assert background.std(0).max() < 1.0
    assert _hue_bin(background.mean(0)) == look['background_hue']
  else:
    assert background.std(0).max() > 5.0
  inside = frames[coverage > 0.99].astype(float)
  assert _hue_bin(inside.mean(0)) == look['object_hue']
  value = lambda x: x.max(axis=-1).mean()  # HSV's value: the object is 0.3 to 0.45 off the level.
  assert abs(value(inside) - value(background)) > 0.2 * 255
  peak_db = 20 * np.log10(np.abs(waveform).max())
  assert int((peak_db + 30) / 29 * 3) == sound['loudness']
  assert end - onset == round(0.3 * SMALL.sample_rate)
  assert min(int(onset / (SMALL.num_samples - (end - onset) + 1) * 4), 3) == sound['onset']
  noise = np.concatenate([waveform[:onset], waveform[end:]])
  power = np.abs(np.fft.rfft(noise)) ** 2
  freqs = np.fft.rfftfreq(len(noise), 1 / SMALL.sample_rate)
  low, high = power[(freqs > 200) & (freqs < 800)].mean(), power[(freqs > 3200)].mean()
  slope = np.log2(high / low) / np.log2(4800 / 450)  # the exponent of power ∝ frequency^x
  assert abs(slope - synthetic.NOISE_COLOURS[sound['noise_colour']]) < 0.35


def test_the_event_is_what_the_class_plays_at_its_pitch():
  for index in range(10):
    label = synthetic.class_of(index, SMALL)
    waveform, (onset, end), _ = synthetic.render_nuisance_audio(
        SMALL, label, np.random.default_rng([SMALL.seed, 3, index]))
    event = waveform[onset:end] * np.hanning(end - onset)
    freqs = np.fft.rfftfreq(end - onset, 1 / SMALL.sample_rate)
    power = np.abs(np.fft.rfft(event)) ** 2
    pitch = synthetic.nuisance_attributes(label, SMALL.num_classes).pitch
    near = np.abs(freqs - pitch) < 15
    assert power[near].max() > 3 * np.median(power)


def _read_factors(directory):
  with open(os.path.join(directory, 'factors.csv')) as f:
    return list(csv.reader(f))


@pytest.mark.parametrize('nuisance', [False, True])
def test_factors_csv_names_the_records_videos_and_holds_the_drawn_values(tmp_path, nuisance):
  argv = ['--output_dir', str(tmp_path / 'videos'), '--num_videos', '8', '--num_classes', '4',
          '--size', '32', '--fps', '8', '--duration', '1', '--test_fraction', '0.25',
          '--workers', '1'] + (['--nuisance'] if nuisance else [])
  info = make_synthetic.main(argv)
  spec = make_synthetic.spec_from_args(make_synthetic.parse_args(argv))
  assert info['name'] == ('avnuisance' if nuisance else 'avsynth')
  rows = _read_factors(tmp_path / 'videos')
  header, rows = rows[0], rows[1:]
  render = synthetic.render_nuisance_clip if nuisance else synthetic.render_clip
  for index, row in enumerate(rows):
    drawn = render(spec, index).factors
    assert header == ['video_id', *drawn] and row[1:] == [str(v) for v in drawn.values()]
  assert header[1] == 'class'
  if nuisance:
    assert header[2:] == ['background_hue', 'background_level', 'texture', 'object_hue',
                          'noise_colour', 'snr', 'loudness', 'onset']
  settings = make_records.Settings(fps=8.0, short_side=32, sample_rate=16000, min_duration=0.5,
                                   flow=False, audio_only=False, require_audio=True,
                                   jpeg_quality=90, examples_per_shard=8)
  make_records.run(annotations.parse('folder', root=str(tmp_path / 'videos')),
                   str(tmp_path / 'records'), settings, dataset='folder', workers=0)
  recorded = {}
  for split in ('train', 'test'):
    with open(tmp_path / 'records' / f'{split}.csv') as f:
      recorded.update({r['video_id']: int(r['label_index']) for r in csv.DictReader(f)})
  assert sorted(recorded) == sorted(row[0] for row in rows)
  # The records' labels index the sorted class folders, which sort by class id.
  assert all(recorded[row[0]] == int(row[1]) for row in rows)
  first = rows[0][0]
  assert first == make_synthetic.video_id(spec, 0) and first.endswith('_000000')
  assert (tmp_path / 'videos' / (first + '.mp4')).exists()
  os.remove(tmp_path / 'videos' / 'factors.csv')  # A resumed run writes the table again.
  make_synthetic.main(argv)
  assert _read_factors(tmp_path / 'videos') == [header, *rows]
