/**
 * What the drop tracer's aggregates mean: reason numbers → the kernel's names (from BTF's
 * `enum skb_drop_reason`), kernel locations → functions (kallsyms), and the event for one
 * drained aggregate. Pure, so unit tests can decode hand-made map entries.
 */
import type { KernelDropEvent } from '../dataplane/events.js';
import type { DropKey, DropValue } from './drop-program.js';

const PREFIX = 'SKB_DROP_REASON_';

/**
 * Not drops: a packet that was used (CONSUMED, via consume_skb on older kernels), the reason a
 * freshly allocated packet carries (NOT_DROPPED_YET), and frees without a stated reason
 * (NOT_SPECIFIED: kfree_skb() callers that never said why, mostly normal teardown).
 */
export const NOT_DROPS = ['NOT_DROPPED_YET', 'CONSUMED', 'NOT_SPECIFIED'] as const;

/**
 * The reasons our own policy produces. nftables and iptables rules drop with NF_DROP
 * (NETFILTER_DROP); the eBPF backend's tcx programs return TC_ACT_SHOT (TC_INGRESS, TC_EGRESS);
 * its XDP prefilter drops before an skb exists (XDP, kept here for generic XDP). These packets are
 * already in the flow records as `deny` with their deciding rule, so the tracer does not count
 * them again. In the lab's namespaces nothing else installs netfilter rules or tc programs.
 */
export const POLICY_REASONS = ['NETFILTER_DROP', 'TC_INGRESS', 'TC_EGRESS', 'XDP'] as const;

/** Reason value → name without SKB_DROP_REASON_, from the enum's name → value map. */
export function dropReasonNames(enumValues: ReadonlyMap<string, bigint>): Map<number, string> {
  const names = new Map<number, string>();
  for (const [name, value] of enumValues) {
    if (!name.startsWith(PREFIX)) continue;
    const short = name.slice(PREFIX.length);
    // MAX and the subsystem markers are bounds, not reasons.
    if (short === 'MAX' || short.startsWith('SUBSYS_')) continue;
    if (!names.has(Number(value))) names.set(Number(value), short);
  }
  return names;
}

/** The values of `reasons` that this kernel has (older kernels lack some). */
export function reasonValues(names: ReadonlyMap<number, string>, reasons: readonly string[]): number[] {
  const wanted = new Set(reasons);
  return [...names].filter(([, name]) => wanted.has(name)).map(([value]) => value);
}

/** The name of a reason value; subsystem reasons (mac80211, openvswitch …) without a name are shown as hex. */
export function reasonName(names: ReadonlyMap<number, string>, value: number): string {
  return names.get(value) ?? `REASON_0x${value.toString(16)}`;
}

export interface DropContext {
  reasons: ReadonlyMap<number, string>;
  /** Kernel address → `function+0xoff`. */
  functionAt: (address: bigint) => string;
  /** Our pods' addresses → pod id. */
  podOf: (address: string) => string | undefined;
  /** Epoch ms minus CLOCK_MONOTONIC ms. */
  clockOffsetMs: number;
}

/** Sums one aggregate's per-CPU values: packets and bytes added, first the earliest, last the latest. */
export function mergeDropValues(values: readonly DropValue[]): DropValue {
  let out: DropValue = { packets: 0, bytes: 0, firstNs: 0n, lastNs: 0n };
  for (const v of values) {
    if (v.packets === 0) continue;
    out = {
      packets: out.packets + v.packets,
      bytes: out.bytes + v.bytes,
      firstNs: out.firstNs === 0n || v.firstNs < out.firstNs ? v.firstNs : out.firstNs,
      lastNs: v.lastNs > out.lastNs ? v.lastNs : out.lastNs,
    };
  }
  return out;
}

/** The event of one drained aggregate; undefined when no CPU counted a packet in it. */
export function toDropEvent(
  key: DropKey,
  values: readonly DropValue[],
  ctx: DropContext,
): KernelDropEvent | undefined {
  const v = mergeDropValues(values);
  if (v.packets === 0) return undefined;
  const dstPod = ctx.podOf(key.dst);
  const endpoint = dstPod ?? ctx.podOf(key.src);
  return {
    kind: 'drop',
    reason: reasonName(ctx.reasons, key.reason),
    function: ctx.functionAt(key.location),
    protocol: key.protocol,
    src: key.src,
    dst: key.dst,
    sport: 0,
    dport: key.dport,
    ...(endpoint ? { endpoint } : {}),
    direction: dstPod ? 'ingress' : 'egress',
    packets: v.packets,
    bytes: v.bytes,
    firstSeen: Math.round(Number(v.firstNs) / 1e6 + ctx.clockOffsetMs),
    lastSeen: Math.round(Number(v.lastNs) / 1e6 + ctx.clockOffsetMs),
  };
}
