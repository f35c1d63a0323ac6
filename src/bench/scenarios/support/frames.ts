/**
 * Hand-built Ethernet/IPv4 frames for benches that inject packets below the IP stack (AF_PACKET)
 * or feed them to PROG_TEST_RUN. Checksums are real: ip_rcv drops a frame with a wrong IPv4
 * header checksum before netfilter sees it, and conntrack calls a TCP segment with a wrong
 * checksum INVALID, which would send it down another branch of the policy than the one measured.
 */
import { IPPROTO_TCP, IPPROTO_UDP } from '../../../util/protocols.js';

/** Smallest Ethernet frame without the FCS: every packet of a flood has this size. */
export const MIN_FRAME = 60;

export function ipv4ToInt(address: string): number {
  return address.split('.').reduce((n, octet) => n * 256 + Number(octet), 0) >>> 0;
}

export function intToIpv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

export function parseMac(mac: string): Buffer {
  const bytes = mac.split(':').map((h) => Number.parseInt(h, 16));
  if (bytes.length !== 6 || bytes.some((b) => !Number.isInteger(b) || b < 0 || b > 255))
    throw new Error(`not a MAC address: ${mac}`);
  return Buffer.from(bytes);
}

function checksum(parts: readonly Buffer[]): number {
  let sum = 0;
  for (const part of parts) {
    for (let i = 0; i + 1 < part.length; i += 2) sum += part.readUInt16BE(i);
    if (part.length % 2 === 1) sum += (part[part.length - 1] as number) << 8;
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** TCP/UDP checksum over the IPv4 pseudo-header and the segment (its checksum field zero). */
function l4Checksum(ip: Buffer, segment: Buffer, protocol: number): number {
  const pseudo = Buffer.alloc(12);
  ip.copy(pseudo, 0, 12, 20);
  pseudo.writeUInt8(protocol, 9);
  pseudo.writeUInt16BE(segment.length, 10);
  const sum = checksum([pseudo, segment]);
  return protocol === IPPROTO_UDP && sum === 0 ? 0xffff : sum;
}

export interface FrameSpec {
  srcMac: string;
  dstMac: string;
  src: string;
  dst: string;
  protocol: typeof IPPROTO_TCP | typeof IPPROTO_UDP;
  sport: number;
  dport: number;
}

/**
 * A minimum-size frame: 14 bytes Ethernet, 20 IPv4, then a UDP header or a TCP SYN, and zero
 * payload up to 60 bytes (inside the IP packet, so no trailer for the stack to trim). TTL 64, so
 * a node forwards it.
 */
export function buildFrame(spec: FrameSpec): Buffer {
  const l4Len = spec.protocol === IPPROTO_TCP ? 20 : 8;
  const frame = Buffer.alloc(Math.max(MIN_FRAME, 14 + 20 + l4Len));
  parseMac(spec.dstMac).copy(frame, 0);
  parseMac(spec.srcMac).copy(frame, 6);
  frame.writeUInt16BE(0x0800, 12);
  const ip = frame.subarray(14, 34);
  ip.writeUInt8(0x45, 0);
  ip.writeUInt16BE(frame.length - 14, 2);
  ip.writeUInt16BE(0x4000, 6); // DF: no fragment handling anywhere on the path
  ip.writeUInt8(64, 8);
  ip.writeUInt8(spec.protocol, 9);
  ip.writeUInt32BE(ipv4ToInt(spec.src), 12);
  ip.writeUInt32BE(ipv4ToInt(spec.dst), 16);
  ip.writeUInt16BE(checksum([ip]), 10);
  const l4 = frame.subarray(34);
  l4.writeUInt16BE(spec.sport, 0);
  l4.writeUInt16BE(spec.dport, 2);
  if (spec.protocol === IPPROTO_UDP) l4.writeUInt16BE(frame.length - 34, 4);
  else {
    l4.writeUInt32BE(1, 4); // sequence number
    l4.writeUInt8(0x50, 12); // data offset: 5 words
    l4.writeUInt8(0x02, 13); // SYN
    l4.writeUInt16BE(65535, 14);
  }
  l4.writeUInt16BE(l4Checksum(ip, l4, spec.protocol), spec.protocol === IPPROTO_TCP ? 16 : 6);
  return frame;
}
