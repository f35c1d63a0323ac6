/**
 * "Why did it fail when policy allows it?": the kernel drops (flow records with verdict
 * `dropped`) a lab's agents saw between two addresses, for `lab reach` and `explain --lab`.
 */
import { dirname } from 'node:path';
import { agentRequest, socketsIn } from '../agent/client.js';
import type { Flow } from '../observe/flow-types.js';
import { agentStateDir } from './agents.js';
import { readState } from './state.js';

/** A kernel drop seen between two pods (either direction: a dropped reply fails a connection too). */
export interface KernelDropHint {
  from: string;
  to: string;
  /** The dropped packets' own source and destination (the reverse of from → to for a reply). */
  src: string;
  dst: string;
  protocol: string;
  dport: number;
  reason: string;
  function: string;
  node: string;
  packets: number;
  lastSeen: string;
}

/** Recent `dropped` flow records of every agent of the lab; none when it runs no agents. */
export async function recentKernelDrops(lab: string, limit = 1000): Promise<Flow[]> {
  const agents = socketsIn(dirname(agentStateDir(lab, 'x')));
  const answers = await Promise.all(
    agents.map((a) =>
      agentRequest<{ flows: Flow[] }>(a.socket, `/v1/flows?verdict=dropped&limit=${limit}`).catch(() => ({
        flows: [],
      })),
    ),
  );
  return answers.flatMap((a) => a.flows);
}

/** The drops between addresses `a` and `b` (both directions), most recent first. */
export function dropsBetween(drops: readonly Flow[], a: string, b: string): Flow[] {
  return drops
    .filter((f) => f.verdict === 'dropped' && ((f.src === a && f.dst === b) || (f.src === b && f.dst === a)))
    .sort((x, y) => (x.lastSeen < y.lastSeen ? 1 : -1));
}

/** Hints for the pair `from` → `to` (pod ids) at the given addresses. */
export function hintsFor(
  drops: readonly Flow[],
  pair: { from: string; to: string; fromAddress: string; toAddress: string },
): KernelDropHint[] {
  return dropsBetween(drops, pair.fromAddress, pair.toAddress).map((f) => ({
    from: pair.from,
    to: pair.to,
    src: f.src,
    dst: f.dst,
    protocol: f.protocol,
    dport: f.dport,
    reason: f.dropReason ?? f.rule,
    function: f.dropFunction ?? '',
    node: f.node,
    packets: f.packets,
    lastSeen: f.lastSeen,
  }));
}

/** One line per hint: `a → b: kernel dropped 3 UDP packets 198.18.0.2 → 198.18.0.3:53: IP_RPFILTER in ip_rcv_finish_core+0x1a2 on node-1`. */
export function hintLine(h: KernelDropHint): string {
  const port = h.dport ? `:${h.dport}` : '';
  return (
    `${h.from} → ${h.to}: kernel dropped ${h.packets} ${h.protocol} packet${h.packets === 1 ? '' : 's'} ` +
    `${h.src} → ${h.dst}${port}: ${h.reason}${h.function ? ` in ${h.function}` : ''} on ${h.node}`
  );
}

/**
 * The kernel drops a lab's agents saw between `from` and `to` (pod ids `ns/name`, or addresses),
 * for `explain --lab`: pods are looked up at the addresses the lab gave them.
 */
export async function labDropHints(lab: string, from: string, to: string): Promise<KernelDropHint[]> {
  const pods = new Map((readState(lab)?.topology?.pods ?? []).map((p) => [p.id, p.address]));
  const addressOf = (id: string): string => pods.get(id) ?? pods.get(`default/${id}`) ?? id;
  const drops = await recentKernelDrops(lab);
  return hintsFor(drops, { from, to, fromAddress: addressOf(from), toAddress: addressOf(to) });
}
