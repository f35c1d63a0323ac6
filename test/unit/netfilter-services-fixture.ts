/** A small IR with services for the netfilter service unit tests: three web backends, affinity, no endpoints. */
import type { IR } from '../../src/ir/types.js';
import { exposeIR } from '../support/expose.js';
import { modelOf, namespace, pod, service, compileIR, type Manifest } from '../support/manifests.js';

/** The pods and services; `nodes` places a, b1, b2, b3 (default: wherever calc puts them). */
function manifests(
  affinityTimeout: number,
  nodes: readonly (string | undefined)[] = [],
  serviceSpec: Record<string, unknown> = {},
): Manifest[] {
  const on = (i: number): { node?: string } => (nodes[i] !== undefined ? { node: nodes[i] } : {});
  const web = (name: string, port: number, i: number): Manifest =>
    pod('x', name, { labels: { app: 'web' }, ports: [{ name: 'http', containerPort: port }], ...on(i) });
  return [
    namespace('x'),
    pod('x', 'a', { labels: { role: 'client' }, ...on(0) }),
    web('b1', 8080, 1),
    web('b2', 8080, 2),
    web('b3', 8081, 3),
    service('x', 'web', {
      ...serviceSpec,
      selector: { app: 'web' },
      ports: [
        { name: 'http', port: 80, targetPort: 'http' },
        { name: 'dns', port: 53, targetPort: 5353, protocol: 'UDP' },
      ],
    }),
    service('x', 'sticky', {
      ...serviceSpec,
      selector: { app: 'web' },
      sessionAffinity: 'ClientIP',
      sessionAffinityConfig: { clientIP: { timeoutSeconds: affinityTimeout } },
      ports: [{ port: 81, targetPort: 'http' }],
    }),
    service('x', 'empty', {
      ...serviceSpec,
      selector: { app: 'nothing' },
      ports: [{ port: 80, targetPort: 8080 }],
    }),
  ];
}

export function servicesIR(): IR {
  return compileIR(modelOf(manifests(600)));
}

/**
 * The same services dual-stack (RequireDualStack) over dual-stack pods, plus x/v4only (SingleStack
 * IPv4 over the same backends): one IPv4 and one IPv6 table per port of web, sticky and empty.
 */
export function dualStackIR(): IR {
  const model = modelOf([
    ...manifests(600, [], { ipFamilyPolicy: 'RequireDualStack' }),
    service('x', 'v4only', {
      ipFamilyPolicy: 'SingleStack',
      selector: { app: 'web' },
      ports: [{ port: 82, targetPort: 'http' }],
    }),
  ]);
  return compileIR(model, { dualStackPods: true });
}

export function withoutBackend(ir: IR, tableId: string, endpoint: string): IR {
  return {
    ...ir,
    services: ir.services.map((t) =>
      t.id === tableId ? { ...t, backends: t.backends.filter((b) => b.endpoint !== endpoint) } : t,
    ),
  };
}

/** Node external addresses of the fixture's nodes (198.19.128.0/24: node i → .(i+1)). */
export const EXTERNAL = { 'node-1': '198.19.128.1', 'node-2': '198.19.128.2' } as const;
export const LB_IP = '198.19.192.1';

/**
 * Traffic from outside, written straight into the IR: a, b1 and b2 on node-1, b3 on node-2;
 * x/web:80 is a NodePort (30080, Cluster), x/sticky:81 a LoadBalancer with externalTrafficPolicy
 * Local (affinity timeout 30 s), x/empty:80 a NodePort without endpoints, x/web:53 has
 * internalTrafficPolicy Local.
 */
export function exposedIR(): IR {
  const ir = compileIR(modelOf(manifests(30, ['node-1', 'node-1', 'node-1', 'node-2'])), { nodeCount: 2 });
  return exposeIR(ir, EXTERNAL, {
    'x/web:80/TCP': { nodePort: 30080 },
    'x/web:53/UDP': { internalTrafficPolicy: 'Local' },
    'x/sticky:81/TCP': { nodePort: 30081, loadBalancerIPs: [LB_IP], externalTrafficPolicy: 'Local' },
    'x/empty:80/TCP': { nodePort: 30082 },
  });
}
