// Type declarations for sente-client (hand-written; keep in sync with sente.js).

/** A Clojure keyword. Encoded on the wire as the string ":ns/name". */
export class Keyword {
  constructor(name: string);
  /** The name without the leading colon, e.g. "my-app/ping". */
  readonly name: string;
  toString(): string;
}

/** Create a keyword; a leading colon is optional. */
export function kw(name: string): Keyword;

/** A tagged value without a native JS counterpart (char, sym, bigdec, ratio, bytes, map, tag, ...). */
export class Tagged<V = unknown> {
  constructor(tag: string, value: V);
  readonly tag: string;
  readonly value: V;
}

/** Values this client can encode. Keywords decode back as plain strings (without the colon). */
export type Encodable =
  | null
  | undefined
  | boolean
  | number
  | string
  | bigint
  | Keyword
  | Date
  | Tagged
  | ArrayBuffer
  | ArrayBufferView
  | Set<Encodable>
  | Map<Encodable, Encodable>
  | readonly Encodable[]
  | { readonly [key: string]: Encodable };

/** Values that arrive from the server (keywords become strings, sets Set, inst Date, bigint BigInt). */
export type Decoded =
  | null
  | boolean
  | number
  | string
  | bigint
  | Date
  | Tagged<any>
  | Set<Decoded>
  | Decoded[]
  | { [key: string]: Decoded };

/** Encode a JS value into its JSON wire form (see README for the mapping). */
export function encode(value: Encodable): unknown;
/** Decode a JSON wire value into JS. */
export function decode(json: unknown): any;
/** Encode an event `[":ns/name", data]`; throws a TypeError for an id without a namespace. */
export function encodeEvent(id: string | Keyword, data?: Encodable): unknown[];

/**
 * A packer: how envelopes `[payload, cbId]` become text and back. `kw` and `val` read unpacked
 * values: `kw(x)` is the name of a keyword ("chsk/handshake"), else a falsy value; `val(x)` is the
 * value as the application sees it.
 */
export interface Packer {
  /** The `packer` query parameter to send, or null to send none. */
  readonly param: string | null;
  pack(envelope: unknown): string;
  unpack(text: string): unknown;
  kw(x: unknown): string | false | 0 | undefined;
  val(x: unknown): any;
}

/** Full-jitter backoff: attempt 1 -> 0 ms; attempt n -> random in [0, min(capMs, 1000 * 2^n)). */
export function fullJitterBackoff(attempt: number, capMs?: number): number;

export type TransportType = "auto" | "ws" | "ajax";

export type CloseReason =
  | "clean"
  | "unexpected"
  | "requested-disconnect"
  | "requested-reconnect"
  | "downgrading-ws-to-ajax"
  | "ws-ping-timeout"
  | "ws-error"
  | "rejected";

export interface ChskState {
  /** "auto" until the first handshake, then the transport in use. */
  readonly type: TransportType;
  readonly open: boolean;
  readonly everOpened: boolean;
  readonly uid: any;
  readonly handshakeData: any;
  /** The last WebSocket error; `status` is the refused upgrade's HTTP status where the runtime reveals it (Node's `ws`). */
  readonly lastWsError: { readonly udt: number; readonly message: string; readonly status?: number } | null;
  readonly lastWsClose: {
    readonly code: number;
    readonly reason: string;
    readonly clean: boolean;
    readonly udt: number;
  } | null;
  /** Set when an open connection closes (and always for "rejected", with the HTTP status). */
  readonly lastClose: { readonly udt: number; readonly reason: CloseReason; readonly status?: number } | null;
  /** Approximate epoch ms of the next scheduled reconnect attempt, or null. */
  readonly udtNextReconnect: number | null;
  /** True only in the state produced by the very first open transition. */
  readonly firstOpen: boolean;
}

export interface WebSocketLike {
  readyState: number;
  binaryType?: string;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: { code?: number; reason?: string; wasClean?: boolean }) => void) | null;
}

export interface ChannelSocketOptions {
  /** Transport: "auto" (WS first, Ajax fallback, default), "ws" or "ajax". */
  type?: TransportType;
  /** CSRF token, or a function re-read on every connect and send. */
  csrfToken?: string | null | (() => string | null | undefined);
  /** Client id (default: a random UUID v4). */
  clientId?: string;
  /** Extra query parameters for the WS URL and Ajax GETs. */
  params?: Record<string, string | number | boolean | Keyword | null | undefined>;
  /**
   * "json" (default; sent as `packer=json`) or a packer object, e.g. the edn packer of
   * `sente-client/edn` for Sente servers (sends no `packer` parameter).
   */
  packer?: "json" | Packer;
  /** host[:port]; default: the page's host. Required outside a browser unless `path` is a full URL. */
  host?: string;
  /** "http:" | "https:" (or "ws:" | "wss:"); default: the page's protocol. */
  protocol?: string;
  /** Idle time before a keepalive ping (checked every wsKaliveMs / 2). Default 20000. */
  wsKaliveMs?: number;
  /** How long to wait for the "pong" before reconnecting. Default 5000. */
  wsPingTimeoutMs?: number;
  /** Reconnect delay for attempt n (default fullJitterBackoff). The result is capped at backoffCapMs. */
  backoff?: (attempt: number, capMs: number) => number;
  /** Default 30000. */
  backoffCapMs?: number;
  /** Auto mode, after falling back to Ajax: try WS again this often (0 disables). Default 180000. */
  reprobeWsMs?: number;
  /** Queue send/request while the socket is briefly closed (max 100, each with its own timeout). Default false. */
  queueWhileClosed?: boolean;
  /** Ajax long-poll timeout, also the timeout of fire-and-forget Ajax POSTs. Default 60000. */
  ajaxTimeoutMs?: number;
  /** Default timeout of request() when none is given. Default 10000. */
  requestTimeoutMs?: number;
  /** Connect on creation (on the next microtask). Default true. */
  autoConnect?: boolean;
  /**
   * Extra HTTP headers (e.g. `Origin` in Node), sent on Ajax requests and on the WebSocket
   * handshake. For the handshake the constructor is called as `new WebSocket(url, [], { headers })`,
   * which Node's `ws` understands; browsers ignore it (and drop forbidden headers from fetch).
   */
  headers?: Record<string, string>;
  /** WebSocket constructor (e.g. the `ws` package in Node). Default: globalThis.WebSocket. */
  WebSocket?: new (url: string, protocols?: string[], options?: { headers?: Record<string, string> }) => WebSocketLike;
  /** fetch implementation. Default: globalThis.fetch. */
  fetch?: typeof fetch;
}

/** Error of a failed request: Sente's :chsk/closed, :chsk/timeout, :chsk/error. */
export class SenteError extends Error {
  constructor(code: "closed" | "timeout" | "error", message?: string);
  readonly code: "closed" | "timeout" | "error";
}

export type Handler<D = any> = (data: D, id: string) => void;

export class ChannelSocket {
  constructor(path?: string, opts?: ChannelSocketOptions);
  readonly clientId: string;
  readonly opts: Readonly<ChannelSocketOptions>;
  /** The current state (a new frozen object on every change). */
  readonly state: ChskState;

  /** Synthesized: [uid, null, handshakeData, firstHandshake]. */
  on(id: "chsk/handshake", fn: Handler<[any, null, any, boolean]>): () => void;
  /** Synthesized on every state change: [oldState, newState]. */
  on(id: "chsk/state", fn: Handler<[ChskState, ChskState]>): () => void;
  /** A server keepalive ping arrived (already answered). */
  on(id: "chsk/ws-ping", fn: Handler<null>): () => void;
  /** A pushed event id ("ns/name"), or "*" for every event including the synthesized ones. */
  on(id: string | Keyword, fn: Handler): () => void;
  off(id: string | Keyword, fn: Handler): void;

  /** Fire-and-forget. Returns false if it could not be sent (closed, and not queued). */
  send(id: string | Keyword, data?: Encodable): boolean;
  /** Send and wait for the reply; rejects with a SenteError ("closed" | "timeout" | "error"). */
  request<R = any>(id: string | Keyword, data?: Encodable, timeoutMs?: number): Promise<R>;

  /** Start connecting (no-op while connected or connecting). */
  connect(): void;
  /** Close (WS code 1000) and stop reconnecting; pending requests fail with "closed". */
  disconnect(): void;
  /** Close and connect again (e.g. after login/logout); optionally switch the transport type. */
  reconnect(opts?: { type?: TransportType }): void;
}

/** Create a channel socket. `path` may be a full URL ("http://host:port/chsk"). */
export function createChannelSocket(path?: string, opts?: ChannelSocketOptions): ChannelSocket;

export type RouterHandler = (data: any, id: string, chsk: ChannelSocket) => void | Promise<void>;

/**
 * Dispatch events by id; a "*" entry handles ids without their own handler.
 * Returns a function that stops the router.
 */
export function createRouter(
  chsk: ChannelSocket,
  handlers: Record<string, RouterHandler>,
  opts?: { onError?: (err: unknown, id: string, data: any) => void },
): () => void;
