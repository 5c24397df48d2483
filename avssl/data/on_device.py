"""uint8 video and flow normalised on the device, inside the jitted functions that read batches.

With `config.data.normalize_on_device` the input pipeline (`avssl/data/pipeline.py`) sends frames as
uint8 pixels and flow as uint8 levels of its storage quantisation (`avssl/data/flow.py`) instead of
float32 network inputs: a quarter of the bytes from host to device for the largest entries of every
batch (SeLaVi's global batch at the paper's size is 4.6 GB of float32 video). `normalize` turns such
a batch into the float32 input the host would have made from the same pixels and levels, with the same
float32 operations in the same order (`augment.normalize`; `flow.dequantize_tf`, then
`flow.normalize_tf`). Not to the last bit: XLA compiles a division by a constant as a multiplication
by its reciprocal (TensorFlow divides), so most of the 256 values differ from the host's in the last
bit or two, by at most 1e-6 on inputs within ±2.5 (`tests/test_pipeline.py`). A table of the host's 256
values would be exact, at the price of a gather per pixel instead of three fused element-wise
operations.

Float entries pass unchanged, so `normalize` is a no-op on batches the host normalised and applying it
twice is applying it once: every jitted function that receives a data source's batch calls it first,
and nested calls cost nothing.

It imports no TensorFlow (jax and numpy only).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from avssl.data import flow as flow_lib

# `video`, `flow` and the multi-crop groups after the first (`video_1`, `flow_2`, ...).
_VIDEO_LIKE = re.compile(r'(video|flow)(_\d+)?')
_MAX_PIXEL = 255.0

#: A data config's `mean` and `std` (floats or per-channel tuples; None where it has none), hashable so
#: that it can be a static argument or a cache key.
Scale = tuple[Any, Any]


def scale(data: Any) -> Scale:
  """(`mean`, `std`) of the data config `data` (`config.data`); None for a key it lacks (generated
  data, made as float32 network inputs)."""
  return data.get('mean'), data.get('std')


def normalize(batch: Mapping[str, Any], data: Any) -> dict[str, Any]:
  """`batch` with each uint8 `video*` / `flow*` entry replaced by its float32 network input
  (`normalize_input`, with the `mean` and `std` of the data config `data`); every other entry as
  given."""
  mean, std = scale(data)
  return {key: normalize_input(key, x, mean, std) for key, x in batch.items()}


def normalize_input(key: str, x: Any, mean: Any, std: Any) -> Any:
  """The float32 network input of batch entry `key` when `x` is uint8 and `key` names video or flow:
  frames as `(x / 255 - mean) / std`, flow levels dequantised to pixels and normalised as the pipeline
  normalises flow (GOCA's loader). Anything else is returned as given."""
  match = _VIDEO_LIKE.fullmatch(key)
  if match is None or jnp.dtype(x.dtype) != jnp.uint8:
    return x
  if mean is None or std is None:
    raise ValueError(f'batch entry {key!r} is uint8 (config.data.normalize_on_device) but the data '
                     'config has no mean and std to normalise it with')
  if match.group(1) == 'video':
    return frames(x, mean, std)
  return flow(x, mean, std)


def frames(pixels: jax.typing.ArrayLike, mean: Any, std: Any) -> jax.Array:
  """uint8 pixels -> float32 `(pixels / 255 - mean) / std` (per channel for sequences), the ops of
  `augment.normalize`."""
  unit = jnp.asarray(pixels).astype(jnp.float32) / _MAX_PIXEL
  return (unit - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def flow(levels: jax.typing.ArrayLike, mean: Any, std: Any) -> jax.Array:
  """uint8 flow levels -> float32 network input: `flow.dequantize_tf` then `flow.normalize_tf`, op for
  op (the levels read as an image in [0, 1], normalised like RGB)."""
  pixels = jnp.asarray(levels).astype(jnp.float32) * flow_lib.QUANT_STEP - flow_lib.FLOW_BOUND
  unit = (pixels + flow_lib.FLOW_BOUND) / (2 * flow_lib.FLOW_BOUND)
  return (unit - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
