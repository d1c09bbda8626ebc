/*! main: window.RtChat, the stylesheet, and the one-tag embed (data-* attributes of the script tag). */
import { h, renderMarkdown } from './dom.js';
import { instances, VERSION, Widget } from './widget.js';

const currentScript = document.currentScript; // only while the script first runs
const scriptBase = currentScript && currentScript.src ? new URL('.', currentScript.src).href : null;

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

window.RtChat = { mount, instances, version: VERSION, renderMarkdown };

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
