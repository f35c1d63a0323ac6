/**
 * A decision table (src/ir/decision-table.ts) as the entries of its LPM trie: peer prefixes →
 * class, then (class, protocol, destination-port prefix) → what the rule walk would conclude,
 * with counter slots instead of rule ids. Pure: apply writes the result, tests read it.
 *
 * Port ranges become the fewest port prefixes that cover them exactly (as Cilium does for port
 * ranges in its policy map): LPM answers "which range holds this port" in one lookup. Per class
 * and protocol the most expensive outcome is written once, for every port (see portRows). ICMP
 * and the other IP protocols carry no port: their entries match every port (prefix length 0).
 */
import { createHash } from 'node:crypto';
import { codecs } from '../../bpf/index.js';
import {
  MAX_PORT,
  PORT_PROTOCOLS,
  type DecisionTable,
  type PortEntry,
  type TableEntry,
} from '../../ir/decision-table.js';
import {
  FLOW_VERDICT,
  IPPROTO,
  TABLE_KEY_HEADER_BITS,
  TABLE_KEY_KIND,
  TABLE_LOG_SLOTS,
  TABLE_OTHER_PROTOCOL,
  tablePeerKey,
  tablePortKey,
  tableValue,
  type TablePeerKey,
  type TablePortKey,
  type TableValue,
} from './layout.js';
import { cidr16 } from './addr16.js';

const PORT_BITS = 16;

/** `value` with its top `bits` bits significant: the ports value … value + 2^(16-bits) - 1. */
export interface PortPrefix {
  value: number;
  bits: number;
}

/**
 * The fewest port prefixes covering first–last exactly, in ascending order: from `first`, each
 * step takes the largest aligned block that starts there and stays within the range (at most
 * 2 × 16 - 2 prefixes, e.g. 30 for 1–65534).
 */
export function portRangePrefixes(first: number, last: number): PortPrefix[] {
  if (!Number.isInteger(first) || !Number.isInteger(last) || first < 0 || last > MAX_PORT || first > last)
    throw new RangeError(`invalid port range ${first}-${last}`);
  const out: PortPrefix[] = [];
  let at = first;
  while (at <= last) {
    let size = 1;
    // Grow while the block stays aligned at `at` and inside the range.
    while (size < 1 << PORT_BITS && at % (size * 2) === 0 && at + size * 2 - 1 <= last) size *= 2;
    out.push({ value: at, bits: PORT_BITS - Math.log2(size) });
    at += size;
  }
  return out;
}

/** A trie entry: the encoded key (peer or port key, 12 bytes) and its value. */
export interface TableTrieEntry {
  key: Buffer;
  value: TableValue;
}

export interface EncodedTable {
  entries: TableTrieEntry[];
  /** Peer prefixes loaded (both families: IPv4 mapped, addr16.ts). */
  prefixes: number;
  /** Identity of the entries: equal hashes, equal tables (slots included). */
  hash: string;
}

export type TableEncoding = { ok: true; table: EncodedTable } | { ok: false; reason: string };

const ZERO_VALUE: Omit<TableValue, 'class'> = {
  slot: 0,
  passSlot: 0,
  verdict: 0,
  logCount: 0,
  logs: Array.from({ length: TABLE_LOG_SLOTS }, () => 0),
};

export function peerKey(cidr: string): TablePeerKey {
  const { address, prefixLength } = cidr16(cidr);
  return {
    prefixlen: TABLE_KEY_HEADER_BITS + prefixLength,
    kind: TABLE_KEY_KIND.peer,
    pad: 0,
    pad2: 0,
    addr: address,
  };
}

export function portKey(classId: number, proto: number, prefix: PortPrefix): TablePortKey {
  return {
    prefixlen: TABLE_KEY_HEADER_BITS + prefix.bits,
    kind: TABLE_KEY_KIND.port,
    proto,
    class: classId,
    port: prefix.value,
    pad: 0,
    tail: NO_TAIL,
  };
}

const NO_TAIL = Buffer.alloc(0);

/** Every port: prefix length 0 (ICMP, other protocols). */
const ANY_PORT: PortPrefix = { value: 0, bits: 0 };

/** What a counter and the walk see of an entry: equal outcomes may share one trie entry. */
function outcomeKey(e: TableEntry): string {
  return JSON.stringify([e.verdict, e.rule, e.passedBy ?? '', e.logged]);
}

/**
 * One protocol's port entries as trie rows. The outcome whose ranges take the most prefixes
 * becomes the protocol's background: one row matching every port (prefix length 0), which the
 * longest-prefix match overrides wherever another outcome's (longer) prefix holds the port. A
 * class that allows one port thus needs two rows, not the thirty-odd prefixes of the ranges
 * around that port.
 */
function portRows(entries: readonly PortEntry[]): [PortPrefix, TableEntry][] {
  const byOutcome = new Map<string, { entry: TableEntry; prefixes: PortPrefix[] }[]>();
  const expanded = entries.map((e) => ({ entry: e, prefixes: portRangePrefixes(e.first, e.last) }));
  for (const x of expanded) {
    const key = outcomeKey(x.entry);
    byOutcome.set(key, [...(byOutcome.get(key) ?? []), x]);
  }
  let background: string | undefined;
  let most = -1;
  for (const [key, group] of byOutcome) {
    const count = group.reduce((n, x) => n + x.prefixes.length, 0);
    if (count > most) [background, most] = [key, count];
  }
  const rows: [PortPrefix, TableEntry][] = [];
  for (const x of expanded) {
    if (outcomeKey(x.entry) === background) continue;
    for (const prefix of x.prefixes) rows.push([prefix, x.entry]);
  }
  const first = background === undefined ? undefined : byOutcome.get(background)?.[0]?.entry;
  if (first) rows.push([ANY_PORT, first]);
  return rows;
}

/**
 * The trie entries of `table`, with counter slots from `slot` (IR rule id → slot). Fails when an
 * entry names more Log rules than a value holds (TABLE_LOG_SLOTS): the caller keeps the walk.
 */
export function encodeTable(table: DecisionTable, slot: (rule: string) => number): TableEncoding {
  const entries: TableTrieEntry[] = [];
  for (const p of table.prefixes) {
    // Class 0 is what a miss means: no entry needed.
    if (p.classId === 0) continue;
    entries.push({
      key: codecs.encode(tablePeerKey, peerKey(p.cidr)),
      value: { ...ZERO_VALUE, class: p.classId },
    });
  }
  const prefixes = entries.length;
  const valueOf = (e: TableEntry): TableValue | string => {
    if (e.logged.length > TABLE_LOG_SLOTS)
      return `${e.logged.length} Log rules fire on one packet; a table entry holds ${TABLE_LOG_SLOTS}`;
    return {
      slot: slot(e.rule),
      passSlot: e.passedBy !== undefined ? slot(e.passedBy) : 0,
      verdict: e.verdict === 'allow' ? FLOW_VERDICT.allow : FLOW_VERDICT.deny,
      logCount: e.logged.length,
      class: 0,
      logs: Array.from({ length: TABLE_LOG_SLOTS }, (_, i) => {
        const id = e.logged[i];
        return id === undefined ? 0 : slot(id);
      }),
    };
  };
  for (const cls of table.classes) {
    const rows: [number, PortPrefix, TableEntry][] = [];
    for (const protocol of PORT_PROTOCOLS)
      for (const [prefix, e] of portRows(cls.ports[protocol])) rows.push([IPPROTO[protocol], prefix, e]);
    rows.push([IPPROTO.ICMP, ANY_PORT, cls.icmp], [TABLE_OTHER_PROTOCOL, ANY_PORT, cls.other]);
    for (const [proto, prefix, e] of rows) {
      const value = valueOf(e);
      if (typeof value === 'string') return { ok: false, reason: value };
      entries.push({ key: codecs.encode(tablePortKey, portKey(cls.id, proto, prefix)), value });
    }
  }
  const h = createHash('sha256');
  const scratch = Buffer.alloc(tableValue.size);
  for (const e of entries) {
    tableValue.encode(e.value, scratch, 0);
    h.update(e.key).update(scratch);
  }
  return { ok: true, table: { entries, prefixes, hash: h.digest('hex').slice(0, 16) } };
}
