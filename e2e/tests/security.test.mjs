// The demo's safety rules seen from real browsers: a name belongs to one person while online,
// logging out closes the user's other tabs, the CSRF token is bound to the session, other
// origins cannot open the channel socket, and chat messages are rate limited.
// (examples/chat/tests/security.rs checks the same rules with hand-written requests.)
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { join, shot, startStaticServer, tmpDir, useBrowser, waitOpen } from '../lib.mjs';

const env = useBrowser({ demo: [] });

/** The user names listed on `page`. */
const listed = (page) => page.getByTestId('user-list').locator('.name').allTextContents();

test('a second "bob" is refused with a message while bob is online; his second tab is fine', async () => {
  const bobCtx = await env.browser.newContext();
  const otherCtx = await env.browser.newContext();
  const phoneCtx = await env.browser.newContext({ viewport: { width: 390, height: 740 } });
  try {
    const bob = await join(bobCtx, env.demo.url, 'bob');
    // The same user in a second tab of the same session: signed in, no question asked.
    const bobTab2 = await bobCtx.newPage();
    await bobTab2.goto(env.demo.url);
    await waitOpen(bobTab2);
    assert.equal(await bobTab2.locator('#me').textContent(), 'bob');

    // Someone else picks "bob" (and "BOB"): refused, with the reason in the page.
    for (const [ctx, name] of [
      [otherCtx, 'bob'],
      [phoneCtx, 'BOB'],
    ]) {
      const page = await ctx.newPage();
      await page.goto(env.demo.url);
      await page.getByTestId('name-input').fill(name);
      await page.getByTestId('join-button').click();
      const error = page.getByTestId('login-error');
      await error.filter({ hasText: /is taken/ }).waitFor({ timeout: 10_000 });
      assert.match(await error.textContent(), new RegExp(`The name "${name}" is taken`));
      assert.ok(await error.isVisible());
      assert.ok(await page.locator('#chat-view').isHidden(), 'not signed in');
      assert.equal(await page.getByTestId('name-input').inputValue(), name, 'the name stays in the field');
      await shot(page, name === 'bob' ? 'name-taken-refused' : 'name-taken-refused-phone');
      if (name === 'bob') {
        // Another name works.
        await page.getByTestId('name-input').fill('bobby');
        await page.getByTestId('join-button').click();
        await waitOpen(page);
        assert.equal(await page.getByTestId('login-error').count(), 1);
        await bob.getByTestId('user-list').getByText('bobby').waitFor();
      }
    }
    // bob's whispers still reach only bob.
    const bobby = otherCtx.pages()[0];
    await bobby.getByTestId('pm-target').selectOption({ label: 'bob' });
    await bobby.getByTestId('pm-input').fill('for bob only');
    await bobby.getByTestId('pm-send').click();
    for (const tab of [bob, bobTab2]) {
      await tab.getByTestId('message-list').getByText('for bob only').waitFor({ timeout: 10_000 });
    }
  } finally {
    await bobCtx.close();
    await otherCtx.close();
    await phoneCtx.close();
  }
});

test("logging out closes the user's other tabs (ws and ajax) and frees the name", async () => {
  const henryCtx = await env.browser.newContext();
  const ivyCtx = await env.browser.newContext();
  const newCtx = await env.browser.newContext();
  try {
    const tab1 = await join(henryCtx, env.demo.url, 'henry');
    const wsTab = await henryCtx.newPage();
    await wsTab.goto(env.demo.url);
    const ajaxTab = await henryCtx.newPage();
    await ajaxTab.goto(`${env.demo.url}/?type=ajax`);
    for (const tab of [wsTab, ajaxTab]) await waitOpen(tab);
    await ajaxTab.getByTestId('transport-badge').filter({ hasText: /^ajax$/ }).waitFor();
    const ivy = await join(ivyCtx, env.demo.url, 'ivy');
    await ivy.getByTestId('user-list').getByText('henry').waitFor();

    await tab1.getByTestId('logout-button').click();
    await tab1.getByTestId('join-button').waitFor();

    // The other tabs are told, closed and shown signed out; they do not sign in again.
    // Told either by the `chat/signed-out` push or, when the close came first, by the server's
    // refusal to sign the reconnecting tab in again: the same message either way.
    for (const tab of [wsTab, ajaxTab]) {
      await tab
        .getByTestId('login-error')
        .filter({ hasText: /logged out in another tab/i })
        .waitFor({ timeout: 15_000 });
      assert.ok(await tab.locator('#chat-view').isHidden());
      assert.equal(await tab.evaluate(() => window.chsk.state.open), false);
    }
    await shot(wsTab, 'logged-out-in-another-tab');
    // The server no longer counts henry as connected.
    await ivy.waitForFunction(
      () => ![...document.querySelectorAll('[data-testid=user-list] .name')].some((e) => e.textContent === 'henry'),
      null,
      { timeout: 15_000 },
    );
    await new Promise((r) => setTimeout(r, 1_500));
    assert.deepEqual(await listed(ivy), ['ivy'], 'no tab came back as henry');

    // Someone else may now take the name.
    await join(newCtx, env.demo.url, 'henry');
    await ivy.getByTestId('user-list').getByText('henry').waitFor();
    // The signed-out tab can join again (its form carries its new session's token).
    await ajaxTab.getByTestId('name-input').fill('henry-2');
    await ajaxTab.getByTestId('join-button').click();
    await waitOpen(ajaxTab);
  } finally {
    await henryCtx.close();
    await ivyCtx.close();
    await newCtx.close();
  }
});

test("another session's CSRF token is refused on /chsk", async () => {
  const ctxA = await env.browser.newContext();
  const ctxB = await env.browser.newContext();
  try {
    const a = await join(ctxA, env.demo.url, 'kate');
    const b = await join(ctxB, env.demo.url, 'liam');
    const tokenA = await a.evaluate(() => document.querySelector('meta[name=csrf-token]').content);
    const tokenB = await b.evaluate(() => document.querySelector('meta[name=csrf-token]').content);
    assert.notEqual(tokenA, tokenB);

    // From liam's page (liam's session cookie), with kate's token, then with liam's own.
    const attempt = (token) =>
      b.evaluate(async (token) => {
        const q = (t) => `client-id=probe-${Math.random()}&csrf-token=${t}`;
        const get = await fetch(`/chsk?${q(token)}&handshake%3F=true`);
        const post = await fetch('/chsk', {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: `${q(token)}&udt=1`,
        });
        const ws = await new Promise((resolve) => {
          const s = new WebSocket(`ws://${location.host}/chsk?${q(token)}&packer=json`);
          s.onmessage = () => (s.close(), resolve('open'));
          s.onerror = () => resolve('refused');
        });
        return { get: [get.status, await get.text()], post: post.status, ws };
      }, token);
    const stolen = await attempt(tokenA);
    assert.deepEqual(stolen.get, [403, 'Bad CSRF token']);
    assert.equal(stolen.post, 403);
    assert.equal(stolen.ws, 'refused');
    const own = await attempt(tokenB);
    assert.equal(own.get[0], 200);
    assert.match(own.get[1], /chsk\/handshake.*liam/);
    assert.equal(own.ws, 'open');
  } finally {
    await ctxA.close();
    await ctxB.close();
  }
});

test('a page of another origin can neither open the channel socket nor post events, even with the token', async () => {
  const site = await startStaticServer(tmpDir());
  const ctx = await env.browser.newContext();
  try {
    const page = await join(ctx, env.demo.url, 'mia');
    const token = await page.evaluate(() => document.querySelector('meta[name=csrf-token]').content);
    // A WebSocket (not subject to CORS: only the server's Origin check stops it) and an Ajax
    // POST of a chat message as mia (the attacker needs no answer, only the side effect).
    const probe = (p, text) =>
      p.evaluate(
        async ({ url, token, text }) => {
          const cid = `x-${Math.random()}`;
          const ws = await new Promise((resolve) => {
            const s = new WebSocket(`${url.replace('http', 'ws')}/chsk?client-id=${cid}&csrf-token=${token}&packer=json`);
            s.onmessage = () => (s.close(), resolve('open'));
            s.onerror = () => resolve('refused');
          });
          const body = new URLSearchParams({
            udt: Date.now(),
            'client-id': cid,
            'csrf-token': token,
            ppstr: JSON.stringify([[':chat/say', { text }], null]),
          });
          const sameOrigin = location.origin === url;
          const r = await fetch(`${url}/chsk?packer=json`, {
            method: 'POST',
            body,
            credentials: 'include',
            mode: sameOrigin ? 'same-origin' : 'no-cors',
          });
          return { ws, post: sameOrigin ? r.status : 'opaque' };
        },
        { url: env.demo.url, token, text },
      );
    // Same browser, same cookies (127.0.0.1 is one site whatever the port), another origin.
    const foreign = await ctx.newPage();
    await foreign.goto(`${site.url}/`);
    assert.deepEqual(await probe(foreign, 'posted by another origin'), { ws: 'refused', post: 'opaque' });
    // The control: the same requests from the demo's own page pass.
    assert.deepEqual(await probe(page, 'posted by the page'), { ws: 'open', post: 200 });
    const list = page.getByTestId('message-list');
    await list.getByText('posted by the page').waitFor({ timeout: 10_000 });
    assert.equal(await list.getByText('posted by another origin').count(), 0);
  } finally {
    await ctx.close();
    site.server.close();
  }
});

for (const transport of ['ws', 'ajax']) {
  describe(`rate limit over ${transport}`, () => {
    test('chat messages past the burst get an error the page shows', async () => {
      const ctx = await env.browser.newContext();
      try {
        const page = await join(ctx, env.demo.url, `nina-${transport}`);
        if (transport === 'ajax') {
          await page.getByTestId('force-ajax').check();
          await waitOpen(page);
        }
        await page.getByTestId('transport-badge').filter({ hasText: new RegExp(`^${transport}$`) }).waitFor();
        // 20 messages at once: the burst of 10 passes, most of the rest are refused. (Their text
        // names the transport: the page also shows the room's history, the other run's bursts.)
        const prefix = `burst ${transport} `;
        const answers = await page.evaluate(
          (prefix) =>
            Promise.all(
              Array.from({ length: 20 }, (_, i) =>
                window.chsk.request('chat/say', { text: `${prefix}${i}` }, 10_000).catch((e) => ({ error: e.code })),
              ),
            ),
          prefix,
        );
        const ok = answers.filter((a) => a?.ok === true).length;
        const refused = answers.filter((a) => /^Slow down/.test(a?.error ?? ''));
        assert.ok(ok >= 10 && ok <= 12, `passed: ${ok} ${JSON.stringify(answers)}`);
        assert.equal(ok + refused.length, 20, JSON.stringify(answers));
        // Only what passed reached the room (over Ajax the requests may arrive in any order).
        const bursts = (prefix) =>
          [...document.querySelectorAll('[data-testid=message-list] .text')].filter((e) =>
            e.textContent.startsWith(prefix),
          ).length;
        await page.waitForFunction(`(${bursts})(${JSON.stringify(prefix)}) >= ${ok}`, null, { timeout: 10_000 });
        await new Promise((r) => setTimeout(r, 500));
        const shown = await page.getByTestId('message-list').locator('.text').allTextContents();
        assert.equal(shown.filter((t) => t.startsWith(prefix)).length, ok);

        // What a person sees: sending fast through the form shows the error and keeps the text.
        await page.evaluate(() => {
          const input = document.getElementById('message-input');
          for (let i = 0; i < 15; i++) {
            input.value = `fast ${i}`;
            document.getElementById('say-form').requestSubmit();
          }
        });
        const error = page.getByTestId('say-error');
        await error.filter({ hasText: /Slow down/ }).waitFor({ timeout: 10_000 });
        assert.ok(await error.isVisible());
        assert.match(await page.getByTestId('message-input').inputValue(), /^fast \d+$/);
        if (transport === 'ws') await shot(page, 'rate-limited');

        // After a pause, messages pass again.
        await new Promise((r) => setTimeout(r, 2_100));
        const again = await page.evaluate(() => window.chsk.request('chat/say', { text: 'after a pause' }, 5000));
        assert.deepEqual(again, { ok: true });
      } finally {
        await ctx.close();
      }
    });
  });
}
