// sente-client/edn: an edn reader and printer, and the edn packer for talking to Sente servers.
// Optional: import it only when needed (`import { edn } from "sente-client/edn"`); the core
// (`sente.js`) does not depend on it. Reads what Clojure's `pr-str` (Sente's edn packer) prints
// and prints what Clojure's edn reader reads. See README.md ("The edn packer mapping").

import { Keyword, Tagged, kw } from "./sente.js";

export { Keyword, Tagged, kw };

// ---------------------------------------------------------------------------------------------
// Values without a native JS counterpart

/** A Clojure symbol, e.g. `new Sym("my/sym")`. */
export class Sym {
  constructor(name) {
    this.name = String(name);
  }
  toString() {
    return this.name;
  }
}

/** A Clojure character: `.char` is a one-code-point string, e.g. `new Char("a")`. */
export class Char {
  constructor(c) {
    c = String(c);
    if ([...c].length != 1) throw new TypeError("edn: a Char holds exactly one character: " + JSON.stringify(c));
    this.char = c;
  }
  toString() {
    return this.char;
  }
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A `#uuid`: `.value` is the canonical lower-case string. */
export class Uuid {
  constructor(s) {
    const v = String(s).toLowerCase();
    if (!UUID_RE.test(v)) throw new TypeError("edn: invalid uuid " + JSON.stringify(String(s).slice(0, 40)));
    this.value = v;
  }
  toString() {
    return this.value;
  }
}

/** A ratio `numer/denom` of BigInts, normalized as Clojure does (denom > 1, no common factor). */
export class Ratio {
  constructor(numer, denom) {
    this.numer = BigInt(numer);
    this.denom = BigInt(denom);
    if (this.denom <= 0n) throw new RangeError("edn: a ratio's denominator must be positive");
  }
  /** The nearest double (Number(ratio), ratio + 0, ...). */
  valueOf() {
    return Number(this.numer) / Number(this.denom);
  }
  toString() {
    return this.numer + "/" + this.denom;
  }
}

/** A `BigDecimal` (`1.5M`): `.value` is its decimal text without the `M`. */
export class BigDec {
  constructor(s) {
    this.value = String(s);
  }
  valueOf() {
    return Number(this.value);
  }
  toString() {
    return this.value;
  }
}

/** A list `(a b c)`: an Array that prints with parentheses. Build one with `List.from(items)`. */
export class List extends Array {
  static get [Symbol.species]() {
    return Array; // map/filter/slice of a List give plain arrays
  }
}

/** A read error (malformed or unsupported edn, or a limit exceeded); `.pos` is the offset. */
export class EdnError extends SyntaxError {
  constructor(message, pos) {
    super("edn: " + message + (pos == null ? "" : " at offset " + pos));
    this.name = "EdnError";
    this.pos = pos;
  }
}

// A keyword: also one made by another copy of sente.js (e.g. the app imports the core from one
// URL and this module imports "./sente.js" from another), which prints as ":name".
const isKw = (x) =>
  x instanceof Keyword ||
  (x != null && typeof x == "object" && typeof x.name == "string" && typeof x.toString == "function" &&
    x.constructor != Object && x.toString() === ":" + x.name);

// ---------------------------------------------------------------------------------------------
// Reader

const WS_RE = /[\s,\x1c-\x1f]/; // \s also covers the Unicode spaces Java's isWhitespace knows
const isWs = (c) => WS_RE.test(c) && c != "\u00a0" && c != "\u2007" && c != "\u202f" && c != "\ufeff";
const TERM = '";^()[]{}\\';
const CHAR_NAMES = { newline: "\n", space: " ", tab: "\t", backspace: "\b", formfeed: "\f", return: "\r" };
const STR_ESC = { t: "\t", r: "\r", n: "\n", "\\": "\\", '"': '"', b: "\b", f: "\f" };
const U128 = 2n ** 128n,
  I64_MIN = -(2n ** 63n),
  I64_MAX = 2n ** 63n - 1n;

// tools.reader's rule for a symbol or keyword body.
const validSym = (t) => {
  if (!t || t.endsWith(":") || t.startsWith("::")) return false;
  const i = t.indexOf("/");
  if (i < 0) return true;
  if (i == 0) return t == "/";
  const ns = t.slice(0, i),
    name = t.slice(i + 1);
  return !!name && !/^\d/.test(name) && !ns.endsWith(":") && (name == "/" || !name.includes("/"));
};

// Whether `t` can begin a symbol read on its own: not with a digit, `#` or `:`, nor with `+`, `-`
// or `.` before a digit, which reads as a number (as the Rust reader's `starts_symbol`).
const startsSym = (t) => /^(?![0-9#:])(?![+\-.][0-9])./su.test(t);

/** An integer: a Number when safe, else a BigInt. */
const int = (b) => (b >= -(2n ** 53n) + 1n && b <= 2n ** 53n - 1n ? Number(b) : b);

const gcd = (a, b) => {
  while (b) [a, b] = [b, a % b];
  return a;
};

// Java's BigDecimal.toString of `int.frac E exp` (as the Rust reader does).
function bigdecText(neg, ip, fp, exp) {
  const e = exp ? Number(exp) : 0;
  if (!Number.isSafeInteger(e) || Math.abs(e) > 2 ** 31) return null;
  const scale = fp.length - e;
  const coeff = (ip + fp).replace(/^0+/, "") || "0";
  const adj = -scale + coeff.length - 1;
  let out;
  if (scale >= 0 && adj >= -6) {
    if (scale == 0) out = coeff;
    else if (coeff.length > scale) out = coeff.slice(0, -scale) + "." + coeff.slice(-scale);
    else out = "0." + "0".repeat(scale - coeff.length) + coeff;
  } else out = coeff[0] + (coeff.length > 1 ? "." + coeff.slice(1) : "") + "E" + (adj >= 0 ? "+" : "") + adj;
  return (neg && coeff != "0" ? "-" : "") + out;
}

// tools.reader's match-number.
function parseNumber(tok) {
  const neg = tok[0] == "-";
  const body = tok[0] == "-" || tok[0] == "+" ? tok.slice(1) : tok;
  const big = body.endsWith("N");
  let m;
  // Integers: decimal, 0x hex, 0 octal, NrDIGITS; N forces a BigInt.
  if ((m = /^(?:(0|[1-9]\d*)|0[xX]([0-9a-fA-F]+)|0([0-7]+)|([1-9]\d?)[rR]([0-9a-zA-Z]+))$/.exec(big ? body.slice(0, -1) : body))) {
    let b;
    if (m[1] != null) b = BigInt(m[1]);
    else if (m[2] != null) b = BigInt("0x" + m[2]);
    else if (m[3] != null) b = BigInt("0o" + m[3]);
    else {
      const r = Number(m[4]);
      if (r < 2 || r > 36 || m[5].length > 4096) return; // (quadratic: as the Rust reader)
      b = 0n;
      for (const ch of m[5].toLowerCase()) {
        const d = parseInt(ch, 36);
        if (d >= r) return;
        b = b * BigInt(r) + BigInt(d);
      }
    }
    if (neg) b = -b;
    return big ? b : int(b);
  }
  if (/^0\d+N?$/.test(body)) return; // e.g. 09
  if ((m = /^(\d+)(?:\.(\d*))?(?:[eE]([-+]?\d+))?(M?)$/.exec(body))) {
    if (m[4]) {
      const t = bigdecText(neg, m[1], m[2] || "", m[3]);
      return t == null ? undefined : new BigDec(t);
    }
    return Number(tok);
  }
  if ((m = /^(\d+)\/(\d+)$/.exec(body))) {
    let n = BigInt(m[1]),
      d = BigInt(m[2]);
    if (!d) throw "divide by zero";
    // Normalized as Clojure when both fit 128 bits; larger ones are kept as written (as the
    // Rust reader: Euclid's algorithm on huge numbers is slow).
    const g = n < U128 && d < U128 ? gcd(n, d) || 1n : 1n;
    n /= g;
    d /= g;
    if (neg) n = -n;
    return d == 1n ? int(n) : new Ratio(n, d);
  }
}

const INST_RE =
  /^(\d{4})(?:-(\d\d)(?:-(\d\d)(?:T(\d\d)(?::(\d\d)(?::(\d\d)(?:\.(\d+))?)?)?)?)?)?(?:Z|([-+])(\d\d):(\d\d))?$/;

/** Parses an RFC 3339 timestamp as Clojure's `#inst` reader does (to millisecond precision). */
export function parseInst(s) {
  const m = INST_RE.exec(s);
  if (!m) return null;
  const [y, mo = 1, d = 1, h = 0, mi = 0, sec = 0] = m.slice(1, 7).map((x) => (x == null ? undefined : +x));
  const ms = m[7] ? +(m[7] + "00").slice(0, 3) : 0;
  const dim = new Date(Date.UTC(2000, mo, 0)).getUTCDate() - (mo == 2 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)));
  const oh = m[9] ? +m[9] : 0,
    om = m[10] ? +m[10] : 0;
  if (mo < 1 || mo > 12 || d < 1 || d > dim || h > 23 || mi > 59 || sec > (mi == 59 ? 60 : 59) || oh > 23 || om > 59)
    return null;
  const t = new Date(0);
  t.setUTCFullYear(y, mo - 1, d);
  t.setUTCHours(h, mi, sec, ms);
  return new Date(t.getTime() - (m[8] == "-" ? -1 : 1) * (oh * 60 + om) * 60000);
}

const DEFAULTS = { maxDepth: 64, maxLength: 100000, unknownTags: "keep" };

/**
 * Reads the first form of `text` (leading whitespace and comments are skipped, anything after
 * the first form is ignored, as Sente does; empty input reads as `null`). Throws an EdnError.
 * Options: `maxDepth` (nesting of collections and `#tag`/`#_`/`^` forms, default 64), `maxLength`
 * (elements of one collection, default 100000), `unknownTags` ("keep" as `Tagged`, default, or
 * "error"), `tags` ({ "my/tag": (value) => ... } readers for other tags).
 */
export function read(text, opts) {
  const o = { ...DEFAULTS, ...opts };
  const s = String(text);
  let i = 0;
  const fail = (msg, at = i) => {
    throw new EdnError(msg, at);
  };
  const skip = () => {
    while (i < s.length) {
      const c = s[i];
      if (c == ";") {
        const j = s.indexOf("\n", i);
        i = j < 0 ? s.length : j + 1;
      } else if (isWs(c)) i++;
      else return;
    }
  };
  // The end of a token starting at `j`; number tokens also stop at `#` and `:`.
  const tokenEnd = (j, num) => {
    for (; j < s.length; j++) {
      const c = s[j];
      if (TERM.includes(c) || isWs(c) || (num && (c == "#" || c == ":"))) break;
      if (c == "@" || c == "`" || c == "~") fail("unexpected character " + JSON.stringify(c), j);
    }
    return j;
  };
  const snip = (t) => JSON.stringify(t.length > 40 ? t.slice(0, 40) + "…" : t);
  const show = (x) => {
    try {
      return snip(print(x));
    } catch {
      return "(a value)";
    }
  };

  // Reads one form; returns DISCARD for `#_ form`, CLOSE for a closing delimiter.
  const DISCARD = {},
    CLOSE = {};
  const form = (depth, eof) => {
    skip();
    if (i >= s.length) fail("unexpected end of input" + (eof ? ": unclosed " + eof : ""));
    const start = i,
      c = s[i];
    const nest = () => {
      if (depth >= o.maxDepth) fail("nesting deeper than " + o.maxDepth, start);
      return depth + 1;
    };
    const items = (close, what, lim = o.maxLength) => {
      const d = nest(),
        out = [];
      for (;;) {
        const v = form(d, what + " starting at offset " + start);
        if (v === CLOSE) {
          if (s[i - 1] != close) fail("unmatched delimiter " + s[i - 1], i - 1);
          return out;
        }
        if (v === DISCARD) continue;
        if (out.length >= lim) fail(what + " longer than " + o.maxLength + " elements", start);
        out.push(v);
      }
    };
    switch (c) {
      case "[":
        i++;
        return items("]", "vector");
      case "(":
        i++;
        return List.from(items(")", "list"));
      case "{":
        i++;
        return makeMap(items("}", "map", 2 * o.maxLength), start);
      case "]":
      case ")":
      case "}":
        i++;
        if (!eof) fail("unmatched delimiter " + c, start);
        return CLOSE;
      case '"':
        return str();
      case "\\":
        return chr();
      case ":":
        return keyword();
      case "^": {
        // Metadata is read and dropped (as values carry none here).
        i++;
        const d = nest();
        let m;
        do m = form(d, "metadata");
        while (m === DISCARD);
        let v;
        do v = form(d, "metadata target");
        while (v === DISCARD);
        if (m === CLOSE || v === CLOSE) fail("unmatched delimiter " + s[i - 1], i - 1);
        return v;
      }
      case "#":
        return dispatch(depth, start, nest, items);
    }
    if (/\d/.test(c) || ((c == "+" || c == "-") && /\d/.test(s[i + 1] || ""))) {
      const end = tokenEnd(i, true),
        tok = s.slice(i, end);
      let v;
      try {
        v = parseNumber(tok);
      } catch (e) {
        fail(e + ": " + snip(tok), start);
      }
      if (v === undefined) fail("invalid number " + snip(tok), start);
      i = end;
      return v;
    }
    const end = tokenEnd(i);
    if (end == i) fail("unexpected character " + JSON.stringify(c));
    const tok = s.slice(i, end);
    i = end;
    if (tok == "nil") return null;
    if (tok == "true") return true;
    if (tok == "false") return false;
    if (!validSym(tok)) fail("invalid token " + snip(tok), start);
    return new Sym(tok);
  };

  const keyword = () => {
    const start = i,
      end = tokenEnd(i + 1),
      tok = s.slice(i + 1, end);
    i = end;
    if (!tok) fail(end >= s.length ? "unexpected end of input in keyword" : "invalid token \":\"", start);
    if (tok[0] == ":") fail("auto-resolved keywords are not edn: " + snip(":" + tok), start);
    if (tok.includes("::") || !validSym(tok)) fail("invalid keyword " + snip(":" + tok), start);
    return kw(tok);
  };

  const str = () => {
    const start = i;
    let out = "";
    i++;
    const re = /["\\]/g;
    for (;;) {
      re.lastIndex = i;
      const j = re.exec(s)?.index;
      if (j === undefined) fail("unexpected end of input in string", start);
      out += s.slice(i, j);
      i = j;
      if (s[i] == '"') {
        i++;
        return out;
      }
      const e = s[i + 1];
      if (e === undefined) fail("unexpected end of input in string", start);
      if (STR_ESC[e]) {
        out += STR_ESC[e];
        i += 2;
      } else if (e == "u") {
        const h = s.slice(i + 2, i + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(h)) fail("invalid escape " + snip("\\u" + h));
        out += String.fromCharCode(parseInt(h, 16));
        i += 6;
      } else if (/[0-7]/.test(e)) {
        const o8 = /^[0-7]{1,3}/.exec(s.slice(i + 1, i + 4))[0];
        if (parseInt(o8, 8) > 0o377) fail("invalid escape " + snip("\\" + o8));
        out += String.fromCharCode(parseInt(o8, 8));
        i += 1 + o8.length;
      } else fail("invalid escape " + snip("\\" + e));
    }
  };

  const chr = () => {
    const start = i;
    if (i + 1 >= s.length) fail("unexpected end of input in character");
    const first = String.fromCodePoint(s.codePointAt(i + 1));
    const after = i + 1 + first.length;
    const end = TERM.includes(first) || "@`~".includes(first) || isWs(first) ? after : tokenEnd(after);
    const tok = s.slice(i + 1, end);
    i = end;
    if (end == after) return new Char(first);
    let code;
    if (CHAR_NAMES[tok]) return new Char(CHAR_NAMES[tok]);
    if (/^u[0-9a-fA-F]{4}$/.test(tok)) code = parseInt(tok.slice(1), 16);
    else if (/^o[0-7]{1,3}$/.test(tok) && parseInt(tok.slice(1), 8) <= 0o377) code = parseInt(tok.slice(1), 8);
    if (code === undefined || (code >= 0xd800 && code < 0xe000)) fail("invalid character " + snip("\\" + tok), start);
    return new Char(String.fromCharCode(code));
  };

  const dispatch = (depth, start, nest, items) => {
    const c = s[i + 1];
    if (c === undefined) fail("unexpected end of input after #");
    if (c == "{") {
      i += 2;
      const xs = items("}", "set");
      const seen = new Set();
      for (const x of xs) {
        const k = key(x);
        if (seen.has(k)) fail("duplicate set element " + show(x), start);
        seen.add(k);
      }
      return new Set(xs);
    }
    if (c == "_") {
      i += 2;
      const d = nest();
      let v;
      do v = form(d, "#_ form");
      while (v === DISCARD);
      if (v === CLOSE) fail("unmatched delimiter " + s[i - 1], i - 1);
      return DISCARD;
    }
    if (c == "!") {
      const j = s.indexOf("\n", i);
      i = j < 0 ? s.length : j + 1;
      return DISCARD;
    }
    if (c == "#") {
      i += 2;
      skip();
      const end = tokenEnd(i),
        tok = s.slice(i, end);
      i = end;
      const v = { Inf: Infinity, "-Inf": -Infinity, NaN: NaN }[tok];
      if (v === undefined) fail(tok ? "invalid token " + snip("##" + tok) : "unexpected end of input after ##", start);
      return v;
    }
    if (c == ":") {
      if (s[i + 2] == ":") fail("auto-resolved keywords are not edn: #::", start);
      const end = tokenEnd(i + 2),
        ns = s.slice(i + 2, end);
      if (!startsSym(ns) || ns.includes("/") || !validSym(ns)) fail("invalid token " + snip("#:" + ns), start);
      i = end;
      skip();
      if (s[i] != "{") fail(i >= s.length ? "unexpected end of input in namespaced map" : "expected { after #:" + ns);
      i++;
      const xs = items("}", "namespaced map", 2 * o.maxLength);
      for (let k = 0; k < xs.length; k += 2) xs[k] = qualify(xs[k], ns);
      return makeMap(xs, start);
    }
    // A tagged value: `#tag form`; the tag must start with a letter (as clojure.edn).
    const end = tokenEnd(i + 1),
      tag = s.slice(i + 1, end);
    if (!/^\p{L}/u.test(tag)) fail("invalid dispatch character " + JSON.stringify(c), start);
    if (tag == "nil" || tag == "true" || tag == "false" || !validSym(tag)) fail("invalid tag " + snip(tag), start);
    i = end;
    const d = nest();
    let v;
    do v = form(d, "#" + tag + " value");
    while (v === DISCARD);
    if (v === CLOSE) fail("unmatched delimiter " + s[i - 1], i - 1);
    if (tag == "inst") {
      const t = typeof v == "string" && parseInst(v);
      if (!t) fail("invalid #inst " + (typeof v == "string" ? snip(v) : show(v)), start);
      return t;
    }
    if (tag == "uuid") {
      if (typeof v != "string" || !UUID_RE.test(v.toLowerCase()))
        fail("invalid #uuid " + (typeof v == "string" ? snip(v) : show(v)), start);
      return new Uuid(v);
    }
    if (o.tags && Object.hasOwn(o.tags, tag)) return o.tags[tag](v);
    if (o.unknownTags == "error") fail("unknown tag #" + tag, start);
    return new Tagged(tag, v);
  };

  const makeMap = (xs, start) => {
    if (xs.length % 2) fail("a map needs an even number of forms", start);
    const seen = new Set();
    let obj = true;
    for (let k = 0; k < xs.length; k += 2) {
      const x = xs[k],
        h = key(x);
      if (seen.has(h)) fail("duplicate key " + show(x), start);
      seen.add(h);
      // A plain object only when every key is a keyword whose name is not an array index
      // (objects reorder those) or `__proto__`.
      if (!(x instanceof Keyword) || /^(0|[1-9]\d*)$/.test(x.name) || x.name == "__proto__") obj = false;
    }
    if (!obj) {
      const m = new Map();
      for (let k = 0; k < xs.length; k += 2) m.set(xs[k], xs[k + 1]);
      return m;
    }
    const r = {};
    for (let k = 0; k < xs.length; k += 2) r[xs[k].name] = xs[k + 1];
    return r;
  };

  skip();
  if (i >= s.length) return null;
  let v;
  do v = form(0);
  while (v === DISCARD && (skip(), i < s.length));
  return v === DISCARD ? null : v;
}

// `#:ns{}`: qualify an unqualified keyword or symbol key (`_/name` drops the namespace).
function qualify(k, ns) {
  const isK = k instanceof Keyword;
  if (!isK && !(k instanceof Sym)) return k;
  const t = k.name;
  let q;
  if (t.includes("/") && t != "/") {
    const rest = t.startsWith("_/") ? t.slice(2) : null;
    if (rest && !/^[:\d]/.test(rest) && !rest.includes("/")) q = rest;
  } else if (!/^\d/.test(t)) q = ns + "/" + t;
  return q == null ? k : isK ? kw(q) : new Sym(q);
}

// A string equal for values Clojure's `=` treats as equal (duplicate keys and set elements):
// integers of any type alike, vectors and lists alike, maps and sets regardless of order.
function key(x) {
  if (x == null) return "nil";
  switch (typeof x) {
    case "string":
      return JSON.stringify(x);
    case "number":
      return Number.isInteger(x) ? "i" + x : "d" + x;
    case "bigint":
      return "i" + x;
    case "boolean":
      return "" + x;
  }
  if (isKw(x)) return ":" + x.name;
  if (x instanceof Sym) return "'" + x.name;
  if (x instanceof Char) return "\\" + x.char;
  if (x instanceof Uuid) return "u" + x.value;
  if (x instanceof Date) return "t" + x.getTime();
  if (x instanceof Ratio) return "r" + x;
  if (x instanceof BigDec) return "M" + x.value;
  if (x instanceof Tagged) return "#" + x.tag + " " + key(x.value);
  if (Array.isArray(x)) return "[" + x.map(key).join(" ") + "]";
  if (x instanceof Set) return "#{" + [...x].map(key).sort().join(" ") + "}";
  const es = x instanceof Map ? [...x] : Object.entries(x).map(([k, v]) => [kw(k), v]);
  return "{" + es.map(([k, v]) => key(k) + " " + key(v)).sort().join(",") + "}";
}

// ---------------------------------------------------------------------------------------------
// Printer

const CHAR_OUT = { "\n": "newline", " ": "space", "\t": "tab", "\r": "return", "\b": "backspace", "\f": "formfeed" };
const STR_OUT = { '"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f" };

/** A double as Java's `Double.toString` prints it (shortest digits): 1.0, 1.5E-7, 1.0E21. */
export function printDouble(x) {
  if (x != x) return "##NaN";
  if (x == Infinity) return "##Inf";
  if (x == -Infinity) return "##-Inf";
  if (x == 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  let [m, e] = x.toExponential().split("e");
  // Java prints at least two significant digits, the pair nearest the exact value (4.9E-324).
  if (m.length < 4) {
    const t = x.toExponential(1);
    if (+t == x) [m, e] = t.split("e");
  }
  const neg = m[0] == "-",
    digits = m.replace(/[-.]/g, "").replace(/(.)0+$/, "$1"),
    exp = +e;
  let out;
  if (exp >= -3 && exp < 7) {
    if (exp < 0) out = "0." + "0".repeat(-exp - 1) + digits;
    else {
      const ip = digits.slice(0, exp + 1).padEnd(exp + 1, "0");
      out = ip + "." + (digits.slice(exp + 1) || "0");
    }
  } else out = digits[0] + "." + (digits.slice(1) || "0") + "E" + exp;
  return (neg ? "-" : "") + out;
}

function printName(prefix, n) {
  // Keywords and symbols print as written; a name no edn reader reads back is refused.
  if (
    !validSym(n) ||
    /[\s,";^()[\]{}\\@`~]|^:/.test(n) ||
    (prefix == "" && (/^[\d#]|^[+-]\d/.test(n) || n == "nil" || n == "true" || n == "false"))
  )
    throw new TypeError("edn: cannot print " + (prefix ? "keyword" : "symbol") + " " + JSON.stringify(n));
  return prefix + n;
}

const pad2 = (n) => String(n).padStart(2, "0");

/**
 * Prints a JS value as edn, the way Clojure's `pr-str` prints the corresponding Clojure value
 * (see README.md for the mapping). Throws a TypeError for a value with no edn form.
 */
export function print(x, depth = 0) {
  if (depth > 1000) throw new RangeError("edn: value nested deeper than 1000 (a cycle?)");
  const p = (v) => print(v, depth + 1);
  if (x == null) return "nil";
  switch (typeof x) {
    case "boolean":
      return "" + x;
    case "number":
      return Number.isSafeInteger(x) ? "" + x : printDouble(x);
    case "bigint":
      return x < I64_MIN || x > I64_MAX ? x + "N" : "" + x;
    case "string":
      return '"' + x.replace(/["\\\n\t\r\b\f]/g, (c) => STR_OUT[c]) + '"';
    case "object":
      break;
    default:
      throw new TypeError("edn: cannot print a " + typeof x);
  }
  if (isKw(x)) return printName(":", x.name);
  if (x instanceof Sym) return printName("", x.name);
  if (x instanceof Char) {
    const c = x.char;
    if (CHAR_OUT[c]) return "\\" + CHAR_OUT[c];
    const n = c.codePointAt(0);
    return n < 0x20 || (n >= 0x7f && n < 0xa0) ? "\\u" + n.toString(16).padStart(4, "0") : "\\" + c;
  }
  if (x instanceof Uuid) return '#uuid "' + x.value + '"';
  if (x instanceof Date) {
    const t = x.getTime(),
      y = x.getUTCFullYear();
    if (t != t || y < 0 || y > 9999) throw new RangeError("edn: cannot print the date " + x);
    return '#inst "' + x.toISOString().slice(0, -1) + '-00:00"';
  }
  if (x instanceof Ratio) return x.numer + "/" + x.denom;
  if (x instanceof BigDec) return x.value + "M";
  if (x instanceof Tagged) return "#" + printName("", x.tag) + " " + p(x.value);
  if (x instanceof List) return "(" + x.map(p).join(" ") + ")";
  if (Array.isArray(x)) return "[" + x.map(p).join(" ") + "]";
  if (x instanceof Set) return "#{" + [...x].map(p).join(" ") + "}";
  if (x instanceof ArrayBuffer || ArrayBuffer.isView(x)) throw new TypeError("edn: bytes have no edn form");
  if (x instanceof Map) return "{" + [...x].map(([k, v]) => p(k) + " " + p(v)).join(", ") + "}";
  const es = [];
  for (const k of Object.keys(x)) if (x[k] !== undefined) es.push(printName(":", k) + " " + p(x[k]));
  return "{" + es.join(", ") + "}";
}

// ---------------------------------------------------------------------------------------------
// The packer

/**
 * The edn packer, as Sente's default `:edn` packer: `createChannelSocket(url, { packer: edn })`.
 * It sends no `packer` parameter (a Sente server has one packer); for a sente-rs server whose
 * default packer is not edn use `{ ...edn, param: "edn" }`.
 */
export const edn = Object.freeze({
  param: null,
  pack: (x) => print(x),
  unpack: (s) => read(s),
  kw: (x) => (isKw(x) ? x.name : undefined),
  val: (x) => x,
});
