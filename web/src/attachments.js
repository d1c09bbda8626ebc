/*! attachments: images picked, dropped or pasted, checked against the session's limits and read as base64. */
import { fmtBytes } from './format.js';

/**
 * Why `file` cannot be attached next to `count` others under `limits`: [text, full] (full: no
 * further file can be either), or null when it can.
 */
export function refusal(file, count, limits) {
  if (!file.type || !file.type.startsWith('image/')) return [`${file.name || 'That file'} is not an image; only images can be attached.`, false];
  if (count >= limits.max_attachments) return [`At most ${limits.max_attachments} images per message.`, true];
  if (file.size > limits.max_attachment_bytes) {
    return [`${file.name || 'The image'} is ${fmtBytes(file.size)}; the limit is ${fmtBytes(limits.max_attachment_bytes)}.`, false];
  }
  return null;
}

/** An attachment for `file`: {name, mime, size, url, data, ready}; `data` (base64) is set once `ready` resolves, or stays null. */
export function readImage(file, onError) {
  const att = { name: file.name || 'pasted image', mime: file.type, size: file.size, url: URL.createObjectURL(file), data: null };
  att.ready = new Promise((resolve) => {
    const reader = new FileReader();
    reader.onload = () => { att.data = String(reader.result).split(',', 2)[1] || ''; resolve(); };
    reader.onerror = () => { onError(att); resolve(); };
    reader.readAsDataURL(file);
  });
  return att;
}

/** A rough size of the message frame carrying `text` and the read attachments `atts`, in bytes. */
export const frameBytes = (text, atts) => text.length * 3 + atts.reduce((n, a) => n + a.data.length + 64, 256);
