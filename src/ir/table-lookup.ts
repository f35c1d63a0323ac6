/**
 * What a decision table says for one packet: the reference lookup every backend's encoding must
 * equal (binary search over the sorted disjoint prefixes, then over the class's port ranges).
 */
import { familyBits, parseAddress, parseCidr, type Family } from '../util/ip.js';
import { MAX_PORT, type DecisionTable, type PortEntry, type TableEntry } from './decision-table.js';
import type { Protocol } from './types.js';

/** Prefixes as sorted numeric intervals per family, parsed once per table for `lookup`. */
const intervalCache = new WeakMap<
  DecisionTable,
  Map<Family, { start: bigint; end: bigint; classId: number }[]>
>();

function intervalsOf(table: DecisionTable): Map<Family, { start: bigint; end: bigint; classId: number }[]> {
  const cached = intervalCache.get(table);
  if (cached) return cached;
  const out = new Map<Family, { start: bigint; end: bigint; classId: number }[]>([
    [4, []],
    [6, []],
  ]);
  for (const p of table.prefixes) {
    const c = parseCidr(p.cidr);
    if (!c) throw new Error(`decision table holds an invalid prefix '${p.cidr}'`);
    const size = 1n << BigInt(familyBits(c.family) - c.prefix);
    out.get(c.family)?.push({ start: c.base, end: c.base + size - 1n, classId: p.classId });
  }
  intervalCache.set(table, out);
  return out;
}

/** The class of a remote address: binary search over the sorted, disjoint prefixes. */
export function classOf(table: DecisionTable, remote: string): number {
  const a = parseAddress(remote);
  if (!a) throw new Error(`invalid address ${remote}`);
  const list = intervalsOf(table).get(a.family) ?? [];
  let lo = 0;
  let hi = list.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const iv = list[mid] as { start: bigint; end: bigint; classId: number };
    if (a.value < iv.start) hi = mid - 1;
    else if (a.value > iv.end) lo = mid + 1;
    else return iv.classId;
  }
  return 0;
}

/**
 * The entry deciding a packet, with `Oracle.evaluateSide`'s inputs. A port protocol needs a
 * destination port (a backend always has one); ICMP ignores it.
 */
export function lookup(table: DecisionTable, remote: string, protocol: Protocol, dport?: number): TableEntry {
  const cls = table.classes[classOf(table, remote)];
  if (!cls) throw new Error(`decision table of ${table.endpoint} lacks a class for ${remote}`);
  if (protocol === 'ICMP') return cls.icmp;
  if (dport === undefined || !Number.isInteger(dport) || dport < 0 || dport > MAX_PORT)
    throw new RangeError(`${protocol} lookup needs a destination port 0–${MAX_PORT}, got ${String(dport)}`);
  const entries = cls.ports[protocol];
  let lo = 0;
  let hi = entries.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if ((entries[mid] as PortEntry).first <= dport) lo = mid;
    else hi = mid - 1;
  }
  const entry = entries[lo];
  if (!entry) throw new Error(`decision table of ${table.endpoint} has no ${protocol} entries`);
  return entry;
}
