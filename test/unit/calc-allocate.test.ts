/**
 * allocate(): the one place nodes, pod addresses and service addresses are given out. Properties
 * over sequences of updates (what a lab, the datastore or an agent goes through), and buildIR on
 * its result equal to the IR compiled before allocation was a step of its own.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  allocate,
  buildIR,
  INFRA_RANGE,
  isPodAddress,
  MissingAllocationError,
  SERVICE_RANGE,
  type Allocations,
} from '../../src/calc/index.js';
import { loadManifests, podKey, type Model, type Pod, type Service } from '../../src/model/index.js';
import { cidrContains, parseAddress, type Address } from '../../src/util/ip.js';
import { modelOf, namespace, pod, service } from '../support/manifests.js';

const ROOT = join(import.meta.dirname, '..', '..');
const RUNS = Math.max(100, Math.round(Number(process.env.SWITCHYARD_PROPERTY_RUNS ?? 102_000) * 0.02));
const src = { file: 'generated.yaml', line: 1 };

const POD_KEYS = ['x/a', 'x/b', 'x/c', 'y/a', 'y/b', 'y/m', 'z/a', 'z/q'];
const SERVICE_KEYS = ['x/api', 'y/api', 'y/db', 'z/web'];
/** Stated addresses may be ones allocate would hand out first: they must still win. */
const STATED_POD_IPS = ['198.18.0.2', '198.18.0.3', '198.18.0.9'];
const STATED_VIPS = ['198.19.0.2', '198.19.0.5'];

function split(key: string): [string, string] {
  return key.split('/') as [string, string];
}

/** One state of a cluster: some pods and services, some of them stating their node or address. */
const modelArb: fc.Arbitrary<Model> = fc
  .record({
    pods: fc.subarray(POD_KEYS),
    podIps: fc.array(fc.option(fc.constantFrom(...STATED_POD_IPS)), { minLength: POD_KEYS.length }),
    podNodes: fc.array(fc.option(fc.constantFrom('node-1', 'node-3', 'worker-a')), {
      minLength: POD_KEYS.length,
    }),
    services: fc.subarray(SERVICE_KEYS),
    vips: fc.array(fc.option(fc.constantFrom(...STATED_VIPS)), { minLength: SERVICE_KEYS.length }),
  })
  .map((r) => {
    const taken = new Set<string>();
    /** Validation refuses an address stated twice: the first claim keeps it. */
    const claim = (ip: string | null | undefined): string | undefined => {
      if (!ip || taken.has(ip)) return undefined;
      taken.add(ip);
      return ip;
    };
    const pods = r.pods.map((key, i): Pod => {
      const [ns, name] = split(key);
      const ip = claim(r.podIps[i]);
      const node = r.podNodes[i];
      return {
        namespace: ns,
        name,
        labels: {},
        ports: [],
        ips: ip ? [ip] : [],
        source: src,
        ...(node ? { nodeName: node } : {}),
      };
    });
    const services = r.services.map((key, i): Service => {
      const [ns, name] = split(key);
      const vip = claim(r.vips[i]);
      return {
        namespace: ns,
        name,
        ...(vip ? { clusterIP: vip } : {}),
        selector: {},
        ports: [{ port: 80, targetPort: 80, protocol: 'TCP' }],
        sessionAffinity: 'None',
        affinityTimeoutSeconds: 10800,
        type: 'ClusterIP',
        internalTrafficPolicy: 'Cluster',
        source: src,
      };
    });
    return {
      namespaces: [],
      pods,
      services,
      endpointSlices: [],
      networkPolicies: [],
      globalPolicies: [],
      prefilters: [],
    };
  });

function address(ip: string): Address {
  return parseAddress(ip) as Address;
}

/** Everything a valid allocation of `model` must be, whatever came before it. */
function expectComplete(model: Model, a: Allocations, nodeCount: number): void {
  expect(a.nodes).toEqual([...new Set(a.nodes)].sort());
  expect(a.nodes.length).toBeGreaterThanOrEqual(nodeCount);
  expect(Object.keys(a.podNodes).sort()).toEqual(model.pods.map(podKey).sort());
  expect(Object.keys(a.podAddresses).sort()).toEqual(model.pods.map(podKey).sort());
  for (const p of model.pods) {
    const node = a.podNodes[podKey(p)] as string;
    expect(a.nodes).toContain(node);
    if (p.nodeName) expect(node).toBe(p.nodeName);
    const ip = a.podAddresses[podKey(p)] as string;
    if (p.ips.length > 0) expect(ip).toBe(p.ips[0]);
    else expect(isPodAddress(ip) && !cidrContains(INFRA_RANGE, address(ip))).toBe(true);
  }
  const podIps = Object.values(a.podAddresses);
  expect(new Set(podIps).size, 'no pod address twice').toBe(podIps.length);
  const vips = Object.values(a.serviceAddresses);
  expect(Object.keys(a.serviceAddresses).sort()).toEqual(
    model.services.map((s) => `${s.namespace}/${s.name}`).sort(),
  );
  expect(new Set(vips).size, 'no service address twice').toBe(vips.length);
  for (const v of vips) expect(cidrContains(SERVICE_RANGE, address(v))).toBe(true);
}

/** What `prev` gave a pod or service that is still there is kept, unless the model now says otherwise. */
function expectStable(model: Model, prev: Allocations, next: Allocations): void {
  const stated = new Set([
    ...model.pods.flatMap((p) => p.ips),
    ...model.services.flatMap((s) => (s.clusterIP ? [s.clusterIP] : [])),
  ]);
  for (const p of model.pods) {
    const key = podKey(p);
    const before = prev.podAddresses[key];
    if (before === undefined) continue;
    if (!p.nodeName) expect(next.podNodes[key], `node of ${key}`).toBe(prev.podNodes[key]);
    if (p.ips.length === 0 && !stated.has(before))
      expect(next.podAddresses[key], `address of ${key}`).toBe(before);
  }
  for (const s of model.services) {
    const key = `${s.namespace}/${s.name}`;
    const before = prev.serviceAddresses[key];
    if (before !== undefined && !s.clusterIP && !stated.has(before))
      expect(next.serviceAddresses[key], `address of ${key}`).toBe(before);
  }
}

function reversed(m: Model): Model {
  return { ...m, pods: [...m.pods].reverse(), services: [...m.services].reverse() };
}

describe('allocate', () => {
  it('over any sequence of updates: complete, unique, stable, idempotent and order-blind', () => {
    fc.assert(
      fc.property(
        fc.array(modelArb, { minLength: 1, maxLength: 4 }),
        fc.integer({ min: 1, max: 3 }),
        (models, nodeCount) => {
          let prev = allocate(models[0] as Model, {}, { nodeCount });
          expectComplete(models[0] as Model, prev, nodeCount);
          for (const model of models.slice(1)) {
            const next = allocate(model, prev, { nodeCount });
            expectComplete(model, next, nodeCount);
            expectStable(model, prev, next);
            expect(allocate(reversed(model), prev, { nodeCount })).toEqual(next);
            expect(allocate(model, next, { nodeCount }), 'allocating again changes nothing').toEqual(next);
            prev = next;
          }
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('keeps the node of a pod a node count no longer asks for', () => {
    const model = modelOf([namespace('x'), pod('x', 'a'), pod('x', 'b'), pod('x', 'c')]);
    const three = allocate(model, {}, { nodeCount: 3 });
    expect(three.nodes).toEqual(['node-1', 'node-2', 'node-3']);
    const one = allocate(model, three, { nodeCount: 1 });
    expect(one.podNodes).toEqual(three.podNodes);
    expect(one.nodes).toEqual(['node-1', 'node-2', 'node-3']);
  });
});

describe('buildIR on allocations', () => {
  /** IRs compiled by the calculation before allocation was its own step (buildIR allocated). */
  const before = JSON.parse(readFileSync(join(ROOT, 'test/fixtures/ir/examples.json'), 'utf8')) as Record<
    string,
    unknown
  >;
  const cases: [string, string[], number][] = [
    ['xyz', ['examples/xyz'], 2],
    ['walkthrough', ['examples/walkthrough'], 2],
    ['walkthrough+global', ['examples/walkthrough', 'examples/global'], 3],
    ['services', ['examples/services'], 2],
  ];

  it.each(cases)('gives the IR compiled before for %s', (name, paths, nodeCount) => {
    const model = loadManifests(paths.map((p) => join(ROOT, p)));
    expect(buildIR(model, allocate(model, {}, { nodeCount }))).toEqual(before[name]);
  });

  it('refuses a pod or service without an allocation', () => {
    const model = modelOf([
      namespace('x'),
      pod('x', 'a'),
      service('x', 'api', { selector: {}, ports: [{ port: 80 }] }),
    ]);
    const full = allocate(model);
    expect(() => buildIR(model, { ...full, podNodes: {} })).toThrow(MissingAllocationError);
    expect(() => buildIR(model, { ...full, podAddresses: {} })).toThrow(/pod x\/a has no address/);
    expect(() => buildIR(model, { ...full, nodes: [] })).toThrow(MissingAllocationError);
    expect(() => buildIR(model, { ...full, serviceAddresses: {} })).toThrow(
      /service x\/api has no cluster IP/,
    );
    expect(buildIR(model, full).endpoints[0]?.addresses).toEqual([full.podAddresses['x/a']]);
  });
});
