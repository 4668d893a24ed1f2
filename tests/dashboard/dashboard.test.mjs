// Real-browser test of the dashboard served by `driftscope demo`.
//
//   node tests/dashboard/dashboard.test.mjs [PATH_TO_DRIFTSCOPE]   (default target/debug/driftscope)
//
// Builds nothing: starts `driftscope demo --port 0 --duration 120s --seed 7 --rate 2000`,
// reads the `dashboard: http://127.0.0.1:PORT/` line it prints, opens the page in headless
// Chromium (playwright-core driving /usr/bin/chromium; CHROMIUM_PATH overrides) and checks
// what a user sees: per stream a drift-share chart with data, one score chart per feature
// with its threshold line, and for every feature a reference vs current distribution whose
// bar counts match the API's labels; the drift state; the token form on a 401; the message
// while the API is down; the empty state; no console or page errors. Writes
// artifacts/dashboard.png (and dashboard-narrow.png), stops the demo with SIGINT and exits
// non-zero on any failure. Every wait is bounded and condition-based.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BINARY = path.resolve(process.argv[2] || path.join(ROOT, 'target', 'debug', 'driftscope'));
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = path.join(ROOT, 'artifacts');
const DEMO_ARGS = ['demo', '--port', '0', '--duration', '120s', '--seed', '7', '--rate', '2000'];
const DEMO_SECONDS = 120;
const STARTUP_TIMEOUT_MS = 60_000; // the demo prints its URL at start
const DATA_TIMEOUT_MS = 60_000; // until a stream has closed at least two windows
const UI_TIMEOUT_MS = 15_000; // the page reacting to a click or an API state
const TOKEN = 'dashboard-test-token';

const started = Date.now();
const results = [];
let demo = null;
let demoOutput = '';
let context = null;
let userDataDir = null;

function log(message) {
  process.stdout.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${message}\n`);
}

async function check(name, fn) {
  try {
    await fn();
    results.push({ name, ok: true });
    log(`ok    ${name}`);
  } catch (e) {
    results.push({ name, ok: false, error: e });
    log(`FAIL  ${name}\n        ${String(e && e.message ? e.message : e).split('\n').join('\n        ')}`);
  }
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

// ---------------------------------------------------------------- the demo

function startDemo() {
  return new Promise((resolve, reject) => {
    if (!existsSync(BINARY)) {
      reject(new Error(`no driftscope binary at ${BINARY}: build it first (cargo build) or pass its path`));
      return;
    }
    log(`starting ${BINARY} ${DEMO_ARGS.join(' ')}`);
    demo = spawn(BINARY, DEMO_ARGS, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      reject(new Error(`the demo printed no "dashboard: http://127.0.0.1:PORT/" line within ${STARTUP_TIMEOUT_MS / 1000} s`));
    }, STARTUP_TIMEOUT_MS);
    let buffer = '';
    demo.stdout.on('data', (chunk) => {
      const text = chunk.toString();
      demoOutput += text;
      buffer += text;
      const match = /dashboard:\s*(http:\/\/127\.0\.0\.1:\d+\/)/.exec(buffer);
      if (match && !settled) {
        settled = true;
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    demo.stderr.on('data', (chunk) => {
      demoOutput += chunk.toString();
    });
    demo.on('error', (e) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`cannot start ${BINARY}: ${e.message}`));
    });
    demo.on('exit', (code, signal) => {
      demo.exited = { code, signal };
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`the demo exited (${signal || `code ${code}`}) before printing its dashboard URL`));
    });
  });
}

async function stopDemo() {
  if (!demo || demo.exited) return demo && demo.exited;
  const exited = new Promise((resolve) => demo.once('exit', (code, signal) => resolve({ code, signal })));
  demo.kill('SIGINT');
  const timeout = new Promise((resolve) => setTimeout(() => resolve(null), 15_000));
  let result = await Promise.race([exited, timeout]);
  if (!result) {
    log('the demo did not stop within 15 s of SIGINT: killing it');
    demo.kill('SIGKILL');
    result = await exited;
  }
  return result;
}

function demoTail() {
  const lines = demoOutput.trimEnd().split('\n');
  return lines.slice(-25).join('\n');
}

// ---------------------------------------------------------------- API helpers (node side)

async function getJson(base, pathAndQuery) {
  const res = await fetch(new URL(pathAndQuery, base));
  if (!res.ok) throw new Error(`GET ${pathAndQuery}: HTTP ${res.status}`);
  return res.json();
}

/** An attribute selector for any value (JSON string quoting is valid CSS string quoting here). */
function attr(name, value) {
  return `[data-${name}=${JSON.stringify(String(value))}]`;
}

// ---------------------------------------------------------------- browser helpers

function watchErrors(page, label, ignore = () => false) {
  const errors = [];
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    if (ignore(text)) return;
    const loc = msg.location();
    errors.push(`${label}: console error: ${text}${loc && loc.url ? ` (${loc.url}${loc.lineNumber ? `:${loc.lineNumber}` : ''})` : ''}`);
  });
  page.on('pageerror', (e) => errors.push(`${label}: page error: ${e.message}`));
  page.on('crash', () => errors.push(`${label}: the page crashed`));
  return errors;
}

/** A bounded wait on a condition in the page; on timeout the message says what the page shows. */
async function waitFor(page, what, fn, arg, timeout = UI_TIMEOUT_MS) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 200 });
  } catch (e) {
    const seen = await page
      .evaluate(() => {
        const t = (id) => (document.getElementById(id) ? document.getElementById(id).innerText.trim().slice(0, 200) : '(missing)');
        return `status "${t('api-status')}", banner "${t('banner')}", placeholder "${t('placeholder')}", verdict "${t('drift-state')}"`;
      })
      .catch(() => '(page not readable)');
    const why = /Timeout/i.test(String(e && e.message)) ? `timed out after ${timeout / 1000} s` : `failed (${String(e && e.message).split('\n')[0]})`;
    throw new Error(`${why} waiting for ${what}; the page shows: ${seen}`);
  }
}

// In-page probes (run in the browser; each self-contained, as Playwright sends its source).
function probeStream(name) {
  const detail = document.getElementById('stream-detail');
  if (!detail || detail.hidden || detail.dataset.stream !== name) return null;
  const svg = document.querySelector('#dataset-chart svg');
  const series = document.querySelectorAll('#dataset-chart svg .series');
  const line = series[0];
  const points = line && line.points ? line.points.numberOfItems : 0;
  const cards = Array.from(document.querySelectorAll('#feature-grid .feature-card')).map((c) => ({
    name: c.dataset.feature,
    svg: !!c.querySelector('svg.feature-svg'),
    threshold: c.querySelectorAll('svg .threshold').length,
    series: c.querySelectorAll('svg .series').length,
    title: c.querySelector('.fc-title') ? c.querySelector('.fc-title').textContent : '',
  }));
  return {
    series: series.length,
    points,
    windows: svg ? Number(svg.dataset.points) : 0,
    datasetThreshold: document.querySelectorAll('#dataset-chart svg .threshold').length,
    verdict: document.getElementById('drift-state').dataset.state,
    cards,
  };
}

/** probeStream's condition, self-contained: the page's CSP forbids eval, so no shared helpers. */
function streamReady(name) {
  const detail = document.getElementById('stream-detail');
  if (!detail || detail.hidden || detail.dataset.stream !== name) return false;
  const svg = document.querySelector('#dataset-chart svg');
  const series = document.querySelectorAll('#dataset-chart svg .series');
  if (!svg || series.length !== 1 || !series[0].points || series[0].points.numberOfItems < 2 || Number(svg.dataset.points) < 2) return false;
  const cards = Array.from(document.querySelectorAll('#feature-grid .feature-card'));
  return cards.length > 0 && cards.every((c) => !!c.querySelector('svg.feature-svg') && c.querySelectorAll('svg .threshold').length === 1);
}

// ---------------------------------------------------------------- the checks

async function main() {
  assert(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (scripts/dashboard-test.sh installs it)`);
  const url = await startDemo();
  log(`dashboard at ${url}`);
  const base = new URL(url);

  const streams = await getJson(base, 'api/v1/streams');
  assert(Array.isArray(streams) && streams.length > 0, 'GET /api/v1/streams lists no stream');
  log(`streams: ${streams.map((s) => s.name).join(', ')}`);

  userDataDir = mkdtempSync(path.join(tmpdir(), 'driftscope-dashboard-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1440, height: 900 },
    deviceScaleFactor: 1,
    timeout: 60_000,
  });
  const page = context.pages()[0] || (await context.newPage());
  const errors = watchErrors(page, 'dashboard');

  await check('the page loads with its stylesheet and script', async () => {
    const response = await page.goto(url, { waitUntil: 'load', timeout: 30_000 });
    assert(response && response.ok(), `GET / answered ${response ? response.status() : 'nothing'}`);
    assert((response.headers()['content-type'] || '').startsWith('text/html'), 'GET / is not text/html');
    const styled = await page.evaluate(() => getComputedStyle(document.querySelector('.topbar')).position === 'sticky');
    assert(styled, 'style.css is not applied');
  });

  await check('the stream list shows every stream', async () => {
    await waitFor(page, `${streams.length} streams in #stream-list`, (n) => document.querySelectorAll('#stream-list .stream-item').length === n, streams.length);
    const names = await page.$$eval('#stream-list .stream-item', (items) => items.map((i) => i.dataset.stream));
    assert(JSON.stringify(names) === JSON.stringify(streams.map((s) => s.name)), `stream list ${JSON.stringify(names)}`);
  });

  for (const stream of streams) {
    const name = stream.name;
    await check(`stream ${name}: drift-share chart, one score chart per feature with its threshold`, async () => {
      await page.click(`#stream-list .stream-item${attr('stream', name)}`);
      await waitFor(
        page,
        `stream ${name} to show a drift-share line over >= 2 windows and its feature charts`,
        streamReady,
        name,
        DATA_TIMEOUT_MS,
      );
      const p = await page.evaluate(probeStream, name);
      assert(p.series === 1, `the drift-share chart has ${p.series} series lines, expected 1`);
      assert(p.points >= 2 && p.windows >= 2, `the drift-share line has ${p.points} points over ${p.windows} windows`);
      assert(p.datasetThreshold === 1, 'the drift-share chart has no threshold line');
      assert(['ok', 'drift'].includes(p.verdict), `the drift state is "${p.verdict}" although windows have closed`);

      const [latest] = (await getJson(base, `api/v1/reports?stream=${encodeURIComponent(name)}&limit=1`)).slice(-1);
      assert(latest, `the API has no report for ${name}`);
      const expected = latest.features.map((f) => f.name);
      const shown = p.cards.map((c) => c.name);
      assert(JSON.stringify(shown) === JSON.stringify(expected), `feature charts ${JSON.stringify(shown)}, the API reports ${JSON.stringify(expected)}`);
      for (const f of latest.features) {
        const card = p.cards.find((c) => c.name === f.name);
        assert(card.series === 1, `feature ${f.name}: ${card.series} score lines`);
        if (f.primary_metric === 'ks' || f.primary_metric === 'chi_square') {
          assert(/p-value/.test(card.title), `feature ${f.name} (${f.primary_metric}): the chart title "${card.title}" does not say p-value`);
        }
      }
      log(`      ${name}: drift share over ${p.windows} windows (${p.points} step points), ${p.cards.length} feature charts, state ${p.verdict}`);
    });

    await check(`stream ${name}: each feature's distribution has reference and current bars, one per label`, async () => {
      const dist = await getJson(base, `api/v1/distributions/latest?stream=${encodeURIComponent(name)}`);
      const features = await page.$$eval('#feature-grid .feature-card', (cards) => cards.map((c) => c.dataset.feature));
      assert(features.length > 0, 'no feature cards');
      for (const feature of features) {
        const api = dist.features.find((f) => f.name === feature);
        assert(api, `the distributions API has no feature ${feature}`);
        const labels = api.labels.length;
        await page.click(`#feature-grid .feature-card${attr('feature', feature)}`);
        await waitFor(
          page,
          `the ${feature} distribution chart with ${labels} reference and ${labels} current bars`,
          ([f, n]) => {
            const svg = document.querySelector('#distribution-chart svg.dist-svg');
            if (!svg || svg.dataset.feature !== f) return false;
            return svg.querySelectorAll('.bar-reference').length === n && svg.querySelectorAll('.bar-current').length === n;
          },
          [feature, labels],
        );
        const shown = await page.evaluate(() => {
          const svg = document.querySelector('#distribution-chart svg.dist-svg');
          const card = document.querySelector('#feature-grid .feature-card[aria-pressed="true"]');
          return {
            kind: svg.dataset.kind,
            ref: svg.querySelectorAll('.series-reference .bar-reference').length,
            cur: svg.querySelectorAll('.series-current .bar-current').length,
            selected: card ? card.dataset.feature : null,
            select: document.getElementById('feature-select').value,
          };
        });
        assert(shown.kind === api.kind, `${feature}: drawn as ${shown.kind}, the API says ${api.kind}`);
        assert(shown.ref === labels && shown.cur === labels, `${feature}: ${shown.ref} reference / ${shown.cur} current bars for ${labels} labels`);
        assert(shown.selected === feature && shown.select === feature, `${feature}: the card or the selector does not show the selection`);
      }
      log(`      ${name}: distributions of ${features.join(', ')}`);
    });
  }

  await check('stream predictions: a model performance chart from the joined labels, as the API reports it', async () => {
    await page.click(`#stream-list .stream-item${attr('stream', 'predictions')}`);
    await waitFor(
      page,
      'the performance panel with >= 2 windows',
      () => {
        const panel = document.getElementById('performance-panel');
        const svg = document.querySelector('#performance-chart svg.performance-svg');
        return !panel.hidden && !!svg && Number(svg.dataset.points) >= 2;
      },
      null,
      DATA_TIMEOUT_MS,
    );
    const shown = await page.evaluate(() => ({
      metric: document.getElementById('performance-chart').dataset.metric,
      points: Number(document.querySelector('#performance-chart svg').dataset.points),
      options: [...document.querySelectorAll('#performance-select option')].map((o) => o.value),
      sub: document.getElementById('performance-sub').textContent,
    }));
    const [latest] = (await getJson(base, 'api/v1/reports?stream=predictions&limit=1')).slice(-1);
    assert(latest && latest.performance, 'the API report of predictions has no performance section');
    assert(latest.performance.task === 'binary', `task ${latest.performance.task}`);
    assert(shown.metric === 'accuracy', `the chart shows ${shown.metric}, expected accuracy for a binary task`);
    for (const m of Object.keys(latest.performance.windows[0].metrics)) {
      if (!m.endsWith('_bound')) assert(shown.options.includes(m), `the metric selector lacks ${m}: ${JSON.stringify(shown.options)}`);
    }
    assert(/labelled/.test(shown.sub), `the panel does not give the label coverage: "${shown.sub}"`);
    await page.selectOption('#performance-select', 'roc_auc');
    await waitFor(page, 'the chart to show roc_auc', () => document.getElementById('performance-chart').dataset.metric === 'roc_auc');
    const features = await page.evaluate(() => document.getElementById('performance-panel').hidden);
    assert(!features, 'the panel hid itself after a metric change');
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.mouse.move(0, 0);
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-performance.png'), fullPage: true });
    log(`      predictions: ${shown.points} performance windows, metrics ${shown.options.join(', ')}`);
  });

  await check('a stream without labels shows no performance panel', async () => {
    await page.click(`#stream-list .stream-item${attr('stream', 'features')}`);
    await waitFor(page, 'the features stream', () => document.getElementById('stream-detail').dataset.stream === 'features');
    const hidden = await page.evaluate(() => document.getElementById('performance-panel').hidden);
    assert(hidden, 'the performance panel shows for a stream without labels');
  });

  await check('the drift injected by the demo shows as "drift detected"', async () => {
    const remaining = DEMO_SECONDS * 1000 - (Date.now() - started) - 20_000;
    const timeout = Math.max(10_000, Math.min(90_000, remaining));
    await waitFor(page, 'a stream marked as drifted in the stream list', () => !!document.querySelector('#stream-list .stream-item[data-state="drift"]'), null, timeout);
    const name = await page.$eval('#stream-list .stream-item[data-state="drift"]', (b) => b.dataset.stream);
    await page.click(`#stream-list .stream-item${attr('stream', name)}`);
    await waitFor(page, `the drift state of ${name}`, (n) => {
      const d = document.getElementById('stream-detail');
      const v = document.getElementById('drift-state');
      return d.dataset.stream === n && v.dataset.state === 'drift' && /Drift detected/.test(v.textContent);
    }, name);
    const drifted = await page.$$eval('#feature-grid .feature-card[data-state="drift"]', (cards) => cards.map((c) => c.dataset.feature));
    const redPoints = await page.$$eval('#feature-grid .point-drift, #dataset-chart .point-drift', (pts) => pts.length);
    assert(drifted.length > 0, 'the stream is drifted but no feature card is');
    assert(redPoints > 0, 'no drifted point is highlighted');
    await page.click(`#feature-grid .feature-card${attr('feature', drifted[0])}`);
    await waitFor(page, `the distribution of ${drifted[0]}`, (f) => {
      const svg = document.querySelector('#distribution-chart svg.dist-svg');
      return !!svg && svg.dataset.feature === f;
    }, drifted[0]);
    log(`      ${name}: drift detected, drifted features ${drifted.join(', ')}`);
  });

  await check('screenshots: artifacts/dashboard.png and dashboard-narrow.png', async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    // A picture with some history reads better: up to 15 s more for a dozen windows.
    await page
      .waitForFunction(() => Number((document.querySelector('#dataset-chart svg') || { dataset: {} }).dataset.points) >= 12, null, { timeout: 15_000, polling: 500 })
      .catch(() => {});
    await page.mouse.move(0, 0);
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });
    await page.setViewportSize({ width: 420, height: 900 });
    // Charts are redrawn at their new width on the next frame after the resize.
    const narrow = () =>
      getComputedStyle(document.querySelector('.layout')).gridTemplateColumns.split(' ').length === 1 &&
      document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1;
    await waitFor(page, 'the narrow layout without sideways scrolling', narrow).catch(async (e) => {
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      throw new Error(`${e.message} (it scrolls sideways by ${overflow}px)`);
    });
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-narrow.png'), fullPage: true });
    await page.setViewportSize({ width: 1440, height: 900 });
  });

  await check('no console or page errors while live', async () => {
    assert(errors.length === 0, errors.join('\n'));
  });

  // States the demo does not reach by itself, made by intercepting the API in a second tab.
  await statesChecks(url);

  await check('the demo stops on SIGINT', async () => {
    const exit = await stopDemo();
    assert(exit && (exit.code === 0 || exit.signal === 'SIGINT' || exit.code === 130), `the demo ended with ${JSON.stringify(exit)}`);
  });
}

async function statesChecks(url) {
  const page = await context.newPage();
  let mode = 'auth';
  await page.route('**/api/**', async (route) => {
    const request = route.request();
    if (mode === 'down') return route.abort('connectionrefused');
    if (mode === 'empty') {
      const u = new URL(request.url());
      if (u.pathname.endsWith('/streams')) {
        return route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify([{ name: 'empty', topics: ['t'], format: 'json', windows_closed: 0, latest: null }]) });
      }
      if (u.pathname.endsWith('/reports')) return route.fulfill({ status: 200, contentType: 'application/json', body: '[]' });
      return route.fulfill({ status: 404, contentType: 'application/json', body: '{"error":"no window yet"}' });
    }
    if (mode === 'auth' && request.headers().authorization !== `Bearer ${TOKEN}`) {
      return route.fulfill({ status: 401, contentType: 'application/json', body: '{"error":"missing or wrong bearer token"}' });
    }
    return route.continue();
  });
  // The browser itself logs refused and unauthorized requests; the page must add nothing.
  const expectedNetwork = (text) => /Failed to load resource: (the server responded with a status of 401|net::ERR_CONNECTION_REFUSED|net::ERR_FAILED)/.test(text);
  const errors = watchErrors(page, 'states', expectedNetwork);

  await check('401: a token form; the token is kept and sent as a bearer token', async () => {
    await page.goto(url, { waitUntil: 'load' });
    await page.evaluate(() => window.localStorage.removeItem('driftscope.apiToken'));
    await page.reload({ waitUntil: 'load' });
    await waitFor(page, 'the token form', () => {
      const panel = document.getElementById('token-panel');
      return panel && !panel.hidden && document.getElementById('api-status').dataset.state === 'auth';
    });
    await page.fill('#token-input', 'wrong-token');
    await page.click('#token-form button[type="submit"]');
    await waitFor(page, 'the token form saying the token was rejected', () => {
      const panel = document.getElementById('token-panel');
      return !panel.hidden && /rejected/.test(document.getElementById('token-message').textContent);
    });
    const sent = page.waitForRequest((r) => r.url().includes('/api/v1/') && r.headers().authorization === `Bearer ${TOKEN}`, { timeout: UI_TIMEOUT_MS });
    await page.fill('#token-input', TOKEN);
    await page.click('#token-form button[type="submit"]');
    await sent;
    await waitFor(page, 'charts after the token', () => {
      const line = document.querySelector('#dataset-chart svg .series');
      return document.getElementById('token-panel').hidden && !!line && line.points.numberOfItems >= 2;
    }, null, DATA_TIMEOUT_MS);
    const stored = await page.evaluate(() => window.localStorage.getItem('driftscope.apiToken'));
    assert(stored === TOKEN, `localStorage holds ${JSON.stringify(stored)}`);
    await page.reload({ waitUntil: 'load' });
    await waitFor(page, 'charts after a reload with the stored token', () => {
      const line = document.querySelector('#dataset-chart svg .series');
      return document.getElementById('token-panel').hidden && !!line && line.points.numberOfItems >= 2;
    }, null, DATA_TIMEOUT_MS);
  });

  await check('API down: a message, the last data stays, polling goes on and recovers', async () => {
    mode = 'down';
    await waitFor(page, 'the "cannot reach" banner', () => {
      const b = document.getElementById('banner');
      return !b.hidden && /Cannot reach/.test(b.textContent) && document.getElementById('api-status').dataset.state === 'down';
    });
    const kept = await page.evaluate(() => !!document.querySelector('#dataset-chart svg .series'));
    assert(kept, 'the charts vanished while the API is down');
    mode = 'auth';
    await waitFor(page, 'recovery after the API is back', () => document.getElementById('banner').hidden && document.getElementById('api-status').dataset.state === 'live');
  });

  await check('empty history: a stream with no window yet shows a waiting state', async () => {
    mode = 'empty';
    await page.goto('about:blank');
    await page.goto(`${url}#stream=empty`, { waitUntil: 'load' });
    await waitFor(page, 'the waiting state', () => {
      const v = document.getElementById('drift-state');
      return document.getElementById('stream-detail').dataset.stream === 'empty' && v.dataset.state === 'pending' && /first window/.test(v.textContent) && !!document.querySelector('#dataset-chart .chart-empty');
    });
  });

  await check('no page errors in the token, API-down and empty states', async () => {
    await page.evaluate(() => window.localStorage.removeItem('driftscope.apiToken'));
    assert(errors.length === 0, errors.join('\n'));
  });
  await page.close();
}

// ---------------------------------------------------------------- run

async function cleanUp() {
  if (context) await context.close().catch(() => {});
  context = null;
  await stopDemo().catch(() => {});
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  userDataDir = null;
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (demo && !demo.exited) demo.kill('SIGKILL');
    process.exit(130);
  });
}

let fatal = null;
try {
  await main();
} catch (e) {
  fatal = e;
} finally {
  await cleanUp();
}

const passed = results.filter((r) => r.ok).length;
const failed = results.length - passed + (fatal ? 1 : 0);
if (fatal) log(`FAIL  ${fatal.message}`);
if (failed) {
  process.stdout.write(`\nThe demo's last output:\n${demoTail() || '(nothing)'}\n`);
  for (const r of results.filter((x) => !x.ok)) process.stdout.write(`\nfailed: ${r.name}\n  ${r.error && r.error.message}\n`);
}
if (existsSync(path.join(ARTIFACTS, 'dashboard.png'))) log(`screenshot: ${path.join(ARTIFACTS, 'dashboard.png')}`);
process.stdout.write(`\ndashboard: ${passed} passed, ${failed} failed\n`);
process.exit(failed ? 1 : 0);
