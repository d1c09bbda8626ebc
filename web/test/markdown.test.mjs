// The markdown renderer (web/src/markdown.js): what it renders, that it never lets markup or a
// dangerous link through, and that the incremental renderer ends where a full render does.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { IncrementalMarkdown, render, safeHref } from '../src/markdown.js';

/** A compact view of a tree: <tag>children</>, text as is, code blocks as <pre lang>code</>. */
function summary(nodes) {
  return nodes.map((n) => {
    if (typeof n === 'string') return n;
    if (n.tag === 'codeblock') return `<pre ${n.lang}>${n.code}</>`;
    const attrs = (n.href ? ` href=${n.href}` : '') + (n.start !== undefined ? ` start=${n.start}` : '');
    return `<${n.tag}${attrs}>${summary(n.children || [])}</>`;
  }).join('');
}
const md = (text) => summary(render(text, { base: 'https://page.example/chat/' }));

test('renders the subset a model writes', () => {
  const cases = [
    ['call my_var_name and snake_case_too here', '<p>call my_var_name and snake_case_too here</>'],
    ['***both*** and **b** and *i* and _u_', '<p><strong><em>both</></> and <strong>b</> and <em>i</> and <em>u</></>'],
    ['a * b ** c and `open code', '<p>a * b ** c and `open code</>'],
    ['Here:\n```js\nlet x = 1;\n', '<p>Here:</><pre js>let x = 1;</>'],
    ['- a\n  - a1\n  - a2\n- b', '<ul><li>a<ul><li>a1</><li>a2</></></><li>b</></>'],
    ['3. three\n4. four', '<ol start=3><li>three</><li>four</></>'],
    ['## Title\ntext', '<p><strong>Title</></><p>text</>'],
    ['\\*not em\\* and 1 < 2 > 0 & done', '<p>*not em* and 1 < 2 > 0 & done</>'],
    ['> quoted\n> **more**', '<blockquote><p>quoted<br></><strong>more</></></>'],
    ['one\ntwo\n\n---\nthree', '<p>one<br></>two</><hr></><p>three</>'],
    ['use `a <b>` here', '<p>use <code>a <b></> here</>'],
  ];
  for (const [text, want] of cases) assert.equal(md(text), want, JSON.stringify(text));
  assert.ok(md('1) Define it:\n\n   ```python\n   def f():\n       return 1\n   ```\n2) Call it.').includes('<pre python>def f():\n    return 1</>'));
});

test('model markup stays text: no element, attribute or link comes from it', () => {
  const evil = [
    '<script>alert(1)</script>',
    '<img src=x onerror="alert(1)">',
    '[x](javascript:alert(1))',
    '[x](JaVaScRiPt:alert(1))',
    '[x](java\tscript:alert(1))',
    '[x](data:text/html,<script>alert(1)</script>)',
    '[x](vbscript:msgbox(1))',
    '[x](https://ok.example/"onmouseover="alert(1))',
    "[x](https://ok.example/'><script>alert(1)</script>)",
    '**<b onclick=alert(1)>b</b>**',
    '```html\n<script>alert(1)</script>\n```',
  ];
  const TAGS = new Set(['p', 'strong', 'em', 'code', 'a', 'br', 'hr', 'blockquote', 'ul', 'ol', 'li', 'codeblock']);
  const KEYS = new Set(['tag', 'cls', 'href', 'start', 'lang', 'code', 'children']);
  const walk = (nodes, texts) => {
    for (const n of nodes) {
      if (typeof n === 'string') { texts.push(n); continue; }
      assert.ok(TAGS.has(n.tag), n.tag);
      for (const k of Object.keys(n)) assert.ok(KEYS.has(k), k);
      if (n.cls !== undefined) assert.match(n.cls, /^rtc-[a-z0-9 -]+$/);
      if (n.tag === 'a') {
        const u = new URL(n.href);
        assert.ok(['http:', 'https:', 'mailto:'].includes(u.protocol), n.href);
        assert.doesNotMatch(n.href, /["<>\s]/, n.href); // serialized (dom.js sets it with setAttribute, never in markup)
      }
      if (n.tag === 'codeblock') texts.push(n.code);
      walk(n.children || [], texts);
    }
    return texts;
  };
  for (const text of evil) {
    const texts = walk(render(text, { base: 'https://page.example/' }), []).join('');
    for (const tag of ['<script>', '<img', '<b onclick']) {
      if (text.includes(tag) && !text.includes('](')) assert.ok(texts.includes(tag), `${JSON.stringify(text)} lost ${tag} from its text`);
    }
  }
  assert.equal(md('[x](javascript:alert(1))'), '<p>[x](javascript:alert(1))</>');
  assert.equal(md('[x](data:text/html,hi)'), '<p>[x](data:text/html,hi)</>');
  assert.equal(md('[site](https://example.com/x?a=1)'), '<p><a href=https://example.com/x?a=1>site</></>');
  assert.equal(md('[rel](docs/a)'), '<p><a href=https://page.example/chat/docs/a>rel</></>');
  assert.equal(safeHref('docs/a'), null); // no base: a relative link is text
  assert.equal(safeHref('mailto:a@b.example'), 'mailto:a@b.example');
});

const SAMPLES = [
  '# Heading one\n\nA paragraph with **bold**, *em* and `code`,\nover two lines.\n\n## Two\nText right under.\n',
  'Steps:\n\n1. First\n2. Second with [a link](https://example.com)\n   more of the second\n\n3. Third after a blank\n\nDone.',
  '- a\n- b\n  - b1\n  - b2\n\n  still b\n- c\n\nAfter the list.\n* star list\n+ plus',
  '```python\ndef f(x):\n\n    return x * 2\n```\nText after the fence.\n\n~~~\ntilde fence\n~~~~\n\n```\nunclosed',
  '> quote one\n> quote two\n\n---\n***\n___\nparagraph\n- item breaks it\n# heading breaks too',
  '1) Define it:\n\n   ```js\n   let a = 1;\n   ```\n2) Call it.\n\n   indented continuation\n',
  'Windows\r\nline ends\r\n\r\n- x\r\n\r\n  y\r\n* z\r',
  'Edge: `a` ``b ` c`` \\*esc\\* _snake_case_ **unclosed\n\n- \n-\n--\n- -\n1.\n1. x',
  'para\n```\ncode right after a paragraph\n```\n> q\ncontinued?\n\n    indented code-ish text\n',
];

const full = (text) => JSON.stringify(render(text));

/** Feed `chunks` one by one; check every step against a full render of what came so far. */
function feed(chunks) {
  const inc = new IncrementalMarkdown();
  const committed = [];
  let text = '';
  for (const c of chunks) {
    text += c;
    const { commit, open } = inc.update(text);
    committed.push(...commit);
    assert.equal(JSON.stringify([...committed, ...open]), full(text), `after ${JSON.stringify(text)}`);
  }
}

test('incremental render equals a full render at every step: one character at a time', () => {
  for (const s of SAMPLES) feed([...s]);
});

test('incremental render equals a full render: split in two at every character', () => {
  for (const s of SAMPLES) for (let k = 0; k <= s.length; k++) feed([s.slice(0, k), s.slice(k)]);
});

test('incremental render equals a full render: random chunk sizes, like tokens', () => {
  let seed = 7;
  const rand = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };
  for (let run = 0; run < 40; run++) {
    for (const s of SAMPLES) {
      const chunks = [];
      for (let i = 0; i < s.length;) { const n = 1 + Math.floor(rand() * 12); chunks.push(s.slice(i, i + n)); i += n; }
      feed(chunks);
    }
  }
});

test('each update renders only the open block at the end, not the whole answer', () => {
  const inc = new IncrementalMarkdown();
  let text = '';
  let committed = 0;
  for (let p = 0; p < 200; p++) {
    for (const word of `Paragraph ${p} has a few words.`.split(/(?= )/)) {
      text += word;
      const { commit, open } = inc.update(text);
      committed += commit.length;
      assert.ok(open.length <= 2, `update re-rendered ${open.length} blocks`);
    }
    text += '\n\n';
  }
  const { commit } = inc.update(text);
  assert.equal(committed + commit.length, 199); // all but the last paragraph are final
});
