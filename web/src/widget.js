/*! widget: the chat box on the page. It builds the DOM, turns user input and rtclient's events
 * into Machine events, and carries out the effects the Machine returns (machine.js). */
import * as rtclient from '../../clients/js/src/index.js';
import { frameBytes, readImage, refusal } from './attachments.js';
import { h, icon, renderMarkdown, StreamView } from './dom.js';
import { badge, finishLabel, fmtBytes, randomId, STATE_TEXT } from './format.js';
import { Machine } from './machine.js';
import { remember, Store } from './store.js';

export const VERSION = '1.0.0';
const BACKOFF = { baseMs: 500, capMs: 15000 };
const GREETING = 'Ask a question to start. Answers stream in as they are written.';

export const instances = [];
let uid = 0;

export function defaultUrl() {
  const loc = window.location;
  if (loc.protocol !== 'http:' && loc.protocol !== 'https:') return 'ws://127.0.0.1:8000/ws';
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
}

function sessionStorageOrNull() {
  try {
    return window.sessionStorage;
  } catch {
    return null; // e.g. a sandboxed frame: no resume across reloads
  }
}

export class Widget {
  constructor(host, options = {}) {
    this.opts = {
      url: options.url || defaultUrl(),
      mode: options.mode === 'floating' ? 'floating' : 'inline',
      theme: ['light', 'dark'].includes(options.theme) ? options.theme : 'auto',
      title: options.title || 'Chat',
      placeholder: options.placeholder || 'Ask anything…',
      greeting: options.greeting === undefined ? GREETING : options.greeting,
      open: !!options.open,
      client: options.client || `rtchat.js/${VERSION}`,
      context: options.context || null,
      auth: options.auth || null,
    };
    this.host = host;
    this.id = `rtc${++uid}`;
    // phones have no Shift+Enter: there Enter adds a line and the send button sends
    this.touch = !!(window.matchMedia && window.matchMedia('(pointer: coarse)').matches);
    this.client = null; // the connection: rtclient's RtClient
    this.adoptable = null; // an answer restored from storage, for the client to resume
    this.destroyed = false;
    this.attachments = [];
    this.view = null; // the DOM of the answer being streamed: {el, body, meta, stream}
    this.store = new Store(sessionStorageOrNull(), options.storageKey || options.url || defaultUrl());
    const saved = this.store.load();
    this.machine = new Machine(saved.session);
    this._build();
    for (const m of saved.log) this._restore(m);
    this.transcript = saved.log;
    if (saved.inflight) this._restoreInflight(saved.inflight);
    this._onOnline = () => this._wake(true);
    this._onPageHide = () => this._persist();
    this._onVisible = () => document.visibilityState === 'visible' && this._wake(false);
    window.addEventListener('pagehide', this._onPageHide);
    window.addEventListener('online', this._onOnline);
    document.addEventListener('visibilitychange', this._onVisible);
    this.connect();
  }

  // the machine's state, read by pages and tests
  get state() { return this.machine.state; }
  get session() { return this.machine.session; }
  get inflight() { return this.machine.answer; }
  get limits() { return this.machine.limits; }
  get lazy() { return this.machine.lazy; }

  // ---------------------------------------------------------------- DOM
  _build() {
    const o = this.opts;
    const id = this.id;
    this.root = h('div', { class: `rtc-root rtc-mode-${o.mode} rtc-theme-${o.theme}`, 'data-rtchat': VERSION });
    this.statusText = h('span', { class: 'rtc-status-text', text: STATE_TEXT.connecting });
    this.status = h('span', { class: 'rtc-status', role: 'status', 'data-state': 'connecting' },
      h('span', { class: 'rtc-dot', 'aria-hidden': 'true' }), this.statusText);
    this.newBtn = h('button', { type: 'button', class: 'rtc-btn rtc-new', 'aria-label': 'New conversation',
      title: 'New conversation', onclick: () => this.reset() }, icon('plus'), h('span', { class: 'rtc-btn-text', text: 'New' }));
    const header = h('div', { class: 'rtc-header' },
      h('h2', { class: 'rtc-title', id: `${id}-title`, text: o.title }), this.status, this.newBtn);
    if (o.mode === 'floating') {
      header.append(h('button', { type: 'button', class: 'rtc-btn rtc-close', 'aria-label': 'Close chat',
        title: 'Close chat', onclick: () => this.close() }, icon('close')));
    }
    this.log = h('div', { class: 'rtc-log', id: `${id}-log`, role: 'region', 'aria-label': 'Conversation', tabindex: '0' });
    if (o.greeting) this.log.append(h('p', { class: 'rtc-empty', text: o.greeting }));
    this.live = h('div', { class: 'rtc-sr rtc-live', 'aria-live': 'polite', 'aria-atomic': 'true' });
    this.fileInput = h('input', { type: 'file', accept: 'image/*', multiple: true, class: 'rtc-file', tabindex: '-1',
      'aria-hidden': 'true', onchange: () => { this.addFiles(this.fileInput.files); this.fileInput.value = ''; } });
    this.attachBtn = h('button', { type: 'button', class: 'rtc-btn rtc-attach', 'aria-label': 'Attach image',
      title: 'Attach image (or drop / paste one)', onclick: () => this.fileInput.click() }, icon('clip'));
    this.input = h('textarea', { class: 'rtc-input', id: `${id}-input`, rows: '1', placeholder: o.placeholder,
      'aria-describedby': `${id}-hint`, enterkeyhint: this.touch ? 'enter' : 'send' });
    this.sendBtn = h('button', { type: 'submit', class: 'rtc-btn rtc-send', 'aria-label': 'Send message', title: 'Send (Enter)' },
      icon('send'));
    this.stopBtn = h('button', { type: 'button', class: 'rtc-btn rtc-stop', 'aria-label': 'Stop response',
      title: 'Stop (Esc)', hidden: true, onclick: () => this.stop() }, icon('stop'), h('span', { class: 'rtc-btn-text', text: 'Stop' }));
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
      icon('chat'), h('span', { class: 'rtc-launcher-text', text: o.title }));
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
    return this._append(h('p', { class: `rtc-notice rtc-notice-${kind}`, role: kind === 'error' ? 'alert' : null, text }));
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
    if (m.role === 'notice') { this.notice(m.text); return; }
    const el = this._message(m.role === 'user' ? 'user' : 'assistant', m.text, null);
    if (m.role !== 'user' && m.meta) el.append(h('div', { class: 'rtc-meta' }, h('span', { class: 'rtc-badge', text: m.meta })));
  }

  /** An answer was streaming when the page was left: show what we had; the resume replays the rest. */
  _restoreInflight(saved) {
    this._begin(saved.messageId, null);
    this.adoptable = this.machine.adopt(saved);
    const a = this.machine.answer;
    this.view.el.dataset.responseId = a.responseId;
    if (a.text) this.view.stream.show(a.text);
    this._badge();
  }

  _remember(role, text, meta) {
    this.transcript = remember(this.transcript, meta ? { role, text, meta } : { role, text });
    this._persist();
  }

  _persist() {
    window.clearTimeout(this.saveTimer);
    this.saveTimer = null;
    this.store.save(this.machine.snapshot(), this.transcript);
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
      const no = refusal(file, this.attachments.length, this.limits);
      if (no) {
        this.notice(no[0], 'warn');
        if (no[1]) break;
        continue;
      }
      this.attachments.push(readImage(file, (att) => { this._removeAttachment(att); this.notice(`Could not read ${att.name}.`, 'warn'); }));
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
        onclick: () => { this._removeAttachment(a); this.input.focus(); } }, icon('close')))));
    this.thumbs.hidden = this.attachments.length === 0;
  }

  // ---------------------------------------------------------------- sending
  async submit() {
    const text = this.input.value;
    const limits = this.limits;
    if (this.inflight || this.machine.queued || this.submitting) return;
    if (!text.trim() && !this.attachments.length) return;
    if (text.length > limits.max_text_chars) {
      this.notice(`That message is ${text.length} characters; the limit is ${limits.max_text_chars}.`, 'warn');
      return;
    }
    const atts = this.attachments;
    this.submitting = true; // reading the images takes a moment: a second Enter must not send twice
    try { await Promise.all(atts.map((a) => a.ready)); } finally { this.submitting = false; }
    const ok = atts.filter((a) => a.data !== null);
    const bytes = frameBytes(text, ok);
    if (limits.max_frame_bytes && bytes > limits.max_frame_bytes) {
      this.notice(`These images are too large to send together (${fmtBytes(bytes)}; the limit is ${fmtBytes(limits.max_frame_bytes)}). Remove one.`, 'warn');
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
    if (this.lazy || !this.client || ['closed', 'failed'].includes(this.client.state)) this.connect();
    this._begin(frame.id, frame);
    if (this.machine.queued) this.view.meta.textContent = 'Waiting for the connection…';
    const c = this.client;
    if (!c) return;
    if (c.reply && !c.reply.finished) c.reply._fail(new rtclient.RtError('abandoned', 'a new message replaced it'));
    c.send(frame.text, { attachments: frame.attachments, context: frame.context, id: frame.id }); // sent once connected
  }

  /** Start showing the answer to message `messageId` (`frame`: the message, queued while not online). */
  _begin(messageId, frame) {
    const el = this._message('assistant', '', null);
    el.classList.add('rtc-streaming');
    el.setAttribute('aria-busy', 'true');
    const body = el.querySelector('.rtc-body');
    body.append(h('span', { class: 'rtc-typing', 'aria-label': 'Assistant is answering', role: 'img' },
      h('span'), h('span'), h('span')));
    const meta = h('div', { class: 'rtc-meta' });
    el.append(meta);
    this.view = { el, body, meta, stream: new StreamView(body) };
    this.machine.begin(messageId, frame);
    this._busy(true);
    return this.inflight;
  }

  stop() {
    const c = this.client;
    this._run(this.machine.stop(!!(c && c.reply && !c.reply.finished)));
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
  /** Open the connection (rtclient does the reconnects, resumes and token refreshes). */
  connect() {
    if (this.destroyed) return;
    if (this.client && !['closed', 'failed'].includes(this.client.state)) return;
    this._run(this.machine.connecting());
    const auth = this.opts.auth;
    const session = this.session;
    const client = new rtclient.RtClient({
      url: this.opts.url,
      WebSocket: window.WebSocket,
      client: this.opts.client,
      session: session ? { session_id: session.id, resume_token: session.token } : null,
      backoff: BACKOFF,
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
    client.on('open', mine(({ resuming }) => this._run(this.machine.opened(resuming))));
    client.on('frame', mine((f) => { if (f && typeof f === 'object') this.handleFrame(f); }));
    client.on('retry', mine(({ delayMs }) => {
      this.nextDelay = delayMs;
      this._run(this.machine.retrying(delayMs));
    }));
    client.on('close', mine(({ code, reason }) => this._run(this.machine.closed(code, reason, !!client.getToken))));
    client.on('state', mine((state) => { if (state === 'failed') this._run(this.machine.failed(this.opts.url)); }));
    client.connect().catch(() => { /* shown through the events above */ });
  }

  /** Close the connection for good (no reconnect). */
  _abandon() {
    const c = this.client;
    this.client = null;
    if (c) c.close();
  }

  /** The network came back or the page became visible: check the socket, reconnect now if down. */
  _wake(force) {
    if (this.destroyed || this.lazy || !this.client) return;
    this.client.probe(force ? 3000 : 5000);
  }

  /** Handle one server frame (public for tests and custom transports). */
  handleFrame(f) {
    this._run(this.machine.frame(f, !!this.log.querySelector('.rtc-msg')));
  }

  // ---------------------------------------------------------------- the machine's effects
  _run(effects) {
    for (const fx of effects) {
      switch (fx.type) {
        case 'state':
          this.status.dataset.state = fx.state;
          this.statusText.textContent = fx.detail || STATE_TEXT[fx.state];
          this.root.dataset.state = fx.state;
          break;
        case 'notice': this.notice(fx.text, fx.kind); break;
        case 'remember': this._remember(fx.role, fx.text); break;
        case 'persist': this._persist(); break;
        case 'persistSoon':
          if (!this.saveTimer) this.saveTimer = window.setTimeout(() => this._persist(), 300); // text and lastSeq together
          break;
        case 'route': this._onRoute(); break;
        case 'text': this._onText(fx); break;
        case 'warn': this.view.el.insertBefore(h('p', { class: `rtc-warn rtc-warn-${fx.kind}`, role: 'note', text: fx.text }), this.view.meta); break;
        case 'sending': this.view.meta.textContent = ''; break;
        case 'finish': this._finish(fx.answer, fx.done, fx.interrupted); break;
        case 'stopping': this.stopBtn.disabled = true; break;
        case 'pauseClient': if (this.client) this.client.close(); break;
        case 'cancel':
          if (fx.via === 'client' && this.client) this.client.cancel(); // before the route, the client sends it once the route names the answer
          else this._send(fx.responseId ? { type: 'cancel', response_id: fx.responseId } : { type: 'cancel' });
          break;
        default: throw new Error(`unknown effect ${fx.type}`);
      }
    }
  }

  _onRoute() {
    const a = this.inflight;
    const ds = this.view.el.dataset;
    ds.responseId = a.responseId;
    ds.useCase = String(a.route.use_case);
    ds.decision = String(a.route.decision);
    this._badge();
  }

  _onText({ stats, badge: refresh }) {
    const stick = this._nearBottom();
    this.view.stream.show(this.inflight.text);
    if (stick) this.log.scrollTop = this.log.scrollHeight;
    if (refresh) this._badge(stats);
  }

  _badge(stats) {
    const a = this.inflight;
    if (a) this.view.meta.replaceChildren(this._badgeEl(a, stats, null));
  }

  _badgeEl(a, tokenStats, done) {
    const { parts, title } = badge(a, tokenStats, done);
    const el = h('span', { class: 'rtc-badge', 'aria-label': 'Response details', title: title || null });
    parts.forEach((p, n) => {
      if (n) el.append(h('span', { class: 'rtc-b-sep', 'aria-hidden': 'true', text: '·' }));
      el.append(h('span', { class: p.cls, text: p.text }));
    });
    return el;
  }

  _finish(a, done, interrupted) {
    const { el, body, meta } = this.view;
    this.view = null;
    el.classList.remove('rtc-streaming');
    el.removeAttribute('aria-busy');
    const typing = body.querySelector('.rtc-typing');
    if (typing) typing.remove();
    const reason = done.finish_reason;
    Object.assign(el.dataset, { finish: interrupted ? 'interrupted' : reason, lastSeq: String(a.lastSeq),
      tokens: String(a.tokens), gaps: String(a.gaps), dupes: String(a.dupes) });
    if (typeof done.last_seq === 'number') el.dataset.doneLastSeq = String(done.last_seq);
    const b = this._badgeEl(a, null, done.stats ? done : null);
    meta.replaceChildren(b);
    const label = finishLabel(done, interrupted);
    if (label) meta.prepend(h('span', { class: `rtc-finish rtc-finish-${interrupted ? 'interrupted' : reason}`, text: label }));
    if (!a.text && !a.warnings.length && reason !== 'error') body.append(h('p', { class: 'rtc-md-p rtc-muted', text: reason === 'cancelled' ? '(stopped before any text)' : '(no text)' }));
    this._busy(false);
    const metaText = Array.from(b.children).filter((c) => !c.classList.contains('rtc-b-sep')).map((c) => c.textContent).join(' · ');
    if (a.text) this._remember('assistant', a.text, metaText);
    else this._persist();
    const said = a.text ? `Assistant: ${a.text}` : '';
    const tail = reason === 'cancelled' ? ' Response stopped.' : reason === 'error' ? ` ${a.warnings.join(' ') || 'The answer failed.'}` : '';
    this.announce((said + tail).trim() || 'No answer.');
  }

  // ---------------------------------------------------------------- lifecycle
  /** Forget this conversation and start a new one. */
  reset() {
    this._run(this.machine.reset());
    this.view = null;
    this._busy(false);
    this.transcript = [];
    this._persist();
    this.log.replaceChildren();
    if (this.opts.greeting) this.log.append(h('p', { class: 'rtc-empty', text: this.opts.greeting }));
    this._abandon();
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
