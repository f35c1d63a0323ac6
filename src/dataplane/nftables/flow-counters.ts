/**
 * The nftables backend's flow reader: one read of the node's four flow sets and the full counter
 * (flow-sets.ts), over one netlink socket, as the CounterSnapshot the netfilter kit's aggregate
 * source turns into per-interval flow records.
 */
import type { CounterSnapshot, DecisionCounter, TrafficCounter } from '../netfilter/aggregates.js';
import { FLOW_FAMILIES, FLOWS_FULL_COUNTER, decodeKey, flowSetName, type FlowFamily } from './flow-sets.js';
import { TABLE } from './names.js';
import { NftablesNetlink, type ElementVisitor } from './nfnetlink.js';

/** Collects one decision set's elements into `out`; ids are the set name and the key's bytes. */
export function decisionVisitor(family: FlowFamily, out: DecisionCounter[]): ElementVisitor {
  const set = flowSetName('flows', family);
  return (buf, off, len, packets, bytes) => {
    const k = decodeKey('flows', family, buf, off, len);
    if (!k || k.tag === undefined) return;
    out.push({
      id: `${set} ${buf.toString('hex', off, off + len)}`,
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
export function trafficVisitor(family: FlowFamily, out: TrafficCounter[]): ElementVisitor {
  const set = flowSetName('traffic', family);
  return (buf, off, len, packets, bytes) => {
    const k = decodeKey('traffic', family, buf, off, len);
    if (!k) return;
    out.push({
      id: `${set} ${buf.toString('hex', off, off + len)}`,
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
 * Reads every flow element of the node in `netns`. Throws when the table or a set is missing (flow
 * logs off, the table being replaced) or the ruleset changed mid-dump: the kit skips that interval
 * and reads again at the next.
 */
export function readFlowCounters(netns: string): CounterSnapshot {
  const nl = new NftablesNetlink(netns);
  try {
    const decisions: DecisionCounter[] = [];
    const traffic: TrafficCounter[] = [];
    for (const family of FLOW_FAMILIES) {
      nl.visitSet(TABLE, flowSetName('flows', family), decisionVisitor(family, decisions));
      nl.visitSet(TABLE, flowSetName('traffic', family), trafficVisitor(family, traffic));
    }
    return { decisions, traffic, full: nl.counter(TABLE, FLOWS_FULL_COUNTER).packets };
  } finally {
    nl.close();
  }
}
