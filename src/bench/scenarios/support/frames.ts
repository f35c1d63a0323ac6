/**
 * Hand-built Ethernet/IPv4 and Ethernet/IPv6 frames for benches that inject packets below the IP stack (AF_PACKET)
 * or feed them to PROG_TEST_RUN. Checksums are real: ip_rcv drops a frame with a wrong IPv4
 * header checksum before netfilter sees it, and conntrack calls a TCP segment with a wrong
 * checksum INVALID, which would send it down another branch of the policy than the one measured.
 */
import { parseAddress } from '../../../util/ip.js';
import { IPPROTO_TCP, IPPROTO_UDP } from '../../../util/protocols.js';

/** Smallest Ethernet frame without the FCS: every IPv4 packet of a flood has this size. */
export const MIN_FRAME = 60;
/** Smallest IPv6 UDP frame: 14 bytes Ethernet, 40 IPv6, 8 UDP (already above MIN_FRAME). */
export const MIN_FRAME_V6 = 62;

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

/** The IPv4 pseudo-header of a TCP/UDP checksum. */
function ipv4Pseudo(ip: Buffer, segmentLength: number, protocol: number): Buffer {
  const pseudo = Buffer.alloc(12);
  ip.copy(pseudo, 0, 12, 20);
  pseudo.writeUInt8(protocol, 9);
  pseudo.writeUInt16BE(segmentLength, 10);
  return pseudo;
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

/** The 16 bytes of an IPv6 address, network order. */
function ipv6Bytes(address: string): Buffer {
  const a = parseAddress(address);
  if (a?.family !== 6) throw new Error(`not an IPv6 address: ${address}`);
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(a.value >> 64n, 0);
  b.writeBigUInt64BE(a.value & 0xffff_ffff_ffff_ffffn, 8);
  return b;
}

function writeL4(l4: Buffer, spec: FrameSpec, pseudo: Buffer): void {
  l4.writeUInt16BE(spec.sport, 0);
  l4.writeUInt16BE(spec.dport, 2);
  if (spec.protocol === IPPROTO_UDP) l4.writeUInt16BE(l4.length, 4);
  else {
    l4.writeUInt32BE(1, 4); // sequence number
    l4.writeUInt8(0x50, 12); // data offset: 5 words
    l4.writeUInt8(0x02, 13); // SYN
    l4.writeUInt16BE(65535, 14);
  }
  const sum = checksum([pseudo, l4]);
  l4.writeUInt16BE(
    spec.protocol === IPPROTO_UDP && sum === 0 ? 0xffff : sum,
    spec.protocol === IPPROTO_TCP ? 16 : 6,
  );
}

/**
 * A minimum-size IPv6 frame: 14 bytes Ethernet, 40 IPv6 (no extension headers), then a UDP
 * header or a TCP SYN. Hop limit 64, so a node forwards it; the checksum (mandatory for UDP over
 * IPv6) covers the IPv6 pseudo-header.
 */
function buildFrame6(spec: FrameSpec): Buffer {
  const l4Len = spec.protocol === IPPROTO_TCP ? 20 : 8;
  const frame = Buffer.alloc(14 + 40 + l4Len);
  parseMac(spec.dstMac).copy(frame, 0);
  parseMac(spec.srcMac).copy(frame, 6);
  frame.writeUInt16BE(0x86dd, 12);
  const ip = frame.subarray(14, 54);
  ip.writeUInt32BE(0x6000_0000, 0);
  ip.writeUInt16BE(l4Len, 4);
  ip.writeUInt8(spec.protocol, 6);
  ip.writeUInt8(64, 7);
  ipv6Bytes(spec.src).copy(ip, 8);
  ipv6Bytes(spec.dst).copy(ip, 24);
  const pseudo = Buffer.alloc(40);
  ip.copy(pseudo, 0, 8, 40);
  pseudo.writeUInt32BE(l4Len, 32);
  pseudo.writeUInt8(spec.protocol, 39);
  writeL4(frame.subarray(54), spec, pseudo);
  return frame;
}

/**
 * A minimum-size frame: 14 bytes Ethernet, 20 IPv4, then a UDP header or a TCP SYN, and zero
 * payload up to 60 bytes (inside the IP packet, so no trailer for the stack to trim). TTL 64, so
 * a node forwards it. IPv6 addresses make an IPv6 frame (buildFrame6).
 */
export function buildFrame(spec: FrameSpec): Buffer {
  if (spec.src.includes(':')) return buildFrame6(spec);
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
  writeL4(frame.subarray(34), spec, ipv4Pseudo(ip, frame.length - 34, spec.protocol));
  return frame;
}
