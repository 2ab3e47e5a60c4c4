// Screenshots of the chat demo at phone (390x844) and desktop (1280x800) sizes, for a before/after
// look at the page: `node screenshots.mjs <label>` writes e2e/artifacts/<label>/*.png.
// Needs the chat binary (`cargo build -p chat`). It only uses what every version of the page has
// (the data-testid attributes), so the same script shows an older page too.
import fs from 'node:fs';
import path from 'node:path';
import { artifacts, freePort, launchBrowser, startDemo, stopDemo, waitOpen } from './lib.mjs';

const label = process.argv[2] ?? 'now';
const dir = path.join(artifacts, label);
fs.mkdirSync(dir, { recursive: true });
const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 800 };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const port = await freePort();
let demo = await startDemo(port);
const browser = await launchBrowser();
const saved = [];
async function shot(page, name) {
  const file = path.join(dir, `${name}.png`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: file, fullPage: true });
  saved.push(file);
}
async function joinAs(ctx, name) {
  const page = await ctx.newPage();
  await page.goto(demo.url);
  await page.getByTestId('name-input').fill(name);
  await page.getByTestId('join-button').click();
  await waitOpen(page);
  return page;
}

try {
  const desk = await browser.newContext({ viewport: DESKTOP });
  const phone = await browser.newContext({ viewport: PHONE });
  const carolCtx = await browser.newContext({ viewport: DESKTOP });

  // The login page.
  for (const [ctx, size] of [
    [desk, 'desktop'],
    [phone, 'phone'],
  ]) {
    const p = await ctx.newPage();
    await p.goto(demo.url);
    await sleep(300);
    await shot(p, `login-${size}`);
    // A name over the limit, as typed (the field may cut it).
    await p.getByTestId('name-input').fill('x'.repeat(40));
    await p.getByTestId('join-button').click();
    await sleep(800);
    await shot(p, `name-too-long-${size}`);
    await p.close();
  }

  // Three users; a long name without spaces on the phone; right-to-left messages.
  const long = 'Wolfeschlegelsteinhausenbergerdo'; // 32 characters, no space
  const alice = await joinAs(desk, 'alice');
  const lng = await joinAs(phone, long);
  const carol = await joinAs(carolCtx, 'carol');
  await alice.getByTestId('user-list').getByText('carol').waitFor();
  for (const [page, text] of [
    [alice, 'hello everyone'],
    [lng, 'שלום לכולם, מה שלומכם?'],
    [carol, 'مرحبا بالجميع، كيف حالكم؟'],
  ]) {
    await page.getByTestId('message-input').fill(text);
    await page.getByTestId('send-button').click();
    await sleep(200);
  }
  await lng.getByTestId('message-list').getByText('مرحبا').waitFor();
  await alice.getByTestId('message-list').getByText('مرحبا').waitFor();
  await shot(alice, 'chat-desktop');
  await shot(lng, 'chat-phone');

  // A long pasted message.
  for (const [page, size] of [
    [alice, 'desktop'],
    [lng, 'phone'],
  ]) {
    await page.getByTestId('message-input').fill('y'.repeat(2500));
    await sleep(200);
    await shot(page, `long-message-${size}`);
    await page.getByTestId('message-input').fill('');
  }

  // Both pick carol as the private-message recipient; carol leaves.
  for (const page of [alice, lng]) {
    await page.getByTestId('pm-target').selectOption('carol');
    await page.getByTestId('pm-input').fill('a secret for carol');
  }
  await carolCtx.close();
  await alice.waitForFunction(
    () => ![...document.querySelectorAll('[data-testid=user-list] .name')].some((e) => e.textContent === 'carol'),
    null,
    { timeout: 20_000 },
  );
  await sleep(300);
  await shot(alice, 'recipient-left-desktop');
  await shot(lng, 'recipient-left-phone');

  // The server goes away: the offline state, with a message typed and sent meanwhile.
  await stopDemo(demo);
  await alice.getByTestId('conn-state').filter({ hasText: /^closed$/ }).waitFor({ timeout: 15_000 });
  await lng.getByTestId('conn-state').filter({ hasText: /^closed$/ }).waitFor({ timeout: 15_000 });
  for (const page of [alice, lng]) {
    await page.getByTestId('message-input').fill('is anyone there?');
    await page.getByTestId('message-input').press('Enter');
  }
  await sleep(2500);
  await shot(alice, 'offline-desktop');
  await shot(lng, 'offline-phone');

  // Back: the state once the server is there again.
  demo = await startDemo(port);
  await waitOpen(alice, 60_000);
  await waitOpen(lng, 60_000);
  await sleep(1500);
  await shot(alice, 'back-online-desktop');
  await shot(lng, 'back-online-phone');
} finally {
  await browser.close();
  await stopDemo(demo);
}
console.log(saved.map((f) => path.relative(process.cwd(), f)).join('\n'));
