// sente-client: browser/Node client for sente-rs (Sente-compatible channel sockets).
// ES module, zero runtime dependencies. Protocol: Sente >= 1.21 envelopes `[payload, cbId]`
// with the "json" packer of sente-rs (see README.md for the value mapping), or a packer object
// such as the edn packer of `./edn.js` (for Sente servers).

// ---------------------------------------------------------------------------------------------
// Values: keywords, tagged values, and the json packer mapping

/** A Clojure keyword, e.g. `kw("my-app/ping")`. Encoded as the string ":my-app/ping". */
export class Keyword {
  constructor(name) {
    this.name = String(name).replace(/^:/, "");
  }
  toString() {
    return ":" + this.name;
  }
}

/** Create a keyword (a leading colon is optional). */
export const kw = (name) => new Keyword(name);

/** A tagged value without a native JS counterpart: char, sym, bigdec, ratio, bytes, map, tag. */
export class Tagged {
  constructor(tag, value) {
    this.tag = tag;
    this.value = value;
  }
}

const isStr = (x) => typeof x == "string";
const isArr = Array.isArray;
const escKey = (k) => (k[0] == "~" ? "~" + k : k);

const toB64 = (u8) => {
  let s = "";
  for (let i = 0; i < u8.length; i++) s += String.fromCharCode(u8[i]);
  return btoa(s);
};

/** Encode a JS value into its JSON wire form (a JSON-compatible JS value). */
export function encode(x) {
  if (x == null) return null;
  const t = typeof x;
  if (t == "string") return x[0] == ":" || x[0] == "~" ? "~" + x : x;
  if (t == "number" || t == "boolean") return x;
  if (t == "bigint") return { "~#bigint": String(x) };
  if (x instanceof Keyword) return ":" + x.name;
  if (isArr(x)) return x.map(encode);
  if (x instanceof Date) return { "~#inst": x.toISOString() };
  if (x instanceof Set) return { "~#set": [...x].map(encode) };
  if (x instanceof Tagged) return { ["~#" + x.tag]: isStr(x.value) ? x.value : encode(x.value) };
  if (x instanceof ArrayBuffer) x = new Uint8Array(x);
  if (ArrayBuffer.isView(x)) return { "~#bytes": toB64(new Uint8Array(x.buffer, x.byteOffset, x.byteLength)) };
  const o = {};
  if (x instanceof Map) {
    const es = [...x];
    if (!es.every(([k]) => isStr(k) || k instanceof Keyword))
      return { "~#map": es.map(([k, v]) => [encode(k), encode(v)]) };
    for (const [k, v] of es) o[escKey(isStr(k) ? k : k.name)] = encode(v);
    return o;
  }
  if (t == "object") {
    for (const k of Object.keys(x)) if (x[k] !== undefined) o[escKey(k)] = encode(x[k]);
    return o;
  }
  throw new TypeError("sente: cannot encode " + t);
}

const TAGS = {
  set: (v) => new Set(v.map(decode)),
  inst: (v) => new Date(v),
  uuid: (v) => v,
  bigint: (v) => BigInt(v),
};

/** Decode a JSON wire value: keywords become plain strings without the colon. */
export function decode(j) {
  if (isStr(j)) return j[0] == "~" || j[0] == ":" ? j.slice(1) : j;
  if (j == null || typeof j != "object") return j;
  if (isArr(j)) return j.map(decode);
  const ks = Object.keys(j);
  if (ks.length == 1 && ks[0].startsWith("~#")) {
    const tag = ks[0].slice(2), v = j[ks[0]];
    return TAGS[tag] ? TAGS[tag](v) : new Tagged(tag, isStr(v) ? v : decode(v));
  }
  const o = {};
  for (const k of ks) o[k[0] == "~" ? k.slice(1) : k] = decode(j[k]);
  return o;
}

// An event `[kw(id), data]` (packer-neutral); the id is always a namespaced keyword.
const event = (id, data) => {
  id = kw(id); // String(keyword) is ":name"; the colon is dropped
  if (!/^[^/]+\/./.test(id.name)) throw new TypeError("sente: event id must be namespaced: " + id.name);
  return data === undefined ? [id] : [id, data];
};

/** Encode an event `[id, data]` into its json wire form. */
export const encodeEvent = (id, data) => encode(event(id, data));

// The json packer. A packer: `param` (the `packer` query parameter, none if null), `pack`
// (envelope -> text), `unpack` (text -> envelope), `kw` (the name of an unpacked keyword, else a
// falsy value), `val` (an unpacked value as the application sees it).
const JSON_PACKER = {
  param: "json",
  pack: (x) => JSON.stringify(encode(x)),
  unpack: JSON.parse,
  kw: (x) => (isStr(x) && x[0] == ":" ? x.slice(1) : 0),
  val: decode,
};

// ---------------------------------------------------------------------------------------------
// Backoff

/** Full jitter with a cap: attempt 1 -> 0 ms; attempt n -> random in [0, min(cap, 1000 * 2^n)). */
export const fullJitterBackoff = (attempt, capMs = 30000) =>
  attempt <= 1 ? 0 : Math.floor(Math.random() * Math.min(capMs, 1000 * 2 ** Math.min(attempt, 40)));

/** The default (the Rust client's `Backoff::FastFirst`): attempts 2..10 random in [0, 2 s), so a
 *  short outage is bridged fast; then full jitter from 4 s up to the cap. */
export const fastFirstBackoff = (attempt, capMs = 30000) =>
  attempt <= 10 ? (attempt <= 1 ? 0 : Math.floor(Math.random() * 2000)) : fullJitterBackoff(attempt - 9, capMs);

// ---------------------------------------------------------------------------------------------
// Channel socket

const now = () => Date.now();
const enc = (s) => encodeURIComponent(s).replace(/\*/g, "%2A");
const qs = (ps) =>
  ps
    .filter(([, v]) => v != null)
    .map(([k, v]) => enc(k) + "=" + enc(v instanceof Keyword ? v.name : v))
    .join("&");
// Client ids are unguessable: crypto.randomUUID where available (secure contexts), else a v4
// UUID from crypto.getRandomValues (plain-http pages); never Math.random.
// (In the template, 4 is the version; 8 becomes 8..b, the variant; each 0 and 1 a random digit.)
const uuid = (c = globalThis.crypto) =>
  c.randomUUID
    ? c.randomUUID()
    : ((b, i = 0) =>
        "10000000-1000-4000-8000-100000000000".replace(/[018]/g, (d) => (d ^ (b[i++] & (15 >> (d / 4)))).toString(16)))(
        c.getRandomValues(new Uint8Array(31)),
      );

/** Error for a failed request or send; `.code` is "closed" | "timeout" | "error" | "queue-full". */
export class SenteError extends Error {
  constructor(code, message) {
    super(message || "sente: " + code);
    this.name = "SenteError";
    this.code = code;
  }
}

// The server answered :chsk/error: its handler failed before replying.
const handlerFailed = () => new SenteError("error", "sente: the server's handler failed (chsk/error)");
// A request failed because its connection was lost (it may be retried, extension "idem").
const lost = (code, m) => Object.assign(new SenteError(code, m), { lost: 1 });

// Closes a socket we no longer listen to. Its error handler stays a no-op: Node's `ws` emits
// "WebSocket was closed before the connection was established" when a connecting socket is
// closed, and an EventEmitter error without a listener is an uncaught exception.
const quiet = (ws) => {
  ws.onopen = ws.onmessage = ws.onclose = null;
  ws.onerror = () => {};
  try {
    ws.close(1000, "CLOSE_NORMAL");
  } catch {}
};

// Event names: "open" is short for "chsk/open" (any name without a namespace, except "*").
const evName = (id) => ((id = kw(id).name), id == "*" || id.includes("/") ? id : "chsk/" + id);
const REJECTED_ATTEMPT = 6; // backoff attempt used after a 401/403 (slow path)
const REJECTED_MIN_MS = 5000;

export class ChannelSocket {
  constructor(path = "/chsk", opts = {}) {
    const o = (this.opts = {
      type: "auto",
      packer: "json",
      wsKaliveMs: 20000,
      wsPingTimeoutMs: 5000,
      backoffCapMs: 30000,
      reprobeWsMs: 180000,
      queueBeforeOpen: true,
      queueWhileClosed: false,
      queueMax: 100,
      ajaxTimeoutMs: 60000,
      requestTimeoutMs: 10000,
      credentials: "include",
      autoConnect: true,
      resume: true,
      large: true,
      retryRequests: false,
      ...opts,
    });
    const p = (this._p = o.packer == "json" ? JSON_PACKER : o.packer);
    if (!p?.unpack) throw Error("sente: bad packer");
    this.clientId = o.clientId || uuid();
    const loc = globalThis.location;
    let proto = o.protocol || loc?.protocol || "http:",
      host = o.host || loc?.host;
    if (/^(https?|wss?):\/\//.test(path)) {
      const u = new URL(path);
      proto = u.protocol;
      host = u.host;
      path = u.pathname;
    }
    if (!host) throw Error("sente: `host` required outside a browser");
    this._http = (/[ps]s:?$/.test(proto) ? "https://" : "http://") + host + path; // https(:) or wss(:)
    this._wsBase = "ws" + this._http.slice(4); // ws:// or wss://
    // The page's origin when the server is on another one (CORS applies), else "".
    this._xo = loc?.origin && loc.origin != "null" && new URL(this._http).origin != loc.origin ? loc.origin : "";
    this._mode = o.type;
    this._h = new Map(); // event id -> Set of handlers
    this._rq = new Map(); // event id -> server request handler (extension "req")
    this._cbs = new Map(); // ws cb id -> {ok, fail, timer}
    this._q = []; // queued sends/requests while closed
    this._held = []; // pushes behind a large event being fetched: {f} once ready (extension "large")
    this._rw = new Set(); // retried requests (extension "idem") waiting for the next open
    this._idem = false; // the open connection's server dedupes retried requests
    this._n = 0; // request ids: !<random>.<n>, unique to this client (`_rid`: drawn at the first)
    this._rd = []; // ready() waiters: [resolve, reject]
    this._stopped = false; // disconnect() called (until the next connect())
    this._attempt = 0;
    this._active = false;
    this._conn = null; // current transport connection
    this._firstHs = true;
    this._wsEverHs = false;
    this._down = false; // auto mode has downgraded to Ajax
    this._fb = false; // ... mid-session, after a WS had worked (an Ajax that fails too: WS again)
    this._state = Object.freeze({
      type: o.type,
      open: false,
      everOpened: false,
      uid: null,
      handshakeData: null,
      lastWsError: null,
      lastWsClose: null,
      lastClose: null,
      udtNextReconnect: null,
      firstOpen: false,
    });
    // Bring a pending reconnect forward when the network or the tab comes back.
    const retry = () => globalThis.document?.visibilityState != "hidden" && this.retryNow();
    globalThis.addEventListener?.("online", retry);
    globalThis.document?.addEventListener?.("visibilitychange", retry);
    if (o.autoConnect) {
      this._active = true;
      queueMicrotask(() => this._active && !this._conn && this._start());
    }
  }

  get state() {
    return this._state;
  }

  /** Subscribe to an event id (or "*" for everything); returns an unsubscribe function. */
  on(id, fn) {
    id = evName(id);
    (this._h.get(id) || this._h.set(id, new Set()).get(id)).add(fn);
    return () => this.off(id, fn);
  }

  off(id, fn) {
    this._h.get(evName(id))?.delete(fn);
  }

  /** Like `on`, for the next event only; without `fn`, a promise of its data. */
  once(id, fn) {
    if (!fn) return new Promise((ok) => this.once(id, ok));
    const off = this.on(id, (d, i) => (off(), fn(d, i)));
    return off;
  }

  /** Resolves with the state once open (at once if open); rejects with a SenteError "closed" if
   * disconnect() comes first, or "timeout" after `timeoutMs`. */
  ready(timeoutMs) {
    return new Promise((ok, fail) => {
      if (this._state.open) return ok(this._state);
      if (this._stopped) return fail(new SenteError("closed", "sente: disconnected before open"));
      let t;
      const w = [(s) => (clearTimeout(t), ok(s)), (e) => (clearTimeout(t), fail(e))];
      this._rd.push(w);
      if (timeoutMs != null)
        t = setTimeout(() => {
          this._rd = this._rd.filter((x) => x !== w);
          fail(new SenteError("timeout", this._notOpen(timeoutMs)));
        }, timeoutMs);
    });
  }

  // Derived events (open, close, reconnecting, send-failed) are not delivered to "*".
  _emit(id, data, own) {
    for (const k of own ? [id] : [id, "*"])
      for (const fn of [...(this._h.get(k) || [])]) {
        try {
          fn(data, id);
        } catch (e) {
          console.error("sente: handler error for", id, e);
        }
      }
  }

  _set(patch, reason, extra) {
    const old = this._state;
    const s = { ...old, firstOpen: false, ...patch };
    if (reason && (old.open || reason == "rejected" || extra?.message)) s.lastClose = { udt: now(), reason, ...extra };
    if (s.open && !old.open && !old.everOpened) s.everOpened = s.firstOpen = true;
    if (Object.keys(s).every((k) => k == "firstOpen" || s[k] === old[k])) return;
    this._state = Object.freeze(s);
    const opened = s.open && !old.open,
      t = s.udtNextReconnect;
    // Queued sends go out before any handler runs (a handler's own send comes after them).
    if (opened) this._flush();
    this._emit("chsk/state", [old, s]);
    if (opened) {
      for (const [ok] of this._rd.splice(0)) ok(s);
      this._emit("chsk/open", s, 1);
    }
    if (s.lastClose !== old.lastClose) {
      // Rejected (401/403): no use waiting; queued requests fail and nothing more is queued.
      if (this._rej()) this._failQueue(this._rej());
      this._emit("chsk/close", s.lastClose, 1);
    }
    if (t && t !== old.udtNextReconnect)
      this._emit("chsk/reconnecting", { udt: t, inMs: Math.max(0, t - now()), attempt: this._attempt, lastClose: s.lastClose }, 1);
  }

  _closed(reason, extra) {
    this._set({ open: false }, reason, extra);
  }

  // "not open within", with the last close's message when there is one (a refused origin).
  _notOpen(ms) {
    const m = this._state.lastClose?.message;
    return "sente: not open within " + ms + " ms" + (m ? " (" + m.replace(/^sente: /, "") + ")" : "");
  }

  // A cross-origin request got no response: the browser does not tell the page why (CORS).
  _xoMsg(what) {
    return "sente: " + what + " to " + this._http + " from " + this._xo + " got no response: the server refused this origin (no CORS headers) or is unreachable";
  }

  // A cross-origin long-poll failed: lastClose says why (once; retries do not repeat the close event).
  _xoFailed(what) {
    const message = this._xoMsg(what);
    if (this._state.open || this._state.lastClose?.message != message) this._closed("unexpected", { message });
    else this._closed("unexpected");
  }

  /** While waiting to reconnect, try now (done by itself on the browser's `online` event and
   *  when the tab becomes visible). No-op when connected, connecting or disconnected. */
  retryNow() {
    if (this._active && !this._conn) {
      clearTimeout(this._retryT);
      this._set({ udtNextReconnect: null });
      this._start();
    }
  }

  /** Start connecting (no-op while already connected or connecting). */
  connect() {
    if (this._active && this._conn) return;
    this._active = true;
    this._stopped = false;
    this._attempt = 0;
    this._down = this._fb = false;
    clearTimeout(this._retryT);
    this._set({ udtNextReconnect: null });
    this._start();
  }

  /** Close the connection and stop reconnecting. */
  disconnect() {
    this._stopped = true;
    this._stop("requested-disconnect");
    this._failQueue("sente: disconnected");
    for (const it of [...this._rw]) it.end(0, new SenteError("closed", "sente: disconnected"));
    for (const [, fail] of this._rd.splice(0)) fail(new SenteError("closed", "sente: disconnected before open"));
  }

  /** Reconnect (e.g. to pick up a new session uid after login); `opts.type` may switch transport. */
  reconnect(opts) {
    this._stop("requested-reconnect");
    if (opts?.type && opts.type != this._mode) this._set({ type: (this._mode = this.opts.type = opts.type) });
    this.connect();
  }

  _stop(reason) {
    this._active = false;
    clearTimeout(this._retryT);
    this._kill();
    this._failCbs("closed");
    this._closed(reason);
    this._set({ udtNextReconnect: null });
  }

  // Tear down the current connection (and any WS re-probe) without touching state.
  _kill() {
    const c = this._conn;
    this._conn = null;
    this._stopProbe();
    if (!c) return;
    c.dead = true;
    clearInterval(c.kalive);
    if (c.ws) quiet(c.ws);
    c.ctl?.abort();
  }

  _start() {
    if (!this._active) return;
    if (this._mode == "ajax" || (this._mode == "auto" && this._down)) this._startAjax();
    else this._startWs();
  }

  _retry(rejected) {
    if (!this._active) return;
    this._conn = null;
    const o = this.opts;
    this._attempt = rejected ? Math.max(this._attempt + 1, REJECTED_ATTEMPT) : this._attempt + 1;
    let ms = Math.min(o.backoffCapMs, (o.backoff || fastFirstBackoff)(this._attempt, o.backoffCapMs));
    if (rejected) ms = Math.max(ms, REJECTED_MIN_MS);
    clearTimeout(this._retryT);
    this._set({ udtNextReconnect: now() + ms });
    this._retryT = setTimeout(() => this._active && !this._conn && this._start(), ms);
  }

  _token() {
    const t = this.opts.csrfToken;
    const v = typeof t == "function" ? t() : t;
    return v == null || v === "" ? null : String(v);
  }

  // `ext`: `idem` (retried requests) always; `req` (server-to-client requests) with a request
  // handler; `large` (large pushes fetched by HTTP) unless `large: false`.
  _params(x) {
    x = [this._rq.size && "req", "idem", this.opts.large && "large"].filter(Boolean) + "";
    return [...Object.entries(this.opts.params || {}), ["ext", x]];
  }

  // Whether `p` is a handshake `[:chsk/handshake ...]` (packer.kw: the name of a keyword).
  _isHs(p) {
    return isArr(p) && this._p.kw(p[0]) == "chsk/handshake";
  }

  // The query string `?<ps>&packer=<param>` (no packer param when the packer has none).
  _query(ps) {
    const s = qs([...ps, ["packer", this._p.param]]);
    return s && "?" + s;
  }

  // An unpacked envelope `[payload, cb]`, or undefined for anything else.
  _unpack(text) {
    try {
      const env = this._p.unpack(text);
      if (isArr(env)) return env;
    } catch {}
  }

  // With `resume` on: `resume=` (first connection) or `resume=<epoch>:<seq>` (the position).
  _resume() {
    return ["resume", this.opts.resume ? (this._pos ? this._pos.join(":") : "") : null];
  }

  _wsUrl() {
    return this._wsBase + this._query([...this._params(), ["client-id", this.clientId], ["csrf-token", this._token()], this._resume()]);
  }

  // -------------------------------------------------------------------------------------------
  // WebSocket transport

  _openWs(onHs, onFail) {
    const WS = this.opts.WebSocket || globalThis.WebSocket;
    let ws;
    const h = this.opts.headers;
    try {
      // Custom headers need a constructor that takes options (Node's `ws`); browsers cannot.
      ws = WS && (h ? new WS(this._wsUrl(), [], { headers: h }) : new WS(this._wsUrl()));
    } catch {}
    if (!ws) return null;
    const c = { kind: "ws", ws, hs: false, dead: false, act: 0, onHs, onFail };
    try {
      ws.binaryType = "arraybuffer";
    } catch {}
    ws.onmessage = (ev) => {
      if (c.dead) return;
      c.act = now();
      const env = this._unpack(typeof ev.data == "string" ? ev.data : new TextDecoder().decode(ev.data));
      if (!env) return;
      if (!c.hs) {
        if (this._isHs(env[0])) {
          c.hs = true;
          c.onHs(c, env[0]);
        }
        return;
      }
      this._onWsMsg(c, env[0], env[1]);
    };
    ws.onerror = (ev) => {
      if (c.dead) return;
      const msg = String(ev?.error?.message || ev?.message || "error");
      const m = /Unexpected server response: (\d+)/.exec(msg);
      if (m) c.status = +m[1];
      c.onFail(c, "error", { udt: now(), message: msg });
    };
    ws.onclose = (ev) => {
      if (c.dead) return;
      c.onFail(c, "close", {
        code: ev?.code,
        reason: ev?.reason || "",
        clean: !!ev?.wasClean || ev?.code == 1000,
        udt: now(),
      });
    };
    return c;
  }

  _wsFail(c, what, info) {
    const rej = !c.hs && (c.status == 401 || c.status == 403);
    if (what == "error") {
      this._set({ lastWsError: c.status ? { ...info, status: c.status } : info });
      // Auto mode: a WS that never completed a handshake downgrades (once) to Ajax, whatever the
      // status (as Sente): a proxy may refuse upgrades with 403; a real rejection (CSRF, auth)
      // is then reported by the Ajax GET. With re-probes on, also one that fails after earlier
      // ones worked (a proxy started refusing upgrades): the probes bring it back to WS.
      if (this._mode == "auto" && !c.hs && (!this._wsEverHs || this.opts.reprobeWsMs > 0)) {
        this._kill();
        this._down = true;
        this._fb = this._wsEverHs;
        this._closed("downgrading-ws-to-ajax");
        this._startAjax();
      }
      return;
    }
    this._kill();
    this._failCbs("closed");
    this._set({ lastWsClose: info });
    const extra = rej ? { status: c.status } : { code: info.code };
    // A cross-origin WebSocket closed before its handshake: most likely the origin check.
    const m = !rej && !c.hs && this._xo && this._xoMsg("WebSocket");
    if (m && (this._state.open || this._state.lastClose?.message != m)) extra.message = m;
    this._closed(rej ? "rejected" : info.clean ? "clean" : "unexpected", extra);
    this._retry(rej);
  }

  _startWs() {
    const c = this._openWs(
      (c, p) => this._wsOpened(c, p),
      (c, what, info) => this._wsFail(c, what, info),
    );
    if (!c) {
      // No WebSocket available or the constructor threw.
      if (this._mode == "auto") {
        this._down = true;
        return this._startAjax();
      }
      this._set({ lastWsError: { udt: now(), message: "WebSocket unavailable" } });
      return this._retry();
    }
    this._conn = c;
  }

  _wsOpened(c, p) {
    this._wsEverHs = true;
    c.kalive = setInterval(() => this._kalive(c), this.opts.wsKaliveMs / 2);
    this._handshake("ws", p);
  }

  _kalive(c) {
    if (c.dead || this._conn !== c) return;
    if (now() - c.act < this.opts.wsKaliveMs / 2) return;
    this._wsRequest(c, [kw("chsk/ws-ping")], this.opts.wsPingTimeoutMs).then(
      (r) => r === "pong" || this._pingFailed(c),
      () => c.ws.readyState === 2 || this._pingFailed(c),
    );
  }

  _pingFailed(c) {
    if (c.dead || this._conn !== c) return;
    this._kill();
    this._failCbs("closed");
    this._closed("ws-ping-timeout");
    this._retry();
  }

  _onWsMsg(c, p, cb) {
    if (cb != null) {
      const r = this._cbs.get(cb);
      if (r) {
        this._cbs.delete(cb);
        clearTimeout(r.timer);
        if (this._p.kw(p) == "chsk/error") r.fail(handlerFailed());
        else r.ok(this._p.val(p));
      }
      return;
    }
    if (this._p.kw(p) == "chsk/ws-ping") {
      this._wsSend(c, [kw("chsk/ws-pong")], null);
      this._emit("chsk/ws-ping", null);
    } else if (this._isHs(p)) this._handshake("ws", p);
    else if (this._p.kw(p?.[0]) == "chsk/seq") this._seq = p[1];
    else this._deliver(p);
  }

  // A value the packer cannot encode throws to the caller; a failed send closes the connection.
  _wsSend(c, payload, cb) {
    const s = this._p.pack([payload, cb]);
    // CLOSING: the server's close frame (Sente's [:chsk/close]) came in; `onclose` follows (a
    // browser waits up to ~2 s for the server to close TCP) and records the clean close. Fail
    // this send as "closed" rather than tearing the connection down as a "ws-error".
    if (c.ws.readyState === 2) return false;
    try {
      if (c.ws.readyState !== 1) throw 0;
      c.ws.send(s);
      c.act = now();
      return true;
    } catch {
      if (this._conn === c) {
        this._kill();
        this._failCbs("error");
        this._closed("ws-error");
        this._retry();
      }
      return false;
    }
  }

  // `rid`: a retried request's id (extension "idem"), else a fresh Sente cb id.
  _wsRequest(c, payload, timeoutMs, rid) {
    return new Promise((ok, fail) => {
      let id = rid;
      while (id == null || (id !== rid && this._cbs.has(id))) id = uuid().slice(0, 6);
      // Registered once sent (a reply cannot arrive before): a packing error or a failed send
      // leaves nothing behind.
      if (!this._wsSend(c, payload, id)) return fail(lost(c.ws.readyState === 2 ? "closed" : "error"));
      const timer = setTimeout(() => {
        this._cbs.delete(id);
        fail(new SenteError("timeout"));
      }, timeoutMs);
      this._cbs.set(id, { ok, fail, timer });
    });
  }

  _failCbs(code) {
    const cbs = [...this._cbs.values()];
    this._cbs.clear();
    for (const r of cbs) clearTimeout(r.timer), r.fail(lost(code));
  }

  // -------------------------------------------------------------------------------------------
  // Ajax transport

  _fetch(url, init, timeoutMs, ctl = new AbortController()) {
    const t = setTimeout(() => ctl.abort(new SenteError("timeout")), timeoutMs);
    const f = this.opts.fetch || globalThis.fetch;
    const tok = this._token();
    init.signal = ctl.signal;
    init.credentials = this.opts.credentials;
    init.headers = { ...this.opts.headers, "X-Requested-With": "XMLHTTPRequest", ...init.headers };
    if (tok) init.headers["X-CSRF-Token"] = tok;
    return f(url, init)
      .then(async (res) => ({ status: res.status, ok: res.ok, text: await res.text() }))
      .finally(() => clearTimeout(t));
  }

  _startAjax() {
    const c = (this._conn = { kind: "ajax", dead: false });
    this._poll(c);
    if (this._mode == "auto" && this.opts.reprobeWsMs > 0) this._scheduleProbe();
  }

  _poll(c) {
    if (c.dead) return;
    c.ctl = new AbortController();
    const url =
      this._http +
      this._query([
        ...this._params(),
        ["udt", now()],
        ["client-id", this.clientId],
        ["handshake?", this._state.open ? null : 1],
        // On every GET: a poll the server takes for a handshake (it forgot us) resumes too.
        this._resume(),
      ]);
    this._fetch(url, { method: "GET" }, this.opts.ajaxTimeoutMs, c.ctl).then(
      (r) => {
        if (c.dead) return;
        const env = r.ok && this._unpack(r.text);
        if (!env) {
          const rej = r.status == 401 || r.status == 403;
          this._closed(rej ? "rejected" : "unexpected", rej ? { status: r.status } : undefined);
          this._ajaxDown(c);
          return this._retry(rej);
        }
        this._attempt = 0;
        const p = env[0];
        if (this._isHs(p)) (c.hs = true), this._handshake("ajax", p);
        else {
          this._set({ open: true });
          if (this._p.kw(p) != "chsk/timeout") this._deliver(p);
        }
        this._poll(c);
      },
      (e) => {
        if (c.dead) return;
        const t = e instanceof SenteError || e?.name == "AbortError" || c.ctl.signal.aborted;
        if (!t && this._xo) this._xoFailed("long-poll");
        else this._closed("unexpected");
        // Our own XHR-style timeout: re-poll at once; a network error: back off.
        if (t) this._poll(c);
        else this._ajaxDown(c), this._retry();
      },
    );
  }

  // After a mid-session fallback, an Ajax that fails before its handshake too: the server is
  // most likely down (not a proxy refusing upgrades), so the next attempt is a WS again.
  _ajaxDown(c) {
    if (this._fb && !c.hs) this._down = this._fb = false;
  }

  // As Sente: the form `udt`, `client-id`, `ppstr` (the packed `[payload, :ajax or nil]`, or
  // `[payload, rid]` for a retried request, which adds `ext`).
  _post(payload, wantReply, timeoutMs, rid) {
    const body = qs([
      ["udt", now()],
      ["client-id", this.clientId],
      ["ext", rid && this._params().at(-1)[1]],
      ["ppstr", this._p.pack([payload, rid ?? (wantReply ? kw("ajax") : null)])],
    ]);
    return this._fetch(
      this._http + this._query([]),
      {
        method: "POST",
        body,
        headers: { "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8" },
      },
      timeoutMs,
    ).then(
      (r) => {
        const env = r.ok && this._unpack(r.text);
        // E.g. 413 for an oversize message: only this request fails; the long-poll decides
        // whether the connection is open.
        if (!env) throw new SenteError("error", "sente: ajax POST failed (" + r.status + ")");
        if (this._conn?.kind == "ajax" && this._conn.hs) this._set({ open: true });
        const p = env[0];
        // A retried request's copy may join a run that outlasts the server's hold of a POST
        // (its long-poll timeout): asked again, the same id, until the request's own timeout.
        if (this._p.kw(p) == "chsk/timeout") throw rid ? lost("timeout") : new SenteError("timeout");
        if (this._p.kw(p) == "chsk/error") throw handlerFailed();
        return this._p.kw(p) == "chsk/dummy-cb-200" ? undefined : this._p.val(p);
      },
      (e) => {
        if (e instanceof SenteError) throw e;
        if (e?.name == "AbortError" || e?.name == "TimeoutError") throw new SenteError("timeout");
        // Only this request fails; a dead server also fails the long-poll, which closes.
        throw lost("error", this._xo ? this._xoMsg("Ajax POST") : "sente: " + (e?.message || e));
      },
    );
  }

  // -------------------------------------------------------------------------------------------
  // Auto mode: periodically re-probe WebSocket after a downgrade to Ajax

  _scheduleProbe() {
    this._stopProbe();
    this._probeT = setTimeout(() => {
      if (!this._active || this._conn?.kind != "ajax" || this._mode != "auto") return;
      const p = (this._probe = this._openWs(
        (wc, hs) => {
          // Switch over: drop the Ajax poll, adopt the socket. Queued requests survive.
          this._probe = null;
          const a = this._conn;
          if (a) (a.dead = true), a.ctl?.abort();
          this._conn = wc;
          this._down = this._fb = false;
          wc.onFail = (c, what, info) => this._wsFail(c, what, info);
          this._wsOpened(wc, hs);
        },
        (wc, what) => {
          if (this._probe !== wc) return;
          this._stopProbe();
          this._scheduleProbe();
        },
      ));
      if (!p) this._scheduleProbe();
    }, this.opts.reprobeWsMs);
  }

  _stopProbe() {
    clearTimeout(this._probeT);
    const p = this._probe;
    this._probe = null;
    if (p) {
      p.dead = true;
      quiet(p.ws);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Shared: handshake, push delivery, send/request, queue

  // Resume: `_pos` is [epoch, seq] of the last push received, when every one was numbered. The
  // handshake's 4th element `{epoch, seq, recovered}` says where the client now stands;
  // `recovered` is news only to a client that had a position. Without it (Ajax), no position.
  // `idem: true` there: the server dedupes retried requests.
  _handshake(type, p) {
    const [uid = null, , hd = null, r] = this._p.val(p[1]) || [];
    this._idem = r?.idem;
    const recovered = r && this._pos ? r.recovered : undefined;
    // Recovered in the same epoch: the client may stand further already (a WS probe opened at
    // its position while Ajax polls went on delivering); the replay's overlap is then skipped.
    const ahead = recovered && this._pos[0] == r.epoch ? this._pos[1] : 0;
    this._pos = r?.epoch && [r.epoch, Math.max(r.seq, ahead)];
    this._seq = null;
    this._attempt = 0;
    const first = this._firstHs;
    this._firstHs = false;
    this._set({ type, open: true, uid, handshakeData: hd, udtNextReconnect: null, recovered });
    this._emit("chsk/handshake", [uid, null, hd, first]);
  }

  // Resume: after `[:chsk/seq n]` (n numbers the batch's last event; a frame of its own on WS,
  // the batch's first element in an Ajax answer) the events at or before the position were
  // received already (a replay overlapping a live batch); no number (a push to this client
  // alone, or one the server could not number): the position is lost.
  _deliver(batch) {
    if (!isArr(batch)) return;
    if (isArr(batch[0]) && this._p.kw(batch[0][0]) == "chsk/seq") (this._seq = batch[0][1]), (batch = batch.slice(1));
    const r = this._pos,
      n = this._seq;
    let i = (this._seq = null);
    if (r && n != null) (i = r[1] + batch.length - n), (r[1] = Math.max(r[1], n));
    else this._pos = null;
    for (const e of batch.slice(Math.max(0, i))) {
      const h = this._held;
      if (this.opts.large && isArr(e) && this._p.kw(e[0]) == "chsk/large") this._large(this._p.val(e[1]) || {});
      else h.length ? h.push({ f: () => this._ev(e) }) : this._ev(e);
    }
  }

  _ev(e) {
    const id = isArr(e) && this._p.kw(e[0]);
    if (id == "chsk/req") this._serve(e[1]);
    else if (/^(?!chsk\/)[^/]+\/./.test(id)) this._emit(id, this._p.val(e[1] ?? null));
  }

  // `[:chsk/large {:id :size}]`: GET the event (as a one-event batch) in its place; the pushes
  // after it wait. A failure is `chsk/large-failed` {id, size, reason}.
  _large({ id, size }, s = {}) {
    this._held.push(s);
    const url = this._http + this._query([...this._params(), ["udt", now()], ["client-id", this.clientId], ["large", id]]);
    this._fetch(url, { method: "GET" }, this.opts.ajaxTimeoutMs)
      .then((r) => {
        const e = r.ok && this._unpack(r.text)?.[0]?.[0];
        if (!isArr(e)) throw "HTTP " + r.status + ": " + r.text.slice(0, 256);
        s.f = () => this._ev(e);
      })
      .catch((x) => (s.f = () => this._emit("chsk/large-failed", { id, size, reason: String(x?.message ?? x) })))
      .then(() => {
        while (this._held[0]?.f) this._held.shift().f();
      });
  }

  // A server request `[id [ev-id data]]`: the handler's value (or promise) goes back as
  // `[:chsk/rep [id value]]`, a failure or a missing handler as `[:chsk/rep [id nil reason]]`.
  _serve(q) {
    const rid = isArr(q) && q[0], ev = isArr(q) && q[1];
    if (!Number.isInteger(rid) || !isArr(ev)) return;
    const id = this._p.kw(ev[0]), fn = this._rq.get(id);
    const rep = (v) => this._sendEv(event("chsk/rep", v));
    if (!fn) return rep([rid, null, "no-handler"]);
    Promise.resolve()
      .then(() => fn(this._p.val(ev[1] ?? null), id))
      .then((v) => rep([rid, v ?? null]), (e) => rep([rid, null, String(e?.message ?? e)]));
  }

  /** Answer the server's requests for `id` (sente-rs `server.request`) with `fn`'s value (or
   * promise); registering one announces the extension on the next connection. Returns an
   * unregister function. */
  onRequest(id, fn) {
    id = evName(id);
    this._rq.set(id, fn);
    return () => this._rq.delete(id);
  }

  /** Fire-and-forget send. Returns false when the event could not be sent (chsk closed). */
  send(id, data) {
    return this._sendEv(event(id, data));
  }

  // Reports a send that failed after send() returned true (or overflowed the queue).
  _sendFailed(ev, e) {
    this._emit("chsk/send-failed", { id: ev[0].name, error: e }, 1);
  }

  _sendEv(ev, queued) {
    if (!this._state.open) {
      const e = this._enqueue(ev, null, this.opts.requestTimeoutMs);
      if (e?.code == "queue-full") this._sendFailed(ev, e);
      return !e;
    }
    const c = this._conn;
    if (c?.kind == "ws") {
      const ok = this._wsSend(c, ev, null);
      if (!ok && queued) this._sendFailed(ev, new SenteError("closed"));
      return ok;
    }
    this._post(ev, false, this.opts.ajaxTimeoutMs).catch((e) => this._sendFailed(ev, e));
    return true;
  }

  /** Send an event and wait for the server's reply. Rejects with a SenteError. With
   * `opts.retry` (default: the `retryRequests` option) a request whose connection is lost
   * before the reply is re-sent with the same request id once open again, within `timeoutMs`;
   * a sente-rs server runs it once and answers with the original reply. Over Ajax, a POST the
   * server answers `:chsk/timeout` (it holds one for its long-poll timeout) is asked again the
   * same way, so a long run is waited for as over WebSocket. */
  request(id, data, timeoutMs = this.opts.requestTimeoutMs, opts = {}) {
    let ev;
    try {
      ev = event(id, data);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((ok, fail) => {
      let r = { ok, fail },
        rid;
      // A retried request: a failure of its lost connection, when the server acknowledged
      // "idem", waits in `_rw` for the next open (or, an Ajax POST lost while the long-poll is
      // up, a moment) instead; `end` settles it once.
      if (opts.retry ?? this.opts.retryRequests) {
        const it = { ev, rid: (rid = (this._rid ||= "!" + uuid().slice(0, 6)) + "." + ++this._n), until: now() + timeoutMs };
        const t = setTimeout(() => it.end(0, new SenteError("timeout")), timeoutMs);
        it.end = (y, v) => it.r && (this._rw.delete(it), clearTimeout(t), (it.r = null), y ? ok(v) : fail(v));
        r = it.r = {
          ok: (v) => it.end(1, v),
          fail: (e) =>
            e?.lost && this._idem ? it.r && (this._rw.add(it), this._state.open && setTimeout(() => this._resend(it), Math.random() * 500)) : it.end(0, e),
        };
        it.x = r;
      }
      const e = !this._state.open && this._enqueue(ev, r, timeoutMs, rid);
      if (e) r.ok == ok ? fail(e) : r.fail(e);
      else if (this._state.open) this._dispatch(ev, r, timeoutMs, rid);
    });
  }

  // Re-sends the retried requests waiting for an open connection (or `only` that one) when its
  // server dedupes them; fails them otherwise.
  _resend(only) {
    for (const it of only ? [only] : [...this._rw]) {
      if (!this._state.open || !this._rw.has(it)) return;
      this._rw.delete(it);
      if (this._idem) this._dispatch(it.ev, it.x, Math.max(1, it.until - now()), it.rid);
      else it.end(0, lost("error"));
    }
  }

  _dispatch(ev, r, timeoutMs, rid) {
    const c = this._conn;
    const p = c?.kind == "ws" ? this._wsRequest(c, ev, timeoutMs, rid) : this._post(ev, true, timeoutMs, rid);
    p.then(r.ok, r.fail);
  }

  // The message of a rejected handshake (the last close), else false.
  _rej() {
    const c = this._state.lastClose;
    return c?.reason == "rejected" && "sente: handshake rejected (HTTP " + c.status + ")";
  }

  // Queues while closed: before the first open (queueBeforeOpen, unless disconnect() was called),
  // or whenever connecting (queueWhileClosed); never after a rejection. Returns a SenteError
  // when not queued.
  _enqueue(ev, r, timeoutMs, rid) {
    const o = this.opts,
      rej = this._rej();
    if (rej || !((o.queueWhileClosed && this._active) || (o.queueBeforeOpen && !this._state.everOpened && !this._stopped)))
      return new SenteError("closed", rej);
    if (this._q.length >= o.queueMax)
      return new SenteError("queue-full", "sente: send queue full (" + o.queueMax + " waiting for the connection)");
    this._p.pack([ev, null]); // an unpackable value throws now, not when the queue is flushed
    const item = { ev, r, rid, until: now() + timeoutMs };
    item.timer = setTimeout(() => {
      this._q = this._q.filter((x) => x !== item);
      this._fail(item, new SenteError("timeout", this._notOpen(timeoutMs)));
    }, timeoutMs);
    this._q.push(item);
  }

  _fail(it, e) {
    it.r ? it.r.fail(e) : this._sendFailed(it.ev, e);
  }

  _flush() {
    this._resend();
    const q = this._q;
    this._q = [];
    for (const it of q) {
      clearTimeout(it.timer);
      if (it.r) this._dispatch(it.ev, it.r, Math.max(1, it.until - now()), it.rid);
      else this._sendEv(it.ev, 1);
    }
  }

  // Fails everything queued with "closed".
  _failQueue(msg) {
    const q = this._q;
    this._q = [];
    for (const it of q) clearTimeout(it.timer), this._fail(it, new SenteError("closed", msg));
  }
}

/** Create a channel socket (connects on the next microtask unless `autoConnect: false`). */
export const createChannelSocket = (path, opts) => new ChannelSocket(path, opts);

/**
 * Route pushed events to handlers by id: `createRouter(chsk, { "chat/msg": (data, id) => ... })`.
 * A "*" entry handles ids without a handler; `onError(err, id, data)` catches handler errors.
 * Returns a function that stops the router.
 */
export function createRouter(chsk, handlers, { onError } = {}) {
  return chsk.on("*", (data, id) => {
    const h = handlers[id] || handlers["*"];
    if (!h) return;
    try {
      const r = h(data, id, chsk);
      if (r && typeof r.catch == "function") r.catch((e) => (onError ? onError(e, id, data) : console.error(e)));
    } catch (e) {
      if (onError) onError(e, id, data);
      else throw e;
    }
  });
}
