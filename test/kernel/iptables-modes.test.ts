/**
 * Both iptables flavours (iptables-nft, Debian's default, and iptables-legacy) enforce the same
 * plan: global tier (Log, Pass, Deny) before NetworkPolicies, and the prefilter in raw PREROUTING
 * that drops deny-listed sources arriving from the fabric but not from pods on the same node.
 * Every verdict is compared with the reference evaluator, including connections from a host
 * outside the cluster; log and prefilter counters move; remove() cleans that flavour's tables.
 *
 * The prefilter is stateless (raw table, before conntrack, like XDP), so it also drops the
 * *replies* of a connection a pod opens towards a deny-listed address on another node; the
 * evaluator models that (Verdict.prefilterReply), and these tests check the kernel agrees.
 * Each flavour runs in both policy modes (rule walk, decision tables).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Oracle, reachMatrix } from '../../src/calc/index.js';
import { IptablesBackend, type IptablesMode } from '../../src/dataplane/iptables/index.js';
import { POLICY_MODES } from '../../src/ir/decision-table.js';
import { describeKernel } from '../support/kernel.js';
import { Cluster, globalPolicy, namespace, networkPolicy, pod, prefilter } from '../support/manifests.js';
import { inNs, IptLab, OUTSIDE_ADDRESS, OUTSIDE_LISTED, type Target } from './iptables-lab.js';

const PORTS = [
  { containerPort: 80, protocol: 'TCP' as const },
  { containerPort: 81, protocol: 'UDP' as const },
];

const manifests = [
  namespace('shop', { team: 'shop' }),
  namespace('other', { team: 'other' }),
  pod('shop', 'web', { labels: { app: 'web' }, ip: '198.18.4.1', node: 'node-1', ports: PORTS }),
  pod('shop', 'db', { labels: { app: 'db' }, ip: '198.18.4.2', node: 'node-1', ports: PORTS }),
  pod('other', 'web', { labels: { app: 'web' }, ip: '198.18.4.4', node: 'node-2', ports: PORTS }),
  // On the deny-list: dropped where it enters node-1 from the fabric, not on its own node.
  pod('other', 'client', { labels: { app: 'client' }, ip: '198.18.200.9', node: 'node-2', ports: PORTS }),
  prefilter('blocklist', { cidrs: ['198.18.200.0/24'] }),
  globalPolicy('guard', {
    order: 10,
    selector: { matchLabels: { app: 'db' } },
    ingress: [
      { action: 'Log' },
      { action: 'Pass', from: [{ namespaceSelector: { matchLabels: { team: 'shop' } } }] },
      { action: 'Deny' },
    ],
  }),
  networkPolicy('shop', 'db-from-web', {
    podSelector: { matchLabels: { app: 'db' } },
    ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port: 80 }] }],
  }),
];

for (const mode of ['nft', 'legacy'] as const satisfies readonly IptablesMode[])
  for (const policyMode of POLICY_MODES) {
    const IR = new Cluster(manifests, { policyMode }).ir;
    describeKernel(`iptables-${mode}: global tier and prefilter (${policyMode})`, () => {
      const lab = new IptLab(`m${mode === 'nft' ? 'n' : 'l'}${policyMode === 'walk' ? '' : 't'}`, IR);
      const backend = new IptablesBackend({ mode });
      const oracle = new Oracle(IR);

      beforeAll(async () => {
        await lab.up([80, 81]);
        for (const t of lab.targets()) await backend.apply(t, IR);
      });

      afterAll(async () => {
        await lab.down();
      });

      it('matches the evaluator for every pod pair', async () => {
        for (const [port, protocol] of [
          [80, 'TCP'],
          [81, 'UDP'],
        ] as const) {
          expect(await lab.reach(port, protocol), `${protocol}/${port}`).toEqual(
            reachMatrix(IR, port, protocol).results,
          );
        }
      });

      it('drops deny-listed sources from the fabric only, as the evaluator does', async () => {
        const targets: Target[] = IR.endpoints.map((e) => ({
          host: lab.address(e.id),
          port: 80,
          protocol: 'TCP',
        }));
        for (const source of [OUTSIDE_LISTED, OUTSIDE_ADDRESS]) {
          const expected = targets.map(
            (t) => oracle.evaluate({ src: source, dst: t.host, protocol: 'TCP', dport: 80 }).allowed,
          );
          expect(await lab.probe({ outside: source }, targets), source).toEqual(expected);
        }
        // The deny-listed pod reaches its neighbour on node-2 but not node-1.
        expect(
          await lab.probe({ pod: 'other/client' }, [
            { host: lab.address('other/web'), port: 80, protocol: 'TCP' },
            { host: lab.address('shop/web'), port: 80, protocol: 'TCP' },
          ]),
        ).toEqual([true, false]);
        const counters = await backend.counters(lab.target('node-1'));
        expect(counters.find((c) => c.rule === 'prefilter/blocklist')?.packets).toBeGreaterThan(0);
        const log = counters.find((c) => c.endpoint === 'shop/db' && c.rule === 'gp:guard/ingress/0');
        expect(log?.packets).toBeGreaterThan(0);
      });

      it('drops the replies of connections to a deny-listed pod on another node (stateless prefilter)', async () => {
        const v = oracle.evaluate({
          src: lab.address('shop/web'),
          dst: lab.address('other/client'),
          protocol: 'TCP',
          dport: 80,
        });
        expect(v.allowed).toBe(false);
        expect(v.prefilterReply).toBe(true);
        expect(
          await lab.probe({ pod: 'shop/web' }, [
            { host: lab.address('other/client'), port: 80, protocol: 'TCP' },
          ]),
        ).toEqual([false]);
      });

      it(`installs into ${mode} tables and remove() clears them`, async () => {
        const save = mode === 'nft' ? 'iptables-nft-save' : 'iptables-legacy-save';
        const t = lab.target('node-1');
        expect(inNs(t.netns, save, [])).toContain(':SY-PREFILTER');
        for (const target of lab.targets()) await backend.remove(target);
        expect(inNs(t.netns, save, [])).not.toMatch(/SY-/);
        expect(inNs(t.netns, save.replace('iptables', 'ip6tables'), [])).not.toMatch(/SY-/);
        expect(inNs(t.netns, 'ipset', ['list', '-n'])).not.toMatch(/sy-/);
      });
    });
  }
