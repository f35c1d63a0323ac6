/**
 * The eBPF backend's correctness story: for random models (every NetworkPolicy and GlobalPolicy
 * feature the arbitraries know), the generated programs are loaded with their maps filled as
 * apply fills them and every packet of a grid (each local endpoint × direction × remote address
 * among the pods and outside addresses × TCP/UDP ports 79–81 and ICMP) is run through
 * BPF_PROG_TEST_RUN. The verdict must be the reference evaluator's, the counter of the rule that
 * decided must move, and conntrack must behave: an allowed packet's reply passes the opposite
 * direction's program whatever its policy, a denied packet leaves no entry.
 */
import fc from 'fast-check';
import { afterAll, expect, it } from 'vitest';
import { Oracle, type SideVerdict } from '../../src/calc/index.js';
import type { Direction, Endpoint, IR, Protocol, RuleSet } from '../../src/ir/types.js';
import type { Model } from '../../src/model/types.js';
import { slotKey } from '../../src/dataplane/ebpf/node.js';
import { defaultRuleId } from '../../src/ir/rule-ids.js';
import { modelArb } from '../support/arbitraries.js';
import { describeKernel } from '../support/kernel.js';
import { frame, NodeHarness, type FrameSpec, type Verdict } from './ebpf-frames.js';
import { compileIR } from '../support/manifests.js';

const RUNS = Number(process.env.SWITCHYARD_EBPF_DIFF_RUNS ?? 150);
/** Around the 198.18.0.0/24–/29 blocks and /30 excepts the arbitraries cut through the pods. */
const OUTSIDE = ['198.18.0.1', '198.18.0.5', '198.18.0.7', '198.18.0.200', '198.18.3.9', '198.19.0.5'];
const PROBES: { protocol: Protocol; port?: number }[] = [
  { protocol: 'TCP', port: 79 },
  { protocol: 'TCP', port: 80 },
  { protocol: 'TCP', port: 81 },
  { protocol: 'UDP', port: 79 },
  { protocol: 'UDP', port: 80 },
  { protocol: 'UDP', port: 81 },
  { protocol: 'ICMP' },
];

/** Fields that must not change a verdict, varied per packet. */
const shapeArb = fc.record({
  sport: fc.integer({ min: 1, max: 65535 }),
  ipOptionWords: fc.constantFrom(0, 0, 0, 1, 3),
  /** A bare ACK looks like a connection picked up mid-stream: judged as new all the same. */
  tcpFlags: fc.constantFrom(0x02, 0x02, 0x02, 0x10),
  icmpId: fc.integer({ min: 0, max: 65535 }),
});
type PacketShape = typeof shapeArb extends fc.Arbitrary<infer T> ? T : never;

const LABELS = fc.dictionary(
  fc.constantFrom('pod', 'app', 'tier'),
  fc.constantFrom('a', 'b', 'web', 'db', 'x'),
  {
    maxKeys: 3,
  },
);

/** What follows a model: another model, or the same pods relabelled (set membership changes only). */
const nextModelArb: fc.Arbitrary<(m: Model) => Model> = fc.oneof(
  modelArb.map((other) => () => other),
  fc.array(LABELS, { minLength: 5, maxLength: 5 }).map((labels) => (m: Model) => ({
    ...m,
    pods: m.pods.map((p, i) => ({ ...p, labels: labels[i] ?? {} })),
  })),
);

function describeRuleSet(ir: IR, rs: RuleSet): string {
  const sets = new Set<string>();
  for (const r of [...rs.globalRules, ...rs.kubernetesRules]) {
    if (r.peerSet) sets.add(r.peerSet);
    if (r.peerPortSet) sets.add(r.peerPortSet);
  }
  return JSON.stringify(
    {
      ruleSet: rs,
      ipSets: ir.ipSets.filter((s) => sets.has(s.id)),
      ipPortSets: ir.ipPortSets.filter((s) => sets.has(s.id)),
    },
    null,
    1,
  );
}

function packetFor(
  local: string,
  remote: string,
  direction: Direction,
  probe: { protocol: Protocol; port?: number },
  shape: PacketShape,
): FrameSpec {
  const [src, dst] = direction === 'egress' ? [local, remote] : [remote, local];
  return {
    src,
    dst,
    protocol: probe.protocol,
    sport: shape.sport,
    dport: probe.port ?? 0,
    tcpFlags: shape.tcpFlags,
    icmpId: shape.icmpId,
    ipOptionWords: shape.ipOptionWords,
  };
}

function replyOf(p: FrameSpec): FrameSpec {
  return {
    ...p,
    src: p.dst,
    dst: p.src,
    sport: p.dport ?? 0,
    dport: p.sport ?? 0,
    tcpFlags: 0x12,
    icmpType: 0,
  };
}

function slotOf(h: NodeHarness, rs: RuleSet, verdict: SideVerdict): number {
  const rule = verdict.rule ? verdict.rule.id : defaultRuleId(rs.endpoint, rs.direction);
  const slot = h.alloc.slots[slotKey({ endpoint: rs.endpoint, direction: rs.direction, rule })];
  if (slot === undefined) throw new Error(`no slot for ${rule}`);
  return slot;
}

function packets(h: NodeHarness, slot: number): number {
  return h.maps.counters.lookupSum(slot)?.packets ?? 0;
}

interface Tally {
  models: number;
  packets: number;
  allowed: number;
  denied: number;
  replies: number;
}

function checkNode(
  ir: IR,
  oracle: Oracle,
  node: string,
  shapes: PacketShape[],
  tally: Tally,
  before?: IR,
): void {
  const local = ir.endpoints.filter((e) => e.node === node);
  if (local.length === 0) return;
  const remotes = [...new Set([...ir.endpoints.flatMap((e: Endpoint) => e.addresses), ...OUTSIDE])];
  // With `before`: built for another model first, then updated the way apply updates a node.
  const h = new NodeHarness(before ?? ir, node);
  try {
    if (before) {
      h.update(ir);
      h.clearConntrack();
    }
    let n = 0;
    for (const ep of local) {
      const address = ep.addresses[0] as string;
      for (const direction of ['ingress', 'egress'] as const) {
        const rs = oracle.ruleSet(ep.id, direction);
        for (const remote of remotes) {
          for (const probe of PROBES) {
            const shape = shapes[n++ % shapes.length] as PacketShape;
            const spec = packetFor(address, remote, direction, probe, shape);
            const expected = oracle.evaluateSide(ep.id, direction, remote, probe.protocol, probe.port);
            const slot = slotOf(h, rs, expected);
            const before = packets(h, slot);
            const got: Verdict = h.run(ep.id, direction, frame(spec));
            tally.packets++;
            const want: Verdict = expected.allowed ? 'pass' : 'drop';
            const fail = (what: string): never => {
              throw new Error(
                `${what}\nendpoint ${ep.id} (${address}) ${direction}, packet ${JSON.stringify(spec)}\n` +
                  `ebpf: ${got}, oracle: ${want} (${expected.reason}${expected.rule ? ` by ${expected.rule.id}` : ''})\n` +
                  describeRuleSet(ir, rs),
              );
            };
            if (got !== want) fail('verdict differs from the reference evaluator');
            if (packets(h, slot) !== before + 1)
              fail(`counter slot ${slot} of the deciding rule did not move`);
            const ctEmpty = h.maps.ct.keys().next().done === true;
            if (!expected.allowed) {
              tally.denied++;
              if (!ctEmpty) fail('a denied packet left a conntrack entry');
              continue;
            }
            tally.allowed++;
            if (ctEmpty && !(probe.protocol === 'TCP' && (shape.tcpFlags & 0x04) !== 0))
              fail('an allowed packet created no conntrack entry');
            // Replies pass the other direction's program, even where its policy would deny them.
            const other: Direction = direction === 'ingress' ? 'egress' : 'ingress';
            const reply = replyOf(spec);
            if (h.run(ep.id, other, frame(reply)) !== 'pass')
              fail(`the reply ${JSON.stringify(reply)} was dropped`);
            tally.replies++;
            h.clearConntrack();
          }
        }
      }
    }
  } finally {
    h.close();
  }
}

describeKernel('ebpf: generated programs agree with the reference evaluator (PROG_TEST_RUN)', () => {
  const tally: Tally = { models: 0, packets: 0, allowed: 0, denied: 0, replies: 0 };

  afterAll(() => {
    // The volume behind "hundreds of cases", for the CI log.
    console.log(`ebpf-diff: ${JSON.stringify(tally)}`);
  });

  it('gives the evaluator verdict for every packet of the grid, counts the deciding rule, tracks replies', () => {
    fc.assert(
      fc.property(modelArb, fc.array(shapeArb, { minLength: 8, maxLength: 8 }), (model, shapes) => {
        const ir = compileIR(model);
        const oracle = new Oracle(ir);
        tally.models++;
        for (const node of ir.nodes) checkNode(ir, oracle, node.name, shapes, tally);
      }),
      { numRuns: RUNS },
    );
    expect(tally.packets).toBeGreaterThan(RUNS * 50);
    expect(tally.allowed).toBeGreaterThan(0);
    expect(tally.denied).toBeGreaterThan(0);
  });

  it('still agrees after an incremental update from another model (stable numbers, members by difference)', () => {
    fc.assert(
      fc.property(
        modelArb,
        nextModelArb,
        fc.array(shapeArb, { minLength: 8, maxLength: 8 }),
        (first, next, shapes) => {
          const model = next(first);
          const before = compileIR(first);
          const ir = compileIR(model);
          const oracle = new Oracle(ir);
          tally.models++;
          for (const node of ir.nodes) checkNode(ir, oracle, node.name, shapes, tally, before);
        },
      ),
      { numRuns: Math.ceil(RUNS / 3) },
    );
  });
});
