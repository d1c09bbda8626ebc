// Copy src/index.js into web/rtchat.js, so the widget embeds with one script tag and
// still shares its connection code with rtclient.
//
//   node clients/js/scripts/inline.mjs          rewrite the block between the markers
//   node clients/js/scripts/inline.mjs --check  exit 1 when the copy is stale
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const SOURCE = join(HERE, '..', 'src', 'index.js');
const WIDGET = join(HERE, '..', '..', '..', 'web', 'rtchat.js');
const BEGIN = '  // >>> rtclient';
const END = '  // <<< rtclient';

export function block(source) {
  const names = [...source.matchAll(/^export (?:class|const|function) (\w+)/gm)].map((m) => m[1]);
  const body = source.replace(/^export /gm, '').trimEnd();
  return [
    `${BEGIN}: generated from clients/js/src/index.js by clients/js/scripts/inline.mjs; edit the source, not this copy`,
    '  const rtclient = (() => {',
    body,
    `    return { ${names.join(', ')} };`,
    '  })();',
    END,
  ].join('\n');
}

export function inline(widget, source) {
  const start = widget.indexOf(BEGIN);
  const stop = widget.indexOf(END);
  if (start < 0 || stop < start) throw new Error(`web/rtchat.js has no "${BEGIN}" … "${END}" block`);
  return widget.slice(0, start) + block(source) + widget.slice(stop + END.length);
}

const widget = readFileSync(WIDGET, 'utf8');
const fresh = inline(widget, readFileSync(SOURCE, 'utf8'));
if (process.argv.includes('--check')) {
  if (fresh !== widget) {
    console.error('web/rtchat.js holds a stale copy of clients/js/src/index.js: run node clients/js/scripts/inline.mjs');
    process.exit(1);
  }
} else if (fresh !== widget) {
  writeFileSync(WIDGET, fresh);
  console.log('web/rtchat.js updated');
}
