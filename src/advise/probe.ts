/** Probing the running kernel for the advisor: done once, at the edge that calls `advise`. */
import { probeFeatures } from '../bpf/features.js';
import type { Capabilities } from './capabilities.js';

/**
 * The running kernel's answers to the feature probes. The probes load BPF objects, which takes
 * root: without it nothing is probed and every feature counts as present.
 */
export function probeCapabilities(): Capabilities {
  if (process.geteuid?.() !== 0) return {};
  return probeFeatures();
}
