/**
 * The iptables backend against real packets on the upstream x/y/z model (9 pods, 2 nodes):
 * - every pod pair's TCP/80 and UDP/81 reachability equals the reference evaluator's;
 * - the counter of the rule that allowed a connection (and of the default deny) moves;
 * - a pod label change rewrites only the ipset it affects, and the kernel follows it;
 * - a connection established before a new policy denies it keeps working (conntrack ESTABLISHED is
 *   accepted first, as in Calico), while new connections are refused;
 * - remove() leaves no SY- chain and no sy- set in either family.
 * All of it in both policy modes: the rule walk, and decision tables (table mode), where a label
 * change is a new generation of the endpoint's table set instead of a rewritten IR set.
 */
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { allocate, buildIR, reachMatrix } from '../../src/calc/index.js';
import type { IR, Protocol } from '../../src/ir/types.js';
import { POLICY_MODES, type PolicyMode } from '../../src/ir/decision-table.js';
import { endpointHash } from '../../src/dataplane/iptables/names.js';
import { IptablesBackend } from '../../src/dataplane/iptables/index.js';
import { loadManifests } from '../../src/model/index.js';
import { describeKernel } from '../support/kernel.js';
import { networkPolicy, toYaml, compileIR } from '../support/manifests.js';
import { HeldConnection, inNs, IptLab } from './iptables-lab.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const MODEL = 'test/fixtures/xyz/model.yaml';
const MODEL_XB_UPDATED = 'test/fixtures/xyz/model-xb-pod2-updated.yaml';
const ALLOW_FROM_X = 'examples/xyz/allow-x-to-a.yaml';
const FROM_UPDATED = 'test/fixtures/netpol-e2e/updated-pod.yaml';

function mismatches(
  ir: IR,
  got: Record<string, Record<string, boolean>>,
  port: number,
  protocol: Protocol,
): string[] {
  const want = reachMatrix(ir, port, protocol).results;
  const out: string[] = [];
  for (const [src, row] of Object.entries(want))
    for (const [dst, allowed] of Object.entries(row))
      if (got[src]?.[dst] !== allowed)
        out.push(`${protocol}/${port} ${src} → ${dst}: expected ${allowed ? 'allow' : 'deny'}`);
  return out;
}

for (const policyMode of POLICY_MODES)
  describeKernel(`iptables backend on x/y/z (nft mode, ${policyMode})`, () => {
    const tmp = mkdtempSync(join(tmpdir(), 'sy-ipt-'));
    const backend = new IptablesBackend({ mode: 'nft' });
    const ir = compileIR(loadManifests([MODEL, ALLOW_FROM_X]), { policyMode });
    const lab = new IptLab(policyMode === 'walk' ? 'pol' : 'polt', ir);
    const onNodesOf = (base: IR, files: string[]): IR => onNodesOfIn(base, files, policyMode);
    let current = ir;

    async function applyAll(next: IR, previous?: IR): Promise<{ ms: number; changed: string[][] }> {
      const t0 = performance.now();
      const results = await Promise.all(lab.targets().map((t) => backend.apply(t, next, previous)));
      current = next;
      return { ms: performance.now() - t0, changed: results.map((r) => r.changed) };
    }

    beforeAll(async () => {
      await lab.up([80, 81]);
      const first = await applyAll(ir);
      console.log(
        `iptables: first apply of x/y/z on ${lab.targets().length} nodes took ${first.ms.toFixed(0)} ms`,
      );
    });

    afterAll(async () => {
      await lab.down();
      rmSync(tmp, { recursive: true, force: true });
    });

    it('allows and denies exactly what the evaluator says, TCP/80 and UDP/81', async () => {
      const tcp = await lab.reach(80, 'TCP');
      const udp = await lab.reach(81, 'UDP');
      expect([...mismatches(ir, tcp, 80, 'TCP'), ...mismatches(ir, udp, 81, 'UDP')]).toEqual([]);
      // The policy bites: something is denied, something allowed.
      expect(tcp['y/a']?.['x/a']).toBe(false);
      expect(tcp['x/b']?.['x/a']).toBe(true);
    });

    it('counts packets on the rule that allowed them and on the default deny', async () => {
      const xa = ir.endpoints.find((e) => e.id === 'x/a');
      const target = lab.target(xa?.node as string);
      const find = async (rule: string): Promise<number> =>
        (await backend.counters(target)).find(
          (c) => c.endpoint === 'x/a' && c.direction === 'ingress' && c.rule === rule,
        )?.packets ?? -1;
      const allowBefore = await find('np:x/allow-from-x/ingress/0');
      const denyBefore = await find('x/a/ingress/default');
      expect(allowBefore).toBeGreaterThanOrEqual(0);
      expect(
        await lab.probe({ pod: 'x/b' }, [{ host: lab.address('x/a'), port: 80, protocol: 'TCP' }]),
      ).toEqual([true]);
      expect(
        await lab.probe({ pod: 'z/c' }, [{ host: lab.address('x/a'), port: 81, protocol: 'UDP' }]),
      ).toEqual([false]);
      // One SYN for the allowed connection (the rest is ESTABLISHED); the denied datagram once.
      expect((await find('np:x/allow-from-x/ingress/0')) - allowBefore).toBe(1);
      expect((await find('x/a/ingress/default')) - denyBefore).toBe(1);
    });

    it('rewrites only the set a label change affects, and enforces the new membership', async () => {
      const before = onNodesOf(ir, [MODEL, FROM_UPDATED]);
      await applyAll(before, current);
      const after = onNodesOf(ir, [MODEL_XB_UPDATED, FROM_UPDATED]);
      const { ms, changed } = await applyAll(after, before);
      console.log(
        `iptables: incremental apply of one label change took ${ms.toFixed(0)} ms: ${JSON.stringify(changed)}`,
      );
      const xaNode = ir.nodes.findIndex((n) => n.name === ir.endpoints.find((e) => e.id === 'x/a')?.node);
      const setId = after.ruleSets.find((r) => r.endpoint === 'x/a' && r.direction === 'ingress')
        ?.kubernetesRules[0]?.peerSet;
      // Walk mode: that one set, rebuilt or (when it keeps its shape) changed in place as a
      // member delta, `ipset <set> (+added -removed)`.
      if (policyMode === 'walk') {
        expect(changed[xaNode]).toHaveLength(1);
        expect(changed[xaNode]?.[0]).toMatch(new RegExp(`^ipset ${setId}( \\(\\+\\d+ -\\d+\\))?$`));
      } else {
        // A new generation of x/a's ingress table set (the old one, if it had one, destroyed) and
        // the chains of that table that name it (and the flow set of a rule that now decides for a
        // class, or no longer does); nothing of any other endpoint.
        const xa = endpointHash('x/a');
        const set = `sy-ti4-${xa.slice(0, 9)}-[0-9a-f]{2}-[0-9a-f]{7}`;
        expect(changed[xaNode]).toEqual(
          expect.arrayContaining([expect.stringMatching(new RegExp(`^ipset ${set}$`))]),
        );
        for (const c of changed[xaNode] ?? [])
          expect(c).toMatch(
            new RegExp(
              `^ipset ${set}( \\(destroyed\\))?$|^iptables/filter SY-TWT?-${xa}|^ipset sy-flow4-[0-9a-f]{8}( \\(destroyed\\))?$`,
            ),
          );
      }
      expect(changed[1 - xaNode]).toEqual([]);
      const tcp = await lab.reach(80, 'TCP');
      expect(mismatches(after, tcp, 80, 'TCP')).toEqual([]);
      expect(tcp['x/b']?.['x/a']).toBe(true);
      expect(tcp['x/c']?.['x/a']).toBe(false);
    });

    it('keeps a connection established before a policy that denies it, and refuses new ones', async () => {
      await applyAll(ir, current);
      const held = await HeldConnection.open(lab, 'y/b', 'z/b', 80);
      try {
        expect(await held.roundTrip()).toBe(true);
        const denyFile = join(tmp, 'deny-z.yaml');
        writeFileSync(
          denyFile,
          toYaml([networkPolicy('z', 'deny-all', { podSelector: {}, policyTypes: ['Ingress'] })]),
        );
        const deny = onNodesOf(ir, [MODEL, denyFile]);
        await applyAll(deny, current);
        expect(await held.roundTrip()).toBe(true);
        expect(
          await lab.probe({ pod: 'y/b' }, [{ host: lab.address('z/b'), port: 80, protocol: 'TCP' }]),
        ).toEqual([false]);
      } finally {
        held.close();
      }
    });

    it('remove() leaves no chain, jump or set behind', async () => {
      for (const t of lab.targets()) {
        await backend.remove(t);
        for (const save of ['iptables-nft-save', 'ip6tables-nft-save'])
          expect(inNs(t.netns, save, [])).not.toMatch(/SY-/);
        expect(inNs(t.netns, 'ipset', ['list', '-n'])).not.toMatch(/sy-/);
        // Idempotent.
        await backend.remove(t);
      }
      // Without rules, everything is reachable again.
      const tcp = await lab.reach(80, 'TCP');
      expect(Object.values(tcp).every((row) => Object.values(row).every(Boolean))).toBe(true);
    });
  });

function nodesOf(ir: IR): Record<string, string> {
  return Object.fromEntries(ir.endpoints.map((e) => [e.id, e.node]));
}

/** The IR of `files` with every pod on its node in `ir` (the lab's namespaces stay where they are). */
function onNodesOfIn(ir: IR, files: string[], policyMode: PolicyMode): IR {
  const model = loadManifests(files);
  return buildIR(model, allocate(model, { podNodes: nodesOf(ir) }), { policyMode });
}
