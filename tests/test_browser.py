"""The cluster browser and the plots of `--mode=label`, on a trained `:tiny` SeLaVi run.

A copy of the run gets its labels, plots and browser as `--mode=label` writes them. The browser tests
then drive that site in headless Chromium (the machine's, found by
`conftest.find_chromium`; without one they skip), through playwright, from disk (file://) as a user
opens it.
"""

import csv
import json
import pathlib
import re
import shutil
import time

import numpy as np
import pytest
from playwright.sync_api import sync_playwright

import avssl
from avssl import methods
from avssl.evaluation import factors
from avssl.modes import label as label_mode, train
from avssl.reporting import browser, plots
from conftest import load_config

CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync']
NOTES = pathlib.Path('/tmp/notes')
SCRIPT = '<script>alert(1)</script>'


@pytest.fixture(scope='module')
def labelled(_selavi_tiny_run, avsynth_records, tmp_path_factory):
  """A copy of the trained tiny run with what `--mode=label` writes: labels, plots and the browser.
  (The notebook, which writes them the same way, runs in tests/test_notebook.py.)"""
  workdir = tmp_path_factory.mktemp('labelled') / 'selavi'
  shutil.copytree(_selavi_tiny_run, workdir)
  run = avssl.load_run(str(workdir), records=avsynth_records)
  try:
    label_mode.write_labels(run)
  finally:
    run.checkpointer.close()
  return workdir


@pytest.fixture(scope='module')
def chromium(chromium_executable):
  with sync_playwright() as playwright:
    instance = playwright.chromium.launch(executable_path=chromium_executable, args=CHROMIUM_ARGS)
    yield instance
    instance.close()


class Page:
  """A page that records console errors, uncaught exceptions and dialogs (none may happen)."""

  def __init__(self, chromium, site: pathlib.Path, viewport=(1280, 860)):
    self.page = chromium.new_page(viewport={'width': viewport[0], 'height': viewport[1]})
    self.errors, self.dialogs = [], []
    self.page.on('console', lambda m: self.errors.append(m.text) if m.type == 'error' else None)
    self.page.on('pageerror', lambda e: self.errors.append(str(e)))
    self.page.on('dialog', lambda d: (self.dialogs.append(d.message), d.dismiss()))
    self.index = (site / 'index.html').as_uri()

  def open(self, fragment: str = '') -> None:
    self.page.goto(self.index + fragment)
    self.page.wait_for_selector('body[data-ready="true"]')

  def open_cluster(self, cluster: int) -> None:
    self.page.wait_for_selector(f'#cluster[data-cluster="{cluster}"] .member')

  def column(self, position: int) -> list[str]:
    return self.page.locator(f'#clusters tbody td:nth-child({position})').all_text_contents()

  def close(self) -> None:
    assert not self.errors, self.errors
    assert not self.dialogs, self.dialogs
    self.page.close()


def _data(site: pathlib.Path, key: str):
  """The value a data file hands to the page."""
  text = (site / 'data' / f'{key}.js').read_text()
  return json.loads(re.fullmatch(r'AVSSL\.receive\("[^"]+", (.*)\);\n', text, re.S).group(1))


def _key(site: pathlib.Path, name: str) -> str:
  """The data key of the clustering `name` (a column of labels.csv)."""
  return next(c['id'] for c in _data(site, 'site')['clusterings'] if c['name'] == name)


def test_label_mode_writes_the_plots_from_the_label_update_summaries(labelled):
  workdir = labelled
  assert (workdir / 'labels.csv').exists() and (workdir / 'browser' / 'index.html').exists()
  assert sorted(p.name for p in (workdir / 'plots').glob('*.png')) == [
      'cluster_sizes.png', 'head_agreement.png', 'label_quality.png', 'loss.png']
  # The loop logged every label update's summary (steps 0 and 1 of this run) for the plots.
  scalars = plots.read_scalars(str(workdir))
  for name in ('nmi', 'ari', 'head_agreement'):
    assert sorted(scalars[f'label_update/{name}/mean']) == [0, 1]
  assert any(b'plots/loss' in p.read_bytes() for p in workdir.glob('events.out.tfevents.*'))


def test_browser_sorts_opens_clusters_plays_sound_and_deep_links(labelled, chromium, tmp_path):
  site = labelled / 'browser'
  page = Page(chromium, site)
  page.open()
  index = _data(site, 'h0/index')
  assert len(page.column(1)) == len(index['cluster'])
  entropy = [float(x) for x in page.column(3)]
  assert entropy == sorted(entropy)  # Purest first, as the authors' browser.

  page.page.click('th button[data-key="size"]')
  sizes = [int(x) for x in page.column(2)]
  assert sizes == sorted(sizes, reverse=True)
  page.page.click('th button[data-key="size"]')
  assert [int(x) for x in page.column(2)] == sorted(sizes)
  assert page.page.get_attribute('th[aria-sort]', 'aria-sort') == 'ascending'

  key = _key(site, 'self-labels/head0')
  page.page.select_option('#clustering', label='self-labels · head 0')
  page.page.wait_for_function(f'location.hash === "#{key}"')
  # The hash changes first; the summary once the clustering's data has loaded.
  page.page.wait_for_function('document.querySelector("#summary").textContent.includes("self-labels")')
  assert page.page.locator('#summary').text_content().startswith('58 videos · 6 clusters in self-labels')
  page.page.locator('#clusters tbody tr').first.click()
  cluster = int(page.column(1)[0])
  page.open_cluster(cluster)
  data = _data(site, f'{key}/cluster-{cluster}')
  members = page.page.locator('.member')
  assert members.count() == len(data['members']) == min(8, data['size'])
  assert members.locator('.id').all_text_contents() == [m['video'] for m in data['members']]
  assert page.page.locator('svg.chart rect').count() == len(data['classes'])
  # Every member's frames decode and its sound is a WAV the browser reads to its duration.
  page.page.evaluate('Promise.all([...document.images].map((i) => { i.loading = "eager"; '
                     'return i.decode(); }))')
  page.page.wait_for_function('[...document.querySelectorAll("audio")].every('
                              '(a) => a.readyState >= 1 && a.duration > 0.5)', timeout=10_000)
  sounds = page.page.eval_on_selector_all('audio', '(all) => all.map((a) => [a.canPlayType('
                                          '"audio/wav"), a.getAttribute("src")])')
  assert len(sounds) == len(data['members'])
  assert all(playable and (site / src).stat().st_size > 1000 for playable, src in sounds)
  page.page.screenshot(path=str(tmp_path / 'browser.png'))
  NOTES.mkdir(exist_ok=True)
  shutil.copy(tmp_path / 'browser.png', NOTES / 'issue11-browser-tiny.png')
  page.close()

  page = Page(chromium, site)  # A deep link opens its cluster straight away.
  page.open(f'#cluster-{index["cluster"][-1]}')
  page.open_cluster(index['cluster'][-1])
  assert page.page.locator('tr.selected td').first.text_content() == str(index['cluster'][-1])
  page.close()


def test_a_label_with_a_script_tag_shows_as_text(labelled, avsynth_records, chromium, tmp_path):
  with open(labelled / 'labels.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  hostile = min(r['label'] for r in rows)
  for row in rows:
    if row['label'] == hostile:
      row.update(label=SCRIPT, source=f'/videos/<img src=x onerror=alert(2)>/{row["video_id"]}.mp4')
  with open(tmp_path / 'labels.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  labels = browser.read_labels(str(tmp_path / 'labels.csv'))
  assert labels.classes[0] == SCRIPT
  site = tmp_path / 'site'
  browser.write(labels, avsynth_records, str(site))
  key = _key(site, 'self-labels/head0')
  cluster = next(k for k in _data(site, f'{key}/index')['cluster']
                 if any(m['truth'] == 0 for m in _data(site, f'{key}/cluster-{k}')['members']))
  page = Page(chromium, site)
  page.open(f'#{key}/cluster-{cluster}')
  page.open_cluster(cluster)
  assert SCRIPT in page.page.locator('svg.chart text').all_text_contents()
  assert f'label: {SCRIPT}' in page.page.locator('.member .truth').all_text_contents()
  assert any(s.startswith('/videos/<img src=x onerror=alert(2)>/')
             for s in page.page.locator('.member .source').all_text_contents())
  assert page.page.evaluate('document.querySelectorAll("script").length') == 1  # browser.js only.
  assert page.page.evaluate('document.querySelectorAll("img[src=x]").length') == 0
  page.close()  # No dialog opened and no console error.


def test_each_cluster_shows_the_factor_that_best_explains_it(labelled, chromium, tmp_path):
  """A `camera` factor that is the self-labels' own clusters explains each of them (κ 1); `noise`
  does not. The table of clusters names the camera, the opened cluster ranks the factors and its
  class by κ with the camera's row marked, and the summary has the NMI against each factor."""
  labels = browser.read_labels(str(labelled / 'labels.csv'))
  clusters = labels.clusterings['self-labels/head0']
  noise = np.random.default_rng(0).integers(0, 2, len(clusters))
  table = factors.Table('factors.csv', tuple(labels.video_ids), (
      factors.discretise('camera', [f'cam{c}' for c in clusters]),
      factors.discretise('noise', [f'n{v}' for v in noise])))
  aligned = factors.align(table, labels.video_ids, set(labels.video_ids))
  site = tmp_path / 'site'
  browser.write(labels, None, str(site), factors=aligned)
  key = _key(site, 'self-labels/head0')
  index = _data(site, f'{key}/index')
  cluster = index['cluster'][0]
  page = Page(chromium, site)
  page.open(f'#{key}/cluster-{cluster}')
  page.open_cluster(cluster)
  shown = page.column(1)
  assert page.column(len(page.page.locator('#columns th').all())) == [
      f'camera = cam{c} (100.0%)' for c in shown]
  marked = page.page.locator('table.explained tr.best td').all_text_contents()
  assert marked[0] == f'camera = cam{cluster}' and marked[1] == '100.0%' and marked[3] == '1.00'
  rows = [page.page.locator('table.explained tbody tr').nth(i).locator('td').all_text_contents()
          for i in range(3)]
  assert sorted(r[0].split(' = ')[0] for r in rows) == ['camera', 'class', 'noise']
  kappas = [float(r[3]) for r in rows]
  assert kappas == sorted(kappas, reverse=True)
  summary = page.page.locator('#summary').text_content()
  assert 'NMI against camera 1.00, noise ' in summary
  page.close()


def test_400_clusters_of_200000_videos_stay_light(chromium, tmp_path):
  rng = np.random.default_rng(0)
  n, k = 200_000, 400
  clusters = rng.integers(0, k, n)
  labels = browser.Labels(
      video_ids=[f'v{i:06d}' for i in range(n)], sources=[f'/videos/v{i:06d}.mp4' for i in range(n)],
      truth=(clusters + rng.integers(0, 3, n)) % 309, classes=[f'class {c}' for c in range(309)],
      clusterings={'video + audio/head0': clusters, 'self-labels/head0': rng.integers(0, k, n)},
      confidences={'video + audio/head0': rng.random(n)})
  start = time.perf_counter()
  browser.write(labels, None, str(tmp_path / 'site'))
  assert time.perf_counter() - start < 20
  data = tmp_path / 'site' / 'data'
  assert (data / 'site.js').stat().st_size < 20_000
  assert (data / 'h0' / 'index.js').stat().st_size < 40_000
  assert max(p.stat().st_size for p in data.glob('h0/cluster-*.js')) < 4_000
  assert len(list(data.glob('h*/cluster-*.js'))) == 2 * k

  page = Page(chromium, tmp_path / 'site')
  page.open()
  assert len(page.column(1)) == 50
  assert page.page.locator('#page').text_content() == 'page 1 of 8'
  page.page.click('#next')
  assert page.page.locator('#page').text_content() == 'page 2 of 8'
  page.page.goto(page.index + '#cluster-399')
  page.open_cluster(399)
  assert page.page.locator('.member').count() == 8
  assert page.page.locator('.member .missing').count() == 16  # No frames, no sound: no records.
  page.close()


#: The views of each clustering method's labels.csv (`Clusters.cluster_probs`, then `SelfLabels`).
LABEL_VIEWS = {
    'selavi_vggsound': {'video + audio', 'video', 'audio', 'self-labels'},
    'xdc_kinetics': {'video_audio', 'audio_video', 'self-labels video', 'self-labels audio'},
    'iicl_kinetics': {'video + audio', 'video', 'audio'},
}


@pytest.mark.parametrize('name', sorted(LABEL_VIEWS))
def test_every_clustering_method_writes_one_labels_scheme_the_browser_opens(
    name, _selavi_tiny_run, avsynth_records, chromium):
  """`--mode=label` on each clustering method's `:tiny` run: `video_id, source, label`, then
  `{view}/head{h}` and `{view}/head{h}/confidence` (self-labels without confidence); the browser
  reads it and its page opens without an error."""
  config = load_config(name, 'tiny')
  config.data.dir = avsynth_records
  workdir = _selavi_tiny_run.parent / f'labelled_{name}'
  shutil.rmtree(workdir, ignore_errors=True)
  if name == 'selavi_vggsound':
    shutil.copytree(_selavi_tiny_run, workdir)
  else:
    train.train_and_evaluate(config, str(workdir))
  label_mode.label(config, str(workdir))
  with open(workdir / 'labels.csv', newline='') as f:
    reader = csv.reader(f)
    header = next(reader)
    rows = list(reader)
  assert header[:3] == ['video_id', 'source', 'label'] and len(rows) == 58
  clusterings = [c for c in header[3:] if not c.endswith('/confidence')]
  views = set()
  for column in clusterings:
    match = re.fullmatch(r'(.+)/head(\d+)', column)
    assert match, column
    views.add(match[1])
    assert (f'{column}/confidence' in header) != match[1].startswith('self-labels'), column
  assert views == LABEL_VIEWS[name]
  assert all(0 < float(r[header.index(f'{c}/confidence')]) <= 1 for r in rows for c in clusterings
             if f'{c}/confidence' in header)
  labels = browser.read_labels(str(workdir / 'labels.csv'))
  assert set(labels.clusterings) == set(clusterings)
  assert (workdir / 'clusters.md').exists()  # Ranked by purity: avsynth has ground truth.
  page = Page(chromium, workdir / 'browser')
  page.open()
  assert len(page.column(1)) > 0
  page.close()


def test_labels_of_an_older_scheme_are_refused_with_a_hint(tmp_path):
  for column in ('video + audio/confidence0', 'video/cluster'):
    path = tmp_path / 'labels.csv'
    path.write_text(f'video_id,source,label,video/head0,{column}\nv0,/v0.mp4,a,1,1\n')
    with pytest.raises(ValueError, match='rerun --mode=label'):
      browser.read_labels(str(path))


def test_label_mode_on_a_method_without_clusters_exits_clearly():
  config = load_config('supervised_synthetic', 'tiny')
  run = type('Run', (), {'method': methods.build(config), 'config': config})()
  with pytest.raises(SystemExit, match='does not cluster'):
    label_mode.write_labels(run)
