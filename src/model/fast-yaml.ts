/**
 * A fast reader for the plain YAML that manifests are usually written in: block mappings and
 * sequences, one-line flow collections, plain and simply quoted scalars, comments. The yaml
 * library builds a full syntax tree with source positions for every node, which is costly at tens
 * of thousands of documents; this reads the common subset straight into values.
 *
 * It is an accelerator, never a second dialect: whenever the text uses anything outside the subset
 * (anchors, tags, block scalars, multi-line scalars or flow collections, escapes, directives,
 * tabs, CR, unusual keys or scalars that resolve to anything but a string, an integer, a boolean
 * or null) or is not valid YAML, it returns undefined and the caller parses the file with the yaml
 * library, which then also reports any error. What it accepts, it reads to exactly the values the
 * yaml library gives (YAML 1.2 core schema), which a differential test checks.
 */
import { ambiguousScalarMessage } from './limits.js';

export interface FastDocument {
  value: Record<string, unknown>;
  /** 1-based line where the document's content starts (the yaml library's `contents` range). */
  line: number;
}

class Unsupported extends Error {}

const fail = (): never => {
  throw new Unsupported();
};

interface Line {
  /** 0-based line number in the file. */
  no: number;
  indent: number;
  /** Text after the indentation; never empty, never a comment line. */
  text: string;
}

const NULL = /^(?:~|[Nn]ull|NULL)$/;
const BOOL = /^(?:[Tt]rue|TRUE|[Ff]alse|FALSE)$/;
const INT = /^[-+]?[0-9]+$/;
/** Other core-schema scalars (octal, hex, float, inf, nan): left to the yaml library. */
const OTHER_NUMERIC =
  /^(?:0o[0-7]+|0x[0-9a-fA-F]+|[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN|[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?)$/;
/**
 * Where a plain key we read, starting at `s[i]`, ends (`i` when none starts there): a letter or
 * `_`, then letters, digits and `_./-` (it resolves to itself, never to a number). A scan rather
 * than a regular expression: no match array or slice per key.
 */
function plainKeyEnd(s: string, i: number): number {
  const first = s.charCodeAt(i);
  if (!(isLetter(first) || first === 95)) return i;
  let j = i + 1;
  for (;;) {
    const c = s.charCodeAt(j);
    // digits, `_`, `.`, `/`, `-`
    if (isLetter(c) || (c >= 48 && c <= 57) || c === 95 || c === 46 || c === 47 || c === 45) j++;
    else return j;
  }
}

function isLetter(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}
/** First character of a plain scalar we read (YAML indicators are left to the library). */
const PLAIN_START = /^(?:[A-Za-z0-9_./]|[-+][A-Za-z0-9_./])/;

function resolvePlain(s: string): unknown {
  // Scalars kubectl (YAML 1.1) reads otherwise are refused by the full reader, with the reason.
  if (ambiguousScalarMessage(s)) fail();
  if (NULL.test(s)) return null;
  if (BOOL.test(s)) return s[0] === 't' || s[0] === 'T';
  if (INT.test(s)) return parseInt(s, 10);
  if (OTHER_NUMERIC.test(s)) fail();
  return s;
}

function validKey(key: string): string {
  if (key === '__proto__' || key === '<<' || ambiguousScalarMessage(key)) fail();
  return key;
}

function setKey(map: Record<string, unknown>, key: string, value: unknown): void {
  // Duplicate keys are an error (uniqueKeys): the library reports it.
  if (Object.prototype.hasOwnProperty.call(map, key)) fail();
  map[key] = value;
}

/** Reads a quoted scalar at `s[i]`; returns the value and the index after the closing quote. */
function readQuoted(s: string, i: number): [string, number] {
  const q = s[i];
  if (q === '"') {
    const end = s.indexOf('"', i + 1);
    if (end < 0) fail();
    const inner = s.slice(i + 1, end);
    if (inner.includes('\\')) fail();
    return [inner, end + 1];
  }
  let out = '';
  let j = i + 1;
  for (;;) {
    const end = s.indexOf("'", j);
    if (end < 0) fail();
    out += s.slice(j, end);
    if (s[end + 1] === "'") {
      out += "'";
      j = end + 2;
    } else return [out, end + 1];
  }
}

/** The rest of a line after a value: nothing, or a comment after whitespace. */
function expectEnd(s: string, i: number): void {
  const rest = s.slice(i);
  if (rest.trim() === '') return;
  if (/^ +#/.test(rest)) return;
  fail();
}

/** One-line flow collections: `{ a: b, c: [d, e] }`. */
class FlowReader {
  i = 0;
  constructor(readonly s: string) {}

  private skip(): void {
    while (this.s[this.i] === ' ') this.i++;
  }

  value(): unknown {
    this.skip();
    const c = this.s[this.i];
    if (c === '{') return this.map();
    if (c === '[') return this.seq();
    if (c === '"' || c === "'") {
      const [v, next] = readQuoted(this.s, this.i);
      this.i = next;
      return v;
    }
    return resolvePlain(this.plain());
  }

  /** A plain scalar up to `,`, `]` or `}`; anything that could mean more than a string → fail. */
  private plain(): string {
    const start = this.i;
    while (this.i < this.s.length && !',]}'.includes(this.s[this.i] as string)) this.i++;
    const text = this.s.slice(start, this.i).trimEnd();
    if (text === '' || !PLAIN_START.test(text) || /[:#[\]{}"']/.test(text)) fail();
    return text;
  }

  private key(): string {
    this.skip();
    const c = this.s[this.i];
    let key: string;
    if (c === '"' || c === "'") {
      const [v, next] = readQuoted(this.s, this.i);
      key = v;
      this.i = next;
    } else {
      const end = plainKeyEnd(this.s, this.i);
      key = this.s.slice(this.i, end);
      if (end === this.i || NULL.test(key) || BOOL.test(key)) fail();
      this.i = end;
    }
    if (this.s[this.i] !== ':' || this.s[this.i + 1] !== ' ') fail();
    this.i += 2;
    return validKey(key);
  }

  private map(): Record<string, unknown> {
    this.i++;
    const out: Record<string, unknown> = {};
    this.skip();
    if (this.s[this.i] === '}') {
      this.i++;
      return out;
    }
    for (;;) {
      const k = this.key();
      this.skip();
      if (this.s[this.i] === ',' || this.s[this.i] === '}') fail();
      setKey(out, k, this.value());
      this.skip();
      const c = this.s[this.i++];
      if (c === '}') return out;
      if (c !== ',') fail();
      this.skip();
      if (this.s[this.i] === '}') fail();
    }
  }

  private seq(): unknown[] {
    this.i++;
    const out: unknown[] = [];
    this.skip();
    if (this.s[this.i] === ']') {
      this.i++;
      return out;
    }
    for (;;) {
      out.push(this.value());
      this.skip();
      const c = this.s[this.i++];
      if (c === ']') return out;
      if (c !== ',') fail();
      this.skip();
      if (this.s[this.i] === ']') fail();
    }
  }
}

/** A value written on the same line as its key or dash. */
function inlineValue(s: string): unknown {
  const c = s[0];
  if (c === '{' || c === '[') {
    const r = new FlowReader(s);
    const v = r.value();
    expectEnd(s, r.i);
    return v;
  }
  if (c === '"' || c === "'") {
    const [v, next] = readQuoted(s, 0);
    expectEnd(s, next);
    return v;
  }
  // Plain: up to a comment; no `: ` (a nested mapping here is an error), no trailing `:`.
  const hash = s.search(/ #/);
  const text = (hash >= 0 ? s.slice(0, hash) : s).trimEnd();
  if (!PLAIN_START.test(text) || text.includes(': ') || text.endsWith(':')) fail();
  return resolvePlain(text);
}

/** Splits `key: rest` (or `key:`); fails when the line is not a mapping entry we read. */
function splitKey(text: string): [string, string] {
  let key: string;
  let i: number;
  const c = text[0];
  if (c === '"' || c === "'") {
    [key, i] = readQuoted(text, 0);
  } else {
    i = plainKeyEnd(text, 0);
    key = text.slice(0, i);
    if (i === 0 || NULL.test(key) || BOOL.test(key)) fail();
  }
  if (text[i] !== ':') fail();
  const rest = text.slice(i + 1);
  if (rest !== '' && rest[0] !== ' ') fail();
  const value = rest.trim();
  return [validKey(key), value.startsWith('#') ? '' : value];
}

class BlockReader {
  pos = 0;
  constructor(readonly lines: Line[]) {}

  private peek(): Line | undefined {
    return this.lines[this.pos];
  }

  /** A block node whose first line is the current one, at its indentation. */
  block(): unknown {
    const first = this.peek() as Line;
    return isDash(first.text) ? this.seq(first.indent) : this.map(first.indent);
  }

  /** The value of a key or dash with nothing after it: a nested block, or null. */
  private nested(parentIndent: number, allowSameIndentSeq: boolean): unknown {
    const next = this.peek();
    if (next && next.indent > parentIndent) return this.block();
    if (next && allowSameIndentSeq && next.indent === parentIndent && isDash(next.text))
      return this.seq(parentIndent);
    return null;
  }

  /** After an inline value, a deeper line would continue it (a multi-line scalar): not ours. */
  private noDeeper(indent: number): void {
    const next = this.peek();
    if (next && next.indent > indent) fail();
  }

  private map(indent: number): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (;;) {
      const line = this.peek();
      if (!line || line.indent < indent) return out;
      if (line.indent > indent || isDash(line.text)) fail();
      const [key, rest] = splitKey(line.text);
      this.pos++;
      if (rest === '') setKey(out, key, this.nested(indent, true));
      else {
        setKey(out, key, inlineValue(rest));
        this.noDeeper(indent);
      }
    }
  }

  private seq(indent: number): unknown[] {
    const out: unknown[] = [];
    for (;;) {
      const line = this.peek();
      if (!line || line.indent < indent || !isDash(line.text)) {
        if (line && line.indent > indent) fail();
        return out;
      }
      if (line.indent > indent) fail();
      const after = line.text.slice(1);
      const content = after.trimStart();
      if (content === '' || content.startsWith('#')) {
        this.pos++;
        out.push(this.nested(indent, false));
        continue;
      }
      if (isDash(content)) fail();
      const column = indent + 1 + (after.length - content.length);
      if (looksLikeEntry(content)) {
        // `- key: value`: a mapping whose entries sit at the column of this first key.
        this.lines[this.pos] = { no: line.no, indent: column, text: content };
        out.push(this.map(column));
      } else {
        this.pos++;
        out.push(inlineValue(content));
        this.noDeeper(indent);
      }
    }
  }
}

function isDash(text: string): boolean {
  return text === '-' || text.startsWith('- ');
}

/** Whether a line (or the rest after a dash) is a `key:` entry rather than a scalar. */
function looksLikeEntry(text: string): boolean {
  const c = text[0];
  if (c === '{' || c === '[') return false;
  if (c === '"' || c === "'") {
    const [, i] = readQuoted(text, 0);
    return text[i] === ':';
  }
  // `^[^ #]*?:(?: |$)`, scanned: a `:` followed by a space or the end, before any space or `#`.
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch === 32 || ch === 35) return false;
    if (ch === 58 && (i + 1 === text.length || text.charCodeAt(i + 1) === 32)) return true;
  }
  return false;
}

/**
 * The documents of `text` with their values, or undefined when the text is not in the subset
 * (or not valid): then the yaml library must read it. Empty documents are left out, as the
 * loader leaves them out.
 */
export function fastParseDocuments(text: string): FastDocument[] | undefined {
  if (text.length === 0 || /[\t\r\uFEFF]/.test(text)) return undefined;
  const docs: Line[][] = [];
  let current: Line[] = [];
  const raw = text.split('\n');
  for (let no = 0; no < raw.length; no++) {
    const l = raw[no] as string;
    if (l.startsWith('---')) {
      if (l.trimEnd() !== '---') return undefined;
      docs.push(current);
      current = [];
      continue;
    }
    if (l.startsWith('...') || l.startsWith('%')) return undefined;
    const body = l.trimStart();
    if (body === '' || body.startsWith('#')) continue;
    if (/^[&*!|>%@`?]/.test(body)) return undefined;
    current.push({ no, indent: l.length - body.length, text: body.trimEnd() });
  }
  docs.push(current);
  const out: FastDocument[] = [];
  try {
    for (const lines of docs) {
      const first = lines[0];
      if (!first) continue;
      if (first.indent !== 0 || isDash(first.text) || !looksLikeEntry(first.text)) return undefined;
      const reader = new BlockReader(lines);
      const value = reader.block() as Record<string, unknown>;
      if (reader.pos !== lines.length) return undefined;
      out.push({ value, line: first.no + 1 });
    }
  } catch (e) {
    if (e instanceof Unsupported) return undefined;
    throw e;
  }
  return out;
}
