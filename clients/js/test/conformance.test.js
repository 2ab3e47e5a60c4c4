// Conformance of this client against a real sente-rs server: the same named scenarios as the
// Rust test kit (crates/sente-test-kit/src/scenario.rs), for every transport, with the json
// packer. Skipped unless SENTE_URL is set; `bash scripts/test-js-client.sh` starts the test kit's
// `sente-test-server` and sets everything:
//
//   SENTE_URL            the default server (http://127.0.0.1:port/chsk)
//   SENTE_CSRF_TOKEN     its CSRF token
//   SENTE_REFUSE_WS_URL  the same app behind a proxy that refuses WebSocket upgrades
//   SENTE_SMALL_URL      a server whose message limit is 16 KiB
//   SENTE_ORIGIN_URL     a server that only allows the origin http://good.example
//   SENTE_CONTROL_URL    POST /restart restarts the default server; GET /log is its uidport log
//   SENTE_TYPES          transports to test, comma separated (default "ws,ajax,auto")
//   SENTE_SCENARIOS      the kit's scenario names as a JSON array (printed by sente-test-server)
//
// A scenario whose server is not given is skipped. The demo app of the test server (see
// crates/sente-test-kit/src/server.rs): demo/echo replies with its data; demo/no-reply never
// replies; demo/fail fails before replying (answered :chsk/error); demo/push-me n pushes [:demo/pushed {:i i}] for i in 0..n to the caller's uid, then
// replies :ok; demo/push pushes a vector of events as one batch; demo/close-me closes the uid's
// connections; demo/uidport-log replies with the uidport events; a bad event is pushed back as
// [:demo/saw-bad-event payload]. The uid is the `uid` query parameter.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { createChannelSocket, kw, Tagged } from "../src/sente.js";

const env = process.env;
const URL_ = env.SENTE_URL;
const TOKEN = env.SENTE_CSRF_TOKEN;
const types = (env.SENTE_TYPES || "ws,ajax,auto").split(",").map((s) => s.trim()).filter(Boolean);

const OPEN_TIMEOUT = 20000;
const REQUEST_TIMEOUT = 10000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let runN = 0;

/** Records every event of a channel socket, so a scenario can wait for them in order. */
class Recorder {
  constructor(chsk) {
    this.chsk = chsk;
    this.q = [];
    this.wake = null;
    chsk.on("*", (data, id) => {
      this.q.push([id, data]);
      this.wake?.();
    });
  }

  /** The next event matching `pred(id, data)`, skipping others (like the kit's `wait_event`). */
  async next(pred, timeoutMs, what) {
    const deadline = Date.now() + timeoutMs;
    const seen = [];
    for (;;) {
      while (this.q.length) {
        const [id, data] = this.q.shift();
        if (pred(id, data)) return data;
        seen.push(id == "chsk/state" ? id : JSON.stringify([id, data], replacer));
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${timeoutMs} ms; saw ${seen.join(" ")}`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => (clearTimeout(t), resolve());
      });
      this.wake = null;
    }
  }

  /** Waits for an event by id. */
  nextId(id, timeoutMs = REQUEST_TIMEOUT) {
    return this.next((i) => i == id, timeoutMs, id);
  }
}

const replacer = (_k, v) => (typeof v == "bigint" ? String(v) : v);

/** Polls the state until `pred` holds (the kit's `wait_state`). */
async function waitState(chsk, pred, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  while (!pred(chsk.state)) {
    if (Date.now() > deadline)
      throw new Error(`state never ${what} within ${timeoutMs} ms: ${JSON.stringify(chsk.state)}`);
    await sleep(50);
  }
  return chsk.state;
}

/** One scenario run: creates clients (all disconnected at the end) and unique uids. */
class Ctx {
  constructor(name, type) {
    this.type = type;
    this.tag = `js-${name}-${type}-${process.pid}-${++runN}`;
    this.clients = [];
  }

  uid(name) {
    return `${this.tag}-${name}`;
  }

  /** Starts a client; it connects in the background. */
  connect({ url = URL_, uid, csrfToken = TOKEN, headers, type = this.type } = {}) {
    const chsk = createChannelSocket(url, {
      type,
      WebSocket,
      csrfToken,
      headers,
      params: uid ? { uid } : undefined,
    });
    const rec = new Recorder(chsk);
    this.clients.push(chsk);
    return { chsk, rec };
  }

  /** Starts a client and waits for its first handshake. */
  async open(opts) {
    const c = this.connect(opts);
    await c.rec.nextId("chsk/handshake", OPEN_TIMEOUT);
    return c;
  }

  close() {
    for (const c of this.clients) c.disconnect();
  }
}

const expectedType = (type) => (type == "ajax" ? "ajax" : "ws");

async function echoOk({ chsk }, n) {
  const data = { n };
  assert.deepEqual(await chsk.request("demo/echo", data, REQUEST_TIMEOUT), data);
}

// The Rust kit's `expect_rejected`: never opens, reports `rejected` with the HTTP status (Node
// sees it over both transports), and requests fail with `closed`.
async function expectRejected({ chsk, rec }, status) {
  await assert.rejects(
    rec.next((id) => id == "chsk/handshake", 2000, "handshake"),
    /no handshake/,
    "a rejected client must not open",
  );
  const st = await waitState(chsk, (s) => s.lastClose?.reason == "rejected", 10000, "rejected");
  assert.equal(st.lastClose.status, status, JSON.stringify(st));
  assert.equal(chsk.state.open, false);
  assert.equal(chsk.state.everOpened, false);
  await assert.rejects(chsk.request("demo/echo", 1, 1000), (e) => e.code == "closed");
}

// ---------------------------------------------------------------------------------------------
// The scenarios, named as in scenario.rs

const always = () => true;

const scenarios = [
  {
    name: "handshake",
    run: async (ctx) => {
      const uid = ctx.uid("hs");
      const { chsk, rec } = ctx.connect({ uid });
      const [, st] = await rec.nextId("chsk/state", OPEN_TIMEOUT);
      assert.equal(st.firstOpen, true, "the first chsk/state carries firstOpen");
      const hs = await rec.nextId("chsk/handshake", OPEN_TIMEOUT);
      assert.deepEqual(hs, [uid, null, { hello: "world" }, true]);
      assert.equal(chsk.state.open, true);
      assert.equal(chsk.state.type, expectedType(ctx.type));
      assert.equal(chsk.state.uid, uid);
      assert.deepEqual(chsk.state.handshakeData, { hello: "world" });
    },
  },
  {
    name: "echo",
    run: async (ctx) => {
      const { chsk } = await ctx.open();
      const id = "66d96ab4-9834-40db-a3cd-42b361503ab9";
      const data = {
        msg: 'héllo "world"\n',
        n: -42,
        x: 1.5,
        "ok?": true,
        nothing: null,
        tags: [kw("a/b"), "s", 3],
        nested: { deep: { er: [] } },
        id: new Tagged("uuid", id),
      };
      assert.equal(chsk.send("demo/echo", "fire and forget"), true);
      const got = await chsk.request("demo/echo", data, REQUEST_TIMEOUT);
      // Keywords come back as plain strings, uuids as their text (the json mapping).
      assert.deepEqual(got, { ...data, tags: ["a/b", "s", 3], id });
      assert.equal(await chsk.request("demo/echo", null, REQUEST_TIMEOUT), null);
    },
  },
  {
    name: "reply-timeout",
    run: async (ctx) => {
      const c = await ctx.open();
      await assert.rejects(c.chsk.request("demo/no-reply", 1, 400), (e) => e.code == "timeout");
      assert.equal(c.chsk.state.open, true, "a timeout must not close");
      await echoOk(c, 1);
    },
  },
  {
    name: "handler-error",
    run: async (ctx) => {
      const c = await ctx.open();
      const t0 = Date.now();
      await assert.rejects(c.chsk.request("demo/fail", 1, 10000), (e) => e.code == "error");
      assert.ok(Date.now() - t0 < 2000, "the error must not wait for the timeout");
      assert.equal(c.chsk.state.open, true, "a handler error must not close");
      await echoOk(c, 1);
    },
  },
  {
    name: "push-batch",
    run: async (ctx) => {
      const { chsk, rec } = await ctx.open({ uid: ctx.uid("push") });
      assert.equal(await chsk.request("demo/push-me", 5, REQUEST_TIMEOUT), "ok");
      for (let i = 0; i < 5; i++) assert.deepEqual(await rec.nextId("demo/pushed"), { i });
    },
  },
  {
    name: "fan-out",
    run: async (ctx) => {
      const uid = ctx.uid("fan");
      const a = await ctx.open({ uid });
      const b = await ctx.open({ uid });
      const other = await ctx.open({ uid: ctx.uid("other") });
      assert.equal(await a.chsk.request("demo/push-me", 3, REQUEST_TIMEOUT), "ok");
      for (const [name, c] of [["a", a], ["b", b]])
        for (let i = 0; i < 3; i++)
          assert.deepEqual(await c.rec.nextId("demo/pushed"), { i }, `client ${name} push ${i}`);
      await assert.rejects(
        other.rec.next((id) => id == "demo/pushed", 500, "push"),
        /no push/,
        "another uid got the push",
      );
    },
  },
  {
    name: "uidport",
    needs: ["SENTE_CONTROL_URL"],
    run: async (ctx) => {
      const uid = ctx.uid("port");
      const c = await ctx.open({ uid });
      const logHas = async (id) => {
        const r = await fetch(env.SENTE_CONTROL_URL + "/log");
        return (await r.text()).includes(`[:${id} ${JSON.stringify(uid)}]`);
      };
      const until = async (id, ms) => {
        const deadline = Date.now() + ms;
        while (!(await logHas(id))) {
          assert.ok(Date.now() < deadline, `no ${id} for ${uid} within ${ms} ms`);
          await sleep(50);
        }
      };
      await until("chsk/uidport-open", 10000);
      // The log is visible to clients too.
      const log = await c.chsk.request("demo/uidport-log", null, REQUEST_TIMEOUT);
      assert.ok(
        log.some((e) => e[0] == "chsk/uidport-open" && e[1] == uid),
        `uidport-log ${JSON.stringify(log)}`,
      );
      c.chsk.disconnect();
      await until("chsk/uidport-close", 15000);
    },
  },
  {
    name: "server-restart",
    needs: ["SENTE_CONTROL_URL"],
    run: async (ctx) => {
      const c = await ctx.open({ uid: ctx.uid("restart") });
      await echoOk(c, 1);
      const r = await fetch(env.SENTE_CONTROL_URL + "/restart", { method: "POST" });
      assert.equal(await r.text(), "restarted");
      // The client comes back by itself.
      const hs = await c.rec.nextId("chsk/handshake", 40000);
      assert.equal(hs[3], false, `second handshake ${JSON.stringify(hs)}`);
      await echoOk(c, 2);
    },
  },
  {
    name: "server-close",
    run: async (ctx) => {
      const c = await ctx.open({ uid: ctx.uid("close") });
      // Let an Ajax client's first long-poll reach the server: a kick that falls between two
      // polls goes unnoticed (as in Sente, where it closes no channel).
      await echoOk(c, 0);
      await sleep(200);
      c.chsk.send("demo/close-me", null);
      const hs = await c.rec.nextId("chsk/handshake", 30000);
      assert.equal(hs[3], false, `handshake ${JSON.stringify(hs)}`);
      await echoOk(c, 3);
    },
  },
  {
    name: "auto-downgrade",
    applies: (type) => type == "auto",
    needs: ["SENTE_REFUSE_WS_URL"],
    run: async (ctx) => {
      const c = await ctx.open({ url: env.SENTE_REFUSE_WS_URL });
      assert.equal(c.chsk.state.type, "ajax", "expected an Ajax fallback");
      assert.equal(c.chsk.state.open, true);
      assert.ok(c.chsk.state.lastWsError, JSON.stringify(c.chsk.state));
      await echoOk(c, 1);
    },
  },
  {
    name: "csrf-rejected",
    needs: ["SENTE_CSRF_TOKEN"],
    run: async (ctx) => {
      const wrong = ctx.connect({ csrfToken: "wrong-token" });
      await expectRejected(wrong, 403);
      wrong.chsk.disconnect();
      await expectRejected(ctx.connect({ csrfToken: null }), 403);
    },
  },
  {
    name: "origin-rejected",
    needs: ["SENTE_ORIGIN_URL"],
    run: async (ctx) => {
      const url = env.SENTE_ORIGIN_URL;
      const evil = ctx.connect({ url, headers: { Origin: "http://evil.example" } });
      await expectRejected(evil, 403);
      evil.chsk.disconnect();
      const good = await ctx.open({ url, headers: { Origin: "http://good.example" } });
      await echoOk(good, 1);
    },
  },
  {
    name: "oversize",
    needs: ["SENTE_SMALL_URL"],
    run: async (ctx) => {
      const { chsk, rec } = await ctx.open({ url: env.SENTE_SMALL_URL });
      await assert.rejects(
        chsk.request("demo/echo", "x".repeat(64 * 1024), 5000),
        (e) => ["closed", "timeout", "error"].includes(e.code),
        "an oversize message must not be echoed",
      );
      // The client recovers (reconnecting if the server closed the socket).
      const deadline = Date.now() + 30000;
      for (;;) {
        const data = { after: true };
        const r = await chsk.request("demo/echo", data, 2000).catch((e) => e);
        if (JSON.stringify(r) == JSON.stringify(data)) break;
        assert.ok(Date.now() < deadline, `no recovery after an oversize message: ${r}`);
        await rec.next(() => false, 200, "anything").catch(() => {});
      }
      assert.equal(chsk.state.open, true);
    },
  },
  {
    name: "bad-event",
    run: async (ctx) => {
      const uid = ctx.uid("bad");
      const c = await ctx.open({ uid });
      // A raw Sente POST (edn) with an invalid event asking for a reply (the client itself
      // refuses to encode one).
      const body =
        `udt=0&client-id=raw-${encodeURIComponent(uid)}` +
        `&ppstr=${encodeURIComponent("[[:not-namespaced 1] :ajax]")}`;
      const r = await fetch(`${URL_}?uid=${encodeURIComponent(uid)}`, {
        method: "POST",
        headers: {
          "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8",
          "X-CSRF-Token": TOKEN ?? "",
        },
        body,
      });
      const text = await r.text();
      assert.equal(r.status, 200, `raw POST: ${text}`);
      assert.ok(text.includes(":bad-event [:not-namespaced 1]"), `raw reply ${text}`);
      assert.deepEqual(await c.rec.nextId("demo/saw-bad-event"), ["not-namespaced", 1]);
      await echoOk(c, 1);
    },
  },
];

// The scenario list comes from the Rust test kit (`sente-test-server` prints it; the script
// passes it as SENTE_SCENARIOS, a JSON array of names): a kit scenario without a JS
// implementation here fails as a test of its own, and so does a JS scenario the kit does not have.
const kitNames = env.SENTE_SCENARIOS ? JSON.parse(env.SENTE_SCENARIOS) : null;
const byName = new Map(scenarios.map((s) => [s.name, s]));

test(
  "conformance: every scenario of the Rust test kit is implemented, and no other",
  { skip: kitNames ? false : "SENTE_SCENARIOS not set" },
  () => {
    assert.ok(Array.isArray(kitNames) && kitNames.length > 0, "SENTE_SCENARIOS: " + env.SENTE_SCENARIOS);
    assert.deepEqual(kitNames.filter((n) => !byName.has(n)), [], "kit scenarios missing in test/conformance.test.js");
    assert.deepEqual(scenarios.map((s) => s.name).filter((n) => !kitNames.includes(n)), [], "JS scenarios unknown to the kit");
  },
);

const missingInJs = (name) => ({
  name,
  run: () => assert.fail(`scenario ${name} of the Rust test kit has no JS implementation`),
});

for (const type of types)
  for (const s of (kitNames || scenarios.map((s) => s.name)).map((n) => byName.get(n) || missingInJs(n))) {
    if (!(s.applies || always)(type)) continue;
    const missing = ["SENTE_URL", ...(s.needs || [])].filter((v) => !env[v]);
    test(
      `conformance ${type}: ${s.name}`,
      { skip: missing.length ? `${missing.join(", ")} not set` : false, timeout: 90000 },
      async () => {
        const ctx = new Ctx(s.name, type);
        try {
          await s.run(ctx);
        } finally {
          ctx.close();
        }
      },
    );
  }

// ---------------------------------------------------------------------------------------------
// Checks specific to this client (json value mapping, batches, reconnect()), same servers

for (const type of types) {
  const t = (name, fn) =>
    test(`js ${type}: ${name}`, { skip: URL_ ? false : "SENTE_URL not set", timeout: 30000 }, async () => {
      const ctx = new Ctx(name.split(" ")[0], type);
      try {
        await fn(await ctx.open({ uid: ctx.uid("js") }));
      } finally {
        ctx.close();
      }
    });

  t("json value mapping round trip", async ({ chsk }) => {
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
    const got = await chsk.request("demo/echo", sent, REQUEST_TIMEOUT);
    assert.deepEqual(got, { ...sent, k: "my-app/kw" });
    assert.equal(await chsk.request("demo/echo", "just a string", REQUEST_TIMEOUT), "just a string");
    assert.equal(await chsk.request("demo/echo", ":kw-looking", REQUEST_TIMEOUT), ":kw-looking");
  });

  t("batch of pushed events delivered event by event, in order", async ({ chsk, rec }) => {
    const events = [
      [kw("my-app/a"), 1],
      [kw("my-app/b"), { x: [1, 2, 3] }],
      [kw("my-app/c"), ":str"],
      [kw("my-app/a"), 2],
    ];
    assert.equal(await chsk.request("demo/push", events, REQUEST_TIMEOUT), 4);
    const got = [];
    while (got.length < events.length) {
      let id;
      const data = await rec.next((i) => i.startsWith("my-app/") && (id = i), REQUEST_TIMEOUT, "my-app push");
      got.push([id, data]);
    }
    assert.deepEqual(got, [
      ["my-app/a", 1],
      ["my-app/b", { x: [1, 2, 3] }],
      ["my-app/c", ":str"],
      ["my-app/a", 2],
    ]);
  });

  if (type == "ajax")
    test(
      `js ${type}: an oversize POST fails only that request; the connection stays open`,
      { skip: env.SENTE_SMALL_URL ? false : "SENTE_SMALL_URL not set", timeout: 30000 },
      async () => {
        const ctx = new Ctx("oversize-post", type);
        try {
          const { chsk } = await ctx.open({ url: env.SENTE_SMALL_URL });
          await assert.rejects(
            chsk.request("demo/echo", "x".repeat(64 * 1024), REQUEST_TIMEOUT),
            // HTTP 413, or a reset when the server stops reading the body early
            (e) => e.code == "error",
          );
          assert.equal(chsk.state.open, true);
          assert.equal(await chsk.request("demo/echo", "right after", REQUEST_TIMEOUT), "right after");
        } finally {
          ctx.close();
        }
      },
    );

  t("reconnect(): new handshake, same uid, requests work again", async ({ chsk, rec }) => {
    const uid = chsk.state.uid;
    chsk.reconnect();
    assert.equal(chsk.state.lastClose.reason, "requested-reconnect");
    const hs = await rec.nextId("chsk/handshake", OPEN_TIMEOUT);
    assert.equal(hs[3], false, "not the first handshake");
    assert.equal(hs[0], uid, "same uid");
    assert.equal(chsk.state.open, true);
    assert.equal(await chsk.request("demo/echo", "again", REQUEST_TIMEOUT), "again");
  });
}
