import { describe, expect, it } from 'vitest';
import * as codecs from '../../src/bpf/codecs.js';
import { checkObjectName } from '../../src/bpf/constants.js';
import { parseCpuList } from '../../src/bpf/cpus.js';

const bytes = (codec: codecs.Codec<never>, value: unknown): string =>
  codecs.encode(codec, value as never).toString('hex');

describe('bpf codecs', () => {
  it('encodes integers little-endian and network types big-endian', () => {
    expect(bytes(codecs.u32 as never, 0x01020304)).toBe('04030201');
    expect(bytes(codecs.u16 as never, 0x0102)).toBe('0201');
    expect(bytes(codecs.u64 as never, 0x0102030405060708n)).toBe('0807060504030201');
    expect(bytes(codecs.u64n as never, 300)).toBe('2c01000000000000');
    expect(bytes(codecs.be16 as never, 8080)).toBe('1f90');
    expect(bytes(codecs.ipv4 as never, '198.18.0.1')).toBe('c6120001');
    expect(codecs.decode(codecs.ipv4, Buffer.from('c6120001', 'hex'))).toBe('198.18.0.1');
    expect(codecs.decode(codecs.i32, Buffer.from('ffffffff', 'hex'))).toBe(-1);
  });

  it('rejects values out of range instead of wrapping them', () => {
    expect(() => codecs.encode(codecs.u8, 256)).toThrow(RangeError);
    expect(() => codecs.encode(codecs.u32, -1)).toThrow(RangeError);
    expect(() => codecs.encode(codecs.be16, 65536)).toThrow(RangeError);
    expect(() => codecs.encode(codecs.ipv4, '198.18.0.256')).toThrow(/not an IPv4/);
    expect(() => codecs.encode(codecs.ipv4, '198.18.0')).toThrow(/not an IPv4/);
  });

  it('lays out IPv4 LPM keys as struct bpf_lpm_trie_key and clears host bits', () => {
    expect(bytes(codecs.ipv4LpmKey as never, '198.18.0.0/15')).toBe('0f000000c6120000');
    expect(bytes(codecs.ipv4LpmKey as never, '198.19.7.9/16')).toBe('10000000c6130000');
    expect(bytes(codecs.ipv4LpmKey as never, '10.1.2.3')).toBe('200000000a010203');
    expect(codecs.decode(codecs.ipv4LpmKey, Buffer.from('18000000c6120500', 'hex'))).toBe('198.18.5.0/24');
    expect(() => codecs.encode(codecs.ipv4LpmKey, '10.0.0.0/33')).toThrow(/prefix length/);
  });

  it('aligns struct fields like C and zeroes the padding', () => {
    const flow = codecs.struct({
      saddr: codecs.ipv4,
      daddr: codecs.ipv4,
      sport: codecs.be16,
      dport: codecs.be16,
      proto: codecs.u8,
    });
    expect(flow.size).toBe(16);
    expect(flow.offsets).toEqual({ saddr: 0, daddr: 4, sport: 8, dport: 10, proto: 12 });
    const target = Buffer.alloc(16, 0xaa);
    flow.encode({ saddr: '198.18.0.1', daddr: '198.18.0.2', sport: 40000, dport: 53, proto: 17 }, target, 0);
    expect(target.toString('hex')).toBe('c6120001c61200029c40003511000000');
    expect(flow.decode(target, 0)).toEqual({
      saddr: '198.18.0.1',
      daddr: '198.18.0.2',
      sport: 40000,
      dport: 53,
      proto: 17,
    });

    const mixed = codecs.struct({ flag: codecs.u8, counter: codecs.u64, small: codecs.u16 });
    expect({ size: mixed.size, align: mixed.align, offsets: mixed.offsets }).toEqual({
      size: 24,
      align: 8,
      offsets: { flag: 0, counter: 8, small: 16 },
    });
  });

  it('handles byte arrays, C strings and fixed arrays', () => {
    const comm = codecs.cString(16);
    const encoded = codecs.encode(comm, 'node');
    expect(encoded.length).toBe(16);
    expect(codecs.decode(comm, encoded)).toBe('node');
    expect(() => codecs.encode(comm, 'x'.repeat(16))).toThrow(/does not fit/);
    expect(codecs.encode(codecs.bytes(4), Buffer.from([1, 2])).toString('hex')).toBe('01020000');
    const ports = codecs.array(codecs.be16, 3);
    expect(codecs.encode(ports, [80, 443, 8080]).toString('hex')).toBe('005001bb1f90');
    expect(codecs.decode(ports, Buffer.from('005001bb1f90', 'hex'))).toEqual([80, 443, 8080]);
  });

  it('parses kernel CPU lists', () => {
    expect(parseCpuList('0-1\n')).toEqual([0, 1]);
    expect(parseCpuList('0,2-4,7')).toEqual([0, 2, 3, 4, 7]);
    expect(() => parseCpuList('3-1')).toThrow(/malformed/);
  });

  it('accepts only object names the kernel accepts', () => {
    expect(checkObjectName('prefilter.v2', 'program')).toBe('prefilter.v2');
    expect(() => checkObjectName('tcx-flows', 'program')).toThrow(/letters, digits/);
    expect(() => checkObjectName('a_name_longer_than_15', 'map')).toThrow(/at most 15/);
  });
});
