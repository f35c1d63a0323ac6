/**
 * start()/stop() of a kernel tracer that counts in maps and is drained on a timer (the process
 * and drop tracers): one running state at a time, made whole or not at all by `begin`; stop()
 * detaches first, delivers what the last partial interval counted, then frees everything.
 */
import { BpfMap, codecs } from '../bpf/index.js';
import type { EventSink } from '../dataplane/events.js';

/** A tracer's array of u64 counters (what its program could not record, and why), one per slot. */
export function counterArray(name: string, slots: number): BpfMap<number, number> {
  return BpfMap.create({ type: 'array', name, key: codecs.u32, value: codecs.u64n, maxEntries: slots });
}

export interface TracerHooks<R extends { link: { close(): void } }> {
  /** Builds maps, program, link and timer; on failure releases what it made and throws. */
  begin(sink: EventSink): R;
  /** The last drain, after the link is closed. */
  drain(r: R): void;
  /** Frees the timer, link, program and maps. */
  release(r: R): void;
}

export interface TracerLifecycle<R> {
  start(sink: EventSink): Promise<void>;
  stop(): Promise<void>;
  /** The running state, undefined before start() and after stop(). */
  running(): R | undefined;
}

export function tracerLifecycle<R extends { link: { close(): void } }>(
  name: string,
  hooks: TracerHooks<R>,
): TracerLifecycle<R> {
  let running: R | undefined;
  return {
    start(sink: EventSink): Promise<void> {
      if (running) return Promise.reject(new Error(`${name}: already started`));
      try {
        running = hooks.begin(sink);
      } catch (err) {
        return Promise.reject(err instanceof Error ? err : new Error(String(err)));
      }
      return Promise.resolve();
    },
    stop(): Promise<void> {
      const r = running;
      running = undefined;
      if (!r) return Promise.resolve();
      try {
        r.link.close();
        hooks.drain(r);
      } finally {
        hooks.release(r);
      }
      return Promise.resolve();
    },
    running: () => running,
  };
}
