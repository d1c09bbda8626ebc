// Per-token render cost of the chat widget for a long streamed answer: the widget before the
// module split (full re-render of the answer on every token; `git show main:web/rtchat.js`, or
// --old FILE) against web/rtchat.js (only the open blocks at the end re-rendered), side by side
// in one run, in headless chromium (playwright-core from tests/e2e/node_modules).
//
//   node bench/widget_render.mjs [--tokens 2000] [--repeat 2] [--old FILE] [--out bench/results/widget_render.json]
//
// Each token frame goes through the widget's own handleFrame (the test hook) in a page with
// rtchat.css; the time of that call includes the DOM work and the style/layout it forces (the
// widget reads scrollHeight to keep the view at the bottom), not painting. Two answers: "mixed"
// (paragraphs, headings, lists and short code blocks, as a model writes) and "code" (one fenced
// code block of the whole length). Node's own timing of the pure markdown step (full render vs
// incremental update) is reported too. Bounded: a few thousand frames per run.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

import { IncrementalMarkdown, render } from '../web/src/markdown.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(ROOT, 'tests', 'e2e', 'package.json'));
const { chromium } = require('playwright-core');

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
const TOKENS = Number(args.tokens || 2000);
const REPEAT = Number(args.repeat || 2); // about 1 min a repeat at 2,000 tokens on a loaded 2-core box
const OUT = args.out || join(ROOT, 'bench', 'results', 'widget_render.json');
const CHROMIUM = args.chromium || process.env.CHROMIUM || '/usr/bin/chromium';

const OLD = args.old ? readFileSync(args.old, 'utf8') : execFileSync('git', ['show', 'main:web/rtchat.js'], { cwd: ROOT, encoding: 'utf8' });
const NEW = readFileSync(join(ROOT, 'web', 'rtchat.js'), 'utf8');
const CSS = readFileSync(join(ROOT, 'web', 'rtchat.css'), 'utf8');

// ------------------------------------------------------------------ the answers, as token texts

function mixedAnswer(n) {
  const words = 'the gateway keeps each stream in order and a resume replays what the socket missed so no text is lost or doubled'.split(' ');
  const tokens = [];
  let w = 0;
  const say = (k) => { for (let i = 0; i < k; i++) tokens.push(`${i ? ' ' : ''}${words[w++ % words.length]}`); };
  for (let s = 0; tokens.length < n; s++) {
    tokens.push(`## Part ${s + 1}`, '\n\n');
    say(40); tokens.push(' **note**', ' and', ' `code`', '.', '\n\n');
    for (let i = 0; i < 4; i++) { tokens.push('- '); say(8); tokens.push('\n'); }
    tokens.push('\n', '```python', '\n');
    for (let i = 0; i < 6; i++) tokens.push('def', ` f${i}`, '(x):', '\n', '    return', ' x', ` * ${i}`, '\n');
    tokens.push('```', '\n\n');
    say(30); tokens.push('.', '\n\n');
  }
  return tokens.slice(0, n);
}

function codeAnswer(n) {
  const tokens = ['Here it is:', '\n\n', '```js', '\n'];
  for (let i = 0; tokens.length < n; i++) tokens.push('const', ` v${i}`, ' =', ` compute(${i});`, '\n');
  return tokens.slice(0, n);
}

const ANSWERS = { mixed: mixedAnswer(TOKENS), code: codeAnswer(TOKENS) };

// ------------------------------------------------------------------ in the browser

const PAGE = '<!doctype html><html><head><meta charset="utf-8"><style>body{margin:0}</style></head><body>'
  + '<div id="chat" style="height:700px;width:480px"></div>'
  + '<script src="/rtchat.js" data-target="#chat" data-url="ws://127.0.0.1:9/ws" data-test-hook></script></body></html>';

async function browserRun(browser, code, tokens) {
  const context = await browser.newContext({ viewport: { width: 1024, height: 800 } });
  const page = await context.newPage();
  const isolated = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' }; // fine-grained performance.now()
  await page.route('http://localhost:9/**', (route) => {
    const path = new URL(route.request().url()).pathname;
    const [body, type] = path === '/rtchat.js' ? [code, 'text/javascript'] : path === '/rtchat.css' ? [CSS, 'text/css'] : [PAGE, 'text/html'];
    route.fulfill({ status: 200, headers: { ...isolated, 'Content-Type': type }, body });
  });
  await page.goto('http://localhost:9/index.html');
  await page.waitForFunction(() => window.RtChat && window.RtChat.instances.length > 0 && window.__rtchatTest);
  const times = await page.evaluate((tokens) => {
    const t = window.__rtchatTest;
    t.expect('m_bench');
    t.frame({ type: 'route', response_id: 'r_bench', message_id: 'm_bench', use_case: 'chat', model: 'bench', worker: 'w', decision: 'full', confidence: 1, route_ms: 1 });
    const out = new Float64Array(tokens.length);
    for (let i = 0; i < tokens.length; i++) {
      const f = { type: 'token', response_id: 'r_bench', seq: i, text: tokens[i], stats: { ttft_ms: 5, gap_ms: 1, route_ms: 1, queue_ms: 0, elapsed_ms: 5 + i } };
      const t0 = performance.now();
      t.frame(f);
      out[i] = performance.now() - t0;
    }
    t.frame({ type: 'done', response_id: 'r_bench', finish_reason: 'stop', last_seq: tokens.length - 1, usage: { prompt_tokens: 1, completion_tokens: tokens.length }, stats: { ttft_ms: 5, total_ms: 100, tokens_per_s: 100 } });
    return { times: Array.from(out), isolated: window.crossOriginIsolated, text: document.querySelector('.rtc-msg-assistant .rtc-body').textContent.length };
  }, tokens);
  await context.close();
  return times;
}

// ------------------------------------------------------------------ in Node: the markdown step alone

function nodeRun(tokens) {
  const full = [];
  const inc = [];
  const md = new IncrementalMarkdown();
  let text = '';
  for (const tok of tokens) {
    text += tok;
    let t0 = performance.now();
    render(text);
    full.push(performance.now() - t0);
    t0 = performance.now();
    md.update(text);
    inc.push(performance.now() - t0);
  }
  return { full, inc };
}

// ------------------------------------------------------------------ numbers

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]; };
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;

function summarize(times) {
  const tail = times.slice(-200);
  return { total_ms: times.reduce((a, b) => a + b, 0), mean_ms: mean(times), p50_ms: pct(times, 50), p95_ms: pct(times, 95),
    max_ms: Math.max(...times), first200_mean_ms: mean(times.slice(0, 200)), last200_mean_ms: mean(tail) };
}

/** The median over runs of each figure. */
function medianOf(runs) {
  const out = {};
  for (const k of Object.keys(runs[0])) out[k] = median(runs.map((r) => r[k]));
  return out;
}

const fmt = (x) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(3));

async function main() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const chromiumVersion = browser.version();
  const result = { tokens: TOKENS, repeat: REPEAT, answers: {} };
  try {
    for (const [name, tokens] of Object.entries(ANSWERS)) {
      const runs = { old: [], new: [] };
      let isolated = null;
      for (let r = 0; r < REPEAT; r++) {
        for (const which of r % 2 ? ['new', 'old'] : ['old', 'new']) { // alternate the order: neither always runs first
          const { times, isolated: iso, text } = await browserRun(browser, which === 'old' ? OLD : NEW, tokens);
          isolated = iso;
          runs[which].push({ ...summarize(times), chars: text });
        }
      }
      const node = [];
      for (let r = 0; r < REPEAT; r++) {
        const { full, inc } = nodeRun(tokens);
        node.push({ full_mean_ms: mean(full), inc_mean_ms: mean(inc), full_last200_ms: mean(full.slice(-200)), inc_last200_ms: mean(inc.slice(-200)) });
      }
      result.answers[name] = { chars: tokens.join('').length, cross_origin_isolated: isolated, browser: { old: medianOf(runs.old), new: medianOf(runs.new), runs }, node_markdown: medianOf(node) };
    }
  } finally {
    await browser.close();
  }

  console.log(`widget render cost per token, ${TOKENS} tokens, median of ${REPEAT} runs (ms)`);
  const rows = [['answer', 'figure', 'old (main)', 'new', 'old / new']];
  for (const [name, a] of Object.entries(result.answers)) {
    for (const k of ['total_ms', 'mean_ms', 'p50_ms', 'p95_ms', 'max_ms', 'first200_mean_ms', 'last200_mean_ms']) {
      rows.push([`${name} (${a.chars} chars)`, `browser ${k}`, fmt(a.browser.old[k]), fmt(a.browser.new[k]), (a.browser.old[k] / a.browser.new[k]).toFixed(1)]);
    }
    const n = a.node_markdown;
    rows.push([name, 'node markdown mean_ms (full / incremental)', fmt(n.full_mean_ms), fmt(n.inc_mean_ms), (n.full_mean_ms / n.inc_mean_ms).toFixed(1)]);
    rows.push([name, 'node markdown last200_ms (full / incremental)', fmt(n.full_last200_ms), fmt(n.inc_last200_ms), (n.full_last200_ms / n.inc_last200_ms).toFixed(1)]);
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
  for (const r of rows) console.log(r.map((v, c) => (c < 2 ? String(v).padEnd(widths[c]) : String(v).padStart(widths[c]))).join('  '));

  const payload = {
    benchmark: 'widget_render',
    machine: { nproc: cpus().length, cpu_model: cpus()[0] ? cpus()[0].model : '?', node: process.version, chromium: chromiumVersion,
      kernel: release(), date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC' },
    command: ['node', 'bench/widget_render.mjs', ...process.argv.slice(2)].join(' '),
    ...result,
  };
  mkdirSync(dirname(OUT), { recursive: true });
  writeFileSync(OUT, `${JSON.stringify(payload, null, 2)}\n`);
  console.log(`wrote ${OUT}`);
}

await main();
