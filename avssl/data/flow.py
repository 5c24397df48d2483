"""How optical flow is stored: the one convention `avssl.data_prep` writes and the input pipeline
reads.

Flow is clipped to +-`FLOW_BOUND` pixels and mapped linearly onto the 256 uint8 levels, as in TSN and in
GOCA's released flow script (`docs/papers_and_releases.md`): `q = round((f + 20) * 255 / 40)`. A uint8
pair per pixel is 8x smaller than float32 and, stored losslessly, costs at most half a step
(`QUANT_STEP / 2`, about 0.08 px) of accuracy. Zero flow is not a level: it lands on 128, which reads
back as +0.078 px.

The numpy functions serve `avssl.data_prep` (worker processes that never import TensorFlow);
`dequantize_tf` (with `normalize_tf`, the network input) is the same map for the tf.data pipeline, and
`quantize_tf` maps augmented flow back onto the levels for a pipeline that normalises on the device
(`avssl/data/on_device.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
  import tensorflow as tf

# ±20 px clip and the 255-step map of TSN / GOCA (`docs/papers_and_releases.md`).
FLOW_BOUND = 20.0
QUANT_MAX = 255
QUANT_STEP = 2 * FLOW_BOUND / QUANT_MAX


def quantize(flow: np.ndarray) -> np.ndarray:
  """Float flow in pixels (any shape) -> uint8 levels; values beyond ±`FLOW_BOUND` saturate."""
  clipped = np.clip(np.asarray(flow, np.float32), -FLOW_BOUND, FLOW_BOUND)
  return np.round((clipped + FLOW_BOUND) * np.float32(QUANT_MAX / (2 * FLOW_BOUND))).astype(np.uint8)


def dequantize(levels: np.ndarray) -> np.ndarray:
  """uint8 levels -> float32 flow in pixels, the inverse of `quantize` up to `QUANT_STEP / 2`."""
  return np.asarray(levels, np.float32) * np.float32(QUANT_STEP) - np.float32(FLOW_BOUND)


def dequantize_tf(levels: tf.Tensor) -> tf.Tensor:
  """`dequantize` as TensorFlow ops, for use inside a tf.data map: uint8 tensor -> float32 tensor.

  TensorFlow is imported here, not at the top, so that `avssl.data_prep` workers stay free of it.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top,redefined-outer-name
  return tf.cast(levels, tf.float32) * QUANT_STEP - FLOW_BOUND


def quantize_tf(flow: tf.Tensor) -> tf.Tensor:
  """`quantize` as TensorFlow ops: float32 flow in pixels -> uint8 levels, rounded to the nearest level
  (halves to even, as `tf.round` and `np.round`) and saturated at ±`FLOW_BOUND`.

  Flow that was only dequantised, cropped and flipped gets its stored levels back exactly (the levels
  are symmetric about zero: negating u maps level q to 255 - q); resized flow (interpolated and scaled
  with the frames) moves by at most half a level, `QUANT_STEP / 2` px, except where up-scaling
  stretched it beyond ±`FLOW_BOUND`, which saturates as the stored flow did.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top,redefined-outer-name
  clipped = tf.clip_by_value(flow, -FLOW_BOUND, FLOW_BOUND)
  return tf.cast(tf.round((clipped + FLOW_BOUND) * (QUANT_MAX / (2 * FLOW_BOUND))), tf.uint8)


def normalize_tf(flow: tf.Tensor, mean: float, std: float) -> tf.Tensor:
  """Flow in pixels -> the network's input: GOCA's loader reads the stored levels as an image in [0, 1]
  (`(f + FLOW_BOUND) / (2 FLOW_BOUND)`) and normalises it like RGB with `mean` and `std`; this is that
  map on the dequantised flow (zero motion -> (0.5 - mean) / std)."""
  unit = (flow + FLOW_BOUND) / (2 * FLOW_BOUND)
  return (unit - mean) / std
