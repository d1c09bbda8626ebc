/*! rtclient/msgpack: the msgpack encoding (subprotocol rt.v1.msgpack, binary frames).
 *
 *   import { RtClient } from 'rtclient';
 *   import { msgpackCodec } from 'rtclient/msgpack';
 *   const client = new RtClient({url, codec: msgpackCodec});
 *
 * Attachment bytes travel as msgpack bin (no base64).
 */
import { decode, encode } from '@msgpack/msgpack';

export const msgpackCodec = Object.freeze({
  subprotocol: 'rt.v1.msgpack',
  binary: true,
  encode: (frame) => encode(frame, { ignoreUndefined: true }),
  decode: (data) => {
    if (typeof data === 'string') throw new TypeError('text frame on rt.v1.msgpack');
    return decode(data instanceof ArrayBuffer || ArrayBuffer.isView(data) ? data : new Uint8Array(data));
  },
  bytes: (data) => (typeof data === 'string' ? data : data instanceof Uint8Array ? data : new Uint8Array(data)),
});
