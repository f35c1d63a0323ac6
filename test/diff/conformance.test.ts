/**
 * The upstream Kubernetes network-policy e2e scenarios (x/y/z, ports 80/81, TCP and UDP; see
 * test/fixtures/netpol-e2e/cases.ts) through the real lab and each backend: for every
 * case, `lab up` converges the lab to the case's manifests (so consecutive cases exercise each
 * backend's incremental apply), `lab reach` measures every probe's 9×9 matrix with real packets,
 * and the result must equal both the upstream expectation and the reference evaluator.
 *
 * A backend missing from the registry is skipped locally and fails under CI=true. The lab probes
 * TCP and UDP only; an SCTP probe (none in today's cases) is checked against the evaluator alone.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { reachMatrix } from '../../src/calc/index.js';
import type { BackendName } from '../../src/dataplane/backend.js';
import { availableBackends } from '../../src/dataplane/registry.js';
import { converge, labDown, measureReach } from '../../src/lab/index.js';
import { loadManifests } from '../../src/model/index.js';
import {
  caseManifestPaths,
  NETPOL_E2E_CASES,
  probeExpectation,
  type NetpolCase,
} from '../fixtures/netpol-e2e/cases.js';
import { describeKernel, testPolicyMode } from '../support/kernel.js';
import { applyEdits, compareTables, formatReport, XYZ_PODS } from '../support/reachability.js';

const BACKENDS: readonly BackendName[] = ['iptables', 'nftables', 'ebpf'];
/** Decision tables unless asked otherwise (each backend's own kernel tests cover both modes). */
const POLICY_MODE = testPolicyMode();
const NODES = 2;

function title(c: NetpolCase): string {
  return `${c.context}: ${c.name}${c.step ? ` [${c.step}]` : ''}`;
}

for (const backend of BACKENDS) {
  if (!availableBackends().includes(backend)) {
    if (process.env.CI === 'true') {
      describe(`conformance: ${backend}`, () => {
        it('is registered', () => {
          throw new Error(`CI=true but backend '${backend}' is not registered in src/dataplane/registry.ts`);
        });
      });
    } else describe.skip(`conformance: ${backend} (not registered)`, () => undefined);
    continue;
  }

  describeKernel(`conformance: ${backend} (${POLICY_MODE} mode)`, () => {
    const lab = `conf-${backend}`;
    let labUp = false;

    afterAll(async () => {
      if (labUp) await labDown(lab);
    });

    for (const c of NETPOL_E2E_CASES) {
      it(title(c), async () => {
        const files = caseManifestPaths(c);
        const model = loadManifests(files);
        labUp = true;
        const { state } = await converge({
          name: lab,
          model,
          files,
          mode: 'up',
          backend,
          nodeCount: NODES,
          policyMode: POLICY_MODE,
        });
        const ir = state.ir;
        expect(ir.ruleSets.every((rs) => (rs.table !== undefined) === (POLICY_MODE === 'table'))).toBe(true);
        const failures: string[] = [];
        for (const probe of c.probes) {
          const expected = applyEdits(XYZ_PODS, probeExpectation(c, probe));
          const predicted = reachMatrix(ir, probe.port, probe.protocol).results;
          const oracleMismatch = compareTables(XYZ_PODS, expected, predicted);
          if (oracleMismatch.length > 0)
            failures.push(
              `evaluator ${probe.protocol}/${probe.port}\n${formatReport(XYZ_PODS, expected, predicted)}`,
            );
          if (probe.protocol === 'SCTP') continue;
          const measured = (await measureReach(lab, { port: probe.port, protocol: probe.protocol })).matrix
            .results;
          if (compareTables(XYZ_PODS, expected, measured).length > 0)
            failures.push(
              `${backend} ${probe.protocol}/${probe.port}\n${formatReport(XYZ_PODS, expected, measured)}`,
            );
        }
        expect(failures, failures.join('\n\n')).toEqual([]);
      });
    }
  });
}
