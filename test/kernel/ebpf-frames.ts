/**
 * Crafted Ethernet frames for BPF_PROG_TEST_RUN, to run through an OfflineNode
 * (src/dataplane/ebpf/offline-node.ts): nothing is attached, nothing leaves the kernel call.
 */
export type FrameProtocol = 'TCP' | 'UDP' | 'SCTP' | 'ICMP';

export interface FrameSpec {
  src: string;
  dst: string;
  protocol: FrameProtocol | number;
  sport?: number;
  dport?: number;
  /** TCP flags byte; default SYN. */
  tcpFlags?: number;
  /** ICMP type (default 8, echo request), code and echo id. */
  icmpType?: number;
  icmpCode?: number;
  icmpId?: number;
  /** 32-bit words of IPv4 options (NOPs), 0–10. */
  ipOptionWords?: number;
  /** Fragment offset in 8-byte units and the more-fragments flag. */
  fragmentOffset?: number;
  moreFragments?: boolean;
  /** Bytes after the L4 header. */
  payload?: Buffer;
  /** ICMP errors: the quoted packet (IP header onwards). */
  quoted?: Buffer;
  /**
   * IPv6 only (addresses with ':'): extension headers before the transport header, in order:
   * hop-by-hop 0, routing 43, fragment 44, destination options 60 (or any number), each with
   * `length` 8-byte units after the first 8 (fragment: offset in 8-byte units and more flag).
   */
  extHeaders?: Ipv6ExtHeader[];
}

export interface Ipv6ExtHeader {
  type: number;
  length?: number;
  fragmentOffset?: number;
  moreFragments?: boolean;
}

const PROTO: Record<FrameProtocol, number> = { TCP: 6, UDP: 17, SCTP: 132, ICMP: 1 };

function writeAddress(buf: Buffer, offset: number, address: string): void {
  address.split('.').forEach((octet, i) => buf.writeUInt8(Number(octet), offset + i));
}

function writeAddress6(buf: Buffer, offset: number, address: string): void {
  const [head = '', tail] = address.split('::');
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const parts = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  parts.forEach((p, i) => buf.writeUInt16BE(parseInt(p, 16), offset + 2 * i));
}

export const IPPROTO_ICMPV6 = 58;

/** The IPv6 packet of a spec whose addresses are IPv6: ICMP means ICMPv6 (default type 128, echo request). */
function ipv6Packet(spec: FrameSpec): Buffer {
  const named = typeof spec.protocol === 'number' ? spec.protocol : PROTO[spec.protocol];
  const proto = named === 1 ? IPPROTO_ICMPV6 : named;
  const l4 = transportHeader(
    { ...spec, icmpType: spec.icmpType ?? 128 },
    proto === IPPROTO_ICMPV6 ? 1 : proto,
  );
  const body = Buffer.concat([l4, spec.quoted ?? spec.payload ?? Buffer.alloc(8)]);
  const exts = spec.extHeaders ?? [];
  const extBufs = exts.map((e, i) => {
    const next = exts[i + 1]?.type ?? proto;
    const b = Buffer.alloc(e.type === 44 ? 8 : 8 * (1 + (e.length ?? 0)));
    b.writeUInt8(next, 0);
    if (e.type === 44) b.writeUInt16BE(((e.fragmentOffset ?? 0) << 3) | (e.moreFragments ? 1 : 0), 2);
    else b.writeUInt8(e.length ?? 0, 1);
    return b;
  });
  const payload = Buffer.concat([...extBufs, body]);
  const ip = Buffer.alloc(40);
  ip.writeUInt32BE(0x6000_0000, 0);
  ip.writeUInt16BE(payload.length, 4);
  ip.writeUInt8(exts[0]?.type ?? proto, 6);
  ip.writeUInt8(64, 7);
  writeAddress6(ip, 8, spec.src);
  writeAddress6(ip, 24, spec.dst);
  return Buffer.concat([ip, payload]);
}

/** The transport header of `proto` (1 is ICMP or ICMPv6: type, code, id, sequence). */
function transportHeader(spec: FrameSpec, proto: number): Buffer {
  const payload = spec.payload ?? Buffer.alloc(8);
  let l4: Buffer;
  if (proto === 6) {
    l4 = Buffer.alloc(20);
    l4.writeUInt16BE(spec.sport ?? 40000, 0);
    l4.writeUInt16BE(spec.dport ?? 80, 2);
    l4.writeUInt8(0x50, 12);
    l4.writeUInt8(spec.tcpFlags ?? 0x02, 13);
    l4.writeUInt16BE(65535, 14);
  } else if (proto === 17 || proto === 132) {
    l4 = Buffer.alloc(proto === 17 ? 8 : 12);
    l4.writeUInt16BE(spec.sport ?? 40000, 0);
    l4.writeUInt16BE(spec.dport ?? 80, 2);
    if (proto === 17) l4.writeUInt16BE(8 + payload.length, 4);
  } else if (proto === 1) {
    l4 = Buffer.alloc(8);
    l4.writeUInt8(spec.icmpType ?? 8, 0);
    l4.writeUInt8(spec.icmpCode ?? 0, 1);
    l4.writeUInt16BE(spec.icmpId ?? 0x1234, 4);
    l4.writeUInt16BE(1, 6);
  } else l4 = Buffer.alloc(0);
  return l4;
}

/** The IP packet of a spec (no Ethernet header): IPv6 when its addresses are. */
export function ipPacket(spec: FrameSpec): Buffer {
  if (spec.src.includes(':')) return ipv6Packet(spec);
  const proto = typeof spec.protocol === 'number' ? spec.protocol : PROTO[spec.protocol];
  const optionBytes = (spec.ipOptionWords ?? 0) * 4;
  const ihl = 20 + optionBytes;
  const l4 = transportHeader(spec, proto);
  const body = Buffer.concat([l4, spec.quoted ?? spec.payload ?? Buffer.alloc(8)]);
  const ip = Buffer.alloc(ihl);
  ip.writeUInt8(0x40 | (ihl / 4), 0);
  ip.writeUInt16BE(ihl + body.length, 2);
  ip.writeUInt16BE(((spec.moreFragments ? 1 : 0) << 13) | (spec.fragmentOffset ?? 0), 6);
  ip.writeUInt8(64, 8);
  ip.writeUInt8(proto, 9);
  writeAddress(ip, 12, spec.src);
  writeAddress(ip, 16, spec.dst);
  ip.fill(1, 20); // NOP options
  return Buffer.concat([ip, body]);
}

export function ethernet(etherType: number, payload: Buffer): Buffer {
  const eth = Buffer.alloc(14);
  Buffer.from([0xee, 0xee, 0xee, 0xee, 0xee, 0xee]).copy(eth, 0);
  Buffer.from([0x02, 0, 0, 0, 0, 1]).copy(eth, 6);
  eth.writeUInt16BE(etherType, 12);
  return Buffer.concat([eth, payload]);
}

export function frame(spec: FrameSpec): Buffer {
  return ethernet(spec.src.includes(':') ? 0x86dd : 0x0800, ipPacket(spec));
}
