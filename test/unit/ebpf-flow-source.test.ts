/** The eBPF flow source's merge of one aggregate's per-CPU copies (pure). */
import { describe, expect, it } from 'vitest';
import { mergeCpus } from '../../src/dataplane/ebpf/flow-source.js';

const idle = { packets: 0, bytes: 0, connections: 0, first: 0, last: 0 };

describe('ebpf flow source: merging CPUs', () => {
  it('adds the counts and spans the times of the CPUs that counted anything', () => {
    expect(
      mergeCpus([
        { packets: 3, bytes: 300, connections: 1, first: 2_000, last: 9_000 },
        idle,
        { packets: 2, bytes: 120, connections: 0, first: 1_500, last: 4_000 },
      ]),
    ).toEqual({ packets: 5, bytes: 420, connections: 1, first: 1_500, last: 9_000 });
  });

  it('ignores idle CPUs, whose zero times are no time', () => {
    expect(mergeCpus([idle, { packets: 1, bytes: 60, connections: 1, first: 7, last: 7 }, idle])).toEqual({
      packets: 1,
      bytes: 60,
      connections: 1,
      first: 7,
      last: 7,
    });
    expect(mergeCpus([idle, idle])).toEqual(idle);
  });
});
