/**
 * Flows on the iptables backend without a kernel: what the rules and sets look like (rule-text.ts,
 * render-sets.ts), what a packet does through them (the interpreter: counted once in its flow
 * set and once by counters, the same verdict when the set is full), how an apply treats flow sets
 * (created in place, never refilled or swapped, destroyed with the last rule naming them), and
 * reading them back (flow-counters.ts) into the aggregates the kit emits.
 */
import { describe, expect, it } from 'vitest';
import type { EventSink, FlowCountsEvent } from '../../src/dataplane/events.js';
import { diffPlan, kernelStateAfter } from '../../src/dataplane/iptables/diff.js';
import {
  ElementLives,
  fullFromSave,
  parseFlowSave,
  snapshotOf,
} from '../../src/dataplane/iptables/flow-counters.js';
import { IptablesBackend } from '../../src/dataplane/iptables/index.js';
import type { KernelState } from '../../src/dataplane/iptables/kernel.js';
import { endpointChain, flowSetName, trafficSetName } from '../../src/dataplane/iptables/names.js';
import type { NodePlan } from '../../src/dataplane/iptables/plan.js';
import { planForNode } from '../../src/dataplane/iptables/render.js';
import { AggregateDrain, flowRuleTag } from '../../src/dataplane/netfilter/aggregates.js';
import type { IR } from '../../src/ir/types.js';
import { Cluster, globalPolicy, namespace, networkPolicy, pod } from '../support/manifests.js';
import { runChain } from './iptables-interpreter.js';

const DEFAULT_DENY = 'shop/db/ingress/default';
const ALLOW_RULE = 'np:shop/db-from-web/ingress/0';
const LOG_RULE = 'gp:audit/ingress/0';

function irOf(policyMode: 'walk' | 'table' = 'walk'): IR {
  return new Cluster(
    [
      namespace('shop'),
      pod('shop', 'web', { labels: { app: 'web' }, ip: '198.18.1.1', node: 'node-a' }),
      pod('shop', 'db', { labels: { app: 'db' }, ip: '198.18.1.2', node: 'node-a' }),
      networkPolicy('shop', 'db-from-web', {
        podSelector: { matchLabels: { app: 'db' } },
        ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port: 5432 }] }],
      }),
      globalPolicy('audit', {
        order: 1,
        selector: { matchLabels: { app: 'db' } },
        ingress: [{ action: 'Log' }],
      }),
    ],
    { policyMode },
  ).ir;
}

function chain(plan: NodePlan, name: string, family: 4 | 6 = 4): readonly string[] {
  const t = plan.tables.find((x) => x.family === family && x.table === 'filter');
  const c = t?.chains.find((x) => x.name === name);
  if (!c) throw new Error(`no chain ${name}`);
  return c.rules;
}

const allRules = (plan: NodePlan): string =>
  plan.tables.flatMap((t) => t.chains.flatMap((c) => [c.name, ...c.rules])).join('\n');

describe('iptables flows: rules', () => {
  const plan = planForNode(irOf(), 'node-a');
  const denySet = flowSetName(4, flowRuleTag('deny', DEFAULT_DENY));

  it('names each deciding rule’s set after its tag, per family, within ipset’s 31 characters', () => {
    expect(denySet).toMatch(/^sy-flow4-[0-9a-f]{8}$/);
    expect(flowSetName(6, 0xab)).toBe('sy-flow6-000000ab');
    expect(trafficSetName(6)).toBe('sy-flow6-traffic');
    for (const s of plan.sets) expect(`${s.name}-tmp`.length).toBeLessThanOrEqual(31);
  });

  it('decides with a counting match, else an add, else the same verdict through SY-FLOWFULL', () => {
    const rules = chain(plan, endpointChain('shop/db', 'ingress', 'main'));
    const i = rules.findIndex((r) => r.includes(denySet));
    expect(rules.slice(i)).toEqual([
      `-m set --match-set ${denySet} src,dst,dst -m comment --comment "default-deny" -j DROP`,
      `-j SET --add-set ${denySet} src,dst,dst`,
      `-m set --match-set ${denySet} src,dst,dst ! --update-counters -m comment --comment "default-deny" -j DROP`,
      '-m comment --comment "default-deny" -j SY-FLOWFULL-DROP',
    ]);
    expect(chain(plan, 'SY-FLOWFULL-DROP')).toEqual(['-j DROP']);
    expect(chain(plan, 'SY-FLOWFULL-ALLOW')).toEqual(['-j MARK --set-xmark 0x10000/0x10000']);
    expect(chain(plan, 'SY-FLOWFULL-LOG')).toEqual(['-j RETURN']);
    expect(chain(plan, 'SY-FLOWFULL-TRAFFIC')).toEqual(['-j ACCEPT']);
  });

  it('counts established packets of the original direction per 4-tuple before accepting them', () => {
    const rules = chain(plan, endpointChain('shop/db', 'ingress', 'main'));
    const est = '-m conntrack --ctstate ESTABLISHED --ctdir ORIGINAL';
    expect(rules.slice(0, 5)).toEqual([
      `${est} -m set --match-set sy-flow4-traffic src,dst,dst -j ACCEPT`,
      `${est} -j SET --add-set sy-flow4-traffic src,dst,dst`,
      `${est} -m set ! --match-set sy-flow4-traffic src,dst,dst ! --update-counters -j SY-FLOWFULL-TRAFFIC`,
      '-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
      '-m conntrack --ctstate INVALID -j DROP',
    ]);
    expect(chain(plan, endpointChain('shop/db', 'egress', 'main'), 6)[0]).toContain('sy-flow6-traffic');
  });

  it('aggregates Log rules under verdict log, and keeps going', () => {
    const logSet = flowSetName(4, flowRuleTag('log', LOG_RULE));
    expect(chain(plan, endpointChain('shop/db', 'ingress', 'global'))).toEqual([
      `-m set --match-set ${logSet} src,dst,dst -m comment --comment "${LOG_RULE}"`,
      `-m set ! --match-set ${logSet} src,dst,dst ! --update-counters -m comment --comment "${LOG_RULE}" -j SET --add-set ${logSet} src,dst,dst`,
      `-m set ! --match-set ${logSet} src,dst,dst ! --update-counters -j SY-FLOWFULL-LOG`,
    ]);
  });

  it('with flowLogs: false renders no flow rules, chains or sets', () => {
    const off = planForNode(irOf(), 'node-a', { flowLogs: false });
    expect(allRules(off)).not.toMatch(/sy-flow|SET|FLOWFULL|NFLOG/);
    expect(off.sets.filter((s) => s.flow)).toEqual([]);
    const text = new IptablesBackend({ flowLogs: false }).render(irOf('table'), 'node-a').text;
    expect(text).not.toMatch(/sy-flow|FLOWFULL|--add-set/);
  });
});

describe('iptables flows: sets', () => {
  const plan = planForNode(irOf(), 'node-a');
  const flowSets = plan.sets.filter((s) => s.flow);

  it('makes exactly the sets the rules name, counted and timed out, in both families', () => {
    const named = new Set([...allRules(plan).matchAll(/--(?:match|add)-set (sy-flow\S+)/g)].map((m) => m[1]));
    expect(new Set(flowSets.map((s) => s.name))).toEqual(named);
    expect(flowSets.map((s) => s.name)).toEqual(
      expect.arrayContaining([
        trafficSetName(4),
        trafficSetName(6),
        flowSetName(4, flowRuleTag('allow', ALLOW_RULE)),
        flowSetName(6, flowRuleTag('deny', DEFAULT_DENY)),
        flowSetName(4, flowRuleTag('log', LOG_RULE)),
        flowSetName(4, flowRuleTag('allow', 'shop/web/egress/default')),
      ]),
    );
    for (const s of flowSets) {
      expect(s.type).toBe('hash:ip,port,ip');
      expect(s.members).toEqual([]);
    }
    expect(
      flowSets.find((s) => s.name === flowSetName(4, flowRuleTag('deny', DEFAULT_DENY)))?.description,
    ).toBe(`flows: deny by ${DEFAULT_DENY}`);
  });

  it('creates them in place in compile output, with counters and a timeout', () => {
    const text = new IptablesBackend().render(irOf(), 'node-a').text;
    expect(text).toContain(
      'create sy-flow4-traffic hash:ip,port,ip family inet hashsize 1024 maxelem 65536 timeout 60 counters',
    );
    expect(text).toContain('create sy-flow6-traffic hash:ip,port,ip family inet6 hashsize 1024');
    expect(text).not.toMatch(/sy-flow\S*-tmp|swap \S+ sy-flow/);
  });

  function kernelWith(p: NodePlan): KernelState {
    return kernelStateAfter(p);
  }

  it('never refills a flow set the kernel has, even without a previous plan (an agent restart)', () => {
    const kernel = kernelWith(plan);
    const adopted = diffPlan(plan, undefined, kernel);
    expect(adopted.sets.filter((s) => s.flow)).toEqual([]);
    kernel.sets.delete(trafficSetName(4));
    const lost = diffPlan(plan, plan, kernel);
    expect(lost.sets.map((s) => s.name)).toEqual([trafficSetName(4)]);
    expect(lost.missingSets).toEqual(new Set([trafficSetName(4)]));
  });

  it('swaps in an empty set when its parameters change, and destroys those no rule names', () => {
    const small = planForNode(irOf(), 'node-a', { flowSetMaxElem: 16 });
    const resized = diffPlan(small, plan, kernelWith(plan));
    expect(resized.sets.map((s) => s.name).sort()).toEqual(flowSets.map((s) => s.name).sort());
    expect(resized.missingSets.size).toBe(0);
    const off = diffPlan(planForNode(irOf(), 'node-a', { flowLogs: false }), plan, kernelWith(plan));
    expect(off.obsoleteSets.sort()).toEqual(flowSets.map((s) => s.name).sort());
  });
});

describe('iptables flows: a packet through the rules', () => {
  for (const mode of ['walk', 'table'] as const) {
    const plan = planForNode(irOf(mode), 'node-a');
    const dbIngress = endpointChain('shop/db', 'ingress', 'main');

    it(`${mode}: counts the first packet once in its set and once by counters`, () => {
      const allowed = runChain(plan, 4, dbIngress, {
        remote: '198.18.1.1',
        direction: 'ingress',
        protocol: 'TCP',
        dport: 5432,
      });
      expect(allowed.verdict).toBe('allow');
      expect(allowed.counted).toEqual([LOG_RULE, ALLOW_RULE]);
      expect(allowed.aggregated).toEqual([
        flowSetName(4, flowRuleTag('log', LOG_RULE)),
        flowSetName(4, flowRuleTag('allow', ALLOW_RULE)),
      ]);
      expect(allowed.notAggregated).toEqual([]);
    });

    it(`${mode}: gives the same verdicts and counts, unaggregated, when every flow set is full`, () => {
      for (const [dport, verdict] of [
        [5432, 'allow'],
        [80, 'deny'],
      ] as const) {
        const p = { remote: '198.18.1.1', direction: 'ingress', protocol: 'TCP', dport } as const;
        const normal = runChain(plan, 4, dbIngress, p);
        const full = runChain(plan, 4, dbIngress, p, { flowSetsFull: true });
        expect(full.verdict).toBe(verdict);
        expect(normal.verdict).toBe(verdict);
        expect(full.counted).toEqual(normal.counted);
        expect(full.aggregated).toEqual([]);
        expect(full.notAggregated).toEqual([
          'SY-FLOWFULL-LOG',
          verdict === 'allow' ? 'SY-FLOWFULL-ALLOW' : 'SY-FLOWFULL-DROP',
        ]);
      }
    });
  }
});

const SAVED = `create sy-flow4-0000abcd hash:ip,port,ip family inet hashsize 1024 maxelem 65536 timeout 60 counters bucketsize 12 initval 0x1
add sy-flow4-0000abcd 198.18.0.2,tcp:5432,198.18.0.4 timeout 58 packets 3 bytes 180
add sy-flow4-0000abcd 198.18.0.2,icmp:echo-request,198.18.0.4 timeout 12 packets 1 bytes 84
add sy-flow4-0000abcd 198.18.0.2,gre:0,198.18.0.4 timeout 30 packets 2 bytes 200
add sy-flow4-0000abcd 198.18.0.2,253:0,198.18.0.4 timeout 30 packets 1 bytes 50
create sy-flow6-traffic hash:ip,port,ip family inet6 hashsize 1024 maxelem 65536 timeout 60 counters bucketsize 12 initval 0x2
add sy-flow6-traffic fd00:5957::2,udp:53,fd00:5957::4 timeout 59 packets 7 bytes 700
create sy-a2c94d3ec040 hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x3
add sy-a2c94d3ec040 198.18.0.2/31
`;

describe('iptables flows: reading the sets back', () => {
  it('parses elements of flow sets only, with protocol numbers and destination ports', () => {
    const { elements, timeouts } = parseFlowSave(SAVED);
    expect(timeouts.get('sy-flow4-0000abcd')).toBe(60);
    expect(
      elements.map((e) => [e.tag, e.family, e.src, e.protocol, e.dport, e.dst, e.packets, e.bytes]),
    ).toEqual([
      [0xabcd, 4, '198.18.0.2', 6, 5432, '198.18.0.4', 3, 180],
      [0xabcd, 4, '198.18.0.2', 1, 0, '198.18.0.4', 1, 84],
      [0xabcd, 4, '198.18.0.2', 47, 0, '198.18.0.4', 2, 200],
      [0xabcd, 4, '198.18.0.2', 253, 0, '198.18.0.4', 1, 50],
      [undefined, 6, 'fd00:5957::2', 17, 53, 'fd00:5957::4', 7, 700],
    ]);
  });

  it('sums the SY-FLOWFULL rule counters and nothing else', () => {
    const save = [
      '[4:240] -A SY-FLOWFULL-ALLOW -j MARK --set-xmark 0x10000/0x10000',
      '[1:60] -A SY-FLOWFULL-DROP -j DROP',
      '[9:900] -A SY-FW-0123456789ab -m comment --comment "default-deny" -j SY-FLOWFULL-DROP',
      '[2:100] -A SY-FLOWFULL-TRAFFIC -j ACCEPT',
    ].join('\n');
    expect(fullFromSave(save)).toBe(7);
  });

  it('reads the same counters from the chain listings (iptables -v -S)', () => {
    const listed = [
      '-N SY-FLOWFULL-ALLOW',
      '-A SY-FLOWFULL-ALLOW -c 4 240 -j MARK --set-xmark 0x10000/0x10000',
      '-A SY-FLOWFULL-DROP -c 1 60 -j DROP',
      '-A SY-FW-0123456789ab -m comment --comment "default-deny" -c 9 900 -j SY-FLOWFULL-DROP',
      '-A SY-FLOWFULL-TRAFFIC -c 2 100 -j ACCEPT',
    ].join('\n');
    expect(fullFromSave(listed)).toBe(7);
  });

  it('gives an element a new id when it was re-created between two reads, not when its timeout ticks', () => {
    const lives = new ElementLives();
    const at = (left: number, packets: number) =>
      parseFlowSave(
        `create sy-flow4-traffic hash:ip,port,ip family inet timeout 60 counters\nadd sy-flow4-traffic 198.18.0.2,tcp:80,198.18.0.4 timeout ${left} packets ${packets} bytes ${packets * 100}`,
      );
    const read = (now: number, left: number, packets: number): string => {
      const { elements, timeouts } = at(left, packets);
      return lives.ids(elements, timeouts, now)[0] as string;
    };
    const first = read(0, 60, 1);
    expect(read(1_000, 59, 5)).toBe(first);
    expect(read(1_900, 59, 6)).toBe(first); // a second boundary not yet crossed
    expect(read(59_000, 1, 900)).toBe(first);
    const second = read(60_500, 59, 1000); // timed out at 60 s and re-created: more than before
    expect(second).not.toBe(first);
    expect(read(61_500, 58, 1100)).toBe(second);
  });

  it('turns a re-created element’s counters into growth, not a loss (through the kit)', () => {
    const events: FlowCountsEvent[] = [];
    const sink: EventSink = { event: (e) => e.kind === 'counts' && events.push(e), lost: () => undefined };
    const ir = {
      endpoints: [{ id: 'x/a', node: 'n', addresses: ['198.18.0.4'] }],
      ruleSets: [
        {
          endpoint: 'x/a',
          direction: 'ingress',
          globalRules: [],
          kubernetesRules: [],
          kubernetesDefault: 'deny',
        },
      ],
    } as unknown as IR;
    const tag = flowRuleTag('deny', 'x/a/ingress/default').toString(16).padStart(8, '0');
    const drain = new AggregateDrain('n', () => ir, sink);
    const lives = new ElementLives();
    const take = (now: number, left: number, packets: number): void => {
      const { elements, timeouts } = parseFlowSave(
        `create sy-flow4-${tag} hash:ip,port,ip family inet timeout 60 counters\nadd sy-flow4-${tag} 198.18.0.9,tcp:80,198.18.0.4 timeout ${left} packets ${packets} bytes ${packets * 60}`,
      );
      drain.take(snapshotOf(elements, lives.ids(elements, timeouts, now), 0), now);
    };
    take(0, 60, 10);
    take(60_400, 60, 50); // the old life ended with 10 counted; the new one has 50 already
    expect(events.map((e) => [e.verdict, e.rule, e.packets])).toEqual([
      ['deny', 'x/a/ingress/default', 10],
      ['deny', 'x/a/ingress/default', 50],
    ]);
  });
});
