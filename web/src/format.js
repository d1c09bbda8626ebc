/*! format: the words and numbers the widget shows (pure). */

export const fmtMs = (ms) => (ms < 10 ? `${ms.toFixed(1)} ms` : ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`);
export const fmtBytes = (n) => (n >= 1048576 ? `${(n / 1048576).toFixed(1)} MB` : `${Math.ceil(n / 1024)} KB`);

export const STATE_TEXT = Object.freeze({
  connecting: 'Connecting…',
  online: 'Connected',
  reconnecting: 'Reconnecting…',
  paused: 'Paused',
  offline: 'Disconnected',
});

/** A random id with `prefix` (message ids). */
export function randomId(prefix) {
  const a = new Uint8Array(9);
  crypto.getRandomValues(a);
  return prefix + Array.from(a, (b) => b.toString(36).padStart(2, '0')).join('').slice(0, 14);
}

/**
 * The latency badge of an answer: {parts: [{cls, text}], title}. `tokenStats`: the last token
 * frame's stats while streaming; `done`: the done frame once it ended (its stats win).
 */
export function badge(answer, tokenStats, done) {
  const { route, ttft, tokens } = answer;
  const parts = [];
  let title = '';
  if (route) {
    const decision = String(route.decision || '');
    parts.push({ cls: 'rtc-b-usecase', text: String(route.use_case) }, { cls: 'rtc-b-model', text: String(route.model) },
      { cls: `rtc-b-decision rtc-b-${decision.replace(/[^a-z]/g, '')}`, text: decision });
    title = `route: ${route.use_case} → ${route.model} on ${route.worker} (${decision}, confidence ${route.confidence}, routing ${fmtMs(Number(route.route_ms) || 0)})`;
  }
  if (typeof ttft === 'number') parts.push({ cls: 'rtc-b-ttft', text: `TTFT ${fmtMs(ttft)}` });
  let rate = null;
  if (done && done.stats && typeof done.stats.tokens_per_s === 'number' && done.stats.tokens_per_s > 0) rate = done.stats.tokens_per_s;
  else if (tokenStats && tokens > 1 && tokenStats.elapsed_ms > (ttft || 0)) rate = ((tokens - 1) * 1000) / (tokenStats.elapsed_ms - (ttft || 0));
  if (rate !== null) parts.push({ cls: 'rtc-b-rate', text: `${rate.toFixed(1)} tok/s` });
  if (done && done.stats && typeof done.stats.total_ms === 'number') {
    title += `${title ? '\n' : ''}total ${fmtMs(done.stats.total_ms)}, ${done.usage ? done.usage.completion_tokens : '?'} tokens`;
  }
  return { parts, title };
}

/** The label before the badge of an answer that did not end normally, or null. */
export function finishLabel(done, interrupted) {
  if (interrupted) return 'Interrupted';
  const labels = { cancelled: 'Stopped', length: 'Cut off at the length limit', error: done.rejected ? 'Not answered' : 'Failed' };
  return labels[done.finish_reason] || null;
}
