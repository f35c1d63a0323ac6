/**
 * The kernel event sources an agent runs: its backend's flow source (whatever the dataplane
 * reports verdicts and connections through) and, on every backend, the process tracer for
 * connections opened by the node's pods and the drop tracer for packets the kernel drops in the
 * node's namespace for reasons other than policy. A source that cannot start is logged and left out:
 * flows are an aid, enforcement does not depend on them.
 */
import { existsSync, statSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Backend, NodeTarget } from '../dataplane/backend.js';
import type { IR } from '../ir/types.js';
import type { EventSink, EventSource } from '../dataplane/events.js';
import { netnsPath } from '../netns/namespaces.js';
import { endpointsByAddress } from '../observe/peers.js';
import { errorMessage } from '../util/errors.js';

export interface Observers {
  /** After every apply: pods (and so cgroups to trace) may have changed. */
  refresh(): void;
  stop(): Promise<void>;
  running(): string[];
}

export interface ObserverOptions {
  target: NodeTarget;
  backend: Backend;
  sink: EventSink;
  logger: Logger;
  ir: () => IR | undefined;
  /** How often kernel aggregates are drained (ms); the sources' default otherwise. */
  intervalMs?: number;
  /** cgroup v2 directories of this node's pods. */
  cgroups: () => string[];
  /** Start the process tracer (default true). */
  processTracing?: boolean;
}

export async function startObservers(opts: ObserverOptions): Promise<Observers> {
  const sources: EventSource[] = [];
  const refreshers: (() => void)[] = [];
  const tryStart = async (make: () => Promise<EventSource>): Promise<void> => {
    let source: EventSource | undefined;
    try {
      source = await make();
      await source.start(opts.sink);
      sources.push(source);
    } catch (e) {
      opts.logger.warn({ source: source?.name, err: errorMessage(e) }, 'flow source not started');
    }
  };

  await tryStart(async () =>
    opts.backend.flowSource(opts.target, {
      ir: opts.ir,
      ...(opts.intervalMs ? { pollMs: opts.intervalMs } : {}),
    }),
  );
  if (opts.processTracing !== false)
    await tryStart(async () => {
      const { createProcessTracer, cgroupId } = await import('../observe/process-tracer.js');
      const tracer = createProcessTracer({
        ...(opts.intervalMs ? { pollMs: opts.intervalMs } : {}),
        cgroupIds: () =>
          opts
            .cgroups()
            .filter((p) => existsSync(p))
            .map(cgroupId),
      });
      refreshers.push(() => tracer.refreshCgroups());
      return tracer;
    });
  await tryStart(async () => {
    const { createDropTracer } = await import('../observe/drop-tracer.js');
    const tracer = createDropTracer({
      ...(opts.intervalMs ? { pollMs: opts.intervalMs } : {}),
      // Every pod's addresses: a drop happens in one namespace, and only the node's is watched.
      pods: () => endpointsByAddress(opts.ir()),
      netns: () => [Number(statSync(netnsPath(opts.target.netns)).ino)],
    });
    refreshers.push(() => tracer.refresh());
    return tracer;
  });

  return {
    refresh: () => {
      for (const refresh of refreshers) {
        try {
          refresh();
        } catch (e) {
          opts.logger.warn({ err: errorMessage(e) }, 'cannot update the traced cgroups or pod addresses');
        }
      }
    },
    stop: async () => {
      await Promise.all(sources.map((s) => s.stop().catch(() => undefined)));
    },
    running: () => sources.map((s) => s.name),
  };
}
