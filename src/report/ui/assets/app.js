// mlp-runner's dashboard: experiments, one experiment, runs (filter, sort, choose columns, compare), one
// run. Live (served by `runner ui`, polling the store's version every second) or static (the data of
// `runner report` embedded in the page). Everything from the store is put into the page as text
// (textContent), never as HTML.
(function () {
  'use strict';
  const STATIC = window.MLP_DATA || null;
  const main = document.getElementById('main');
  const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
  let version = null;
  let rendering = false;
  const state = { selected: new Set() };

  // ---- data ----------------------------------------------------------------------------------------
  async function get(path) {
    if (STATIC) {
      if (Object.prototype.hasOwnProperty.call(STATIC.api, path)) return STATIC.api[path];
      throw new Error('this report does not include ' + path);
    }
    const r = await fetch(path, { cache: 'no-store' });
    if (!r.ok) throw new Error(r.status + ': ' + (await r.text()));
    return r.json();
  }

  // ---- DOM helpers ---------------------------------------------------------------------------------
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined) return '';
    if (typeof v === 'number') {
      if (Number.isInteger(v)) return String(v);
      const a = Math.abs(v);
      if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
      return String(Number(v.toPrecision(6)));
    }
    if (Array.isArray(v)) return v.join(',');
    return String(v);
  }
  function statusPill(s) { return el('span', { class: 'status ' + s, text: s }); }
  function link(href, text) { return el('a', { href, text }); }
  function duration(s) {
    if (s === null || s === undefined || !isFinite(s)) return '';
    s = Math.round(s);
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
    return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
  }
  function setNav(which) {
    for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('on', a.dataset.nav === which);
  }
  function params() {
    const h = location.hash || '#/experiments';
    const q = h.indexOf('?');
    return new URLSearchParams(q >= 0 ? h.slice(q + 1) : '');
  }
  function route() {
    const h = (location.hash || '#/experiments').slice(1);
    const path = h.split('?')[0];
    return path.split('/').filter(Boolean).map(decodeURIComponent);
  }
  function go(path, p) {
    const q = p && p.toString();
    location.hash = path + (q ? '?' + q : '');
  }

  // ---- tables --------------------------------------------------------------------------------------
  // A table of `columns` (names) and `rows` (arrays); `cell(col, value, row)` may return a node.
  function table(columns, rows, opts) {
    opts = opts || {};
    const sort = opts.sort || null;
    const thead = el('thead', {}, el('tr', {}, (opts.lead ? [el('th', {}, opts.lead.head || '')] : []).concat(
      columns.map((c) => el('th', {
        class: [numericColumn(rows, columns.indexOf(c)) ? 'num' : '', sort && sort.col === c ? 'sorted' + (sort.desc ? ' desc' : '') : ''].join(' '),
        onclick: opts.onSort ? () => opts.onSort(c) : null,
        text: c,
      })))));
    const tbody = el('tbody');
    for (const r of rows) {
      const tr = el('tr', { class: opts.rowClass ? opts.rowClass(r) : null });
      if (opts.lead) tr.append(el('td', {}, opts.lead.cell(r)));
      columns.forEach((c, i) => {
        const v = r[i];
        const node = opts.cell ? opts.cell(c, v, r) : null;
        tr.append(el('td', { class: typeof v === 'number' ? 'num' : null }, node === null || node === undefined ? fmt(v) : node));
      });
      tbody.append(tr);
    }
    return el('div', { class: 'scroll' }, el('table', { id: opts.id }, thead, tbody));
  }
  function numericColumn(rows, i) {
    for (const r of rows.slice(0, 20)) if (r[i] !== null && r[i] !== undefined) return typeof r[i] === 'number';
    return false;
  }
  function compareValues(a, b) {
    if (a === b) return 0;
    if (a === null || a === undefined) return 1;
    if (b === null || b === undefined) return -1;
    if (typeof a === 'number' && typeof b === 'number') return a - b;
    return String(a).localeCompare(String(b), undefined, { numeric: true });
  }

  // ---- charts --------------------------------------------------------------------------------------
  // series: [{label, values, color, width, dash, points}], bands: [{hi, lo, color}] (values aligned on xs).
  function chart(title, xs, series, o) {
    o = o || {};
    const box = el('div', { class: 'chart' }, el('div', { class: 'title', text: title }));
    if (!window.uPlot || xs.length === 0) { box.append(el('p', { class: 'muted', text: 'no data' })); return box; }
    const data = [xs];
    const opts = {
      width: o.width || 520, height: o.height || 300,
      scales: { x: o.logX ? { time: false, distr: 3, log: 10 } : { time: false } },
      axes: [{ label: o.xLabel || '', values: o.xValues || undefined, incrs: o.intX ? [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] : undefined },
        { label: o.yLabel || '' }],
      series: [{ label: o.xLabel || 'x' }],
      legend: { show: series.length <= 12 },
      bands: [],
    };
    for (const b of o.bands || []) {
      data.push(b.hi, b.lo);
      opts.series.push({ label: b.label + ' hi', stroke: 'transparent', points: { show: false } },
        { label: b.label + ' lo', stroke: 'transparent', points: { show: false } });
      opts.bands.push({ series: [data.length - 2, data.length - 1], fill: b.color + '33' });
    }
    for (const s of series) {
      data.push(s.values);
      opts.series.push({
        label: s.label, stroke: s.color, width: s.width || 2, dash: s.dash,
        paths: s.points === 'only' ? () => null : undefined,
        points: { show: !!s.points, size: 6, fill: s.color },
        spanGaps: true,
      });
    }
    const hidden = (o.bands || []).flatMap((_, i) => [1 + 2 * i, 2 + 2 * i]);
    setTimeout(() => {
      try {
        const u = new window.uPlot(opts, data, box);
        // A band's edges are series of their own: kept out of the legend.
        const rows = u.root.querySelectorAll('.u-legend .u-series');
        for (const i of hidden) if (rows[i]) rows[i].style.display = 'none';
      } catch (e) { box.append(el('p', { class: 'error', text: String(e) })); }
    }, 0);
    return box;
  }
  const color = (i) => PALETTE[i % PALETTE.length];

  // Learning curves of runs (each {label, epochs:{columns, rows}}): loss and accuracy, test solid,
  // validation dashed, train thin.
  function curves(runs) {
    let max = 0;
    for (const r of runs) for (const row of r.epochs.rows) max = Math.max(max, row[0]);
    const xs = Array.from({ length: max }, (_, i) => i + 1);
    const charts = [];
    for (const [title, metric] of [['loss', 'loss'], ['accuracy', 'acc']]) {
      const series = [];
      runs.forEach((r, i) => {
        const c = r.epochs.columns;
        const col = (name) => c.indexOf(name);
        const pick = (name) => xs.map((e) => { const row = r.epochs.rows.find((x) => x[0] === e); const j = col(name); return row && j >= 0 ? row[j] : null; });
        series.push({ label: r.label + ' test', values: pick('test_' + metric), color: color(i), width: 2.5 });
        if (col('val_' + metric) >= 0 && r.epochs.rows.some((x) => x[col('val_' + metric)] !== null)) {
          series.push({ label: r.label + ' val', values: pick('val_' + metric), color: color(i), width: 1.5, dash: [6, 4] });
        }
        series.push({ label: r.label + ' train', values: pick('train_' + metric), color: color(i) + '99', width: 1 });
      });
      charts.push(chart(title + ' per epoch (test thick, validation dashed, train thin)', xs, series, { xLabel: 'epoch', width: 620, intX: true }));
    }
    return el('div', { class: 'charts' }, charts);
  }

  // ---- pages ---------------------------------------------------------------------------------------
  async function experimentsPage() {
    setNav('experiments');
    const d = await get('/api/experiments');
    if (d.empty) { main.replaceChildren(el('h1', { text: 'Experiments' }), el('p', { class: 'muted', id: 'waiting', text: 'The store holds no runs yet: this page shows them as soon as a sweep stores its first one.' })); return; }
    const rows = d.experiments.map((e) => [e.name, e.description, e.runs, e.statuses, e.best_run, e.selected_by, e.best_value, e.best_test_acc, e.seconds, e.created_at]);
    main.replaceChildren(
      el('h1', { text: 'Experiments' }),
      el('p', { class: 'muted', text: d.experiments.length + ' experiments, ' + d.runs + ' runs; each best run is chosen by its experiment\'s selection metric, its test accuracy reported beside it' }),
      table(['experiment', 'description', 'runs', 'by status', 'best run', 'chosen by', 'its value', 'its test_acc', 'run time (sum)', 'created'], rows, {
        id: 'experiments',
        cell: (c, v) => c === 'experiment' ? link('#/experiment/' + encodeURIComponent(v), v)
          : c === 'best run' && v !== null ? link('#/run/' + v, '#' + v)
            : c === 'by status' ? el('span', {}, Object.entries(v).map(([s, n]) => el('span', { class: 'pill' }, s + ' ' + n)))
              : c === 'run time (sum)' ? duration(v) : null,
      }),
    );
  }

  async function experimentPage(name) {
    setNav('experiments');
    const d = await get('/api/experiment/' + encodeURIComponent(name));
    const kids = [el('h1', { text: 'Experiment ' + d.name }), d.description ? el('p', { class: 'muted', text: d.description }) : null,
      el('p', {}, link('#/runs?' + new URLSearchParams({ experiment: d.name }).toString(), 'its ' + d.runs + ' runs'))];
    kids.push(el('h2', { text: 'Configurations (mean and spread over seeds; best marked)' }));
    const bi = d.compare.columns.indexOf('best');
    kids.push(table(d.compare.columns, d.compare.rows, { id: 'compare', rowClass: (r) => r[bi] ? 'best' : null, cell: (c, v) => c === 'best' ? (v ? '*' : '') : null }));
    kids.push(el('p', { class: 'muted', id: 'selection', text: d.selection }));
    // Final accuracy against each parameter that varies.
    const charts = [];
    for (const p of d.varying) {
      const pts = d.points.filter((x) => x.test_acc !== null && x.status === 'completed');
      if (pts.length === 0) continue;
      const numeric = pts.every((x) => typeof x.params[p] === 'number');
      const keys = [...new Set(pts.map((x) => numeric ? x.params[p] : JSON.stringify(x.params[p])))].sort(compareValues);
      const xs = numeric ? keys : keys.map((_, i) => i);
      const seeds = [...new Set(pts.map((x) => x.seed))].sort(compareValues);
      const key = (x) => numeric ? x.params[p] : JSON.stringify(x.params[p]);
      const series = seeds.slice(0, 10).map((s, i) => ({
        label: 'seed ' + s, color: color(i), points: 'only',
        values: keys.map((k) => { const f = pts.filter((x) => x.seed === s && key(x) === k); return f.length ? f.reduce((a, x) => a + x.test_acc, 0) / f.length : null; }),
      }));
      series.push({ label: 'mean', color: '#000000', width: 2, values: keys.map((k) => { const f = pts.filter((x) => key(x) === k); return f.reduce((a, x) => a + x.test_acc, 0) / f.length; }) });
      const logX = numeric && keys[0] > 0 && keys[keys.length - 1] / keys[0] >= 10;
      charts.push(chart('final test accuracy by ' + p, xs, series, {
        xLabel: p + (logX ? ' (log)' : ''), logX, width: 460, height: 280,
        xValues: numeric ? undefined : (u, vals) => vals.map((v) => (Number.isInteger(v) && keys[v] !== undefined ? JSON.parse(keys[v]) : '')),
      }));
    }
    if (charts.length) { kids.push(el('h2', { text: 'Accuracy against the parameters that vary' }), el('div', { class: 'charts' }, charts)); }
    // Learning curves: the mean over seeds per configuration, with a band of one standard deviation.
    if (d.groups.length) {
      const max = Math.max(...d.groups.map((g) => g.epochs.length));
      const xs = Array.from({ length: max }, (_, i) => i + 1);
      const pad = (a) => xs.map((_, i) => (a[i] === undefined ? null : a[i]));
      for (const metric of ['test_acc', 'test_loss'].concat(d.groups.some((g) => g.mean.val_acc && g.mean.val_acc.some((v) => v !== null)) ? ['val_acc'] : [])) {
        const series = [];
        const bands = [];
        d.groups.slice(0, 10).forEach((g, i) => {
          const m = pad(g.mean[metric] || []);
          const s = pad(g.std[metric] || []);
          series.push({ label: g.label, values: m, color: color(i), width: 2 });
          if (g.seeds > 1) bands.push({ label: g.label, color: color(i), hi: m.map((v, j) => (v === null || s[j] === null ? null : v + s[j])), lo: m.map((v, j) => (v === null || s[j] === null ? null : v - s[j])) });
        });
        kids.push(el('h2', { text: 'Learning curves: mean ' + metric + ' over seeds, band of one standard deviation' + (d.groups.length > 10 ? ' (first 10 configurations)' : '') }));
        kids.push(chart(metric + ' per epoch', xs, series, { xLabel: 'epoch', width: 1000, height: 320, bands, intX: true }));
      }
    }
    for (const s of d.searches) {
      kids.push(el('h2', { text: 'Search ' + s.search.slice(0, 12) + ': ' + s.describe }));
      kids.push(table(s.rungs.columns, s.rungs.rows, { cell: (c, v) => (c === 'best_run' && v !== null ? link('#/run/' + v, '#' + v) : null) }));
    }
    main.replaceChildren(...kids.filter(Boolean));
  }

  const DEFAULT_COLUMNS = ['run_id', 'experiment', 'name', 'status', 'epochs', 'val_acc', 'test_acc', 'test_loss', 'seconds', 'tags'];
  async function runsPage() {
    setNav('runs');
    const p = params();
    const d = await get('/api/runs');
    const cols = d.columns;
    const ix = (c) => cols.indexOf(c);
    const shown = (p.get('cols') ? p.get('cols').split(',') : DEFAULT_COLUMNS).filter((c) => ix(c) >= 0);
    const f = {
      experiment: p.get('experiment') || '', status: p.get('status') || '', tag: p.get('tag') || '', q: (p.get('q') || '').toLowerCase(),
      metric: p.get('metric') || 'test_acc', min: p.get('min'), max: p.get('max'), deleted: p.get('deleted') === '1',
    };
    let rows = d.rows.filter((r) => {
      if (!f.deleted && r[ix('deleted_at')] !== null) return false;
      if (!f.deleted && ix('superseded_by') >= 0 && r[ix('superseded_by')] !== null) return false;
      if (f.experiment && r[ix('experiment')] !== f.experiment) return false;
      if (f.status && r[ix('status')] !== f.status) return false;
      const tags = r[ix('tags')] || [];
      if (f.tag && !tags.includes(f.tag)) return false;
      if (f.q && !((r[ix('name')] || '') + ' ' + (r[ix('note')] || '') + ' ' + tags.join(' ')).toLowerCase().includes(f.q)) return false;
      const m = r[ix(f.metric)];
      if (f.min !== null && f.min !== '' && !(m !== null && m >= Number(f.min))) return false;
      if (f.max !== null && f.max !== '' && !(m !== null && m <= Number(f.max))) return false;
      return true;
    });
    const sortCol = p.get('sort') || 'run_id';
    const desc = p.get('desc') === '1';
    if (ix(sortCol) >= 0) rows.sort((a, b) => { const c = compareValues(a[ix(sortCol)], b[ix(sortCol)]); return desc ? -c : c; });
    const size = Number(p.get('size') || 200);
    const pages = Math.max(1, Math.ceil(rows.length / size));
    const page = Math.min(Math.max(1, Number(p.get('page') || 1)), pages);
    const visible = rows.slice((page - 1) * size, page * size);
    const set = (k, v) => { const q = params(); if (v === '' || v === null) q.delete(k); else q.set(k, v); if (k !== 'page') q.delete('page'); go('/runs', q); };
    const uniq = (c) => [...new Set(d.rows.map((r) => r[ix(c)]).filter((v) => v !== null))].sort(compareValues);
    const tags = [...new Set(d.rows.flatMap((r) => r[ix('tags')] || []))].sort();
    const select = (k, label, values) => el('label', {}, label, el('select', { name: k, onchange: (e) => set(k, e.target.value) },
      el('option', { value: '', text: 'all' }), values.map((v) => el('option', { value: v, text: v, selected: String(v) === f[k] }))));
    const metrics = cols.filter((c) => /(_acc|_loss|seconds|epochs_done|learning_rate|batch_size)$/.test(c));
    const filters = el('div', { class: 'filters' },
      select('experiment', 'experiment', uniq('experiment')),
      select('status', 'status', uniq('status')),
      select('tag', 'tag', tags),
      el('label', {}, 'text (name, note, tags)', el('input', { name: 'q', value: p.get('q') || '', onchange: (e) => set('q', e.target.value) })),
      el('label', {}, 'metric', el('select', { name: 'metric', onchange: (e) => set('metric', e.target.value) }, metrics.map((m) => el('option', { value: m, text: m, selected: m === f.metric })))),
      el('label', {}, 'min', el('input', { name: 'min', size: 6, value: f.min || '', onchange: (e) => set('min', e.target.value) })),
      el('label', {}, 'max', el('input', { name: 'max', size: 6, value: f.max || '', onchange: (e) => set('max', e.target.value) })),
      el('label', {}, 'deleted', el('input', { type: 'checkbox', checked: f.deleted, onchange: (e) => set('deleted', e.target.checked ? '1' : '') })),
      el('button', { class: 'primary', id: 'compare-selected', disabled: state.selected.size < 2, onclick: () => go('/compare', new URLSearchParams({ runs: [...state.selected].join(',') })) }, 'Compare selected (' + state.selected.size + ')'),
      el('button', { onclick: () => { state.selected.clear(); render(); } }, 'Clear selection'));
    const chooser = el('details', { class: 'columns' }, el('summary', { text: 'Columns (' + shown.length + ' of ' + cols.length + ')' }),
      cols.map((c) => el('label', {}, el('input', { type: 'checkbox', checked: shown.includes(c), onchange: (e) => {
        const now = e.target.checked ? shown.concat([c]) : shown.filter((x) => x !== c);
        set('cols', cols.filter((x) => now.includes(x)).join(','));
      } }), ' ' + c)));
    const pager = el('div', { class: 'pager' },
      el('span', { id: 'runs-count', text: rows.length + ' of ' + d.rows.filter((r) => f.deleted || r[ix('deleted_at')] === null).length + ' runs' + (pages > 1 ? ', page ' + page + ' of ' + pages : '') }),
      el('button', { disabled: page <= 1, onclick: () => { const q = params(); q.set('page', page - 1); go('/runs', q); } }, 'previous'),
      el('button', { disabled: page >= pages, onclick: () => { const q = params(); q.set('page', page + 1); go('/runs', q); } }, 'next'),
      el('label', {}, 'per page ', el('select', { onchange: (e) => set('size', e.target.value) }, [100, 200, 500, 1000].map((n) => el('option', { value: n, text: n, selected: n === size })))));
    const view = visible.map((r) => shown.map((c) => r[ix(c)]).concat([r]));
    const tbl = table(shown, view, {
      id: 'runs', sort: { col: sortCol, desc },
      onSort: (c) => { const q = params(); if (q.get('sort') === c) q.set('desc', q.get('desc') === '1' ? '0' : '1'); else { q.set('sort', c); q.set('desc', '0'); } go('/runs', q); },
      lead: { head: '', cell: (r) => { const id = r[r.length - 1][ix('run_id')]; return el('input', { type: 'checkbox', checked: state.selected.has(id), onchange: (e) => { if (e.target.checked) state.selected.add(id); else state.selected.delete(id); const b = document.getElementById('compare-selected'); b.disabled = state.selected.size < 2; b.textContent = 'Compare selected (' + state.selected.size + ')'; } }); } },
      cell: (c, v, r) => {
        const full = r[r.length - 1];
        if (c === 'run_id') return link('#/run/' + v, String(v));
        if (c === 'status') {
          const s = statusPill(v);
          if (v === 'running') return el('span', {}, s, ' epoch ' + (full[ix('epochs_done')] + 1) + '/' + full[ix('epochs')] + (full[ix('eta_seconds')] !== null ? ', ETA ' + duration(full[ix('eta_seconds')]) : ''));
          return s;
        }
        if (c === 'experiment') return link('#/experiment/' + encodeURIComponent(v), v);
        if (c === 'epochs') return full[ix('epochs_done')] + '/' + v;
        return null;
      },
    });
    main.replaceChildren(el('h1', { text: 'Runs' }), filters, chooser, pager, tbl);
    document.body.dataset.runsShown = String(visible.length);
  }

  function kv(obj) {
    return el('div', { class: 'kv' }, Object.entries(obj).flatMap(([k, v]) => [el('div', { text: k }), el('div', { text: fmt(v) })]));
  }

  const FINISHED = ['completed', 'diverged', 'pruned'];
  async function runPage(id) {
    setNav('runs');
    const d = await get('/api/run/' + id);
    const r = d.run;
    const running = r.status === 'running' ? ' epoch ' + (r.epochs_done + 1) + '/' + r.epochs + (d.eta_seconds !== null ? ', ETA ' + duration(d.eta_seconds) : '') : '';
    main.replaceChildren(
      el('h1', {}, 'Run ' + r.id + ' ', el('span', { class: 'muted', text: r.name }), ' ', statusPill(r.status), running),
      el('p', {}, link('#/experiment/' + encodeURIComponent(d.experiment), 'experiment ' + d.experiment), d.tags.length ? ' · tags: ' + d.tags.join(', ') : '', r.note ? ' · note: ' + r.note : ''),
      d.corrupt && d.corrupt.length ? el('div', { class: 'card error', id: 'corrupt' }, el('h2', { text: 'Corrupt: stored bits that do not match their hashes' }),
        el('ul', {}, d.corrupt.map((f) => el('li', { text: f }))), el('p', { text: 'Do not trust the figures below; runner check lists every problem, runner verify ' + r.id + ' re-trains it.' })) : null,
      FINISHED.includes(r.status) ? el('div', { class: 'card' }, el('h2', { text: 'Verify it' }), el('pre', { text: d.verify }),
        STATIC || (d.corrupt && d.corrupt.length) ? null : el('p', {}, el('a', { href: '/api/run/' + r.id + '/export.safetensors', download: 'run-' + r.id + '.safetensors', text: 'Download its final weights (safetensors)' }))) : null,
      el('h2', { text: 'Curves' }), curves([{ label: '#' + r.id, epochs: d.epochs }]),
      el('h2', { text: 'Epochs' }), table(d.epochs.columns, d.epochs.rows, { id: 'epochs' }),
      el('h2', { text: 'Parameters' }), kv(d.config),
      el('h2', { text: 'Provenance and hashes' }), kv(d.provenance),
      el('h2', { text: 'Weights' }), table(d.weights.columns, d.weights.rows),
    );
  }

  async function comparePage() {
    setNav('runs');
    const ids = (params().get('runs') || '').split(',').map(Number).filter((x) => x > 0).slice(0, 20);
    if (ids.length < 2) { main.replaceChildren(el('p', { text: 'Select two or more runs on the Runs page to compare them.' })); return; }
    const runs = await Promise.all(ids.map((i) => get('/api/run/' + i)));
    const diff = (key) => {
      const keys = [...new Set(runs.flatMap((x) => Object.keys(x[key])))].sort();
      return keys.filter((k) => new Set(runs.map((x) => JSON.stringify(x[key][k] === undefined ? null : x[key][k]))).size > 1)
        .map((k) => [k].concat(runs.map((x) => x[key][k])));
    };
    const head = ['field'].concat(runs.map((x) => '#' + x.run.id));
    const cfg = diff('config');
    const env = diff('envelope');
    main.replaceChildren(
      el('h1', { text: 'Compare ' + ids.length + ' runs' }),
      el('p', {}, runs.map((x) => el('span', { class: 'pill' }, link('#/run/' + x.run.id, '#' + x.run.id + ' ' + x.run.name)))),
      el('h2', { text: 'Config fields that differ' }), cfg.length ? table(head, cfg, { id: 'config-diff' }) : el('p', { class: 'muted', text: 'none: the same config' }),
      el('h2', { text: 'Envelope fields that differ' }), env.length ? table(head, env) : el('p', { class: 'muted', text: 'none' }),
      el('h2', { text: 'Curves' }), curves(runs.map((x) => ({ label: '#' + x.run.id, epochs: x.epochs }))),
    );
  }

  // ---- router and live updates ---------------------------------------------------------------------
  async function render() {
    if (rendering) return;
    rendering = true;
    const [page, arg] = route();
    try {
      if (page === 'experiment' && arg) await experimentPage(arg);
      else if (page === 'runs') await runsPage();
      else if (page === 'run' && arg) await runPage(Number(arg));
      else if (page === 'compare') await comparePage();
      else await experimentsPage();
      // From the navigation's start (the time origin) to the first page drawn with its data.
      if (!document.body.dataset.readyMs) document.body.dataset.readyMs = String(Math.round(performance.now()));
      document.body.dataset.page = page || 'experiments';
    } catch (e) {
      main.replaceChildren(el('p', { class: 'error', text: String(e.message || e) }));
      document.body.dataset.error = String(e.message || e);
    } finally {
      rendering = false;
    }
  }
  async function poll() {
    try {
      const v = await get('/api/version');
      document.getElementById('live').textContent = 'live: ' + v.runs + ' runs, ' + v.running + ' running';
      if (version !== null && v.version !== version) await render();
      version = v.version;
    } catch (e) {
      document.getElementById('live').textContent = 'not connected: ' + (e.message || e);
    }
  }
  window.addEventListener('hashchange', render);
  if (STATIC) {
    document.getElementById('store').textContent = STATIC.title;
    document.getElementById('live').textContent = 'report of ' + STATIC.created;
  } else {
    get('/api/store').then((s) => { document.getElementById('store').textContent = s.path; }).catch(() => {});
    setInterval(poll, 1000);
    poll();
  }
  render();
})();
