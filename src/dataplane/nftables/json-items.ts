/**
 * The items of `nft -j list …` output (`{"nftables": [item, …]}`), one at a time as their own JSON
 * text, so a reader parses only the items it needs and each on its own. At 10k services the table
 * is 11–13 MB of JSON; `JSON.parse` of all of it at once built ~100 MiB of objects, which grew the
 * agent's heap for good after every counter scrape and drift poll (docs/agent.md, "nftables:
 * what the rule batch was blamed for"). Item by item, the garbage is one item's and dies young.
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COMMA = 0x2c;

/** Whitespace JSON allows between tokens: space, tab, newline, carriage return. */
const isSpace = (c: number): boolean => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;

/** The index of the quote closing the string that opens at `open`. */
function stringEnd(json: string, open: number): number {
  for (let from = open + 1; ;) {
    const quote = json.indexOf('"', from);
    if (quote < 0) throw new Error('nft -j output: a string does not end');
    let backslashes = 0;
    while (json.charCodeAt(quote - 1 - backslashes) === BACKSLASH) backslashes++;
    if (backslashes % 2 === 0) return quote;
    from = quote + 1;
  }
}

/** The index of the brace closing the object that opens at `open`. */
function objectEnd(json: string, open: number): number {
  let depth = 0;
  for (let i = open; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (c === QUOTE) i = stringEnd(json, i);
    else if (c === OPEN_BRACE || c === OPEN_BRACKET) depth++;
    else if ((c === CLOSE_BRACE || c === CLOSE_BRACKET) && --depth === 0) return i;
  }
  throw new Error('nft -j output: an item does not end');
}

/** Each item of the `nftables` array, in order, as JSON text; throws on anything else. */
export function* nftablesItems(json: string): Generator<string> {
  const key = json.indexOf('"nftables"');
  let i = key < 0 ? -1 : json.indexOf('[', key);
  if (i < 0) throw new Error('nft -j output: no "nftables" array');
  for (i++; ; i++) {
    let c = json.charCodeAt(i);
    while (isSpace(c) || c === COMMA) c = json.charCodeAt(++i);
    if (c === CLOSE_BRACKET) return;
    if (c !== OPEN_BRACE) throw new Error(`nft -j output: an item is not an object (at ${i})`);
    const end = objectEnd(json, i);
    yield json.slice(i, end + 1);
    i = end;
  }
}

/** The item's kind (`rule`, `set`, `chain`, …): its only key, read from its text. */
export function itemKind(item: string): string | undefined {
  return /^\{\s*"([a-z_]+)"\s*:/.exec(item)?.[1];
}
