// Transcript replays: the server side of recorded real-Sente 1.21.0 traffic
// (tests/data/sente-transcripts/) is replayed by the test kit's `sente-replay-server`; this client
// (with the edn packer, as for a Sente server) is driven the way the recording's driver drove
// Sente's own ClojureScript client, and what it observes (open/close state changes and their
// reasons, handshake, pushes in batch order, callback replies) and sends must match what Sente's
// client observed and sent. Skipped unless SENTE_REPLAY_SERVER (the binary) is set
// (`bash scripts/test-js-client.sh` sets it). Same cases as crates/sente-test-kit/tests/replay_rust.rs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import WebSocket from "ws";
import { createChannelSocket, SenteError } from "../src/sente.js";
import { edn, kw, print, read } from "../src/edn.js";

const BIN = process.env.SENTE_REPLAY_SERVER;
const skip = BIN ? false : "SENTE_REPLAY_SERVER not set";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const canon = (s) => print(read(s));

async function startReplay(transcript, tab, cutoffMs) {
  const args = [transcript, tab];
  if (cutoffMs != null) args.push(String(cutoffMs));
  const proc = spawn(BIN, args, { stdio: ["pipe", "pipe", "inherit"] });
  const line = await new Promise((resolve, reject) => {
    const rl = createInterface({ input: proc.stdout });
    rl.once("line", resolve);
    proc.once("exit", (code) => reject(new Error("sente-replay-server exited " + code)));
  });
  return { info: JSON.parse(line), stop: () => proc.stdin.end() };
}

const keepalive = (l) => /^ws \[\[:chsk\/ws-(ping|pong)\]/.exec(l)?.[1];

/** Replays one recorded tab and returns the differences from Sente's client. */
async function run({ transcript, tab, cutoffMs, type, uid, wsKaliveMs }) {
  const { info, stop } = await startReplay(transcript, tab, cutoffMs);
  const got = { states: [], recv: [], replies: [] };
  const chsk = createChannelSocket(info.url, {
    type,
    packer: edn,
    csrfToken: "tok-123",
    params: uid ? { uid } : {},
    WebSocket,
    reprobeWsMs: 0,
    ...(wsKaliveMs ? { wsKaliveMs } : {}),
  });
  chsk.on("*", (data, id) => {
    if (id == "chsk/state") {
      const [o, n] = data;
      if (o.open != n.open) got.states.push(n.open ? "open" : "closed :" + (n.lastClose?.reason ?? "-"));
    } else if (id == "chsk/ws-ping") {
      got.recv.push("[:chsk/ws-ping]");
    } else {
      got.recv.push(print([kw(id), data]));
    }
  });
  try {
    const t0 = Date.now();
    const pending = [];
    for (const a of info.actions) {
      await sleep(Math.max(0, t0 + a.at_ms - Date.now()));
      if (a.kind == "disconnect") {
        await Promise.allSettled(pending);
        chsk.disconnect();
        continue;
      }
      const [id, data] = read(a.event);
      if (a.timeout_ms == null) chsk.send(id, data);
      else
        pending.push(
          chsk.request(id, data, a.timeout_ms).then(
            (v) => got.replies.push([a.label, print(v)]),
            (e) => got.replies.push([a.label, e instanceof SenteError ? ":chsk/" + e.code : String(e)]),
          ),
        );
    }
    await Promise.allSettled(pending);
    const want = info.expected;
    const same = () => JSON.stringify(got.states) == JSON.stringify(want.states) && got.recv.length >= want.recv.length;
    for (let t = Date.now(); !same() && Date.now() - t < 8000; ) await sleep(50);
    await sleep(300); // let the last frames (the close) reach the replay server
    const sent = await (await fetch(info.log_url)).json();
    const diffs = [];
    const check = (what, ours, sente) => {
      const [a, b] = [JSON.stringify(ours), JSON.stringify(sente)];
      if (a != b) diffs.push(`${what}: ours ${a} / Sente ${b}`);
    };
    check("states", got.states, want.states);
    check("recv", got.recv.map(canon), want.recv.map(canon));
    const sortR = (rs) => rs.map(([l, r]) => [l, canon(r)]).sort();
    check("replies", sortR(got.replies), sortR(want.replies));
    const strip = (log) => log.filter((l) => !keepalive(l));
    const count = (log, k) => log.filter((l) => keepalive(l) == k).length;
    check("sent", strip(sent), strip(info.expected_sent));
    check("pongs sent", count(sent, "pong"), count(info.expected_sent, "pong"));
    check("pinged", count(sent, "ping") > 0, count(info.expected_sent, "ping") > 0);
    return diffs;
  } finally {
    chsk.disconnect();
    stop();
  }
}

const cases = [
  { name: "1-ws", c: { transcript: "1-ws", tab: "A", type: "ws", uid: "u1" }, known: [] },
  // README observation 13: when an Ajax request's own timeout fires first, Sente's client (its
  // XHR timed out) gives the callback :chsk/error and marks the chsk closed :unexpected until the
  // next poll returns; ours gives :chsk/timeout and stays open. (The Rust client does the same.)
  {
    name: "2-ajax",
    c: { transcript: "2-ajax", tab: "A", type: "ajax" },
    known: [
      'states: ours ["open","closed :requested-disconnect"] / Sente ["open","closed :unexpected","open","closed :requested-disconnect"]',
      'replies: ours [["echo-1","{:echo {:msg \\"hello\\", :n 1}}"],["no-reply-1000",":chsk/timeout"],["no-reply-8000",":chsk/timeout"]] / Sente [["echo-1","{:echo {:msg \\"hello\\", :n 1}}"],["no-reply-1000",":chsk/error"],["no-reply-8000",":chsk/timeout"]]',
    ],
  },
  { name: "3-auto-downgrade", c: { transcript: "3-auto-downgrade", tab: "A", type: "auto", uid: "u3" }, known: [] },
  { name: "4-keepalive server pings", c: { transcript: "4-keepalive", tab: "A", type: "ws", uid: "u4a" }, known: [] },
  {
    name: "4-keepalive client pings",
    c: { transcript: "4-keepalive", tab: "B", type: "ws", uid: "u4b", wsKaliveMs: 2000 },
    known: [],
  },
  { name: "4-keepalive ping-timeout close", c: { transcript: "4-keepalive", tab: "C", type: "ws", uid: "u4c" }, known: [] },
  { name: "6-close tab A", c: { transcript: "6-close", tab: "A", cutoffMs: 12000, type: "ws", uid: "u6" }, known: [] },
  { name: "6-close tab B", c: { transcript: "6-close", tab: "B", cutoffMs: 12000, type: "ws", uid: "u6" }, known: [] },
];

for (const { name, c, known } of cases)
  test(`replay ${name}`, { skip, timeout: 60000 }, async () => {
    assert.deepEqual(await run(c), known);
  });
