// Delivery across reconnects in the demo, as a user meets it (issue 15 item 8): one page's
// connection goes through a proxy that the test cuts. After a short blip the page resumes: every
// message sent meanwhile appears once, in order, with no gap marker (`recovered` true). After an
// outage longer than the replay window (set short here), the page shows the gap marker and the
// room's history fills in what it missed. A reload shows the history once. With SCREENSHOTS=1 it
// saves docs/demo-screenshots/gap-marker.png. Over Ajax the page resumes the same way.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { join, root, startCuttableProxy, useBrowser, waitOpen, wantScreenshots } from '../lib.mjs';

const WINDOW_MS = 4_000;
const env = useBrowser({ demo: ['--replay-window-ms', String(WINDOW_MS)] });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The message list of `page`, top to bottom: each room message's text, and "GAP" for a marker. */
const items = (page) =>
  page.$$eval('[data-testid=message-list] > li', (lis) =>
    lis.map((li) => (li.dataset.testid === 'gap-marker' ? 'GAP' : li.querySelector('.text').textContent)),
  );

/** Sends `text` to the room from `page` and waits until the page shows it. */
async function say(page, text) {
  await page.getByTestId('message-input').fill(text);
  await page.getByTestId('send-button').click();
  await page.getByTestId('message-list').getByText(text, { exact: true }).waitFor({ timeout: 10_000 });
}

/** Cuts the page's connection and waits for its "reconnecting" banner. */
async function cut(proxy, page) {
  proxy.cut();
  await page.getByTestId('offline-banner').filter({ hasText: /Reconnecting/ }).waitFor({ timeout: 15_000 });
}

/** Lets the connection through again and reconnects with the banner's "Retry now" (unless the
 * page's own next attempt comes first). */
async function restore(proxy, page) {
  proxy.restore();
  const banner = page.getByTestId('offline-banner');
  await page
    .getByTestId('retry-now')
    .click({ timeout: 5_000 })
    .catch(async (e) => {
      if (await banner.isVisible()) throw e;
    });
  await waitOpen(page, 15_000);
  await page.waitForFunction(() => document.querySelector('[data-testid=offline-banner]').hidden);
}

/** Waits until `page` shows `text`. */
const shows = (page, text) =>
  page.getByTestId('message-list').getByText(text, { exact: true }).waitFor({ timeout: 15_000 });

test('no message lost across a blip; past the replay window, a gap marker and the history', async () => {
  const { browser, demo } = env;
  const proxy = await startCuttableProxy(demo.port);
  const [annCtx, bobCtx] = await Promise.all([browser.newContext(), browser.newContext()]);
  try {
    // Ann connects through the proxy, Bob directly. Ann's first handshake gives her a position.
    const ann = await join(annCtx, proxy.url, 'ann');
    const bob = await join(bobCtx, demo.url, 'bob');
    await say(bob, 'before the blip');
    await shows(ann, 'before the blip');
    assert.equal(await ann.getByTestId('offline-banner').isHidden(), true);

    // A blip: Bob talks while Ann is away, Ann comes back within the window.
    await cut(proxy, ann);
    const blip = ['during the blip 1', 'during the blip 2', 'during the blip 3', 'during the blip 4'];
    for (const text of blip) await say(bob, text);
    await restore(proxy, ann);
    await shows(ann, blip.at(-1));
    // Once, in order, no marker: the server replayed them.
    assert.equal(await ann.evaluate(() => window.chsk.state.recovered), true);
    const before = ['before the blip', ...blip];
    assert.deepEqual(await items(ann), before);
    assert.deepEqual(await items(bob), before);

    // An outage past the replay window: the page cannot resume, says so and fetches the history.
    await cut(proxy, ann);
    const away = ['while away 1', 'while away 2', 'while away 3'];
    for (const text of away) await say(bob, text);
    await sleep(WINDOW_MS + 1_500);
    await restore(proxy, ann);
    const marker = ann.getByTestId('gap-marker');
    await marker.filter({ hasText: /last \d+ messages are shown/ }).waitFor({ timeout: 15_000 });
    assert.match(await marker.textContent(), /You may have missed messages while offline/);
    assert.equal(await ann.evaluate(() => window.chsk.state.recovered), false);
    assert.deepEqual(await items(ann), [...before, 'GAP', ...away]);
    // Live messages go on below, once.
    await say(bob, 'after the outage');
    await shows(ann, 'after the outage');
    assert.deepEqual(await items(ann), [...before, 'GAP', ...away, 'after the outage']);
    if (wantScreenshots) {
      await ann.screenshot({ path: path.join(root, 'docs', 'demo-screenshots', 'gap-marker.png') });
    }

    // A reload shows the room's history, each message once, and no marker.
    await ann.reload();
    await waitOpen(ann);
    await shows(ann, 'after the outage');
    const all = [...before, ...away, 'after the outage'];
    assert.deepEqual(await items(ann), all);
    // So does joining later.
    const carolCtx = await browser.newContext();
    try {
      const carol = await join(carolCtx, demo.url, 'carol');
      await shows(carol, 'after the outage');
      assert.deepEqual(await items(carol), all);
    } finally {
      await carolCtx.close();
    }
  } finally {
    await Promise.all([annCtx.close(), bobCtx.close()]);
    proxy.close();
  }
});

test('over Ajax too, a lost connection loses nothing: the page resumes and shows no gap', async () => {
  const { browser, demo } = env;
  const proxy = await startCuttableProxy(demo.port);
  const [danCtx, eveCtx] = await Promise.all([browser.newContext(), browser.newContext()]);
  try {
    const dan = await join(danCtx, proxy.url, 'dan', '?type=ajax');
    const eve = await join(eveCtx, demo.url, 'eve');
    await dan.getByTestId('transport-badge').filter({ hasText: /^ajax$/ }).waitFor({ timeout: 10_000 });
    await say(eve, 'ajax before');
    await shows(dan, 'ajax before');
    const shown = await items(dan);

    await cut(proxy, dan);
    await say(eve, 'ajax away 1');
    await say(eve, 'ajax away 2');
    await restore(proxy, dan);
    await shows(dan, 'ajax away 2');
    assert.deepEqual(await items(dan), [...shown, 'ajax away 1', 'ajax away 2']);
    assert.equal(await dan.evaluate(() => window.chsk.state.recovered), true);
  } finally {
    await Promise.all([danCtx.close(), eveCtx.close()]);
    proxy.close();
  }
});
