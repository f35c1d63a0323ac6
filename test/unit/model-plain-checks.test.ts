/**
 * The plain-shape checks (src/model/plain-checks.ts) against the zod schemas they stand in for:
 * whatever a check accepts, the schema must accept, and the model object converted from the
 * document as it is must equal the one converted from the schema's output. Errors stay zod's.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { toEndpointSlice, toNetworkPolicy, toPod, toService } from '../../src/model/convert.js';
import {
  isPlainEndpointSlice,
  isPlainNetworkPolicy,
  isPlainPod,
  isPlainService,
} from '../../src/model/plain-checks.js';
import {
  endpointSliceSchema,
  networkPolicySchema,
  podSchema,
  serviceSchema,
} from '../../src/model/schemas.js';
import { validateManifestTexts } from '../../src/model/loader.js';

const RUNS = Math.max(500, Math.round(Number(process.env.SWITCHYARD_PROPERTY_RUNS ?? 102_000) / 20));
const source = { file: 'pods.yaml', line: 1 };

/** Values that are mostly right and sometimes wrong in the ways manifests go wrong. */
const name = fc.oneof(
  { arbitrary: fc.constantFrom('web', 'p0', 'a.b', 'db-1', 'x'), weight: 8 },
  fc.constantFrom('', 'Web', '-a', 'a_b', 'a'.repeat(64), 'a.'.repeat(130)),
  fc.string({ maxLength: 6 }),
);
const labelKey = fc.oneof(
  { arbitrary: fc.constantFrom('app', 'role', 'team', 'kubernetes.io/name', 'a.b/c'), weight: 12 },
  fc.constantFrom('', '-x', 'a/', '/a', 'A_/b', '__proto__', 'k'.repeat(64)),
  fc.string({ maxLength: 5 }),
);
const labelValue = fc.oneof(
  { arbitrary: fc.constantFrom('web', 'a0', '', 'x.y-z'), weight: 12 },
  fc.constantFrom('-a', 'a b', 'v'.repeat(64)),
  fc.string({ maxLength: 5 }),
);
const anyValue = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.integer(),
  fc.double(),
  fc.string({ maxLength: 4 }),
);
const maybe = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> =>
  fc.option(arb, { nil: undefined, freq: 3 });
/** Mostly undefined: the key is then left out of the document (JSON drops it). */
const rarely = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> =>
  fc.oneof({ arbitrary: fc.constant(undefined), weight: 7 }, { arbitrary: arb, weight: 1 });
const withOdd = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | unknown> =>
  fc.oneof({ arbitrary: arb, weight: 6 }, { arbitrary: anyValue, weight: 1 });

const port = fc.record(
  {
    name: withOdd(fc.constantFrom('http', 'metrics', 'h2c', 'Http', '80', 'a--b', 'abcdefghijklmnop')),
    containerPort: withOdd(fc.constantFrom(1, 80, 8080, 65535, 0, 65536, 1.5, -1)),
    protocol: withOdd(fc.constantFrom('TCP', 'UDP', 'SCTP', 'tcp', 'ICMP')),
    extra: rarely(anyValue),
  },
  { requiredKeys: [] },
);
const container = fc.record(
  { name: withOdd(fc.constantFrom('c', 'app')), ports: withOdd(fc.array(withOdd(port), { maxLength: 3 })) },
  { requiredKeys: [] },
);
const labels = withOdd(fc.dictionary(labelKey, withOdd(labelValue), { maxKeys: 4 }));
const metadata = fc.record(
  {
    name: withOdd(name),
    namespace: withOdd(name),
    labels,
    annotations: rarely(fc.dictionary(fc.string({ maxLength: 3 }), fc.string({ maxLength: 3 }))),
    uid: rarely(fc.string({ maxLength: 3 })),
  },
  { requiredKeys: [] },
);
const address = fc.oneof(
  { arbitrary: fc.constantFrom('198.18.0.1', 'fd00:5957::1', '::'), weight: 4 },
  { arbitrary: fc.constantFrom('198.18.0.256', 'x', '', '1.2.3'), weight: 1 },
);
const status = fc.record(
  {
    podIP: withOdd(address),
    podIPs: rarely(fc.array(fc.record({ ip: address }), { maxLength: 3 })),
    phase: fc.constantFrom('Running', 'Pending'),
  },
  { requiredKeys: [] },
);
const spec = fc.record(
  {
    nodeName: withOdd(name),
    containers: withOdd(fc.array(withOdd(container), { maxLength: 3 })),
    restartPolicy: fc.constant('Always'),
  },
  { requiredKeys: [] },
);
const pod = fc.record(
  {
    apiVersion: fc.constantFrom('v1', 'v1', 'v1', 'v2'),
    kind: fc.constantFrom('Pod', 'Pod', 'Pod', 'Service'),
    metadata: withOdd(metadata),
    spec: maybe(withOdd(spec)),
    status: maybe(withOdd(status)),
    extra: rarely(anyValue),
  },
  { requiredKeys: ['apiVersion', 'kind', 'metadata'] },
);

/** A pod of the plain shape with every field valid. */
const plainPod = fc
  .record({
    name: fc.constantFrom('web', 'p0', 'a.b', 'db-1'),
    namespace: maybe(fc.constantFrom('ns0', 'default')),
    labels: maybe(
      fc.dictionary(fc.constantFrom('app', 'role', 'a.b/c'), fc.constantFrom('web', '', 'x.y-z')),
    ),
    nodeName: maybe(fc.constantFrom('node-1', 'n.example')),
    ports: maybe(
      fc.array(
        fc.record(
          {
            name: fc.constantFrom('http', 'h2c'),
            containerPort: fc.integer({ min: 1, max: 65535 }),
            protocol: fc.constantFrom('TCP', 'UDP', 'SCTP'),
          },
          { requiredKeys: ['containerPort'] },
        ),
        { maxLength: 2 },
      ),
    ),
    podIP: maybe(fc.constantFrom('198.18.0.1', 'fd00:5957::1')),
  })
  .map(({ name, namespace, labels, nodeName, ports, podIP }) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, ...(namespace ? { namespace } : {}), ...(labels ? { labels } : {}) },
    spec: { ...(nodeName ? { nodeName } : {}), containers: [{ name: 'c', ...(ports ? { ports } : {}) }] },
    ...(podIP ? { status: { podIP } } : {}),
  }));

/** Where one field of a plain pod is replaced (an index past the end, a key it lacks: added). */
const FIELDS: readonly (readonly (string | number)[])[] = [
  ['apiVersion'],
  ['kind'],
  ['extra'],
  ['metadata'],
  ['metadata', 'name'],
  ['metadata', 'namespace'],
  ['metadata', 'labels'],
  ['metadata', 'labels', 'app'],
  ['metadata', 'labels', 'Bad_'],
  ['metadata', 'annotations'],
  ['spec'],
  ['spec', 'nodeName'],
  ['spec', 'containers'],
  ['spec', 'containers', 0],
  ['spec', 'containers', 0, 'name'],
  ['spec', 'containers', 0, 'ports'],
  ['spec', 'containers', 0, 'ports', 0],
  ['spec', 'containers', 0, 'ports', 0, 'containerPort'],
  ['spec', 'containers', 0, 'ports', 0, 'name'],
  ['spec', 'containers', 0, 'ports', 0, 'protocol'],
  ['status'],
  ['status', 'podIP'],
  ['status', 'podIPs'],
];
const oddValue = fc.oneof(
  anyValue,
  fc.constantFrom(0, 65536, 1.5, -1, 80, 'TCP', 'tcp', 'http', 'Http', 'a--b', '198.18.0.256', '198.18.0.9'),
  fc.constantFrom([], {}, [{}], [{ ip: '198.18.0.1' }], { app: 'web' }, ['x'], 'v1', 'Pod', 'web', ''),
);

function replaced(doc: unknown, path: readonly (string | number)[], value: unknown): unknown {
  const copy = JSON.parse(JSON.stringify(doc)) as Record<string | number, unknown>;
  let at: Record<string | number, unknown> = copy;
  for (const key of path.slice(0, -1)) {
    const next = at[key];
    if (typeof next !== 'object' || next === null) return copy;
    at = next as Record<string | number, unknown>;
  }
  at[path[path.length - 1] as string | number] = value;
  return JSON.parse(JSON.stringify(copy)) as unknown;
}

/** A kind's plain check, the schema it stands in for, and the converter both feed. */
interface Kind {
  check: (v: unknown) => boolean;
  schema: { safeParse(v: unknown): { success: boolean; data?: unknown } };
  convert: (raw: never, src: typeof source) => unknown;
}
const POD: Kind = { check: isPlainPod, schema: podSchema, convert: toPod };
const SLICE: Kind = { check: isPlainEndpointSlice, schema: endpointSliceSchema, convert: toEndpointSlice };
const SERVICE: Kind = { check: isPlainService, schema: serviceSchema, convert: toService };

/** Accepted → the schema accepts it and it converts to the same object; returns whether accepted. */
function agrees(value: unknown, kind: Kind = POD): boolean {
  if (!kind.check(value)) return false;
  const parsed = kind.schema.safeParse(value);
  expect(parsed.success, JSON.stringify(value)).toBe(true);
  expect(kind.convert(value as never, source)).toStrictEqual(kind.convert(parsed.data as never, source));
  return true;
}

const plainSlice = fc
  .record({
    name: fc.constantFrom('s0-1', 'web-abc'),
    namespace: maybe(fc.constantFrom('ns0')),
    service: fc.constantFrom('s0', 'web'),
    v6: fc.boolean(),
    ports: maybe(
      fc.array(
        fc.record(
          {
            name: fc.constantFrom('http', ''),
            port: fc.integer({ min: 1, max: 65535 }),
            protocol: fc.constantFrom('TCP', 'UDP'),
          },
          { requiredKeys: ['port'] },
        ),
        { maxLength: 2 },
      ),
    ),
    endpoints: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 3 }),
  })
  .map(({ name, namespace, service, v6, ports, endpoints }) => ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name,
      ...(namespace ? { namespace } : {}),
      labels: { 'kubernetes.io/service-name': service },
    },
    addressType: v6 ? 'IPv6' : 'IPv4',
    ...(ports ? { ports } : {}),
    endpoints: endpoints.map((n) => ({
      addresses: Array.from({ length: n }, (_, i) => (v6 ? `fd00:5957::${i + 1}` : `198.18.4.${i}`)),
    })),
  }));
const SLICE_FIELDS: readonly (readonly (string | number)[])[] = [
  ['apiVersion'],
  ['kind'],
  ['extra'],
  ['metadata', 'name'],
  ['metadata', 'labels'],
  ['metadata', 'labels', 'kubernetes.io/service-name'],
  ['addressType'],
  ['ports'],
  ['ports', 0],
  ['ports', 0, 'port'],
  ['ports', 0, 'name'],
  ['ports', 0, 'protocol'],
  ['ports', 0, 'appProtocol'],
  ['endpoints'],
  ['endpoints', 0],
  ['endpoints', 0, 'addresses'],
  ['endpoints', 0, 'addresses', 0],
  ['endpoints', 0, 'conditions'],
  ['endpoints', 0, 'nodeName'],
];

const plainService = fc
  .record({
    name: fc.constantFrom('s0', 'web'),
    namespace: maybe(fc.constantFrom('ns0')),
    type: maybe(fc.constant('ClusterIP')),
    clusterIP: maybe(fc.constantFrom('198.19.0.1', 'None', 'fd00:5957:1::1')),
    selector: maybe(fc.dictionary(fc.constantFrom('app', 'a.b/c'), fc.constantFrom('web', ''))),
    ports: fc.array(
      fc.record(
        {
          name: fc.constantFrom('http', 'h2c'),
          port: fc.integer({ min: 1, max: 65535 }),
          targetPort: fc.oneof(fc.integer({ min: 1, max: 65535 }), fc.constantFrom('http', 'metrics')),
          protocol: fc.constantFrom('TCP', 'UDP', 'SCTP'),
        },
        { requiredKeys: ['port'] },
      ),
      { minLength: 1, maxLength: 2 },
    ),
  })
  .map(({ name, namespace, ...spec }) => ({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, ...(namespace ? { namespace } : {}) },
    spec: JSON.parse(JSON.stringify(spec)) as unknown,
  }));
const SERVICE_FIELDS: readonly (readonly (string | number)[])[] = [
  ['apiVersion'],
  ['kind'],
  ['status'],
  ['metadata', 'name'],
  ['metadata', 'labels'],
  ['spec'],
  ['spec', 'type'],
  ['spec', 'clusterIP'],
  ['spec', 'clusterIPs'],
  ['spec', 'selector'],
  ['spec', 'selector', 'app'],
  ['spec', 'ports'],
  ['spec', 'ports', 0],
  ['spec', 'ports', 0, 'port'],
  ['spec', 'ports', 0, 'name'],
  ['spec', 'ports', 0, 'targetPort'],
  ['spec', 'ports', 0, 'protocol'],
  ['spec', 'ports', 0, 'nodePort'],
  ['spec', 'sessionAffinity'],
  ['spec', 'externalTrafficPolicy'],
];
const POLICY: Kind = { check: isPlainNetworkPolicy, schema: networkPolicySchema, convert: toNetworkPolicy };
const selector = fc.record(
  {
    matchLabels: fc.dictionary(fc.constantFrom('app', 'team', 'a.b/c'), fc.constantFrom('a0', '', 't1')),
    matchExpressions: fc.array(
      fc.oneof(
        fc.record({
          key: fc.constantFrom('app', 'role'),
          operator: fc.constantFrom('In', 'NotIn'),
          values: fc.array(fc.constantFrom('a0', 'a1', ''), { minLength: 1, maxLength: 3 }),
        }),
        fc.record({
          key: fc.constantFrom('app', 'x/y'),
          operator: fc.constantFrom('Exists', 'DoesNotExist'),
        }),
      ),
      { maxLength: 2 },
    ),
  },
  { requiredKeys: [] },
);
const peer = fc.oneof(
  fc.record({ podSelector: selector }),
  fc.record({ namespaceSelector: selector }),
  fc.record({ podSelector: selector, namespaceSelector: selector }),
);
const policyPort = fc.record(
  {
    port: fc.oneof(fc.integer({ min: 1, max: 65535 }), fc.constantFrom('http', 'dns-tcp')),
    protocol: fc.constantFrom('TCP', 'UDP', 'SCTP'),
  },
  { requiredKeys: [] },
);
const rule = (key: 'from' | 'to') =>
  fc.record(
    { [key]: fc.array(peer, { maxLength: 2 }), ports: fc.array(policyPort, { maxLength: 2 }) },
    { requiredKeys: [] },
  );
const plainPolicy = fc
  .record({
    name: fc.constantFrom('pol0', 'allow-web'),
    namespace: maybe(fc.constantFrom('ns0')),
    podSelector: maybe(selector),
    policyTypes: maybe(fc.array(fc.constantFrom('Ingress', 'Egress'), { maxLength: 2 })),
    ingress: maybe(fc.array(rule('from'), { maxLength: 2 })),
    egress: maybe(fc.array(rule('to'), { maxLength: 2 })),
  })
  .map(({ name, namespace, ...spec }) => ({
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name, ...(namespace ? { namespace } : {}) },
    spec: JSON.parse(JSON.stringify(spec)) as unknown,
  }));
const POLICY_FIELDS: readonly (readonly (string | number)[])[] = [
  ['apiVersion'],
  ['status'],
  ['metadata', 'namespace'],
  ['spec'],
  ['spec', 'podSelector'],
  ['spec', 'podSelector', 'matchLabels'],
  ['spec', 'podSelector', 'matchLabels', 'app'],
  ['spec', 'podSelector', 'matchExpressions'],
  ['spec', 'podSelector', 'matchExpressions', 0],
  ['spec', 'podSelector', 'matchExpressions', 0, 'key'],
  ['spec', 'podSelector', 'matchExpressions', 0, 'operator'],
  ['spec', 'podSelector', 'matchExpressions', 0, 'values'],
  ['spec', 'policyTypes'],
  ['spec', 'policyTypes', 0],
  ['spec', 'policyTypes', 2],
  ['spec', 'ingress'],
  ['spec', 'ingress', 0],
  ['spec', 'ingress', 0, 'from'],
  ['spec', 'ingress', 0, 'to'],
  ['spec', 'ingress', 0, 'from', 0],
  ['spec', 'ingress', 0, 'from', 0, 'ipBlock'],
  ['spec', 'ingress', 0, 'from', 0, 'podSelector'],
  ['spec', 'ingress', 0, 'ports'],
  ['spec', 'ingress', 0, 'ports', 0],
  ['spec', 'ingress', 0, 'ports', 0, 'port'],
  ['spec', 'ingress', 0, 'ports', 0, 'endPort'],
  ['spec', 'ingress', 0, 'ports', 0, 'protocol'],
  ['spec', 'egress', 0, 'to', 0, 'namespaceSelector'],
  ['spec', 'egress', 0, 'from'],
];
const moreOdd = fc.oneof(
  fc.constantFrom('In', 'Exists', 'Ingress', 'Egress', ['Ingress', 'Egress', 'Ingress'], {
    cidr: '198.18.0.0/16',
  }),
  fc.constantFrom(
    [{ key: 'app', operator: 'In', values: [] }],
    [{ key: 'app', operator: 'Exists', values: ['a'] }],
    [{}],
  ),
  oddValue,
  fc.constantFrom('IPv4', 'IPv6', 'fd00:5957::1', 'None', 'ClusterIP', 'NodePort', 31000, { ready: false }),
  fc.constantFrom(
    [{ addresses: ['198.18.4.1'] }],
    [{ port: 80 }],
    ['198.18.4.1'],
    'kubernetes.io/service-name',
  ),
);

describe('plain checks', () => {
  it('accept every plain pod, and a plain pod with one field changed only when zod accepts it too', () => {
    fc.assert(
      fc.property(plainPod, fc.constantFrom(...FIELDS), oddValue, (doc, path, value) => {
        expect(agrees(doc)).toBe(true);
        agrees(replaced(doc, path, value));
      }),
      { numRuns: RUNS },
    );
  });

  it('accept every plain EndpointSlice, Service and NetworkPolicy, and one with a field changed only when zod accepts it too', () => {
    for (const [kind, plain, fields] of [
      [SLICE, plainSlice, SLICE_FIELDS],
      [SERVICE, plainService, SERVICE_FIELDS],
      [POLICY, plainPolicy, POLICY_FIELDS],
    ] as const)
      fc.assert(
        fc.property(plain, fc.constantFrom(...fields), moreOdd, (doc, path, value) => {
          expect(agrees(doc, kind)).toBe(true);
          agrees(replaced(doc, path, value), kind);
        }),
        { numRuns: RUNS },
      );
  });

  it('accept only pods zod accepts, converting to the same model object', () => {
    let accepted = 0;
    fc.assert(
      fc.property(pod, (doc) => {
        // What a parser gives: no undefined values (a YAML or JSON reader never makes them).
        const value = JSON.parse(JSON.stringify(doc)) as unknown;
        if (!isPlainPod(value)) return;
        accepted++;
        const parsed = podSchema.safeParse(value);
        expect(parsed.success, JSON.stringify(value)).toBe(true);
        expect(toPod(value, source)).toStrictEqual(toPod(parsed.data as never, source));
      }),
      { numRuns: RUNS },
    );
    // The check is not vacuous: a share of the generated pods is plain.
    expect(accepted).toBeGreaterThan(RUNS / 50);
  });

  it('take the pods the agent bench writes, and leave every error to the schema', () => {
    const plain = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'p1', namespace: 'ns0', labels: { app: 'a1', role: 'r1' } },
      spec: {
        nodeName: 'node-2',
        containers: [{ name: 'c', ports: [{ containerPort: 8080, protocol: 'TCP' }] }],
      },
      status: { podIP: '198.18.4.0' },
    };
    expect(isPlainPod(plain)).toBe(true);
    const bad = {
      ...plain,
      spec: { containers: [{ name: 'c', ports: [{ containerPort: 70000 }] }] },
    };
    expect(isPlainPod(bad)).toBe(false);
    const { issues } = validateManifestTexts([
      {
        file: 'p.yaml',
        text: 'apiVersion: v1\nkind: Pod\nmetadata: { name: p1, labels: { app: -x } }\nspec:\n  containers: [{ name: c, ports: [{ containerPort: 70000 }] }]\n',
      },
    ]);
    expect(issues.map((i) => `${i.line} ${i.object} ${i.field}`)).toEqual([
      '3 default/p1 metadata.labels.app',
      '5 default/p1 spec.containers[0].ports[0].containerPort',
    ]);
  });
});
