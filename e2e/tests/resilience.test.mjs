// Transport faults seen from a real browser: a proxy that refuses WebSocket upgrades, a server
// restart, and a request that never gets a reply.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { freePort, join, shot, startDemo, startUpgradeBlockingProxy, stopDemo, useBrowser, waitOpen } from '../lib.mjs';

const env = useBrowser();

test('auto mode downgrades to Ajax when the WebSocket upgrade is blocked', async () => {
  const demo = await startDemo(await freePort());
  const proxy = await startUpgradeBlockingProxy(demo.port);
  const ctx = await env.browser.newContext();
  try {
    const page = await join(ctx, proxy.url, 'erin');
    await page.getByTestId('transport-badge').filter({ hasText: /^ajax$/ }).waitFor({ timeout: 15_000 });
    await page.getByTestId('message-input').fill('still here over ajax');
    await page.getByTestId('send-button').click();
    await page.getByTestId('message-list').getByText('still here over ajax').waitFor({ timeout: 10_000 });
    await shot(page, 'auto-downgrade');
  } finally {
    await ctx.close();
    proxy.server.close();
    await stopDemo(demo);
  }
});

test('the page reconnects by itself after the server restarts', async () => {
  const port = await freePort();
  let demo = await startDemo(port);
  const ctx = await env.browser.newContext();
  try {
    const page = await join(ctx, demo.url, 'frank');
    await stopDemo(demo);
    await page.getByTestId('conn-state').filter({ hasText: /^closed$/ }).waitFor({ timeout: 15_000 });
    demo = await startDemo(port);
    await waitOpen(page, 45_000);
    await page.getByTestId('message-input').fill('back after restart');
    await page.getByTestId('send-button').click();
    await page.getByTestId('message-list').getByText('back after restart').waitFor({ timeout: 10_000 });
    await shot(page, 'after-restart');
  } finally {
    await ctx.close();
    await stopDemo(demo);
  }
});

test('a request without a reply times out on the client', async () => {
  const demo = await startDemo(await freePort());
  const ctx = await env.browser.newContext();
  try {
    const page = await join(ctx, demo.url, 'grace');
    const outcome = await page.evaluate(async () => {
      try {
        await window.chsk.request('demo/no-reply', { n: 1 }, 700);
        return 'replied';
      } catch (err) {
        return err.code;
      }
    });
    assert.equal(outcome, 'timeout');
  } finally {
    await ctx.close();
    await stopDemo(demo);
  }
});
