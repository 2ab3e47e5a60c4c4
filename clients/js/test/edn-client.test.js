// The JS client with the edn packer (src/edn.js) against a real sente-rs server configured like a
// Sente server: its default packer is edn and the client sends no `packer` parameter, so the
// server reads and writes edn exactly as for Sente's own ClojureScript client. Skipped unless
// SENTE_URL is set (`bash scripts/test-js-client.sh` starts the test kit's `sente-test-server`,
// whose default packer is edn). Over ws, ajax and auto: handshake, request/reply with awkward
// data, pushes, and the wire (what the client sends is what a Sente >= 1.21 client sends).
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { createChannelSocket } from "../src/sente.js";
import { edn, kw, print, read, Keyword, Uuid, Char, Ratio, BigDec, List, Sym, Tagged } from "../src/edn.js";

const URL_ = process.env.SENTE_URL;
const TOKEN = process.env.SENTE_CSRF_TOKEN;
const skip = URL_ ? false : "SENTE_URL not set";
const TIMEOUT = 10000;

// Values a Sente (Clojure) app sends: namespaced keys, sets, #inst, #uuid, chars, unicode,
// strings that look like keywords, big integers, ratios, bigdecs, lists, maps with any keys.
// (No unknown tags: a Sente server's edn reader refuses them, and so does sente-rs.)
const awkward = () => ({
  "user/id": 7,
  "user/roles": new Set([kw("admin"), kw("dev/ops")]),
  at: new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678)),
  id: new Uuid("66d96ab4-9834-40db-a3cd-42b361503ab9"),
  chars: [new Char("a"), new Char("é"), new Char("\n"), new Char(" "), new Char("\\")],
  text: 'unicode: 日本語 ünïcödé 😀, "quotes" \\ back\nslash\ttab',
  colon: ":not-a-keyword",
  tilde: "~#set",
  big: 10000000000000000000n,
  neg: -9007199254740993n,
  ratio: new Ratio(-1, 3),
  dec: new BigDec("1.50"),
  list: List.of(1, List.of(2, 3)),
  map: new Map([
    ["str", 1],
    [2, kw("two")],
    [[1, 2], null],
    [new Uuid("00000000-0000-0000-0000-000000000000"), true],
  ]),
  sym: new Sym("my.ns/sym"),
  floats: [1.5, -0.25, 1e-7, 1e21],
  empty: [{}, [], new Set(), "", List.of()],
  nil: null,
});

/** Records the client's wire traffic: WS URLs and frames, HTTP requests. */
function wire() {
  const w = { wsUrls: [], wsFrames: [], http: [] };
  w.WebSocket = class extends WebSocket {
    constructor(url, ...rest) {
      super(url, ...rest);
      w.wsUrls.push(url);
      const send = this.send.bind(this);
      this.send = (data, ...more) => (w.wsFrames.push(data), send(data, ...more));
    }
  };
  w.fetch = (url, init) => {
    w.http.push({ url, method: init.method, body: init.body, headers: init.headers });
    return fetch(url, init);
  };
  return w;
}

async function open(type, uid) {
  const w = wire();
  const chsk = createChannelSocket(URL_, {
    type,
    packer: edn,
    csrfToken: TOKEN,
    params: { uid },
    WebSocket: w.WebSocket,
    fetch: w.fetch,
    reprobeWsMs: 0,
  });
  const hs = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(type + ": no handshake")), TIMEOUT);
    chsk.on("chsk/handshake", (data) => (clearTimeout(t), resolve(data)));
  });
  return { chsk, hs, w };
}

const n = (() => {
  let i = 0;
  return () => ++i;
})();

for (const type of ["ws", "ajax", "auto"]) {
  test(`edn ${type}: handshake as from a Sente server`, { skip }, async () => {
    const uid = "edn-" + type + "-" + n();
    const { chsk, hs } = await open(type, uid);
    try {
      // [uid nil handshake-data first?]: the uid is the `uid` param, a string; the test server's
      // handshake data is {:hello "world"}.
      assert.deepEqual(hs, [uid, null, { hello: "world" }, true]);
      assert.equal(chsk.state.open, true);
      assert.equal(chsk.state.uid, uid);
      assert.equal(chsk.state.type, type == "ajax" ? "ajax" : "ws");
    } finally {
      chsk.disconnect();
    }
  });

  test(`edn ${type}: request/reply with awkward data round-trips exactly`, { skip }, async () => {
    const { chsk } = await open(type, "edn-echo-" + n());
    try {
      const sent = awkward();
      const reply = await chsk.request("demo/echo", sent, TIMEOUT);
      assert.equal(print(reply), print(sent));
      assert.deepEqual(reply, sent);
      assert.ok(reply["user/roles"] instanceof Set && [...reply["user/roles"]][0] instanceof Keyword);
      assert.equal(reply.at.getTime(), sent.at.getTime());
      // A string that starts with ":" stays a string; a keyword reply is a Keyword.
      assert.equal(await chsk.request("demo/echo", ":x", TIMEOUT), ":x");
      assert.deepEqual(await chsk.request("demo/echo", kw("ns/x"), TIMEOUT), kw("ns/x"));
      assert.equal(await chsk.request("demo/echo", undefined, TIMEOUT), null);
      // Fire-and-forget works too.
      assert.equal(chsk.send("demo/echo", { x: 1 }), true);
      // A value edn cannot print fails locally, at once, with a clear error.
      assert.throws(() => chsk.send("demo/echo", { "not a keyword": 1 }), /edn: cannot print keyword/);
      await assert.rejects(chsk.request("demo/echo", new Uint8Array(1), TIMEOUT), /edn: bytes/);
      // A tag the server cannot read is refused by it (Ajax: HTTP 400; WS: the frame is dropped).
      if (type == "ajax") await assert.rejects(chsk.request("demo/echo", new Tagged("my/point", [1]), TIMEOUT), /400/);
      // The connection is unaffected.
      assert.deepEqual(await chsk.request("demo/echo", [1], TIMEOUT), [1]);
    } finally {
      chsk.disconnect();
    }
  });

  test(`edn ${type}: pushes arrive in order with their data`, { skip }, async () => {
    const { chsk } = await open(type, "edn-push-" + n());
    const got = [];
    chsk.on("*", (data, id) => id.startsWith("demo/") && got.push([id, data]));
    try {
      assert.deepEqual(await chsk.request("demo/push-me", 3, TIMEOUT), kw("ok"));
      const data = awkward();
      await chsk.request("demo/push", [[kw("demo/a"), data], [kw("demo/b")], [kw("demo/c"), "é"]], TIMEOUT);
      const deadline = Date.now() + TIMEOUT;
      while (got.length < 6 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(
        got.slice(0, 3),
        [0, 1, 2].map((i) => ["demo/pushed", { i }]),
      );
      assert.deepEqual(got.slice(3).map(([id]) => id), ["demo/a", "demo/b", "demo/c"]);
      assert.equal(print(got[3][1]), print(data));
      assert.equal(got[4][1], null);
      assert.equal(got[5][1], "é");
    } finally {
      chsk.disconnect();
    }
  });

  test(`edn ${type}: the wire is a Sente >= 1.21 client's (no packer param, [payload cb] envelopes)`, { skip }, async () => {
    const uid = "edn-wire-" + n();
    const { chsk, w } = await open(type, uid);
    try {
      await chsk.request("demo/echo", { "my/k": 1 }, TIMEOUT);
      chsk.send("demo/echo", { "my/k": 2 });
      await chsk.request("demo/echo", 3, TIMEOUT);
      const base = URL_;
      for (const u of [...w.wsUrls, ...w.http.map((r) => r.url)]) assert.doesNotMatch(u, /packer/, u);
      if (type != "ajax") {
        const q = "?uid=" + uid + "&ext=idem%2Clarge&client-id=" + chsk.clientId + "&csrf-token=" + encodeURIComponent(TOKEN);
        // Plus the extensions' parameters (a Sente server ignores them; `large: false` and
        // `resume: false` drop theirs).
        assert.equal(w.wsUrls[0], base.replace(/^http/, "ws") + q + "&resume=");
        const frames = w.wsFrames.filter((f) => f.includes("demo/echo"));
        assert.match(frames[0], /^\[\[:demo\/echo \{:my\/k 1\}\] "[0-9a-f]{6}"\]$/);
        assert.equal(frames[1], "[[:demo/echo {:my/k 2}] nil]");
        for (const f of w.wsFrames) assert.ok(Array.isArray(read(f)) && !/^[+-]/.test(f), f);
      } else {
        const gets = w.http.filter((r) => r.method == "GET");
        // Plus the extensions announced, and the resume extension's parameter on every GET:
        // empty on the handshake, then the position the server gave (a Sente server ignores
        // both; `resume: false` drops it).
        assert.match(gets[0].url, new RegExp("^" + base.replace(/[?.]/g, "\\$&") + "\\?uid=" + uid + "&ext=idem%2Clarge&udt=\\d+&client-id=" + chsk.clientId + "&handshake%3F=1&resume=$"));
        assert.match(gets[1].url, /&client-id=[0-9a-f-]{36}&resume=[0-9a-z-]+%3A\d+$/);
        const posts = w.http.filter((r) => r.method == "POST");
        assert.equal(posts.length, 3);
        for (const p of posts) {
          assert.equal(p.url, base); // no query at all, as Sente >= 1.21
          assert.equal(p.headers["X-CSRF-Token"], TOKEN);
          assert.equal(p.headers["X-Requested-With"], "XMLHTTPRequest");
          assert.match(p.body, /^udt=\d+&client-id=[0-9a-f-]{36}&ppstr=[^&]+$/);
        }
        const ppstr = (p) => decodeURIComponent(p.body.split("ppstr=")[1]);
        assert.equal(ppstr(posts[0]), "[[:demo/echo {:my/k 1}] :ajax]");
        assert.equal(ppstr(posts[1]), "[[:demo/echo {:my/k 2}] nil]");
        assert.equal(ppstr(posts[2]), "[[:demo/echo 3] :ajax]");
        // encodeURIComponent, as Sente (spaces are %20, not +).
        assert.match(posts[0].body, /%20%3Aajax%5D$/);
      }
    } finally {
      chsk.disconnect();
    }
  });
}

test("edn packer: a sente-rs server whose default is not edn can be told with { ...edn, param: 'edn' }", { skip }, async () => {
  const w = wire();
  const chsk = createChannelSocket(URL_, {
    type: "ajax",
    packer: { ...edn, param: "edn" },
    csrfToken: TOKEN,
    fetch: w.fetch,
  });
  try {
    assert.deepEqual(await new Promise((r) => chsk.on("chsk/handshake", r)).then(() => chsk.request("demo/echo", new Set([1]), TIMEOUT)), new Set([1]));
    assert.match(w.http[0].url, /&packer=edn$/);
    assert.match(w.http.find((r) => r.method == "POST").url, /\?packer=edn$/);
  } finally {
    chsk.disconnect();
  }
});
