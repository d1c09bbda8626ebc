/*! dom: DOM building blocks of the widget, and the markdown tree made into DOM nodes.
 *
 * Text only ever becomes text nodes (textContent); attributes are set from fixed names, and a
 * link's href is the one markdown.js checked. Nothing is parsed as HTML.
 */
import { IncrementalMarkdown, render } from './markdown.js';

/** h('div', {class: 'x', text: 'y', onclick: fn, 'aria-label': 'z'}, child...) */
export function h(tag, attrs, ...children) {
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

/** A decorative 24x24 stroke icon (aria-hidden) from one of ICONS. */
export function icon(name) {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  svg.setAttribute('class', 'rtc-icon');
  for (const d of ICONS[name]) {
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

function codeBlock(lang, code) {
  return h('div', { class: 'rtc-codeblock' },
    h('div', { class: 'rtc-codebar' },
      h('span', { class: 'rtc-codelang', text: lang || 'code' }),
      h('button', { type: 'button', class: 'rtc-copy', 'aria-label': `Copy ${lang || ''} code`.replace('  ', ' '), text: 'Copy' })),
    h('pre', { class: 'rtc-pre' }, h('code', { text: code })));
}

const TAGS = new Set(['p', 'strong', 'em', 'code', 'a', 'br', 'hr', 'blockquote', 'ul', 'ol', 'li']);

/** The DOM node of one markdown tree node (markdown.js). */
export function toDom(node) {
  if (typeof node === 'string') return document.createTextNode(node);
  if (node.tag === 'codeblock') return codeBlock(node.lang, node.code);
  if (!TAGS.has(node.tag)) throw new Error(`markdown made an unknown tag: ${node.tag}`);
  const el = document.createElement(node.tag);
  if (node.cls) el.className = node.cls;
  if (node.tag === 'a') {
    el.setAttribute('href', node.href);
    el.setAttribute('target', '_blank');
    el.setAttribute('rel', 'noopener noreferrer nofollow');
  }
  if (node.start !== undefined) el.setAttribute('start', String(node.start));
  for (const c of node.children || []) el.append(toDom(c));
  return el;
}

const pageUrl = () => (typeof window !== 'undefined' && window.location ? window.location.href : undefined);

/** A DocumentFragment for markdown text. Never parses HTML: every character of `text` ends up as text. */
export function renderMarkdown(text) {
  const frag = document.createDocumentFragment();
  for (const n of render(text, { base: pageUrl() })) frag.append(toDom(n));
  return frag;
}

/**
 * A streaming answer's body. show(text) with a text that only grows: the DOM of finished
 * blocks stays, only the open blocks at the end are touched: kept when unchanged, a code block
 * that only grew gets the new characters appended, anything else is built again (a block that
 * becomes finished keeps the DOM it had while open, when that shows the same). `body` holds
 * nothing else once the first show() ran (it removes what was there, e.g. the typing dots).
 */
export class StreamView {
  constructor(body) {
    this.body = body;
    this.md = new IncrementalMarkdown({ base: pageUrl() });
    this.open = []; // [{tree, json, el}] of the open blocks, in order
    this.started = false;
  }

  show(text) {
    if (!this.started) {
      this.body.replaceChildren();
      this.started = true;
    }
    const { commit, open } = this.md.update(text);
    // the blocks after the finished ones, old and new, side by side: patch each in place
    const blocks = [...commit, ...open];
    const next = blocks.map((tree, i) => this._patch(this.open[i], tree));
    for (const o of this.open.slice(blocks.length)) o.el.remove();
    this.open = next.slice(commit.length);
  }

  /** The open block `tree` shown in place of `old` (which may be undefined). */
  _patch(old, tree) {
    const json = JSON.stringify(tree);
    if (old && old.json === json) return old;
    if (old && tree.tag === 'codeblock' && old.tree.tag === 'codeblock' && old.tree.lang === tree.lang
        && tree.code.startsWith(old.tree.code)) {
      const code = old.el.querySelector('.rtc-pre code');
      const more = tree.code.slice(old.tree.code.length);
      if (code.lastChild) code.lastChild.appendData(more); // one text node, as a full render makes
      else code.append(more);
      return { tree, json, el: old.el };
    }
    const el = toDom(tree);
    if (old) old.el.replaceWith(el);
    else this.body.append(el);
    return { tree, json, el };
  }
}
