import { describe, expect, it } from 'vitest';
import { listingExcerpt, parseVerifierLog } from '../../src/bpf/verifier.js';

describe('bpf verifier log parsing', () => {
  it('takes the reason after the last instruction and that instruction’s index', () => {
    const log = [
      '0: R1=ctx() R10=fp0',
      '0: (b7) r1 = 1                        ; R1_w=1',
      '1: (95) exit',
      'R0 !read_ok',
      'processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0',
      '',
    ].join('\n');
    expect(parseVerifierLog(log)).toEqual({ reason: 'R0 !read_ok', instructionIndex: 1 });
  });

  it('joins multi-line reasons and ignores state lines', () => {
    const log = [
      '0: (61) r2 = *(u32 *)(r1 +0)          ; R1=ctx() R2_w=pkt(r=0)',
      '1: (71) r0 = *(u8 *)(r2 +12)',
      'invalid access to packet, off=12 size=1, R2(id=0,off=0,r=0)',
      'R2 offset is outside of the packet',
      'processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0',
    ].join('\n');
    expect(parseVerifierLog(log)).toEqual({
      reason:
        'invalid access to packet, off=12 size=1, R2(id=0,off=0,r=0); R2 offset is outside of the packet',
      instructionIndex: 1,
    });
  });

  it('uses the instruction the reason names when there is no instruction trace', () => {
    expect(parseVerifierLog('jump out of range from insn 0 to 5\nprocessed 0 insns\n')).toEqual({
      reason: 'jump out of range from insn 0 to 5',
      instructionIndex: 0,
    });
    expect(parseVerifierLog('unreachable insn 1\n')).toEqual({
      reason: 'unreachable insn 1',
      instructionIndex: 1,
    });
    expect(parseVerifierLog('')).toEqual({
      reason: 'no reason in the verifier log',
      instructionIndex: undefined,
    });
  });

  it('cuts a window of the listing around the marked line', () => {
    const listing = Array.from(
      { length: 20 },
      (_, i) => `${i === 10 ? '-->' : '   '} ${String(i).padStart(3)}: (b7) r0 = 0`,
    ).join('\n');
    const excerpt = listingExcerpt(listing, 2).split('\n');
    expect(excerpt).toHaveLength(5);
    expect(excerpt[2]).toBe('-->  10: (b7) r0 = 0');
  });
});
