import { describe } from 'vitest';
import { POLICY_MODES, type PolicyMode } from '../../src/ir/decision-table.js';

/**
 * Kernel tests need root. Locally they skip without it; with CI=true a skip would hide a broken
 * dataplane, so the suite fails instead.
 */
export function kernelUnavailableReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'kernel tests need root (network namespaces, BPF, netfilter)';
  return undefined;
}

export const describeKernel: typeof describe = ((name: string, fn: () => void) => {
  const reason = kernelUnavailableReason();
  if (reason && process.env.CI === 'true') {
    return describe(name, () => {
      throw new Error(`CI=true but ${reason}`);
    });
  }
  return reason ? describe.skip(`${name} (skipped: ${reason})`, fn) : describe(name, fn);
}) as typeof describe;

/**
 * The policy mode the shared differential tests (conformance, churn) run in: decision tables,
 * unless SWITCHYARD_TEST_POLICY_MODE=walk asks for the rule walk (to compare the two locally).
 */
export function testPolicyMode(): PolicyMode {
  const asked = process.env.SWITCHYARD_TEST_POLICY_MODE ?? 'table';
  if (!POLICY_MODES.includes(asked as PolicyMode))
    throw new Error(`SWITCHYARD_TEST_POLICY_MODE must be ${POLICY_MODES.join(' or ')}, not '${asked}'`);
  return asked as PolicyMode;
}
