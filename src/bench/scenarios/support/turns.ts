/**
 * Flood measurements of several backends side by side: each backend gets its own namespaces (no
 * hook or conntrack registration another backend left can linger) and its own flood socket, and
 * the backends take turns window by window, so a change in the machine's load hits all of them
 * alike. A window's cost is the sending thread's on-CPU time plus ksoftirqd's (work the kernel
 * deferred there), divided over the drops the backend's own counter saw.
 */
import { removePinScope } from '../../../bpf/index.js';
import type { Backend, BackendName, NodeTarget } from '../../../dataplane/backend.js';
import { loadBackend } from '../../../dataplane/registry.js';
import { PacketFlood } from './flood.js';
import { BenchNetns, benchTag } from './netns.js';
import { buildNodeTopology, type BenchPod } from './topology.js';

export const BENCH_NODE = 'bench-node';

export interface FloodSetup {
  name: BackendName;
  backend: Backend;
  ns: BenchNetns;
  target: NodeTarget;
  flood?: PacketFlood;
}

export interface FloodWindow {
  drops: number;
  sent: number;
  /** Sender thread + ksoftirqd on-CPU time. */
  cpuMs: number;
  wallMs: number;
}

/** Namespaces `sy-bench-<scenario><pid><b>-…` with a sender on the node's fabric veth. */
export async function floodSetups(
  scenario: string,
  names: readonly BackendName[],
  pods: readonly BenchPod[],
  frames: readonly Buffer[],
): Promise<FloodSetup[]> {
  const setups: FloodSetup[] = [];
  try {
    for (const name of names) {
      const ns = new BenchNetns(`${benchTag(scenario)}${name[0] ?? ''}`);
      const setup: FloodSetup = {
        name,
        backend: await loadBackend(name),
        ns,
        target: { scope: `bench-${ns.tag}`, node: BENCH_NODE, netns: ns.name('node') },
      };
      setups.push(setup);
      await buildNodeTopology(ns, { pods, sender: true });
      setup.flood = PacketFlood.open(ns.name('send'), 'eth0', frames);
    }
  } catch (e) {
    await tearDownAll(setups);
    throw e;
  }
  return setups;
}

export async function tearDownAll(setups: readonly FloodSetup[]): Promise<void> {
  const problems: string[] = [];
  for (const s of setups) {
    s.flood?.close();
    await s.backend.remove(s.target).catch((e: Error) => problems.push(`${s.name} remove: ${e.message}`));
    removePinScope(s.target.scope);
    await s.ns.destroy().catch((e: Error) => problems.push(e.message));
  }
  if (problems.length > 0) throw new Error(`bench cleanup: ${problems.join('; ')}`);
}

/**
 * `repetitions` windows per setup, in turns. `counter` reads the backend's drop counter; each
 * reading starts the next window, so counters are never read inside one (reading nft counters
 * with a 100k-element set in the table takes seconds).
 */
export async function floodInTurns(
  setups: readonly FloodSetup[],
  opts: { windowMs: number; repetitions: number },
  counter: (s: FloodSetup) => Promise<number>,
  onWindow: (s: FloodSetup, w: FloodWindow, rep: number) => void,
): Promise<void> {
  const before = new Map<FloodSetup, number>();
  for (const s of setups) {
    s.flood?.run(Math.min(100, opts.windowMs)); // warm-up: caches, tables, the send loop's JIT
    before.set(s, await counter(s));
  }
  for (let rep = 0; rep < opts.repetitions; rep++) {
    for (const s of setups) {
      if (!s.flood) throw new Error(`${s.name}: no flood socket`);
      const r = s.flood.run(opts.windowMs);
      const after = await counter(s);
      const drops = after - (before.get(s) ?? 0);
      before.set(s, after);
      if (drops <= 0) throw new Error(`${s.name}: the counter saw none of the ${r.sent} frames sent`);
      onWindow(s, { drops, sent: r.sent, cpuMs: r.cpuMs + r.ksoftirqdMs, wallMs: r.elapsedMs }, rep);
    }
  }
}
