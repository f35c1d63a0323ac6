import { describe, expect, it } from 'vitest';
import { Assembler } from '../../src/bpf/asm/builder.js';
import { disassemble } from '../../src/bpf/asm/disasm.js';
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
});
