/*! machine: what the widget knows about its conversation, as a pure state machine.
 *
 * No DOM, no timers, no socket. The widget feeds it events (server frames, socket opens,
 * closes and retries, the user's send and stop) and carries out the effects each call
 * returns, in order:
 *
 *   {type: 'state', state, detail}   show the connection state (detail: null for the default text)
 *   {type: 'notice', text, kind}     a line in the conversation ('info', 'warn' or 'error')
 *   {type: 'remember', role, text}   add to the saved transcript
 *   {type: 'persist'}                save now;  {type: 'persistSoon'}: save within a moment
 *   {type: 'route'}                  the answer's route is known (answer.route)
 *   {type: 'text', stats, badge}     the answer's text grew (answer.text); badge: refresh the badge
 *   {type: 'warn', text, kind}       a note on the answer
 *   {type: 'sending'}                a queued message is now sent (clear "Waiting…")
 *   {type: 'finish', answer, done, interrupted}   the answer ended; `answer` is no longer current
 *   {type: 'cancel', via, responseId}             cancel it: via 'client' (rtclient's reply) or 'frame'
 *   {type: 'stopping'}               a stop was asked for; {type: 'pauseClient'}: close the socket, no retry
 *
 * The state is `state` (connecting, online, reconnecting, paused, offline), `session`
 * ({id, token}: the newest resume token), `limits`, `answer` (the answer being streamed, or
 * null) and `queued` (a message typed while not online, sent when the session is back).
 */

export const RESUME_ERRORS = new Set(['session_not_found', 'session_expired', 'unauthorized']);
const NO_RETRY_CLOSES = new Set([4001, 4004, 4005]); // 4001/4005 are retried when auth is a function
const AUTH_CLOSES = new Set([4001, 4005]);
export const DEFAULT_LIMITS = Object.freeze({ max_attachments: 4, max_attachment_bytes: 5 * 1024 * 1024, max_text_chars: 16000 });

/** A fresh answer record: what the widget shows for one reply. */
export function answer(messageId) {
  return { messageId, responseId: null, lastSeq: -1, text: '', route: null, ttft: null, warnings: [],
    stopping: false, tokens: 0, gaps: 0, dupes: 0 };
}

export class Machine {
  constructor(session = null) {
    this.session = session;
    this.limits = { ...DEFAULT_LIMITS };
    this.state = 'connecting';
    this.everOnline = false;
    this.resumeAttempt = false;
    this.resumeError = null;
    this.fatalShown = false;
    this.lazy = false; // paused: connect again when the user comes back
    this.answer = null;
    this.queued = null;
  }

  // ------------------------------------------------------------ the connection
  /** A connection is being opened. */
  connecting() {
    this.lazy = false;
    return this._state(this.everOnline ? 'reconnecting' : 'connecting');
  }

  /** A socket opened; `resuming`: its hello carries the stored session. */
  opened(resuming) {
    this.resumeAttempt = !!resuming;
    this.resumeError = null;
    return [];
  }

  /** The client waits `delayMs` before its next try. */
  retrying(delayMs) {
    return this._state('reconnecting', `Reconnecting in ${Math.max(1, Math.round(delayMs / 1000))} s…`);
  }

  /** The client gave up (it could not connect at all). */
  failed(url) {
    if (['offline', 'paused'].includes(this.state)) return [];
    return [...this._state('offline', 'Not connected'), notice(`Cannot connect to ${url}.`, 'error'),
      ...this._interrupt('Not connected.')];
  }

  /**
   * The socket closed with `code`. `canRefresh`: auth is a function, so a refused token can be
   * replaced (the client then reconnects on its own).
   */
  closed(code, reason, canRefresh) {
    const wasOnline = this.state === 'online';
    if (NO_RETRY_CLOSES.has(code) && !(AUTH_CLOSES.has(code) && canRefresh)) {
      const fx = this._state('offline', code === 4004 ? 'Not allowed on this site' : 'Not authorized');
      if (!this.fatalShown) fx.push(notice(`The server refused the connection${reason ? `: ${reason}` : ''}.`, 'error'));
      this.fatalShown = false;
      return [...fx, ...this._interrupt('Not connected.')];
    }
    if (code === 4010) { // resumed elsewhere, which rotated the token: this tab cannot have it back
      this.session = null;
      this.lazy = true;
      return [{ type: 'persist' }, ...this._state('paused', 'Open in another tab'),
        ...this._interrupt('The conversation moved to another tab.'),
        notice('This conversation continued in another tab or window. Type here to start a new one in this tab.')];
    }
    if (code === 4003 && !this.answer) { // idle: reconnect when the user comes back
      this.lazy = true;
      return [{ type: 'pauseClient' }, ...this._state('paused', 'Idle')];
    }
    const fx = wasOnline ? [notice(code === 1012 ? 'The server is restarting; reconnecting…' : 'Connection lost; reconnecting…')] : [];
    return [...fx, ...this._state('reconnecting')];
  }

  // ------------------------------------------------------------ the user
  /** A message was sent (or is expected, for tests): its answer starts. `frame` when not online: queued. */
  begin(messageId, frame = null) {
    this.answer = answer(messageId);
    if (frame && this.state !== 'online') this.queued = frame;
    return this.answer;
  }

  /** An answer that was streaming when the page was left (from the store); resumed on connect. */
  adopt(saved) {
    const a = this.begin(saved.messageId);
    const seq = Number(saved.lastSeq);
    // a saved seq of 0 is a token shown: the replay must not show it again
    Object.assign(a, { responseId: saved.responseId, lastSeq: Number.isInteger(seq) && seq >= 0 ? seq : -1, text: String(saved.text || ''),
      route: saved.route || null, ttft: typeof saved.ttft === 'number' ? saved.ttft : null, tokens: Number(saved.tokens) || 0 });
    return { messageId: a.messageId, responseId: a.responseId, lastSeq: a.lastSeq };
  }

  /** Stop the answer. `replyPending`: the client still tracks its reply (it can cancel it itself). */
  stop(replyPending) {
    const a = this.answer;
    if (!a) return [];
    if (this.queued) { // never sent: just drop it
      this.queued = null;
      return [...(replyPending ? [{ type: 'cancel', via: 'client', responseId: null }] : []),
        ...this._finish({ finish_reason: 'cancelled' })];
    }
    a.stopping = true;
    return [{ type: 'stopping' }, { type: 'cancel', via: replyPending ? 'client' : 'frame', responseId: a.responseId }];
  }

  /** Forget the conversation (a new one starts on the next connect). */
  reset() {
    const fx = this.answer ? [{ type: 'cancel', via: 'frame', responseId: null }] : [];
    this.queued = null;
    this.answer = null;
    this.session = null;
    this.everOnline = false;
    return fx;
  }

  /** What to save so that a reload resumes: the session and the streaming answer. */
  snapshot() {
    const v = {};
    if (this.session) { v.session_id = this.session.id; v.resume_token = this.session.token; }
    const a = this.answer;
    if (a && a.responseId && this.session) {
      v.inflight = { messageId: a.messageId, responseId: a.responseId, lastSeq: a.lastSeq, text: a.text,
        route: a.route, ttft: a.ttft, tokens: a.tokens };
    }
    return v;
  }

  // ------------------------------------------------------------ server frames
  /** One server frame. `onScreen`: the conversation shows messages (a lost session is then explained). */
  frame(f, onScreen = false) {
    switch (f && f.type) {
      case 'session': return this._session(f, onScreen);
      case 'route': return this._route(f);
      case 'token': return this._token(f);
      case 'done': return this._owns(f) ? this._finish(f) : [];
      case 'error': return this._error(f);
      default: return []; // pong, token_expiring, refreshed: the client answers them
    }
  }

  _session(f, onScreen) {
    const tried = this.resumeAttempt;
    this.resumeAttempt = false;
    this.session = { id: f.session_id, token: f.resume_token }; // rotates every time: keep the newest
    if (f.limits) this.limits = { ...this.limits, ...f.limits };
    const first = !this.everOnline;
    this.everOnline = true;
    this.fatalShown = false;
    const fx = [{ type: 'persist' }, ...this._state('online')];
    if (tried && f.resumed) {
      if (!first) fx.push(notice('Reconnected; the conversation goes on.'));
      const a = this.answer;
      if (a && !a.responseId && !this.queued) fx.push(...this._interrupt('The connection dropped before the answer started; send the message again.'));
    } else if (tried && onScreen) { // nothing on screen: nothing to explain
      const why = this.resumeError === 'session_expired' ? 'the conversation expired'
        : this.resumeError === 'unauthorized' ? 'the conversation could not be verified'
          : 'the server no longer knows this conversation (it may have restarted)';
      fx.push(notice(`Started a new conversation: ${why}. The assistant does not see the earlier messages.`, 'warn'),
        { type: 'remember', role: 'notice', text: 'A new conversation started here.' });
      if (this.answer && !this.queued) fx.push(...this._interrupt('This answer was cut off by the reconnect.'));
    }
    if (this.queued) { // the client sends it now
      this.queued = null;
      if (this.answer) fx.push({ type: 'sending' });
    }
    return fx;
  }

  _route(f) {
    const a = this.answer;
    if (!a || f.message_id !== a.messageId) return [];
    a.responseId = f.response_id;
    a.route = f;
    return [{ type: 'route' }, { type: 'persist' }];
  }

  _owns(f) {
    const a = this.answer;
    if (!a) return false;
    if (!a.responseId && f.response_id && !this.queued) a.responseId = f.response_id;
    return a.responseId === f.response_id;
  }

  _token(f) {
    if (!this._owns(f)) return [];
    const a = this.answer;
    const seq = Number(f.seq);
    if (!(seq > a.lastSeq)) { a.dupes++; return []; } // replayed or duplicated: already shown
    if (seq !== a.lastSeq + 1) a.gaps++;
    a.lastSeq = Number(f.seq_last ?? f.seq);
    a.tokens += a.lastSeq - seq + 1;
    if (a.ttft === null && f.stats && typeof f.stats.ttft_ms === 'number') a.ttft = f.stats.ttft_ms;
    a.text += String(f.text ?? '');
    return [{ type: 'text', stats: f.stats || null, badge: a.tokens === 1 || a.tokens % 8 === 0 }, { type: 'persistSoon' }];
  }

  _error(f) {
    const code = String(f.code || 'error');
    const msg = String(f.message || code);
    if (this.resumeAttempt && RESUME_ERRORS.has(code) && !f.fatal) { this.resumeError = code; return []; }
    const a = this.answer;
    // a rate-limit rejection names no message: it can only be the one waiting for its route
    const limited = code === 'rate_limited' && !f.ref && a && !a.responseId && !this.queued;
    const mine = a && (limited || (f.ref && f.ref === a.messageId) || (f.response_id && f.response_id === a.responseId));
    if (code === 'nothing_to_cancel') return [];
    if (code === 'recovery_impossible') return a ? this._interrupt('Part of this answer was lost in the reconnect; send the message again.') : [];
    if (mine && code === 'attachment_unsupported') return this._warn(`Image not used: ${msg}.`);
    if (mine) {
      if (f.response_id && !a.responseId) a.responseId = f.response_id;
      const hint = code === 'busy' ? 'The previous answer is still finishing; try again in a moment.'
        : f.retryable ? `${msg} (you can send it again)` : msg;
      const fx = this._warn(hint, 'error');
      if (!f.response_id) fx.push(...this._finish({ finish_reason: 'error', rejected: true })); // no done follows a rejected message
      return fx;
    }
    if (f.fatal) this.fatalShown = true; // the close that follows needs no second note
    return [notice(f.fatal ? `Error: ${msg}` : msg, f.fatal ? 'error' : 'warn')];
  }

  // ------------------------------------------------------------ the answer
  _warn(text, kind = 'warn') {
    const a = this.answer;
    if (!a || a.warnings.includes(text)) return []; // e.g. one warning per attached image: say it once
    a.warnings.push(text);
    return [{ type: 'warn', text, kind }];
  }

  _finish(done, interrupted = false) {
    const a = this.answer;
    if (!a) return [];
    this.answer = null;
    return [{ type: 'finish', answer: a, done, interrupted }];
  }

  /** The answer cannot continue (e.g. the server lost it in a restart). */
  _interrupt(text) {
    if (!this.answer) return [];
    return [...this._warn(text, 'error'), ...this._finish({ finish_reason: 'error' }, true)];
  }

  _state(state, detail = null) {
    this.state = state;
    return [{ type: 'state', state, detail }];
  }
}

const notice = (text, kind = 'info') => ({ type: 'notice', text, kind });
