"""Sinkhorn iterations per SeLaVi label update: cold or warm starts, plain or over-relaxed, on the
transport problems of one real training run.

    # 1. Train once, saving every label update's transport problem (any avssl.main arguments):
    python benchmarks/sinkhorn_iterations.py record --solves=runs/sela_solves -- \
        --config=configs/selavi_demo.py:sela --workdir=runs/sela_record
    # 2. Solve every saved problem again with each solver variant and print one table:
    python benchmarks/sinkhorn_iterations.py replay --solves=runs/sela_solves

`record` runs `avssl.main` with `sinkhorn_heads` wrapped so that each call's inputs (the averaged
log-probabilities, the row mask, the sorted prior's marginals) and outputs go to one `.npz`; the run
itself is unchanged and uses its config's solver. Its trajectory depends on that solver (the labels
are the targets the network trains on), so every variant is replayed on this one trajectory. A warm
variant chains its own potentials from update to update, per head, as `SeLaVi.label_update` does
(log α − log r kept, log r' added), with the head groups drawn as in training (`selavi.head_groups`).
Replays need one solve per head group and update: a run with `selavi.targets=cross` (two more solves
per group, one per modality) is refused.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np

import machine


def record(solves: str, argv: list[str]) -> None:
  """Runs avssl.main with `argv`, saving each Sinkhorn call to `solves/call_NNN.npz`."""
  from avssl import main as avssl_main  # pylint: disable=g-import-not-at-top
  from avssl.clustering import sinkhorn as sk  # pylint: disable=g-import-not-at-top
  os.makedirs(solves, exist_ok=True)
  solve = sk.sinkhorn_heads
  calls = 0

  def recorded(log_p, lam, *, col_marginals=None, init_log_alphas=None, **kwargs):
    nonlocal calls
    result = solve(log_p, lam, col_marginals=col_marginals, init_log_alphas=init_log_alphas, **kwargs)
    host = lambda x: np.zeros((0,), np.float32) if x is None else np.asarray(x)
    settings = {k: kwargs[k] for k in ('mode', 'tol', 'num_iters', 'overrelaxation') if k in kwargs}
    np.savez(os.path.join(solves, f'call_{calls:03d}.npz'), log_p=host(log_p),
             row_mask=host(kwargs.get('row_mask')), col_marginals=host(col_marginals),
             init_log_alphas=host(init_log_alphas), settings=json.dumps(dict(lam=lam, **settings)))
    calls += 1
    return result

  sk.sinkhorn_heads = recorded
  sys.argv = [sys.argv[0], *argv]
  try:
    avssl_main.run()
  except SystemExit as e:
    if e.code:
      raise
  workdir = next(a.split('=', 1)[1] for a in argv if a.startswith('--workdir='))
  with open(os.path.join(workdir, 'run.json')) as f:
    config = json.load(f)['config']
  with open(os.path.join(solves, 'run.json'), 'w') as f:
    json.dump(dict(seed=config['seed'], num_heads=config['selavi']['num_heads'],
                   num_groups=config['selavi']['num_groups'],
                   targets=config['selavi'].get('targets', 'shared'), argv=argv), f)
  print(f'{calls} Sinkhorn calls saved to {solves}')


def load(solves: str) -> tuple[dict, list[dict]]:
  with open(os.path.join(solves, 'run.json')) as f:
    run = json.load(f)
  calls = []
  for path in sorted(glob.glob(os.path.join(solves, 'call_*.npz'))):
    with np.load(path) as data:
      calls.append({k: data[k] for k in data.files})
  return run, calls


def replay(run: dict, calls: list[dict], start: str, omega: float, cap: int | None) -> list[dict]:
  """Solves every call again; per call and head: update, head, iterations, error."""
  from avssl.clustering import sinkhorn as sk  # pylint: disable=g-import-not-at-top
  from avssl.methods import selavi  # pylint: disable=g-import-not-at-top
  if run.get('targets', 'shared') != 'shared':
    raise SystemExit(f"replay: the recorded run has selavi.targets={run['targets']!r}, whose per-"
                     'modality solves are not one per head group and update; record a run with '
                     "targets='shared'")
  groups = run['num_groups']
  potentials = {}
  rows = []
  for i, call in enumerate(calls):
    update, group = divmod(i, groups)
    heads = selavi.head_groups(run['seed'], update, run['num_heads'], groups)[group]
    settings = json.loads(str(call['settings']))
    k = call['log_p'].shape[-1]
    marginals = call['col_marginals'] if call['col_marginals'].size else None
    log_r = np.asarray(selavi._log_marginals(marginals, len(heads), k))  # pylint: disable=protected-access
    warm = start == 'warm' and all(h in potentials for h in heads)
    init = log_r + np.stack([potentials[h] for h in heads]) if warm else None
    result = sk.sinkhorn_heads(
        call['log_p'], settings['lam'], col_marginals=marginals, row_mask=call['row_mask'],
        mode=settings['mode'], tol=settings['tol'], num_iters=cap or settings['num_iters'],
        overrelaxation=omega, init_log_alphas=init)
    log_alpha = np.asarray(result.log_alpha)
    for j, h in enumerate(heads):
      potentials[h] = log_alpha[j] - log_r[j]
      rows.append(dict(update=update, head=h, iterations=int(result.iterations[j]),
                       error=float(result.error[j]), capped=float(result.error[j]) > settings['tol']))
  return rows


def table(results: dict[tuple[str, float], list[dict]]) -> str:
  """One row per label update: per variant the iterations summed over heads / the most of one head,
  the solves the cap stopped short of the tolerance (capped: n) and the largest final marginal
  error."""
  names = [f'{start}, ω = {omega:g}' for start, omega in results]
  lines = ['| update | ' + ' | '.join(names) + ' |', '|---:|' + '---:|' * len(names)]
  updates = sorted({r['update'] for rows in results.values() for r in rows})
  cell = lambda rs: (f'{sum(r["iterations"] for r in rs):,} / {max(r["iterations"] for r in rs):,}'
                     + (f', capped: {n}' if (n := sum(r['capped'] for r in rs)) else '')
                     + f' ({max(r["error"] for r in rs):.1e})')
  for u in updates:
    lines.append(f'| {u} | ' + ' | '.join(cell([r for r in rows if r['update'] == u])
                                           for rows in results.values()) + ' |')
  lines.append('| all | ' + ' | '.join(cell(rows) for rows in results.values()) + ' |')
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('action', choices=['record', 'replay'])
  parser.add_argument('--solves', required=True, help='folder of the saved transport problems')
  parser.add_argument('--omegas', default='1,1.95', help='over-relaxations to replay, comma-separated')
  parser.add_argument('--cap', type=int, default=None,
                      help='iteration cap for the replays (default: the run\'s sinkhorn_max_iters)')
  args, rest = parser.parse_known_args()
  if args.action == 'record':
    record(args.solves, [a for a in rest if a != '--'])
    return
  run, calls = load(args.solves)
  print(f'machine: {machine.cpu()}; {machine.jax_devices()}')
  print(f'{len(calls)} Sinkhorn calls from: {" ".join(run["argv"])}')
  omegas = [float(w) for w in args.omegas.split(',')]
  results = {(start, w): replay(run, calls, start, w, args.cap)
             for w in omegas for start in ('cold', 'warm')}
  print(table(results))


if __name__ == '__main__':
  main()
