/**
 * The BPF side of the process tracer: the sock:inet_sock_set_state record layout (read from
 * tracefs at run time), the maps' codecs, and the tracepoint program.
 *
 * A TCP connect() moves its socket to SYN_SENT in the calling process's context, but before the
 * kernel picks the source port (tcp_v4_connect: tcp_set_state, then inet_hash_connect). So the
 * program remembers the process at SYN_SENT (keyed by the socket's address) and reports the
 * 4-tuple when the socket leaves SYN_SENT — to ESTABLISHED, or to CLOSE when refused, timed out or
 * abandoned — which usually happens in softirq context, where "current" is somebody else.
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
  R3,
  R4,
  R6,
  R7,
  R8,
  R10,
  type AssembledProgram,
} from '../bpf/index.js';
import { IPPROTO_TCP } from '../util/protocols.js';

export const TRACEPOINT = { category: 'sock', name: 'inet_sock_set_state' } as const;

/** include/net/tcp_states.h */
export const TCP_ESTABLISHED = 1;
export const TCP_SYN_SENT = 2;
export const TCP_CLOSE = 7;
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
  skaddr: number;
  oldstate: number;
  newstate: number;
  sport: number;
  dport: number;
  family: number;
  protocol: number;
  saddr: number;
  daddr: number;
}

const EXPECTED_SIZES: Record<keyof SetStateLayout, number> = {
  skaddr: 8,
  oldstate: 4,
  newstate: 4,
  sport: 2,
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

/** pending: socket address → who moved it to SYN_SENT. */
export const pendingKey = codecs.u64;
export const pendingValue = codecs.struct({
  cgroup: codecs.u64,
  pid: codecs.u32,
  pad: codecs.u32,
  comm: codecs.cString(16),
});

/** The ring buffer record. Ports in host order (the tracepoint converts them). */
export const processRecord = codecs.struct({
  cgroup: codecs.u64,
  pid: codecs.u32,
  saddr: codecs.ipv4,
  daddr: codecs.ipv4,
  sport: codecs.u16,
  dport: codecs.u16,
  newstate: codecs.u32,
  comm: codecs.cString(16),
});

export type ProcessRecord = codecs.CodecValue<typeof processRecord>;

/** Map names the program refers to. */
export const MAPS = { allowed: 'allowed', pending: 'pending', events: 'events', lost: 'lost' } as const;

/** Stack of the tracepoint program (offsets from r10). */
const STACK = { key: -8, value: -48, pendingKey: -56, record: -72, lostKey: -76 } as const;

/**
 * The tracepoint program. r6 = ctx, r7 = oldstate, r8 = newstate, later r7 = pending entry.
 * Stack: [-8] a u64 key; [-48, -16) the pending value; [-56] the pending key; [-72, -24) the
 * record (built only on the leave path, where the pending value area is unused).
 */
export function processProgram(f: SetStateLayout): AssembledProgram {
  if (pendingValue.size !== 32 || processRecord.size !== 48) throw new Error('process record layout changed');
  const asm = new Assembler()
    .comment('IPv4 TCP only: SYN_SENT entered (connect) or left (source port known)')
    .mov64(R6, R1)
    .ldxh(R2, R6, f.protocol)
    .jne(R2, IPPROTO_TCP, 'out')
    .ldxh(R2, R6, f.family)
    .jne(R2, AF_INET, 'out')
    .ldxw(R7, R6, f.oldstate)
    .ldxw(R8, R6, f.newstate)
    .jeq(R8, TCP_SYN_SENT, 'enter')
    .jeq(R7, TCP_SYN_SENT, 'leave')
    .ja('out');
  emitEnter(asm, f);
  emitLeave(asm, f);
  asm.label('out').exitWith(0);
  return asm.assemble();
}

/** connect(): in the caller's context. Only processes in an allowed cgroup. */
function emitEnter(asm: Assembler, f: SetStateLayout): void {
  const { key, value, pendingKey } = STACK;
  const v = pendingValue.offsets;
  asm
    .label('enter')
    .comment('connect: remember cgroup, pid and command of an allowed cgroup under the socket')
    .call('get_current_cgroup_id')
    .stx('dw', R10, key, R0)
    .stx('dw', R10, value + v.cgroup, R0)
    .mapLookup(MAPS.allowed, key)
    .jeq(R0, 0, 'out')
    .call('get_current_pid_tgid')
    .rsh64(R0, 32)
    .stx('w', R10, value + v.pid, R0)
    .st('w', R10, value + v.pad, 0)
    .stackAddress(R1, value + v.comm)
    .mov64(R2, 16)
    .call('get_current_comm')
    .copy('dw', R10, pendingKey, R6, f.skaddr, R1)
    // BPF_ANY: a reused socket address replaces a stale entry
    .mapUpdate(MAPS.pending, pendingKey, value)
    .ja('out');
}

/** SYN_SENT → anything: the source port is set now; report and forget. */
function emitLeave(asm: Assembler, f: SetStateLayout): void {
  const { key, record, lostKey } = STACK;
  const v = pendingValue.offsets;
  const r = processRecord.offsets;
  asm
    .label('leave')
    .comment('source port known: the record of the pending connect into the ring buffer')
    .copy('dw', R10, key, R6, f.skaddr, R1)
    .mapLookup(MAPS.pending, key)
    .jeq(R0, 0, 'out')
    .mov64(R7, R0)
    .copy('dw', R10, record + r.cgroup, R7, v.cgroup, R1)
    .copy('w', R10, record + r.pid, R7, v.pid, R1)
    .copy('w', R10, record + r.saddr, R6, f.saddr, R1)
    .copy('w', R10, record + r.daddr, R6, f.daddr, R1)
    .copy('h', R10, record + r.sport, R6, f.sport, R1)
    .copy('h', R10, record + r.dport, R6, f.dport, R1)
    .stx('w', R10, record + r.newstate, R8);
  for (let i = 0; i < 16; i += 4) asm.copy('w', R10, record + r.comm + i, R7, v.comm + i, R1);
  asm
    .st('w', R10, record + r.comm + 16, 0) // tail padding
    .ldMap(R1, MAPS.events)
    .stackAddress(R2, record)
    .mov64(R3, processRecord.size)
    .mov64(R4, 0)
    .call('ringbuf_output')
    .jeq(R0, 0, 'forget')
    .comment('the ring buffer is full: count the record as lost')
    .st('w', R10, lostKey, 0)
    .mapLookup(MAPS.lost, lostKey)
    .jeq(R0, 0, 'forget')
    .mov64(R1, 1)
    .atomicAdd('dw', R0, 0, R1)
    .label('forget')
    .mapDelete(MAPS.pending, key);
}
