/**
 * The BPF side of the process tracer: the sock:inet_sock_set_state record layout (read from
 * tracefs at run time), the maps' codecs, and the tracepoint program.
 *
 * A TCP connect() moves its socket to SYN_SENT in the calling process's context. By then
 * tcp_v4_connect has routed the connection and set the source address (bound, or chosen by the
 * route) and the destination address and port; only the source port comes later
 * (inet_hash_connect). Flows are aggregated without the source port, so that is all the program
 * needs: at SYN_SENT it adds one connect to the `connectors` entry of (source, destination,
 * protocol, destination port) and, when it creates the entry, records the process. The agent
 * drains the map once per interval: one record per tuple and interval, however many connects.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  Assembler,
  codecs,
  ensureTracefs,
  R0,
  R1,
  R2,
  R6,
  R7,
  R10,
  UpdateFlags,
  type AssembledProgram,
} from '../bpf/index.js';
import { IPPROTO_TCP } from '../util/protocols.js';

export const TRACEPOINT = { category: 'sock', name: 'inet_sock_set_state' } as const;

/** include/net/tcp_states.h */
export const TCP_SYN_SENT = 2;
const AF_INET = 2;

export interface TracepointField {
  offset: number;
  size: number;
}

/** Field name → offset and size, from a tracefs `format` file. */
export function parseTracepointFormat(text: string): Map<string, TracepointField> {
  const fields = new Map<string, TracepointField>();
  const line = /field:([^;]*);\s*offset:(\d+);\s*size:(\d+);/g;
  for (const m of text.matchAll(line)) {
    // "const void * skaddr", "__u8 saddr[4]", "int oldstate": the name is the last word.
    const declaration = (m[1] ?? '').trim().replace(/\[[^\]]*\]$/, '');
    const name = /(\w+)$/.exec(declaration)?.[1];
    if (name) fields.set(name, { offset: Number(m[2]), size: Number(m[3]) });
  }
  return fields;
}

/** The format file of a tracepoint: /sys/kernel/tracing, else /sys/kernel/debug/tracing, else mount tracefs. */
export function readTracepointFormat(category: string, name: string): string {
  const candidates = ['/sys/kernel/tracing', '/sys/kernel/debug/tracing'];
  for (const dir of candidates) {
    const file = join(dir, 'events', category, name, 'format');
    if (existsSync(file)) return readFileSync(file, 'utf8');
  }
  const file = join(ensureTracefs(), 'events', category, name, 'format');
  if (!existsSync(file)) throw new Error(`tracepoint ${category}:${name} does not exist (no ${file})`);
  return readFileSync(file, 'utf8');
}

/** Offsets of the inet_sock_set_state fields the program reads. */
export interface SetStateLayout {
  newstate: number;
  dport: number;
  family: number;
  protocol: number;
  saddr: number;
  daddr: number;
}

const EXPECTED_SIZES: Record<keyof SetStateLayout, number> = {
  newstate: 4,
  dport: 2,
  family: 2,
  protocol: 2,
  saddr: 4,
  daddr: 4,
};

/** Checks every field the program needs is present with the size it loads. */
export function setStateLayout(formatText: string): SetStateLayout {
  const fields = parseTracepointFormat(formatText);
  const layout: Partial<SetStateLayout> = {};
  for (const [name, size] of Object.entries(EXPECTED_SIZES) as [keyof SetStateLayout, number][]) {
    const field = fields.get(name);
    if (!field)
      throw new Error(`${TRACEPOINT.category}:${TRACEPOINT.name} has no field '${name}' on this kernel`);
    if (field.size !== size || field.offset % size !== 0)
      throw new Error(
        `${TRACEPOINT.category}:${TRACEPOINT.name} field '${name}' is ${field.size} bytes at offset ${field.offset}; expected ${size} bytes, aligned`,
      );
    layout[name] = field.offset;
  }
  return layout as SetStateLayout;
}

/** allowed: cgroup id → 1. */
export const allowedKey = codecs.u64;
export const allowedValue = codecs.u32;

/** connectors: who connects where. Addresses in network order, the port in host order (as the tracepoint has them). */
export const connectorKey = codecs.struct({
  saddr: codecs.ipv4,
  daddr: codecs.ipv4,
  dport: codecs.u16,
  protocol: codecs.u8,
  pad: codecs.u8,
});

/**
 * The process that created the entry (the first connect of the interval), how many connects the
 * tuple has had since, and when the latest was (bpf_ktime_get_ns, CLOCK_MONOTONIC).
 */
export const connectorValue = codecs.struct({
  cgroup: codecs.u64,
  lastNs: codecs.u64,
  connections: codecs.u64n,
  pid: codecs.u32,
  pad: codecs.u32,
  comm: codecs.cString(16),
});

export type ConnectorKey = codecs.CodecValue<typeof connectorKey>;
export type ConnectorValue = codecs.CodecValue<typeof connectorValue>;

/**
 * Slots of the `counters` array. Every entry the program inserts is later either drained or
 * evicted, so the agent tells evictions (which the kernel does not count) from these.
 */
export const COUNTERS = {
  /** Entries created (a tuple's first connect since it was last drained or evicted). */
  inserted: 0,
  /** Connects not recorded: the map refused the new entry and no other CPU had made it. */
  notRecorded: 1,
  /** Connects without a source address at SYN_SENT: tcp_v4_connect sets one first, so never expected. */
  noSourceAddress: 2,
  /** Sends/receives not recorded by the socket programs (socket-program.ts): the map was full. */
  socketNotRecorded: 3,
} as const;
export const COUNTER_SLOTS = 4;

/** Map names the program refers to. */
export const MAPS = { allowed: 'allowed', connectors: 'connectors', counters: 'counters' } as const;

/** Stack of the tracepoint program (offsets from r10). */
const STACK = { allowedKey: -8, key: -24, value: -72, counter: -76 } as const;

/**
 * The tracepoint program. r6 = ctx, r7 = the connector entry.
 * Stack: [-8] the allowed-map key; [-24, -12) the connector key; [-72, -24) a new entry's value;
 * [-76] the counter slot to add 1 to.
 */
export function processProgram(f: SetStateLayout): AssembledProgram {
  if (connectorKey.size !== 12 || connectorValue.size !== 48) throw new Error('connector layout changed');
  const asm = new Assembler()
    .comment("IPv4 TCP entering SYN_SENT: connect() in the caller's context")
    .mov64(R6, R1)
    .ldxh(R2, R6, f.protocol)
    .jne(R2, IPPROTO_TCP, 'out')
    .ldxh(R2, R6, f.family)
    .jne(R2, AF_INET, 'out')
    .ldxw(R2, R6, f.newstate)
    .jne(R2, TCP_SYN_SENT, 'out');
  emitFilterAndKey(asm, f);
  emitInsert(asm);
  emitCount(asm);
  emitBump(asm);
  asm.label('out').exitWith(0);
  return asm.assemble();
}

/** Only processes in an allowed cgroup; builds the connector key (and the new value's cgroup). */
function emitFilterAndKey(asm: Assembler, f: SetStateLayout): void {
  const { allowedKey: allowed, key, value, counter } = STACK;
  const k = connectorKey.offsets;
  asm
    .call('get_current_cgroup_id')
    .stx('dw', R10, allowed, R0)
    .stx('dw', R10, value + connectorValue.offsets.cgroup, R0)
    .mapLookup(MAPS.allowed, allowed)
    .jeq(R0, 0, 'out')
    .comment('saddr is set before SYN_SENT (bound, or picked by the route); 0 would be a new path')
    .ldxw(R2, R6, f.saddr)
    .st('w', R10, counter, COUNTERS.noSourceAddress)
    .jeq(R2, 0, 'bump')
    .stx('w', R10, key + k.saddr, R2)
    .copy('w', R10, key + k.daddr, R6, f.daddr, R1)
    .copy('h', R10, key + k.dport, R6, f.dport, R1)
    .st('b', R10, key + k.protocol, IPPROTO_TCP)
    .st('b', R10, key + k.pad, 0)
    .mapLookup(MAPS.connectors, key)
    .jne(R0, 0, 'count');
}

/**
 * First connect of the tuple this interval: a whole entry, written once (BPF_NOEXIST), so the
 * process fields are never torn by a concurrent writer. If another CPU made it first, count there.
 */
function emitInsert(asm: Assembler): void {
  const { key, value, counter } = STACK;
  asm.comment('new entry: this process, one connect, now');
  emitNewValue(asm, value);
  asm
    .mapUpdate(MAPS.connectors, key, value, UpdateFlags.NOEXIST)
    .st('w', R10, counter, COUNTERS.inserted)
    .jeq(R0, 0, 'bump')
    .comment('EEXIST (another CPU inserted it) or no room: add to the existing entry if there is one')
    .mapLookup(MAPS.connectors, key)
    .st('w', R10, counter, COUNTERS.notRecorded)
    .jeq(R0, 0, 'bump');
}

/**
 * Fills a new connectorValue at r10 + `value` (its cgroup already written): the current process's
 * tgid and comm, a count of 1, now. Shared with the socket programs (socket-program.ts).
 */
export function emitNewValue(asm: Assembler, value: number): void {
  const v = connectorValue.offsets;
  asm
    .call('get_current_pid_tgid')
    .rsh64(R0, 32)
    .stx('w', R10, value + v.pid, R0)
    .st('w', R10, value + v.pad, 0)
    .st('dw', R10, value + v.connections, 1)
    .call('ktime_get_ns')
    .stx('dw', R10, value + v.lastNs, R0)
    .stackAddress(R1, value + v.comm)
    .mov64(R2, 16)
    .call('get_current_comm');
}

/** Another connect of a tuple already in the map: count it, keep the process that made the entry. */
function emitCount(asm: Assembler): void {
  const v = connectorValue.offsets;
  asm
    .label('count')
    .mov64(R7, R0)
    .mov64(R1, 1)
    .atomicAdd('dw', R7, v.connections, R1)
    .call('ktime_get_ns')
    .stx('dw', R7, v.lastNs, R0)
    .ja('out');
}

/** counters[the slot at STACK.counter] += 1. */
function emitBump(asm: Assembler): void {
  asm
    .label('bump')
    .mapLookup(MAPS.counters, STACK.counter)
    .jeq(R0, 0, 'out')
    .mov64(R1, 1)
    .atomicAdd('dw', R0, 0, R1);
}
