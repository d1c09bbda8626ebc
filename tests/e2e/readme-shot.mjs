// Takes the README screenshot (docs/img/widget.png): the demo page at / in Debian's chromium,
// two questions answered by the embedded model with the shipped defaults.
//
//   rtserver serve --port 8000 &
//   node tests/e2e/readme-shot.mjs --base http://127.0.0.1:8000 --out docs/img/widget.png [--questions 'Q1|Q2']
//
// Not a test: it prints each answer so that a person can judge it before committing the PNG.

import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
const BASE = (args.base || 'http://127.0.0.1:8000').replace(/\/$/, '');
const OUT = args.out || 'docs/img/widget.png';
// The committed PNG: two fact questions the 135M model answers right (a full route, then a bypass).
const QUESTIONS = args.questions ? args.questions.split('|') : ['What is 7 + 5?', 'What is the capital of France?'];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: 'light', deviceScaleFactor: 1 });
  const page = await context.newPage();
  await page.goto(`${BASE}/`);
  await page.waitForFunction(() => document.querySelector('.rtc-status')?.dataset.state === 'online', null, { timeout: 120000 });
  for (const q of QUESTIONS) {
    const before = await page.locator('.rtc-msg-assistant').count();
    await page.locator('.rtc-input').fill(q);
    await page.locator('.rtc-input').press('Enter');
    await page.waitForFunction((n) => {
      const all = document.querySelectorAll('.rtc-msg-assistant');
      return all.length > n && all[all.length - 1].dataset.finish;
    }, before, { timeout: 300000 });
    const answer = await page.evaluate(() => {
      const all = document.querySelectorAll('.rtc-msg-assistant');
      const el = all[all.length - 1];
      return { text: el.querySelector('.rtc-body').textContent, badge: el.querySelector('.rtc-badge')?.textContent, finish: el.dataset.finish };
    });
    console.log(JSON.stringify({ question: q, ...answer }));
  }
  await page.evaluate(() => { const l = document.querySelector('.rtc-log'); l.scrollTop = l.scrollHeight; });
  await page.screenshot({ path: OUT });
  console.log(`wrote ${OUT}`);
} finally {
  await browser.close();
}
