/**
 * Churn under traffic (issue 4): 500 policy and label updates applied to a running lab while
 * probes run continuously. Pairs whose verdict no update can change are probed the whole time:
 * an always-allowed pair must never fail and an always-denied pair must never succeed, on every
 * backend, through every transition. Both counts are reported.
 *
 * What churns: a NetworkPolicy selecting x/b whose allowed source label alternates, and the
 * label `churn` on y/b (which moves y/b in and out of that policy's IP set). The probed pairs do
 * not involve x/b or y/b, and the oracle confirms their verdicts are the same in every state.
 */
import { afterAll, expect, it } from 'vitest';
import { reachMatrix } from '../../src/calc/index.js';
import type { BackendName } from '../../src/dataplane/backend.js';
import { availableBackends } from '../../src/dataplane/registry.js';
import { join } from 'node:path';
import { converge, labDown, measureReach } from '../../src/lab/index.js';
import { probeMatrix } from '../../src/lab/probe/prober.js';
import { readyState } from '../../src/lab/reach.js';
import { loadManifestTexts, type Model } from '../../src/model/index.js';
import { describeKernel, testPolicyMode } from '../support/kernel.js';
import { compileIR } from '../support/manifests.js';

/** Decision tables unless asked otherwise: every update is then a table swap. */
const POLICY_MODE = testPolicyMode();
const UPDATES = Number(process.env.SWITCHYARD_CHURN_UPDATES ?? 500);
const VARIANTS = 3;

const NAMESPACES = ['x', 'y', 'z'];
const PODS = ['a', 'b', 'c'];

/** Always allowed: y has no policy, and x/a admits y/a on 80 in every state. */
const ALWAYS_ALLOWED: [string, string][] = [
  ['y/a', 'x/a'],
  ['x/c', 'y/a'],
];
/** Always denied: z admits nobody, and x/a admits only y/a. */
const ALWAYS_DENIED: [string, string][] = [
  ['y/a', 'z/a'],
  ['x/c', 'x/a'],
];

function manifests(step: number): string {
  const docs: string[] = NAMESPACES.map(
    (n) => `apiVersion: v1\nkind: Namespace\nmetadata: { name: '${n}', labels: { ns: '${n}' } }`,
  );
  for (const ns of NAMESPACES)
    for (const name of PODS) {
      const churn = ns === 'y' && name === 'b' ? `, churn: "v${Math.floor(step / 2) % VARIANTS}"` : '';
      docs.push(
        `apiVersion: v1\nkind: Pod\nmetadata: { name: ${name}, namespace: '${ns}', labels: { pod: ${name}${churn} } }\n` +
          `spec: { containers: [{ name: c, ports: [{ containerPort: 80 }] }] }`,
      );
    }
  docs.push(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: deny-all, namespace: z }
spec: { podSelector: {}, policyTypes: [Ingress] }`);
  docs.push(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: a-from-ya, namespace: x }
spec:
  podSelector: { matchLabels: { pod: a } }
  ingress:
    - from: [{ namespaceSelector: { matchLabels: { ns: 'y' } }, podSelector: { matchLabels: { pod: a } } }]
      ports: [{ port: 80 }]`);
  docs.push(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: churn, namespace: x }
spec:
  podSelector: { matchLabels: { pod: b } }
  ingress:
    - from: [{ namespaceSelector: {}, podSelector: { matchLabels: { churn: "v${Math.ceil(step / 2) % VARIANTS}" } } }]`);
  return docs.join('\n---\n');
}

function model(step: number): Model {
  return loadManifestTexts([{ file: `churn-${step}.yaml`, text: manifests(step) }]);
}

for (const backend of ['iptables', 'nftables', 'ebpf'] as BackendName[]) {
  describeKernel(`churn under traffic: ${backend} (${POLICY_MODE} mode)`, () => {
    const lab = `t-churn-${backend.slice(0, 3)}`;
    afterAll(async () => {
      await labDown(lab);
    });

    // Through the agents: each update is written, picked up and acknowledged (iptables ~0.3 s each).
    it(`${UPDATES} updates while probing: no allowed pair fails, no denied pair succeeds`, async () => {
      if (!availableBackends().includes(backend)) throw new Error(`backend ${backend} is not registered`);
      // The probed pairs really are stable: the oracle agrees in every state the churn visits.
      for (let step = 0; step < 2 * VARIANTS; step++) {
        const m = reachMatrix(compileIR(model(step)), 80, 'TCP').results;
        for (const [s, d] of ALWAYS_ALLOWED) expect(m[s]?.[d], `step ${step} ${s}→${d}`).toBe(true);
        for (const [s, d] of ALWAYS_DENIED) expect(m[s]?.[d], `step ${step} ${s}→${d}`).toBe(false);
      }

      const up = await converge({
        name: lab,
        model: model(0),
        files: [],
        mode: 'up',
        backend,
        nodeCount: 2,
        policyMode: POLICY_MODE,
      });
      expect(up.state.ir.policyMode ?? 'walk').toBe(POLICY_MODE);
      // Probe with a snapshot of the topology: pods never change here, and the lab's own reach
      // refuses to run while an apply is in progress (its state then says so), which is the point.
      const state = readyState(lab);
      const podOf = (id: string) => {
        const p = state.topology.pods.find((x) => x.id === id);
        if (!p) throw new Error(`no pod ${id}`);
        return p;
      };
      const pairs = [
        ...ALWAYS_ALLOWED.map((p) => [...p, true] as const),
        ...ALWAYS_DENIED.map((p) => [...p, false] as const),
      ];
      const sources = [...new Set(pairs.map(([s]) => s))].map(podOf);
      const targets = [...new Set(pairs.map(([, d]) => d))].map(podOf);
      let done = false;
      const counts = { rounds: 0, allowedFailed: 0, deniedSucceeded: 0, allowedProbes: 0, deniedProbes: 0 };
      const failures: string[] = [];
      const prober = (async () => {
        while (!done) {
          const results = await probeMatrix({
            protocol: 'TCP',
            port: 80,
            timeoutMs: 500,
            sources: sources.map((p) => ({
              id: p.id,
              netns: p.netns,
              cgroup: join(state.cgroupRoot, p.slug),
            })),
            targets: targets.map((p) => ({ id: p.id, address: p.address })),
          });
          counts.rounds++;
          for (const [s, d, allowed] of pairs) {
            const ok = results[s]?.[d]?.ok === true;
            if (allowed) counts.allowedProbes++;
            else counts.deniedProbes++;
            if (allowed && !ok) {
              counts.allowedFailed++;
              failures.push(
                `round ${counts.rounds}: allowed ${s}→${d} failed (${results[s]?.[d]?.error ?? '?'})`,
              );
            }
            if (!allowed && ok) {
              counts.deniedSucceeded++;
              failures.push(`round ${counts.rounds}: denied ${s}→${d} succeeded`);
            }
          }
        }
      })();

      const started = performance.now();
      try {
        for (let step = 1; step <= UPDATES; step++) {
          await converge({ name: lab, model: model(step), files: [], mode: 'apply' });
        }
      } finally {
        done = true;
        await prober;
      }
      const seconds = (performance.now() - started) / 1000;
      process.stdout.write(
        `churn ${backend}: ${UPDATES} updates in ${seconds.toFixed(1)} s, ${counts.rounds} probe rounds ` +
          `(${counts.allowedProbes} allowed, ${counts.deniedProbes} denied probes): ` +
          `${counts.allowedFailed} allowed failed, ${counts.deniedSucceeded} denied succeeded\n`,
      );
      expect(failures).toEqual([]);
      // Probes really ran through the churn (500 updates: at least 10 rounds).
      expect(counts.rounds).toBeGreaterThanOrEqual(Math.min(10, Math.ceil(UPDATES / 50)));

      // The churned pair really changed during the run: the final state matches the oracle.
      const final = await measureReach(lab, { port: 80, protocol: 'TCP' });
      expect(final.matrix.results).toEqual(reachMatrix(compileIR(model(UPDATES)), 80, 'TCP').results);
    }, 420_000);
  });
}
