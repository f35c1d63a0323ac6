import { expect, it } from 'vitest';
import {
  Assembler,
  BpfError,
  Program,
  R0,
  R1,
  R2,
  R3,
  probeFeatures,
  requireFeatures,
  VerifierError,
  XdpAction,
} from '../../src/bpf/index.js';
import { describeKernel } from '../support/kernel.js';

function rejection(load: () => unknown): VerifierError {
  try {
    load();
  } catch (err) {
    if (err instanceof VerifierError) return err;
    throw err;
  }
  throw new Error('the program loaded although it should have been rejected');
}

describeKernel('bpf: verifier errors', () => {
  it('reports an unset return value with the verifier reason and the failing instruction marked', () => {
    const program = new Assembler().label('entry').mov64(R1, 1).exit().assemble();
    const err = rejection(() => Program.load({ name: 'no_retval', type: 'xdp', instructions: program }));
    expect(err.reason).toContain('R0 !read_ok');
    expect(err.message).toContain('R0 !read_ok');
    expect(err.instructionIndex).toBe(1);
    expect(err.message).toContain('-->   1: (95) exit');
    expect(err.listing).toBe(['entry:', '      0: (b7) r1 = 1', '-->   1: (95) exit'].join('\n'));
    expect(err.log).toContain('processed');
    expect(err).toBeInstanceOf(BpfError);
    expect(err.code).toBe('EACCES');
  });

  it('names what the rejected code does, from the comment in force at the failing instruction', () => {
    const program = new Assembler()
      .comment('read the packet pointers')
      .ldxw(R2, R1, 0)
      .ldxw(R3, R1, 4)
      .comment('the EtherType, bounds never checked')
      .ldxh(R0, R2, 12)
      .exitWith(XdpAction.PASS)
      .assemble();
    const err = rejection(() => Program.load({ name: 'commented', type: 'xdp', instructions: program }));
    expect(err.doing).toBe('the EtherType, bounds never checked');
    expect(err.summary).toContain('at instruction 2 (the EtherType, bounds never checked)');
    expect(err.message).toContain(
      '; the EtherType, bounds never checked\n-->   2: (69) r0 = *(u16 *)(r2 +12)',
    );
  });

  it('reports an unchecked packet read at the instruction that makes it', () => {
    const program = new Assembler()
      .ldxw(R2, R1, 0) // data
      .ldxw(R3, R1, 4) // data_end, never compared
      .ldxb(R0, R2, 12)
      .exitWith(XdpAction.PASS)
      .assemble();
    const err = rejection(() => Program.load({ name: 'oob_read', type: 'xdp', instructions: program }));
    expect(err.reason).toMatch(/invalid access to packet/);
    expect(err.instructionIndex).toBe(2);
    expect(err.message).toContain('-->   2: (71) r0 = *(u8 *)(r2 +12)');
  });

  it('keeps the end of a long verifier log, or grows the buffer until all of it fits when asked', () => {
    // 3000 verified instructions before the error make a log larger than the first 64 KiB buffer.
    const asm = new Assembler().mov64(R0, 0);
    for (let i = 0; i < 3000; i++) asm.add64(R0, 1);
    const instructions = asm.ldxdw(R0, R1, 0).exit().assemble();
    for (const fullLog of [false, true]) {
      const err = rejection(() =>
        Program.load({ name: 'long_log', type: 'xdp', instructions, logLevel: 2, fullLog }),
      );
      if (fullLog) expect(err.log.length).toBeGreaterThan(64 * 1024);
      else expect(err.log.length).toBeLessThan(64 * 1024);
      expect(err.reason).toContain('invalid bpf_context access');
      expect(err.instructionIndex).toBe(3001);
    }
  });

  it('finds tcx, redirect_peer, ring buffers and LPM tries on this kernel', () => {
    const features = probeFeatures();
    for (const name of ['tcx', 'redirect_peer', 'ringbuf', 'lpm_trie', 'btf'] as const) {
      expect(features[name], `${name}: ${features[name].detail}`).toMatchObject({ available: true });
    }
    expect(() => requireFeatures('tcx', 'redirect_peer', 'ringbuf', 'lpm_trie')).not.toThrow();
  });
});
