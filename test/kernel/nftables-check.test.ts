/**
 * `nft -c` (check mode: parse and validate against the kernel, commit nothing) accepts every
 * script the backend renders: the examples, every upstream netpol fixture, the global-tier,
 * dual-stack and large-prefilter scenarios, on every node, in both policy modes. Check mode still
 * needs a netlink socket, so it runs in a throwaway namespace.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runInNetns } from '../../src/dataplane/exec.js';
import { checkScript } from '../../src/dataplane/nftables/apply.js';
import { nftablesBackend } from '../../src/dataplane/nftables/index.js';
import { POLICY_MODES, type PolicyMode } from '../../src/ir/decision-table.js';
import type { IR } from '../../src/ir/types.js';
import { loadManifests } from '../../src/model/index.js';
import { NETPOL_E2E_DIR } from '../fixtures/netpol-e2e/cases.js';
import { prefilter, compileIR } from '../support/manifests.js';
import { describeKernel } from '../support/kernel.js';
import { addNetns, delNetns } from './nftables-lab.js';
import { dualStack, guardrails, irOf, xyz } from './nftables-scenarios.js';

const NETNS = `sy-nft${(process.pid % 10000) + 3}-chk`;
const ROOT = join(NETPOL_E2E_DIR, '..', '..', '..');

function bigPrefilter(n: number, mode: PolicyMode): IR {
  const cidrs: string[] = [];
  // Every other /32 of 198.19.0.0/16: nothing merges, n distinct elements.
  for (let i = 0; i < n; i++) cidrs.push(`198.19.${Math.floor((2 * i) / 256)}.${(2 * i) % 256}/32`);
  return irOf([...xyz(), prefilter('big', { cidrs })], mode);
}

const scenarios = (mode: PolicyMode): [string, () => IR][] => [
  ['examples/xyz', () => compileIR(loadManifests([join(ROOT, 'examples/xyz')]), { policyMode: mode })],
  [
    'examples/walkthrough + global',
    () =>
      compileIR(loadManifests([join(ROOT, 'examples/walkthrough'), join(ROOT, 'examples/global')]), {
        policyMode: mode,
      }),
  ],
  ['guardrails', () => irOf([...xyz(), ...guardrails()], mode)],
  ['dual stack', () => irOf(dualStack(), mode)],
  ['prefilter with 30k entries', () => bigPrefilter(30_000, mode)],
  ...readdirSync(NETPOL_E2E_DIR)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .map((f): [string, () => IR] => [
      `netpol-e2e/${f}`,
      () =>
        compileIR(loadManifests([join(NETPOL_E2E_DIR, '..', 'xyz', 'model.yaml'), join(NETPOL_E2E_DIR, f)]), {
          policyMode: mode,
        }),
    ]),
];

describeKernel('nftables: nft -c accepts every rendered script', () => {
  beforeAll(() => addNetns(NETNS));
  afterAll(() => delNetns(NETNS));

  for (const [name, make] of POLICY_MODES.flatMap((mode) =>
    scenarios(mode).map(([n, m]): [string, () => IR] => [`${n} (${mode})`, m]),
  )) {
    it(name, async () => {
      const ir = make();
      for (const node of ir.nodes) {
        const text = nftablesBackend.render(ir, node.name).text;
        const r = await checkScript(NETNS, text);
        expect(r.stderr, `${name} on ${node.name}`).toBe('');
        expect(r.code).toBe(0);
      }
      // Check mode committed nothing.
      expect((await runInNetns(NETNS, 'nft', ['list', 'tables'])).stdout).not.toContain('switchyard');
    });
  }
});
