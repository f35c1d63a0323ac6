/**
 * The nftables backend's flow reader: one read of the node's four flow sets and the full counter
 * (flow-sets.ts), over one netlink socket, as the CounterSnapshot the netfilter kit's aggregate
 * source turns into per-interval flow records.
 *
 * The kit takes counters as running totals per element id and emits their growth, so an id must
 * never name two kernel elements: a whole-table rewrite (the first apply, a changed declaration)
 * creates the sets again, and an element of the new set may have the same key as one of the old
 * set with a total just as large. Ids carry the set's handle, which a set created again never
 * shares, and the full counter's total is carried across a new counter object; what was counted
 * between the last read and a rewrite is lost with the old sets (at most one interval).
 */
import type { CounterSnapshot, DecisionCounter, TrafficCounter } from '../netfilter/aggregates.js';
import { FLOW_FAMILIES, FLOWS_FULL_COUNTER, decodeKey, flowSetName, type FlowFamily } from './flow-sets.js';
import { TABLE } from './names.js';
import { NftablesNetlink, NftablesReadError, type ElementVisitor } from './nfnetlink.js';

/** Collects one decision set's elements into `out`; ids are `prefix` and the key's bytes. */
export function decisionVisitor(family: FlowFamily, prefix: string, out: DecisionCounter[]): ElementVisitor {
  return (buf, off, len, packets, bytes) => {
    const k = decodeKey('flows', family, buf, off, len);
    if (!k || k.tag === undefined) return;
    out.push({
      id: `${prefix} ${buf.toString('hex', off, off + len)}`,
      tag: k.tag,
      protocol: k.protocol,
      src: k.src,
      dst: k.dst,
      dport: k.dport,
      packets,
      bytes,
    });
  };
}

/** Collects one traffic set's elements into `out`. */
export function trafficVisitor(family: FlowFamily, prefix: string, out: TrafficCounter[]): ElementVisitor {
  return (buf, off, len, packets, bytes) => {
    const k = decodeKey('traffic', family, buf, off, len);
    if (!k) return;
    out.push({
      id: `${prefix} ${buf.toString('hex', off, off + len)}`,
      protocol: k.protocol,
      src: k.src,
      dst: k.dst,
      dport: k.dport,
      packets,
      bytes,
    });
  };
}

/**
 * A reader of the flow counters of the node in `netns`. Each call reads everything once; it
 * throws when the table or a set is missing (flow records off, the table being replaced) or a set
 * changed under the read: the kit skips that interval and reads again at the next.
 */
export function flowCounterReader(netns: string): () => CounterSnapshot {
  let fullHandle: number | undefined;
  let fullBefore = 0;
  let fullLast = 0;
  return () => {
    const nl = new NftablesNetlink(netns);
    try {
      const decisions: DecisionCounter[] = [];
      const traffic: TrafficCounter[] = [];
      for (const family of FLOW_FAMILIES) {
        for (const kind of ['flows', 'traffic'] as const) {
          const set = flowSetName(kind, family);
          const handle = nl.setHandle(TABLE, set);
          const prefix = `${set}#${handle}`;
          nl.visitSet(
            TABLE,
            set,
            kind === 'flows'
              ? decisionVisitor(family, prefix, decisions)
              : trafficVisitor(family, prefix, traffic),
          );
          if (nl.setHandle(TABLE, set) !== handle)
            throw new NftablesReadError(`set ${set} was created again during the read`);
        }
      }
      const full = nl.counter(TABLE, FLOWS_FULL_COUNTER);
      // A new counter object starts from zero: what the old one counted stays in the total.
      if (fullHandle !== undefined && full.handle !== fullHandle) fullBefore += fullLast;
      fullHandle = full.handle;
      fullLast = full.packets;
      return { decisions, traffic, full: fullBefore + full.packets };
    } finally {
      nl.close();
    }
  };
}
