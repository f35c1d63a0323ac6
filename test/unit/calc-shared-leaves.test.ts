/**
 * The IR shares what the model shares: endpoints of pods read from one manifest take their label
 * maps, namespace labels and port lists as the one frozen object the loader made for all of them
 * (util/intern.ts), and tables without session affinity share one affinity. A change in place
 * of a shared object throws; the IR stays equal to one built from unshared objects.
 */
import { describe, expect, it } from 'vitest';
import { loadManifestTexts } from '../../src/model/loader.js';
import { compileIR } from '../support/manifests.js';

/** Two pods alike but for their names: the loader shares their labels and ports. */
const webPod = (name: string): string => `
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: shop, labels: { app: web } }
spec:
  nodeName: node-1
  containers: [{ name: c, ports: [{ name: http, containerPort: 80 }] }]
`;

const webService = (name: string, port: number): string => `
apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: shop }
spec: { selector: { app: web }, ports: [{ port: ${port}, targetPort: http }] }
`;

const MANIFEST = [
  `
apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { team: a } }
`,
  webPod('web-1'),
  webPod('web-2'),
  webService('web', 80),
  webService('web-too', 8080),
].join('---');

describe('IR objects shared with the model', () => {
  it('endpoints of one manifest share labels, namespace labels and ports, frozen', () => {
    const model = loadManifestTexts([{ file: 'shop.yaml', text: MANIFEST }]);
    const ir = compileIR(model);
    const [a, b] = ir.endpoints.filter((e) => e.namespace === 'shop');
    if (!a || !b) throw new Error('two endpoints expected');
    expect(a.labels).toBe(b.labels);
    expect(a.namespaceLabels).toBe(b.namespaceLabels);
    expect(a.ports).toBe(b.ports);
    expect(a.namespaceLabels).toMatchObject({ team: 'a' });
    expect(a.ports).toEqual([{ name: 'http', port: 80, protocol: 'TCP' }]);
    expect(() => {
      (a.labels as Record<string, string>).app = 'db';
    }).toThrow(TypeError);
    expect(() => {
      (a.ports[0] as { port: number }).port = 81;
    }).toThrow(TypeError);
    // The same IR as from objects nobody shares.
    expect(compileIR(structuredClone(model))).toEqual(ir);
  });

  it('tables without session affinity share one frozen affinity', () => {
    const ir = compileIR(loadManifestTexts([{ file: 'shop.yaml', text: MANIFEST }]));
    const [web, webToo] = ir.services;
    if (!web || !webToo) throw new Error('two tables expected');
    expect(web.affinity).toEqual({ mode: 'None' });
    expect(web.affinity).toBe(webToo.affinity);
    expect(Object.isFrozen(web.affinity)).toBe(true);
  });
});
