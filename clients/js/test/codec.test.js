import { test } from "node:test";
import assert from "node:assert/strict";
import { encode, decode, encodeEvent, kw, Keyword, Tagged } from "../src/sente.js";

const wire = (x) => JSON.stringify(encode(x));

test("scalars: nil, numbers, booleans", () => {
  assert.equal(wire(null), "null");
  assert.equal(wire(undefined), "null");
  assert.equal(wire(1.5), "1.5");
  assert.equal(wire(true), "true");
  assert.equal(decode(null), null);
  assert.equal(decode(42), 42);
  assert.equal(decode(false), false);
});

test("strings starting with ':' or '~' get one extra '~'", () => {
  assert.equal(wire("hello"), '"hello"');
  assert.equal(wire(":x"), '"~:x"');
  assert.equal(wire("~y"), '"~~y"');
  assert.equal(wire("~:z"), '"~~:z"');
  assert.equal(wire(""), '""');
  for (const s of ["hello", ":x", "~y", "~~", "~:z", "", "a:b"]) assert.equal(decode(encode(s)), s);
});

test("keywords encode as ':ns/name' and decode to plain strings", () => {
  assert.equal(wire(kw("ns/name")), '":ns/name"');
  assert.equal(wire(kw(":ns/name")), '":ns/name"');
  assert.ok(kw("a") instanceof Keyword);
  assert.equal(String(kw("a/b")), ":a/b");
  assert.equal(decode(":ok"), "ok");
  assert.equal(decode(":sente/nil-uid"), "sente/nil-uid");
  assert.deepEqual(decode({ status: ":ok" }), { status: "ok" });
});

test("arrays and maps; keys starting with '~' are escaped", () => {
  assert.equal(wire([1, "a", [null]]), '[1,"a",[null]]');
  assert.equal(wire({ a: 1, "~b": ":c", skip: undefined }), '{"a":1,"~~b":"~:c"}');
  assert.deepEqual(decode({ a: 1, "~~b": "~:c" }), { a: 1, "~b": ":c" });
  assert.equal(wire(new Map([["k", 1], [kw("q/r"), 2]])), '{"k":1,"q/r":2}');
});

test("tagged forms", () => {
  const d = new Date("2024-01-02T03:04:05.678Z");
  assert.equal(wire(d), '{"~#inst":"2024-01-02T03:04:05.678Z"}');
  assert.equal(decode({ "~#inst": "2024-01-02T03:04:05.678Z" }).getTime(), d.getTime());
  assert.equal(wire(new Set([1, ":a"])), '{"~#set":[1,"~:a"]}');
  assert.deepEqual(decode({ "~#set": [1, "~:a", ":k"] }), new Set([1, ":a", "k"]));
  assert.equal(wire(123n), '{"~#bigint":"123"}');
  assert.equal(decode({ "~#bigint": "123456789012345678901234567890" }), 123456789012345678901234567890n);
  assert.equal(decode({ "~#uuid": "7d0c1b9e-3b7a-4c1e-9f2a-5a6b7c8d9e0f" }), "7d0c1b9e-3b7a-4c1e-9f2a-5a6b7c8d9e0f");
  assert.equal(wire(new Uint8Array([1, 2, 255])), '{"~#bytes":"AQL/"}');
  assert.equal(wire(new Map([[1, "a"]])), '{"~#map":[[1,"a"]]}');
  for (const [tag, v] of [["char", "a"], ["sym", "foo"], ["bigdec", "1.5"], ["ratio", [1, 3]], ["bytes", "AQL/"]]) {
    const t = decode({ ["~#" + tag]: v });
    assert.ok(t instanceof Tagged);
    assert.equal(t.tag, tag);
    assert.deepEqual(t.value, v);
    assert.deepEqual(encode(t), { ["~#" + tag]: v });
  }
  const m = decode({ "~#map": [[[1, 2], ":v"]] });
  assert.deepEqual([m.tag, m.value], ["map", [[[1, 2], "v"]]]);
  const p = decode({ "~#tag": ["my/point", { x: 1 }] });
  assert.deepEqual([p.tag, p.value], ["tag", ["my/point", { x: 1 }]]);
  assert.equal(wire(new Tagged("tag", ["my/point", { x: ":1" }])), '{"~#tag":["my/point",{"x":"~:1"}]}');
  // A real map whose single key looks like a tag survives the round trip.
  assert.deepEqual(decode(encode({ "~#set": 1 })), { "~#set": 1 });
});

test("events: id always a keyword", () => {
  assert.equal(JSON.stringify(encodeEvent("my-app/a", 1)), '[":my-app/a",1]');
  assert.equal(JSON.stringify(encodeEvent(":my-app/a", { x: ":k" })), '[":my-app/a",{"x":"~:k"}]');
  assert.equal(JSON.stringify(encodeEvent(kw("chat/who"))), '[":chat/who"]');
  assert.throws(() => encodeEvent("no-namespace", 1), TypeError);
});

test("wire examples from the lead's spec decode as documented", () => {
  const hs = decode(JSON.parse('[[":chsk/handshake",["alice",null,{"role":":admin"}]],null]'));
  assert.deepEqual(hs, [["chsk/handshake", ["alice", null, { role: "admin" }]], null]);
  const batch = decode(JSON.parse('[[[":my-app/a",1],[":my-app/b",{"x":[1,2,3]}]],null]'));
  assert.deepEqual(batch[0], [["my-app/a", 1], ["my-app/b", { x: [1, 2, 3] }]]);
  assert.throws(() => encode(() => 1), TypeError);
});
