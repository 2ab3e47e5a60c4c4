// Large pushes fetched by HTTP (the sente-rs `large` extension) against the test kit's
// `sente-test-server` "unit" server (SENTE_UNIT_URL), pushed through its control endpoint
// (`/unit/push` with `{"large": n}`: n bytes of the test kit's `large_text`): a 1 MiB push
// arrives intact on WebSocket and Ajax, with the small pushes after it after it; small pushes
// to another client are not held up meanwhile; a client without the extension gets it inline;
// the socket carries a small reference that only the client it was sent to may fetch, once.
// `bash scripts/test-js-client.sh` sets everything.
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
const MIB = 1 << 20;

const live = [];
after(() => live.forEach((c) => c.disconnect()));

// The test kit's `large_text(n)`: byte i is 'a' + 7i mod 26.
const largeText = (n) => {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = 97 + ((i * 7) % 26);
  return b.toString("latin1");
};

function make(type, u, opts = {}) {
  const c = createChannelSocket(UNIT, { type, csrfToken: TOKEN, WebSocket, params: { uid: u }, ...opts });
  live.push(c);
  return c;
}

async function push(uid, data) {
  const r = await fetch(CONTROL + "/unit/push", { method: "POST", body: JSON.stringify({ uid, id: "my-app/n", data }) });
  assert.equal(r.status, 200, await r.clone().text());
}

// The next `n` my-app/n pushes (and large-failed events) of `c`.
function pushes(c, n) {
  const got = [];
  return new Promise((resolve) => {
    const take = (d, id) => got.push([id, d]) == n && resolve(got);
    c.on("my-app/n", take);
    c.on("chsk/large-failed", take);
  });
}

for (const type of ["ws", "ajax"]) {
  test(`${type}: a 1 MiB push arrives intact, and the pushes after it after it`, async () => {
    const u = `js-large-${type}-${process.pid}`;
    const fetched = [];
    const c = make(type, u, { fetch: (url, init) => (fetched.push(url), fetch(url, init)) });
    await c.ready(10000);
    if (type == "ajax") await new Promise((r) => setTimeout(r, 300)); // the poll is held
    const got = pushes(c, 4);
    await push(u, [0, { large: MIB }, 1, 2]);
    const g = await got;
    assert.deepEqual(g.map(([id]) => id), ["my-app/n", "my-app/n", "my-app/n", "my-app/n"]);
    assert.deepEqual([g[0][1], g[2][1], g[3][1]], [0, 1, 2]);
    assert.equal(g[1][1].length, MIB);
    assert.ok(g[1][1] === largeText(MIB), "the body is intact");
    assert.equal(fetched.filter((url) => /[?&]large=/.test(url)).length, 1, "fetched by HTTP");
    c.disconnect();
  });
}

test("small pushes to another client are not held up while one fetches", async () => {
  const pid = process.pid;
  const big = make("ws", `js-large-big-${pid}`);
  const small = make("ws", `js-large-small-${pid}`);
  await Promise.all([big.ready(10000), small.ready(10000)]);
  const bigGot = pushes(big, 4);
  const smallGot = pushes(small, 20);
  await push(`js-large-big-${pid}`, [{ large: MIB }, { large: MIB }, { large: MIB }, 1]);
  await push(`js-large-small-${pid}`, Array.from({ length: 20 }, (_, i) => i));
  assert.deepEqual((await smallGot).map(([, d]) => d), Array.from({ length: 20 }, (_, i) => i));
  const g = await bigGot;
  assert.deepEqual(g.map(([, d]) => (typeof d == "string" ? d.length : d)), [MIB, MIB, MIB, 1]);
});

test("a client without the extension gets the push inline", async () => {
  const u = `js-large-plain-${process.pid}`;
  const c = make("ws", u, { large: false });
  await c.ready(10000);
  const got = pushes(c, 2);
  await push(u, [{ large: MIB }, 1]);
  const g = await got;
  assert.ok(g[0][1] === largeText(MIB));
  assert.equal(g[1][1], 1);
});

test("the socket carries a reference that only its client fetches, once", async () => {
  const u = `js-large-raw-${process.pid}`;
  const cid = `raw-${process.pid}`;
  const ws = new WebSocket(`${UNIT.replace(/^http/, "ws")}?client-id=${cid}&uid=${u}&csrf-token=${TOKEN}&packer=json&ext=large`);
  const frames = [];
  const next = () =>
    new Promise((resolve) => {
      const f = () => (frames.length ? resolve(frames.shift()) : setTimeout(f, 10));
      f();
    });
  ws.on("message", (d) => frames.push(d.toString()));
  assert.match(await next(), /chsk\/handshake/);
  await push(u, [{ large: MIB }, 7]);
  const refFrame = await next();
  assert.ok(refFrame.length < 1024, `the socket carried ${refFrame.length} bytes`);
  const [batch] = JSON.parse(refFrame);
  assert.equal(batch[0][0], ":chsk/large");
  const { id, size } = batch[0][1];
  assert.ok(size > MIB);
  // The small push after the reference came without any fetch.
  const rest = batch.length > 1 ? batch[1] : JSON.parse(await next())[0][0];
  assert.deepEqual(rest, [":my-app/n", 7]);
  const get = (uid, client, t = TOKEN) =>
    fetch(`${UNIT}?client-id=${client}&uid=${uid}&packer=json&large=${id}`, {
      headers: { "X-CSRF-Token": t, "X-Requested-With": "XMLHTTPRequest" },
    });
  assert.equal((await get("someone-else", cid)).status, 403);
  assert.equal((await get(u, "another-client")).status, 403);
  assert.equal((await get(u, cid, "wrong-token")).status, 403);
  const r = await get(u, cid);
  assert.equal(r.status, 200);
  const [[ev]] = JSON.parse(await r.text());
  assert.equal(ev[0], ":my-app/n");
  assert.ok(ev[1] === largeText(MIB));
  assert.equal((await get(u, cid)).status, 410);
  ws.close();
});
