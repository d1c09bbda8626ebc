/*! rtchat.js: the rtserver chat widget (protocol v1, subprotocol rt.v1.json).
 *
 * One tag:   <script src="https://chat.example.com/rtchat.js" data-url="wss://chat.example.com/ws"></script>
 * Or the API: RtChat.mount(element, {url, mode, theme, title, ...}) -> widget
 *
 * Plain modern JavaScript, no dependencies, no build step. All model and user text is
 * put into the page with textContent / text nodes; no innerHTML anywhere. See
 * docs/widget.md for every option.
 */
(() => {
  'use strict';

  const VERSION = '1.0.0';
  const STORE_PREFIX = 'rtchat:v1:';
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 15000;
  const KEPT_MESSAGES = 60;
  const RESUME_ERRORS = new Set(['session_not_found', 'session_expired', 'unauthorized']);
  const NO_RETRY_CLOSES = new Set([4001, 4004, 4005]); // 4001/4005 are retried when auth is a function
  const AUTH_CLOSES = new Set([4001, 4005]);

  // >>> rtclient: generated from clients/js/src/index.js by clients/js/scripts/inline.mjs; edit the source, not this copy
  const rtclient = (() => {
/*! rtclient: a client for rtserver protocol v1 (docs/protocol.md).
 *
 * One ES module, no DOM and no dependency: it runs unchanged in browsers, React Native
 * and Node >= 18. It uses the global WebSocket when there is one; otherwise pass a
 * WebSocket constructor (the `ws` package in Node 18-21). msgpack is in
 * 'rtclient/msgpack' (it needs @msgpack/msgpack); JSON needs nothing.
 *
 *   const client = new RtClient({url, getToken});
 *   await client.connect();
 *   const reply = client.send('hello');
 *   for await (const token of reply) render(token.text);
 *   const done = await reply.done;
 */

const VERSION = '0.1.0';

const BACKOFF = { baseMs: 500, capMs: 15000 };
const AUTH_CLOSES = new Set([4001, 4005]); // unauthorized, token expired: get a new token, reconnect
const FINAL_CLOSES = new Set([4004]); // origin not allowed: retrying cannot help
const MAX_AUTH_FAILURES = 3; // consecutive 4001 closes before giving up
const RESUME_ERRORS = new Set(['session_not_found', 'session_expired', 'unauthorized', 'store_unavailable']);

/** An error the server sent (`code`, `status`, `retryable`, `fatal`), or one of the
 * client's own: `closed`, `interrupted` (retryable: send the message again),
 * `session_lost`, `busy`, `auth_failed`. */
class RtError extends Error {
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = 'RtError';
    this.code = code;
    this.status = extra.status ?? null;
    this.retryable = !!extra.retryable;
    this.fatal = !!extra.fatal;
    this.frame = extra.frame ?? null;
  }

  static fromFrame(f) {
    return new RtError(f.code, f.message, { status: f.status, retryable: f.retryable, fatal: f.fatal, frame: f });
  }
}

/** Exponential backoff with "equal jitter": between half and all of min(cap, base * 2^attempt). */
function backoffDelay(attempt, { baseMs = BACKOFF.baseMs, capMs = BACKOFF.capMs } = {}, random = Math.random) {
  const ceiling = Math.min(capMs, baseMs * 2 ** attempt);
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Standard base64 of bytes (no btoa: React Native may not have it). */
function base64(bytes) {
  let out = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + B64[n & 63];
  }
  const left = bytes.length - i;
  if (left === 1) {
    const n = bytes[i] << 16;
    out += `${B64[n >> 18]}${B64[(n >> 12) & 63]}==`;
  } else if (left === 2) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += `${B64[n >> 18]}${B64[(n >> 12) & 63]}${B64[(n >> 6) & 63]}=`;
  }
  return out;
}

/** The JSON encoding (subprotocol rt.v1.json, text frames; attachment bytes as base64). */
const jsonCodec = Object.freeze({
  subprotocol: 'rt.v1.json',
  binary: false,
  encode: (frame) => JSON.stringify(frame),
  decode: (data) => {
    if (typeof data !== 'string') throw new RtError('wrong_frame_kind', 'binary frame on rt.v1.json');
    return JSON.parse(data);
  },
  bytes: (data) => (typeof data === 'string' ? data : base64(data)),
});

/** A tiny event emitter (EventTarget is missing in React Native). */
class Emitter {
  constructor() { this._handlers = new Map(); }

  /** Call `fn(payload)` on each `event`; returns a function that removes it. */
  on(event, fn) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(fn);
    return () => this._handlers.get(event)?.delete(fn);
  }

  _emit(event, payload) {
    for (const fn of [...(this._handlers.get(event) || [])]) {
      try {
        fn(payload);
      } catch (err) {
        setTimeout(() => { throw err; }, 0); // a listener's bug must not break the connection
      }
    }
  }
}

function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  promise.catch(() => {}); // an unawaited rejection is not an unhandled one
  return { promise, resolve, reject };
}

/** One message's answer: an async iterator of tokens, plus `route` and `done` promises.
 *
 * Each token is `{text, seq, seqLast, stats, seam}`; `seqLast` > `seq` when the server
 * merged several tokens into one frame. Across reconnects every token is yielded
 * exactly once, in order. Iteration ends at `done`, or throws the `RtError` that ended
 * the answer (`reply.done` rejects with it too). */
class Reply {
  constructor(messageId, frame) {
    this.messageId = messageId;
    this.frame = frame;
    this.responseId = null;
    this.lastSeq = -1; // the last token seq received: what a resume asks to continue from
    this.text = '';
    this.tokens = 0;
    this.sent = false;
    this.cancelRequested = false;
    this.finished = false;
    this._route = deferred();
    this._done = deferred();
    this.route = this._route.promise;
    this.done = this._done.promise;
    this._queue = [];
    this._waiter = null;
    this._error = null;
  }

  _token(item) {
    this.text += item.text;
    this.tokens += 1;
    this._queue.push(item);
    this._wake();
  }

  _finish(done) {
    if (this.finished) return;
    this.finished = true;
    this._route.reject(new RtError('no_route', 'the answer ended before it was routed'));
    this._done.resolve(done);
    this._wake();
  }

  _fail(error) {
    if (this.finished) return;
    this.finished = true;
    this._error = error;
    this._route.reject(error);
    this._done.reject(error);
    this._wake();
  }

  _wake() {
    const w = this._waiter;
    this._waiter = null;
    if (w) w();
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      while (this._queue.length) yield this._queue.shift();
      if (this.finished) {
        if (this._error) throw this._error;
        return;
      }
      await new Promise((resolve) => { this._waiter = resolve; });
    }
  }
}

let nextId = 0;

/** A conversation with an rtserver gateway that survives dropped sockets.
 *
 * Options: `url` (a string, or a list tried in turn when a gateway restarts or cannot be
 * reached), `codec` (jsonCodec, or msgpackCodec from 'rtclient/msgpack'), `getToken`
 * (async () => a connection token; called for every new socket, and when the server
 * warns that the token expires: the result goes out as `refresh`), `WebSocket` (a constructor, when there is no
 * global one), `session` ({session_id, resume_token} to resume a stored conversation),
 * `token` (a fixed token, without getToken), `client` (a name/version sent in hello),
 * `backoff` ({baseMs, capMs}).
 *
 * Events (`client.on(name, fn)`): `state` (connecting/open/reconnecting/closed/failed),
 * `session`, `route`, `token`, `done`, `error` (every error frame), `token_expiring`,
 * `refreshed`, `close` ({code, reason}), `open` (a socket opened), `retry` ({attempt,
 * delayMs}: a reconnect is scheduled), `frame` (every server frame as received). */
class RtClient extends Emitter {
  constructor(opts) {
    super();
    if (!opts || !opts.url) throw new TypeError('RtClient needs a url');
    this.urls = Array.isArray(opts.url) ? [...opts.url] : [opts.url];
    this.codec = opts.codec || jsonCodec;
    this.getToken = opts.getToken || null;
    this.token = opts.token || null; // a fixed token, when there is no getToken
    this.WebSocket = opts.WebSocket || globalThis.WebSocket;
    if (typeof this.WebSocket !== 'function') {
      throw new TypeError('no global WebSocket here: pass opts.WebSocket (e.g. the ws package in Node)');
    }
    this.backoff = { ...BACKOFF, ...(opts.backoff || {}) };
    this.clientName = opts.client || `rtclient/${VERSION}`;
    this.session = opts.session ? { ...opts.session } : null;
    this.state = 'idle';
    this.urlIndex = 0;
    this.attempt = 0;
    this.reconnects = 0; // sockets opened after the first
    this.refreshes = 0;
    this.reply = null;
    this.ws = null;
    this._token = null;
    this.nextDelay = null;
    this.lastSchedule = null;
    this._pingT = null;
    this._authFailures = 0;
    this._opens = 0;
    this._timer = null;
    this._closing = false;
    this._ready = deferred();
    this._resuming = false;
    this._resumeError = null;
    this._fatal = null;
    this._refreshing = false;
  }

  /** The current gateway URL. */
  get url() { return this.urls[this.urlIndex % this.urls.length]; }

  /** Open the connection; resolves with the `session` frame, rejects when it cannot be
   * opened and retrying cannot help (`failed`). Later drops reconnect on their own. */
  connect() {
    if (this.state === 'idle') this._open();
    return this._ready.promise;
  }

  /** Send one message; returns its Reply. One answer at a time (else `busy`). Sent at
   * once when connected, else as soon as the connection is (re)established. */
  send(text, { attachments, context, id } = {}) {
    if (this.reply && !this.reply.finished) throw new RtError('busy', 'an answer is still streaming; cancel it first');
    if (this.state === 'closed' || this.state === 'failed') throw new RtError('closed', 'the client is closed');
    const messageId = id || `m${Date.now().toString(36)}${(nextId++).toString(36)}`;
    const frame = { type: 'message', id: messageId, text };
    if (attachments && attachments.length) {
      frame.attachments = attachments.map((a) => ({ kind: a.kind, mime: a.mime, data: this.codec.bytes(a.data) }));
    }
    if (context) frame.context = context;
    const reply = new Reply(messageId, frame);
    this.reply = reply;
    if (this.state === 'open') this._sendMessage(reply);
    else if (this.state === 'idle') this.connect();
    return reply;
  }

  /** Stop the current answer; it ends with `done` finish_reason "cancelled". */
  cancel() {
    const reply = this.reply;
    if (!reply || reply.finished) return;
    reply.cancelRequested = true;
    if (!reply.sent) { // never left this client
      this.reply = null;
      reply._fail(new RtError('cancelled', 'cancelled before it was sent'));
      return;
    }
    if (reply.responseId && this.state === 'open') this._send({ type: 'cancel', response_id: reply.responseId });
    // else: sent when its route arrives
  }

  /** Take over an answer that was streaming before (e.g. stored across a page reload): the
   * next resume asks for its frames after `lastSeq`. Returns its Reply. */
  adopt({ messageId, responseId, lastSeq = -1 }) {
    const reply = new Reply(messageId, null);
    Object.assign(reply, { responseId, lastSeq, sent: true });
    this.reply = reply;
    return reply;
  }

  /** The network may be back (online event, app foregrounded): reconnect now if waiting,
   * else check the open socket with a ping and drop it when no pong comes in `timeoutMs`. */
  probe(timeoutMs = 5000) {
    if (this._closing || this.state === 'failed') return;
    if (this._timer) {
      clearTimeout(this._timer);
      this._timer = null;
      this._open();
      return;
    }
    if (this.state !== 'open') return;
    const t = Date.now();
    this._pingT = t;
    this._send({ type: 'ping', t });
    setTimeout(() => {
      if (this._pingT !== t || this.state !== 'open' || this._closing) return;
      const ws = this.ws; // no pong: the socket is dead; do not wait for its close handshake
      this.ws = null;
      if (ws) {
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        try { ws.close(1000, 'client reconnecting'); } catch { /* already closed */ }
      }
      this._emit('close', { code: 1006, reason: 'no pong' });
      this.attempt = 0;
      this._schedule(false);
    }, timeoutMs);
  }

  /** Close for good (no reconnect). A streaming answer fails with `closed`. */
  close() {
    this._closing = true;
    clearTimeout(this._timer);
    this._timer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      try { ws.close(1000, 'client closed'); } catch { /* already closed */ }
    }
    this._setState('closed');
    this._failReply(new RtError('closed', 'the client was closed'));
    this._ready.reject(new RtError('closed', 'the client was closed'));
  }

  // ------------------------------------------------------------------ socket
  async _open() {
    this._setState(this._opens ? 'reconnecting' : 'connecting');
    let token = this.token;
    if (this.getToken) { // a fresh token for every socket: the last one may have expired meanwhile
      try {
        this._token = await this.getToken();
      } catch (err) {
        if (this._closing) return;
        this._schedule(false);
        this._emit('error', new RtError('auth_failed', `getToken failed: ${err && err.message}`));
        return;
      }
      token = this._token;
    }
    if (this._closing) return;
    let ws;
    try {
      ws = new this.WebSocket(this.url, [this.codec.subprotocol]);
    } catch (err) { // a malformed URL: retrying cannot help
      this._fail(new RtError('refused', `cannot open ${this.url}: ${err && err.message}`));
      return;
    }
    if (this.codec.binary) ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this._opens += 1;
    let opened = false;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      opened = true;
      this._emit('open', { url: this.url, resuming: !!this.session });
      const hello = { type: 'hello', client: this.clientName };
      if (token) hello.auth = token;
      this._resuming = !!this.session;
      this._resumeError = null;
      this._fatal = null;
      if (this.session) {
        hello.session_id = this.session.session_id;
        hello.resume_token = this.session.resume_token;
        const r = this.reply;
        if (r && !r.finished && r.responseId) {
          hello.response_id = r.responseId;
          hello.last_seq = r.lastSeq;
        }
      }
      this._send(hello);
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      let frame;
      try {
        frame = this.codec.decode(ev.data);
      } catch (err) {
        this._emit('error', new RtError('malformed_frame', `undecodable server frame: ${err && err.message}`));
        return;
      }
      this._onFrame(frame);
    };
    ws.onerror = () => { /* a close event follows */ };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this._onClose(ev.code, ev.reason || '', opened);
    };
  }

  _send(frame) {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(this.codec.encode(frame));
    return true;
  }

  _sendMessage(reply) {
    if (this._send(reply.frame)) reply.sent = true;
  }

  _onClose(code, reason, opened) {
    this._emit('close', { code, reason });
    if (this._closing) return;
    if (code === 4010) { // resumed on another socket: that one owns the conversation now
      this.session = null;
      this._fail(new RtError('session_replaced', 'the conversation was resumed on another connection'));
      return;
    }
    if (FINAL_CLOSES.has(code)) {
      this._fail(this._fatal || new RtError('refused', `the server refused the connection (${code} ${reason})`));
      return;
    }
    if (AUTH_CLOSES.has(code)) {
      if (!this.getToken) {
        this._fail(this._fatal || new RtError('unauthorized', `unauthorized (${code} ${reason})`));
        return;
      }
      if (code === 4001 && ++this._authFailures >= MAX_AUTH_FAILURES) {
        this._fail(this._fatal || new RtError('unauthorized', 'the server refused every token getToken gave'));
        return;
      }
    }
    // A restart (1012) or a gateway we could not reach: try the next one.
    if (code === 1012) this.attempt = 0;
    this._schedule(code === 1012 || !opened, AUTH_CLOSES.has(code));
  }

  _schedule(moveOn, soon = false) {
    if (moveOn) this.urlIndex = (this.urlIndex + 1) % this.urls.length;
    const delay = soon ? Math.round(Math.random() * this.backoff.baseMs / 2) : backoffDelay(this.attempt, this.backoff);
    this.lastSchedule = [this.attempt, delay];
    this.nextDelay = delay;
    this.attempt += 1;
    this._setState('reconnecting');
    clearTimeout(this._timer);
    this._timer = setTimeout(() => {
      this._timer = null;
      if (!this._closing) this._open();
    }, delay);
    this._emit('retry', { attempt: this.lastSchedule[0], delayMs: delay, url: this.url });
  }

  _fail(error) {
    this._setState('failed');
    this._failReply(error);
    this._ready.reject(error);
  }

  _failReply(error) {
    const r = this.reply;
    if (r && !r.finished) r._fail(error);
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', state);
  }

  // ------------------------------------------------------------------ frames
  _onFrame(f) {
    this._emit('frame', f);
    switch (f.type) {
      case 'session': return this._onSession(f);
      case 'route': return this._onRoute(f);
      case 'token': return this._onToken(f);
      case 'done': return this._onDone(f);
      case 'error': return this._onError(f);
      case 'token_expiring': this._emit('token_expiring', f); return this._refresh();
      case 'refreshed': this._emit('refreshed', f); return undefined;
      case 'pong': if (f.t === this._pingT) this._pingT = null; return undefined;
      default: return undefined;
    }
  }

  _onSession(f) {
    const resumed = this._resuming && f.resumed;
    const lost = this._resuming && !f.resumed;
    this._resuming = false;
    this.session = { session_id: f.session_id, resume_token: f.resume_token }; // rotates: keep the newest
    if (this._opens > 1) this.reconnects += 1;
    this.attempt = 0;
    this._authFailures = 0;
    this._setState('open');
    this._emit('session', f);
    this._ready.resolve(f);
    const r = this.reply;
    if (r && !r.finished) {
      if (!r.sent) {
        this._sendMessage(r);
      } else if (lost) {
        r._fail(new RtError('session_lost', `the conversation could not be resumed (${this._resumeError || 'unknown'})`,
          { retryable: true }));
      } else if (resumed && !r.responseId) {
        // The message left before the drop but its route never came back: whether it was
        // accepted is unknown, and the server does not replay an answer it cannot name.
        r._fail(new RtError('interrupted', 'the connection dropped before the answer started; send it again',
          { retryable: true }));
      } else if (r.cancelRequested && r.responseId) { // cancel() while the socket was down
        this._send({ type: 'cancel', response_id: r.responseId });
      }
    }
  }

  _onRoute(f) {
    const r = this.reply;
    if (r && !r.finished && f.message_id === r.messageId) {
      r.responseId = f.response_id;
      r._route.resolve(f);
      if (r.cancelRequested) this._send({ type: 'cancel', response_id: f.response_id });
    }
    this._emit('route', f);
  }

  _onToken(f) {
    const r = this.reply;
    if (!r || r.finished || f.response_id !== r.responseId) return;
    const last = typeof f.seq_last === 'number' ? f.seq_last : f.seq;
    if (last <= r.lastSeq) return; // already had it (a replay overlapping what we saw)
    const item = { text: f.text, seq: f.seq, seqLast: last, stats: f.stats, seam: f.seam || null };
    r.lastSeq = last;
    r._token(item);
    this._emit('token', item);
  }

  _onDone(f) {
    const r = this.reply;
    this._emit('done', f);
    if (r && !r.finished && f.response_id === r.responseId) r._finish(f);
  }

  _onError(f) {
    const err = RtError.fromFrame(f);
    if (f.fatal) this._fatal = err;
    this._emit('error', err);
    const r = this.reply;
    if (this._resuming && RESUME_ERRORS.has(f.code) && !f.fatal) {
      this._resumeError = f.code;
      return;
    }
    if (!r || r.finished) return;
    if (f.code === 'recovery_impossible') {
      r._fail(err);
    } else if (f.ref === r.messageId && !r.responseId && f.code !== 'attachment_unsupported') {
      r._fail(err); // rejected before an answer started (busy, invalid_field, overloaded, …)
    }
  }

  async _refresh() {
    if (!this.getToken || this._refreshing) return;
    this._refreshing = true;
    try {
      this._token = await this.getToken();
    } catch (err) {
      this._emit('error', new RtError('auth_failed', `getToken failed: ${err && err.message}`));
      return;
    } finally {
      this._refreshing = false;
    }
    if (this._send({ type: 'refresh', auth: this._token })) this.refreshes += 1;
  }
}
    return { VERSION, RtError, backoffDelay, base64, jsonCodec, Reply, RtClient };
  })();
  // <<< rtclient

  const currentScript = document.currentScript;
  const scriptBase = currentScript && currentScript.src ? new URL('.', currentScript.src).href : null;

  // ------------------------------------------------------------------ small DOM helpers

  /** h('div', {class: 'x', text: 'y', onclick: fn, 'aria-label': 'z'}, child...) */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      el.append(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return el;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  /** A decorative 24x24 stroke icon from path data (aria-hidden). */
  function icon(...paths) {
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    svg.setAttribute('class', 'rtc-icon');
    for (const d of paths) {
      const p = document.createElementNS(SVG_NS, 'path');
      p.setAttribute('d', d);
      svg.append(p);
    }
    return svg;
  }
  const ICONS = {
    chat: ['M4 5h16v11H9l-5 4z'],
    close: ['M6 6l12 12', 'M18 6L6 18'],
    clip: ['M20 11.5l-7.8 7.8a5 5 0 01-7.1-7.1l8.5-8.5a3.3 3.3 0 014.7 4.7l-8.5 8.5a1.7 1.7 0 01-2.4-2.4l7.8-7.8'],
    send: ['M4 12l16-8-6 16-2.5-6.5z', 'M11.5 13.5L20 4'],
    stop: ['M7 7h10v10H7z'],
    plus: ['M12 5v14', 'M5 12h14'],
  };

  // ------------------------------------------------------------------ safe markdown

  const ESCAPABLE = /[\\`*_[\]()#+\-.!>~|{}]/;
  const isSpace = (c) => c === undefined || /\s/.test(c);
  const isWord = (c) => c !== undefined && /[\p{L}\p{N}]/u.test(c);

  function safeHref(url) {
    try {
      const u = new URL(url, window.location.href);
      return ['http:', 'https:', 'mailto:'].includes(u.protocol) ? u.href : null;
    } catch {
      return null;
    }
  }

  /** Find the closer of an emphasis run starting after `from`; -1 if none. */
  function findCloser(s, from, delim) {
    let j = s.indexOf(delim, from);
    while (j !== -1) {
      let end = j;
      while (s[end] === delim[0]) end++;
      const okEdge = !isSpace(s[j - 1]) && j > from;
      const okWord = delim[0] !== '_' || !(isWord(s[end]) || s[end] === '_');
      if (okEdge && okWord) {
        // in a run like "***", close with its last characters so the inner part keeps the rest
        let k = j;
        while (s[k + delim.length] === delim[0] && k - j < 2) k++;
        return k;
      }
      j = s.indexOf(delim, j + 1);
    }
    return -1;
  }

  /** Append the inline markdown of `s` (code, bold, italic, links) to `parent` as DOM nodes. */
  function renderInline(s, parent) {
    let buf = '';
    const flush = () => {
      if (buf) parent.append(document.createTextNode(buf));
      buf = '';
    };
    let i = 0;
    while (i < s.length) {
      const c = s[i];
      if (c === '\\' && i + 1 < s.length && ESCAPABLE.test(s[i + 1])) {
        buf += s[i + 1];
        i += 2;
        continue;
      }
      if (c === '`') {
        let k = 0;
        while (s[i + k] === '`') k++;
        const fence = '`'.repeat(k);
        let j = s.indexOf(fence, i + k);
        while (j !== -1 && s[j + k] === '`') j = s.indexOf(fence, j + k + 1);
        if (j === -1) {
          buf += fence;
          i += k;
          continue;
        }
        let code = s.slice(i + k, j).replace(/\n/g, ' ');
        if (code.length > 2 && code[0] === ' ' && code[code.length - 1] === ' ') code = code.slice(1, -1);
        flush();
        parent.append(h('code', { class: 'rtc-code-inline', text: code }));
        i = j + k;
        continue;
      }
      if (c === '*' || c === '_') {
        let k = 0;
        while (s[i + k] === c) k++;
        const canOpen = !isSpace(s[i + k]) && !(c === '_' && isWord(s[i - 1]));
        if (canOpen && k >= 2) {
          const j = findCloser(s, i + 2, c + c);
          if (j !== -1) {
            flush();
            const strong = h('strong');
            renderInline(s.slice(i + 2, j), strong);
            parent.append(strong);
            i = j + 2;
            continue;
          }
        }
        if (canOpen && k === 1) {
          const j = findCloser(s, i + 1, c);
          if (j !== -1 && s[j + 1] !== c) {
            flush();
            const em = h('em');
            renderInline(s.slice(i + 1, j), em);
            parent.append(em);
            i = j + 1;
            continue;
          }
        }
        buf += s.slice(i, i + k); // not emphasis: the whole run is text
        i += k;
        continue;
      }
      if (c === '[') {
        const m = /^\[([^\]\n]{1,500})\]\(([^)\s]{1,2000})\)/.exec(s.slice(i));
        const href = m && safeHref(m[2]);
        if (href) {
          flush();
          const a = h('a', { class: 'rtc-link', href, target: '_blank', rel: 'noopener noreferrer nofollow' });
          renderInline(m[1], a);
          parent.append(a);
          i += m[0].length;
          continue;
        }
      }
      buf += c;
      i++;
    }
    flush();
  }

  const RE_FENCE = /^\s*(`{3,}|~{3,})\s*([^\s`]*)[^`]*$/;
  const RE_HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
  const RE_ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const RE_QUOTE = /^\s{0,3}>\s?(.*)$/;
  const RE_RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;

  function startsBlock(line) {
    return RE_FENCE.test(line) || RE_HEADING.test(line) || RE_ITEM.test(line) || RE_QUOTE.test(line);
  }

  function codeBlock(lang, code) {
    return h('div', { class: 'rtc-codeblock' },
      h('div', { class: 'rtc-codebar' },
        h('span', { class: 'rtc-codelang', text: lang || 'code' }),
        h('button', { type: 'button', class: 'rtc-copy', 'aria-label': `Copy ${lang || ''} code`.replace('  ', ' '), text: 'Copy' })),
      h('pre', { class: 'rtc-pre' }, h('code', { text: code })));
  }

  /** Render the block markdown of `lines` into `parent`. */
  function renderBlocks(lines, parent) {
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      if (!line.trim()) {
        i++;
        continue;
      }
      const fence = RE_FENCE.exec(line);
      if (fence) {
        const mark = fence[1];
        const body = [];
        i++;
        while (i < lines.length) {
          const t = lines[i].trim();
          if (t.length >= mark.length && t[0] === mark[0] && t === mark[0].repeat(t.length)) break;
          body.push(lines[i]);
          i++;
        }
        i++; // the closing fence (absent while the block is still streaming)
        while (body.length && !body[body.length - 1].trim()) body.pop();
        const indent = Math.min(...body.filter((l) => l.trim()).map((l) => /^ */.exec(l)[0].length), 99);
        parent.append(codeBlock(fence[2], body.map((l) => l.slice(Math.min(indent, 99))).join('\n')));
        continue;
      }
      const heading = RE_HEADING.exec(line);
      if (heading) {
        const p = h('p', { class: `rtc-md-h rtc-md-h${heading[1].length}` });
        const strong = h('strong');
        renderInline(heading[2], strong);
        p.append(strong);
        parent.append(p);
        i++;
        continue;
      }
      if (RE_RULE.test(line)) {
        parent.append(h('hr', { class: 'rtc-md-hr' }));
        i++;
        continue;
      }
      if (RE_QUOTE.test(line)) {
        const inner = [];
        while (i < lines.length && RE_QUOTE.test(lines[i])) inner.push(RE_QUOTE.exec(lines[i++])[1]);
        const q = h('blockquote', { class: 'rtc-md-quote' });
        renderBlocks(inner, q);
        parent.append(q);
        continue;
      }
      const item = RE_ITEM.exec(line);
      if (item) {
        i = renderList(lines, i, parent);
        continue;
      }
      const para = [];
      while (i < lines.length && lines[i].trim() && !(para.length && startsBlock(lines[i])) && !RE_RULE.test(lines[i])) {
        para.push(lines[i].trim());
        i++;
      }
      if (!para.length) { // a line that looks like a block start but did not parse as one
        para.push(lines[i].trim());
        i++;
      }
      const p = h('p', { class: 'rtc-md-p' });
      para.forEach((l, n) => {
        if (n) p.append(h('br'));
        renderInline(l, p);
      });
      parent.append(p);
    }
  }

  /** A list starting at lines[start]; returns the index after it. Nested lists come from indentation. */
  function renderList(lines, start, parent) {
    const first = RE_ITEM.exec(lines[start]);
    const baseIndent = first[1].length;
    const ordered = /\d/.test(first[2]);
    const list = h(ordered ? 'ol' : 'ul', { class: 'rtc-md-list' });
    if (ordered && parseInt(first[2], 10) !== 1) list.setAttribute('start', String(parseInt(first[2], 10)));
    let i = start;
    while (i < lines.length) {
      const m = RE_ITEM.exec(lines[i]);
      if (!m || m[1].length > baseIndent + 1 || /\d/.test(m[2]) !== ordered) break;
      const content = [m[3]];
      const contentIndent = m[1].length + m[2].length + 1;
      i++;
      let inFence = RE_FENCE.test(m[3]);
      while (i < lines.length) {
        const l = lines[i];
        if (inFence) {
          content.push(l.slice(Math.min(contentIndent, /^ */.exec(l)[0].length)));
          if (RE_FENCE.test(l)) inFence = false;
          i++;
          continue;
        }
        if (!l.trim()) {
          // a blank line: the item goes on only if the next line is indented into it
          const next = lines[i + 1];
          if (next !== undefined && next.trim() && /^ */.exec(next)[0].length > baseIndent) {
            content.push('');
            i++;
            continue;
          }
          break;
        }
        const sub = RE_ITEM.exec(l);
        if (sub && sub[1].length <= baseIndent + 1) break; // a sibling item
        const indent = /^ */.exec(l)[0].length;
        if (!sub && indent <= baseIndent && startsBlock(l)) break;
        content.push(l.slice(Math.min(contentIndent, indent)));
        if (RE_FENCE.test(l)) inFence = true;
        i++;
      }
      const li = h('li', { class: 'rtc-md-li' });
      const tight = content.length === 1 || !content.slice(1).some((l) => l.trim() && startsBlock(l));
      if (tight && !content.includes('')) {
        content.forEach((l, n) => {
          if (n) li.append(h('br'));
          renderInline(l.trim(), li);
        });
      } else {
        renderBlocks(content, li);
        const lead = li.firstChild;
        if (!content.includes('') && lead && lead.classList && lead.classList.contains('rtc-md-p')) lead.replaceWith(...lead.childNodes);
      }
      list.append(li);
      // a blank line between items keeps the list going
      if (i < lines.length && !lines[i].trim()) {
        let j = i;
        while (j < lines.length && !lines[j].trim()) j++;
        const nm = j < lines.length && RE_ITEM.exec(lines[j]);
        if (nm && nm[1].length <= baseIndent + 1 && /\d/.test(nm[2]) === ordered) i = j;
      }
    }
    parent.append(list);
    return i;
  }

  /** A DocumentFragment for markdown text. Never parses HTML: every character of `text` ends up as text. */
  function renderMarkdown(text) {
    const frag = document.createDocumentFragment();
    renderBlocks(String(text).replace(/\r\n?/g, '\n').split('\n'), frag);
    return frag;
  }

  // ------------------------------------------------------------------ formatting

  const fmtMs = (ms) => (ms < 10 ? `${ms.toFixed(1)} ms` : ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`);
  const fmtBytes = (n) => (n >= 1048576 ? `${(n / 1048576).toFixed(1)} MB` : `${Math.ceil(n / 1024)} KB`);
  const randomId = (prefix) => {
    const a = new Uint8Array(9);
    crypto.getRandomValues(a);
    return prefix + Array.from(a, (b) => b.toString(36).padStart(2, '0')).join('').slice(0, 14);
  };

  function defaultUrl() {
    const loc = window.location;
    if (loc.protocol !== 'http:' && loc.protocol !== 'https:') return 'ws://127.0.0.1:8000/ws';
    return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
  }

  function readStore(key) {
    try {
      return JSON.parse(window.sessionStorage.getItem(key) || 'null') || {};
    } catch {
      return {};
    }
  }

  function writeStore(key, value) {
    try {
      window.sessionStorage.setItem(key, JSON.stringify(value));
    } catch {
      /* storage full or disabled: the conversation still works, it just will not resume */
    }
  }

  const STATE_TEXT = {
    connecting: 'Connecting…',
    online: 'Connected',
    reconnecting: 'Reconnecting…',
    paused: 'Paused',
    offline: 'Disconnected',
  };

  let uid = 0;

  // ------------------------------------------------------------------ the widget

  class Widget {
    constructor(host, options = {}) {
      this.opts = {
        url: options.url || defaultUrl(),
        mode: options.mode === 'floating' ? 'floating' : 'inline',
        theme: ['light', 'dark'].includes(options.theme) ? options.theme : 'auto',
        title: options.title || 'Chat',
        placeholder: options.placeholder || 'Ask anything…',
        greeting: options.greeting === undefined ? 'Ask a question to start. Answers stream in as they are written.' : options.greeting,
        open: !!options.open,
        client: options.client || `rtchat.js/${VERSION}`,
        storageKey: STORE_PREFIX + (options.storageKey || options.url || defaultUrl()),
        context: options.context || null,
        auth: options.auth || null,
      };
      this.host = host;
      this.id = `rtc${++uid}`;
      // phones have no Shift+Enter: there Enter adds a line and the send button sends
      this.touch = !!(window.matchMedia && window.matchMedia('(pointer: coarse)').matches);
      this.client = null; // the connection: rtclient's RtClient (the block above)
      this.adoptable = null; // an answer restored from storage, for the client to resume
      this.state = 'connecting';
      this.resumeAttempt = false;
      this.resumeError = null;
      this.everOnline = false;
      this.lazy = false;
      this.destroyed = false;
      this.limits = { max_attachments: 4, max_attachment_bytes: 5 * 1024 * 1024, max_text_chars: 16000 };
      this.inflight = null;
      this.queued = null;
      this.attachments = [];
      this.transcript = [];
      const stored = readStore(this.opts.storageKey);
      this.session = stored.session_id ? { id: stored.session_id, token: stored.resume_token } : null;
      this._build();
      for (const m of Array.isArray(stored.log) ? stored.log : []) this._restore(m);
      this.transcript = Array.isArray(stored.log) ? stored.log.slice(-KEPT_MESSAGES) : [];
      if (this.session && stored.inflight && typeof stored.inflight.responseId === 'string') this._restoreInflight(stored.inflight);
      this._onOnline = () => this._wake(true);
      this._onPageHide = () => this._persist();
      window.addEventListener('pagehide', this._onPageHide);
      this._onVisible = () => document.visibilityState === 'visible' && this._wake(false);
      window.addEventListener('online', this._onOnline);
      document.addEventListener('visibilitychange', this._onVisible);
      this.connect();
    }

    // ---------------------------------------------------------------- DOM
    _build() {
      const o = this.opts;
      const id = this.id;
      this.root = h('div', { class: `rtc-root rtc-mode-${o.mode} rtc-theme-${o.theme}`, 'data-rtchat': VERSION });
      this.statusText = h('span', { class: 'rtc-status-text', text: STATE_TEXT.connecting });
      this.status = h('span', { class: 'rtc-status', role: 'status', 'data-state': 'connecting' },
        h('span', { class: 'rtc-dot', 'aria-hidden': 'true' }), this.statusText);
      this.newBtn = h('button', { type: 'button', class: 'rtc-btn rtc-new', 'aria-label': 'New conversation',
        title: 'New conversation', onclick: () => this.reset() }, icon(...ICONS.plus), h('span', { class: 'rtc-btn-text', text: 'New' }));
      const header = h('div', { class: 'rtc-header' },
        h('h2', { class: 'rtc-title', id: `${id}-title`, text: o.title }), this.status, this.newBtn);
      if (o.mode === 'floating') {
        header.append(h('button', { type: 'button', class: 'rtc-btn rtc-close', 'aria-label': 'Close chat',
          title: 'Close chat', onclick: () => this.close() }, icon(...ICONS.close)));
      }
      this.log = h('div', { class: 'rtc-log', id: `${id}-log`, role: 'region', 'aria-label': 'Conversation', tabindex: '0' });
      if (o.greeting) this.log.append(h('p', { class: 'rtc-empty', text: o.greeting }));
      this.live = h('div', { class: 'rtc-sr rtc-live', 'aria-live': 'polite', 'aria-atomic': 'true' });
      this.fileInput = h('input', { type: 'file', accept: 'image/*', multiple: true, class: 'rtc-file', tabindex: '-1',
        'aria-hidden': 'true', onchange: () => { this.addFiles(this.fileInput.files); this.fileInput.value = ''; } });
      this.attachBtn = h('button', { type: 'button', class: 'rtc-btn rtc-attach', 'aria-label': 'Attach image',
        title: 'Attach image (or drop / paste one)', onclick: () => this.fileInput.click() }, icon(...ICONS.clip));
      this.input = h('textarea', { class: 'rtc-input', id: `${id}-input`, rows: '1', placeholder: o.placeholder,
        'aria-describedby': `${id}-hint`, enterkeyhint: this.touch ? 'enter' : 'send' });
      this.sendBtn = h('button', { type: 'submit', class: 'rtc-btn rtc-send', 'aria-label': 'Send message', title: 'Send (Enter)' },
        icon(...ICONS.send));
      this.stopBtn = h('button', { type: 'button', class: 'rtc-btn rtc-stop', 'aria-label': 'Stop response',
        title: 'Stop (Esc)', hidden: true, onclick: () => this.stop() }, icon(...ICONS.stop), h('span', { class: 'rtc-btn-text', text: 'Stop' }));
      this.thumbs = h('div', { class: 'rtc-attachments', 'aria-label': 'Attached images', role: 'list', hidden: true });
      this.form = h('form', { class: 'rtc-composer', 'aria-label': 'Send a message' },
        this.thumbs,
        h('div', { class: 'rtc-row' },
          this.attachBtn, this.fileInput,
          h('label', { class: 'rtc-sr', for: `${id}-input`, text: 'Message' }),
          this.input, this.stopBtn, this.sendBtn),
        h('p', { class: 'rtc-hint', id: `${id}-hint`,
          text: this.touch ? 'The send button sends · Enter adds a line' : 'Enter to send · Shift+Enter for a new line' }));
      this.drop = h('div', { class: 'rtc-drop', hidden: true, 'aria-hidden': 'true' }, h('span', { text: 'Drop an image to attach it' }));
      this.panel = h('section', { class: 'rtc-panel', id: `${id}-panel`, 'aria-labelledby': `${id}-title` },
        header, this.log, this.live, this.form, this.drop);
      if (o.mode === 'floating') {
        this.launcher = h('button', { type: 'button', class: 'rtc-launcher', 'aria-label': `Open ${o.title}`,
          'aria-expanded': 'false', 'aria-controls': `${id}-panel`, onclick: () => this.toggle() },
        icon(...ICONS.chat), h('span', { class: 'rtc-launcher-text', text: o.title }));
        this.panel.hidden = !o.open;
        this.launcher.setAttribute('aria-expanded', String(o.open));
        this.root.append(this.panel, this.launcher);
      } else {
        this.root.append(this.panel);
      }
      this.host.append(this.root);

      this.form.addEventListener('submit', (e) => { e.preventDefault(); this.submit(); });
      this.input.addEventListener('keydown', (e) => this._onKey(e));
      this.input.addEventListener('input', () => this._autosize());
      this.input.addEventListener('focus', () => this.lazy && this.connect());
      this.input.addEventListener('paste', (e) => this._onPaste(e));
      this.panel.addEventListener('keydown', (e) => {
        if (e.key === 'Escape' && !e.defaultPrevented && this.opts.mode === 'floating' && !this.inflight) this.close();
      });
      this.log.addEventListener('click', (e) => {
        const btn = e.target instanceof Element ? e.target.closest('.rtc-copy') : null;
        if (btn) this._copy(btn);
      });
      let depth = 0;
      const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes('Files');
      this.panel.addEventListener('dragenter', (e) => { if (hasFiles(e)) { depth++; this.drop.hidden = false; e.preventDefault(); } });
      this.panel.addEventListener('dragover', (e) => { if (hasFiles(e)) { e.preventDefault(); e.dataTransfer.dropEffect = 'copy'; } });
      this.panel.addEventListener('dragleave', () => { if (depth > 0 && --depth === 0) this.drop.hidden = true; });
      this.panel.addEventListener('drop', (e) => {
        depth = 0;
        this.drop.hidden = true;
        if (hasFiles(e)) { e.preventDefault(); this.addFiles(e.dataTransfer.files); }
      });
    }

    _onKey(e) {
      if (e.key === 'Enter' && !e.isComposing && ((!this.touch && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey)
          || e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        this.submit();
      } else if (e.key === 'Escape' && this.inflight) {
        e.preventDefault();
        this.stop();
      }
    }

    _onPaste(e) {
      const files = Array.from((e.clipboardData && e.clipboardData.items) || [])
        .filter((it) => it.kind === 'file' && it.type.startsWith('image/'))
        .map((it) => it.getAsFile())
        .filter(Boolean);
      if (files.length) {
        e.preventDefault();
        this.addFiles(files);
      }
    }

    _autosize() {
      this.input.style.height = 'auto';
      this.input.style.height = `${Math.min(this.input.scrollHeight, 160)}px`;
    }

    _nearBottom() {
      const l = this.log;
      return l.scrollHeight - l.scrollTop - l.clientHeight < 48;
    }

    _append(el) {
      const stick = this._nearBottom();
      const empty = this.log.querySelector('.rtc-empty');
      if (empty) empty.remove();
      this.log.append(el);
      if (stick || el.classList.contains('rtc-msg-user')) this.log.scrollTop = this.log.scrollHeight;
      return el;
    }

    /** A line from the widget itself (connection changes, warnings without a message). */
    notice(text, kind = 'info') {
      const el = h('p', { class: `rtc-notice rtc-notice-${kind}`, role: kind === 'error' ? 'alert' : null, text });
      this._append(el);
      return el;
    }

    announce(text) {
      // re-set so that the same text twice is announced twice
      this.live.textContent = '';
      window.setTimeout(() => { this.live.textContent = text; }, 50);
    }

    _message(role, text, images) {
      const body = h('div', { class: 'rtc-body' });
      const el = h('article', { class: `rtc-msg rtc-msg-${role}` },
        h('span', { class: 'rtc-sr', text: role === 'user' ? 'You said:' : 'Assistant:' }), body);
      if (images && images.length) {
        el.insertBefore(h('div', { class: 'rtc-images' },
          ...images.map((a) => h('img', { class: 'rtc-image', src: a.url, alt: a.name ? `attached image ${a.name}` : 'attached image' }))), body);
      }
      if (role === 'user') {
        for (const [n, para] of String(text).split('\n').entries()) {
          if (n) body.append(h('br'));
          body.append(document.createTextNode(para));
        }
      } else if (text) {
        body.append(renderMarkdown(text));
      }
      return this._append(el);
    }

    _restore(m) {
      if (!m || typeof m.text !== 'string') return;
      if (m.role === 'notice') { this.notice(m.text); return; }
      const el = this._message(m.role === 'user' ? 'user' : 'assistant', m.text, null);
      if (m.role !== 'user' && m.meta) el.append(h('div', { class: 'rtc-meta' }, h('span', { class: 'rtc-badge', text: m.meta })));
    }

    /** An answer was streaming when the page was left: show what we had; the resume replays the rest. */
    _restoreInflight(s) {
      const fl = this._begin(s.messageId, null);
      Object.assign(fl, { responseId: s.responseId, lastSeq: Number(s.lastSeq) || -1, text: String(s.text || ''),
        route: s.route || null, ttft: typeof s.ttft === 'number' ? s.ttft : null, tokens: Number(s.tokens) || 0 });
      fl.el.dataset.responseId = fl.responseId;
      this.adoptable = { messageId: fl.messageId, responseId: fl.responseId, lastSeq: fl.lastSeq };
      if (fl.text) fl.body.replaceChildren(renderMarkdown(fl.text));
      this._badge();
    }

    _remember(role, text, meta) {
      this.transcript.push(meta ? { role, text, meta } : { role, text });
      this.transcript = this.transcript.slice(-KEPT_MESSAGES);
      this._persist();
    }

    _persist() {
      const v = { log: this.transcript };
      if (this.session) { v.session_id = this.session.id; v.resume_token = this.session.token; }
      const fl = this.inflight;
      if (fl && fl.responseId && this.session) {
        v.inflight = { messageId: fl.messageId, responseId: fl.responseId, lastSeq: fl.lastSeq, text: fl.text,
          route: fl.route, ttft: fl.ttft, tokens: fl.tokens };
      }
      window.clearTimeout(this.saveTimer);
      this.saveTimer = null;
      writeStore(this.opts.storageKey, v);
    }

    async _copy(btn) {
      const code = btn.closest('.rtc-codeblock').querySelector('code').textContent;
      let ok = false;
      try {
        await navigator.clipboard.writeText(code);
        ok = true;
      } catch {
        const ta = h('textarea', { class: 'rtc-offscreen', 'aria-hidden': 'true' });
        ta.value = code;
        this.root.append(ta);
        ta.select();
        try { ok = document.execCommand('copy'); } catch { ok = false; }
        ta.remove();
      }
      btn.textContent = ok ? 'Copied' : 'Copy failed';
      btn.dataset.copied = ok ? 'yes' : 'no';
      this.announce(ok ? 'Code copied' : 'Could not copy the code');
      window.setTimeout(() => { btn.textContent = 'Copy'; delete btn.dataset.copied; }, 1500);
    }

    // ---------------------------------------------------------------- floating panel
    open() {
      if (this.opts.mode !== 'floating') return;
      this.panel.hidden = false;
      this.launcher.setAttribute('aria-expanded', 'true');
      this.root.classList.add('rtc-open');
      this.input.focus();
      this.log.scrollTop = this.log.scrollHeight;
    }

    close() {
      if (this.opts.mode !== 'floating') return;
      this.panel.hidden = true;
      this.launcher.setAttribute('aria-expanded', 'false');
      this.root.classList.remove('rtc-open');
      this.launcher.focus();
    }

    toggle() {
      if (this.panel.hidden) this.open(); else this.close();
    }

    setTheme(theme) {
      this.opts.theme = ['light', 'dark'].includes(theme) ? theme : 'auto';
      this.root.classList.remove('rtc-theme-auto', 'rtc-theme-light', 'rtc-theme-dark');
      this.root.classList.add(`rtc-theme-${this.opts.theme}`);
    }

    // ---------------------------------------------------------------- attachments
    addFiles(fileList) {
      for (const file of Array.from(fileList || [])) {
        if (!file.type || !file.type.startsWith('image/')) {
          this.notice(`${file.name || 'That file'} is not an image; only images can be attached.`, 'warn');
          continue;
        }
        if (this.attachments.length >= this.limits.max_attachments) {
          this.notice(`At most ${this.limits.max_attachments} images per message.`, 'warn');
          break;
        }
        if (file.size > this.limits.max_attachment_bytes) {
          this.notice(`${file.name || 'The image'} is ${fmtBytes(file.size)}; the limit is ${fmtBytes(this.limits.max_attachment_bytes)}.`, 'warn');
          continue;
        }
        const att = { name: file.name || 'pasted image', mime: file.type, size: file.size, url: URL.createObjectURL(file), data: null };
        att.ready = new Promise((resolve) => {
          const reader = new FileReader();
          reader.onload = () => { att.data = String(reader.result).split(',', 2)[1] || ''; resolve(); };
          reader.onerror = () => { this._removeAttachment(att); this.notice(`Could not read ${att.name}.`, 'warn'); resolve(); };
          reader.readAsDataURL(file);
        });
        this.attachments.push(att);
      }
      this._renderAttachments();
    }

    _removeAttachment(att) {
      this.attachments = this.attachments.filter((a) => a !== att);
      this._renderAttachments();
    }

    _renderAttachments() {
      this.thumbs.replaceChildren(...this.attachments.map((a) => h('div', { class: 'rtc-thumb', role: 'listitem' },
        h('img', { src: a.url, alt: a.name }),
        h('button', { type: 'button', class: 'rtc-thumb-x', 'aria-label': `Remove ${a.name}`, title: 'Remove',
          onclick: () => { this._removeAttachment(a); this.input.focus(); } }, icon(...ICONS.close)))));
      this.thumbs.hidden = this.attachments.length === 0;
    }

    // ---------------------------------------------------------------- sending
    async submit() {
      const text = this.input.value;
      if (this.inflight || this.queued || this.submitting) return;
      if (!text.trim() && !this.attachments.length) return;
      if (text.length > this.limits.max_text_chars) {
        this.notice(`That message is ${text.length} characters; the limit is ${this.limits.max_text_chars}.`, 'warn');
        return;
      }
      const atts = this.attachments;
      this.submitting = true; // reading the images takes a moment: a second Enter must not send twice
      try { await Promise.all(atts.map((a) => a.ready)); } finally { this.submitting = false; }
      const ok = atts.filter((a) => a.data !== null);
      const frameBytes = text.length * 3 + ok.reduce((n, a) => n + a.data.length + 64, 256);
      if (this.limits.max_frame_bytes && frameBytes > this.limits.max_frame_bytes) {
        this.notice(`These images are too large to send together (${fmtBytes(frameBytes)}; the limit is ${fmtBytes(this.limits.max_frame_bytes)}). Remove one.`, 'warn');
        return;
      }
      this.attachments = [];
      this._renderAttachments();
      this.input.value = '';
      this._autosize();
      const frame = { type: 'message', id: randomId('m_'), text };
      if (ok.length) frame.attachments = ok.map((a) => ({ kind: 'image', mime: a.mime, data: a.data }));
      if (this.opts.context) frame.context = this.opts.context;
      this._message('user', text, ok);
      this._remember('user', ok.length ? `${text}${text ? '\n' : ''}[${ok.length} image${ok.length > 1 ? 's' : ''}]` : text);
      this._begin(frame.id, frame);
      if (this.lazy || !this.client || ['closed', 'failed'].includes(this.client.state)) this.connect();
      if (this.state !== 'online') {
        this.queued = frame;
        this.inflight.meta.textContent = 'Waiting for the connection…';
      }
      const c = this.client;
      if (!c) return;
      if (c.reply && !c.reply.finished) c.reply._fail(new rtclient.RtError('abandoned', 'a new message replaced it'));
      c.send(frame.text, { attachments: frame.attachments, context: frame.context, id: frame.id }); // sent once connected
    }

    /** Start waiting for the reply to message `messageId`. */
    _begin(messageId, frame) {
      const el = this._message('assistant', '', null);
      el.classList.add('rtc-streaming');
      el.setAttribute('aria-busy', 'true');
      const body = el.querySelector('.rtc-body');
      body.append(h('span', { class: 'rtc-typing', 'aria-label': 'Assistant is answering', role: 'img' },
        h('span'), h('span'), h('span')));
      const meta = h('div', { class: 'rtc-meta' });
      el.append(meta);
      this.inflight = { messageId, responseId: null, lastSeq: -1, text: '', el, body, meta, route: null,
        ttft: null, frame, warnings: [], stopping: false, tokens: 0, gaps: 0, dupes: 0 };
      this._busy(true);
      return this.inflight;
    }

    stop() {
      const f = this.inflight;
      if (!f) return;
      const c = this.client;
      const mine = c && c.reply && !c.reply.finished;
      if (this.queued) { // never sent: just drop it
        this.queued = null;
        if (mine) c.cancel();
        this._finish({ finish_reason: 'cancelled' });
        return;
      }
      f.stopping = true;
      this.stopBtn.disabled = true;
      if (mine) c.cancel(); // before the route, the client sends it once the route names the answer
      else this._send(f.responseId ? { type: 'cancel', response_id: f.responseId } : { type: 'cancel' });
    }

    _busy(on) {
      this.stopBtn.hidden = !on;
      this.stopBtn.disabled = false;
      this.sendBtn.hidden = on;
      this.root.classList.toggle('rtc-is-busy', on);
      if (!on && this.root.contains(document.activeElement) && document.activeElement === this.stopBtn) this.input.focus();
    }

    _send(frame) {
      return this.client ? this.client._send(frame) : false;
    }

    /** The open socket, if any (the client's). */
    get ws() {
      return this.client ? this.client.ws : null;
    }

    // ---------------------------------------------------------------- connection
    _setState(state, detail) {
      this.state = state;
      this.status.dataset.state = state;
      this.statusText.textContent = detail || STATE_TEXT[state];
      this.root.dataset.state = state;
    }

    /** Open the connection (rtclient does the reconnects, resumes and token refreshes). */
    connect() {
      if (this.destroyed) return;
      if (this.client && !['closed', 'failed'].includes(this.client.state)) return;
      this.lazy = false;
      this._setState(this.everOnline ? 'reconnecting' : 'connecting');
      const auth = this.opts.auth;
      const client = new rtclient.RtClient({
        url: this.opts.url,
        WebSocket: window.WebSocket,
        client: this.opts.client,
        session: this.session ? { session_id: this.session.id, resume_token: this.session.token } : null,
        backoff: { baseMs: BACKOFF_BASE_MS, capMs: BACKOFF_CAP_MS },
        token: typeof auth === 'function' || !auth ? null : String(auth),
        getToken: typeof auth === 'function' ? async () => { // a fresh token per socket
          try {
            return String(await auth());
          } catch (err) {
            this.notice(`Could not get a sign-in token: ${err && err.message ? err.message : err}`, 'error');
            throw err;
          }
        } : null,
      });
      if (this.adoptable) {
        client.adopt(this.adoptable);
        this.adoptable = null;
      }
      this.client = client;
      const mine = (fn) => (x) => { if (client === this.client && !this.destroyed) fn(x); };
      client.on('open', mine(({ resuming }) => { this.resumeAttempt = resuming; this.resumeError = null; }));
      client.on('frame', mine((f) => { if (f && typeof f === 'object') this.handleFrame(f); }));
      client.on('retry', mine(({ delayMs }) => {
        this.nextDelay = delayMs;
        this._setState('reconnecting', `Reconnecting in ${Math.max(1, Math.round(delayMs / 1000))} s…`);
      }));
      client.on('close', mine(({ code, reason }) => this._onClose(client, code, reason)));
      client.on('state', mine((state) => {
        if (state === 'failed' && !['offline', 'paused'].includes(this.state)) {
          this._setState('offline', 'Not connected');
          this.notice(`Cannot connect to ${this.opts.url}.`, 'error');
          this._interrupt('Not connected.');
        }
      }));
      client.connect().catch(() => { /* shown through the events above */ });
    }

    /** Close the connection for good (no reconnect). */
    _abandon() {
      const c = this.client;
      this.client = null;
      if (c) c.close();
    }

    /** The socket closed: say why. The client reconnects on its own unless retrying cannot help. */
    _onClose(client, code, reason) {
      const wasOnline = this.state === 'online';
      const final = NO_RETRY_CLOSES.has(code) && !(AUTH_CLOSES.has(code) && client.getToken);
      if (final) {
        this._setState('offline', code === 4004 ? 'Not allowed on this site' : 'Not authorized');
        if (!this.fatalShown) this.notice(`The server refused the connection${reason ? `: ${reason}` : ''}.`, 'error');
        this.fatalShown = false;
        this._interrupt('Not connected.');
        return;
      }
      if (code === 4010) { // resumed elsewhere, which rotated the token: this tab cannot have it back
        this.session = null;
        this._persist();
        this._setState('paused', 'Open in another tab');
        this.lazy = true;
        this._interrupt('The conversation moved to another tab.');
        this.notice('This conversation continued in another tab or window. Type here to start a new one in this tab.');
        return;
      }
      if (code === 4003 && !this.inflight) { // idle: reconnect when the user comes back
        client.close();
        this._setState('paused', 'Idle');
        this.lazy = true;
        return;
      }
      if (wasOnline) this.notice(code === 1012 ? 'The server is restarting; reconnecting…' : 'Connection lost; reconnecting…');
      this._setState('reconnecting');
    }

    /** The network came back or the page became visible: check the socket, reconnect now if down. */
    _wake(force) {
      if (this.destroyed || this.lazy || !this.client) return;
      this.client.probe(force ? 3000 : 5000);
    }

    // ---------------------------------------------------------------- frames
    /** Handle one server frame (public for tests and custom transports). */
    handleFrame(f) {
      switch (f.type) {
        case 'session': return this._onSession(f);
        case 'route': return this._onRoute(f);
        case 'token': return this._onToken(f);
        case 'done': return this._onDone(f);
        case 'error': return this._onError(f);
        default: return undefined; // pong, token_expiring, refreshed: the client answers them
      }
    }

    _onSession(f) {
      const tried = this.resumeAttempt;
      this.resumeAttempt = false;
      this.session = { id: f.session_id, token: f.resume_token }; // rotates every time: keep the newest
      if (f.limits) this.limits = { ...this.limits, ...f.limits };
      this._persist();
      const first = !this.everOnline;
      this.everOnline = true;
      this.fatalShown = false;
      this._setState('online');
      if (tried && f.resumed) {
        if (!first) this.notice('Reconnected; the conversation goes on.');
        const fl = this.inflight;
        if (fl && !fl.responseId && !this.queued) this._interrupt('The connection dropped before the answer started; send the message again.');
      } else if (tried && this.log.querySelector('.rtc-msg')) { // nothing on screen: nothing to explain
        const why = this.resumeError === 'session_expired' ? 'the conversation expired'
          : this.resumeError === 'unauthorized' ? 'the conversation could not be verified'
            : 'the server no longer knows this conversation (it may have restarted)';
        this.notice(`Started a new conversation: ${why}. The assistant does not see the earlier messages.`, 'warn');
        this._remember('notice', 'A new conversation started here.');
        if (this.inflight && !this.queued) this._interrupt('This answer was cut off by the reconnect.');
      }
      if (this.queued) { // the client sends it now
        this.queued = null;
        if (this.inflight) this.inflight.meta.textContent = '';
      }
    }

    _onRoute(f) {
      const fl = this.inflight;
      if (!fl || f.message_id !== fl.messageId) return;
      fl.responseId = f.response_id;
      fl.route = f;
      fl.el.dataset.responseId = f.response_id;
      fl.el.dataset.useCase = String(f.use_case);
      fl.el.dataset.decision = String(f.decision);
      this._badge();
      this._persist();
    }

    _owns(f) {
      const fl = this.inflight;
      if (!fl) return false;
      if (!fl.responseId && f.response_id && !this.queued) fl.responseId = f.response_id;
      return fl.responseId === f.response_id;
    }

    _onToken(f) {
      if (!this._owns(f)) return;
      const fl = this.inflight;
      const seq = Number(f.seq);
      if (!(seq > fl.lastSeq)) { fl.dupes++; return; } // replayed or duplicated: already shown
      if (seq !== fl.lastSeq + 1) fl.gaps++;
      fl.lastSeq = Number(f.seq_last ?? f.seq);
      fl.tokens += fl.lastSeq - seq + 1;
      if (fl.ttft === null && f.stats && typeof f.stats.ttft_ms === 'number') fl.ttft = f.stats.ttft_ms;
      fl.text += String(f.text ?? '');
      const stick = this._nearBottom();
      fl.body.replaceChildren(renderMarkdown(fl.text));
      if (stick) this.log.scrollTop = this.log.scrollHeight;
      if (fl.tokens === 1 || fl.tokens % 8 === 0) this._badge(f.stats);
      if (!this.saveTimer) this.saveTimer = window.setTimeout(() => this._persist(), 300); // text and lastSeq together
    }

    _onDone(f) {
      if (!this._owns(f)) return;
      this._finish(f);
    }

    _onError(f) {
      const code = String(f.code || 'error');
      const msg = String(f.message || code);
      if (this.resumeAttempt && RESUME_ERRORS.has(code) && !f.fatal) { this.resumeError = code; return; }
      const fl = this.inflight;
      // a rate-limit rejection names no message: it can only be the one waiting for its route
      const limited = code === 'rate_limited' && !f.ref && fl && !fl.responseId && !this.queued;
      const mine = fl && (limited || (f.ref && f.ref === fl.messageId) || (f.response_id && f.response_id === fl.responseId));
      if (code === 'nothing_to_cancel') return;
      if (code === 'recovery_impossible') {
        if (fl) this._interrupt('Part of this answer was lost in the reconnect; send the message again.');
        return;
      }
      if (mine && code === 'attachment_unsupported') {
        this._warn(fl, `Image not used: ${msg}.`);
        return;
      }
      if (mine) {
        if (f.response_id && !fl.responseId) fl.responseId = f.response_id;
        const hint = code === 'busy' ? 'The previous answer is still finishing; try again in a moment.'
          : f.retryable ? `${msg} (you can send it again)` : msg;
        this._warn(fl, hint, 'error');
        if (!f.response_id) this._finish({ finish_reason: 'error', rejected: true }); // no done follows a rejected message
        return;
      }
      if (f.fatal) this.fatalShown = true; // the close that follows needs no second note
      this.notice(f.fatal ? `Error: ${msg}` : msg, f.fatal ? 'error' : 'warn');
    }

    _warn(fl, text, kind = 'warn') {
      if (fl.warnings.includes(text)) return; // e.g. one warning per attached image: say it once
      fl.warnings.push(text);
      fl.el.insertBefore(h('p', { class: `rtc-warn rtc-warn-${kind}`, role: 'note', text }), fl.meta);
    }

    _badge(stats) {
      const fl = this.inflight;
      if (!fl) return;
      fl.meta.replaceChildren(this._badgeEl(fl.route, fl.ttft, stats, null, fl));
    }

    _badgeEl(route, ttft, tokenStats, done, fl) {
      const parts = [];
      const badge = h('span', { class: 'rtc-badge', 'aria-label': 'Response details' });
      if (route) {
        const decision = String(route.decision || '');
        parts.push(h('span', { class: 'rtc-b-usecase', text: String(route.use_case) }));
        parts.push(h('span', { class: 'rtc-b-model', text: String(route.model) }));
        parts.push(h('span', { class: `rtc-b-decision rtc-b-${decision.replace(/[^a-z]/g, '')}`, text: decision }));
        badge.title = `route: ${route.use_case} → ${route.model} on ${route.worker} (${decision}, confidence ${route.confidence}, routing ${fmtMs(Number(route.route_ms) || 0)})`;
      }
      if (typeof ttft === 'number') parts.push(h('span', { class: 'rtc-b-ttft', text: `TTFT ${fmtMs(ttft)}` }));
      let rate = null;
      if (done && done.stats && typeof done.stats.tokens_per_s === 'number' && done.stats.tokens_per_s > 0) rate = done.stats.tokens_per_s;
      else if (tokenStats && fl && fl.tokens > 1 && tokenStats.elapsed_ms > (ttft || 0)) rate = ((fl.tokens - 1) * 1000) / (tokenStats.elapsed_ms - (ttft || 0));
      if (rate !== null) parts.push(h('span', { class: 'rtc-b-rate', text: `${rate.toFixed(1)} tok/s` }));
      if (done && done.stats && typeof done.stats.total_ms === 'number') {
        badge.title += `${badge.title ? '\n' : ''}total ${fmtMs(done.stats.total_ms)}, ${done.usage ? done.usage.completion_tokens : '?'} tokens`;
      }
      parts.forEach((p, n) => {
        if (n) badge.append(h('span', { class: 'rtc-b-sep', 'aria-hidden': 'true', text: '·' }));
        badge.append(p);
      });
      return badge;
    }

    _finish(done, interrupted) {
      const fl = this.inflight;
      if (!fl) return;
      this.inflight = null;
      fl.el.classList.remove('rtc-streaming');
      fl.el.removeAttribute('aria-busy');
      const typing = fl.body.querySelector('.rtc-typing');
      if (typing) typing.remove();
      const reason = done.finish_reason;
      Object.assign(fl.el.dataset, { finish: interrupted ? 'interrupted' : reason, lastSeq: String(fl.lastSeq),
        tokens: String(fl.tokens), gaps: String(fl.gaps), dupes: String(fl.dupes) });
      if (typeof done.last_seq === 'number') fl.el.dataset.doneLastSeq = String(done.last_seq);
      const labels = { cancelled: 'Stopped', length: 'Cut off at the length limit', error: done.rejected ? 'Not answered' : 'Failed' };
      if (interrupted) labels.error = 'Interrupted';
      const badge = this._badgeEl(fl.route, fl.ttft, null, done.stats ? done : null, fl);
      fl.meta.replaceChildren(badge);
      if (labels[reason]) fl.meta.prepend(h('span', { class: `rtc-finish rtc-finish-${interrupted ? 'interrupted' : reason}`, text: labels[reason] }));
      if (!fl.text && !fl.warnings.length && reason !== 'error') fl.body.append(h('p', { class: 'rtc-md-p rtc-muted', text: reason === 'cancelled' ? '(stopped before any text)' : '(no text)' }));
      this._busy(false);
      const meta = Array.from(badge.children).filter((c) => !c.classList.contains('rtc-b-sep')).map((c) => c.textContent).join(' · ');
      if (fl.text) this._remember('assistant', fl.text, meta);
      else this._persist();
      const said = fl.text ? `Assistant: ${fl.text}` : '';
      const tail = reason === 'cancelled' ? ' Response stopped.' : reason === 'error' ? ` ${fl.warnings.join(' ') || 'The answer failed.'}` : '';
      this.announce((said + tail).trim() || 'No answer.');
    }

    /** The current response cannot continue (e.g. the server lost it in a restart). */
    _interrupt(text) {
      const fl = this.inflight;
      if (!fl) return;
      this._warn(fl, text, 'error');
      this._finish({ finish_reason: 'error' }, true);
    }

    // ---------------------------------------------------------------- lifecycle
    /** Forget this conversation and start a new one. */
    reset() {
      this.queued = null;
      if (this.inflight) this._send({ type: 'cancel' });
      this.inflight = null;
      this._busy(false);
      this.session = null;
      this.transcript = [];
      this._persist();
      this.log.replaceChildren();
      if (this.opts.greeting) this.log.append(h('p', { class: 'rtc-empty', text: this.opts.greeting }));
      this._abandon();
      this.everOnline = false;
      this.connect();
      this.input.focus();
    }

    destroy() {
      this.destroyed = true;
      this._abandon();
      window.removeEventListener('online', this._onOnline);
      window.removeEventListener('pagehide', this._onPageHide);
      window.clearTimeout(this.saveTimer);
      document.removeEventListener('visibilitychange', this._onVisible);
      this.root.remove();
      const i = instances.indexOf(this);
      if (i >= 0) instances.splice(i, 1);
    }
  }

  // ------------------------------------------------------------------ styles and mounting

  let cssReady = null; // a Promise while our stylesheet loads: the widget stays invisible until then (no flash)

  function ensureCss(href) {
    if (href === false || cssReady) return;
    const existing = document.querySelector('link[data-rtchat-css]');
    const url = href || (scriptBase ? new URL('rtchat.css', scriptBase).href : null);
    if (existing || !url || Array.from(document.styleSheets).some((sh) => sh.href === url)) return;
    const link = h('link', { rel: 'stylesheet', href: url, 'data-rtchat-css': '' });
    cssReady = new Promise((resolve) => {
      link.addEventListener('load', resolve, { once: true });
      link.addEventListener('error', resolve, { once: true });
      window.setTimeout(resolve, 3000);
    });
    document.head.append(link);
  }

  const instances = [];

  /** Mount a widget into `element` (or document.body for a floating one). Returns the widget. */
  function mount(element, options = {}) {
    ensureCss(options.css);
    const target = typeof element === 'string' ? document.querySelector(element) : element;
    const w = new Widget(target || document.body, options);
    if (cssReady) {
      w.root.style.visibility = 'hidden';
      cssReady.then(() => { w.root.style.visibility = ''; });
    }
    instances.push(w);
    return w;
  }

  function optionsFromScript(el) {
    const d = el.dataset;
    return {
      url: d.url, mode: d.mode || (d.target ? 'inline' : 'floating'), theme: d.theme, title: d.title,
      placeholder: d.placeholder, greeting: d.greeting, open: d.open !== undefined && d.open !== 'false',
      css: d.css === 'false' ? false : d.css, storageKey: d.storageKey,
      context: d.useCase ? { use_case: d.useCase } : null,
    };
  }

  const api = { mount, instances, version: VERSION, renderMarkdown };
  window.RtChat = api;

  const params = new URLSearchParams(window.location.search);
  if (params.has('rtchat-test') || (currentScript && currentScript.dataset.testHook !== undefined)) {
    window.__rtchatTest = {
      widget: (i = 0) => instances[i],
      frame: (frame, i = 0) => instances[i].handleFrame(frame),
      expect: (messageId, i = 0) => { instances[i]._begin(messageId, null); },
      drop: (i = 0) => { const w = instances[i]; if (w.ws) w.ws.close(4000, 'test drop'); },
      renderMarkdown,
    };
  }

  if (currentScript && (currentScript.dataset.url !== undefined || currentScript.dataset.mode !== undefined
      || currentScript.dataset.target !== undefined)) {
    const opts = optionsFromScript(currentScript);
    const go = () => mount(currentScript.dataset.target ? document.querySelector(currentScript.dataset.target) : document.body, opts);
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', go, { once: true });
    else go();
  }
})();
