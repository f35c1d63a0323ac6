import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  BtfBuilder,
  BtfError,
  enumValues,
  kernelBtf,
  memberOffset,
  parseBtf,
  resolveType,
  typeByName,
  VMLINUX_BTF_PATH,
} from '../../src/bpf/btf/index.js';

/** A hand-made blob: ints, a typedef, a struct with bitfields, anonymous union/struct members, enums. */
function sampleBlob(): Uint8Array {
  const b = new BtfBuilder();
  const u8 = b.int('unsigned char', 1, { char: true });
  const u16 = b.int('unsigned short', 2);
  const u32 = b.int('unsigned int', 4);
  const s64 = b.int('long long', 8, { signed: true });
  const be32 = b.typedef('__be32', u32);
  const inner = b.struct('', 8, [
    { name: 'daddr', type: be32, bitOffset: 0 },
    { name: 'saddr', type: be32, bitOffset: 32 },
  ]);
  const anonUnion = b.struct(
    '',
    8,
    [
      { name: 'addrpair', type: s64, bitOffset: 0 },
      { name: '', type: inner, bitOffset: 0 },
    ],
    'union',
  );
  const arr = b.array(u16, u32, 4);
  const common = b.struct('common', 24, [
    { name: '', type: anonUnion, bitOffset: 0 },
    { name: 'family', type: u16, bitOffset: 64 },
    { name: 'state', type: u8, bitOffset: 80, bitSize: 4 },
    { name: 'reuse', type: u8, bitOffset: 84, bitSize: 4 },
    { name: 'ports', type: arr, bitOffset: 96 },
  ]);
  b.struct('sockish', 40, [
    { name: '__common', type: common, bitOffset: 0 },
    { name: 'protocol', type: u16, bitOffset: 24 * 8 },
    { name: 'next', type: b.ptr(common), bitOffset: 32 * 8 },
  ]);
  b.enum(
    'colour',
    4,
    [
      ['RED', 0],
      ['GREEN', 7],
      ['MINUS', -1],
    ],
    true,
  );
  b.enum64('wide', [['BIG', 1n << 40n]]);
  b.func('handler', b.funcProto(s64, [{ name: 'ctx', type: b.ptr(0) }]));
  return b.build();
}

describe('BTF parser: hand-made blobs', () => {
  const btf = parseBtf(sampleBlob());

  it('decodes ints, typedefs and functions by name', () => {
    const u32 = typeByName(btf, 'int', 'unsigned int');
    expect(u32).toMatchObject({ kind: 'int', size: 4, bits: 32, signed: false });
    expect(typeByName(btf, 'int', 'long long')).toMatchObject({ signed: true, size: 8 });
    const be32 = typeByName(btf, 'typedef', '__be32')!;
    expect(resolveType(btf, be32.id)).toEqual(u32);
    const fn = typeByName(btf, 'func', 'handler')!;
    expect(fn.linkage).toBe(1);
    const proto = btf.type(fn.proto);
    expect(proto).toMatchObject({ kind: 'func_proto', params: [{ name: 'ctx' }] });
    expect(typeByName(btf, 'struct', 'nope')).toBeUndefined();
  });

  it('finds fields through anonymous unions and structs, nested paths and array indexes', () => {
    expect(memberOffset(btf, 'common', 'daddr')).toMatchObject({ bytes: 0, bitSize: 0, size: 4 });
    expect(memberOffset(btf, 'common', 'saddr')).toMatchObject({ bytes: 4, bitOffset: 32, size: 4 });
    expect(memberOffset(btf, 'common', 'saddr').type).toMatchObject({ kind: 'typedef', name: '__be32' });
    expect(memberOffset(btf, 'sockish', '__common.family')).toMatchObject({ bytes: 8, size: 2 });
    expect(memberOffset(btf, 'sockish', '__common.ports[3]')).toMatchObject({ bytes: 12 + 6, size: 2 });
    expect(memberOffset(btf, 'sockish', 'protocol').bytes).toBe(24);
    expect(memberOffset(btf, 'sockish', 'next')).toMatchObject({ bytes: 32, size: 8 });
  });

  it('reads bitfields with their bit offset and width', () => {
    expect(memberOffset(btf, 'common', 'state')).toMatchObject({ bytes: 10, bitOffset: 80, bitSize: 4 });
    expect(memberOffset(btf, 'sockish', '__common.reuse')).toMatchObject({
      bytes: 10,
      bitOffset: 84,
      bitSize: 4,
    });
  });

  it('errors name the struct and the missing field', () => {
    expect(() => memberOffset(btf, 'sockish', '__common.nothere')).toThrow(
      "struct sockish has no field 'nothere' in '__common'",
    );
    expect(() => memberOffset(btf, 'sockish', 'protocol.x')).toThrow(/'protocol' is int unsigned short/);
    expect(() => memberOffset(btf, 'ghost', 'x')).toThrow("BTF has no struct or union named 'ghost'");
    expect(() => memberOffset(btf, 'sockish', '__common.ports[4]')).toThrow(/index 4 is past/);
  });

  it('reads signed enums and 64-bit enums', () => {
    expect(enumValues(btf, 'colour')).toEqual(
      new Map([
        ['RED', 0n],
        ['GREEN', 7n],
        ['MINUS', -1n],
      ]),
    );
    expect(enumValues(btf, 'wide').get('BIG')).toBe(1n << 40n);
    expect(() => enumValues(btf, 'none')).toThrow(BtfError);
  });

  it('parses split BTF on top of a base: ids and strings continue the base', () => {
    const base = parseBtf(sampleBlob());
    const split = new BtfBuilder(base);
    const baseInt = typeByName(base, 'int', 'unsigned int')!.id;
    split.struct('extra', 4, [{ name: 'value', type: baseInt, bitOffset: 0 }]);
    const module = parseBtf(split.build(), base);
    expect(module.firstId).toBe(base.typeCount);
    const extra = typeByName(module, 'struct', 'extra')!;
    expect(extra.id).toBe(base.typeCount);
    expect(memberOffset(module, 'extra', 'value').type).toMatchObject({ name: 'unsigned int' });
    // Base types are visible through the split BTF.
    expect(memberOffset(module, 'sockish', 'protocol').bytes).toBe(24);
  });

  it('rejects what is not BTF, naming what is wrong', () => {
    expect(() => parseBtf(new Uint8Array(10))).toThrow(/shorter than its header/);
    expect(() => parseBtf(new Uint8Array(24))).toThrow(/not BTF: magic 0x0/);
    const truncated = sampleBlob().slice();
    new DataView(truncated.buffer).setUint32(12, 13, true); // type_len cuts a record
    expect(() => parseBtf(truncated)).toThrow(BtfError);
  });
});

describe('BTF parser: the running kernel', () => {
  const have = existsSync(VMLINUX_BTF_PATH);
  it.runIf(have || process.env.CI === 'true')(
    'reads vmlinux BTF: struct sock, sk_buff, enums, functions',
    () => {
      const started = performance.now();
      const btf = kernelBtf();
      const ms = performance.now() - started;
      expect(btf.typeCount).toBeGreaterThan(10_000);
      expect(kernelBtf()).toBe(btf); // cached
      expect(ms).toBeLessThan(2000); // generous: the agent-start budget is measured by bench
      const daddr = memberOffset(btf, 'sock', '__sk_common.skc_daddr');
      expect(daddr.size).toBe(4);
      const rcv = memberOffset(btf, 'sock', '__sk_common.skc_rcv_saddr');
      expect(rcv.bytes).toBe(daddr.bytes + 4); // the addrpair layout every kernel keeps
      expect(memberOffset(btf, 'sock', '__sk_common.skc_family').size).toBe(2);
      expect(memberOffset(btf, 'sk_buff', 'len').size).toBe(4);
      expect(memberOffset(btf, 'sk_buff', 'head').type.kind).toBe('ptr');
      expect(enumValues(btf, 'skb_drop_reason').get('SKB_DROP_REASON_NOT_SPECIFIED')).toBe(2n);
      expect(typeByName(btf, 'func', 'inet_csk_accept')).toBeDefined();
      expect(typeByName(btf, 'func', 'udp_sendmsg')).toBeDefined();
    },
  );
});
