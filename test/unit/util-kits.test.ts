import { describe, expect, it } from 'vitest';
import { IPPROTO, IPPROTO_TCP, PROTOCOL_NAMES, protocolName } from '../../src/util/protocols.js';
import { median, percentile } from '../../src/util/stats.js';

describe('protocols', () => {
  it('maps names and numbers both ways', () => {
    expect(IPPROTO).toEqual({ ICMP: 1, TCP: 6, UDP: 17, SCTP: 132 });
    expect(IPPROTO_TCP).toBe(6);
    for (const [name, number] of Object.entries(IPPROTO)) expect(PROTOCOL_NAMES[number]).toBe(name);
    expect(protocolName(17)).toBe('UDP');
    expect(protocolName(47)).toBe('47');
  });
});

describe('median', () => {
  it('is the nearest-rank 50th percentile of values in any order', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(percentile([1, 2, 3, 4], 50));
    expect(median([])).toBeNaN();
  });

  it('leaves its input alone', () => {
    const xs = [3, 1, 2];
    median(xs);
    expect(xs).toEqual([3, 1, 2]);
  });
});
