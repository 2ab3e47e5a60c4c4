// Chat demo front end for sente-rs. No build step: the server serves the client at /chsk/client.js.
// All user-provided text is rendered with textContent, never innerHTML.
import { createChannelSocket } from "/chsk/client.js";

const $ = (id) => document.getElementById(id);
const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";
const clean = (v) => (v.startsWith("{{") ? "" : v); // placeholder not replaced: treat as empty

// The CSRF token of this page's session (the server checks it on /chsk, /login and /logout). It
// changes when the session does (a server restart forgets sessions): see checkSession.
let csrfToken = clean(meta("csrf-token"));
const myName = clean(meta("user-name")).trim();
function setToken(t) {
  csrfToken = t;
  for (const input of document.querySelectorAll('input[name="csrf-token"]')) input.value = t;
}
setToken(csrfToken);
for (const id of ["login-error", "name-input"]) {
  const e = $(id);
  if (e.value?.startsWith("{{")) e.value = "";
  if (e.textContent.startsWith("{{")) e.textContent = "";
}

if (!myName) {
  showLogin();
} else {
  startChat();
}

// The session of this page may have been replaced since it loaded (logged out in another tab,
// server restart): post the login and logout forms with the current session's token.
async function refreshToken() {
  try {
    const r = await fetch("/session", { cache: "no-store" });
    if (r.ok) setToken((await r.json()).csrfToken);
  } catch {}
}
for (const form of [$("login-form"), $("logout-form")]) {
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    await refreshToken();
    form.submit();
  });
}

/** Shows the login form (with `message` as its error, if any). */
function showLogin(message) {
  $("chat-view").hidden = true;
  $("status").hidden = true;
  $("login-view").hidden = false;
  if (message) $("login-error").textContent = message;
  $("name-input").focus();
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = String(text);
  return e;
}

const hhmmss = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });

// Transport choice: ?type=ajax|ws|auto wins, then localStorage, then "auto".
function initialType() {
  const q = new URLSearchParams(location.search).get("type");
  if (q === "ajax" || q === "ws" || q === "auto") return q;
  try {
    return localStorage.getItem("sente-demo-type") === "ajax" ? "ajax" : "auto";
  } catch {
    return "auto";
  }
}

function rememberType(type) {
  try {
    if (type === "ajax") localStorage.setItem("sente-demo-type", "ajax");
    else localStorage.removeItem("sente-demo-type");
  } catch {}
  const url = new URL(location.href);
  if (type === "ajax") url.searchParams.set("type", "ajax");
  else url.searchParams.delete("type");
  history.replaceState(null, "", url);
}

function startChat() {
  $("chat-view").hidden = false;
  $("status").hidden = false;
  $("me").textContent = myName;

  let type = initialType();
  $("force-ajax").checked = type === "ajax";

  const chsk = createChannelSocket("/chsk", { type, csrfToken: () => csrfToken, queueWhileClosed: false });
  window.chsk = chsk; // handy in the devtools console

  // ---- connection state ------------------------------------------------------------------
  const REASONS = {
    clean: "closed cleanly",
    unexpected: "connection lost",
    "requested-disconnect": "disconnected",
    "requested-reconnect": "reconnecting",
    "downgrading-ws-to-ajax": "WebSocket failed, using Ajax",
    "ws-ping-timeout": "ping timed out",
    "ws-error": "WebSocket error",
    rejected: "rejected by the server",
  };
  let retryTimer;
  function renderState(s) {
    const open = s.open;
    const stateEl = $("conn-state");
    stateEl.textContent = open ? "open" : "closed";
    stateEl.classList.toggle("ok", open);
    stateEl.classList.toggle("bad", !open);
    if (s.type === "ws" || s.type === "ajax") $("transport-badge").textContent = s.type;
    $("transport-badge").hidden = !(s.type === "ws" || s.type === "ajax");

    clearInterval(retryTimer);
    const detail = () => {
      let t = "";
      if (s.lastClose) {
        t = "last close: " + (REASONS[s.lastClose.reason] || s.lastClose.reason);
        if (s.lastClose.status) t += ` (${s.lastClose.status})`;
      }
      if (!open && s.udtNextReconnect) {
        const secs = Math.max(0, Math.ceil((s.udtNextReconnect - Date.now()) / 1000));
        t += (t ? " · " : "") + (secs ? `retry in ${secs} s` : "retrying…");
      } else if (!open && !s.everOpened) t = t || "connecting…";
      $("conn-detail").textContent = t;
    };
    detail();
    if (!open && s.udtNextReconnect) retryTimer = setInterval(detail, 1000);
  }
  chsk.on("chsk/state", ([, s]) => {
    renderState(s);
    if (!s.open && s.everOpened) checkSession();
  });
  renderState(chsk.state);

  // Signed out: in another tab (the server says so, then closes our connection) or here.
  let signedOut = false;
  async function signOut(message) {
    signedOut = true;
    chsk.disconnect();
    await refreshToken();
    showLogin(message);
  }
  chsk.on("chat/signed-out", () => signOut("Logged out in another tab. Join again to chat."));

  // The server forgot our session (it restarted: sessions live in memory), so our CSRF token no
  // longer works and the socket cannot reconnect. Checked while the socket is closed: take the
  // new session's token and sign in again with the same name.
  let checking = false;
  let lastCheck = 0;
  async function checkSession() {
    if (checking || signedOut || Date.now() - lastCheck < 2000) return;
    checking = true;
    lastCheck = Date.now();
    try {
      const r = await fetch("/session", { cache: "no-store" });
      if (!r.ok) return;
      const s = await r.json();
      if (s.csrfToken === csrfToken && s.name === myName) return; // same session: just a network problem
      setToken(s.csrfToken);
      if (s.name === myName) chsk.reconnect();
      else await signInAgain();
    } catch {
      // Server unreachable: the socket keeps retrying and we check again on its next attempt.
    } finally {
      checking = false;
    }
  }

  let relogins = 0;
  async function signInAgain() {
    if (signedOut) return;
    if (relogins++ > 3) return signOut("Signed out: join again to chat.");
    const body = new URLSearchParams({ name: myName, "csrf-token": csrfToken });
    const r = await fetch("/login", { method: "POST", body, headers: { accept: "application/json" } }).catch(
      () => null,
    );
    if (!r) return; // server unreachable: checkSession runs again on the socket's next attempt
    if (r.ok) return chsk.reconnect();
    const answer = await r.json().catch(() => ({}));
    signOut(answer.error || `Could not sign in again (${r.status}).`);
  }

  chsk.on("chsk/handshake", async ([uid]) => {
    // Open but anonymous: our session lost its name (the server restarted, or someone took
    // the name while we were away).
    if (uid === "sente/nil-uid" && myName) return signInAgain();
    relogins = 0;
    if (uid && uid !== myName && uid !== "sente/nil-uid") $("me").textContent = uid;
    try {
      const r = await chsk.request("chat/who", null, 5000);
      if (r && Array.isArray(r.users)) renderUsers(r.users);
    } catch {}
  });

  // ---- messages --------------------------------------------------------------------------
  const list = $("message-list");
  function addMessage({ from, to, text, at }, isPrivate) {
    const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const li = el("li", "msg" + (isPrivate ? " private" : "") + (from === myName ? " mine" : ""));
    li.dataset.testid = "message";
    const head = el("div", "msg-head");
    head.append(el("span", "from", from ?? "?"));
    if (isPrivate) {
      head.append(el("span", "arrow", "→"), el("span", "to", to ?? "?"), el("span", "tag", "private"));
    }
    head.append(el("time", "at", at ? hhmmss(at) : ""));
    li.append(head, el("div", "text", text ?? ""));
    list.append(li);
    while (list.children.length > 500) list.firstElementChild.remove();
    if (nearBottom || from === myName) list.scrollTop = list.scrollHeight;
  }
  chsk.on("chat/msg", (m) => m && addMessage(m, false));
  chsk.on("chat/private", (m) => m && addMessage(m, true));

  function flash(input) {
    input.classList.remove("shake");
    void input.offsetWidth;
    input.classList.add("shake");
  }

  // Shows the server's refusal (rate limit, not signed in, ...) under a form for a few seconds.
  const errorTimers = {};
  function showError(id, text) {
    $(id).textContent = text;
    clearTimeout(errorTimers[id]);
    errorTimers[id] = setTimeout(() => ($(id).textContent = ""), 6000);
  }
  const why = (err) =>
    err?.code === "closed" ? "Not connected: the message was not sent." : `The message was not sent (${err?.code || err}).`;

  // Sends `event` and shows an error if the server refuses it; the text goes back into the input.
  async function sendChecked(event, data, input, errorId) {
    input.value = "";
    try {
      const answer = await chsk.request(event, data, 5000);
      if (answer?.error) throw answer.error;
    } catch (err) {
      showError(errorId, typeof err === "string" ? err : why(err));
      if (!input.value) input.value = data.text;
      flash(input);
    }
  }

  $("say-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("message-input");
    const text = input.value.trim();
    if (!text) return;
    sendChecked("chat/say", { text }, input, "say-error");
    input.focus();
  });

  // ---- users and private messages --------------------------------------------------------
  function renderUsers(users) {
    users = [...new Set(users.map(String))].sort((a, b) => a.localeCompare(b));
    const ul = $("user-list");
    ul.replaceChildren(
      ...users.map((u) => {
        const li = el("li", u === myName ? "me" : "");
        li.dataset.testid = "user";
        li.append(el("span", "dot"), el("span", "name", u));
        if (u === myName) li.append(el("span", "muted small", " (you)"));
        return li;
      }),
    );
    $("user-count").textContent = String(users.length);

    const sel = $("pm-target");
    const prev = sel.value;
    const others = users.filter((u) => u !== myName);
    const ordered = [...others, ...users.filter((u) => u === myName)];
    sel.replaceChildren(
      ...ordered.map((u) => {
        const o = el("option", null, u === myName ? `${u} (you)` : u);
        o.value = u;
        return o;
      }),
    );
    if (ordered.includes(prev)) sel.value = prev;
  }
  chsk.on("chat/users", (d) => d && Array.isArray(d.users) && renderUsers(d.users));

  $("pm-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("pm-input");
    const to = $("pm-target").value;
    const text = input.value.trim();
    if (!to || !text) return flash(input);
    sendChecked("chat/private", { to, text }, input, "pm-error");
  });

  // ---- transport toggle ------------------------------------------------------------------
  $("force-ajax").addEventListener("change", (e) => {
    type = e.target.checked ? "ajax" : "auto";
    rememberType(type);
    $("transport-badge").hidden = true;
    chsk.reconnect({ type });
  });

  // ---- ping and clock --------------------------------------------------------------------
  $("ping-button").addEventListener("click", async () => {
    const out = $("ping-result");
    out.textContent = "…";
    out.className = "result";
    const t0 = performance.now();
    try {
      await chsk.request("demo/echo", { t: Date.now() }, 5000);
      out.textContent = `${Math.round(performance.now() - t0)} ms`;
      out.classList.add("ok");
    } catch (err) {
      out.textContent = err?.code || "error";
      out.classList.add("bad");
    }
  });

  chsk.on("demo/clock", (d) => {
    if (d && typeof d.now === "number") $("clock").textContent = hhmmss(d.now);
  });
}
