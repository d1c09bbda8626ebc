/*! markdown: the widget's safe markdown subset, as a tree of plain records (no DOM).
 *
 * render(text) -> Node[]; a Node is a string (text) or {tag, cls?, href?, start?, lang?, code?, children?}.
 * Tags: p, strong, em, code, a, br, hr, blockquote, ul, ol, li, codeblock. Every character of the
 * input ends up in a string or in `code`; no field carries markup, and `href` is only ever an
 * absolute http:, https: or mailto: URL. dom.js turns the tree into DOM nodes with text nodes only.
 *
 * IncrementalMarkdown renders a growing text: blocks that no appended text can change are
 * handed out once (commit); only the open blocks at the end are rendered again (open).
 */

const ESCAPABLE = /[\\`*_[\]()#+\-.!>~|{}]/;
const isSpace = (c) => c === undefined || /\s/.test(c);
const isWord = (c) => c !== undefined && /[\p{L}\p{N}]/u.test(c);

/** An absolute http(s)/mailto URL for `url` (resolved against `base`), or null. */
export function safeHref(url, base) {
  try {
    const u = base ? new URL(url, base) : new URL(url);
    return ['http:', 'https:', 'mailto:'].includes(u.protocol) ? u.href : null;
  } catch {
    return null;
  }
}

const el = (tag, cls, children = []) => (cls ? { tag, cls, children } : { tag, children });

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

/** The inline markdown of `s` (code, bold, italic, links) appended to `out`. */
function inline(s, out, opts) {
  let buf = '';
  const flush = () => {
    if (buf) out.push(buf);
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
      out.push(el('code', 'rtc-code-inline', [code]));
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
          out.push(el('strong', null, inline(s.slice(i + 2, j), [], opts)));
          i = j + 2;
          continue;
        }
      }
      if (canOpen && k === 1) {
        const j = findCloser(s, i + 1, c);
        if (j !== -1 && s[j + 1] !== c) {
          flush();
          out.push(el('em', null, inline(s.slice(i + 1, j), [], opts)));
          i = j + 1;
          continue;
        }
      }
      buf += s.slice(i, i + k); // not emphasis: the whole run is text
      i += k;
      continue;
    }
    if (c === '[') {
      const m = /^\[([^\]\n]{1,500})\]\(([^)\s]{1,2000})\)/.exec(s.slice(i, i + 2510));
      const href = m && safeHref(m[2], opts.base);
      if (href) {
        flush();
        out.push({ tag: 'a', cls: 'rtc-link', href, children: inline(m[1], [], opts) });
        i += m[0].length;
        continue;
      }
    }
    buf += c;
    i++;
  }
  flush();
  return out;
}

const RE_FENCE = /^\s*(`{3,}|~{3,})\s*([^\s`]*)[^`]*$/;
const RE_HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RE_ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const RE_QUOTE = /^\s{0,3}>\s?(.*)$/;
const RE_RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;

function startsBlock(line) {
  return RE_FENCE.test(line) || RE_HEADING.test(line) || RE_ITEM.test(line) || RE_QUOTE.test(line);
}

/**
 * The top-level blocks of `lines`: [{line, node}], `line` the index of the block's first line.
 * A block's extent and content depend only on its own lines and on the first line of the next
 * block (IncrementalMarkdown relies on this).
 */
function blocks(lines, opts) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const at = i;
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
      out.push({ line: at, node: { tag: 'codeblock', lang: fence[2], code: body.map((l) => l.slice(indent)).join('\n') } });
      continue;
    }
    const heading = RE_HEADING.exec(line);
    if (heading) {
      const strong = el('strong', null, inline(heading[2], [], opts));
      out.push({ line: at, node: el('p', `rtc-md-h rtc-md-h${heading[1].length}`, [strong]) });
      i++;
      continue;
    }
    if (RE_RULE.test(line)) {
      out.push({ line: at, node: { tag: 'hr', cls: 'rtc-md-hr' } });
      i++;
      continue;
    }
    if (RE_QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && RE_QUOTE.test(lines[i])) inner.push(RE_QUOTE.exec(lines[i++])[1]);
      out.push({ line: at, node: el('blockquote', 'rtc-md-quote', blocks(inner, opts).map((b) => b.node)) });
      continue;
    }
    if (RE_ITEM.test(line)) {
      const [list, next] = listAt(lines, i, opts);
      out.push({ line: at, node: list });
      i = next;
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
    const p = el('p', 'rtc-md-p');
    para.forEach((l, n) => {
      if (n) p.children.push({ tag: 'br' });
      inline(l, p.children, opts);
    });
    out.push({ line: at, node: p });
  }
  return out;
}

/** The list starting at lines[start] and the index after it. Nested lists come from indentation. */
function listAt(lines, start, opts) {
  const first = RE_ITEM.exec(lines[start]);
  const baseIndent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const list = el(ordered ? 'ol' : 'ul', 'rtc-md-list');
  if (ordered && parseInt(first[2], 10) !== 1) list.start = parseInt(first[2], 10);
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
    const li = el('li', 'rtc-md-li');
    const tight = content.length === 1 || !content.slice(1).some((l) => l.trim() && startsBlock(l));
    if (tight && !content.includes('')) {
      content.forEach((l, n) => {
        if (n) li.children.push({ tag: 'br' });
        inline(l.trim(), li.children, opts);
      });
    } else {
      li.children = blocks(content, opts).map((b) => b.node);
      const lead = li.children[0];
      if (!content.includes('') && lead && lead.tag === 'p' && lead.cls === 'rtc-md-p') li.children.splice(0, 1, ...lead.children);
    }
    list.children.push(li);
    // a blank line between items keeps the list going
    if (i < lines.length && !lines[i].trim()) {
      let j = i;
      while (j < lines.length && !lines[j].trim()) j++;
      const nm = j < lines.length && RE_ITEM.exec(lines[j]);
      if (nm && nm[1].length <= baseIndent + 1 && /\d/.test(nm[2]) === ordered) i = j;
    }
  }
  return [list, i];
}

const LINE_END = /\r\n?|\n/g;

/** The lines of `s` and the offset in `s` where each starts. */
function splitLines(s) {
  const lines = [];
  const starts = [];
  let from = 0;
  LINE_END.lastIndex = 0;
  for (let m = LINE_END.exec(s); m; m = LINE_END.exec(s)) {
    lines.push(s.slice(from, m.index));
    starts.push(from);
    from = m.index + m[0].length;
  }
  lines.push(s.slice(from));
  starts.push(from);
  return { lines, starts };
}

/**
 * The markdown of `text` as a tree. `opts.base` resolves relative link targets (the page's
 * URL in a browser); without it only absolute http:, https: and mailto: links are kept.
 */
export function render(text, opts = {}) {
  return blocks(splitLines(String(text)).lines, opts).map((b) => b.node);
}

/**
 * Renders a text that only grows. update(text) returns {commit, open}: `commit` are blocks
 * that are final (a later update never returns them again, and appending any text cannot
 * change them); `open` are the blocks after them, rendered again on every update.
 * Invariant: the commits of all updates followed by the last `open` equal render(text).
 * After `text` stops being an extension of the previous text, call reset() first.
 */
export class IncrementalMarkdown {
  constructor(opts = {}) {
    this.opts = opts;
    this.reset();
  }

  reset() {
    this.done = 0; // offset in the text where the open blocks start
  }

  update(text) {
    const tail = String(text).slice(this.done);
    const { lines, starts } = splitLines(tail);
    const found = blocks(lines, this.opts);
    // block k is final once block k+1 starts on a complete line (one that a line end follows):
    // every line block k's extent depends on is then fixed
    let final = 0;
    while (final + 1 < found.length && found[final + 1].line < lines.length - 1) final++;
    const commit = found.slice(0, final).map((b) => b.node);
    if (final > 0) this.done += starts[found[final].line];
    return { commit, open: found.slice(final).map((b) => b.node) };
  }
}
