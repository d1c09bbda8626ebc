import type { Codec } from './index.js';

/** The msgpack encoding (rt.v1.msgpack): binary frames, attachment bytes as bin. */
export declare const msgpackCodec: Codec;
