/**
 * Kernel drops for flows: packets to or from our pods that the kernel freed for a reason other
 * than our policy (no route, rp_filter, no socket, a full queue …), with the kernel's reason and
 * the function that freed them. A tracepoint program on skb:kfree_skb (drop-program.ts) counts
 * them per (reason, location, tuple) in the kernel; this tracer drains the counts once per
 * interval into one KernelDropEvent per aggregate. Struct offsets come from the running kernel's
 * BTF, reason names from its `enum skb_drop_reason`, function names from /proc/kallsyms.
 *
 * Nothing is pinned: program, maps and the fd-based link die with the agent.
 */
import { enumValues, kernelBtf, memberOffset } from '../bpf/btf/index.js';
import {
  attachTracepoint,
  BpfError,
  BpfMap,
  formatResolved,
  kernelSymbols,
  PerCpuMap,
  Program,
  type Codec,
  type Link,
} from '../bpf/index.js';
import { FLOW_INTERVAL_MS } from '../dataplane/backend.js';
import type { EventSink, EventSource } from '../dataplane/events.js';
import {
  DROP_COUNTER_SLOTS,
  DROP_COUNTERS,
  DROP_MAPS,
  DROP_TRACEPOINT,
  dropKey,
  dropProgram,
  dropValue,
  flagValue,
  kfreeSkbLayout,
  netnsKey,
  podKey,
  reasonKey,
  skbLayout,
  type DropKey,
  type DropValue,
  type SkbLayout,
} from './drop-program.js';
import { dropReasonNames, NOT_DROPS, POLICY_REASONS, reasonValues, toDropEvent } from './drop-reasons.js';
import { readTracepointFormat } from './process-program.js';
import { counterArray, tracerLifecycle } from './tracer-lifecycle.js';

export interface DropTracerOptions {
  /**
   * Our pods: address → the pod (`id`: `namespace/name`). Read at start() and on every refresh();
   * the tracer keeps the map it gets (no copy: 10k entries at 10k pods), so it must not change after.
   */
  pods: () => ReadonlyMap<string, { readonly id: string }>;
  /** Inode numbers of the network namespaces whose drops are ours (the node's). */
  netns: () => Iterable<number>;
  /** How often the counts are drained (ms). Default FLOW_INTERVAL_MS. */
  pollMs?: number;
  /** Distinct (reason, location, tuple) aggregates one interval can hold. Default 4096. */
  maxAggregates?: number;
  /** Count drops of these reasons too (tests: to see what policy drops look like). Default none. */
  keepReasons?: readonly string[];
}

export type DropTracer = EventSource & {
  /** Rewrites the pod-address and namespace maps (no-op before start()). */
  refresh(): void;
};

export const DROP_TRACER_NAME = 'drop tracer';
const MAX_PODS = 16_384;
const MAX_NETNS = 256;
const DEFAULT_MAX_AGGREGATES = 4096;

/** The kernel's struct offsets the program needs, from its BTF. */
export function kernelSkbLayout(): SkbLayout {
  const btf = kernelBtf();
  return skbLayout((struct, path) => memberOffset(btf, struct, path));
}

/** Reason value → kernel name, from BTF. */
export function kernelDropReasons(): Map<number, string> {
  return dropReasonNames(enumValues(kernelBtf(), 'skb_drop_reason'));
}

interface Running {
  pods: BpfMap<string, number>;
  netns: BpfMap<number, number>;
  skip: BpfMap<number, number>;
  drops: PerCpuMap<DropKey, DropValue>;
  counters: BpfMap<number, number>;
  program: Program;
  link: Link;
  timer: NodeJS.Timeout;
  sink: EventSink;
  reasons: Map<number, string>;
  podOf: ReadonlyMap<string, { readonly id: string }>;
  /**
   * The keys last written to `pods` and `netns` (unset while a write is under way or failed); the
   * pods' are `podOf` itself.
   */
  written: { pods?: KeySet<string>; netns?: KeySet<number> };
  reportedLost: number;
}

/** The keys of a Set, or of a Map (the pods' addresses are compared as the map's keys, not copied). */
type KeySet<K> = Pick<ReadonlySet<K>, 'has' | 'keys' | 'size'>;

/**
 * Replaces a set-like map's keys with `wanted` (adds first, so a key in both is never missing).
 * `had`: the keys this tracer wrote last (its maps are its own, unpinned): only the difference is
 * written — at 10k pods a full rewrite after every apply cost the agent ~100 ms of syscalls.
 * Without it (the first time, or after a failed write) the map's keys are read.
 */
function syncKeys<K>(
  map: BpfMap<K, number>,
  wanted: KeySet<K>,
  had: KeySet<K> | undefined,
  limit: number,
  what: string,
): KeySet<K> {
  if (wanted.size > limit)
    throw new Error(`drop tracer: ${wanted.size} ${what} exceed the limit of ${limit}`);
  for (const k of wanted.keys()) if (!had?.has(k)) map.update(k, 1);
  for (const k of had ? [...had.keys()] : [...map.keys()]) if (!wanted.has(k)) map.delete(k);
  return wanted;
}

function refreshMaps(r: Running, opts: DropTracerOptions): void {
  r.podOf = opts.pods();
  const { written } = r;
  r.written = {};
  written.pods = syncKeys(r.pods, r.podOf, written.pods, MAX_PODS, 'pod addresses');
  written.netns = syncKeys(r.netns, new Set(opts.netns()), written.netns, MAX_NETNS, 'namespaces');
  r.written = written;
}

/** `function+0xoff` of a kernel address, or the address in hex when kallsyms hides it. */
function functionAt(address: bigint): string {
  const resolved = kernelSymbols().resolve(address);
  return resolved ? formatResolved(resolved) : `0x${address.toString(16)}`;
}

function drain(r: Running): void {
  const ctx = {
    reasons: r.reasons,
    functionAt,
    podOf: (a: string) => r.podOf.get(a)?.id,
    clockOffsetMs: Date.now() - Number(process.hrtime.bigint()) / 1e6,
  };
  for (const [key, values] of r.drops.lookupAndDeleteBatch()) {
    const e = toDropEvent(key, values, ctx);
    if (e) r.sink.event(e);
  }
  const lost = r.counters.lookup(DROP_COUNTERS.notRecorded) ?? 0;
  if (lost > r.reportedLost) {
    r.sink.lost(lost - r.reportedLost, DROP_TRACER_NAME);
    r.reportedLost = lost;
  }
}

function release(r: Partial<Running>): void {
  if (r.timer) clearInterval(r.timer);
  r.link?.close();
  r.program?.close();
  for (const m of [r.counters, r.drops, r.skip, r.netns, r.pods]) m?.close();
}

function createMaps(r: Partial<Running>, opts: DropTracerOptions): void {
  const set = <K>(name: string, key: Codec<K>, maxEntries: number): BpfMap<K, number> =>
    BpfMap.create({ type: 'hash', name, key, value: flagValue, maxEntries });
  r.pods = set('sy_drp_pods', podKey, MAX_PODS);
  r.netns = set('sy_drp_netns', netnsKey, MAX_NETNS);
  r.skip = set('sy_drp_skip', reasonKey, 256);
  r.drops = PerCpuMap.create({
    type: 'percpu_hash',
    name: 'sy_drp_drops',
    key: dropKey,
    value: dropValue,
    maxEntries: opts.maxAggregates ?? DEFAULT_MAX_AGGREGATES,
  });
  r.counters = counterArray('sy_drp_counts', DROP_COUNTER_SLOTS);
}

function startTracing(opts: DropTracerOptions, sink: EventSink): Running {
  const record = kfreeSkbLayout(readTracepointFormat(DROP_TRACEPOINT.category, DROP_TRACEPOINT.name));
  const skb = kernelSkbLayout();
  const reasons = kernelDropReasons();
  const keep = new Set(opts.keepReasons ?? []);
  const skipped = reasonValues(
    reasons,
    [...NOT_DROPS, ...POLICY_REASONS].filter((n) => !keep.has(n)),
  );
  const r: Partial<Running> = { sink, reasons, podOf: new Map(), written: {}, reportedLost: 0 };
  try {
    createMaps(r, opts);
    const maps = r as Running;
    for (const value of skipped) maps.skip.update(value, 1);
    refreshMaps(maps, opts);
    r.program = Program.load({
      name: 'sy_drp_kfree',
      type: 'tracepoint',
      instructions: dropProgram(record, skb),
      maps: {
        [DROP_MAPS.pods]: maps.pods,
        [DROP_MAPS.netns]: maps.netns,
        [DROP_MAPS.skip]: maps.skip,
        [DROP_MAPS.drops]: maps.drops,
        [DROP_MAPS.counters]: maps.counters,
      },
    });
    r.link = attachTracepoint(r.program, DROP_TRACEPOINT);
    const full = r as Running;
    r.timer = setInterval(() => {
      try {
        drain(full);
      } catch (err) {
        // Our own maps refusing a read (ENOMEM): the counts wait for the next interval.
        if (!(err instanceof BpfError)) throw err;
      }
    }, opts.pollMs ?? FLOW_INTERVAL_MS);
    r.timer.unref();
    return full;
  } catch (err) {
    release(r);
    throw err;
  }
}

export function createDropTracer(opts: DropTracerOptions): DropTracer {
  const life = tracerLifecycle<Running>(DROP_TRACER_NAME, {
    begin: (sink) => startTracing(opts, sink),
    drain,
    release,
  });
  return {
    name: DROP_TRACER_NAME,
    start: life.start,
    stop: life.stop,
    refresh(): void {
      const running = life.running();
      if (running) refreshMaps(running, opts);
    },
  };
}
