import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  Assembler,
  attachXdp,
  BpfError,
  BpfMap,
  codecs,
  Program,
  R0,
  R1,
  R2,
  R3,
  R4,
  R5,
  R10,
  withNetns,
  XdpAction,
  type Link,
} from '../../src/bpf/index.js';
import { describeKernel } from '../support/kernel.js';
import { createVethPair, sleep, TestNetns, udpExchange } from './bpf-lab.js';

const PORT = 5400;

/** Counts UDP packets to PORT into slot `slot` of `counts`, then passes every packet. */
function countingProgram(slot: number) {
  const portAsLoaded = ((PORT & 0xff) << 8) | (PORT >> 8); // network order read little-endian
  return new Assembler()
    .ldxw(R2, R1, 0)
    .ldxw(R3, R1, 4)
    .mov64(R4, R2)
    .add64(R4, 42)
    .jgt(R4, R3, 'pass')
    .ldxh(R5, R2, 12)
    .jne(R5, 0x0008, 'pass')
    .ldxb(R5, R2, 23)
    .jne(R5, 17, 'pass')
    .ldxh(R5, R2, 36)
    .jne(R5, portAsLoaded, 'pass')
    .st('w', R10, -4, slot)
    .mov64(R2, R10)
    .add64(R2, -4)
    .ldMap(R1, 'counts')
    .call('map_lookup_elem')
    .jeq(R0, 0, 'pass')
    .mov64(R1, 1)
    .atomicAdd('dw', R0, 0, R1)
    .label('pass')
    .exitWith(XdpAction.PASS)
    .assemble();
}

describeKernel('bpf: atomic program swap with BPF_LINK_UPDATE', () => {
  let sender: TestNetns;
  let receiver: TestNetns;
  let counts: BpfMap<number, number>;
  let blue: Program;
  let green: Program;
  let link: Link | undefined;

  beforeAll(() => {
    sender = TestNetns.create('us');
    receiver = TestNetns.create('ur');
    createVethPair(
      { netns: sender, ifname: 'us0', address: '198.18.14.1/24' },
      { netns: receiver, ifname: 'ur0', address: '198.18.14.2/24' },
    );
    counts = BpfMap.create({
      type: 'array',
      name: 'counts',
      key: codecs.u32,
      value: codecs.u64n,
      maxEntries: 2,
    });
    blue = Program.load({
      name: 'xdp_blue',
      type: 'xdp',
      instructions: countingProgram(0),
      maps: { counts },
    });
    green = Program.load({
      name: 'xdp_green',
      type: 'xdp',
      instructions: countingProgram(1),
      maps: { counts },
    });
  });

  afterAll(() => {
    link?.close();
    blue?.close();
    green?.close();
    counts?.close();
    sender?.delete();
    receiver?.delete();
  });

  it('swaps the XDP program mid-flood without losing a packet', async () => {
    link = withNetns(receiver.name, () => attachXdp(blue, { ifname: 'ur0' }));
    const total = 2000;
    let swappedAt = -1;
    const exchange = await udpExchange(
      sender,
      receiver,
      { host: '198.18.14.2', port: PORT, count: total, perTick: 2, expectAll: true },
      async () => {
        const deadline = Date.now() + 15_000;
        while ((counts.lookup(0) ?? 0) < total / 4 && Date.now() < deadline) await sleep(2);
        swappedAt = counts.lookup(0) ?? 0;
        link?.update(green, { expected: blue });
      },
    );
    const [blueCount = 0, greenCount = 0] = [counts.lookup(0), counts.lookup(1)];
    console.log(
      `link update: blue saw ${blueCount}, green ${greenCount}, swapped after ${swappedAt}; received ${exchange.unique}/${total}`,
    );

    expect(exchange.sent).toBe(total);
    expect(exchange.unique).toBe(total);
    expect(blueCount + greenCount).toBe(total);
    expect(swappedAt).toBeGreaterThanOrEqual(total / 4);
    expect(blueCount).toBeLessThan(total);
    expect(greenCount).toBeGreaterThan(0);
    expect(link.info().programId).toBe(green.id);
  });

  it('refuses a conditional swap when the expected program is no longer attached', () => {
    expect(() => link?.update(blue, { expected: blue })).toThrow(BpfError);
    expect(link?.info().programId).toBe(green.id);
  });
});
