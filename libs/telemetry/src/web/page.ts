/**
 * The run page: plain HTML, CSS and JavaScript served from this package (no build step, no CDN, works
 * offline). Charts are inline SVG drawn by the script. The script only ever sets text (`textContent`) and SVG
 * attributes, never HTML, so worker ids and error messages cannot inject markup; the page's Content Security
 * Policy allows scripts, styles and images from its own origin only.
 *
 * The script is kept free of backticks and `${` so that it can live in a raw template string.
 */

export function runPageHtml(options: { pollMs: number }): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>M3AE run</title>
<link rel="icon" href="run/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="run/page.css">
<script src="run/page.js" defer></script>
</head>
<body data-poll-ms="${options.pollMs}">
<header>
  <h1>M3AE run <span id="run-id">…</span></h1>
  <span id="phase" class="phase phase-waiting">connecting</span>
  <span id="connection" class="connection"></span>
</header>
<p id="phase-message" class="message" hidden></p>
<section class="progress" aria-label="progress">
  <div class="bar"><div id="progress-fill" class="fill"></div></div>
  <dl class="facts">
    <div><dt>step</dt><dd id="step">–</dd></div>
    <div><dt>ETA</dt><dd id="eta">–</dd></div>
    <div><dt>elapsed</dt><dd id="elapsed">–</dd></div>
    <div><dt>samples/s</dt><dd id="samples-per-second">–</dd></div>
    <div><dt>tokens/s</dt><dd id="tokens-per-second">–</dd></div>
    <div><dt>s/step</dt><dd id="seconds-per-step">–</dd></div>
    <div><dt>loss</dt><dd id="loss-total">–</dd></div>
    <div><dt>MLM / MIM / ITM</dt><dd id="loss-parts">–</dd></div>
    <div><dt>learning rate</dt><dd id="learning-rate">–</dd></div>
    <div><dt>grad norm</dt><dd id="gradient-norm">–</dd></div>
  </dl>
</section>
<section class="charts">
  <figure><figcaption>loss per objective</figcaption><svg id="loss-chart" class="chart" role="img" aria-label="loss per objective"></svg></figure>
  <figure><figcaption>accuracy (MLM, ITM)</figcaption><svg id="accuracy-chart" class="chart" role="img" aria-label="accuracy"></svg></figure>
  <figure><figcaption>throughput (samples/s)</figcaption><svg id="throughput-chart" class="chart" role="img" aria-label="throughput"></svg></figure>
  <figure><figcaption>step time (s)</figcaption><svg id="step-time-chart" class="chart" role="img" aria-label="step time"></svg></figure>
  <figure><figcaption>held-out loss (MLM against a unigram model on the same tokens, dashed; MIM; ITM)</figcaption><svg id="heldout-loss-chart" class="chart" role="img" aria-label="held-out loss"></svg></figure>
  <figure><figcaption>held-out accuracy (MLM; ITM against chance, dashed)</figcaption><svg id="heldout-accuracy-chart" class="chart" role="img" aria-label="held-out accuracy"></svg></figure>
</section>
<p id="heldout-summary" class="hint">no held-out evaluation</p>
<section>
  <h2>Step-time breakdown <small id="breakdown-window"></small></h2>
  <svg id="breakdown-bar" class="breakdown" role="img" aria-label="step-time breakdown"></svg>
  <table id="breakdown-table"><thead><tr><th>where</th><th>phase</th><th>ms per step</th></tr></thead><tbody></tbody></table>
</section>
<section class="two">
  <div>
    <h2>Workers <small id="workers-count"></small></h2>
    <table id="workers"><thead><tr><th>worker</th><th>backend</th><th>last heartbeat</th><th>last contribution</th><th>steps</th><th>≈ samples/s</th></tr></thead><tbody></tbody></table>
  </div>
  <div>
    <h2>Jobs</h2>
    <dl class="facts small">
      <div><dt>rejected</dt><dd id="jobs-rejected">0</dd></div>
      <div><dt>retried</dt><dd id="jobs-retried">0</dd></div>
      <div><dt>backups (won)</dt><dd id="jobs-backups">0</dd></div>
      <div><dt>duplicates</dt><dd id="jobs-duplicates">0</dd></div>
      <div><dt>recoveries</dt><dd id="jobs-recoveries">0</dd></div>
      <div><dt>checkpoint</dt><dd id="checkpoint">–</dd></div>
    </dl>
    <h3>Rejected contributions</h3>
    <table id="rejects"><thead><tr><th>when</th><th>step</th><th>reason</th><th>worker</th><th>detail</th></tr></thead><tbody></tbody></table>
  </div>
</section>
<section>
  <h2>Reconstructions <small id="grid-caption"></small></h2>
  <p class="hint">each row: original · masked input · reconstruction (visible patches pasted back)</p>
  <p id="grid-empty" class="empty">no reconstruction grid yet</p>
  <img id="grid" alt="MIM reconstructions of the validation images" hidden>
</section>
<section>
  <details><summary>Run configuration</summary><pre id="config">–</pre></details>
</section>
<footer>updated <span id="updated">never</span></footer>
</body>
</html>
`;
}

/** The page's icon: a 2×2 patch grid with one patch masked. */
export const RUN_PAGE_ICON = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#1d2330"/><rect x="3" y="3" width="4.5" height="4.5" fill="#2f6fdb"/><rect x="8.5" y="3" width="4.5" height="4.5" fill="#8a94a6"/><rect x="3" y="8.5" width="4.5" height="4.5" fill="#2b8a3e"/><rect x="8.5" y="8.5" width="4.5" height="4.5" fill="#d9480f"/></svg>\n';

export const RUN_PAGE_CSS = String.raw`
:root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --bg: #fff; --panel: #f8f9fb;
  --total: #1d2330; --mlm: #2f6fdb; --mim: #d9480f; --itm: #2b8a3e; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); margin: 0 auto; padding: 16px 20px 40px; max-width: 1280px; }
header { display: flex; align-items: center; gap: 12px; flex-wrap: wrap; }
h1 { font-size: 20px; margin: 0; }
h2 { font-size: 16px; margin: 22px 0 8px; }
h3 { font-size: 14px; margin: 14px 0 6px; }
small, .hint, footer, .connection { color: var(--muted); font-weight: normal; }
.phase { border-radius: 999px; padding: 2px 10px; font-weight: 600; font-size: 13px; background: #eef1f6; }
.phase-waiting { background: #fff4d6; color: #7a5b00; }
.phase-training { background: #dcecff; color: #114a9e; }
.phase-finished { background: #dff5e3; color: #1d6b2f; }
.phase-stopped { background: #eceff3; color: #3f4753; }
.phase-failed { background: #ffe1dc; color: #a3230f; }
.connection.lost { color: #a3230f; font-weight: 600; }
.message { background: var(--panel); border-left: 3px solid var(--muted); padding: 8px 12px; white-space: pre-wrap; }
.message.failed { border-color: #d9480f; background: #fff3f0; }
.bar { height: 8px; background: var(--line); border-radius: 4px; overflow: hidden; margin: 14px 0 10px; }
.fill { height: 100%; width: 0; background: var(--mlm); transition: width .3s; }
.facts { display: flex; flex-wrap: wrap; gap: 6px 22px; margin: 0; }
.facts div { min-width: 90px; }
.facts dt { color: var(--muted); font-size: 12px; }
.facts dd { margin: 0; font-variant-numeric: tabular-nums; font-weight: 600; }
.facts.small dd { font-weight: 500; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 12px; margin-top: 16px; }
figure { margin: 0; background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
figcaption { font-size: 12px; color: var(--muted); }
svg.chart { width: 100%; height: auto; display: block; }
svg .axis { stroke: #c5cad3; stroke-width: 1; }
svg .grid { stroke: #e9ecf1; stroke-width: 1; }
svg .tick { fill: #667085; font-size: 11px; }
svg .legend { font-size: 11px; }
svg .series { fill: none; stroke-width: 1.8; stroke-linejoin: round; }
svg .empty { fill: #98a2b3; font-size: 13px; }
svg.breakdown { width: 100%; height: 34px; display: block; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); font-variant-numeric: tabular-nums; }
th { color: var(--muted); font-weight: 500; font-size: 12px; }
td.gone { color: #a3230f; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; vertical-align: middle; }
.two { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 20px; }
#grid { max-width: 100%; image-rendering: pixelated; border: 1px solid var(--line); }
.empty { color: var(--muted); font-style: italic; }
pre { background: var(--panel); padding: 10px; overflow: auto; font-size: 12px; }
footer { margin-top: 24px; font-size: 12px; }
`;

export const RUN_PAGE_JS = String.raw`
(function () {
  'use strict';
  var SVGNS = 'http://www.w3.org/2000/svg';
  var POLL_MS = Number(document.body.getAttribute('data-poll-ms')) || 1000;
  var COLORS = { total: '#1d2330', mlm: '#2f6fdb', mim: '#d9480f', itm: '#2b8a3e', task: '#c2255c', samples: '#6741d9', step: '#0b7285' };
  var PHASE_COLORS = ['#2f6fdb', '#d9480f', '#2b8a3e', '#f59f00', '#6741d9', '#0b7285', '#c2255c', '#868e96', '#5c940d', '#1864ab'];
  var PHASE_LABELS = { waiting: 'waiting for workers', training: 'training', finished: 'finished', stopped: 'stopped', failed: 'failed' };
  var s = { generation: -1, lastSeq: -1, kept: [], points: [], gridVersion: -1, lastOk: 0 };

  function $(id) { return document.getElementById(id); }
  function setText(id, v) { var e = $(id); if (e && e.textContent !== v) e.textContent = v; }
  function finite(v) { return typeof v === 'number' && isFinite(v); }
  function num(v, digits) {
    if (!finite(v)) return v === null || v === undefined ? '–' : String(v);
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
    return v.toFixed(digits === undefined ? (a >= 100 ? 1 : a >= 1 ? 3 : 4) : digits);
  }
  function duration(sec) {
    if (!finite(sec)) return '–';
    sec = Math.max(0, Math.round(sec));
    var h = Math.floor(sec / 3600), m = Math.floor((sec % 3600) / 60), r = sec % 60;
    if (h > 0) return h + 'h ' + m + 'm';
    if (m > 0) return m + 'm ' + r + 's';
    return r + 's';
  }
  function ago(t, now) { return finite(t) ? duration((now - t) / 1000) + ' ago' : '–'; }
  function el(name, attrs, content) {
    var e = document.createElementNS(SVGNS, name);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, String(attrs[k]));
    if (content !== undefined) e.textContent = content;
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function niceStep(span, count) {
    var raw = span / Math.max(1, count);
    var p = Math.pow(10, Math.floor(Math.log10(raw)));
    var f = raw / p;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
  }
  function ticks(lo, hi, count) {
    var step = niceStep(hi - lo, count), out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    out.step = step;
    return out;
  }
  // As many decimals as the tick spacing needs (0.25 apart → 2), exponents for the very small or large.
  function tickLabel(v, step) {
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(1);
    return v.toFixed(Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9))));
  }

  // series: [{ name, color, values: [[x, y]...] }]. Non-finite y values break the line (a gap).
  function drawChart(svg, series, opts) {
    clear(svg);
    var W = 640, H = 230, L = 58, R = 14, T = 22, B = 26;
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    var xs = [], ys = [], count = 0;
    series.forEach(function (sr) {
      var n = 0;
      sr.values.forEach(function (p) { if (finite(p[1])) { xs.push(p[0]); ys.push(p[1]); n++; } });
      count = Math.max(count, n);
    });
    svg.setAttribute('data-points', String(count));
    if (count === 0) {
      svg.appendChild(el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty' }, opts.empty || 'no data yet'));
      return;
    }
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (opts.zero && y0 > 0) y0 = 0;
    if (opts.max !== undefined) y1 = Math.max(y1, opts.max);
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { var d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
    var pad = (y1 - y0) * 0.06; if (!opts.zero || y0 !== 0) y0 -= pad; y1 += pad;
    function X(v) { return L + (v - x0) / (x1 - x0) * (W - L - R); }
    function Y(v) { return T + (1 - (v - y0) / (y1 - y0)) * (H - T - B); }
    var yt = ticks(y0, y1, 4);
    yt.forEach(function (v) {
      svg.appendChild(el('line', { x1: L, x2: W - R, y1: Y(v), y2: Y(v), class: 'grid' }));
      svg.appendChild(el('text', { x: L - 6, y: Y(v) + 4, 'text-anchor': 'end', class: 'tick' }, tickLabel(v, yt.step)));
    });
    ticks(x0, x1, 6).forEach(function (v) {
      if (Math.round(v) !== v) return;
      svg.appendChild(el('text', { x: X(v), y: H - 8, 'text-anchor': 'middle', class: 'tick' }, String(v)));
    });
    svg.appendChild(el('line', { x1: L, x2: L, y1: T, y2: H - B, class: 'axis' }));
    svg.appendChild(el('line', { x1: L, x2: W - R, y1: H - B, y2: H - B, class: 'axis' }));
    var lx = L + 8;
    series.forEach(function (sr) {
      var runs = [[]];
      sr.values.forEach(function (p) {
        if (finite(p[1])) runs[runs.length - 1].push(X(p[0]).toFixed(1) + ',' + Y(p[1]).toFixed(1));
        else if (runs[runs.length - 1].length) runs.push([]);
      });
      var drawn = 0;
      runs.forEach(function (r) {
        if (r.length === 0) return;
        drawn += r.length;
        if (r.length === 1) {
          var xy = r[0].split(',');
          svg.appendChild(el('circle', { cx: xy[0], cy: xy[1], r: 2.5, fill: sr.color, class: 'dot', 'data-series': sr.name }));
        } else {
          var line = { points: r.join(' '), stroke: sr.color, class: 'series', 'data-series': sr.name };
          if (sr.dash) line['stroke-dasharray'] = '6,4';
          svg.appendChild(el('polyline', line));
        }
      });
      if (drawn === 0 || series.length < 2) return;
      svg.appendChild(el('rect', { x: lx, y: 6, width: 10, height: 10, fill: sr.color, rx: 2 }));
      svg.appendChild(el('text', { x: lx + 14, y: 15, class: 'legend' }, sr.label || sr.name));
      lx += 22 + 7 * (sr.label || sr.name).length;
    });
  }

  function pts(key) {
    return s.points.map(function (p) { return [p.step, key(p)]; });
  }

  function renderCharts() {
    var objectives = ['total', 'mlm', 'mim', 'itm'].filter(function (o) {
      return s.points.some(function (p) { return finite(p.loss[o]); });
    });
    drawChart($('loss-chart'), objectives.map(function (o) {
      return { name: o, label: o === 'total' ? 'total' : o.toUpperCase(), color: COLORS[o], values: pts(function (p) { return p.loss[o]; }) };
    }), { empty: 'no step yet' });
    var acc = ['mlm', 'itm', 'task'].filter(function (o) { return s.points.some(function (p) { return finite(p.accuracy[o]); }); });
    drawChart($('accuracy-chart'), acc.map(function (o) {
      return { name: o, label: o.toUpperCase(), color: COLORS[o], values: pts(function (p) { return p.accuracy[o]; }) };
    }), { zero: true, max: 1, empty: 'no step yet' });
    drawChart($('throughput-chart'), [{ name: 'samples', color: COLORS.samples, values: pts(function (p) { return p.samplesPerSecond; }) }], { zero: true, empty: 'no step yet' });
    drawChart($('step-time-chart'), [{ name: 'step', color: COLORS.step, values: pts(function (p) { return p.durationMs / 1000; }) }], { zero: true, empty: 'no step yet' });
  }

  // Held-out evaluations (pre-training with evaluation.every): each figure with its baseline as a dashed line.
  function renderHeldOut(ev) {
    var points = ev.points, base = ev.baseline;
    var empty = base ? 'no held-out evaluation yet' : 'no held-out evaluation (evaluation.every = 0)';
    function series(group, o) { return points.map(function (p) { return [p.step, p[group][o]]; }); }
    function flat(v) { return points.length ? [[points[0].step, v], [points[points.length - 1].step, v]] : []; }
    var loss = ['mlm', 'mim', 'itm'].map(function (o) { return { name: 'heldout-' + o, label: o.toUpperCase(), color: COLORS[o], values: series('loss', o) }; });
    if (base && points.length && finite(base.unigramHeldOut)) loss.push({ name: 'unigram-model', label: 'unigram model', color: COLORS.mlm, dash: true, values: flat(base.unigramHeldOut) });
    drawChart($('heldout-loss-chart'), loss, { zero: true, empty: empty });
    var acc = ['mlm', 'itm'].map(function (o) { return { name: 'heldout-' + o, label: o.toUpperCase(), color: COLORS[o], values: series('accuracy', o) }; });
    if (base && points.length) acc.push({ name: 'itm-chance', label: 'ITM chance', color: COLORS.itm, dash: true, values: flat(base.itmChance) });
    drawChart($('heldout-accuracy-chart'), acc, { zero: true, max: 1, empty: empty });
    var last = points[points.length - 1];
    if (!base || !last) { setText('heldout-summary', empty); return; }
    var pct = function (v) { return finite(v) ? (100 * v).toFixed(1) + '%' : '–'; };
    setText('heldout-summary', 'held-out after step ' + last.step + ': ITM accuracy ' + pct(last.accuracy.itm) + ' (chance ' + pct(base.itmChance) + ', ' +
      (last.accuracy.itm > base.itmChance ? 'above' : 'not above') + '); MLM loss ' + num(last.loss.mlm) + ' nats (unigram model ' + num(base.unigramHeldOut) + ', ' +
      (finite(base.unigramHeldOut) ? (last.loss.mlm < base.unigramHeldOut ? 'below' : 'not below') : 'unknown') + '; unigram entropy of the training captions ' + num(base.unigramEntropy) +
      '), MLM accuracy ' + pct(last.accuracy.mlm) + '; MIM loss ' + num(last.loss.mim));
  }

  function renderBreakdown(b) {
    var rows = [];
    Object.keys(b.coordinator).forEach(function (k) { rows.push(['coordinator', k.replace(/Ms$/, ''), b.coordinator[k]]); });
    Object.keys(b.worker).forEach(function (k) { if (k !== 'totalMs') rows.push(['worker (mean job)', k.replace(/Ms$/, ''), b.worker[k]]); });
    setText('breakdown-window', b.steps ? 'mean of the last ' + b.steps + ' step' + (b.steps === 1 ? '' : 's') : '');
    var tbody = $('breakdown-table').tBodies[0];
    clear(tbody);
    var bar = $('breakdown-bar');
    clear(bar);
    bar.setAttribute('viewBox', '0 0 1000 34');
    bar.setAttribute('preserveAspectRatio', 'none');
    var coord = rows.filter(function (r) { return r[0] === 'coordinator'; });
    var sum = coord.reduce(function (a, r) { return a + r[2]; }, 0);
    var x = 0;
    rows.forEach(function (r, i) {
      var tr = document.createElement('tr');
      var sw = document.createElement('span');
      sw.className = 'swatch';
      sw.style.background = PHASE_COLORS[i % PHASE_COLORS.length];
      var c0 = document.createElement('td'); c0.textContent = r[0];
      var c1 = document.createElement('td'); c1.appendChild(sw); c1.appendChild(document.createTextNode(r[1]));
      var c2 = document.createElement('td'); c2.textContent = num(r[2], 1);
      tr.appendChild(c0); tr.appendChild(c1); tr.appendChild(c2);
      tbody.appendChild(tr);
      if (r[0] === 'coordinator' && sum > 0 && r[2] > 0) {
        var w = r[2] / sum * 1000;
        var rect = el('rect', { x: x, y: 4, width: Math.max(0.5, w), height: 26, fill: PHASE_COLORS[i % PHASE_COLORS.length], 'data-phase': r[1] });
        rect.appendChild(el('title', {}, r[1] + ': ' + num(r[2], 1) + ' ms'));
        bar.appendChild(rect);
        x += w;
      }
    });
    if (rows.length === 0) bar.appendChild(el('text', { x: 500, y: 22, 'text-anchor': 'middle', class: 'empty' }, 'no step yet'));
  }

  function cell(tr, text, cls) {
    var td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }

  function renderWorkers(workers, now) {
    var tbody = $('workers').tBodies[0];
    clear(tbody);
    var alive = 0;
    workers.forEach(function (w) {
      if (w.alive) alive++;
      var tr = document.createElement('tr');
      tr.setAttribute('data-worker', w.id);
      cell(tr, w.id + (w.pid !== null ? ' (pid ' + w.pid + ')' : ''));
      cell(tr, w.backend || '–');
      cell(tr, ago(w.lastHeartbeatAt, now), w.alive ? '' : 'gone');
      cell(tr, ago(w.lastContributionAt, now));
      cell(tr, String(w.steps));
      cell(tr, num(w.samplesPerSecond, 2));
      tbody.appendChild(tr);
    });
    if (workers.length === 0) {
      var tr = document.createElement('tr');
      var td = document.createElement('td');
      td.colSpan = 6; td.className = 'empty'; td.textContent = 'no worker seen yet';
      tr.appendChild(td); tbody.appendChild(tr);
    }
    setText('workers-count', alive + ' active of ' + workers.length + ' seen');
    return alive;
  }

  function renderJobs(j, checkpoint, now) {
    var reasons = Object.keys(j.rejectedByReason).map(function (k) { return k + ' ' + j.rejectedByReason[k]; }).join(', ');
    setText('jobs-rejected', String(j.rejected) + (reasons ? ' (' + reasons + ')' : ''));
    setText('jobs-retried', String(j.retried));
    setText('jobs-backups', j.backups + ' (' + j.backupsWon + ')');
    setText('jobs-duplicates', String(j.duplicates));
    setText('jobs-recoveries', String(j.recoveries));
    setText('checkpoint', checkpoint ? 'step ' + checkpoint.step + ', ' + ago(checkpoint.at, now) : 'none yet');
    var tbody = $('rejects').tBodies[0];
    clear(tbody);
    j.recentRejects.forEach(function (r) {
      var tr = document.createElement('tr');
      cell(tr, ago(r.at, now));
      cell(tr, r.step === null ? '–' : String(r.step));
      cell(tr, r.reason);
      cell(tr, r.workerId || '–');
      cell(tr, r.message);
      tbody.appendChild(tr);
    });
    if (j.recentRejects.length === 0) {
      var tr = document.createElement('tr');
      var td = document.createElement('td');
      td.colSpan = 5; td.className = 'empty'; td.textContent = 'none';
      tr.appendChild(td); tbody.appendChild(tr);
    }
  }

  function renderGrid(image, grid) {
    var img = $('grid');
    if (!image.available) {
      img.hidden = true; $('grid-empty').hidden = false; setText('grid-caption', '');
      return;
    }
    if (image.version !== s.gridVersion) {
      s.gridVersion = image.version;
      img.src = 'run/grid.png?v=' + image.version;
    }
    img.hidden = false; $('grid-empty').hidden = true;
    setText('grid-caption', grid ? 'after step ' + grid.step : '');
  }

  function render(doc) {
    var now = doc.now;
    var p = doc.progress, latest = doc.latest, run = doc.run;
    setText('run-id', run.runId || '');
    document.title = 'M3AE ' + (run.runId || 'run') + ' · step ' + p.completedSteps;
    var alive = renderWorkers(doc.workers, now);
    var phase = doc.state.phase;
    var badge = $('phase');
    badge.className = 'phase phase-' + phase;
    badge.setAttribute('data-phase', phase);
    var label = PHASE_LABELS[phase] || phase;
    if (phase === 'waiting') label = alive > 0 ? 'starting (' + alive + ' worker' + (alive === 1 ? '' : 's') + ')' : 'waiting for workers';
    setText('phase', label);
    var msg = $('phase-message');
    var message = doc.state.message;
    if (phase === 'waiting' && !message) message = alive > 0 ? 'Workers are connected; the first step is being computed.' : 'No worker has reported yet. Start workers with: m3ae worker --config FILE';
    msg.hidden = !message;
    msg.className = 'message' + (phase === 'failed' ? ' failed' : '');
    if (message) setText('phase-message', message);

    setText('step', p.totalSteps !== null ? p.completedSteps + ' / ' + p.totalSteps : String(p.completedSteps));
    $('progress-fill').style.width = (p.totalSteps ? Math.min(100, 100 * p.completedSteps / p.totalSteps) : 0) + '%';
    setText('eta', phase === 'training' || phase === 'waiting' ? duration(p.etaSeconds) : phase);
    setText('elapsed', duration(p.elapsedSeconds));
    setText('samples-per-second', num(p.samplesPerSecond, 2));
    setText('tokens-per-second', num(p.tokensPerSecond, 1));
    setText('seconds-per-step', num(p.secondsPerStep, 3));
    setText('loss-total', latest ? num(latest.loss.total) : '–');
    setText('loss-parts', latest ? [latest.loss.mlm, latest.loss.mim, latest.loss.itm].map(function (v) { return num(v); }).join(' / ') : '–');
    setText('learning-rate', latest ? num(latest.learningRate) : '–');
    setText('gradient-norm', latest ? num(latest.gradientNorm) : '–');
    renderCharts();
    renderHeldOut(doc.evaluation);
    renderBreakdown(doc.breakdown);
    renderJobs(doc.jobs, doc.checkpoint, now);
    renderGrid(doc.image, doc.grid);
    var cfg = JSON.stringify(run.config, null, 2);
    if ($('config').textContent !== cfg) setText('config', cfg);
    setText('updated', new Date(now).toLocaleTimeString());
  }

  function merge(doc) {
    var ser = doc.series;
    if (ser.reset) s.kept = ser.points.slice();
    else Array.prototype.push.apply(s.kept, ser.points);
    s.generation = ser.generation;
    s.lastSeq = s.kept.length ? s.kept[s.kept.length - 1].seq : -1;
    // The newest step travels separately: the curves end at it even between kept (thinned) points.
    var latest = doc.latest;
    s.points = latest && (!s.kept.length || latest.seq > s.lastSeq) ? s.kept.concat([latest]) : s.kept;
  }

  function poll() {
    var url = 'run/state.json?since=' + s.lastSeq + '&generation=' + s.generation;
    fetch(url, { cache: 'no-store' }).then(function (r) {
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    }).then(function (doc) {
      s.lastOk = Date.now();
      merge(doc);
      var c = $('connection'); c.className = 'connection'; c.textContent = '';
      render(doc);
      var final = doc.state.phase === 'finished' || doc.state.phase === 'failed' || doc.state.phase === 'stopped';
      setTimeout(poll, final ? Math.max(POLL_MS, 5000) : POLL_MS);
    }).catch(function (err) {
      var c = $('connection');
      c.className = 'connection lost';
      c.textContent = 'no answer from the coordinator' + (s.lastOk ? ' since ' + new Date(s.lastOk).toLocaleTimeString() : '') + ' (' + err.message + ')';
      setTimeout(poll, Math.max(POLL_MS, 3000));
    });
  }

  poll();
})();
`;
