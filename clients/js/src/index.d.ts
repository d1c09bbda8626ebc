// Types of rtclient (hand-written; the module is plain JavaScript).

export declare const VERSION: string;

/** How frames travel: jsonCodec (rt.v1.json) or msgpackCodec from 'rtclient/msgpack'. */
export interface Codec {
  readonly subprotocol: string;
  readonly binary: boolean;
  encode(frame: object): string | Uint8Array;
  decode(data: unknown): ServerFrame;
  bytes(data: Uint8Array | string): string | Uint8Array;
}

export declare const jsonCodec: Codec;

export declare function backoffDelay(
  attempt: number,
  backoff?: { baseMs?: number; capMs?: number },
  random?: () => number,
): number;

export declare function base64(bytes: Uint8Array): string;

export type State = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed' | 'failed';

export interface TokenStats {
  ttft_ms: number;
  gap_ms: number;
  route_ms: number;
  queue_ms: number;
  elapsed_ms: number;
}

/** One token (or several merged: seqLast > seq) of an answer. */
export interface TokenItem {
  text: string;
  seq: number;
  seqLast: number;
  stats: TokenStats;
  seam: { worker: string; reason: string } | null;
}

export interface SessionFrame {
  type: 'session';
  session_id: string;
  resume_token: string;
  resumed: boolean;
  limits: Record<string, number>;
  route: { use_case: string; model: string; worker: string } | null;
}

export interface RouteFrame {
  type: 'route';
  response_id: string;
  message_id: string;
  use_case: string;
  model: string;
  worker: string;
  decision: 'full' | 'bypass' | 'reroute';
  confidence: number;
  route_ms: number;
  context_changed: boolean;
}

export interface TokenFrame {
  type: 'token';
  response_id: string;
  seq: number;
  seq_last?: number;
  text: string;
  stats: TokenStats;
  seam?: { worker: string; reason: string };
}

export interface DoneFrame {
  type: 'done';
  response_id: string;
  finish_reason: 'stop' | 'length' | 'cancelled' | 'error';
  last_seq: number;
  usage: { prompt_tokens: number; completion_tokens: number };
  stats: {
    ttft_ms: number | null;
    total_ms: number;
    tokens_per_s: number;
    gap_p50_ms: number | null;
    gap_p95_ms: number | null;
    route_ms: number;
    decision: 'full' | 'bypass' | 'reroute';
  };
}

export interface ErrorFrame {
  type: 'error';
  code: string;
  status: number;
  message: string;
  retryable: boolean;
  fatal: boolean;
  ref?: string;
  response_id?: string;
}

export interface TokenExpiringFrame { type: 'token_expiring'; expires_at: number; in_ms: number }
export interface RefreshedFrame { type: 'refreshed'; expires_at: number }
export interface PongFrame { type: 'pong'; t: unknown }

export type ServerFrame =
  | SessionFrame | RouteFrame | TokenFrame | DoneFrame | ErrorFrame
  | TokenExpiringFrame | RefreshedFrame | PongFrame;

export declare class RtError extends Error {
  /** A server error code (docs/protocol.md) or: closed, interrupted, session_lost,
   * session_replaced, busy, cancelled, refused, unauthorized, auth_failed. */
  readonly code: string;
  readonly status: number | null;
  readonly retryable: boolean;
  readonly fatal: boolean;
  readonly frame: ErrorFrame | null;
  constructor(code: string, message?: string, extra?: { status?: number; retryable?: boolean; fatal?: boolean; frame?: ErrorFrame });
  static fromFrame(frame: ErrorFrame): RtError;
}

export interface Attachment {
  kind: 'image' | 'audio' | 'file';
  mime: string;
  /** Bytes; or a base64 string. */
  data: Uint8Array | string;
}

export interface SendOptions {
  attachments?: Attachment[];
  context?: Record<string, unknown>;
  /** Message id (default: generated). */
  id?: string;
}

/** One answer: iterate it for tokens; `route` and `done` resolve with their frames. */
export declare class Reply implements AsyncIterable<TokenItem> {
  readonly messageId: string;
  readonly responseId: string | null;
  /** The last token seq received. */
  readonly lastSeq: number;
  /** The text so far. */
  readonly text: string;
  readonly tokens: number;
  readonly finished: boolean;
  readonly route: Promise<RouteFrame>;
  readonly done: Promise<DoneFrame>;
  [Symbol.asyncIterator](): AsyncIterator<TokenItem>;
}

export interface WebSocketLike {
  readonly readyState: number;
  binaryType: string;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string | Uint8Array | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface RtClientOptions {
  /** Gateway URL, or several tried in turn when one restarts (1012) or cannot be reached. */
  url: string | string[];
  codec?: Codec;
  /** Returns a connection token: called for every new socket and on `token_expiring` (sent as `refresh`). */
  getToken?: () => Promise<string> | string;
  /** A WebSocket constructor where there is no global one (e.g. the `ws` package in Node 18-21). */
  WebSocket?: WebSocketConstructor;
  /** A fixed connection token, when there is no getToken (a refused one is not retried). */
  token?: string;
  /** A stored conversation to resume. */
  session?: { session_id: string; resume_token: string };
  /** Name/version sent in hello. */
  client?: string;
  backoff?: { baseMs?: number; capMs?: number };
}

export interface RtClientEvents {
  state: State;
  session: SessionFrame;
  route: RouteFrame;
  token: TokenItem;
  done: DoneFrame;
  error: RtError;
  token_expiring: TokenExpiringFrame;
  refreshed: RefreshedFrame;
  close: { code: number; reason: string };
  /** A socket opened (before its hello). */
  open: { url: string; resuming: boolean };
  /** A reconnect is scheduled. */
  retry: { attempt: number; delayMs: number; url: string };
  /** Every server frame, as received (before de-duplication). */
  frame: ServerFrame;
}

export declare class RtClient {
  constructor(opts: RtClientOptions);
  readonly state: State;
  /** The conversation to store for a later resume (rotates on every resume). */
  readonly session: { session_id: string; resume_token: string } | null;
  /** The gateway URL in use. */
  readonly url: string;
  readonly reply: Reply | null;
  /** Sockets opened after the first one. */
  readonly reconnects: number;
  /** Tokens refreshed on the live socket. */
  readonly refreshes: number;
  connect(): Promise<SessionFrame>;
  send(text: string, options?: SendOptions): Reply;
  cancel(): void;
  close(): void;
  /** Take over an answer stored earlier (e.g. across a page reload); the next resume asks for what follows lastSeq. */
  adopt(answer: { messageId: string; responseId: string; lastSeq?: number }): Reply;
  /** Reconnect now if waiting; else ping the open socket and drop it when no pong comes within timeoutMs. */
  probe(timeoutMs?: number): void;
  /** The delay of the reconnect scheduled last (ms). */
  readonly nextDelay: number | null;
  on<K extends keyof RtClientEvents>(event: K, listener: (payload: RtClientEvents[K]) => void): () => void;
}
