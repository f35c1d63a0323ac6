/**
 * The conntrack table from user space: listing it (`switchyard lab conntrack`) and collecting
 * garbage — entries past their expiry (idle, or closed by FIN/RST and past the short timeout)
 * and entries of hooks that no longer exist (a pod deleted or recreated). The data path already
 * ignores expired entries; collection only gives their room back before the LRU has to.
 */
import { BpfMap } from '../../bpf/index.js';
import type { Direction } from '../../ir/types.js';
import type { ConntrackEntry as BackendConntrackEntry, NodeTarget } from '../backend.js';
import {
  CT_FLAG_REPLIED,
  CT_STATE_NAMES,
  ctKey,
  ctValue,
  DIR,
  MAP,
  NS_PER_S,
  PROTOCOL_NAMES,
  type CtKey,
  type CtValue,
} from './layout.js';
import { mapPinPath, readEntries } from './maps.js';
import { readMeta, type NodeMeta } from './meta.js';
import { nodeDir } from './paths.js';

/**
 * The contract's entry, with what the eBPF table always knows: the hook (and so the direction)
 * that admitted the connection, its age, and its own packet and byte counts.
 */
export type ConntrackEntry = BackendConntrackEntry &
  Required<
    Pick<BackendConntrackEntry, 'ifindex' | 'direction' | 'ageSeconds' | 'idleSeconds' | 'packets' | 'bytes'>
  >;

/** The clock bpf_ktime_get_ns reads (CLOCK_MONOTONIC), as libuv's hrtime also reads it. */
export function monotonicNs(): bigint {
  return process.hrtime.bigint();
}

function seconds(ns: bigint): number {
  return Math.round(Number(ns) / (NS_PER_S / 1000)) / 1000;
}

export function describeEntry(
  key: CtKey,
  value: CtValue,
  meta: NodeMeta | undefined,
  now: bigint,
): ConntrackEntry {
  const direction: Direction = key.dir === DIR.egress ? 'egress' : 'ingress';
  const hook = meta?.hooks.find((h) => h.ifindex === key.ifindex && h.direction === direction);
  return {
    ifindex: key.ifindex,
    ...(hook ? { ifname: hook.ifname, endpoint: hook.endpoint } : {}),
    direction,
    protocol: PROTOCOL_NAMES[key.proto] ?? String(key.proto),
    src: key.saddr,
    sport: key.sport,
    dst: key.daddr,
    dport: key.dport,
    state: CT_STATE_NAMES[value.state] ?? `state ${value.state}`,
    replied: (value.flags & CT_FLAG_REPLIED) !== 0,
    ageSeconds: seconds(now - value.created),
    idleSeconds: seconds(now - value.lastSeen),
    expiresInSeconds: seconds(value.expires - now),
    packets: Number(value.packets),
    bytes: Number(value.bytes),
  };
}

export interface GcResult {
  scanned: number;
  expired: number;
  orphaned: number;
}

/** Deletes expired entries and, when `liveIfindexes` is given, entries of other hooks. */
export function collectGarbage(
  ct: BpfMap<CtKey, CtValue>,
  liveIfindexes?: ReadonlySet<number>,
  now: bigint = monotonicNs(),
): GcResult {
  const entries = readEntries(ct);
  const expired: CtKey[] = [];
  const orphaned: CtKey[] = [];
  for (const [key, value] of entries) {
    if (liveIfindexes && !liveIfindexes.has(key.ifindex)) orphaned.push(key);
    else if (now > value.expires) expired.push(key);
  }
  for (const key of [...expired, ...orphaned]) ct.delete(key);
  return { scanned: entries.length, expired: expired.length, orphaned: orphaned.length };
}

function openConntrack(
  target: NodeTarget,
): { ct: BpfMap<CtKey, CtValue>; meta: NodeMeta | undefined } | undefined {
  const dir = nodeDir(target.scope, target.node);
  const meta = readMeta(dir);
  try {
    return { ct: BpfMap.fromPin(mapPinPath(dir, MAP.conntrack), ctKey, ctValue), meta };
  } catch {
    return undefined;
  }
}

/** A node's conntrack table, oldest first; empty when the node has no eBPF dataplane. */
export function readConntrack(target: NodeTarget): ConntrackEntry[] {
  const opened = openConntrack(target);
  if (!opened) return [];
  try {
    const now = monotonicNs();
    return readEntries(opened.ct)
      .map(([k, v]) => describeEntry(k, v, opened.meta, now))
      .sort((a, b) => b.ageSeconds - a.ageSeconds);
  } finally {
    opened.ct.close();
  }
}

/**
 * Entries the data path would still use: the programs compare `expires` with bpf_ktime_get_ns
 * and take an entry past it for no entry, so an expired one the LRU has not reclaimed yet (and
 * garbage collection has not removed) is no connection.
 */
export function countLive(values: Iterable<Pick<CtValue, 'expires'>>, now: bigint): number {
  let live = 0;
  for (const v of values) if (v.expires >= now) live++;
  return live;
}

/** Live entries of a node's table (0 when the node has no eBPF dataplane). */
export function countLiveConntrack(target: NodeTarget): number {
  const opened = openConntrack(target);
  if (!opened) return 0;
  try {
    const now = monotonicNs();
    return countLive(
      readEntries(opened.ct).map(([, v]) => v),
      now,
    );
  } finally {
    opened.ct.close();
  }
}

/** Garbage collection of a node's table (what apply runs, for an agent's timer or `lab conntrack --gc`). */
export function collectConntrackGarbage(target: NodeTarget): GcResult {
  const opened = openConntrack(target);
  if (!opened) return { scanned: 0, expired: 0, orphaned: 0 };
  try {
    const live = opened.meta ? new Set(opened.meta.hooks.map((h) => h.ifindex)) : undefined;
    return collectGarbage(opened.ct, live);
  } finally {
    opened.ct.close();
  }
}
