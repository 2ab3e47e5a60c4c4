// Resume after a reconnect (the sente-rs extension, on by default): against the test kit's
// `sente-test-server` "unit" server (SENTE_UNIT_URL) and its "window" server (SENTE_WINDOW_URL:
// a replay window of 3 pushes per uid), both behind a proxy driven through the control endpoint
// (SENTE_CONTROL_URL): `/<server>/blackhole` throws away every byte of the open connections (the
// network path died and neither end noticed: the server's pushes go nowhere), `/<server>/drop`
// cuts the connections, `/<server>/push` pushes to a uid from the server side. Same scenarios as
// crates/sente-test-kit/tests/client_native_extras.rs. `bash scripts/test-js-client.sh` sets
// everything.
import { test as nodeTest, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { createChannelSocket } from "../src/sente.js";
import { edn } from "../src/edn.js";

const env = process.env;
const UNIT = env.SENTE_UNIT_URL;
const WINDOW = env.SENTE_WINDOW_URL;
const CONTROL = env.SENTE_CONTROL_URL;
const TOKEN = env.SENTE_CSRF_TOKEN;
const skip =
  UNIT && WINDOW && CONTROL && TOKEN ? false : "SENTE_UNIT_URL, SENTE_WINDOW_URL, SENTE_CONTROL_URL, SENTE_CSRF_TOKEN not set";
const test = (name, fn) => nodeTest(name, { timeout: 30000, skip }, fn);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(pred, ms, what) {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error("timed out waiting for " + what);
    await sleep(5);
  }
}
const control = async (path, body) => {
  const r = await fetch(CONTROL + path, { method: "POST", body });
  assert.equal(r.status, 200, `control ${path}: ${await r.clone().text()}`);
};
const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
// Pushes `my-app/n` with each number of a..b to `uid`, flushed one by one, from the server side.
const push = (server, uid, a, b) => control(`/${server}/push`, JSON.stringify({ uid, id: "my-app/n", data: range(a, b) }));

let n = 0;
const uid = (name) => `js-resume-${name}-${process.pid}-${++n}`;
const live = [];
after(() => live.forEach((c) => c.disconnect()));

// A WebSocket-only client of `url` for `u`; `.urls` collects the handshake URLs, `.got` the
// numbers pushed as `my-app/n`.
function make(url, u, opts = {}) {
  const urls = [];
  class WS extends WebSocket {
    constructor(url, ...rest) {
      urls.push(url);
      super(url, ...rest);
    }
  }
  const chsk = createChannelSocket(url, {
    type: "ws",
    csrfToken: TOKEN,
    WebSocket: WS,
    params: { uid: u },
    backoff: (k) => (k <= 1 ? 0 : 20),
    ...opts,
  });
  live.push(chsk);
  const got = [];
  chsk.on("my-app/n", (d) => got.push(d));
  return Object.assign(chsk, { urls, got });
}

// The connection dies without either end noticing; `during` runs while it is dead (pushes go
// into it), then the connection drops and the client reconnects. Resolves once it is open again.
async function blip(server, chsk, during) {
  const reopened = new Promise((ok) => chsk.once("chsk/handshake", ok));
  await control(`/${server}/blackhole`, "on");
  await during();
  await sleep(300);
  await control(`/${server}/drop`);
  await control(`/${server}/blackhole`, "off");
  return reopened;
}

const resumeParam = (url) => new URL(url).searchParams.get("resume");

for (const [name, packer] of [
  ["json", undefined],
  ["edn", { ...edn, param: "edn" }],
]) {
  test(`${name}: a blip loses no push with resume (each exactly once, in order, recovered)`, async () => {
    const u = uid("blip-" + name);
    const chsk = make(UNIT, u, packer ? { packer } : {});
    await chsk.ready(5000);
    await push("unit", u, 1, 3);
    await until(() => chsk.got.length == 3, 5000, "pushes 1..3");
    assert.deepEqual(chsk.got, [1, 2, 3]);
    assert.equal(chsk.state.recovered, undefined, "first connection");
    await blip("unit", chsk, async () => {
      await push("unit", u, 4, 6); // written into the dead path
      await sleep(100);
      assert.deepEqual(chsk.got, [1, 2, 3], "nothing arrives through the dead path");
    });
    await push("unit", u, 7, 8);
    await until(() => chsk.state.open, 10000, "reopened");
    assert.equal(chsk.state.recovered, true);
    await push("unit", u, 9, 10);
    await until(() => chsk.got.length >= 10, 5000, "pushes 4..10");
    await sleep(300);
    assert.deepEqual(chsk.got, range(1, 10), "every push exactly once, in order");
    // The first handshake asks for resume with no position, the reconnect from its position.
    assert.equal(resumeParam(chsk.urls[0]), "");
    assert.match(resumeParam(chsk.urls.at(-1)), /^[0-9a-z-]+:3$/);
    chsk.disconnect();
  });
}

test("resume: false: the pushes written into the dead path are lost (Sente's behaviour)", async () => {
  const u = uid("off");
  const chsk = make(UNIT, u, { resume: false });
  await chsk.ready(5000);
  await push("unit", u, 1, 3);
  await until(() => chsk.got.length == 3, 5000, "pushes 1..3");
  await blip("unit", chsk, () => push("unit", u, 4, 6));
  await until(() => chsk.state.open, 10000, "reopened");
  await push("unit", u, 9, 10);
  await until(() => chsk.got.at(-1) == 10, 5000, "pushes 9..10");
  await sleep(300);
  assert.equal(chsk.state.recovered, undefined);
  assert.deepEqual(chsk.got, [1, 2, 3, 9, 10], "4..6 are lost");
  assert.ok(
    chsk.urls.every((url) => resumeParam(url) === null),
    "no resume parameter",
  );
  chsk.disconnect();
});

test("outside the replay window: recovered false and no partial replay", async () => {
  const u = uid("window");
  const chsk = make(WINDOW, u);
  await chsk.ready(5000);
  await push("window", u, 1, 2);
  await until(() => chsk.got.length == 2, 5000, "pushes 1..2");
  await blip("window", chsk, () => push("window", u, 3, 7)); // 5 missed, 3 kept
  await until(() => chsk.state.open, 10000, "reopened");
  assert.equal(chsk.state.recovered, false);
  await push("window", u, 8, 8);
  await until(() => chsk.got.length >= 3, 5000, "push 8");
  await sleep(300);
  assert.deepEqual(chsk.got, [1, 2, 8], "no partial replay");
  // The client stands at the log's position now: a second blip within the window recovers.
  await blip("window", chsk, () => push("window", u, 9, 10));
  await until(() => chsk.state.open && chsk.got.length >= 5, 10000, "pushes 9..10");
  assert.equal(chsk.state.recovered, true);
  assert.deepEqual(chsk.got, [1, 2, 8, 9, 10]);
  chsk.disconnect();
});

// The client's side of the wire, without a server: a fake WebSocket fed by hand.
nodeTest("the position: overlapping batches are skipped, a batch without a number forgets it", async () => {
  const sockets = [];
  class FakeWS {
    constructor(url) {
      this.url = url;
      this.readyState = 1;
      sockets.push(this);
      queueMicrotask(() => this.onopen?.());
    }
    send() {}
    close() {
      this.readyState = 3;
    }
  }
  const chsk = createChannelSocket("http://127.0.0.1:1/chsk", { type: "ws", WebSocket: FakeWS, backoff: () => 0 });
  live.push(chsk);
  const got = [];
  chsk.on("my-app/n", (d) => got.push(d));
  const feed = (payload) => sockets.at(-1).onmessage({ data: JSON.stringify([payload]) });
  const hs = (info) => feed([":chsk/handshake", ["u", null, null, ...(info ? [info] : [])]]);
  const batch = (...ns) => feed(ns.map((k) => [":my-app/n", k]));
  const reconnect = async () => {
    const n = sockets.length;
    sockets.at(-1).onclose({ code: 1006 });
    await until(() => sockets.length > n, 2000, "a reconnect");
    return resumeParam(sockets.at(-1).url);
  };
  await until(() => sockets.length == 1, 2000, "the socket");
  assert.equal(resumeParam(sockets[0].url), "");
  hs({ epoch: "e1", seq: 0, recovered: false });
  assert.equal(chsk.state.recovered, undefined, "no position before: no news");
  feed([":chsk/seq", 2]);
  batch(1, 2);
  feed([":chsk/seq", 3]);
  batch(2, 3); // a live batch overlapping a replay: 2 was received already
  feed([":chsk/seq", 3]);
  batch(3);
  assert.deepEqual(got, [1, 2, 3]);
  assert.equal(await reconnect(), "e1:3");
  hs({ epoch: "e1", seq: 3, recovered: true });
  assert.equal(chsk.state.recovered, true);
  batch(4); // no number: the position is forgotten
  assert.deepEqual(got, [1, 2, 3, 4]);
  assert.equal(await reconnect(), "");
  hs({ epoch: "e2", seq: 9, recovered: false });
  assert.equal(chsk.state.recovered, undefined, "no position: no news");
  assert.equal(await reconnect(), "e2:9");
  hs(); // a server without the extension: no position, no news
  assert.equal(chsk.state.recovered, undefined);
  assert.equal(await reconnect(), "");
  chsk.disconnect();
});
