/**
 * Errors that say what went wrong in the caller's terms: a missing kernel feature names the
 * feature and the release that has it (the kernel's errno stays the cause); a verifier rejection
 * is one summary line, the listing excerpt, and the whole log only on request.
 */
import { describe, expect, it } from 'vitest';
import {
  BpfError,
  explainFailure,
  MissingKernelFeatureError,
  UnsupportedFeatureError,
  VerifierError,
} from '../../src/bpf/index.js';

describe('bpf errors', () => {
  it('states a missing kernel feature as a capability, keeping the kernel error as cause', () => {
    const errno = new BpfError(22, { operation: 'BPF_LINK_CREATE', subject: 'tcx ingress link' });
    const err = new MissingKernelFeatureError('tcx', '6.1.0', '6.6', errno);
    expect(err).toBeInstanceOf(UnsupportedFeatureError);
    expect(err.message).toBe('this kernel (6.1.0) lacks tcx (needs Linux 6.6)');
    expect(err.cause).toBe(errno);
    expect(err.feature).toBe('tcx');
    expect(err.name).toBe('MissingKernelFeatureError');
  });

  it('leaves errors no missing feature explains as they are (without probing)', () => {
    const plain = new Error('not a kernel error');
    expect(explainFailure(plain, 'tcx')).toBe(plain);
    const denied = new BpfError(1, { operation: 'BPF_LINK_CREATE' });
    expect(explainFailure(denied, 'tcx')).toBe(denied);
    const rejected = verifierError('R0 !read_ok');
    expect(explainFailure(rejected)).toBe(rejected);
  });

  it('sums a verifier rejection up in one line, with what the code there does, and the log on request', () => {
    const err = verifierError('R0 !read_ok', 'rule np:shop/db/ingress/0: allow TCP ports 5432');
    expect(err.summary).toBe(
      "program 'sy_i_1' (sched_cls) rejected by the verifier at instruction 7 (rule np:shop/db/ingress/0: allow TCP ports 5432): R0 !read_ok",
    );
    expect(err.message).toBe(`${err.summary}\n-->   7: (95) exit`);
    expect(err.withLog()).toBe(`${err.message}\n--- verifier log ---\n0: (95) exit\nR0 !read_ok`);
  });
});

function verifierError(reason: string, doing?: string): VerifierError {
  return new VerifierError(
    13,
    { operation: 'BPF_PROG_LOAD', subject: "program 'sy_i_1' (sched_cls)" },
    {
      reason,
      instructionIndex: 7,
      log: '0: (95) exit\nR0 !read_ok\n',
      listing: '-->   7: (95) exit',
      excerpt: '-->   7: (95) exit',
      ...(doing ? { doing } : {}),
    },
  );
}
