// Server-to-client requests (the sente-rs `req` extension) against the test kit's
// `sente-test-server` "unit" server (SENTE_UNIT_URL), asked through its control endpoint
// (`/unit/request`: `ServerHandle::request`): each client of the uid answers with its handler's
// value (sync or promise), on WebSocket and Ajax; a client without a handler for the event
// answers "no-handler", a throwing handler its message, and a plain client (no handler at all,
// so it never announced the extension) is "unsupported" and never sees a request.
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

const live = [];
after(() => live.forEach((c) => c.disconnect()));

function make(type, u) {
  const c = createChannelSocket(UNIT, { type, csrfToken: TOKEN, WebSocket, params: { uid: u } });
  live.push(c);
  return c;
}

async function ask(u, data, timeoutMs = 3000) {
  const r = await fetch(CONTROL + "/unit/request", {
    method: "POST",
    body: JSON.stringify({ uid: u, id: "my-app/ask", data, timeout_ms: timeoutMs }),
  });
  assert.equal(r.status, 200, await r.clone().text());
  return Object.fromEntries((await r.json()).map((x) => [x.client, x.ok ?? "error: " + x.error]));
}

test("each client answers a server request, or says why not", async () => {
  const u = `js-s2c-${process.pid}`;
  const ws = make("ws", u);
  ws.onRequest("my-app/ask", (d) => "ws:" + d);
  const ajax = make("ajax", u);
  ajax.onRequest(":my-app/ask", async (d, id) => `ajax:${d}:${id}`);
  const other = make("ws", u);
  other.onRequest("my-app/other", () => "never");
  const failing = make("ws", u);
  failing.onRequest("my-app/ask", () => {
    throw new Error("boom");
  });
  const plain = make("ws", u);
  const seen = [];
  plain.on("*", (d, id) => seen.push(id));
  await Promise.all([ws, ajax, other, failing, plain].map((c) => c.ready(10000)));
  const got = await ask(u, 7);
  assert.deepEqual(got, {
    [ws.clientId]: '"ws:7"',
    [ajax.clientId]: '"ajax:7:my-app/ask"',
    [other.clientId]: "error: client: no-handler",
    [failing.clientId]: "error: client: boom",
    [plain.clientId]: "error: unsupported",
  });
  assert.ok(!seen.some((id) => String(id).startsWith("chsk/re")), seen.join(","));
  // A handler removed: the client answers no-handler.
  const off = ws.onRequest("my-app/ask", (d) => d);
  off();
  assert.equal((await ask(u, 1))[ws.clientId], "error: client: no-handler");
});
