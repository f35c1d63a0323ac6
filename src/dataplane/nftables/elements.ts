/**
 * Set and map element texts (as the ruleset builder prints them) → the elements nf_tables stores,
 * for the set shapes a label change touches: address interval sets, address . port sets, interface
 * sets and the verdict maps keyed by interface or by address interval. Pure, for the unit tests;
 * nfnetlink.ts sends them. Encodings are nft 1.0.6's own (`nft --debug=netlink`):
 *   - an interval is two elements: its first address, and the address after its last flagged
 *     INTERVAL_END; an interval reaching the top of the address space has no end element and
 *     carries nft's "open interval" user data instead;
 *   - concatenations pad every field to 4 bytes (a port is 2 bytes big-endian, then 2 zero bytes);
 *   - an interface name is 16 bytes (IFNAMSIZ), zero-padded.
 * Anything else (service maps, decision tables' port maps, flow sets) has no shape here: the
 * caller then writes the change with `nft -f`.
 */
import { isIPv4, isIPv6 } from 'node:net';

export type ElementShape =
  | 'ipv4-interval'
  | 'ipv6-interval'
  | 'ipv4-port'
  | 'ipv6-port'
  | 'ifname'
  | 'ifname-verdict'
  | 'ipv4-interval-verdict'
  | 'ipv6-interval-verdict';

const SHAPES: ReadonlyMap<string, ElementShape> = new Map([
  ['set { type ipv4_addr; flags interval; }', 'ipv4-interval'],
  ['set { type ipv6_addr; flags interval; }', 'ipv6-interval'],
  ['set { type ipv4_addr . inet_service; }', 'ipv4-port'],
  ['set { type ipv6_addr . inet_service; }', 'ipv6-port'],
  ['set { type ifname; }', 'ifname'],
  ['map { type ifname : verdict; }', 'ifname-verdict'],
  ['map { type ipv4_addr : verdict; flags interval; }', 'ipv4-interval-verdict'],
  ['map { type ipv6_addr : verdict; flags interval; }', 'ipv6-interval-verdict'],
]);

/** The shape of a set declared `kind spec`, or undefined when its elements are not written here. */
export function shapeOf(kind: string, spec: string): ElementShape | undefined {
  return SHAPES.get(`${kind} ${spec}`);
}

/** NFT_SET_ELEM_INTERVAL_END. */
export const ELEMENT_INTERVAL_END = 1;

export type VerdictCode = 'jump' | 'goto';

/** One element as the kernel stores it. */
export interface KernelElement {
  key: Buffer;
  /** NFTA_SET_ELEM_FLAGS (ELEMENT_INTERVAL_END or 0). */
  flags: number;
  /** Map elements (not an interval's end): where the verdict sends the packet. */
  verdict?: { code: VerdictCode; chain: string };
  /** An interval without end element: nft marks it in the element's user data. */
  open?: boolean;
}

export class ElementSyntaxError extends Error {
  constructor(shape: ElementShape, text: string, why: string) {
    super(`element '${text}' of a ${shape} set: ${why}`);
    this.name = 'ElementSyntaxError';
  }
}

const IFNAMSIZ = 16;

function addressBytes(address: string, v6: boolean): Buffer {
  if (v6) {
    if (!isIPv6(address)) throw new Error(`'${address}' is not an IPv6 address`);
    const [head = '', tail = ''] = address.split('::');
    const words = (s: string): number[] => (s ? s.split(':').map((w) => parseInt(w, 16)) : []);
    const h = words(head);
    const t = address.includes('::') ? words(tail) : [];
    const all = [...h, ...Array<number>(8 - h.length - t.length).fill(0), ...t];
    const out = Buffer.alloc(16);
    all.forEach((w, i) => out.writeUInt16BE(w, i * 2));
    return out;
  }
  if (!isIPv4(address)) throw new Error(`'${address}' is not an IPv4 address`);
  return Buffer.from(address.split('.').map(Number));
}

/** `address[/len]` → its first address and the address after its last (undefined past the top). */
function interval(text: string, v6: boolean): { start: Buffer; end?: Buffer } {
  const [address = '', lenText] = text.split('/');
  const bits = v6 ? 128 : 32;
  const len = lenText === undefined ? bits : Number(lenText);
  if (!Number.isInteger(len) || len < 0 || len > bits) throw new Error(`bad prefix length '${lenText}'`);
  const start = addressBytes(address, v6);
  // Clear the host bits, then add one past the last address, byte by byte from the end.
  for (let bit = len; bit < bits; bit++) start[bit >> 3] = (start[bit >> 3] as number) & ~(0x80 >> (bit & 7));
  const end = Buffer.from(start);
  for (let bit = len; bit < bits; bit++) end[bit >> 3] = (end[bit >> 3] as number) | (0x80 >> (bit & 7));
  for (let i = end.length - 1; i >= 0; i--) {
    const v = (end[i] as number) + 1;
    end[i] = v & 0xff;
    if (v <= 0xff) return { start, end };
  }
  return { start };
}

function intervalElements(text: string, v6: boolean, verdict?: KernelElement['verdict']): KernelElement[] {
  const { start, end } = interval(text, v6);
  if (!end) return [{ key: start, flags: 0, open: true, ...(verdict ? { verdict } : {}) }];
  return [
    { key: start, flags: 0, ...(verdict ? { verdict } : {}) },
    { key: end, flags: ELEMENT_INTERVAL_END },
  ];
}

function portElement(text: string, v6: boolean): KernelElement {
  const m = /^(\S+) \. (\d+)$/.exec(text);
  const port = Number(m?.[2]);
  if (!m || port > 0xffff) throw new Error('expected `address . port`');
  const portBytes = Buffer.alloc(4);
  portBytes.writeUInt16BE(port, 0);
  return { key: Buffer.concat([addressBytes(m[1] as string, v6), portBytes]), flags: 0 };
}

function ifnameKey(text: string): Buffer {
  const name = /^"(.*)"$/.exec(text)?.[1] ?? text;
  if (name.length === 0 || name.length >= IFNAMSIZ || /[^\x21-\x7e]/.test(name))
    throw new Error('expected an interface name of 1–15 printable characters');
  const key = Buffer.alloc(IFNAMSIZ);
  key.write(name, 'latin1');
  return key;
}

/** `key : jump|goto chain` → its key text and verdict; a key alone (deleting by key) has none. */
function splitVerdict(text: string): { key: string; verdict?: KernelElement['verdict'] } {
  const i = text.indexOf(' : ');
  if (i < 0) return { key: text };
  const m = /^(jump|goto) ([A-Za-z0-9_.-]+)$/.exec(text.slice(i + 3));
  if (!m) throw new Error('expected `: jump CHAIN` or `: goto CHAIN`');
  return { key: text.slice(0, i), verdict: { code: m[1] as VerdictCode, chain: m[2] as string } };
}

/**
 * The kernel elements of one element text. Map elements are given with their verdict to add, by
 * key alone (or with it) to delete.
 */
export function kernelElements(shape: ElementShape, text: string): KernelElement[] {
  try {
    switch (shape) {
      case 'ipv4-interval':
      case 'ipv6-interval':
        return intervalElements(text, shape === 'ipv6-interval');
      case 'ipv4-port':
      case 'ipv6-port':
        return [portElement(text, shape === 'ipv6-port')];
      case 'ifname':
        return [{ key: ifnameKey(text), flags: 0 }];
      case 'ifname-verdict': {
        const { key, verdict } = splitVerdict(text);
        return [{ key: ifnameKey(key), flags: 0, ...(verdict ? { verdict } : {}) }];
      }
      case 'ipv4-interval-verdict':
      case 'ipv6-interval-verdict': {
        const { key, verdict } = splitVerdict(text);
        return intervalElements(key, shape === 'ipv6-interval-verdict', verdict);
      }
    }
  } catch (e) {
    throw new ElementSyntaxError(shape, text, e instanceof Error ? e.message : String(e));
  }
}
