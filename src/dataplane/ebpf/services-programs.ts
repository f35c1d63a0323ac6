/**
 * The connect-time load balancer: cgroup sock_addr programs that rewrite a socket's destination
 * once (connect, or each unconnected sendmsg) instead of translating every packet, so there is
 * neither per-packet NAT nor NAT conntrack:
 *
 *   connect4, sendmsg4   VIP:port/proto → backend (uniform random, or the client's affinity;
 *                        under internalTrafficPolicy Local among the backends on the client's
 *                        node, found from its pod cgroup; none there: refused);
 *                        a VIP with an undefined port, or a port without backends: refused
 *                        (bpf_set_retval(-ECONNREFUSED), return 0); anything else passes
 *                        untouched. Node ports and load-balancer addresses are keys too
 *                        (services-outside.ts): a pod reaches them, its own among them. Records the
 *                        translation under the socket's cookie for the reverse direction.
 *   recvmsg4             an unconnected UDP reply from a backend appears to come from the VIP
 *   getpeername4         the application sees the VIP as its peer
 *   connect6, sendmsg6,  the same for IPv6 sockets, over the IPv6 cluster IPs. The maps hold
 *   recvmsg6,            16-byte addresses (services-layout.ts), so an IPv6 socket's connect to
 *   getpeername6         ::ffff:<IPv4 VIP> meets the IPv4 service and goes to ::ffff:<backend>
 *                        (the kernel runs only the socket family's hook for a mapped address)
 *
 * The programs hold no service data: every service lives in maps, so endpoint changes are map
 * updates and the programs never reload. Code depends on nothing, so generation is deterministic.
 */
import {
  Assembler,
  R0,
  R1,
  R2,
  R6,
  R7,
  R8,
  R9,
  R10,
  type AssembledProgram,
  type CgroupAttachType,
} from '../../bpf/index.js';
import {
  affinityKey,
  affinityValue,
  backendValue,
  MAPPED_PREFIX_WORD,
  revnatKey,
  revnatValue,
  SOCK_ADDR,
  SVC_MAP,
  podNodeKey,
  podNodeValue,
  SVC_FLAG_LOCAL,
  svcKey,
  svcValue,
} from './services-layout.js';
import { programHash } from './program.js';
import { emitAffinityHit, emitAffinityRecord, emitUniformPick, SERVICE_LAYOUTS } from './lb-code.js';

const MAPS = { affinity: SVC_MAP.affinity, backends: SVC_MAP.backends, ...SERVICE_LAYOUTS };

export type ServiceHook =
  | 'connect4'
  | 'sendmsg4'
  | 'recvmsg4'
  | 'getpeername4'
  | 'connect6'
  | 'sendmsg6'
  | 'recvmsg6'
  | 'getpeername6';

/** The socket family a hook runs for: which bpf_sock_addr address field it reads and writes. */
type Family = 4 | 6;

export interface ServiceProgram {
  hook: ServiceHook;
  /** Kernel name (15 chars max). */
  name: string;
  attachType: CgroupAttachType;
  program: AssembledProgram;
}

export const SERVICE_HOOKS: readonly ServiceHook[] = [
  'connect4',
  'sendmsg4',
  'recvmsg4',
  'getpeername4',
  'connect6',
  'sendmsg6',
  'recvmsg6',
  'getpeername6',
];

const ATTACH: Record<ServiceHook, CgroupAttachType> = {
  connect4: 'cgroup_inet4_connect',
  sendmsg4: 'cgroup_udp4_sendmsg',
  recvmsg4: 'cgroup_udp4_recvmsg',
  getpeername4: 'cgroup_inet4_getpeername',
  connect6: 'cgroup_inet6_connect',
  sendmsg6: 'cgroup_udp6_sendmsg',
  recvmsg6: 'cgroup_udp6_recvmsg',
  getpeername6: 'cgroup_inet6_getpeername',
};

const NAMES: Record<ServiceHook, string> = {
  connect4: 'sy_svc_conn4',
  sendmsg4: 'sy_svc_send4',
  recvmsg4: 'sy_svc_recv4',
  getpeername4: 'sy_svc_peer4',
  connect6: 'sy_svc_conn6',
  sendmsg6: 'sy_svc_send6',
  recvmsg6: 'sy_svc_recv6',
  getpeername6: 'sy_svc_peer6',
};

/** Stack frame of the forward programs (offsets from r10, each area 8-aligned). */
const FRAME = {
  svcKey: -24,
  affKey: -40,
  revKey: -72,
  revValue: -96,
  backendKey: -104,
  affValue: -136,
  podKey: -144,
} as const;

/**
 * Copies the socket's address (user_ip4 as the last word of ::ffff:a.b.c.d, or user_ip6) to a
 * 16-byte address on the stack.
 */
function loadAddress(asm: Assembler, family: Family, stackOffset: number): Assembler {
  if (family === 6) {
    for (let w = 0; w < 4; w++) asm.copy('w', R10, stackOffset + 4 * w, R6, SOCK_ADDR.userIp6 + 4 * w, R2);
    return asm;
  }
  return asm
    .st('w', R10, stackOffset, 0)
    .st('w', R10, stackOffset + 4, 0)
    .st('w', R10, stackOffset + 8, MAPPED_PREFIX_WORD)
    .copy('w', R10, stackOffset + 12, R6, SOCK_ADDR.userIp4, R2);
}

/** Writes a 16-byte address at (src + offset) into the socket's address (IPv4: its last word). */
function storeAddress(asm: Assembler, family: Family, src: typeof R0, offset: number): Assembler {
  if (family === 6) {
    for (let w = 0; w < 4; w++) asm.ldxw(R2, src, offset + 4 * w).stx('w', R6, SOCK_ADDR.userIp6 + 4 * w, R2);
    return asm;
  }
  return asm.ldxw(R2, src, offset + 12).stx('w', R6, SOCK_ADDR.userIp4, R2);
}

/** errno of a refused connection, what a TCP RST gives a client. */
const ECONNREFUSED = 111;

const sk = svcKey.offsets;
const sv = svcValue.offsets;
const bv = backendValue.offsets;
const ak = affinityKey.offsets;
const av = affinityValue.offsets;
const rk = revnatKey.offsets;
const rv = revnatValue.offsets;

/**
 * connect4 and sendmsg4. Registers: r6 ctx, r7 service id, r8 backend count, r9 affinity
 * timeout (s). The affinity key is on the stack only when r9 != 0, and only then is it read.
 */
function forwardProgram(family: Family): AssembledProgram {
  const asm = new Assembler();
  emitServiceLookup(asm, family);
  emitClientAffinity(asm);
  emitPick(asm);
  emitRewrite(asm, family);
  emitRevnatRecord(asm);
  emitNotServicePort(asm);
  emitLocalEntry(asm);
  return asm.assemble();
}

/** The {VIP, port, protocol} of the destination: a service port goes on, with r7..r9 set. */
function emitServiceLookup(asm: Assembler, family: Family): void {
  const f = FRAME;
  asm.comment('a service port? look {destination address, port, protocol} up').mov64(R6, R1);
  loadAddress(asm, family, f.svcKey + sk.vip)
    // bpf_sock_addr fields are read whole (u32), then stored at the key's width.
    .ldxw(R2, R6, SOCK_ADDR.userPort)
    .stx('h', R10, f.svcKey + sk.port, R2)
    .ldxw(R2, R6, SOCK_ADDR.protocol)
    .stx('b', R10, f.svcKey + sk.proto, R2)
    .st('b', R10, f.svcKey + sk.node, 0)
    .mapLookup(SVC_MAP.services, f.svcKey)
    .jeq(R0, 0, 'not_service_port')
    .comment('service: r7 = id, r8 = backend count (0: refuse), r9 = affinity timeout (0: none)');
  loadServiceEntry(asm)
    .ldxw(R2, R0, sv.flags)
    .jset(R2, SVC_FLAG_LOCAL, 'local_entry')
    .label('balance')
    .jeq(R8, 0, 'refuse')
    .jeq(R9, 0, 'pick');
}

/**
 * internalTrafficPolicy Local: the service's entry for the client's node (svcKey.node = the node
 * index of the calling process's pod cgroup). A process in no known pod cgroup balances over
 * every backend; a node without backends has no entry: refused, like a service without endpoints.
 */
function emitLocalEntry(asm: Assembler): void {
  const f = FRAME;
  asm
    .label('local_entry')
    .comment("internalTrafficPolicy Local: the entry of the client's node, by its pod cgroup")
    .call('get_current_cgroup_id')
    .stx('dw', R10, f.podKey + podNodeKey.offsets.cgroup, R0)
    .mapLookup(SVC_MAP.podNode, f.podKey)
    .jeq(R0, 0, 'balance')
    .ldxw(R2, R0, podNodeValue.offsets.node)
    .stx('b', R10, f.svcKey + sk.node, R2)
    .mapLookup(SVC_MAP.services, f.svcKey)
    .jeq(R0, 0, 'refuse')
    .comment("the client's node: r7 = its id, r8 = its backend count");
  loadServiceEntry(asm).ja('balance');
}

/** r0 = a service entry: r7 = its id, r8 = its backend count, r9 = its affinity timeout. */
function loadServiceEntry(asm: Assembler): Assembler {
  return asm.ldxw(R7, R0, sv.id).ldxw(R8, R0, sv.count).ldxw(R9, R0, sv.affinity);
}

/** ClientIP affinity: reuse the remembered backend while it is fresh and its slot still holds it. */
function emitClientAffinity(asm: Assembler): void {
  const f = FRAME;
  asm
    .comment("ClientIP affinity: the client netns's remembered backend, if fresh and still in its slot")
    .mov64(R1, R6)
    .call('get_netns_cookie')
    .stx('dw', R10, f.affKey + ak.netns, R0)
    .stx('w', R10, f.affKey + ak.id, R7)
    .st('w', R10, f.affKey + ak.pad, 0);
  emitAffinityHit(asm, MAPS, f);
}

/** Uniform choice: count > 0 was checked before. */
function emitPick(asm: Assembler): void {
  emitUniformPick(asm, MAPS, FRAME);
}

/** r0: the backend. Rewrite the destination; stage the reverse key and the affinity value. */
function emitRewrite(asm: Assembler, family: Family): void {
  const f = FRAME;
  asm.label('chosen').comment('r0 = the backend: rewrite the destination to it');
  storeAddress(asm, family, R0, bv.addr);
  for (let w = 0; w < 4; w++)
    asm
      .ldxw(R2, R0, bv.addr + 4 * w)
      .stx('w', R10, f.revKey + rk.addr + 4 * w, R2)
      .stx('w', R10, f.affValue + av.addr + 4 * w, R2);
  asm
    .ldxh(R2, R0, bv.port)
    .stx('w', R6, SOCK_ADDR.userPort, R2)
    .stx('h', R10, f.revKey + rk.port, R2)
    .stx('h', R10, f.affValue + av.port, R2)
    .st('h', R10, f.revKey + rk.pad, 0)
    .st('w', R10, f.revKey + rk.pad2, 0)
    .jeq(R9, 0, 'revnat');
  emitAffinityRecord(asm, MAPS, f);
}

/** {socket cookie, backend} → service, for recvmsg4 and getpeername4. */
function emitRevnatRecord(asm: Assembler): void {
  const f = FRAME;
  asm
    .label('revnat')
    .comment('{socket cookie, backend} → service, for replies and getpeername')
    .mov64(R1, R6)
    .call('get_socket_cookie')
    .stx('dw', R10, f.revKey + rk.cookie, R0);
  for (let w = 0; w < 4; w++)
    asm.copy('w', R10, f.revValue + rv.vip + 4 * w, R10, f.svcKey + sk.vip + 4 * w, R2);
  asm
    .copy('h', R10, f.revValue + rv.port, R10, f.svcKey + sk.port, R2)
    .st('h', R10, f.revValue + rv.pad, 0)
    .mapUpdate(SVC_MAP.revnat, f.revKey, f.revValue)
    .exitWith(1);
}

/** Not a service port: refused if the address is a VIP (its marker), else none of our business. */
function emitNotServicePort(asm: Assembler): void {
  const f = FRAME;
  asm
    .label('not_service_port')
    .comment('not a service port: refuse if the address is a VIP at all, else pass')
    .st('h', R10, f.svcKey + sk.port, 0)
    .st('b', R10, f.svcKey + sk.proto, 0)
    .mapLookup(SVC_MAP.services, f.svcKey)
    .jeq(R0, 0, 'pass')
    .label('refuse')
    .comment('refuse: the connect or send fails with ECONNREFUSED (without set_retval: EPERM)')
    .mov64(R1, -ECONNREFUSED)
    .call('set_retval')
    .exitWith(0)
    .label('pass')
    .exitWith(1);
}

/** recvmsg and getpeername: a backend address the socket was sent to shows as the VIP. */
function reverseProgram(family: Family): AssembledProgram {
  const key = -32;
  const asm = new Assembler()
    .comment('a backend this socket was sent to by a VIP? show the VIP instead')
    .mov64(R6, R1)
    .call('get_socket_cookie')
    .stx('dw', R10, key + rk.cookie, R0);
  loadAddress(asm, family, key + rk.addr)
    .ldxw(R2, R6, SOCK_ADDR.userPort)
    .stx('h', R10, key + rk.port, R2)
    .st('h', R10, key + rk.pad, 0)
    .st('w', R10, key + rk.pad2, 0)
    .mapLookup(SVC_MAP.revnat, key)
    .jeq(R0, 0, 'out');
  return storeAddress(asm, family, R0, rv.vip)
    .ldxh(R2, R0, rv.port)
    .stx('w', R6, SOCK_ADDR.userPort, R2)
    .label('out')
    .exitWith(1) // recvmsg and getpeername must return 1
    .assemble();
}

export function serviceProgram(hook: ServiceHook): ServiceProgram {
  const family: Family = hook.endsWith('6') ? 6 : 4;
  const forward = hook.startsWith('connect') || hook.startsWith('sendmsg');
  const program = forward ? forwardProgram(family) : reverseProgram(family);
  return { hook, name: NAMES[hook], attachType: ATTACH[hook], program };
}

export function servicePrograms(): ServiceProgram[] {
  return SERVICE_HOOKS.map(serviceProgram);
}

/** Short hash of a program's code: part of its link's pin name, so a code change is noticed. */
export function serviceProgramHash(p: ServiceProgram): string {
  return programHash(p.program).slice(0, 12);
}
