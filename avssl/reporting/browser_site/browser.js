// The avssl cluster browser (written by `--mode=label`; see avssl/reporting/browser.py).
//
// Every element is built with createElement and textContent, never by parsing HTML, so a video id, a
// path or a class name shows as text whatever it contains. Data comes as scripts (data/*.js) that call
// AVSSL.receive, because a page opened from disk (file://) may not fetch() files; a cluster's file is
// loaded only when it is opened. The address keeps the place: #cluster-17 (first head), #h3,
// #h3/cluster-17.
'use strict';

window.AVSSL = (() => {
  const waiting = new Map();
  const loads = new Map();

  /** Loads data/<key>.js once; resolves with the value it hands to receive(). */
  function load(key) {
    if (!loads.has(key)) {
      loads.set(key, new Promise((resolve, reject) => {
        waiting.set(key, resolve);
        const script = document.createElement('script');
        script.src = `data/${key}.js`;
        script.onload = () => script.remove();
        script.onerror = () => {
          script.remove();
          loads.delete(key);
          waiting.delete(key);
          reject(new Error(`cannot read data/${key}.js`));
        };
        document.head.append(script);
      }));
    }
    return loads.get(key);
  }

  function receive(key, value) {
    const resolve = waiting.get(key);
    waiting.delete(key);
    if (resolve) resolve(value);
  }

  return {load, receive};
})();

const PAGE_SIZE = 50;
const SVG = 'http://www.w3.org/2000/svg';
const KINDS = {most: 'most confident', least: 'least confident', sample: 'random member'};
// Sort directions a column starts with: small entropy and large everything else first.
const FIRST_DESCENDING = {cluster: false, size: true, entropy: false, purity: true, confidence: true,
                          factor: true};

const view = {site: null, key: null, rows: [], sort: null, page: 0, cluster: null};

const byId = (id) => document.getElementById(id);
const percent = (x) => (x === null ? '–' : `${(100 * x).toFixed(1)}%`);
const fixed = (x) => (x === null ? '–' : x.toFixed(2));
const number = (n) => n.toLocaleString('en');
const className = (i) => (i >= 0 ? view.site.classes[i] : 'other classes');
const factors = () => view.site.factors || [];
/** `name = value` of factor `f` (its position; -1: the classes). */
const factorValue = (f, v) => (f < 0 ? `class = ${view.site.classes[v]}`
                                     : `${factors()[f].name} = ${factors()[f].values[v]}`);

/** An element with attributes (text: its textContent) and children (strings become text nodes). */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === 'text') node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((child) => child !== null));
  return node;
}

function svg(tag, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

function clustering() {
  return view.site.clusterings.find((c) => c.id === view.key);
}

function link(cluster) {
  const first = view.key === view.site.clusterings[0].id;
  return first ? `#cluster-${cluster}` : `#${view.key}/cluster-${cluster}`;
}

function status(message) {
  byId('status').textContent = message;
}

// The head selector and the table of clusters.

function fillSelector() {
  const select = byId('clustering');
  const groups = new Map();
  for (const c of view.site.clusterings) {
    if (!groups.has(c.view)) {
      groups.set(c.view, el('optgroup', {label: c.view}));
      select.append(groups.get(c.view));
    }
    const name = c.head === null ? c.name : `${c.view} · head ${c.head}`;
    groups.get(c.view).append(el('option', {value: c.id, text: name}));
  }
  select.addEventListener('change', () => { location.hash = `#${select.value}`; });
}

function columns() {
  const list = [{key: 'cluster', title: 'Cluster'}, {key: 'size', title: 'Size'}];
  if (view.site.truth) {
    list.push({key: 'entropy', title: 'Entropy (bits)'}, {key: 'purity', title: 'Purity'});
  }
  if (clustering().confidence) list.push({key: 'confidence', title: 'Confidence'});
  if (view.site.truth) list.push({key: 'top', title: 'Top class'});
  if (factors().length) list.push({key: 'factor', title: 'Best factor'});
  return list;
}

function cell(row, key) {
  if (key === 'cluster') return el('a', {href: link(row.cluster), text: String(row.cluster)});
  if (key === 'size') return number(row.size);
  if (key === 'entropy') return fixed(row.entropy);
  if (key === 'top') return row.top >= 0 ? view.site.classes[row.top] : '–';
  if (key === 'factor') {
    if (!row.best) return '–';
    const [f, v, share, kappa] = row.best;
    return el('span', {class: 'factor', title: `κ ${fixed(kappa)}`,
                       text: `${factorValue(f, v)} (${percent(share)})`});
  }
  return percent(row[key]);
}

function compare(a, b) {
  const {key, descending} = view.sort;
  if (a[key] === null || b[key] === null) {
    return (a[key] === null) - (b[key] === null) || a.cluster - b.cluster;
  }
  return (descending ? b[key] - a[key] : a[key] - b[key]) || a.cluster - b.cluster;
}

function sortBy(key) {
  const same = view.sort.key === key;
  view.sort = {key, descending: same ? !view.sort.descending : FIRST_DESCENDING[key]};
  view.rows.sort(compare);
  view.page = 0;
  renderTable();
}

function renderTable() {
  byId('columns').replaceChildren(...columns().map(({key, title}) => {
    const header = el('th', {scope: 'col'});
    if (key in FIRST_DESCENDING) {
      if (view.sort.key === key) {
        header.setAttribute('aria-sort', view.sort.descending ? 'descending' : 'ascending');
      }
      const button = el('button', {type: 'button', 'data-key': key, text: title});
      button.addEventListener('click', () => sortBy(key));
      header.append(button);
    } else {
      header.textContent = title;
    }
    return header;
  }));
  const pages = Math.max(1, Math.ceil(view.rows.length / PAGE_SIZE));
  const shown = view.rows.slice(view.page * PAGE_SIZE, (view.page + 1) * PAGE_SIZE);
  byId('clusters').tBodies[0].replaceChildren(...shown.map((row) => {
    const tr = el('tr', {'data-cluster': String(row.cluster)},
                  ...columns().map(({key}) => el('td', {}, cell(row, key))));
    if (row.cluster === view.cluster) tr.classList.add('selected');
    tr.addEventListener('click', () => { location.hash = link(row.cluster); });
    return tr;
  }));
  byId('page').textContent = `page ${view.page + 1} of ${pages}`;
  byId('previous').disabled = view.page === 0;
  byId('next').disabled = view.page >= pages - 1;
}

function turnPage(step) {
  view.page += step;
  renderTable();
}

function renderSummary() {
  const c = clustering();
  let text = `${number(view.site.videos)} videos · ${number(c.clusters)} clusters in ${c.name}`;
  if (view.site.truth) {
    text += ` · against ${number(view.site.classes.length)} labelled classes: NMI ${fixed(c.nmi)},` +
        ` ARI ${fixed(c.ari)}, purity ${percent(c.purity)}`;
  }
  if (factors().length) {
    text += ' · NMI against ' + factors().map((f, i) => `${f.name} ${fixed(c.factor_nmi[i])}`).join(', ');
  }
  byId('summary').textContent = text;
}

async function showClustering(key) {
  const index = await AVSSL.load(`${key}/index`);
  view.key = key;
  view.rows = index.cluster.map((cluster, i) => ({
    cluster, size: index.size[i], entropy: index.entropy[i], purity: index.purity[i],
    confidence: index.confidence[i], top: index.top[i], best: index.best ? index.best[i] : null,
    factor: index.best && index.best[i] ? index.best[i][3] : null}));
  view.rows.sort(compare);
  view.page = 0;
  view.cluster = null;
  byId('clustering').value = key;
  renderSummary();
  renderTable();
}

// One cluster.

function chart(data) {
  const rowHeight = 18;
  const labelWidth = 200;
  const width = 600;
  const barWidth = width - labelWidth - 100;
  const largest = Math.max(...data.classes.map(([, n]) => n));
  const chart = svg('svg', {class: 'chart', role: 'img', 'aria-label': 'true classes of the members',
                            viewBox: `0 0 ${width} ${rowHeight * data.classes.length + 4}`});
  data.classes.forEach(([cls, n], i) => {
    const y = i * rowHeight + 2;
    const name = className(cls);
    const bar = Math.max(1, (n / largest) * barWidth);
    const short = name.length > 32 ? `${name.slice(0, 31)}…` : name;
    const group = svg('g');
    group.append(svg('title', {}, `${name}: ${n}`),
                 svg('text', {x: labelWidth - 6, y: y + 12, 'text-anchor': 'end', class: 'label'}, short),
                 svg('rect', {x: labelWidth, y: y + 2, width: bar, height: rowHeight - 5,
                              class: cls < 0 ? 'other' : 'class'}),
                 svg('text', {x: labelWidth + bar + 4, y: y + 12}, `${n} (${percent(n / data.labelled)})`));
    chart.append(group);
  });
  return chart;
}

/** The class and every factor of a cluster, best explaining (highest κ) first; the best factor marked. */
function explained(data) {
  const best = data.explained.find((e) => e.factor >= 0 && e.kappa !== null && e.kappa > 0);
  const head = el('tr', {}, ...['Majority value', 'Share of the cluster', 'Share of all videos', 'κ']
      .map((title) => el('th', {scope: 'col', text: title})));
  const rows = data.explained.map((e) => {
    const tr = el('tr', {'data-factor': String(e.factor)},
                  el('td', {text: factorValue(e.factor, e.value)}), el('td', {text: percent(e.share)}),
                  el('td', {text: percent(e.base)}), el('td', {text: fixed(e.kappa)}));
    if (e === best) tr.classList.add('best');
    return tr;
  });
  return el('table', {class: 'explained'}, el('thead', {}, head), el('tbody', {}, ...rows));
}

function member(m) {
  const frames = m.strip ? el('img', {src: m.strip, alt: `frames of ${m.video}`, loading: 'lazy'})
                         : el('p', {class: 'missing', text: 'no frames'});
  const sound = m.audio ? el('audio', {controls: '', preload: 'metadata', src: m.audio})
                        : el('p', {class: 'missing', text: 'no sound'});
  const caption = el('figcaption', {},
                     el('span', {class: `badge ${m.kind}`, text: KINDS[m.kind]}),
                     m.confidence === null ? null : ` confidence ${m.confidence.toFixed(2)}`,
                     el('div', {class: 'id', text: m.video}),
                     el('div', {class: 'source', title: m.source, text: m.source}),
                     m.truth < 0 ? null
                                 : el('div', {class: 'truth', text: `label: ${view.site.classes[m.truth]}`}));
  return el('figure', {class: `member ${m.kind}`}, frames, sound, caption);
}

function renderCluster(data) {
  const stats = [`${number(data.size)} videos`];
  if (data.labelled) stats.push(`entropy ${fixed(data.entropy)} bits`, `purity ${percent(data.purity)}`);
  if (data.confidence !== null) stats.push(`mean confidence ${fixed(data.confidence)}`);
  const section = byId('cluster');
  section.replaceChildren(
      el('h2', {text: `Cluster ${data.cluster}`}),
      el('p', {class: 'stats', text: `${clustering().name} · ${stats.join(' · ')}`}),
      data.classes.length ? chart(data) : null,
      data.explained.length ? el('h3', {text: 'What its members share (κ: 0 as a random subset, 1 pure)'})
                            : null,
      data.explained.length ? explained(data) : null,
      el('h3', {text: `${data.members.length} of its ${number(data.size)} members`}),
      el('div', {class: 'members'}, ...data.members.map(member)));
  section.dataset.cluster = String(data.cluster);
}

async function openCluster(cluster) {
  const at = view.rows.findIndex((row) => row.cluster === cluster);
  if (at < 0) {
    status(`${clustering().name} has no cluster ${cluster}`);
    return;
  }
  view.cluster = cluster;
  view.page = Math.floor(at / PAGE_SIZE);
  renderTable();
  renderCluster(await AVSSL.load(`${view.key}/cluster-${cluster}`));
}

// The address: #cluster-17 (first head), #h3, #h3/cluster-17.

async function route() {
  status('');
  const match = /^#(?:(h\d+)(?:\/cluster-(\d+))?|cluster-(\d+))$/.exec(location.hash);
  const key = (match && match[1]) || view.site.clusterings[0].id;
  const cluster = match ? (match[2] ?? match[3] ?? null) : null;
  if (!view.site.clusterings.some((c) => c.id === key)) {
    status(`no head ${key} here`);
    return;
  }
  if (key !== view.key) await showClustering(key);
  if (cluster !== null) await openCluster(Number(cluster));
}

async function start() {
  view.site = await AVSSL.load('site');
  view.sort = view.site.truth ? {key: 'entropy', descending: false} : {key: 'size', descending: true};
  if (view.site.title) {
    byId('title').textContent = `${view.site.title}: clusters`;
    document.title = `${view.site.title}: clusters`;
  }
  fillSelector();
  if (factors().length) document.querySelector('main').classList.add('factors');
  byId('previous').addEventListener('click', () => turnPage(-1));
  byId('next').addEventListener('click', () => turnPage(1));
  window.addEventListener('hashchange', () => route().catch((e) => status(e.message)));
  await route();
  document.body.dataset.ready = 'true';
}

start().catch((e) => status(e.message));
