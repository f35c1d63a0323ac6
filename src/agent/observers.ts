/**
 * The kernel event sources an agent runs for its backend: the policy programs' ring buffer on
 * eBPF, NFLOG and conntrack events on netfilter, and on every backend the process tracer for
 * connections opened by the node's pods. A source that cannot start is logged and left out:
 * flows are an aid, enforcement does not depend on them.
 */
import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import type { BackendName, NodeTarget } from '../dataplane/backend.js';
import type { IR } from '../ir/types.js';
import type { EventSink, EventSource } from '../observe/events.js';

export interface Observers {
  /** After every apply: pods (and so cgroups to trace) may have changed. */
  refresh(): void;
  stop(): Promise<void>;
  running(): string[];
}

export interface ObserverOptions {
  target: NodeTarget;
  backend: BackendName;
  sink: EventSink;
  logger: Logger;
  ir: () => IR | undefined;
  /** cgroup v2 directories of this node's pods. */
  cgroups: () => string[];
}

export async function startObservers(opts: ObserverOptions): Promise<Observers> {
  const sources: EventSource[] = [];
  let refreshTracer: (() => void) | undefined;
  const tryStart = async (make: () => Promise<EventSource>): Promise<void> => {
    let source: EventSource | undefined;
    try {
      source = await make();
      await source.start(opts.sink);
      sources.push(source);
    } catch (e) {
      opts.logger.warn({ source: source?.name, err: (e as Error).message }, 'flow source not started');
    }
  };

  if (opts.backend === 'ebpf') {
    await tryStart(async () =>
      (await import('../observe/ebpf-source.js')).createEbpfEventSource(opts.target),
    );
  } else {
    const backend = opts.backend;
    await tryStart(async () =>
      (await import('../observe/netfilter-source.js')).createNetfilterEventSource({
        target: opts.target,
        backend,
        ir: opts.ir,
      }),
    );
  }
  await tryStart(async () => {
    const { createProcessTracer, cgroupId } = await import('../observe/process-tracer.js');
    const tracer = createProcessTracer({
      cgroupIds: () =>
        opts
          .cgroups()
          .filter((p) => existsSync(p))
          .map(cgroupId),
    });
    refreshTracer = () => tracer.refreshCgroups();
    return tracer;
  });

  return {
    refresh: () => {
      try {
        refreshTracer?.();
      } catch (e) {
        opts.logger.warn({ err: (e as Error).message }, 'cannot update the traced cgroups');
      }
    },
    stop: async () => {
      await Promise.all(sources.map((s) => s.stop().catch(() => undefined)));
    },
    running: () => sources.map((s) => s.name),
  };
}
