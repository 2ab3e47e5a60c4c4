// Resume over Ajax and the mid-session transport switch (issue 15, item 5), against the test
// kit's `sente-test-server` "unit" server (SENTE_UNIT_URL: Ajax grace 600 ms) behind its proxy,
// driven through the control endpoint (SENTE_CONTROL_URL): `/unit/refuse-ws` makes the proxy
// answer WebSocket upgrades 403, `/unit/drop` cuts the connections, `/unit/blackhole` throws
// away every byte of the open ones, `/unit/push` pushes from the server side. A steady stream
// of counted pushes runs while the faults happen: every push must arrive exactly once, in
// order, and no handshake may say `recovered: false`. Same scenarios as
// crates/sente-test-kit/tests/transport_switch.rs. `bash scripts/test-js-client.sh` sets
// everything.
import { test as nodeTest, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { createChannelSocket } from "../src/sente.js";

const env = process.env;
const UNIT = env.SENTE_UNIT_URL;
const CONTROL = env.SENTE_CONTROL_URL;
const TOKEN = env.SENTE_CSRF_TOKEN;
const skip = UNIT && CONTROL && TOKEN ? false : "SENTE_UNIT_URL, SENTE_CONTROL_URL, SENTE_CSRF_TOKEN not set";
const test = (name, fn) => nodeTest(name, { timeout: 60000, skip }, fn);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(pred, ms, what) {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error("timed out waiting for " + what);
    await sleep(5);
  }
}
const control = async (path, body) => {
  const r = await fetch(CONTROL + "/unit" + path, { method: "POST", body });
  assert.equal(r.status, 200, `control ${path}: ${await r.clone().text()}`);
};
const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

// Pushes `my-app/n` 1..count to `uid`, one about every `everyMs`, until done; resolves then.
async function steadyPushes(uid, count, everyMs) {
  for (let n = 1; n <= count; n++) {
    await control("/push", JSON.stringify({ uid, id: "my-app/n", data: [n] }));
    await sleep(everyMs);
  }
}

let k = 0;
const uid = (name) => `js-switch-${name}-${process.pid}-${++k}`;
const live = [];
after(() => live.forEach((c) => c.disconnect()));

// A client of the unit server for `u`; `.got` collects the numbers pushed as `my-app/n`,
// `.states` every state it went through.
function make(u, opts) {
  const chsk = createChannelSocket(UNIT, {
    csrfToken: TOKEN,
    WebSocket,
    params: { uid: u },
    backoff: (n) => (n <= 1 ? 0 : 20),
    ...opts,
  });
  live.push(chsk);
  const got = [];
  const states = [];
  chsk.on("my-app/n", (d) => got.push(d));
  chsk.on("chsk/state", ([, s]) => states.push(s));
  return Object.assign(chsk, { got, states });
}

// The transports the client was open on, in order (repeats collapsed).
const kinds = (chsk) =>
  chsk.states.filter((s) => s.open).map((s) => s.type).filter((t, i, a) => i == 0 || a[i - 1] != t);

async function allArrive(chsk, count) {
  await until(() => chsk.got.length >= count, 10000, `${count} pushes (got ${chsk.got.length})`);
  await sleep(300);
  assert.deepEqual(chsk.got, range(1, count), "every push exactly once, in order");
  assert.ok(
    chsk.states.every((s) => s.recovered !== false),
    "no handshake said recovered: false",
  );
}

test("ajax: a blip longer than the grace period loses no push", async () => {
  const u = uid("ajax");
  const chsk = make(u, { type: "ajax" });
  await chsk.ready(5000);
  const count = 120;
  const pushes = steadyPushes(u, count, 10);
  await sleep(300);
  await control("/blackhole", "on");
  await sleep(1000); // > the server's Ajax grace period: it forgets the client
  await control("/drop");
  await control("/blackhole", "off");
  await until(() => chsk.state.open && chsk.state.recovered !== undefined, 10000, "the reconnect");
  await pushes;
  await allArrive(chsk, count);
  assert.equal(chsk.state.recovered, true);
  chsk.disconnect();
});

test("auto: WS -> Ajax (upgrades refused) -> WS, twice, under a steady push stream", async () => {
  const u = uid("auto");
  const chsk = make(u, { type: "auto", reprobeWsMs: 400 });
  await until(() => chsk.state.open && chsk.state.type == "ws", 5000, "WebSocket");
  const count = 300;
  const pushes = steadyPushes(u, count, 10);
  try {
    for (let round = 0; round < 2; round++) {
      await sleep(300);
      await control("/refuse-ws", "on");
      await control("/drop");
      await until(() => chsk.state.open && chsk.state.type == "ajax", 10000, "the Ajax fallback");
      // Re-probes fail meanwhile; a poll is cut too.
      await sleep(600);
      await control("/drop");
      await sleep(300);
      await control("/refuse-ws", "off");
      await until(() => chsk.state.open && chsk.state.type == "ws", 10000, "back on WebSocket");
    }
  } finally {
    await control("/refuse-ws", "off");
  }
  await pushes;
  await allArrive(chsk, count);
  assert.deepEqual(kinds(chsk), ["ws", "ajax", "ws", "ajax", "ws"]);
  assert.equal(chsk.state.recovered, true);
  chsk.disconnect();
});

// The client's side of the wire, without a server: a numbered Ajax answer carries its marker
// as the batch's first element; every GET names the position.
nodeTest("ajax: the leading [:chsk/seq n] numbers the answer, and every poll names the position", async () => {
  const gets = [];
  const answers = [];
  const fetch = (url, init) => {
    gets.push(new URL(url));
    return new Promise((ok, fail) => {
      init.signal.addEventListener("abort", () => fail(init.signal.reason));
      answers.push((body) => ok({ status: 200, ok: true, text: () => Promise.resolve(JSON.stringify(body)) }));
    });
  };
  const chsk = createChannelSocket("http://127.0.0.1:1/chsk", { type: "ajax", fetch, backoff: () => 0 });
  live.push(chsk);
  const got = [];
  chsk.on("my-app/n", (d) => got.push(d));
  const answer = async (payload) => {
    const n = gets.length;
    answers.at(-1)([payload, null]);
    await until(() => gets.length > n, 2000, "the next poll");
  };
  await until(() => gets.length == 1, 2000, "the handshake GET");
  assert.equal(gets[0].searchParams.get("resume"), "");
  await answer([":chsk/handshake", ["u", null, null, { epoch: "e1", seq: 4, recovered: false }]]);
  assert.equal(gets[1].searchParams.get("resume"), "e1:4");
  await answer([[":chsk/seq", 6], [":my-app/n", 5], [":my-app/n", 6]]);
  await answer([[":chsk/seq", 7], [":my-app/n", 6], [":my-app/n", 7]]); // 6 twice: skipped
  assert.deepEqual(got, [5, 6, 7]);
  assert.equal(gets.at(-1).searchParams.get("resume"), "e1:7");
  await answer([[":my-app/n", 8]]); // no number: the position is forgotten
  assert.deepEqual(got, [5, 6, 7, 8]);
  assert.equal(gets.at(-1).searchParams.get("resume"), "");
  chsk.disconnect();
});
