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

export const VERSION = '0.1.0';

const BACKOFF = { baseMs: 500, capMs: 15000 };
const AUTH_CLOSES = new Set([4001, 4005]); // unauthorized, token expired: get a new token, reconnect
const FINAL_CLOSES = new Set([4004]); // origin not allowed: retrying cannot help
const MAX_AUTH_FAILURES = 3; // consecutive 4001 closes before giving up
const RESUME_ERRORS = new Set(['session_not_found', 'session_expired', 'unauthorized', 'store_unavailable']);

/** An error the server sent (`code`, `status`, `retryable`, `fatal`), or one of the
 * client's own: `closed`, `interrupted` (retryable: send the message again),
 * `session_lost`, `busy`, `auth_failed`. */
export class RtError extends Error {
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
export function backoffDelay(attempt, { baseMs = BACKOFF.baseMs, capMs = BACKOFF.capMs } = {}, random = Math.random) {
  const ceiling = Math.min(capMs, baseMs * 2 ** attempt);
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Standard base64 of bytes (no btoa: React Native may not have it). */
export function base64(bytes) {
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
export const jsonCodec = Object.freeze({
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
export class Reply {
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
export class RtClient extends Emitter {
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
