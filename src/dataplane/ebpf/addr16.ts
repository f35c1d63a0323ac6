/**
 * One address format for both families in the policy programs' maps: 16 bytes in network order,
 * an IPv6 address as it is, an IPv4 address IPv4-mapped (::ffff:a.b.c.d, RFC 4291 2.5.5.2). One
 * conntrack map, one set trie, one flow map and one decision-table trie per hook then serve both
 * families, and one rule walk judges both: an IPv4 prefix a.b.c.d/n is the mapped prefix of
 * length 96 + n, which no IPv6 address (outside ::ffff:0:0/96, never a pod's) can match.
 */
import type { Codec } from '../../bpf/index.js';
import { formatAddress, parseAddress, parseCidr } from '../../util/ip.js';

export const ADDR16_BYTES = 16;
/** Bits an IPv4 prefix is shifted by in the mapped form. */
export const MAPPED_PREFIX_BITS = 96;
const MAPPED = 0xffff_0000_0000n;

/** The 128-bit value of an address, IPv4 mapped. */
function value128(address: string): bigint {
  const a = parseAddress(address);
  if (!a) throw new RangeError(`'${address}' is not an IP address`);
  return a.family === 4 ? MAPPED | a.value : a.value;
}

function write128(value: bigint, b: Buffer, o: number): void {
  b.writeBigUInt64BE(value >> 64n, o);
  b.writeBigUInt64BE(value & 0xffff_ffff_ffff_ffffn, o + 8);
}

function read128(b: Buffer, o: number): bigint {
  return (b.readBigUInt64BE(o) << 64n) | b.readBigUInt64BE(o + 8);
}

/** An address of either family, 16 bytes; decodes IPv4-mapped addresses back to dotted quads. */
export const addr16: Codec<string> = {
  size: ADDR16_BYTES,
  align: 4,
  encode: (v, b, o) => write128(value128(v), b, o),
  decode: (b, o) => {
    const v = read128(b, o);
    if (v >> 32n === MAPPED >> 32n) return formatAddress({ family: 4, value: v & 0xffff_ffffn });
    return formatAddress({ family: 6, value: v });
  },
};

/** A CIDR of either family as the trie sees it: the address (host bits clear) and its 128-bit prefix length. */
export function cidr16(cidr: string): { address: string; prefixLength: number } {
  const c = parseCidr(cidr.includes('/') ? cidr : `${cidr}/${cidr.includes(':') ? 128 : 32}`);
  if (!c) throw new RangeError(`'${cidr}' is not a CIDR`);
  const address = formatAddress({ family: c.family, value: c.base });
  return { address, prefixLength: c.family === 4 ? MAPPED_PREFIX_BITS + c.prefix : c.prefix };
}

/** Whether an address or CIDR is IPv6. */
export function isIpv6(addressOrCidr: string): boolean {
  return addressOrCidr.includes(':');
}
