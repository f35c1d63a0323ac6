/**
 * Small clusters for the nftables tests (pure: manifests → IR). The x/y/z pods are the upstream
 * model's; the policies exercise every part of a rule set: Log, Pass, Allow and Deny in the global
 * tier, the Kubernetes tier with its default, named ports, ranges, ICMP, SCTP and a prefilter.
 */
import type { PolicyMode } from '../../src/ir/decision-table.js';
import type { IR } from '../../src/ir/types.js';
import {
  globalPolicy,
  namespace,
  networkPolicy,
  pod,
  prefilter,
  modelOf,
  type Manifest,
  type PodOptions,
  compileIR,
} from '../support/manifests.js';

const PORTS: PodOptions['ports'] = [
  { name: 'serve-80-tcp', containerPort: 80, protocol: 'TCP' },
  { name: 'serve-80-udp', containerPort: 80, protocol: 'UDP' },
  { name: 'serve-81-tcp', containerPort: 81, protocol: 'TCP' },
  { name: 'serve-81-udp', containerPort: 81, protocol: 'UDP' },
];

/** x/y/z × a/b/c on two nodes; `labels` overrides a pod's labels (`ns/pod` → labels). */
export function xyz(labels: Record<string, Record<string, string>> = {}): Manifest[] {
  const out: Manifest[] = [];
  ['x', 'y', 'z'].forEach((ns, i) => {
    out.push(namespace(ns, { ns }));
    ['a', 'b', 'c'].forEach((p, j) => {
      out.push(
        pod(ns, p, {
          labels: labels[`${ns}/${p}`] ?? { pod: p },
          node: (i * 3 + j) % 2 === 0 ? 'node-1' : 'node-2',
          ip: `198.18.0.${10 * (i + 1) + j}`,
          ports: PORTS,
        }),
      );
    });
  });
  return out;
}

/** Every kind of rule the backend renders. Pods: x/a .10 n1, x/b .11 n2, x/c .12 n1, y/a .20 n2, y/b .21 n1, … */
export function guardrails(): Manifest[] {
  return [
    globalPolicy('audit', {
      order: 5,
      namespaceSelector: { matchLabels: { ns: 'x' } },
      ingress: [{ action: 'Log' }],
    }),
    globalPolicy('guard-x', {
      order: 10,
      namespaceSelector: { matchLabels: { ns: 'x' } },
      ingress: [
        {
          action: 'Deny',
          protocol: 'TCP',
          ports: [{ port: 81 }],
          from: [{ namespaceSelector: { matchLabels: { ns: 'z' } } }],
        },
        { action: 'Pass', from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] },
        { action: 'Allow', protocol: 'TCP', ports: [{ port: 80 }] },
      ],
      egress: [
        { action: 'Deny', protocol: 'UDP', to: [{ namespaceSelector: { matchLabels: { ns: 'z' } } }] },
      ],
    }),
    networkPolicy('x', 'from-y-on-81', {
      podSelector: {},
      ingress: [
        { from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }], ports: [{ port: 'serve-81-tcp' }] },
      ],
    }),
    networkPolicy('z', 'egress-named', {
      podSelector: { matchLabels: { pod: 'a' } },
      policyTypes: ['Egress'],
      egress: [
        {
          to: [{ podSelector: {}, namespaceSelector: {} }],
          ports: [{ port: 'serve-80-tcp' }, { port: 'serve-81-udp' }],
        },
        {
          ports: [
            { port: 1000, endPort: 1010, protocol: 'TCP' },
            { port: 2000, protocol: 'SCTP' },
          ],
        },
      ],
    }),
    globalPolicy('icmp-y', {
      order: 20,
      namespaceSelector: { matchLabels: { ns: 'y' } },
      egress: [{ action: 'Allow', protocol: 'ICMP', to: [{ nets: ['198.18.0.0/16', 'fd00:5957::/32'] }] }],
    }),
    // Blocks the outside host's second address at node-1's fabric. (Not a pod address: the
    // prefilter is stateless, so it would also drop that pod's replies to node-1's pods, which
    // the evaluator — new connections only — does not model.)
    prefilter('block', { nodes: ['node-1'], cidrs: ['198.18.200.0/24'] }),
  ];
}

/** The IR of the manifests; `table` gives every rule set its decision table (see docs/nftables.md). */
export function irOf(manifests: readonly Manifest[], policyMode: PolicyMode = 'walk'): IR {
  return compileIR(modelOf(manifests), { policyMode });
}

/** Dual-stack pods (IPv4 + fd00:5957::/32) with peers that resolve to both families. */
export function dualStack(): Manifest[] {
  const dual = (ns: string, name: string, n: number, node: string): Manifest => ({
    ...pod(ns, name, { labels: { app: name }, node, ports: PORTS }),
    status: { podIP: `198.18.1.${n}`, podIPs: [{ ip: `198.18.1.${n}` }, { ip: `fd00:5957::1:${n}` }] },
  });
  return [
    namespace('web', { team: 'web' }),
    namespace('db', { team: 'db' }),
    dual('web', 'front', 10, 'node-1'),
    dual('web', 'api', 11, 'node-1'),
    dual('db', 'pg', 20, 'node-2'),
    networkPolicy('db', 'pg-from-api', {
      podSelector: { matchLabels: { app: 'pg' } },
      ingress: [
        {
          from: [{ podSelector: { matchLabels: { app: 'api' } }, namespaceSelector: {} }],
          ports: [{ port: 'serve-80-tcp' }],
        },
        {
          from: [{ ipBlock: { cidr: 'fd00:5957::/96', except: ['fd00:5957::1:0/112'] } }],
          ports: [{ port: 81, protocol: 'UDP' }],
        },
      ],
    }),
    networkPolicy('web', 'api-egress', {
      podSelector: { matchLabels: { app: 'api' } },
      policyTypes: ['Egress'],
      egress: [
        { to: [{ namespaceSelector: { matchLabels: { team: 'db' } } }], ports: [{ port: 'serve-80-tcp' }] },
      ],
    }),
    prefilter('v6-too', { cidrs: ['198.18.200.0/24', 'fd00:5957:ffff::/48'] }),
  ];
}
