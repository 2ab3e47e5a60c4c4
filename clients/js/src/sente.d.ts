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
/** The default backoff: attempts 2..10 random in [0, 2 s); then full jitter from 4 s up to capMs. */
export function fastFirstBackoff(attempt: number, capMs?: number): number;

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

/**
 * Why the connection last closed (or was refused): `state.lastClose`, and the data of the
 * `close` event. `code` is the WebSocket close code (a WS close that was not a rejection);
 * `status` the HTTP status of a rejected handshake (401/403).
 */
export interface LastClose {
  readonly reason: CloseReason;
  /** Epoch ms. */
  readonly udt: number;
  readonly code?: number;
  readonly status?: number;
  /**
   * Why, in words, when the page could not learn it otherwise: a cross-origin request that
   * failed with no response (the server refused the page's origin, so no CORS headers, or is
   * unreachable: the browser hides which).
   */
  readonly message?: string;
}

/** Data of the `reconnecting` event: a reconnect attempt is scheduled. */
export interface Reconnecting {
  /** Epoch ms of the attempt (= state.udtNextReconnect). */
  readonly udt: number;
  /** Milliseconds until the attempt. */
  readonly inMs: number;
  /** The backoff attempt number (1 is immediate). */
  readonly attempt: number;
  readonly lastClose: LastClose | null;
}

/** Data of the `send-failed` event: a `send` that returned true (queued, or an Ajax POST) failed later, or overflowed the queue. */
export interface SendFailed {
  /** The event id, e.g. "chat/say". */
  readonly id: string;
  readonly error: SenteError;
}

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
  readonly lastClose: LastClose | null;
  /** Approximate epoch ms of the next scheduled reconnect attempt, or null. */
  readonly udtNextReconnect: number | null;
  /** True only in the state produced by the very first open transition. */
  readonly firstOpen: boolean;
  /**
   * Resume (sente-rs extension, option `resume`): after a reconnect from a known position
   * (WebSocket or Ajax, also across a switch between them), `true` when every push missed while
   * disconnected was delivered (in order, once), `false` when some may be lost (refetch what
   * matters). Undefined on the first connection, with `resume: false`, or with a server that
   * does not resume (Sente).
   */
  readonly recovered?: boolean;
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
  /** Reconnect delay for attempt n (default fastFirstBackoff). The result is capped at backoffCapMs. */
  backoff?: (attempt: number, capMs: number) => number;
  /** Default 30000. */
  backoffCapMs?: number;
  /**
   * Auto mode, after falling back to Ajax: try WS again this often (0 disables). While on, a WS
   * refused mid-session (after earlier ones worked) falls back to Ajax too. Default 180000.
   */
  reprobeWsMs?: number;
  /**
   * Queue send/request made before the first open (until then, or until disconnect()); flushed in
   * order on open, each request's timeout running while it waits. Default true.
   */
  queueBeforeOpen?: boolean;
  /** Also queue while reconnecting after an open (while the socket is connecting). Default false. */
  queueWhileClosed?: boolean;
  /** The most sends/requests queued at once; more fail with "queue-full". Default 100. */
  queueMax?: number;
  /** Ajax long-poll timeout, also the timeout of fire-and-forget Ajax POSTs. Default 60000. */
  ajaxTimeoutMs?: number;
  /** Default timeout of request() when none is given. Default 10000. */
  requestTimeoutMs?: number;
  /** Connect on creation (on the next microtask). Default true. */
  autoConnect?: boolean;
  /**
   * Resume after a reconnect, WebSocket or Ajax (sente-rs extension; a Sente server ignores it): the
   * client numbers the pushes it received and asks the server for the ones it missed, which
   * arrive before anything newer, each once; `state.recovered` tells whether that worked.
   * Default true.
   */
  resume?: boolean;
  /**
   * Fetch large pushes by HTTP (sente-rs extension `large`; a Sente server ignores it): a push
   * the server offloads (over its threshold, 64 KiB by default) comes as a small reference and
   * is fetched with one GET (same credentials, CSRF token and params as the long-poll), so the
   * socket stays free for small events. Handlers still see one event, in order: the pushes
   * after it wait until it is fetched; a failed fetch is the event `chsk/large-failed`.
   * Default true.
   */
  large?: boolean;
  /**
   * Retry requests across reconnects (sente-rs extension "idem"; per request: `{ retry }` of
   * request()): a request whose connection is lost before its reply is re-sent with the same
   * request id once open again, within its timeout; the server runs it once and answers with the
   * original reply, so the promise settles once. Only with a server that acknowledged the
   * extension in its handshake (others: it rejects as usual). Default false.
   */
  retryRequests?: boolean;
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
  /**
   * fetch's `credentials` for the Ajax requests. Default "include": cookies go along to a
   * server on another origin too (it must list the page's origin in its allowed origins,
   * which makes it answer with CORS credentials headers).
   */
  credentials?: "include" | "same-origin" | "omit";
}

/** "closed", "timeout", "error": Sente's :chsk/closed, :chsk/timeout, :chsk/error ("error" also when the server's handler failed before replying: it answered :chsk/error); "queue-full": the queue before open is full. */
export type SenteErrorCode = "closed" | "timeout" | "error" | "queue-full";

/** Error of a failed request (or send, see the `send-failed` event). */
export class SenteError extends Error {
  constructor(code: SenteErrorCode, message?: string);
  readonly code: SenteErrorCode;
}

/** Event names with typed data; "open" is short for "chsk/open" (any name without "/"). */
export interface ChskEvents {
  /** [uid, null, handshakeData, firstHandshake] */
  "chsk/handshake": [any, null, any, boolean];
  /** [oldState, newState] on every state change. */
  "chsk/state": [ChskState, ChskState];
  /** A server keepalive ping arrived (already answered). */
  "chsk/ws-ping": null;
  /** Closed -> open: the new state (`firstOpen` tells the very first). Not delivered to "*". */
  "chsk/open": ChskState;
  open: ChskState;
  /** `state.lastClose` changed: a close, or a rejected handshake. Not delivered to "*". */
  "chsk/close": LastClose;
  close: LastClose;
  /** A reconnect attempt is scheduled. Not delivered to "*". */
  "chsk/reconnecting": Reconnecting;
  reconnecting: Reconnecting;
  /** A send failed after send() returned true, or overflowed the queue. Not delivered to "*". */
  "chsk/send-failed": SendFailed;
  "send-failed": SendFailed;
  /** A push the server offloaded (option `large`) could not be fetched, in its place. */
  "chsk/large-failed": LargeFailed;
}

/** Data of `chsk/large-failed`: the server's id of the event, its announced size, and why. */
export interface LargeFailed {
  id: string;
  size: number;
  reason: string;
}

export type Handler<D = any> = (data: D, id: string) => void;

/** The data of event `K`: typed for the synthesized events, `any` for pushed ones. */
export type EventData<K extends string> = K extends keyof ChskEvents ? ChskEvents[K] : any;

export class ChannelSocket {
  constructor(path?: string, opts?: ChannelSocketOptions);
  readonly clientId: string;
  readonly opts: Readonly<ChannelSocketOptions>;
  /** The current state (a new frozen object on every change). */
  readonly state: ChskState;

  /**
   * Subscribe to an event: a pushed event id ("ns/name"), a synthesized one (see ChskEvents; data
   * typed), or "*" for pushed events, chsk/handshake, chsk/state and chsk/ws-ping (not the derived
   * open/close/reconnecting/send-failed). Returns an unsubscribe function.
   */
  on<K extends string>(id: K | Keyword, fn: Handler<EventData<K>>): () => void;
  off(id: string | Keyword, fn: Handler<any>): void;
  /** Like `on`, for the next event only; returns an unsubscribe function. */
  once<K extends string>(id: K | Keyword, fn: Handler<EventData<K>>): () => void;
  /** The data of the next such event. */
  once<K extends string>(id: K | Keyword): Promise<EventData<K>>;
  /**
   * Answers the server's requests for `id` (sente-rs `ServerHandle::request`, the `req`
   * extension) with `fn`'s value or promise; a throw or rejection answers an error. Registering
   * a handler announces the extension on the next connection (register before connecting).
   * Requests for ids without a handler are answered `"no-handler"`. Returns an unregister
   * function.
   */
  onRequest(id: string | Keyword, fn: (data: any, id: string) => Encodable | Promise<Encodable>): () => void;

  /**
   * Resolves with the state once open (at once when open). Rejects with a SenteError: "closed"
   * if disconnect() is called first (or was called), "timeout" after `timeoutMs` if given. A
   * rejected handshake does not reject it (the client keeps retrying): use `timeoutMs` or the
   * `close` event to notice.
   */
  ready(timeoutMs?: number): Promise<ChskState>;

  /**
   * Fire-and-forget. Before the first open it is queued (see queueBeforeOpen) and returns true.
   * Returns false if it could not be sent (closed and not queued, or the queue is full). A send
   * that returned true and fails later is reported by the `send-failed` event.
   */
  send(id: string | Keyword, data?: Encodable): boolean;
  /**
   * Send and wait for the reply. Before the first open it is queued (its timeout running).
   * Rejects with a SenteError ("closed" | "timeout" | "error" | "queue-full"). `opts.retry`
   * (default: the `retryRequests` option) retries it across reconnects.
   */
  request<R = any>(id: string | Keyword, data?: Encodable, timeoutMs?: number, opts?: { retry?: boolean }): Promise<R>;

  /** Start connecting (no-op while connected or connecting; while waiting to reconnect: retry now). */
  connect(): void;
  /** Close (WS code 1000) and stop reconnecting; pending and queued requests fail with "closed", as do ready() promises. */
  disconnect(): void;
  /** Close and connect again (e.g. after login/logout); optionally switch the transport type. */
  reconnect(opts?: { type?: TransportType }): void;
  /** While waiting to reconnect, try now (also done on `online` and when the tab becomes visible). */
  retryNow(): void;
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
