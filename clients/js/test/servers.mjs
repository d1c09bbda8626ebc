// Real processes for the client tests: `rtserver serve` gateways (embedded synthetic
// engine) and a redis-server. PYTHON names the interpreter that has rtserver
// (default: python3); REDIS_SERVER the redis-server binary (default: on the PATH).
import { spawn, spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const PYTHON = process.env.PYTHON || 'python3';
const READY = /rtserver ready on http:\/\/[^:]+:(\d+)\//;

export const WORDS = ['lorem ', 'ipsum ', 'dolor ', 'sit ', 'amet ', 'consectetur ', 'adipiscing ', 'elit '];
/** What the synthetic engine answers, n tokens long (deterministic). */
export const expectedText = (n) => Array.from({ length: n }, (_, i) => WORDS[i % WORDS.length]).join('');

/** `rtserver serve --port 0 ...args`; resolves once it printed its ready line. */
export function startGateway(args = [], { timeoutMs = 120000 } = {}) {
  const proc = spawn(PYTHON, ['-m', 'rtserver', 'serve', '--port', '0', '--embedded-engine', 'synthetic',
    '--embedded-mode', 'inproc', '--model-id', 'synthetic', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'], detached: true,
  });
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => { stopProcess(proc, 'SIGKILL'); reject(new Error('gateway did not start')); },
      timeoutMs);
    proc.stdout.on('data', (chunk) => {
      buf += chunk.toString();
      const m = READY.exec(buf);
      if (m) {
        clearTimeout(timer);
        proc.stdout.removeAllListeners('data');
        proc.stdout.resume();
        const port = Number(m[1]);
        resolve({ proc, port, url: `ws://127.0.0.1:${port}/ws` });
      }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`gateway exited with ${code}`)); });
  });
}

/** Signal the process group; resolves with the exit code (SIGKILL after timeoutMs). */
export function stopProcess(proc, signal = 'SIGTERM', timeoutMs = 20000) {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(proc.exitCode);
  return new Promise((resolve) => {
    const timer = setTimeout(() => { try { process.kill(-proc.pid, 'SIGKILL'); } catch { /* gone */ } }, timeoutMs);
    proc.once('exit', (code) => { clearTimeout(timer); resolve(code); });
    try { process.kill(-proc.pid, signal); } catch { /* gone */ }
  });
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

export function hasRedis() {
  return spawnSync(process.env.REDIS_SERVER || 'redis-server', ['--version']).status === 0;
}

/** A throwaway redis-server on a free port (no persistence). */
export async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'rtclient-redis-'));
  const proc = spawn(process.env.REDIS_SERVER || 'redis-server', ['--port', String(port), '--bind', '127.0.0.1',
    '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  await new Promise((resolve, reject) => {
    let buf = '';
    proc.stdout.on('data', (c) => {
      buf += c.toString();
      if (buf.includes('Ready to accept connections')) { proc.stdout.resume(); resolve(); }
    });
    proc.on('exit', (code) => reject(new Error(`redis-server exited with ${code}`)));
  });
  return {
    proc, url: `redis://127.0.0.1:${port}/0`,
    async stop() { await stopProcess(proc); rmSync(dir, { recursive: true, force: true }); },
  };
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** An HS256 connection token, as `rtserver token` makes. */
export function hs256(secret, sub, ttlS) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify({ sub, iat: now, exp: now + ttlS }));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
