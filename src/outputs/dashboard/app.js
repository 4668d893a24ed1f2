// driftscope dashboard: polls the JSON API and draws every chart as hand-made SVG.
// No dependencies, no build step; served from the binary by src/outputs/dashboard/mod.rs.
//
// Updates are in place: each chart is rendered to a string and the DOM is only touched
// when that string changes, so polling neither flickers nor resets hover state.
'use strict';

(() => {
  const POLL_MS = 3000;
  const REPORT_LIMIT = 120;
  const REQUEST_TIMEOUT_MS = 10000;
  const TOKEN_KEY = 'driftscope.apiToken';

  // Test metrics are decided on their p-value: drift when p < threshold.
  const P_VALUE_KEYS = { ks: 'ks_p_value', chi_square: 'chi_square_p_value' };
  const METRIC_NAMES = {
    wasserstein: 'Wasserstein distance',
    ks: 'KS test',
    psi: 'PSI',
    jensen_shannon: 'Jensen–Shannon',
    hellinger: 'Hellinger distance',
    kl_divergence: 'KL divergence',
    chi_square: 'χ² test',
    tvd: 'Total variation distance',
  };

  const $ = (id) => document.getElementById(id);
  const el = {
    apiStatus: $('api-status'),
    apiStatusText: $('api-status-text'),
    tokenForget: $('token-forget'),
    banner: $('banner'),
    tokenPanel: $('token-panel'),
    tokenForm: $('token-form'),
    tokenInput: $('token-input'),
    tokenMessage: $('token-message'),
    streamList: $('stream-list'),
    streamListEmpty: $('stream-list-empty'),
    placeholder: $('placeholder'),
    detail: $('stream-detail'),
    title: $('stream-title'),
    subtitle: $('stream-subtitle'),
    driftState: $('drift-state'),
    facts: $('facts'),
    datasetSub: $('dataset-sub'),
    datasetChart: $('dataset-chart'),
    featuresSub: $('features-sub'),
    featureGrid: $('feature-grid'),
    featureSelect: $('feature-select'),
    distributionSub: $('distribution-sub'),
    distributionChart: $('distribution-chart'),
    featureDetails: $('feature-details'),
    performancePanel: $('performance-panel'),
    performanceSub: $('performance-sub'),
    performanceChart: $('performance-chart'),
    performanceSelect: $('performance-select'),
    tooltip: $('tooltip'),
  };

  const state = {
    streams: null, // GET /api/v1/streams, null until the first answer
    selected: null, // stream name
    feature: new Map(), // stream -> selected feature
    perfMetric: new Map(), // stream -> selected performance metric
    reports: new Map(), // stream -> reports, oldest first
    dists: new Map(), // stream -> { data, tried }
    token: loadToken(),
    auth: null, // null | 'needed' | 'rejected'
    error: null, // message while the API is unreachable or failing
    lastOk: null, // Date of the last good poll
    timer: 0,
    inflight: false,
    again: false,
  };

  // ---------------------------------------------------------------- utilities

  function esc(value) {
    return String(value).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
  }

  function loadToken() {
    try {
      return window.localStorage.getItem(TOKEN_KEY) || null;
    } catch (_) {
      return null;
    }
  }

  function saveToken(token) {
    try {
      if (token) window.localStorage.setItem(TOKEN_KEY, token);
      else window.localStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // Storage disabled: the token lives for this page only.
    }
  }

  /** Sets innerHTML only when it changed: no flicker, no lost hover or focus. */
  function setHTML(node, html) {
    if (node._html !== html) {
      node.innerHTML = html;
      node._html = html;
    }
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function isNum(v) {
    return typeof v === 'number' && Number.isFinite(v);
  }

  function fmtNum(v, digits = 3) {
    if (!isNum(v)) return '–';
    if (v === 0) return '0';
    const a = Math.abs(v);
    if (a >= 10000) return Math.round(v).toLocaleString('en-US');
    if (a >= 0.001) return String(Number(v.toPrecision(digits)));
    return v.toExponential(1).replace('e-', 'e−');
  }

  function fmtPct(v) {
    if (!isNum(v)) return '–';
    const p = v * 100;
    if (p === 0) return '0%';
    if (Math.abs(p) < 0.1) return '<0.1%';
    return `${Math.abs(p) < 10 ? p.toFixed(1) : p.toFixed(0)}%`;
  }

  function fmtCount(v) {
    return isNum(v) ? v.toLocaleString('en-US') : '–';
  }

  function parseTime(s) {
    if (typeof s !== 'string' || !/^\d{4}-\d\d-\d\dT/.test(s)) return null;
    const t = Date.parse(s);
    return Number.isNaN(t) ? null : new Date(t);
  }

  const pad = (n) => String(n).padStart(2, '0');

  function fmtClock(d) {
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtDateTime(d) {
    const today = new Date();
    const sameDay = d.toDateString() === today.toDateString();
    const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    return sameDay ? fmtClock(d) : `${date} ${fmtClock(d)}`;
  }

  /** A window bound for display: local time when it is a timestamp, else as given. */
  function fmtBound(s) {
    const d = parseTime(s);
    return d ? fmtDateTime(d) : String(s ?? '–');
  }

  function fmtDuration(ms) {
    const s = Math.round(ms / 1000);
    if (s < 1) return `${Math.max(0, Math.round(ms))} ms`;
    if (s < 120) return `${s} s`;
    const m = Math.round(s / 60);
    if (m < 120) return `${m} min`;
    const h = Math.round(m / 60);
    if (h < 48) return `${h} h`;
    return `${Math.round(h / 24)} d`;
  }

  function fmtAgo(d) {
    const ms = Date.now() - d.getTime();
    if (ms < 5000) return 'just now';
    return `${fmtDuration(ms)} ago`;
  }

  function isPValueMetric(metric) {
    return Object.prototype.hasOwnProperty.call(P_VALUE_KEYS, metric);
  }

  /** The value a feature's verdict was decided on, or null when there is none. */
  function decisionValue(f) {
    if (!f || !f.scores) return null;
    const key = P_VALUE_KEYS[f.primary_metric] || f.primary_metric;
    const v = f.scores[key];
    return isNum(v) ? v : null;
  }

  /** Version 2 (`rule` significant_effect): significant at the window's size and at least the effect floor. */
  function isVersionTwo(f) {
    return f && f.rule === 'significant_effect' && isNum(f.alpha) && isNum(f.min_effect);
  }

  function ruleText(f) {
    if (isVersionTwo(f)) {
      const effect = f.primary_metric === 'chi_square' ? "Cramér's V" : f.primary_metric === 'ks' ? 'D' : 'score';
      return `drift if p < ${fmtNum(f.alpha)} and ${effect} ≥ ${fmtNum(f.min_effect)}`;
    }
    return isPValueMetric(f.primary_metric) ? `drift if p < ${fmtNum(f.threshold)}` : `drift if ≥ ${fmtNum(f.threshold)}`;
  }

  /** The version-2 verdict and the sequential detector of a feature, in words. */
  function verdictText(f) {
    const parts = [];
    if (isVersionTwo(f)) {
      const held = { both: 'both held', significance: 'significant, effect below the floor', effect: 'effect above the floor, not significant', neither: 'neither held' }[f.decided_by];
      parts.push(`p-value ${fmtNum(f.p_value, 3)} (α ${fmtNum(f.alpha, 3)}) · effect ${fmtNum(f.effect, 3)} (floor ${fmtNum(f.min_effect)})${held ? ` · ${held}` : ''}`);
    }
    if (f.sequential && isNum(f.sequential.log_statistic)) {
      const s = f.sequential;
      parts.push(`sequential log M ${fmtNum(s.log_statistic, 3)} of ${fmtNum(s.log_threshold, 3)}${s.alarm ? ' · ALARM' : ''}`);
    }
    return parts.join(' — ');
  }

  function metricTitle(metric) {
    const name = METRIC_NAMES[metric] || metric;
    return isPValueMetric(metric) ? `${name} p-value` : name;
  }

  function currentStream() {
    if (!state.streams) return null;
    return state.streams.find((s) => s.name === state.selected) || null;
  }

  // ---------------------------------------------------------------- API and polling

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, { allow404 = false } = {}) {
    const headers = { Accept: 'application/json' };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    let res;
    try {
      res = await fetch(path, { headers, cache: 'no-store', signal: controller.signal });
    } catch (_) {
      throw new ApiError(0, 'driftscope is not reachable');
    } finally {
      clearTimeout(timer);
    }
    if (res.status === 404 && allow404) return null;
    if (!res.ok) {
      let message = '';
      try {
        const body = await res.json();
        message = (body && body.error) || '';
      } catch (_) {
        // Not JSON: the status says enough.
      }
      throw new ApiError(res.status, message || `HTTP ${res.status}`);
    }
    try {
      return await res.json();
    } catch (_) {
      throw new ApiError(res.status, 'the API answered with something that is not JSON');
    }
  }

  function requestPoll() {
    if (state.inflight) {
      state.again = true;
      return;
    }
    clearTimeout(state.timer);
    poll();
  }

  async function poll() {
    if (state.auth) return; // Waiting for a token: polling again only after the form.
    state.inflight = true;
    try {
      const streams = await api('api/v1/streams');
      state.streams = Array.isArray(streams) ? streams : [];
      pickStream();
      const stream = currentStream();
      if (stream) await pollStream(stream.name);
      state.error = null;
      state.lastOk = new Date();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        state.auth = state.token ? 'rejected' : 'needed';
      } else if (e instanceof ApiError && e.status === 0) {
        state.error = `Cannot reach the driftscope API (${e.message}).`;
      } else {
        state.error = `The driftscope API answered with an error: ${e instanceof ApiError ? e.message : String(e)}.`;
      }
    } finally {
      state.inflight = false;
      render();
      clearTimeout(state.timer);
      if (!state.auth) state.timer = setTimeout(poll, state.again ? 0 : POLL_MS);
      state.again = false;
    }
  }

  async function pollStream(name) {
    const q = encodeURIComponent(name);
    const reports = await api(`api/v1/reports?stream=${q}&limit=${REPORT_LIMIT}`);
    state.reports.set(name, Array.isArray(reports) ? reports : []);
    const last = reports && reports[reports.length - 1];
    if (!last) return;
    // The distributions of the newest window; fetched again only when a window closed.
    const want = last.window && last.window.index;
    const cached = state.dists.get(name);
    const fresh = cached && (cached.data ? cached.data.window && cached.data.window.index === want : cached.tried === want);
    if (fresh) return;
    const data = await api(`api/v1/distributions/latest?stream=${q}`, { allow404: true });
    state.dists.set(name, { data, tried: want });
  }

  function pickStream() {
    const names = state.streams.map((s) => s.name);
    if (state.selected && names.includes(state.selected)) return;
    const fromHash = readHash().stream;
    state.selected = names.includes(fromHash) ? fromHash : names[0] || null;
  }

  function readHash() {
    const params = new URLSearchParams(window.location.hash.replace(/^#/, ''));
    return { stream: params.get('stream'), feature: params.get('feature') };
  }

  function writeHash() {
    const params = new URLSearchParams();
    if (state.selected) params.set('stream', state.selected);
    const feature = state.feature.get(state.selected);
    if (feature) params.set('feature', feature);
    const hash = `#${params.toString()}`;
    if (window.location.hash !== hash) window.history.replaceState(null, '', hash);
  }

  // ---------------------------------------------------------------- rendering

  function render() {
    renderStatus();
    renderToken();
    renderStreamList();
    renderStream();
  }

  function renderStatus() {
    let s;
    let text;
    if (state.auth) {
      s = 'auth';
      text = 'Token required';
    } else if (state.error) {
      s = 'down';
      text = 'API unavailable';
    } else if (state.lastOk) {
      s = 'live';
      text = `Live · updated ${fmtClock(state.lastOk)}`;
    } else {
      s = 'connecting';
      text = 'Connecting…';
    }
    if (el.apiStatus.dataset.state !== s) el.apiStatus.dataset.state = s;
    setText(el.apiStatusText, text);
    el.tokenForget.hidden = !state.token;

    if (state.error && !state.auth) {
      const since = state.lastOk ? ` Showing data from ${fmtClock(state.lastOk)}.` : '';
      setText(el.banner, `${state.error}${since} Retrying every ${POLL_MS / 1000} s…`);
      el.banner.hidden = false;
    } else {
      el.banner.hidden = true;
    }
  }

  function renderToken() {
    const show = !!state.auth;
    if (el.tokenPanel.hidden === show) {
      el.tokenPanel.hidden = !show;
      if (show) el.tokenInput.focus();
    }
    if (show) {
      setText(
        el.tokenMessage,
        state.auth === 'rejected'
          ? 'The API rejected the stored token. Enter the current one.'
          : 'This driftscope protects its API with a bearer token. Enter it to see the dashboard.',
      );
    }
  }

  function streamVerdict(latest) {
    if (!latest) return { cls: 'pending', text: 'No window yet' };
    if (latest.dataset && latest.dataset.drifted) return { cls: 'drift', text: 'Drift' };
    return { cls: 'ok', text: 'OK' };
  }

  function renderStreamList() {
    const streams = state.streams || [];
    el.streamListEmpty.hidden = !(state.streams && streams.length === 0);
    const existing = new Map();
    for (const li of Array.from(el.streamList.children)) existing.set(li.dataset.stream, li);
    streams.forEach((s, i) => {
      let li = existing.get(s.name);
      existing.delete(s.name);
      if (!li) {
        li = document.createElement('li');
        li.dataset.stream = s.name;
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'stream-item';
        button.dataset.stream = s.name;
        li.appendChild(button);
      }
      if (el.streamList.children[i] !== li) el.streamList.insertBefore(li, el.streamList.children[i] || null);
      const button = li.firstChild;
      const v = streamVerdict(s.latest);
      const selected = s.name === state.selected;
      if (selected) button.setAttribute('aria-current', 'true');
      else button.removeAttribute('aria-current');
      button.dataset.state = v.cls;
      const topics = Array.isArray(s.topics) ? s.topics.join(', ') : '';
      const share = s.latest && s.latest.dataset ? ` · share ${fmtPct(s.latest.dataset.drift_share)}` : '';
      setHTML(
        button,
        `<span class="stream-item-top"><span class="stream-name">${esc(s.name)}</span>` +
          `<span class="pill pill-${v.cls}">${esc(v.text)}</span></span>` +
          `<span class="stream-meta">${esc(fmtCount(s.windows_closed))} windows${esc(share)}</span>` +
          `<span class="stream-meta mono" title="${esc(topics)}">${esc(topics || '—')}</span>`,
      );
    });
    for (const li of existing.values()) li.remove();
  }

  function renderStream() {
    const stream = currentStream();
    if (!stream) {
      el.detail.hidden = true;
      el.placeholder.hidden = false;
      let text = 'Loading…';
      if (state.auth) text = 'Waiting for the API token.';
      else if (state.error && !state.streams) text = 'The driftscope API is not reachable yet. Retrying…';
      else if (state.streams) text = 'No streams are configured.';
      setText(el.placeholder, text);
      document.title = 'driftscope';
      return;
    }
    el.placeholder.hidden = true;
    el.detail.hidden = false;
    el.detail.dataset.stream = stream.name;

    const reports = state.reports.get(stream.name) || [];
    const latest = reports[reports.length - 1] || null;

    setText(el.title, stream.name);
    const topics = (stream.topics || []).map((t) => `<span class="chip mono">${esc(t)}</span>`).join('');
    setHTML(
      el.subtitle,
      `${topics}<span class="chip">${esc(stream.format || '')}</span>` +
        `<span class="muted">${esc(fmtCount(stream.windows_closed))} windows closed</span>`,
    );

    const loaded = state.reports.has(stream.name);
    renderVerdict(latest, loaded);
    if (loaded) {
      renderFacts(stream, latest, reports);
      renderDatasetChart(reports);
      renderPerformance(stream.name, reports);
      renderFeatures(stream.name, reports);
      renderDistribution(stream.name, latest);
    } else {
      // Just selected: keep the layout, say it is loading (never "no window yet").
      setHTML(el.facts, fact('Latest window', '…', ['loading']) + fact('Reference', '…', ['loading']) + fact('Drift share', '…', ['loading']) + fact('Windows closed', esc(fmtCount(stream.windows_closed)), ['']));
      emptyChart(el.datasetChart, 'Loading…');
      el.performancePanel.hidden = true;
      el.featureGrid.dataset.stream = '';
      setHTML(el.featureGrid, '<div class="chart-empty">Loading…</div>');
      renderFeatureSelect([], '');
      emptyChart(el.distributionChart, 'Loading…');
      setHTML(el.featureDetails, '');
    }

    const drifted = latest && latest.dataset && latest.dataset.drifted;
    document.title = `${drifted ? '⚠ Drift · ' : ''}${stream.name} · driftscope`;
  }

  function renderVerdict(latest, loaded) {
    let s;
    let html;
    if (!loaded) {
      s = 'pending';
      html = '<span class="verdict-icon" aria-hidden="true">…</span><span class="verdict-body"><strong class="verdict-title">Loading…</strong></span>';
    } else if (!latest) {
      s = 'pending';
      html =
        '<span class="verdict-icon" aria-hidden="true">…</span><span class="verdict-body">' +
        '<strong class="verdict-title">Waiting for the first window</strong>' +
        '<span class="verdict-text">No window has closed on this stream yet.</span></span>';
    } else {
      const d = latest.dataset || {};
      const drifted = !!d.drifted;
      s = drifted ? 'drift' : 'ok';
      const names = (latest.features || []).filter((f) => f.drifted).map((f) => f.name);
      const list = names.length
        ? `<span class="verdict-features">${names.map((n) => `<span class="chip chip-drift">${esc(n)}</span>`).join('')}</span>`
        : '';
      html =
        `<span class="verdict-icon" aria-hidden="true">${drifted ? '!' : '✓'}</span><span class="verdict-body">` +
        `<strong class="verdict-title">${drifted ? 'Drift detected' : 'No drift'}</strong>` +
        `<span class="verdict-text">${esc(fmtCount(d.features_drifted))} of ${esc(fmtCount(d.features_evaluated))} features drifted ` +
        `(${esc(fmtPct(d.drift_share))} ${drifted ? '≥' : '<'} threshold ${esc(fmtPct(d.threshold))}) in window #${esc(latest.window.index)}</span>` +
        `${list}</span>`;
    }
    if (el.driftState.dataset.state !== s) el.driftState.dataset.state = s;
    setHTML(el.driftState, html);
  }

  function fact(label, value, lines, extraClass = '') {
    return (
      `<div class="fact ${extraClass}"><div class="fact-label">${esc(label)}</div>` +
      `<div class="fact-value">${value}</div>` +
      lines.map((l) => `<div class="fact-line">${l}</div>`).join('') +
      '</div>'
    );
  }

  // Global mode (`stream.global`): which instance merges and scores the stream.
  function ownerLine(g) {
    if (!g) return '';
    if (!g.owner) return '<span class="warn-text">no owner now (the partials group is rebalancing)</span>';
    // Short enough for a fact card's line; the title says the rest.
    return g.owned_here
      ? `<span title="${esc(`This instance (${g.instance}) owns the stream: it merges every instance's partial windows and scores them.`)}">merged here (owner <span class="mono">${esc(g.owner)}</span>)</span>`
      : `<span title="${esc(`This instance (${g.instance}) publishes partial windows; ${g.owner} merges and scores them: its dashboard has the reports.`)}">merged by <span class="mono">${esc(g.owner)}</span>, the owner</span>`;
  }

  function renderFacts(stream, latest, reports) {
    const g = stream.global;
    if (!latest) {
      setHTML(
        el.facts,
        fact('Latest window', '—', [g && !g.owned_here ? ownerLine(g) : 'No window has closed yet.']) +
          fact('Reference', '—', ['Shown with the first window.']) +
          fact('Windows closed', esc(fmtCount(stream.windows_closed)), ['since driftscope started']),
      );
      return;
    }
    const w = latest.window || {};
    const start = parseTime(w.start);
    const end = parseTime(w.end);
    const span = start && end ? ` <span class="muted">(${esc(fmtDuration(end - start))})</span>` : '';
    const windowLines = [
      `<span class="mono">${esc(fmtBound(w.start))} → ${esc(fmtBound(w.end))}</span>${span}`,
      `${esc(fmtCount(w.records))} records${w.late_records ? ` · <span class="warn-text">${esc(fmtCount(w.late_records))} late</span>` : ''}`,
    ];
    const offsets = Array.isArray(w.offsets) ? w.offsets : [];
    if (offsets.length) {
      const title = offsets.map((o) => `${o.topic}[${o.partition}] ${o.first}–${o.last}`).join('\n');
      windowLines.push(`<span class="muted" title="${esc(title)}">${offsets.length} partition range${offsets.length > 1 ? 's' : ''}</span>`);
    }
    if (g) {
      // A merged window's offsets name every source partition that contributed.
      const partitions = [...new Set(offsets.map((o) => o.partition))].sort((a, b) => a - b);
      windowLines.push(ownerLine(g));
      if (partitions.length) windowLines.push(`<span class="muted">from partitions ${esc(partitions.join(', '))}</span>`);
    }

    const r = latest.reference || {};
    const taken = parseTime(r.created_at);
    const refLines = [
      taken
        ? `taken ${esc(fmtAgo(taken))} <span class="muted mono">${esc(fmtDateTime(taken))}</span>`
        : `taken <span class="mono">${esc(r.created_at || '–')}</span>`,
      `${esc(fmtCount(r.records))} records`,
    ];

    const d = latest.dataset || {};
    const driftCls = d.drifted ? 'fact-drift' : 'fact-ok';
    setHTML(
      el.facts,
      fact('Latest window', `#${esc(w.index)}`, windowLines) +
        fact('Reference', `<span class="mono ellipsis" title="${esc(r.source || '')}">${esc(r.source || '–')}</span>`, refLines, 'fact-wide') +
        fact('Drift share', esc(fmtPct(d.drift_share)), [
          `${esc(fmtCount(d.features_drifted))} of ${esc(fmtCount(d.features_evaluated))} features · threshold ${esc(fmtPct(d.threshold))}`,
        ], driftCls) +
        fact('Windows closed', esc(fmtCount(stream.windows_closed)), [`charts show the last ${esc(reports.length)}`]),
    );
  }

  // ---------------------------------------------------------------- charts

  const chartMeta = new WeakMap(); // chart container -> hover data

  /** Round tick values from 0 to at least `max`: about `count` steps of 1, 2, 2.5 or 5 × 10^k. */
  function niceTicks(max, count) {
    const raw = (max > 0 ? max : 1) / count;
    const exp = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * exp).find((st) => st >= raw * 0.999) || 10 * exp;
    const n = Math.max(1, Math.ceil(max / step - 1e-9));
    const ticks = [];
    for (let i = 0; i <= n; i += 1) ticks.push(Number((step * i).toPrecision(12)));
    return { top: step * n, ticks };
  }

  function linearScale(max, format) {
    const { top, ticks } = niceTicks(max, 3);
    return { frac: (v) => Math.min(1, Math.max(0, v / top)), ticks: ticks.map((v) => ({ v, label: format(v) })) };
  }

  function logScale(minPositive) {
    let lo = Math.floor(Math.log10(Math.max(minPositive, 1e-16)));
    lo = Math.min(lo, -1);
    const span = -lo;
    const step = span <= 4 ? 1 : span <= 8 ? 2 : span <= 12 ? 3 : 4;
    const ticks = [];
    for (let e = 0; e >= lo; e -= step) ticks.push({ v: Math.pow(10, e), label: e === 0 ? '1' : `1e−${-e}` });
    return {
      frac: (v) => {
        if (!(v > 0)) return 0;
        return Math.min(1, Math.max(0, (Math.log10(v) - lo) / span));
      },
      ticks,
      floor: Math.pow(10, lo),
    };
  }

  function xLabel(report) {
    const d = parseTime(report && report.window && report.window.end);
    return d ? fmtClock(d) : `#${report && report.window ? report.window.index : ''}`;
  }

  /**
   * A chart of one value per window. `points`: [{ v: number|null, drifted, tip }].
   * `mode`: 'step' (one polyline) or 'line' (a path broken where v is null).
   * `zone`: 'above' or 'below' the threshold is the drift region.
   */
  function seriesSVG(o) {
    const W = Math.max(Math.floor(o.width), 200);
    const H = o.height;
    const m = { l: o.yAxisWidth || 44, r: o.gutter || 44, t: 10, b: 22 };
    const iw = W - m.l - m.r;
    const ih = H - m.t - m.b;
    const n = o.points.length;
    const band = iw / Math.max(n, 1);
    const xAt = (i) => m.l + band * i;
    const cx = (i) => m.l + band * (i + 0.5);
    const py = (v) => m.t + ih * (1 - o.scale.frac(v));
    const r1 = (v) => Math.round(v * 10) / 10;
    const parts = [];

    parts.push(`<svg class="${o.cls}" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(o.label)}" data-points="${n}">`);

    // Drift region behind everything.
    if (isNum(o.threshold)) {
      const ty = r1(py(o.threshold));
      if (o.zone === 'above' && ty > m.t) parts.push(`<rect class="drift-zone" x="${m.l}" y="${m.t}" width="${r1(iw)}" height="${r1(ty - m.t)}"></rect>`);
      if (o.zone === 'below' && ty < m.t + ih) parts.push(`<rect class="drift-zone" x="${m.l}" y="${ty}" width="${r1(iw)}" height="${r1(m.t + ih - ty)}"></rect>`);
    }

    // Grid and y axis.
    for (const t of o.scale.ticks) {
      const y = r1(py(t.v));
      parts.push(`<line class="grid" x1="${m.l}" x2="${W - m.r}" y1="${y}" y2="${y}"></line>`);
      parts.push(`<text class="axis-label" x="${m.l - 6}" y="${y}" dy="0.32em" text-anchor="end">${esc(t.label)}</text>`);
    }
    parts.push(`<line class="axis" x1="${m.l}" x2="${W - m.r}" y1="${m.t + ih}" y2="${m.t + ih}"></line>`);

    // X labels: as many as fit.
    const every = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(iw / 72))));
    for (let i = n - 1; i >= 0; i -= every) {
      parts.push(`<text class="axis-label" x="${r1(cx(i))}" y="${H - 6}" text-anchor="middle">${esc(o.xLabels[i])}</text>`);
    }

    // Threshold.
    if (isNum(o.threshold)) {
      const ty = r1(py(o.threshold));
      parts.push(`<line class="threshold" x1="${m.l}" x2="${W - m.r + 2}" y1="${ty}" y2="${ty}"><title>threshold ${esc(o.thresholdLabel)}</title></line>`);
      parts.push(`<text class="threshold-label" x="${W - m.r + 5}" y="${ty}" dy="0.32em">${esc(o.thresholdLabel)}</text>`);
    }

    // Series.
    const coords = [];
    if (o.mode === 'step') {
      const pts = [];
      o.points.forEach((p, i) => {
        const v = isNum(p.v) ? p.v : 0;
        const y = r1(py(v));
        pts.push(`${r1(xAt(i))},${y}`, `${r1(xAt(i + 1))},${y}`);
        coords.push([cx(i), py(v)]);
      });
      if (n > 0) {
        parts.push(`<polygon class="series-area" points="${r1(xAt(0))},${m.t + ih} ${pts.join(' ')} ${r1(xAt(n))},${m.t + ih}"></polygon>`);
        parts.push(`<polyline class="series" points="${pts.join(' ')}"></polyline>`);
      }
    } else {
      let d = '';
      let pen = false;
      o.points.forEach((p, i) => {
        if (!isNum(p.v)) {
          pen = false;
          coords.push(null);
          return;
        }
        const x = cx(i);
        const y = py(p.v);
        d += `${pen ? 'L' : 'M'}${r1(x)},${r1(y)}`;
        pen = true;
        coords.push([x, y]);
      });
      parts.push(`<path class="series" d="${d}"></path>`);
    }

    // Points: drifted ones always, the others while they are few enough to read.
    const showAll = n <= Math.floor(iw / 7);
    o.points.forEach((p, i) => {
      const c = coords[i];
      if (!c) return;
      if (p.drifted) parts.push(`<circle class="point point-drift" cx="${r1(c[0])}" cy="${r1(c[1])}" r="3.5"></circle>`);
      else if (p.provisional) parts.push(`<circle class="point point-provisional" cx="${r1(c[0])}" cy="${r1(c[1])}" r="3"></circle>`);
      else if (showAll || i === n - 1) parts.push(`<circle class="point" cx="${r1(c[0])}" cy="${r1(c[1])}" r="2.5"></circle>`);
    });

    // Insufficient-data windows: a hollow tick on the axis.
    o.points.forEach((p, i) => {
      if (p.insufficient) parts.push(`<rect class="insufficient" x="${r1(cx(i) - 2)}" y="${m.t + ih - 6}" width="4" height="6"></rect>`);
    });

    parts.push(`<line class="hover-line" x1="0" x2="0" y1="${m.t}" y2="${m.t + ih}" visibility="hidden"></line>`);
    parts.push(`<circle class="hover-dot" r="4.5" cx="0" cy="0" visibility="hidden"></circle>`);
    parts.push('</svg>');
    return {
      html: parts.join(''),
      meta: { axis: 'x', pos: o.points.map((_, i) => cx(i)), dots: coords, tips: o.points.map((p) => p.tip) },
    };
  }

  function drawChart(container, chart) {
    setHTML(container, chart.html);
    chartMeta.set(container, chart.meta);
  }

  function emptyChart(container, text) {
    setHTML(container, `<div class="chart-empty">${esc(text)}</div>`);
    chartMeta.delete(container);
  }

  function windowTip(r) {
    const w = r.window || {};
    return `<div class="tip-title">Window #${esc(w.index)}</div><div class="tip-sub mono">${esc(fmtBound(w.start))} → ${esc(fmtBound(w.end))}</div>`;
  }

  function renderDatasetChart(reports) {
    const width = el.datasetChart.clientWidth;
    if (!reports.length) {
      emptyChart(el.datasetChart, 'No window has closed yet: the drift share appears here after the first one.');
      return;
    }
    if (!width) return;
    const latest = reports[reports.length - 1];
    const threshold = latest.dataset ? latest.dataset.threshold : null;
    const points = reports.map((r) => {
      const d = r.dataset || {};
      return {
        v: d.drift_share,
        drifted: !!d.drifted,
        tip:
          windowTip(r) +
          `<div class="tip-row"><span>drift share</span><strong>${esc(fmtPct(d.drift_share))}</strong></div>` +
          `<div class="tip-row"><span>features drifted</span><strong>${esc(fmtCount(d.features_drifted))} / ${esc(fmtCount(d.features_evaluated))}</strong></div>` +
          `<div class="tip-row"><span>threshold</span><strong>${esc(fmtPct(d.threshold))}</strong></div>` +
          `<div class="tip-verdict ${d.drifted ? 'drift' : 'ok'}">${d.drifted ? 'Drift detected' : 'No drift'}</div>`,
      };
    });
    setText(el.datasetSub, `Share of features drifted in each of the last ${reports.length} windows; drift when the share reaches the dashed threshold (${fmtPct(threshold)}).`);
    drawChart(
      el.datasetChart,
      seriesSVG({
        cls: 'chart-svg dataset-svg',
        label: 'Dataset drift share per window',
        width,
        height: 190,
        points,
        mode: 'step',
        zone: 'above',
        threshold,
        thresholdLabel: fmtPct(threshold),
        scale: { frac: (v) => Math.min(1, Math.max(0, v)), ticks: [0, 0.25, 0.5, 0.75, 1].map((v) => ({ v, label: `${v * 100}%` })) },
        xLabels: reports.map(xLabel),
      }),
    );
  }

  /**
   * The performance windows of a stream's reports, by window index, each as its
   * newest report gives it (a provisional window becomes final in a later report).
   */
  function performanceWindows(reports) {
    const byIndex = new Map();
    let task = null;
    for (const r of reports) {
      const perf = r.performance;
      if (!perf) continue;
      task = perf.task || task;
      for (const w of perf.windows || []) byIndex.set(w.index, w);
    }
    const windows = [...byIndex.values()].sort((a, b) => a.index - b.index);
    return { task, windows };
  }

  const LOWER_IS_BETTER = new Set(['log_loss', 'ece', 'mae', 'rmse', 'mape']);

  function defaultPerfMetric(task, names) {
    const wanted = task === 'regression' ? 'mae' : 'accuracy';
    return names.includes(wanted) ? wanted : names[0];
  }

  function estimatedOf(w, metric) {
    const e = w.estimated;
    if (!e) return null;
    if (isNum(e[metric])) return e[metric];
    if (e.metrics && isNum(e.metrics[metric])) return e.metrics[metric];
    return null;
  }

  function performanceTip(w, metric) {
    const est = estimatedOf(w, metric);
    return (
      `<div class="tip-title">Performance window #${esc(w.index)}</div>` +
      `<div class="tip-sub mono">${esc(fmtBound(w.start))} → ${esc(fmtBound(w.end))}</div>` +
      `<div class="tip-row"><span>${esc(metric)}</span><strong>${esc(fmtNum(w.metrics ? w.metrics[metric] : null))}</strong></div>` +
      (est === null ? '' : `<div class="tip-row"><span>estimated</span><strong>${esc(fmtNum(est))}</strong></div>`) +
      `<div class="tip-row"><span>labelled</span><strong>${esc(fmtCount(w.labelled))} / ${esc(fmtCount(w.predictions))} (${esc(fmtPct(w.label_coverage))})</strong></div>` +
      `<div class="tip-row"><span>expired, evicted</span><strong>${esc(fmtCount(w.expired))}, ${esc(fmtCount(w.evicted))}</strong></div>` +
      `<div class="tip-verdict ${w.status === 'final' ? 'ok' : ''}">${w.status === 'final' ? 'Final' : 'Provisional: labels still coming'}</div>`
    );
  }

  function renderPerformance(streamName, reports) {
    const { task, windows } = performanceWindows(reports);
    el.performancePanel.hidden = windows.length === 0;
    if (!windows.length) {
      chartMeta.delete(el.performanceChart);
      return;
    }
    const names = [...new Set(windows.flatMap((w) => Object.keys(w.metrics || {})))].filter((n) => !n.endsWith('_bound')).sort();
    let metric = state.perfMetric.get(streamName);
    if (!names.includes(metric)) metric = defaultPerfMetric(task, names);
    state.perfMetric.set(streamName, metric);
    const options = names.map((n) => `<option value="${esc(n)}">${esc(n)}</option>`).join('');
    if (el.performanceSelect.dataset.options !== options) {
      setHTML(el.performanceSelect, options);
      el.performanceSelect.dataset.options = options;
    }
    if (el.performanceSelect.value !== metric) el.performanceSelect.value = metric;
    const latest = windows[windows.length - 1];
    const finals = windows.filter((w) => w.status === 'final').length;
    setText(
      el.performanceSub,
      `${task || ''} ${metric} per window from the joined labels (${LOWER_IS_BETTER.has(metric) ? 'lower' : 'higher'} is better); ` +
        `${finals} of ${windows.length} windows final, the newest ${fmtPct(latest.label_coverage)} labelled.`,
    );
    const width = el.performanceChart.clientWidth;
    if (!width) return;
    const values = windows.map((w) => (w.metrics ? w.metrics[metric] : null)).filter(isNum);
    const bounded = !LOWER_IS_BETTER.has(metric) || metric === 'ece';
    const max = bounded ? 1 : Math.max(...values, 0) * 1.1 || 1;
    const scale = bounded
      ? { frac: (v) => Math.min(1, Math.max(0, v)), ticks: [0, 0.25, 0.5, 0.75, 1].map((v) => ({ v, label: fmtNum(v, 2) })) }
      : linearScale(max, (v) => fmtNum(v, 3));
    el.performanceChart.dataset.metric = metric;
    drawChart(
      el.performanceChart,
      seriesSVG({
        cls: 'chart-svg performance-svg',
        label: `Model ${metric} per window`,
        width,
        height: 170,
        points: windows.map((w) => ({
          v: w.metrics ? w.metrics[metric] : null,
          provisional: w.status !== 'final',
          tip: performanceTip(w, metric),
        })),
        mode: 'line',
        scale,
        xLabels: windows.map((w) => `#${w.index}`),
      }),
    );
  }

  function featureSeries(name, reports, latestFeature) {
    return reports.map((r) => {
      const f = (r.features || []).find((x) => x.name === name);
      const same = f && f.primary_metric === latestFeature.primary_metric;
      const v = same && f.status !== 'insufficient_data' ? decisionValue(f) : null;
      const insufficient = !!f && f.status === 'insufficient_data';
      let body;
      if (!f) body = '<div class="tip-muted">not in this window</div>';
      else if (insufficient) body = '<div class="tip-muted">insufficient data</div>';
      else {
        const valueLabel = isPValueMetric(f.primary_metric) ? 'p-value' : f.primary_metric;
        body =
          `<div class="tip-row"><span>${esc(valueLabel)}</span><strong>${esc(fmtNum(v, 4))}</strong></div>` +
          `<div class="tip-row"><span>threshold</span><strong>${esc(fmtNum(f.threshold))}</strong></div>` +
          `<div class="tip-row"><span>samples</span><strong>${esc(fmtCount(f.samples))}</strong></div>` +
          `<div class="tip-verdict ${f.drifted ? 'drift' : 'ok'}">${f.drifted ? 'Drifted' : 'No drift'}</div>`;
      }
      return { v, drifted: !!(f && f.drifted), insufficient, tip: windowTip(r) + body };
    });
  }

  function featureChart(name, reports, latestFeature, width) {
    const metric = latestFeature.primary_metric;
    const threshold = latestFeature.threshold;
    const points = featureSeries(name, reports, latestFeature);
    const values = points.map((p) => p.v).filter(isNum);
    let scale;
    if (isPValueMetric(metric)) {
      const positive = values.filter((v) => v > 0);
      scale = logScale(Math.min(isNum(threshold) && threshold > 0 ? threshold / 10 : 0.01, ...positive));
    } else {
      const max = Math.max(isNum(threshold) ? threshold * 1.5 : 0, ...values.map((v) => v * 1.1), 1e-9);
      scale = linearScale(max, (v) => fmtNum(v, 2));
    }
    return seriesSVG({
      cls: 'chart-svg feature-svg',
      label: `${name}: ${metricTitle(metric)} per window`,
      width,
      height: 132,
      yAxisWidth: 40,
      gutter: 38,
      points,
      mode: 'line',
      zone: isPValueMetric(metric) ? 'below' : 'above',
      threshold,
      thresholdLabel: fmtNum(threshold),
      scale,
      xLabels: reports.map(xLabel),
    });
  }

  function renderFeatures(streamName, reports) {
    const latest = reports[reports.length - 1];
    const grid = el.featureGrid;
    if (grid.dataset.stream !== streamName) {
      grid.textContent = '';
      grid._html = undefined;
      grid.dataset.stream = streamName;
    }
    const features = latest ? latest.features || [] : [];
    if (!features.length) {
      setHTML(grid, `<div class="chart-empty">${latest ? 'The latest window has no features.' : 'Feature scores appear after the first window.'}</div>`);
      setText(el.featuresSub, 'Primary score per window against its threshold.');
      return;
    }
    if (grid._html !== undefined) {
      // Leaving the placeholder: cards are managed one by one from here.
      grid.textContent = '';
      grid._html = undefined;
    }
    const drifted = features.filter((f) => f.drifted).length;
    setText(
      el.featuresSub,
      `${features.length} features, ${drifted} drifted in window #${latest.window.index}. Dashed line: threshold; red points: drifted windows. Select a feature for its distribution.`,
    );

    const selected = selectedFeature(streamName, features);
    const existing = new Map();
    for (const card of Array.from(grid.children)) existing.set(card.dataset.feature, card);
    features.forEach((f, i) => {
      let card = existing.get(f.name);
      existing.delete(f.name);
      if (!card) {
        card = document.createElement('article');
        card.className = 'feature-card';
        card.dataset.feature = f.name;
        card.tabIndex = 0;
        card.setAttribute('role', 'button');
        card.innerHTML = '<div class="fc-head"></div><div class="fc-title"></div><div class="chart fc-chart"></div><div class="fc-foot"></div>';
      }
      if (grid.children[i] !== card) grid.insertBefore(card, grid.children[i] || null);
      const s = f.status === 'insufficient_data' ? 'insufficient' : f.drifted ? 'drift' : 'ok';
      if (card.dataset.state !== s) card.dataset.state = s;
      card.setAttribute('aria-pressed', String(f.name === selected));
      const pill = { drift: 'Drifted', ok: 'OK', insufficient: 'Insufficient data' }[s];
      const v = decisionValue(f);
      const valueHtml =
        s === 'insufficient'
          ? '<span class="fc-value muted">–</span>'
          : `<span class="fc-value">${esc(fmtNum(v, 3))}</span>`;
      setHTML(
        card.children[0],
        `<span class="fc-name" title="${esc(f.name)}">${esc(f.name)}</span><span class="chip">${esc(f.kind)}</span>` +
          `<span class="fc-spacer"></span><span class="pill pill-${s}">${esc(pill)}</span>`,
      );
      const title = `${metricTitle(f.primary_metric)} · ${ruleText(f)}`;
      const scaleNote = isPValueMetric(f.primary_metric) ? ' (log scale)' : '';
      setHTML(card.children[1], `<span class="fc-metric" title="${esc(title + scaleNote)}">${esc(title)}</span>${valueHtml}`);
      const chartBox = card.children[2];
      const width = chartBox.clientWidth;
      if (width) drawChart(chartBox, featureChart(f.name, reports, f, width));
      const missing =
        `missing ${esc(fmtPct(f.missing_share))} <span class="muted">(ref ${esc(fmtPct(f.reference_missing_share))})</span>` +
        (f.missing_drifted ? ' <span class="chip chip-warn">missing share drifted</span>' : '');
      const extra = [];
      if (f.invalid) extra.push(`${fmtCount(f.invalid)} invalid`);
      if (f.non_finite) extra.push(`${fmtCount(f.non_finite)} non-finite`);
      if (f.category_overflow) extra.push(`${fmtCount(f.category_overflow)} overflow`);
      setHTML(
        card.children[3],
        `<span>${esc(fmtCount(f.samples))} samples</span><span>${missing}</span>${extra.length ? `<span class="warn-text">${esc(extra.join(' · '))}</span>` : ''}`,
      );
    });
    for (const card of existing.values()) card.remove();
  }

  function selectedFeature(streamName, features) {
    let name = state.feature.get(streamName);
    if (!name || !features.some((f) => f.name === name)) {
      const fromHash = readHash();
      if (fromHash.stream === streamName && features.some((f) => f.name === fromHash.feature)) name = fromHash.feature;
      else name = (features.find((f) => f.drifted) || features[0]).name;
      state.feature.set(streamName, name);
      writeHash();
    }
    return name;
  }

  function renderFeatureSelect(features, selected) {
    const html = features.map((f) => `<option value="${esc(f.name)}">${esc(f.name)}${f.drifted ? ' — drifted' : ''}</option>`).join('');
    setHTML(el.featureSelect, html);
    if (el.featureSelect.value !== selected) el.featureSelect.value = selected;
    el.featureSelect.disabled = features.length === 0;
  }

  function renderDistribution(streamName, latest) {
    const features = latest ? latest.features || [] : [];
    if (!features.length) {
      renderFeatureSelect([], '');
      setText(el.distributionSub, 'Reference vs current share per bin.');
      emptyChart(el.distributionChart, 'Distributions appear after the first window.');
      setHTML(el.featureDetails, '');
      return;
    }
    const name = selectedFeature(streamName, features);
    renderFeatureSelect(features, name);
    const report = features.find((f) => f.name === name);
    renderFeatureDetails(report);

    const cached = state.dists.get(streamName);
    const data = cached && cached.data;
    const dist = data && Array.isArray(data.features) ? data.features.find((f) => f.name === name) : null;
    if (!dist) {
      setText(el.distributionSub, 'Reference vs current share per bin.');
      emptyChart(el.distributionChart, data || !cached ? `No distribution for ${name} yet.` : 'The distributions of this window are not available yet.');
      return;
    }
    const win = data.window || {};
    const kindText = dist.kind === 'categorical' ? 'share per category' : 'share per bin (histogram)';
    setText(el.distributionSub, `${name}: reference vs window #${win.index}, ${kindText}.`);
    const width = el.distributionChart.clientWidth;
    if (!width) return;
    drawChart(el.distributionChart, dist.kind === 'categorical' ? categoricalSVG(dist, width) : histogramSVG(dist, width));
  }

  function renderFeatureDetails(f) {
    if (!f) {
      setHTML(el.featureDetails, '');
      return;
    }
    const primaryKey = P_VALUE_KEYS[f.primary_metric] || f.primary_metric;
    const rows = Object.keys(f.scores || {})
      .sort()
      .map((k) => {
        const primary = k === primaryKey;
        const verdict = primary ? `<span class="pill pill-${f.drifted ? 'drift' : 'ok'}">${f.drifted ? 'Drifted' : 'OK'}</span>` : '';
        return (
          `<tr${primary ? ' class="primary"' : ''}><th scope="row">${esc(k)}${primary ? ' <span class="muted">(primary)</span>' : ''}</th>` +
          `<td class="num">${esc(fmtNum(f.scores[k], 4))}</td><td class="num">${primary ? esc(ruleText(f)) : ''}</td><td>${verdict}</td></tr>`
        );
      })
      .join('');
    const body = rows || '<tr><td colspan="4" class="muted">No scores: insufficient data in this window.</td></tr>';
    setHTML(
      el.featureDetails,
      `<table class="scores"><caption>Scores of <strong>${esc(f.name)}</strong> in the latest window</caption>` +
        `<thead><tr><th scope="col">score</th><th scope="col" class="num">value</th><th scope="col" class="num">rule</th><th scope="col"></th></tr></thead>` +
        `<tbody>${body}</tbody></table>` +
        (verdictText(f) ? `<p class="verdict-detail muted">${esc(verdictText(f))}</p>` : ''),
    );
  }

  function distTip(dist, i) {
    const ref = dist.reference[i];
    const cur = dist.current[i];
    const diff = isNum(ref) && isNum(cur) ? cur - ref : null;
    const sign = diff > 0 ? '+' : diff < 0 ? '−' : '';
    return (
      `<div class="tip-title mono">${esc(displayLabel(dist.labels[i]))}</div>` +
      `<div class="tip-row"><span><i class="swatch swatch-reference"></i>reference</span><strong>${esc(fmtPct(ref))}</strong></div>` +
      `<div class="tip-row"><span><i class="swatch swatch-current"></i>current</span><strong>${esc(fmtPct(cur))}</strong></div>` +
      `<div class="tip-row"><span>difference</span><strong>${diff === null ? '–' : `${sign}${esc(fmtPct(Math.abs(diff)))}`}</strong></div>`
    );
  }

  function displayLabel(label) {
    return label === '__other__' ? 'other categories' : String(label);
  }

  function shareTicks(max) {
    return niceTicks(max, 4);
  }

  function distArrays(dist) {
    const n = Array.isArray(dist.labels) ? dist.labels.length : 0;
    const num = (a, i) => (Array.isArray(a) && isNum(a[i]) ? a[i] : 0);
    const ref = [];
    const cur = [];
    for (let i = 0; i < n; i += 1) {
      ref.push(num(dist.reference, i));
      cur.push(num(dist.current, i));
    }
    return { n, ref, cur };
  }

  /** Numeric features: a histogram, reference and current bars side by side per bin. */
  function histogramSVG(dist, width) {
    const { n, ref, cur } = distArrays(dist);
    const W = Math.max(Math.floor(width), 240);
    const H = 260;
    const m = { l: 44, r: 12, t: 12, b: 40 };
    const iw = W - m.l - m.r;
    const ih = H - m.t - m.b;
    const { top, ticks } = shareTicks(Math.max(...ref, ...cur, 0.01));
    const band = iw / Math.max(n, 1);
    const gap = Math.min(6, band * 0.18);
    const bw = Math.max(1, (band - gap) / 2);
    const py = (v) => m.t + ih * (1 - Math.min(1, v / top));
    const r1 = (v) => Math.round(v * 10) / 10;
    const parts = [
      `<svg class="chart-svg dist-svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(dist.name)}: reference vs current histogram" data-feature="${esc(dist.name)}" data-kind="numeric" data-label-count="${n}">`,
    ];
    for (const t of ticks) {
      const y = r1(py(t));
      parts.push(`<line class="grid" x1="${m.l}" x2="${W - m.r}" y1="${y}" y2="${y}"></line>`);
      parts.push(`<text class="axis-label" x="${m.l - 6}" y="${y}" dy="0.32em" text-anchor="end">${esc(fmtPct(t))}</text>`);
    }
    parts.push('<g class="series-reference">');
    for (let i = 0; i < n; i += 1) {
      const x = m.l + band * i + gap / 2;
      parts.push(`<rect class="bar bar-reference" x="${r1(x)}" y="${r1(py(ref[i]))}" width="${r1(bw)}" height="${r1(m.t + ih - py(ref[i]))}"></rect>`);
    }
    parts.push('</g><g class="series-current">');
    for (let i = 0; i < n; i += 1) {
      const x = m.l + band * i + gap / 2 + bw;
      parts.push(`<rect class="bar bar-current" x="${r1(x)}" y="${r1(py(cur[i]))}" width="${r1(bw)}" height="${r1(m.t + ih - py(cur[i]))}"></rect>`);
    }
    parts.push('</g>');
    parts.push(`<line class="axis" x1="${m.l}" x2="${W - m.r}" y1="${m.t + ih}" y2="${m.t + ih}"></line>`);

    // Bin edges under the bin boundaries when the labels are intervals, else the labels.
    const edges = dist.labels.map((l) => /^[[(]\s*([^,]+?)\s*,\s*([^\])]+?)\s*[\])]$/.exec(String(l)));
    const every = Math.max(1, Math.ceil((n + 1) / Math.max(1, Math.floor(iw / 56))));
    if (n > 0 && edges.every(Boolean)) {
      const bounds = [edges[0][1], ...edges.map((e) => e[2])].map((s) => s.replace(/^-inf$/i, '−∞').replace(/^\+?inf$/i, '+∞'));
      bounds.forEach((b, i) => {
        if (i % every !== 0) return;
        const x = r1(m.l + band * i);
        parts.push(`<line class="tick" x1="${x}" x2="${x}" y1="${m.t + ih}" y2="${m.t + ih + 4}"></line>`);
        parts.push(`<text class="axis-label" x="${x}" y="${m.t + ih + 16}" text-anchor="middle">${esc(shortNum(b))}</text>`);
      });
    } else {
      const everyLabel = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(iw / 64))));
      dist.labels.forEach((l, i) => {
        if (i % everyLabel !== 0) return;
        parts.push(`<text class="axis-label" x="${r1(m.l + band * (i + 0.5))}" y="${m.t + ih + 16}" text-anchor="middle">${esc(truncate(displayLabel(l), 10))}</text>`);
      });
    }
    parts.push(`<text class="axis-title" x="${m.l + iw / 2}" y="${H - 6}" text-anchor="middle">${esc(dist.name)} (bin edges)</text>`);
    parts.push(`<rect class="hover-band" x="0" y="${m.t}" width="${r1(band)}" height="${ih}" visibility="hidden"></rect>`);
    parts.push('</svg>');
    return { html: parts.join(''), meta: { axis: 'x', band: true, pos: dist.labels.map((_, i) => m.l + band * (i + 0.5)), size: band, tips: dist.labels.map((_, i) => distTip(dist, i)) } };
  }

  /** Categorical features: one row per category, reference and current bars. */
  function categoricalSVG(dist, width) {
    const { n, ref, cur } = distArrays(dist);
    const W = Math.max(Math.floor(width), 240);
    const longest = Math.max(4, ...dist.labels.map((l) => Math.min(displayLabel(l).length, 22)));
    const labelW = Math.min(170, 12 + longest * 6.6);
    const rowH = 24;
    const m = { l: labelW, r: 44, t: 8, b: 24 };
    const H = m.t + m.b + rowH * Math.max(n, 1);
    const iw = W - m.l - m.r;
    const { top, ticks } = shareTicks(Math.max(...ref, ...cur, 0.01));
    const px = (v) => m.l + iw * Math.min(1, v / top);
    const r1 = (v) => Math.round(v * 10) / 10;
    const bh = 8;
    const parts = [
      `<svg class="chart-svg dist-svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(dist.name)}: reference vs current share per category" data-feature="${esc(dist.name)}" data-kind="categorical" data-label-count="${n}">`,
    ];
    for (const t of ticks) {
      const x = r1(px(t));
      parts.push(`<line class="grid" x1="${x}" x2="${x}" y1="${m.t}" y2="${H - m.b}"></line>`);
      parts.push(`<text class="axis-label" x="${x}" y="${H - 8}" text-anchor="middle">${esc(fmtPct(t))}</text>`);
    }
    parts.push('<g class="series-reference">');
    for (let i = 0; i < n; i += 1) {
      const y = m.t + rowH * i + (rowH - 2 * bh - 2) / 2;
      parts.push(`<rect class="bar bar-reference" x="${m.l}" y="${r1(y)}" width="${r1(px(ref[i]) - m.l)}" height="${bh}"></rect>`);
    }
    parts.push('</g><g class="series-current">');
    for (let i = 0; i < n; i += 1) {
      const y = m.t + rowH * i + (rowH - 2 * bh - 2) / 2 + bh + 2;
      parts.push(`<rect class="bar bar-current" x="${m.l}" y="${r1(y)}" width="${r1(px(cur[i]) - m.l)}" height="${bh}"></rect>`);
    }
    parts.push('</g>');
    dist.labels.forEach((l, i) => {
      const y = m.t + rowH * (i + 0.5);
      const other = l === '__other__';
      parts.push(`<text class="axis-label cat-label${other ? ' cat-other' : ''}" x="${m.l - 8}" y="${r1(y)}" dy="0.32em" text-anchor="end">${esc(truncate(displayLabel(l), 22))}</text>`);
      parts.push(`<text class="value-label" x="${r1(Math.max(px(ref[i]), px(cur[i])) + 4)}" y="${r1(y)}" dy="0.32em">${esc(fmtPct(cur[i]))}</text>`);
    });
    parts.push(`<line class="axis" x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${H - m.b}"></line>`);
    parts.push(`<rect class="hover-band" x="${m.l}" y="0" width="${r1(iw)}" height="${rowH}" visibility="hidden"></rect>`);
    parts.push('</svg>');
    return { html: parts.join(''), meta: { axis: 'y', band: true, pos: dist.labels.map((_, i) => m.t + rowH * (i + 0.5)), size: rowH, tips: dist.labels.map((_, i) => distTip(dist, i)) } };
  }

  function truncate(s, max) {
    return s.length > max ? `${s.slice(0, max - 1)}…` : s;
  }

  function shortNum(s) {
    const v = Number(s);
    if (!Number.isFinite(v) || String(s).trim() === '') return s;
    return fmtNum(v, 3);
  }

  // ---------------------------------------------------------------- hover tooltips

  function onChartMove(event) {
    const container = event.target.closest && event.target.closest('.chart');
    if (!container) return hideTip();
    const meta = chartMeta.get(container);
    const svg = container.querySelector('svg');
    if (!meta || !svg || !meta.pos.length) return hideTip();
    const box = svg.getBoundingClientRect();
    const at = meta.axis === 'x' ? event.clientX - box.left : event.clientY - box.top;
    let best = 0;
    for (let i = 1; i < meta.pos.length; i += 1) if (Math.abs(meta.pos[i] - at) < Math.abs(meta.pos[best] - at)) best = i;
    if (meta.band && Math.abs(meta.pos[best] - at) > meta.size / 2 + 2) return hideTip();
    if (meta.band) {
      const band = svg.querySelector('.hover-band');
      if (band) {
        band.setAttribute(meta.axis === 'x' ? 'x' : 'y', String(meta.pos[best] - meta.size / 2));
        band.setAttribute('visibility', 'visible');
      }
    } else {
      const line = svg.querySelector('.hover-line');
      const dot = svg.querySelector('.hover-dot');
      const c = meta.dots[best];
      if (line) {
        line.setAttribute('x1', String(meta.pos[best]));
        line.setAttribute('x2', String(meta.pos[best]));
        line.setAttribute('visibility', 'visible');
      }
      if (dot) {
        if (c) {
          dot.setAttribute('cx', String(c[0]));
          dot.setAttribute('cy', String(c[1]));
          dot.setAttribute('visibility', 'visible');
        } else dot.setAttribute('visibility', 'hidden');
      }
    }
    showTip(meta.tips[best], event.clientX, event.clientY);
    activeChart = container;
  }

  let activeChart = null;

  function showTip(html, x, y) {
    const tip = el.tooltip;
    setHTML(tip, html);
    tip.hidden = false;
    const w = tip.offsetWidth;
    const h = tip.offsetHeight;
    let left = x + 14;
    let topPos = y + 14;
    if (left + w > window.innerWidth - 8) left = x - w - 14;
    if (topPos + h > window.innerHeight - 8) topPos = y - h - 14;
    tip.style.transform = `translate(${Math.max(4, left)}px, ${Math.max(4, topPos)}px)`;
  }

  function hideTip() {
    el.tooltip.hidden = true;
    if (activeChart) {
      for (const n of activeChart.querySelectorAll('.hover-line, .hover-dot, .hover-band')) n.setAttribute('visibility', 'hidden');
      activeChart = null;
    }
  }

  // ---------------------------------------------------------------- events

  function selectStream(name) {
    if (!name || name === state.selected) return;
    state.selected = name;
    writeHash();
    hideTip();
    render();
    requestPoll();
  }

  function selectFeature(name) {
    if (!state.selected || !name) return;
    state.feature.set(state.selected, name);
    writeHash();
    render();
  }

  el.streamList.addEventListener('click', (e) => {
    const button = e.target.closest('.stream-item');
    if (button) selectStream(button.dataset.stream);
  });

  /** On one-column layouts the distribution is below the cards: bring it into view. */
  function revealDistribution() {
    const box = el.distributionChart.getBoundingClientRect();
    if (box.top > window.innerHeight || box.bottom < 0) el.distributionChart.scrollIntoView({ block: 'center', behavior: 'smooth' });
  }

  el.featureGrid.addEventListener('click', (e) => {
    const card = e.target.closest('.feature-card');
    if (!card) return;
    selectFeature(card.dataset.feature);
    revealDistribution();
  });

  el.featureGrid.addEventListener('keydown', (e) => {
    if (e.key !== 'Enter' && e.key !== ' ') return;
    const card = e.target.closest('.feature-card');
    if (!card) return;
    e.preventDefault();
    selectFeature(card.dataset.feature);
    revealDistribution();
  });

  el.featureSelect.addEventListener('change', () => selectFeature(el.featureSelect.value));
  el.performanceSelect.addEventListener('change', () => {
    const stream = currentStream();
    if (!stream) return;
    state.perfMetric.set(stream.name, el.performanceSelect.value);
    renderStream();
  });

  el.tokenForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const token = el.tokenInput.value.trim();
    if (!token) return;
    state.token = token;
    saveToken(token);
    el.tokenInput.value = '';
    state.auth = null;
    render();
    requestPoll();
  });

  el.tokenForget.addEventListener('click', () => {
    state.token = null;
    saveToken(null);
    state.auth = null;
    render();
    requestPoll();
  });

  document.addEventListener('mousemove', (e) => {
    if (e.target.closest && e.target.closest('.chart')) onChartMove(e);
    else if (!el.tooltip.hidden) hideTip();
  });
  document.addEventListener('mouseleave', hideTip);

  window.addEventListener('hashchange', () => {
    const h = readHash();
    if (h.stream && h.stream !== state.selected && state.streams && state.streams.some((s) => s.name === h.stream)) {
      state.selected = h.stream;
      requestPoll();
    }
    if (h.feature && state.selected) state.feature.set(state.selected, h.feature);
    render();
  });

  // Charts are drawn at their pixel width: redraw when the layout changes.
  let resizeFrame = 0;
  let lastWidth = 0;
  new ResizeObserver((entries) => {
    const width = Math.round(entries[entries.length - 1].contentRect.width);
    if (width === lastWidth) return;
    lastWidth = width;
    cancelAnimationFrame(resizeFrame);
    resizeFrame = requestAnimationFrame(() => renderStream());
  }).observe(el.detail);

  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') requestPoll();
  });

  // The relative times ("taken 3 h ago") move on between polls too.
  setInterval(() => {
    if (!state.inflight) renderStream();
  }, 30000);

  const initial = readHash();
  if (initial.stream) state.selected = initial.stream;
  if (initial.stream && initial.feature) state.feature.set(initial.stream, initial.feature);
  render();
  poll();
})();
