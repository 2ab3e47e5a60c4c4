// The chat demo in two real browser contexts (two users), over WebSocket and over Ajax.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { join, shot, useBrowser, waitOpen } from '../lib.mjs';

const env = useBrowser({ demo: [] });

for (const transport of ['ws', 'ajax']) {
  describe(`chat over ${transport}`, () => {
    test('two users chat in the room and see each other in the user list', async () => {
      const ctxA = await env.browser.newContext();
      const ctxB = await env.browser.newContext({ viewport: { width: 375, height: 740 } });
      try {
        const alice = await join(ctxA, env.demo.url, `alice-${transport}`);
        const bob = await join(ctxB, env.demo.url, `bob-${transport}`);
        for (const page of [alice, bob]) {
          if (transport === 'ajax') {
            // What a person does: tick "force Ajax"; the page reconnects over long-polling.
            await page.getByTestId('force-ajax').check();
            await waitOpen(page);
          }
          const badge = page.getByTestId('transport-badge');
          await badge.filter({ hasText: new RegExp(`^${transport}$`) }).waitFor({ timeout: 10_000 });
          assert.equal(await badge.textContent(), transport);
        }
        await alice.getByTestId('user-list').getByText(`bob-${transport}`).waitFor();
        await bob.getByTestId('user-list').getByText(`alice-${transport}`).waitFor();

        await alice.getByTestId('message-input').fill(`hello from alice over ${transport}`);
        await alice.getByTestId('send-button').click();
        await bob
          .getByTestId('message-list')
          .getByText(`hello from alice over ${transport}`)
          .waitFor({ timeout: 10_000 });

        // Unique per run: the room's history shows the earlier transport's messages too.
        await bob.getByTestId('message-input').fill(`hi alice over ${transport}`);
        await bob.getByTestId('send-button').click();
        await alice
          .getByTestId('message-list')
          .getByText(`hi alice over ${transport}`)
          .waitFor({ timeout: 10_000 });

        // The server-pushed clock ticks.
        const clock = alice.getByTestId('clock');
        const first = await clock.textContent();
        await alice.waitForFunction(
          (prev) => document.querySelector('[data-testid=clock]').textContent !== prev,
          first,
          { timeout: 5_000 },
        );

        // Request/reply round trip.
        await alice.getByTestId('ping-button').click();
        await alice.getByTestId('ping-result').filter({ hasText: /\d+(\.\d+)?\s*ms/ }).waitFor();

        await shot(alice, `chat-${transport}-alice`);
        await shot(bob, `chat-${transport}-bob-phone`);
      } finally {
        await ctxA.close();
        await ctxB.close();
      }
    });
  });
}

test('a private message reaches every tab of the target user', async () => {
  const ctxA = await env.browser.newContext();
  const ctxB = await env.browser.newContext();
  try {
    const carolTab1 = await join(ctxA, env.demo.url, 'carol');
    const carolTab2 = await ctxA.newPage();
    await carolTab2.goto(env.demo.url);
    await carolTab2.getByTestId('conn-state').filter({ hasText: /^open$/ }).waitFor();
    const dave = await join(ctxB, env.demo.url, 'dave');

    await dave.getByTestId('pm-target').locator('option', { hasText: 'carol' }).waitFor({ state: 'attached' });
    await dave.getByTestId('pm-target').selectOption({ label: 'carol' });
    await dave.getByTestId('pm-input').fill('psst carol');
    await dave.getByTestId('pm-send').click();
    for (const tab of [carolTab1, carolTab2]) {
      await tab.getByTestId('message-list').getByText('psst carol').waitFor({ timeout: 10_000 });
    }
    await shot(carolTab2, 'private-message-second-tab');
  } finally {
    await ctxA.close();
    await ctxB.close();
  }
});
