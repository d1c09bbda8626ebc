// Persistence (web/src/store.js), the latency badge (web/src/format.js) and the build (web/build.mjs).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';

import { build, parse } from '../build.mjs';
import { badge, finishLabel } from '../src/format.js';
import { KEPT_MESSAGES, remember, Store } from '../src/store.js';

class MemoryStorage {
  constructor() { this.items = new Map(); }
  getItem(k) { return this.items.has(k) ? this.items.get(k) : null; }
  setItem(k, v) { this.items.set(k, String(v)); }
}

test('store: a saved conversation loads back; garbage loads as nothing', () => {
  const storage = new MemoryStorage();
  const store = new Store(storage, 'ws://h/ws');
  assert.deepEqual(store.load(), { session: null, log: [], inflight: null });
  const inflight = { messageId: 'm_1', responseId: 'r_1', lastSeq: 4, text: 'Hel' };
  store.save({ session_id: 's', resume_token: 't', inflight }, [{ role: 'user', text: 'hi' }]);
  assert.deepEqual(store.load(), { session: { id: 's', token: 't' }, log: [{ role: 'user', text: 'hi' }], inflight });
  assert.deepEqual(new Store(storage, 'other').load().session, null); // one key per widget
  storage.setItem('rtchat:v1:ws://h/ws', '{not json');
  assert.deepEqual(store.load(), { session: null, log: [], inflight: null });
  storage.setItem('rtchat:v1:ws://h/ws', JSON.stringify({ log: [{ role: 'user' }, null, { role: 'user', text: 'ok' }], inflight }));
  assert.deepEqual(store.load(), { session: null, log: [{ role: 'user', text: 'ok' }], inflight: null }); // no session: nothing to resume
});

test('store: no storage, or a full one, never breaks the widget', () => {
  const none = new Store(null, 'k');
  assert.deepEqual(none.load(), { session: null, log: [], inflight: null });
  none.save({ session_id: 's' }, []);
  const full = new Store({ getItem: () => null, setItem: () => { throw new Error('QuotaExceededError'); } }, 'k');
  full.save({ session_id: 's' }, []);
});

test('store: the transcript keeps the newest messages', () => {
  let log = [];
  for (let i = 0; i < KEPT_MESSAGES + 5; i++) log = remember(log, { role: 'user', text: String(i) });
  assert.equal(log.length, KEPT_MESSAGES);
  assert.equal(log[0].text, '5');
});

test('badge: route, time to first token and rate, while streaming and once done', () => {
  const route = { use_case: 'chat', model: 'smollm2', decision: 'full', worker: 'w1', confidence: 0.9, route_ms: 1.5 };
  const live = badge({ route, ttft: 12, tokens: 9 }, { elapsed_ms: 112 }, null);
  assert.deepEqual(live.parts.map((p) => p.text), ['chat', 'smollm2', 'full', 'TTFT 12 ms', '80.0 tok/s']);
  assert.match(live.title, /^route: chat → smollm2 on w1 \(full, confidence 0.9, routing 1.5 ms\)$/);
  const done = badge({ route, ttft: 12, tokens: 9 }, null, { stats: { tokens_per_s: 75, total_ms: 1500 }, usage: { completion_tokens: 9 } });
  assert.equal(done.parts.at(-1).text, '75.0 tok/s');
  assert.match(done.title, /\ntotal 1.50 s, 9 tokens$/);
  assert.deepEqual(badge({ route: null, ttft: null, tokens: 0 }, null, null), { parts: [], title: '' });
  assert.equal(finishLabel({ finish_reason: 'cancelled' }, false), 'Stopped');
  assert.equal(finishLabel({ finish_reason: 'length' }, false), 'Cut off at the length limit');
  assert.equal(finishLabel({ finish_reason: 'error' }, true), 'Interrupted');
  assert.equal(finishLabel({ finish_reason: 'error', rejected: true }, false), 'Not answered');
  assert.equal(finishLabel({ finish_reason: 'stop' }, false), null);
});

test('build: modules become scopes, imports become bindings, in dependency order', () => {
  const files = {
    '/x/src/main.js': "import { a, b as c } from './lib.js';\nimport * as util from './util.js';\nconsole.log(a, c, util.u);\n",
    '/x/src/lib.js': "import { u } from './util.js';\nexport const a = u + 1;\nexport function b() { return a; }\nconst hidden = 2;\n",
    '/x/src/util.js': 'export const u = 1;\n',
  };
  const out = build('/x/src/main.js', (f) => files[f]);
  assert.ok(out.indexOf('const util = (() => {') < out.indexOf('const lib = (() => {'));
  assert.ok(out.includes('const { a, b: c } = lib;') && out.includes('const util = util') === false);
  assert.ok(out.includes('return { a, b };') && !out.includes('return { a, b, hidden'));
  const logged = [];
  new Function('console', out)({ log: (...v) => logged.push(v) }); // eslint-disable-line no-new-func
  assert.deepEqual(logged, [[2, logged[0][1], 1]]);
  assert.equal(logged[0][1](), 2);
  assert.throws(() => parse('/x/a.js', "import x from 'pkg';\n"), /cannot build|only relative/);
  assert.throws(() => parse('/x/a.js', 'export default 1;\n'), /cannot build/);
  assert.throws(() => build('/x/a.js', (f) => (f === '/x/a.js' ? "import { b } from './b.js';\n" : "import { a } from './a.js';\n")), /import cycle/);
  assert.ok(join('a', 'b')); // node:path is what the build uses for module paths
});
