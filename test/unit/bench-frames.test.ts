import { describe, expect, it } from 'vitest';
import { denyList, denyList6 } from '../../src/bench/scenarios/support/cidrs.js';
import { buildFrame, MIN_FRAME, MIN_FRAME_V6 } from '../../src/bench/scenarios/support/frames.js';
import { parseCidr } from '../../src/util/ip.js';
import { IPPROTO_TCP, IPPROTO_UDP } from '../../src/util/protocols.js';

/** The one's-complement sum of 16-bit words: 0xffff when a checksum inside verifies. */
function sum16(parts: readonly Buffer[]): number {
  let s = 0;
  for (const p of parts) for (let i = 0; i < p.length; i += 2) s += (p[i] ?? 0) * 256 + (p[i + 1] ?? 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

const MACS = { srcMac: '02:00:5e:12:ff:02', dstMac: '02:00:5e:12:ff:01' };

describe('bench frames and deny lists', () => {
  for (const protocol of [IPPROTO_UDP, IPPROTO_TCP] as const) {
    it(`builds an IPv6 ${protocol === IPPROTO_UDP ? 'UDP' : 'TCP'} frame whose checksum verifies`, () => {
      const f = buildFrame({
        ...MACS,
        src: 'fd00:5957:dead::5',
        dst: 'fd00:5957::1',
        protocol,
        sport: 1024,
        dport: 9,
      });
      expect(f.readUInt16BE(12)).toBe(0x86dd);
      expect(f[20]).toBe(protocol);
      const l4 = f.subarray(54);
      expect(f.readUInt16BE(18)).toBe(l4.length);
      const pseudo = Buffer.alloc(8);
      pseudo.writeUInt32BE(l4.length, 0);
      pseudo.writeUInt8(protocol, 7);
      expect(sum16([f.subarray(22, 54), pseudo, l4])).toBe(0xffff);
      if (protocol === IPPROTO_UDP) expect(f.length).toBe(MIN_FRAME_V6);
    });
  }

  it('keeps IPv4 frames at the minimum size with a verifying header checksum', () => {
    const f = buildFrame({
      ...MACS,
      src: '198.18.0.5',
      dst: '198.18.255.1',
      protocol: IPPROTO_UDP,
      sport: 1,
      dport: 9,
    });
    expect(f.length).toBe(MIN_FRAME);
    expect(sum16([f.subarray(14, 34)])).toBe(0xffff);
  });

  it('makes IPv6 deny lists as the IPv4 ones: sorted, disjoint, the same mix of prefix lengths', () => {
    const v4 = denyList(1000);
    const v6 = denyList6(1000);
    expect(v6).toHaveLength(1000);
    expect(v6.map((c) => Number(c.split('/')[1]) - 96)).toEqual(v4.map((c) => Number(c.split('/')[1])));
    const parsed = v6.map((c) => parseCidr(c));
    for (let i = 1; i < parsed.length; i++) {
      const a = parsed[i - 1];
      const b = parsed[i];
      if (!a || !b) throw new Error('not a CIDR');
      expect(a.base + (1n << BigInt(128 - a.prefix))).toBeLessThanOrEqual(b.base);
    }
    expect(v6[0]).toBe('fd00:5957:dead::/128');
  });
});
