/**
 * The XDP prefilter: drops IPv4 packets whose source is on a deny-list, where they enter the node
 * from the fabric, before conntrack and policy. One LPM trie per node holds every list (value =
 * list index) and a per-CPU array counts drops per list.
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
import { emitCountPacket } from './emit.js';

export const PREFILTER_PROGRAM_NAME = 'sy_prefilter';

/** Entries a node's prefilter trie is created for; larger lists get a larger trie. */
export const PREFILTER_MIN_CAPACITY = 1 << 20;

export function prefilterProgram(): AssembledProgram {
  const asm = new Assembler();
  emitPrefilter(asm, { drop: 'drop', pass: 'pass' });
  return asm.label('drop').exitWith(XdpAction.DROP).label('pass').exitWith(XdpAction.PASS).assemble();
}

/**
 * The prefilter's code, ending at `labels.drop` (listed) or `labels.pass` (anything else), which
 * the caller defines: the prefilter alone, or first in the fabric's XDP program (nodeport-xdp*.ts).
 * r6 = the context on every way out.
 */
export function emitPrefilter(asm: Assembler, labels: { drop: string; pass: string }): void {
  const key = -8;
  const slot = -12;
  asm
    .comment('prefilter: an IPv4 packet whose source is on a deny-list is dropped')
    .mov64(R6, R1)
    .ldxw(R2, R6, XDP_MD.data)
    .ldxw(R3, R6, XDP_MD.dataEnd)
    .checkBounds(R2, ETH_HLEN + 20, R3, R4, labels.pass)
    .ldxh(R5, R2, 12)
    .jne(R5, ETHERTYPE_AS_LOADED.ipv4, labels.pass)
    .comment('look the source address up in the deny-lists trie (value: the first list with it)')
    .ldxw(R5, R2, ETH_HLEN + 12)
    .st('w', R10, key, 32)
    .stx('w', R10, key + 4, R5)
    .mov64(R7, R3)
    .sub64(R7, R2) // frame length, for the byte counter
    .mapLookup(MAP.prefilter, key)
    .jeq(R0, 0, labels.pass)
    .comment("listed: count the drop in the list's counter")
    .copy('w', R10, slot, R0, 0, R1)
    .mapLookup(MAP.prefilterCounters, slot)
    .jeq(R0, 0, labels.drop);
  emitCountPacket(asm, R7);
  asm.ja(labels.drop);
}

interface Interval {
  first: number;
  last: number;
}

function interval(cidr: string): Interval {
  const { address, prefixLength } = codecs.parseIpv4Cidr(cidr);
  const size = 2 ** (32 - prefixLength);
  return { first: address, last: address + size - 1 };
}

/** Sorted disjoint intervals (IR sets are disjoint); `contains` by binary search. */
class IntervalIndex {
  private readonly items: Interval[];

  constructor(cidrs: readonly string[]) {
    this.items = cidrs.map(interval).sort((a, b) => a.first - b.first);
  }

  contains(x: Interval): boolean {
    let lo = 0;
    let hi = this.items.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if ((this.items[mid] as Interval).first <= x.first) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    const at = this.items[found];
    return at !== undefined && at.last >= x.last;
  }
}

/**
 * Trie contents: CIDR → list index. The first list (IR order) containing an address must be the
 * one that counts its drop, but a trie answers with the longest prefix; so a prefix already
 * covered by an earlier list is stored with that list's index.
 */
export function prefilterEntries(lists: readonly PrefilterList[]): Map<string, number> {
  const out = new Map<string, number>();
  const earlier: { index: number; set: IntervalIndex }[] = [];
  for (const list of lists) {
    for (const cidr of list.cidrs) {
      if (out.has(cidr)) continue;
      const iv = interval(cidr);
      const owner = earlier.find((e) => e.set.contains(iv));
      out.set(cidr, owner ? owner.index : list.index);
    }
    earlier.push({ index: list.index, set: new IntervalIndex(list.cidrs) });
  }
  return out;
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
