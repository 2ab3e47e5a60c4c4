// Shared harness for the browser end-to-end tests: starts the chat demo binary, launches Debian's
// Chromium through playwright-core, and offers a small proxy for fault injection.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const artifacts = path.join(root, 'e2e', 'artifacts');
fs.mkdirSync(artifacts, { recursive: true });

const targetDir = process.env.CARGO_TARGET_DIR ?? path.join(root, 'target');
export const chatBin = path.join(targetDir, 'debug', 'chat');

/** A free TCP port on 127.0.0.1. */
export async function freePort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

/** Starts the chat demo on 127.0.0.1:port and resolves once it listens. */
export async function startDemo(port, args = []) {
  if (!fs.existsSync(chatBin)) throw new Error(`${chatBin} missing: run \`cargo build -p chat\` first`);
  const proc = spawn(chatBin, ['--addr', `127.0.0.1:${port}`, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
  });
  let out = '';
  const ready = new Promise((resolve, reject) => {
    const onData = (chunk) => {
      out += chunk;
      if (out.includes('listening')) resolve();
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.once('exit', (code) => reject(new Error(`chat exited early (${code}):\n${out}`)));
  });
  const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000);
  try {
    await ready;
  } finally {
    clearTimeout(timer);
  }
  return { proc, url: `http://127.0.0.1:${port}`, port };
}

/** Stops a demo process and waits for it to exit. */
export async function stopDemo(demo) {
  if (!demo || demo.proc.exitCode !== null || demo.proc.signalCode !== null) return;
  demo.proc.kill('SIGKILL');
  await once(demo.proc, 'exit');
}

/** Deletes what a demo cluster kept in its engine (`chat --remove-cluster`, once its nodes
 * are stopped); resolves to the binary's answer ("removed N keys|streams of cluster ..."). */
export async function removeDemoCluster(args) {
  const proc = spawn(chatBin, [...args, '--remove-cluster'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (c) => (out += c));
  proc.stderr.on('data', (c) => (out += c));
  const [code] = await once(proc, 'exit');
  if (code !== 0) throw new Error(`chat --remove-cluster exited with ${code}:\n${out}`);
  return out.trim();
}

/** Launches headless Chromium with the flags this machine needs (fresh profile each time). */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

/**
 * The usual set-up of a test file (or `describe` block): registers its `before` and `after` hooks,
 * which launch Chromium and, when `demo` is given (the demo's extra arguments, `[]` for none),
 * start a demo on a free port, then close both. Returns `{ browser, demo }`, filled in by `before`.
 */
export function useBrowser({ demo: demoArgs } = {}) {
  const env = { browser: null, demo: null };
  before(async () => {
    if (demoArgs) env.demo = await startDemo(await freePort(), demoArgs);
    env.browser = await launchBrowser();
  });
  after(async () => {
    await env.browser?.close();
    await stopDemo(env.demo);
  });
  return env;
}

/** Whether screenshots for the docs are wanted (`SCREENSHOTS=1`): without, a run leaves the tree clean. */
export const wantScreenshots = process.env.SCREENSHOTS === '1';

/**
 * A TCP proxy in front of `targetPort` whose connections can be cut, like a network blip:
 * `cut()` resets every open connection and refuses new ones until `restore()`. `close()` stops it.
 */
export async function startCuttableProxy(targetPort) {
  const open = new Set();
  let down = false;
  const server = net.createServer((client) => {
    if (down) return client.resetAndDestroy();
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ]) {
      open.add(from);
      from.on('error', () => to.destroy());
      from.on('close', () => (open.delete(from), to.destroy()));
      from.pipe(to);
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cut() {
      down = true;
      for (const socket of open) socket.resetAndDestroy();
    },
    restore() {
      down = false;
    },
    close() {
      this.cut();
      server.close();
    },
  };
}

/**
 * An HTTP proxy in front of `targetPort` that forwards plain requests (incl. long-polls) and
 * refuses every WebSocket upgrade with 403, like a proxy that breaks WebSockets.
 */
export async function startUpgradeBlockingProxy(targetPort) {
  const server = http.createServer((req, res) => {
    const upstream = http.request(
      { host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(upstream);
  });
  server.on('upgrade', (_req, socket) => {
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\nConnection: close\r\n\r\nForbidden');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `http://127.0.0.1:${server.address().port}` };
}

/** Opens the demo in a page and joins the chat as `name`. */
export async function join(context, url, name, query = '') {
  const page = await context.newPage();
  await page.goto(`${url}/${query}`);
  await page.getByTestId('name-input').fill(name);
  await page.getByTestId('join-button').click();
  await waitOpen(page);
  return page;
}

/** Waits until the page's channel socket is open. */
export async function waitOpen(page, timeout = 20_000) {
  await page.getByTestId('conn-state').filter({ hasText: /^open$/ }).waitFor({ timeout });
}

/** Saves a screenshot under e2e/artifacts/. */
export async function shot(page, name) {
  // From the top: a full-page screenshot of a scrolled page would show the sticky bar mid-page.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
}

export const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), 'sente-e2e-'));

export const testServerBin = path.join(targetDir, 'debug', 'sente-test-server');

/**
 * Starts the test kit's `sente-test-server` (with `args`, e.g. `['--cors']`) and resolves with
 * its URLs (`url`, `refuse_ws_url`, `small_url`, `control_url`, `csrf_token`, ...) and `proc`.
 * It serves until its stdin closes: stop it with `stopTestServer`.
 */
export async function startTestServer(args = []) {
  return startJsonServer(testServerBin, args);
}

export const devPageServerBin = path.join(targetDir, 'debug', 'sente-dev-page-server');

/**
 * Starts the test kit's `sente-dev-page-server` (the server of e2e/dev-page/index.html) with
 * `args` (e.g. `['--allow-origin', url]`) and resolves with its `url`, `csrf_token` and `proc`.
 * Stop it with `stopTestServer`.
 */
export async function startDevPageServer(args = []) {
  const page = path.join(root, 'e2e', 'dev-page', 'index.html');
  return startJsonServer(devPageServerBin, ['--page', page, ...args]);
}

export const clusterNodeBin = path.join(targetDir, 'debug', 'sente-cluster-node');

/**
 * Starts the test kit's `sente-cluster-node` with `args`: a cluster node (`--redis URL`, ...;
 * resolves with its `name`, `port`, `url`, `control`) or a round-robin proxy (`--proxy a,b,c`).
 * Stop it with `stopTestServer`, or kill it (`proc.kill('SIGKILL')`).
 */
export async function startClusterNode(args) {
  return startJsonServer(clusterNodeBin, args);
}

/** Starts a test kit binary that prints one JSON line and serves until its stdin closes. */
async function startJsonServer(bin, args) {
  const name = path.basename(bin);
  if (!fs.existsSync(bin)) {
    throw new Error(`${bin} missing: run \`cargo build -p sente-test-kit --bin ${name}\` first`);
  }
  const proc = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stderr.on('data', (chunk) => (err += chunk));
  const line = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} printed nothing:\n${err}`)), 30_000);
    proc.stdout.on('data', (chunk) => {
      out += chunk;
      const nl = out.indexOf('\n');
      if (nl >= 0) clearTimeout(timer), resolve(out.slice(0, nl));
    });
    proc.once('exit', (code) => (clearTimeout(timer), reject(new Error(`${name} exited (${code}):\n${err}`))));
  });
  return { ...JSON.parse(line), proc };
}

/** Stops a server started by `startTestServer` and waits for it to exit. */
export async function stopTestServer(srv) {
  if (!srv || srv.proc.exitCode !== null || srv.proc.signalCode !== null) return;
  const exited = once(srv.proc, 'exit');
  srv.proc.stdin.end();
  const timer = setTimeout(() => srv.proc.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.ts': 'text/plain; charset=utf-8',
};

/** Serves the files under `dir` on 127.0.0.1 (GET only, no directory listings). */
export async function startStaticServer(dir) {
  const base = path.resolve(dir);
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const file = path.resolve(base, '.' + (rel.endsWith('/') ? rel + 'index.html' : rel));
    if (req.method !== 'GET' || (file !== base && !file.startsWith(base + path.sep))) {
      res.writeHead(404).end();
      return;
    }
    fs.readFile(file, (e, body) => {
      if (e) {
        res.writeHead(404).end('not found');
        return;
      }
      res.writeHead(200, {
        'Content-Type': MIME[path.extname(file)] ?? 'application/octet-stream',
        'Cache-Control': 'no-store',
      });
      res.end(body);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: `http://127.0.0.1:${server.address().port}` };
}
