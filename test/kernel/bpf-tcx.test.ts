import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  Assembler,
  attachTcx,
  BpfMap,
  codecs,
  Program,
  queryTcx,
  R0,
  R1,
  R2,
  R3,
  R4,
  R5,
  R6,
  R7,
  R10,
  TcAction,
  withNetns,
  type Link,
} from '../../src/bpf/index.js';
import { describeKernel } from '../support/kernel.js';
import { createVethPair, TestNetns, udpExchange } from './bpf-lab.js';

const flowKey = codecs.struct({
  saddr: codecs.ipv4,
  daddr: codecs.ipv4,
  sport: codecs.be16,
  dport: codecs.be16,
  proto: codecs.u8,
});

/** tcx ingress: count IPv4 TCP/UDP packets per 5-tuple in a hash map, then hand on (TCX_NEXT). */
function flowCounterProgram() {
  const key = -16; // flowKey on the stack: fp-16 .. fp-1
  const one = -24;
  const o = flowKey.offsets;
  return (
    new Assembler()
      .mov64(R6, R1)
      .ldxw(R2, R6, 76) // __sk_buff.data
      .ldxw(R3, R6, 80) // __sk_buff.data_end
      .mov64(R4, R2)
      .add64(R4, 14 + 20 + 8)
      .jgt(R4, R3, 'next')
      .ldxh(R5, R2, 12)
      .jne(R5, 0x0008, 'next')
      .ldxb(R5, R2, 14)
      .and64(R5, 0x0f)
      .jne(R5, 5, 'next') // IPv4 header without options only
      .ldxb(R7, R2, 23)
      .jeq(R7, 6, 'l4')
      .jne(R7, 17, 'next')
      .label('l4')
      .st('dw', R10, key, 0)
      .st('dw', R10, key + 8, 0)
      .ldxw(R5, R2, 26)
      .stx('w', R10, key + o.saddr, R5)
      .ldxw(R5, R2, 30)
      .stx('w', R10, key + o.daddr, R5)
      .ldxh(R5, R2, 34)
      .stx('h', R10, key + o.sport, R5)
      .ldxh(R5, R2, 36)
      .stx('h', R10, key + o.dport, R5)
      .stx('b', R10, key + o.proto, R7)
      .ldMap(R1, 'flows')
      .mov64(R2, R10)
      .add64(R2, key)
      .call('map_lookup_elem')
      .jeq(R0, 0, 'insert')
      .mov64(R1, 1)
      .atomicAdd('dw', R0, 0, R1)
      .ja('next')
      .label('insert')
      .st('dw', R10, one, 1)
      .ldMap(R1, 'flows')
      .mov64(R2, R10)
      .add64(R2, key)
      .mov64(R3, R10)
      .add64(R3, one)
      .mov64(R4, 1) // BPF_NOEXIST
      .call('map_update_elem')
      .jeq(R0, 0, 'next')
      // Another CPU inserted the flow first: count into its entry.
      .ldMap(R1, 'flows')
      .mov64(R2, R10)
      .add64(R2, key)
      .call('map_lookup_elem')
      .jeq(R0, 0, 'next')
      .mov64(R1, 1)
      .atomicAdd('dw', R0, 0, R1)
      .label('next')
      .exitWith(TcAction.NEXT)
      .assemble()
  );
}

describeKernel('bpf: tcx flow counter', () => {
  let client: TestNetns;
  let server: TestNetns;
  let flows: BpfMap<codecs.CodecValue<typeof flowKey>, number>;
  let counter: Program;
  let pass: Program;
  const links: Link[] = [];

  beforeAll(() => {
    client = TestNetns.create('tc');
    server = TestNetns.create('ts');
    createVethPair(
      { netns: client, ifname: 'tc0', address: '198.18.12.1/24' },
      { netns: server, ifname: 'ts0', address: '198.18.12.2/24' },
    );
    flows = BpfMap.create({
      type: 'hash',
      name: 'flows',
      key: flowKey,
      value: codecs.u64n,
      maxEntries: 1024,
    });
    counter = Program.load({
      name: 'tcx_flows',
      type: 'sched_cls',
      instructions: flowCounterProgram(),
      maps: { flows },
    });
    pass = Program.load({
      name: 'tcx_next',
      type: 'sched_cls',
      instructions: new Assembler().exitWith(TcAction.NEXT).assemble(),
    });
  });

  afterAll(() => {
    for (const link of links) link.close();
    counter?.close();
    pass?.close();
    flows?.close();
    client?.delete();
    server?.delete();
  });

  it('counts packets per 5-tuple on tcx ingress with real traffic', async () => {
    const link = withNetns(server.name, () => attachTcx(counter, { ifname: 'ts0', direction: 'ingress' }));
    links.push(link);
    expect(link.info()).toMatchObject({ type: 'tcx', programId: counter.id });

    const first = await udpExchange(client, server, {
      host: '198.18.12.2',
      port: 5001,
      sourcePort: 40001,
      count: 7,
      expectAll: true,
    });
    const second = await udpExchange(client, server, {
      host: '198.18.12.2',
      port: 5002,
      sourcePort: 40002,
      count: 3,
      expectAll: true,
    });
    expect([first.unique, second.unique]).toEqual([7, 3]);

    const udpFlows = flows.lookupBatch().filter(([key]) => key.proto === 17);
    expect(udpFlows).toHaveLength(2);
    expect(
      flows.lookup({ saddr: '198.18.12.1', daddr: '198.18.12.2', sport: 40001, dport: 5001, proto: 17 }),
    ).toBe(7);
    expect(
      flows.lookup({ saddr: '198.18.12.1', daddr: '198.18.12.2', sport: 40002, dport: 5002, proto: 17 }),
    ).toBe(3);
  });

  it('orders programs with BPF_F_BEFORE relative to an existing link', () => {
    const [counterLink] = links;
    if (!counterLink) throw new Error('first test did not attach');
    const first = withNetns(server.name, () =>
      attachTcx(pass, { ifname: 'ts0', direction: 'ingress', before: counterLink }),
    );
    links.push(first);
    const chain = withNetns(server.name, () => queryTcx({ ifname: 'ts0', direction: 'ingress' }));
    expect(chain.programIds).toEqual([pass.id, counter.id]);
    expect(chain.linkIds).toEqual([first.info().id, counterLink.info().id]);
  });
});
