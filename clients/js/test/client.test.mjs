// rtclient against live `rtserver serve` processes (real sockets, embedded synthetic
// engine, whose answers are deterministic). Run: PYTHON=/path/to/venv/python node --test test/client.test.mjs
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';

import { RtClient, RtError, backoffDelay, base64 } from '../src/index.js';
import { msgpackCodec } from '../src/msgpack.js';
import { expectedText, hasRedis, hs256, startGateway, startRedis, stopProcess } from './servers.mjs';

/** The ws WebSocket, remembering every socket opened and every token frame received raw. */
function tapped() {
  const sockets = [];
  const rawSeqs = [];
  class Tap extends WebSocket {
    constructor(...args) {
      super(...args);
      sockets.push(this);
      this.addEventListener('message', (ev) => {
        const f = typeof ev.data === 'string' ? JSON.parse(ev.data) : null;
        if (f && f.type === 'token') rawSeqs.push(f.seq);
      });
    }
  }
  return { Tap, sockets, rawSeqs };
}

async function collect(reply) {
  const tokens = [];
  for await (const t of reply) tokens.push(t);
  return { tokens, done: await reply.done, text: tokens.map((t) => t.text).join('') };
}

const seqsOf = (tokens) => tokens.flatMap((t) => Array.from({ length: t.seqLast - t.seq + 1 }, (_, i) => t.seq + i));
const range = (n) => Array.from({ length: n }, (_, i) => i);

function until(client, event, pred = () => true) {
  return new Promise((resolve) => {
    const off = client.on(event, (x) => { if (pred(x)) { off(); resolve(x); } });
  });
}

describe('pure helpers', () => {
  test('backoff grows exponentially with jitter and a cap', () => {
    assert.equal(backoffDelay(0, { baseMs: 100, capMs: 1000 }, () => 0), 50);
    assert.equal(backoffDelay(0, { baseMs: 100, capMs: 1000 }, () => 1), 100);
    assert.equal(backoffDelay(3, { baseMs: 100, capMs: 1000 }, () => 1), 800);
    assert.equal(backoffDelay(10, { baseMs: 100, capMs: 1000 }, () => 1), 1000);
  });
  test('base64 matches the standard encoding', () => {
    for (const s of ['', 'a', 'ab', 'abc', 'hello world!']) {
      assert.equal(base64(new TextEncoder().encode(s)), Buffer.from(s).toString('base64'));
    }
  });
  test('an address the WebSocket refuses fails connect() instead of throwing elsewhere', async () => {
    const client = new RtClient({ url: 'not a url', WebSocket });
    await assert.rejects(client.connect(), (e) => e instanceof RtError && e.code === 'refused');
    assert.equal(client.state, 'failed');
  });
  test('no WebSocket at all is a clear error', () => {
    if (typeof globalThis.WebSocket === 'function') return;
    assert.throws(() => new RtClient({ url: 'ws://x/ws' }), /pass opts.WebSocket/);
  });
});

describe('one gateway', () => {
  const N = 40;
  let gw;
  before(async () => { gw = await startGateway(['--synthetic-tokens', String(N), '--synthetic-rate', '100']); });
  after(async () => { if (gw) await stopProcess(gw.proc); });

  for (const [name, codec] of [['json', undefined], ['msgpack', msgpackCodec]]) {
    test(`a conversation in ${name}`, async () => {
      const client = new RtClient({ url: gw.url, codec, WebSocket });
      const routes = [];
      const dones = [];
      client.on('route', (r) => routes.push(r));
      client.on('done', (d) => dones.push(d));
      const session = await client.connect();
      assert.equal(session.resumed, false);
      for (const text of ['hello there', 'and a second turn']) {
        const reply = client.send(text, { context: { app: 'test' } });
        const route = await reply.route;
        assert.equal(route.message_id, reply.messageId);
        const { tokens, done, text: answer } = await collect(reply);
        assert.equal(answer, expectedText(N));
        assert.deepEqual(seqsOf(tokens), range(N));
        assert.equal(typeof tokens[0].stats.ttft_ms, 'number');
        assert.equal(done.finish_reason, 'stop');
        assert.equal(done.last_seq, N - 1);
      }
      assert.equal(routes.length, 2);
      assert.equal(dones.length, 2);
      assert.equal(routes[1].decision, 'bypass'); // the same conversation: pinned
      client.close();
    });
  }

  test('attachments travel in both encodings', async () => {
    for (const codec of [undefined, msgpackCodec]) {
      const client = new RtClient({ url: gw.url, codec, WebSocket });
      await client.connect();
      const reply = client.send('what is in this file?', {
        attachments: [{ kind: 'file', mime: 'text/plain', data: new TextEncoder().encode('some notes') }],
      });
      assert.equal((await collect(reply)).done.finish_reason, 'stop');
      client.close();
    }
  });

  test('cancel stops the answer', async () => {
    const client = new RtClient({ url: gw.url, WebSocket });
    await client.connect();
    const reply = client.send('a long answer please');
    const seen = [];
    for await (const t of reply) {
      seen.push(t);
      if (seen.length === 3) client.cancel();
    }
    const done = await reply.done;
    assert.equal(done.finish_reason, 'cancelled');
    assert.ok(done.last_seq < N - 1, `cancelled at ${done.last_seq}`);
    // the connection goes on
    assert.equal((await collect(client.send('next'))).done.finish_reason, 'stop');
    client.close();
  });

  test('cancel before the route arrives still ends the answer', async () => {
    const client = new RtClient({ url: gw.url, WebSocket });
    await client.connect();
    const reply = client.send('stop right away');
    client.cancel();
    const done = await reply.done;
    assert.equal(done.finish_reason, 'cancelled');
    client.close();
  });

  test('a socket killed mid-answer is resumed once, with no lost or repeated token', async () => {
    const { Tap, sockets, rawSeqs } = tapped();
    const client = new RtClient({ url: gw.url, WebSocket: Tap, backoff: { baseMs: 100, capMs: 1000 } });
    await client.connect();
    const reply = client.send('tell me a long story');
    const tokens = [];
    for await (const t of reply) {
      tokens.push(t);
      if (tokens.length === 10) sockets[0].terminate(); // the network drops: no close frame
    }
    const done = await reply.done;
    assert.equal(sockets.length, 2);
    assert.equal(client.reconnects, 1);
    assert.deepEqual(seqsOf(tokens), range(N));
    assert.equal(tokens.map((t) => t.text).join(''), expectedText(N));
    assert.equal(done.last_seq, N - 1);
    assert.equal(new Set(rawSeqs).size, rawSeqs.length, 'the server sent no token twice');
    client.close();
  });

  test('cancel while the socket is down is sent after the resume', async () => {
    const { Tap, sockets } = tapped();
    const client = new RtClient({ url: gw.url, WebSocket: Tap, backoff: { baseMs: 100, capMs: 1000 } });
    await client.connect();
    const reply = client.send('a story to stop');
    for await (const t of reply) {
      if (t.seq === 4) { sockets[0].terminate(); client.cancel(); }
    }
    const done = await reply.done;
    assert.equal(done.finish_reason, 'cancelled');
    assert.equal(client.reconnects, 1);
    client.close();
  });

  test('adopt() resumes an answer stored by an earlier client (a page reload)', async () => {
    const first = new RtClient({ url: gw.url, WebSocket });
    await first.connect();
    const reply = first.send('a story to carry over');
    for await (const t of reply) if (t.seq >= 7) break;
    const stored = { session: first.session, messageId: reply.messageId, responseId: reply.responseId,
      lastSeq: reply.lastSeq, text: reply.text };
    first.close(); // the page goes away; the answer keeps generating for the resume grace
    const second = new RtClient({ url: gw.url, WebSocket, session: stored.session });
    const adopted = second.adopt(stored);
    const session = await second.connect();
    assert.equal(session.resumed, true);
    const rest = await collect(adopted);
    assert.deepEqual(seqsOf(rest.tokens), range(N).slice(stored.lastSeq + 1));
    assert.equal(stored.text + rest.text, expectedText(N));
    second.close();
  });

  test('probe() drops a socket that does not answer a ping, and the client comes back', async () => {
    const client = new RtClient({ url: gw.url, WebSocket, backoff: { baseMs: 100, capMs: 500 } });
    await client.connect();
    client.probe(1000); // a live socket answers: nothing happens
    await sleep(1500);
    assert.equal(client.reconnects, 0);
    const closed = until(client, 'close');
    process.kill(gw.proc.pid, 'SIGSTOP'); // the gateway hangs: no pong
    try {
      client.probe(500);
      assert.equal((await closed).reason, 'no pong');
    } finally {
      process.kill(gw.proc.pid, 'SIGCONT');
    }
    const session = await until(client, 'session');
    assert.equal(session.resumed, true);
    assert.equal((await collect(client.send('back?'))).done.finish_reason, 'stop');
    client.close();
  });

  test('a busy client refuses a second send', async () => {
    const client = new RtClient({ url: gw.url, WebSocket });
    await client.connect();
    const reply = client.send('first');
    assert.throws(() => client.send('second'), (e) => e instanceof RtError && e.code === 'busy');
    await reply.done;
    client.close();
  });
});

describe('two gateways sharing redis', { skip: !hasRedis() && 'no redis-server binary' }, () => {
  const N = 60;
  let redis;
  let a;
  let b;
  before(async () => {
    redis = await startRedis();
    const args = ['--redis', redis.url, '--key-prefix', `rtc${process.pid}`, '--synthetic-tokens', String(N),
      '--synthetic-rate', '40', '--shutdown-grace-s', '10'];
    [a, b] = await Promise.all([startGateway(args), startGateway(args)]);
  });
  after(async () => {
    await Promise.all([a, b].filter(Boolean).map((g) => stopProcess(g.proc)));
    if (redis) await redis.stop();
  });

  test('a gateway restart: the answer completes and the client goes on on the other gateway', async () => {
    const client = new RtClient({ url: [a.url, b.url], WebSocket, backoff: { baseMs: 100, capMs: 1000 } });
    await client.connect();
    const reply = client.send('tell me about restarts');
    const tokens = [];
    let exited = null;
    for await (const t of reply) {
      tokens.push(t);
      if (tokens.length === 5) exited = stopProcess(a.proc, 'SIGTERM');
    }
    assert.deepEqual(seqsOf(tokens), range(N));
    assert.equal((await reply.done).finish_reason, 'stop');
    const session = await until(client, 'session');
    assert.equal(session.resumed, true);
    assert.equal(client.url, b.url);
    const next = await collect(client.send('and after the restart?'));
    assert.equal(next.text, expectedText(N));
    assert.equal((await next.done).finish_reason, 'stop');
    assert.equal(await exited, 0);
    client.close();
  });
});

describe('short-lived tokens', () => {
  const SECRET = 'js-client-test-secret-of-32-bytes!!';
  let gw;
  before(async () => {
    gw = await startGateway(['--auth-secret', SECRET, '--auth-expiry-warning-s', '1', '--auth-leeway-s', '0',
      '--synthetic-tokens', '10', '--synthetic-rate', '100']);
  });
  after(async () => { if (gw) await stopProcess(gw.proc); });

  test('getToken refreshes the socket before expiry, without reconnecting', async () => {
    let calls = 0;
    const client = new RtClient({ url: gw.url, WebSocket, getToken: async () => { calls += 1; return hs256(SECRET, 'alice', 3); } });
    const refreshed = [];
    client.on('refreshed', (f) => refreshed.push(f));
    const closes = [];
    client.on('close', (c) => closes.push(c));
    await client.connect();
    const start = Date.now();
    while (Date.now() - start < 7000) { // more than two token lifetimes
      assert.equal((await collect(client.send('still here?'))).done.finish_reason, 'stop');
      await sleep(500);
    }
    assert.deepEqual(closes, []);
    assert.equal(client.reconnects, 0);
    assert.ok(refreshed.length >= 2, `${refreshed.length} refreshes`);
    assert.ok(calls >= 3, `${calls} getToken calls`);
    client.close();
  });

  test('an auth close calls getToken again and reconnects', async () => {
    const tokens = [hs256(SECRET, 'bob', -60), hs256(SECRET, 'bob', 60)]; // expired, then good
    let calls = 0;
    const client = new RtClient({ url: gw.url, WebSocket, backoff: { baseMs: 100, capMs: 500 },
      getToken: async () => tokens[Math.min(calls++, 1)] });
    const closes = [];
    client.on('close', (c) => closes.push(c.code));
    await client.connect();
    assert.deepEqual(closes, [4001]);
    assert.equal(calls, 2);
    assert.equal((await collect(client.send('hi'))).done.finish_reason, 'stop');
    client.close();
  });

  test('a token the server keeps refusing fails the connection after a few tries', async () => {
    const client = new RtClient({ url: gw.url, WebSocket, getToken: async () => hs256(SECRET, 'eve', -60) });
    await assert.rejects(client.connect(), (e) => e instanceof RtError && e.code === 'unauthorized');
    assert.equal(client.state, 'failed');
  });
});
