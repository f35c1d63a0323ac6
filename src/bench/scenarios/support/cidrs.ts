/**
 * Address lists for benches, all inside 198.18.0.0/15 or fd00:5957::/32 (the project's only
 * ranges). Lists are sorted and disjoint, as the IR requires of an IpSet.
 */
import { formatAddress, parseAddress } from '../../../util/ip.js';
import { intToIpv4 } from './frames.js';

const BASE = 0xc612_0000; // 198.18.0.0
const SPAN = 0x2_0000; // a /15
/** 198.18.255.0/24 holds node fabric addresses: never deny-listed, never a set member here. */
const INFRA_FIRST = 0xc612_ff00;
const INFRA_LAST = 0xc612_ffff;

/**
 * Per block of 4 addresses, which prefixes cover it. A deny list mixes prefix lengths, and
 * ipset hash:net probes once per distinct length, so a list of /32s only would flatter it; a
 * /15 leaves room for about 100k entries only with lengths /30–/32.
 */
const BLOCK_PATTERNS: readonly (readonly number[])[] = [
  [32, 32, 32, 32],
  [32, 32, 32, 32],
  [32, 32, 32, 32],
  [31, 32, 32],
  [32, 32, 31],
  [30],
];

/** `count` disjoint CIDRs (/30, /31, /32) in ascending order; at most ~103k fit. */
export function denyList(count: number): string[] {
  const out: string[] = [];
  for (let block = 0; out.length < count && block * 4 < SPAN; block++) {
    const first = BASE + block * 4;
    if (first >= INFRA_FIRST && first <= INFRA_LAST) continue;
    let at = first;
    for (const length of BLOCK_PATTERNS[block % BLOCK_PATTERNS.length] as readonly number[]) {
      if (out.length >= count) break;
      out.push(`${intToIpv4(at)}/${length}`);
      at += 2 ** (32 - length);
    }
  }
  if (out.length < count) throw new Error(`198.18.0.0/15 holds only ${out.length} such CIDRs, not ${count}`);
  return out;
}

/** Where IPv6 deny lists start: a /48 of the project's range no bench or lab address uses. */
const BASE_V6 = (parseAddress('fd00:5957:dead::') as { value: bigint }).value;

/**
 * The IPv6 twin of denyList: `count` disjoint CIDRs (/126, /127, /128) in ascending order, in
 * blocks of 4 addresses with the same mix of prefix lengths, so hash:net probes as often.
 */
export function denyList6(count: number): string[] {
  const out: string[] = [];
  for (let block = 0; out.length < count; block++) {
    let at = BASE_V6 + BigInt(block * 4);
    for (const length of BLOCK_PATTERNS[block % BLOCK_PATTERNS.length] as readonly number[]) {
      if (out.length >= count) break;
      out.push(`${formatAddress({ family: 6, value: at })}/${length + 96}`);
      at += 1n << BigInt(32 - length);
    }
  }
  return out;
}

/** The first address of a CIDR. */
export function firstAddress(cidr: string): string {
  return cidr.split('/')[0] as string;
}

/**
 * `count` distinct addresses of 198.18.0.0/15 outside the infrastructure /24, from position
 * `offset` on: a set of N members and K further ones to add never collide.
 */
export function distinctAddresses(count: number, offset = 0): string[] {
  const usable = SPAN - (INFRA_LAST - INFRA_FIRST + 1);
  if (offset + count > usable) throw new Error(`198.18.0.0/15 has only ${usable} usable addresses`);
  const out: string[] = [];
  for (let i = offset; i < offset + count; i++) {
    const n = BASE + i;
    out.push(intToIpv4(n >= INFRA_FIRST ? n + 256 : n));
  }
  return out;
}
