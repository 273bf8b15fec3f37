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
  // One number format: 4 significant digits (integers whole); the full value is in the cell's title,
  // the CSV and the JSON.
  function fmt(v) {
    if (v === null || v === undefined) return '';
    if (typeof v === 'number') {
      if (Number.isInteger(v)) return String(v);
      if (!isFinite(v)) return String(v);
      const a = Math.abs(v);
      if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
      return String(Number(v.toPrecision(4)));
    }
    if (Array.isArray(v)) return v.join(',');
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  }
  // Tick labels with as many decimals as the step between ticks needs (no repeated labels).
  function ticks(u, splits) {
    const step = splits.length > 1 ? Math.abs(splits[1] - splits[0]) : 0;
    const digits = step > 0 && step < 1 ? Math.min(8, Math.ceil(-Math.log10(step) - 1e-9)) : 0;
    return splits.map((v) => (v === null ? '' : Math.abs(v) >= 1e6 || (v !== 0 && Math.abs(v) < 1e-4) ? v.toExponential(1) : v.toFixed(digits)));
  }
  function csvCell(v) {
    if (v === null || v === undefined) return '';
    const t = Array.isArray(v) ? JSON.stringify(v) : typeof v === 'object' ? JSON.stringify(v) : String(v);
    return /[",\n\r]/.test(t) ? '"' + t.replace(/"/g, '""') + '"' : t;
  }
  // A link that downloads `columns` and `rows` as CSV (full precision).
  function csvLink(name, columns, rows) {
    return el('a', {
      class: 'csv', href: '#', text: 'CSV',
      title: 'download this table as CSV (full precision)',
      onclick: (e) => {
        e.preventDefault();
        const text = [columns.map(csvCell).join(',')].concat(rows.map((r) => columns.map((_, i) => csvCell(r[i])).join(','))).join('\r\n') + '\r\n';
        const a = el('a', { href: URL.createObjectURL(new Blob([text], { type: 'text/csv' })), download: name + '.csv' });
        document.body.append(a);
        a.click();
        a.remove();
      },
    });
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
        const full = typeof v === 'number' && !Number.isInteger(v) ? String(v) : null;
        tr.append(el('td', { class: typeof v === 'number' ? 'num' : null, title: full }, node === null || node === undefined ? fmt(v) : node));
      });
      tbody.append(tr);
    }
    const t = el('div', { class: 'scroll' }, el('table', { id: opts.id }, thead, tbody));
    if (opts.csv === false) return t;
    return el('div', { class: 'tablebox' }, csvLink(opts.csv || opts.id || 'table', columns, opts.csvRows || rows), t);
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
  function themeColor(name, fallback) {
    const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return v || fallback;
  }
  // series: [{label, values, color, width, dash, points}], bands: [{hi, lo, color}] (values aligned on xs).
  // The legend shows each series' value at the cursor, and at the last x with data when the cursor is away;
  // a series with a single value is drawn as a point.
  function chart(title, xs, series, o) {
    o = o || {};
    const box = el('div', { class: 'chart', id: o.id, 'data-labels': series.map((x) => x.label).join('|') }, el('div', { class: 'title', text: title }));
    if (!window.uPlot || xs.length === 0) { box.append(el('p', { class: 'muted', text: 'no data' })); return box; }
    const fg = themeColor('--fg', '#1d2330');
    const grid = themeColor('--line', '#e3e6ea');
    const data = [xs];
    const axis = (label, extra) => Object.assign({ label, stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } }, extra);
    const opts = {
      width: o.width || 520, height: o.height || 300,
      scales: {
        x: Object.assign(o.logX ? { time: false, distr: 3, log: 10 } : { time: false }, o.xRange ? { range: o.xRange } : { range: (u, min, max) => (min === max ? [min - 1, max + 1] : [min, max]) }),
        y: { range: (u, min, max) => (min === max ? [min - Math.abs(min || 1) * 0.01, max + Math.abs(max || 1) * 0.01] : uPlot.rangeNum(min, max, 0.1, true)) },
      },
      axes: [axis(o.xLabel || '', { values: o.xValues || (o.logX ? undefined : ticks), incrs: o.intX ? [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] : undefined, splits: o.xSplits }),
        axis(o.yLabel || '', { values: ticks, size: 60 })],
      series: [{ label: o.xLabel || 'x', value: (u, v) => (v === null || v === undefined ? '' : (o.xFmt || fmt)(v)) }],
      legend: { show: o.legend !== false && series.length <= 12 },
      bands: [],
    };
    for (const b of o.bands || []) {
      data.push(b.hi, b.lo);
      opts.series.push({ label: b.label + ' hi', stroke: 'transparent', points: { show: false } },
        { label: b.label + ' lo', stroke: 'transparent', points: { show: false } });
      opts.bands.push({ series: [data.length - 2, data.length - 1], fill: b.color + '33' });
    }
    let lastWithData = -1;
    for (const s of series) {
      data.push(s.values);
      const n = s.values.filter((v) => v !== null && v !== undefined).length;
      s.values.forEach((v, i) => { if (v !== null && v !== undefined && i > lastWithData) lastWithData = i; });
      opts.series.push({
        label: s.label, stroke: s.color, width: s.width || 2, dash: s.dash,
        paths: s.points === 'only' ? () => null : undefined,
        points: { show: !!s.points || n < 2 || xs.length === 1, size: s.pointSize || 6, fill: s.color, stroke: s.color },
        spanGaps: true,
        value: (u, v) => (v === null || v === undefined ? '' : fmt(v)),
      });
    }
    const hidden = (o.bands || []).flatMap((_, i) => [1 + 2 * i, 2 + 2 * i]);
    setTimeout(() => {
      try {
        const u = new window.uPlot(opts, data, box);
        // A band's edges are series of their own: kept out of the legend.
        const rows = u.root.querySelectorAll('.u-legend .u-series');
        for (const i of hidden) if (rows[i]) rows[i].style.display = 'none';
        // Values in the legend when the cursor is not over the chart: those of the last x with data.
        const rest = () => { if (lastWithData >= 0) u.setLegend({ idx: lastWithData }); };
        setTimeout(rest, 30);
        u.over.addEventListener('mouseleave', () => setTimeout(rest, 0));
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
              : c === 'run time (sum)' ? duration(v)
                : c === 'created' && typeof v === 'string' ? el('span', { title: v, text: v.slice(0, 16).replace('T', ' ') }) : null,
      }),
    );
  }

  // ---- views of one experiment --------------------------------------------------------------------
  // A parameter's axis: numeric (log when its positive values span a factor of 10 or more) or
  // categorical (sizes, activation, init, dtype ...); `pos(v)` in [0, 1], bottom to top.
  function axisOf(name, vals) {
    const present = vals.filter((v) => v !== null && v !== undefined);
    const numeric = present.length > 0 && present.every((v) => typeof v === 'number');
    if (numeric) {
      const lo = Math.min(...present), hi = Math.max(...present);
      const log = lo > 0 && hi / lo >= 10;
      const f = log ? Math.log10 : (x) => x;
      const a = f(lo), b = f(hi);
      const pos = (v) => (v === null || v === undefined ? null : b === a ? 0.5 : (f(v) - a) / (b - a));
      const distinct = [...new Set(present)].sort((x, y) => x - y);
      const labels = distinct.length <= 8 ? distinct : [lo, log ? Math.pow(10, (a + b) / 2) : (lo + hi) / 2, hi];
      return { name, kind: log ? 'log' : 'linear', pos, labels: labels.map((v) => ({ at: pos(v), text: fmt(v) })) };
    }
    const keys = [...new Set(present.map((v) => JSON.stringify(v)))].sort(compareValues);
    const pos = (v) => (v === null || v === undefined ? null : keys.length === 1 ? 0.5 : keys.indexOf(JSON.stringify(v)) / (keys.length - 1));
    return { name, kind: 'categorical', pos, labels: keys.map((k) => ({ at: pos(JSON.parse(k)), text: fmt(JSON.parse(k)) })) };
  }
  // Colour of a metric value at t in [0, 1] (a viridis-like ramp: low dark blue, high yellow).
  function ramp(t) {
    const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
    t = Math.min(1, Math.max(0, isFinite(t) ? t : 0)) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(t)), f = t - i;
    const c = stops[i].map((x, k) => Math.round(x + (stops[i + 1][k] - x) * f));
    return 'rgb(' + c.join(',') + ')';
  }
  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, ...kids) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) { if (k === 'text') e.textContent = v; else e.setAttribute(k, v); }
    for (const k of kids.flat()) if (k) e.append(k);
    return e;
  }
  // Brushes from the URL: `b=<axis>:<lo>:<hi>,...` with lo, hi positions in [0, 1] on that axis.
  function brushes() {
    const out = {};
    for (const part of (params().get('b') || '').split(',').filter(Boolean)) {
      const [i, lo, hi] = part.split(':').map(Number);
      if (Number.isInteger(i) && isFinite(lo) && isFinite(hi)) out[i] = [Math.min(lo, hi), Math.max(lo, hi)];
    }
    return out;
  }
  function setBrushes(b) {
    const q = params();
    const text = Object.entries(b).map(([i, [lo, hi]]) => i + ':' + lo.toFixed(4) + ':' + hi.toFixed(4)).join(',');
    if (text) q.set('b', text); else q.delete('b');
    go('/' + route().map(encodeURIComponent).join('/'), q);
  }
  // Parallel coordinates: one axis per varying parameter and the selection metric last, one line per
  // run coloured by the metric (pruned runs dashed, at the value of their last rung). Drag on an axis to
  // keep the runs whose lines cross it there (the table below narrows); double-click an axis to clear.
  function parallel(d, pts) {
    const metric = d.metric.name;
    const axes = d.varying.map((p) => axisOf(p, pts.map((x) => x.params[p])));
    const mAxis = axisOf(metric, pts.map((x) => x.value));
    mAxis.kind = 'linear';
    axes.push(mAxis);
    const W = Math.max(560, Math.min(1200, 170 * axes.length)), H = 330, top = 28, bottom = 40, left = 70, right = 70;
    const xAt = (i) => left + (axes.length === 1 ? 0 : (i * (W - left - right)) / (axes.length - 1));
    const yAt = (t) => top + (1 - t) * (H - top - bottom);
    const b = brushes();
    const valueOf = (x, i) => (i === axes.length - 1 ? x.value : x.params[axes[i].name]);
    const inside = (x) => Object.entries(b).every(([i, [lo, hi]]) => { const t = axes[i] && axes[i].pos(valueOf(x, Number(i))); return t !== null && t !== undefined && t >= lo - 1e-9 && t <= hi + 1e-9; });
    const vals = pts.map((x) => x.value);
    const vlo = Math.min(...vals), vhi = Math.max(...vals);
    const shade = (v) => ramp(vhi === vlo ? 1 : (v - vlo) / (vhi - vlo) * (d.metric.higher_is_better ? 1 : -1) + (d.metric.higher_is_better ? 0 : 1));
    const root = svg('svg', { width: W, height: H, class: 'parallel', id: 'parallel', 'data-lines': pts.length });
    const kept = pts.filter(inside);
    // Lines outside the brushes first (grey), then the kept ones, the best on top.
    const order = pts.slice().sort((a, c) => (inside(a) - inside(c)) || (d.metric.higher_is_better ? a.value - c.value : c.value - a.value));
    for (const x of order) {
      const on = inside(x);
      const pointsAttr = axes.map((a, i) => { const t = a.pos(valueOf(x, i)); return t === null ? null : xAt(i) + ',' + yAt(t); }).filter(Boolean).join(' ');
      const line = svg('polyline', { class: 'pc-line' + (on ? '' : ' off'), points: pointsAttr, fill: 'none', stroke: on ? shade(x.value) : 'var(--line)', 'stroke-width': on ? 1.8 : 1, 'stroke-dasharray': x.status === 'pruned' ? '4 3' : null, 'data-run': x.run_id });
      line.append(svg('title', { text: '#' + x.run_id + ' ' + metric + ' ' + x.value + (x.status === 'pruned' ? ' (pruned at epoch ' + x.epochs_done + ')' : '') }));
      root.append(line);
    }
    axes.forEach((a, i) => {
      const x = xAt(i);
      const g = svg('g', { class: 'pc-axis', 'data-axis': i });
      g.append(svg('line', { x1: x, x2: x, y1: yAt(0), y2: yAt(1), stroke: 'var(--fg)', 'stroke-width': 1 }));
      g.append(svg('text', { x, y: top - 12, 'text-anchor': 'middle', class: 'pc-name', text: a.name + (a.kind === 'log' ? ' (log)' : '') }));
      for (const l of a.labels) {
        g.append(svg('line', { x1: x - 4, x2: x, y1: yAt(l.at), y2: yAt(l.at), stroke: 'var(--fg)' }));
        g.append(svg('text', { x: x - 7, y: yAt(l.at) + 4, 'text-anchor': 'end', class: 'pc-tick', text: l.text }));
      }
      if (b[i]) g.append(svg('rect', { x: x - 7, width: 14, y: yAt(b[i][1]), height: Math.max(2, yAt(b[i][0]) - yAt(b[i][1])), class: 'pc-brush' }));
      // The drag area: a band around the axis.
      const hit = svg('rect', { x: x - 14, width: 28, y: yAt(1) - 4, height: yAt(0) - yAt(1) + 8, fill: 'transparent', class: 'pc-hit' });
      let from = null, shown = null;
      const tOf = (ev) => { const r = root.getBoundingClientRect(); return Math.min(1, Math.max(0, 1 - (ev.clientY - r.top - top) / (H - top - bottom))); };
      hit.addEventListener('pointerdown', (ev) => { from = tOf(ev); hit.setPointerCapture(ev.pointerId); shown = svg('rect', { x: x - 7, width: 14, class: 'pc-brush' }); g.append(shown); });
      hit.addEventListener('pointermove', (ev) => { if (from === null) return; const t = tOf(ev); shown.setAttribute('y', yAt(Math.max(from, t))); shown.setAttribute('height', Math.abs(yAt(from) - yAt(t))); });
      hit.addEventListener('pointerup', (ev) => { if (from === null) return; const t = tOf(ev); const nb = brushes(); if (Math.abs(t - from) < 0.01) delete nb[i]; else nb[i] = [Math.min(from, t), Math.max(from, t)]; from = null; setBrushes(nb); });
      hit.addEventListener('dblclick', () => { const nb = brushes(); delete nb[i]; setBrushes(nb); });
      g.append(hit);
      root.append(g);
    });
    const extra = metric === 'test_acc' ? [] : ['test_acc'];
    const cols = ['run_id', 'status'].concat(d.varying, [metric], extra);
    const rows = kept.slice().sort((a, c) => (d.metric.higher_is_better ? c.value - a.value : a.value - c.value))
      .map((x) => [x.run_id, x.status].concat(d.varying.map((p) => x.params[p]), [x.value], extra.map(() => x.test_acc)));
    return el('div', {},
      el('p', { class: 'muted', text: 'One line per run with a ' + metric + ' (' + pts.length + '), coloured by it' + (pts.some((x) => x.status === 'pruned') ? '; pruned runs dashed, at their last rung' : '') + '. Drag along an axis to keep the runs that cross it there; double-click it to clear.' }),
      el('div', { class: 'scroll' }, root),
      el('p', { id: 'pc-count', text: kept.length + ' of ' + pts.length + ' runs selected' + (Object.keys(b).length ? '' : ' (no brush)') }),
      Object.keys(b).length ? el('button', { onclick: () => setBrushes({}) }, 'clear the brushes') : null,
      rows.length > 500 ? el('p', { class: 'muted', text: 'The best 500 of the ' + rows.length + ' runs kept are listed; the CSV has them all.' }) : null,
      table(cols, rows.slice(0, 500), { id: 'pc-runs', csv: d.name + '-selected-runs', csvRows: rows, cell: (c, v) => (c === 'run_id' ? link('#/run/' + v, '#' + v) : c === 'status' ? statusPill(v) : null) }));
  }
  // Parameter importance: each parameter's share of the metric's variance, as bars.
  function importance(imp) {
    if (!imp || !imp.params.length) return el('p', { class: 'muted', text: imp ? imp.note : '' });
    const rows = imp.params.map((p) => el('div', { class: 'bar-row', 'data-param': p.param, 'data-share': p.share },
      el('span', { class: 'bar-name', text: p.param + ' (' + p.levels + ' values)' }),
      el('span', { class: 'bar' }, el('span', { class: 'bar-fill', style: 'width:' + (100 * Math.max(0, p.share)).toFixed(1) + '%' })),
      el('span', { class: 'bar-value', title: String(p.share), text: (100 * p.share).toFixed(1) + '%' })));
    rows.push(el('div', { class: 'bar-row muted' }, el('span', { class: 'bar-name', text: 'interactions and the rest' }),
      el('span', { class: 'bar' }, el('span', { class: 'bar-fill rest', style: 'width:' + (100 * imp.interactions).toFixed(1) + '%' })),
      el('span', { class: 'bar-value', text: (100 * imp.interactions).toFixed(1) + '%' })));
    return el('div', { id: 'importance' }, rows, el('p', { class: 'muted small', text: 'Method: ' + imp.method + '.' }));
  }
  // A search's rungs: ids as links.
  function rungTable(s) {
    const cols = s.rungs.columns;
    return table(cols, s.rungs.rows, { id: 'rungs', csv: 'rungs-' + s.search.slice(0, 12), cell: (c, v) => {
      if (c === 'best_run' && v !== null) return link('#/run/' + v, '#' + v);
      if (c === 'promoted' && v) return el('span', {}, String(v).split(' ').flatMap((id, i) => [i ? ' ' : null, /^\d+$/.test(id) ? link('#/run/' + id, '#' + id) : id]));
      return null;
    } });
  }

  async function experimentPage(name) {
    setNav('experiments');
    const d = await get('/api/experiment/' + encodeURIComponent(name));
    const metric = d.metric.name;
    const kids = [el('h1', { text: 'Experiment ' + d.name }), d.description ? el('p', { class: 'muted', text: d.description }) : null,
      el('p', {}, link('#/runs?' + new URLSearchParams({ experiment: d.name }).toString(), 'its ' + d.runs_total + ' runs'), ' ',
        Object.entries(d.statuses).map(([st, n]) => el('span', { class: 'pill' }, st + ' ' + n)),
        el('span', { class: 'muted', text: ' · chosen by ' + metric + (d.metric.higher_is_better ? ' (higher is better)' : ' (lower is better)') }))];
    // A search's decisions first: what it kept and pruned at each rung.
    for (const s of d.searches) {
      kids.push(el('h2', { text: 'Search ' + s.search.slice(0, 12) + ': ' + s.describe }), rungTable(s));
    }
    // The configurations (folded when there are many, so that the views below are in sight).
    const bi = d.compare.columns.indexOf('best');
    kids.push(el('details', { class: 'configs', open: d.compare.rows.length <= 12 },
      el('summary', {}, el('h2', { text: 'Configurations: ' + d.compare.rows.length + ', best first by ' + metric + ' (mean and spread over seeds)' })),
      table(d.compare.columns, d.compare.rows, { id: 'compare', csv: d.name + '-configurations', rowClass: (r) => r[bi] ? 'best' : null, cell: (c, v) => c === 'best' ? (v ? '*' : '') : null })));
    kids.push(el('p', { class: 'muted', id: 'selection', text: d.selection }));
    const valued = d.points.filter((x) => typeof x.value === 'number' && isFinite(x.value));
    const done = valued.filter((x) => x.status === 'completed');
    if (d.varying.length) {
      const at = d.importance.epoch ? ' at epoch ' + d.importance.epoch + ' (the epoch every run of the search reached: a fair comparison of all its candidates)' : ' (completed runs)';
      kids.push(el('h2', { text: 'Which parameters matter: their share of the variance of ' + metric + at }), importance(d.importance));
    }
    if (valued.length) {
      kids.push(el('h2', { text: 'Parameters against ' + metric + ' (parallel coordinates)' }), parallel(d, valued));
    }
    // Slices: the metric against each parameter that varies, a point per run (a colour per seed).
    const charts = [];
    // A search's candidates stopped at different epochs: each is shown at the epoch all of them reached.
    const sliceAt = d.importance.epoch;
    const sliced = sliceAt ? d.points.filter((x) => typeof x.value_at === 'number').map((x) => Object.assign({}, x, { value: x.value_at })) : done;
    for (const p of d.varying) {
      const pts = sliced;
      if (pts.length === 0) continue;
      const a = axisOf(p, pts.map((x) => x.params[p]));
      const numeric = a.kind !== 'categorical';
      const keys = [...new Set(pts.map((x) => JSON.stringify(x.params[p])))].sort(numeric ? (x, y) => JSON.parse(x) - JSON.parse(y) : compareValues);
      const xs = numeric ? keys.map((k) => JSON.parse(k)) : keys.map((_, i) => i);
      const seeds = [...new Set(pts.map((x) => x.seed))].sort(compareValues);
      const series = seeds.slice(0, 10).map((sd, i) => ({
        label: 'seed ' + sd, color: color(i), points: 'only',
        values: keys.map((k) => { const f = pts.filter((x) => x.seed === sd && JSON.stringify(x.params[p]) === k); return f.length ? f.reduce((acc, x) => acc + x.value, 0) / f.length : null; }),
      }));
      series.push({ label: 'mean', color: themeColor('--fg', '#000000'), width: 2, values: keys.map((k) => { const f = pts.filter((x) => JSON.stringify(x.params[p]) === k); return f.reduce((acc, x) => acc + x.value, 0) / f.length; }) });
      charts.push(chart(metric + ' by ' + p, xs, series, {
        id: 'slice-' + p, xLabel: p + (a.kind === 'log' ? ' (log)' : ''), logX: a.kind === 'log', width: 420, height: 260, yLabel: metric,
        xRange: numeric ? undefined : [-0.5, keys.length - 0.5],
        xSplits: numeric ? undefined : () => keys.map((_, i) => i),
        xFmt: numeric ? undefined : (v) => (keys[v] !== undefined ? fmt(JSON.parse(keys[v])) : ''),
        xValues: numeric ? (a.kind === 'log' ? (u, vals) => vals.map((v) => fmt(v)) : undefined) : (u, vals) => vals.map((v) => (Number.isInteger(v) && keys[v] !== undefined ? fmt(JSON.parse(keys[v])) : '')),
      }));
    }
    if (charts.length) kids.push(el('h2', { text: metric + ' against each parameter (' + (sliceAt ? 'every run at epoch ' + sliceAt : 'completed runs') + '; a colour per seed, the mean in black)' }), el('div', { class: 'charts' }, charts));
    // How the search went: the best so far in the order runs finished; each run's metric per epoch.
    if (d.history.length) {
      const xs = d.history.map((_, i) => i + 1);
      kids.push(el('h2', { text: 'Optimization history' }), el('div', { class: 'charts' },
        chart(metric + ' of each completed run in the order they finished, and the best so far', xs, [
          { label: metric, values: d.history.map((h) => h.value), color: color(0), points: 'only' },
          { label: 'best so far', values: d.history.map((h) => h.best), color: color(3), width: 2 },
        ], { id: 'history', xLabel: 'completed run (in finishing order)', width: 1000, height: 280, intX: true, yLabel: metric })));
    }
    const drawn = d.trials.filter((t) => t.values.some((v) => v !== null)).slice(0, 300);
    if (drawn.length && Math.max(...drawn.map((t) => t.values.length)) > 1) {
      const max = Math.max(...drawn.map((t) => t.values.length));
      const xs = Array.from({ length: max }, (_, i) => i + 1);
      const finalists = drawn.filter((t) => t.status === 'completed');
      const series = drawn.map((t) => {
        const pruned = t.status !== 'completed';
        return { label: '#' + t.run_id + (pruned ? ' (' + t.status + ')' : ''), values: xs.map((_, i) => (t.values[i] === undefined ? null : t.values[i])),
          color: pruned ? '#9aa3ad' : color(finalists.indexOf(t)), width: pruned ? 1 : 2.5, pointSize: pruned ? 3 : 6 };
      });
      kids.push(el('h2', { text: 'Intermediate values: ' + metric + ' per epoch of every run (completed bold, pruned thin and grey)' }),
        chart(metric + ' per epoch, ' + drawn.length + ' runs', xs, series, { id: 'intermediate', xLabel: 'epoch', width: 1000, height: 320, intX: true, yLabel: metric }));
    }
    // Learning curves of the best configurations by the selection metric (mean over seeds, a band of one
    // standard deviation).
    if (d.groups.length) {
      const k = Math.min(10, d.groups.length);
      const best = d.groups.slice(0, k);
      const max = Math.max(...best.map((g) => g.epochs.length));
      const xs = Array.from({ length: max }, (_, i) => i + 1);
      const pad = (a) => xs.map((_, i) => (a[i] === undefined ? null : a[i]));
      const metrics = [metric].concat(['test_acc', 'test_loss'].filter((m) => m !== metric));
      for (const m of metrics) {
        if (!best.some((g) => g.mean[m] && g.mean[m].some((v) => v !== null))) continue;
        const series = [];
        const bands = [];
        best.forEach((g, i) => {
          const mean = pad(g.mean[m] || []);
          const sd = pad(g.std[m] || []);
          series.push({ label: g.label, values: mean, color: color(i), width: 2 });
          if (g.seeds > 1) bands.push({ label: g.label, color: color(i), hi: mean.map((v, j) => (v === null || sd[j] === null ? null : v + sd[j])), lo: mean.map((v, j) => (v === null || sd[j] === null ? null : v - sd[j])) });
        });
        kids.push(el('h2', { text: 'Learning curves of the best ' + k + ' of ' + d.groups.length + ' configurations by ' + metric + ': mean ' + m + ' over seeds, a band of one standard deviation' }));
        kids.push(chart(m + ' per epoch', xs, series, { id: 'curves-' + m, xLabel: 'epoch', width: 1000, height: 320, bands, intX: true, yLabel: m }));
      }
    }
    main.replaceChildren(...kids.filter(Boolean));
  }

  // Shown by default: the run, the parameters that vary among the runs listed (what was swept), and
  // the metrics that have values.
  const PARAM_COLUMNS = ['sizes', 'activation', 'init', 'dtype', 'optimizer', 'dropout', 'batch_size', 'learning_rate', 'seed'];
  function defaultColumns(cols, rows) {
    const ix = (c) => cols.indexOf(c);
    const varies = (c) => ix(c) >= 0 && new Set(rows.map((r) => JSON.stringify(r[ix(c)]))).size > 1;
    const has = (c) => ix(c) >= 0 && rows.some((r) => r[ix(c)] !== null);
    return ['run_id', 'experiment', 'name', 'status', 'epochs'].concat(PARAM_COLUMNS.filter(varies), ['val_acc', 'test_acc', 'test_loss'].filter(has), ['seconds', 'tags']);
  }
  async function runsPage() {
    setNav('runs');
    const p = params();
    const d = await get('/api/runs');
    const cols = d.columns;
    const ix = (c) => cols.indexOf(c);
    const listed = p.get('experiment') ? d.rows.filter((r) => r[ix('experiment')] === p.get('experiment')) : d.rows;
    const shown = (p.get('cols') ? p.get('cols').split(',') : defaultColumns(cols, listed)).filter((c) => ix(c) >= 0);
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
      id: 'runs', sort: { col: sortCol, desc }, csv: 'runs', csvRows: rows.map((r) => shown.map((c) => r[ix(c)])),
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
        if (c === 'name' && v) {
          // The experiment is its own column: the name without it, cut to fit (whole on hover).
          const e = full[ix('experiment')];
          const short = e && v.startsWith(e + '/') ? v.slice(e.length + 1) : v;
          return el('span', { title: v, text: short.length > 34 ? short.slice(0, 32) + '…' : short });
        }
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
  // A confusion matrix as a table: rows the true class, columns the predicted one, cells shaded by their
  // share of the row; each class's samples and accuracy at the end.
  function confusion(m, id) {
    const head = el('tr', {}, el('th', { text: 'true \\ predicted' }), Array.from({ length: m.classes }, (_, k) => el('th', { class: 'num', text: String(k) })),
      el('th', { class: 'num', text: 'samples' }), el('th', { class: 'num', text: 'accuracy' }));
    const body = m.counts.map((row, a) => el('tr', {}, el('th', { text: String(a) }), row.map((n, p) => {
      const share = m.samples[a] ? n / m.samples[a] : 0;
      const hue = a === p ? '44,160,44' : '214,39,40';
      return el('td', { class: 'num cell', 'data-count': n, title: 'true ' + a + ', predicted ' + p + ': ' + n + ' of ' + m.samples[a], style: n ? 'background: rgba(' + hue + ',' + (0.12 + 0.75 * Math.sqrt(share)).toFixed(3) + ')' : null, text: n ? String(n) : '·' });
    }), el('td', { class: 'num', text: String(m.samples[a]) }), el('td', { class: 'num', title: String(m.class_accuracy[a]), text: fmt(m.class_accuracy[a]) })));
    const rows = m.counts.map((row, a) => [a].concat(row, [m.samples[a], m.class_accuracy[a]]));
    const cols = ['true'].concat(Array.from({ length: m.classes }, (_, k) => 'pred_' + k), ['samples', 'accuracy']);
    return el('div', { class: 'tablebox' }, csvLink(id, cols, rows), el('table', { id, class: 'confusion' }, el('thead', {}, head), el('tbody', {}, body)),
      el('p', { class: 'muted', text: m.correct + ' of ' + m.total + ' right (' + fmt(m.correct / m.total) + ')' }));
  }
  // The most confident mistakes, drawn from the run's data (grey levels as stored, 0 white).
  function gallery(g) {
    if (g.note) return el('p', { class: 'muted', id: 'gallery-note', text: g.note });
    const figs = g.images.map((im) => {
      const c = el('canvas', { width: g.cols, height: g.rows });
      const px = atob(im.pixels);
      const ctx = c.getContext('2d');
      const img = ctx.createImageData(g.cols, g.rows);
      for (let i = 0; i < g.rows * g.cols; i++) {
        const v = 255 - px.charCodeAt(i);
        img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
        img.data[4 * i + 3] = 255;
      }
      ctx.putImageData(img, 0, 0);
      return el('figure', { class: 'digit', 'data-sample': im.sample, 'data-label': im.label, 'data-actual': im.actual, 'data-predicted': im.predicted, title: 'test sample ' + im.sample + ': labelled ' + im.label + ', predicted ' + im.predicted + ' with probability ' + im.confidence },
        c, el('figcaption', {}, el('b', { text: String(im.label) }), ' → ' + im.predicted, el('span', { class: 'muted', text: ' ' + fmt(im.confidence) })));
    });
    return el('div', {}, el('p', { class: 'muted', text: 'The ' + g.images.length + ' most confident of ' + g.of + ' misclassified test samples: label → prediction (its probability).' }),
      el('div', { class: 'gallery', id: 'gallery' }, figs));
  }
  async function runPage(id) {
    setNav('runs');
    const d = await get('/api/run/' + id);
    const r = d.run;
    const running = r.status === 'running' ? ' epoch ' + (r.epochs_done + 1) + '/' + r.epochs + (d.eta_seconds !== null ? ', ETA ' + duration(d.eta_seconds) : '') : '';
    let errs = null;
    if (d.errors) {
      let g;
      try { g = await get('/api/run/' + id + '/gallery'); } catch (e) { g = { note: STATIC ? 'This report holds the gallery of each experiment\'s best run only; runner ui shows every run\'s.' : String(e.message || e) }; }
      errs = [el('h2', { text: 'Where it errs' }), el('div', { class: 'charts' },
        el('div', {}, el('h3', { text: 'Test split' }), confusion(d.errors.test, 'confusion-test')),
        d.errors.validation ? el('div', {}, el('h3', { text: 'Validation split' }), confusion(d.errors.validation, 'confusion-validation')) : null),
      el('h3', { text: 'Misclassified test digits' }), gallery(g)];
    } else if (r.status === 'completed') {
      errs = [el('h2', { text: 'Where it errs' }), el('p', { class: 'muted', text: 'Not stored: the run completed before the store kept its confusion matrix.' })];
    }
    // Accuracy of each class per epoch (test, and validation with a split).
    const perClass = Object.entries(d.class_accuracy || {}).map(([split, rows]) => {
      const xs = rows.map((_, i) => i + 1);
      const classes = Math.max(0, ...rows.map((x) => (x ? x.length : 0)));
      const series = Array.from({ length: classes }, (_, k) => ({ label: 'class ' + k, color: color(k), width: 1.5, values: rows.map((x) => (x && x[k] !== undefined ? x[k] : null)) }));
      return chart(split + ' accuracy of each class per epoch', xs, series, { id: 'classes-' + split, xLabel: 'epoch', width: 620, intX: true });
    });
    if (perClass.length) (errs = errs || []).push(el('h3', { text: 'Accuracy per class, epoch by epoch' }), el('div', { class: 'charts' }, perClass));
    main.replaceChildren(...[
      el('h1', {}, 'Run ' + r.id + ' ', el('span', { class: 'muted', text: r.name }), ' ', statusPill(r.status), running),
      el('p', {}, link('#/experiment/' + encodeURIComponent(d.experiment), 'experiment ' + d.experiment), d.tags.length ? ' · tags: ' + d.tags.join(', ') : '', r.note ? ' · note: ' + r.note : ''),
      d.corrupt && d.corrupt.length ? el('div', { class: 'card error', id: 'corrupt' }, el('h2', { text: 'Corrupt: stored bits that do not match their hashes' }),
        el('ul', {}, d.corrupt.map((f) => el('li', { text: f }))), el('p', { text: 'Do not trust the figures below; runner check lists every problem, runner verify ' + r.id + ' re-trains it.' })) : null,
      FINISHED.includes(r.status) ? el('div', { class: 'card' }, el('h2', { text: 'Verify it' }), el('pre', { text: d.verify }),
        STATIC || (d.corrupt && d.corrupt.length) ? null : el('p', {}, el('a', { href: '/api/run/' + r.id + '/export.safetensors', download: 'run-' + r.id + '.safetensors', text: 'Download its final weights (safetensors)' }))) : null,
      el('h2', { text: 'Curves' }), curves([{ label: '#' + r.id, epochs: d.epochs }]),
      ...(errs || []),
      el('h2', { text: 'Epochs' }), table(d.epochs.columns, d.epochs.rows, { id: 'epochs', csv: 'run-' + r.id + '-epochs' }),
      el('h2', { text: 'Parameters' }), kv(d.config),
      el('h2', { text: 'Provenance and hashes' }), kv(d.provenance),
      el('h2', { text: 'Weights' }), table(d.weights.columns, d.weights.rows, { csv: 'run-' + r.id + '-weights' }),
    ].filter(Boolean));
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
      classTable(runs),
    );
  }
  // Per-class test accuracy of the runs side by side, the best of each class marked, and the classes
  // ranked by their spread between the runs (where they differ most first).
  function classTable(runs) {
    const have = runs.filter((x) => x.errors);
    if (have.length < 2) return el('p', { class: 'muted', text: 'Per-class accuracy: needs two runs that stored their confusion matrix.' });
    const classes = have[0].errors.test.classes;
    const rows = Array.from({ length: classes }, (_, k) => {
      const acc = have.map((x) => x.errors.test.class_accuracy[k]);
      const present = acc.filter((v) => v !== null);
      return [k].concat(acc, [present.length ? Math.max(...present) - Math.min(...present) : null]);
    }).sort((a, b) => compareValues(b[b.length - 1], a[a.length - 1]));
    const cols = ['class'].concat(have.map((x) => '#' + x.run.id), ['spread']);
    return el('div', {}, el('h2', { text: 'Test accuracy per class (classes where the runs differ most first; best marked)' }),
      table(cols, rows, { id: 'class-accuracy', csv: 'class-accuracy', cell: (c, v, r) => {
        const i = cols.indexOf(c);
        if (i < 1 || i > have.length || v === null) return null;
        const best = Math.max(...r.slice(1, have.length + 1).filter((x) => x !== null));
        return v === best ? el('b', { text: fmt(v) }) : null;
      } }));
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
      // From the navigation's start (the time origin) to the first page drawn with its data (its charts
      // are drawn by timers queued before this one).
      await new Promise((resolve) => setTimeout(resolve, 0));
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
