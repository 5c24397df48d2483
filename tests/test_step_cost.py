"""`benchmarks/step_cost.py` costs a config's step without its records, and its roofline is the formula."""

import sys

import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / 'benchmarks'))
from avssl.data import pipeline  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import step_cost  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def test_the_benchmark_costs_a_tiny_step_and_its_roofline_is_the_slower_bound(capsys):
  rows = step_cost.main(['--tiny', '--configs=selavi_vggsound', '--batch_sizes=2',
                         '--variants=float32', '--no-hand_count'])
  assert len(rows) == 1
  row = rows[0]
  assert row.flops > 0 and row.bytes_accessed > 0
  assert row.argument > 0 and row.output > 0 and row.memory > row.state > 0
  device = step_cost.PRESETS['tpu_v4']
  assert row.roofline(device) == pytest.approx(
      max(row.flops / device.peak_f32, row.bytes_accessed / device.bandwidth))
  printed = capsys.readouterr().out
  assert 'machine:' in printed and 'selavi_vggsound' in printed and 'v4-' in printed


def test_the_example_has_the_pipelines_shapes():
  config = step_cost.config_lib.load(f'{REPO / "configs" / "selavi_vggsound"}.py')
  example = pipeline.example_spec(config.data, 24000)
  assert example['video'].shape == (1, 30, 112, 112, 3)
  assert example['audio'].shape == (1, 257, 99, 1)  # SeLaVi's 1 s logfbank at 24 kHz.
  assert example['video'].dtype == example['audio'].dtype == np.float32
  goca = step_cost.config_lib.load(f'{REPO / "configs" / "goca_ucf101"}.py:backbone=s3d')
  shapes = {k: v.shape for k, v in pipeline.example_spec(goca.data, 16000).items()}
  assert shapes['video'] == (1, 2, 32, 128, 128, 3) and shapes['flow_1'] == (1, 4, 16, 128, 128, 2)
  # `:accel` sends video and flow as uint8 (normalised in the step); the spectrogram stays float32.
  accel = step_cost.config_lib.load(f'{REPO / "configs" / "goca_ucf101"}.py:backbone=s3d,accel')
  dtypes = {k: v.dtype for k, v in pipeline.example_spec(accel.data, 16000).items()}
  assert dtypes == {'video': np.uint8, 'video_1': np.uint8, 'flow': np.uint8, 'flow_1': np.uint8,
                    'index': np.int32, 'label': np.int32}
  selavi = step_cost.config_lib.load(f'{REPO / "configs" / "selavi_vggsound"}.py:accel')
  dtypes = {k: v.dtype for k, v in pipeline.example_spec(selavi.data, 24000).items()}
  assert dtypes['video'] == np.uint8 and dtypes['audio'] == np.float32


def test_the_fewest_devices_split_the_batch_evenly():
  assert step_cost.fewest_devices(1024, 40) == 32  # 26 would do by memory; 32 is the first divisor.
  assert step_cost.fewest_devices(1024, 40, smallest=4, powers_of_two=True) == 32
  assert step_cost.fewest_devices(1024, 2000, smallest=4, powers_of_two=True) == 4
  assert step_cost.fewest_devices(1024, 0) is None


def test_the_hand_count_of_r2plus1d_18_is_torchvisions():
  # torchvision's r2plus1d_18 model card: 40.52 GFLOPS (multiply-adds) on 16x112² clips.
  assert step_cost.r2plus1d_18_forward_flops(16, 112) / 2 / 1e9 == pytest.approx(40.52, rel=1e-3)
  # Without the taps on the zero padding (XLA's count) it is smaller, by the borders' share.
  assert 0.9 < step_cost.r2plus1d_18_forward_flops(16, 112, padded=False) / 2 / 1e9 / 40.52 < 1
