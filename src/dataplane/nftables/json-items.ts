/**
 * The items of `nft -j list …` output (`{"nftables": [item, …]}`), one at a time as their own JSON
 * text, as the output arrives: a reader parses only the items it needs, each on its own, and never
 * holds the whole output. At 10k services the table is 11–13 MB of JSON; read whole (the chunks,
 * their concatenation, the string) and `JSON.parse`d at once, it grew the agent's RSS by ~100 MiB
 * after every counter scrape and drift check, which no compaction followed (docs/agent.md,
 * "nftables: what the rule batch was blamed for").
 */
import { StringDecoder } from 'node:string_decoder';
import { streamInNetns } from '../exec.js';

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COMMA = 0x2c;

/** Whitespace JSON allows between tokens: space, tab, newline, carriage return. */
const isSpace = (c: number): boolean => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;

/** The longest text before the `nftables` array opens (nft prints `{"nftables": [`). */
const MAX_HEAD = 4096;

/** Splits the output, pushed in pieces of any size, into its items; end() checks it was whole. */
export class NftablesItems {
  private state: 'head' | 'between' | 'item' | 'done' = 'head';
  private head = '';
  /** The text of the item being read, from earlier pieces. */
  private pieces: string[] = [];
  private depth = 0;
  private inString = false;
  private escaped = false;

  constructor(private readonly onItem: (item: string) => void) {}

  push(piece: string): void {
    let text = piece;
    if (this.state === 'head') {
      this.head += text;
      const key = this.head.indexOf('"nftables"');
      const open = key < 0 ? -1 : this.head.indexOf('[', key);
      if (open < 0) {
        if (this.head.length > MAX_HEAD) throw new Error('nft -j output: no "nftables" array');
        return;
      }
      text = this.head.slice(open + 1);
      this.head = '';
      this.state = 'between';
    }
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (this.state === 'item') {
        if (this.inString) {
          if (this.escaped) this.escaped = false;
          else if (c === BACKSLASH) this.escaped = true;
          else if (c === QUOTE) this.inString = false;
        } else if (c === QUOTE) this.inString = true;
        else if (c === OPEN_BRACE || c === OPEN_BRACKET) this.depth++;
        else if ((c === CLOSE_BRACE || c === CLOSE_BRACKET) && --this.depth === 0) {
          this.pieces.push(text.slice(start, i + 1));
          const item = this.pieces.join('');
          this.pieces = [];
          this.state = 'between';
          this.onItem(item);
        }
      } else if (this.state === 'between' && !isSpace(c) && c !== COMMA) {
        if (c === CLOSE_BRACKET) this.state = 'done';
        else if (c !== OPEN_BRACE) throw new Error(`nft -j output: an item is not an object`);
        else {
          this.state = 'item';
          this.depth = 1;
          start = i;
        }
      }
    }
    if (this.state === 'item') this.pieces.push(text.slice(start));
  }

  end(): void {
    if (this.state === 'head') throw new Error('nft -j output: no "nftables" array');
    if (this.state !== 'done') throw new Error('nft -j output: an item does not end');
  }
}

/** Each item of whole `nft -j` output, in order, to `onItem`. */
export function eachItem(json: string, onItem: (item: string) => void): void {
  const items = new NftablesItems(onItem);
  items.push(json);
  items.end();
}

/**
 * Runs `nft -j [flags…] list table <family> <table>` in `netns` and hands each item of its output
 * to `onItem` as it arrives. False when the table is not there; any other failure throws.
 */
export async function streamNftTable(
  netns: string,
  family: string,
  table: string,
  onItem: (item: string) => void,
  flags: readonly string[] = [],
): Promise<boolean> {
  const items = new NftablesItems(onItem);
  const utf8 = new StringDecoder('utf8');
  const args = ['-j', ...flags, 'list', 'table', family, table];
  const r = await streamInNetns(netns, 'nft', args, (chunk) => items.push(utf8.write(chunk)));
  if (r.code !== 0) {
    if (/No such file or directory/.test(r.stderr)) return false;
    throw new Error(`nft list table ${family} ${table} in ${netns} failed: ${r.stderr.trim()}`);
  }
  items.push(utf8.end());
  items.end();
  return true;
}

/** The item's kind (`rule`, `set`, `chain`, …): its only key, read from its text. */
export function itemKind(item: string): string | undefined {
  return /^\{\s*"([a-z_]+)"\s*:/.exec(item)?.[1];
}
