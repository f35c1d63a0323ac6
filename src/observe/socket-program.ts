/**
 * The BPF side of per-socket process context: tp_btf programs on sock:sock_send_length and
 * sock:sock_recv_length (struct sock *sk, int ret, int flags). Both fire in the context of the
 * process that sends or receives, for TCP and UDP, IPv4 and IPv6: the server that accepted a
 * connection, a UDP client and a UDP server are all seen there, which connect() alone misses.
 *
 * The program reads sk's addresses and ports through CO-RE field references (the loader finds
 * them in the running kernel's BTF) and keeps one `sockets` entry per (family, protocol, local
 * address and port, remote address and port) and interval, made by the first call of the
 * interval: later calls only bump a counter. The agent drains the map like the connect counters;
 * JavaScript work follows the number of active sockets, never the packet rate.
 */
import {
  Assembler,
  codecs,
  R0,
  R1,
  R2,
  R3,
  R4,
  R5,
  R6,
  R7,
  R10,
  UpdateFlags,
  type AssembledProgram,
} from '../bpf/index.js';
import { IPPROTO_TCP, IPPROTO_UDP } from '../util/protocols.js';
import { connectorValue, emitNewValue } from './process-program.js';

/** The two tracepoints; each needs its own program (attach_btf_id names the tracepoint). */
export const SOCKET_TRACEPOINTS = ['sock_send_length', 'sock_recv_length'] as const;

const AF_INET = 2;
const AF_INET6 = 10;

/**
 * sockets: the socket's own view, aggregated like flows: only the service port is kept, the lower
 * of local and remote (the other is 0), so a client's connections to one server share one entry
 * per interval whatever their ephemeral ports. Local port in host order (skc_num), remote port in
 * network order (skc_dport); IPv4 addresses in the first 4 bytes of the 16. An unconnected UDP socket has
 * remote address and port 0.
 */
export const socketKey = codecs.struct({
  family: codecs.u8,
  protocol: codecs.u8,
  lport: codecs.u16,
  rport: codecs.be16,
  pad: codecs.u16,
  local: codecs.bytes(16),
  remote: codecs.bytes(16),
});
export type SocketKey = codecs.CodecValue<typeof socketKey>;

/** Same layout as the connect counters' value: first process of the interval, calls, last time. */
export const socketValue = connectorValue;

export const SOCKET_MAPS = { allowed: 'allowed', sockets: 'sockets', counters: 'counters' } as const;

/** counters slot this program adds to when it could not record a socket. */
export const SOCKET_NOT_RECORDED = 3;

const STACK = { allowedKey: -8, key: -48, value: -96, counter: -100 } as const;

const V6 = (field: string, i: number): string => `__sk_common.${field}.in6_u.u6_addr32[${i}]`;

export function socketProgram(): AssembledProgram {
  if (socketKey.size !== 40 || socketValue.size !== 48) throw new Error('socket layout changed');
  const { allowedKey, key, value } = STACK;
  const k = socketKey.offsets;
  const v = socketValue.offsets;
  const asm = new Assembler()
    .comment('a send or receive that moved data, by a process in one of our pods')
    .mov64(R6, R1)
    .ldxdw(R2, R6, 8)
    .lsh64(R2, 32)
    .arsh64(R2, 32)
    .jsle(R2, 0, 'out')
    .call('get_current_cgroup_id')
    .stx('dw', R10, allowedKey, R0)
    .stx('dw', R10, value + v.cgroup, R0)
    .mapLookup(SOCKET_MAPS.allowed, allowedKey)
    .jeq(R0, 0, 'out')
    .comment('r7 = sk; TCP or UDP only')
    .ldxdw(R7, R6, 0)
    .ldxField('h', R2, R7, 'sock', 'sk_protocol')
    .jeq(R2, IPPROTO_TCP, 'proto_ok')
    .jne(R2, IPPROTO_UDP, 'out')
    .label('proto_ok')
    .stx('b', R10, key + k.protocol, R2)
    .ldxField('h', R3, R7, 'sock', '__sk_common.skc_family')
    .stx('b', R10, key + k.family, R3)
    .comment('keep the service port only: the lower of the two (an ephemeral port is the higher)')
    .ldxField('h', R4, R7, 'sock', '__sk_common.skc_num')
    .ldxField('h', R5, R7, 'sock', '__sk_common.skc_dport')
    .st('h', R10, key + k.lport, 0)
    .st('h', R10, key + k.rport, 0)
    .st('h', R10, key + k.pad, 0)
    .mov64(R2, R5)
    .be(R2, 16)
    .jeq(R2, 0, 'keep_local')
    .jle(R4, R2, 'keep_local')
    .stx('h', R10, key + k.rport, R5)
    .ja('ports_done')
    .label('keep_local')
    .stx('h', R10, key + k.lport, R4)
    .label('ports_done');
  for (let i = 0; i < 4; i++) {
    asm.st('dw', R10, key + k.local + i * 8, 0);
  }
  asm
    .jeq(R3, AF_INET, 'v4')
    .jne(R3, AF_INET6, 'out')
    .comment('IPv6: skc_v6_rcv_saddr and skc_v6_daddr, four words each');
  for (let i = 0; i < 4; i++) {
    asm
      .ldxField('w', R2, R7, 'sock', V6('skc_v6_rcv_saddr', i))
      .stx('w', R10, key + k.local + i * 4, R2)
      .ldxField('w', R2, R7, 'sock', V6('skc_v6_daddr', i))
      .stx('w', R10, key + k.remote + i * 4, R2);
  }
  asm
    .ja('lookup')
    .label('v4')
    .ldxField('w', R2, R7, 'sock', '__sk_common.skc_rcv_saddr')
    .stx('w', R10, key + k.local, R2)
    .ldxField('w', R2, R7, 'sock', '__sk_common.skc_daddr')
    .stx('w', R10, key + k.remote, R2)
    .label('lookup')
    .mapLookup(SOCKET_MAPS.sockets, key)
    .jne(R0, 0, 'count')
    .comment('first call of the interval on this socket: record the process');
  emitNewValue(asm, value);
  asm
    .mapUpdate(SOCKET_MAPS.sockets, key, value, UpdateFlags.NOEXIST)
    .jeq(R0, 0, 'out')
    .mapLookup(SOCKET_MAPS.sockets, key)
    .jne(R0, 0, 'count')
    .comment('no room: count the call as not recorded')
    .st('w', R10, STACK.counter, SOCKET_NOT_RECORDED)
    .mapLookup(SOCKET_MAPS.counters, STACK.counter)
    .jeq(R0, 0, 'out')
    .mov64(R1, 1)
    .atomicAdd('dw', R0, 0, R1)
    .ja('out')
    .label('count')
    .mov64(R7, R0)
    .mov64(R1, 1)
    .atomicAdd('dw', R7, v.connections, R1)
    .call('ktime_get_ns')
    .stx('dw', R7, v.lastNs, R0)
    .label('out')
    .exitWith(0);
  return asm.assemble();
}
