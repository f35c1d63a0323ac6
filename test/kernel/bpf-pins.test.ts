import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  BpfMap,
  codecs,
  Link,
  listPins,
  pinPath,
  pinScopeDir,
  Program,
  queryTcx,
  removePinScope,
  withNetns,
} from '../../src/bpf/index.js';
import { describeKernel } from '../support/kernel.js';
import { NetnsProcess, nodeInNetns, RUN_TAG, TestNetns, UDP_SENDER } from './bpf-lab.js';

const projectRoot = fileURLToPath(new URL('../../', import.meta.url));
const bpfEntry = new URL('../../src/bpf/index.ts', import.meta.url).href;

/** Runs in a separate Node process: builds, attaches and pins, then exits. */
const CREATOR = `
import { Assembler, attachTcx, BpfMap, codecs, Program, R0, R1, R2, R10, TcAction, withNetns, pinPath } from '${bpfEntry}';
const { scope, netns } = JSON.parse(process.argv.at(-1));
const counts = BpfMap.create({ type: 'hash', name: 'counts', key: codecs.u32, value: codecs.u64n, maxEntries: 16 });
counts.update(1, 100);
counts.update(2, 200);
counts.update(3, 0);
const program = Program.load({
  name: 'tcx_count',
  type: 'sched_cls',
  maps: { counts },
  instructions: new Assembler()
    .st('w', R10, -4, 3)
    .mov64(R2, R10).add64(R2, -4)
    .ldMap(R1, 'counts')
    .call('map_lookup_elem')
    .jeq(R0, 0, 'out')
    .mov64(R1, 1)
    .atomicAdd('dw', R0, 0, R1)
    .label('out')
    .exitWith(TcAction.NEXT)
    .assemble(),
});
const link = withNetns(netns, () => attachTcx(program, { ifname: 'lo', direction: 'ingress' }));
counts.pin(pinPath(scope, 'maps', 'counts'));
program.pin(pinPath(scope, 'programs', 'tcx_count'));
link.pin(pinPath(scope, 'links', 'lo_ingress'));
console.log(JSON.stringify({ mapId: counts.info.id, programId: program.id, linkId: link.info().id }));
`;

describeKernel('bpf: pins outlive their process', () => {
  const scope = `bpft-pins-${RUN_TAG}`;
  let netns: TestNetns;
  const opened: { close(): void }[] = [];

  beforeAll(() => {
    netns = TestNetns.create('pin');
  });

  afterAll(() => {
    for (const object of opened) object.close();
    removePinScope(scope);
    netns?.delete();
  });

  it('reopens a map, program and link pinned by a process that has exited', async () => {
    const creator = new NetnsProcess(
      spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          '--input-type=module',
          '-e',
          CREATOR,
          JSON.stringify({ scope, netns: netns.name }),
        ],
        {
          cwd: projectRoot,
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      ),
    );
    const created = await creator.result<{ mapId: number; programId: number; linkId: number }>(60_000);

    expect(listPins(scope)).toEqual(['links/lo_ingress', 'maps/counts', 'programs/tcx_count']);

    const counts = BpfMap.fromPin(pinPath(scope, 'maps', 'counts'), codecs.u32, codecs.u64n);
    opened.push(counts);
    expect(counts.info.id).toBe(created.mapId);
    expect([counts.lookup(1), counts.lookup(2)]).toEqual([100, 200]);

    const program = Program.fromPin(pinPath(scope, 'programs', 'tcx_count'));
    opened.push(program);
    expect(program.info()).toMatchObject({ id: created.programId, name: 'tcx_count', typeName: 'sched_cls' });

    const link = Link.fromPin(pinPath(scope, 'links', 'lo_ingress'));
    opened.push(link);
    expect(link.info()).toMatchObject({ id: created.linkId, type: 'tcx', programId: created.programId });
    expect(withNetns(netns.name, () => queryTcx({ ifname: 'lo', direction: 'ingress' })).programIds).toEqual([
      created.programId,
    ]);

    // Still attached and counting: loopback traffic inside the namespace passes tcx ingress on lo.
    const before = counts.lookup(3) ?? 0;
    await nodeInNetns(netns, UDP_SENDER, { host: '127.0.0.1', port: 9, count: 5, perTick: 5 }).result();
    expect((counts.lookup(3) ?? 0) - before).toBeGreaterThanOrEqual(5);
  });

  it('removes a whole pin scope, and the link detaches once the last reference goes', () => {
    removePinScope(scope);
    expect(existsSync(pinScopeDir(scope))).toBe(false);
    expect(listPins(scope)).toEqual([]);
    expect(
      withNetns(netns.name, () => queryTcx({ ifname: 'lo', direction: 'ingress' })).programIds,
    ).toHaveLength(1);
    for (const object of opened.splice(0)) object.close();
    expect(withNetns(netns.name, () => queryTcx({ ifname: 'lo', direction: 'ingress' })).programIds).toEqual(
      [],
    );
  });
});
