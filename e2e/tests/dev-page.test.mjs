// Issue 16 items 6-9 in a real browser, with a page written as a developer would write it from
// clients/js/README.md (e2e/dev-page/index.html), served by `sente-dev-page-server` (the test
// kit's binary: CSRF on, allowed origins from the command line):
// - 6: a request made right after createChannelSocket is queued and answered; ready();
// - 7: open/close/reconnecting events, once, lastClose through a real server outage;
// - 8: a slow handler does not hold an unrelated request past the 1 s budget; a failing
//   handler's request fails at once with "error" (WS and Ajax);
// - 9: the same page on another origin: allowed (client.js and the endpoint over CORS) vs
//   refused (client.js refused; with a local copy of the client, lastClose says why).
// Screenshots at phone and desktop sizes go to e2e/artifacts/dev-page-*.png.
//
// Nothing is built here: scripts/test-all.sh builds the test kit's binaries first.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  freePort,
  launchBrowser,
  root,
  shot,
  startDevPageServer,
  startStaticServer,
  stopTestServer,
  tmpDir,
} from '../lib.mjs';

const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 800 };

let browser;
let dev; // the developer's server (page, /chsk, /chsk/client.js)
let devPort;
let allowed; // a static site on another origin that the server allows
let refused; // a static site on another origin that it does not

before(async () => {
  // Both static sites serve the page and a copy of the client (as a developer may vendor it).
  const dir = tmpDir();
  fs.copyFileSync(path.join(root, 'e2e', 'dev-page', 'index.html'), path.join(dir, 'index.html'));
  fs.copyFileSync(path.join(root, 'clients', 'js', 'src', 'sente.js'), path.join(dir, 'client.js'));
  allowed = await startStaticServer(dir);
  refused = await startStaticServer(dir);
  devPort = await freePort();
  dev = await startDev();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  allowed?.server.close();
  refused?.server.close();
  await stopTestServer(dev);
});

const startDev = () => startDevPageServer(['--port', String(devPort), '--allow-origin', allowed.url]);

let n = 0;
/** Opens the page at `url` (query added) in a fresh context of the given size. */
async function open(url, query, viewport = DESKTOP) {
  const ctx = await browser.newContext({ viewport });
  const page = await ctx.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(String(e)));
  await page.goto(`${url}/${url === dev.url ? '' : 'index.html'}?uid=dev-${process.pid}-${++n}&${query}`);
  await page.waitForFunction(() => window.pageReady, null, { timeout: 15_000 });
  return { ctx, page, problems };
}

const pageLog = (page) => page.evaluate(() => window.pageLog);
async function logged(page, re, timeout = 10_000) {
  await page.waitForFunction((src) => window.pageLog.some((l) => new RegExp(src).test(l)), re.source, { timeout });
  return (await pageLog(page)).find((l) => re.test(l));
}

for (const type of ['ws', 'ajax']) {
  test(`${type}: the README's first page works as written (item 6), with open/once/ready (item 7)`, async () => {
    for (const [size, viewport] of [['phone', PHONE], ['desktop', DESKTOP]]) {
      const { ctx, page, problems } = await open(dev.url, `type=${type}`, viewport);
      await logged(page, /^first reply: \{"hello":"before open"\}$/);
      await logged(page, /^ready: true$/);
      const log = await pageLog(page);
      assert.equal(log[0], 'request sent before open: false', 'the request was made before the socket opened');
      assert.equal(log.filter((l) => l === 'first open (once)').length, 1);
      assert.equal(await page.getByTestId('status').textContent(), 'connected');
      assert.equal(await page.evaluate(() => window.chsk.state.type), type);
      await shot(page, `dev-page-${type}-open-${size}`);
      assert.deepEqual(problems, []);
      await ctx.close();
    }
  });

  test(`${type}: a slow handler does not hold an unrelated request; a failing one fails at once (item 8)`, async () => {
    const { ctx, page } = await open(dev.url, `type=${type}`);
    await logged(page, /^ready: true$/);
    const r = await page.evaluate(() => window.slowThenEcho(30_000));
    assert.equal(r.reply, 'unrelated');
    assert.ok(r.ms < 2000, `the unrelated request waited ${r.ms} ms behind a 30 s handler (budget 1 s)`);
    // Under the budget, one client's requests keep their order (over WebSocket: Ajax POSTs go
    // over separate HTTP connections and may reach the server in another order).
    if (type === 'ws') {
      const order = await page.evaluate(async () => {
        const done = [];
        await Promise.all([400, 200, 0].map((ms) => window.chsk.request('dev/slow', ms, 5000).then(() => done.push(ms))));
        return done;
      });
      assert.deepEqual(order, [400, 200, 0]);
    }
    const f = await page.evaluate(() => window.failing());
    assert.equal(f.code, 'error');
    assert.match(f.message, /handler failed \(chsk\/error\)/);
    assert.ok(f.ms < 1000, `the failing handler's request took ${f.ms} ms (its timeout is 10 s)`);
    assert.equal(await page.evaluate(() => window.chsk.state.open), true);
    await page.getByTestId('fail').click();
    await logged(page, /^failing handler: error/);
    await shot(page, `dev-page-${type}-slow-and-failing`);
    await ctx.close();
  });
}

test('a server outage: close, reconnecting with lastClose, then open again; once fired once (item 7)', async () => {
  const { ctx, page } = await open(dev.url, 'type=auto', PHONE);
  await logged(page, /^ready: true$/);
  await stopTestServer(dev);
  await logged(page, /^close unexpected$/);
  await logged(page, /^reconnecting #\d+$/);
  const lastClose = await page.evaluate(() => window.chsk.state.lastClose);
  assert.equal(lastClose.reason, 'unexpected');
  assert.equal(typeof lastClose.udt, 'number');
  assert.match(await page.getByTestId('last-close').textContent(), /^unexpected/);
  assert.match(await page.getByTestId('status').textContent(), /^(retrying in \d+ s|offline \(unexpected\))$/);
  await shot(page, 'dev-page-outage-phone');
  dev = await startDev();
  await page.getByTestId('retry').click();
  await page.getByTestId('status').filter({ hasText: /^reconnected$/ }).waitFor({ timeout: 20_000 });
  const log = await pageLog(page);
  assert.equal(log.filter((l) => l === 'first open (once)').length, 1);
  assert.ok(log.filter((l) => l.startsWith('open ')).length >= 2, log.join('\n'));
  assert.equal(await page.evaluate(() => window.chsk.request('dev/echo', 'back', 5000)), 'back');
  await shot(page, 'dev-page-reconnected-phone');
  await ctx.close();
});

for (const type of ['auto', 'ajax']) {
  test(`${type}: a page on an allowed other origin loads /chsk/client.js and talks to the server (item 9)`, async () => {
    const q = `server=${encodeURIComponent(dev.url)}&token=${dev.csrf_token}&type=${type}`;
    const { ctx, page, problems } = await open(allowed.url, q);
    assert.equal(await page.evaluate(() => window.pageReady), 'yes');
    await logged(page, /^first reply: \{"hello":"before open"\}$/);
    const f = await page.evaluate(() => window.failing());
    assert.equal(f.code, 'error');
    assert.deepEqual(problems, []);
    await shot(page, `dev-page-cross-origin-allowed-${type}`);
    await ctx.close();
  });
}

test('a page on a refused origin cannot load /chsk/client.js, and says so (item 9)', async () => {
  const q = `server=${encodeURIComponent(dev.url)}&token=${dev.csrf_token}`;
  const { ctx, page } = await open(refused.url, q, PHONE);
  assert.equal(await page.evaluate(() => window.pageReady), 'no-client');
  assert.equal(await page.getByTestId('status').textContent(), 'client.js could not be loaded');
  // What the browser's network panel shows: the server's 403 and its reason.
  const r = await fetch(`${dev.url}/chsk/client.js`, { headers: { Origin: refused.url } });
  assert.equal(r.status, 403);
  assert.match(await r.text(), new RegExp(`^Unauthorized origin: pages at ${refused.url} may not use this server`));
  await shot(page, 'dev-page-cross-origin-refused-script-phone');
  await ctx.close();
});

for (const type of ['ajax', 'ws', 'auto']) {
  test(`${type}: with its own copy of the client, a refused origin gets a clear lastClose (item 9)`, async () => {
    const q = `server=${encodeURIComponent(dev.url)}&token=${dev.csrf_token}&type=${type}&client=./client.js`;
    const { ctx, page } = await open(refused.url, q, DESKTOP);
    await page.waitForFunction(() => window.chsk.state.lastClose?.message, null, { timeout: 15_000 });
    const lc = await page.evaluate(() => window.chsk.state.lastClose);
    assert.equal(lc.reason, 'unexpected');
    assert.match(lc.message, /refused this origin/);
    assert.ok(lc.message.includes(refused.url), lc.message);
    assert.match(lc.message, type === 'ws' ? /WebSocket/ : /long-poll/);
    assert.match(await page.getByTestId('last-close').textContent(), /refused this origin/);
    assert.equal(await page.evaluate(() => window.chsk.state.open), false);
    // The request made before open fails with its timeout, not silently.
    assert.match(await logged(page, /^first request failed: timeout/, 10_000), /not open within 5000 ms \(.*refused this origin/);
    await shot(page, `dev-page-cross-origin-refused-${type}`);
    await ctx.close();
  });
}
