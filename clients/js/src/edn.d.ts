// Type declarations for sente-client/edn (hand-written; keep in sync with edn.js).

import { Keyword, Tagged, kw, Packer } from "./sente.js";

export { Keyword, Tagged, kw };

/** A Clojure symbol. */
export class Sym {
  constructor(name: string);
  readonly name: string;
}

/** A Clojure character; `char` is one code point. */
export class Char {
  constructor(c: string);
  readonly char: string;
}

/** A `#uuid`; `value` is the canonical lower-case string. Throws a TypeError for a malformed uuid. */
export class Uuid {
  constructor(s: string);
  readonly value: string;
}

/** A ratio, normalized as Clojure does; `valueOf()` is the nearest double. */
export class Ratio {
  constructor(numer: bigint | number | string, denom: bigint | number | string);
  readonly numer: bigint;
  readonly denom: bigint;
  valueOf(): number;
}

/** A `BigDecimal` (`1.50M`); `value` is its text without the `M`. */
export class BigDec {
  constructor(s: string);
  readonly value: string;
  valueOf(): number;
}

/** A list `(a b)`: an Array that prints with parentheses. */
export class List<T = any> extends Array<T> {}

/** A read error; `pos` is the offset in the text. */
export class EdnError extends SyntaxError {
  readonly pos: number | undefined;
}

/** What `read` returns (see README.md, "The edn packer mapping"). */
export type EdnValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Keyword
  | Sym
  | Char
  | Uuid
  | Date
  | Ratio
  | BigDec
  | Tagged<any>
  | EdnValue[]
  | List<EdnValue>
  | Set<EdnValue>
  | Map<EdnValue, EdnValue>
  | { [key: string]: EdnValue };

export interface ReadOptions {
  /** Nesting of collections and `#tag`, `#_`, `^` forms. Default 64. */
  maxDepth?: number;
  /** Elements of one collection (entries of a map). Default 100000. */
  maxLength?: number;
  /** "keep" (as `Tagged`, default) or "error". */
  unknownTags?: "keep" | "error";
  /** Readers for other tags, e.g. `{ "my/point": ([x, y]) => ({ x, y }) }`. */
  tags?: Record<string, (value: EdnValue) => unknown>;
}

/** Reads the first form of `text` (empty text reads as null); throws an EdnError. */
export function read(text: string, opts?: ReadOptions): any;

/** Prints a value as Clojure's `pr-str` would; throws a TypeError (RangeError for invalid dates, cycles). */
export function print(value: unknown): string;

/** A double as Java's `Double.toString`: "1.0", "1.0E21", "4.9E-324". */
export function printDouble(x: number): string;

/** Parses an `#inst` string (RFC 3339, as Clojure); null if invalid. Millisecond precision. */
export function parseInst(s: string): Date | null;

/** The edn packer: `createChannelSocket(url, { packer: edn })`. Sends no `packer` parameter. */
export const edn: Packer;
