// Floe's web dashboard: polls the REST API (the routes any client uses,
// shaped like Flink's) and renders the list of the endpoint's jobs and, for
// the job selected there (a cluster's JobManager serves many), the job
// graph with live rates and back pressure, the checkpoint history, the
// exception history and the configuration; its buttons trigger savepoints,
// stop and cancel that job through the same API. Plain DOM, no framework, nothing
// loaded from elsewhere. Text from the job (names, messages, paths) is
// only ever set as text, never parsed as HTML.
'use strict';

(() => {
  // ---- Theme: applied before the body renders (this script loads in <head>).
  const THEMES = ['auto', 'light', 'dark'];
  const themeTitles = { auto: 'Theme: follows the system', light: 'Theme: light', dark: 'Theme: dark' };
  const themeIcons = { auto: '◐', light: '☀', dark: '☾' };
  function storedTheme() {
    try { return localStorage.getItem('floe.theme') || 'auto'; } catch (_) { return 'auto'; }
  }
  function applyTheme(mode) {
    if (mode === 'auto') delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = mode;
    const button = document.getElementById('theme-toggle');
    if (button) {
      button.title = themeTitles[mode];
      button.textContent = themeIcons[mode];
      button.dataset.mode = mode;
    }
  }
  applyTheme(storedTheme());

  const POLL_MS = 1000;
  const SLOW_POLL_MS = 3000;
  const NO_WATERMARK = -9.2e18; // Long.MIN_VALUE, as Flink reports "none"
  const CHART_KEEP = 60;
  const NODE_W = 236;
  const NODE_H = 168;
  const COL_GAP = 124;
  const ROW_GAP = 26;
  const TERMINAL = new Set(['FINISHED', 'FAILED', 'CANCELED']);

  const state = {
    token: readToken(),
    jobId: null, // the job shown: picked in the list, kept in the URL's #job=<id>
    autoTargetDir: null, // the savepoint directory filled in from the job's configuration
    status: null,
    plan: null,
    nodes: new Map(), // vertex id -> element
    checkpoints: new Map(), // id -> history entry
    expanded: new Set(), // expanded checkpoint ids
    latestCompleted: null,
    configLoaded: false,
    tick: 0,
    busyAction: false,
  };

  function readToken() {
    try { return sessionStorage.getItem('floe.token'); } catch (_) { return null; }
  }

  // ---- DOM helpers
  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('data-')) e.setAttribute(k, String(v));
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const SVG_NS = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'text') e.textContent = v;
      else e.setAttribute(k, String(v));
    }
    for (const c of children) if (c) e.append(c);
    return e;
  }
  function setText(node, text) {
    const t = String(text);
    if (node && node.textContent !== t) node.textContent = t;
  }

  // ---- Formatting
  function fmtNumber(n) {
    if (!Number.isFinite(n)) return '—';
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(a >= 1e10 ? 1 : 2) + 'G';
    if (a >= 1e6) return (n / 1e6).toFixed(a >= 1e7 ? 1 : 2) + 'M';
    if (a >= 1e4) return (n / 1e3).toFixed(1) + 'k';
    if (a >= 100 || Number.isInteger(n)) return String(Math.round(n));
    return n.toFixed(1);
  }
  function fmtRate(n) { return Number.isFinite(n) ? fmtNumber(n) + '/s' : '—'; }
  function fmtBytes(b) {
    if (!Number.isFinite(b) || b < 0) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return (i === 0 ? String(Math.round(b)) : b.toFixed(b >= 100 ? 0 : 1)) + ' ' + units[i];
  }
  function fmtDuration(ms) {
    if (!Number.isFinite(ms) || ms < 0) return '—';
    if (ms < 1000) return Math.round(ms) + ' ms';
    const s = ms / 1000;
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + 'm ' + Math.floor(s % 60) + 's';
    const h = Math.floor(m / 60);
    if (h < 48) return h + 'h ' + (m % 60) + 'm';
    return Math.floor(h / 24) + 'd ' + (h % 24) + 'h';
  }
  function pad(n, w = 2) { return String(n).padStart(w, '0'); }
  function fmtTime(ms) {
    if (!Number.isFinite(ms) || ms <= 0) return '—';
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function fmtDateTime(ms) {
    if (!Number.isFinite(ms) || ms <= 0) return '—';
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${fmtTime(ms)}`;
  }
  function fmtWatermark(wm) {
    if (!Number.isFinite(wm) || wm <= NO_WATERMARK) return 'none';
    const d = new Date(wm);
    if (Number.isNaN(d.getTime()) || wm > 8.64e15) return String(wm);
    const lag = Date.now() - wm;
    const time = `${fmtTime(wm)}.${pad(d.getMilliseconds(), 3)}`;
    // Event time close to the clock: how far behind it is says more.
    return Math.abs(lag) < 864e5 ? `${time} (−${fmtDuration(Math.max(lag, 0))})` : fmtDateTime(wm);
  }
  function pct(msPerSecond) {
    return Number.isFinite(msPerSecond) ? Math.max(0, Math.min(100, msPerSecond / 10)) : 0;
  }

  // ---- HTTP
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  async function api(path, options = {}) {
    const headers = { Accept: 'application/json' };
    if (options.body !== undefined) headers['Content-Type'] = 'application/json';
    if (state.token) headers.Authorization = 'Bearer ' + state.token;
    let response;
    try {
      response = await fetch(path, {
        method: options.method || 'GET',
        headers,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        cache: 'no-store',
      });
    } catch (e) {
      throw new ApiError(0, 'the job\'s REST endpoint is unreachable');
    }
    const text = await response.text();
    let body = null;
    if (text) { try { body = JSON.parse(text); } catch (_) { body = text; } }
    if (response.status === 401) showTokenBar();
    if (!response.ok) {
      const message = body && Array.isArray(body.errors) ? body.errors.join('; ') : `HTTP ${response.status}`;
      throw new ApiError(response.status, message);
    }
    return body;
  }
  async function apiText(path) {
    const headers = {};
    if (state.token) headers.Authorization = 'Bearer ' + state.token;
    const response = await fetch(path, { headers, cache: 'no-store' });
    if (!response.ok) throw new ApiError(response.status, `HTTP ${response.status}`);
    return response.text();
  }
  const jobPath = (suffix = '') => `/jobs/${state.jobId}${suffix}`;

  function showTokenBar() {
    $('token-bar').hidden = false;
  }

  function setConnection(live, message) {
    const c = $('connection');
    c.dataset.state = live ? 'live' : 'lost';
    setText(c, message);
  }

  // ---- Job list, selection and header
  function hashJobId() {
    const m = /^#job=([0-9a-f]{32})$/.exec(window.location.hash);
    return m ? m[1] : null;
  }

  // The job to show: the one in the URL, else the one shown, else the
  // first that still runs, else the one listed last (the newest).
  function pickJob(jobs) {
    const listed = (id) => id && jobs.find((j) => j.jid === id);
    return listed(hashJobId()) || listed(state.jobId)
      || jobs.find((j) => !TERMINAL.has(j.state)) || jobs[jobs.length - 1] || null;
  }

  // Forgets everything shown of the previous job, so nothing of it is
  // mixed into the next one's panels.
  function resetJobView() {
    state.plan = null;
    state.nodes = new Map();
    state.checkpoints = new Map();
    state.expanded = new Set();
    state.latestCompleted = null;
    state.configLoaded = false;
    $('graph').replaceChildren(el('p', { class: 'muted', text: 'Loading the plan…' }));
    $('checkpoint-counts').replaceChildren();
    $('checkpoint-failure').hidden = true;
    $('checkpoint-in-progress').hidden = true;
    $('checkpoint-in-progress').replaceChildren();
    $('checkpoint-history').tBodies[0].replaceChildren(
      el('tr', { class: 'empty' }, el('td', { colspan: 9, text: 'No checkpoint has ended yet.' })));
    renderChart();
    $('exceptions').replaceChildren(el('p', { class: 'muted', text: 'No failure so far.' }));
    $('exec-config').replaceChildren();
    $('config-table').tBodies[0].replaceChildren();
    for (const id of ['tile-uptime', 'tile-restarts', 'tile-checkpoints', 'tile-last-checkpoint']) setText($(id), '—');
    const input = $('target-dir');
    if (input.value === state.autoTargetDir) input.value = '';
    state.autoTargetDir = null;
    showResult('idle');
  }

  function selectJob(jobId) {
    if (jobId === state.jobId) return;
    if (state.jobId !== null) resetJobView();
    state.jobId = jobId;
  }

  function renderJobs(overview) {
    const table = $('jobs-table');
    const tbody = table.tBodies[0];
    // With more than one job, a row is a link to that job.
    table.classList.toggle('selectable', overview.jobs.length > 1);
    const rows = overview.jobs.map((job) => {
      const tr = el('tr', { 'data-job-id': job.jid, class: job.jid === state.jobId ? 'selected' : null },
        el('td', { class: 'job-name', text: job.name }),
        el('td', { class: 'mono', text: job.jid }),
        el('td', {}, el('span', { class: 'status', 'data-status': job.state, text: job.state })),
        el('td', { text: fmtDateTime(job['start-time']) }),
        el('td', { text: fmtDuration(job.duration) }),
        el('td', { class: 'num', text: job.tasks ? job.tasks.total : '—' }));
      tr.addEventListener('click', () => {
        if (overview.jobs.length < 2 || job.jid === state.jobId) return;
        window.location.hash = `job=${job.jid}`;
      });
      return tr;
    });
    tbody.replaceChildren(...rows);
  }

  function renderHeader(job) {
    setText($('job-name'), job.name);
    const status = $('job-status');
    status.dataset.status = job.state;
    setText(status, job.state);
    document.title = `${job.name} · ${job.state} · Floe`;
    const running = job.state === 'RUNNING';
    for (const id of ['btn-savepoint', 'btn-stop', 'btn-cancel']) {
      $(id).disabled = state.busyAction || !running;
    }
    // A restarting job can still be cancelled.
    if (job.state === 'RESTARTING') $('btn-cancel').disabled = state.busyAction;
  }

  // ---- Job graph
  function layout(nodes) {
    const byId = new Map(nodes.map((n) => [n.id, n]));
    const level = new Map();
    const depth = (n, seen = new Set()) => {
      if (level.has(n.id)) return level.get(n.id);
      if (seen.has(n.id)) return 0;
      seen.add(n.id);
      let d = 0;
      for (const input of n.inputs || []) {
        const src = byId.get(input.id);
        if (src) d = Math.max(d, depth(src, seen) + 1);
      }
      level.set(n.id, d);
      return d;
    };
    nodes.forEach((n) => depth(n));
    const columns = [];
    for (const n of nodes) {
      const l = level.get(n.id);
      (columns[l] = columns[l] || []).push(n);
    }
    const tallest = Math.max(...columns.map((c) => c.length));
    const height = tallest * NODE_H + (tallest - 1) * ROW_GAP;
    const pos = new Map();
    columns.forEach((col, ci) => {
      const colHeight = col.length * NODE_H + (col.length - 1) * ROW_GAP;
      const top = (height - colHeight) / 2;
      col.forEach((n, ri) => pos.set(n.id, { x: ci * (NODE_W + COL_GAP), y: top + ri * (NODE_H + ROW_GAP) }));
    });
    const width = columns.length * NODE_W + (columns.length - 1) * COL_GAP;
    return { pos, width, height };
  }

  function buildGraph(plan) {
    const nodes = plan.nodes;
    const { pos, width, height } = layout(nodes);
    const margin = 14;
    const canvas = el('div', { class: 'graph-canvas' });
    canvas.style.width = `${width + 2 * margin}px`;
    canvas.style.height = `${height + 2 * margin}px`;
    const edges = svg('svg', { class: 'graph-edges', width: width + 2 * margin, height: height + 2 * margin });
    const defs = svg('defs', {}, svg('marker', {
      id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse',
    }, svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrow' })));
    edges.append(defs);
    canvas.append(edges);
    state.nodes.clear();
    for (const n of nodes) {
      const p = pos.get(n.id);
      const stat = (name, label) => [el('dt', { text: label }), el('dd', { 'data-stat': name, text: '—' })];
      const box = el('div', {
        class: 'node', 'data-vertex': n.id, 'data-backpressure-level': 'ok', 'data-busy-level': 'idle',
        title: `${n.description} (uid ${n.id})`,
      },
      el('div', { class: 'node-head' },
        el('span', { class: 'node-name', text: n.description }),
        el('span', { class: 'node-par', text: `×${n.parallelism}` }),
        el('span', { class: 'node-badge', hidden: true })),
      el('div', { class: 'node-meter', title: 'busy | back-pressured | idle' },
        el('span', { class: 'm-busy' }), el('span', { class: 'm-bp' })),
      el('dl', { class: 'node-stats' },
        ...stat('in-rate', 'Records in'),
        ...stat('out-rate', 'Records out'),
        ...stat('watermark', 'Watermark'),
        ...stat('state', 'State'),
        ...stat('busy', 'Busy'),
        ...stat('backpressure', 'Back-pressured')));
      box.style.left = `${p.x + margin}px`;
      box.style.top = `${p.y + margin}px`;
      box.style.width = `${NODE_W}px`;
      box.style.height = `${NODE_H}px`;
      canvas.append(box);
      state.nodes.set(n.id, box);
    }
    for (const n of nodes) {
      const inputs = n.inputs || [];
      inputs.forEach((input, i) => {
        const from = pos.get(input.id);
        const to = pos.get(n.id);
        if (!from || !to) return;
        const x1 = from.x + NODE_W + margin;
        const y1 = from.y + NODE_H / 2 + margin;
        const x2 = to.x + margin - 2;
        const spread = inputs.length > 1 ? (i - (inputs.length - 1) / 2) * 22 : 0;
        const y2 = to.y + NODE_H / 2 + margin + spread;
        const dx = Math.max(30, (x2 - x1) / 2);
        const label = input.side_output ? `${input.ship_strategy} · ${input.side_output}` : input.ship_strategy;
        const g = svg('g', { class: 'edge', 'data-from': input.id, 'data-to': n.id, 'data-ship-strategy': input.ship_strategy });
        g.append(svg('path', {
          d: `M ${x1} ${y1} C ${x1 + dx} ${y1}, ${x2 - dx} ${y2}, ${x2} ${y2}`,
          class: input.side_output ? 'side-output' : '',
          'marker-end': 'url(#arrow)',
        }));
        const mx = (x1 + x2) / 2;
        const my = (y1 + y2) / 2;
        const w = label.length * 6.6 + 12;
        g.append(svg('g', { class: 'edge-label' },
          svg('rect', { x: mx - w / 2, y: my - 9, width: w, height: 18, rx: 4 }),
          svg('text', { x: mx, y: my + 3.5, 'text-anchor': 'middle', text: label })));
        edges.append(g);
      });
    }
    $('graph').replaceChildren(canvas);
  }

  function aggValue(list, id, agg) {
    const m = (list || []).find((x) => x.id === id);
    return m && Number.isFinite(m[agg]) ? m[agg] : NaN;
  }

  function updateNode(id, metrics, backpressure) {
    const box = state.nodes.get(id);
    if (!box) return;
    const inRate = aggValue(metrics, 'numRecordsInPerSecond', 'sum');
    const outRate = aggValue(metrics, 'numRecordsOutPerSecond', 'sum');
    const inTotal = aggValue(metrics, 'numRecordsIn', 'sum');
    const busy = aggValue(metrics, 'busyTimeMsPerSecond', 'max');
    const bp = aggValue(metrics, 'backPressuredTimeMsPerSecond', 'max');
    const wm = aggValue(metrics, 'currentOutputWatermark', 'min');
    const q = (name) => box.querySelector(`[data-stat="${name}"]`);
    setText(q('in-rate'), fmtRate(inRate));
    setText(q('out-rate'), fmtRate(outRate));
    setText(q('watermark'), fmtWatermark(wm));
    setText(q('busy'), Number.isFinite(busy) ? `${Math.round(pct(busy))} %` : '—');
    setText(q('backpressure'), Number.isFinite(bp) ? `${Math.round(pct(bp))} %` : '—');
    const sizes = state.latestCompleted && state.latestCompleted.tasks;
    const size = sizes && sizes[id] ? sizes[id].state_size : null;
    setText(q('state'), size === null ? (state.latestCompleted ? 'none' : 'no checkpoint') : fmtBytes(size));
    box.dataset.recordsIn = Number.isFinite(inTotal) ? String(inTotal) : '';
    box.dataset.recordsInRate = Number.isFinite(inRate) ? String(inRate) : '';
    box.dataset.recordsOutRate = Number.isFinite(outRate) ? String(outRate) : '';
    box.dataset.busyMsPerSecond = Number.isFinite(busy) ? String(busy) : '';
    box.dataset.backpressuredMsPerSecond = Number.isFinite(bp) ? String(bp) : '';
    const busyPct = pct(busy);
    const bpPct = pct(bp);
    box.style.setProperty('--busy-pct', String(busyPct));
    box.style.setProperty('--bp-pct', String(bpPct));
    box.querySelector('.m-busy').style.width = `${busyPct}%`;
    box.querySelector('.m-bp').style.width = `${bpPct}%`;
    // Levels as Flink's: back pressure by the REST route's level (worst
    // subtask), busy by the busiest subtask.
    const bpLevel = backpressure && backpressure.backpressureLevel ? backpressure.backpressureLevel : 'ok';
    const busyLevel = busyPct > 50 ? 'high' : busyPct > 10 ? 'low' : 'idle';
    box.dataset.backpressureLevel = bpLevel;
    box.dataset.busyLevel = busyLevel;
    box.classList.toggle('bp-high', bpLevel === 'high');
    box.classList.toggle('bp-low', bpLevel === 'low');
    box.classList.toggle('bp-ok', bpLevel === 'ok');
    box.classList.toggle('busy-high', busyLevel === 'high');
    const badge = box.querySelector('.node-badge');
    badge.hidden = bpLevel === 'ok';
    setText(badge, bpLevel === 'high' ? 'BACKPRESSURE HIGH' : 'BACKPRESSURE LOW');
  }

  const VERTEX_METRICS = [
    'numRecordsIn', 'numRecordsInPerSecond', 'numRecordsOutPerSecond', 'busyTimeMsPerSecond',
    'backPressuredTimeMsPerSecond', 'currentOutputWatermark',
  ].join(',');

  async function refreshVertices() {
    if (!state.plan) return;
    await Promise.all(state.plan.nodes.map(async (n) => {
      const vid = encodeURIComponent(n.id);
      const [metrics, backpressure] = await Promise.all([
        api(jobPath(`/vertices/${vid}/subtasks/metrics?get=${VERTEX_METRICS}&agg=sum,max,min`)),
        api(jobPath(`/vertices/${vid}/backpressure`)),
      ]);
      updateNode(n.id, metrics, backpressure);
    }));
  }

  // ---- Checkpoints
  function renderCheckpoints(cp) {
    const counts = cp.counts;
    const countItems = [
      ['Completed', counts.completed], ['Failed', counts.failed], ['In progress', counts.in_progress],
      ['Restored', counts.restored],
    ].map(([label, v]) => el('span', {}, `${label} `, el('b', { text: v })));
    $('checkpoint-counts').replaceChildren(...countItems);
    // Entries in flight are replaced by what this answer says about them.
    for (const [id, c] of state.checkpoints) if (c.status === 'IN_PROGRESS') state.checkpoints.delete(id);
    for (const entry of cp.history) state.checkpoints.set(entry.id, entry);
    const ids = [...state.checkpoints.keys()].sort((a, b) => a - b);
    while (ids.length > CHART_KEEP) state.checkpoints.delete(ids.shift());
    state.latestCompleted = cp.latest.completed;

    const failed = cp.latest.failed;
    const failure = $('checkpoint-failure');
    if (failed) {
      failure.hidden = false;
      failure.replaceChildren(el('b', { text: `Last failure: checkpoint ${failed.id}` }),
        ` at ${fmtDateTime(failed.failure_timestamp)}: `, el('span', { class: 'cause', text: failed.failure_message || 'unknown cause' }));
    } else {
      failure.hidden = true;
    }

    const last = cp.latest.completed;
    setText($('tile-checkpoints'), `${counts.completed} ok · ${counts.failed} failed`);
    setText($('tile-last-checkpoint'), last ? `${fmtDuration(last.end_to_end_duration)} · ${fmtBytes(last.state_size)}` : '—');

    renderInProgress(cp.history.filter((c) => c.status === 'IN_PROGRESS'));
    renderHistoryTable();
    renderChart();
  }

  // Checkpoints in flight: which operators have acknowledged, subtask by
  // subtask count, so a checkpoint that hangs shows where it hangs.
  function renderInProgress(running) {
    const box = $('checkpoint-in-progress');
    box.hidden = running.length === 0;
    box.replaceChildren(...running.sort((a, b) => a.id - b.id).map((c) => {
      const ops = Object.entries(c.tasks || {}).map(([uid, t]) => {
        const done = t.num_acknowledged_subtasks === t.num_subtasks;
        const pct = t.num_subtasks ? (100 * t.num_acknowledged_subtasks) / t.num_subtasks : 0;
        // CSSOM, not a style attribute: the page's CSP forbids inline styles.
        const fill = el('span', {});
        fill.style.width = `${pct}%`;
        return el('li', { class: `ack${done ? ' done' : ''}`, 'data-operator': uid },
          el('span', { class: 'mono', text: nodeName(uid) }),
          el('span', { class: 'ack-bar' }, fill),
          el('span', { class: 'num ack-count', text: `${t.num_acknowledged_subtasks}/${t.num_subtasks}` }));
      });
      const kind = c.is_savepoint ? 'Savepoint' : 'Checkpoint';
      return el('div', { class: 'in-progress', 'data-checkpoint-id': c.id },
        el('div', { class: 'in-progress-head' },
          el('b', { text: `${kind} ${c.id} in progress` }),
          el('span', { class: 'muted', text: ` · for ${fmtDuration(Math.max(0, Date.now() - c.trigger_timestamp))} · ${c.num_acknowledged_subtasks} of ${c.num_subtasks} subtasks acknowledged` })),
        el('ul', { class: 'acks' }, ...ops));
    }));
  }

  // An operator's display name from the plan, else its uid.
  function nodeName(uid) {
    const node = (state.plan?.nodes || []).find((n) => n.id === uid);
    return node ? `${node.description} (${uid})` : uid;
  }

  function renderHistoryTable() {
    const tbody = $('checkpoint-history').tBodies[0];
    const entries = [...state.checkpoints.values()].sort((a, b) => b.id - a.id).slice(0, 20);
    if (entries.length === 0) return;
    const rows = [];
    for (const c of entries) {
      const ok = c.status === 'COMPLETED';
      const running = c.status === 'IN_PROGRESS';
      const badge = ok ? 'ok' : (running ? 'info' : 'bad');
      const waiting = c.num_subtasks - c.num_acknowledged_subtasks;
      const note = ok ? (c.external_path || '(in JobManager memory)')
        : (running ? `waiting for ${waiting} subtask${waiting === 1 ? '' : 's'}` : (c.failure_message || ''));
      const duration = running ? Math.max(0, Date.now() - c.trigger_timestamp) : c.end_to_end_duration;
      const tr = el('tr', { class: 'expandable', 'data-checkpoint-id': c.id, 'data-status': c.status, title: 'Show per-operator detail' },
        el('td', { class: 'num', text: c.id }),
        el('td', {}, el('span', { class: `badge ${badge}`, text: c.status })),
        el('td', { text: c.is_savepoint ? 'Savepoint' : (c.unaligned ? 'Checkpoint (unaligned)' : 'Checkpoint') }),
        el('td', { text: fmtTime(c.trigger_timestamp) }),
        el('td', { class: 'num', text: fmtDuration(duration) }),
        el('td', { class: 'num', text: ok ? fmtBytes(c.checkpointed_size) : '—' }),
        el('td', { class: 'num', text: ok ? fmtBytes(c.state_size) : '—' }),
        el('td', { class: 'num', text: `${c.num_acknowledged_subtasks}/${c.num_subtasks}` }),
        el('td', { class: 'path', text: note }));
      tr.addEventListener('click', () => {
        if (state.expanded.has(c.id)) state.expanded.delete(c.id); else state.expanded.add(c.id);
        renderHistoryTable();
      });
      rows.push(tr);
      if (state.expanded.has(c.id)) rows.push(detailsRow(c));
    }
    tbody.replaceChildren(...rows);
  }

  function detailsRow(c) {
    const ops = Object.entries(c.tasks || {}).map(([uid, t]) => el('tr', { 'data-operator': uid },
      el('td', { class: 'mono', text: nodeName(uid) }),
      el('td', { class: 'num', text: `${t.num_acknowledged_subtasks}/${t.num_subtasks}` }),
      el('td', { class: 'num', text: fmtBytes(t.state_size) }),
      el('td', { class: 'num', text: fmtDuration(t.alignment_duration || 0) }),
      el('td', { class: 'num', text: t.latest_ack_timestamp ? fmtDuration(t.end_to_end_duration) : '—' })));
    const table = el('table', { class: 'table' },
      el('thead', {}, el('tr', {}, el('th', { text: 'Operator' }), el('th', { class: 'num', text: 'Acknowledged' }),
        el('th', { class: 'num', text: 'State size' }), el('th', { class: 'num', text: 'Longest alignment' }),
        el('th', { class: 'num', text: 'Last acknowledgement after' }))),
      el('tbody', {}, ...(ops.length ? ops : [el('tr', {}, el('td', { colspan: 5, class: 'muted', text: 'No operators.' }))])));
    const facts = el('dl', { class: 'kv' },
      el('dt', { text: 'Acknowledged subtasks' }), el('dd', { text: `${c.num_acknowledged_subtasks} of ${c.num_subtasks}` }),
      el('dt', { text: 'Sync / async part' }), el('dd', { text: `${fmtDuration(c.sync_duration)} / ${fmtDuration(c.async_duration)}` }),
      el('dt', { text: 'Alignment' }), el('dd', { text: fmtDuration(c.alignment_duration) }),
      el('dt', { text: 'In-flight data persisted' }), el('dd', { text: fmtBytes(c.persisted_data) }));
    return el('tr', { class: 'details', 'data-details-for': c.id }, el('td', { colspan: 9 }, facts, table));
  }

  function renderChart() {
    const chart = $('checkpoint-chart');
    const width = Math.max(320, Math.round(chart.getBoundingClientRect().width) || 800);
    const height = 190;
    chart.setAttribute('viewBox', `0 0 ${width} ${height}`);
    // Only ended checkpoints have a duration to draw.
    const entries = [...state.checkpoints.values()].filter((c) => c.status !== 'IN_PROGRESS').sort((a, b) => a.id - b.id);
    const parts = [];
    const left = 56;
    const right = 64;
    const top = 22;
    const bottom = 24;
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    parts.push(svg('text', { x: left, y: 13, class: 'legend-text' }, svg('tspan', { class: 'legend-duration', text: '■ ' }), svg('tspan', { text: 'duration' })));
    parts.push(svg('text', { x: left + 90, y: 13, class: 'legend-text' }, svg('tspan', { class: 'legend-size', text: '● ' }), svg('tspan', { text: 'state size' })));
    if (entries.length === 0) {
      parts.push(svg('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle', class: 'empty-text', text: 'Checkpoints appear here as they complete.' }));
      chart.replaceChildren(...parts);
      return;
    }
    const maxDur = Math.max(1, ...entries.map((c) => c.end_to_end_duration));
    const okSizes = entries.filter((c) => c.status === 'COMPLETED').map((c) => c.state_size);
    const maxSize = Math.max(1, ...okSizes);
    for (let i = 0; i <= 4; i++) {
      const y = top + plotH - (plotH * i) / 4;
      parts.push(svg('line', { x1: left, x2: left + plotW, y1: y, y2: y, class: i === 0 ? 'axis' : 'grid' }));
      parts.push(svg('text', { x: left - 6, y: y + 3.5, 'text-anchor': 'end', class: 'tick', text: fmtDuration((maxDur * i) / 4) }));
      parts.push(svg('text', { x: left + plotW + 6, y: y + 3.5, class: 'tick', text: fmtBytes((maxSize * i) / 4) }));
    }
    const slot = plotW / entries.length;
    const barW = Math.max(2, Math.min(28, slot * 0.6));
    const points = [];
    entries.forEach((c, i) => {
      const cx = left + slot * (i + 0.5);
      const ok = c.status === 'COMPLETED';
      const h = ok ? Math.max(1.5, (c.end_to_end_duration / maxDur) * plotH) : plotH;
      const bar = svg('rect', {
        x: cx - barW / 2, y: top + plotH - h, width: barW, height: h,
        class: `bar${c.is_savepoint ? ' savepoint' : ''}${ok ? '' : ' failed'}`, 'data-checkpoint-id': c.id,
      });
      bar.append(svg('title', { text: `#${c.id} ${c.status} · ${fmtDuration(c.end_to_end_duration)}${ok ? ' · ' + fmtBytes(c.state_size) : ''}` }));
      parts.push(bar);
      if (ok) points.push([cx, top + plotH - (c.state_size / maxSize) * plotH, c]);
      if (entries.length <= 30 || i % Math.ceil(entries.length / 30) === 0) {
        parts.push(svg('text', { x: cx, y: height - 8, 'text-anchor': 'middle', class: 'tick', text: c.id }));
      }
    });
    if (points.length > 1) {
      parts.push(svg('path', { class: 'size-line', d: points.map(([x, y], i) => `${i ? 'L' : 'M'} ${x} ${y}`).join(' ') }));
    }
    for (const [x, y, c] of points) {
      const dot = svg('circle', { cx: x, cy: y, r: 3, class: 'size-dot' });
      dot.append(svg('title', { text: `#${c.id} · ${fmtBytes(c.state_size)}` }));
      parts.push(dot);
    }
    chart.replaceChildren(...parts);
  }

  // ---- Exceptions
  function renderExceptions(body) {
    const entries = body.exceptionHistory.entries;
    const box = $('exceptions');
    if (entries.length === 0) {
      box.replaceChildren(el('p', { class: 'muted', text: 'No failure so far.' }));
      return;
    }
    const open = new Set([...box.querySelectorAll('details[open]')].map((d) => d.dataset.key));
    const items = entries.map((e) => {
      const key = `${e.timestamp}-${e.taskName}`;
      const first = (e.stacktrace || '').split('\n')[0];
      return el('details', { class: 'exception', 'data-key': key, open: open.has(key) },
        el('summary', {},
          el('span', { class: 'muted', text: fmtDateTime(e.timestamp) }),
          el('span', { class: 'ex-task', text: e.taskName }),
          el('span', { class: 'badge warn', text: e.exceptionName }),
          el('span', { class: `badge ${e.restarted ? 'info' : 'bad'}`, text: e.restarted ? 'restarted' : 'failed the job' }),
          el('span', { class: 'ex-first', text: first })),
        el('pre', { text: e.stacktrace }));
    });
    if (body.exceptionHistory.truncated) items.push(el('p', { class: 'muted', text: 'Older failures were dropped.' }));
    box.replaceChildren(...items);
  }

  // ---- Configuration
  async function loadConfig() {
    const [jobConfig, entries] = await Promise.all([api(jobPath('/config')), api(jobPath('/jobmanager/config'))]);
    const ec = jobConfig['execution-config'];
    const kv = [
      ['Execution mode', ec['execution-mode']], ['Default parallelism', ec['job-parallelism']],
      ['Restart strategy', ec['restart-strategy']], ['Object reuse', ec['object-reuse-mode'] ? 'on' : 'off'],
    ];
    $('exec-config').replaceChildren(...kv.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
    const rows = entries.map((e) => el('tr', { 'data-key': e.key }, el('td', { text: e.key }), el('td', { text: e.value })));
    $('config-table').tBodies[0].replaceChildren(...(rows.length ? rows
      : [el('tr', { class: 'empty' }, el('td', { colspan: 2, text: 'Only defaults: no key was set.' }))]));
    applyConfigFilter();
    const dir = entries.find((e) => e.key === 'state.savepoints.dir');
    const input = $('target-dir');
    if (dir && !input.value) {
      input.value = dir.value;
      state.autoTargetDir = dir.value;
    }
    state.configLoaded = true;
  }
  function applyConfigFilter() {
    const f = $('config-filter').value.trim().toLowerCase();
    for (const tr of $('config-table').tBodies[0].rows) {
      if (tr.dataset.key) tr.hidden = f !== '' && !tr.dataset.key.toLowerCase().includes(f);
    }
  }

  // ---- Process metrics from the Prometheus text
  function promValue(text, name) {
    const re = new RegExp(`^${name}(?:\\{[^}]*\\})?\\s+(\\S+)`, 'm');
    const m = re.exec(text);
    return m ? Number(m[1]) : NaN;
  }
  async function refreshProcess() {
    const text = await apiText('/metrics');
    const rss = promValue(text, 'floe_jobmanager_Status_Process_Memory_RSS');
    const cpuNs = promValue(text, 'floe_jobmanager_Status_Process_CPU_Time');
    const now = performance.now();
    setText($('tile-rss'), fmtBytes(rss));
    if (state.lastCpu && Number.isFinite(cpuNs)) {
      const cores = (cpuNs - state.lastCpu.ns) / 1e6 / (now - state.lastCpu.at);
      setText($('tile-cpu'), `${(cores * 100).toFixed(0)} % of a core`);
    }
    state.lastCpu = { ns: cpuNs, at: now };
  }

  // ---- Actions
  function showResult(stateName, ...content) {
    const box = $('action-result');
    box.dataset.state = stateName;
    box.replaceChildren(...content);
  }

  function armConfirm(button, question) {
    if (button.classList.contains('confirming')) return true;
    button.classList.add('confirming');
    button.textContent = question;
    clearTimeout(button._confirmTimer);
    button._confirmTimer = setTimeout(() => disarm(button), 5000);
    return false;
  }
  function disarm(button) {
    clearTimeout(button._confirmTimer);
    button.classList.remove('confirming');
    button.textContent = button.dataset.label;
  }

  function targetDirectory() {
    const v = $('target-dir').value.trim();
    return v === '' ? null : v;
  }

  // Polls the trigger's status at `path` (its job's route, whichever job is
  // shown meanwhile) until it completes; reports only while its job is shown.
  async function awaitTrigger(kind, path, triggerId) {
    const jobId = state.jobId;
    const started = Date.now();
    for (;;) {
      const body = await api(`${path}/savepoints/${encodeURIComponent(triggerId)}`);
      if (state.jobId !== jobId) return;
      if (body.status.id === 'COMPLETED') {
        const op = body.operation || {};
        if (op.location) {
          showResult('completed', `${kind} completed (${fmtDuration(Date.now() - started)}):`,
            el('code', { id: 'savepoint-path', text: op.location }));
        } else {
          const cause = op['failure-cause'] ? op['failure-cause']['stack-trace'] : 'unknown cause';
          showResult('failed', `${kind} failed: `, el('span', { id: 'action-error', text: cause }));
        }
        return;
      }
      showResult('in-progress', `${kind} in progress… ${fmtDuration(Date.now() - started)}`);
      await new Promise((r) => setTimeout(r, 400));
    }
  }

  async function runAction(fn) {
    if (state.busyAction) return;
    state.busyAction = true;
    for (const id of ['btn-savepoint', 'btn-stop', 'btn-cancel']) $(id).disabled = true;
    try {
      await fn();
    } catch (e) {
      showResult('failed', el('span', { id: 'action-error', text: e.message }));
    } finally {
      state.busyAction = false;
      poll(true);
    }
  }

  function wireActions() {
    $('btn-savepoint').addEventListener('click', () => runAction(async () => {
      showResult('in-progress', 'Triggering a savepoint…');
      const path = jobPath();
      const body = await api(`${path}/savepoints`, {
        method: 'POST', body: { 'target-directory': targetDirectory(), 'cancel-job': false },
      });
      await awaitTrigger('Savepoint', path, body['request-id']);
    }));
    $('btn-stop').addEventListener('click', () => {
      const button = $('btn-stop');
      if (!armConfirm(button, 'Stop the job? Click again')) return;
      disarm(button);
      runAction(async () => {
        showResult('in-progress', 'Stopping with a savepoint…');
        const path = jobPath();
        const body = await api(`${path}/stop`, {
          method: 'POST', body: { targetDirectory: targetDirectory(), drain: false },
        });
        await awaitTrigger('Stop with savepoint', path, body['request-id']);
      });
    });
    $('btn-cancel').addEventListener('click', () => {
      const button = $('btn-cancel');
      if (!armConfirm(button, 'Cancel the job? Click again')) return;
      disarm(button);
      runAction(async () => {
        await api(jobPath('?mode=cancel'), { method: 'PATCH' });
        showResult('cancelling', 'Cancellation requested.');
      });
    });
    $('theme-toggle').addEventListener('click', () => {
      const next = THEMES[(THEMES.indexOf(storedTheme()) + 1) % THEMES.length];
      try { localStorage.setItem('floe.theme', next); } catch (_) { /* private mode */ }
      applyTheme(next);
    });
    $('config-filter').addEventListener('input', applyConfigFilter);
    // A job picked in the list (or a #job=<id> link): shown from the next poll.
    window.addEventListener('hashchange', () => poll(true));
    $('token-bar').addEventListener('submit', (ev) => {
      ev.preventDefault();
      state.token = $('token-input').value.trim() || null;
      try {
        if (state.token) sessionStorage.setItem('floe.token', state.token);
        else sessionStorage.removeItem('floe.token');
      } catch (_) { /* storage unavailable */ }
      $('token-bar').hidden = true;
      poll(true);
    });
    let resizeTimer = null;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(renderChart, 150);
    });
  }

  // ---- Polling
  let timer = null;
  let polling = false;
  async function poll(soon) {
    if (soon) {
      clearTimeout(timer);
      timer = setTimeout(poll, 50);
      return;
    }
    if (polling) return;
    polling = true;
    let delay = POLL_MS;
    try {
      const overview = await api('/jobs/overview');
      const job = pickJob(overview.jobs);
      if (job) selectJob(job.jid);
      renderJobs(overview);
      if (!job) {
        // A cluster's endpoint before its first job.
        setText($('job-name'), 'No job yet');
        setConnection(true, 'live');
        document.body.dataset.ready = 'true';
        return;
      }
      state.status = job.state;
      renderHeader(job);
      if (!state.plan) {
        const body = await api(jobPath('/plan'));
        state.plan = body.plan;
        buildGraph(state.plan);
      }
      const tasks = [
        api(jobPath('/checkpoints')).then(renderCheckpoints),
        api(jobPath('/exceptions')).then(renderExceptions),
        api(jobPath('/metrics?get=uptime,numRestarts')).then((list) => {
          const v = Object.fromEntries(list.map((m) => [m.id, Number(m.value)]));
          setText($('tile-uptime'), TERMINAL.has(state.status) ? 'ended' : fmtDuration(v.uptime));
          setText($('tile-restarts'), fmtNumber(v.numRestarts));
        }),
      ];
      if (!state.configLoaded) tasks.push(loadConfig());
      if (state.tick % 3 === 0) tasks.push(refreshProcess().catch(() => {}));
      await Promise.all(tasks);
      // Checkpoint sizes first, so the boxes show the latest state size.
      await refreshVertices();
      setConnection(true, TERMINAL.has(job.state) ? `job ${job.state.toLowerCase()}` : 'live');
      document.body.dataset.ready = 'true';
      if (TERMINAL.has(job.state)) delay = SLOW_POLL_MS;
    } catch (e) {
      setConnection(false, e.status === 401 ? 'token required' : (e.status === 0 ? 'endpoint unreachable (job ended?)' : e.message));
      delay = SLOW_POLL_MS;
    } finally {
      state.tick++;
      polling = false;
      clearTimeout(timer);
      timer = setTimeout(poll, delay);
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    applyTheme(storedTheme());
    wireActions();
    poll();
  });
})();
