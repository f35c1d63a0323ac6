/**
 * explain follows a service: `svc/NS/NAME:PORT` and its cluster IP are translated to the backend
 * pods, and the policy is explained per backend on its target port (egress of the source,
 * ingress of the backend); a port the service lacks and a service without endpoints say so.
 */
import { describe, expect, it } from 'vitest';
import { explain } from '../../src/calc/index.js';
import { compileIR, modelOf, namespace, networkPolicy, pod, service } from '../support/manifests.js';

const model = modelOf([
  namespace('outside'),
  namespace('web'),
  pod('outside', 'client', { labels: { app: 'client' } }),
  pod('outside', 'trusted', { labels: { app: 'trusted' } }),
  pod('web', 'web-0', {
    labels: { app: 'web' },
    ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
  }),
  pod('web', 'web-1', {
    labels: { app: 'web', canary: 'yes' },
    ports: [{ name: 'http', containerPort: 8081, protocol: 'TCP' }],
  }),
  // Selected, but serves no port named http: no backend.
  pod('web', 'web-2', {
    labels: { app: 'web' },
    ports: [{ name: 'metrics', containerPort: 9090, protocol: 'TCP' }],
  }),
  service('web', 'web', {
    selector: { app: 'web' },
    ports: [{ name: 'http', port: 80, targetPort: 'http' }],
  }),
  service('web', 'empty', { selector: { app: 'nothing' }, ports: [{ port: 80, targetPort: 8080 }] }),
  // web-1 (the canary) admits only trusted clients, on its target port 8081.
  networkPolicy('web', 'canary', {
    podSelector: { matchLabels: { canary: 'yes' } },
    ingress: [
      {
        from: [{ namespaceSelector: {}, podSelector: { matchLabels: { app: 'trusted' } } }],
        ports: [{ port: 8081 }],
      },
    ],
  }),
]);
const ir = compileIR(model);
const vip = ir.services.find((t) => t.service === 'web/web')?.address as string;

describe('explain: services', () => {
  it('svc/NS/NAME:PORT: each backend pod on its target port, with the rule that decides there', () => {
    const x = explain(model, ir, { from: 'outside/client', to: 'svc/web/web:80', protocol: 'TCP' });
    expect(x.allowed).toBe(false);
    expect(x.service).toMatchObject({
      name: 'web/web',
      address: vip,
      port: 80,
      protocol: 'TCP',
      portName: 'http',
      targetPort: 'http',
      ports: ['80/TCP (http)'],
      skipped: [{ pod: 'web/web-2', reason: "no container port named 'http' (TCP)" }],
    });
    const [b0, b1] = x.service?.backends ?? [];
    expect(b0).toMatchObject({ endpoint: 'web/web-0', targetPort: 8080, allowed: true });
    expect(b1).toMatchObject({
      endpoint: 'web/web-1',
      targetPort: 8081,
      allowed: false,
      decidedAt: 'ingress',
      egress: { endpoint: 'outside/client', allowed: true },
      ingress: {
        endpoint: 'web/web-1',
        allowed: false,
        reason: 'kubernetes-default-deny',
        networkPolicies: ['NetworkPolicy web/canary'],
      },
    });
    expect(x.service?.backends).toHaveLength(2);
    // The top level shows the denied backend, for pages that show one pair.
    expect(x.ingress?.endpoint).toBe('web/web-1');
    expect(x.summary).toBe(
      'TCP port 80 outside/client → svc/web/web:80: allowed to 1 of 2 backends, denied to web/web-1 (connections to those fail)',
    );
  });

  it('the same through the cluster IP, given as VIP:PORT or with --port', () => {
    const a = explain(model, ir, { from: 'outside/trusted', to: `${vip}:80`, protocol: 'TCP' });
    const b = explain(model, ir, { from: 'outside/trusted', to: vip, protocol: 'TCP', port: 80 });
    for (const x of [a, b]) {
      expect(x.allowed).toBe(true);
      expect(x.service?.name).toBe('web/web');
      expect(x.service?.backends.map((s) => [s.endpoint, s.allowed, s.ingress?.rule?.policy])).toEqual([
        ['web/web-0', true, undefined],
        ['web/web-1', true, 'NetworkPolicy web/canary'],
      ]);
    }
    expect(a.summary).toMatch(/: allowed to all 2 backends$/);
  });

  it('a port the service does not define, and a service without endpoints', () => {
    const noPort = explain(model, ir, { from: 'outside/client', to: 'svc/web/web:443', protocol: 'TCP' });
    expect(noPort).toMatchObject({
      allowed: false,
      decidedAt: 'service',
      service: { problem: 'port-not-defined', backends: [], ports: ['80/TCP (http)'] },
    });
    expect(noPort.summary).toMatch(/service web\/web has no port 443\/TCP \(ports: 80\/TCP \(http\)\)/);
    const udp = explain(model, ir, { from: 'outside/client', to: 'svc/web/web:80', protocol: 'UDP' });
    expect(udp.service?.problem).toBe('port-not-defined');
    const empty = explain(model, ir, { from: 'outside/client', to: 'svc/web/empty:80', protocol: 'TCP' });
    expect(empty).toMatchObject({
      allowed: false,
      decidedAt: 'service',
      service: { problem: 'no-endpoints' },
    });
    expect(empty.summary).toMatch(/has no endpoints for port 80\/TCP \(no ready pod matches its selector\)/);
  });

  it('refuses what it cannot follow, saying why', () => {
    expect(() =>
      explain(model, ir, { from: 'outside/client', to: 'svc/web/nope:80', protocol: 'TCP' }),
    ).toThrow(
      /no service 'web\/nope' \(services: web\/web, web\/empty\)|no service 'web\/nope' \(services: web\/empty, web\/web\)/,
    );
    expect(() => explain(model, ir, { from: 'outside/client', to: 'svc/web/web', protocol: 'ICMP' })).toThrow(
      /translates TCP, UDP and SCTP ports/,
    );
    expect(() =>
      explain(model, ir, { from: 'outside/client', to: 'svc/web/web:80', protocol: 'TCP', port: 81 }),
    ).toThrow(/names port 80 but the port asked is 81/);
  });

  it('a pod destination is explained as before', () => {
    const x = explain(model, ir, { from: 'outside/client', to: 'web/web-1', protocol: 'TCP', port: 8081 });
    expect(x.service).toBeUndefined();
    expect(x).toMatchObject({ allowed: false, decidedAt: 'ingress', to: { endpoint: 'web/web-1' } });
  });
});
