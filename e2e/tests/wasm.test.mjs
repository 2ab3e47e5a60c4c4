// The WASM client build in a page: the size-budget build of crates/sente-client
// (examples/browser.rs, wasm-bindgen --target web into e2e/wasm-page/pkg) loaded by
// e2e/wasm-page/index.html from a static server, talking to a real sente-rs server on another
// origin (the test kit's `sente-test-server --cors`) from headless Chromium.
//
// Nothing is built here: scripts/test-all.sh builds the wasm package and the test server first.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  launchBrowser,
  root,
  shot,
  startStaticServer,
  startTestServer,
  stopTestServer,
} from '../lib.mjs';

const pageDir = path.join(root, 'e2e', 'wasm-page');

let browser;
let srv;
let site;

before(async () => {
  if (!fs.existsSync(path.join(pageDir, 'pkg', 'browser.js'))) {
    throw new Error(
      'e2e/wasm-page/pkg missing: build it first (see scripts/test-all.sh):\n' +
        '  cargo build -p sente-client --target wasm32-unknown-unknown --profile wasm --example browser\n' +
        '  wasm-bindgen --target web --out-dir e2e/wasm-page/pkg target/wasm32-unknown-unknown/wasm/examples/browser.wasm',
    );
  }
  srv = await startTestServer(['--cors']);
  site = await startStaticServer(pageDir);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  site?.server.close();
  await stopTestServer(srv);
});

/** Opens the harness page and waits for the wasm module to be initialised. */
async function openPage(ctx) {
  const page = await ctx.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(String(e)));
  await page.goto(`${site.url}/index.html`);
  await page.waitForFunction(() => window.harnessReady || window.harnessError, null, { timeout: 30_000 });
  assert.equal(await page.evaluate(() => window.harnessError ?? null), null);
  await page.getByTestId('status').filter({ hasText: /^ready$/ }).waitFor();
  return { page, problems };
}

/** The events of client `name` so far (edn strings). */
const events = (page, name) => page.evaluate((n) => window.harness.events[n], name);

/** Waits until client `name` has seen `count` events starting with `prefix`; returns them. */
async function waitEvents(page, name, prefix, count = 1, timeout = 20_000) {
  await page.waitForFunction(
    ([n, p, c]) => window.harness.events[n].filter((e) => e.startsWith(p)).length >= c,
    [name, prefix, count],
    { timeout },
  );
  return (await events(page, name)).filter((e) => e.startsWith(prefix));
}

const request = (page, name, id, data, timeoutMs = 10_000) =>
  page.evaluate(([n, i, d, t]) => window.harness.request(n, i, d, t), [name, id, data, timeoutMs]);

for (const kind of ['ws', 'ajax']) {
  test(`the WASM client in a page over ${kind}: handshake, request/reply, pushes`, async () => {
    const ctx = await browser.newContext();
    try {
      const { page, problems } = await openPage(ctx);
      const uid = `wasm-page-${kind}`;
      await page.evaluate(
        ([url, token, k, u]) => window.harness.connect('a', url, token, k, { uid: u }),
        [srv.url, srv.csrf_token, kind, uid],
      );

      // Handshake: [uid nil handshake-data first?], and an open state of the right type.
      const [hs] = await waitEvents(page, 'a', '[:chsk/handshake ');
      assert.equal(hs, `[:chsk/handshake ["${uid}" nil {:hello "world"} true]]`);
      const state = await page.evaluate(() => window.harness.state('a'));
      assert.match(state, /:open\? true/);
      assert.match(state, new RegExp(`:type :${kind}\\b`));
      assert.match(state, new RegExp(`:uid "${uid}"`));

      // Request/reply with rich edn data, a nil reply and a local timeout.
      const data = '{:msg ["héllo \\"world\\"" -42 1.5 :a/b nil true #{1} {:deep []}]}';
      assert.deepEqual(await request(page, 'a', 'demo/echo', data), { reply: data });
      assert.deepEqual(await request(page, 'a', 'demo/echo', 'nil'), { reply: 'nil' });
      assert.deepEqual(await request(page, 'a', 'demo/no-reply', '1', 500), { error: 'timeout' });

      // Pushes from the server to this uid arrive in order.
      assert.deepEqual(await request(page, 'a', 'demo/push-me', '3'), { reply: ':ok' });
      const pushed = await waitEvents(page, 'a', '[:demo/pushed ', 3);
      assert.deepEqual(pushed, ['[:demo/pushed {:i 0}]', '[:demo/pushed {:i 1}]', '[:demo/pushed {:i 2}]']);

      // A second client of the same uid (fan-out): both get a batch pushed by the other.
      await page.evaluate(
        ([url, token, k, u]) => window.harness.connect('b', url, token, k, { uid: u }),
        [srv.url, srv.csrf_token, kind, uid],
      );
      const [hsB] = await waitEvents(page, 'b', '[:chsk/handshake ');
      assert.match(hsB, new RegExp(`^\\[:chsk/handshake \\["${uid}" `));
      const batch = '[[:my-app/a 1] [:my-app/b {:x [1 2 3]}]]';
      assert.deepEqual(await request(page, 'b', 'demo/push', batch), { reply: '2' });
      for (const name of ['a', 'b']) {
        const got = await waitEvents(page, name, '[:my-app/', 2);
        assert.deepEqual(got, ['[:my-app/a 1]', '[:my-app/b {:x [1 2 3]}]'], `client ${name}`);
      }

      await shot(page, `wasm-client-${kind}`);
      await page.evaluate(() => (window.harness.disconnect('a'), window.harness.disconnect('b')));
      await page.waitForFunction(() => /:open\? false/.test(window.harness.state('a')));
      assert.deepEqual(await request(page, 'a', 'demo/echo', '1', 1000), { error: 'closed' });
      assert.deepEqual(problems, []);
    } finally {
      await ctx.close();
    }
  });
}

test('the WASM client in a page, auto mode: falls back to Ajax when the WebSocket upgrade is refused', async () => {
  const ctx = await browser.newContext();
  try {
    const { page, problems } = await openPage(ctx);
    await page.evaluate(
      ([url, token]) => window.harness.connect('auto', url, token, 'auto', { uid: 'wasm-page-auto' }),
      [srv.refuse_ws_url, srv.csrf_token],
    );
    const [hs] = await waitEvents(page, 'auto', '[:chsk/handshake ');
    assert.equal(hs, '[:chsk/handshake ["wasm-page-auto" nil {:hello "world"} true]]');
    const state = await page.evaluate(() => window.harness.state('auto'));
    assert.match(state, /:type :ajax\b/);
    assert.match(state, /:open\? true/);
    assert.match(state, /:last-ws-error \{/);
    assert.deepEqual(await request(page, 'auto', 'demo/echo', '[:still :here]'), { reply: '[:still :here]' });
    await shot(page, 'wasm-client-auto-downgrade');
    await page.evaluate(() => window.harness.disconnect('auto'));
    assert.deepEqual(problems, []);
  } finally {
    await ctx.close();
  }
});
