// Conformance tests of this client against a running sente-rs server (json packer).
// Skipped unless SENTE_URL is set, e.g.
//
//   SENTE_URL=http://127.0.0.1:3000/chsk SENTE_CSRF_TOKEN=... npm test
//
// Environment:
//   SENTE_URL         the channel socket endpoint (http(s)://host:port/path)
//   SENTE_CSRF_TOKEN  token to send (optional; omit when the server's CSRF check is off)
//   SENTE_TYPES       transports to test, comma separated (default "ws,ajax")
//
// Server contract used here (the demo/test handlers of the sente-rs server):
//   demo/echo     replies with the data it received
//   demo/no-reply never replies (the client must time out locally)
//   demo/push     data is a vector of events; the server pushes them to the sender's uid
//                 (flushed, so they arrive as one batch) and replies with anything
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { createChannelSocket, kw } from "../src/sente.js";

const URL_ = process.env.SENTE_URL;
const skip = URL_ ? false : "SENTE_URL not set";
const types = (process.env.SENTE_TYPES || "ws,ajax").split(",").map((s) => s.trim()).filter(Boolean);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const next = (chsk, id, pred = () => true) =>
  new Promise((resolve) => {
    const off = chsk.on(id, (d) => pred(d) && (off(), resolve(d)));
  });
const withTimeout = (p, ms, what) =>
  Promise.race([p, sleep(ms).then(() => Promise.reject(new Error("timed out: " + what)))]);

function connect(type, opts = {}) {
  const chsk = createChannelSocket(URL_, {
    type,
    WebSocket,
    csrfToken: process.env.SENTE_CSRF_TOKEN,
    ...opts,
  });
  return chsk;
}

for (const type of types) {
  const t = (name, fn) => test(`conformance ${type}: ${name}`, { skip, timeout: 30000 }, async () => {
    const chsk = connect(type);
    try {
      await fn(chsk);
    } finally {
      chsk.disconnect();
    }
  });

  t("handshake", async (chsk) => {
    const hs = await withTimeout(next(chsk, "chsk/handshake"), 5000, "handshake");
    assert.equal(hs.length, 4);
    assert.notEqual(hs[0], undefined, "uid");
    assert.equal(hs[1], null);
    assert.equal(hs[3], true, "first handshake");
    assert.equal(chsk.state.type, type);
    assert.equal(chsk.state.open, true);
    assert.equal(chsk.state.firstOpen, true);
    assert.deepEqual(chsk.state.uid, hs[0]);
  });

  t("echo with reply (json value mapping round trip)", async (chsk) => {
    await withTimeout(next(chsk, "chsk/handshake"), 5000, "handshake");
    const sent = {
      n: 1,
      f: 1.5,
      neg: -7,
      t: true,
      nil: null,
      s: "plain",
      colon: ":not-a-keyword",
      tilde: "~tilde",
      unicode: "héllo ✓ 日本",
      k: kw("my-app/kw"),
      v: [1, [2, [3]], "x"],
      m: { "~key": 1, nested: { a: [] } },
      set: new Set([1, "a"]),
      inst: new Date("2024-01-02T03:04:05.678Z"),
      big: 123456789012345678901234567890n,
    };
    const got = await chsk.request("demo/echo", sent, 5000);
    assert.deepEqual(got, { ...sent, k: "my-app/kw" });
    assert.equal(await chsk.request("demo/echo", "just a string", 5000), "just a string");
    assert.equal(await chsk.request("demo/echo", ":kw-looking", 5000), ":kw-looking");
  });

  t("reply timeout when the server never answers", async (chsk) => {
    await withTimeout(next(chsk, "chsk/handshake"), 5000, "handshake");
    const t0 = Date.now();
    await assert.rejects(chsk.request("demo/no-reply", { x: 1 }, 500), (e) => e.code == "timeout");
    assert.ok(Date.now() - t0 < 3000);
    assert.equal(chsk.state.open, true, "a timed-out request leaves the connection open");
    assert.equal(await chsk.request("demo/echo", 1, 5000), 1);
  });

  t("push batch delivered event by event, in order", async (chsk) => {
    await withTimeout(next(chsk, "chsk/handshake"), 5000, "handshake");
    const got = [];
    chsk.on("*", (d, id) => id.startsWith("my-app/") && got.push([id, d]));
    const events = [
      [kw("my-app/a"), 1],
      [kw("my-app/b"), { x: [1, 2, 3] }],
      [kw("my-app/c"), ":str"],
      [kw("my-app/a"), 2],
    ];
    await chsk.request("demo/push", events, 5000);
    const t0 = Date.now();
    while (got.length < events.length && Date.now() - t0 < 5000) await sleep(10);
    assert.deepEqual(got, [
      ["my-app/a", 1],
      ["my-app/b", { x: [1, 2, 3] }],
      ["my-app/c", ":str"],
      ["my-app/a", 2],
    ]);
  });

  t("reconnect: new handshake, requests work again", async (chsk) => {
    const hs1 = await withTimeout(next(chsk, "chsk/handshake"), 5000, "handshake");
    const again = next(chsk, "chsk/handshake");
    chsk.reconnect();
    assert.equal(chsk.state.lastClose.reason, "requested-reconnect");
    const hs2 = await withTimeout(again, 5000, "second handshake");
    assert.equal(hs2[3], false, "not the first handshake");
    assert.deepEqual(hs2[0], hs1[0], "same uid");
    assert.equal(chsk.state.open, true);
    assert.equal(await chsk.request("demo/echo", "again", 5000), "again");
  });
}

test("conformance: a wrong CSRF token is rejected (when SENTE_CSRF_TOKEN is set)", {
  skip: skip || (process.env.SENTE_CSRF_TOKEN ? false : "SENTE_CSRF_TOKEN not set"),
  timeout: 30000,
}, async () => {
  for (const type of types) {
    const chsk = connect(type, { csrfToken: "definitely-wrong" });
    try {
      const st = await withTimeout(
        next(chsk, "chsk/state", ([, n]) => n.lastClose?.reason == "rejected"),
        5000,
        `rejection over ${type}`,
      );
      assert.equal(st[1].lastClose.status, 403);
      assert.equal(chsk.state.everOpened, false);
    } finally {
      chsk.disconnect();
    }
  }
});
