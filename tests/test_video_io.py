"""Decoding real containers with PyAV: frame timing, resampling, down-mixing, bad files."""

import hashlib
import pathlib

import av
import numpy as np
import pytest

from avssl.data import synthetic, video_io

CLIP = str(pathlib.Path(__file__).parent / 'data' / 'bigbuckbunny.mp4')


def _native_frames(path):
  with av.open(path) as container:
    return [f.to_ndarray(format='rgb24') for f in container.decode(video=0)]


def test_real_clip_25_to_30_fps_51_to_mono_48k_to_16k():
  decoded = video_io.decode(CLIP, fps=30, short_side=None, sample_rate=16000)
  # The video stream holds 132 frames at 25 fps: 5.28 s. At 30 fps that is floor(158.4) = 158 frames,
  # and 5.28 s of audio at 16 kHz is 84,480 samples (the AAC track runs 5.312 s; the rest is cut).
  assert decoded.duration == pytest.approx(5.28, abs=1e-9)
  assert decoded.frames.shape == (158, 720, 1280, 3)
  assert decoded.waveform.shape == (84480,)
  assert decoded.waveform.dtype == np.float32 and decoded.source_fps == 25
  # Frame i at 30 fps shows what is on screen at i / 30 s: source frame floor(i * 25 / 30).
  native = _native_frames(CLIP)
  for i in (0, 1, 5, 6, 7, 77, 157):
    np.testing.assert_array_equal(decoded.frames[i], native[i * 25 // 30])


def test_downmix_follows_all_channels():
  decoded = video_io.decode(CLIP, fps=30, short_side=None, sample_rate=16000)
  with av.open(CLIP) as container:
    resampler = av.AudioResampler(format='fltp', layout='5.1', rate=16000)
    planes = np.concatenate([f.to_ndarray() for frame in container.decode(audio=0)
                             for f in resampler.resample(frame)], axis=1)
  mean = planes.mean(axis=0)[:84480]
  envelope = lambda x: np.sqrt(np.convolve(x**2, np.ones(800) / 800, mode='valid'))
  assert np.corrcoef(envelope(decoded.waveform), envelope(mean))[0, 1] > 0.95
  assert np.abs(decoded.waveform).max() > 0.05


def test_short_side_resize_keeps_aspect():
  decoded = video_io.decode(CLIP, fps=30, short_side=128, sample_rate=24000)
  assert decoded.frames.shape == (158, 128, 228, 3)
  assert decoded.waveform.shape == (round(5.28 * 24000),)
  assert video_io.short_side_size(360, 640, 160) == (160, 284)


def _tone_clip(path, seconds=2.0, fps=30, sample_rate=16000, with_audio=True):
  frames = np.zeros((int(seconds * fps), 32, 48, 3), np.uint8)
  frames[:, :, :, 1] = np.arange(len(frames))[:, None, None] * 4
  t = np.arange(int(seconds * sample_rate)) / sample_rate
  waveform = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32) if with_audio else None
  video_io.write_video(str(path), frames, fps, waveform, sample_rate)
  return frames


def test_write_then_decode_round_trip(tmp_path):
  frames = _tone_clip(tmp_path / 'a.mp4')
  decoded = video_io.decode(str(tmp_path / 'a.mp4'), fps=30, short_side=None, sample_rate=16000)
  assert decoded.frames.shape == frames.shape and decoded.waveform.shape == (32000,)
  np.testing.assert_allclose(decoded.frames[:, :, :, 1].mean(axis=(1, 2)),
                             frames[:, :, :, 1].mean(axis=(1, 2)), atol=3)
  spectrum = np.abs(np.fft.rfft(decoded.waveform))
  assert np.argmax(spectrum) * 16000 / len(decoded.waveform) == pytest.approx(440, abs=1)


def test_a_clip_is_the_same_bytes_at_every_write(tmp_path):
  """The same frames make the same file, whatever the process wrote before (x264's macroblock-tree
  rate control, which made them differ on avsynth's 64² frames, is off: `write_video`)."""
  spec = synthetic.AvsynthSpec(num_videos=60, num_classes=10)
  clips = [synthetic.render_clip(spec, i)[0] for i in range(8)]
  written = [set() for _ in clips]
  for trial in range(4):
    for frames, digests in zip(clips, written):
      noise = np.random.default_rng(trial).integers(0, 256, frames.shape, np.uint8)
      video_io.write_video(str(tmp_path / 'before.mp4'), noise, spec.fps)
      video_io.write_video(str(tmp_path / 'clip.mp4'), frames, spec.fps)
      digests.add(hashlib.sha256((tmp_path / 'clip.mp4').read_bytes()).hexdigest())
  assert (tmp_path / 'clip.mp4').read_bytes().count(b'mbtree=0') == 1  # x264's options, in the file
  assert [len(digests) for digests in written] == [1] * len(clips)


def test_bad_files_raise_media_error_with_reason(tmp_path):
  _tone_clip(tmp_path / 'silent.mp4', with_audio=False)
  with pytest.raises(video_io.MediaError, match='no audio stream'):
    video_io.decode(str(tmp_path / 'silent.mp4'), fps=30, short_side=None, sample_rate=16000)
  decoded = video_io.decode(str(tmp_path / 'silent.mp4'), fps=30, short_side=None,
                            sample_rate=16000, require_audio=False)
  assert decoded.waveform is None and len(decoded.frames) == 60

  _tone_clip(tmp_path / 'full.mp4', seconds=4.0)
  data = (tmp_path / 'full.mp4').read_bytes()
  (tmp_path / 'cut.mp4').write_bytes(data[:len(data) // 2])
  with pytest.raises(video_io.MediaError, match='truncated'):
    video_io.decode(str(tmp_path / 'cut.mp4'), fps=30, short_side=None, sample_rate=16000)
  (tmp_path / 'stub.mp4').write_bytes(data[:3000])  # The index survives, no frame does.
  with pytest.raises(video_io.MediaError, match='decode error'):
    video_io.decode(str(tmp_path / 'stub.mp4'), fps=30, short_side=None, sample_rate=16000)

  (tmp_path / 'notes.txt').write_text('not a video')
  with pytest.raises(video_io.MediaError, match='not a readable media file'):
    video_io.decode(str(tmp_path / 'notes.txt'), fps=30, short_side=None, sample_rate=16000)

  with pytest.raises(video_io.MediaError, match='too short: 2.00 s < min_duration 3 s'):
    video_io.decode(str(tmp_path / 'full.mp4').replace('full', 'silent'), fps=30, short_side=None,
                    sample_rate=16000, require_audio=False, min_duration=3)
