"""Audio front ends: waveform -> log filterbank "image" for the audio encoders, in TensorFlow.

These run inside the tf.data pipeline on the host, one clip (`[samples]`) or a batch (`[..., samples]`) at
a time. Waveforms are float32 in [-1, 1]; the sample axis must have a static length, because the frame
count, and so the encoder's input shape, is fixed by it. Filter matrices are built in numpy at trace time
and enter the graph as constants. Outputs are float32.

Two front ends:
- `logfbank`: SeLaVi's, a bit-for-bit port of `python_speech_features.logfbank` as SeLaVi's release
  calls it (`docs/papers_and_releases.md`), quirks included, so that released SeLaVi weights see the
  input they were trained on.
- `logmel`: a conventional Hann-window log-mel for XDC and IICL, sized so that a clip maps to a fixed
  number of frames (XDC §4.1 and IICL §IV-B: 40 mel x 100 frames).

`spectrogram(waveform, sample_rate, config)` picks one by `config.mode` and adds the channel axis.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable

import ml_collections
from ml_collections import config_dict
import numpy as np
from etils import epy
with epy.lazy_imports():  # The configs import this module; TensorFlow loads when first used.
  import tensorflow as tf

# python_speech_features replaces filterbank energies of exactly zero by numpy's float64 epsilon, so
# empty filters and silent frames read log(eps) = -36.04.
_PSF_EPS = float(np.finfo(np.float64).eps)
# SeLaVi's `z_normalize` constants (the release's `datasets/audio_utils.py`): mean and std of its
# logfbank.
_SELAVI_MEAN = 1.93
_SELAVI_STD = 17.89
# Guard for log(0) in `logmel`; with power spectra of [-1, 1] waveforms it only acts on digital silence.
_LOGMEL_OFFSET = 1e-6


def logfbank(waveform: tf.Tensor, sample_rate: int, *, win_length_s: float = 0.02,
             hop_length_s: float = 0.01, num_filters: int = 257, nfft: int = 1024,
             preemphasis: float = 0.97, amplitude_scale: float = 32768.0,
             z_normalize: bool = False) -> tf.Tensor:
  """SeLaVi's log mel filterbank: `[..., samples]` float waveform -> `[..., num_filters, frames]`.

  Reproduces `python_speech_features.logfbank(sig, sr, winlen=0.02, winstep=0.01, nfilt=257,
  nfft=1024)` (version 0.6: rectangular window, pre-emphasis, |FFT|^2 / nfft, mel filters from 0 Hz to
  sr / 2, zeros -> eps, natural log), transposed to filters x frames. 1 s of audio gives 257 x 99 at
  16, 24 or 48 kHz. Its quirks are kept on purpose, since trained weights depend on them: the
  rectangular window, and filters narrower than one FFT bin coming out empty (38 of 257 at 24 kHz,
  rows of constant log(eps)).

  Args:
    waveform: float32 `[..., samples]` in [-1, 1], static sample count.
    sample_rate: samples per second of `waveform`.
    win_length_s: analysis window in seconds (rounded half up to samples, as SeLaVi's release does).
    hop_length_s: step between windows in seconds (rounded likewise).
    num_filters: mel filters, spaced evenly in mel from 0 Hz to `sample_rate / 2`.
    nfft: FFT length; frames are zero-padded (or cropped) to it.
    preemphasis: coefficient of the first-order high-pass `y[t] = x[t] - c x[t-1]`.
    amplitude_scale: factor applied to `waveform` first. SeLaVi's release decodes signed 16-bit PCM
      with ffmpeg and never divides by 32768, so its energies are on the int16 scale; multiplying by
      32768 restores exactly those samples (our waveforms are int16 / 32768) and so the same log
      values, which differ by log(32768^2) = 20.8 otherwise. The z-normalisation constants and the
      released weights assume that scale, and so does the log(eps) floor's distance from real energies.
    z_normalize: apply SeLaVi's release's optional `(x - 1.93) / 17.89` (off in SeLaVi's training
      script, on by default in its `get_clusters.py`).

  Returns:
    float32 `[..., num_filters, frames]` with `frames = 1 + ceil((samples - frame_len) / frame_step)`.
  """
  waveform = tf.convert_to_tensor(waveform, tf.float32)
  num_samples = _static_num_samples(waveform)
  frame_len = _round_half_up(win_length_s * sample_rate)
  frame_step = _round_half_up(hop_length_s * sample_rate)
  num_frames = _logfbank_frames(num_samples, frame_len, frame_step)
  padded_len = (num_frames - 1) * frame_step + frame_len

  # Computed in float64, cast at the end: filters below a few hundred Hz span a single FFT bin, whose
  # power for noise-like audio is often 1e-3..1e-5 of the frame's, and float32 FFT round-off (relative to
  # the whole frame) then moves their log by up to ~3e-3. Float64 keeps the port within ~1e-9 of the
  # release at a negligible cost on the host (one 1024-point FFT per 10 ms).
  signal = tf.cast(waveform, tf.float64) * amplitude_scale
  # sigproc.preemphasis keeps the first sample as it is.
  signal = tf.concat([signal[..., :1], signal[..., 1:] - preemphasis * signal[..., :-1]], axis=-1)
  signal = _pad_last(signal, 0, padded_len - num_samples)
  frames = tf.signal.frame(signal, frame_len, frame_step)  # Rectangular window: frames used as is.
  spectrum = tf.signal.rfft(frames, fft_length=[nfft])
  power = (tf.math.square(tf.math.real(spectrum)) + tf.math.square(tf.math.imag(spectrum))) / nfft
  filterbank = tf.constant(_selavi_filterbank(num_filters, nfft, sample_rate).T, tf.float64)
  energies = tf.linalg.matmul(power, filterbank)
  energies = tf.where(energies == 0.0, tf.constant(_PSF_EPS, tf.float64), energies)
  features = tf.cast(tf.linalg.matrix_transpose(tf.math.log(energies)), tf.float32)
  if z_normalize:
    features = (features - _SELAVI_MEAN) / _SELAVI_STD
  return features


def logmel(waveform: tf.Tensor, sample_rate: int, *, num_mel_bins: int = 40, num_frames: int = 100,
           window_length_s: float | None = None, lower_edge_hz: float = 0.0,
           upper_edge_hz: float | None = None) -> tf.Tensor:
  """Hann-window log-mel power spectrogram: `[..., samples]` -> `[..., num_mel_bins, num_frames]`.

  The frame count is fixed, not the hop: the hop is `samples // num_frames`, so whatever span the
  waveform covers maps to exactly `num_frames` frames. XDC's input is 40 mel x 100 frames for a 2 s
  clip at 16 kHz (VMZ's AVInput computes 16 ms / 10 ms frames over the track and resizes them so that
  the clip spans 100 frames); here 2 s at 16 kHz gives a 320-sample (20 ms) hop directly. The window
  defaults to two hops (40 ms): a periodic Hann window at 50% overlap sums to a constant, so every
  sample of the clip weighs the same. Frame `k` is centred on the middle of the `k`-th hop-long
  segment; the clip is zero-padded by about half a hop at each end (any remainder of
  `samples / num_frames` is split between the two ends). The FFT length is the next power of two.

  Args:
    waveform: float32 `[..., samples]` in [-1, 1], static sample count of at least `num_frames`.
    sample_rate: samples per second of `waveform`.
    num_mel_bins: mel bands (HTK mel scale, triangles in mel, `tf.signal.linear_to_mel_weight_matrix`).
    num_frames: frames the waveform maps to.
    window_length_s: Hann window in seconds; None for two hops.
    lower_edge_hz: lowest mel band edge.
    upper_edge_hz: highest mel band edge; None for `sample_rate / 2`.

  Returns:
    float32 `[..., num_mel_bins, num_frames]`, `log(mel power + 1e-6)`.
  """
  waveform = tf.convert_to_tensor(waveform, tf.float32)
  num_samples = _static_num_samples(waveform)
  hop = num_samples // num_frames
  if hop == 0:
    raise ValueError(f'logmel: {num_samples} samples cannot make num_frames={num_frames} frames; '
                     'pass a longer waveform or lower num_frames')
  window = 2 * hop if window_length_s is None else int(round(window_length_s * sample_rate))
  fft_length = 1 << max(window - 1, 1).bit_length()
  pad = (num_frames - 1) * hop + window - num_samples
  signal = _pad_last(waveform, pad // 2, pad - pad // 2)
  stft = tf.signal.stft(signal, frame_length=window, frame_step=hop, fft_length=fft_length,
                        window_fn=tf.signal.hann_window)
  power = tf.math.square(tf.math.real(stft)) + tf.math.square(tf.math.imag(stft))
  mel_matrix = tf.signal.linear_to_mel_weight_matrix(
      num_mel_bins=num_mel_bins, num_spectrogram_bins=fft_length // 2 + 1,
      sample_rate=sample_rate, lower_edge_hertz=lower_edge_hz,
      upper_edge_hertz=sample_rate / 2 if upper_edge_hz is None else upper_edge_hz)
  mel = tf.linalg.matmul(power, mel_matrix)
  return tf.linalg.matrix_transpose(tf.math.log(mel + _LOGMEL_OFFSET))


def default_config(mode: str) -> ml_collections.ConfigDict:
  """The front end `mode` with its paper's settings, as `spectrogram` reads them."""
  if mode == 'logfbank':
    return ml_collections.ConfigDict(dict(
        mode='logfbank', win_length_s=0.02, hop_length_s=0.01, num_filters=257, nfft=1024,
        preemphasis=0.97, amplitude_scale=32768.0, z_normalize=False))
  if mode == 'logmel':
    return ml_collections.ConfigDict(dict(
        mode='logmel', num_mel_bins=40, num_frames=100,
        window_length_s=config_dict.placeholder(float), lower_edge_hz=0.0,
        upper_edge_hz=config_dict.placeholder(float)))
  raise ValueError(f'audio mode={mode!r} is not one of {sorted(_FRONT_ENDS)}')


def spectrogram(waveform: tf.Tensor, sample_rate: int,
                config: ml_collections.ConfigDict) -> tf.Tensor:
  """`[..., samples]` -> `[..., bins, frames, 1]` by the front end `config.mode`, with the other
  fields of `config` (see `default_config`) as its options; the trailing axis is the encoders' channel."""
  if config.mode not in _FRONT_ENDS:
    raise ValueError(f'config.mode={config.mode!r} is not one of {sorted(_FRONT_ENDS)}; '
                     'set the audio config key `mode` to one of them')
  options = {key: value for key, value in config.items() if key != 'mode'}
  return _FRONT_ENDS[config.mode](waveform, sample_rate, **options)[..., tf.newaxis]


_FRONT_ENDS: dict[str, Callable[..., tf.Tensor]] = {'logfbank': logfbank, 'logmel': logmel}


#: `normalize_bands` modes: per band over time, the mean removed, or the mean and the spread.
BAND_NORMS = ('', 'mean', 'mean_std')
# Floor of a band's standard deviation, in log-power units, so that silent bands stay finite.
_BAND_STD_FLOOR = 1e-2


def normalize_bands(spectrogram: tf.Tensor, mode: str) -> tf.Tensor:
  """Each frequency band of a log spectrogram `[..., bins, frames, channels]` normalised over time:
  its mean removed ('mean'), or its mean removed and divided by its standard deviation ('mean_std');
  '' returns it unchanged.

  A stationary sound, such as noise of a fixed colour and level, or a loudness gain, adds a constant
  to each band of a log spectrogram; removing each band's mean over the clip removes that, and what
  stays is how each band changes over time: the short events that name a sound, not the room or the
  microphone (cepstral mean normalisation, per band). Not in any of the papers: a switch for data
  whose nuisances are stationary (`docs/nuisance.md`).
  """
  if mode not in BAND_NORMS:
    raise ValueError(f'audio band normalisation {mode!r} is not one of {list(BAND_NORMS)}; set '
                     "config.data.audio_band_norm to '' (off), 'mean' or 'mean_std'")
  if not mode:
    return spectrogram
  centred = spectrogram - tf.reduce_mean(spectrogram, axis=-2, keepdims=True)
  if mode == 'mean':
    return centred
  spread = tf.sqrt(tf.reduce_mean(tf.square(centred), axis=-2, keepdims=True))
  return centred / tf.maximum(spread, _BAND_STD_FLOOR)


def spectrogram_shape(num_samples: int, sample_rate: int,
                      config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """`spectrogram`'s `[bins, frames, 1]` for a waveform of `num_samples`, without TensorFlow: what an
  encoder's input is, for building a model or costing a step where only the config is at hand."""
  if config.mode == 'logmel':
    return config.num_mel_bins, config.num_frames, 1
  if config.mode != 'logfbank':
    raise ValueError(f'config.mode={config.mode!r} is not one of {sorted(_FRONT_ENDS)}; '
                     'set the audio config key `mode` to one of them')
  frames = _logfbank_frames(num_samples, _round_half_up(config.win_length_s * sample_rate),
                            _round_half_up(config.hop_length_s * sample_rate))
  return config.num_filters, frames, 1


def _logfbank_frames(num_samples: int, frame_len: int, frame_step: int) -> int:
  """python_speech_features.sigproc.framesig: enough frames to cover the signal, the last zero-padded."""
  if num_samples <= frame_len:
    return 1
  return 1 + -(-(num_samples - frame_len) // frame_step)


def _selavi_filterbank(num_filters: int, nfft: int, sample_rate: int) -> np.ndarray:
  """`python_speech_features.get_filterbanks(num_filters, nfft, sample_rate)`: `[filters, nfft/2+1]`.

  The triangle corners are mel-spaced frequencies floored to FFT bins, `floor((nfft+1) hz / sr)`, so
  where neighbouring corners fall in the same bin a filter has no support and stays all zero.
  """
  mel_points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), num_filters + 2)
  corners = np.floor((nfft + 1) * _mel_to_hz(mel_points) / sample_rate)
  left, centre, right = corners[:-2, None], corners[1:-1, None], corners[2:, None]
  bins = np.arange(nfft // 2 + 1, dtype=np.float64)[None, :]
  # Where a slope has zero width its mask is empty, so the denominator's floor of 1 never shows.
  rising = np.where((bins >= left) & (bins < centre), (bins - left) / np.maximum(centre - left, 1), 0)
  falling = np.where((bins >= centre) & (bins < right),
                     (right - bins) / np.maximum(right - centre, 1), 0)
  return rising + falling


def _hz_to_mel(hz):
  # O'Shaughnessy's mel scale, base-10 form, as in python_speech_features.base.hz2mel.
  return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel):
  return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def _round_half_up(x: float) -> int:
  """python_speech_features.sigproc.round_half_up: exact decimal rounding of the float's value."""
  return int(decimal.Decimal(x).quantize(decimal.Decimal('1'), rounding=decimal.ROUND_HALF_UP))


def _static_num_samples(waveform: tf.Tensor) -> int:
  num_samples = waveform.shape[-1] if waveform.shape.rank else None
  if num_samples is None:
    raise ValueError(f'audio waveform of shape {waveform.shape}: the sample axis (last) needs a static '
                     'length, which fixes the frame count; cut clips to a fixed duration first')
  return num_samples


def _pad_last(x: tf.Tensor, before: int, after: int) -> tf.Tensor:
  """Zero-pads (positive) or crops (negative) the last axis of `x` at each end."""
  x = x[..., max(-before, 0):x.shape[-1] - max(-after, 0)]
  paddings = [[0, 0]] * (x.shape.rank - 1) + [[max(before, 0), max(after, 0)]]
  return tf.pad(x, paddings)
