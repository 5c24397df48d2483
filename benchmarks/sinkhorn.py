"""Sinkhorn-Knopp at VGG-Sound scale: this project's solver against the released SeLaVi algorithm.

    python benchmarks/sinkhorn.py            # N = 170,752, K = 309, 10 heads, λ = 20, then λ = 100
    python benchmarks/sinkhorn.py --quick    # N = 20,000, 2 heads: a smoke run

The reference is a float64 numpy port of the released `optimize_L_sk_gpu` (selavi `src/sk_utils.py`):
α = r / (βᵀ PS), β = c / (PS α), err = Σ_n |β_n / β'_n - 1| checked every 10 iterations, stop at
err ≤ 0.1 or 2000 iterations, labels argmax_k α_k PS_nk. Both run on the same input (log-softmax outputs
of a synthetic, partly trained network: skewed true classes plus noise), each in its own process so peak
memory is its own; so does avssl's over-relaxed solver (ω = 1.95, SeLaVi's default). Prints wall time, iterations, label agreement, peak memory, the per-iteration time
for N = 10k, 100k, 1M, and the same problem at λ = 100; and the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

import machine


def make_input(heads: int, n: int, k: int, seed: int = 0) -> np.ndarray:
  """log-softmax outputs `[heads, N, K]`, float32, built head by head so no temporary exceeds a head."""
  rng = np.random.default_rng(seed)
  sizes = np.exp(0.5 * rng.standard_normal(k))
  truth = rng.choice(k, size=n, p=sizes / sizes.sum())
  out = np.empty((heads, n, k), np.float32)
  for h in range(heads):
    logits = rng.standard_normal((n, k), np.float32) * 1.5
    logits[np.arange(n), truth] += 2.0 + 0.3 * h
    logits -= logits.max(axis=1, keepdims=True)
    out[h] = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  return out


def reference_sk(log_p: np.ndarray, lam: float) -> tuple[np.ndarray, int, str]:
  """The released algorithm, float64; returns labels, iterations and how it ended."""
  n, k = log_p.shape
  ps = np.exp(lam * log_p.astype(np.float64))
  r, c = np.full(k, 1.0 / k), np.full(n, 1.0 / n)
  beta = np.full(n, 1.0 / n)
  err, it = 1e6, 0
  with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
    while err > 0.1 and it < 2000:
      alpha = r / (beta @ ps)
      beta_new = c / (ps @ alpha)
      if it % 10 == 0:
        err = np.nansum(np.abs(beta / beta_new - 1))
      beta = beta_new
      it += 1
    finite = np.isfinite(alpha).all() and np.isfinite(beta).all()
  ended = 'converged' if err <= 0.1 and finite else ('overflow (inf/NaN)' if not finite else
                                                    'stalled at 2000 iterations')
  labels = np.empty(n, np.int64)
  for start in range(0, n, 8192):
    labels[start:start + 8192] = np.argmax(ps[start:start + 8192] * alpha, axis=1)
  return labels, it, ended


def _rss_kb(field: str) -> int:
  with open('/proc/self/status') as f:
    return next(int(line.split()[1]) for line in f if line.startswith(field))


def _reset_peak() -> None:
  with open('/proc/self/clear_refs', 'w') as f:  # resets VmHWM to the current RSS (Linux)
    f.write('5')


def run_one(which: str, heads: int, n: int, k: int, lam: float, tol: float, out: str) -> None:
  """One solver in this process: time, iterations, peak memory above the input; labels to `out`."""
  import jax  # pylint: disable=g-import-not-at-top
  from avssl.clustering import sinkhorn as sk  # pylint: disable=g-import-not-at-top
  jax.numpy.zeros(1).block_until_ready()
  base = _rss_kb('VmRSS')
  log_p = make_input(heads, n, k)
  _reset_peak()
  with_input = _rss_kb('VmRSS')
  compile_s = 0.0
  if which in ('ours', 'relaxed'):
    omega = 1.95 if which == 'relaxed' else 1.0
    start = time.perf_counter()
    sk.sinkhorn(log_p[0][:1024], lam, tol=tol, overrelaxation=omega).labels.block_until_ready()
    sk.sinkhorn(log_p[0], lam, tol=None, num_iters=1, overrelaxation=omega).labels.block_until_ready()
    compile_s = time.perf_counter() - start
    _reset_peak()
    start = time.perf_counter()
    result = sk.sinkhorn_heads(log_p, lam, tol=tol, num_iters=2000, overrelaxation=omega)
    labels = np.asarray(result.labels)
    seconds = time.perf_counter() - start
    iterations = [int(i) for i in result.iterations]
    ended = [f'error {float(e):.1e}' for e in result.error]
  else:
    start = time.perf_counter()
    runs = [reference_sk(log_p[h], lam) for h in range(heads)]
    seconds = time.perf_counter() - start
    labels = np.stack([r[0] for r in runs])
    iterations, ended = [r[1] for r in runs], [r[2] for r in runs]
  np.save(out, labels)
  print(json.dumps(dict(seconds=seconds, compile_seconds=compile_s, iterations=iterations,
                        ended=ended, peak_extra_mb=(_rss_kb('VmHWM') - with_input) / 1024,
                        input_mb=log_p.nbytes / 2**20, process_mb=(with_input - base) / 1024)))


def per_iteration_ms(n: int, k: int, iters: int = 40) -> float:
  """Per-iteration time from the difference of a 1- and a (1 + iters)-iteration solve on device data."""
  import jax  # pylint: disable=g-import-not-at-top
  from avssl.clustering import sinkhorn as sk  # pylint: disable=g-import-not-at-top
  log_p = jax.device_put(make_input(1, n, k)[0])
  solve = lambda count: sk.sinkhorn(log_p, 20.0, tol=None, num_iters=count).labels.block_until_ready()
  solve(1)
  best = {}
  for count in (1, iters + 1, 1, iters + 1):
    start = time.perf_counter()
    solve(count)
    best[count] = min(best.get(count, np.inf), time.perf_counter() - start)
  return (best[iters + 1] - best[1]) / iters * 1000


def _machine() -> str:
  memory = os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30
  return f'{machine.cpu()}, {memory:.0f} GiB'


def _spawn(which, heads, n, k, lam, tol, tmp):
  out = os.path.join(tmp, f'{which}_{lam}.npy')
  cmd = [sys.executable, __file__, '--run', which, '--heads', str(heads), '--n', str(n), '--k', str(k),
         '--lam', str(lam), '--tol', str(tol), '--out', out]
  result = subprocess.run(cmd, capture_output=True, text=True, check=True)
  return json.loads(result.stdout.strip().splitlines()[-1]), np.load(out)


def compare(heads, n, k, lam, tol, tmp) -> None:
  print(f'\n== N = {n:,}, K = {k}, {heads} heads, λ = {lam:g} ==')
  ours, ours_labels = _spawn('ours', heads, n, k, lam, tol, tmp)
  ref, ref_labels = _spawn('reference', heads, n, k, lam, tol, tmp)
  relaxed, relaxed_labels = _spawn('relaxed', heads, n, k, lam, tol, tmp)
  agreement = (ours_labels == ref_labels).mean()
  print(f'reference (float64 numpy, released algorithm): {ref["seconds"]:.1f} s, iterations '
        f'{ref["iterations"]}, {sorted(set(ref["ended"]))}, peak memory above input '
        f'{ref["peak_extra_mb"]:.0f} MB')
  print(f'avssl (stabilised scaling, float32, tol {tol:g}): {ours["seconds"]:.1f} s '
        f'(+ {ours["compile_seconds"]:.1f} s compile, once per shape), iterations {ours["iterations"]}, '
        f'peak memory above input {ours["peak_extra_mb"]:.0f} MB')
  print(f'input {ours["input_mb"]:.0f} MB; avssl peak / input = '
        f'{(ours["input_mb"] + ours["peak_extra_mb"]) / ours["input_mb"]:.2f}, reference peak / input = '
        f'{(ref["input_mb"] + ref["peak_extra_mb"]) / ref["input_mb"]:.2f}')
  print(f'speed-up {ref["seconds"] / ours["seconds"]:.2f}x; identical labels {100 * agreement:.3f} %')
  print(f'avssl over-relaxed (ω = 1.95): {relaxed["seconds"]:.1f} s, iterations {relaxed["iterations"]}, '
        f'identical labels to plain avssl {100 * (relaxed_labels == ours_labels).mean():.3f} %')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--tol', type=float, default=1e-3, help="avssl's marginal L1 tolerance")
  parser.add_argument('--run', choices=['ours', 'relaxed', 'reference'])
  parser.add_argument('--heads', type=int, default=10)
  parser.add_argument('--n', type=int, default=170_752)
  parser.add_argument('--k', type=int, default=309)
  parser.add_argument('--lam', type=float, default=20.0)
  parser.add_argument('--out')
  args = parser.parse_args()
  if args.run:
    run_one(args.run, args.heads, args.n, args.k, args.lam, args.tol, args.out)
    return
  import jax  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  print(f'machine: {_machine()}; jax {jax.__version__} on {jax.default_backend()}')
  heads, n = (2, 20_000) if args.quick else (args.heads, args.n)
  with tempfile.TemporaryDirectory() as tmp:
    compare(heads, n, args.k, 20.0, args.tol, tmp)
    compare(1, n, args.k, 100.0, args.tol, tmp)
  print('\n== time per iteration, one head, K = 309 ==')
  for size in ((10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000)):
    print(f'N = {size:>9,}: {per_iteration_ms(size, args.k):.2f} ms/iteration')


if __name__ == '__main__':
  main()
