/**
 * Services reached from outside the cluster (issue 20): NodePort and LoadBalancer manifests are
 * validated as the API server does, node ports and load-balancer addresses are allocated once and
 * kept, and the IR carries what the backends need.
 */
import { describe, expect, it } from 'vitest';
import {
  allocate,
  buildIR,
  LOAD_BALANCER_POOL,
  NODE_EXTERNAL_RANGE,
  SERVICE_RANGE,
} from '../../src/calc/index.js';
import { ManifestError, validateManifestTexts } from '../../src/model/index.js';
import { cidrContains, parseAddress, type Address } from '../../src/util/ip.js';
import {
  compileIR,
  expectIssue,
  lineContaining,
  modelOf,
  namespace,
  pod,
  service,
  toYaml,
  type Manifest,
} from '../support/manifests.js';

const FILE = 'outside.yaml';

function issuesOf(manifests: readonly Manifest[]) {
  const text = toYaml(manifests);
  return { text, issues: validateManifestTexts([{ file: FILE, text }]).issues };
}

const web = (): Manifest[] => [
  namespace('web'),
  pod('web', 'a', { labels: { app: 'web' }, node: 'node-1', ports: [{ containerPort: 8080 }] }),
  pod('web', 'b', { labels: { app: 'web' }, node: 'node-2', ports: [{ containerPort: 8080 }] }),
];

const ports = [{ port: 80, targetPort: 8080 }];

describe('Service validation for traffic from outside', () => {
  const cases: [string, Record<string, unknown>, string, RegExp][] = [
    [
      'a nodePort on a ClusterIP service',
      { selector: {}, ports: [{ port: 80, nodePort: 30080 }] },
      'spec.ports[0].nodePort',
      /may not be used when `type` is 'ClusterIP'/,
    ],
    [
      'externalTrafficPolicy on a ClusterIP service',
      { selector: {}, externalTrafficPolicy: 'Local', ports },
      'spec.externalTrafficPolicy',
      /may only be set for externally-accessible services/,
    ],
    [
      'loadBalancerIP on a NodePort service',
      { type: 'NodePort', selector: {}, loadBalancerIP: '198.19.192.9', ports },
      'spec.loadBalancerIP',
      /may only be used when `type` is 'LoadBalancer'/,
    ],
    [
      'a node port below the range',
      { type: 'NodePort', selector: {}, ports: [{ port: 80, nodePort: 8080 }] },
      'spec.ports[0].nodePort',
      /not in the valid range. The range of valid ports is 30000-32767/,
    ],
    [
      'a node port above the range',
      { type: 'NodePort', selector: {}, ports: [{ port: 80, nodePort: 32768 }] },
      'spec.ports[0].nodePort',
      /not in the valid range/,
    ],
    [
      'one node port twice for one protocol',
      {
        type: 'NodePort',
        selector: {},
        ports: [
          { name: 'a', port: 80, nodePort: 30080 },
          { name: 'b', port: 81, nodePort: 30080 },
        ],
      },
      'spec.ports[1].nodePort',
      /Duplicate value: 30080/,
    ],
    [
      'a headless NodePort service',
      { type: 'NodePort', clusterIP: 'None', selector: {}, ports },
      'spec.clusterIP',
      /may not be set to 'None' for NodePort services/,
    ],
    [
      'an unknown type',
      { type: 'ExternalName', selector: {}, ports },
      'spec.type',
      /must be one of "ClusterIP", "NodePort", "LoadBalancer"/,
    ],
    [
      'an unknown externalTrafficPolicy',
      { type: 'NodePort', externalTrafficPolicy: 'Nearest', selector: {}, ports },
      'spec.externalTrafficPolicy',
      /must be one of "Cluster", "Local"/,
    ],
    [
      'an unknown internalTrafficPolicy',
      { internalTrafficPolicy: 'Node', selector: {}, ports },
      'spec.internalTrafficPolicy',
      /must be one of "Cluster", "Local"/,
    ],
    ...[0, 86401].map((timeoutSeconds): [string, Record<string, unknown>, string, RegExp] => [
      `an affinity timeout of ${timeoutSeconds} s`,
      {
        selector: {},
        sessionAffinity: 'ClientIP',
        sessionAffinityConfig: { clientIP: { timeoutSeconds } },
        ports,
      },
      'spec.sessionAffinityConfig.clientIP.timeoutSeconds',
      /must be 1-86400 seconds/,
    ]),
    [
      'an affinity config without ClientIP affinity',
      { selector: {}, sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } }, ports },
      'spec.sessionAffinityConfig',
      /must not be set when session affinity is None/,
    ],
  ];

  it.each(cases)('refuses %s, naming file, object and field', (_what, spec, field, message) => {
    const { text, issues } = issuesOf([namespace('web'), service('web', 'svc', spec)]);
    const key = field
      .split('.')
      .at(-1)
      ?.replace(/\[\d+\]$/, '') as string;
    const occurrence = field === 'spec.ports[1].nodePort' ? 2 : 1;
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, `${key}:`, occurrence),
      kind: 'Service',
      object: 'web/svc',
      field,
      message,
    });
  });

  it('refuses a node port another service already has', () => {
    const { text, issues } = issuesOf([
      namespace('web'),
      service('web', 'first', { type: 'NodePort', selector: {}, ports: [{ port: 80, nodePort: 30080 }] }),
      service('web', 'second', { type: 'NodePort', selector: {}, ports: [{ port: 81, nodePort: 30080 }] }),
    ]);
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, 'nodePort:', 2),
      kind: 'Service',
      object: 'web/second',
      field: 'spec.ports[0].nodePort',
      message: /already allocated: node port 30080 is used by service web\/first/,
    });
  });

  it('refuses load-balancer addresses on another type, without an ip, or used twice', () => {
    const lb = (name: string, type: string, ingress: unknown[]): Manifest => ({
      ...service('web', name, { type, selector: {}, ports }),
      status: { loadBalancer: { ingress } },
    });
    const { text, issues } = issuesOf([
      namespace('web'),
      lb('np', 'NodePort', [{ ip: '198.19.192.5' }]),
      lb('host', 'LoadBalancer', [{ hostname: 'lb.example' }]),
      lb('one', 'LoadBalancer', [{ ip: '198.19.192.7' }]),
      lb('two', 'LoadBalancer', [{ ip: '198.19.192.7' }]),
    ]);
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, '- ip: 198.19.192.5'),
      kind: 'Service',
      object: 'web/np',
      field: 'status.loadBalancer.ingress[0]',
      message: /only a LoadBalancer service has load-balancer addresses \(type is NodePort\)/,
    });
    expect(issues.find((i) => i.object === 'web/host')?.message).toMatch(/needs ip/);
    expectIssue(issues, {
      file: FILE,
      line: lineContaining(text, '- ip: 198.19.192.7', 2),
      kind: 'Service',
      object: 'web/two',
      field: 'status.loadBalancer.ingress[0].ip',
      message: /198.19.192.7 is already used by service web\/one/,
    });
  });

  it('defaults as the API server does: type ClusterIP, policies Cluster, affinity timeout 10800', () => {
    const model = modelOf([
      namespace('web'),
      service('web', 'cip', { selector: {}, ports }),
      service('web', 'np', { type: 'NodePort', selector: {}, sessionAffinity: 'ClientIP', ports }),
    ]);
    const [cip, np] = model.services;
    expect(cip).toMatchObject({ type: 'ClusterIP', internalTrafficPolicy: 'Cluster' });
    expect(cip?.externalTrafficPolicy).toBeUndefined();
    expect(np).toMatchObject({
      type: 'NodePort',
      externalTrafficPolicy: 'Cluster',
      internalTrafficPolicy: 'Cluster',
      affinityTimeoutSeconds: 10800,
    });
  });
});

function address(ip: string): Address {
  return parseAddress(ip) as Address;
}

describe('allocation of node ports and load-balancer addresses', () => {
  const manifests = (): Manifest[] => [
    ...web(),
    service('web', 'np', { type: 'NodePort', selector: { app: 'web' }, ports }),
    service('web', 'fixed', {
      type: 'NodePort',
      selector: { app: 'web' },
      ports: [{ port: 80, nodePort: 30000 }],
    }),
    service('web', 'lb', {
      type: 'LoadBalancer',
      selector: { app: 'web' },
      ports: [
        { name: 'dns', port: 53, protocol: 'UDP' },
        { name: 'dns-tcp', port: 53, protocol: 'TCP' },
      ],
    }),
    service('web', 'cip', { selector: { app: 'web' }, ports }),
  ];

  it('keeps stated node ports, shares one per port number, and never hands a taken one out', () => {
    const a = allocate(modelOf(manifests()));
    expect(a.nodePorts).toEqual({
      'web/fixed:80/TCP': 30000,
      'web/lb:53/TCP': 30001,
      'web/lb:53/UDP': 30001,
      'web/np:80/TCP': 30002,
    });
    expect(Object.keys(a.loadBalancerAddresses)).toEqual(['web/lb']);
    for (const ip of a.loadBalancerAddresses['web/lb'] ?? [])
      expect(cidrContains(LOAD_BALANCER_POOL, address(ip)), ip).toBe(true);
  });

  it('is stable across re-applies: a new service does not move what others were given', () => {
    const first = allocate(modelOf(manifests()));
    const grown = modelOf([
      ...manifests(),
      // Sorts before every other service, so a fresh allocation would give it the lowest port and address.
      service('web', 'aaa', { type: 'LoadBalancer', selector: {}, ports: [{ port: 443 }] }),
    ]);
    const next = allocate(grown, first);
    for (const [k, v] of Object.entries(first.nodePorts)) expect(next.nodePorts[k], k).toBe(v);
    expect(next.loadBalancerAddresses['web/lb']).toEqual(first.loadBalancerAddresses['web/lb']);
    expect(next.nodePorts['web/aaa:443/TCP']).toBe(30003);
    expect(next.loadBalancerAddresses['web/aaa']).toEqual(['198.19.192.3']);
    expect(allocate(grown, next)).toEqual(next);
    // A fresh allocation of the same model would have moved them.
    expect(allocate(grown).nodePorts['web/lb:53/TCP']).not.toBe(first.nodePorts['web/lb:53/TCP']);
  });

  it('gives up a previous node port that a manifest now states for another service', () => {
    const first = allocate(modelOf(manifests()));
    const taken = first.nodePorts['web/np:80/TCP'] as number;
    const model = modelOf([
      ...manifests(),
      service('web', 'claims', {
        type: 'NodePort',
        selector: {},
        ports: [{ port: 80, nodePort: taken }],
      }),
    ]);
    const next = allocate(model, first);
    expect(next.nodePorts['web/claims:80/TCP']).toBe(taken);
    expect(next.nodePorts['web/np:80/TCP']).not.toBe(taken);
  });

  it('honours spec.loadBalancerIP and status.loadBalancer.ingress, and refuses addresses outside the pool', () => {
    const lb = (name: string, extra: Record<string, unknown>, status?: unknown): Manifest => ({
      ...service('web', name, { type: 'LoadBalancer', selector: {}, ports, ...extra }),
      ...(status ? { status } : {}),
    });
    const ok = allocate(
      modelOf([
        namespace('web'),
        lb('asks', { loadBalancerIP: '198.19.200.1' }),
        lb('stated', {}, { loadBalancer: { ingress: [{ ip: '198.19.192.2' }, { ip: '198.19.192.3' }] } }),
        lb('plain', {}),
      ]),
    );
    expect(ok.loadBalancerAddresses).toEqual({
      'web/asks': ['198.19.200.1'],
      'web/plain': ['198.19.192.4'],
      'web/stated': ['198.19.192.2', '198.19.192.3'],
    });
    const text = toYaml([
      namespace('web'),
      lb('far', { loadBalancerIP: '198.18.0.9' }),
      lb('outside', {}, { loadBalancer: { ingress: [{ ip: '198.19.0.9' }] } }),
    ]);
    const model = validateManifestTexts([{ file: FILE, text }]).model;
    expect(model).toBeDefined();
    let error: unknown;
    try {
      allocate(model as NonNullable<typeof model>);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ManifestError);
    const issues = (error as ManifestError).issues;
    expect(issues.map((i) => [i.object, i.field, i.file])).toEqual([
      ['web/far', 'spec.loadBalancerIP', FILE],
      ['web/outside', 'status.loadBalancer.ingress[0].ip', FILE],
    ]);
    expect((error as Error).message).toMatch(/198.18.0.9 is outside the load-balancer pool 198.19.192.0\/18/);
  });
});

describe('the IR of services reached from outside', () => {
  const ir = () =>
    compileIR(
      modelOf([
        ...web(),
        service('web', 'np', {
          type: 'NodePort',
          externalTrafficPolicy: 'Local',
          internalTrafficPolicy: 'Local',
          selector: { app: 'web' },
          sessionAffinity: 'ClientIP',
          sessionAffinityConfig: { clientIP: { timeoutSeconds: 30 } },
          ports: [{ port: 80, targetPort: 8080, nodePort: 31080 }],
        }),
        service('web', 'lb', { type: 'LoadBalancer', selector: { app: 'web' }, ports }),
        service('web', 'cip', { selector: { app: 'web' }, ports }),
      ]),
    );

  it('carries node port, load-balancer addresses, traffic policies, affinity timeout and backend nodes', () => {
    const tables = Object.fromEntries(ir().services.map((t) => [t.service, t]));
    expect(tables['web/np']).toMatchObject({
      nodePort: 31080,
      externalTrafficPolicy: 'Local',
      internalTrafficPolicy: 'Local',
      affinity: { mode: 'ClientIP', timeoutSeconds: 30 },
      backends: [
        { endpoint: 'web/a', node: 'node-1', port: 8080 },
        { endpoint: 'web/b', node: 'node-2', port: 8080 },
      ],
    });
    expect(tables['web/np']?.loadBalancerIPs).toBeUndefined();
    expect(tables['web/lb']).toMatchObject({
      externalTrafficPolicy: 'Cluster',
      loadBalancerIPs: ['198.19.192.2'],
    });
    expect(tables['web/lb']?.nodePort).toBeGreaterThanOrEqual(30000);
    // A ClusterIP service has none of it (absent policies mean Cluster).
    const cip = tables['web/cip'];
    expect([
      cip?.nodePort,
      cip?.loadBalancerIPs,
      cip?.externalTrafficPolicy,
      cip?.internalTrafficPolicy,
    ]).toEqual([undefined, undefined, undefined, undefined]);
    for (const t of Object.values(tables)) expect(cidrContains(SERVICE_RANGE, address(t.address))).toBe(true);
  });

  it('gives every node an external address beside its fabric address', () => {
    const nodes = ir().nodes;
    expect(nodes.map((n) => [n.name, n.externalAddress])).toEqual([
      ['node-1', '198.19.128.1'],
      ['node-2', '198.19.128.2'],
    ]);
    for (const n of nodes)
      expect(cidrContains(NODE_EXTERNAL_RANGE, address(n.externalAddress as string))).toBe(true);
  });

  it('refuses to build an external service without its node port', () => {
    const model = modelOf([...web(), service('web', 'np', { type: 'NodePort', selector: {}, ports })]);
    const full = allocate(model);
    expect(() => buildIR(model, { ...full, nodePorts: {} })).toThrow(/web\/np:80\/TCP has no node port/);
  });
});
