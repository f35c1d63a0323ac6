/**
 * The pod×pod reach matrix measured with real connections from inside each source pod's namespace
 * and cgroup, every pair at once.
 */
import { reachMatrix, type ReachMatrix, type ReachOutcome } from '../calc/index.js';
import { join } from 'node:path';
import { requireRoot } from '../netns/index.js';
import { LabError } from './errors.js';
import { hintsFor, recentKernelDrops, type KernelDropHint } from './kernel-drops.js';
import { checkLabName } from './names.js';
import { isProbeServer } from './probe/control.js';
import { probeMatrix } from './probe/prober.js';
import type { ProbeOutcome } from './probe/protocol.js';
import { readState, type LabState } from './state.js';
import type { LabPod } from './topology.js';
import type { Progress } from './progress.js';

export interface ReachOptions {
  port: number;
  protocol: 'TCP' | 'UDP';
  /** Source pods (`namespace/name`); default every pod. */
  from?: string[];
  /** Per connection attempt. */
  timeoutMs?: number;
  /** Between the pods' IPv4 (default) or IPv6 addresses. */
  family?: 4 | 6;
  /** One tick per probed pair. */
  progress?: Progress;
}

/**
 * What a probe's outcome says about the pair: answered → allowed; refused (a TCP reset, or ICMP
 * port unreachable on UDP, which only a reachable namespace with no listener sends) → unserved;
 * anything else (a timeout: policy drops silently) → denied.
 */
export function probeOutcome(o: ProbeOutcome | undefined): ReachOutcome {
  if (o?.ok === true) return 'allowed';
  return o?.error === 'ECONNREFUSED' ? 'unserved' : 'denied';
}

export interface ReachResult {
  matrix: ReachMatrix;
  /** What the evaluator predicts from the IR the lab has in force (every pod as a source). */
  predicted: ReachMatrix;
  /** results[src][dst] with the answering pod, errors and timings. */
  details: Record<string, Record<string, ProbeOutcome>>;
  durationMs: number;
  /**
   * Pairs that failed although policy (the reference evaluator) lets them connect, with the
   * kernel drops the agents saw between them: the kernel's reason and function.
   */
  kernelDrops: KernelDropHint[];
}

/** Drops are drained once per flow interval (1 s): wait this long for the last ones. */
const DROP_DRAIN_WAIT_MS = 1200;

export const DEFAULT_PROBE_TIMEOUT_MS = 1000;

export function readyState(name: string): LabState & { topology: NonNullable<LabState['topology']> } {
  checkLabName(name);
  const state = readState(name);
  if (!state)
    throw new LabError(`lab '${name}' is not up: start it with 'switchyard lab up FILES --lab ${name}'`);
  if (state.status !== 'ready' || !state.topology) {
    throw new LabError(
      `lab '${name}' is ${state.status} (interrupted?): run 'switchyard lab up' again or 'lab down'`,
    );
  }
  return state as LabState & { topology: NonNullable<LabState['topology']> };
}

export function findPod(
  state: LabState & { topology: NonNullable<LabState['topology']> },
  id: string,
): LabPod {
  const key = id.includes('/') ? id : `default/${id}`;
  const pod = state.topology.pods.find((p) => p.id === key);
  if (!pod) {
    const known = state.topology.pods.map((p) => p.id);
    throw new LabError(
      `lab '${state.name}' has no pod '${id}' (pods: ${known.slice(0, 20).join(', ')}${known.length > 20 ? ', …' : ''})`,
    );
  }
  return pod;
}

export async function measureReach(name: string, opts: ReachOptions): Promise<ReachResult> {
  requireRoot('switchyard lab reach');
  const started = performance.now();
  const state = readyState(name);
  if (!state.probe || !isProbeServer(state.probe.pid, name)) {
    throw new LabError(`the probe server of lab '${name}' is not running: 'switchyard lab up' restarts it`);
  }
  const pods = state.topology.pods;
  const sources = opts.from && opts.from.length > 0 ? opts.from.map((id) => findPod(state, id)) : pods;
  opts.progress?.phase('probing', sources.length * pods.length);
  const results = await probeMatrix({
    protocol: opts.protocol,
    port: opts.port,
    timeoutMs: opts.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS,
    sources: sources.map((p) => ({ id: p.id, netns: p.netns, cgroup: join(state.cgroupRoot, p.slug) })),
    targets: pods.flatMap((p) => {
      const address = opts.family === 6 ? p.addressV6 : p.address;
      return address === undefined ? [] : [{ id: p.id, address }];
    }),
    ...(opts.progress ? { onOutcome: () => opts.progress?.tick() } : {}),
  });
  opts.progress?.done();
  const matrix: ReachMatrix = { port: opts.port, protocol: opts.protocol, results: {}, outcomes: {} };
  const details: ReachResult['details'] = {};
  sources.forEach((src) => {
    const r = results[src.id] ?? {};
    details[src.id] = r;
    matrix.results[src.id] = Object.fromEntries(pods.map((d) => [d.id, r[d.id]?.ok === true]));
    matrix.outcomes[src.id] = Object.fromEntries(pods.map((d) => [d.id, probeOutcome(r[d.id])]));
  });
  const predicted = reachMatrix(state.ir, opts.port, opts.protocol, opts.family ?? 4);
  const kernelDrops = await explainUnexpectedFailures(
    state,
    matrix,
    predicted,
    sources,
    pods,
    opts.family ?? 4,
  );
  return { matrix, predicted, details, durationMs: Math.round(performance.now() - started), kernelDrops };
}

/** For pairs that failed where policy allows them: the kernel drops seen between the two pods. */
async function explainUnexpectedFailures(
  state: LabState,
  measured: ReachMatrix,
  prediction: ReachMatrix,
  sources: readonly LabPod[],
  pods: readonly LabPod[],
  family: 4 | 6,
): Promise<KernelDropHint[]> {
  const addressOf = (p: LabPod): string => (family === 6 ? p.addressV6 : undefined) ?? p.address;
  if (!state.agents) return [];
  const predicted = prediction.results;
  const failed = sources.flatMap((src) =>
    pods
      .filter((dst) => predicted[src.id]?.[dst.id] === true && measured.results[src.id]?.[dst.id] === false)
      .map((dst) => ({ from: src.id, to: dst.id, fromAddress: addressOf(src), toAddress: addressOf(dst) })),
  );
  if (failed.length === 0) return [];
  await new Promise((resolve) => setTimeout(resolve, DROP_DRAIN_WAIT_MS));
  const drops = await recentKernelDrops(state.name);
  return failed.flatMap((pair) => hintsFor(drops, pair));
}
