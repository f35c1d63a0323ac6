/**
 * Issue 19: the upstream netpol scenarios (x/y/z model) over IPv6 in the real lab, with real
 * packets between the pods' fd00:5957::/64 addresses, on every backend. One lab for the
 * file: each case is a `lab apply` (agents enforce it), then `lab reach --family 6` per probe,
 * compared pair by pair with the reference evaluator on the same IR's IPv6 addresses.
 *
 * The cases' ipBlocks are upstream's IPv4 pod addresses, so on IPv6 they match nothing: the
 * evaluator says so and the kernel must agree (a faithful IPv6 transcription would name the pods'
 * IPv6 addresses; not done here).
 *
 * eBPF judges IPv6 in the same programs as IPv4 (16-byte addresses): the same scenarios, and
 * neighbour discovery keeps working under the default deny some scenarios install.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { compareReach } from '../../src/calc/index.js';
import { measureReach } from '../../src/lab/index.js';
import { readState } from '../../src/lab/state.js';
import { caseManifestPaths, FIXTURES_DIR, NETPOL_E2E_CASES } from '../fixtures/netpol-e2e/cases.js';
import { describeKernel } from '../support/kernel.js';
import { cli, cliOk } from './lab-harness.js';
import { join } from 'node:path';

const LAB = 'vl6np';
const MODEL = join(FIXTURES_DIR, 'xyz', 'model.yaml');
/** Denied probes wait this long; allowed ones answer in a few ms. */
const TIMEOUT_MS = 400;

async function mismatches6(port: number, protocol: 'TCP' | 'UDP'): Promise<unknown[]> {
  const r = await measureReach(LAB, { port, protocol, family: 6, timeoutMs: TIMEOUT_MS });
  return compareReach(r.matrix, r.predicted).mismatches;
}

describeKernel('lab: upstream netpol scenarios over IPv6 with real packets', () => {
  beforeAll(async () => {
    await cli(['lab', 'down', '--name', LAB]);
    await cliOk(['lab', 'up', MODEL, '--name', LAB, '--nodes', '2', '--backend', 'nftables']);
  }, 120_000);

  afterAll(async () => {
    await cli(['lab', 'down', '--name', LAB]);
  }, 60_000);

  it('every pod has an IPv6 address in fd00:5957::/64, routed across nodes', () => {
    const pods = readState(LAB)?.topology?.pods ?? [];
    expect(pods.length).toBe(9);
    for (const p of pods) expect(p.addressV6).toMatch(/^fd00:5957::[0-9a-f]+$/);
    expect(new Set(pods.map((p) => p.node)).size).toBe(2);
  });

  for (const backend of ['nftables', 'iptables', 'ebpf'] as const) {
    it(`${backend}: every scenario's IPv6 matrix matches the evaluator`, async () => {
      await cliOk(['lab', 'up', MODEL, '--name', LAB, '--backend', backend]);
      const failures: string[] = [];
      let probed = 0;
      for (const c of NETPOL_E2E_CASES) {
        const probes = c.probes.filter((p) => p.protocol !== 'SCTP');
        if (probes.length === 0) continue;
        await cliOk(['lab', 'apply', ...caseManifestPaths(c), '--name', LAB]);
        for (const probe of probes) {
          const wrong = await mismatches6(probe.port, probe.protocol as 'TCP' | 'UDP');
          probed++;
          if (wrong.length > 0)
            failures.push(`${c.name} ${probe.port}/${probe.protocol}: ${JSON.stringify(wrong)}`);
        }
      }
      expect(failures).toEqual([]);
      expect(probed).toBeGreaterThan(40);
    }, 900_000);
  }
});
