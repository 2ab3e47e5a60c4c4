// State-machine tests of the client against the in-process mock server (tools/mock-server.js),
// over a real WebSocket (the `ws` dev dependency) and real fetch.
import { test as nodeTest, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import net from "node:net";
import { once } from "node:events";
import { startMockServer } from "../tools/mock-server.js";
import { createChannelSocket, createRouter, kw, SenteError } from "../src/sente.js";

let srv;
const test = (name, fn) => nodeTest(name, { timeout: 10000 }, fn);
before(async () => {
  srv = await startMockServer({ lpTimeoutMs: 300 });
});
after(() => srv.close());

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(pred, ms = 3000, what = "condition") {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error("timed out waiting for " + what);
    await sleep(5);
  }
}
const next = (chsk, id, pred = () => true) =>
  new Promise((resolve) => {
    const off = chsk.on(id, (d) => pred(d) && (off(), resolve(d)));
  });

function make(opts = {}) {
  return createChannelSocket(srv.url, {
    csrfToken: "tok",
    WebSocket,
    params: { uid: "alice" },
    backoff: (n) => (n <= 1 ? 0 : 20),
    ...opts,
  });
}

for (const type of ["ws", "ajax"]) {
  test(`${type}: handshake, state and synthesized events`, async () => {
    const chsk = make({ type });
    const states = [];
    chsk.on("chsk/state", ([o, n]) => states.push([o, n]));
    const hs = await next(chsk, "chsk/handshake");
    assert.deepEqual(hs, ["alice", null, { mock: true }, true]);
    const s = chsk.state;
    assert.equal(s.type, type);
    assert.equal(s.open, true);
    assert.equal(s.everOpened, true);
    assert.equal(s.firstOpen, true);
    assert.equal(s.uid, "alice");
    assert.deepEqual(s.handshakeData, { mock: true });
    assert.equal(states.length, 1);
    assert.equal(states[0][0].open, false);
    chsk.disconnect();
    assert.equal(chsk.state.open, false);
    assert.equal(chsk.state.lastClose.reason, "requested-disconnect");
    assert.equal(chsk.state.firstOpen, false);
  });

  test(`${type}: request/reply, timeout, closed`, async () => {
    const chsk = make({ type });
    await assert.rejects(chsk.request("demo/echo", 1), (e) => e instanceof SenteError && e.code == "closed");
    assert.equal(chsk.send("demo/echo", 1), false);
    await next(chsk, "chsk/handshake");
    const v = { s: ":str", k: kw("a/b"), set: new Set([1, 2]), n: 12n, d: new Date(0), nested: [{ "~x": null }] };
    const r = await chsk.request("demo/echo", v, 2000);
    assert.deepEqual(r, { s: ":str", k: "a/b", set: new Set([1, 2]), n: 12n, d: new Date(0), nested: [{ "~x": null }] });
    assert.equal(await chsk.request("demo/echo", undefined, 2000), null);
    const t0 = Date.now();
    await assert.rejects(chsk.request("demo/no-reply", 1, 150), (e) => e.code == "timeout");
    assert.ok(Date.now() - t0 < 290, "local timeout fires before the server's");
    assert.equal(chsk.send("demo/echo", "fire-and-forget"), true);
    await until(() => srv.received.some((r) => r.ev?.[1] === "fire-and-forget"));
    chsk.disconnect();
  });

  test(`${type}: push batches are delivered event by event, in order`, async () => {
    const chsk = make({ type });
    const got = [];
    chsk.on("my-app/a", (d, id) => got.push([id, d]));
    chsk.on("my-app/b", (d, id) => got.push([id, d]));
    const all = [];
    chsk.on("*", (d, id) => id.startsWith("my-app/") && all.push(id));
    await next(chsk, "chsk/handshake");
    // An idle long-poll that timed out must be re-polled transparently (lpTimeoutMs is 300 ms).
    if (type == "ajax") await sleep(450);
    await chsk.request("demo/push", [[kw("my-app/a"), 1], [kw("chsk/handshake"), ["evil"]], [kw("my-app/b"), { x: [1, 2, 3] }], [kw("my-app/a"), 2]]);
    await until(() => got.length == 3, 2000, "pushes");
    assert.deepEqual(got, [["my-app/a", 1], ["my-app/b", { x: [1, 2, 3] }], ["my-app/a", 2]]);
    assert.deepEqual(all, ["my-app/a", "my-app/b", "my-app/a"]);
    assert.equal(chsk.state.uid, "alice", "a chsk/* event inside a batch is ignored");
    chsk.disconnect();
  });

  test(`${type}: reconnects after the server drops the connection`, async () => {
    const chsk = make({ type });
    await next(chsk, "chsk/handshake");
    if (type == "ajax") await until(() => srv.polls.has(chsk.clientId), 2000, "a held poll");
    const again = next(chsk, "chsk/handshake");
    srv.dropAll();
    const hs = await again;
    assert.equal(hs[3], false, "not the first handshake");
    assert.equal(chsk.state.open, true);
    assert.equal(chsk.state.lastClose.reason, "unexpected");
    if (type == "ws") assert.equal(chsk.state.lastWsClose.clean, false);
    assert.equal(await chsk.request("demo/echo", "after", 2000), "after");
    chsk.disconnect();
  });

  test(`${type}: a 403 handshake is "rejected" and retried on the slow path`, async () => {
    const chsk = make({ type, csrfToken: "wrong" });
    const st = await next(chsk, "chsk/state", ([, n]) => n.lastClose?.reason == "rejected");
    assert.equal(st[1].lastClose.status, 403);
    assert.equal(st[1].open, false);
    await until(() => chsk.state.udtNextReconnect);
    assert.ok(chsk.state.udtNextReconnect - Date.now() > 4000);
    chsk.disconnect();
    assert.equal(chsk.state.udtNextReconnect, null);
  });

  test(`${type}: csrfToken function is re-read, params and packer=json are sent`, async () => {
    let n = 0;
    const chsk = make({ type, csrfToken: () => (n++, "tok"), params: { uid: "bob", extra: "a b*" } });
    await next(chsk, "chsk/handshake");
    assert.equal(chsk.state.uid, "bob");
    const before = n;
    await chsk.request("demo/echo", 1, 2000);
    if (type == "ajax") assert.ok(n > before);
    if (type == "ws") {
      const c = [...srv.wsConns].find((c) => c.clientId == chsk.clientId);
      assert.equal(c.query.get("packer"), "json");
      assert.equal(c.query.get("csrf-token"), "tok");
      assert.equal(c.query.get("extra"), "a b*");
    }
    chsk.reconnect();
    await next(chsk, "chsk/handshake");
    assert.ok(n > before);
    chsk.disconnect();
  });
}

test("ws: answers server pings with a pong", async () => {
  const chsk = make({ type: "ws" });
  await next(chsk, "chsk/handshake");
  const ping = next(chsk, "chsk/ws-ping");
  const n = srv.received.filter((r) => r.pong).length;
  srv.pingAll();
  await ping;
  await until(() => srv.received.filter((r) => r.pong).length > n, 2000, "pong");
  chsk.disconnect();
});

test("ws: keepalive pings when idle; a missing pong reconnects with ws-ping-timeout", async () => {
  const chsk = make({ type: "ws", wsKaliveMs: 100, wsPingTimeoutMs: 100 });
  await next(chsk, "chsk/handshake");
  await sleep(350); // pongs arrive: still open on the same connection
  assert.equal(chsk.state.open, true);
  assert.equal(chsk.state.lastClose, null);
  srv.opts.noPong = true;
  try {
    const st = await next(chsk, "chsk/state", ([, n]) => n.lastClose?.reason == "ws-ping-timeout");
    assert.equal(st[1].open, false);
  } finally {
    srv.opts.noPong = false;
  }
  await next(chsk, "chsk/handshake");
  chsk.disconnect();
});

test("ws: pending requests fail with 'closed' on disconnect", async () => {
  const chsk = make({ type: "ws" });
  await next(chsk, "chsk/handshake");
  const p = chsk.request("demo/no-reply", 1, 5000);
  chsk.disconnect();
  await assert.rejects(p, (e) => e.code == "closed");
});

test("auto: downgrades to Ajax when WS fails before any handshake, then re-probes WS", async () => {
  srv.opts.ws = false;
  const chsk = make({ type: "auto", reprobeWsMs: 200 });
  try {
    await next(chsk, "chsk/handshake");
    assert.equal(chsk.state.type, "ajax");
    assert.ok(chsk.state.lastWsError);
    assert.equal(await chsk.request("demo/echo", "via-ajax", 2000), "via-ajax");
    await sleep(300); // a probe fails while WS is still refused: stay on Ajax
    assert.equal(chsk.state.type, "ajax");
    assert.equal(chsk.state.open, true);
  } finally {
    srv.opts.ws = true;
  }
  const inflight = chsk.request("demo/echo", "in-flight", 3000);
  const st = await next(chsk, "chsk/state", ([, n]) => n.type == "ws");
  assert.equal(st[1].open, true);
  assert.equal(st[0].open, true, "switch-over without closing");
  assert.equal(await inflight, "in-flight");
  assert.equal(await chsk.request("demo/echo", "via-ws", 2000), "via-ws");
  assert.ok([...srv.wsConns].some((c) => c.clientId == chsk.clientId));
  chsk.disconnect();
});

// A proxy that refuses WebSocket upgrades with 403, as Node's `ws` reports it: error, then close.
class Refused403 {
  constructor() {
    this.readyState = 0;
    setTimeout(() => {
      this.readyState = 3;
      this.onerror?.({ message: "Unexpected server response: 403" });
      this.onclose?.({ code: 1006, reason: "", wasClean: false });
    }, 1);
  }
  send() {
    throw new Error("not open");
  }
  close() {}
}

test("auto: a WS upgrade refused with 403 still downgrades to Ajax (and records the status)", async () => {
  const chsk = make({ type: "auto", WebSocket: Refused403 });
  try {
    await Promise.race([next(chsk, "chsk/handshake"), sleep(5000).then(() => assert.fail("no handshake"))]);
    assert.equal(chsk.state.type, "ajax");
    assert.equal(chsk.state.open, true);
    assert.equal(chsk.state.lastWsError.status, 403);
    assert.equal(await chsk.request("demo/echo", "via-ajax", 2000), "via-ajax");
  } finally {
    chsk.disconnect();
  }
});

test("ws: a WS upgrade refused with 403 is rejected (no fallback outside auto mode)", async () => {
  const chsk = make({ type: "ws", WebSocket: Refused403 });
  const st = await next(chsk, "chsk/state", ([, n]) => n.lastClose?.reason == "rejected");
  assert.equal(st[1].lastClose.status, 403);
  assert.equal(chsk.state.type, "ws");
  chsk.disconnect();
});

test("headers option: sent on Ajax requests and on the WS handshake", async () => {
  const seen = [];
  const fetchSpy = (url, init) => (seen.push(["fetch", init.headers]), fetch(url, init));
  class WsSpy extends WebSocket {
    constructor(url, protocols, options) {
      seen.push(["ws", options?.headers]);
      super(url, protocols, options);
    }
  }
  for (const type of ["ws", "ajax"]) {
    const chsk = make({ type, fetch: fetchSpy, WebSocket: WsSpy, headers: { "X-Extra": "1", Origin: "http://a.example" } });
    await next(chsk, "chsk/handshake");
    assert.equal(await chsk.request("demo/echo", type, 2000), type);
    chsk.disconnect();
  }
  assert.deepEqual(seen.find(([k]) => k == "ws")[1], { "X-Extra": "1", Origin: "http://a.example" });
  const posts = seen.filter(([k, h]) => k == "fetch" && h["Content-Type"]);
  assert.ok(posts.length > 0);
  for (const [, h] of seen.filter(([k]) => k == "fetch")) {
    assert.equal(h["X-Extra"], "1");
    assert.equal(h.Origin, "http://a.example");
    assert.equal(h["X-CSRF-Token"], "tok");
  }
});

test("disconnect/reconnect while the WebSocket is still connecting raise no uncaught error (Node's ws)", async () => {
  // A server that accepts connections and never answers the upgrade: the socket stays CONNECTING.
  const socks = new Set();
  const hang = net.createServer((sock) => socks.add(sock));
  hang.listen(0, "127.0.0.1");
  await once(hang, "listening");
  const uncaught = [];
  const onUncaught = (e) => uncaught.push(e);
  process.on("uncaughtException", onUncaught);
  try {
    const stuck = createChannelSocket(`http://127.0.0.1:${hang.address().port}/chsk`, { type: "ws", WebSocket });
    await until(() => socks.size == 1, 3000, "a connecting socket");
    stuck.reconnect();
    await until(() => socks.size == 2, 3000, "a second connecting socket");
    stuck.disconnect();
    await sleep(200);
    assert.deepEqual(uncaught.map(String), []);
  } finally {
    process.off("uncaughtException", onUncaught);
    for (const sock of socks) sock.destroy();
    hang.close();
  }
});

test("ajax: a failed POST fails only that request; the connection stays open", async () => {
  let failPosts = true;
  const flaky = (url, init) =>
    failPosts && init.method == "POST"
      ? Promise.reject(new TypeError("fetch failed"))
      : init.method == "POST" && /demo%2Fbig/.test(init.body)
        ? Promise.resolve(new Response("Payload Too Large", { status: 413 }))
        : fetch(url, init);
  const chsk = make({ type: "ajax", fetch: flaky });
  try {
    await next(chsk, "chsk/handshake");
    await assert.rejects(chsk.request("demo/echo", 1, 2000), (e) => e.code == "error");
    assert.equal(chsk.state.open, true, "a network error on a POST does not close");
    failPosts = false;
    await assert.rejects(chsk.request("demo/big", 1, 2000), (e) => e.code == "error" && /413/.test(e.message));
    assert.equal(chsk.state.open, true, "an HTTP error on a POST does not close");
    assert.equal(await chsk.request("demo/echo", "next", 2000), "next");
  } finally {
    chsk.disconnect();
  }
});

test("auto: uses WS when it works", async () => {
  const chsk = make({ type: "auto" });
  await next(chsk, "chsk/handshake");
  assert.equal(chsk.state.type, "ws");
  chsk.reconnect({ type: "ajax" });
  await next(chsk, "chsk/handshake");
  assert.equal(chsk.state.type, "ajax");
  assert.equal(chsk.state.lastClose.reason, "requested-reconnect");
  chsk.disconnect();
});

test("queueWhileClosed: requests wait for the connection, each with its own timeout", async () => {
  const chsk = make({ type: "ws", queueWhileClosed: true, autoConnect: false });
  await assert.rejects(chsk.request("demo/echo", 1, 100), (e) => e.code == "closed", "not active: no queueing");
  chsk.connect();
  const p = chsk.request("demo/echo", "queued", 2000);
  assert.equal(chsk.send("demo/echo", "queued-send"), true);
  assert.equal(await p, "queued");
  await until(() => srv.received.some((r) => r.ev?.[1] === "queued-send"));
  srv.opts.ws = false;
  try {
    srv.dropAll();
    await until(() => !chsk.state.open);
    const t = chsk.request("demo/echo", "late", 50);
    await assert.rejects(t, (e) => e.code == "timeout");
    const q = chsk.request("demo/echo", "later", 5000);
    chsk.disconnect();
    await assert.rejects(q, (e) => e.code == "closed");
  } finally {
    srv.opts.ws = true;
  }
});

test("createRouter dispatches by id with a fallback", async () => {
  const chsk = make({ type: "ws" });
  const seen = [];
  const stop = createRouter(chsk, {
    "my-app/a": (d) => seen.push(["a", d]),
    "*": (d, id) => id.startsWith("my-app/") && seen.push(["other", id]),
  });
  await next(chsk, "chsk/handshake");
  await chsk.request("demo/push", [[kw("my-app/a"), 1], [kw("my-app/z"), 2]]);
  await until(() => seen.length == 2);
  assert.deepEqual(seen, [["a", 1], ["other", "my-app/z"]]);
  stop();
  chsk.disconnect();
});

test("construction checks", () => {
  assert.throws(() => createChannelSocket("/chsk", { autoConnect: false }), /host/);
  assert.throws(() => createChannelSocket(srv.url, { packer: "edn", autoConnect: false }), /bad packer/);
  const c = createChannelSocket("/x", { host: "h:1", protocol: "https", autoConnect: false });
  assert.equal(c._wsBase, "wss://h:1/x");
  assert.match(c.clientId, /^[0-9a-f-]{36}$/);
});

test("client ids come from crypto.getRandomValues where crypto.randomUUID is missing", () => {
  // Plain-http pages (not a secure context) have no crypto.randomUUID; Math.random must not be
  // the fallback (guessable ids).
  const desc = Object.getOwnPropertyDescriptor(globalThis, "crypto");
  const real = globalThis.crypto;
  const random = Math.random;
  let draws = 0;
  Object.defineProperty(globalThis, "crypto", {
    configurable: true,
    value: { getRandomValues: (a) => (draws++, real.getRandomValues(a)) },
  });
  Math.random = () => {
    throw new Error("Math.random used for a client id");
  };
  try {
    const ids = new Set();
    for (let i = 0; i < 200; i++) {
      const c = createChannelSocket("/x", { host: "h:1", autoConnect: false });
      assert.match(c.clientId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      ids.add(c.clientId);
    }
    assert.equal(ids.size, 200);
    assert.equal(draws, 200);
  } finally {
    Math.random = random;
    Object.defineProperty(globalThis, "crypto", desc);
  }
});

// A server that sends a close frame 1000 and leaves TCP open (http-kit): the browser's socket is
// CLOSING until `onclose` fires about 2 s later. Every instance opens and handshakes at once.
class ClosedByServer {
  static all = [];
  constructor() {
    this.readyState = 0;
    this.sent = [];
    ClosedByServer.all.push(this);
    setTimeout(() => {
      this.readyState = 1;
      this.onopen?.({});
      this.onmessage?.({ data: JSON.stringify([[":chsk/handshake", ["u", null, null]], null]) });
    }, 1);
  }
  serverClose(ms) {
    this.readyState = 2;
    setTimeout(() => {
      this.readyState = 3;
      this.onclose?.({ code: 1000, reason: "bye", wasClean: true });
    }, ms);
  }
  send(d) {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(d);
  }
  close() {}
}

test("ws: a server close frame is a clean close; sends while CLOSING fail as closed", async () => {
  ClosedByServer.all = [];
  const chsk = make({ type: "ws", WebSocket: ClosedByServer });
  await next(chsk, "chsk/handshake");
  ClosedByServer.all[0].serverClose(200);
  const p = chsk.request("demo/echo", 1, 5000);
  await assert.rejects(p, (e) => e.code == "closed");
  assert.equal(chsk.send("demo/x", 1), false);
  assert.equal(chsk.state.open, true, "still open until onclose");
  const st = await next(chsk, "chsk/state", ([, n]) => !n.open);
  assert.equal(st[1].lastClose.reason, "clean");
  assert.deepEqual([st[1].lastWsClose.code, st[1].lastWsClose.reason], [1000, "bye"]);
  await next(chsk, "chsk/handshake");
  assert.equal(ClosedByServer.all.length, 2);
  chsk.disconnect();
});
