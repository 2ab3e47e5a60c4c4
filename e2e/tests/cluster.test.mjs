// The chat demo as three nodes behind nginx, round-robin, no sticky sessions
// (examples/chat/nginx/chat-cluster.conf, rewritten for free ports), once over Redis and once over
// NATS: three browser sessions sign in through nginx, chat in the room, send a private message
// from a WebSocket on one node to a WebSocket on another, and one page forced to Ajax has its
// polls and POSTs spread over the nodes. Needs Redis on 127.0.0.1:6379, NATS with JetStream on
// 127.0.0.1:4222 (REDIS_URL / NATS_URL override) and Debian's nginx (scripts/install-deps.sh).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort, join, launchBrowser, removeDemoCluster, root, shot, startDemo, stopDemo, tmpDir, waitOpen } from '../lib.mjs';

const NGINX = process.env.NGINX ?? '/usr/sbin/nginx';
const CONF = path.join(root, 'examples', 'chat', 'nginx', 'chat-cluster.conf');
const ENGINES = {
  redis: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
  nats: process.env.NATS_URL ?? 'nats://127.0.0.1:4222',
};

/**
 * Starts nginx with the repo's config, its upstream and listen ports replaced by `nodePorts` and
 * `port`, every file in a temp prefix (no root paths, a system nginx does not matter).
 */
async function startNginx(port, nodePorts) {
  const prefix = tmpDir();
  let conf = fs.readFileSync(CONF, 'utf8');
  ['3001', '3002', '3003'].forEach((p, i) => {
    conf = conf.replace(`server 127.0.0.1:${p};`, `server 127.0.0.1:${nodePorts[i]};`);
  });
  conf = conf.replace('listen 127.0.0.1:3000;', `listen 127.0.0.1:${port};`);
  const directives = conf.split('\n').filter((l) => !l.trim().startsWith('#'));
  assert.ok(!directives.some((l) => /:300[0-3];/.test(l)), 'every port of the config was rewritten');
  fs.writeFileSync(path.join(prefix, 'nginx.conf'), conf);
  const proc = spawn(NGINX, ['-e', 'stderr', '-c', path.join(prefix, 'nginx.conf'), '-p', `${prefix}/`], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout.on('data', (c) => (out += c));
  proc.stderr.on('data', (c) => (out += c));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (proc.exitCode !== null) throw new Error(`nginx exited (${proc.exitCode}):\n${out}`);
    try {
      if ((await fetch(`${url}/style.css`)).ok) break;
    } catch {}
    if (i > 100) throw new Error(`nginx not answering on ${url}:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { proc, url, prefix, log: () => out };
}

async function stopNginx(nginx) {
  if (!nginx || nginx.proc.exitCode !== null) return;
  nginx.proc.kill('SIGTERM');
  await once(nginx.proc, 'exit');
}

/** The node holding the page's channel socket (the `demo/node` request). */
const wsNode = (page) => page.evaluate(async () => (await window.chsk.request('demo/node', null, 5000)).node);

/** Records the `x-chat-node` header of the page's `/chsk` responses (Ajax polls and POSTs). */
function recordChskNodes(page) {
  const nodes = [];
  page.on('response', (resp) => {
    if (new URL(resp.url()).pathname.startsWith('/chsk') && resp.headers()['x-chat-node']) {
      nodes.push({ method: resp.request().method(), node: resp.headers()['x-chat-node'] });
    }
  });
  return nodes;
}

let browser;
before(async () => {
  assert.ok(fs.existsSync(NGINX), `${NGINX} missing: run scripts/install-deps.sh (Debian's nginx)`);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

for (const [engine, engineUrl] of Object.entries(ENGINES)) {
  describe(`three nodes over ${engine} behind nginx (round-robin)`, () => {
    let nodes = [];
    let nginx;
    // A cluster name of this run only: other runs on the same Redis/NATS do not mix in.
    const clusterArgs = [`--${engine}`, engineUrl, '--cluster', `e2e-${engine}-${process.pid}-${Date.now()}`];
    before(async () => {
      const ports = [await freePort(), await freePort(), await freePort()];
      nodes = await Promise.all(ports.map((p) => startDemo(p, clusterArgs)));
      nginx = await startNginx(await freePort(), ports);
    });
    after(async () => {
      await stopNginx(nginx);
      await Promise.all(nodes.map(stopDemo));
      // What the cluster kept in the engine (sessions, history, the backplane's state) goes too
      // (checked only when the nodes ran: a failed start is the failure to see).
      const removed = await removeDemoCluster(clusterArgs);
      if (nodes.length === 3) assert.match(removed, /^removed [1-9]\d* (keys|streams) of cluster/);
    });

    test('room chat, a private message across nodes, and an Ajax page round-robin over the nodes', async () => {
      const nodeNames = new Set(nodes.map((n) => `127.0.0.1:${n.port}`));
      const contexts = await Promise.all([0, 1, 2].map(() => browser.newContext()));
      try {
        const names = [`ann-${engine}`, `ben-${engine}`, `cat-${engine}`];
        const pages = [];
        const pageNodes = [];
        for (const [i, name] of names.entries()) {
          const seen = new Set();
          contexts[i].on('response', (r) => r.headers()['x-chat-node'] && seen.add(r.headers()['x-chat-node']));
          pageNodes.push(seen);
          pages.push(await join(contexts[i], nginx.url, name));
        }
        const [ann, ben, cat] = pages;
        // Every page is signed in (its session, made on one node, is known to the others).
        for (const [i, page] of pages.entries()) {
          for (const other of names) await page.getByTestId('user-list').getByText(other).waitFor({ timeout: 15_000 });
          assert.ok(pageNodes[i].size >= 2, `page ${names[i]} was served by several nodes: ${[...pageNodes[i]]}`);
        }

        // The room: one message, seen by all.
        await ann.getByTestId('message-input').fill(`hello room over ${engine}`);
        await ann.getByTestId('send-button').click();
        for (const page of pages) {
          await page.getByTestId('message-list').getByText(`hello room over ${engine}`).waitFor({ timeout: 10_000 });
        }

        // A private message between two WebSockets on different nodes (reconnect one until so:
        // each new connection goes to the next node of nginx's turn).
        let [annNode, benNode] = [await wsNode(ann), await wsNode(ben)];
        for (let i = 0; annNode === benNode && i < 10; i++) {
          await ben.evaluate(() => window.chsk.reconnect());
          await waitOpen(ben);
          benNode = await wsNode(ben);
        }
        assert.ok(nodeNames.has(annNode) && nodeNames.has(benNode), `${annNode} ${benNode}`);
        assert.notEqual(annNode, benNode, 'the two WebSockets are on different nodes');
        await ann.getByTestId('pm-target').locator('option', { hasText: names[1] }).waitFor({ state: 'attached' });
        await ann.getByTestId('pm-target').selectOption({ label: names[1] });
        await ann.getByTestId('pm-input').fill(`psst ${names[1]}, from ${annNode}`);
        await ann.getByTestId('pm-send').click();
        await ben.getByTestId('message-list').getByText(`psst ${names[1]}, from ${annNode}`).waitFor({ timeout: 10_000 });
        // The recipient's confirmation crossed back.
        await ann.getByTestId('pm-status').filter({ hasText: 'delivered' }).waitFor({ timeout: 10_000 });
        assert.equal(await cat.getByTestId('message-list').getByText(`psst ${names[1]}`).count(), 0, 'private');

        // Forced to Ajax: polls and POSTs round-robin over the nodes, each one seeing the session.
        const chsk = recordChskNodes(cat);
        await cat.getByTestId('force-ajax').check();
        await waitOpen(cat);
        await cat.getByTestId('transport-badge').filter({ hasText: /^ajax$/ }).waitFor({ timeout: 10_000 });
        for (let i = 0; i < 4; i++) {
          await cat.getByTestId('message-input').fill(`ajax ${engine} ${i}`);
          await cat.getByTestId('send-button').click();
          await ann.getByTestId('message-list').getByText(`ajax ${engine} ${i}`).waitFor({ timeout: 10_000 });
          assert.equal(await cat.getByTestId('say-error').textContent(), '');
        }
        // Pushes to the Ajax page wait in its mailbox, whichever node holds its next poll.
        await ann.getByTestId('pm-target').selectOption({ label: names[2] });
        await ann.getByTestId('pm-input').fill(`to the ajax page over ${engine}`);
        await ann.getByTestId('pm-send').click();
        await cat.getByTestId('message-list').getByText(`to the ajax page over ${engine}`).waitFor({ timeout: 15_000 });
        await ben.getByTestId('message-input').fill(`ben to all over ${engine}`);
        await ben.getByTestId('send-button').click();
        await cat.getByTestId('message-list').getByText(`ben to all over ${engine}`).waitFor({ timeout: 15_000 });
        assert.equal(await cat.getByTestId('transport-badge').textContent(), 'ajax');

        const posts = new Set(chsk.filter((r) => r.method === 'POST').map((r) => r.node));
        const all = new Set(chsk.map((r) => r.node));
        assert.ok(posts.size >= 2, `Ajax POSTs landed on several nodes: ${JSON.stringify(chsk)}`);
        assert.equal(all.size, 3, `Ajax requests landed on all three nodes: ${JSON.stringify(chsk)}`);
        for (const n of all) assert.ok(nodeNames.has(n), n);

        // Every message once, in order, on every page.
        const room = [0, 1, 2, 3].map((i) => `ajax ${engine} ${i}`);
        const expected = [
          [`hello room over ${engine}`, `psst ${names[1]}, from ${annNode}`, ...room, `to the ajax page over ${engine}`],
          [`hello room over ${engine}`, `psst ${names[1]}, from ${annNode}`, ...room],
          [`hello room over ${engine}`, ...room, `to the ajax page over ${engine}`],
        ];
        for (const [i, page] of pages.entries()) {
          // The last message reached the Ajax page; the others' may still be on their way.
          await page.getByTestId('message-list').getByText(`ben to all over ${engine}`).waitFor({ timeout: 15_000 });
          const texts = await page.getByTestId('message-list').locator('.text').allTextContents();
          assert.deepEqual(texts, [...expected[i], `ben to all over ${engine}`], names[i]);
        }
        const count = (method) => chsk.filter((r) => r.method === method).map((r) => r.node.split(':')[1]);
        console.log(`${engine}: the Ajax page's GETs on ports ${count('GET')}, POSTs on ${count('POST')}`);
        // A node dies: the WebSocket it held reconnects through nginx to another node, still
        // signed in, and the room still reaches everyone (the Ajax page's requests skip it).
        const dead = nodes.find((n) => `127.0.0.1:${n.port}` === annNode);
        await stopDemo(dead);
        await ann.getByTestId('conn-state').filter({ hasNotText: /^open$/ }).waitFor({ timeout: 10_000 }).catch(() => {});
        await waitOpen(ann);
        const annNodeAfter = await wsNode(ann);
        assert.notEqual(annNodeAfter, annNode, 'reconnected to another node');
        await ann.getByTestId('message-input').fill(`after ${annNode} died`);
        await ann.getByTestId('send-button').click();
        for (const page of pages) {
          await page.getByTestId('message-list').getByText(`after ${annNode} died`).waitFor({ timeout: 15_000 });
        }
        assert.equal((await ann.locator('#me').textContent()).trim(), names[0], 'still signed in');

        // Logging out (on whichever node gets the POST) signs ben out and frees his name for
        // another person.
        await ben.getByTestId('logout-button').click();
        await ben.getByTestId('name-input').waitFor({ timeout: 10_000 });
        await ann.getByTestId('user-list').getByText(names[1]).waitFor({ state: 'detached', timeout: 15_000 });
        const ctx = await browser.newContext();
        contexts.push(ctx);
        const newBen = await join(ctx, nginx.url, names[1]);
        await newBen.getByTestId('user-list').getByText(names[0]).waitFor({ timeout: 10_000 });

        await shot(ann, `cluster-${engine}-ann`);
        await shot(cat, `cluster-${engine}-cat-ajax`);
      } finally {
        await Promise.all(contexts.map((c) => c.close()));
      }
    });
  });
}
