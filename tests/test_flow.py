"""Optical flow: the uint8 storage convention (GOCA/TSN ±20 px) and TV-L1 on known translations."""

import subprocess
import sys

import av
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
import tensorflow as tf

from avssl.data import flow
from conftest import REPO
from avssl.data_prep import optical_flow


def texture(rng, size, smooth=2.0):
  """Smooth random texture spanning 0..255: gradients everywhere, no repeats for TV-L1 to confuse."""
  tex = gaussian_filter(rng.standard_normal((size, size)), smooth)
  return (tex - tex.min()) / (tex.max() - tex.min()) * 255


def translated_frames(rng, shifts, size=64, margin=16):
  """uint8 RGB frames [len(shifts), size, size, 3]; frame t is the texture moved by `shifts[t]` (dx, dy)
  from the window at `margin`, so the true flow from frame t to t+1 is `shifts[t+1] - shifts[t]`."""
  tex = texture(rng, size + 2 * margin)
  frames = [tex[margin - dy:margin - dy + size, margin - dx:margin - dx + size] for dx, dy in shifts]
  return np.repeat(np.round(np.stack(frames)).astype(np.uint8)[..., None], 3, axis=-1)


def test_tvl1_recovers_known_translation():
  frames = translated_frames(np.random.default_rng(0), [(0, 0), (3, -2), (0, 0)])
  levels = optical_flow.tvl1_flow(frames)
  assert levels.dtype == np.uint8 and levels.shape == (2, 64, 64, 2)
  median = np.median(flow.dequantize(levels), axis=(1, 2))
  np.testing.assert_allclose(median, [[3, -2], [-3, 2]], atol=0.5)


def test_tvl1_rejects_bad_frames():
  with pytest.raises(ValueError, match='T >= 2'):
    optical_flow.tvl1_flow(np.zeros((1, 8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match='uint8'):
    optical_flow.tvl1_flow(np.zeros((2, 8, 8, 3), np.float32))


def test_values_beyond_bound_clip():
  levels = flow.quantize(np.array([-100, -20.5, -20, 0, 20, 20.5, 100], np.float32))
  np.testing.assert_array_equal(levels, [0, 0, 0, 128, 255, 255, 255])
  np.testing.assert_allclose(flow.dequantize(levels)[[0, -1]], [-flow.FLOW_BOUND, flow.FLOW_BOUND])


def test_round_trip_within_half_step():
  values = np.random.default_rng(1).uniform(-flow.FLOW_BOUND, flow.FLOW_BOUND, (10_000, 2))
  levels = flow.quantize(values)
  assert levels.dtype == np.uint8 and levels.shape == values.shape
  error = np.abs(flow.dequantize(levels) - values)
  assert error.max() <= 40 / 255 / 2 + 1e-6


def test_tf_dequantize_matches_numpy():
  levels = np.arange(256, dtype=np.uint8)
  tf_values = flow.dequantize_tf(tf.constant(levels))
  assert tf_values.dtype == tf.float32
  np.testing.assert_allclose(tf_values.numpy(), flow.dequantize(levels), atol=1e-6)


def test_command_line_tool_writes_lossless_npz(tmp_path, capsys):
  rng = np.random.default_rng(2)
  frames = translated_frames(rng, [(0, 0), (2, 1), (4, 2), (6, 3)], size=48)
  frames = np.concatenate([frames, frames[:, :, :16]], axis=2)  # 64 wide x 48 high.
  video = tmp_path / 'clip.mkv'
  with av.open(str(video), 'w') as container:
    stream = container.add_stream('ffv1', rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv444p'
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
    container.mux(stream.encode())
  output = tmp_path / 'flow.npz'
  optical_flow.main([f'--video={video}', f'--output={output}', '--short_side=24'])
  with np.load(output) as saved:
    assert saved['flow'].dtype == np.uint8 and saved['flow'].shape == (3, 24, 32, 2)
    assert saved['fps'] == pytest.approx(10)
  assert '4 frames 32x24' in capsys.readouterr().out


def test_command_line_help():
  result = subprocess.run([sys.executable, '-m', 'avssl.data_prep.optical_flow', '--help'],
                          cwd=REPO, capture_output=True, text=True, check=True)
  assert '--short_side' in result.stdout
