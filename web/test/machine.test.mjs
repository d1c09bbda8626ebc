// The widget's conversation machine (web/src/machine.js): events in, effects out, plain values.
// Expected texts and codes follow docs/widget.md ("Network trouble") and docs/protocol.md.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Machine } from '../src/machine.js';

const session = (extra = {}) => ({ type: 'session', session_id: 's_1', resume_token: 'rt_1', ...extra });
const route = (mid = 'm_1', rid = 'r_1') => ({ type: 'route', message_id: mid, response_id: rid, use_case: 'chat', model: 'm', decision: 'full' });
const token = (seq, text, extra = {}) => ({ type: 'token', response_id: 'r_1', seq, text, ...extra });
const types = (fx) => fx.map((e) => e.type);
const notices = (fx) => fx.filter((e) => e.type === 'notice').map((e) => e.text);

/** A machine that is online with an answer to m_1 streaming as r_1. */
function streaming() {
  const m = new Machine();
  m.connecting();
  m.opened(false);
  m.frame(session());
  m.begin('m_1', { type: 'message', id: 'm_1', text: 'hi' });
  m.frame(route());
  return m;
}

test('tokens: text appended once per seq; replays and other responses are ignored', () => {
  const m = streaming();
  assert.deepEqual(types(m.frame(token(0, 'Hel', { stats: { ttft_ms: 12 } }))), ['text', 'persistSoon']);
  assert.deepEqual(m.frame(token(0, 'Hel')), []); // a replayed seq
  m.frame(token(1, 'lo', { seq_last: 3 })); // a coalesced frame: seqs 1..3
  m.frame({ ...token(4, 'FOREIGN'), response_id: 'r_other' });
  m.frame(token(6, '!')); // seq 5 never came
  const a = m.answer;
  assert.equal(a.text, 'Hello!');
  assert.deepEqual([a.lastSeq, a.tokens, a.dupes, a.gaps, a.ttft], [6, 5, 1, 1, 12]);
});

test('done ends the answer; a foreign done does not', () => {
  const m = streaming();
  m.frame(token(0, 'x'));
  assert.deepEqual(m.frame({ type: 'done', response_id: 'r_other', finish_reason: 'stop' }), []);
  const fx = m.frame({ type: 'done', response_id: 'r_1', finish_reason: 'stop', last_seq: 0 });
  assert.deepEqual(types(fx), ['finish']);
  assert.equal(fx[0].answer.text, 'x');
  assert.equal(m.answer, null);
});

test('the connection states and what the widget says about them', () => {
  const table = [
    // [close code, can refresh auth, was online, with an answer, expected state, detail, notice]
    [1006, false, true, false, 'reconnecting', null, 'Connection lost; reconnecting…'],
    [1012, false, true, false, 'reconnecting', null, 'The server is restarting; reconnecting…'],
    [1006, false, false, false, 'reconnecting', null, null],
    [4001, false, true, true, 'offline', 'Not authorized', 'The server refused the connection: why.'],
    [4005, false, true, false, 'offline', 'Not authorized', 'The server refused the connection: why.'],
    [4004, false, true, false, 'offline', 'Not allowed on this site', 'The server refused the connection: why.'],
    [4001, true, true, false, 'reconnecting', null, 'Connection lost; reconnecting…'],
    [4003, false, true, false, 'paused', 'Idle', null],
    [4003, false, true, true, 'reconnecting', null, 'Connection lost; reconnecting…'],
    [4010, false, true, true, 'paused', 'Open in another tab', 'This conversation continued in another tab or window. Type here to start a new one in this tab.'],
  ];
  for (const [code, canRefresh, online, withAnswer, state, detail, said] of table) {
    const m = withAnswer ? streaming() : new Machine();
    if (online && !withAnswer) m.frame(session());
    const fx = m.closed(code, 'why', canRefresh);
    const st = fx.filter((e) => e.type === 'state').pop();
    const label = `close ${code}`;
    assert.equal(m.state, state, label);
    assert.equal(st.detail, detail, label);
    assert.deepEqual(notices(fx), said ? [said] : [], label);
    if (withAnswer && ['offline', 'paused'].includes(state)) {
      assert.ok(types(fx).includes('finish'), `${label}: the answer is marked interrupted`);
      assert.equal(fx.find((e) => e.type === 'finish').interrupted, true, label);
    }
  }
  const idle = new Machine();
  idle.frame(session());
  assert.ok(types(idle.closed(4003, '', false)).includes('pauseClient'));
  assert.equal(idle.lazy, true);
  const moved = streaming();
  moved.closed(4010, '', false);
  assert.equal(moved.session, null); // the other tab holds the only valid token
  assert.equal(moved.snapshot().session_id, undefined);
});

test('a fatal error frame is said once, not again by the close that follows', () => {
  const m = new Machine();
  m.frame(session());
  assert.deepEqual(notices(m.frame({ type: 'error', code: 'unauthorized', message: 'bad token', fatal: true })), ['Error: bad token']);
  assert.deepEqual(notices(m.closed(4001, 'bad token', false)), []);
});

test('resume: reconnected, or a new conversation explained, or the cut answer interrupted', () => {
  const m = streaming();
  m.frame(token(0, 'a'));
  m.closed(1006, '', false);
  m.connecting();
  m.opened(true);
  const fx = m.frame(session({ resumed: true }), true);
  assert.deepEqual(notices(fx), ['Reconnected; the conversation goes on.']);
  assert.equal(m.state, 'online');
  assert.notEqual(m.answer, null); // the replay goes on

  const lost = streaming();
  lost.frame(token(0, 'a'));
  lost.closed(1006, '', false);
  lost.opened(true);
  assert.deepEqual(lost.frame({ type: 'error', code: 'session_not_found', message: 'gone' }), []);
  const fx2 = lost.frame(session({ session_id: 's_2', resumed: false }), true);
  assert.match(notices(fx2)[0], /^Started a new conversation: the server no longer knows this conversation/);
  assert.ok(fx2.some((e) => e.type === 'remember' && e.role === 'notice'));
  assert.equal(fx2.find((e) => e.type === 'finish').interrupted, true);
  assert.equal(lost.session.id, 's_2');

  const expired = new Machine({ id: 's_1', token: 'rt_1' });
  expired.opened(true);
  expired.frame({ type: 'error', code: 'session_expired', message: 'expired' });
  assert.match(notices(expired.frame(session({ resumed: false }), true))[0], /the conversation expired/);
  const quiet = new Machine({ id: 's_1', token: 'rt_1' });
  quiet.opened(true);
  assert.deepEqual(notices(quiet.frame(session({ resumed: false }), false)), []); // nothing on screen to explain
});

test('a message typed while offline is queued and sent when the session is back', () => {
  const m = new Machine();
  m.connecting();
  m.begin('m_1', { type: 'message', id: 'm_1', text: 'hi' });
  assert.equal(m.queued.id, 'm_1');
  m.opened(false);
  assert.ok(types(m.frame(session())).includes('sending'));
  assert.equal(m.queued, null);
  assert.notEqual(m.answer, null);
});

test('stop: a queued message is dropped, a streaming answer is cancelled', () => {
  const q = new Machine();
  q.begin('m_1', { type: 'message', id: 'm_1', text: 'hi' });
  const fx = q.stop(true);
  assert.deepEqual(types(fx), ['cancel', 'finish']);
  assert.equal(fx[1].done.finish_reason, 'cancelled');
  const s = streaming();
  assert.deepEqual(s.stop(false), [{ type: 'stopping' }, { type: 'cancel', via: 'frame', responseId: 'r_1' }]);
  assert.equal(s.answer.stopping, true);
  assert.deepEqual(new Machine().stop(true), []);
});

test('error frames: which are the answer\'s, and what each does', () => {
  const rejected = streaming();
  rejected.answer.responseId = null; // still waiting for its route
  const fx = rejected.frame({ type: 'error', code: 'rate_limited', message: 'slow down', retryable: true });
  assert.deepEqual(fx.find((e) => e.type === 'warn'), { type: 'warn', text: 'slow down (you can send it again)', kind: 'error' });
  assert.equal(fx.find((e) => e.type === 'finish').done.rejected, true); // no done follows a rejected message

  const busy = streaming();
  const fxb = busy.frame({ type: 'error', code: 'busy', message: 'busy', ref: 'm_1' });
  assert.equal(fxb[0].text, 'The previous answer is still finishing; try again in a moment.');

  const image = streaming();
  const warn = { type: 'error', code: 'attachment_unsupported', message: 'the model cannot take images', response_id: 'r_1' };
  assert.deepEqual(types(image.frame(warn)), ['warn']);
  assert.deepEqual(image.frame(warn), []); // one warning per image: said once
  assert.notEqual(image.answer, null); // the text is still answered

  const lost = streaming();
  const fxl = lost.frame({ type: 'error', code: 'recovery_impossible', message: 'lost' });
  assert.equal(fxl.find((e) => e.type === 'finish').interrupted, true);

  assert.deepEqual(streaming().frame({ type: 'error', code: 'nothing_to_cancel', message: 'x' }), []);
  assert.deepEqual(notices(new Machine().frame({ type: 'error', code: 'invalid_frame', message: 'bad' })), ['bad']);
});

test('snapshot keeps the session and a streaming answer; adopt brings it back', () => {
  const m = streaming();
  m.frame(token(0, 'Hello', { stats: { ttft_ms: 9 } }));
  const snap = m.snapshot();
  assert.deepEqual([snap.session_id, snap.resume_token, snap.inflight.responseId, snap.inflight.lastSeq, snap.inflight.text],
    ['s_1', 'rt_1', 'r_1', 0, 'Hello']);
  const back = new Machine({ id: snap.session_id, token: snap.resume_token });
  assert.deepEqual(back.adopt(snap.inflight), { messageId: 'm_1', responseId: 'r_1', lastSeq: 0 });
  back.opened(true);
  back.frame(session({ resumed: true }), true);
  back.frame(token(0, 'Hello')); // replayed: already shown
  back.frame(token(1, ' world'));
  assert.equal(back.answer.text, 'Hello world');
  assert.equal(new Machine().snapshot().inflight, undefined);
});

test('reset forgets the session and cancels a streaming answer', () => {
  const m = streaming();
  assert.deepEqual(m.reset(), [{ type: 'cancel', via: 'frame', responseId: null }]);
  assert.deepEqual([m.session, m.answer, m.queued, m.everOnline], [null, null, null, false]);
  assert.deepEqual(m.connecting(), [{ type: 'state', state: 'connecting', detail: null }]);
});
