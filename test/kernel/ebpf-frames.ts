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
}

const PROTO: Record<FrameProtocol, number> = { TCP: 6, UDP: 17, SCTP: 132, ICMP: 1 };

function writeAddress(buf: Buffer, offset: number, address: string): void {
  address.split('.').forEach((octet, i) => buf.writeUInt8(Number(octet), offset + i));
}

/** The IP packet of a spec (no Ethernet header). */
export function ipPacket(spec: FrameSpec): Buffer {
  const proto = typeof spec.protocol === 'number' ? spec.protocol : PROTO[spec.protocol];
  const optionBytes = (spec.ipOptionWords ?? 0) * 4;
  const ihl = 20 + optionBytes;
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
  const body = Buffer.concat([l4, spec.quoted ?? payload]);
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
  return ethernet(0x0800, ipPacket(spec));
}
