// Browser scenarios for the rtchat widget, driven by playwright-core and the system chromium.
//
//   node tests/e2e/widget.mjs --base http://127.0.0.1:PORT --scenario NAME [--out DIR]
//
// Each scenario prints progress lines and, last, one JSON line {"scenario", "ok", "checks"}.
// It exits 1 (after a screenshot "<scenario>-failure.png" in --out) when a check fails.
// The "restart" scenario prints {"event": "restart"} and waits for one line on stdin
// (the driver restarts the server on the same port, then writes that line).
// No timing thresholds: waits are generous timeouts for things that must happen.

import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { deflateSync } from 'node:zlib';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
const BASE = (args.base || 'http://127.0.0.1:8000').replace(/\/$/, '');
const SCENARIO = args.scenario || 'stream';
const OUT = args.out || 'test-artifacts/e2e';
const CHROMIUM = args.chromium || process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT = Number(args.wait || 120000); // ms: an upper bound for a reply of the CPU model, not a threshold
mkdirSync(OUT, { recursive: true });

const checks = {};
function check(name, cond, detail) {
  checks[name] = cond ? true : (detail === undefined ? false : detail);
  console.log(`${cond ? 'ok  ' : 'FAIL'} ${name}${cond || detail === undefined ? '' : `: ${JSON.stringify(detail)}`}`);
  if (!cond) throw new Error(`check failed: ${name} ${detail === undefined ? '' : JSON.stringify(detail)}`);
}
const log = (...a) => console.log(...a);

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

async function newPage(browser, { viewport = DESKTOP, colorScheme = 'light', path = '/?rtchat-test=1' } = {}) {
  const context = await browser.newContext({ viewport, colorScheme, deviceScaleFactor: 1, hasTouch: viewport === PHONE, isMobile: viewport === PHONE });
  const page = await context.newPage();
  page.on('pageerror', (e) => { log(`page error: ${e.message}`); pageErrors.push(e.message); });
  page.on('console', (m) => { if (m.type() === 'error') log(`console: ${m.text()}`); });
  await page.goto(BASE + path);
  await page.waitForFunction(() => window.RtChat && window.RtChat.instances.length > 0);
  return page;
}
const pageErrors = [];

const W = '.rtc-root';
const lastAssistant = `${W} .rtc-msg-assistant >> nth=-1`;

async function waitOnline(page, timeout = WAIT) {
  await page.waitForFunction(() => document.querySelector('.rtc-status').dataset.state === 'online', null, { timeout });
}

async function send(page, text) {
  await page.locator(`${W} .rtc-input`).fill(text);
  if (await page.evaluate(() => window.RtChat.instances[0].touch)) await page.locator(`${W} .rtc-send`).tap();
  else await page.locator(`${W} .rtc-input`).press('Enter');
}

/** Wait for the last assistant message to finish; returns its dataset and text. */
async function waitDone(page, timeout = WAIT) {
  await page.waitForFunction(() => {
    const all = document.querySelectorAll('.rtc-msg-assistant');
    const el = all[all.length - 1];
    return el && el.dataset.finish;
  }, null, { timeout });
  return page.evaluate(() => {
    const all = document.querySelectorAll('.rtc-msg-assistant');
    const el = all[all.length - 1];
    return { ...el.dataset, text: el.querySelector('.rtc-body').textContent, badge: (el.querySelector('.rtc-badge') || {}).textContent || '',
      warnings: Array.from(el.querySelectorAll('.rtc-warn'), (w) => w.textContent) };
  });
}

/** Text lengths of the streaming answer, sampled on every DOM change until done. */
async function watchStream(page) {
  await page.evaluate(() => {
    window.__lens = [];
    const obs = new MutationObserver(() => {
      const all = document.querySelectorAll('.rtc-msg-assistant');
      const el = all[all.length - 1];
      if (el && !el.dataset.finish) window.__lens.push(el.querySelector('.rtc-body').textContent.length);
    });
    obs.observe(document.querySelector('.rtc-log'), { subtree: true, childList: true, characterData: true });
    window.__obs = obs;
  });
}

async function shot(page, name) {
  const file = join(OUT, `${name}.png`);
  await page.screenshot({ path: file });
  log(`screenshot ${file}`);
}

/** A small valid PNG (solid colour), built here so the test needs no fixture file. */
function png(width = 8, height = 8, rgb = [40, 120, 220]) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => { let c = 0xffffffff; for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4); c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0); ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; ihdr[9] = 2; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) raw.set(rgb, y * (width * 3 + 1) + 1 + x * 3);
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

// ------------------------------------------------------------------ scenarios

const scenarios = {
  /** Send a message: text streams in, the badge shows route and latency; a second message bypasses. */
  async stream(browser) {
    const page = await newPage(browser);
    await waitOnline(page);
    check('status says connected', (await page.locator(`${W} .rtc-status`).textContent()).includes('Connected'));
    await watchStream(page);
    await send(page, 'Hi! In two sentences, what is a WebSocket?');
    check('user message shown', (await page.locator(`${W} .rtc-msg-user >> nth=-1`).textContent()).includes('what is a WebSocket?'));
    check('stop button replaces send while streaming', await page.locator(`${W} .rtc-stop`).isVisible());
    const d1 = await waitDone(page);
    const lens = await page.evaluate(() => window.__lens);
    const growth = new Set(lens.filter((n) => n > 0)).size;
    log(`first answer: ${JSON.stringify(d1)}`);
    check('answer has text', d1.text.trim().length > 0, d1);
    check('text arrived in several steps (streamed)', growth >= 3, lens.slice(0, 20));
    check('answer finished normally', ['stop', 'length'].includes(d1.finish), d1.finish);
    check('no seq gaps, every token shown once', d1.gaps === '0' && d1.lastSeq === d1.doneLastSeq, d1);
    check('badge: model', d1.badge.includes('smollm2-135m'), d1.badge);
    check('badge: full route on the first message', d1.decision === 'full' && /full/i.test(d1.badge), d1.badge);
    check('badge: use case', ['chat', 'agent', 'creative', 'multimodal', 'reasoning'].includes(d1.useCase) && d1.badge.includes(d1.useCase), d1.badge);
    check('badge: time to first token', /TTFT \d/.test(d1.badge), d1.badge);
    check('badge: tokens per second', /\d+(\.\d)? tok\/s/.test(d1.badge), d1.badge);
    check('send button back after done', await page.locator(`${W} .rtc-send`).isVisible());
    await page.waitForFunction(() => document.querySelector('.rtc-live').textContent !== '', null, { timeout: 5000 });
    const live = await page.locator(`${W} .rtc-live`).textContent();
    check('live region announces the completed answer', live.startsWith('Assistant:') && live.includes(d1.text.trim().slice(0, 20)), live.slice(0, 80));
    await send(page, 'Thanks! And one more sentence about how it differs from HTTP polling?');
    const d2 = await waitDone(page);
    check('second message bypasses routing', d2.decision === 'bypass' && /bypass/i.test(d2.badge), d2.badge);
    await shot(page, 'stream-desktop-light');
    return { first: d1, second: d2 };
  },

  /** Stop a response: it ends as "Stopped", no text arrives after, the composer is usable again. */
  async stop(browser) {
    const page = await newPage(browser);
    await waitOnline(page);
    await send(page, 'Write a long story about a lighthouse keeper and a storm, with many details.');
    await page.waitForFunction(() => {
      const all = document.querySelectorAll('.rtc-msg-assistant');
      const el = all[all.length - 1];
      return el && el.querySelector('.rtc-body').textContent.length > 0;
    }, null, { timeout: WAIT });
    await page.locator(`${W} .rtc-stop`).click();
    const d = await waitDone(page);
    log(`stopped: ${JSON.stringify(d)}`);
    check('finish reason is cancelled', d.finish === 'cancelled', d.finish);
    check('message labelled Stopped', (await page.locator(`${lastAssistant} >> .rtc-finish`).textContent()) === 'Stopped');
    check('stopped before the length limit', Number(d.lastSeq) < 95, d.lastSeq);
    const before = await page.locator(`${lastAssistant} >> .rtc-body`).textContent();
    await page.waitForTimeout(1500); // would text keep arriving after done?
    check('no text after stop', (await page.locator(`${lastAssistant} >> .rtc-body`).textContent()) === before);
    check('send button is back', await page.locator(`${W} .rtc-send`).isVisible());
    // Esc stops too (keyboard)
    await send(page, 'Count from one to one hundred in words.');
    await page.waitForFunction(() => {
      const all = document.querySelectorAll('.rtc-msg-assistant');
      return all[all.length - 1].querySelector('.rtc-body').textContent.length > 0;
    }, null, { timeout: WAIT });
    await page.locator(`${W} .rtc-input`).press('Escape');
    const d2 = await waitDone(page);
    check('Esc in the message box stops the answer', d2.finish === 'cancelled', d2.finish);
    await shot(page, 'stop-desktop-light');
    return { stopped_at_seq: Number(d.lastSeq) };
  },

  /** Image by button, drop and paste; the route is multimodal and the text-only model's warning shows. */
  async image(browser) {
    const page = await newPage(browser);
    await waitOnline(page);
    const image = png(16, 16);
    await page.locator(`${W} .rtc-file`).setInputFiles({ name: 'blue.png', mimeType: 'image/png', buffer: image });
    check('attach button adds a thumbnail', (await page.locator(`${W} .rtc-thumb`).count()) === 1);
    // drop and paste, as a browser delivers them
    const b64 = image.toString('base64');
    await page.evaluate((data) => {
      const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
      const file = (n) => new File([bytes], n, { type: 'image/png' });
      const panel = document.querySelector('.rtc-panel');
      const dt = new DataTransfer();
      dt.items.add(file('dropped.png'));
      panel.dispatchEvent(new DragEvent('dragenter', { dataTransfer: dt, bubbles: true, cancelable: true }));
      panel.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
      const cb = new DataTransfer();
      cb.items.add(file('pasted.png'));
      document.querySelector('.rtc-input').dispatchEvent(new ClipboardEvent('paste', { clipboardData: cb, bubbles: true, cancelable: true }));
    }, b64);
    check('drop and paste add thumbnails', (await page.locator(`${W} .rtc-thumb`).count()) === 3);
    await page.locator(`${W} .rtc-thumb-x >> nth=2`).click();
    check('a thumbnail can be removed', (await page.locator(`${W} .rtc-thumb`).count()) === 2);
    await page.evaluate(() => {
      const w = window.RtChat.instances[0];
      const orig = w.ws.send.bind(w.ws);
      window.__sent = [];
      w.ws.send = (d) => { window.__sent.push(JSON.parse(d)); orig(d); };
    });
    await send(page, 'What colour is this picture?');
    const d = await waitDone(page);
    const frames = await page.evaluate(() => window.__sent);
    const msg = frames.find((f) => f.type === 'message');
    const sent = msg && msg.attachments ? msg.attachments.map((a) => [a.kind, a.mime, a.data.length]) : null;
    log(`image answer: ${JSON.stringify(d)}`);
    check('sent as image attachments, base64', !!msg && msg.attachments.length === 2
      && msg.attachments.every((a) => a.kind === 'image' && a.mime === 'image/png' && a.data === b64), sent);
    check('routed to multimodal', d.useCase === 'multimodal' && d.badge.includes('multimodal'), d.badge);
    check('attachment_unsupported warning shown plainly, once', d.warnings.length === 1 && d.warnings.some((w) => /Image not used/.test(w) && /cannot take image/.test(w)), d.warnings);
    check('the text is still answered', d.text.trim().length > 0 && ['stop', 'length'].includes(d.finish), d);
    check('the user message shows the images', (await page.locator(`${W} .rtc-msg-user >> nth=-1 >> .rtc-image`).count()) === 2);
    await shot(page, 'image-desktop-light');
    return { warnings: d.warnings, badge: d.badge };
  },

  /** Model text and user text are shown as text: no element from them, no script runs. */
  async xss(browser) {
    const page = await newPage(browser);
    await waitOnline(page);
    const evil = '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> [x](javascript:window.__pwned=3)';
    const md = `Here is **bold**, *italic*, \`inline <b>code</b>\` and a list:\n\n- one <i>\n- two\n\n\`\`\`html\n${evil}\n\`\`\`\n\n${evil}`;
    await page.evaluate(({ md }) => {
      const t = window.__rtchatTest;
      t.expect('m_fake');
      t.frame({ type: 'route', response_id: 'r_fake', message_id: 'm_fake', use_case: 'chat', model: 'fake-model', worker: 'w', decision: 'full', confidence: 0.9, route_ms: 1.5, context_changed: false });
      const half = Math.floor(md.length / 2);
      t.frame({ type: 'token', response_id: 'r_fake', seq: 0, text: md.slice(0, half), stats: { ttft_ms: 12, gap_ms: 0, route_ms: 1.5, queue_ms: 0, elapsed_ms: 12 } });
      t.frame({ type: 'token', response_id: 'r_fake', seq: 0, text: 'DUPLICATE', stats: { ttft_ms: 12, gap_ms: 0, route_ms: 1.5, queue_ms: 0, elapsed_ms: 12 } });
      t.frame({ type: 'token', response_id: 'r_fake', seq: 1, seq_last: 3, text: md.slice(half), stats: { ttft_ms: 12, gap_ms: 5, route_ms: 1.5, queue_ms: 0, elapsed_ms: 40 } });
      t.frame({ type: 'token', response_id: 'r_other', seq: 4, text: 'FOREIGN', stats: { ttft_ms: 1, gap_ms: 0, route_ms: 0, queue_ms: 0, elapsed_ms: 1 } });
      t.frame({ type: 'done', response_id: 'r_fake', finish_reason: 'stop', last_seq: 3, usage: { prompt_tokens: 5, completion_tokens: 4 }, stats: { ttft_ms: 12, total_ms: 40, tokens_per_s: 75, gap_p50_ms: 5, gap_p95_ms: 5, route_ms: 1.5, decision: 'full' } });
    }, { md });
    await page.waitForTimeout(300);
    const r = await page.evaluate(() => {
      const all = document.querySelectorAll('.rtc-msg-assistant');
      const el = all[all.length - 1];
      const body = el.querySelector('.rtc-body');
      return {
        pwned: window.__pwned ?? null,
        imgs: body.querySelectorAll('img, script, b, i').length,
        hrefs: Array.from(body.querySelectorAll('a'), (a) => a.getAttribute('href')),
        text: body.textContent,
        strong: Array.from(body.querySelectorAll('strong'), (e) => e.textContent),
        em: Array.from(body.querySelectorAll('em'), (e) => e.textContent),
        inlineCode: Array.from(body.querySelectorAll('.rtc-code-inline'), (e) => e.textContent),
        listItems: Array.from(body.querySelectorAll('li'), (e) => e.textContent),
        code: Array.from(body.querySelectorAll('.rtc-codeblock code'), (e) => e.textContent),
        copyButtons: body.querySelectorAll('.rtc-codeblock button.rtc-copy').length,
        badge: el.querySelector('.rtc-badge').textContent,
        dupes: el.dataset.dupes,
      };
    });
    log(JSON.stringify(r));
    check('no script ran', r.pwned === null, r.pwned);
    check('no element made from model text', r.imgs === 0, r.imgs);
    check('javascript: link not made', r.hrefs.length === 0, r.hrefs);
    check('model markup shown as text', r.text.includes('<img src=x onerror="window.__pwned=1">') && r.text.includes('<script>'), r.text);
    check('duplicate seq ignored, foreign response ignored', !r.text.includes('DUPLICATE') && !r.text.includes('FOREIGN') && r.dupes === '1');
    check('markdown: bold and italic', r.strong.includes('bold') && r.em.includes('italic'), r);
    check('markdown: inline code keeps its text', r.inlineCode.includes('inline <b>code</b>'), r.inlineCode);
    check('markdown: list', r.listItems.length === 2 && r.listItems[0] === 'one <i>', r.listItems);
    check('markdown: code block with copy button', r.code.length === 1 && r.code[0].includes('<script>') && r.copyButtons === 1, r.code);
    check('badge for injected frames', r.badge.includes('fake-model') && r.badge.includes('TTFT 12') && r.badge.includes('75.0 tok/s'), r.badge);
    // the copy button copies the code
    await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
    await page.locator(`${lastAssistant} >> .rtc-copy`).click();
    // the clipboard write is asynchronous: wait (bounded) for the button to report its outcome
    const copyBtn = page.locator(`${lastAssistant} >> .rtc-copy`);
    const copied = await copyBtn.evaluate((b) => new Promise((resolve) => {
      const t0 = Date.now();
      const poll = () => (b.textContent !== 'Copy' || Date.now() - t0 > 5000 ? resolve(b.textContent) : setTimeout(poll, 20));
      poll();
    }));
    check('copy button says copied', copied === 'Copied', copied);
    const clip = await page.evaluate(() => navigator.clipboard.readText());
    check('clipboard holds the code block', clip === evil, clip);
    // a user message with the same markup, typed for real and answered by the model
    await send(page, 'Please repeat exactly: <img src=x onerror="window.__pwned=4"> **not bold**');
    const u = await page.evaluate(() => {
      const all = document.querySelectorAll('.rtc-msg-user');
      const el = all[all.length - 1];
      return { text: el.querySelector('.rtc-body').textContent, els: el.querySelectorAll('.rtc-body *').length };
    });
    check('user markup shown as text', u.text === 'Please repeat exactly: <img src=x onerror="window.__pwned=4"> **not bold**' && u.els === 0, u);
    const d = await waitDone(page);
    const after = await page.evaluate(() => ({ pwned: window.__pwned ?? null, imgs: document.querySelectorAll('.rtc-log .rtc-body img').length }));
    check('no script ran after the model answer', after.pwned === null && after.imgs === 0, after);
    await shot(page, 'xss-desktop-light');
    return { answer: d.text.slice(0, 200) };
  },

  /** The markdown renderer on its own: cases a model writes, rendered to a DOM summary. */
  async markdown(browser) {
    const page = await newPage(browser);
    const cases = {
      snake: 'call my_var_name and snake_case_too here',
      strongem: '***both*** and **b** and *i* and _u_',
      unclosed: 'a * b ** c and `open code',
      fenceOpen: 'Here:\n```js\nlet x = 1;\n',
      indentedFence: '1) Define it:\n\n   ```python\n   def f():\n       return 1\n   ```\n2) Call it.',
      nested: '- a\n  - a1\n  - a2\n- b',
      ordered: '3. three\n4. four',
      link: '[site](https://example.com/x?a=1) and [bad](javascript:alert(1)) and [data](data:text/html,hi)',
      heading: '## Title\ntext',
      escapes: '\\*not em\\* and 1 < 2 > 0 & done',
    };
    const out = await page.evaluate((cases) => {
      const summary = (node) => Array.from(node.childNodes, (n) => (n.nodeType === 3 ? n.textContent
        : `<${n.nodeName.toLowerCase()}${n.nodeName === 'A' ? ` href=${n.getAttribute('href')} rel=${n.getAttribute('rel')}` : ''}>${n.classList && n.classList.contains('rtc-codeblock') ? n.querySelector('code').textContent : summary(n)}</>`)).join('');
      const r = {};
      for (const [k, v] of Object.entries(cases)) {
        const div = document.createElement('div');
        div.append(window.__rtchatTest.renderMarkdown(v));
        r[k] = summary(div);
      }
      return r;
    }, cases);
    for (const [k, v] of Object.entries(out)) log(`${k}: ${v}`);
    check('snake_case stays text', out.snake === '<p>call my_var_name and snake_case_too here</>', out.snake);
    check('bold, italic, both', out.strongem === '<p><strong><em>both</></> and <strong>b</> and <em>i</> and <em>u</></>', out.strongem);
    check('unclosed markers stay text', out.unclosed === '<p>a * b ** c and `open code</>', out.unclosed);
    check('a code block still streaming shows as code', out.fenceOpen === '<p>Here:</><div>let x = 1;</>', out.fenceOpen);
    check('indented fence inside an ordered item', out.indentedFence.includes('<div>def f():\n    return 1</>') && out.indentedFence.startsWith('<ol>'), out.indentedFence);
    check('nested list', out.nested === '<ul><li>a<ul><li>a1</><li>a2</></></><li>b</></>', out.nested);
    check('ordered list keeps its start', out.ordered === '<ol><li>three</><li>four</></>', out.ordered);
    check('http link kept, javascript: and data: links dropped', out.link.startsWith('<p><a href=https://example.com/x?a=1 rel=noopener noreferrer nofollow>site</>')
      && out.link.includes('[bad](javascript:alert(1))') && out.link.includes('[data](data:text/html,hi)'), out.link);
    check('heading', out.heading === '<p><strong>Title</></><p>text</>', out.heading);
    check('escapes and angle brackets', out.escapes === '<p>*not em* and 1 < 2 > 0 & done</>', out.escapes);
    // streamed token by token, the answer keeps its finished blocks and ends as a full render does
    const streamed = await page.evaluate((samples) => {
      const t = window.__rtchatTest;
      const r = [];
      samples.forEach((text, n) => {
        t.expect(`m_md${n}`);
        t.frame({ type: 'route', response_id: `r_md${n}`, message_id: `m_md${n}`, use_case: 'chat', model: 'm', worker: 'w', decision: 'full', confidence: 1, route_ms: 1 });
        let seq = 0;
        let kept = null;
        for (let i = 0; i < text.length; i += 1 + (i % 5)) {
          t.frame({ type: 'token', response_id: `r_md${n}`, seq: seq++, text: text.slice(i, i + 1 + (i % 5)) });
          const body = document.querySelectorAll('.rtc-msg-assistant')[document.querySelectorAll('.rtc-msg-assistant').length - 1].querySelector('.rtc-body');
          if (kept === null && body.children.length > 1) kept = body.firstElementChild; // a finished block
        }
        const all = document.querySelectorAll('.rtc-msg-assistant');
        const body = all[all.length - 1].querySelector('.rtc-body');
        const div = document.createElement('div');
        div.append(t.renderMarkdown(text));
        r.push({ same: body.innerHTML === div.innerHTML, kept: kept !== null && kept === body.firstElementChild, body: body.innerHTML.slice(0, 300) });
        t.frame({ type: 'done', response_id: `r_md${n}`, finish_reason: 'stop', last_seq: seq - 1 });
      });
      return r;
    }, [
      '# Title\n\nA **bold** paragraph\nover two lines.\n\n- one\n- two\n  - nested\n\n```js\nlet a = 1;\n\nlet b = 2;\n```\nAfter the code.',
      'Intro:\n\n1. first\n2. second\n\n> a quote\n\n---\n```\nstill open code\nline two',
    ]);
    check('streamed answers end as a full render and keep their finished blocks', streamed.every((x) => x.same && x.kept), streamed);
    return out;
  },

  /** Keyboard only: reach every control with Tab, Shift+Enter newline, Enter sends, labels everywhere. */
  async keyboard(browser) {
    const page = await newPage(browser);
    await waitOnline(page);
    const unlabeled = await page.evaluate(() => Array.from(document.querySelectorAll('.rtc-root button, .rtc-root textarea, .rtc-root input:not(.rtc-file)'))
      .filter((e) => !(e.getAttribute('aria-label') || e.textContent.trim() || (e.id && document.querySelector(`label[for="${e.id}"]`))))
      .map((e) => e.outerHTML.slice(0, 80)));
    check('every control has a label', unlabeled.length === 0, unlabeled);
    // Tab from the page's theme select into the widget
    await page.focus('#theme');
    const order = [];
    for (let i = 0; i < 6; i++) {
      await page.keyboard.press('Tab');
      order.push(await page.evaluate(() => {
        const a = document.activeElement;
        return a ? (a.getAttribute('aria-label') || a.className) : null;
      }));
    }
    log(`tab order: ${JSON.stringify(order)}`);
    check('Tab reaches new-conversation, conversation, attach and message box', ['New conversation', 'Conversation', 'Attach image'].every((x) => order.includes(x)) && order.some((x) => String(x).includes('rtc-input')), order);
    const outline = await page.evaluate(() => {
      document.querySelector('.rtc-attach').focus();
      return getComputedStyle(document.querySelector('.rtc-attach')).outlineStyle;
    });
    await page.keyboard.press('Shift+Tab');
    await page.keyboard.press('Tab');
    const ring = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle + ' ' + getComputedStyle(document.activeElement).outlineWidth);
    check('visible focus ring on keyboard focus', ring.startsWith('solid') && !ring.endsWith(' 0px'), { ring, outline });
    await shot(page, 'keyboard-focus-desktop-light');
    await page.locator(`${W} .rtc-input`).focus();
    await page.keyboard.type('First line');
    await page.keyboard.press('Shift+Enter');
    await page.keyboard.type('second line: reply with one word.');
    check('Shift+Enter makes a new line, not a message', (await page.locator(`${W} .rtc-input`).inputValue()) === 'First line\nsecond line: reply with one word.'
      && (await page.locator(`${W} .rtc-msg-user`).count()) === 0);
    await page.keyboard.press('Enter');
    check('Enter sends', (await page.locator(`${W} .rtc-msg-user`).count()) === 1 && (await page.locator(`${W} .rtc-input`).inputValue()) === '');
    const busy = await page.locator(lastAssistant).getAttribute('aria-busy');
    const d = await waitDone(page);
    check('streaming answer is aria-busy until done', busy === 'true' && (await page.locator(lastAssistant).getAttribute('aria-busy')) === null);
    await page.waitForFunction(() => document.querySelector('.rtc-live').textContent !== '', null, { timeout: 5000 });
    const liveAttrs = await page.evaluate(() => { const l = document.querySelector('.rtc-live'); return [l.getAttribute('aria-live'), l.textContent]; });
    check('polite live region announces the completed answer', liveAttrs[0] === 'polite' && liveAttrs[1].includes(d.text.trim().slice(0, 15)), liveAttrs);
    const tokensInLive = await page.evaluate(() => document.querySelector('.rtc-log').getAttribute('aria-live'));
    check('the streaming log itself is not a live region', tokensInLive === null);
    return { tab_order: order };
  },

  /** Drop the socket mid-answer: the widget resumes the session and the stream, no text lost or doubled. */
  async resume(browser) {
    const page = await newPage(browser);
    await waitOnline(page);
    const sid = await page.evaluate(() => window.RtChat.instances[0].session.id);
    await send(page, 'Tell me a story about a robot who learns to paint, in detail.');
    await page.waitForFunction(() => { const w = window.RtChat.instances[0]; return w.inflight && w.inflight.lastSeq >= 3; }, null, { timeout: WAIT });
    const at = await page.evaluate(() => { const w = window.RtChat.instances[0]; const s = w.inflight.lastSeq; window.__rtchatTest.drop(); return s; });
    log(`dropped the socket at seq ${at}`);
    await page.waitForFunction(() => ['reconnecting', 'connecting'].includes(document.querySelector('.rtc-status').dataset.state), null, { timeout: 10000 });
    check('status shows reconnecting', true);
    const d = await waitDone(page);
    log(`resumed answer: ${JSON.stringify({ ...d, text: d.text.slice(0, 80) })}`);
    const notices = await page.locator(`${W} .rtc-notice`).allTextContents();
    const sid2 = await page.evaluate(() => window.RtChat.instances[0].session.id);
    check('same session after the reconnect', sid2 === sid, [sid, sid2]);
    check('widget said it reconnected', notices.some((n) => n.includes('Reconnected')), notices);
    check('the stream went on past the drop', Number(d.lastSeq) > at, [at, d.lastSeq]);
    check('no seq gap and every token shown exactly once', d.gaps === '0' && d.lastSeq === d.doneLastSeq && Number(d.tokens) === Number(d.lastSeq) + 1, d);
    check('answer finished normally', ['stop', 'length'].includes(d.finish), d.finish);
    await send(page, 'Give it a one-word title.');
    const d2 = await waitDone(page);
    check('next message continues the conversation (bypass, same session)', d2.decision === 'bypass' && d2.text.trim().length > 0, d2);

    // reload the page mid-answer: the transcript comes back and the answer goes on
    await send(page, 'Now tell me a second, different story about the same robot.');
    await page.waitForFunction(() => { const w = window.RtChat.instances[0]; return w.inflight && w.inflight.lastSeq >= 3; }, null, { timeout: WAIT });
    const partial = await page.evaluate(() => window.RtChat.instances[0].inflight.text);
    await page.reload();
    await page.waitForFunction(() => window.RtChat && window.RtChat.instances.length > 0);
    const restored = await page.evaluate(() => ({ msgs: document.querySelectorAll('.rtc-msg').length, text: (window.RtChat.instances[0].inflight || {}).text }));
    log(`after reload: ${JSON.stringify(restored)}`);
    check('reload keeps the transcript on screen', restored.msgs === 6, restored);
    const d3 = await waitDone(page);
    check('the answer streaming at the reload goes on and ends', ['stop', 'length'].includes(d3.finish) && d3.text.startsWith(partial.trim().slice(0, 10)), { partial, d3 });
    check('no gap, nothing doubled across the reload', d3.gaps === '0' && d3.lastSeq === d3.doneLastSeq && Number(d3.tokens) === Number(d3.lastSeq) + 1, d3);
    check('same session after the reload', (await page.evaluate(() => window.RtChat.instances[0].session.id)) === sid);
    return { dropped_at_seq: at, last_seq: Number(d.lastSeq) };
  },

  /** Kill the server mid-answer and start a new one on the same port: the widget reconnects,
   *  marks the cut answer, says it started a new conversation, and the conversation goes on. */
  async restart(browser) {
    const page = await newPage(browser);
    await waitOnline(page);
    await send(page, 'Hello! Say hi back in one short sentence.');
    const d1 = await waitDone(page);
    check('first answer before the restart', d1.text.trim().length > 0);
    const stored = () => page.evaluate(() => JSON.parse(sessionStorage.getItem(Object.keys(sessionStorage).find((k) => k.startsWith('rtchat:v1:')))));
    const before = await stored();
    await send(page, 'Write a long story about a lighthouse keeper and a storm, with many details.');
    await page.waitForFunction(() => { const w = window.RtChat.instances[0]; return w.inflight && w.inflight.lastSeq >= 2; }, null, { timeout: WAIT });
    await page.evaluate(() => {
      const w = window.RtChat.instances[0];
      window.__delays = [];
      w.client.on('retry', ({ attempt, delayMs }) => window.__delays.push([attempt, delayMs]));
    });
    const states = [];
    const poll = setInterval(async () => {
      try { states.push(await page.evaluate(() => document.querySelector('.rtc-status').textContent)); } catch { /* closing */ }
    }, 200);
    console.log(JSON.stringify({ event: 'restart' }));
    await new Promise((resolve) => createInterface({ input: process.stdin }).once('line', resolve));
    log('server restarted');
    await waitOnline(page);
    clearInterval(poll);
    const seen = [...new Set(states)];
    log(`status while the server was down: ${JSON.stringify(seen)}`);
    check('status showed the reconnect', seen.some((s) => /Reconnecting/.test(s)), seen);
    const delays = await page.evaluate(() => window.__delays);
    log(`reconnect delays (attempt, ms): ${JSON.stringify(delays)}`);
    check('reconnect delays back off exponentially with jitter', delays.length >= 2 && delays.every(([n, d], i) => {
      const ceiling = Math.min(15000, 500 * 2 ** n);
      const belowCap = 500 * 2 ** n <= 15000; // under the cap each ceiling doubles, so no delay is shorter than the last
      return d >= ceiling / 2 && d <= ceiling && n === i && (i === 0 || !belowCap || d >= delays[i - 1][1]);
    }), delays);
    const cut = await page.evaluate(() => {
      const all = document.querySelectorAll('.rtc-msg-assistant');
      const el = all[all.length - 1];
      return { finish: el.dataset.finish, warnings: Array.from(el.querySelectorAll('.rtc-warn'), (w) => w.textContent), text: el.querySelector('.rtc-body').textContent };
    });
    check('the answer cut by the restart is marked, its text kept', cut.finish === 'interrupted' && cut.warnings.some((w) => /cut off/.test(w)) && cut.text.length > 0, cut);
    const notices = await page.locator(`${W} .rtc-notice`).allTextContents();
    check('widget said it started a new conversation', notices.some((n) => n.includes('Started a new conversation')), notices);
    const after = await stored();
    check('the new session is kept', after.session_id && after.session_id !== before.session_id, [before.session_id, after.session_id]);
    check('earlier messages stay on screen', (await page.locator(`${W} .rtc-msg-user`).count()) === 2);
    check('composer usable again', await page.locator(`${W} .rtc-send`).isVisible());
    await send(page, 'Are you still there? Answer in one sentence.');
    const d2 = await waitDone(page);
    check('conversation goes on after the restart', d2.text.trim().length > 0 && ['stop', 'length'].includes(d2.finish), d2);
    check('fresh route on the new server', d2.decision === 'full', d2.decision);
    await shot(page, 'restart-desktop-light');
    return { notices, statuses: seen };
  },

  /** The same conversation resumed in a second tab (a duplicated tab): the first pauses, no tug of war; typing there starts a new one. */
  async takeover(browser) {
    const a = await newPage(browser);
    await waitOnline(a);
    const sidA = await a.evaluate(() => window.RtChat.instances[0].session.id);
    const storage = await a.evaluate(() => JSON.stringify(Object.fromEntries(Object.entries(sessionStorage))));
    const context = await browser.newContext({ viewport: DESKTOP });
    await context.addInitScript((s) => {
      if (!sessionStorage.getItem('__copied')) {
        for (const [k, v] of Object.entries(JSON.parse(s))) sessionStorage.setItem(k, v);
        sessionStorage.setItem('__copied', '1');
      }
    }, storage);
    const b = await context.newPage();
    b.on('pageerror', (e) => pageErrors.push(e.message));
    await b.goto(`${BASE}/?rtchat-test=1`);
    await waitOnline(b);
    const ids = [sidA, await b.evaluate(() => window.RtChat.instances[0].session.id)];
    check('second tab resumed the same session', ids[0] === ids[1], ids);
    await a.waitForFunction(() => document.querySelector('.rtc-status').dataset.state === 'paused', null, { timeout: 10000 });
    const note = await a.locator(`${W} .rtc-notice`).allTextContents();
    check('first tab says the conversation moved to another tab', note.some((n) => n.includes('another tab')), note);
    await b.waitForTimeout(2500); // would the first tab grab it back by itself?
    check('no tug of war: the second tab stays connected', (await b.evaluate(() => document.querySelector('.rtc-status').dataset.state)) === 'online');
    check('first tab stays paused until used', (await a.evaluate(() => document.querySelector('.rtc-status').dataset.state)) === 'paused');
    await send(a, 'Back in the first tab: say hello.');
    const d = await waitDone(a);
    const sid = await a.evaluate(() => window.RtChat.instances[0].session.id);
    check('typing in the first tab starts a new conversation there, and it answers', d.text.trim().length > 0 && sid !== ids[0] && d.decision === 'full', { sid, d });
    check('the second tab keeps its conversation', (await b.evaluate(() => [document.querySelector('.rtc-status').dataset.state, window.RtChat.instances[0].session.id])).join() === `online,${ids[1]}`);
    await context.close();
    return {};
  },

  /** A server that refuses this page's Origin: the widget says so and does not hammer it with retries. */
  async refused(browser) {
    const page = await newPage(browser);
    await page.waitForFunction(() => document.querySelector('.rtc-status').dataset.state === 'offline', null, { timeout: 20000 });
    const status = await page.locator(`${W} .rtc-status`).textContent();
    check('status says not allowed', status.includes('Not allowed'), status);
    const notices = await page.locator(`${W} .rtc-notice`).allTextContents();
    check('a plain note says why', notices.some((n) => /refused|not allowed/i.test(n)) && notices.length === 1, notices);
    await page.waitForTimeout(2000);
    check('no retry after a refusal', (await page.evaluate(() => document.querySelector('.rtc-status').dataset.state)) === 'offline'
      && (await page.evaluate(() => window.RtChat.instances[0].ws)) === null);
    return { status };
  },

  /** A server that needs a connection token: without one the widget says so; with auth() it works. */
  async auth(browser) {
    const page = await newPage(browser);
    await page.waitForFunction(() => document.querySelector('.rtc-status').dataset.state === 'offline', null, { timeout: 20000 });
    const status = await page.locator(`${W} .rtc-status`).textContent();
    check('without a token: status says not authorized', status.includes('Not authorized'), status);
    const notices = await page.locator(`${W} .rtc-notice`).allTextContents();
    check('without a token: one plain note about it', notices.length === 1 && /auth/i.test(notices[0]), notices);
    const token = args.token;
    await page.evaluate((t) => {
      window.RtChat.instances[0].destroy();
      let calls = 0;
      window.__authCalls = () => calls;
      window.RtChat.mount(document.getElementById('chat'), { auth: async () => { calls++; return t; } });
    }, token);
    await waitOnline(page);
    await send(page, 'Hello with a token.');
    const d = await waitDone(page);
    check('with auth(): connected and answered', d.text.trim().length > 0, d);
    await page.evaluate(() => window.__rtchatTest.drop());
    await page.waitForFunction(() => window.__authCalls() === 2 && document.querySelector('.rtc-status').dataset.state === 'online', null, { timeout: 20000 });
    check('auth() is asked again for the new socket, which is accepted', true);
    return { status };
  },

  /** Screenshots: desktop and phone, light and dark; the floating embed on a hostile page. */
  async screens(browser) {
    const page = await newPage(browser, { path: '/' });
    await waitOnline(page);
    await send(page, 'Show a tiny Python function that adds two numbers, in a code block, and explain it in one sentence.');
    await waitDone(page);
    await send(page, 'What does **bypass** mean for the second message?');
    await waitDone(page);
    await page.evaluate(() => { const l = document.querySelector('.rtc-log'); l.scrollTop = l.scrollHeight; });
    await shot(page, 'desktop-light');
    await page.emulateMedia({ colorScheme: 'dark' });
    await shot(page, 'desktop-dark');
    const bg = await page.evaluate(() => getComputedStyle(document.querySelector('.rtc-panel')).backgroundColor);
    check('dark theme follows prefers-color-scheme', bg === 'rgb(21, 26, 34)', bg);
    await page.setViewportSize(PHONE);
    await page.evaluate(() => { const l = document.querySelector('.rtc-log'); l.scrollTop = l.scrollHeight; });
    await shot(page, 'phone-dark');
    await page.emulateMedia({ colorScheme: 'light' });
    await shot(page, 'phone-light');
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    check('no horizontal scrolling on a phone', !overflow);
    // theme option beats the system setting
    await page.selectOption('#theme', 'dark');
    const forced = await page.evaluate(() => getComputedStyle(document.querySelector('.rtc-panel')).backgroundColor);
    check('theme option forces dark', forced === 'rgb(21, 26, 34)', forced);
    await page.selectOption('#theme', 'auto');

    // floating embed: one script tag on a page with hostile styles
    for (const [vp, scheme] of [[DESKTOP, 'light'], [PHONE, 'dark']]) {
      const fp = await newPage(browser, { viewport: vp, colorScheme: scheme, path: '/floating.html' });
      const name = vp === PHONE ? 'phone' : 'desktop';
      check(`${name}: launcher visible, panel closed`, await fp.locator('.rtc-launcher').isVisible() && !(await fp.locator('.rtc-panel').isVisible()));
      await shot(fp, `floating-closed-${name}-${scheme}`);
      await fp.locator('.rtc-launcher').click();
      check(`${name}: panel opens, focus in the message box`, await fp.locator('.rtc-panel').isVisible()
        && (await fp.evaluate(() => document.activeElement.classList.contains('rtc-input'))));
      await waitOnline(fp);
      const url = await fp.evaluate(() => window.RtChat.instances[0].opts.url);
      check(`${name}: default URL from the page location`, url === BASE.replace(/^http/, 'ws') + '/ws', url);
      const style = await fp.evaluate(() => { const s = getComputedStyle(document.querySelector('.rtc-send')); return [s.backgroundColor, s.textTransform, s.borderTopWidth]; });
      check(`${name}: host page button styles do not leak in`, style[0] !== 'rgb(255, 105, 180)' && style[1] === 'none' && style[2] !== '3px', style);
      if (vp === PHONE) {
        const box = await fp.locator('.rtc-panel').boundingBox();
        check('phone: panel fills the screen', Math.round(box.width) === PHONE.width && Math.round(box.height) === PHONE.height, box);
      }
      if (vp === PHONE) {
        await fp.locator('.rtc-input').fill('Line one');
        await fp.locator('.rtc-input').press('Enter');
        check('phone: Enter adds a line (no Shift key on a phone keyboard)', (await fp.locator('.rtc-input').inputValue()) === 'Line one\n'
          && (await fp.locator('.rtc-msg-user').count()) === 0);
      }
      await send(fp, 'Say hello in five words.');
      await waitDone(fp);
      await shot(fp, `floating-open-${name}-${scheme}`);
      await fp.locator('.rtc-input').press('Escape');
      check(`${name}: Esc closes the panel and focus returns to the launcher`, !(await fp.locator('.rtc-panel').isVisible())
        && (await fp.evaluate(() => document.activeElement.classList.contains('rtc-launcher'))));
      await fp.context().close();
    }
    return {};
  },
};

// ------------------------------------------------------------------ main

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
let ok = false;
let result = {};
let error = null;
try {
  if (!scenarios[SCENARIO]) throw new Error(`unknown scenario ${SCENARIO}; known: ${Object.keys(scenarios).join(', ')}`);
  result = await scenarios[SCENARIO](browser) || {};
  check('no JavaScript errors in the page', pageErrors.length === 0, pageErrors);
  ok = true;
} catch (e) {
  error = String(e && e.stack ? e.stack : e);
  console.log(error);
  for (const ctx of browser.contexts()) {
    for (const p of ctx.pages()) {
      try { await p.screenshot({ path: join(OUT, `${SCENARIO}-failure.png`) }); } catch { /* page gone */ }
    }
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify({ scenario: SCENARIO, ok, checks, result, error }));
process.exit(ok ? 0 : 1);
