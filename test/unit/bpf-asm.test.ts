import { describe, expect, it } from 'vitest';
import { Assembler, AsmError } from '../../src/bpf/asm/builder.js';
import { HELPERS, helperName } from '../../src/bpf/asm/helpers.js';
import {
  decodeInstructions,
  encodeInstructions,
  FP,
  ldImm64Value,
  R0,
  R1,
  R2,
  R3,
  R6,
  R10,
} from '../../src/bpf/asm/instruction.js';

/** Bytes as the kernel and llvm-objdump print them: 8 hex pairs per instruction. */
function hex(asm: Assembler, mapFd = 0): string[] {
  const bytes = encodeInstructions(asm.assemble().instructions, () => mapFd);
  return (bytes.toString('hex').match(/.{16}/g) ?? []).map((insn) => insn.match(/../g)?.join(' ') ?? '');
}

describe('bpf asm: encoding', () => {
  it('encodes "mov r0, 0; exit" as the kernel documents it', () => {
    expect(hex(new Assembler().mov64(R0, 0).exit())).toEqual([
      'b7 00 00 00 00 00 00 00',
      '95 00 00 00 00 00 00 00',
    ]);
  });

  it.each<[string, (a: Assembler) => Assembler, string[]]>([
    ['r1 = r10', (a) => a.mov64(R1, R10), ['bf a1 00 00 00 00 00 00']],
    ['r2 += -8', (a) => a.add64(R2, -8), ['07 02 00 00 f8 ff ff ff']],
    ['w0 = 1', (a) => a.mov32(R0, 1), ['b4 00 00 00 01 00 00 00']],
    ['w1 += w2', (a) => a.add32(R1, R2), ['0c 21 00 00 00 00 00 00']],
    ['r0 &= 0xff', (a) => a.and64(R0, 0xff), ['57 00 00 00 ff 00 00 00']],
    ['r0 >>= 32', (a) => a.rsh64(R0, 32), ['77 00 00 00 20 00 00 00']],
    ['r0 = -r0', (a) => a.neg64(R0), ['87 00 00 00 00 00 00 00']],
    ['r2 = be16 r2', (a) => a.be(R2, 16), ['dc 02 00 00 10 00 00 00']],
    ['r2 = le32 r2', (a) => a.le(R2, 32), ['d4 02 00 00 20 00 00 00']],
    ['r0 = *(u32 *)(r1 +0)', (a) => a.ldxw(R0, R1, 0), ['61 10 00 00 00 00 00 00']],
    ['r3 = *(u16 *)(r2 +12)', (a) => a.ldxh(R3, R2, 12), ['69 23 0c 00 00 00 00 00']],
    ['r0 = *(u64 *)(r6 +8)', (a) => a.ldxdw(R0, R6, 8), ['79 60 08 00 00 00 00 00']],
    ['*(u32 *)(r10 -4) = 0', (a) => a.st('w', R10, -4, 0), ['62 0a fc ff 00 00 00 00']],
    ['*(u64 *)(r10 -8) = r1', (a) => a.stx('dw', FP, -8, R1), ['7b 1a f8 ff 00 00 00 00']],
    ['*(u8 *)(r10 -1) = r2', (a) => a.stx('b', FP, -1, R2), ['73 2a ff ff 00 00 00 00']],
    ['lock *(u64 *)(r0 +0) += r1', (a) => a.atomicAdd('dw', R0, 0, R1), ['db 10 00 00 00 00 00 00']],
    ['lock *(u32 *)(r0 +4) += r1', (a) => a.atomicAdd('w', R0, 4, R1), ['c3 10 04 00 00 00 00 00']],
    ['r1 = atomic64_fetch_add', (a) => a.atomic('add', 'dw', R0, 0, R1, true), ['db 10 00 00 01 00 00 00']],
    ['r1 = atomic64_xchg', (a) => a.atomic('xchg', 'dw', R0, 0, R1), ['db 10 00 00 e1 00 00 00']],
    ['call map_lookup_elem', (a) => a.call('map_lookup_elem'), ['85 00 00 00 01 00 00 00']],
    ['call redirect_peer', (a) => a.call('redirect_peer'), ['85 00 00 00 9b 00 00 00']],
    ['r0 = *(u8 *)skb[23]', (a) => a.ldAbs('b', 23), ['30 00 00 00 17 00 00 00']],
  ])('encodes %s', (_name, build, expected) => {
    expect(hex(build(new Assembler()))).toEqual(expected);
  });

  it('encodes a 64-bit constant across two slots', () => {
    expect(hex(new Assembler().ldImm64(R1, 0x1122334455667788n))).toEqual([
      '18 01 00 00 88 77 66 55',
      '00 00 00 00 44 33 22 11',
    ]);
  });

  it('encodes map references as pseudo loads with the fd resolved at encoding time', () => {
    const asm = new Assembler().ldMap(R1, 'deny').ldMapValue(R2, 'config', 16);
    expect(hex(asm, 7)).toEqual([
      '18 11 00 00 07 00 00 00',
      '00 00 00 00 00 00 00 00',
      '18 22 00 00 07 00 00 00',
      '00 00 00 00 10 00 00 00',
    ]);
    expect(asm.assemble().mapNames).toEqual(['deny', 'config']);
  });

  it('round-trips through decode', () => {
    const asm = new Assembler()
      .ldImm64(R3, -2n)
      .mov64(R0, 2)
      .jeq(R0, 2, 'end')
      .label('end')
      .exit()
      .assemble();
    const decoded = decodeInstructions(encodeInstructions(asm.instructions));
    expect(decoded.map(({ opcode, dst, src, offset, imm }) => ({ opcode, dst, src, offset, imm }))).toEqual(
      asm.instructions.map(({ opcode, dst, src, offset, imm }) => ({ opcode, dst, src, offset, imm })),
    );
    expect(ldImm64Value(decoded[0] ?? { opcode: 0, dst: 0, src: 0, offset: 0, imm: 0 })).toBe(
      0xffff_ffff_ffff_fffen,
    );
  });

  it('numbers helpers as include/uapi/linux/bpf.h does', () => {
    expect(HELPERS).toMatchObject({
      map_lookup_elem: 1,
      map_update_elem: 2,
      map_delete_elem: 3,
      ktime_get_ns: 5,
      get_current_pid_tgid: 14,
      get_current_comm: 16,
      redirect: 23,
      skb_load_bytes: 26,
      get_socket_cookie: 46,
      fib_lookup: 69,
      ringbuf_output: 130,
      ringbuf_reserve: 131,
      ringbuf_submit: 132,
      redirect_peer: 155,
      cgrp_storage_delete: 211,
    });
    expect(helperName(155)).toBe('redirect_peer');
  });
});

describe('bpf asm: labels', () => {
  it('resolves forward and backward jumps in instruction slots (LD_IMM64 counts twice)', () => {
    const program = new Assembler()
      .label('top')
      .mov64(R0, 0) // slot 0
      .jeq(R1, 0, 'done') // slot 1 -> 5: offset 3
      .ldImm64(R2, 1n) // slots 2-3
      .ja('top') // slot 4 -> 0: offset -5
      .label('done')
      .exit() // slot 5
      .assemble();
    expect(program.labels).toEqual(
      new Map([
        ['top', 0],
        ['done', 5],
      ]),
    );
    expect(program.instructions[1]).toMatchObject({ offset: 3, target: 'done' });
    expect(program.instructions[3]).toMatchObject({ offset: -5, target: 'top' });
    expect(hex(new Assembler().jeq(R1, 0, 'x').mov64(R0, 1).label('x').exit())[0]).toBe(
      '15 01 01 00 00 00 00 00',
    );
  });

  it('allows several labels on one instruction and 32-bit compares', () => {
    const program = new Assembler().jmp32('jgt', R1, R2, 'b').label('a').label('b').exit().assemble();
    expect(program.labels).toEqual(
      new Map([
        ['a', 1],
        ['b', 1],
      ]),
    );
    expect(program.instructions[0]).toMatchObject({ opcode: 0x2e, offset: 0 });
  });

  it('resolves bpf-to-bpf calls into the immediate', () => {
    const program = new Assembler().callLocal('sub').exit().label('sub').exitWith(1).assemble();
    expect(program.instructions[0]).toMatchObject({ opcode: 0x85, src: 1, imm: 1 });
  });

  it('rejects unknown, duplicate and dangling labels', () => {
    expect(() => new Assembler().ja('nowhere').exit().assemble()).toThrow(/unknown label 'nowhere'/);
    expect(() => new Assembler().label('a').exit().label('a')).toThrow(/defined twice/);
    expect(() => new Assembler().exit().label('end').assemble()).toThrow(/mark no instruction/);
  });

  it('rejects immediates that do not fit 32 bits and offsets that do not fit 16', () => {
    expect(() => new Assembler().mov64(R0, 2 ** 32)).toThrow(AsmError);
    expect(() => new Assembler().mov64(R0, 1.5)).toThrow(/ldImm64/);
    expect(() => new Assembler().ldxw(R0, R1, 40_000)).toThrow(/16-bit/);
    const far = new Assembler().ja('end');
    for (let i = 0; i < 40_000; i++) far.mov64(R0, 0);
    expect(() => far.label('end').exit().assemble()).toThrow(/jump to 'end'/);
  });
});
