"""Audio front ends against float64 numpy re-statements of the formulas they implement.

`_reference_logfbank` restates `python_speech_features.logfbank` (SeLaVi's front end,
`docs/papers_and_releases.md`) step by step with loops, independently of the vectorised filterbank in
`avssl.data.audio`; `_reference_logmel` restates the Hann-STFT log-mel.
"""

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from avssl.data import audio

_EPS = np.finfo(np.float64).eps


def _mel(hz):
  return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _hz(mel):
  return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def _reference_filterbank(num_filters, nfft, sample_rate):
  corners = np.floor((nfft + 1) * _hz(np.linspace(0.0, _mel(sample_rate / 2), num_filters + 2))
                     / sample_rate)
  bank = np.zeros((num_filters, nfft // 2 + 1))
  for j in range(num_filters):
    for i in range(int(corners[j]), int(corners[j + 1])):
      bank[j, i] = (i - corners[j]) / (corners[j + 1] - corners[j])
    for i in range(int(corners[j + 1]), int(corners[j + 2])):
      bank[j, i] = (corners[j + 2] - i) / (corners[j + 2] - corners[j + 1])
  return bank


def _reference_logfbank(waveform, sample_rate, num_filters=257, nfft=1024):
  """20 ms rectangular frames every 10 ms on the int16 scale; returns `[filters, frames]`."""
  signal = np.asarray(waveform, np.float64) * 32768.0
  signal = np.concatenate([signal[:1], signal[1:] - 0.97 * signal[:-1]])
  frame_len = int(np.floor(0.02 * sample_rate + 0.5))
  step = int(np.floor(0.01 * sample_rate + 0.5))
  num_frames = 1 if len(signal) <= frame_len else 1 + int(np.ceil((len(signal) - frame_len) / step))
  signal = np.concatenate([signal, np.zeros((num_frames - 1) * step + frame_len - len(signal))])
  frames = np.stack([signal[k * step:k * step + frame_len] for k in range(num_frames)])
  power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
  energies = power @ _reference_filterbank(num_filters, nfft, sample_rate).T
  return np.log(np.where(energies == 0, _EPS, energies)).T


def _reference_logmel(waveform, sample_rate, num_mel_bins=40, num_frames=100):
  """Hann frames of two hops centred on the `num_frames` equal segments; HTK-mel triangles in mel."""
  n = len(waveform)
  hop = n // num_frames
  window = 2 * hop
  fft_length = 1 << (window - 1).bit_length()
  pad = (num_frames - 1) * hop + window - n
  signal = np.concatenate([np.zeros(pad // 2), np.asarray(waveform, np.float64),
                           np.zeros(pad - pad // 2)])
  hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)
  frames = np.stack([signal[k * hop:k * hop + window] * hann for k in range(num_frames)])
  power = np.abs(np.fft.rfft(frames, fft_length)) ** 2
  bin_mel = _mel(np.linspace(0.0, sample_rate / 2, fft_length // 2 + 1))
  edges = np.linspace(0.0, _mel(sample_rate / 2), num_mel_bins + 2)
  lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
  weights = np.maximum(0.0, np.minimum((bin_mel[:, None] - lower) / (centre - lower),
                                       (upper - bin_mel[:, None]) / (upper - centre)))
  return np.log(power @ weights + 1e-6).T


def _waveform(kind, num_samples, sample_rate, seed=0):
  """int16-representable float32 samples in [-1, 1]: uniform noise, or a sine plus a little noise."""
  rng = np.random.default_rng(seed)
  if kind == 'noise':
    x = rng.uniform(-0.9, 0.9, num_samples)
  else:
    t = np.arange(num_samples) / sample_rate
    x = 0.6 * np.sin(2 * np.pi * 1234.5 * t + 0.3) + 0.01 * rng.standard_normal(num_samples)
  return (np.round(x * 32767) / 32768).astype(np.float32)


@pytest.mark.parametrize('sample_rate', [16000, 24000, 48000])
@pytest.mark.parametrize('kind', ['noise', 'sine'])
def test_logfbank_matches_reference(sample_rate, kind):
  x = _waveform(kind, sample_rate, sample_rate)
  got = audio.logfbank(x, sample_rate).numpy()
  assert got.shape == (257, 99) and got.dtype == np.float32
  np.testing.assert_allclose(got, _reference_logfbank(x, sample_rate), rtol=0, atol=1e-3)


@pytest.mark.parametrize('num_samples', [16217, 300])
def test_logfbank_zero_pads_the_last_frame(num_samples):
  x = _waveform('noise', num_samples, 16000, seed=1)
  want = _reference_logfbank(x, 16000)
  assert want.shape[1] == (1 if num_samples <= 320 else 1 + -(-(num_samples - 320) // 160))
  np.testing.assert_allclose(audio.logfbank(x, 16000).numpy(), want, rtol=0, atol=1e-3)


def test_logfbank_empty_filters_at_24khz():
  got = audio.logfbank(_waveform('noise', 24000, 24000), 24000).numpy()
  constant_rows = np.all(got == np.float32(np.log(_EPS)), axis=1)
  assert constant_rows.sum() == 38
  empty_filters = ~_reference_filterbank(257, 1024, 24000).any(axis=1)
  np.testing.assert_array_equal(constant_rows, empty_filters)
  assert np.log(_EPS) == pytest.approx(-36.04, abs=5e-3)


def test_logfbank_batch_equals_per_example():
  batch = np.stack([[_waveform(kind, 16000, 16000, seed=s) for kind in ('noise', 'sine')]
                    for s in range(2)])
  got = audio.logfbank(batch, 16000).numpy()
  assert got.shape == (2, 2, 257, 99)
  for i in range(2):
    for j in range(2):
      np.testing.assert_allclose(got[i, j], audio.logfbank(batch[i, j], 16000).numpy(), atol=1e-5)


def test_logfbank_z_normalize():
  x = _waveform('sine', 16000, 16000)
  plain = audio.logfbank(x, 16000).numpy()
  np.testing.assert_allclose(audio.logfbank(x, 16000, z_normalize=True).numpy(),
                             (plain - 1.93) / 17.89, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('kind', ['noise', 'sine'])
def test_logmel_matches_reference(kind):
  x = _waveform(kind, 32000, 16000)
  got = audio.logmel(x, 16000).numpy()
  assert got.shape == (40, 100) and got.dtype == np.float32
  np.testing.assert_allclose(got, _reference_logmel(x, 16000), rtol=0, atol=1e-3)


@pytest.mark.parametrize('frequency', [300.0, 1000.0, 3000.0, 7000.0])
def test_logmel_tone_peaks_in_its_mel_bin(frequency):
  t = np.arange(32000) / 16000
  got = audio.logmel((0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), 16000).numpy()
  centres = np.linspace(0.0, _mel(8000.0), 42)[1:-1]
  assert np.all(got.argmax(axis=0) == np.abs(centres - _mel(frequency)).argmin())


def test_spectrogram_adds_channel_axis():
  batch = np.stack([_waveform('noise', 32000, 16000, seed=s) for s in range(3)])
  assert audio.spectrogram(batch, 16000, audio.default_config('logmel')).shape == (3, 40, 100, 1)
  one_second = batch[:, :24000]
  logfbank = audio.spectrogram(one_second, 24000, audio.default_config('logfbank')).numpy()
  assert logfbank.shape == (3, 257, 99, 1)
  np.testing.assert_array_equal(logfbank[..., 0], audio.logfbank(one_second, 24000).numpy())


@pytest.mark.parametrize('mode, shape', [('logfbank', (257, 99, 1)), ('logmel', (40, 100, 1))])
def test_spectrogram_in_tf_data_has_static_shape(mode, shape):
  waveforms = np.stack([_waveform('noise', 16000, 16000, seed=s) for s in range(2)])
  config = audio.default_config(mode)
  dataset = tf.data.Dataset.from_tensor_slices(waveforms).map(
      lambda w: audio.spectrogram(w, 16000, config))
  assert tuple(dataset.element_spec.shape) == shape
  for waveform, spectrogram in zip(waveforms, dataset.as_numpy_iterator()):
    np.testing.assert_allclose(spectrogram, audio.spectrogram(waveform, 16000, config), atol=1e-5)


def test_unknown_mode_names_the_key():
  config = ml_collections.ConfigDict(dict(mode='mfcc'))
  with pytest.raises(ValueError, match=r"config\.mode='mfcc'.*logfbank.*logmel"):
    audio.spectrogram(np.zeros(16000, np.float32), 16000, config)
  with pytest.raises(ValueError, match='mfcc'):
    audio.default_config('mfcc')


def _event_in_noise(noise_gain: np.ndarray, gain: float, rate: int = 16000) -> np.ndarray:
  """1 s of stationary noise, coloured by `noise_gain` (one gain per rfft bin), with a 1 kHz burst
  from 0.4 to 0.6 s, all scaled by `gain`."""
  rng = np.random.default_rng(0)
  noise = np.fft.irfft(np.fft.rfft(rng.standard_normal(rate)) * noise_gain, rate)
  t = np.arange(rate) / rate
  burst = np.where((t > 0.4) & (t < 0.6), np.sin(2 * np.pi * 1000 * t), 0.0)
  return (gain * 0.05 * (noise + 4 * burst)).astype(np.float32)


@pytest.mark.parametrize('mode', ['mean', 'mean_std'])
def test_band_normalisation_removes_loudness_and_stationary_colour(mode):
  """A clip 20 dB quieter, or its noise (and everything else) through a filter that is flat within
  each mel band, normalises to the same spectrogram: the log of a gain per band is a constant per
  band. The burst stays: its bands are far above their mean while it sounds."""
  config = audio.default_config('logmel')
  config.num_mel_bins, config.num_frames = 16, 50
  freqs = np.fft.rfftfreq(16000, 1 / 16000)
  mel = 2595.0 * np.log10(1 + freqs / 700.0)
  slope = 10 ** (-(mel / mel.max()) * 1.5)  # about 30 dB down from the lowest to the highest band
  plain = _event_in_noise(np.ones_like(freqs), 1.0)
  normalise = lambda w: audio.normalize_bands(audio.spectrogram(w, 16000, config), mode).numpy()
  reference = normalise(plain)
  np.testing.assert_allclose(normalise(_event_in_noise(np.ones_like(freqs), 0.1)), reference,
                             atol=1e-3)
  coloured = normalise(_event_in_noise(slope, 1.0))
  raw = audio.spectrogram(plain, 16000, config).numpy()
  raw_coloured = audio.spectrogram(_event_in_noise(slope, 1.0), 16000, config).numpy()
  assert np.abs(raw_coloured - raw).mean() > 1.0  # The colour moves the raw spectrogram ...
  assert np.abs(coloured - reference).mean() < 0.1 * np.abs(raw_coloured - raw).mean()  # ... not this.
  band = int(reference[:, 25, 0].argmax())  # The band of the 1 kHz burst.
  assert reference[band, 21:29].mean() - reference[band, :15].mean() > 1.5
  np.testing.assert_allclose(reference.mean(axis=-2), 0.0, atol=1e-4)
  np.testing.assert_array_equal(audio.normalize_bands(tf.constant(raw), '').numpy(), raw)
  with pytest.raises(ValueError, match='audio_band_norm'):
    audio.normalize_bands(tf.constant(raw), 'median')
