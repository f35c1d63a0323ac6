/**
 * NetworkPolicy semantics, hand-checked against the Kubernetes documentation
 * (concepts/services-networking/network-policies and the networking.k8s.io/v1 API reference):
 *
 * - A pod is isolated for a direction when some NetworkPolicy selects it with that policyType;
 *   then only what some rule of those policies allows gets through (policies are additive).
 * - policyTypes defaults to [Ingress], plus Egress when the policy has egress rules.
 * - An empty or missing from/to matches every peer; empty or missing ports, every port and protocol.
 * - A bare podSelector peer selects pods in the policy's namespace; namespaceSelector alone, all pods
 *   of matching namespaces; both in one peer, the intersection; separate peers are ORed.
 * - ipBlock `except` ranges are not part of the block; port/endPort is an inclusive range; a named
 *   port resolves on the destination pod; a port's protocol defaults to TCP.
 * - A pod can always reach itself; the evaluator judges new connections (replies are conntrack's).
 */
import { describe, expect, it } from 'vitest';
import { explain, reachMatrix } from '../../src/calc/index.js';
import type { PolicyRef } from '../../src/ir/types.js';
import { Cluster, namespace, networkPolicy, pod, type Manifest } from '../support/manifests.js';

/** Outside the cluster: the lab-external test-host range (198.18.255.0/24 holds no pods). */
const OUTSIDE = '198.18.255.200';
const OUTSIDE_OTHER = '198.18.255.10';

const WEB_PORTS = [
  { name: 'serve-80-tcp', containerPort: 80 },
  { name: 'serve-80-udp', containerPort: 80, protocol: 'UDP' as const },
  { name: 'serve-81-tcp', containerPort: 81 },
  { name: 'dns', containerPort: 53, protocol: 'UDP' as const },
  { name: 'sctp', containerPort: 9000, protocol: 'SCTP' as const },
];

/**
 * Namespaces x, y, z (labelled ns=<name>) with pods a and b (labelled pod=<name>) at
 * 198.18.<1|2|3>.<1|2>, plus the given policies and extra manifests.
 */
function xyz(policies: Manifest[] = [], extra: Manifest[] = []): Cluster {
  const manifests: Manifest[] = [];
  ['x', 'y', 'z'].forEach((ns, i) => {
    manifests.push(namespace(ns, { ns }));
    ['a', 'b'].forEach((p, j) =>
      manifests.push(pod(ns, p, { labels: { pod: p }, ip: `198.18.${i + 1}.${j + 1}`, ports: WEB_PORTS })),
    );
  });
  return new Cluster([...manifests, ...extra, ...policies]);
}

const PODS = ['x/a', 'x/b', 'y/a', 'y/b', 'z/a', 'z/b'];

function npRef(ns: string, name: string): PolicyRef {
  return { kind: 'NetworkPolicy', namespace: ns, name };
}

/** Sources that may open a connection to `to` on TCP/80, among PODS (self excluded). */
function sourcesReaching(c: Cluster, to: string, port = 80): string[] {
  return PODS.filter((from) => from !== to && c.allowed(from, to, 'TCP', port));
}

describe('isolation and defaults', () => {
  it('allows everything when no policy exists', () => {
    const c = xyz();
    const m = reachMatrix(c.ir, 80, 'TCP');
    for (const from of PODS)
      for (const to of PODS) expect(m.results[from]?.[to], `${from} → ${to}`).toBe(true);
    const v = c.verdict('x/a', 'y/b', 'TCP', 80);
    expect(v.decidedAt).toBe('allowed');
    expect(v.egress?.reason).toBe('no-policy');
    expect(v.ingress?.reason).toBe('no-policy');
    expect(c.allowed('x/a', OUTSIDE, 'UDP', 53)).toBe(true);
    expect(c.allowed(OUTSIDE, 'x/a', 'SCTP', 9000)).toBe(true);
  });

  it('default-deny ingress isolates every pod of its namespace and nothing else', () => {
    const c = xyz([networkPolicy('x', 'default-deny', { podSelector: {}, policyTypes: ['Ingress'] })]);
    for (const to of ['x/a', 'x/b']) expect(sourcesReaching(c, to)).toEqual([]);
    expect(c.allowed(OUTSIDE, 'x/a', 'TCP', 80)).toBe(false);
    expect(sourcesReaching(c, 'y/a')).toEqual(['x/a', 'x/b', 'y/b', 'z/a', 'z/b']);
    // Egress from the isolated pods is untouched.
    expect(c.allowed('x/a', 'y/a', 'TCP', 80)).toBe(true);
    expect(c.allowed('x/a', OUTSIDE, 'TCP', 443)).toBe(true);

    const v = c.verdict('y/a', 'x/a', 'TCP', 80);
    expect(v.decidedAt).toBe('ingress');
    expect(v.ingress?.reason).toBe('kubernetes-default-deny');
    expect(v.ingress?.rule).toBeUndefined();
    expect(v.ingress?.ruleSet.kubernetesPolicies).toEqual([npRef('x', 'default-deny')]);
  });

  it('default-deny egress stops every new connection out of its namespace, to pods and outside', () => {
    const c = xyz([networkPolicy('x', 'default-deny-egress', { podSelector: {}, policyTypes: ['Egress'] })]);
    for (const to of ['x/b', 'y/a', 'z/b', OUTSIDE]) expect(c.allowed('x/a', to, 'TCP', 80), to).toBe(false);
    expect(c.allowed('x/a', 'y/a', 'UDP', 53)).toBe(false);
    // Ingress into x is not isolated by an Egress-only policy.
    expect(sourcesReaching(c, 'x/a')).toEqual(['y/a', 'y/b', 'z/a', 'z/b']);
    const v = c.verdict('x/a', 'y/a', 'TCP', 80);
    expect(v.decidedAt).toBe('egress');
    expect(v.egress?.reason).toBe('kubernetes-default-deny');
    expect(v.ingress).toBeUndefined();
  });

  it('allow-all ingress (`ingress: [{}]`) admits every source, in-cluster and outside, on every port', () => {
    const c = xyz([
      networkPolicy('x', 'default-deny', { podSelector: {}, policyTypes: ['Ingress'] }),
      networkPolicy('x', 'allow-all', { podSelector: {}, ingress: [{}] }),
    ]);
    expect(sourcesReaching(c, 'x/a', 81)).toEqual(['x/b', 'y/a', 'y/b', 'z/a', 'z/b']);
    expect(c.allowed(OUTSIDE, 'x/a', 'UDP', 53)).toBe(true);
    expect(c.allowed('y/a', 'x/b', 'SCTP', 9000)).toBe(true);
    const v = c.verdict('z/b', 'x/a', 'TCP', 80);
    expect(v.ingress?.reason).toBe('kubernetes-rule');
    expect(v.ingress?.rule?.policy).toEqual(npRef('x', 'allow-all'));
    expect(v.ingress?.rule?.ruleIndex).toBe(0);
  });

  it('treats `from: []` exactly like a missing `from`: every source', () => {
    for (const rule of [{ from: [], ports: [{ port: 80 }] }, { ports: [{ port: 80 }] }]) {
      const c = xyz([
        networkPolicy('x', 'web', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [rule] }),
      ]);
      expect(sourcesReaching(c, 'x/a'), JSON.stringify(rule)).toEqual(['x/b', 'y/a', 'y/b', 'z/a', 'z/b']);
      expect(c.allowed(OUTSIDE, 'x/a', 'TCP', 80)).toBe(true);
      expect(c.allowed('y/a', 'x/a', 'TCP', 81)).toBe(false);
    }
  });

  it('treats `to: []` like a missing `to` on egress', () => {
    for (const rule of [{ to: [], ports: [{ port: 443 }] }, { ports: [{ port: 443 }] }]) {
      const c = xyz([
        networkPolicy('x', 'out', { podSelector: {}, policyTypes: ['Egress'], egress: [rule] }),
      ]);
      expect(c.allowed('x/a', OUTSIDE, 'TCP', 443)).toBe(true);
      expect(c.allowed('x/a', 'z/b', 'TCP', 443)).toBe(true);
      expect(c.allowed('x/a', 'z/b', 'TCP', 80)).toBe(false);
    }
  });

  it('a rule without ports allows every port of every protocol from its peers', () => {
    for (const ports of [undefined, []]) {
      const c = xyz([
        networkPolicy('x', 'from-y', {
          podSelector: {},
          ingress: [
            { from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }], ...(ports ? { ports } : {}) },
          ],
        }),
      ]);
      expect(c.allowed('y/a', 'x/a', 'TCP', 80)).toBe(true);
      expect(c.allowed('y/a', 'x/a', 'TCP', 65535)).toBe(true);
      expect(c.allowed('y/a', 'x/a', 'UDP', 53)).toBe(true);
      expect(c.allowed('y/a', 'x/a', 'SCTP', 9000)).toBe(true);
      expect(c.allowed('z/a', 'x/a', 'TCP', 80)).toBe(false);
    }
  });

  it('a port entry with a protocol and no port allows every port of that protocol only', () => {
    const c = xyz([
      networkPolicy('x', 'udp', { podSelector: {}, ingress: [{ ports: [{ protocol: 'UDP' }] }] }),
    ]);
    expect(c.allowed('y/a', 'x/a', 'UDP', 53)).toBe(true);
    expect(c.allowed('y/a', 'x/a', 'UDP', 40000)).toBe(true);
    expect(c.allowed('y/a', 'x/a', 'TCP', 53)).toBe(false);
  });
});

describe('policyTypes defaulting', () => {
  it('no policyTypes and only egress rules means Ingress and Egress: ingress becomes default-deny', () => {
    const c = xyz([
      networkPolicy('x', 'egress-only-rules', {
        podSelector: { matchLabels: { pod: 'a' } },
        egress: [{ to: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }],
      }),
    ]);
    expect(c.model.networkPolicies[0]?.policyTypes).toEqual(['Ingress', 'Egress']);
    // Egress: only to y.
    expect(c.allowed('x/a', 'y/b', 'TCP', 80)).toBe(true);
    expect(c.allowed('x/a', 'z/b', 'TCP', 80)).toBe(false);
    expect(c.allowed('x/a', OUTSIDE, 'TCP', 80)).toBe(false);
    // Ingress: isolated with no ingress rules, so nothing gets in.
    expect(sourcesReaching(c, 'x/a')).toEqual([]);
    expect(c.verdict('y/a', 'x/a', 'TCP', 80).ingress?.reason).toBe('kubernetes-default-deny');
    // x/b is not selected.
    expect(sourcesReaching(c, 'x/b')).toEqual(['y/a', 'y/b', 'z/a', 'z/b']);
  });

  it('no policyTypes and `egress: []` means Ingress only: egress stays open', () => {
    const c = xyz([
      networkPolicy('x', 'empty-egress', { podSelector: { matchLabels: { pod: 'a' } }, egress: [] }),
    ]);
    expect(c.model.networkPolicies[0]?.policyTypes).toEqual(['Ingress']);
    expect(c.allowed('x/a', 'z/b', 'TCP', 80)).toBe(true);
    expect(c.allowed('x/a', OUTSIDE, 'TCP', 80)).toBe(true);
    expect(sourcesReaching(c, 'x/a')).toEqual([]);
  });

  it('an empty policyTypes list is defaulted exactly like a missing one (API server defaulting)', () => {
    // SetDefaults_NetworkPolicy: `if len(spec.PolicyTypes) == 0` → Ingress (+ Egress with egress rules).
    const ingressOnly = xyz([networkPolicy('x', 'deny', { podSelector: {}, policyTypes: [] })]);
    expect(ingressOnly.model.networkPolicies[0]?.policyTypes).toEqual(['Ingress']);
    expect(sourcesReaching(ingressOnly, 'x/a')).toEqual([]);
    expect(ingressOnly.allowed('x/a', 'y/a', 'TCP', 80)).toBe(true);

    const both = xyz([
      networkPolicy('x', 'out-to-y', {
        podSelector: {},
        policyTypes: [],
        egress: [{ to: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }],
      }),
    ]);
    expect(both.model.networkPolicies[0]?.policyTypes).toEqual(['Ingress', 'Egress']);
    expect(both.allowed('x/a', 'y/a', 'TCP', 80)).toBe(true);
    expect(both.allowed('x/a', 'z/a', 'TCP', 80)).toBe(false);
    expect(sourcesReaching(both, 'x/a')).toEqual([]);
  });

  it('policyTypes [Egress] ignores ingress rules: ingress is not isolated by that policy', () => {
    const c = xyz([
      networkPolicy('x', 'egress-typed', {
        podSelector: { matchLabels: { pod: 'a' } },
        policyTypes: ['Egress'],
        ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }],
        egress: [{ to: [{ podSelector: { matchLabels: { pod: 'b' } } }] }],
      }),
    ]);
    expect(sourcesReaching(c, 'x/a')).toEqual(['x/b', 'y/a', 'y/b', 'z/a', 'z/b']);
    expect(c.allowed('x/a', 'x/b', 'TCP', 80)).toBe(true);
    expect(c.allowed('x/a', 'y/b', 'TCP', 80)).toBe(false);
  });

  it('a connection needs both the source egress and the destination ingress to allow it', () => {
    const c = xyz([
      networkPolicy('x', 'a-out-to-y', {
        podSelector: { matchLabels: { pod: 'a' } },
        policyTypes: ['Egress'],
        egress: [{ to: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }],
      }),
      networkPolicy('y', 'b-in-from-z', {
        podSelector: { matchLabels: { pod: 'b' } },
        ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'z' } } }] }],
      }),
    ]);
    expect(c.allowed('x/a', 'y/a', 'TCP', 80)).toBe(true);
    const v = c.verdict('x/a', 'y/b', 'TCP', 80);
    expect(v.allowed).toBe(false);
    expect(v.decidedAt).toBe('ingress');
    expect(v.egress?.allowed).toBe(true);
    expect(v.egress?.rule?.policy).toEqual(npRef('x', 'a-out-to-y'));
    expect(c.allowed('z/a', 'y/b', 'TCP', 80)).toBe(true);
    expect(c.verdict('x/a', 'z/a', 'TCP', 80).decidedAt).toBe('egress');
  });
});

describe('peers', () => {
  it('a policy only selects pods of its own namespace', () => {
    const c = xyz([networkPolicy('y', 'deny-a', { podSelector: { matchLabels: { pod: 'a' } } })]);
    expect(sourcesReaching(c, 'y/a')).toEqual([]);
    expect(sourcesReaching(c, 'x/a')).toEqual(['x/b', 'y/a', 'y/b', 'z/a', 'z/b']);
  });

  it('a podSelector-only peer is scoped to the policy namespace', () => {
    const c = xyz([
      networkPolicy('x', 'from-b', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }],
      }),
    ]);
    expect(sourcesReaching(c, 'x/a')).toEqual(['x/b']);
    expect(c.verdict('x/b', 'x/a', 'TCP', 80).ingress?.rule?.policy).toEqual(npRef('x', 'from-b'));
  });

  it('an empty podSelector peer means every pod of the policy namespace, and no outside address', () => {
    const c = xyz([
      networkPolicy('y', 'same-ns', { podSelector: {}, ingress: [{ from: [{ podSelector: {} }] }] }),
    ]);
    expect(sourcesReaching(c, 'y/a')).toEqual(['y/b']);
    expect(c.allowed(OUTSIDE, 'y/a', 'TCP', 80)).toBe(false);
  });

  it('a namespaceSelector-only peer means every pod of the matching namespaces', () => {
    const c = xyz([
      networkPolicy('x', 'from-y', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }],
      }),
    ]);
    expect(sourcesReaching(c, 'x/a')).toEqual(['y/a', 'y/b']);
    expect(c.allowed(OUTSIDE, 'x/a', 'TCP', 80)).toBe(false);
  });

  it('an empty namespaceSelector means all pods in all namespaces, but not outside addresses', () => {
    const c = xyz([
      networkPolicy('x', 'all-pods', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [{ from: [{ namespaceSelector: {} }] }],
      }),
    ]);
    expect(sourcesReaching(c, 'x/a')).toEqual(['x/b', 'y/a', 'y/b', 'z/a', 'z/b']);
    expect(c.allowed(OUTSIDE, 'x/a', 'TCP', 80)).toBe(false);
  });

  it('an empty namespaceSelector with a podSelector in one peer: matching pods in every namespace', () => {
    const c = xyz([
      networkPolicy('x', 'b-anywhere', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { pod: 'b' } } }] }],
      }),
    ]);
    expect(sourcesReaching(c, 'x/a')).toEqual(['x/b', 'y/b', 'z/b']);
  });

  describe('podSelector and namespaceSelector: one peer (AND) versus two peers (OR), as in the docs', () => {
    const cluster = (from: unknown[]): Cluster =>
      new Cluster([
        namespace('alice-ns', { user: 'alice' }),
        namespace('bob-ns', { user: 'bob' }),
        namespace('db'),
        pod('alice-ns', 'client', { labels: { role: 'client' }, ip: '198.18.10.1' }),
        pod('alice-ns', 'other', { labels: { role: 'other' }, ip: '198.18.10.2' }),
        pod('bob-ns', 'client', { labels: { role: 'client' }, ip: '198.18.11.1' }),
        pod('db', 'client', { labels: { role: 'client' }, ip: '198.18.12.1' }),
        pod('db', 'server', { labels: { role: 'db' }, ip: '198.18.12.2' }),
        networkPolicy('db', 'db-access', {
          podSelector: { matchLabels: { role: 'db' } },
          ingress: [{ from }],
        }),
      ]);
    const sources = ['alice-ns/client', 'alice-ns/other', 'bob-ns/client', 'db/client'];

    it('one peer with both selectors: client pods in alice namespaces only', () => {
      const c = cluster([
        {
          namespaceSelector: { matchLabels: { user: 'alice' } },
          podSelector: { matchLabels: { role: 'client' } },
        },
      ]);
      expect(sources.filter((s) => c.allowed(s, 'db/server', 'TCP', 5432))).toEqual(['alice-ns/client']);
    });

    it('two peers: any pod in alice namespaces, or client pods of the policy namespace', () => {
      const c = cluster([
        { namespaceSelector: { matchLabels: { user: 'alice' } } },
        { podSelector: { matchLabels: { role: 'client' } } },
      ]);
      expect(sources.filter((s) => c.allowed(s, 'db/server', 'TCP', 5432))).toEqual([
        'alice-ns/client',
        'alice-ns/other',
        'db/client',
      ]);
    });
  });

  it('selects namespaces by the kubernetes.io/metadata.name label the API server sets', () => {
    const c = xyz(
      [
        networkPolicy('x', 'by-name', {
          podSelector: {},
          ingress: [
            {
              from: [
                { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'y' } } },
                { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'default' } } },
              ],
            },
          ],
        }),
      ],
      [pod('default', 'tool', { ip: '198.18.9.9' })],
    );
    expect(sourcesReaching(c, 'x/a')).toEqual(['y/a', 'y/b']);
    expect(c.allowed('default/tool', 'x/a', 'TCP', 80)).toBe(true);
  });

  it('a manifest cannot fake kubernetes.io/metadata.name: the namespace name wins', () => {
    const c = new Cluster([
      namespace('impostor', { 'kubernetes.io/metadata.name': 'trusted' }),
      namespace('target'),
      pod('impostor', 'p', { ip: '198.18.20.1' }),
      pod('target', 't', { ip: '198.18.21.1' }),
      networkPolicy('target', 'trusted-only', {
        podSelector: {},
        ingress: [
          { from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'trusted' } } }] },
        ],
      }),
    ]);
    expect(c.allowed('impostor/p', 'target/t', 'TCP', 80)).toBe(false);
  });

  it('ipBlock with except: addresses in except are denied, the rest of the block allowed', () => {
    const c = xyz([
      networkPolicy('x', 'ext-in', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [{ from: [{ ipBlock: { cidr: '198.18.255.0/24', except: ['198.18.255.128/25'] } }] }],
      }),
      networkPolicy('x', 'ext-out', {
        podSelector: { matchLabels: { pod: 'a' } },
        policyTypes: ['Egress'],
        egress: [{ to: [{ ipBlock: { cidr: '198.18.255.0/24', except: ['198.18.255.192/26'] } }] }],
      }),
    ]);
    expect(c.allowed(OUTSIDE_OTHER, 'x/a', 'TCP', 80)).toBe(true);
    expect(c.allowed('198.18.255.127', 'x/a', 'TCP', 80)).toBe(true);
    expect(c.allowed('198.18.255.128', 'x/a', 'TCP', 80)).toBe(false);
    expect(c.allowed(OUTSIDE, 'x/a', 'TCP', 80)).toBe(false);
    expect(c.allowed('198.18.254.1', 'x/a', 'TCP', 80)).toBe(false);

    expect(c.allowed('x/a', '198.18.255.191', 'TCP', 443)).toBe(true);
    expect(c.allowed('x/a', '198.18.255.192', 'TCP', 443)).toBe(false);
    expect(c.allowed('x/a', '198.18.255.255', 'TCP', 443)).toBe(false);
    // Pods are outside the block, so egress to them is denied too.
    expect(c.allowed('x/a', 'y/a', 'TCP', 80)).toBe(false);
  });

  it('ipBlock matches pod addresses as well', () => {
    const c = xyz([
      networkPolicy('x', 'from-y-block', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [{ from: [{ ipBlock: { cidr: '198.18.2.0/24', except: ['198.18.2.2/32'] } }] }],
      }),
    ]);
    expect(sourcesReaching(c, 'x/a')).toEqual(['y/a']);
  });

  it('several policies selecting the same pod are additive (union of their rules)', () => {
    const c = xyz([
      networkPolicy('x', 'b-on-80', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }], ports: [{ port: 80 }] }],
      }),
      networkPolicy('x', 'y-on-81', {
        podSelector: {},
        ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }], ports: [{ port: 81 }] }],
      }),
    ]);
    expect(c.allowed('x/b', 'x/a', 'TCP', 80)).toBe(true);
    expect(c.allowed('x/b', 'x/a', 'TCP', 81)).toBe(false);
    expect(c.allowed('y/a', 'x/a', 'TCP', 81)).toBe(true);
    expect(c.allowed('y/a', 'x/a', 'TCP', 80)).toBe(false);
    expect(c.verdict('x/b', 'x/a', 'TCP', 80).ingress?.rule?.policy).toEqual(npRef('x', 'b-on-80'));
    expect(c.verdict('y/b', 'x/a', 'TCP', 81).ingress?.rule?.policy).toEqual(npRef('x', 'y-on-81'));
    expect(c.verdict('y/a', 'x/a', 'TCP', 80).ingress?.ruleSet.kubernetesPolicies).toEqual([
      npRef('x', 'b-on-80'),
      npRef('x', 'y-on-81'),
    ]);
    // x/b is selected only by y-on-81.
    expect(c.allowed('x/a', 'x/b', 'TCP', 80)).toBe(false);
  });
});

describe('label selector expressions', () => {
  const cluster = (expr: Record<string, unknown>): Cluster =>
    new Cluster([
      namespace('app'),
      pod('app', 'web', { labels: { tier: 'web' }, ip: '198.18.30.1' }),
      pod('app', 'db', { labels: { tier: 'db' }, ip: '198.18.30.2' }),
      pod('app', 'plain', { ip: '198.18.30.3' }),
      pod('app', 'debug', { labels: { tier: 'cache', debug: 'true' }, ip: '198.18.30.4' }),
      pod('app', 'target', { labels: { role: 'target' }, ip: '198.18.30.10' }),
      networkPolicy('app', 'expr', {
        podSelector: { matchLabels: { role: 'target' } },
        ingress: [{ from: [{ podSelector: { matchExpressions: [expr] } }] }],
      }),
    ]);
  const sources = ['app/web', 'app/db', 'app/plain', 'app/debug'];
  const admitted = (expr: Record<string, unknown>): string[] => {
    const c = cluster(expr);
    return sources.filter((s) => c.allowed(s, 'app/target', 'TCP', 80));
  };

  it('In matches pods whose label has one of the values', () => {
    expect(admitted({ key: 'tier', operator: 'In', values: ['web', 'db'] })).toEqual(['app/web', 'app/db']);
  });

  it('NotIn matches pods with another value and pods without the label', () => {
    expect(admitted({ key: 'tier', operator: 'NotIn', values: ['web'] })).toEqual([
      'app/db',
      'app/plain',
      'app/debug',
    ]);
  });

  it('Exists matches pods carrying the key whatever its value', () => {
    expect(admitted({ key: 'debug', operator: 'Exists' })).toEqual(['app/debug']);
  });

  it('DoesNotExist matches pods without the key only', () => {
    expect(admitted({ key: 'tier', operator: 'DoesNotExist' })).toEqual(['app/plain']);
  });

  it('matchLabels and matchExpressions in one selector are ANDed', () => {
    const c = new Cluster([
      namespace('app'),
      pod('app', 'web-debug', { labels: { tier: 'web', debug: 'true' }, ip: '198.18.31.1' }),
      pod('app', 'web', { labels: { tier: 'web' }, ip: '198.18.31.2' }),
      pod('app', 'target', { labels: { role: 'target' }, ip: '198.18.31.10' }),
      networkPolicy('app', 'and', {
        podSelector: { matchLabels: { role: 'target' } },
        ingress: [
          {
            from: [
              {
                podSelector: {
                  matchLabels: { tier: 'web' },
                  matchExpressions: [{ key: 'debug', operator: 'DoesNotExist' }],
                },
              },
            ],
          },
        ],
      }),
    ]);
    expect(c.allowed('app/web', 'app/target', 'TCP', 80)).toBe(true);
    expect(c.allowed('app/web-debug', 'app/target', 'TCP', 80)).toBe(false);
  });

  it('namespaceSelector expressions: NotIn includes namespaces without the label', () => {
    const c = xyz(
      [
        networkPolicy('x', 'not-y', {
          podSelector: { matchLabels: { pod: 'a' } },
          ingress: [
            {
              from: [
                {
                  namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'NotIn', values: ['y'] }] },
                },
              ],
            },
          ],
        }),
      ],
      [namespace('unlabelled'), pod('unlabelled', 'u', { ip: '198.18.40.1' })],
    );
    expect(sourcesReaching(c, 'x/a')).toEqual(['x/b', 'z/a', 'z/b']);
    expect(c.allowed('unlabelled/u', 'x/a', 'TCP', 80)).toBe(true);
  });
});

describe('ports and protocols', () => {
  const ingressPorts = (ports: unknown[]): Cluster =>
    xyz([networkPolicy('x', 'ports', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ ports }] })]);

  it('a numeric port allows exactly that port', () => {
    const c = ingressPorts([{ protocol: 'TCP', port: 80 }]);
    expect(c.allowed('y/a', 'x/a', 'TCP', 80)).toBe(true);
    expect(c.allowed('y/a', 'x/a', 'TCP', 81)).toBe(false);
    expect(c.allowed('y/a', 'x/a', 'TCP', 79)).toBe(false);
  });

  it('port with endPort is an inclusive range', () => {
    const c = ingressPorts([{ protocol: 'TCP', port: 32000, endPort: 32768 }]);
    expect(c.allowed('y/a', 'x/a', 'TCP', 31999)).toBe(false);
    expect(c.allowed('y/a', 'x/a', 'TCP', 32000)).toBe(true);
    expect(c.allowed('y/a', 'x/a', 'TCP', 32500)).toBe(true);
    expect(c.allowed('y/a', 'x/a', 'TCP', 32768)).toBe(true);
    expect(c.allowed('y/a', 'x/a', 'TCP', 32769)).toBe(false);
  });

  it('a port without protocol is TCP: it does not allow UDP on the same number', () => {
    const c = ingressPorts([{ port: 80 }]);
    expect(c.allowed('y/a', 'x/a', 'TCP', 80)).toBe(true);
    expect(c.allowed('y/a', 'x/a', 'UDP', 80)).toBe(false);
    expect(c.allowed('y/a', 'x/a', 'SCTP', 80)).toBe(false);
  });

  it('a UDP port allows UDP only', () => {
    const c = ingressPorts([{ protocol: 'UDP', port: 53 }]);
    expect(c.allowed('y/a', 'x/a', 'UDP', 53)).toBe(true);
    expect(c.allowed('y/a', 'x/a', 'TCP', 53)).toBe(false);
  });

  it('an SCTP port allows SCTP only', () => {
    const c = ingressPorts([{ protocol: 'SCTP', port: 9000 }]);
    expect(c.allowed('y/a', 'x/a', 'SCTP', 9000)).toBe(true);
    expect(c.allowed('y/a', 'x/a', 'TCP', 9000)).toBe(false);
    expect(c.allowed('y/a', 'x/a', 'UDP', 9000)).toBe(false);
  });

  it('several port entries of mixed protocols each allow their own port and protocol', () => {
    const c = ingressPorts([
      { port: 80 },
      { protocol: 'UDP', port: 53 },
      { protocol: 'TCP', port: 8000, endPort: 8001 },
    ]);
    expect(c.allowed('y/a', 'x/a', 'TCP', 80)).toBe(true);
    expect(c.allowed('y/a', 'x/a', 'UDP', 53)).toBe(true);
    expect(c.allowed('y/a', 'x/a', 'TCP', 8001)).toBe(true);
    expect(c.allowed('y/a', 'x/a', 'TCP', 53)).toBe(false);
    expect(c.allowed('y/a', 'x/a', 'UDP', 80)).toBe(false);
  });

  describe('named ports', () => {
    /** Pods in `svc` name port `http` differently; `plain` has no such name. */
    const named = (policies: Manifest[]): Cluster =>
      new Cluster([
        namespace('svc'),
        namespace('cli'),
        pod('svc', 'one', {
          labels: { app: 'api' },
          ip: '198.18.50.1',
          ports: [
            { name: 'http', containerPort: 8080 },
            { name: 'dns', containerPort: 53, protocol: 'UDP' },
          ],
        }),
        pod('svc', 'two', {
          labels: { app: 'api' },
          ip: '198.18.50.2',
          ports: [{ name: 'http', containerPort: 9090 }],
        }),
        pod('svc', 'plain', { labels: { app: 'api' }, ip: '198.18.50.3', ports: [{ containerPort: 8080 }] }),
        pod('cli', 'c', { labels: { app: 'client' }, ip: '198.18.51.1' }),
        ...policies,
      ]);

    it('on ingress, resolves on each destination pod', () => {
      const c = named([
        networkPolicy('svc', 'http-in', {
          podSelector: { matchLabels: { app: 'api' } },
          ingress: [{ ports: [{ port: 'http' }] }],
        }),
      ]);
      expect(c.allowed('cli/c', 'svc/one', 'TCP', 8080)).toBe(true);
      expect(c.allowed('cli/c', 'svc/one', 'TCP', 9090)).toBe(false);
      expect(c.allowed('cli/c', 'svc/two', 'TCP', 9090)).toBe(true);
      expect(c.allowed('cli/c', 'svc/two', 'TCP', 8080)).toBe(false);
      expect(c.verdict('cli/c', 'svc/two', 'TCP', 9090).ingress?.rule?.policy).toEqual(
        npRef('svc', 'http-in'),
      );
    });

    it('on ingress, a name the destination pod does not have allows nothing', () => {
      const c = named([
        networkPolicy('svc', 'http-in', {
          podSelector: { matchLabels: { app: 'api' } },
          ingress: [{ ports: [{ port: 'http' }] }],
        }),
      ]);
      for (const port of [80, 8080, 9090])
        expect(c.allowed('cli/c', 'svc/plain', 'TCP', port), String(port)).toBe(false);
      expect(c.verdict('cli/c', 'svc/plain', 'TCP', 8080).ingress?.reason).toBe('kubernetes-default-deny');
    });

    it('a named port matches only the protocol of the container port', () => {
      const c = named([
        networkPolicy('svc', 'dns-in', {
          podSelector: {},
          ingress: [{ ports: [{ port: 'dns', protocol: 'UDP' }, { port: 'dns' }] }],
        }),
      ]);
      expect(c.allowed('cli/c', 'svc/one', 'UDP', 53)).toBe(true);
      // `dns` is a UDP port: the TCP entry (protocol defaulted) resolves to nothing.
      expect(c.allowed('cli/c', 'svc/one', 'TCP', 53)).toBe(false);
    });

    it('on egress, resolves per destination pod: the same name maps to different numbers', () => {
      const c = named([
        networkPolicy('cli', 'http-out', {
          podSelector: {},
          policyTypes: ['Egress'],
          egress: [{ to: [{ namespaceSelector: {} }], ports: [{ port: 'http' }] }],
        }),
      ]);
      expect(c.allowed('cli/c', 'svc/one', 'TCP', 8080)).toBe(true);
      expect(c.allowed('cli/c', 'svc/one', 'TCP', 9090)).toBe(false);
      expect(c.allowed('cli/c', 'svc/two', 'TCP', 9090)).toBe(true);
      expect(c.allowed('cli/c', 'svc/two', 'TCP', 8080)).toBe(false);
      expect(c.allowed('cli/c', 'svc/plain', 'TCP', 8080)).toBe(false);
      const v = c.verdict('cli/c', 'svc/two', 'TCP', 9090);
      expect(v.egress?.reason).toBe('kubernetes-rule');
      expect(v.egress?.rule?.policy).toEqual(npRef('cli', 'http-out'));
    });

    it('on egress without `to`, a named port still only reaches pods that define it', () => {
      const c = named([
        networkPolicy('cli', 'http-anywhere', {
          podSelector: {},
          policyTypes: ['Egress'],
          egress: [{ ports: [{ port: 'http' }] }],
        }),
      ]);
      expect(c.allowed('cli/c', 'svc/one', 'TCP', 8080)).toBe(true);
      expect(c.allowed('cli/c', 'svc/two', 'TCP', 9090)).toBe(true);
      expect(c.allowed('cli/c', 'svc/plain', 'TCP', 8080)).toBe(false);
      expect(c.allowed('cli/c', OUTSIDE, 'TCP', 8080)).toBe(false);
    });

    it('on egress with a peer, a named port is limited to the pods of that peer', () => {
      const c = named([
        networkPolicy('cli', 'http-to-one', {
          podSelector: {},
          policyTypes: ['Egress'],
          egress: [{ to: [{ ipBlock: { cidr: '198.18.50.1/32' } }], ports: [{ port: 'http' }] }],
        }),
      ]);
      expect(c.allowed('cli/c', 'svc/one', 'TCP', 8080)).toBe(true);
      expect(c.allowed('cli/c', 'svc/two', 'TCP', 9090)).toBe(false);
    });
  });
});

describe('outside the cluster, self, and statefulness', () => {
  it('egress to an outside address via ipBlock, explained with --to an address', () => {
    const c = xyz([
      networkPolicy('x', 'to-ext', {
        podSelector: {},
        policyTypes: ['Egress'],
        egress: [{ to: [{ ipBlock: { cidr: '198.18.255.0/25' } }], ports: [{ port: 443 }] }],
      }),
    ]);
    const ok = explain(c.model, c.ir, { from: 'x/a', to: OUTSIDE_OTHER, protocol: 'TCP', port: 443 });
    expect(ok.allowed).toBe(true);
    expect(ok.to).toEqual({ given: OUTSIDE_OTHER, address: OUTSIDE_OTHER });
    expect(ok.from.endpoint).toBe('x/a');
    expect(ok.ingress).toBeUndefined();
    expect(ok.egress?.reason).toBe('kubernetes-rule');
    expect(ok.egress?.rule?.policy).toBe('NetworkPolicy x/to-ext');
    expect(ok.egress?.rule?.ruleIndex).toBe(0);

    const denied = explain(c.model, c.ir, { from: 'x/a', to: OUTSIDE, protocol: 'TCP', port: 443 });
    expect(denied.allowed).toBe(false);
    expect(denied.decidedAt).toBe('egress');
    expect(denied.egress?.reason).toBe('kubernetes-default-deny');
    expect(denied.egress?.networkPolicies).toEqual(['NetworkPolicy x/to-ext']);
    expect(
      explain(c.model, c.ir, { from: 'x/a', to: OUTSIDE_OTHER, protocol: 'TCP', port: 80 }).allowed,
    ).toBe(false);
  });

  it('ingress from an outside address is judged by the destination ingress policies', () => {
    const c = xyz([
      networkPolicy('x', 'from-ext', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [{ from: [{ ipBlock: { cidr: `${OUTSIDE}/32` } }] }],
      }),
    ]);
    const ok = explain(c.model, c.ir, { from: OUTSIDE, to: 'x/a', protocol: 'TCP', port: 80 });
    expect(ok.allowed).toBe(true);
    expect(ok.from).toEqual({ given: OUTSIDE, address: OUTSIDE });
    expect(ok.egress).toBeUndefined();
    expect(ok.ingress?.rule?.policy).toBe('NetworkPolicy x/from-ext');
    const denied = explain(c.model, c.ir, { from: OUTSIDE_OTHER, to: 'x/a', protocol: 'TCP', port: 80 });
    expect(denied.allowed).toBe(false);
    expect(denied.decidedAt).toBe('ingress');
  });

  it('a pod can always connect to itself, even when isolated both ways', () => {
    const c = xyz([networkPolicy('x', 'deny-all', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] })]);
    const v = c.verdict('x/a', 'x/a', 'TCP', 80);
    expect(v.allowed).toBe(true);
    expect(v.decidedAt).toBe('same-pod');
    expect(c.allowed('x/a', 'x/a', 'UDP', 53)).toBe(true);
    const m = reachMatrix(c.ir, 80, 'TCP');
    expect(m.results['x/a']?.['x/a']).toBe(true);
    expect(m.results['x/a']?.['x/b']).toBe(false);
    expect(m.results['x/b']?.['x/b']).toBe(true);
  });

  it('judges new connections only: a reply direction is judged as a new connection, with no memory', () => {
    const c = xyz([
      networkPolicy('x', 'default-deny', { podSelector: {}, policyTypes: ['Ingress'] }),
      networkPolicy('y', 'default-deny', { podSelector: {}, policyTypes: ['Ingress'] }),
      networkPolicy('y', 'from-x', {
        podSelector: {},
        ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'x' } } }] }],
      }),
    ]);
    expect(c.allowed('x/a', 'y/a', 'TCP', 80)).toBe(true);
    // y/a opening a connection to x/a is new: x is isolated for ingress. Replies to the connection
    // above are the dataplane's conntrack business, not a packet the evaluator judges.
    expect(c.allowed('y/a', 'x/a', 'TCP', 80)).toBe(false);
    expect(c.allowed('x/a', 'y/a', 'TCP', 80)).toBe(true);
    expect(reachMatrix(c.ir, 80, 'TCP')).toEqual(reachMatrix(c.ir, 80, 'TCP'));
  });
});
