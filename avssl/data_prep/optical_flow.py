"""TV-L1 optical flow between consecutive frames, stored losslessly as quantised uint8.

GOCA's flow stream follows TSN/MemDPC (`docs/papers_and_releases.md`): TV-L1 on grayscale frames, clip
to ±20 px, quantise to uint8. The released pipeline then writes the levels as JPEG and re-encodes them
to H.264 4:2:0 mp4 and resizes that again, so the network sees flow damaged by lossy compression and
chroma subsampling, and a level no longer maps back to the pixel displacement it encoded. Here the uint8
levels (`avssl.data.flow`) are kept bit-exact, in an .npz from this tool or in the training records,
and the input pipeline dequantises them.

`tvl1_flow` is a pure numpy-in, numpy-out function at module level, so a `multiprocessing` pool can run
it in worker processes (it builds its OpenCV solver per call; solvers do not pickle). OpenCV runs its
own threads; in a pool of one worker per core, call `cv2.setNumThreads(1)` in the pool's initializer.

Usage:
  python -m avssl.data_prep.optical_flow --video=clip.mp4 --output=clip_flow.npz [--short_side=256]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import av
import cv2
import numpy as np

from avssl import files
from avssl.data import flow as flow_lib

# GOCA's README resizes frames to short side 256 before flow, for every dataset alike
# (`docs/papers_and_releases.md`).
DEFAULT_SHORT_SIDE = 256


def tvl1_flow(frames: np.ndarray) -> np.ndarray:
  """Quantised TV-L1 flow between consecutive RGB frames.

  Args:
    frames: uint8 [T, H, W, 3] RGB frames, T >= 2.

  Returns:
    uint8 [T-1, H, W, 2]: flow from frame t to frame t+1 (channel 0 = u, rightwards; 1 = v, downwards)
    quantised by `avssl.data.flow.quantize`.
  """
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2:
    raise ValueError(f'tvl1_flow needs uint8 frames [T >= 2, H, W, 3]; got {frames.dtype} '
                     f'{frames.shape}')
  # OpenCV's CPU defaults are the CUDA defaults GOCA used (τ 0.25, λ 0.15, θ 0.3, 5 scales, 5 warps,
  # ε 0.01, 30 x 10 = 300 iterations, scale step 0.8; `docs/papers_and_releases.md`).
  # cv2's type stubs lack the contrib module's factory.
  solver = cv2.optflow.DualTVL1OpticalFlow_create()  # type: ignore[attr-defined]
  gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]
  flows = [solver.calc(prev, nxt, None) for prev, nxt in zip(gray[:-1], gray[1:])]
  return flow_lib.quantize(np.stack(flows))


def decode_frames(path: str, short_side: int = 0, max_frames: int = 0) -> tuple[np.ndarray, float]:
  """RGB frames uint8 [T, H, W, 3] of the first video stream, and its average frame rate.

  With `short_side` > 0 the frames are resized (area filter, aspect kept) so that their short side
  is `short_side`; `max_frames` > 0 stops decoding after that many frames.
  """
  with av.open(path) as container:
    if not container.streams.video:
      raise ValueError(f'file {path}: no video stream')
    stream = container.streams.video[0]
    stream.thread_type = 'AUTO'
    fps = float(stream.average_rate) if stream.average_rate else 0.0
    frames = []
    for frame in container.decode(stream):
      size = _resized(frame.width, frame.height, short_side)
      frames.append(frame.to_ndarray(format='rgb24', width=size[0], height=size[1],
                                     interpolation='AREA'))
      if max_frames and len(frames) == max_frames:
        break
  if len(frames) < 2:
    raise ValueError(f'file {path}: {len(frames)} decodable frame(s); flow needs at least 2')
  return np.stack(frames), fps


def _resized(width: int, height: int, short_side: int) -> tuple[int, int]:
  if not short_side:
    return width, height
  scale = short_side / min(width, height)
  if width <= height:
    return short_side, round(height * scale)
  return round(width * scale), short_side


def save_flow(path: str, flow: np.ndarray, fps: float) -> None:
  """Writes quantised flow losslessly (zip-deflated .npz), with the frame rate it was computed at."""
  with files.atomic_open(path, 'wb') as f:
    np.savez_compressed(f, flow=flow, fps=np.float32(fps))


def flow_stats(flow: np.ndarray) -> dict[str, float]:
  """Mean and 99th-percentile magnitude (px) of quantised flow, and the fraction of components on the
  end levels (clipped at ±`FLOW_BOUND`); a large fraction means the bound, or the frame size, is off."""
  magnitude = np.linalg.norm(flow_lib.dequantize(flow), axis=-1)
  saturated = np.mean((flow == 0) | (flow == flow_lib.QUANT_MAX))
  return {'mean_px': float(magnitude.mean()), 'p99_px': float(np.percentile(magnitude, 99)),
          'saturated_fraction': float(saturated)}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  # argparse, not absl flags: other avssl.data_prep tools import `tvl1_flow` from here, and
  # module-level absl flags would collide with theirs.
  parser = argparse.ArgumentParser(
      prog='python -m avssl.data_prep.optical_flow',
      description='TV-L1 optical flow of one video, quantised to uint8 and written losslessly to .npz.')
  parser.add_argument('--video', required=True, help='video file (any container PyAV reads)')
  parser.add_argument('--output', required=True,
                      help='output .npz with `flow` uint8 [T-1, H, W, 2] (u, v) and `fps`')
  parser.add_argument('--short_side', type=int, default=DEFAULT_SHORT_SIDE,
                      help='resize frames to this short side before flow (0: keep the decoded size)')
  parser.add_argument('--max_frames', type=int, default=0,
                      help='decode at most this many frames (0: all)')
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  start = time.perf_counter()
  frames, fps = decode_frames(args.video, args.short_side, args.max_frames)
  flow = tvl1_flow(frames)
  save_flow(args.output, flow, fps)
  stats = flow_stats(flow)
  print(f'{args.video}: {len(frames)} frames {frames.shape[2]}x{frames.shape[1]} at {fps:.3f} fps '
        f'-> flow {flow.shape} in {time.perf_counter() - start:.1f} s, written to {args.output}')
  print(f'|flow| mean {stats["mean_px"]:.3f} px, p99 {stats["p99_px"]:.3f} px; '
        f'{100 * stats["saturated_fraction"]:.3f}% of components clipped at ±{flow_lib.FLOW_BOUND:g} px')


if __name__ == '__main__':
  main()
