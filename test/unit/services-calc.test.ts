/** Service tables: selectors, named target ports, readiness, and EndpointSlices for selector-less services. */
import { describe, expect, it } from 'vitest';
import { formatIssue, loadManifestTexts, validateManifestTexts } from '../../src/model/index.js';
import { compileIR } from '../support/manifests.js';

const base = `
apiVersion: v1
kind: Namespace
metadata: { name: x }
---
apiVersion: v1
kind: Pod
metadata: { name: a, namespace: x, labels: { app: web } }
spec: { containers: [{ name: c, ports: [{ name: http, containerPort: 8080 }] }] }
status: { podIP: 198.18.0.10 }
---
apiVersion: v1
kind: Pod
metadata: { name: b, namespace: x, labels: { app: web } }
spec: { containers: [{ name: c, ports: [{ name: http, containerPort: 9090 }] }] }
status: { podIP: 198.18.0.11 }
---
apiVersion: v1
kind: Pod
metadata: { name: c, namespace: x, labels: { app: db } }
status: { podIP: 198.18.0.12 }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: x }
spec:
  selector: { app: web }
  ports: [{ name: http, port: 80, targetPort: http }]
---
apiVersion: v1
kind: Service
metadata: { name: legacy, namespace: x }
spec:
  clusterIP: 198.19.7.7
  ports: [{ name: pg, port: 5432, protocol: TCP }]
`;

const slice = (extra = ''): string => `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: legacy-1
  namespace: x
  labels: { kubernetes.io/service-name: legacy }
addressType: IPv4
ports: [{ name: pg, port: 15432, protocol: TCP }]
endpoints:
  - addresses: [198.18.0.12]
    targetRef: { kind: Pod, name: c, namespace: x }
  - addresses: [198.18.9.9]
    conditions: { ready: false }
  - addresses: [198.18.9.10]
${extra}`;

const load = (text: string) => loadManifestTexts([{ file: 'svc.yaml', text }]);

describe('service tables', () => {
  it('resolves a named targetPort per selected pod', () => {
    const ir = compileIR(load(base));
    const web = ir.services.find((s) => s.service === 'x/web');
    expect(web?.address).toMatch(/^198\.19\./);
    expect(web?.backends).toEqual([
      { endpoint: 'x/a', address: '198.18.0.10', port: 8080, node: 'node-1' },
      { endpoint: 'x/b', address: '198.18.0.11', port: 9090, node: 'node-2' },
    ]);
  });

  it('routes only to ready pods when readiness is known', () => {
    const ir = compileIR(load(base), { readyPods: new Set(['x/b', 'x/c']) });
    expect(ir.services.find((s) => s.service === 'x/web')?.backends.map((b) => b.endpoint)).toEqual(['x/b']);
    // Policy is not about readiness: x/a still has its rule sets.
    expect(ir.ruleSets.filter((rs) => rs.endpoint === 'x/a')).toHaveLength(2);
  });

  it('takes the endpoints of a selector-less service from its EndpointSlices', () => {
    const ir = compileIR(load(base + '---' + slice()));
    const legacy = ir.services.find((s) => s.service === 'x/legacy');
    expect(legacy?.address).toBe('198.19.7.7');
    // Not-ready endpoints are skipped; a pod's address is named by the pod (and on its node);
    // others by address.
    expect(legacy?.backends).toEqual([
      { endpoint: 'x/c', address: '198.18.0.12', port: 15432, node: 'node-1' },
      { endpoint: '198.18.9.10', address: '198.18.9.10', port: 15432 },
    ]);
    const notReady = compileIR(load(base + '---' + slice()), { readyPods: new Set(['x/a']) });
    expect(notReady.services.find((s) => s.service === 'x/legacy')?.backends.map((b) => b.endpoint)).toEqual([
      '198.18.9.10',
    ]);
  });

  it('matches slice ports by name and protocol', () => {
    const udp = slice().replace('protocol: TCP }]\nendpoints', 'protocol: UDP }]\nendpoints');
    const ir = compileIR(load(base + '---' + udp));
    expect(ir.services.find((s) => s.service === 'x/legacy')?.backends).toEqual([]);
  });
});

describe('EndpointSlice validation', () => {
  const issuesOf = (text: string): string[] =>
    validateManifestTexts([{ file: 'svc.yaml', text }]).issues.map(formatIssue);

  it('needs the service-name label', () => {
    const text = base + '---' + slice().replace('  labels: { kubernetes.io/service-name: legacy }\n', '');
    expect(issuesOf(text)).toEqual([
      expect.stringMatching(
        /^svc\.yaml:\d+: EndpointSlice x\/legacy-1: metadata\.labels: an EndpointSlice needs the label kubernetes\.io\/service-name/,
      ),
    ]);
  });

  it('names a missing Service, and refuses slices for a Service with a selector', () => {
    expect(issuesOf(base + '---' + slice().replace('service-name: legacy', 'service-name: nope'))).toEqual([
      expect.stringMatching(
        /EndpointSlice x\/legacy-1: metadata\.labels: no Service x\/nope for this EndpointSlice/,
      ),
    ]);
    expect(issuesOf(base + '---' + slice().replace('service-name: legacy', 'service-name: web'))).toEqual([
      expect.stringMatching(/Service x\/web has a selector: its endpoints come from the pods it selects/),
    ]);
  });

  it('checks addresses against addressType', () => {
    const text = base + '---' + slice().replace('[198.18.9.10]', '[fd00:5957::1]');
    expect(issuesOf(text)).toEqual([
      expect.stringMatching(
        /endpoints\[2\]\.addresses\[0\]: fd00:5957::1 is not an IPv4 address \(addressType\)/,
      ),
    ]);
  });
});
