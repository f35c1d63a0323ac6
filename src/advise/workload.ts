/**
 * What the advisor needs to know about a workload. Written by hand as YAML/JSON, or derived from
 * manifests (counts of endpoints, policies, set sizes, services, prefilter entries).
 */
import { z } from 'zod';
import { DEFAULT_POLICY_MODE } from '../ir/decision-table.js';

export const workloadSchema = z.strictObject({
  /** Pods on one node. */
  endpoints: z.number().int().min(0).default(10),
  /** Policies (NetworkPolicy + GlobalPolicy) selecting a typical endpoint. */
  policiesPerEndpoint: z.number().int().min(0).default(1),
  /** Rules evaluated for a typical endpoint and direction. */
  rulesPerEndpoint: z.number().int().min(0).default(5),
  /** How the dataplane decides policy (`--policy-mode`): decision tables, or walking the rules. */
  policyMode: z.enum(['table', 'walk']).default(DEFAULT_POLICY_MODE),
  /** Addresses in the largest IP set a rule references. */
  addressesPerSet: z.number().int().min(0).default(10),
  /** IP-set membership changes per second (pod churn, threat feeds). */
  setUpdatesPerSecond: z.number().min(0).default(0),
  services: z.number().int().min(0).default(0),
  /** Of those, NodePort and LoadBalancer services: traffic from outside the cluster. */
  externalServices: z.number().int().min(0).default(0),
  /** New connections per second on the node. */
  connectionsPerSecond: z.number().min(0).default(100),
  /** Deny-listed CIDRs dropped before conntrack. */
  prefilterEntries: z.number().int().min(0).default(0),
  /** Expected attack rate at the prefilter, packets per second. */
  floodPacketsPerSecond: z.number().min(0).default(0),
  /** HTTP/gRPC-aware rules (paths, methods, headers). */
  l7Rules: z.boolean().default(false),
  /** mTLS, retries, traffic splitting between service versions. */
  serviceMesh: z.boolean().default(false),
  /** Encrypt pod traffic on the wire. */
  encryption: z.boolean().default(false),
  flowLogs: z.boolean().default(false),
  /** Flow records must name the process (pid, comm) that opened the connection. */
  processContext: z.boolean().default(false),
  /** What matters most when backends tie. */
  priority: z.enum(['latency', 'cpu', 'simplicity']).default('simplicity'),
});

export type Workload = z.infer<typeof workloadSchema>;
export type WorkloadInput = z.input<typeof workloadSchema>;

export function parseWorkload(input: unknown): Workload {
  return workloadSchema.parse(input);
}
