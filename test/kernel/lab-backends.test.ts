/**
 * Policy through the Backend interface: for every backend the registry offers, a lab with the
 * x/y/z model and a NetworkPolicy measures exactly what the reference evaluator predicts, before
 * and after a relabel. A backend the registry lacks is refused before anything is created.
 */
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { reachMatrix } from '../../src/calc/index.js';
import { BACKEND_NAMES } from '../../src/dataplane/backend.js';
import { availableBackends } from '../../src/dataplane/registry.js';
import { readState } from '../../src/lab/state.js';
import { namespace, networkPolicy, pod } from '../support/manifests.js';
import { describeKernel } from '../support/kernel.js';
import { cli, cliOk, leftovers, manifestFile, NOTHING_LEFT, REPO, type Matrix } from './lab-harness.js';

const LAB = 't-lab4';
const POLICY = join(REPO, 'examples', 'xyz', 'allow-x-to-a.yaml');
const XYZ = join(REPO, 'examples', 'xyz', 'model.yaml');

/** x/y/z where x/b also carries pod=a, so the policy selecting pod=a now isolates it too. */
function relabelled(): string {
  return manifestFile([
    ...['x', 'y', 'z'].map((n) => namespace(n, { ns: n })),
    ...['x', 'y', 'z'].flatMap((ns) =>
      ['a', 'b', 'c'].map((name) =>
        pod(ns, name, {
          labels: { pod: ns === 'x' && name === 'b' ? 'a' : name },
          ports: [
            { name: 'serve-80-tcp', containerPort: 80, protocol: 'TCP' },
            { name: 'serve-80-udp', containerPort: 80, protocol: 'UDP' },
          ],
        }),
      ),
    ),
    networkPolicy('x', 'allow-from-x', {
      podSelector: { matchLabels: { pod: 'a' } },
      ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'x' } } }] }],
    }),
  ]);
}

async function measuredEqualsPredicted(protocol: 'TCP' | 'UDP'): Promise<void> {
  const state = readState(LAB);
  if (!state) throw new Error('no lab');
  const predicted = reachMatrix(state.ir, 80, protocol).results;
  // Blocked pairs wait out the timeout; half a second is ample on veths.
  const args = ['lab', 'reach', '--name', LAB, '--json', '--protocol', protocol, '--timeout', '500'];
  const measured = (JSON.parse(await cliOk(args)) as { results: Matrix }).results;
  expect(measured).toEqual(predicted);
}

describeKernel('lab: policy through the backends', () => {
  afterAll(async () => {
    await cli(['lab', 'down', '--name', LAB]);
  });

  for (const backend of availableBackends()) {
    it(`${backend}: measured reach equals the evaluator's, before and after a relabel`, async () => {
      await cli(['lab', 'down', '--name', LAB]);
      const out = await cliOk(['lab', 'up', XYZ, POLICY, '--name', LAB, '--backend', backend]);
      expect(out).toMatch(new RegExp(`backend ${backend}`));
      const state = readState(LAB);
      expect(state?.backend).toBe(backend);
      const predicted = reachMatrix(state?.ir as NonNullable<typeof state>['ir'], 80, 'TCP').results;
      expect(Object.values(predicted).some((row) => Object.values(row).some((v) => !v))).toBe(true);
      await measuredEqualsPredicted('TCP');
      await measuredEqualsPredicted('UDP');

      await cliOk(['lab', 'apply', relabelled(), '--name', LAB]);
      expect(readState(LAB)?.ir.endpoints.find((e) => e.id === 'x/b')?.labels).toEqual({ pod: 'a' });
      await measuredEqualsPredicted('TCP');

      await cliOk(['lab', 'down', '--name', LAB]);
      expect(leftovers(LAB)).toEqual(NOTHING_LEFT);
    });
  }

  it('a backend that is not available is refused before anything is created', async () => {
    const missing = BACKEND_NAMES.filter((b) => !availableBackends().includes(b));
    for (const backend of missing) {
      const r = await cli(['lab', 'up', XYZ, '--name', LAB, '--backend', backend]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`backend '${backend}' is not implemented yet`));
      expect(leftovers(LAB)).toEqual(NOTHING_LEFT);
    }
  });
});
