/**
 * fast-check generators of small but rich models: every NetworkPolicy feature (selectors with
 * expressions, namespace selectors, ipBlocks with except, named/numeric/range ports, TCP/UDP,
 * policyTypes) over a handful of pods, so properties explore interactions, not volume.
 */
import fc from 'fast-check';
import type {
  GlobalPolicy,
  LabelSelector,
  Model,
  Namespace,
  NetworkPolicy,
  NetworkPolicyRule,
  Peer,
  Pod,
  PolicyPort,
} from '../../src/model/types.js';

const src = { file: 'generated.yaml', line: 1 };
const NAMESPACES = ['x', 'y', 'z'] as const;
const POD_NAMES = ['a', 'b', 'c', 'd'] as const;

export const labelPair = fc.constantFrom<[string, string]>(
  ['pod', 'a'],
  ['pod', 'b'],
  ['app', 'web'],
  ['app', 'db'],
  ['tier', 'x'],
);

export const selectorArb: fc.Arbitrary<LabelSelector> = fc.record({
  matchLabels: fc.array(labelPair, { maxLength: 2 }).map((pairs) => Object.fromEntries(pairs)),
  matchExpressions: fc.array(
    fc.oneof(
      fc.record({
        key: fc.constantFrom('pod', 'app'),
        operator: fc.constantFrom('In' as const, 'NotIn' as const),
        values: fc.uniqueArray(fc.constantFrom('a', 'b', 'web', 'db'), { minLength: 1, maxLength: 2 }),
      }),
      fc.record({
        key: fc.constantFrom('pod', 'app', 'tier'),
        operator: fc.constantFrom('Exists' as const, 'DoesNotExist' as const),
        values: fc.constant([] as string[]),
      }),
    ),
    { maxLength: 1 },
  ),
});

const nsSelectorArb: fc.Arbitrary<LabelSelector> = fc.oneof(
  fc.constantFrom(...NAMESPACES).map((n) => ({ matchLabels: { ns: n }, matchExpressions: [] })),
  fc.constant<LabelSelector>({ matchLabels: { team: 'blue' }, matchExpressions: [] }),
  fc.constant<LabelSelector>({ matchLabels: {}, matchExpressions: [] }),
);

// Pods are allocated from 198.18.0.2 upwards, so these blocks and excepts cut through real pods.
const ipBlockArb = fc
  .tuple(fc.integer({ min: 24, max: 29 }), fc.option(fc.constantFrom(0, 4)))
  .map(([prefix, exceptBase]) => ({
    cidr: `198.18.0.0/${prefix}`,
    except: exceptBase === null ? [] : [`198.18.0.${exceptBase}/30`],
  }));

const peerArb: fc.Arbitrary<Peer> = fc.oneof(
  selectorArb.map((podSelector) => ({ podSelector })),
  nsSelectorArb.map((namespaceSelector) => ({ namespaceSelector })),
  fc
    .tuple(selectorArb, nsSelectorArb)
    .map(([podSelector, namespaceSelector]) => ({ podSelector, namespaceSelector })),
  ipBlockArb.map((ipBlock) => ({ ipBlock })),
);

const portArb: fc.Arbitrary<PolicyPort> = fc.oneof(
  fc.record({ protocol: fc.constantFrom('TCP' as const, 'UDP' as const), port: fc.constantFrom(80, 81) }),
  fc.record({
    protocol: fc.constant('TCP' as const),
    port: fc.constant(79),
    endPort: fc.constantFrom(80, 81),
  }),
  fc.record({
    protocol: fc.constantFrom('TCP' as const, 'UDP' as const),
    port: fc.constantFrom('http', 'metrics'),
  }),
  fc.record({ protocol: fc.constantFrom('TCP' as const, 'UDP' as const) }),
);

const ruleArb: fc.Arbitrary<NetworkPolicyRule> = fc
  .tuple(
    fc.option(fc.array(peerArb, { minLength: 1, maxLength: 2 })),
    fc.option(fc.array(portArb, { minLength: 1, maxLength: 2 })),
  )
  .map(([peers, ports]) => ({ ...(peers ? { peers } : {}), ...(ports ? { ports } : {}) }));

export function networkPolicyArb(name: string): fc.Arbitrary<NetworkPolicy> {
  return fc
    .record({
      namespace: fc.constantFrom(...NAMESPACES),
      podSelector: selectorArb,
      types: fc.constantFrom<NetworkPolicy['policyTypes']>(['Ingress'], ['Egress'], ['Ingress', 'Egress']),
      ingress: fc.array(ruleArb, { maxLength: 2 }),
      egress: fc.array(ruleArb, { maxLength: 2 }),
    })
    .map((r) => ({
      namespace: r.namespace,
      name,
      podSelector: r.podSelector,
      policyTypes: r.types,
      ingress: r.ingress,
      egress: r.egress,
      source: src,
    }));
}

const globalRuleArb = fc
  .tuple(fc.constantFrom('Allow' as const, 'Deny' as const, 'Pass' as const, 'Log' as const), ruleArb)
  .map(([action, r]) => ({ action, ...r }));

export function globalPolicyArb(name: string): fc.Arbitrary<GlobalPolicy> {
  return fc
    .record({
      order: fc.integer({ min: 0, max: 3 }),
      selector: selectorArb,
      ingress: fc.array(globalRuleArb, { maxLength: 2 }),
      egress: fc.array(globalRuleArb, { maxLength: 2 }),
    })
    .map((r) => ({
      name,
      order: r.order,
      selector: r.selector,
      types: ['Ingress', 'Egress'],
      ingress: r.ingress,
      egress: r.egress,
      source: src,
    }));
}

const podArb = (namespace: string, name: string): fc.Arbitrary<Pod> =>
  fc
    .record({
      labels: fc.array(labelPair, { maxLength: 3 }).map((p) => Object.fromEntries(p)),
      httpPort: fc.constantFrom(80, 81, 8080),
      metricsProtocol: fc.constantFrom('TCP' as const, 'UDP' as const),
    })
    .map((r) => ({
      namespace,
      name,
      labels: r.labels,
      ports: [
        { name: 'http', containerPort: r.httpPort, protocol: 'TCP' as const },
        { name: 'metrics', containerPort: 81, protocol: r.metricsProtocol },
      ],
      ips: [],
      source: src,
    }));

export const modelArb: fc.Arbitrary<Model> = fc
  .record({
    pods: fc
      .uniqueArray(fc.tuple(fc.constantFrom(...NAMESPACES), fc.constantFrom(...POD_NAMES)), {
        minLength: 2,
        maxLength: 5,
        selector: ([n, p]) => `${n}/${p}`,
      })
      .chain((keys) => fc.tuple(...keys.map(([n, p]) => podArb(n, p)))),
    blueNamespaces: fc.subarray([...NAMESPACES]),
    policies: fc
      .array(fc.integer(), { maxLength: 3 })
      .chain((ks) => fc.tuple(...ks.map((_, i) => networkPolicyArb(`np${i}`)))),
    globals: fc
      .array(fc.integer(), { maxLength: 2 })
      .chain((ks) => fc.tuple(...ks.map((_, i) => globalPolicyArb(`gp${i}`)))),
  })
  .map((r) => ({
    namespaces: NAMESPACES.map((n): Namespace => ({
      name: n,
      labels: {
        ns: n,
        'kubernetes.io/metadata.name': n,
        ...(r.blueNamespaces.includes(n) ? { team: 'blue' } : {}),
      },
      source: src,
    })),
    pods: r.pods,
    services: [],
    endpointSlices: [],
    networkPolicies: r.policies,
    globalPolicies: r.globals,
    prefilters: [],
  }));
