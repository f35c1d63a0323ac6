/**
 * Gives the heap's garbage back to the system when the agent goes quiet. V8 keeps the old
 * generation it grew to while a sync or a burst of changes allocated (at 10k endpoints 290 MiB of
 * heap for 120 MiB of live data after 100 changes) and shrinks it only under pressure; an ordinary
 * full collection frees the garbage but leaves the live objects spread over those pages. One
 * compacting collection once the work is done moves them together and returns the rest (measured:
 * docs/agent.md, "Memory budget"). Agents run with `--expose-gc` (`AGENT_NODE_FLAGS`); elsewhere
 * (tests, a hand-started agent) this does nothing. It also drops the cached kernel BTF (~6 MiB),
 * which only the flow sources' programs needed when they started, and hands glibc's free pages back
 * (`malloc_trim`).
 */
import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { releaseKernelBtf } from '../bpf/btf/index.js';
import { loadLibc } from '../netns/libc.js';

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

/** How long the collection took (ms) and the heap it left (MiB); undefined when gc is not exposed. */
export function compactHeap(): { ms: number; heapMiB: number } | undefined {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) return undefined;
  const started = performance.now();
  // The kernel's BTF served the flow sources' programs at start; read again if ever needed.
  releaseKernelBtf();
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
