// Idempotent requests (the sente-rs extension "idem", opt-in with `retryRequests` or per request
// `{ retry: true }`): against the test kit's `sente-test-server` "unit" server (SENTE_UNIT_URL)
// behind its proxy, driven through the control endpoint (SENTE_CONTROL_URL: `/unit/drop` cuts
// every connection). The server's `demo/once` handler, data `[key, ms]`, waits ms and replies
// `{ran: n}` (how often `key` ran). The connection is cut after the request reached the server
// and before the reply reached the client: the client re-sends it with the same request id once
// open again, the handler runs once and the promise resolves once, with the original reply.
// Same scenarios as crates/sente-test-kit/tests/idem_rust.rs.
import { test as nodeTest, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { createChannelSocket } from "../src/sente.js";

const env = process.env;
const UNIT = env.SENTE_UNIT_URL;
const CONTROL = env.SENTE_CONTROL_URL;
const TOKEN = env.SENTE_CSRF_TOKEN;
const skip = UNIT && CONTROL && TOKEN ? false : "SENTE_UNIT_URL, SENTE_CONTROL_URL, SENTE_CSRF_TOKEN not set";
const test = (name, fn) => nodeTest(name, { timeout: 30000, skip }, fn);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const drop = async () => {
  const r = await fetch(CONTROL + "/unit/drop", { method: "POST" });
  assert.equal(r.status, 200);
};

let n = 0;
const uid = (name) => `js-idem-${name}-${process.pid}-${++n}`;
const live = [];
after(() => live.forEach((c) => c.disconnect()));

function make(type, u, opts = {}) {
  const urls = [];
  const posts = [];
  class WS extends WebSocket {
    constructor(url, ...rest) {
      urls.push(url);
      super(url, ...rest);
    }
  }
  const chsk = createChannelSocket(UNIT, {
    type,
    csrfToken: TOKEN,
    WebSocket: WS,
    fetch: (url, init) => (init.method == "POST" && posts.push(String(init.body)), fetch(url, init)),
    params: { uid: u },
    backoff: (k) => (k <= 1 ? 0 : 20),
    ...opts,
  });
  live.push(chsk);
  return Object.assign(chsk, { urls, posts });
}

for (const type of ["ws", "ajax"]) {
  test(`${type}: a request cut before its reply runs once and resolves once with the original reply`, async () => {
    const key = uid(type);
    const chsk = make(type, key, { retryRequests: true });
    await chsk.ready(5000);
    let settled = 0;
    const reply = chsk.request("demo/once", [key, 1200], 15000).finally(() => settled++);
    await sleep(400); // the request reached the server, whose handler now waits
    const reopened = new Promise((ok) => chsk.once("chsk/handshake", ok));
    await drop();
    await reopened;
    assert.deepEqual(await reply, { ran: 1 }, "the original reply");
    assert.equal(chsk.state.lastClose?.reason, "unexpected", "the connection was cut");
    // The next run of the same key is the second: the retry did not run it again.
    assert.deepEqual(await chsk.request("demo/once", [key, 0], 5000), { ran: 2 });
    await sleep(200);
    assert.equal(settled, 1);
    if (type == "ajax") {
      const ids = chsk.posts.map((b) => new URLSearchParams(b).get("ppstr")).filter((p) => p.includes(key));
      assert.ok(ids.length >= 3, "sent, re-sent, then the second request: " + ids);
      assert.equal(ids[0], ids[1], "re-sent with the same request id");
    }
    chsk.disconnect();
  });
}

test("ajax: a retried request that outlasts the server's hold of a POST is asked again until it replies", async () => {
  // The unit server holds a POST for its long-poll timeout (1 s), then answers
  // [:chsk/timeout nil]; the handler runs 2.5 s.
  const key = uid("long");
  const chsk = make("ajax", key, { retryRequests: true });
  await chsk.ready(5000);
  assert.deepEqual(await chsk.request("demo/once", [key, 2500], 15000), { ran: 1 });
  const ids = chsk.posts.map((b) => new URLSearchParams(b).get("ppstr")).filter((p) => p.includes(key));
  assert.ok(ids.length >= 2 && ids.every((p) => p == ids[0]), "asked again with the same id: " + ids);
  // Without retry, Sente's outcome: a timeout.
  const plain = chsk.request("demo/once", [key + "-plain", 2500], 15000, { retry: false });
  await assert.rejects(plain, (e) => e.code == "timeout");
  chsk.disconnect();
});

test("per request: { retry: true } without the option; a request without it fails on a cut", async () => {
  const key = uid("per-request");
  const chsk = make("ws", key);
  await chsk.ready(5000);
  assert.match(new URL(chsk.urls[0]).searchParams.get("ext"), /(^|,)idem($|,)/);
  const retried = chsk.request("demo/once", [key + "-a", 1200], 15000, { retry: true });
  const plain = chsk.request("demo/once", [key + "-b", 1200], 15000);
  // Expected before the cut: the rejection may come before drop() returns.
  const plainFails = assert.rejects(plain, (e) => e.code == "closed");
  await sleep(400);
  await drop();
  await plainFails;
  assert.deepEqual(await retried, { ran: 1 });
  chsk.disconnect();
});

test("disconnect() fails a request waiting to be re-sent", async () => {
  const key = uid("disconnect");
  const chsk = make("ws", key, { retryRequests: true, backoff: () => 60000 });
  await chsk.ready(5000);
  const r = chsk.request("demo/once", [key, 1200], 15000);
  await sleep(400);
  await drop();
  await sleep(100);
  chsk.disconnect();
  await assert.rejects(r, (e) => e.code == "closed");
});
