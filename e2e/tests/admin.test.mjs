// The admin page (sente::admin) as the demo mounts it at /admin: only the admin user sees it;
// it shows the live connections, the connected uids, event rates, reply latency and the recent
// rejections with their reasons, and it updates as users come. With SCREENSHOTS=1 it saves
// docs/demo-screenshots/admin.png (without, a run leaves the tree clean).
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { join, root, useBrowser } from '../lib.mjs';

const env = useBrowser({ demo: [] });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `f` until it returns a truthy value (fails after `ms`). */
async function eventually(f, what, ms = 15_000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await f();
    if (last) return last;
    await sleep(200);
  }
  assert.fail(`${what} (last: ${JSON.stringify(last)})`);
}

/** A refused channel-socket request: a wrong CSRF token (no session), and a foreign origin. */
async function refusedRequests(url) {
  const csrf = await fetch(`${url}/chsk?client-id=e2e-bad&handshake%3F=1&csrf-token=wrong`, {
    headers: { Origin: url },
  });
  assert.equal(csrf.status, 403);
  // A real session and its token, but another origin.
  const s = await fetch(`${url}/session`);
  const cookie = s.headers.get('set-cookie').split(';')[0];
  const { csrfToken: token } = await s.json();
  const origin = await fetch(
    `${url}/chsk?client-id=e2e-evil&handshake%3F=1&csrf-token=${encodeURIComponent(token)}`,
    { headers: { Origin: 'http://evil.example', Cookie: cookie } },
  );
  assert.equal(origin.status, 403);
  assert.equal(await origin.text(), 'Unauthorized origin');
}

test('the admin page: 403 for others; connections, uids, rates, latency and rejections, live', async () => {
  const desk = { viewport: { width: 1280, height: 900 } };
  const [aliceCtx, bobCtx, adminCtx, carolCtx] = await Promise.all(
    [0, 1, 2, 3].map(() => env.browser.newContext(desk)),
  );
  try {
    const alice = await join(aliceCtx, env.demo.url, 'alice');
    const bob = await join(bobCtx, env.demo.url, 'bob');
    for (const text of ['hello bob', 'how are you?']) {
      await alice.getByTestId('message-input').fill(text);
      await alice.getByTestId('send-button').click();
      await bob.getByTestId('message-list').getByText(text).waitFor({ timeout: 10_000 });
    }
    await refusedRequests(env.demo.url);

    // Not the admin: 403, signed in (alice) or not (a plain request).
    const asAlice = await alice.evaluate(async () => {
      const r = await fetch('/admin/snapshot.json');
      return r.status;
    });
    assert.equal(asAlice, 403);
    assert.equal((await fetch(`${env.demo.url}/admin`)).status, 403);
    const alicePage = await aliceCtx.newPage();
    const resp = await alicePage.goto(`${env.demo.url}/admin`);
    assert.equal(resp.status(), 403);
    await alicePage.close();

    // The admin user: signed in to the chat (one more WebSocket), then the page.
    await join(adminCtx, env.demo.url, 'admin');
    const page = await adminCtx.newPage();
    const adminResp = await page.goto(`${env.demo.url}/admin`);
    assert.equal(adminResp.status(), 200);
    const text = (id) => page.getByTestId(id).textContent();
    await eventually(async () => (await text('ws-count')) === '3', 'three WebSockets');
    assert.equal(await text('uids-count'), '3');
    assert.equal(await text('uids-ws'), '3');
    const uids = async () => page.getByTestId('uid-list').locator('li').allTextContents();
    assert.deepEqual((await uids()).sort(), ['admin', 'alice', 'bob']);

    // Traffic while the page watches: messages and pings (requests with replies).
    for (let i = 0; i < 4; i++) {
      await alice.getByTestId('message-input').fill(`message ${i}`);
      await alice.getByTestId('send-button').click();
      await bob.getByTestId('ping-button').click();
      await sleep(300);
    }
    await eventually(async () => Number(await text('rate-in')) > 0, 'a non-zero rate of events in');
    await eventually(async () => Number(await text('rate-out')) > 0, 'a non-zero rate of events out');
    await eventually(async () => (await text('p50')) !== '–', 'a reply latency');
    assert.match(await text('p99'), /µs|ms|s$/);

    // The rejections, with their reasons (and no token in sight).
    const rows = page.getByTestId('rejections').locator('tr');
    await eventually(async () => (await rows.count()) >= 2, 'two rejections listed');
    const csrfRow = page.getByTestId('rejections').locator('tr[data-reason="csrf"]');
    const originRow = page.getByTestId('rejections').locator('tr[data-reason="origin"]');
    assert.equal(await csrfRow.count(), 1);
    assert.match(await csrfRow.textContent(), /csrf403ajax-getGET \/chsk origin=http:\/\/127\.0\.0\.1/);
    assert.match(await originRow.textContent(), /origin403ajax-getGET \/chsk origin=http:\/\/evil\.example/);
    assert.equal(await text('rejected-total'), '2');
    assert.doesNotMatch(await page.getByTestId('rejections').textContent(), /wrong|csrf-token/);

    // Another user connects, over Ajax: the page follows.
    await join(carolCtx, env.demo.url, 'carol', '?type=ajax');
    await eventually(async () => (await text('uids-count')) === '4', 'four uids after carol joined');
    await eventually(async () => (await text('uids-ajax')) === '1', 'one uid over Ajax');
    await eventually(async () => (await text('ajax-count')) === '1', 'carol\'s poll held');
    assert.equal(await text('ws-count'), '3');
    assert.equal(await text('uids-ws'), '3');
    assert.deepEqual((await uids()).sort(), ['admin', 'alice', 'bob', 'carol']);

    // Let the charts fill a little, then the screenshot for the docs (SCREENSHOTS=1 only).
    if (process.env.SCREENSHOTS !== '1') return;
    for (let i = 0; i < 16; i++) {
      await bob.getByTestId('message-input').fill(`more ${i}`);
      await bob.getByTestId('send-button').click();
      await alice.getByTestId('ping-button').click();
      await sleep(500);
    }
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({
      path: path.join(root, 'docs', 'demo-screenshots', 'admin.png'),
      fullPage: true,
    });
  } finally {
    await Promise.all([aliceCtx, bobCtx, adminCtx, carolCtx].map((c) => c.close()));
  }
});
