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
// The server's limits (in characters, as the server counts them: code points, not UTF-16 units).
const MAX_NAME = Number(clean(meta("max-name"))) || 32;
const MAX_TEXT = Number(clean(meta("max-text"))) || 2000;
const length = (s) => [...s].length;
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

// The session of this page may have been replaced since it loaded (logged out in another tab,
// server restart): post the login and logout forms with the current session's token.
async function refreshToken() {
  try {
    const r = await fetch("/session", { cache: "no-store" });
    if (r.ok) setToken((await r.json()).csrfToken);
  } catch {}
}
$("logout-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  await refreshToken();
  e.target.submit();
});

// Signing in: the name is checked here first, then the server answers `{}` or `{"error": ".."}`
// (name taken, too long, ...), shown above the field. On success the page reloads signed in.
const nameInput = $("name-input");
nameInput.addEventListener("input", () => showCount(nameInput, $("name-counter"), MAX_NAME));
showCount(nameInput, $("name-counter"), MAX_NAME);
$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = nameInput.value.trim();
  const error = (text) => {
    $("login-error").textContent = text;
    nameInput.focus();
  };
  if (!name) return error(`A name is 1 to ${MAX_NAME} characters.`);
  if (length(name) > MAX_NAME) return error(`A name is at most ${MAX_NAME} characters; this one has ${length(name)}.`);
  await refreshToken();
  const body = new URLSearchParams({ name, "csrf-token": csrfToken });
  const r = await fetch("/login", { method: "POST", body, headers: { accept: "application/json" } }).catch(() => null);
  if (!r) return error("The server cannot be reached. Try again in a moment.");
  if (r.ok) return location.reload();
  const answer = await r.json().catch(() => ({}));
  error(answer.error || `The server refused (${r.status}).`);
});

/** Shows "n / max" under `input`, in red past the limit; returns whether the text fits. */
function showCount(input, counter, max) {
  const n = length(input.value.trim());
  counter.textContent = n > max ? `${n} / ${max}: ${n - max} too many` : `${n} / ${max}`;
  counter.classList.toggle("over", n > max);
  input.classList.toggle("invalid", n > max);
  return n <= max;
}

/** Shows the login form (with `message` as its error, if any). */
function showLogin(message) {
  $("chat-view").hidden = true;
  $("status").hidden = true;
  $("offline-banner").hidden = true;
  $("login-view").hidden = false;
  if (message) $("login-error").textContent = message;
  nameInput.focus();
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
  // While closed: a banner with a countdown to the next attempt and "Retry now", and what cannot
  // work greyed out (the .offline class) and disabled. When open again, stale errors go away.
  let countdown;
  let wasOpen = false;
  function renderState(s) {
    const open = s.open;
    const stateEl = $("conn-state");
    stateEl.textContent = open ? "open" : "closed";
    stateEl.classList.toggle("ok", open);
    stateEl.classList.toggle("bad", !open);
    if (s.type === "ws" || s.type === "ajax") $("transport-badge").textContent = s.type;
    $("transport-badge").hidden = !open || !(s.type === "ws" || s.type === "ajax");
    $("chat-view").classList.toggle("offline", !open);
    // No banner for the first attempt of a page that just loaded.
    $("offline-banner").hidden = open || signedOut || (!s.everOpened && !s.udtNextReconnect);
    updateButtons();

    clearInterval(countdown);
    if (open) {
      $("conn-detail").textContent = "";
      if (!wasOpen) clearErrors();
    } else if (!signedOut) {
      let why = s.everOpened ? "Connection lost. " : "Cannot connect. ";
      const reason = s.lastClose?.reason;
      if (reason === "requested-reconnect") why = "";
      else if (reason) why = `${REASONS[reason] || reason}${s.lastClose.status ? ` (${s.lastClose.status})` : ""}. `;
      const tick = () => {
        const secs = s.udtNextReconnect ? Math.ceil((s.udtNextReconnect - Date.now()) / 1000) : 0;
        const next = secs > 0 ? `Reconnecting in ${secs} s…` : "Reconnecting…";
        $("offline-text").textContent = why[0] ? why[0].toUpperCase() + why.slice(1) + next : next;
        $("conn-detail").textContent = secs > 0 ? `retry in ${secs} s` : "connecting…";
      };
      tick();
      countdown = setInterval(tick, 250);
    }
    wasOpen = open;
  }
  $("retry-now").addEventListener("click", () => {
    chsk.retryNow();
    checkSession(true); // the server may have restarted and forgotten our session
  });

  chsk.on("chsk/state", ([, s]) => {
    renderState(s);
    if (!s.open && s.everOpened) checkSession();
  });

  // Signed out: in another tab (the server says so, then closes our connection) or here.
  let signedOut = false;
  async function signOut(message) {
    signedOut = true;
    clearInterval(countdown);
    chsk.disconnect();
    await refreshToken();
    showLogin(message);
  }
  chsk.on("chat/signed-out", () => signOut("You logged out in another tab. Join again to chat."));

  // The server forgot our session (it restarted: sessions live in memory), so our CSRF token no
  // longer works and the socket cannot reconnect. Checked while the socket is closed: take the
  // new session's token and sign in again with the same name.
  // At most one check per 2 s, but a check asked for meanwhile is not dropped: it runs when the
  // 2 s are up (a "retry now" just after a failed attempt must not wait for the next backoff).
  let checking = false;
  let lastCheck = 0;
  let checkLater = null;
  async function checkSession(now = false) {
    if (signedOut) return;
    const wait = checking ? 2000 : now ? 0 : lastCheck + 2000 - Date.now();
    if (wait > 0) {
      checkLater ??= setTimeout(() => {
        checkLater = null;
        if (!chsk.state.open) checkSession();
      }, wait);
      return;
    }
    clearTimeout(checkLater);
    checkLater = null;
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
    // rejoin: the server refuses it once this session logged out (in another tab).
    const body = new URLSearchParams({ name: myName, "csrf-token": csrfToken, rejoin: "true" });
    const r = await fetch("/login", { method: "POST", body, headers: { accept: "application/json" } }).catch(
      () => null,
    );
    if (!r) return; // server unreachable: checkSession runs again on the socket's next attempt
    if (r.ok) return chsk.reconnect();
    const answer = await r.json().catch(() => ({}));
    signOut(answer.error || `Could not sign in again (${r.status}).`);
  }

  // The room's history: fetched on the first open (join, reload), and again after a reconnect
  // that did not resume the stream. `recovered` true: the server replayed what we missed, in
  // order, once (nothing to do). False: the replay window had passed (or the server restarted),
  // so a marker says messages may be missing, and the history fills in the room's. Undefined
  // (Ajax, which does not resume): the history is fetched again, and after a lost connection
  // (not a reconnect the page asked for, such as the Ajax toggle) the marker is shown too.
  let joined = false;
  chsk.on("chsk/handshake", async ([uid]) => {
    // Open but anonymous: our session lost its name (the server restarted, or someone took
    // the name while we were away).
    if (uid === "sente/nil-uid" && myName) return signInAgain();
    relogins = 0;
    if (uid && uid !== myName && uid !== "sente/nil-uid") $("me").textContent = uid;
    const { recovered, lastClose } = chsk.state;
    if (!joined || recovered !== true) {
      const gap = joined && (recovered === false || lastClose?.reason !== "requested-reconnect");
      joined = true;
      fetchHistory(gap && markGap());
    }
    try {
      const r = await chsk.request("chat/who", null, 5000);
      if (r && Array.isArray(r.users)) renderUsers(r.users);
    } catch {}
  });

  // ---- messages --------------------------------------------------------------------------
  // Text and names get dir="auto": each takes the direction of its own first strong character, so
  // Arabic and Hebrew read right to left.
  const list = $("message-list");
  function addMessage({ from, to, text, at }, isPrivate) {
    const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const li = el("li", "msg" + (isPrivate ? " private" : "") + (from === myName ? " mine" : ""));
    li.dataset.testid = "message";
    const head = el("div", "msg-head");
    head.append(el("bdi", "from", from ?? "?"));
    if (isPrivate) {
      head.append(el("span", "arrow", "→"), el("bdi", "to", to ?? "?"), el("span", "tag", "private"));
    }
    head.append(el("time", "at", at ? hhmmss(at) : ""));
    const body = el("div", "text", text ?? "");
    body.dir = "auto";
    li.append(head, body);
    list.append(li);
    while (list.children.length > 500) list.firstElementChild.remove();
    if (nearBottom || from === myName) list.scrollTop = list.scrollHeight;
    return li;
  }
  // Room messages have ids (made by the server): `shown` maps each to its <li>, so a message
  // is shown once however it comes (live, replayed after a reconnect, in the history).
  const shown = new Map();
  function addRoomMessage(m, before) {
    if (!m || shown.has(m.id)) return;
    const li = addMessage(m, false);
    if (before?.isConnected) list.insertBefore(li, before);
    if (m.id) shown.set(m.id, li);
    return li;
  }
  chsk.on("chat/msg", (m) => addRoomMessage(m));

  // Shows the history's messages (oldest first) that are not on the page, each in its place:
  // before the next one of the history that is shown.
  function showHistory(messages) {
    let next = null;
    for (const m of [...messages].reverse()) next = shown.get(m?.id) || addRoomMessage(m, next) || next;
  }

  // A marker in the message list where messages may be missing (returned for fetchHistory).
  function markGap() {
    const li = el("li", "gap", "You may have missed messages while offline. Fetching the room's recent messages…");
    li.dataset.testid = "gap-marker";
    list.append(li);
    list.scrollTop = list.scrollHeight;
    return li;
  }

  // Fetches the room's recent messages and shows those missing; says on `marker` how it went.
  async function fetchHistory(marker) {
    const say = (text) => marker && (marker.textContent = `You may have missed messages while offline. ${text}`);
    try {
      const r = await chsk.request("chat/history", null, 5000);
      if (!Array.isArray(r?.messages)) throw r?.error;
      showHistory(r.messages);
      say(`The room's last ${r.messages.length} messages are shown (private messages are not kept).`);
    } catch {
      say("The room's recent messages could not be fetched: reload the page to see them.");
    }
  }

  // Private messages: the sending tab shows its message at once as "sending…", then what the
  // server's reply says ("sent" or "not sent: why"), then "delivered" once a tab of the
  // recipient confirms it (chat/delivered). A message to someone who just left stays "sent" (the
  // server still counts them as connected for a few seconds, in case they come back at once).
  const mine = new Map(); // message id -> <li>, for private messages sent by this user
  function setStatus(li, status, text) {
    li.dataset.status = status;
    let s = li.querySelector(".status");
    if (!s) {
      s = el("span", "status");
      s.dataset.testid = "pm-status";
      li.append(s);
    }
    s.textContent = text;
  }
  chsk.on("chat/private", (m) => {
    if (!m) return;
    if (mine.has(m.id)) return; // the copy of a message this tab sent: already shown
    const li = addMessage(m, true);
    if (m.from === myName) {
      // Sent from another tab of ours: follow its delivery too.
      mine.set(m.id, li);
      setStatus(li, "sent", "sent");
    } else if (m.id) {
      chsk.send("chat/delivered", { from: m.from, id: m.id });
    }
  });
  chsk.on("chat/delivered", (d) => {
    const li = d && mine.get(d.id);
    if (li) setStatus(li, "delivered", "delivered ✓");
  });

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
  function clearErrors() {
    for (const id of ["say-error", "pm-error", "ping-result"]) $(id).textContent = "";
    for (const e of document.querySelectorAll(".shake")) e.classList.remove("shake");
  }
  const why = (err) =>
    typeof err === "string"
      ? err
      : err?.code === "closed"
        ? "Not connected: the message was not sent."
        : `The message was not sent (${err?.code || err}).`;

  // Sends a request and throws the server's refusal ({:error "why"}) or the client's error.
  async function request(event, data) {
    const answer = await chsk.request(event, data, 5000);
    if (answer?.error) throw answer.error;
    return answer;
  }

  const sayInput = $("message-input");
  const pmInput = $("pm-input");
  $("say-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = sayInput.value.trim();
    if (!text || $("send-button").disabled) return;
    sayInput.value = "";
    sayInput.focus();
    updateButtons();
    try {
      await request("chat/say", { text });
    } catch (err) {
      showError("say-error", why(err));
      if (!sayInput.value) sayInput.value = text; // the text is not lost
      updateButtons();
      flash(sayInput);
    }
  });

  // Send buttons work only while open, with a text within the limit (and a recipient online).
  function updateButtons() {
    const open = chsk.state.open;
    const sayFits = showCount(sayInput, $("say-counter"), MAX_TEXT);
    const pmFits = showCount(pmInput, $("pm-counter"), MAX_TEXT);
    $("send-button").disabled = !open || !sayFits;
    $("pm-send").disabled = !open || !pmFits || !recipient || !online.includes(recipient);
    $("ping-button").disabled = !open;
  }
  sayInput.addEventListener("input", updateButtons);
  pmInput.addEventListener("input", updateButtons);

  // ---- users and private messages --------------------------------------------------------
  let online = []; // the connected users (chat/users)
  // The recipient of private messages: only the user changes it. If they leave, it stays, marked
  // "left", and sending is disabled until they are back.
  let recipient = "";
  function renderUsers(users) {
    online = [...new Set(users.map(String))].sort((a, b) => a.localeCompare(b));
    const ul = $("user-list");
    ul.replaceChildren(
      ...online.map((u) => {
        const li = el("li", u === myName ? "me" : "");
        li.dataset.testid = "user";
        li.append(el("span", "dot"), el("bdi", "name", u));
        if (u === myName) li.append(el("span", "muted small", " (you)"));
        return li;
      }),
    );
    $("user-count").textContent = String(online.length);
    renderRecipients();
  }
  chsk.on("chat/users", (d) => d && Array.isArray(d.users) && renderUsers(d.users));

  function renderRecipients() {
    const others = online.filter((u) => u !== myName); // never yourself
    const left = recipient && !others.includes(recipient);
    const option = (value, label) => {
      const o = el("option", null, label);
      o.value = value;
      return o;
    };
    const sel = $("pm-target");
    sel.replaceChildren(
      option("", others.length ? "Choose someone…" : "Nobody else is online"),
      ...others.map((u) => option(u, u)),
      ...(left ? [option(recipient, `${recipient} (left)`)] : []),
    );
    sel.value = recipient;
    $("pm-note").textContent = left ? `${recipient} left: you cannot send to them until they are back.` : "";
    updateButtons();
  }
  $("pm-target").addEventListener("change", (e) => {
    recipient = e.target.value;
    renderRecipients();
  });

  let lastId = 0;
  $("pm-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const to = recipient;
    const text = pmInput.value.trim();
    if (!text || $("pm-send").disabled) return flash(pmInput);
    const id = `${Date.now().toString(36)}-${++lastId}-${Math.random().toString(36).slice(2, 8)}`;
    const li = addMessage({ from: myName, to, text, at: Date.now() }, true);
    mine.set(id, li);
    setStatus(li, "sending", "sending…");
    pmInput.value = "";
    updateButtons();
    try {
      await request("chat/private", { to, text, id });
      if (li.dataset.status === "sending") setStatus(li, "sent", "sent");
      setTimeout(() => li.dataset.status === "sent" && setStatus(li, "sent", `sent, not confirmed by ${to}`), 10_000);
    } catch (err) {
      mine.delete(id);
      setStatus(li, "failed", "not sent");
      showError("pm-error", why(err));
      if (!pmInput.value) pmInput.value = text;
      updateButtons();
      flash(pmInput);
    }
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

  renderUsers([]);
  renderState(chsk.state);
}

if (!myName) {
  showLogin();
} else {
  startChat();
}
