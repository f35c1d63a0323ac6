import { describe, expect, it } from 'vitest';
import { Assembler } from '../../src/bpf/asm/builder.js';
import { commentAt, disassemble } from '../../src/bpf/asm/disasm.js';
import { encodeInstructions, R0, R1, R2, R3, R4, R6, R10 } from '../../src/bpf/asm/instruction.js';

describe('bpf disassembler', () => {
  const program = new Assembler()
    .label('entry')
    .mov64(R6, R1)
    .ldxw(R2, R6, 0)
    .ldxw(R3, R6, 4)
    .mov64(R4, R2)
    .add64(R4, 34)
    .jgt(R4, R3, 'pass')
    .st('w', R10, -4, 0)
    .mov64(R2, R10)
    .add64(R2, -4)
    .ldMap(R1, 'deny')
    .call('map_lookup_elem')
    .jeq(R0, 0, 'pass')
    .mov64(R1, 1)
    .atomicAdd('dw', R0, 0, R1)
    .label('drop')
    .exitWith(1)
    .label('pass')
    .mov32(R0, 2)
    .be(R0, 16)
    .jmp32('jne', R0, R1, 'drop')
    .exit()
    .assemble();

  it('prints a listing in the verifier’s notation with labels and jump targets', () => {
    expect(disassemble(program)).toBe(
      [
        'entry:',
        '      0: (bf) r6 = r1',
        '      1: (61) r2 = *(u32 *)(r6 +0)',
        '      2: (61) r3 = *(u32 *)(r6 +4)',
        '      3: (bf) r4 = r2',
        '      4: (07) r4 += 34',
        '      5: (2d) if r4 > r3 goto pc+11 <pass>',
        '      6: (62) *(u32 *)(r10 -4) = 0',
        '      7: (bf) r2 = r10',
        '      8: (07) r2 += -4',
        '      9: (18) r1 = map[deny]',
        '     11: (85) call map_lookup_elem#1',
        '     12: (15) if r0 == 0x0 goto pc+4 <pass>',
        '     13: (b7) r1 = 1',
        '     14: (db) lock *(u64 *)(r0 +0) += r1',
        'drop:',
        '     15: (b7) r0 = 1',
        '     16: (95) exit',
        'pass:',
        '     17: (b4) w0 = 2',
        '     18: (dc) r0 = be16 r0',
        '     19: (5e) if w0 != w1 goto pc-5 <drop>',
        '     20: (95) exit',
      ].join('\n'),
    );
  });

  it('marks an instruction with -->', () => {
    const lines = disassemble(program, { mark: 11 }).split('\n');
    expect(lines.filter((line) => line.startsWith('-->'))).toEqual(['-->  11: (85) call map_lookup_elem#1']);
  });

  it('disassembles raw bytes, naming map fds when told', () => {
    const bytes = encodeInstructions(program.instructions, () => 5);
    const text = disassemble(bytes, { mapNames: new Map([[5, 'deny']]) });
    expect(text.split('\n')).toContain('      9: (18) r1 = map[deny]');
    expect(disassemble(bytes).split('\n')).toContain('      9: (18) r1 = map[fd:5]');
    expect(text).not.toContain('<pass>');
  });

  it('prints constants, value loads, atomics and legacy packet loads', () => {
    const text = disassemble(
      new Assembler()
        .ldImm64(R1, 0xdeadbeefn)
        .ldMapValue(R2, 'cfg', 8)
        .atomic('add', 'dw', R0, 8, R1, true)
        .atomic('cmpxchg', 'w', R3, 0, R2)
        .ldInd('h', R1, 2)
        .stx('h', R10, -2, R1)
        .neg32(R1)
        .exit()
        .assemble(),
    );
    expect(text.split('\n').map((line) => line.slice(14))).toEqual([
      'r1 = 0xdeadbeef ll',
      'r2 = map_value[cfg] + 8',
      'r1 = atomic64_fetch_add((u64 *)(r0 +8), r1)',
      'r0 = atomic_cmpxchg((u32 *)(r3 +0), r0, r2)',
      'r0 = *(u16 *)skb[r1 + 2]',
      '*(u16 *)(r10 -2) = r1',
      'w1 = -w1',
      'exit',
    ]);
  });

  it('prints comments as `; text` lines after the labels of their instruction, and keeps them out of the code', () => {
    const build = (withComments: boolean) => {
      const asm = new Assembler();
      if (withComments) asm.comment('look the key up');
      asm.mapLookup('deny', -4).label('out');
      if (withComments) asm.comment('drop').comment('twice said');
      asm.exitWith(1);
      if (withComments) asm.comment('nothing follows: dropped');
      return asm.assemble();
    };
    const commented = build(true);
    expect(commented.instructions).toEqual(build(false).instructions);
    expect(commented.comments).toEqual(
      new Map([
        [0, ['look the key up']],
        [5, ['drop', 'twice said']],
      ]),
    );
    expect(disassemble(commented).split('\n')).toEqual([
      '; look the key up',
      '      0: (18) r1 = map[deny]',
      '      2: (bf) r2 = r10',
      '      3: (07) r2 += -4',
      '      4: (85) call map_lookup_elem#1',
      'out:',
      '; drop',
      '; twice said',
      '      5: (b7) r0 = 1',
      '      6: (95) exit',
    ]);
    expect(commentAt(commented, 3)).toBe('look the key up');
    expect(commentAt(commented, 6)).toBe('twice said');
    expect(commentAt(build(false), 6)).toBeUndefined();
  });

  it('names recurring sequences: bounds check, copy, update, dispatch, per-CPU add', () => {
    const text = disassemble(
      new Assembler()
        .checkBounds(R2, 14, R3, R4, 'out')
        .copy('h', R10, -8, R2, 12, R4)
        .mapUpdate('m', -8, -16)
        .dispatch(R4, [[6, 'out']], 'out')
        .addToU64(R0, 8, R6, R1)
        .label('out')
        .exit()
        .assemble(),
    );
    expect(text.split('\n').map((line) => line.slice(14))).toEqual([
      'r4 = r2',
      'r4 += 14',
      'if r4 > r3 goto pc+15 <out>',
      'r4 = *(u16 *)(r2 +12)',
      '*(u16 *)(r10 -8) = r4',
      'r1 = map[m]',
      'r2 = r10',
      'r2 += -8',
      'r3 = r10',
      'r3 += -16',
      'r4 = 0',
      'call map_update_elem#2',
      'if r4 == 0x6 goto pc+4 <out>',
      'goto pc+3 <out>',
      'r1 = *(u64 *)(r0 +8)',
      'r1 += r6',
      '*(u64 *)(r0 +8) = r1',
      '',
      'exit',
    ]);
  });
});
