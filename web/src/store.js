/*! store: the conversation kept across reloads, in a Storage (sessionStorage in a browser).
 *
 * One JSON value per key: {session_id, resume_token, log, inflight}. `log` is the transcript
 * ([{role, text, meta?}], the newest KEPT_MESSAGES); `inflight` the answer that was streaming
 * (its text and last seq saved together, so a resume neither skips nor doubles text).
 * A full or disabled storage loses the saved copy, never the conversation on screen.
 */

export const KEPT_MESSAGES = 60;
export const STORE_PREFIX = 'rtchat:v1:';

export class Store {
  /** `storage`: a Storage (getItem/setItem), or null when there is none. */
  constructor(storage, key) {
    this.storage = storage;
    this.key = STORE_PREFIX + key;
  }

  /** The saved value, checked: {session: {id, token} | null, log: [...], inflight: {...} | null}. */
  load() {
    let v = null;
    try {
      v = JSON.parse(this.storage.getItem(this.key) || 'null');
    } catch {
      v = null;
    }
    if (!v || typeof v !== 'object') v = {};
    const session = typeof v.session_id === 'string' && v.session_id ? { id: v.session_id, token: v.resume_token } : null;
    const log = (Array.isArray(v.log) ? v.log : []).filter((m) => m && typeof m.text === 'string').slice(-KEPT_MESSAGES);
    const inflight = session && v.inflight && typeof v.inflight.responseId === 'string' ? v.inflight : null;
    return { session, log, inflight };
  }

  /** Save `snapshot` (Machine.snapshot()) with the transcript `log`. */
  save(snapshot, log) {
    try {
      this.storage.setItem(this.key, JSON.stringify({ log, ...snapshot }));
    } catch {
      /* storage full or disabled: the conversation still works, it just will not resume */
    }
  }
}

/** The transcript with `entry` added, trimmed to the newest KEPT_MESSAGES. */
export function remember(log, entry) {
  return [...log, entry].slice(-KEPT_MESSAGES);
}
