/**
 * Table mode under traffic: a one-rule change (which renumbers the classes of a/one's ingress
 * table) is applied back and forth while connections are opened continuously; a pair whose
 * verdict is the same before and after never sees anything else (no false pass, no false drop).
 * After the change only the new generation of table sets exists, and the counters of the rules
 * that decide (the new one included) and of the default move, one per connection.
 */
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { IptablesBackend } from '../../src/dataplane/iptables/index.js';
import { planForNode } from '../../src/dataplane/iptables/render.js';
import { lookup } from '../../src/ir/table-lookup.js';
import type { IR } from '../../src/ir/types.js';
import { describeKernel } from '../support/kernel.js';
import { Cluster, namespace, networkPolicy, pod, type Manifest } from '../support/manifests.js';
import { inNs, IptLab, type Target } from './iptables-lab.js';

const PORTS = [{ containerPort: 80 }, { containerPort: 81 }];

function cluster(extra: Record<string, unknown>[]): IR {
  const manifests: Manifest[] = [
    namespace('a', { team: 'a' }),
    namespace('b', { team: 'b' }),
    pod('a', 'one', { labels: { app: 'one' }, ip: '198.18.6.1', node: 'node-1', ports: PORTS }),
    pod('a', 'two', { labels: { app: 'two' }, ip: '198.18.6.2', node: 'node-1', ports: PORTS }),
    pod('b', 'one', { labels: { app: 'one' }, ip: '198.18.6.3', node: 'node-2', ports: PORTS }),
    pod('b', 'two', { labels: { app: 'two' }, ip: '198.18.6.4', node: 'node-2', ports: PORTS }),
    networkPolicy('a', 'one-in', {
      podSelector: { matchLabels: { app: 'one' } },
      ingress: [
        { from: [{ namespaceSelector: { matchLabels: { team: 'a' } } }], ports: [{ port: 80 }] },
        { from: [{ ipBlock: { cidr: '198.18.6.4/32' } }], ports: [{ port: 81 }] },
        ...extra,
      ],
    }),
  ];
  return new Cluster(manifests, { policyMode: 'table' }).ir;
}

const OLD = cluster([]);
/** One rule more: b/one may reach a/one on port 81. */
const NEW = cluster([
  { from: [{ namespaceSelector: {}, podSelector: { matchLabels: { app: 'one' } } }], ports: [{ port: 81 }] },
]);

describeKernel('iptables table mode: a one-rule change under traffic', () => {
  const lab = new IptLab('swap', OLD);
  const backend = new IptablesBackend({ mode: 'nft' });
  const node1 = (): ReturnType<IptLab['target']> => lab.target('node-1');
  const to = (port: number): Target => ({ host: lab.address('a/one'), port, protocol: 'TCP' });

  beforeAll(async () => {
    await lab.up([80, 81]);
    for (const t of lab.targets()) await backend.apply(t, OLD);
  });

  afterAll(async () => {
    await lab.down();
  });

  it('never lets a packet see a half-written table while the change goes back and forth', async () => {
    const results: { what: string; got: boolean; want: boolean }[] = [];
    let stop = false;
    const traffic = (async () => {
      while (!stop) {
        const [allowed, denied] = await Promise.all([
          lab.probe(
            { pod: 'a/two' },
            Array.from({ length: 8 }, () => to(80)),
            1000,
          ),
          lab.probe(
            { pod: 'b/two' },
            Array.from({ length: 8 }, () => to(80)),
            400,
          ),
        ]);
        for (const got of allowed ?? []) results.push({ what: 'a/two → a/one:80', got, want: true });
        for (const got of denied ?? []) results.push({ what: 'b/two → a/one:80', got, want: false });
      }
    })();
    const times: number[] = [];
    let current = OLD;
    for (let i = 0; i < 8; i++) {
      const next = current === OLD ? NEW : OLD;
      const t0 = performance.now();
      const r = await backend.apply(node1(), next, current);
      times.push(performance.now() - t0);
      expect(r.changed.some((c) => /^ipset sy-ti4-.* \(destroyed\)$/.test(c))).toBe(true);
      current = next;
      await new Promise((res) => setTimeout(res, 150));
    }
    stop = true;
    await traffic;
    console.log(
      `iptables table mode: one-rule change applied in ${times.map((t) => t.toFixed(0)).join(', ')} ms; ${results.length} connections meanwhile`,
    );
    expect(results.length).toBeGreaterThan(10);
    expect(results.filter((r) => r.got !== r.want)).toEqual([]);
    // Leave NEW in force for the next tests.
    if (current !== NEW) await backend.apply(node1(), NEW, current);
  });

  it('keeps only the new generation of table sets', () => {
    const want = planForNode(NEW, 'node-1')
      .sets.map((s) => s.name)
      .sort();
    const have = inNs(node1().netns, 'ipset', ['list', '-n'])
      .split('\n')
      .filter((n) => n.startsWith('sy-'))
      .sort();
    expect(have).toEqual(want);
    expect(have.every((n) => n.startsWith('sy-t') || n.startsWith('sy-flow'))).toBe(true);
  });

  it('moves the counter of the deciding rule, the new one included, and of the default', async () => {
    const rs = NEW.ruleSets.find((r) => r.endpoint === 'a/one' && r.direction === 'ingress');
    if (!rs?.table) throw new Error('a/one has no ingress table');
    const ruleOf = (from: string, port: number): string => {
      return lookup(rs.table as NonNullable<typeof rs.table>, lab.address(from), 'TCP', port).rule;
    };
    const cases = [
      { from: 'b/one', port: 81, allowed: true },
      { from: 'a/two', port: 80, allowed: true },
      { from: 'b/two', port: 81, allowed: true },
      { from: 'b/one', port: 80, allowed: false },
    ];
    const count = async (rule: string): Promise<number> =>
      (await backend.counters(node1())).find(
        (c) => c.endpoint === 'a/one' && c.direction === 'ingress' && c.rule === rule,
      )?.packets ?? 0;
    for (const c of cases) {
      const rule = ruleOf(c.from, c.port);
      const before = await count(rule);
      expect(await lab.probe({ pod: c.from }, [to(c.port)]), `${c.from} → a/one:${c.port}`).toEqual([
        c.allowed,
      ]);
      expect((await count(rule)) - before, rule).toBe(1);
    }
    // The new rule decided b/one:81, a rule of its own.
    const added = ruleOf('b/one', 81);
    expect(added).not.toBe(ruleOf('b/two', 81));
    expect(added).not.toBe('a/one/ingress/default');
  });
});
