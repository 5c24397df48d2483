"""Video and audio augmentations: TensorFlow ops for a tf.data map, deterministic given a stateless seed.

Every random augmentation comes in two halves: `sample_*` draws its parameters from a seed, and a second
function applies them. The input pipeline draws once per example and applies the same draw to the RGB
frames and to their optical flow (same resize, crop and flip), which keeps the two streams, and the
audio, showing the same moment and place; the released GOCA code draws independently per stream
(`docs/papers_and_releases.md`). Only `tf.random.stateless_*` ops are used, so a view is a pure
function of its seed: a resumed run, or the same run on another number of hosts, sees the same views.

Conventions: a video is [T, H, W, C], uint8 or float32, with pixel values on the 0..255 scale until
`normalize`; each op returns the dtype it is given (uint8 results are rounded and saturated). Flow is
float32 [T, H, W, 2] in pixels, channel 0 = u (rightwards), 1 = v (downwards), as `avssl.data.flow`
gives it. A seed is an int32 or int64 tensor of shape [2]; `split_seed` derives independent sub-seeds.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

from etils import epy
with epy.lazy_imports():  # The configs import this module; TensorFlow loads when first used.
  import tensorflow as tf

# SeLaVi's pipeline: random short side U{128..160}, 112 crop, mean/std after /255
# (the release's constants, `docs/papers_and_releases.md`).
SELAVI_SHORT_SIDE = (128, 160)
SELAVI_CROP = 112
SELAVI_MEAN = 0.45
SELAVI_STD = 0.225
# GOCA's release normalises with the ImageNet statistics (`docs/papers_and_releases.md`).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R 601-2 luma, the weights of torchvision's and PIL's RGB -> grayscale.
_LUMA = (0.299, 0.587, 0.114)
_MAX_PIXEL = 255.0
# A Gaussian kernel cut at 3 sigma keeps all but 0.3% of its mass.
_BLUR_SIGMAS = 3


def split_seed(seed: tf.Tensor, num: int) -> tf.Tensor:
  """`num` independent seeds [num, 2] derived from `seed`, one per random choice."""
  return tf.random.experimental.stateless_split(seed, num)


def _bernoulli(seed: tf.Tensor, p: float) -> tf.Tensor:
  """A scalar bool that is True with probability `p` (never for p = 0, always for p = 1)."""
  return tf.random.stateless_uniform([], seed) < p


def _to_float(video: tf.Tensor) -> tf.Tensor:
  return tf.cast(video, tf.float32)


def to_uint8(video: tf.Tensor) -> tf.Tensor:
  """Float pixels on the 0..255 scale -> uint8: rounded to the nearest level (halves to even, as
  `tf.round`) and saturated rather than wrapped."""
  return tf.cast(tf.clip_by_value(tf.round(video), 0.0, _MAX_PIXEL), tf.uint8)


def _cast_like(values: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
  """Float results back to the input's dtype; uint8 rounds and saturates rather than wraps."""
  if dtype == tf.uint8:
    return to_uint8(values)
  return tf.cast(values, dtype)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
  if isinstance(size, Sequence):
    return int(size[0]), int(size[1])
  return int(size), int(size)


# Resizing.


def short_side_shape(height: tf.Tensor | int, width: tf.Tensor | int,
                     size: tf.Tensor | int) -> tf.Tensor:
  """int32 [2]: (height, width) scaled so that the short side is exactly `size`, aspect kept."""
  shape = tf.cast(tf.stack([height, width]), tf.float32)
  scaled = shape * tf.cast(size, tf.float32) / tf.reduce_min(shape)
  return tf.cast(tf.round(scaled), tf.int32)


def _resize(video: tf.Tensor, shape: tf.Tensor, antialias: bool) -> tf.Tensor:
  # Bilinear as in SeLaVi's release (torch's interpolate, no antialiasing;
  # `docs/papers_and_releases.md`). `antialias` changes only downscaling, where it widens the filter as
  # PIL's resize (GOCA) does instead of aliasing; it costs about 4x the time of the plain filter on a
  # CPU.
  return tf.image.resize(_to_float(video), shape, method='bilinear', antialias=antialias)


def resize_short_side(video: tf.Tensor, size: tf.Tensor | int, antialias: bool = False) -> tf.Tensor:
  """Bilinear resize of every frame so that the short side is `size`, keeping the aspect ratio."""
  shape = short_side_shape(tf.shape(video)[1], tf.shape(video)[2], size)
  return _cast_like(_resize(video, shape, antialias), video.dtype)


def resize_flow_short_side(flow: tf.Tensor, size: tf.Tensor | int,
                           antialias: bool = False) -> tf.Tensor:
  """`resize_short_side` for flow: the vectors are rescaled too, since they are lengths in pixels.

  Resizing a flow field as if it were an image (GOCA does) leaves the displacements in the units of
  the old frame size; here u scales with the width and v with the height, so the flow stays the
  motion between the resized frames.
  """
  old = tf.shape(flow)[1:3]
  new = short_side_shape(old[0], old[1], size)
  scale = tf.cast(new, tf.float32) / tf.cast(old, tf.float32)
  return _resize(flow, new, antialias) * tf.stack([scale[1], scale[0]])


def sample_short_side(seed: tf.Tensor, min_size: int = SELAVI_SHORT_SIDE[0],
                      max_size: int = SELAVI_SHORT_SIDE[1]) -> tf.Tensor:
  """Scale jitter: an int32 short side drawn uniformly from {min_size, ..., max_size}."""
  return tf.random.stateless_uniform([], seed, minval=min_size, maxval=max_size + 1, dtype=tf.int32)


# Cropping.


class CropWindow(NamedTuple):
  """A spatial window. The offsets are (possibly sampled) int32 tensors; the size is static, so every
  crop of a batch has the same, statically known shape."""
  top: tf.Tensor
  left: tf.Tensor
  height: int
  width: int


def sample_crop(seed: tf.Tensor, image_height: tf.Tensor | int, image_width: tf.Tensor | int,
                size: int | Sequence[int]) -> CropWindow:
  """A window of `size` (int, or (height, width)) at a uniformly random position inside the image."""
  height, width = _pair(size)
  image_height = tf.convert_to_tensor(image_height, tf.int32)
  image_width = tf.convert_to_tensor(image_width, tf.int32)
  checks = [
      tf.debugging.assert_greater_equal(image_height, height,
                                        message=f'crop height {height} exceeds the frame height'),
      tf.debugging.assert_greater_equal(image_width, width,
                                        message=f'crop width {width} exceeds the frame width'),
  ]
  seeds = split_seed(seed, 2)
  with tf.control_dependencies(checks):
    top = tf.random.stateless_uniform([], seeds[0], 0, image_height - height + 1, tf.int32)
    left = tf.random.stateless_uniform([], seeds[1], 0, image_width - width + 1, tf.int32)
  return CropWindow(top, left, height, width)


def crop(video: tf.Tensor, window: CropWindow) -> tf.Tensor:
  """The pixels of `window` in every frame: [T, window.height, window.width, C], any dtype."""
  out = tf.slice(video, tf.stack([0, window.top, window.left, 0]),
                 [-1, window.height, window.width, -1])
  out.set_shape([video.shape[0], window.height, window.width, video.shape[3]])
  return out


def centre_window(image_height: tf.Tensor | int, image_width: tf.Tensor | int,
                  size: int | Sequence[int]) -> CropWindow:
  """The window of `size` (int, or (height, width)) in the middle of the image."""
  height, width = _pair(size)
  return CropWindow(tf.cast((image_height - height) // 2, tf.int32),
                    tf.cast((image_width - width) // 2, tf.int32), height, width)


def centre_crop(video: tf.Tensor, size: int | Sequence[int]) -> tf.Tensor:
  """The window of `size` in the middle of every frame: the one-crop evaluation view. SeLaVi's cluster
  export takes it from frames resized to a short side of the crop's size (`eval_resize`), so it keeps
  the whole short side (`docs/papers_and_releases.md`)."""
  return crop(video, centre_window(tf.shape(video)[1], tf.shape(video)[2], size))


def three_crops(video: tf.Tensor, size: int) -> tf.Tensor:
  """[3, T, size, size, C]: square crops at the start, centre and end of the long side, centred on the
  short side; left/centre/right for landscape frames, top/centre/bottom for portrait.

  The standard three-crop evaluation; usually applied after `resize_short_side(video, size)`, so the
  three crops together cover the whole frame. Index 0 is the left (top) crop, as in SeLaVi's released
  retrieval (`docs/papers_and_releases.md`).
  """
  size = int(size)
  height, width = tf.shape(video)[1], tf.shape(video)[2]
  portrait = height > width
  crops = []
  for i in range(3):
    along_height, along_width = (height - size) * i // 2, (width - size) * i // 2
    top = tf.where(portrait, along_height, (height - size) // 2)
    left = tf.where(portrait, (width - size) // 2, along_width)
    crops.append(crop(video, CropWindow(top, left, size, size)))
  return tf.stack(crops)


# Flipping.


def sample_flip(seed: tf.Tensor, p: float = 0.5) -> tf.Tensor:
  """Whether to flip horizontally (p = 0.5 in SeLaVi and GOCA)."""
  return _bernoulli(seed, p)


def flip(video: tf.Tensor, apply: tf.Tensor) -> tf.Tensor:
  """Mirrors every frame left-right when `apply` is True."""
  return tf.cond(apply, lambda: tf.reverse(video, axis=[2]), lambda: video)


def flip_flow(flow: tf.Tensor, apply: tf.Tensor) -> tf.Tensor:
  """Mirrors a flow field left-right when `apply` is True, negating u: mirrored motion to the right
  is motion to the left. GOCA's released pipeline forgets the negation
  (`docs/papers_and_releases.md`)."""
  return tf.cond(apply, lambda: tf.reverse(flow, axis=[2]) * tf.constant([-1.0, 1.0], flow.dtype),
                 lambda: flow)


# Resize, crop and flip together: one draw for the frames and their flow.


class SpatialParams(NamedTuple):
  short_side: tf.Tensor
  window: CropWindow  # In the coordinates of the resized frames.
  flip: tf.Tensor


def sample_spatial(seed: tf.Tensor, height: tf.Tensor | int, width: tf.Tensor | int,
                   crop_size: int | Sequence[int] = SELAVI_CROP,
                   short_side_range: tuple[int, int] = SELAVI_SHORT_SIDE,
                   flip_p: float = 0.5) -> SpatialParams:
  """The training view's geometry for frames of `height` x `width`: scale jitter, random crop, flip
  (SeLaVi's release; GOCA's R(2+1)D setting is the same; `docs/papers_and_releases.md`)."""
  seeds = split_seed(seed, 3)
  short_side = sample_short_side(seeds[0], *short_side_range)
  resized = short_side_shape(height, width, short_side)
  window = sample_crop(seeds[1], resized[0], resized[1], crop_size)
  return SpatialParams(short_side, window, sample_flip(seeds[2], flip_p))


def apply_spatial(video: tf.Tensor, params: SpatialParams) -> tf.Tensor:
  """Resizes, crops and flips a video as `params` says."""
  return flip(crop(resize_short_side(video, params.short_side), params.window), params.flip)


def apply_spatial_to_flow(flow: tf.Tensor, params: SpatialParams) -> tf.Tensor:
  """`apply_spatial` for a flow field of the same frame size: same window, vectors rescaled and
  mirrored with it."""
  resized = resize_flow_short_side(flow, params.short_side)
  return flip_flow(crop(resized, params.window), params.flip)


# Colour (RGB only; flow is never colour-augmented, unlike GOCA's release,
# `docs/papers_and_releases.md`).


class ColorJitterParams(NamedTuple):
  apply: tf.Tensor
  factors: tf.Tensor  # float32 [4]: brightness, contrast and saturation factors, hue shift (turns).
  order: tf.Tensor  # int32 [4]: the order in which the four adjustments run.


def sample_color_jitter(seed: tf.Tensor, brightness: float = 0.4, contrast: float = 0.4,
                        saturation: float = 0.2, hue: float = 0.1, p: float = 0.8) -> ColorJitterParams:
  """torchvision's ColorJitter draw; the defaults are GOCA's ColorJitter(0.4, 0.4, 0.2, 0.1) with
  p = 0.8. SeLaVi's 0.4/0.4/0.4 jitter exists but is off in its release
  (`docs/papers_and_releases.md`).

  Factors are uniform in [max(0, 1 - s), 1 + s] for brightness, contrast and saturation, the hue shift
  uniform in [-hue, hue], and the four adjustments run in a random order, all as in torchvision.
  """
  if not 0 <= hue <= 0.5:
    raise ValueError(f'hue={hue} must lie in [0, 0.5] (a shift of at most half a turn)')
  seeds = split_seed(seed, 3)
  low = tf.constant([max(0, 1 - brightness), max(0, 1 - contrast), max(0, 1 - saturation), -hue],
                    tf.float32)
  high = tf.constant([1 + brightness, 1 + contrast, 1 + saturation, hue], tf.float32)
  factors = low + (high - low) * tf.random.stateless_uniform([4], seeds[1])
  order = tf.argsort(tf.random.stateless_uniform([4], seeds[2]))
  return ColorJitterParams(_bernoulli(seeds[0], p), factors, order)


def _luma(unit: tf.Tensor) -> tf.Tensor:
  return tf.tensordot(unit, tf.constant(_LUMA, unit.dtype), axes=[[-1], [0]])[..., None]


def _blend(unit: tf.Tensor, other: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  return tf.clip_by_value(factor * unit + (1 - factor) * other, 0.0, 1.0)


def _adjust_brightness(unit: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  return _blend(unit, tf.zeros_like(unit), factor)


def _adjust_contrast(unit: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  # The mean grey level of the whole clip, so that every frame gets the identical affine map.
  return _blend(unit, tf.reduce_mean(_luma(unit)), factor)


def _adjust_saturation(unit: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  return _blend(unit, _luma(unit), factor)


def _adjust_hue(unit: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
  return tf.clip_by_value(tf.image.adjust_hue(unit, shift), 0.0, 1.0)


_ADJUSTMENTS = (_adjust_brightness, _adjust_contrast, _adjust_saturation, _adjust_hue)


def color_jitter(video: tf.Tensor, params: ColorJitterParams) -> tf.Tensor:
  """Applies one `sample_color_jitter` draw to every frame of an RGB clip alike."""
  def jitter():
    unit = _to_float(video) / _MAX_PIXEL
    for step in range(len(_ADJUSTMENTS)):
      unit = tf.switch_case(params.order[step], [
          functools.partial(adjust, unit, params.factors[i]) for i, adjust in enumerate(_ADJUSTMENTS)])
    return _cast_like(unit * _MAX_PIXEL, video.dtype)
  return tf.cond(params.apply, jitter, lambda: video)


def sample_grayscale(seed: tf.Tensor, p: float = 0.2) -> tf.Tensor:
  """Whether to drop colour (p = 0.2 in GOCA's release, `docs/papers_and_releases.md`)."""
  return _bernoulli(seed, p)


def grayscale(video: tf.Tensor, apply: tf.Tensor) -> tf.Tensor:
  """Replaces each RGB pixel by its luma in all three channels when `apply` is True."""
  def gray():
    return _cast_like(tf.repeat(_luma(_to_float(video)), 3, axis=-1), video.dtype)
  return tf.cond(apply, gray, lambda: video)


class BlurParams(NamedTuple):
  apply: tf.Tensor
  sigma: tf.Tensor  # Standard deviation in pixels.
  radius: int  # Static half-width of the kernel, 3 sigma of the largest sigma that can be drawn.


def sample_blur(seed: tf.Tensor, p: float = 0.5,
                sigma_range: tuple[float, float] = (0.1, 2.0)) -> BlurParams:
  """Gaussian blur draw. GOCA builds SwAV's blur (p = 0.5, sigma ~ U(0.1, 2.0), PIL's radius being the
  standard deviation) but never adds it to its pipeline (`docs/papers_and_releases.md`); here it
  runs whenever a config enables it."""
  seeds = split_seed(seed, 2)
  sigma = tf.random.stateless_uniform([], seeds[1], sigma_range[0], sigma_range[1])
  return BlurParams(_bernoulli(seeds[0], p), sigma, math.ceil(_BLUR_SIGMAS * sigma_range[1]))


def gaussian_blur(video: tf.Tensor, params: BlurParams) -> tf.Tensor:
  """Blurs every frame and channel with the same separable Gaussian when `params.apply` is True.

  Borders are mirrored (half-sample symmetric), which makes the blur preserve each frame's mean
  exactly while the frame is larger than the kernel radius.
  """
  def blur():
    radius = params.radius
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(taps / params.sigma))
    kernel /= tf.reduce_sum(kernel)
    shape = tf.shape(video)
    # Frames and channels become one batch of single-channel images for two 1-D convolutions.
    planes = tf.reshape(tf.transpose(_to_float(video), [0, 3, 1, 2]), [-1, shape[1], shape[2], 1])
    planes = tf.pad(planes, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode='SYMMETRIC')
    planes = tf.nn.conv2d(planes, tf.reshape(kernel, [-1, 1, 1, 1]), strides=1, padding='VALID')
    planes = tf.nn.conv2d(planes, tf.reshape(kernel, [1, -1, 1, 1]), strides=1, padding='VALID')
    frames = tf.reshape(planes, [shape[0], shape[3], shape[1], shape[2]])
    return _cast_like(tf.transpose(frames, [0, 2, 3, 1]), video.dtype)
  return tf.cond(params.apply, blur, lambda: video)


#: `subtract_background` modes: the clip's temporal mean or median frame, or '' (off).
BACKGROUNDS = ('', 'mean', 'median')


def subtract_background(video: tf.Tensor, mode: str) -> tf.Tensor:
  """Each clip `[..., T, H, W, C]` minus its own background, the per-pixel mean or median over its T
  frames, halved and centred on grey: float32 `(video - background) / 2 + 127.5`, on the 0..255 scale
  (so a uint8 round trip, `normalize_on_device`, keeps it; 0 to 255 exactly where inputs are pixels).

  A static background, whatever its colour or texture, becomes uniform grey, and what moves stays:
  the objects that make a class in videos filmed in many places. The median keeps an object that
  covers a pixel in fewer than half the frames out of the background; the mean leaves its trail
  there. Not in any of the papers: a switch for data whose backgrounds are static and vary from clip to
  clip (`docs/nuisance.md`).
  """
  if mode not in BACKGROUNDS:
    raise ValueError(f'background subtraction {mode!r} is not one of {list(BACKGROUNDS)}; set '
                     "config.data.subtract_background to '' (off), 'mean' or 'median'")
  if not mode:
    return video
  video = _to_float(video)
  if mode == 'mean':
    background = tf.reduce_mean(video, axis=-4, keepdims=True)
  else:
    ordered = tf.sort(video, axis=-4)
    frames = video.shape[-4]
    middle = ordered[..., (frames - 1) // 2:frames // 2 + 1, :, :, :]
    background = tf.reduce_mean(middle, axis=-4, keepdims=True)
  return (video - background) / 2 + _MAX_PIXEL / 2


def normalize(video: tf.Tensor, mean: float | Sequence[float] = SELAVI_MEAN,
              std: float | Sequence[float] = SELAVI_STD) -> tf.Tensor:
  """float32 (video / 255 - mean) / std, per channel when `mean` and `std` are sequences."""
  return (_to_float(video) / _MAX_PIXEL - tf.constant(mean)) / tf.constant(std)


# Audio.


def volume_jitter(waveform: tf.Tensor, seed: tf.Tensor,
                  gain_range: tuple[float, float] = (0.9, 1.1)) -> tf.Tensor:
  """Scales a float waveform by one gain ~ U(gain_range); SeLaVi's ×U(0.9, 1.1)
  (`docs/papers_and_releases.md`)."""
  gain = tf.random.stateless_uniform([], seed, gain_range[0], gain_range[1], dtype=waveform.dtype)
  return waveform * gain
