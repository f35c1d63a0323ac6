import { describe } from 'vitest';

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
