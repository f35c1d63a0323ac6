/**
 * The XDP prefilter: drops packets whose source is on a deny-list, where they enter the node from
 * the fabric, before conntrack and policy. Two LPM tries per node hold every list (value = list
 * index): pf_trie with 4-byte IPv4 keys, pf_trie6 with 16-byte IPv6 keys; a per-CPU array counts
 * drops per list. Only the fixed headers are read (the IPv6 source sits at a fixed offset, no
 * extension-header walk): whatever is too short to hold one passes to the tc programs, which fail
 * closed on what they cannot parse.
 */
import { createHash } from 'node:crypto';
import {
  Assembler,
  codecs,
  R0,
  R1,
  R2,
  R3,
  R4,
  R5,
  R6,
  R7,
  R10,
  XdpAction,
  type AssembledProgram,
} from '../../bpf/index.js';
import { ETH_HLEN, ETHERTYPE_AS_LOADED, MAP, XDP_MD } from './layout.js';
import type { PrefilterList } from './node.js';
import { parseCidr } from '../../util/ip.js';
import { emitCountPacket } from './emit.js';

export const PREFILTER_PROGRAM_NAME = 'sy_prefilter';

/** Entries a node's prefilter trie is created for; larger lists get a larger trie. */
export const PREFILTER_MIN_CAPACITY = 1 << 20;

export function prefilterProgram(): AssembledProgram {
  const asm = new Assembler();
  emitPrefilter(asm, { drop: 'drop', pass: 'pass' });
  return asm.label('drop').exitWith(XdpAction.DROP).label('pass').exitWith(XdpAction.PASS).assemble();
}

/** Stack layout of the prefilter's lookups (below the node-port code's, which runs after it). */
const KEY4 = -8;
const KEY6 = -32;
const SLOT = -36;
const IPV6_HLEN = 40;
const IPV6_SADDR = 8;

/**
 * The prefilter's code, ending at `labels.drop` (listed) or `labels.pass` (anything else), which
 * the caller defines: the prefilter alone, or first in the fabric's XDP program (nodeport-xdp*.ts).
 * r6 = the context on every way out.
 */
export function emitPrefilter(asm: Assembler, labels: { drop: string; pass: string }): void {
  asm
    .comment('prefilter: an IPv4 or IPv6 packet whose source is on a deny-list is dropped')
    .mov64(R6, R1)
    .ldxw(R2, R6, XDP_MD.data)
    .ldxw(R3, R6, XDP_MD.dataEnd)
    .checkBounds(R2, ETH_HLEN + 20, R3, R4, labels.pass)
    .mov64(R7, R3)
    .sub64(R7, R2) // frame length, for the byte counter
    .ldxh(R5, R2, 12)
    .jeq(R5, ETHERTYPE_AS_LOADED.ipv6, 'pf_ipv6')
    .jne(R5, ETHERTYPE_AS_LOADED.ipv4, labels.pass)
    .comment('IPv4: look the source up in pf_trie (value: the first list with it)')
    .ldxw(R5, R2, ETH_HLEN + 12)
    .st('w', R10, KEY4, 32)
    .stx('w', R10, KEY4 + 4, R5)
    .mapLookup(MAP.prefilter, KEY4)
    .ja('pf_looked_up')
    .label('pf_ipv6')
    .comment('IPv6: the 16-byte source, word by word (stack stores must be aligned), in pf_trie6')
    .checkBounds(R2, ETH_HLEN + IPV6_HLEN, R3, R4, labels.pass)
    .st('w', R10, KEY6, 128);
  for (let word = 0; word < 4; word++)
    asm.copy('w', R10, KEY6 + 4 + 4 * word, R2, ETH_HLEN + IPV6_SADDR + 4 * word, R5);
  asm
    .mapLookup(MAP.prefilter6, KEY6)
    .label('pf_looked_up')
    .jeq(R0, 0, labels.pass)
    .comment("listed: count the drop in the list's counter")
    .copy('w', R10, SLOT, R0, 0, R1)
    .mapLookup(MAP.prefilterCounters, SLOT)
    .jeq(R0, 0, labels.drop);
  emitCountPacket(asm, R7);
  asm.ja(labels.drop);
}

/** An address range; IPv4 as numbers (million-entry lists stay cheap), IPv6 as bigints. */
interface Interval<T extends number | bigint> {
  first: T;
  last: T;
}

function interval4(cidr: string): Interval<number> {
  const { address, prefixLength } = codecs.parseIpv4Cidr(cidr);
  const size = 2 ** (32 - prefixLength);
  return { first: address, last: address + size - 1 };
}

function interval6(cidr: string): Interval<bigint> {
  const c = parseCidr(cidr);
  if (c?.family !== 6) throw new RangeError(`'${cidr}' is not an IPv6 CIDR`);
  return { first: c.base, last: c.base + (1n << BigInt(128 - c.prefix)) - 1n };
}

/** Sorted disjoint intervals (IR sets are disjoint); `contains` by binary search. */
class IntervalIndex<T extends number | bigint> {
  private readonly items: Interval<T>[];

  constructor(intervals: Interval<T>[]) {
    this.items = intervals.sort((a, b) => (a.first < b.first ? -1 : a.first > b.first ? 1 : 0));
  }

  contains(x: Interval<T>): boolean {
    let lo = 0;
    let hi = this.items.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if ((this.items[mid] as Interval<T>).first <= x.first) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    const at = this.items[found];
    return at !== undefined && at.last >= x.last;
  }
}

/** One family's trie contents (see prefilterEntries), added to `out`. */
function familyEntries<T extends number | bigint>(
  lists: readonly PrefilterList[],
  cidrsOf: (list: PrefilterList) => string[],
  intervalOf: (cidr: string) => Interval<T>,
  out: Map<string, number>,
): void {
  const earlier: { index: number; set: IntervalIndex<T> }[] = [];
  for (const list of lists) {
    const cidrs = cidrsOf(list);
    for (const cidr of cidrs) {
      if (out.has(cidr)) continue;
      const iv = intervalOf(cidr);
      const owner = earlier.find((e) => e.set.contains(iv));
      out.set(cidr, owner ? owner.index : list.index);
    }
    earlier.push({ index: list.index, set: new IntervalIndex(cidrs.map(intervalOf)) });
  }
}

/**
 * Trie contents of both families: CIDR → list index (an IPv6 CIDR goes to pf_trie6, see
 * isIpv6Cidr). The first list (IR order) containing an address must be the one that counts its
 * drop, but a trie answers with the longest prefix; so a prefix already covered by an earlier
 * list is stored with that list's index.
 */
export function prefilterEntries(lists: readonly PrefilterList[]): Map<string, number> {
  const out = new Map<string, number>();
  familyEntries(lists, (l) => l.cidrs.filter((c) => !isIpv6Cidr(c)), interval4, out);
  familyEntries(lists, (l) => l.cidrs.filter(isIpv6Cidr), interval6, out);
  return out;
}

/** Whether a prefilter entry belongs in the IPv6 trie. */
export function isIpv6Cidr(cidr: string): boolean {
  return cidr.includes(':');
}

/** Identity of the lists' contents, to skip a sync when nothing changed. */
export function prefilterHash(lists: readonly PrefilterList[]): string {
  const h = createHash('sha256');
  for (const l of lists) {
    h.update(`${l.index}:${l.name}\n`);
    for (const c of l.cidrs) h.update(`${c}\n`);
  }
  return h.digest('hex').slice(0, 16);
}
