/**
 * Policies that make a walk-mode eBPF program big for the verifier: one pod whose ingress policy
 * has `rules` rules, each from its own address and on `portsPerRule` ports of its own, apart so
 * that they stay separate ranges (distinct ports before a set lookup are what the verifier cannot
 * prune; see dataplane/ebpf/complexity.ts).
 */
import { namespace, networkPolicy, pod, type Manifest } from './manifests.js';

export function walkLimitManifests(rules: number, portsPerRule = 3): Manifest[] {
  return [
    namespace('big'),
    pod('big', 'server', { labels: { app: 'server' }, ip: '198.18.0.10', node: 'node-1' }),
    networkPolicy('big', 'many-rules', {
      podSelector: { matchLabels: { app: 'server' } },
      policyTypes: ['Ingress'],
      ingress: Array.from({ length: rules }, (_, i) => ({
        from: [{ ipBlock: { cidr: `198.18.${100 + (i >> 8)}.${i & 255}/32` } }],
        ports: Array.from({ length: portsPerRule }, (_, k) => ({
          port: 1000 + 2 * (portsPerRule * i + k),
          protocol: 'TCP',
        })),
      })),
    }),
  ];
}
