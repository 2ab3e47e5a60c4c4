// A typed usage example of sente-client, type-checked by `npm run typecheck` (tsc --noEmit) and
// never run. Lines marked @ts-expect-error must stay errors: they check that the declarations
// refuse wrong uses.
import {
  createChannelSocket,
  createRouter,
  kw,
  SenteError,
  Tagged,
  type ChannelSocket,
  type ChskState,
  type LastClose,
  type Reconnecting,
  type SendFailed,
  type SenteErrorCode,
  type LargeFailed,
} from "sente-client";
import { edn, read, print, Sym, EdnError } from "sente-client/edn";

declare const csrf: string;

const chsk: ChannelSocket = createChannelSocket("/chsk", {
  csrfToken: () => csrf,
  type: "auto",
  queueBeforeOpen: true,
  queueMax: 50,
  requestTimeoutMs: 5000,
  resume: true,
  large: true,
  retryRequests: false,
});

// The README's first snippet: requests right after creation are queued until open.
async function firstSnippet(): Promise<void> {
  chsk.on("chsk/handshake", ([uid, , handshakeData, first]) => console.log("hello", uid, handshakeData, first));
  chsk.on("chsk/state", ([oldState, newState]) => console.log(oldState.open, "->", newState.open));
  chsk.on("chat/msg", (msg) => console.log(msg.from, msg.text));
  const queued: boolean = chsk.send("chat/say", { text: "hi" });
  const reply = await chsk.request<{ users: string[] }>("chat/who", null, 5000);
  const users: string[] = reply.users;
  console.log(queued, users);
}

// ready(), open / close / reconnecting, once, lastClose.
async function lifecycle(): Promise<void> {
  const st: ChskState = await chsk.ready(10000);
  const first: boolean = st.firstOpen;
  const recovered: boolean | undefined = st.recovered;
  if (recovered === false) console.log("missed pushes: refetch");
  chsk.on("open", (s) => console.log("open as", s.uid, s.type, first));
  chsk.on("close", (c: LastClose) => console.log("closed:", c.reason, c.code ?? "", c.status ?? ""));
  chsk.on("reconnecting", (r: Reconnecting) => console.log(`retry #${r.attempt} in ${r.inMs} ms`, r.lastClose?.reason));
  chsk.on("send-failed", ({ id, error }: SendFailed) => console.log(id, error.code));
  chsk.on("chsk/large-failed", ({ id, size, reason }: LargeFailed) => console.log(id, size, reason));
  const unRequest: () => void = chsk.onRequest("my-app/ask", async (d: any) => ({ echo: d }));
  unRequest();
  const off = chsk.once("chsk/close", (c) => console.log(c.udt));
  off();
  const c: LastClose = await chsk.once("close");
  const hs = await chsk.once("chsk/handshake");
  const uid: unknown = hs[0];
  const last = chsk.state.lastClose;
  if (last?.reason == "rejected") console.log("refused with HTTP", last.status);
  console.log(c, uid);
  chsk.connect(); // retry now
  // @ts-expect-error: a close reason that does not exist
  const bad: LastClose["reason"] = "timed-out";
  console.log(bad);
  // @ts-expect-error: the open event's data is a state, not a LastClose
  chsk.on("open", (s: LastClose) => s);
}

async function errors(): Promise<void> {
  try {
    await chsk.request("demo/echo", { n: 1, k: kw("a/b"), t: new Tagged("uuid", "x"), s: new Set([1]) });
    await chsk.request("demo/echo", 1, 5000, { retry: true });
  } catch (e) {
    if (e instanceof SenteError) {
      const code: SenteErrorCode = e.code;
      if (code == "queue-full" || code == "closed" || code == "timeout" || code == "error") console.log(code);
    }
  }
  // @ts-expect-error: an event id is a string or a Keyword
  chsk.send(42);
  // @ts-expect-error: ready() takes a timeout in ms
  await chsk.ready("soon");
}

const stop: () => void = createRouter(chsk, {
  "chat/msg": (data, id, c) => console.log(data, id, c.state.open),
  "*": async (_data, id) => console.log("unhandled", id),
});

// The optional edn module.
const sente = createChannelSocket("http://127.0.0.1:3000/chsk", { packer: edn, headers: { Origin: "http://a.example" } });
const v: unknown = read("{:a [1 2] :b #{x}}", { maxDepth: 10 });
const text: string = print([new Sym("x"), kw("a/b")]);
try {
  read("{");
} catch (e) {
  if (e instanceof EdnError) console.log(e.message);
}

export { firstSnippet, lifecycle, errors, stop, sente, v, text };
