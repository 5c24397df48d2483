"""Augmentations: deterministic in the seed, exact geometry, one draw applied alike to frames and flow."""

import numpy as np
import pytest
import tensorflow as tf

from avssl.data import augment


def seed(i):
  return tf.constant([i, 17], tf.int64)


def random_video(shape=(4, 40, 56, 3), dtype=np.uint8, rng_seed=0):
  values = np.random.default_rng(rng_seed).uniform(0, 255, shape)
  return tf.constant(values.round().astype(dtype) if dtype == np.uint8 else values.astype(dtype))


def train_view(video, view_seed):
  """A full training view, as the input pipeline composes it."""
  seeds = augment.split_seed(view_seed, 4)
  spatial = augment.sample_spatial(seeds[0], tf.shape(video)[1], tf.shape(video)[2], crop_size=24,
                                   short_side_range=(32, 48))
  video = augment.apply_spatial(video, spatial)
  video = augment.color_jitter(video, augment.sample_color_jitter(seeds[1], p=1.0))
  video = augment.grayscale(video, augment.sample_grayscale(seeds[2]))
  video = augment.gaussian_blur(video, augment.sample_blur(seeds[3], p=1.0))
  return augment.normalize(video)


def test_same_seed_same_view_different_seed_different_view():
  video = random_video()
  first, again, other = (train_view(video, seed(s)).numpy() for s in (3, 3, 4))
  assert first.shape == (4, 24, 24, 3) and first.dtype == np.float32
  np.testing.assert_array_equal(first, again)
  assert np.abs(first - other).max() > 0.1


def test_graph_mode_in_tf_data_map_matches_eager():
  video = random_video()
  data = tf.data.Dataset.range(3).map(lambda i: train_view(video, tf.stack([i, tf.constant(17, tf.int64)])))
  assert data.element_spec.shape == (4, 24, 24, 3)
  for i, view in enumerate(data.as_numpy_iterator()):
    np.testing.assert_array_equal(view, train_view(video, seed(i)).numpy())


def test_random_crop_is_exactly_the_source_window():
  video = random_video((3, 40, 56, 3))
  tops, lefts = set(), set()
  for s in range(300):
    window = augment.sample_crop(seed(s), 40, 56, (16, 24))
    top, left = int(window.top), int(window.left)
    assert 0 <= top <= 40 - 16 and 0 <= left <= 56 - 24
    tops.add(top)
    lefts.add(left)
    if s < 10:
      np.testing.assert_array_equal(augment.crop(video, window).numpy(),
                                    video.numpy()[:, top:top + 16, left:left + 24])
  assert tops == set(range(25)) and lefts == set(range(33))  # Every position, edges included.


def test_crop_larger_than_frame_fails_with_message():
  with pytest.raises(tf.errors.InvalidArgumentError, match='crop height 50 exceeds'):
    augment.sample_crop(seed(0), 40, 56, 50)


def test_centre_and_three_crops():
  landscape = random_video((2, 20, 50, 3))
  np.testing.assert_array_equal(augment.centre_crop(landscape, (10, 20)).numpy(),
                                landscape.numpy()[:, 5:15, 15:35])
  crops = augment.three_crops(landscape, 20).numpy()
  assert crops.shape == (3, 2, 20, 20, 3)
  for crop, left in zip(crops, (0, 15, 30)):
    np.testing.assert_array_equal(crop, landscape.numpy()[:, :, left:left + 20])
  portrait = random_video((2, 50, 22, 3))
  crops = augment.three_crops(portrait, 20).numpy()
  for crop, top in zip(crops, (0, 15, 30)):
    np.testing.assert_array_equal(crop, portrait.numpy()[:, top:top + 20, 1:21])


def test_flip_twice_is_identity():
  video = random_video()
  once = augment.flip(video, tf.constant(True))
  np.testing.assert_array_equal(once.numpy(), video.numpy()[:, :, ::-1])
  np.testing.assert_array_equal(augment.flip(once, tf.constant(True)).numpy(), video.numpy())
  np.testing.assert_array_equal(augment.flip(video, tf.constant(False)).numpy(), video.numpy())


def test_flip_flow_mirrors_and_negates_u():
  flow = tf.constant(np.random.default_rng(1).normal(0, 5, (3, 8, 10, 2)), tf.float32)
  flipped = augment.flip_flow(flow, tf.constant(True)).numpy()
  np.testing.assert_array_equal(flipped[..., 0], -flow.numpy()[:, :, ::-1, 0])
  np.testing.assert_array_equal(flipped[..., 1], flow.numpy()[:, :, ::-1, 1])
  np.testing.assert_array_equal(augment.flip_flow(flipped, tf.constant(True)).numpy(), flow.numpy())
  np.testing.assert_array_equal(augment.flip_flow(flow, tf.constant(False)).numpy(), flow.numpy())


def test_random_short_side_in_range_with_aspect_kept():
  sizes = [int(augment.sample_short_side(seed(s), 128, 160)) for s in range(400)]
  assert min(sizes) == 128 and max(sizes) == 160
  for shape in ((1, 90, 160, 3), (1, 160, 90, 3)):
    video = random_video(shape)
    for size in (128, 141, 160):
      out = augment.resize_short_side(video, size)
      height, width = out.shape[1:3]
      assert min(height, width) == size and out.dtype == tf.uint8
      assert abs(max(height, width) - 160 * size / 90) <= 0.5


def test_resize_rescales_flow_vectors():
  flow = tf.constant(np.broadcast_to([2.0, 1.0], (2, 40, 80, 2)), tf.float32)
  resized = augment.resize_flow_short_side(flow, 20).numpy()
  assert resized.shape == (2, 20, 40, 2)
  np.testing.assert_allclose(resized, np.broadcast_to([1.0, 0.5], resized.shape), rtol=1e-5)


def test_one_draw_gives_frames_and_flow_the_same_geometry():
  rng = np.random.default_rng(2)
  field = tf.constant(rng.normal(0, 3, (2, 30, 45, 2)), tf.float32)
  flips = set()
  for s in range(8):
    params = augment.sample_spatial(seed(s), 30, 45, crop_size=16, short_side_range=(20, 30))
    as_image = augment.apply_spatial(field, params).numpy()
    as_flow = augment.apply_spatial_to_flow(field, params).numpy()
    short_side = int(params.short_side)
    scale_u, scale_v = round(45 * short_side / 30) / 45, short_side / 30  # Pixel sizes of the resize.
    sign = -1 if bool(params.flip) else 1
    flips.add(sign)
    np.testing.assert_allclose(as_flow, as_image * [sign * scale_u, scale_v], rtol=1e-4, atol=1e-4)
  assert flips == {-1, 1}


def test_identical_params_crop_two_tensors_identically():
  rgb = random_video((3, 30, 45, 3))
  other = tf.cast(rgb, tf.float32)[..., :2] * 2 + 1
  for s in range(5):
    window = augment.sample_crop(seed(s), 30, 45, 16)
    np.testing.assert_array_equal(augment.crop(other, window).numpy(),
                                  tf.cast(augment.crop(rgb, window), tf.float32).numpy()[..., :2] * 2 + 1)


@pytest.mark.parametrize('sample, apply', [
    (augment.sample_flip, augment.flip),
    (augment.sample_grayscale, augment.grayscale),
    (lambda s, p: augment.sample_color_jitter(s, p=p), augment.color_jitter),
    (lambda s, p: augment.sample_blur(s, p=p), augment.gaussian_blur),
])
def test_probability_zero_never_applies_and_one_always_does(sample, apply):
  video = random_video((2, 16, 16, 3))
  for s in range(10):
    np.testing.assert_array_equal(apply(video, sample(seed(s), 0.0)).numpy(), video.numpy())
    assert np.any(apply(video, sample(seed(s), 1.0)).numpy() != video.numpy())


def test_grayscale_channels_equal():
  out = augment.grayscale(random_video(), tf.constant(True)).numpy()
  np.testing.assert_array_equal(out[..., 0], out[..., 1])
  np.testing.assert_array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize('dtype', [np.uint8, np.float32])
def test_blur_preserves_constant_image_and_mean(dtype):
  params = augment.sample_blur(seed(0), p=1.0)
  assert 0.1 <= float(params.sigma) <= 2.0
  constant = tf.fill([2, 20, 24, 3], tf.constant(77, dtype))
  np.testing.assert_allclose(augment.gaussian_blur(constant, params).numpy(), constant.numpy(), rtol=1e-6)
  if dtype == np.float32:
    video = random_video((2, 20, 24, 3), np.float32)
    sharp = augment.BlurParams(tf.constant(True), tf.constant(2.0), params.radius)
    blurred = augment.gaussian_blur(video, sharp).numpy()
    np.testing.assert_allclose(blurred.mean(axis=(1, 2)), video.numpy().mean(axis=(1, 2)), rtol=1e-5)
    assert blurred.std() < 0.5 * video.numpy().std()


@pytest.mark.parametrize('dtype', [np.uint8, np.float32])
def test_color_jitter_keeps_range_and_treats_frames_alike(dtype):
  frame = random_video((1, 16, 16, 3), dtype)
  clip = tf.concat([frame, frame, frame], axis=0)
  for s in range(10):
    params = augment.sample_color_jitter(seed(s), 0.9, 0.9, 0.9, 0.5, p=1.0)
    out = augment.color_jitter(clip, params).numpy()
    assert out.dtype == dtype and out.min() >= 0 and out.max() <= 255
    np.testing.assert_array_equal(out[1], out[0])
    np.testing.assert_array_equal(out[2], out[0])


def test_color_jitter_factors_follow_torchvision():
  video = random_video((2, 8, 8, 3), np.float32)
  neutral = augment.sample_color_jitter(seed(0), 0, 0, 0, 0, p=1.0)
  np.testing.assert_allclose(augment.color_jitter(video, neutral).numpy(), video.numpy(), atol=1e-3)
  brightness = augment.sample_color_jitter(seed(1), brightness=0.4, contrast=0, saturation=0, hue=0,
                                           p=1.0)
  factor = float(brightness.factors[0])
  assert 0.6 <= factor <= 1.4
  np.testing.assert_allclose(augment.color_jitter(video, brightness).numpy(),
                             np.clip(video.numpy() * factor, 0, 255), rtol=1e-5, atol=1e-3)


def test_normalize():
  video = random_video((1, 4, 4, 3))
  expected = (video.numpy() / 255 - 0.45) / 0.225
  np.testing.assert_allclose(augment.normalize(video).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_volume_jitter_is_one_gain_in_range_and_deterministic():
  waveform = tf.constant(np.random.default_rng(3).uniform(-1, 1, 1000), tf.float32)
  gains = []
  for s in range(50):
    out = augment.volume_jitter(waveform, seed(s)).numpy()
    ratio = out / waveform.numpy()
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)
    np.testing.assert_array_equal(augment.volume_jitter(waveform, seed(s)).numpy(), out)
    gains.append(ratio[0])
  assert 0.9 <= min(gains) < max(gains) <= 1.1 and max(gains) - min(gains) > 0.1


@pytest.mark.parametrize('mode', ['mean', 'median'])
def test_subtracting_the_background_leaves_only_what_moves(mode):
  """Two clips of the same moving square over different static backgrounds (a flat colour, a
  texture) are equal after subtraction wherever the square never passes, and there uniform grey
  (127.5); where it is, both show the square's difference from their own background."""
  rng = np.random.default_rng(0)
  backgrounds = [np.full((16, 16, 3), (200.0, 30.0, 90.0)), rng.uniform(0, 255, (16, 16, 3))]
  clips = []
  for background in backgrounds:
    video = np.broadcast_to(background, (5, 16, 16, 3)).copy()
    for t in range(5):
      video[t, 2:5, 3 * t:3 * t + 3] = 255.0  # A square moving right, 3 px per frame.
    clips.append(augment.subtract_background(tf.constant(video, tf.float32), mode).numpy())
  never = np.ones((16, 16), bool)
  never[2:5, :15] = False
  for clip in clips:
    np.testing.assert_allclose(clip[:, never], 127.5, atol=1e-4)
  if mode == 'median':  # The square covers each pixel in one frame of five: not the background.
    for clip, background in zip(clips, backgrounds):
      np.testing.assert_allclose(clip[0, 2:5, 0:3], (255.0 - background[2:5, 0:3]) / 2 + 127.5,
                                 atol=1e-4)
  views = augment.subtract_background(tf.constant(np.stack(clips)), mode)  # [views, T, H, W, C]
  assert views.shape == (2, 5, 16, 16, 3)
  assert augment.subtract_background(tf.constant(clips[0]), '') is not None
  with pytest.raises(ValueError, match='subtract_background'):
    augment.subtract_background(tf.constant(clips[0]), 'mode')
