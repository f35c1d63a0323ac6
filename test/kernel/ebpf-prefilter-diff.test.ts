/**
 * The XDP prefilter against the reference evaluator, both families: random deny-lists (IPv4 and
 * IPv6 prefixes that nest and overlap within and across lists) go through calc into an IR, the
 * node's two tries are synced to them as apply syncs them (the same maps from run to run, so each
 * run also removes what the last one listed), and every probe source — each family's edges of the
 * prefixes the generator draws from, and addresses outside them — is run through the program with
 * BPF_PROG_TEST_RUN. The verdict must be the evaluator's (Oracle.prefilterDrop), and the drop must
 * move exactly the counter of the first list (IR order) holding the source.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Program, XdpAction } from '../../src/bpf/index.js';
import { Oracle } from '../../src/calc/index.js';
import { closeNodeMaps, createNodeMaps, programMaps, type NodeMaps } from '../../src/dataplane/ebpf/maps.js';
import { nodeView } from '../../src/dataplane/ebpf/node.js';
import { prefilterEntries, prefilterProgram } from '../../src/dataplane/ebpf/prefilter.js';
import { applyPrefilterSync, planPrefilterSync } from '../../src/dataplane/ebpf/sync.js';
import type { IR } from '../../src/ir/types.js';
import { describeKernel } from '../support/kernel.js';
import { compileIR, modelOf, namespace, pod, prefilter } from '../support/manifests.js';
import { frame } from './ebpf-frames.js';

const RUNS = Number(process.env.SWITCHYARD_PREFILTER_DIFF_RUNS ?? 200);
const DST_V4 = '198.18.0.10';
const DST_V6 = 'fd00:5957::10';
const OCTETS = [0, 1, 5, 63, 64, 127, 128, 200, 254, 255];
const v4 = (n: number): string => `198.18.7.${n}`;
const v6 = (n: number): string => `fd00:5957:7::${n.toString(16)}`;
/** Sources probed: both families' edges of the generated prefixes, and neighbours outside them. */
const PROBES = [
  ...OCTETS.map(v4),
  '198.18.6.255',
  '198.18.8.1',
  '198.19.0.1',
  ...OCTETS.map(v6),
  'fd00:5957:7::1:0',
  'fd00:5957:7:1::1',
  'fd00:5957:8::1',
  'fd00:5958::1',
  // The IPv4-mapped twin of a listed IPv4 source is not that source.
  '::ffff:198.18.7.5',
];

const octet = fc.constantFrom(...OCTETS);
const cidr = fc.oneof(
  fc.tuple(octet, fc.integer({ min: 24, max: 32 })).map(([n, p]) => `${v4(n)}/${p}`),
  fc.constantFrom('198.18.0.0/16', '198.18.7.0/25'),
  fc.tuple(octet, fc.integer({ min: 120, max: 128 })).map(([n, p]) => `${v6(n)}/${p}`),
  fc.constantFrom('fd00:5957:7::/48', 'fd00:5957::/32', 'fd00:5957:7::/121', 'fd00:5957:7::80/128'),
);
const lists = fc.array(fc.uniqueArray(cidr, { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 4 });

function irOf(cidrLists: readonly (readonly string[])[]): IR {
  return compileIR(
    modelOf([
      namespace('shop'),
      pod('shop', 'web', { node: 'node-1' }),
      ...cidrLists.map((cidrs, i) => prefilter(`list-${i}`, { cidrs: [...cidrs] })),
    ]),
    { nodeCount: 1 },
  );
}

describeKernel('ebpf: the XDP prefilter agrees with the evaluator on both families', () => {
  let maps: NodeMaps;
  let program: Program;

  beforeAll(() => {
    maps = createNodeMaps({ counterSlots: 64, prefilterCapacity: 64 });
    program = Program.load({
      name: 'sy_prefilter',
      type: 'xdp',
      expectedAttachType: 'xdp',
      instructions: prefilterProgram(),
      maps: programMaps(maps),
    });
  });

  afterAll(() => {
    program?.close();
    if (maps) closeNodeMaps(maps);
  });

  it('drops exactly the listed sources of either family, counted under the first list holding them', () => {
    let dropped = { v4: 0, v6: 0 };
    let passed = { v4: 0, v6: 0 };
    let known: Map<string, number> | undefined;
    fc.assert(
      fc.property(lists, (cidrLists) => {
        const ir = irOf(cidrLists);
        const node = ir.nodes[0]?.name as string;
        const view = nodeView(ir, node);
        const desired = prefilterEntries(view.prefilters);
        applyPrefilterSync(maps, planPrefilterSync(maps, desired, known));
        known = desired;
        const oracle = new Oracle(ir);
        for (const src of PROBES) {
          const family = src.includes(':') ? 'v6' : 'v4';
          const expected = oracle.prefilterDrop(node, src);
          const index = view.prefilters.find((l) => l.name === expected)?.index;
          const before = index === undefined ? undefined : maps.pfCounters.lookupSum(index);
          const r = program.testRun({
            data: frame({
              src,
              dst: family === 'v6' ? DST_V6 : DST_V4,
              protocol: 'TCP',
              sport: 40000,
              dport: 80,
            }),
          });
          const why = `${src} against ${JSON.stringify(cidrLists)}`;
          expect(r.retval, why).toBe(expected ? XdpAction.DROP : XdpAction.PASS);
          if (index !== undefined)
            expect(maps.pfCounters.lookupSum(index)?.packets, why).toBe((before?.packets ?? 0) + 1);
          if (expected) dropped = { ...dropped, [family]: dropped[family] + 1 };
          else passed = { ...passed, [family]: passed[family] + 1 };
        }
      }),
      { numRuns: RUNS },
    );
    // Not trivial: each family saw listed and unlisted sources.
    for (const family of ['v4', 'v6'] as const) {
      expect(dropped[family], family).toBeGreaterThan(RUNS);
      expect(passed[family], family).toBeGreaterThan(RUNS);
    }
  });

  it('passes an IPv6 frame too short to hold its source on to tc, and non-IP frames', () => {
    const full = frame({ src: v6(1), dst: DST_V6, protocol: 'TCP', sport: 1, dport: 2 });
    maps.pfTrie6.update('fd00:5957:7::/48', 0);
    expect(program.testRun({ data: full }).retval).toBe(XdpAction.DROP);
    expect(program.testRun({ data: full.subarray(0, 14 + 39) }).retval).toBe(XdpAction.PASS);
    const arp = Buffer.from(full);
    arp.writeUInt16BE(0x0806, 12);
    expect(program.testRun({ data: arp }).retval).toBe(XdpAction.PASS);
  });
});
