/**
 * Process context for flows: which process (pid, comm, cgroup) opens TCP connections to where,
 * for processes in the pods' cgroups. A tracepoint program on sock:inet_sock_set_state (see
 * process-program.ts) counts each IPv4 TCP connect() in the kernel, per (source, destination,
 * protocol, destination port) — the tuple of a flow aggregate — and this tracer drains those
 * counters once per interval into one ProcessEvent per tuple, with source port 0. JavaScript work
 * follows the number of distinct destinations, not the connection rate.
 *
 * Sends and receives are traced per socket as well (socket-program.ts): the process on the
 * server side of an accepted connection, UDP at both ends, IPv6.
 *
 * Nothing is pinned: the program, maps and the (fd-based) link live as long as this process, so
 * an agent that crashes leaves nothing attached.
 */
import { statSync } from 'node:fs';
import { attachRawTracepoint, attachTracepoint, BpfError, BpfMap, Program, type Link } from '../bpf/index.js';
import { formatAddress } from './socket-address.js';
import {
  SOCKET_MAPS,
  SOCKET_TRACEPOINTS,
  socketKey,
  socketProgram,
  socketValue,
  type SocketKey,
} from './socket-program.js';
import { FLOW_INTERVAL_MS } from '../dataplane/backend.js';
import type { EventSink, EventSource, ProcessEvent } from '../dataplane/events.js';
import {
  allowedKey,
  allowedValue,
  connectorKey,
  connectorValue,
  COUNTER_SLOTS,
  COUNTERS,
  MAPS,
  processProgram,
  readTracepointFormat,
  setStateLayout,
  TRACEPOINT,
  type ConnectorKey,
  type ConnectorValue,
} from './process-program.js';
import { counterArray, tracerLifecycle } from './tracer-lifecycle.js';

/** cgroup v2 id of a cgroup directory: its inode number (what bpf_get_current_cgroup_id returns). */
export function cgroupId(path: string): bigint {
  return statSync(path, { bigint: true }).ino;
}

export interface ProcessTracerOptions {
  /** Cgroup v2 ids whose processes are traced; read at start() and on every refreshCgroups(). */
  cgroupIds: () => Iterable<bigint>;
  /** How often the kernel's connect counters are drained into events (ms). Default FLOW_INTERVAL_MS. */
  pollMs?: number;
  /**
   * Distinct (source, destination, protocol, destination port) tuples one interval can hold (LRU).
   * Default 32768; see DEFAULT_MAX_CONNECTORS.
   */
  maxConnectors?: number;
  /**
   * Trace sends and receives per socket too (default true): the process at both ends of TCP and
   * UDP flows, IPv4 and IPv6 (tp_btf on sock:sock_send_length / sock_recv_length, Linux 6.5+).
   */
  sockets?: boolean;
  /** Fail start() when socket tracing cannot run instead of falling back to connects only. */
  requireSockets?: boolean;
}

export type ProcessTracer = EventSource & {
  /** Rewrites the allowed-cgroup map from opts.cgroupIds() (no-op before start()). */
  refreshCgroups(): void;
};

export const PROCESS_TRACER_NAME = 'process tracer';
/**
 * `where` of sink.lost() for tuples the LRU evicted before a drain: each lost its process context
 * (and connect count) for one interval. Counted in tuples, not connects.
 */
export const LOST_EVICTED = 'process tracer: evicted';
/** `where` of sink.lost() for connects seen without a source address (see process-program.ts). */
export const LOST_NO_SOURCE_ADDRESS = 'process tracer: no source address';

const MAX_ALLOWED = 4096;

/**
 * An entry the LRU evicts before the drain takes its tuple's process context (and connect count)
 * for that interval. The map must hold every tuple that pods on the node connect to within one
 * interval: at the 10k new connections/s the agent is built for, even all to distinct tuples,
 * that is 10k per second. The common LRU can evict early by up to 128 free entries parked per CPU,
 * so 32768 leaves room for 10k tuples even on 128 CPUs, for 4 MiB preallocated (128 B per entry
 * with the kernel's element header, as the map's memlock reports).
 */
export const DEFAULT_MAX_CONNECTORS = 32768;

/** The event for one drained entry; `clockOffsetMs` turns the entry's ktime into epoch ms. */
export function toProcessEvent(
  key: ConnectorKey,
  value: ConnectorValue,
  clockOffsetMs: number,
): ProcessEvent {
  return {
    kind: 'process',
    time: Math.round(Number(value.lastNs) / 1e6 + clockOffsetMs),
    protocol: key.protocol,
    src: key.saddr,
    dst: key.daddr,
    sport: 0,
    dport: key.dport,
    pid: value.pid,
    comm: value.comm,
    cgroupId: value.cgroup.toString(),
    connections: value.connections,
  };
}

/** Epoch ms minus CLOCK_MONOTONIC ms (bpf_ktime_get_ns and process.hrtime read the same clock). */
function monotonicToEpochOffsetMs(): number {
  return Date.now() - Number(process.hrtime.bigint()) / 1e6;
}

/** `where` of sink.lost() for sends/receives the socket programs could not record (map full). */
export const LOST_SOCKETS = 'process tracer: sockets';

/** The event for one drained socket entry: the socket's own view (side 'socket'). */
export function toSocketEvent(key: SocketKey, value: ConnectorValue, clockOffsetMs: number): ProcessEvent {
  const remote = formatAddress(key.family, key.remote);
  return {
    kind: 'process',
    side: 'socket',
    time: Math.round(Number(value.lastNs) / 1e6 + clockOffsetMs),
    protocol: key.protocol,
    src: formatAddress(key.family, key.local),
    sport: key.lport,
    dst: remote === '0.0.0.0' || remote === '::' ? '' : remote,
    dport: key.rport,
    pid: value.pid,
    comm: value.comm,
    cgroupId: value.cgroup.toString(),
  };
}

/** The socket programs (tp_btf, one per tracepoint) and their links; absent where tp_btf is not. */
interface SocketTracing {
  sockets: BpfMap<SocketKey, ConnectorValue>;
  programs: Program[];
  links: Link[];
}

interface Running {
  allowed: BpfMap<bigint, number>;
  connectors: BpfMap<ConnectorKey, ConnectorValue>;
  counters: BpfMap<number, number>;
  program: Program;
  link: Link;
  socket?: SocketTracing;
  timer: NodeJS.Timeout;
  /** Entries drained since start. */
  drained: number;
  /** What sink.lost() has been told so far, by `where`. */
  reported: Map<string, number>;
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

/**
 * One event per tuple connected to since the previous drain. Lookup-and-delete empties each hash
 * bucket under its lock, so a connect lands either in this drain or in the next one.
 */
function emitDrained(r: Running, entries: readonly [ConnectorKey, ConnectorValue][]): void {
  r.drained += entries.length;
  const offset = monotonicToEpochOffsetMs();
  for (const [key, value] of entries) r.sink.event(toProcessEvent(key, value, offset));
}

/** Reports `total` (a running count) under `where` as far as it exceeds what was reported before. */
function reportTotal(r: Running, where: string, total: number): void {
  const before = r.reported.get(where) ?? 0;
  if (total <= before) return;
  r.sink.lost(total - before, where);
  r.reported.set(where, total);
}

/**
 * Drains the connect counters and reports what the kernel could not keep. `inserted` must be read
 * before the drain: every entry it counts is then either drained by now or was evicted, so
 * inserted − drained is a lower bound of the evictions (entries inserted during the drain and
 * drained by it only hide evictions until the next drain counts their inserts).
 */
function drainAndReport(r: Running): void {
  const inserted = r.counters.lookup(COUNTERS.inserted) ?? 0;
  emitDrained(r, r.connectors.lookupAndDeleteBatch());
  if (r.socket) {
    const offset = monotonicToEpochOffsetMs();
    for (const [key, value] of r.socket.sockets.lookupAndDeleteBatch())
      r.sink.event(toSocketEvent(key, value, offset));
    reportTotal(r, LOST_SOCKETS, r.counters.lookup(COUNTERS.socketNotRecorded) ?? 0);
  }
  reportTotal(r, LOST_EVICTED, inserted - r.drained);
  reportTotal(r, PROCESS_TRACER_NAME, r.counters.lookup(COUNTERS.notRecorded) ?? 0);
  reportTotal(r, LOST_NO_SOURCE_ADDRESS, r.counters.lookup(COUNTERS.noSourceAddress) ?? 0);
}

/** The interval's work. */
function tick(r: Running): void {
  try {
    drainAndReport(r);
  } catch (err) {
    // Our own maps refusing a read (ENOMEM): the entries keep counting until the next tick.
    if (!(err instanceof BpfError)) throw err;
  }
}

/** Closes whatever of a (possibly half-started) tracer exists, the link before the program and maps. */
function release(r: Partial<Running>): void {
  if (r.timer) clearInterval(r.timer);
  releaseSockets(r.socket);
  r.link?.close();
  r.program?.close();
  r.counters?.close();
  r.connectors?.close();
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
  r.connectors = BpfMap.create({
    type: 'lru_hash',
    name: 'sy_prc_connect',
    key: connectorKey,
    value: connectorValue,
    maxEntries: opts.maxConnectors ?? DEFAULT_MAX_CONNECTORS,
  });
  r.counters = counterArray('sy_prc_counts', COUNTER_SLOTS);
}

function releaseSockets(t: Partial<SocketTracing> | undefined): void {
  for (const link of t?.links ?? []) link.close();
  for (const program of t?.programs ?? []) program.close();
  t?.sockets?.close();
}

/**
 * Loads and attaches the socket programs, sharing the allowed-cgroup and counter maps. A kernel
 * without tp_btf or the sock_*_length tracepoints (before 6.5) keeps connect tracing only.
 */
function startSocketTracing(maps: Running, opts: ProcessTracerOptions): SocketTracing | undefined {
  const t: Partial<SocketTracing> = { programs: [], links: [] };
  try {
    t.sockets = BpfMap.create({
      type: 'lru_hash',
      name: 'sy_prc_sockets',
      key: socketKey,
      value: socketValue,
      maxEntries: opts.maxConnectors ?? DEFAULT_MAX_CONNECTORS,
    });
    const instructions = socketProgram();
    for (const tracepoint of SOCKET_TRACEPOINTS) {
      const program = Program.load({
        name: tracepoint === 'sock_send_length' ? 'sy_prc_send' : 'sy_prc_recv',
        type: 'tracing',
        expectedAttachType: 'trace_raw_tp',
        attachTo: tracepoint,
        instructions,
        maps: {
          [SOCKET_MAPS.allowed]: maps.allowed,
          [SOCKET_MAPS.sockets]: t.sockets,
          [SOCKET_MAPS.counters]: maps.counters,
        },
      });
      t.programs!.push(program);
      t.links!.push(attachRawTracepoint(program));
    }
    return t as SocketTracing;
  } catch (err) {
    releaseSockets(t);
    if (opts.requireSockets) throw err;
    return undefined;
  }
}

/** Maps, program, tracepoint link and the drain timer; on failure, releases what it made. */
function startTracing(
  opts: ProcessTracerOptions,
  sink: EventSink,
  layout: ReturnType<typeof setStateLayout>,
): Running {
  const r: Partial<Running> = { sink, drained: 0, reported: new Map() };
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
        [MAPS.connectors]: maps.connectors,
        [MAPS.counters]: maps.counters,
      },
    });
    r.link = attachTracepoint(r.program, TRACEPOINT);
    if (opts.sockets !== false) r.socket = startSocketTracing(r as Running, opts);
    const full = r as Running;
    r.timer = setInterval(() => tick(full), opts.pollMs ?? FLOW_INTERVAL_MS);
    r.timer.unref();
    return full;
  } catch (err) {
    release(r);
    throw err;
  }
}

export function createProcessTracer(opts: ProcessTracerOptions): ProcessTracer {
  const life = tracerLifecycle<Running>(PROCESS_TRACER_NAME, {
    begin: (sink) =>
      startTracing(opts, sink, setStateLayout(readTracepointFormat(TRACEPOINT.category, TRACEPOINT.name))),
    // Detach first (the lifecycle does the connect link, the socket links here), then deliver the
    // last partial interval and the final losses.
    drain: (r) => {
      for (const link of r.socket?.links ?? []) link.close();
      r.socket?.links.splice(0);
      drainAndReport(r);
    },
    release,
  });
  return {
    name: PROCESS_TRACER_NAME,
    start: life.start,
    stop: life.stop,
    refreshCgroups(): void {
      const running = life.running();
      if (running) refreshAllowed(running.allowed, opts.cgroupIds);
    },
  };
}
