/**
 * Gives the heap's garbage back to the system when the agent goes quiet. V8 keeps the old
 * generation it grew to while a sync or a burst of changes allocated (at 10k endpoints 290 MiB of
 * heap for 120 MiB of live data after 100 changes) and shrinks it only under pressure; an ordinary
 * full collection frees the garbage but leaves the live objects spread over those pages. One
 * compacting collection once the work is done moves them together and returns the rest (measured:
 * docs/agent.md, "Memory budget"). Agents run with `--expose-gc` (`AGENT_NODE_FLAGS`); elsewhere
 * (tests, a hand-started agent) this does nothing. It also drops the caches registered with
 * util/quiet-caches.ts (the kernel BTF the flow sources' programs needed when they started, ~6
 * MiB; indexes that only speed up bursts of changes), and hands glibc's free pages back
 * (`malloc_trim`).
 */
import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { loadLibc } from '../netns/libc.js';
import { releaseQuietCaches } from '../util/quiet-caches.js';
import type { AgentMemory } from './api-types.js';

let mallocTrim: ((pad: number) => number) | undefined;

/**
 * Hands glibc's free memory back to the system. What V8 keeps outside its heap (compiler zones,
 * buffers, the platform threads' allocations) lives in glibc's arenas, which keep the pages a
 * burst freed (at 10k endpoints glibc held 32 MiB of RSS after 100 changes; with this and two
 * arenas, 17 MiB: docs/agent.md, "Memory budget").
 * `malloc_trim` returns the free pages of every arena, not only the top of the main one.
 */
function trimMalloc(): void {
  if (process.platform !== 'linux') return;
  try {
    mallocTrim ??= loadLibc().func('int malloc_trim(size_t pad)') as (pad: number) => number;
    mallocTrim(0);
  } catch {
    // Not glibc (musl has no malloc_trim): nothing to give back this way.
    mallocTrim = () => 0;
  }
}

/** `gc` where the process runs with `--expose-gc` (agents: `AGENT_NODE_FLAGS`). */
function exposedGc(): (() => void) | undefined {
  return (globalThis as { gc?: () => void }).gc;
}

/** How long the collection took (ms) and the heap it left (MiB); undefined when gc is not exposed. */
export function compactHeap(): { ms: number; heapMiB: number } | undefined {
  const gc = exposedGc();
  if (!gc) return undefined;
  const started = performance.now();
  // The kernel's BTF (the flow sources' programs used it at start) and caches of bursts of changes.
  releaseQuietCaches();
  setFlagsFromString('--compact-on-every-full-gc');
  try {
    gc();
  } finally {
    setFlagsFromString('--no-compact-on-every-full-gc');
  }
  trimMalloc();
  const ms = Math.round(performance.now() - started);
  return { ms, heapMiB: Math.round(process.memoryUsage().heapTotal / 2 ** 20) };
}

/** Whether TurboFan may run (it does in any process until optimizeBulkWork(false)). */
let optimizing = true;

/**
 * V8's optimizing compiler (TurboFan) for bulk work only. A full sync walks every object of the
 * cluster, and optimized code makes it faster (eBPF at 10k endpoints: 6.5–7.9 s with it, 9.4–11.5
 * s without). A change touches a few objects: Ignition and Sparkplug run it as fast (label change
 * in force, changes 2.5 s apart: 35 ms with TurboFan off after the sync, 46–49 ms with it), and
 * what TurboFan made for changes (code, deoptimization data, compiler zones) was 2–5 MiB of the
 * eBPF agent's RSS after 100 changes (docs/agent.md, "the floor under the data, and what the
 * optimizing compiler kept"). Only where `compactHeap` works (agents run with `--expose-gc`): a
 * test that runs an agent inside the test's own process keeps its V8 flags.
 */
export function optimizeBulkWork(bulk: boolean): void {
  if (!exposedGc() || bulk === optimizing) return;
  // Not `--max-opt=1`: it turns `--turbofan` off by implication, and `--max-opt` back up does
  // not turn it on again (test/unit/agent-optimizer.test.ts).
  setFlagsFromString(bulk ? '--turbofan' : '--no-turbofan');
  optimizing = bulk;
}

/** RSS growth since the last compaction that is worth one (a collection at 10k endpoints takes ~0.4 s). */
export const COMPACT_GROWTH_BYTES = 32 * 2 ** 20;

/**
 * How long after a compaction its RSS is read again for the baseline. The pages it freed leave
 * the process in the background: read at once, RSS at 10k endpoints still stood at 177–198 MiB
 * where a second later it was ~115, and growth measured from there let an eBPF repair's 75 MiB
 * stay (docs/agent.md, "A repair's garbage").
 */
export const BASELINE_SETTLE_MS = 1000;

export interface MemoryKeeperOptions {
  /** How long after work its growth is looked at (the garbage is still there; the work is done). */
  lookAfterMs: number;
  /**
   * The process grew: the owner calls compact() where it cannot interleave with its work (the
   * agent's queue), or skipped() when it will compact at a pause of its own soon.
   */
  schedule(): void;
  /** Told each time `state` changes (the agent's status reports it). */
  changed?(state: AgentMemory): void;
  /** The process's resident size in bytes (process.memoryUsage.rss). */
  rss?: () => number;
  growthBytes?: number;
}

/**
 * Gives back what work outside the agent's own pauses allocated. The agent compacts after its
 * first sync and once a burst of changes has been read back; a metrics scrape or a drift poll on
 * netfilter reads the whole ruleset (`iptables-save -c` is 17 MB of text at 10k services, parsed
 * into rules), and at 10k endpoints left iptables' RSS ~90 MiB above what the agent holds. `lookAfterMs` after such work the
 * process is compacted if its RSS grew by `growthBytes` since the last compaction; small work (a
 * poll that read a few maps) costs a timer, no collection.
 */
export class MemoryKeeper {
  private baseline: number;
  private timer: NodeJS.Timeout | undefined;
  private settleTimer: NodeJS.Timeout | undefined;
  private scheduled = false;
  /** Work outside the owner's queue (scrapes) under way: a compaction now cannot free its garbage. */
  private running = 0;
  private compactions = 0;
  private lastAt: string | undefined;

  constructor(private readonly opts: MemoryKeeperOptions) {
    this.baseline = this.rss();
  }

  private rss(): number {
    return (this.opts.rss ?? process.memoryUsage.rss)();
  }

  /**
   * Work that may have allocated ended: look at the process `lookAfterMs` later (from the first such
   * work: drift polls and scrapes can come more often than that, and would put a debounced look
   * off for good).
   */
  afterWork(): void {
    if (this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.scheduled && this.rss() - this.baseline >= (this.opts.growthBytes ?? COMPACT_GROWTH_BYTES)) {
        this.scheduled = true;
        this.opts.schedule();
      }
      this.opts.changed?.(this.state);
    }, this.opts.lookAfterMs);
    this.opts.changed?.(this.state);
  }

  /** Work outside the owner's queue began (a scrape); `ended` when it is over. */
  started(): void {
    this.running++;
  }

  ended(): void {
    this.running = Math.max(0, this.running - 1);
    this.afterWork();
  }

  /** The compaction `schedule` asked for will not run (the owner compacts at its own pause soon). */
  skipped(): void {
    this.scheduled = false;
    this.opts.changed?.(this.state);
  }

  /** Compacts now (also the owner's own pauses: after a sync, after a read-back). */
  compact(): ReturnType<typeof compactHeap> {
    const done = compactHeap();
    this.scheduled = false;
    if (done) {
      this.compactions++;
      this.lastAt = new Date().toISOString();
    }
    // What a scrape under way holds is not kept: the look after it compacts again whatever it finds.
    this.baseline = this.running > 0 ? 0 : this.rss();
    this.settleBaseline();
    this.opts.changed?.(this.state);
    return done;
  }

  /** The baseline once the freed pages are gone; work meanwhile only adds to RSS, so the lower. */
  private settleBaseline(): void {
    clearTimeout(this.settleTimer);
    this.settleTimer = undefined;
    if (this.baseline === 0) return;
    this.settleTimer = setTimeout(() => {
      this.settleTimer = undefined;
      this.baseline = Math.min(this.baseline, this.rss());
    }, BASELINE_SETTLE_MS);
    this.settleTimer.unref();
  }

  get due(): boolean {
    return this.timer !== undefined || this.scheduled;
  }

  get state(): AgentMemory {
    return {
      compactions: this.compactions,
      ...(this.lastAt ? { compactedAt: this.lastAt } : {}),
      due: this.due,
    };
  }

  stop(): void {
    clearTimeout(this.timer);
    clearTimeout(this.settleTimer);
    this.timer = undefined;
    this.settleTimer = undefined;
  }
}
