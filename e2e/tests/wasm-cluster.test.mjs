// The WASM client (e2e/wasm-page, the build of crates/sente-client/examples/browser.rs) in
// headless Chromium against a cluster of three `sente-cluster-node` processes (the Rust test
// kit's binary, with `--cors`: the page is served from another origin) over a redis-server
// (or, with SENTE_CLUSTER_ENGINE=nats, a nats-server with JetStream) of the test's own, reached through the same binary's round-robin TCP proxy (`--proxy`). Pushes
// are driven through the nodes' control route from the nodes in turn (each acknowledged by the
// backplane before the next), so they cross nodes; on both transports every push arrives once,
// in order. Then the node of the WebSocket client is killed (SIGKILL) while pushes go on: the
// client reconnects through the proxy to a survivor and resumes there (recovered), so every
// acknowledged push arrives exactly once, in order. Nothing is built here: scripts/test-all.sh builds the wasm package and the binary.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { freePort, launchBrowser, root, startClusterNode, startStaticServer, stopTestServer } from '../lib.mjs';

const pageDir = path.join(root, 'e2e', 'wasm-page');
const TOKEN = 'tok-123';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let browser;
let site;
let redis; // the engine's server process
// The backplane: 'redis' (default) or 'nats' (scripts/test-all.sh runs this file with both).
const ENGINE = process.env.SENTE_CLUSTER_ENGINE || 'redis';
let natsDir = null;
let nodes = [];
let proxy;

async function until(pred, ms, what) {
  const t0 = Date.now();
  while (!(await pred())) {
    if (Date.now() - t0 > ms) throw new Error('timed out waiting for ' + what);
    await sleep(10);
  }
}

const portOpen = (port) =>
  new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    c.once('connect', () => (c.destroy(), resolve(true)));
    c.once('error', () => resolve(false));
  });

const health = async (n) => (await fetch(`http://127.0.0.1:${n.port}/control/health`)).json();
const uids = async (n) => (await fetch(`http://127.0.0.1:${n.port}/control/uids`)).json();

/** Pushes [:t/n n] to uid from node: true once the backplane acknowledged it. */
async function push(node, uid, n) {
  try {
    const r = await fetch(`http://127.0.0.1:${node.port}/control/push?uid=${uid}&n=${n}`, { method: 'POST' });
    await r.text();
    return r.status == 200;
  } catch {
    return false;
  }
}

before(async () => {
  if (!fs.existsSync(path.join(pageDir, 'pkg', 'browser.js'))) {
    throw new Error('e2e/wasm-page/pkg missing: build it first (see scripts/test-all.sh)');
  }
  const findBin = (bins) =>
    bins.find((b) => {
      try {
        execFileSync(b, ['--version'], { stdio: 'ignore' });
        return true;
      } catch {
        return false;
      }
    });
  const port = await freePort();
  let backplane;
  if (ENGINE == 'nats') {
    const bin = findBin(['nats-server', '/usr/sbin/nats-server', '/usr/bin/nats-server']);
    assert.ok(bin, 'nats-server is needed (scripts/install-deps.sh installs it)');
    natsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sente-wasm-nats-'));
    redis = spawn(bin, ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', natsDir], { stdio: 'ignore' });
    backplane = ['--nats', `nats://127.0.0.1:${port}`];
  } else {
    const bin = findBin(['redis-server', '/usr/bin/redis-server']);
    assert.ok(bin, 'redis-server is needed (scripts/install-deps.sh installs it)');
    redis = spawn(bin, ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'], {
      stdio: 'ignore',
    });
    backplane = ['--redis', `redis://127.0.0.1:${port}/`];
  }
  await until(() => portOpen(port), 10_000, ENGINE);
  const cluster = `wasm-cluster-${process.pid}-${Date.now()}`;
  for (let i = 1; i <= 3; i++) {
    nodes.push(
      await startClusterNode([
        ...backplane, '--cluster', cluster, '--name', `n${i}`, '--cors',
        '--expiry-ms', '1000', '--heartbeat-ms', '200',
      ]),
    );
  }
  for (const n of nodes) await until(async () => (await health(n)).peers == 2, 10_000, `${n.name} connected`);
  proxy = await startClusterNode(['--proxy', nodes.map((n) => `127.0.0.1:${n.port}`).join(',')]);
  site = await startStaticServer(pageDir);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  site?.server.close();
  for (const n of [...nodes, proxy]) if (n) await stopTestServer(n);
  redis?.kill('SIGKILL');
  if (natsDir) fs.rmSync(natsDir, { recursive: true, force: true });
});

/** The numbers of the [:t/n n] pushes client `name` saw. */
const numbers = async (page, name) =>
  (await page.evaluate((n) => window.harness.events[n], name))
    .map((e) => /^\[:t\/n (\d+)\]$/.exec(e))
    .filter(Boolean)
    .map((m) => Number(m[1]));

/** The node names of client `name`'s handshakes so far. */
const handshakes = async (page, name) =>
  (await page.evaluate((n) => window.harness.events[n], name))
    .map((e) => /^\[:chsk\/handshake \[".*?" nil "(n\d)"/.exec(e))
    .filter(Boolean)
    .map((m) => m[1]);

test(`${ENGINE}: the WASM client through a round-robin proxy to three nodes: pushes crossing nodes counted, SIGKILL of a node`, async () => {
  const ctx = await browser.newContext();
  try {
    const page = await ctx.newPage();
    const problems = [];
    page.on('pageerror', (e) => problems.push(String(e)));
    await page.goto(`${site.url}/index.html`);
    await page.waitForFunction(() => window.harnessReady || window.harnessError, null, { timeout: 30_000 });
    assert.equal(await page.evaluate(() => window.harnessError ?? null), null);
    const clients = ['ws', 'ajax'].flatMap((kind) => [0, 1].map((i) => ({ name: `${kind}${i}`, kind, uid: `wasm-${kind}-${i}` })));
    for (const c of clients) {
      await page.evaluate(([n, url, token, k, u]) => window.harness.connect(n, url, token, k, { uid: u }), [
        c.name, proxy.url, TOKEN, c.kind, c.uid,
      ]);
    }
    await until(async () => (await Promise.all(clients.map((c) => handshakes(page, c.name)))).every((h) => h.length > 0), 15_000, 'clients open');
    for (const n of nodes) {
      await until(async () => {
        const u = await uids(n);
        return clients.every((c) => u.any.includes(c.uid));
      }, 5_000, `uids on ${n.name}`);
    }
    // Counted, crossing nodes: 15 pushes per uid from the nodes in turn.
    for (let n = 1; n <= 15; n++) {
      for (const [i, c] of clients.entries()) assert.ok(await push(nodes[(n + i) % 3], c.uid, n), `push ${n} to ${c.uid} acknowledged`);
    }
    const want = Array.from({ length: 15 }, (_, i) => i + 1);
    for (const c of clients) {
      await until(async () => (await numbers(page, c.name)).length >= 15, 10_000, `${c.name}'s pushes`);
    }
    await sleep(300);
    for (const c of clients) assert.deepEqual(await numbers(page, c.name), want, `${c.name} (on ${await handshakes(page, c.name)})`);

    // SIGKILL of the WebSocket client ws0's node; pushes go on from the survivors meanwhile.
    const victimName = (await handshakes(page, 'ws0'))[0];
    const victim = nodes.findIndex((n) => n.name == victimName);
    nodes[victim].proc.kill('SIGKILL');
    const killedAt = Date.now();
    const live = nodes.filter((_, k) => k != victim);
    for (let n = 16; n <= 20; n++) assert.ok(await push(live[n % 2], 'wasm-ws-0', n), `push ${n} acknowledged`);
    await until(async () => (await handshakes(page, 'ws0')).length >= 2, 5_000, 'ws0 reconnected');
    const took = Date.now() - killedAt;
    const now = (await handshakes(page, 'ws0'))[1];
    assert.notEqual(now, victimName, 'reconnected to a survivor');
    console.log(`wasm: ws0 reconnected from ${victimName} to ${now} within ${took} ms of the SIGKILL`);
    for (const n of live) await until(async () => (await uids(n)).ws.includes('wasm-ws-0'), 5_000, `ws0 on ${n.name}`);
    for (let n = 21; n <= 25; n++) assert.ok(await push(live[n % 2], 'wasm-ws-0', n), `push ${n} acknowledged`);
    await until(async () => (await numbers(page, 'ws0')).includes(25), 10_000, 'pushes after the reconnect');
    await sleep(300);
    const got = await numbers(page, 'ws0');
    // Resume (on by default): the survivor replays what was pushed while the client reconnected.
    assert.deepEqual(got, Array.from({ length: 25 }, (_, i) => i + 1), 'every push once, in order, across the SIGKILL');
    const states = (await page.evaluate((n) => window.harness.events[n], 'ws0')).filter((e) => e.startsWith('[:chsk/state'));
    assert.ok(states.some((e) => e.includes(':recovered? true')), 'the reconnect says recovered');
    assert.ok(!states.some((e) => e.includes(':recovered? false')), 'never recovered: false');
    assert.deepEqual(problems, []);
  } finally {
    await ctx.close();
  }
});
