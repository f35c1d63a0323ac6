import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Assembler, R0, R1, R2 } from '../../src/bpf/asm/index.js';
import {
  BtfBuilder,
  functionStarts,
  programBtf,
  resolveCoreRelocations,
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

describe('CO-RE relocations', () => {
  const btf = parseBtf(sampleBlob());
  const program = new Assembler()
    .ldxField('h', R2, R1, 'sockish', 'protocol')
    .ldxField('w', R0, R1, 'sockish', '__common.saddr')
    .mov64(R2, 0)
    .addFieldOffset(R2, 'sockish', '__common.ports[1]')
    .exit()
    .assemble();

  it('patch load offsets and immediates with the field offsets of the target BTF', () => {
    const out = resolveCoreRelocations(program.instructions, () => btf)!;
    expect(out[0]).toMatchObject({ offset: 24 });
    expect(out[1]).toMatchObject({ offset: 4 });
    expect(out[3]).toMatchObject({ imm: 14 });
    expect(out.some((insn) => insn.core)).toBe(false);
  });

  it('follow the target: the same program against a different layout gets other offsets', () => {
    const b = new BtfBuilder();
    const u16 = b.int('unsigned short', 2);
    const u32 = b.int('unsigned int', 4);
    const common = b.struct('common', 64, [
      { name: 'saddr', type: u32, bitOffset: 128 },
      { name: 'ports', type: b.array(u16, u32, 4), bitOffset: 256 },
    ]);
    b.struct('sockish', 128, [
      { name: 'pad', type: u32, bitOffset: 0 },
      { name: '__common', type: common, bitOffset: 64 },
      { name: 'protocol', type: u16, bitOffset: 800 },
    ]);
    const out = resolveCoreRelocations(program.instructions, () => parseBtf(b.build()))!;
    expect(out[0]).toMatchObject({ offset: 100 });
    expect(out[1]).toMatchObject({ offset: 8 + 16 });
    expect(out[3]).toMatchObject({ imm: 8 + 32 + 2 });
  });

  it('refuse size mismatches, bitfields and missing fields, naming the instruction and field', () => {
    const wrongSize = new Assembler().ldxField('w', R0, R1, 'sockish', 'protocol').exit().assemble();
    expect(() => resolveCoreRelocations(wrongSize.instructions, () => btf)).toThrow(
      'instruction 0: field sockish.protocol is 2 bytes in this kernel, the program reads 4',
    );
    const bitfield = new Assembler().ldxField('b', R0, R1, 'common', 'state').exit().assemble();
    expect(() => resolveCoreRelocations(bitfield.instructions, () => btf)).toThrow(/bitfield/);
    const missing = new Assembler().ldxField('b', R0, R1, 'sockish', 'nope').exit().assemble();
    expect(() => resolveCoreRelocations(missing.instructions, () => btf)).toThrow(
      "instruction 0: field sockish.nope: struct sockish has no field 'nope'",
    );
    // No CO-RE reference: the kernel's BTF is never read.
    expect(
      resolveCoreRelocations(new Assembler().exitWith(0).assemble().instructions, () => {
        throw new Error('read');
      }),
    ).toBeUndefined();
  });
});

describe('program BTF', () => {
  it('names every function (main and each called label) and turns comments into lines', () => {
    const asm = new Assembler()
      .comment('entry')
      .callLocal('count.it')
      .exit()
      .label('count.it')
      .comment('count')
      .mov64(R0, 1)
      .exit()
      .assemble();
    expect(functionStarts(asm.instructions, 'my.prog')).toEqual(
      new Map([
        [0, 'my_prog'],
        [2, 'count_it'],
      ]),
    );
    const out = programBtf('my.prog', asm);
    expect(out.funcCount).toBe(2);
    expect([...out.funcInfo.subarray(0, 16)]).toEqual([0, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0]);
    const btf = parseBtf(out.blob);
    expect(btf.type(4)).toMatchObject({ kind: 'func', name: 'my_prog', linkage: 0 });
    expect(btf.type(5)).toMatchObject({ kind: 'func', name: 'count_it' });
    expect(out.lineCount).toBe(2);
    expect(btf.string(out.lineInfo.readUInt32LE(8))).toBe('entry');
    expect(btf.string(out.lineInfo.readUInt32LE(16 + 8))).toBe('count');
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
