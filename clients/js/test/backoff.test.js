import { test } from "node:test";
import assert from "node:assert/strict";
import { fullJitterBackoff } from "../src/sente.js";

test("attempt 1 reconnects immediately", () => {
  for (let i = 0; i < 50; i++) assert.equal(fullJitterBackoff(1), 0);
});

test("full jitter within [0, min(cap, 1000 * 2^n))", () => {
  for (let n = 2; n < 60; n++)
    for (let i = 0; i < 50; i++) {
      const ms = fullJitterBackoff(n, 30000);
      assert.ok(Number.isInteger(ms) && ms >= 0 && ms < Math.min(30000, 1000 * 2 ** n), `${n}: ${ms}`);
    }
  assert.ok(fullJitterBackoff(3, 100) < 100);
});

test("jitter actually spreads", () => {
  const xs = new Set(Array.from({ length: 100 }, () => fullJitterBackoff(10)));
  assert.ok(xs.size > 50);
});

test("the default retries fast first, then backs off to the cap", async () => {
  const { fastFirstBackoff } = await import("../src/sente.js");
  assert.equal(fastFirstBackoff(1), 0);
  for (let n = 2; n <= 10; n++)
    for (let i = 0; i < 50; i++) assert.ok(fastFirstBackoff(n) < 2000, `${n}`);
  for (let i = 0; i < 50; i++) {
    assert.ok(fastFirstBackoff(11) < 4000);
    assert.ok(fastFirstBackoff(100, 30000) < 30000);
  }
});
