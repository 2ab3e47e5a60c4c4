// The edn reader/printer (src/edn.js) against the golden vectors shared with the Rust edn tests
// (tests/data/edn-vectors) and the recorded real-Sente transcripts (tests/data/sente-transcripts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { read, print, edn, kw, Keyword, Sym, Char, Uuid, Ratio, BigDec, List, Tagged, EdnError, printDouble } from "../src/edn.js";

const data = new URL("../../../tests/data/", import.meta.url);
const jsonl = (path) =>
  readFileSync(new URL(path, data), "utf8")
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));

test("edn vectors: round-trip.jsonl reads and prints back byte for byte", () => {
  const rows = jsonl("edn-vectors/round-trip.jsonl");
  assert.ok(rows.length > 100);
  for (const r of rows) {
    const v = read(r.edn);
    assert.equal(print(v), r.js ?? r.edn, r.edn);
    // and the JS form is stable
    assert.equal(print(read(print(v))), print(v), r.edn);
  }
});

test("edn vectors: normalize.jsonl prints the normal form", () => {
  for (const r of jsonl("edn-vectors/normalize.jsonl")) assert.equal(print(read(r.in)), r.js ?? r.out, JSON.stringify(r.in));
});

test("edn vectors: invalid.jsonl is refused with an EdnError", () => {
  const rows = jsonl("edn-vectors/invalid.jsonl");
  assert.ok(rows.length > 70);
  for (const r of rows) assert.throws(() => read(r.in), EdnError, JSON.stringify(r.in));
});

test("edn vectors: recorded Sente frames and Ajax bodies round-trip", () => {
  let n = 0;
  for (const f of ["1-ws.jsonl", "2-ajax.jsonl", "2b-ajax-uid-param.jsonl", "3-auto-downgrade.jsonl", "4-keepalive.jsonl", "6-close.jsonl", "7-raw-ws.jsonl"]) {
    for (const r of jsonl("sente-transcripts/" + f)) {
      let text;
      if (r.kind == "ws-frame" && r.opcode == "text" && (f != "7-raw-ws.jsonl" || r.dir == "s2c")) text = r.payload;
      else if (r.dir == "s2c" && r.kind == "http-response" && r.status == 200 && r.body?.startsWith("[")) text = r.body;
      else if (r.kind == "http-request" && r.form?.ppstr) text = r.form.ppstr;
      if (text == null) continue;
      assert.equal(print(read(text)), text, f + ": " + text);
      n++;
    }
  }
  assert.ok(n > 70, "only " + n);
});

test("edn: raw client frames of the transcripts never hang or crash the reader", () => {
  for (const r of jsonl("sente-transcripts/7-raw-ws.jsonl"))
    if (r.kind == "ws-frame" && typeof r.payload == "string") {
      try {
        read(r.payload);
        read(r.payload, { unknownTags: "error" });
      } catch (e) {
        assert.ok(e instanceof EdnError, String(e));
      }
    }
});

test("edn mapping: reading", () => {
  const v = read(
    '{:id #uuid "66d96ab4-9834-40db-a3cd-42b361503ab9", :at #inst "2024-01-02T03:04:05.678-00:00", :user/roles #{:admin}, :c \\é, :l (1 2), :big 10000000000000000000N, :r 1/3, :d 1.5M, :s sym, :t #my/tag [1]}',
  );
  assert.deepEqual(Object.keys(v), ["id", "at", "user/roles", "c", "l", "big", "r", "d", "s", "t"]);
  assert.ok(v.id instanceof Uuid && v.id.value == "66d96ab4-9834-40db-a3cd-42b361503ab9");
  assert.equal(v.at.getTime(), 1704164645678);
  assert.ok(v["user/roles"] instanceof Set && [...v["user/roles"]][0] instanceof Keyword);
  assert.equal([...v["user/roles"]][0].name, "admin");
  assert.ok(v.c instanceof Char && v.c.char == "é");
  assert.ok(v.l instanceof List && Array.isArray(v.l) && v.l.length == 2);
  assert.equal(v.big, 10000000000000000000n);
  assert.ok(v.r instanceof Ratio && v.r.numer == 1n && v.r.denom == 3n && Math.abs(v.r - 1 / 3) < 1e-15);
  assert.ok(v.d instanceof BigDec && v.d.value == "1.5");
  assert.ok(v.s instanceof Sym && v.s.name == "sym");
  assert.ok(v.t instanceof Tagged && v.t.tag == "my/tag");
  // Maps with any key that is not a keyword are Maps.
  const m = read('{"a" 1, 2 :two, [1] nil}');
  assert.ok(m instanceof Map);
  assert.deepEqual([...m.keys()], ["a", 2, [1]]);
  // Keyword keys that objects would reorder or that are __proto__ also give a Map.
  assert.ok(read("{:b 1, :0 2}") instanceof Map);
  assert.ok(read("{:__proto__ 1}") instanceof Map);
  // Integers: Number when safe, else BigInt.
  assert.equal(read("9007199254740991"), 9007199254740991);
  assert.equal(read("9007199254740992"), 9007199254740992n);
  assert.equal(read("42N"), 42n);
  assert.equal(read(""), null);
});

test("edn mapping: printing JS values", () => {
  assert.equal(
    print({ a: 1, "ns/b": [kw("x"), new Set(["s"])], c: undefined, d: null }),
    '{:a 1, :ns/b [:x #{"s"}], :d nil}',
  );
  assert.equal(print(new Map([["k", 1], [kw("k"), 2], [1, 3]])), '{"k" 1, :k 2, 1 3}');
  assert.equal(print(List.of(1, 2)), "(1 2)");
  assert.equal(print([1.5, 1e21, 2 ** 53, -7n, 2n ** 64n]), "[1.5 1.0E21 9.007199254740992E15 -7 18446744073709551616N]");
  assert.equal(print(new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678))), '#inst "2024-01-02T03:04:05.678-00:00"');
  assert.equal(print(new Uuid("66D96AB4-9834-40DB-A3CD-42B361503AB9")), '#uuid "66d96ab4-9834-40db-a3cd-42b361503ab9"');
  assert.equal(print([new Char("\n"), new Char("😀"), new Ratio(-1, 3), new BigDec("1.50"), new Sym("a/b")]), "[\\newline \\😀 -1/3 1.50M a/b]");
  assert.equal(print(new Tagged("my/point", [1, 2])), "#my/point [1 2]");
  assert.equal(printDouble(5e-324), "4.9E-324");
  assert.equal(printDouble(1e-3), "0.001");
  assert.equal(printDouble(1e7), "1.0E7");
});

test("edn printing refuses values without an edn form", () => {
  for (const bad of [() => 1, Symbol("x"), new Uint8Array(2), new Date(NaN), kw("a b"), kw(""), { "not a kw": 1 }, new Sym("1x"), new Tagged("#x", 1)])
    assert.throws(() => print(bad), /^(TypeError|RangeError): edn: /, String(bad));
  const cyclic = [];
  cyclic.push(cyclic);
  assert.throws(() => print(cyclic), RangeError);
  assert.throws(() => new Uuid("nope"), TypeError);
  assert.throws(() => new Char("ab"), TypeError);
});

test("edn limits: depth and length like the Rust reader (64, 100000)", () => {
  assert.doesNotThrow(() => read("[".repeat(64) + "]".repeat(64)));
  assert.throws(() => read("[".repeat(65) + "]".repeat(65)), /deeper than 64/);
  assert.throws(() => read("[".repeat(100000)), /deeper than 64/); // fast, no stack overflow
  assert.throws(() => read("[0 1 2 3]", { maxLength: 3 }), /longer than 3/);
  assert.doesNotThrow(() => read("{:a 1 :b 2 :c 3}", { maxLength: 3 }));
  assert.throws(() => read("{:a 1 :b 2 :c 3 :d 4}", { maxLength: 3 }), /longer than 3/);
  assert.throws(() => read("[#foo/bar 1]", { unknownTags: "error" }), /unknown tag #foo\/bar/);
  assert.deepEqual(read("#my/p [1 2]", { tags: { "my/p": ([x, y]) => ({ x, y }) } }), { x: 1, y: 2 });
  // Errors say what and where.
  assert.throws(() => read('[1 {:a "x'), (e) => e instanceof EdnError && e.pos == 7 && /end of input in string at offset 7/.test(e.message));
  // A long string with many escapes reads in linear time.
  const big = '"' + "\\n".repeat(200000) + '"';
  const t = Date.now();
  assert.equal(read(big).length, 200000);
  assert.ok(Date.now() - t < 2000);
  // Numbers whose exact handling is quadratic are bounded as in the Rust reader: ratios beyond
  // 128 bits are kept as written (not normalized), radix integers are at most 4096 digits.
  const t2 = Date.now();
  const r = read("9".repeat(100000) + "7/" + "8".repeat(100000) + "3");
  assert.ok(r instanceof Ratio && String(r.denom).length == 100001);
  assert.equal(print(read("340282366920938463463374607431768211458/4")), "340282366920938463463374607431768211458/4");
  assert.equal(print(read("6/4")), "3/2");
  assert.throws(() => read("36r" + "z".repeat(4097)), /invalid number/);
  assert.ok(Date.now() - t2 < 2000);
});

test("edn fuzz: mutated vectors read or fail with an EdnError; what reads prints stably", () => {
  const lines = jsonl("edn-vectors/round-trip.jsonl").map((r) => r.edn);
  let seed = 7;
  const rnd = (n) => ((seed = (seed * 1103515245 + 12345) % 2147483648), seed % n);
  const alphabet = [...'[](){}#"\\:;^,_ !/-+.0123456789abcNMEe\n\t#{}:ns/x\u00e9😀'];
  for (let k = 0; k < 20000; k++) {
    let s = lines[rnd(lines.length)];
    for (let j = 1 + rnd(4); j > 0; j--) {
      const p = rnd(s.length + 1), op = rnd(3);
      if (op == 0) s = s.slice(0, p) + alphabet[rnd(alphabet.length)] + s.slice(p);
      else if (op == 1) s = s.slice(0, p) + s.slice(p + 1);
      else s = s.slice(0, p) + s.slice(p, p + 1 + rnd(20)).repeat(2) + s.slice(p + 1 + rnd(20));
    }
    let v;
    try {
      v = read(s);
    } catch (e) {
      assert.ok(e instanceof EdnError, JSON.stringify(s) + ": " + e);
      continue;
    }
    let p1;
    try {
      p1 = print(v);
    } catch (e) {
      assert.match(e.message, /^edn: cannot print the date/, JSON.stringify(s)); // e.g. year -1
      continue;
    }
    assert.equal(print(read(p1)), p1, JSON.stringify(s));
  }
});

test("edn: keywords of another copy of the core module are keywords", async () => {
  const other = await import("../src/sente.js?copy");
  assert.notEqual(other.Keyword, Keyword);
  assert.equal(print([other.kw("a/b"), { name: "x" }, new Sym("s")]), '[:a/b {:name "x"} s]');
  assert.equal(edn.kw(other.kw("chsk/handshake")), "chsk/handshake");
});

test("edn packer: envelopes as Sente writes them", () => {
  assert.equal(edn.param, null);
  assert.equal(edn.pack([[kw("my-app/req"), { n: 42 }], "3f2a9c"]), '[[:my-app/req {:n 42}] "3f2a9c"]');
  assert.equal(edn.pack([[kw("my-app/req"), { n: 42 }], kw("ajax")]), "[[:my-app/req {:n 42}] :ajax]");
  assert.equal(edn.pack([[kw("chsk/ws-pong")], null]), "[[:chsk/ws-pong] nil]");
  const env = edn.unpack("[[:chsk/handshake [:sente/nil-uid nil nil]] nil]");
  assert.equal(edn.kw(env[0][0]), "chsk/handshake");
  assert.equal(edn.kw("chsk/handshake"), undefined); // a string is not a keyword
  assert.equal(edn.val(env), env);
});
