// A small in-process stand-in for the sente-rs server (json packer only), used by the JS unit
// tests and for trying the chat demo's front end before the Rust server exists. It is NOT the
// server: it implements just enough of the wire protocol (sente-protocol.md sections 4-7).
//
//   node tools/mock-server.js [port]     serves /chsk, /chsk/client.js and the chat demo statics
//
// Dev-only: depends on the `ws` dev dependency.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { WebSocketServer } from "ws";

const here = path.dirname(fileURLToPath(import.meta.url));
const J = JSON.stringify;

export async function startMockServer(opts = {}) {
  const o = { csrf: "tok", lpTimeoutMs: 20000, ws: true, chat: false, ...opts };
  const wsConns = new Set(); // {ws, uid, clientId}
  const polls = new Map(); // clientId -> {res, uid}
  const pending = new Map(); // clientId -> [events] waiting for the next poll
  const ajaxClients = new Map(); // clientId -> uid
  const received = [];
  const sessions = new Map(); // sid -> name
  let clockT;

  const uidOf = (req, url) => {
    const sid = /sid=([^;]+)/.exec(req.headers.cookie || "")?.[1];
    return url.searchParams.get("uid") || sessions.get(sid) || ":sente/nil-uid";
  };
  const csrfOk = (req, params) =>
    !o.csrf || (params.get("csrf-token") || req.headers["x-csrf-token"]) === o.csrf;
  const handshake = (uid) => J([[":chsk/handshake", [uid, null, { mock: true }]], null]);
  const users = () => [
    ...new Set([...[...wsConns].map((c) => c.uid), ...ajaxClients.values()].filter((u) => u[0] != ":")),
  ];

  // Push a list of events (JSON wire form) to a uid, or to everyone when uid is null.
  function push(uid, events) {
    const body = J([events, null]);
    for (const c of wsConns) if (uid == null || c.uid === uid) c.ws.send(body);
    for (const [cid, u] of ajaxClients) {
      if (uid != null && u !== uid) continue;
      const p = polls.get(cid);
      if (p) {
        polls.delete(cid);
        p.res.end(body);
      } else pending.set(cid, [...(pending.get(cid) || []), ...events]);
    }
  }

  // Handle one client event; returns the reply (wire form) or undefined for "no reply".
  function onEvent(uid, ev) {
    received.push({ uid, ev });
    const [id, data] = ev;
    if (id === ":demo/echo") return data === undefined ? null : data;
    if (id === ":demo/push") {
      setTimeout(() => push(uid, data), 5);
      return "ok";
    }
    if (id === ":demo/kick") {
      setTimeout(() => dropAll(), 5);
      return "ok";
    }
    if (!o.chat) return undefined;
    const from = uid;
    const at = Date.now();
    if (id === ":chat/say") push(null, [[":chat/msg", { from, text: data.text, at }]]);
    if (id === ":chat/private") {
      const msg = [[":chat/private", { from, to: data.to, text: data.text, at }]];
      push(data.to, msg);
      if (data.to !== from) push(from, msg);
    }
    if (id === ":chat/who") return { users: users() };
    return undefined;
  }
  const announceUsers = () => o.chat && setTimeout(() => push(null, [[":chat/users", { users: users() }]]), 20);

  function dropAll() {
    for (const c of wsConns) c.ws.terminate();
    for (const [, p] of polls) p.res.destroy();
    polls.clear();
  }

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://x");
    let body = "";
    for await (const chunk of req) body += chunk;
    if (url.pathname === "/chsk" && req.method === "GET") {
      const p = url.searchParams;
      if (!p.get("client-id")) return res.writeHead(500).end("no client id");
      if (!csrfOk(req, p)) return res.writeHead(403).end("Bad CSRF token");
      if (o.rejectUid && uidOf(req, url) === o.rejectUid) return res.writeHead(401).end("Unauthorized request");
      const cid = p.get("client-id"), uid = uidOf(req, url);
      if (p.has("handshake?") || !ajaxClients.has(cid)) {
        const fresh = !ajaxClients.has(cid);
        ajaxClients.set(cid, uid);
        if (fresh) announceUsers();
        return res.end(handshake(uid));
      }
      const q = pending.get(cid);
      if (q?.length) {
        pending.delete(cid);
        return res.end(J([q, null]));
      }
      polls.get(cid)?.res.end(J([":chsk/timeout", null]));
      const entry = { res };
      polls.set(cid, entry);
      const t = setTimeout(() => {
        if (polls.get(cid) === entry) polls.delete(cid), res.end(J([":chsk/timeout", null]));
      }, o.lpTimeoutMs);
      res.on("close", () => clearTimeout(t));
      return;
    }
    if (url.pathname === "/chsk" && req.method === "POST") {
      const form = new URLSearchParams(body);
      if (!csrfOk(req, form)) return res.writeHead(403).end("Bad CSRF token");
      const [ev, cb] = JSON.parse(form.get("ppstr"));
      const reply = onEvent(ajaxClients.get(form.get("client-id")) || uidOf(req, url), ev);
      if (!cb) return res.end(J([":chsk/dummy-cb-200", null]));
      if (reply === undefined) return setTimeout(() => res.end(J([":chsk/timeout", null])), o.lpTimeoutMs);
      return res.end(J([reply, null]));
    }
    if (url.pathname === "/chsk/client.js") {
      res.setHeader("content-type", "text/javascript");
      return res.end(fs.readFileSync(path.join(here, "../src/sente.js")));
    }
    if (o.chat && url.pathname === "/login" && req.method === "POST") {
      const f = new URLSearchParams(body);
      const sid = Math.random().toString(36).slice(2);
      sessions.set(sid, f.get("name"));
      return res.writeHead(303, { location: "/", "set-cookie": `sid=${sid}; Path=/; HttpOnly` }).end();
    }
    if (o.chat && url.pathname === "/logout" && req.method === "POST")
      return res.writeHead(303, { location: "/", "set-cookie": "sid=; Path=/; Max-Age=0" }).end();
    if (o.chat && req.method === "GET") {
      const static_ = path.join(here, "../../../examples/chat/static");
      const file = url.pathname === "/" ? "index.html" : url.pathname.slice(1);
      const full = path.join(static_, path.normalize(file));
      if (!full.startsWith(static_) || !fs.existsSync(full)) return res.writeHead(404).end("not found");
      const ext = path.extname(full);
      res.setHeader(
        "content-type",
        { ".html": "text/html", ".js": "text/javascript", ".css": "text/css" }[ext] || "text/plain",
      );
      let text = fs.readFileSync(full, "utf8");
      if (ext === ".html") {
        let sid = /sid=([^;]+)/.exec(req.headers.cookie || "")?.[1];
        if (url.searchParams.get("as")) {
          // mock-only shortcut for screenshots: /?as=NAME logs in as NAME
          sid = Math.random().toString(36).slice(2);
          sessions.set(sid, url.searchParams.get("as"));
          res.setHeader("set-cookie", `sid=${sid}; Path=/; HttpOnly`);
        }
        const name = (sessions.get(sid) || "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
        text = text.replaceAll("{{CSRF_TOKEN}}", o.csrf || "").replaceAll("{{NAME}}", name);
      }
      return res.end(text);
    }
    res.writeHead(404).end("not found");
  });

  const wss = new WebSocketServer({ noServer: true });
  server.on("upgrade", (req, socket, head) => {
    const url = new URL(req.url, "http://x");
    const p = url.searchParams;
    const deny = (code, msg) => socket.end(`HTTP/1.1 ${code} ${msg}\r\ncontent-length: 0\r\n\r\n`);
    if (!o.ws || url.pathname !== "/chsk") return deny(404, "Not Found");
    if (!csrfOk(req, p)) return deny(403, "Forbidden");
    if (o.rejectUid && uidOf(req, url) === o.rejectUid) return deny(401, "Unauthorized");
    wss.handleUpgrade(req, socket, head, (ws) => {
      const c = { ws, uid: uidOf(req, url), clientId: p.get("client-id"), query: p };
      wsConns.add(c);
      ws.send(handshake(c.uid));
      announceUsers();
      ws.on("message", (data) => {
        const [payload, cb] = JSON.parse(String(data));
        if (Array.isArray(payload) && payload[0] === ":chsk/ws-ping") {
          if (cb != null && !o.noPong) ws.send(J(["pong", cb]));
          return;
        }
        if (Array.isArray(payload) && payload[0] === ":chsk/ws-pong") return received.push({ pong: true });
        const reply = onEvent(c.uid, payload);
        if (cb != null && reply !== undefined) ws.send(J([reply, cb]));
      });
      ws.on("close", () => {
        wsConns.delete(c);
        announceUsers();
      });
    });
  });

  await new Promise((r) => server.listen(opts.port || 0, "127.0.0.1", r));
  const port = server.address().port;
  if (o.chat) clockT = setInterval(() => push(null, [[":demo/clock", { now: Date.now() }]]), 1000);
  return {
    url: `http://127.0.0.1:${port}/chsk`,
    port,
    opts: o,
    wsConns,
    polls,
    received,
    push,
    dropAll,
    pingAll: () => wsConns.forEach((c) => c.ws.send(J([":chsk/ws-ping", null]))),
    close: () =>
      new Promise((r) => {
        clearInterval(clockT);
        dropAll();
        wss.close();
        server.closeAllConnections?.();
        server.close(() => r());
      }),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const s = await startMockServer({ chat: true, port: +(process.argv[2] || 8090) });
  console.log(`mock sente server with chat demo on http://127.0.0.1:${s.port}/`);
}
