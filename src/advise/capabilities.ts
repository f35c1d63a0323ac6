/**
 * What the advisor knows of the kernel: the answers of the feature probes (src/bpf/features.ts),
 * taken once where the advisor is called (the CLI, the console) and passed in, so the rules stay
 * pure functions and tests pass a made-up kernel.
 */
import type { FeatureName, FeatureStatus } from '../bpf/features.js';
import type { BackendName } from '../dataplane/backend.js';
import { describeBackend, isBackendName, type BackendTraits } from '../dataplane/registry.js';

/** Probe results by feature. A feature nobody could probe (no privilege) counts as present. */
export type Capabilities = Readonly<Partial<Record<FeatureName, FeatureStatus>>>;

/** The backends in the order the advisor weighs them (the first wins a tie nothing else breaks). */
export const ADVISED_BACKENDS: readonly BackendName[] = ['ebpf', 'iptables', 'nftables'];

/** Features `backend` needs that the probes found missing (none for a name the dataplane does not know). */
export function missingFeatures(backend: string, caps: Capabilities): FeatureName[] {
  if (!isBackendName(backend)) return [];
  return describeBackend(backend).requires.filter((f) => caps[f]?.available === false);
}

export function canRun(backend: string, caps: Capabilities): boolean {
  return missingFeatures(backend, caps).length === 0;
}

/** Whether `backend` is one the dataplane knows and has the trait `has` asks for. */
export function hasTrait(backend: string, has: (t: BackendTraits) => boolean): boolean {
  return isBackendName(backend) && has(describeBackend(backend));
}

/** The first backend with the trait that this kernel can run. */
export function runnableWith(
  caps: Capabilities,
  has: (t: BackendTraits) => boolean,
): BackendName | undefined {
  return ADVISED_BACKENDS.find((b) => has(describeBackend(b)) && canRun(b, caps));
}

/** "tcx (Linux 6.6+)": a feature and the release that brought it. */
export function featureLabel(feature: FeatureName, caps: Capabilities): string {
  const since = caps[feature]?.since;
  if (!since) return feature;
  return /^\d+\.\d+$/.test(since) ? `${feature} (Linux ${since}+)` : `${feature} (Linux ${since})`;
}

/** Every feature some backend needs and this kernel lacks, labelled. */
export function lackedFeatures(caps: Capabilities): string[] {
  const missing = new Set(ADVISED_BACKENDS.flatMap((b) => missingFeatures(b, caps)));
  return [...missing].map((f) => featureLabel(f, caps));
}
