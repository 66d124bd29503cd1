/* Small hand-written canvas charts for the run dashboard: no dependencies, no build step.
 *
 * LineChart: several series (lines, or points for sparse ones such as eval scores)
 * sharing one x axis (trainer step) and one y axis, with ticks, a legend and a hover
 * readout. Long series are drawn min/max-decimated per pixel column so spikes stay
 * visible. BarChart: one bar per category (the lag histogram). Both cope with no data
 * and with a single point. Labels are drawn with fillText, never parsed as markup.
 */
'use strict';

(function (global) {
  const THEME = { bg: '#161b22', grid: '#30363d', axis: '#8b949e', text: '#c9d1d9' };
  const PAD = { left: 58, right: 14, top: 26, bottom: 26 };
  const FONT = '11px system-ui, sans-serif';

  function formatNumber(v) {
    if (!Number.isFinite(v)) return '–';
    const a = Math.abs(v);
    if (a === 0) return '0';
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + 'M';
    if (a >= 1e4) return (v / 1e3).toFixed(a >= 1e5 ? 0 : 1) + 'k';
    if (a >= 100) return v.toFixed(0);
    if (a >= 1) return v.toFixed(2).replace(/\.?0+$/, '');
    if (a >= 1e-3) return v.toPrecision(2).replace(/\.?0+$/, '');
    return v.toExponential(1);
  }

  /* About `count` round tick values covering [min, max]. */
  function niceTicks(min, max, count) {
    const span = max - min;
    if (!(span > 0)) return [min];
    const raw = span / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const ticks = [];
    for (let t = Math.ceil(min / step) * step; t <= max + step * 1e-9; t += step) {
      ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t);
    }
    return ticks;
  }

  /* Padded [lo, hi] so a flat series or a single point still gets a readable axis. */
  function paddedRange(lo, hi) {
    if (lo === hi) {
      const d = Math.abs(lo) * 0.1 || 1;
      return [lo - d, hi + d];
    }
    const d = (hi - lo) * 0.06;
    return [lo - d, hi + d];
  }

  /* Size the backing store to the CSS box times devicePixelRatio; returns a context in CSS pixels. */
  function prepare(canvas) {
    const dpr = global.devicePixelRatio || 1;
    const w = Math.max(50, canvas.clientWidth || canvas.width);
    const h = Math.max(50, canvas.clientHeight || canvas.height);
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = THEME.bg;
    ctx.fillRect(0, 0, w, h);
    ctx.font = FONT;
    return { ctx, w, h };
  }

  function drawEmpty(ctx, w, h, text) {
    ctx.fillStyle = THEME.axis;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText(text, w / 2, h / 2);
  }

  function drawLegend(ctx, w, entries) {
    let x = w - PAD.right;
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    for (let i = entries.length - 1; i >= 0; i--) {
      const e = entries[i];
      ctx.fillStyle = THEME.text;
      ctx.fillText(e.label, x, 11);
      x -= ctx.measureText(e.label).width + 6;
      ctx.fillStyle = e.color;
      ctx.fillRect(x - 10, 8, 10, 6);
      x -= 22;
    }
  }

  function drawYAxis(ctx, w, h, yMin, yMax, toY) {
    ctx.strokeStyle = THEME.grid;
    ctx.lineWidth = 1;
    ctx.fillStyle = THEME.axis;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (const t of niceTicks(yMin, yMax, Math.max(2, Math.floor((h - PAD.top - PAD.bottom) / 40)))) {
      const y = Math.round(toY(t)) + 0.5;
      ctx.beginPath(); ctx.moveTo(PAD.left, y); ctx.lineTo(w - PAD.right, y); ctx.stroke();
      ctx.fillText(formatNumber(t), PAD.left - 6, y);
    }
  }

  function drawXAxis(ctx, w, h, xMin, xMax, toX, integer) {
    ctx.strokeStyle = THEME.axis;
    ctx.beginPath(); ctx.moveTo(PAD.left, h - PAD.bottom + 0.5); ctx.lineTo(w - PAD.right, h - PAD.bottom + 0.5); ctx.stroke();
    ctx.fillStyle = THEME.axis;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    let ticks = niceTicks(xMin, xMax, Math.max(2, Math.floor((w - PAD.left - PAD.right) / 70)));
    if (integer) ticks = ticks.filter((t) => Number.isInteger(t));
    for (const t of ticks) {
      const x = Math.round(toX(t)) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, h - PAD.bottom); ctx.lineTo(x, h - PAD.bottom + 4); ctx.stroke();
      ctx.fillText(formatNumber(t), x, h - PAD.bottom + 6);
    }
  }

  /* Points to draw for one line: all of them, or per pixel column the first, min, max and last. */
  function decimate(points, toX) {
    if (points.length <= 2000) return points;
    const out = [];
    let col = null, bucket = [];
    const flush = () => {
      if (!bucket.length) return;
      let lo = bucket[0], hi = bucket[0];
      for (const p of bucket) { if (p.y < lo.y) lo = p; if (p.y > hi.y) hi = p; }
      const keep = [bucket[0], lo, hi, bucket[bucket.length - 1]].sort((a, b) => a.x - b.x);
      for (const p of keep) if (out[out.length - 1] !== p) out.push(p);
    };
    for (const p of points) {
      const c = Math.floor(toX(p.x));
      if (c !== col) { flush(); bucket = []; col = c; }
      bucket.push(p);
    }
    flush();
    return out;
  }

  class LineChart {
    /* options: {series: [{key, label, color, kind: 'line'|'points'}], maxPoints, emptyText} */
    constructor(canvas, options) {
      this.canvas = canvas;
      this.series = [];
      this.data = new Map();
      this.maxPoints = options.maxPoints || 50000;
      this.emptyText = options.emptyText || 'waiting for data';
      this.hoverX = null;
      for (const s of options.series || []) this.ensureSeries(s);
      canvas.addEventListener('mousemove', (ev) => this._hover(ev));
      canvas.addEventListener('mouseleave', () => { this.hoverX = null; hideTooltip(); this.draw(); });
    }

    ensureSeries(spec) {
      if (!this.data.has(spec.key)) {
        this.series.push(Object.assign({ kind: 'line' }, spec));
        this.data.set(spec.key, []);
      }
    }

    /* Append (or replace, when x equals the last x: a step whose values were merged later). */
    setPoint(key, x, y) {
      const arr = this.data.get(key);
      if (!arr || !Number.isFinite(x) || !Number.isFinite(y)) return;
      const last = arr[arr.length - 1];
      if (last && last.x === x) { last.y = y; return; }
      if (last && x < last.x) return; // out of order: the store only grows
      arr.push({ x, y });
      if (arr.length > this.maxPoints) arr.splice(0, arr.length - this.maxPoints);
    }

    clear() { for (const arr of this.data.values()) arr.length = 0; }

    /* Number of data points held (the test compares it with the API). */
    get points() { let n = 0; for (const arr of this.data.values()) n += arr.length; return n; }

    seriesPoints(key) { const arr = this.data.get(key); return arr ? arr.length : 0; }

    _bounds() {
      let xMin = Infinity, xMax = -Infinity, yMin = Infinity, yMax = -Infinity;
      for (const arr of this.data.values()) {
        for (const p of arr) {
          if (p.x < xMin) xMin = p.x; if (p.x > xMax) xMax = p.x;
          if (p.y < yMin) yMin = p.y; if (p.y > yMax) yMax = p.y;
        }
      }
      return { xMin, xMax, yMin, yMax };
    }

    draw() {
      const { ctx, w, h } = prepare(this.canvas);
      if (this.points === 0) { drawEmpty(ctx, w, h, this.emptyText); this._geometry = null; return; }
      const b = this._bounds();
      const [xMin, xMax] = b.xMin === b.xMax ? [b.xMin - 1, b.xMax + 1] : [b.xMin, b.xMax];
      const [yMin, yMax] = paddedRange(b.yMin, b.yMax);
      const pw = w - PAD.left - PAD.right, ph = h - PAD.top - PAD.bottom;
      const toX = (x) => PAD.left + ((x - xMin) / (xMax - xMin)) * pw;
      const toY = (y) => PAD.top + (1 - (y - yMin) / (yMax - yMin)) * ph;
      this._geometry = { toX, xMin, xMax, pw };
      drawYAxis(ctx, w, h, yMin, yMax, toY);
      drawXAxis(ctx, w, h, xMin, xMax, toX, true);
      if (this.hoverX !== null) {
        ctx.strokeStyle = THEME.axis;
        ctx.beginPath(); ctx.moveTo(toX(this.hoverX) + 0.5, PAD.top); ctx.lineTo(toX(this.hoverX) + 0.5, h - PAD.bottom); ctx.stroke();
      }
      const legend = [];
      for (const s of this.series) {
        const arr = this.data.get(s.key);
        if (!arr.length) continue;
        legend.push(s);
        ctx.strokeStyle = s.color;
        ctx.fillStyle = s.color;
        if (s.kind === 'points' || arr.length === 1) {
          for (const p of arr) { ctx.beginPath(); ctx.arc(toX(p.x), toY(p.y), 3.5, 0, 2 * Math.PI); ctx.fill(); }
          continue;
        }
        ctx.lineWidth = 2;
        ctx.lineJoin = 'round';
        ctx.beginPath();
        decimate(arr, toX).forEach((p, i) => (i ? ctx.lineTo(toX(p.x), toY(p.y)) : ctx.moveTo(toX(p.x), toY(p.y))));
        ctx.stroke();
      }
      drawLegend(ctx, w, legend);
    }

    _hover(ev) {
      const g = this._geometry;
      if (!g) return;
      const rect = this.canvas.getBoundingClientRect();
      const x = g.xMin + ((ev.clientX - rect.left - PAD.left) / g.pw) * (g.xMax - g.xMin);
      let best = null;
      for (const arr of this.data.values()) {
        for (const p of arr) if (best === null || Math.abs(p.x - x) < Math.abs(best - x)) best = p.x;
      }
      if (best === null) return;
      const lines = ['step ' + best];
      for (const s of this.series) {
        const p = this.data.get(s.key).find((q) => q.x === best);
        if (p) lines.push(s.label + ': ' + formatNumber(p.y));
      }
      this.hoverX = best;
      this.draw();
      showTooltip(ev.clientX, ev.clientY, lines.join('\n'));
    }
  }

  class BarChart {
    /* options: {color, xLabel, emptyText} ; bars are set whole with setBars({category: value}). */
    constructor(canvas, options) {
      this.canvas = canvas;
      this.color = options.color;
      this.xLabel = options.xLabel || '';
      this.emptyText = options.emptyText || 'waiting for data';
      this.bars = [];
    }

    setBars(mapping) {
      this.bars = Object.entries(mapping || {})
        .map(([k, v]) => ({ key: Number(k), value: Number(v) }))
        .filter((b) => Number.isFinite(b.key) && Number.isFinite(b.value))
        .sort((a, b) => a.key - b.key);
    }

    get points() { return this.bars.length; }

    draw() {
      const { ctx, w, h } = prepare(this.canvas);
      if (!this.bars.length) { drawEmpty(ctx, w, h, this.emptyText); return; }
      const yMax = Math.max(1, ...this.bars.map((b) => b.value)) * 1.08;
      const pw = w - PAD.left - PAD.right, ph = h - PAD.top - PAD.bottom;
      const toY = (y) => PAD.top + (1 - y / yMax) * ph;
      drawYAxis(ctx, w, h, 0, yMax, toY);
      const slot = pw / this.bars.length;
      const total = this.bars.reduce((a, b) => a + b.value, 0);
      ctx.textAlign = 'center';
      this.bars.forEach((b, i) => {
        const x = PAD.left + i * slot;
        ctx.fillStyle = this.color;
        ctx.fillRect(x + slot * 0.15, toY(b.value), slot * 0.7, PAD.top + ph - toY(b.value));
        ctx.fillStyle = THEME.axis;
        ctx.textBaseline = 'top';
        ctx.fillText(String(b.key), x + slot / 2, h - PAD.bottom + 6);
        ctx.fillStyle = THEME.text;
        ctx.textBaseline = 'bottom';
        ctx.fillText((100 * b.value / total).toFixed(1) + '%', x + slot / 2, toY(b.value) - 2);
      });
      ctx.strokeStyle = THEME.axis;
      ctx.beginPath(); ctx.moveTo(PAD.left, h - PAD.bottom + 0.5); ctx.lineTo(w - PAD.right, h - PAD.bottom + 0.5); ctx.stroke();
      ctx.fillStyle = THEME.text; ctx.textAlign = 'right'; ctx.textBaseline = 'middle';
      ctx.fillText(this.xLabel, w - PAD.right, 11);
    }
  }

  function showTooltip(x, y, text) {
    const tip = document.getElementById('tooltip');
    if (!tip) return;
    tip.textContent = text;
    tip.hidden = false;
    tip.style.left = (x + 14) + 'px';
    tip.style.top = (y + 14) + 'px';
  }

  function hideTooltip() {
    const tip = document.getElementById('tooltip');
    if (tip) tip.hidden = true;
  }

  global.Charts = { LineChart, BarChart, formatNumber, niceTicks, THEME, PAD };
})(window);
