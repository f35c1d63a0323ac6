import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  cidrContains,
  cidrSetDifference,
  cidrUnion,
  formatAddress,
  formatCidr,
  parseAddress,
  parseCidr,
  type Cidr,
} from '../../src/util/ip.js';

const cidr = (s: string): Cidr => {
  const c = parseCidr(s);
  if (!c) throw new Error(`bad cidr ${s}`);
  return c;
};

describe('address parsing and formatting', () => {
  it.each([
    ['198.18.0.1', '198.18.0.1'],
    ['fd00:5957::1', 'fd00:5957::1'],
    ['fd00:5957:0:0:0:0:0:1', 'fd00:5957::1'],
    ['2001:db8:0:1:0:0:0:1', '2001:db8:0:1::1'],
    ['::', '::'],
    ['::ffff:198.18.0.1', '::ffff:c612:1'],
  ])('%s round-trips to %s', (input, out) => {
    const a = parseAddress(input);
    expect(a).toBeDefined();
    expect(formatAddress(a!)).toBe(out);
  });

  it.each(['10.0.0.0/33', '300.1.1.1/8', 'abc', '10.0.0.0', '10.0.0.0/', '::/129', '10.0.0.0/8x'])(
    'rejects %s',
    (s) => expect(parseCidr(s)).toBeUndefined(),
  );

  it('clears host bits as the Kubernetes API accepts them', () => {
    expect(formatCidr(cidr('198.18.3.7/16'))).toBe('198.18.0.0/16');
    expect(formatCidr(cidr('fd00:5957::1/32'))).toBe('fd00:5957::/32');
  });

  it('does not match across families', () => {
    expect(cidrContains(cidr('0.0.0.0/0'), parseAddress('::1')!)).toBe(false);
  });
});

describe('set algebra on prefixes', () => {
  it('subtracts an except from a block', () => {
    expect(cidrSetDifference([cidr('198.18.0.0/24')], [cidr('198.18.0.0/25')]).map(formatCidr)).toEqual([
      '198.18.0.128/25',
    ]);
    expect(cidrSetDifference([cidr('198.18.0.0/30')], [cidr('198.18.0.1/32')]).map(formatCidr)).toEqual([
      '198.18.0.0/32',
      '198.18.0.2/31',
    ]);
  });

  it('merges adjacent and nested prefixes', () => {
    expect(
      cidrUnion([cidr('198.18.0.0/25'), cidr('198.18.0.128/25'), cidr('198.18.0.5/32')]).map(formatCidr),
    ).toEqual(['198.18.0.0/24']);
  });

  // Exhaustive check over a /24: membership of every address in the result equals the definition.
  const smallCidr = fc
    .tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 24, max: 32 }))
    .map(([host, prefix]) => cidr(`198.18.0.${host}/${prefix}`));

  it('difference is exact, disjoint and sorted (property)', () => {
    fc.assert(
      fc.property(
        fc.array(smallCidr, { maxLength: 5 }),
        fc.array(smallCidr, { maxLength: 5 }),
        (inc, exc) => {
          const out = cidrSetDifference(inc, exc);
          for (let h = 0; h < 256; h++) {
            const a = parseAddress(`198.18.0.${h}`)!;
            const expected = inc.some((c) => cidrContains(c, a)) && !exc.some((c) => cidrContains(c, a));
            const hits = out.filter((c) => cidrContains(c, a)).length;
            expect(hits).toBe(expected ? 1 : 0);
          }
          for (let i = 1; i < out.length; i++) expect(out[i - 1]!.base < out[i]!.base).toBe(true);
        },
      ),
      { numRuns: 2000 },
    );
  });
});
