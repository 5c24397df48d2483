"""`--mode=eval`: the evaluations a config lists (`config.evaluation.run`), for any method's checkpoint.

- `method`: the method's own evaluation (SeLaVi: clustering metrics per view, Table 2), also written to
  `eval.json` / `eval.md` as the end of training writes them;
- `kmeans`: post-hoc k-means on the trained encoders' and on random encoders' features, beside the
  method's own clusters (SeLaVi Table 5; GOCA Table 6 / IICL Table II cluster quality);
- `retrieval`: nearest-neighbour video retrieval, test queries against the train split (SeLaVi Table 4,
  GOCA Table 1), optionally cross-modal mAP (IICL Table III);
- `probe`: a linear probe on frozen features, averaged over the folds given;
- `robustness`: clustering NMI as the video is degraded (SeLaVi Fig. 2);
- `factors`: the nuisance report, the NMI of every clustering of the evaluation split (each head of
  each view, the self-labels, the k-means baselines of a `kmeans` evaluation run before it) against
  the classes and against each per-video factor of `config.evaluation.factors.file`
  (`evaluation/factors.py`); added last to the list whenever that file is given.

Every other evaluation scores against the videos' classes; those the records cannot score (a split
without labels, or absent) are skipped with a logged reason before the checkpoint is read (`plan`).

Each writes `eval/<name>.json` and `eval/<name>.md` (a table laid out like the paper's, under a header
with the config, checkpoint step and protocol switches) in the workdir, and all tables are collected in
`eval/tables.md`. Evaluations never train or change the checkpoint; BatchNorm runs on its statistics.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from avssl import errors, files, sharding
from avssl.data import datasets, on_device, pipeline
from avssl.data import splits
from avssl.evaluation import baselines, factors, features, probe, retrieval, robustness, tables
from avssl.methods import base
from avssl.methods.base import HasEncoders, Method
from avssl.modes import label
from avssl.modes.setup import setup
from avssl.train_state import TrainState


@dataclasses.dataclass
class Context:
  """What every evaluation may read."""
  config: ml_collections.ConfigDict
  method: Method
  state: TrainState
  data: datasets.DataSource
  mesh: jax.sharding.Mesh
  workdir: str
  step: int
  config_name: str = ''
  method_results: dict[str, float] = dataclasses.field(default_factory=dict)
  # Features of records passes, by what determines them (`_record_features`): retrieval and the
  # probe read the same views of the same splits with the same encoder when their settings agree.
  feature_cache: dict[tuple, features.Features] = dataclasses.field(default_factory=dict)
  # The k-means evaluation's clusterings, by table row: (dataset index [N], clusters [N, runs]), for
  # the nuisance report.
  kmeans: dict[str, tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)

  @property
  def host_mesh(self) -> jax.sharding.Mesh:
    """This process's devices: host-side evaluations (k-means, kNN, probes) run on features every
    process holds in full, so each computes the same result without crossing hosts."""
    return sharding.make_mesh(jax.local_devices())

  def meta(self, **protocol: Any) -> dict[str, Any]:
    """The header lines of a table: what was measured, and how."""
    return {'config': self.config_name or self.config.method, 'method': self.config.method,
            'checkpoint step': self.step, **protocol}


@dataclasses.dataclass
class Result:
  values: dict[str, Any]
  table: str


def method_evaluation(ctx: Context) -> Result:
  """The method's own `evaluate` on the run's evaluation split, and its `report`."""
  results = ctx.method.evaluate(ctx.state, ctx.data.eval_batches())
  ctx.method_results = results
  report = ctx.method.report(results)
  write_method_results(ctx.workdir, ctx.step, results, report)
  title = ctx.method.report_title if report else 'Method evaluation'
  meta = ctx.meta(data=ctx.config.data.get('dir') or ctx.config.data.name,
                  split=ctx.config.data.get('eval_split', 'eval'), **ctx.method.report_notes)
  body = report or json.dumps(results, indent=1, sort_keys=True)
  return Result(results, tables.header(title, meta) + '\n' + body)


def write_method_results(workdir: str, step: int, results: dict[str, float],
                         table: str | None) -> None:
  """`eval.json` (flat scalars, read by `avssl.modes.compare`) and `eval.md`, atomically."""
  if jax.process_index() != 0 or not results:
    return
  with files.atomic_open(files.join(workdir, 'eval.json')) as f:
    json.dump({'step': step, **results}, f, indent=1, sort_keys=True)
  if table:
    with files.atomic_open(files.join(workdir, 'eval.md')) as f:
      f.write(table + '\n')


def _num_classes(ctx: Context, labels: np.ndarray) -> int:
  classes = ctx.data.classes or ctx.config.data.get('num_classes', 0)
  count = len(classes) if isinstance(classes, (list, tuple)) else int(classes)
  return count or int(labels.max()) + 1


def _features(ctx: Context, encoders: dict[str, tuple[str, str]], batches: Callable,
              pool: str | None = None, transform=None) -> dict[str, features.Features]:
  """Features of `{name: (encoder source, modality)}` from one pass of `batches()`; `pool` applies to
  the video encoders. Random and imported encoders are initialised on the pass's first batch (as the
  network input: uint8 video and flow normalised)."""
  first = functools.cache(lambda: next(iter(batches())))

  def example(modality: str) -> np.ndarray:
    x = first()[modality]
    x = x[0, 0] if x.ndim == features.RANK[modality] + 2 else x[0]
    return np.asarray(on_device.normalize_input(modality, x, *on_device.scale(ctx.config.data)))

  trained = ctx.method.encoders(ctx.state) if isinstance(ctx.method, HasEncoders) else {}
  built = {}
  for name, (source, modality) in encoders.items():
    module = features.encoder_module(ctx.config, modality, None if modality == 'audio' else pool)
    variables = features.encoder_variables(source, module, modality,
                                           functools.partial(example, modality), trained=trained,
                                           seed=ctx.config.seed + 1)
    built[name] = features.Encoder(module, variables, modality)
  return features.extract(built, batches(), ctx.mesh, transform, ctx.config.data)


def kmeans_evaluation(ctx: Context) -> Result:
  """k-means on each configured encoder × modality (views averaged), beside the method's clusters."""
  settings = ctx.config.evaluation.kmeans
  singles = sorted({m for name in settings.modalities for m in name.split(' + ')},
                   key=('video', 'audio', 'flow').index)
  rows, values = {}, {}
  feats = _features(ctx, {f'{e}/{m}': (e, m) for e in settings.encoders for m in singles},
                    ctx.data.eval_batches)
  for encoder in settings.encoders:
    for name in settings.modalities:
      parts = [feats[f'{encoder}/{m}'] for m in name.split(' + ')]
      labels = parts[0].labels
      k = settings.k or _num_classes(ctx, labels)
      x = baselines.video_features([p.views for p in parts], settings.normalize, settings.joint)
      assignments = baselines.kmeans_runs(x, k, runs=settings.runs, iters=settings.iters,
                                          seed=settings.seed, mesh=ctx.host_mesh)
      result = {**baselines.quality(assignments, labels), 'k': k}
      row = f'k-means, {encoder} encoder: {name}'
      ctx.kmeans[row] = (parts[0].index, assignments)
      rows[row] = result
      values[row] = result
      logging.info('%s: NMI %.3f ± %.3f over %d runs', row, result['nmi']['mean'],
                   result['nmi']['std'], settings.runs)
  for view in ('video + audio', 'video', 'audio', 'concat'):
    if tables.clustering_key(view, 'nmi', 'mean') in ctx.method_results:
      rows[f'{ctx.config.method}: {view}'] = {
          m: {stat: ctx.method_results[tables.clustering_key(view, m, stat)]
              for stat in tables.STATS} for m in tables.SELAVI}
  meta = ctx.meta(data=ctx.config.data.get('dir') or ctx.config.data.name,
                  split=ctx.config.data.get('eval_split', 'eval'), k=settings.k or 'number of classes',
                  runs=f'{settings.runs} k-means++ runs, mean ± std',
                  features=(f'views averaged, L2-normalised per modality, joint: {settings.joint}'
                            if settings.normalize else f'views averaged, raw, joint: {settings.joint}'))
  text = (tables.header('Unsupervised labelling (SeLaVi Table 5 layout)', meta) + '\n'
          + tables.clustering(rows) + '\n\n'
          + tables.header('Cluster quality (GOCA Table 6 / IICL Table II layout)', meta) + '\n'
          + tables.clustering({k: v for k, v in rows.items() if k in values},
                              tables.CLUSTER_QUALITY))
  return Result(values, text)


def robustness_evaluation(ctx: Context) -> Result:
  """SeLaVi Fig. 2: the method's NMI per view at each down-sampling factor of the video."""
  settings = ctx.config.evaluation.robustness

  def baseline(factor: int) -> float:
    feats = _features(ctx, {'video': ('trained', 'video')}, ctx.data.eval_batches,
                      transform=robustness.degrade_fn(factor))['video']
    k = _num_classes(ctx, feats.labels)
    return baselines.kmeans_quality(baselines.video_features([feats.views]), feats.labels, k,
                                    runs=settings.baseline_runs, mesh=ctx.host_mesh)['nmi']['mean']

  curve = robustness.curve(lambda b: ctx.method.evaluate(ctx.state, b),
                           ctx.data.eval_batches, settings.factors, settings.views,
                           baseline if settings.baseline_runs else None,
                           on_device.scale(ctx.config.data))
  meta = ctx.meta(degradation=curve['protocol'], factors=settings.factors,
                  nmi='mean over heads; k-means baseline: mean over '
                      f'{settings.baseline_runs} runs')
  return Result(curve, tables.header('Degraded video (SeLaVi Fig. 2 as a table)', meta) + '\n'
                + tables.robustness(curve))


def _records(ctx: Context, directory: str, train_split: str, test_split: str, clips: int,
             crops: int, modalities: tuple[str, ...]) -> datasets.DataSource:
  evaluation = ctx.config.evaluation
  return features.records(
      ctx.config, batch_size=evaluation.batch_size or 8 * jax.device_count(),
      dir=directory or ctx.config.data.dir, train_split=train_split, eval_split=test_split,
      eval_clips=clips, eval_crops=crops, with_audio='audio' in modalities,
      with_video=bool({'video', 'flow'} & set(modalities)),
      num_frames=evaluation.num_frames or ctx.config.data.num_frames)


def _record_features(ctx: Context, directory: str, train_split: str, test_split: str,
                     clips: int, crops: int, split: str, wanted: dict[str, tuple[str, str]],
                     pool: str) -> dict[str, features.Features]:
  """Features of `wanted` (`{modality: (encoder, modality)}`) on the `split` ('train' or 'test')
  side of a records folder's `clips` × `crops` views, each extracted once per evaluation run: an
  evaluation asking again for the same views, encoder and pooling (the probe after retrieval, where
  their settings agree) gets them without a pass."""
  directory = directory or ctx.config.data.dir  # '' is the run's own records.
  key = lambda m: (directory, train_split, test_split, clips, crops, split, *wanted[m], pool)
  missing = {m: spec for m, spec in wanted.items() if key(m) not in ctx.feature_cache}
  if missing:
    source = _records(ctx, directory, train_split, test_split, clips, crops, tuple(missing))
    batches = (functools.partial(source.dataset_batches, augment=False) if split == 'train'
               else source.eval_batches)
    for m, feats in _features(ctx, missing, batches, pool).items():
      ctx.feature_cache[key(m)] = feats
  return {m: ctx.feature_cache[key(m)] for m in wanted}


def retrieval_evaluation(ctx: Context) -> Result:
  """Test-split queries against the train split, per modality; cross-modal mAP on request."""
  s = ctx.config.evaluation.retrieval
  singles = tuple(dict.fromkeys(m for name in s.modalities for m in name.split(' + ')))
  modalities = singles + (('video', 'audio') if s.cross_modal else ())
  where = (s.dir, s.train_split, s.test_split, s.clips, s.crops)
  gallery = _record_features(ctx, *where, 'train', {m: (s.encoder, m) for m in singles}, s.pool)
  test = _record_features(ctx, *where, 'test',
                          {m: (s.encoder, m) for m in dict.fromkeys(modalities)}, s.pool)
  rows, values = {}, {}
  for name in s.modalities:
    parts = name.split(' + ')
    views = lambda feats, parts=parts: retrieval.joint_views([feats[m].views for m in parts])
    result = retrieval.retrieval(views(gallery), gallery[parts[0]].labels, views(test),
                                 test[parts[0]].labels, ks=s.ks, center=s.center,
                                 mesh=ctx.host_mesh)
    rows[f'{s.encoder} encoder: {name}'] = values[name] = result
  text_meta = ctx.meta(data=s.dir or ctx.config.data.dir,
                       queries=f'{s.test_split} split', gallery=f'{s.train_split} split',
                       views=f'{s.clips} clips × {s.crops} crops, L2-normalised, averaged per video',
                       pooling=s.pool, centring='mean-centred' if s.center else 'not mean-centred')
  text = tables.header('Video retrieval (SeLaVi Table 4 / GOCA Table 1 layout)', text_meta) + '\n'
  text += tables.retrieval(rows, s.ks)
  if s.cross_modal:
    video, audio = (retrieval.video_embeddings(test[m].views) for m in ('video', 'audio'))
    values['cross_modal'] = retrieval.cross_modal_map(video, audio, test['video'].labels,
                                                      mesh=ctx.host_mesh)
    text += '\n\n' + tables.header('Cross-modal retrieval (IICL Table III layout)', text_meta)
    text += '\n' + tables.cross_modal({f'{s.encoder} encoder': values['cross_modal']})
  return Result(values, text)


def probe_evaluation(ctx: Context) -> Result:
  """A linear probe on frozen features for each fold's records folder; mean ± std over folds."""
  s = ctx.config.evaluation.probe
  folds = []
  for directory in s.dirs or (ctx.config.data.dir,):
    where = (directory, s.train_split, s.test_split, s.clips, s.crops)
    wanted = {s.modality: (s.encoder, s.modality)}
    train = _record_features(ctx, *where, 'train', wanted, s.pool)[s.modality]
    test = _record_features(ctx, *where, 'test', wanted, s.pool)[s.modality]
    groups = None
    if s.group_pattern:
      table = _records(ctx, *where, (s.modality,)).video_table(s.train_split)
      if table is None:
        raise ValueError(f'evaluation.probe.group_pattern needs records with video ids; {directory} '
                         'has none')
      groups = np.array([splits.group_of(table[i]['video_id'], s.group_pattern)
                         for i in train.index])
    folds.append(probe.linear_probe(train.views, train.labels, test.views, test.labels,
                                    val_fraction=s.val_fraction, groups=groups,
                                    seed=ctx.config.seed, mesh=ctx.host_mesh))
  summary = probe.average_over_folds(folds) if len(folds) > 1 else folds[0]
  meta = ctx.meta(data=', '.join(s.dirs) or ctx.config.data.dir,
                  views=f'{s.clips} clips × {s.crops} crops, logits averaged per video',
                  features=f'{s.modality} encoder, {s.pool} pooled, frozen (BatchNorm in inference)',
                  selection=f'weight decay chosen on {s.val_fraction:.0%} of train; test never used')
  name = f'{s.encoder} encoder: {s.modality}'
  return Result({'folds': folds, 'summary': summary},
                tables.header('Linear probe', meta) + '\n' + tables.probe({name: summary}))


def factors_evaluation(ctx: Context) -> Result:
  """The nuisance report (`evaluation/factors.py`): one row per clustering of the evaluation split,
  its NMI against the classes and against each factor of `config.evaluation.factors.file`, the
  best-explaining column in bold; the table's ids that match no scored video, and the scored videos
  without a row, counted and named."""
  s = ctx.config.evaluation.factors
  split = ctx.config.data.eval_split
  table = factors.read(s.file, bins=s.bins, max_categories=s.max_categories)
  index, truth, clusterings = _clusterings(ctx)
  videos = ctx.data.video_table(split)
  if videos is None:
    raise errors.UserError('config.evaluation.factors.file: the nuisance report matches videos by '
                           f'id, which config.data.name={ctx.config.data.name!r} has none of')
  aligned = factors.align(table, [videos[i]['video_id'] for i in index],
                          factors.record_ids(ctx.config.data.dir))
  rows = factors.nmi_rows(clusterings, truth, aligned)
  meta = ctx.meta(data=ctx.config.data.dir, split=split, videos=len(index),
                  nmi='arithmetic normalisation, over the videos known for each column; k-means '
                      'rows: mean ± std over runs; bold: the best column of the row',
                  **aligned.notes())
  values = {'rows': rows, **aligned.notes(), 'videos without a row': list(aligned.missing),
            'rows in no split of the records': list(aligned.unknown)}
  return Result(values, tables.header('Nuisance factors: NMI against the classes and each factor',
                                      meta)
                + '\n' + factors.markdown(rows, [f.name for f in aligned.factors]))


def _clusterings(ctx: Context) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
  """The dataset index `[N]` and classes `[N]` of the evaluation split's videos, and their clusters
  (`[N]`, or `[N, runs]` for k-means) by name: `<view>/head<h>` as in labels.csv (views in the
  order of `tables.VIEWS`), the self-labels when the evaluation split is the training split, and
  this run's k-means rows."""
  config, method = ctx.config, ctx.method
  index: np.ndarray | None = None
  truth: np.ndarray | None = None
  out: dict[str, np.ndarray] = {}
  if isinstance(method, base.Clusters):
    pred = label.cluster_predictions(method, ctx.state, config.data, ctx.mesh,
                                     ctx.data.eval_batches())
    index, truth = pred['index'], pred['label']
    heads = {name[:-len('/label')]: pred[name] for name in pred if name.endswith('/label')}
    if isinstance(method, base.SelfLabels) and config.data.eval_split == config.data.train_split:
      heads.update({name: labels[index] for name, labels in method.self_labels(ctx.state).items()})
    order = sorted(heads, key=lambda v: (tables.VIEWS.index(v) if v in tables.VIEWS
                                         else len(tables.VIEWS), v))
    out = {f'{view}/head{h}': heads[view][:, h] for view in order
           for h in range(heads[view].shape[1])}
  for row, (rows, assignments) in ctx.kmeans.items():
    if index is not None and not np.array_equal(rows, index):
      raise ValueError(f'{row}: its k-means clustered other videos than the method labelled')
    index = rows if index is None else index
    out[row] = assignments
  if index is None:
    raise errors.UserError(f'config.evaluation.factors: method {config.method!r} has no clusters; '
                           "list 'kmeans' before 'factors' in config.evaluation.run to score its "
                           "encoders' k-means clusters against the factors")
  if truth is None:
    truth = _record_labels(ctx, index)
  return index, truth, out


def _record_labels(ctx: Context, index: np.ndarray) -> np.ndarray:
  """The class index of the evaluation split's videos `index` (-1 where unknown)."""
  videos = ctx.data.video_table(ctx.config.data.eval_split) or []
  return np.array([int(videos[i]['label_index'] or -1) for i in index], np.int64)


EVALUATIONS: dict[str, Callable[[Context], Result]] = {
    'method': method_evaluation, 'kmeans': kmeans_evaluation, 'retrieval': retrieval_evaluation,
    'probe': probe_evaluation, 'robustness': robustness_evaluation, 'factors': factors_evaluation}


def check(names: tuple[str, ...]) -> None:
  unknown = [n for n in names if n not in EVALUATIONS]
  if unknown:
    raise ValueError(f'config.evaluation.run names {unknown}: not among {sorted(EVALUATIONS)}')


def plan(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The evaluations of `config.evaluation.run` (and `factors`, last, when a factors file is given)
  that the records allow, logging why each other one is skipped; none at all is an error naming the
  reasons."""
  names = tuple(config.evaluation.run)
  check(names)
  if config.evaluation.factors.file and 'factors' not in names:
    names += ('factors',)
  reasons = {name: _unscorable(config, name) for name in names}
  for name, reason in reasons.items():
    if reason:
      logging.warning('Skipping evaluation %r: %s', name, reason)
  runnable = tuple(name for name, reason in reasons.items() if not reason)
  if 'factors' in runnable:  # A table to fix is reported before the checkpoint is read.
    factors.read(config.evaluation.factors.file, bins=config.evaluation.factors.bins,
                 max_categories=config.evaluation.factors.max_categories)
  if not runnable:
    raise errors.UserError('--mode=eval: none of config.evaluation.run can be scored: '
                     + '; '.join(f'{n}: {r}' for n, r in reasons.items()))
  return runnable


def _unscorable(config: ml_collections.ConfigDict, name: str) -> str | None:
  """Why evaluation `name` cannot score the records it reads (None if it can): each split it reads
  must hold labelled videos. Other data sources (synthetic) are always labelled."""
  data, settings = config.data, config.evaluation
  if name == 'factors':
    if not settings.factors.file:
      return 'config.evaluation.factors.file names no factors table'
    # Matched by video id; the classes are one column among the factors, and may be unknown.
    return None if data.name == 'records' else 'only records have the video ids factors are matched by'
  if data.name != 'records':
    return None
  reads = [(data.dir, data.eval_split)]
  if name == 'retrieval':
    reads = [(settings.retrieval.dir or data.dir, split)
             for split in (settings.retrieval.train_split, settings.retrieval.test_split)]
  elif name == 'probe':
    reads = [(directory, split) for directory in settings.probe.dirs or (data.dir,)
             for split in (settings.probe.train_split, settings.probe.test_split)]
  for directory, split in reads:
    manifest = pipeline.read_manifest(directory)
    if split not in manifest['splits']:
      return f'{directory} has no split {split!r} (it has {sorted(manifest["splits"])})'
    counts = (manifest['splits'][split].get('class_counts')
              or dict.fromkeys(manifest.get('classes') or ()))
    if not set(counts) - {'(unlabelled)'}:
      return f'the videos of split {split!r} of {directory} have no labels to score against'
  return None


def run(ctx: Context, names: tuple[str, ...]) -> dict[str, Any]:
  """Runs the evaluations `names` in order; writes each one's JSON and table, and `tables.md`."""
  check(names)
  out_dir = files.join(ctx.workdir, 'eval')
  results, texts = {}, []
  for name in names:
    logging.info('Evaluation %r of step %d', name, ctx.step)
    result = EVALUATIONS[name](ctx)
    results[name] = result.values
    texts.append(result.table)
    if jax.process_index() == 0:
      files.makedirs(out_dir)
      with files.atomic_open(files.join(out_dir, f'{name}.json')) as f:
        json.dump({'step': ctx.step, **_jsonable(result.values)}, f, indent=1)
      with files.atomic_open(files.join(out_dir, f'{name}.md')) as f:
        f.write(result.table + '\n')
      logging.info('%s', result.table)
  if jax.process_index() == 0 and texts:
    with files.atomic_open(files.join(out_dir, 'tables.md')) as f:
      f.write('\n\n'.join(texts) + '\n')
  return results


def _jsonable(value: Any) -> Any:
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (np.generic, np.ndarray)):
    return value.tolist()
  return value


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             config_name: str = '') -> dict[str, Any]:
  """`--mode=eval`: the evaluations `config.evaluation.run` lists, of the latest checkpoint in
  `workdir`; tables and JSON under `workdir/eval/` (see the module docstring)."""
  names = plan(config)
  built = setup(config, workdir, trained_for='--mode=eval')
  try:
    context = Context(config, built.method, built.state, built.data, built.mesh, workdir,
                      int(built.state.step), config_name)
    return run(context, names)
  finally:
    built.checkpointer.close()
