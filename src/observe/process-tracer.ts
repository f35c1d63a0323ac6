/**
 * Process context for flows: which process (pid, comm, cgroup) opened a TCP connection, for
 * connections made by processes in the pods' cgroups. A tracepoint program on
 * sock:inet_sock_set_state (see process-program.ts) reports each IPv4 TCP connect() once it leaves
 * SYN_SENT, through a ring buffer.
 *
 * Nothing is pinned: the program, maps and the (fd-based) link live as long as this process, so
 * an agent that crashes leaves nothing attached.
 */
import { statSync } from 'node:fs';
import {
  attachTracepoint,
  BpfMap,
  codecs,
  Program,
  RingBufMap,
  RingBufReader,
  type Link,
} from '../bpf/index.js';
import type { EventSink, EventSource, ProcessEvent } from '../dataplane/events.js';
import {
  allowedKey,
  allowedValue,
  MAPS,
  pendingKey,
  pendingValue,
  processProgram,
  processRecord,
  readTracepointFormat,
  setStateLayout,
  TRACEPOINT,
  type ProcessRecord,
} from './process-program.js';
import { IPPROTO_TCP } from '../util/protocols.js';

/** cgroup v2 id of a cgroup directory: its inode number (what bpf_get_current_cgroup_id returns). */
export function cgroupId(path: string): bigint {
  return statSync(path, { bigint: true }).ino;
}

export interface ProcessTracerOptions {
  /** Cgroup v2 ids whose processes are traced; read at start() and on every refreshCgroups(). */
  cgroupIds: () => Iterable<bigint>;
  /** Ring buffer bytes (power of two, ≥ 4096). Default 256 KiB (≈ 4600 records). */
  ringBytes?: number;
  /** Connections in SYN_SENT remembered at once (LRU). Default 16384. */
  maxPending?: number;
  /** How often the lost-record counter is polled. Default 1000 ms. */
  lostPollMs?: number;
}

export type ProcessTracer = EventSource & {
  /** Rewrites the allowed-cgroup map from opts.cgroupIds() (no-op before start()). */
  refreshCgroups(): void;
};

export const PROCESS_TRACER_NAME = 'process tracer';

const MAX_ALLOWED = 4096;

export function toProcessEvent(record: ProcessRecord, time = Date.now()): ProcessEvent {
  return {
    kind: 'process',
    time,
    protocol: IPPROTO_TCP,
    src: record.saddr,
    dst: record.daddr,
    sport: record.sport,
    dport: record.dport,
    pid: record.pid,
    comm: record.comm,
    cgroupId: record.cgroup.toString(),
  };
}

interface Running {
  allowed: BpfMap<bigint, number>;
  pending: BpfMap<bigint, codecs.CodecValue<typeof pendingValue>>;
  events: RingBufMap;
  lost: BpfMap<number, number>;
  program: Program;
  link: Link;
  reader: RingBufReader;
  timer: NodeJS.Timeout;
  reportedLost: number;
  sink: EventSink;
}

/** Rewrites the allowed-cgroup map to `wanted`. */
function refreshAllowed(allowed: BpfMap<bigint, number>, cgroupIds: () => Iterable<bigint>): void {
  const wanted = new Set(cgroupIds());
  if (wanted.size > MAX_ALLOWED)
    throw new Error(`process tracer: ${wanted.size} cgroups exceed the limit of ${MAX_ALLOWED}`);
  // Add first, then remove: a cgroup in both the old and the new set is never missing.
  for (const id of wanted) allowed.update(id, 1);
  for (const id of [...allowed.keys()]) if (!wanted.has(id)) allowed.delete(id);
}

/** Tells the sink how many records the kernel lost since the last report. */
function reportLost(r: Running): void {
  const total = r.lost.lookup(0) ?? 0;
  if (total > r.reportedLost) {
    r.sink.lost(total - r.reportedLost, PROCESS_TRACER_NAME);
    r.reportedLost = total;
  }
}

/** Closes whatever of a (possibly half-started) tracer exists, the link before the program and maps. */
function release(r: Partial<Running>): void {
  if (r.timer) clearInterval(r.timer);
  r.reader?.close();
  r.link?.close();
  r.program?.close();
  r.events?.close();
  r.lost?.close();
  r.pending?.close();
  r.allowed?.close();
}

/** Creates the program's maps into `r` (so a failure part way can release what exists). */
function createMaps(r: Partial<Running>, opts: ProcessTracerOptions): void {
  r.allowed = BpfMap.create({
    type: 'hash',
    name: 'sy_prc_allowed',
    key: allowedKey,
    value: allowedValue,
    maxEntries: MAX_ALLOWED,
  });
  r.pending = BpfMap.create({
    type: 'lru_hash',
    name: 'sy_prc_pending',
    key: pendingKey,
    value: pendingValue,
    maxEntries: opts.maxPending ?? 16384,
  });
  r.events = RingBufMap.create({ name: 'sy_prc_events', size: opts.ringBytes ?? 1 << 18 });
  r.lost = BpfMap.create({
    type: 'array',
    name: 'sy_prc_lost',
    key: codecs.u32,
    value: codecs.u64n,
    maxEntries: 1,
  });
}

/** Maps, program, tracepoint link, ring reader and lost-counter poll; on failure, releases what it made. */
function startTracing(
  opts: ProcessTracerOptions,
  sink: EventSink,
  layout: ReturnType<typeof setStateLayout>,
): Running {
  const r: Partial<Running> = { sink, reportedLost: 0 };
  try {
    createMaps(r, opts);
    const maps = r as Running;
    refreshAllowed(maps.allowed, opts.cgroupIds);
    r.program = Program.load({
      name: 'sy_prc_connect',
      type: 'tracepoint',
      instructions: processProgram(layout),
      maps: {
        [MAPS.allowed]: maps.allowed,
        [MAPS.pending]: maps.pending,
        [MAPS.events]: maps.events,
        [MAPS.lost]: maps.lost,
      },
    });
    r.reader = new RingBufReader(maps.events);
    r.link = attachTracepoint(r.program, TRACEPOINT);
    const full = r as Running;
    r.reader.start((data, offset, length) => {
      if (length < processRecord.size) return;
      sink.event(toProcessEvent(processRecord.decode(data, offset)));
    });
    r.timer = setInterval(() => reportLost(full), opts.lostPollMs ?? 1000);
    r.timer.unref();
    return full;
  } catch (err) {
    release(r);
    throw err;
  }
}

export function createProcessTracer(opts: ProcessTracerOptions): ProcessTracer {
  let running: Running | undefined;
  return {
    name: PROCESS_TRACER_NAME,

    start(sink: EventSink): Promise<void> {
      if (running) return Promise.reject(new Error('process tracer: already started'));
      const layout = setStateLayout(readTracepointFormat(TRACEPOINT.category, TRACEPOINT.name));
      try {
        running = startTracing(opts, sink, layout);
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
        // Detach first, then deliver what is still in the ring and the final lost count.
        r.link.close();
        r.reader.consume((data, offset, length) => {
          if (length >= processRecord.size) r.sink.event(toProcessEvent(processRecord.decode(data, offset)));
        });
        reportLost(r);
      } finally {
        release(r);
      }
      return Promise.resolve();
    },

    refreshCgroups(): void {
      if (running) refreshAllowed(running.allowed, opts.cgroupIds);
    },
  };
}
