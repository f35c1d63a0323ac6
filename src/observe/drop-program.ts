/**
 * The BPF side of the kernel drop tracer: the skb:kfree_skb record layout (tracefs), the offsets
 * of the kernel structs it reads (BTF, resolved when the program is built), the maps' codecs and
 * the tracepoint program.
 *
 * kfree_skb fires for every freed packet in every namespace on the machine. The program keeps
 * only drops (not NOT_DROPPED_YET, CONSUMED, NOT_SPECIFIED, nor the reasons our own policy
 * produces: the `skip` map), in the agent's namespaces (`netns`, by the inode of the device's
 * namespace), of packets whose source or destination is one of our pods (`pods`), and counts
 * them per (reason, location, addresses, protocol, destination port) in a per-CPU hash the
 * agent drains once per interval. No per-packet record leaves the kernel.
 */
import {
  Assembler,
  codecs,
  R0,
  R1,
  R2,
  R3,
  R6,
  R7,
  R8,
  R10,
  UpdateFlags,
  type AssembledProgram,
  type Codec,
} from '../bpf/index.js';
import { formatAddress, parseAddress } from '../util/ip.js';
import { IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP } from '../util/protocols.js';
import { parseTracepointFormat } from './process-program.js';

export const DROP_TRACEPOINT = { category: 'skb', name: 'kfree_skb' } as const;

const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
/** skb->network_header when no network header was set (`(typeof(skb->network_header))~0U`). */
const NO_HEADER = 0xffff;

/** Offsets of the kfree_skb record fields the program reads. */
export interface KfreeSkbLayout {
  skbaddr: number;
  location: number;
  protocol: number;
  reason: number;
}

const RECORD_SIZES: Record<keyof KfreeSkbLayout, number> = {
  skbaddr: 8,
  location: 8,
  protocol: 2,
  reason: 4,
};

/** Checks every field the program needs is in the tracepoint's format, with the size it loads. */
export function kfreeSkbLayout(formatText: string): KfreeSkbLayout {
  const fields = parseTracepointFormat(formatText);
  const layout: Partial<KfreeSkbLayout> = {};
  for (const [name, size] of Object.entries(RECORD_SIZES) as [keyof KfreeSkbLayout, number][]) {
    const field = fields.get(name);
    const where = `${DROP_TRACEPOINT.category}:${DROP_TRACEPOINT.name}`;
    if (!field)
      throw new Error(`${where} has no field '${name}' on this kernel (drop reasons need Linux 5.17+)`);
    if (field.size !== size || field.offset % size !== 0)
      throw new Error(
        `${where} field '${name}' is ${field.size} bytes at offset ${field.offset}; expected ${size}, aligned`,
      );
    layout[name] = field.offset;
  }
  return layout as KfreeSkbLayout;
}

/** Where a struct member lives (from BTF): its byte offset and size. */
export type FieldResolver = (struct: string, path: string) => { bytes: number; size: number };

/** The kernel struct members the program reads through bpf_probe_read_kernel. */
export interface SkbLayout {
  /** sk_buff.head: start of the buffer (the headers are at offsets from it). */
  head: number;
  /** sk_buff.network_header: the IP header's offset from head (u16). */
  networkHeader: number;
  /** sk_buff.len (u32): the bytes counted. */
  len: number;
  /** sk_buff.dev: the device the packet was on (its namespace is the packet's). */
  dev: number;
  /** net_device.nd_net.net: that namespace. */
  devNet: number;
  /** net.ns.inum: its inode number (what `stat /run/netns/X` shows). */
  netInum: number;
}

const SKB_SIZES: Record<keyof SkbLayout, [string, string, number]> = {
  head: ['sk_buff', 'head', 8],
  networkHeader: ['sk_buff', 'network_header', 2],
  len: ['sk_buff', 'len', 4],
  dev: ['sk_buff', 'dev', 8],
  devNet: ['net_device', 'nd_net.net', 8],
  netInum: ['net', 'ns.inum', 4],
};

/** Resolves (and size-checks) every member the program reads; errors name the struct and field. */
export function skbLayout(resolve: FieldResolver): SkbLayout {
  const layout: Partial<SkbLayout> = {};
  for (const [key, [struct, path, size]] of Object.entries(SKB_SIZES) as [
    keyof SkbLayout,
    [string, string, number],
  ][]) {
    const field = resolve(struct, path);
    if (field.size !== size)
      throw new Error(
        `struct ${struct} field '${path}' is ${field.size} bytes on this kernel; expected ${size}`,
      );
    layout[key] = field.bytes;
  }
  return layout as SkbLayout;
}

/**
 * An address as 16 bytes: IPv6 as is, IPv4 mapped (::ffff:a.b.c.d), so one key holds both
 * families and the program writes an IPv4 address with one prefix store and one copy.
 */
export const address16: Codec<string> = {
  size: 16,
  align: 1,
  encode(value, target, offset) {
    const a = parseAddress(value);
    if (!a) throw new Error(`'${value}' is not an IP address`);
    const v = a.family === 4 ? (0xffffn << 32n) | a.value : a.value;
    target.writeBigUInt64BE(v >> 64n, offset);
    target.writeBigUInt64BE(v & 0xffff_ffff_ffff_ffffn, offset + 8);
  },
  decode(source, offset) {
    const v = (source.readBigUInt64BE(offset) << 64n) | source.readBigUInt64BE(offset + 8);
    if (v >> 32n === 0xffffn) return formatAddress({ family: 4, value: v & 0xffff_ffffn });
    return formatAddress({ family: 6, value: v });
  },
};

/** pods: our pods' addresses → 1. netns: namespace inode → 1. skip: drop reason → 1. */
export const podKey = address16;
export const flagValue = codecs.u32;
export const netnsKey = codecs.u32;
export const reasonKey = codecs.u32;

/**
 * drops: one aggregate per reason, kernel location and packet tuple. The port is in network
 * order as in the packet; addresses as `address16`.
 */
export const dropKey = codecs.struct({
  location: codecs.u64,
  reason: codecs.u32,
  protocol: codecs.u8,
  family: codecs.u8,
  dport: codecs.be16,
  src: address16,
  dst: address16,
});

/** Per CPU: packets and bytes dropped, and the first and latest drop (bpf_ktime_get_ns). */
export const dropValue = codecs.struct({
  packets: codecs.u64n,
  bytes: codecs.u64n,
  firstNs: codecs.u64,
  lastNs: codecs.u64,
});

export type DropKey = codecs.CodecValue<typeof dropKey>;
export type DropValue = codecs.CodecValue<typeof dropValue>;

/** Slot of the `counters` array: drops not counted because the aggregate map was full. */
export const DROP_COUNTERS = { notRecorded: 0 } as const;
export const DROP_COUNTER_SLOTS = 1;

export const DROP_MAPS = {
  pods: 'pods',
  netns: 'netns',
  skip: 'skip',
  drops: 'drops',
  counters: 'counters',
} as const;

/** Stack of the program (offsets from r10). */
const STACK = {
  key: -48,
  value: -80,
  scratch: -88,
  header: -128,
  head: -136,
  networkHeader: -144,
  len: -152,
  reason: -156,
  counter: -160,
  netns: -164,
} as const;

/** IPv4 header fields (RFC 791) and IPv6's (RFC 8200) the program copies. */
const IPV4 = { protocol: 9, src: 12, dst: 16, minLength: 20 } as const;
const IPV6 = { nextHeader: 6, src: 8, dst: 24, length: 40 } as const;

/**
 * The tracepoint program. r6 = ctx, r7 = the skb (a kernel address: read only through
 * bpf_probe_read_kernel), r8 = the network header's address, then the transport header's.
 */
export function dropProgram(record: KfreeSkbLayout, skb: SkbLayout): AssembledProgram {
  if (dropKey.size !== 48 || dropValue.size !== 32) throw new Error('drop aggregate layout changed');
  const asm = new Assembler()
    .comment('a drop whose reason we count (not a consumed packet, not our own policy)')
    .mov64(R6, R1)
    .ldxw(R2, R6, record.reason)
    .stx('w', R10, STACK.reason, R2)
    .mapLookup(DROP_MAPS.skip, STACK.reason)
    .jne(R0, 0, 'out')
    .ldxdw(R7, R6, record.skbaddr)
    .jeq(R7, 0, 'out');
  emitNetnsFilter(asm, skb);
  emitSkbFields(asm, record, skb);
  asm.ldxh(R2, R6, record.protocol).jeq(R2, ETH_P_IP, 'ipv4').jeq(R2, ETH_P_IPV6, 'ipv6').ja('out');
  emitIpv4(asm);
  emitIpv6(asm);
  emitPort(asm);
  emitPodFilter(asm);
  emitCount(asm);
  asm.label('out').exitWith(0);
  return asm.assemble();
}

/** r0 = bpf_probe_read_kernel(r10 + stackOffset, size, r3): r3 must hold the kernel address. */
function probeRead(asm: Assembler, stackOffset: number, size: number): Assembler {
  return asm.stackAddress(R1, stackOffset).mov64(R2, size).call('probe_read_kernel');
}

/** Only packets on a device in one of the agent's namespaces (another lab may use our addresses). */
function emitNetnsFilter(asm: Assembler, skb: SkbLayout): void {
  const { scratch, netns } = STACK;
  asm
    .comment('skb->dev->nd_net.net->ns.inum must be one of ours; no device, not ours')
    .mov64(R3, R7)
    .add64(R3, skb.dev);
  probeRead(asm, scratch, 8)
    .jne(R0, 0, 'out')
    .ldxdw(R3, R10, scratch)
    .jeq(R3, 0, 'out')
    .add64(R3, skb.devNet);
  probeRead(asm, scratch, 8)
    .jne(R0, 0, 'out')
    .ldxdw(R3, R10, scratch)
    .jeq(R3, 0, 'out')
    .add64(R3, skb.netInum);
  probeRead(asm, netns, 4).jne(R0, 0, 'out').mapLookup(DROP_MAPS.netns, netns).jeq(R0, 0, 'out');
}

/** head, network_header and len; r8 = head + network_header; the key zeroed with reason and location. */
function emitSkbFields(asm: Assembler, record: KfreeSkbLayout, skb: SkbLayout): void {
  const { head, networkHeader, len, key } = STACK;
  asm.comment('the IP header is at skb->head + skb->network_header').mov64(R3, R7).add64(R3, skb.head);
  probeRead(asm, head, 8)
    .jne(R0, 0, 'out')
    .st('dw', R10, networkHeader, 0)
    .mov64(R3, R7)
    .add64(R3, skb.networkHeader);
  probeRead(asm, networkHeader, 2).jne(R0, 0, 'out').st('dw', R10, len, 0).mov64(R3, R7).add64(R3, skb.len);
  probeRead(asm, len, 4)
    .ldxdw(R8, R10, networkHeader)
    .jeq(R8, NO_HEADER, 'out')
    .ldxdw(R2, R10, head)
    .add64(R8, R2);
  for (let i = 0; i < dropKey.size; i += 8) asm.st('dw', R10, key + i, 0);
  asm
    .copy('dw', R10, key + dropKey.offsets.location, R6, record.location, R2)
    .copy('w', R10, key + dropKey.offsets.reason, R10, STACK.reason, R2);
}

/** Reads `length` bytes of the IP header at r8 and stores the family and the protocol byte at `protocolAt`. */
function readIpHeader(
  asm: Assembler,
  label: string,
  length: number,
  family: 4 | 6,
  protocolAt: number,
): void {
  const { header, key } = STACK;
  asm.label(label).mov64(R3, R8);
  probeRead(asm, header, length)
    .jne(R0, 0, 'out')
    .st('b', R10, key + dropKey.offsets.family, family)
    .copy('b', R10, key + dropKey.offsets.protocol, R10, header + protocolAt, R2);
}

/** IPv4: protocol and addresses (mapped into 16 bytes); r8 moves past the header's ihl words. */
function emitIpv4(asm: Assembler): void {
  const { header, key } = STACK;
  const k = dropKey.offsets;
  readIpHeader(asm, 'ipv4', IPV4.minLength, 4, IPV4.protocol);
  asm
    // ::ffff:a.b.c.d — bytes 10 and 11 are 0xff (a little-endian word 0xffff0000).
    .st('w', R10, key + k.src + 8, -0x10000)
    .copy('w', R10, key + k.src + 12, R10, header + IPV4.src, R2)
    .st('w', R10, key + k.dst + 8, -0x10000)
    .copy('w', R10, key + k.dst + 12, R10, header + IPV4.dst, R2)
    .ldxb(R2, R10, header)
    .and64(R2, 0x0f)
    .lsh64(R2, 2)
    .add64(R8, R2)
    .ja('port');
}

/** IPv6: next header (extension headers are not walked: their port stays 0) and addresses. */
function emitIpv6(asm: Assembler): void {
  const { header, key } = STACK;
  const k = dropKey.offsets;
  readIpHeader(asm, 'ipv6', IPV6.length, 6, IPV6.nextHeader);
  for (const [field, from] of [
    [k.src, IPV6.src],
    [k.dst, IPV6.dst],
  ] as const)
    asm
      .copy('dw', R10, key + field, R10, header + from, R2)
      .copy('dw', R10, key + field + 8, R10, header + from + 8, R2);
  asm.add64(R8, IPV6.length);
}

/** TCP, UDP and SCTP: the destination port (bytes 2–3 of their header); others keep 0. */
function emitPort(asm: Assembler): void {
  const { scratch, key } = STACK;
  asm
    .label('port')
    .ldxb(R2, R10, key + dropKey.offsets.protocol)
    .jeq(R2, IPPROTO_TCP, 'read_port')
    .jeq(R2, IPPROTO_UDP, 'read_port')
    .jeq(R2, IPPROTO_SCTP, 'read_port')
    .ja('filter')
    .label('read_port')
    .mov64(R3, R8);
  probeRead(asm, scratch, 4)
    .jne(R0, 0, 'filter')
    .copy('h', R10, key + dropKey.offsets.dport, R10, scratch + 2, R2);
}

/** Source or destination must be one of our pods. */
function emitPodFilter(asm: Assembler): void {
  const { key } = STACK;
  asm
    .label('filter')
    .mapLookup(DROP_MAPS.pods, key + dropKey.offsets.src)
    .jne(R0, 0, 'count')
    .mapLookup(DROP_MAPS.pods, key + dropKey.offsets.dst)
    .jeq(R0, 0, 'out');
}

/** Adds the packet to this CPU's aggregate, or creates it; a full map counts in `counters`. */
function emitCount(asm: Assembler): void {
  const { key, value, len, counter } = STACK;
  const v = dropValue.offsets;
  asm
    .label('count')
    .mapLookup(DROP_MAPS.drops, key)
    .jeq(R0, 0, 'new')
    .comment('per-CPU value: plain adds are safe')
    .mov64(R7, R0)
    .ldxdw(R2, R7, v.packets)
    .add64(R2, 1)
    .stx('dw', R7, v.packets, R2)
    .ldxdw(R2, R7, v.bytes)
    .ldxdw(R3, R10, len)
    .add64(R2, R3)
    .stx('dw', R7, v.bytes, R2)
    .call('ktime_get_ns')
    .stx('dw', R7, v.lastNs, R0)
    .ja('out')
    .label('new')
    .st('dw', R10, value + v.packets, 1)
    .copy('dw', R10, value + v.bytes, R10, len, R2)
    .call('ktime_get_ns')
    .stx('dw', R10, value + v.firstNs, R0)
    .stx('dw', R10, value + v.lastNs, R0)
    .comment("BPF_ANY: another CPU creating it first leaves this CPU's slot zero, which this replaces")
    .mapUpdate(DROP_MAPS.drops, key, value, UpdateFlags.ANY)
    .jeq(R0, 0, 'out')
    .st('w', R10, counter, DROP_COUNTERS.notRecorded)
    .mapLookup(DROP_MAPS.counters, counter)
    .jeq(R0, 0, 'out')
    .mov64(R1, 1)
    .atomicAdd('dw', R0, 0, R1);
}
