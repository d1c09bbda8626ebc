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
  const SUBPROTOCOL = 'rt.v1.json';
  const STORE_PREFIX = 'rtchat:v1:';
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 15000;
  const KEPT_MESSAGES = 60;
  const RESUME_ERRORS = new Set(['session_not_found', 'session_expired', 'unauthorized']);
  const NO_RETRY_CLOSES = new Set([1008, 4001, 4004]);

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
      this.ws = null;
      this.state = 'connecting';
      this.attempt = 0;
      this.timer = null;
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
      if (this.state === 'online' && this.ws && this.ws.readyState === WebSocket.OPEN) {
        this._send(frame);
      } else {
        this.queued = frame;
        this.inflight.meta.textContent = 'Waiting for the connection…';
        if (this.lazy || !this.ws) this.connect();
      }
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
      if (this.queued) { // never sent: just drop it
        this.queued = null;
        this._finish({ finish_reason: 'cancelled' });
        return;
      }
      f.stopping = true;
      this.stopBtn.disabled = true;
      this._send(f.responseId ? { type: 'cancel', response_id: f.responseId } : { type: 'cancel' });
    }

    _busy(on) {
      this.stopBtn.hidden = !on;
      this.stopBtn.disabled = false;
      this.sendBtn.hidden = on;
      this.root.classList.toggle('rtc-is-busy', on);
      if (!on && this.root.contains(document.activeElement) && document.activeElement === this.stopBtn) this.input.focus();
    }

    _send(frame) {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
      this.ws.send(JSON.stringify(frame));
      return true;
    }

    // ---------------------------------------------------------------- connection
    _setState(state, detail) {
      this.state = state;
      this.status.dataset.state = state;
      this.statusText.textContent = detail || STATE_TEXT[state];
      this.root.dataset.state = state;
    }

    connect() {
      if (this.destroyed || this.ws) return;
      window.clearTimeout(this.timer);
      this.timer = null;
      this.lazy = false;
      this._setState(this.everOnline ? 'reconnecting' : 'connecting');
      let ws;
      try {
        ws = new WebSocket(this.opts.url, [SUBPROTOCOL]);
      } catch (err) {
        this._setState('offline', 'Bad server address');
        this.notice(`Cannot connect to ${this.opts.url}: ${err.message}`, 'error');
        return;
      }
      this.ws = ws;
      ws.onopen = async () => {
        const hello = { type: 'hello', client: this.opts.client };
        const auth = this.opts.auth;
        if (auth) {
          try {
            hello.auth = String(typeof auth === 'function' ? await auth() : auth); // a fresh token per socket
          } catch (err) {
            this.notice(`Could not get a sign-in token: ${err && err.message ? err.message : err}`, 'error');
          }
          if (ws !== this.ws || ws.readyState !== WebSocket.OPEN) return;
        }
        this.resumeAttempt = !!this.session;
        this.resumeError = null;
        if (this.session) {
          hello.session_id = this.session.id;
          hello.resume_token = this.session.token;
          const f = this.inflight;
          if (f && f.responseId && !this.queued) {
            hello.response_id = f.responseId;
            hello.last_seq = f.lastSeq;
          }
        }
        ws.send(JSON.stringify(hello));
      };
      ws.onmessage = (e) => {
        if (typeof e.data !== 'string') return;
        let frame;
        try { frame = JSON.parse(e.data); } catch { return; }
        if (frame && typeof frame === 'object') this.handleFrame(frame);
      };
      ws.onerror = () => {};
      ws.onclose = (e) => this._onClose(ws, e.code, e.reason);
    }

    /** Drop the socket without waiting for the close handshake (a dead network may never answer). */
    _abandon() {
      const ws = this.ws;
      this.ws = null;
      if (!ws) return;
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(1000, 'client reconnecting'); } catch { /* already closed */ }
    }

    _onClose(ws, code, reason) {
      if (ws !== this.ws) return;
      this.ws = null;
      const wasOnline = this.state === 'online';
      if (this.destroyed) return;
      if (NO_RETRY_CLOSES.has(code)) {
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
      if (code === 4003 && !this.inflight) {
        this._setState('paused', 'Idle');
        this.lazy = true;
        return;
      }
      if (wasOnline) this.notice(code === 1012 ? 'The server is restarting; reconnecting…' : 'Connection lost; reconnecting…');
      this._schedule(code === 1012 ? 0 : this.attempt);
    }

    _schedule(attempt) {
      const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
      const delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2); // exponential backoff, "equal jitter"
      this.attempt = attempt + 1;
      this.nextDelay = delay;
      this._setState('reconnecting', `Reconnecting in ${Math.max(1, Math.round(delay / 1000))} s…`);
      window.clearTimeout(this.timer);
      this.timer = window.setTimeout(() => { this.timer = null; this.connect(); }, delay);
    }

    /** The network came back or the page became visible: check the socket, reconnect now if down. */
    _wake(force) {
      if (this.destroyed || this.lazy) return;
      if (!this.ws) {
        if (this.timer) this.connect();
        return;
      }
      if (this.state !== 'online') return;
      const t = Date.now();
      this.pingT = t;
      this._send({ type: 'ping', t });
      window.setTimeout(() => {
        if (this.pingT === t && this.state === 'online') { // no pong: the socket is dead
          this._abandon();
          this.notice('Connection lost; reconnecting…');
          this._schedule(0);
        }
      }, force ? 3000 : 5000);
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
        case 'pong': if (f.t === this.pingT) this.pingT = null; return undefined;
        case 'token_expiring': return this._refreshToken();
        default: return undefined;
      }
    }

    /** The socket's token expires soon: send a fresh one from `auth()` on the live socket. Without
     * a refresh the server closes with 4005 and the widget reconnects with a new token. */
    async _refreshToken() {
      const auth = this.opts.auth;
      if (typeof auth !== 'function') return;
      try {
        this._send({ type: 'refresh', auth: String(await auth()) });
      } catch { /* no token now: the reconnect after 4005 asks again */ }
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
      this.attempt = 0;
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
      if (this.queued) {
        const frame = this.queued;
        this.queued = null;
        this.inflight.meta.textContent = '';
        this._send(frame);
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
      this.attempt = 0;
      this.connect();
      this.input.focus();
    }

    destroy() {
      this.destroyed = true;
      window.clearTimeout(this.timer);
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
