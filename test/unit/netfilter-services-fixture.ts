/** A small IR with services for the netfilter service unit tests: three web backends, affinity, no endpoints. */
import type { IR } from '../../src/ir/types.js';
import { modelOf, namespace, pod, service, compileIR } from '../support/manifests.js';

export function servicesIR(): IR {
  return compileIR(
    modelOf([
      namespace('x'),
      pod('x', 'a', { labels: { role: 'client' } }),
      pod('x', 'b1', { labels: { app: 'web' }, ports: [{ name: 'http', containerPort: 8080 }] }),
      pod('x', 'b2', { labels: { app: 'web' }, ports: [{ name: 'http', containerPort: 8080 }] }),
      pod('x', 'b3', { labels: { app: 'web' }, ports: [{ name: 'http', containerPort: 8081 }] }),
      service('x', 'web', {
        selector: { app: 'web' },
        ports: [
          { name: 'http', port: 80, targetPort: 'http' },
          { name: 'dns', port: 53, targetPort: 5353, protocol: 'UDP' },
        ],
      }),
      service('x', 'sticky', {
        selector: { app: 'web' },
        sessionAffinity: 'ClientIP',
        sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } },
        ports: [{ port: 81, targetPort: 'http' }],
      }),
      service('x', 'empty', { selector: { app: 'nothing' }, ports: [{ port: 80, targetPort: 8080 }] }),
    ]),
  );
}

export function withoutBackend(ir: IR, tableId: string, endpoint: string): IR {
  return {
    ...ir,
    services: ir.services.map((t) =>
      t.id === tableId ? { ...t, backends: t.backends.filter((b) => b.endpoint !== endpoint) } : t,
    ),
  };
}
