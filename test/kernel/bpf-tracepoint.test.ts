import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  Assembler,
  attachTracepoint,
  BpfMap,
  codecs,
  Program,
  R0,
  R1,
  R2,
  R10,
  triggerGetppid,
  type Link,
} from '../../src/bpf/index.js';
import { describeKernel } from '../support/kernel.js';

/** Counts sys_enter_getppid events of one process (tgid in the upper half of pid_tgid). */
function getppidCounter(tgid: number) {
  return new Assembler()
    .call('get_current_pid_tgid')
    .rsh64(R0, 32)
    .jne(R0, tgid, 'out')
    .st('w', R10, -4, 0)
    .mov64(R2, R10)
    .add64(R2, -4)
    .ldMap(R1, 'calls')
    .call('map_lookup_elem')
    .jeq(R0, 0, 'out')
    .mov64(R1, 1)
    .atomicAdd('dw', R0, 0, R1)
    .label('out')
    .exitWith(0)
    .assemble();
}

describeKernel('bpf: tracepoint link', () => {
  let calls: BpfMap<number, number>;
  let program: Program;
  let link: Link | undefined;

  beforeAll(() => {
    calls = BpfMap.create({
      type: 'array',
      name: 'calls',
      key: codecs.u32,
      value: codecs.u64n,
      maxEntries: 1,
    });
    program = Program.load({
      name: 'tp_getppid',
      type: 'tracepoint',
      instructions: getppidCounter(process.pid),
      maps: { calls },
    });
  });

  afterAll(() => {
    link?.close();
    program?.close();
    calls?.close();
  });

  it('counts this process’s getppid() calls through perf_event_open + BPF_LINK_CREATE', () => {
    link = attachTracepoint(program, { category: 'syscalls', name: 'sys_enter_getppid' });
    expect(link.info()).toMatchObject({ type: 'perf_event', programId: program.id });
    for (let i = 0; i < 50; i++) triggerGetppid();
    expect(calls.lookup(0)).toBe(50);

    link.close();
    link = undefined;
    for (let i = 0; i < 10; i++) triggerGetppid();
    expect(calls.lookup(0)).toBe(50);
  });
});
