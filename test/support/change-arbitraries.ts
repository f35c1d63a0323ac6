/**
 * fast-check generators of model change sequences for the incremental calculation: pods added,
 * removed, relabelled, moved between namespaces and nodes; namespace labels; NetworkPolicies and
 * GlobalPolicies added, changed and removed; services, endpoint slices and prefilters. Small
 * models over a few names, so changes keep hitting the same objects and the sets that name them.
 */
import fc from 'fast-check';
import type { ModelChange } from '../../src/model/changes.js';
import type { EndpointSlice, Model, Namespace, Pod, Prefilter, Service } from '../../src/model/types.js';
import { globalPolicyArb, labelPair, networkPolicyArb } from './arbitraries.js';

const src = { file: 'generated.yaml', line: 1 };
export const NAMESPACES = ['x', 'y', 'z'] as const;
const POD_NAMES = ['a', 'b', 'c', 'd'] as const;
const NODES = ['node-1', 'node-2', 'node-3'] as const;

const labelsArb = fc.array(labelPair, { maxLength: 3 }).map((p) => Object.fromEntries(p));

export function podArb(namespace: string, name: string): fc.Arbitrary<Pod> {
  return fc
    .record({
      labels: labelsArb,
      httpPort: fc.constantFrom(80, 81, 8080),
      metricsProtocol: fc.constantFrom('TCP' as const, 'UDP' as const),
      // Mostly placed by allocation; sometimes pinned, node-3 rarely (a new node in the list).
      node: fc.option(fc.constantFrom(...NODES, 'node-1', 'node-2'), { freq: 3 }),
    })
    .map((r): Pod => ({
      namespace,
      name,
      labels: r.labels,
      ports: [
        { name: 'http', containerPort: r.httpPort, protocol: 'TCP' },
        { name: 'metrics', containerPort: 81, protocol: r.metricsProtocol },
      ],
      ips: [],
      ...(r.node === null ? {} : { nodeName: r.node }),
      source: src,
    }));
}

function namespaceObject(name: string, blue: boolean, extra: boolean): Namespace {
  return {
    name,
    labels: {
      ns: name,
      'kubernetes.io/metadata.name': name,
      ...(blue ? { team: 'blue' } : {}),
      ...(extra ? { tier: 'x' } : {}),
    },
    source: src,
  };
}

export function serviceArb(namespace: string, name: string): fc.Arbitrary<Service> {
  return fc
    .record({
      // Half without a selector: their backends come from the slices below.
      selector: fc.option(
        fc.array(labelPair, { minLength: 1, maxLength: 2 }).map((p) => Object.fromEntries(p)),
        { freq: 2 },
      ),
      ports: fc.uniqueArray(
        fc.record({
          port: fc.constantFrom(80, 443),
          targetPort: fc.constantFrom<number | string>(8080, 'http', 'metrics'),
          protocol: fc.constantFrom('TCP' as const, 'UDP' as const),
          name: fc.constantFrom('web', 'tls'),
          // Stated node ports (NodePort and LoadBalancer only); else allocated.
          nodePort: fc.option(fc.constantFrom(30080, 30443), { freq: 3 }),
        }),
        { minLength: 1, maxLength: 2, selector: (p) => `${p.port}/${p.protocol}` },
      ),
      clientIP: fc.boolean(),
      type: fc.constantFrom('ClusterIP' as const, 'NodePort' as const, 'LoadBalancer' as const),
      external: fc.constantFrom('Cluster' as const, 'Local' as const),
      internal: fc.constantFrom('Cluster' as const, 'Local' as const),
      ingress: fc.option(fc.constantFrom<string[]>(['198.19.192.50'], ['198.19.192.51', '198.19.192.52']), {
        freq: 2,
      }),
    })
    .map((r): Service => {
      const external = r.type !== 'ClusterIP';
      return {
        namespace,
        name,
        ...(r.selector === null ? {} : { selector: r.selector }),
        ports: r.ports.map(({ nodePort, ...p }) => ({
          ...p,
          ...(external && nodePort !== null ? { nodePort } : {}),
        })),
        sessionAffinity: r.clientIP ? 'ClientIP' : 'None',
        affinityTimeoutSeconds: 10800,
        type: r.type,
        ...(external ? { externalTrafficPolicy: r.external } : {}),
        internalTrafficPolicy: r.internal,
        ...(r.type === 'LoadBalancer' && r.ingress !== null ? { loadBalancerIngress: r.ingress } : {}),
        source: src,
      };
    });
}

/** Slices of the selector-less services: some addresses are pods' (allocated from .2 up), some not. */
export function endpointSliceArb(namespace: string, name: string): fc.Arbitrary<EndpointSlice> {
  return fc
    .record({
      serviceName: fc.constantFrom('s0', 's1'),
      ports: fc.array(
        fc.record({
          name: fc.constantFrom('web', 'tls'),
          port: fc.constantFrom(8080, 81),
          protocol: fc.constantFrom('TCP' as const, 'UDP' as const),
        }),
        { minLength: 1, maxLength: 2 },
      ),
      endpoints: fc.array(
        fc.record({
          addresses: fc.subarray(['198.18.0.2', '198.18.0.3', '198.18.0.5', '198.19.200.9'], {
            minLength: 1,
          }),
          ready: fc.boolean(),
          node: fc.option(fc.constantFrom('node-1', 'node-2')),
        }),
        { maxLength: 2 },
      ),
    })
    .map((r): EndpointSlice => ({
      namespace,
      name,
      serviceName: r.serviceName,
      ports: r.ports,
      endpoints: r.endpoints.map(({ node, ...e }) => ({ ...e, ...(node === null ? {} : { node }) })),
      source: src,
    }));
}

function prefilterArb(name: string): fc.Arbitrary<Prefilter> {
  return fc
    .record({
      nodes: fc.option(fc.subarray(['node-1', 'node-2', 'node-3'], { minLength: 1 })),
      cidrs: fc.subarray(['203.0.113.0/24', '198.18.0.2/32', '2001:db8::/32', '10.0.0.0/8'], {
        minLength: 1,
      }),
    })
    .map((p) => ({ name, cidrs: p.cidrs, source: src, ...(p.nodes ? { nodes: p.nodes } : {}) }));
}

const nsArb = fc.constantFrom(...NAMESPACES);
const podNameArb = fc.constantFrom(...POD_NAMES);
/** Services and slices live in two namespaces, so slices often meet their service. */
const serviceNsArb = fc.constantFrom('x', 'y');

/** One step of a sequence: the changes it makes, given the model it starts from. */
export type Step = (model: Model) => ModelChange[];

const upsert = <K extends ModelChange['kind']>(
  kind: K,
  object: Extract<ModelChange, { op: 'upsert'; kind: K }>['object'],
): ModelChange => ({ op: 'upsert', kind, object }) as ModelChange;
const remove = (kind: ModelChange['kind'], key: string): ModelChange =>
  ({ op: 'remove', kind, key }) as ModelChange;

export const stepArb: fc.Arbitrary<Step> = fc.oneof(
  // A pod added or replaced (relabelled, new ports, another node).
  {
    weight: 4,
    arbitrary: fc
      .tuple(nsArb, podNameArb)
      .chain(([n, p]) => podArb(n, p))
      .map((pod) => () => [upsert('pod', pod)]),
  },
  // Only the labels of an existing pod (the common case the indexes are for).
  {
    weight: 4,
    arbitrary: fc.tuple(fc.nat(), labelsArb).map(([i, labels]) => (m: Model): ModelChange[] => {
      const pod = m.pods[i % Math.max(1, m.pods.length)];
      return pod ? [upsert('pod', { ...pod, labels })] : [];
    }),
  },
  {
    weight: 2,
    arbitrary: fc.tuple(nsArb, podNameArb).map(([n, p]) => () => [remove('pod', `${n}/${p}`)]),
  },
  // A pod moved to another namespace: removed here, added there with its labels.
  {
    weight: 1,
    arbitrary: fc.tuple(fc.nat(), nsArb).map(([i, to]) => (m: Model): ModelChange[] => {
      const pod = m.pods[i % Math.max(1, m.pods.length)];
      if (!pod || pod.namespace === to) return [];
      return [remove('pod', `${pod.namespace}/${pod.name}`), upsert('pod', { ...pod, namespace: to })];
    }),
  },
  {
    weight: 2,
    arbitrary: fc
      .tuple(nsArb, fc.boolean(), fc.boolean())
      .map(([n, blue, extra]) => () => [upsert('namespace', namespaceObject(n, blue, extra))]),
  },
  { weight: 1, arbitrary: nsArb.map((n) => () => [remove('namespace', n)]) },
  {
    weight: 3,
    arbitrary: fc
      .constantFrom('np0', 'np1', 'np2')
      .chain((name) => networkPolicyArb(name))
      .map((np) => () => [upsert('networkPolicy', np)]),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(nsArb, fc.constantFrom('np0', 'np1', 'np2'))
      .map(([n, p]) => () => [remove('networkPolicy', `${n}/${p}`)]),
  },
  {
    weight: 2,
    arbitrary: fc
      .constantFrom('gp0', 'gp1')
      .chain((name) => globalPolicyArb(name))
      .map((gp) => () => [upsert('globalPolicy', gp)]),
  },
  { weight: 1, arbitrary: fc.constantFrom('gp0', 'gp1').map((g) => () => [remove('globalPolicy', g)]) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(serviceNsArb, fc.constantFrom('s0', 's1'))
      .chain(([n, s]) => serviceArb(n, s))
      .map((s) => () => [upsert('service', s)]),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(serviceNsArb, fc.constantFrom('s0', 's1'))
      .map(([n, s]) => () => [remove('service', `${n}/${s}`)]),
  },
  {
    weight: 2,
    arbitrary: fc
      .tuple(serviceNsArb, fc.constantFrom('e0', 'e1'))
      .chain(([n, e]) => endpointSliceArb(n, e))
      .map((e) => () => [upsert('endpointSlice', e)]),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(serviceNsArb, fc.constantFrom('e0', 'e1'))
      .map(([n, e]) => () => [remove('endpointSlice', `${n}/${e}`)]),
  },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom('pf0', 'pf1')
      .chain(prefilterArb)
      .map((p) => () => [upsert('prefilter', p)]),
  },
  { weight: 1, arbitrary: fc.constantFrom('pf0', 'pf1').map((p) => () => [remove('prefilter', p)]) },
  // The same object again (a source that re-delivers it): no change at all.
  {
    weight: 1,
    arbitrary: fc.nat().map((i) => (m: Model): ModelChange[] => {
      const pod = m.pods[i % Math.max(1, m.pods.length)];
      return pod ? [upsert('pod', structuredClone(pod))] : [];
    }),
  },
);

/** A batch: steps applied to the model one after another, delivered together. */
export const batchArb = fc.array(stepArb, { minLength: 1, maxLength: 3 });
