/**
 * The iptables backend through the real lab and CLI: `lab up examples/xyz --backend iptables`
 * enforces the policy (lab reach = switchyard reach), `lab counters` (table and --json) reports the
 * kernel's per-rule counters, and a `lab apply` of one pod label change touches only the set it
 * affects (in table mode: one new generation of that table's set, and its chains). Both policy
 * modes. Prints the apply times the report quotes.
 */
import { performance } from 'node:perf_hooks';
import { afterAll, expect, it, vi } from 'vitest';
import { reachMatrix } from '../../src/calc/index.js';
import type { NodeCounters } from '../../src/cli/lab-counters.js';
import { main } from '../../src/cli/main.js';
import { iptablesBackend } from '../../src/dataplane/iptables/index.js';
import { converge, labDown, measureReach } from '../../src/lab/index.js';
import { loadManifests } from '../../src/model/index.js';
import { POLICY_MODES } from '../../src/ir/decision-table.js';
import { describeKernel } from '../support/kernel.js';

async function cli(...args: string[]): Promise<{ code: number; stdout: string }> {
  let stdout = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stdout += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
    return true;
  });
  try {
    const code = await main(['node', 'switchyard', ...args]);
    return { code, stdout };
  } finally {
    spy.mockRestore();
  }
}

for (const policyMode of POLICY_MODES)
  describeKernel(`switchyard lab with --backend iptables (${policyMode})`, () => {
    const LAB = policyMode === 'walk' ? 'ipt-cli' : 'ipt-cli-t';
    let up = false;

    afterAll(async () => {
      if (up) await labDown(LAB);
    });

    it('lab up enforces x/y/z, and lab counters shows what the kernel counted', async () => {
      const files = ['examples/xyz'];
      up = true;
      const r = await converge({
        name: LAB,
        model: loadManifests(files),
        files,
        mode: 'up',
        backend: 'iptables',
        policyMode,
        // The test also drives the backend directly; an agent would repair what it changes.
        agents: false,
      });
      console.log(`lab up x/y/z --backend iptables: ${r.durationMs} ms (namespaces, probes and policy)`);
      const measured = await measureReach(LAB, { port: 80, protocol: 'TCP' });
      expect(measured.matrix.results).toEqual(reachMatrix(r.state.ir, 80, 'TCP').results);

      const json = await cli('lab', 'counters', '--name', LAB, '--json');
      expect(json.code).toBe(0);
      const nodes = JSON.parse(json.stdout) as NodeCounters[];
      expect(nodes.map((n) => n.node).sort()).toEqual(r.state.ir.nodes.map((n) => n.name).sort());
      const all = nodes.flatMap((n) => n.counters);
      const allow = all.find((c) => c.endpoint === 'x/a' && c.rule === 'np:x/allow-from-x/ingress/0');
      // x/b and x/c connected once each.
      expect(allow?.packets).toBeGreaterThanOrEqual(2);
      expect(all.find((c) => c.rule === 'x/a/ingress/default')?.packets).toBeGreaterThanOrEqual(6);

      const table = await cli('lab', 'counters', '--name', LAB, '--matched');
      expect(table.code).toBe(0);
      expect(table.stdout).toMatch(/node\s+endpoint\s+direction\s+rule\s+packets\s+bytes/);
      expect(table.stdout).toMatch(/x\/a\s+ingress\s+np:x\/allow-from-x\/ingress\/0\s+\d+\s+\d+/);
    });

    it('lab apply of one label change rewrites one set', async () => {
      const before = ['test/fixtures/xyz/model.yaml', 'test/fixtures/netpol-e2e/updated-pod.yaml'];
      await converge({ name: LAB, model: loadManifests(before), files: before, mode: 'apply' });
      const after = [
        'test/fixtures/xyz/model-xb-pod2-updated.yaml',
        'test/fixtures/netpol-e2e/updated-pod.yaml',
      ];
      const r = await converge({ name: LAB, model: loadManifests(after), files: after, mode: 'apply' });
      console.log(`lab apply (one pod label change) --backend iptables: ${r.durationMs} ms`);
      const measured = await measureReach(LAB, { port: 80, protocol: 'TCP' });
      expect(measured.matrix.results).toEqual(reachMatrix(r.state.ir, 80, 'TCP').results);

      // The backend alone, on the same kernel state: both directions of the change, node by node.
      const prev = r.state.ir;
      const back = (await converge({ name: LAB, model: loadManifests(before), files: before, mode: 'apply' }))
        .state.ir;
      const t0 = performance.now();
      const changed: string[] = [];
      for (const n of r.state.topology?.nodes ?? []) {
        const res = await iptablesBackend.apply({ scope: LAB, node: n.name, netns: n.netns }, prev, back);
        changed.push(...res.changed);
      }
      console.log(
        `iptables apply of that change on all nodes: ${(performance.now() - t0).toFixed(0)} ms ${JSON.stringify(changed)}`,
      );
      // Lab pods are dual-stack: the IPv4 side changes exactly as before, and the IPv6 side has
      // its own counterpart of the changed set (ipset and ip6tables are per family).
      const ipv6 = (c: string): boolean =>
        /^ip6tables\/|^ipset sy-\S+-v6( |$)|^ipset sy-(flow6|t[ei]6)-/.test(c);
      const v4 = changed.filter((c) => !ipv6(c));
      const v6 = changed.filter(ipv6);
      if (policyMode === 'walk') {
        // Written in place as a member delta: `ipset <set> (+added -removed)`.
        expect(v4).toHaveLength(1);
        const set = /^(ipset sy-[0-9a-f]{12}) \(\+1 -0\)$/.exec(v4[0] as string)?.[1];
        expect(set, v4[0]).toBeDefined();
        expect(v6.some((c) => c.startsWith(`${set as string}-v6 `) || c === `${set as string}-v6`)).toBe(
          true,
        );
      } else {
        // A new generation of one table's set, the old one destroyed, and that table's chains (and
        // the flow set of a rule that now decides for a class, or no longer does).
        expect(
          v4.filter((c) => /^ipset sy-t[ei]4-[0-9a-f]{9}-[0-9a-f]{2}-[0-9a-f]{7}$/.test(c)),
        ).toHaveLength(1);
        for (const c of v4)
          expect(c).toMatch(
            /^ipset sy-t[ei]4-\S+( \(destroyed\))?$|^iptables\/filter SY-[FT]WT?-|^ipset sy-flow4-[0-9a-f]{8}( \(destroyed\))?$/,
          );
        expect(v6.filter((c) => /^ipset sy-t[ei]6-/.test(c))).toHaveLength(1);
      }
    });
  });
