/**
 * The oracle and `explain` for traffic from outside (issue 20): which backends a node port or a
 * load-balancer address reaches under externalTrafficPolicy Local and Cluster, the source address
 * the backend's policy sees, refused and dropped connections, affinity with its timeout, and
 * internalTrafficPolicy for pods.
 */
import { describe, expect, it } from 'vitest';
import { ClientIpAffinity, evaluateExternal, explain, type ExternalVerdict } from '../../src/calc/index.js';
import type { IR, ServiceBackend } from '../../src/ir/types.js';
import {
  compileIR,
  modelOf,
  namespace,
  networkPolicy,
  pod,
  prefilter,
  service,
  type Manifest,
} from '../support/manifests.js';

const CLIENT = '198.19.129.2';
const OTHER_CLIENT = '198.19.129.3';

/** A service of `type` over pods `app: <app>`, target port 8080 (port 443 for `lb`, else 80). */
function external(
  name: string,
  type: 'NodePort' | 'LoadBalancer',
  app: string,
  nodePort: number,
  extra: Record<string, unknown> = {},
): Manifest {
  const port = name === 'lb' ? 443 : 80;
  return service('web', name, {
    type,
    selector: { app },
    ports: [{ port, targetPort: 8080, nodePort }],
    ...extra,
  });
}

/** web/a on node-1, web/b on node-2 (both serve 8080); web/c (`app: solo`) on node-1. */
const cluster = (extra: Manifest[] = []): Manifest[] => [
  namespace('web'),
  pod('web', 'a', { labels: { app: 'web' }, node: 'node-1', ports: [{ containerPort: 8080 }] }),
  pod('web', 'b', { labels: { app: 'web' }, node: 'node-2', ports: [{ containerPort: 8080 }] }),
  pod('web', 'c', { labels: { app: 'solo' }, node: 'node-1', ports: [{ containerPort: 8080 }] }),
  external('local', 'NodePort', 'web', 30080, { externalTrafficPolicy: 'Local' }),
  external('spread', 'NodePort', 'web', 30081),
  external('solo', 'LoadBalancer', 'solo', 30082, { externalTrafficPolicy: 'Local' }),
  external('empty', 'LoadBalancer', 'nobody', 30083),
  external('lb', 'LoadBalancer', 'web', 30443, {
    sessionAffinity: 'ClientIP',
    sessionAffinityConfig: { clientIP: { timeoutSeconds: 30 } },
  }),
  ...extra,
];

const irOf = (extra: Manifest[] = []): IR => compileIR(modelOf(cluster(extra)));

function paths(v: ExternalVerdict): [string, string, string, string, boolean][] {
  return v.paths.map((p) => [p.entryNode, p.backend.endpoint, p.source, p.sourceKind, p.verdict.allowed]);
}

function lbAddress(ir: IR, service: string): string {
  return ir.services.find((t) => t.service === service)?.loadBalancerIPs?.[0] as string;
}

describe('evaluateExternal: which backends, from which source', () => {
  it('Local: only the entry node’s backend, with the client address kept', () => {
    const ir = irOf();
    const v = evaluateExternal(ir, CLIENT, { kind: 'nodeport', node: 'node-2', port: 30080 }, 'TCP');
    expect(v.table?.service).toBe('web/local');
    expect(paths(v)).toEqual([['node-2', 'web/b', CLIENT, 'client', true]]);
    expect(v.problem).toBeUndefined();
    // The node may be named by its external address too.
    const byAddress = evaluateExternal(
      ir,
      CLIENT,
      { kind: 'nodeport', node: '198.19.128.2', port: 30080 },
      'TCP',
    );
    expect(paths(byAddress)).toEqual(paths(v));
  });

  it('Cluster: every backend, the source masqueraded to the entry node’s fabric address', () => {
    const ir = irOf();
    const node1 = ir.nodes.find((n) => n.name === 'node-1')?.address as string;
    const v = evaluateExternal(ir, CLIENT, { kind: 'nodeport', node: 'node-1', port: 30081 }, 'TCP');
    expect(paths(v)).toEqual([
      ['node-1', 'web/a', node1, 'node', true],
      ['node-1', 'web/b', node1, 'node', true],
    ]);
  });

  it('Local on a node without a backend of its own: dropped, not sent elsewhere', () => {
    const v = evaluateExternal(irOf(), CLIENT, { kind: 'nodeport', node: 'node-2', port: 30082 }, 'TCP');
    expect(v.paths).toEqual([]);
    expect(v.problem).toBe('no-local-endpoints');
    expect(v.unservedNodes).toEqual(['node-2']);
  });

  it('a service without endpoints, or a port no service has, is refused', () => {
    const ir = irOf();
    expect(
      evaluateExternal(ir, CLIENT, { kind: 'nodeport', node: 'node-1', port: 30083 }, 'TCP').problem,
    ).toBe('no-endpoints');
    expect(
      evaluateExternal(ir, CLIENT, { kind: 'nodeport', node: 'node-1', port: 30999 }, 'TCP').problem,
    ).toBe('port-not-defined');
    // The node port is TCP: the same number over UDP reaches nothing.
    expect(
      evaluateExternal(ir, CLIENT, { kind: 'nodeport', node: 'node-1', port: 30080 }, 'UDP').problem,
    ).toBe('port-not-defined');
    expect(() =>
      evaluateExternal(ir, CLIENT, { kind: 'nodeport', node: 'node-9', port: 30080 }, 'TCP'),
    ).toThrow(/there is no node 'node-9' \(nodes: node-1 \(198.19.128.1\), node-2 \(198.19.128.2\)\)/);
  });

  it('a load-balancer address enters at every node under Cluster, only at nodes with a backend under Local', () => {
    const ir = irOf();
    const spread = evaluateExternal(
      ir,
      CLIENT,
      { kind: 'lb', address: lbAddress(ir, 'web/lb'), port: 443 },
      'TCP',
    );
    expect(spread.entryNodes).toEqual(['node-1', 'node-2']);
    expect(spread.paths).toHaveLength(4);
    expect(new Set(spread.paths.map((p) => p.sourceKind))).toEqual(new Set(['node']));
    const solo = evaluateExternal(
      ir,
      CLIENT,
      { kind: 'lb', address: lbAddress(ir, 'web/solo'), port: 80 },
      'TCP',
    );
    expect(solo.entryNodes).toEqual(['node-1']);
    expect(paths(solo)).toEqual([['node-1', 'web/c', CLIENT, 'client', true]]);
    // The load-balancer address answers on the service port, not the node port.
    const wrong = evaluateExternal(
      ir,
      CLIENT,
      { kind: 'lb', address: lbAddress(ir, 'web/solo'), port: 30082 },
      'TCP',
    );
    expect(wrong.problem).toBe('port-not-defined');
  });
});

describe('policy applies to the translated packet', () => {
  const denyClient = networkPolicy('web', 'deny-client', {
    podSelector: { matchLabels: { app: 'web' } },
    ingress: [{ from: [{ ipBlock: { cidr: '198.19.0.0/16', except: [`${CLIENT}/32`] } }] }],
  });

  it('under Local a NetworkPolicy denying the client blocks it through the node port; another client passes', () => {
    const ir = irOf([denyClient]);
    const entry = { kind: 'nodeport', node: 'node-1', port: 30080 } as const;
    const denied = evaluateExternal(ir, CLIENT, entry, 'TCP');
    expect(paths(denied)).toEqual([['node-1', 'web/a', CLIENT, 'client', false]]);
    expect(denied.paths[0]?.verdict.decidedAt).toBe('ingress');
    expect(paths(evaluateExternal(ir, OTHER_CLIENT, entry, 'TCP'))).toEqual([
      ['node-1', 'web/a', OTHER_CLIENT, 'client', true],
    ]);
  });

  it('under Cluster the policy sees the node, not the client', () => {
    const ir = irOf([denyClient]);
    const v = evaluateExternal(ir, CLIENT, { kind: 'nodeport', node: 'node-1', port: 30081 }, 'TCP');
    // The node's fabric address (198.18.255.1) is outside the allowed 198.19.0.0/16: denied for everyone.
    expect(v.paths.map((p) => [p.source, p.verdict.allowed])).toEqual([
      ['198.18.255.1', false],
      ['198.18.255.1', false],
    ]);
  });

  it('under Cluster a backend on the entry node sees the node (kube-proxy) or the client (eBPF): the oracle carries both', () => {
    const ir = irOf([denyClient]);
    const entry = { kind: 'nodeport', node: 'node-1', port: 30081 } as const;
    const kubeProxy = evaluateExternal(ir, CLIENT, entry, 'TCP');
    // web/a is on node-1: the other convention keeps the client, whom the policy denies too.
    expect(
      kubeProxy.paths.map((p) => [p.backend.endpoint, p.otherSource?.source, p.otherSource?.sourceKind]),
    ).toEqual([
      ['web/a', CLIENT, 'client'],
      ['web/b', undefined, undefined],
    ]);
    const other = irOf([
      networkPolicy('web', 'only-client', {
        podSelector: { matchLabels: { app: 'web' } },
        ingress: [{ from: [{ ipBlock: { cidr: `${CLIENT}/32` } }] }],
      }),
    ]);
    const ebpf = evaluateExternal(other, CLIENT, entry, 'TCP', undefined, 'client');
    expect(paths(ebpf)).toEqual([
      ['node-1', 'web/a', CLIENT, 'client', true],
      ['node-1', 'web/b', '198.18.255.1', 'node', false],
    ]);
    expect(ebpf.paths[0]?.otherSource).toMatchObject({
      source: '198.18.255.1',
      sourceKind: 'node',
      serves: false,
    });
    const m = modelOf(cluster([]));
    const x = explain(m, compileIR(m), {
      from: 'outside:client',
      to: 'nodeport/node-1:30081',
      protocol: 'TCP',
    });
    expect(x.service?.backends.map((b) => b.otherSource)).toEqual([
      { source: CLIENT, sourceKind: 'client', allowed: true },
      undefined,
    ]);
  });

  it('a prefilter on the entry node drops the client before any translation', () => {
    const ir = irOf([prefilter('outsiders', { nodes: ['node-1'], cidrs: [`${CLIENT}/32`] })]);
    const v = evaluateExternal(ir, CLIENT, { kind: 'nodeport', node: 'node-1', port: 30081 }, 'TCP');
    expect(v.prefilter).toEqual({ node: 'node-1', name: 'outsiders' });
    expect(v.paths).toEqual([]);
    expect(
      evaluateExternal(ir, CLIENT, { kind: 'nodeport', node: 'node-2', port: 30081 }, 'TCP').prefilter,
    ).toBe(undefined);
  });
});

describe('ClientIP affinity with its timeout', () => {
  it('keeps a client on its backend until timeoutSeconds pass without a connection', () => {
    const table = irOf().services.find((t) => t.service === 'web/lb');
    if (!table) throw new Error('no web/lb');
    expect(table.affinity).toEqual({ mode: 'ClientIP', timeoutSeconds: 30 });
    const affinity = new ClientIpAffinity(table);
    let turn = 0;
    // A round-robin pick: without affinity every connection would move.
    const roundRobin = (eligible: readonly ServiceBackend[]) => eligible[turn++ % eligible.length];
    const at = (t: number, client = CLIENT) => affinity.pick(client, t, table.backends, roundRobin)?.endpoint;
    expect(at(0)).toBe('web/a');
    expect(at(10)).toBe('web/a');
    expect(at(39)).toBe('web/a'); // 29 s after the last one: still held
    expect(at(10, OTHER_CLIENT)).toBe('web/b'); // per client
    expect(at(70)).not.toBe(undefined);
    expect(turn).toBe(3); // 70 - 39 ≥ 30: expired, a new pick
    // A remembered backend that is no longer eligible is not kept.
    const gone = affinity.pick(
      CLIENT,
      71,
      table.backends.filter((b) => b.endpoint === 'web/b'),
      roundRobin,
    );
    expect(gone?.endpoint).toBe('web/b');
  });

  it('without affinity every connection is a new pick', () => {
    const table = irOf().services.find((t) => t.service === 'web/spread');
    if (!table) throw new Error('no web/spread');
    const affinity = new ClientIpAffinity(table);
    let picks = 0;
    for (let t = 0; t < 3; t++) affinity.pick(CLIENT, t, table.backends, (e) => (picks++, e[0]));
    expect(picks).toBe(3);
  });
});

describe('explain from outside', () => {
  const model = () => modelOf(cluster());

  it('names the entry, the backend, the source it sees and the policy there', () => {
    const m = model();
    const x = explain(m, compileIR(m), {
      from: 'outside:client',
      to: 'nodeport/node-1:30080',
      protocol: 'TCP',
    });
    expect(x.allowed).toBe(true);
    expect(x.from).toEqual({ given: 'outside:client', address: CLIENT });
    expect(x.to).toEqual({ given: 'nodeport/node-1:30080', address: '198.19.128.1' });
    expect(x.service?.external).toMatchObject({
      kind: 'nodeport',
      node: 'node-1',
      externalTrafficPolicy: 'Local',
      entryNodes: ['node-1'],
    });
    expect(
      x.service?.backends.map((b) => [b.endpoint, b.entryNode, b.source, b.sourceKind, b.allowed]),
    ).toEqual([['web/a', 'node-1', CLIENT, 'client', true]]);
    expect(x.summary).toBe(
      `TCP outside:client (${CLIENT}) → nodeport/node-1:30080: allowed to web/a via node-1, client address kept`,
    );
  });

  it('says why nothing serves: refused without endpoints, dropped without a local one', () => {
    const m = model();
    const ir = compileIR(m);
    const refused = explain(m, ir, {
      from: `outside:${CLIENT}`,
      to: 'nodeport/node-1:30083',
      protocol: 'TCP',
    });
    expect([refused.allowed, refused.decidedAt, refused.service?.problem]).toEqual([
      false,
      'service',
      'no-endpoints',
    ]);
    expect(refused.summary).toMatch(
      /refused: nodeport\/node-1:30083 \(web\/empty port 80\/TCP.*\) has no endpoints/,
    );
    const dropped = explain(m, ir, { from: 'outside:client', to: 'nodeport/node-2:30082', protocol: 'TCP' });
    expect(dropped.service?.problem).toBe('no-local-endpoints');
    expect(dropped.summary).toMatch(/dropped: node-2 has no endpoint of its own/);
    const lb = explain(m, ir, {
      from: 'outside:client',
      to: `lb/${lbAddress(ir, 'web/lb')}:443`,
      protocol: 'TCP',
    });
    expect(lb.service?.affinityTimeoutSeconds).toBe(30);
    expect(lb.service?.backends).toHaveLength(4);
  });

  it('refuses what cannot be asked', () => {
    const m = model();
    const ir = compileIR(m);
    expect(() =>
      explain(m, ir, { from: 'outside:nobody', to: 'nodeport/node-1:30080', protocol: 'TCP' }),
    ).toThrow(/there is no outside client 'nobody' \(outside clients: outside:client; or give an address/);
    expect(() => explain(m, ir, { from: 'web/a', to: 'nodeport/node-1:30080', protocol: 'TCP' })).toThrow(
      /from a pod, explain the service's cluster IP/,
    );
    expect(() =>
      explain(m, ir, { from: 'outside:client', to: 'nodeport/node-1:30080', protocol: 'TCP', port: 80 }),
    ).toThrow(/names port 30080 but the port asked is 80/);
    // A lab's own clients resolve by name.
    const x = explain(m, ir, {
      from: 'outside:far',
      to: 'nodeport/node-1:30080',
      protocol: 'TCP',
      outside: { far: OTHER_CLIENT },
    });
    expect(x.from.address).toBe(OTHER_CLIENT);
  });

  it('internalTrafficPolicy Local: a pod reaches only backends on its own node', () => {
    const m = modelOf([
      ...cluster(),
      pod('web', 'client', { labels: { app: 'client' }, node: 'node-2' }),
      pod('web', 'lonely', { labels: { app: 'client' }, node: 'node-3' }),
      service('web', 'near', {
        internalTrafficPolicy: 'Local',
        selector: { app: 'web' },
        ports: [{ port: 80, targetPort: 8080 }],
      }),
    ]);
    const ir = compileIR(m);
    const near = explain(m, ir, { from: 'web/client', to: 'svc/web/near:80', protocol: 'TCP' });
    expect(near.service?.backends.map((b) => b.endpoint)).toEqual(['web/b']);
    expect(near.service?.internalTrafficPolicy).toBe('Local');
    const none = explain(m, ir, { from: 'web/lonely', to: 'svc/web/near:80', protocol: 'TCP' });
    expect([none.allowed, none.service?.problem]).toEqual([false, 'no-local-endpoints']);
    // Cluster (the default) keeps every backend.
    const spread = explain(m, ir, { from: 'web/client', to: 'svc/web/spread:80', protocol: 'TCP' });
    expect(spread.service?.backends.map((b) => b.endpoint)).toEqual(['web/a', 'web/b']);
  });
});
