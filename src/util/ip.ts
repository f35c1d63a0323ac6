/**
 * Address arithmetic on IPv4/IPv6 as bigints. Pure and dependency-free: the model validates with
 * it, calc flattens ipBlock/except into disjoint prefixes with it, and the evaluator tests
 * membership with it.
 */
import { isIPv4, isIPv6 } from 'node:net';

export type Family = 4 | 6;

export interface Address {
  family: Family;
  value: bigint;
}

export interface Cidr {
  family: Family;
  /** Network address with host bits cleared. */
  base: bigint;
  prefix: number;
}

const BITS: Record<Family, number> = { 4: 32, 6: 128 };

export function familyBits(family: Family): number {
  return BITS[family];
}

function parseV4(s: string): bigint {
  return s.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
}

function parseV6(s: string): bigint {
  let text = s;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hextets.
  const v4Tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4Tail?.[1]) {
    const v = parseV4(v4Tail[1]);
    text =
      text.slice(0, -v4Tail[1].length) +
      ((v >> 16n) & 0xffffn).toString(16) +
      ':' +
      (v & 0xffffn).toString(16);
  }
  const [head = '', tail] = text.split('::');
  const headParts = head === '' ? [] : head.split(':');
  const tailParts = tail === undefined || tail === '' ? [] : tail.split(':');
  const fill = tail === undefined ? 0 : 8 - headParts.length - tailParts.length;
  const parts = [...headParts, ...Array<string>(fill).fill('0'), ...tailParts];
  return parts.reduce((acc, h) => (acc << 16n) | BigInt(parseInt(h, 16)), 0n);
}

export function parseAddress(s: string): Address | undefined {
  if (isIPv4(s)) return { family: 4, value: parseV4(s) };
  if (isIPv6(s)) return { family: 6, value: parseV6(s) };
  return undefined;
}

export function formatAddress(a: Address): string {
  if (a.family === 4) {
    return [24n, 16n, 8n, 0n].map((sh) => ((a.value >> sh) & 0xffn).toString()).join('.');
  }
  const hextets: number[] = [];
  for (let i = 7; i >= 0; i--) hextets.push(Number((a.value >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: compress the longest run (≥2) of zero hextets.
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (hextets[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && hextets[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = hextets.map((h) => h.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

function mask(family: Family, prefix: number): bigint {
  const bits = BigInt(BITS[family]);
  const all = (1n << bits) - 1n;
  return prefix === 0 ? 0n : (all << (bits - BigInt(prefix))) & all;
}

/** Parses `a.b.c.d/n` or `x::/n`; host bits are cleared (as the Kubernetes API accepts them). */
/** `198.18.0.2:80`, `[fd00:5957::2]:80`: an address with a port, IPv6 bracketed (RFC 3986). */
export function addressWithPort(address: string, port: number | string): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

export function parseCidr(s: string): Cidr | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const addr = parseAddress(s.slice(0, slash));
  const prefixText = s.slice(slash + 1);
  if (!addr || !/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > BITS[addr.family]) return undefined;
  return { family: addr.family, base: addr.value & mask(addr.family, prefix), prefix };
}

/** A single address as a host prefix (/32 or /128). */
export function hostCidr(a: Address): Cidr {
  return { family: a.family, base: a.value, prefix: BITS[a.family] };
}

export function formatCidr(c: Cidr): string {
  return `${formatAddress({ family: c.family, value: c.base })}/${c.prefix}`;
}

export function cidrContains(c: Cidr, a: Address): boolean {
  return c.family === a.family && (a.value & mask(c.family, c.prefix)) === c.base;
}

function lastAddress(c: Cidr): bigint {
  return c.base | (~mask(c.family, c.prefix) & ((1n << BigInt(BITS[c.family])) - 1n));
}

interface Range {
  family: Family;
  start: bigint;
  end: bigint;
}

/** Splits an inclusive address range into the fewest aligned prefixes. */
function rangeToCidrs(r: Range): Cidr[] {
  const out: Cidr[] = [];
  const bits = BITS[r.family];
  let start = r.start;
  while (start <= r.end) {
    let size = 0;
    // Grow the block while it stays aligned on `start` and inside the range.
    while (size < bits) {
      const next = size + 1;
      const blockMask = (1n << BigInt(next)) - 1n;
      if ((start & blockMask) !== 0n || start + blockMask > r.end) break;
      size = next;
    }
    out.push({ family: r.family, base: start, prefix: bits - size });
    start += 1n << BigInt(size);
  }
  return out;
}

/** An inclusive address range as the fewest aligned prefixes, sorted (prefix-keyed tables load these). */
export function addressRangeToCidrs(family: Family, first: bigint, last: bigint): Cidr[] {
  return rangeToCidrs({ family, start: first, end: last });
}

function toRanges(cidrs: readonly Cidr[]): Range[] {
  return cidrs.map((c) => ({ family: c.family, start: c.base, end: lastAddress(c) }));
}

function mergeRanges(ranges: Range[]): Range[] {
  const sorted = [...ranges].sort((a, b) =>
    a.family !== b.family ? a.family - b.family : a.start < b.start ? -1 : a.start > b.start ? 1 : 0,
  );
  const out: Range[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && last.family === r.family && r.start <= last.end + 1n) {
      if (r.end > last.end) last.end = r.end;
    } else {
      out.push({ ...r });
    }
  }
  return out;
}

/**
 * The union of `include` minus the union of `exclude`, as the fewest disjoint prefixes, sorted.
 * This is how ipBlock.except and several peers' blocks become one exact set every backend can
 * load without needing "nomatch" semantics.
 */
export function cidrSetDifference(include: readonly Cidr[], exclude: readonly Cidr[] = []): Cidr[] {
  const inc = mergeRanges(toRanges(include));
  const exc = mergeRanges(toRanges(exclude));
  const out: Range[] = [];
  for (const r of inc) {
    let pieces: Range[] = [r];
    for (const e of exc) {
      if (e.family !== r.family) continue;
      pieces = pieces.flatMap((p) => {
        if (e.end < p.start || e.start > p.end) return [p];
        const keep: Range[] = [];
        if (e.start > p.start) keep.push({ family: p.family, start: p.start, end: e.start - 1n });
        if (e.end < p.end) keep.push({ family: p.family, start: e.end + 1n, end: p.end });
        return keep;
      });
    }
    out.push(...pieces);
  }
  return out.flatMap(rangeToCidrs);
}

/** Union of prefixes as the fewest disjoint prefixes, sorted. */
export function cidrUnion(cidrs: readonly Cidr[]): Cidr[] {
  return cidrSetDifference(cidrs, []);
}

export function compareCidr(a: Cidr, b: Cidr): number {
  if (a.family !== b.family) return a.family - b.family;
  if (a.base !== b.base) return a.base < b.base ? -1 : 1;
  return a.prefix - b.prefix;
}

/** Address `offset` places after the network address of `c` (used by address allocation). */
export function nthAddress(c: Cidr, offset: bigint): Address {
  return { family: c.family, value: c.base + offset };
}

export function cidrSize(c: Cidr): bigint {
  return 1n << BigInt(BITS[c.family] - c.prefix);
}

/**
 * Fast path for large IPv4 lists (prefilters of 1M entries): plain numbers instead of bigints.
 * Returns the CIDR as [first, last] addresses, or undefined when `s` is not an IPv4 CIDR.
 */
export function parseIpv4CidrRange(s: string): [number, number] | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/.exec(s);
  if (!m) return undefined;
  const octets = [m[1], m[2], m[3], m[4]].map(Number);
  if (octets.some((o) => (o as number) > 255)) return undefined;
  const prefix = m[5] === undefined ? 32 : Number(m[5]);
  if (prefix > 32) return undefined;
  const value =
    (((octets[0] as number) * 256 + (octets[1] as number)) * 256 + (octets[2] as number)) * 256 +
    (octets[3] as number);
  const size = 2 ** (32 - prefix);
  const first = value - (value % size);
  return [first, first + size - 1];
}

export function formatIpv4(n: number): string {
  return `${Math.floor(n / 16777216) % 256}.${Math.floor(n / 65536) % 256}.${Math.floor(n / 256) % 256}.${n % 256}`;
}

/** Union of IPv4 ranges as the fewest aligned prefixes, sorted; numbers only. */
function ipv4RangesToCidrs(ranges: [number, number][]): string[] {
  ranges.sort((a, b) => a[0] - b[0]);
  const out: string[] = [];
  let cur: [number, number] | undefined;
  const flush = (r: [number, number]): void => {
    let start = r[0];
    while (start <= r[1]) {
      let size = 1;
      while (size < 2 ** 32 && start % (size * 2) === 0 && start + size * 2 - 1 <= r[1]) size *= 2;
      out.push(`${formatIpv4(start)}/${32 - Math.log2(size)}`);
      start += size;
    }
  };
  for (const r of ranges) {
    if (cur && r[0] <= cur[1] + 1) cur[1] = Math.max(cur[1], r[1]);
    else {
      if (cur) flush(cur);
      cur = [r[0], r[1]];
    }
  }
  if (cur) flush(cur);
  return out;
}

/**
 * Normalises a list of CIDR strings (either family) into the fewest disjoint prefixes, sorted
 * (IPv4 first). Same result as cidrUnion, fast for million-entry IPv4 lists.
 */
export function normalizeCidrList(list: readonly string[]): string[] {
  const v4: [number, number][] = [];
  const other: Cidr[] = [];
  for (const s of list) {
    const r = parseIpv4CidrRange(s);
    if (r) v4.push(r);
    else {
      const c = parseCidr(s);
      if (!c) throw new Error(`invalid CIDR '${s}'`);
      other.push(c);
    }
  }
  return [...ipv4RangesToCidrs(v4), ...cidrUnion(other).map(formatCidr)];
}

/** `address:port`, an IPv6 address bracketed (`[fd00::1]:80`) so its port does not read as a group. */
export function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}
