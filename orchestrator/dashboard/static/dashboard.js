/* The run dashboard page: polls the same-origin API and draws header, counters, charts, samples.
 *
 * Every ~2 s it fetches /api/status, /api/metrics?since=<last step> and /api/samples.
 * It asks again for the last step it has (not last + 1) because the loop merges the
 * trainer's and the orchestrator's numbers into the same step record at different
 * times; a re-fetched step replaces the old point. Model output is untrusted: all
 * text goes into the DOM through textContent, never innerHTML.
 * The control bar POSTs /api/pause|resume|stop with the bearer token typed into it
 * (kept in sessionStorage for this tab only) and shows the server's answer.
 * `window.dashboard` exposes the charts and poll state for tests and debugging.
 */
'use strict';

(function () {
  const POLL_MS = 2000;
  const SAMPLE_LIMIT = 50;
  const C = { blue: '#58a6ff', green: '#3fb950', orange: '#f0883e', purple: '#bc8cff', red: '#f85149',
    yellow: '#d29922', teal: '#39c5cf', pink: '#f778ba', grey: '#8b949e' };
  const EVAL_COLORS = [C.yellow, C.pink, C.teal, C.grey];

  /* One entry per chart panel: values keys of StepRecord drawn as lines. */
  const CHARTS = [
    { name: 'reward', title: 'Reward and accuracy', note: '(eval scores as points)',
      series: [['reward_mean', 'reward mean', C.blue], ['accuracy', 'accuracy', C.green]], eval: true },
    { name: 'entropy', title: 'Entropy and repetition',
      series: [['entropy', 'entropy', C.purple], ['repetition', 'repetition', C.orange]] },
    { name: 'lag', title: 'Policy lag', note: '(per step)', bars: true,
      series: [['lag_mean', 'mean lag', C.teal], ['lag_max', 'max lag', C.red]] },
    { name: 'throughput', title: 'Throughput', note: '(tokens/s)',
      series: [['generation_tokens_per_s', 'generation', C.blue], ['training_tokens_per_s', 'training', C.orange]] },
    { name: 'clip', title: 'Clip fractions', note: '(share of valid tokens)',
      series: [['clipfrac_upper', 'upper', C.blue], ['clipfrac_lower', 'lower', C.orange],
        ['dualclip_frac_pos', 'dual A>0', C.green], ['dualclip_frac_neg', 'dual A<0', C.red]] },
    { name: 'is', title: 'IS weights: A>0 vs A<0 tokens', note: '(ASPO flips the ratio for A>0)',
      series: [['is_weight_pos_mean', 'weight A>0', C.green], ['is_weight_neg_mean', 'weight A<0', C.red],
        ['is_ratio_pos_mean', 'ratio A>0', C.teal], ['is_ratio_neg_mean', 'ratio A<0', C.pink]] },
    { name: 'kl', title: 'KL', note: '(k3 to reference; to behaviour policy)',
      series: [['kl_ref', 'KL ref', C.purple], ['kl_behaviour', 'KL behaviour', C.orange]] },
    { name: 'grad', title: 'Gradient norm and loss',
      series: [['grad_norm', 'grad norm', C.yellow], ['loss', 'loss', C.blue]] },
    { name: 'length', title: 'Response length', note: '(tokens)',
      series: [['response_length', 'mean length', C.teal]] },
  ];

  const COUNTERS = [
    ['samples_generated', 'generated', (s) => s.samples_generated],
    ['samples_trained', 'trained', (s) => s.samples_trained],
    ['samples_dropped_stale', 'dropped stale', (s) => s.samples_dropped_stale],
    ['samples_filtered', 'filtered (zero var.)', (s) => s.samples_filtered],
    ['reward_failures', 'reward failures', (s) => s.reward_failures],
    ['rollout_stream', 'queue: rollouts', (s) => s.queues.rollout_stream],
    ['in_flight_samples', 'in flight', (s) => s.queues.in_flight_samples],
    ['dead_letters', 'dead letters', (s) => s.queues.dead_letters],
    ['generation_tokens_per_s', 'gen tok/s', (s) => fmt(s.generation_tokens_per_s)],
    ['training_tokens_per_s', 'train tok/s', (s) => fmt(s.training_tokens_per_s)],
    ['trainer_idle_fraction', 'trainer idle', (s) => pct(s.trainer_idle_fraction)],
    ['inference_idle_fraction', 'inference idle', (s) => pct(s.inference_idle_fraction)],
    ['last_weight_sync_s', 'weight sync / pause', (s) => fmt(s.last_weight_sync_s) + ' / ' + fmt(s.last_weight_pause_s) + ' s'],
    ['lr', 'learning rate', () => (lastValues.lr === undefined ? '–' : lastValues.lr.toExponential(2))],
  ];

  const fmt = (v) => window.Charts.formatNumber(v);
  const pct = (v) => (100 * v).toFixed(1) + '%';
  const $ = (id) => document.getElementById(id);

  const charts = {};
  let lastStep = -1;
  let lastValues = {};
  let runId = null;
  const openSamples = new Set();
  const state = { charts, polls: 0, errors: 0, lastStep: -1, status: null, lastError: null, lastDrawMs: 0, lastPollMs: 0 };
  window.dashboard = state;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function buildPage() {
    const grid = $('charts');
    for (const spec of CHARTS) {
      const panel = el('section', 'panel');
      const h2 = el('h2', '', spec.title + ' ');
      if (spec.note) h2.appendChild(el('small', '', spec.note));
      panel.appendChild(h2);
      const canvas = el('canvas');
      canvas.id = 'chart-' + spec.name;
      panel.appendChild(canvas);
      const series = spec.series.map(([key, label, color]) => ({ key, label, color }));
      charts[spec.name] = new window.Charts.LineChart(canvas, { series });
      grid.appendChild(panel);
      if (spec.bars) grid.appendChild(lagHistogramPanel());
    }
    const counters = $('counters');
    for (const [id, label] of COUNTERS) {
      const box = el('div', 'counter');
      box.appendChild(el('div', 'label', label));
      const value = el('div', 'value', '–');
      value.id = 'counter-' + id;
      box.appendChild(value);
      counters.appendChild(box);
    }
    window.addEventListener('resize', drawAll);
  }

  function lagHistogramPanel() {
    const panel = el('section', 'panel');
    const h2 = el('h2', '', 'Lag histogram ');
    h2.appendChild(el('small', '', '(trained samples by realised lag, whole run)'));
    panel.appendChild(h2);
    const canvas = el('canvas');
    canvas.id = 'chart-lag_histogram';
    panel.appendChild(canvas);
    charts.lag_histogram = new window.Charts.BarChart(canvas, { color: C.teal, xLabel: 'lag (trainer step - policy version)' });
    return panel;
  }

  function drawAll() {
    const t0 = performance.now();
    for (const chart of Object.values(charts)) chart.draw();
    state.lastDrawMs = performance.now() - t0;
  }

  function resetData() {
    for (const chart of Object.values(charts)) {
      if (chart.clear) chart.clear(); else chart.setBars({});
    }
    lastStep = -1;
    lastValues = {};
  }

  function formatEta(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '–';
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    if (h) return h + 'h ' + String(m).padStart(2, '0') + 'm';
    return m + 'm ' + String(s % 60).padStart(2, '0') + 's';
  }

  /* Returns false when a different run now answers at this URL (its data was cleared). */
  function renderStatus(s) {
    const sameRun = runId === null || s.run_id === runId;
    if (!sameRun) resetData();
    runId = s.run_id;
    state.status = s;
    $('hdr-run-id').textContent = s.run_id;
    const badge = $('hdr-state');
    badge.textContent = s.state;
    badge.className = 'badge ' + s.state;
    $('hdr-loss').textContent = s.loss;
    $('hdr-policy-version').textContent = String(s.policy_version);
    $('hdr-step').textContent = String(s.trainer_step);
    $('hdr-total').textContent = String(s.total_steps);
    $('hdr-k').textContent = String(s.max_off_policy_steps);
    $('hdr-eta').textContent = formatEta(s.eta_s);
    $('hdr-updated').textContent = new Date(s.updated_at * 1000).toLocaleTimeString();
    $('hdr-progress').style.width = (s.total_steps > 0 ? Math.min(100, 100 * s.trainer_step / s.total_steps) : 0) + '%';
    $('hdr-message').textContent = s.message || '';
    for (const [id, , get] of COUNTERS) $('counter-' + id).textContent = String(get(s));
    updateControls(s);
    document.title = 'ASPO ' + s.run_id + ' · step ' + s.trainer_step + ' · ' + s.state;
    return sameRun;
  }

  function ingestMetrics(m) {
    const steps = m.steps || [];
    if (steps.length && lastStep >= 0 && steps[0].step < lastStep) resetData(); // the store restarted
    for (const rec of steps) {
      const values = rec.values || {};
      for (const spec of CHARTS) {
        for (const [key] of spec.series) if (key in values) charts[spec.name].setPoint(key, rec.step, values[key]);
      }
      if (rec.eval) {
        Object.keys(rec.eval).sort().forEach((name) => {
          const key = 'eval:' + name;
          const colour = EVAL_COLORS[charts.reward.series.filter((s) => s.kind === 'points').length % EVAL_COLORS.length];
          charts.reward.ensureSeries({ key, label: 'eval ' + name, color: colour, kind: 'points' });
          charts.reward.setPoint(key, rec.step, rec.eval[name]);
        });
      }
      Object.assign(lastValues, values);
      lastStep = Math.max(lastStep, rec.step);
    }
    charts.lag_histogram.setBars(m.lag_histogram_total);
    state.lastStep = lastStep;
  }

  function sampleRow(s) {
    const tr = el('tr');
    const prompt = el('td', 'prompt', truncate(s.prompt, 140));
    prompt.title = s.prompt;
    tr.appendChild(prompt);
    const cell = el('td', 'completion');
    const details = el('details');
    details.appendChild(el('summary', '', truncate(s.completion, 200)));
    details.appendChild(el('pre', '', s.completion));
    details.open = openSamples.has(s.rollout_id);
    details.addEventListener('toggle', () => {
      if (details.open) openSamples.add(s.rollout_id); else openSamples.delete(s.rollout_id);
    });
    cell.appendChild(details);
    tr.appendChild(cell);
    tr.appendChild(el('td', 'num ' + (s.reward > 0 ? 'pos' : ''), fmt(s.reward)));
    tr.appendChild(el('td', 'num ' + (s.advantage > 0 ? 'pos' : s.advantage < 0 ? 'neg' : ''), fmt(s.advantage)));
    tr.appendChild(el('td', 'num', s.policy_version));
    tr.appendChild(el('td', 'num', s.lag === null || s.lag === undefined ? '–' : s.lag));
    return tr;
  }

  function truncate(text, n) {
    const t = String(text);
    return t.length > n ? t.slice(0, n) + '…' : t;
  }

  function renderSamples(samples) {
    const body = $('samples-body');
    const rows = samples.map(sampleRow);
    body.replaceChildren(...rows);
  }

  async function getJSON(path) {
    const response = await fetch(path, { cache: 'no-store', headers: { Accept: 'application/json' } });
    if (!response.ok) throw new Error(path + ': HTTP ' + response.status);
    return response.json();
  }

  /* Run control: buttons enabled while the run can still act on them. */
  const TOKEN_KEY = 'aspo-dashboard-token';
  const ACTIONS = ['pause', 'resume', 'stop'];
  let controlBusy = false;

  function updateControls(s) {
    const live = s && (s.state === 'starting' || s.state === 'running');
    for (const action of ACTIONS) $('ctl-' + action).disabled = controlBusy || !live;
  }

  function showControlResult(ok, text) {
    const out = $('ctl-result');
    out.className = 'ctl-result ' + (ok ? 'ok' : 'bad');
    out.textContent = text;
  }

  async function control(action) {
    if (action === 'stop' && !window.confirm('Stop this run? It drains, saves a checkpoint and finishes.')) return;
    const token = $('ctl-token').value.trim();
    try { sessionStorage.setItem(TOKEN_KEY, token); } catch (e) { /* storage disabled: keep it in the field */ }
    controlBusy = true;
    updateControls(state.status);
    try {
      const headers = { Accept: 'application/json' };
      if (token) headers.Authorization = 'Bearer ' + token;
      const response = await fetch('/api/' + action, { method: 'POST', cache: 'no-store', headers });
      let detail = '';
      try { detail = (await response.json()).detail || ''; } catch (e) { /* not JSON */ }
      if (response.ok) showControlResult(true, action + ': requested');
      else showControlResult(false, action + ' refused (HTTP ' + response.status + ')' + (detail ? ': ' + detail : ''));
    } catch (err) {
      showControlResult(false, action + ' failed: ' + (err.message || String(err)));
    } finally {
      controlBusy = false;
      updateControls(state.status);
    }
  }

  function buildControls() {
    try { $('ctl-token').value = sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { /* storage disabled */ }
    for (const action of ACTIONS) $('ctl-' + action).addEventListener('click', () => control(action));
    updateControls(null);
  }

  function setConnection(ok, detail) {
    const conn = $('hdr-conn');
    conn.className = 'conn ' + (ok ? 'ok' : 'lost');
    conn.textContent = ok ? 'live' : 'connection lost: ' + detail;
  }

  async function poll() {
    if (document.hidden && state.polls > 0) { setTimeout(poll, POLL_MS); return; } // background tab: no load
    const t0 = performance.now();
    try {
      const since = Math.max(0, lastStep);
      const [status, metrics, samples] = await Promise.all([
        getJSON('/api/status'), getJSON('/api/metrics?since=' + since), getJSON('/api/samples?limit=' + SAMPLE_LIMIT),
      ]);
      if (renderStatus(status)) ingestMetrics(metrics);
      renderSamples(samples);
      drawAll();
      setConnection(true);
      state.lastPollMs = performance.now() - t0;
    } catch (err) {
      state.errors += 1;
      state.lastError = String(err);
      setConnection(false, err.message || String(err));
    } finally {
      state.polls += 1;
      setTimeout(poll, POLL_MS);
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    buildPage();
    buildControls();
    drawAll();
    poll();
  });
})();
