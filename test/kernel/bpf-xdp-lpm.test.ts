import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  Assembler,
  attachXdp,
  BpfMap,
  codecs,
  PerCpuMap,
  Program,
  R0,
  R1,
  R2,
  R3,
  R4,
  R5,
  R6,
  R10,
  withNetns,
  XdpAction,
  type Link,
} from '../../src/bpf/index.js';
import { describeKernel } from '../support/kernel.js';
import { createVethPair, TestNetns, udpExchange, udpPacket } from './bpf-lab.js';

/** Deny-list action stored in the trie: longest prefix wins, so a /32 "allow" can punch a hole. */
const DENY = 1;
const ALLOW = 0;

/** XDP: drop IPv4 packets whose source matches a DENY prefix in the LPM trie; count drops per CPU. */
function lpmDropProgram() {
  return new Assembler()
    .mov64(R6, R1)
    .ldxw(R2, R6, 0) // data
    .ldxw(R3, R6, 4) // data_end
    .mov64(R4, R2)
    .add64(R4, 34) // Ethernet + minimal IPv4 header
    .jgt(R4, R3, 'pass')
    .ldxh(R5, R2, 12)
    .jne(R5, 0x0008, 'pass') // EtherType 0x0800 as read little-endian
    .ldxw(R5, R2, 26) // saddr, network order
    .st('w', R10, -8, 32) // bpf_lpm_trie_key.prefixlen
    .stx('w', R10, -4, R5)
    .mov64(R2, R10)
    .add64(R2, -8)
    .ldMap(R1, 'deny')
    .call('map_lookup_elem')
    .jeq(R0, 0, 'pass')
    .ldxw(R5, R0, 0)
    .jne(R5, DENY, 'pass')
    .st('w', R10, -12, 0)
    .mov64(R2, R10)
    .add64(R2, -12)
    .ldMap(R1, 'drops')
    .call('map_lookup_elem')
    .jeq(R0, 0, 'drop')
    .mov64(R1, 1)
    .atomicAdd('dw', R0, 0, R1)
    .label('drop')
    .exitWith(XdpAction.DROP)
    .label('pass')
    .exitWith(XdpAction.PASS)
    .assemble();
}

describeKernel('bpf: XDP drop by LPM trie', () => {
  let left: TestNetns;
  let right: TestNetns;
  let deny: BpfMap<string, number>;
  let drops: PerCpuMap<number, number>;
  let program: Program;
  let link: Link | undefined;

  beforeAll(() => {
    left = TestNetns.create('xl');
    right = TestNetns.create('xr');
    createVethPair(
      { netns: left, ifname: 'xl0', address: '198.18.11.1/24' },
      { netns: right, ifname: 'xr0', address: '198.18.11.2/24' },
    );
    deny = BpfMap.create({
      type: 'lpm_trie',
      name: 'deny',
      key: codecs.ipv4LpmKey,
      value: codecs.u32,
      maxEntries: 64,
    });
    drops = PerCpuMap.create({
      type: 'percpu_array',
      name: 'drops',
      key: codecs.u32,
      value: codecs.u64n,
      maxEntries: 1,
    });
    program = Program.load({
      name: 'xdp_lpm_drop',
      type: 'xdp',
      instructions: lpmDropProgram(),
      maps: { deny, drops },
    });
  });

  afterAll(() => {
    link?.close();
    program?.close();
    deny?.close();
    drops?.close();
    left?.delete();
    right?.delete();
  });

  it('decides by longest prefix under PROG_TEST_RUN', () => {
    deny.update('198.18.0.0/15', DENY);
    deny.update('198.18.11.7/32', ALLOW);
    const verdict = (src: string): number =>
      program.testRun({ data: udpPacket(src, '198.18.11.2', 1000, 2000) }).retval;
    expect(verdict('198.18.11.1')).toBe(XdpAction.DROP);
    expect(verdict('198.19.200.1')).toBe(XdpAction.DROP);
    expect(verdict('198.18.11.7')).toBe(XdpAction.PASS);
    expect(verdict('10.0.0.1')).toBe(XdpAction.PASS);
    // Too short to hold an IPv4 header: passed, not read out of bounds.
    expect(program.testRun({ data: Buffer.alloc(20) }).retval).toBe(XdpAction.PASS);
    expect(drops.lookupSum(0)).toBe(2);
    deny.clear();
    drops.update(0, 0);
  });

  it('drops real packets on a veth inside a namespace, and passes them once the prefix goes', async () => {
    link = withNetns(right.name, () => attachXdp(program, { ifname: 'xr0' }));
    expect(link.info()).toMatchObject({ type: 'xdp', programId: program.id });

    deny.update('198.18.11.0/24', DENY);
    const blocked = await udpExchange(left, right, { host: '198.18.11.2', port: 5300, count: 20 });
    expect(blocked.sent).toBe(20);
    expect(blocked.received).toBe(0);
    expect(drops.lookupSum(0)).toBeGreaterThanOrEqual(20);

    expect(deny.delete('198.18.11.0/24')).toBe(true);
    const dropsBefore = drops.lookupSum(0);
    const open = await udpExchange(left, right, {
      host: '198.18.11.2',
      port: 5300,
      count: 20,
      expectAll: true,
    });
    expect(open.unique).toBe(20);
    expect(drops.lookupSum(0)).toBe(dropsBefore);
  });
});
